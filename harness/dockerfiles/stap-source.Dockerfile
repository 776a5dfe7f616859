# A systemtap image built from source (a git commit or a local checkout, in source.tar),
# installed under /opt/systemtap. Built once per commit and reused for every kernel. The
# configured tree stays in /usr/local/src/systemtap (objects removed) for its testsuite.
# It is built with no network (harness/images.py): its dependencies come with DEPS
# (images/stap-source-deps.Dockerfile), so configure and make run code from the source tree
# that cannot reach the outside. The time limits stop a build that hangs.
ARG DEPS
FROM ${DEPS}
COPY source.tar stapmatrix-target.c /usr/local/src/
ARG SOURCE_ID
ARG VERSION_LABEL
# Releases before 5.1 hard-code -Werror, which newer compilers trip over; -Wno-error in
# CFLAGS/CXXFLAGS comes after the Makefile's AM_ flags and wins for every version.
RUN mkdir /usr/local/src/systemtap \
 && tar -xf /usr/local/src/source.tar -C /usr/local/src/systemtap \
 && cd /usr/local/src/systemtap \
 && timeout 1200 ./configure --prefix=/opt/systemtap --disable-docs --disable-refdocs --disable-htmldocs \
      --without-java --without-dyninst --without-python2-probes --without-python3-probes \
      --without-nss --without-avahi --with-extra-version="$VERSION_LABEL" \
 && timeout 5400 make -j"$(nproc)" CFLAGS="-O2 -g -Wno-error" CXXFLAGS="-O2 -g -Wno-error" \
 && timeout 1200 make install \
 && find . -name '*.o' -delete \
 && rm /usr/local/src/source.tar
ENV PATH=/opt/systemtap/bin:/opt/systemtap/sbin:$PATH
RUN gcc -g -O0 -static -o /usr/local/bin/stapmatrix-target /usr/local/src/stapmatrix-target.c \
 && stap -V
