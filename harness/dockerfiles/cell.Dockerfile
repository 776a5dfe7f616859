# A cell image, only for a kernel whose compiler the systemtap image lacks (the systemtap
# images carry the compilers of the kernels their base serves: images/stap-deb.Dockerfile):
# the systemtap image plus that compiler. The kernel's files are mounted, not copied.
ARG STAP_IMAGE
FROM ${STAP_IMAGE}
ARG COMPILERS
ARG CC
COPY gcc-links.sh /usr/local/src/gcc-links.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $COMPILERS \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && sh /usr/local/src/gcc-links.sh \
 && command -v "$CC"
