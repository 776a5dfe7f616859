# A systemtap image built from source (a git commit or a local checkout, in source.tar),
# installed under /opt/systemtap. Built once per commit and reused for every kernel. The
# configured tree stays in /usr/local/src/systemtap (objects removed) for its testsuite.
ARG BASE
FROM ${BASE}
# The compilers of the kernels this base serves (see stap-deb.Dockerfile).
ARG COMPILERS
COPY gcc-links.sh /usr/local/src/gcc-links.sh
RUN apt-get update -o Acquire::Retries=5 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Acquire::Retries=5 \
      g++ gcc make pkg-config gettext libdw-dev libelf-dev libdebuginfod-dev libboost-dev \
      libsqlite3-dev libreadline-dev libncurses-dev libjson-c-dev python3 \
      libc6-dev binutils busybox-static cpio kmod xz-utils dejagnu expect $COMPILERS \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY source.tar stapmatrix-target.c /usr/local/src/
ARG SOURCE_ID
ARG VERSION_LABEL
# Releases before 5.1 hard-code -Werror, which newer compilers trip over; -Wno-error in
# CFLAGS/CXXFLAGS comes after the Makefile's AM_ flags and wins for every version.
RUN mkdir /usr/local/src/systemtap \
 && tar -xf /usr/local/src/source.tar -C /usr/local/src/systemtap \
 && cd /usr/local/src/systemtap \
 && ./configure --prefix=/opt/systemtap --disable-docs --disable-refdocs --disable-htmldocs \
      --without-java --without-dyninst --without-python2-probes --without-python3-probes \
      --without-nss --without-avahi --with-extra-version="$VERSION_LABEL" \
 && make -j"$(nproc)" CFLAGS="-O2 -g -Wno-error" CXXFLAGS="-O2 -g -Wno-error" \
 && make install \
 && find . -name '*.o' -delete \
 && rm /usr/local/src/source.tar
ENV PATH=/opt/systemtap/bin:/opt/systemtap/sbin:$PATH
RUN sh /usr/local/src/gcc-links.sh \
 && gcc -g -O0 -static -o /usr/local/bin/stapmatrix-target /usr/local/src/stapmatrix-target.c \
 && stap -V
