# What a systemtap source build needs, installed in a step of its own: this is the only step
# of a source build with network access. images/stap-source.Dockerfile builds on it with no
# network, so nothing in a source tree (configure, make, its tests) can reach the outside.
# COMPILERS: the compilers of the kernels this base serves (see stap-deb.Dockerfile). ccache:
# the incremental build (harness/stap_source_build.py) keeps one cache per repository and base.
# sudo: for process/auditbt, as in stap-deb.Dockerfile.
ARG BASE
FROM ${BASE}
ARG COMPILERS
COPY gcc-links.sh /usr/local/src/gcc-links.sh
RUN apt-get update -o Acquire::Retries=5 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Acquire::Retries=5 \
      g++ gcc make pkg-config gettext libdw-dev libelf-dev libdebuginfod-dev libboost-dev \
      libsqlite3-dev libreadline-dev libncurses-dev libjson-c-dev python3 \
      libc6-dev binutils busybox-static cpio kmod xz-utils dejagnu expect ccache sudo $COMPILERS \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && sh /usr/local/src/gcc-links.sh
