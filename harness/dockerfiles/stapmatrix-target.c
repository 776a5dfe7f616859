/* A user-space program for uprobes tests: built with -g in every systemtap image and copied
 * into the guest at the same path, so a process("...").function("work") probe resolves at
 * compile time and fires at run time. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int work(int n)
{
	return n * 2 + 1;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 3;
	int sum = 0;

	for (int i = 0; i < rounds; i++)
		sum += work(i);
	printf("stapmatrix-target: sum %d\n", sum);
	return 0;
}
