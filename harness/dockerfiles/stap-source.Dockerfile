# A systemtap image built from source (a git commit or a local checkout): DEPS plus what the
# incremental build (harness/stap_source_build.py) installed, in one layer: /opt/systemtap and
# the configured tree in /usr/local/src/systemtap (objects removed) for its testsuite. The
# build itself ran before, in a container of DEPS with no network; this image only copies its
# result, and is keyed by the commit id or the tree's content hash (SOURCE_ID).
ARG DEPS
FROM ${DEPS}
ARG SOURCE_ID
ARG VERSION_LABEL
COPY stap-install/ /
COPY stapmatrix-target.c /usr/local/src/
ENV PATH=/opt/systemtap/bin:/opt/systemtap/sbin:$PATH
RUN gcc -g -O0 -static -o /usr/local/bin/stapmatrix-target /usr/local/src/stapmatrix-target.c \
 && stap -V
