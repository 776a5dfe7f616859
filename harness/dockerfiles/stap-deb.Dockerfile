# A systemtap image: the base suite plus one systemtap package version, what
# harness/guest/mkinitramfs.sh packs into the guest, and the compilers the kernels this base
# serves call (COMPILERS: gcc-12 and gcc-14 on trixie, gcc-16 on sid). With them here, one
# image compiles modules for every kernel of the grid: the kernels' files are mounted from
# the kernel store, and a cell needs no image of its own. `file` is for systemtap's examples
# (process/syscalltimes checks its script with it), `perl` for its Perl scripts
# (memory/kmalloc-top, network/socktop need Getopt::Std, which perl-base lacks; Debian
# installs perl on every standard system), `sudo` for process/auditbt (`stap -d /usr/bin/sudo
# --ldd -c "sudo true"`: its symbols here, the program itself in the guest).
ARG BASE
FROM ${BASE}
ARG PACKAGES
ARG COMPILERS
COPY stapmatrix-target.c gcc-links.sh /usr/local/src/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $PACKAGES $COMPILERS gcc make libc6-dev binutils busybox-static cpio kmod file perl sudo \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && sh /usr/local/src/gcc-links.sh \
 && gcc -g -O0 -static -o /usr/local/bin/stapmatrix-target /usr/local/src/stapmatrix-target.c \
 && stap -V
