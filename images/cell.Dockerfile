# A cell image: a systemtap image plus the compiler a kernel's headers call (gcc-12 for
# bookworm's 6.1, gcc-14 for trixie's 6.12 and for kernels stapmatrix builds, gcc-16 for 7.x).
# The kernel's files are not in it: they are mounted read-only from the kernel store, so one
# cell image serves every kernel built with that compiler. A kernel built from source calls
# plain `gcc`: GCC_LINK then makes `gcc` the version that built it.
ARG STAP_IMAGE
FROM ${STAP_IMAGE}
ARG COMPILERS
ARG CC
ARG GCC_LINK
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $COMPILERS \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && if [ -n "$GCC_LINK" ]; then ln -sf "/usr/bin/$GCC_LINK" /usr/local/bin/gcc; fi \
 && command -v "$CC" && "$CC" --version | head -1
