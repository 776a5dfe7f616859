#!/bin/sh
# Usage: extract-kernel.sh KVER DBG_PACKAGE NAME=VERSION...
# Downloads the kernel's packages and extracts what stap and the guest need into /kroot.
set -eu
# Trace every step: the build log then shows which one failed.
set -x
kver=$1 dbg=$2
shift 2
mkdir -p /tmp/debs /kroot
cd /tmp/debs
apt-get update -o Acquire::Retries=5
apt-get download -o Acquire::Retries=5 "$@"

for deb in ./*.deb; do
    case "$deb" in ./"$dbg"_*) continue ;; esac
    dpkg-deb -x "$deb" /kroot
done

# The -dbg package holds vmlinux under three names: one is the file, the others are symlinks,
# and which one is the file has changed between package versions (6.1.0-47 and 6.12.117: the
# boot/ one). Extracting only a link leaves stap with "No DWARF information found", so read
# the file list and take the regular file, then recreate the other names as links to it.
listing=$(dpkg-deb -c ./"$dbg"_*.deb)
vmlinux=$(printf '%s\n' "$listing" | awk -v k="$kver" '$1 ~ /^-/ && ($6 == "./usr/lib/debug/boot/vmlinux-" k || $6 == "./usr/lib/debug/lib/modules/" k "/vmlinux" || $6 == "./usr/lib/debug/vmlinux-" k) {print $6; exit}')
sysmap=$(printf '%s\n' "$listing" | awk '$1 ~ /^-/ && $6 ~ /System\.map/ {print $6; exit}')
if [ -z "$vmlinux" ]; then
    echo "extract-kernel: no vmlinux file in $dbg" >&2
    exit 1
fi
dpkg-deb --fsys-tarfile ./"$dbg"_*.deb | tar -x -C /kroot "$vmlinux" ${sysmap:+"$sysmap"}
real="/${vmlinux#./}"
for name in "/usr/lib/debug/boot/vmlinux-$kver" "/usr/lib/debug/lib/modules/$kver/vmlinux" "/usr/lib/debug/vmlinux-$kver"; do
    if [ "$name" != "$real" ]; then
        mkdir -p "/kroot$(dirname "$name")"
        ln -sf "$real" "/kroot$name"
    fi
done
# The linux-image package's /boot/System.map is an 83-byte placeholder; without the real
# one stap warns "Kernel function symbol table missing".
if [ -n "$sysmap" ]; then
    mkdir -p /kroot/boot
    mv "/kroot/${sysmap#./}" "/kroot/boot/System.map-$kver"
fi

# Bookworm packages install under /lib, trixie's under /usr/lib; the systemtap images are
# merged-/usr (/lib is a symlink), and COPY must not replace that symlink with a directory.
if [ -d /kroot/lib ]; then
    mkdir -p /kroot/usr/lib
    cp -a /kroot/lib/. /kroot/usr/lib/
    rm -rf /kroot/lib
fi
rm -rf /kroot/usr/share/doc /kroot/usr/share/man /kroot/usr/share/lintian /kroot/usr/share/bug
rm -rf /tmp/debs /var/lib/apt/lists/*
test -f "/kroot/boot/vmlinuz-$kver"
# build is a symlink (absolute in bookworm's packages): check its target inside /kroot.
test -f "/kroot/usr/src/linux-headers-$kver/Makefile"
test -L "/kroot/usr/lib/modules/$kver/build"
echo "extract-kernel: $kver ready: vmlinux $(stat -c %s "/kroot$real") bytes"
