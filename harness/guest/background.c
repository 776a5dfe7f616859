/* The stapsh guest's background activity: a file read 100 times a second, as a normal
 * machine's daemons do all the time. systemtap's tests run on such machines, and some wait
 * for whatever the system does: kprobes.exp probes vfs_read with no load of its own and
 * expects a hit before DejaGnu interrupts it; in an idle initramfs the only reader is stapio,
 * every 200 ms (staprun/relay.c: reader_timeout_ms), so the hit depended on how fast the
 * interrupt came back from the host. Built static by mkinitramfs.sh: three system calls
 * every 10 ms, a small load even under TCG. */
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	char buffer[64];

	for (;;) {
		int fd = open("/proc/uptime", O_RDONLY);

		if (fd >= 0) {
			if (read(fd, buffer, sizeof(buffer)) < 0)
				return 1;
			close(fd);
		}
		nanosleep(&tick, NULL);
	}
}
