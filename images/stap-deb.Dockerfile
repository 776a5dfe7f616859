# A systemtap image: the base suite plus one systemtap package version and what
# harness/guest/mkinitramfs.sh packs into the guest. Kernel compilers come with the cell.
ARG BASE
FROM ${BASE}
ARG PACKAGES
COPY stapmatrix-target.c /usr/local/src/stapmatrix-target.c
RUN apt-get update -o Acquire::Retries=5 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Acquire::Retries=5 \
      $PACKAGES gcc make libc6-dev binutils busybox-static cpio kmod \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && gcc -g -O0 -static -o /usr/local/bin/stapmatrix-target /usr/local/src/stapmatrix-target.c \
 && stap -V
