# The kernel build image: Debian's compilers and the tools Linux's build calls, nothing
# else. harness/kernel_git.py runs it with no network, the source read-only at
# /usr/src/linux, the build directory at /usr/src/linux-build and a persistent ccache at
# /ccache. Its tag is part of every source build's cache key (the toolchain).
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc make bc bison flex libelf-dev libssl-dev libc6-dev binutils ccache cpio kmod perl python3 \
      xz-utils zstd gawk \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && gcc --version | head -1
COPY build-kernel.sh /usr/local/bin/build-kernel.sh
