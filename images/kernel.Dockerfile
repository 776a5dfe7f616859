# A kernel image: one Debian kernel's files under /kroot, ready to be copied onto any
# systemtap image (see images/cell.Dockerfile). Holds the headers and kbuild tools, the real
# System.map and vmlinux from the -dbg package (not the other 5-7 GB of it), vmlinuz and
# /lib/modules. Built by harness/images.py; the tag is a hash of this file and its arguments.
ARG BASE
FROM ${BASE}
ARG KVER
ARG DBG_PACKAGE
ARG PACKAGES
COPY extract-kernel.sh /usr/local/sbin/extract-kernel.sh
RUN sh /usr/local/sbin/extract-kernel.sh "$KVER" "$DBG_PACKAGE" $PACKAGES
