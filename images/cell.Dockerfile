# A cell image: a systemtap image plus one kernel's files and the gcc its headers call
# (gcc-12 for bookworm's 6.1, gcc-14 for trixie's 6.12). A COPY and a small install: cheap,
# so the N x M cells of a matrix cost N kernel images and M systemtap images.
ARG KERNEL_IMAGE
ARG STAP_IMAGE
FROM ${KERNEL_IMAGE} AS kernel
FROM ${STAP_IMAGE}
ARG COMPILERS
RUN apt-get update -o Acquire::Retries=5 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -o Acquire::Retries=5 $COMPILERS \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY --from=kernel /kroot/ /
