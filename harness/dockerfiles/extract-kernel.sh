#!/bin/sh
# Usage: extract-kernel.sh KVER DBG_DEB DEB...
# Runs in a networkless container of a base image, with the kernel's packages (downloaded and
# checked by harness/kernel_debian.py) in /debs and the kernel store's new tree at /kroot.
# Extracts what stap and the guest need, in the layout the packages install, and prints
# what it found as KEY=VALUE lines for the harness.
set -eu
set -x  # the log then shows which step failed
kver=$1 dbg=$2
shift 2

for deb in "$@"; do
    dpkg-deb -x "$deb" /kroot
done

# The -dbg package holds vmlinux under three names: one is the file, the others are symlinks,
# and which one is the file has changed between package versions (6.1.0-47 and 6.12.117: the
# boot/ one; 7.x: lib/modules/KVER/vmlinux). Extracting only a link leaves stap with "No DWARF
# information found", so read the file list and take the regular file, then recreate the
# other names as links to it. The real System.map is in it too (next to vmlinux in 7.x).
listing=$(dpkg-deb -c "$dbg")
vmlinux=$(printf '%s\n' "$listing" | awk -v k="$kver" '$1 ~ /^-/ && ($6 == "./usr/lib/debug/boot/vmlinux-" k || $6 == "./usr/lib/debug/lib/modules/" k "/vmlinux" || $6 == "./usr/lib/debug/vmlinux-" k) {print $6; exit}')
sysmap=$(printf '%s\n' "$listing" | awk '$1 ~ /^-/ && $6 ~ /System\.map/ {print $6; exit}')
if [ -z "$vmlinux" ]; then
    echo "extract-kernel: no vmlinux file in $dbg" >&2
    exit 1
fi
# The modules' debuginfo too: stap needs it to resolve a probe point or $variable in a module
# (ext4, nfsd, ...), as systemtap's examples and testsuite do; about 5 GB for a Debian kernel.
moddebug=$(printf '%s\n' "$listing" | awk -v d="./usr/lib/debug/lib/modules/$kver/kernel/" 'index($6, d) == 1 {print substr(d, 1, length(d) - 1); exit}')
dpkg-deb --fsys-tarfile "$dbg" | tar -x -C /kroot "$vmlinux" ${sysmap:+"$sysmap"} ${moddebug:+"$moddebug"}
real="/${vmlinux#./}"

# Bookworm's packages install under /lib, newer ones under /usr/lib: one layout (merged /usr).
if [ -d /kroot/lib ]; then
    mkdir -p /kroot/usr/lib
    cp -a /kroot/lib/. /kroot/usr/lib/
    rm -rf /kroot/lib
    real=$(printf '%s' "$real" | sed 's,^/lib/,/usr/lib/,')
fi
for name in "/usr/lib/debug/boot/vmlinux-$kver" "/usr/lib/debug/lib/modules/$kver/vmlinux" "/usr/lib/debug/vmlinux-$kver"; do
    if [ "$name" != "$real" ]; then
        mkdir -p "/kroot$(dirname "$name")"
        ln -sf "$real" "/kroot$name"
    fi
done

# The image packages carry an 83-92 byte placeholder System.map (in /boot for 6.x, in
# /usr/lib/modules/KVER for 7.x); without the real one stap warns "Kernel function symbol
# table missing". Put the real one at both places.
mkdir -p /kroot/boot
if [ -n "$sysmap" ]; then
    mv "/kroot/${sysmap#./}" "/kroot/boot/System.map-$kver"
    [ -e "/kroot/usr/lib/modules/$kver/System.map" ] && cp "/kroot/boot/System.map-$kver" "/kroot/usr/lib/modules/$kver/System.map"
fi
# 6.x puts vmlinuz and config in /boot; 7.x in /usr/lib/modules/KVER.
vmlinuz=boot/vmlinuz-$kver
[ -f "/kroot/$vmlinuz" ] || vmlinuz=usr/lib/modules/$kver/vmlinuz
[ -e "/kroot/boot/config-$kver" ] || { [ -f "/kroot/usr/lib/modules/$kver/config" ] && cp "/kroot/usr/lib/modules/$kver/config" "/kroot/boot/config-$kver"; }

# Debian compresses its modules (kernel/fs/ext4/ext4.ko.xz) and names their debuginfo in the
# -dbg package after the uncompressed file (.../ext4/ext4.ko), with no .gnu_debuglink in the
# module and .build-id links for the vDSO only. elfutils (libdwfl find_debuginfo_in_path) then
# looks for a module's debuginfo under the module's own file name, finds nothing, and every
# probe on a module's function or $variable fails in pass 2 ("cannot find module ext4
# debuginfo"), on a Debian machine with the -dbg package installed as here. A link under the
# compressed name gives elfutils the package's own debuginfo (README, "Known issues").
debugmods=/kroot/usr/lib/debug/lib/modules/$kver
if [ -n "$moddebug" ] && [ -d "/kroot/usr/lib/modules/$kver/kernel" ]; then
    set +x  # one line per module otherwise
    linked=0
    for module in $(cd "/kroot/usr/lib/modules/$kver" && find kernel -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz'); do
        if [ -f "$debugmods/${module%.*}" ] && [ ! -e "$debugmods/$module" ]; then
            ln -s "$(basename "${module%.*}")" "$debugmods/$module"
            linked=$((linked + 1))
        fi
    done
    echo "extract-kernel: linked the debuginfo of $linked compressed module(s) under their file names"
    set -x
fi

rm -rf /kroot/usr/share /kroot/etc /kroot/usr/bin /kroot/usr/sbin /kroot/usr/lib/linux
# The packages ship no modules.dep (depmod runs in their postinst); the guest's module loading
# needs it, and the tree is read-only once in the store. depmod -b looks under BASE/lib.
ln -s usr/lib /kroot/lib
depmod -b /kroot "$kver"
rm /kroot/lib
test -f "/kroot/$vmlinuz"
test -f "/kroot/usr/src/linux-headers-$kver/Makefile"
test -L "/kroot/usr/lib/modules/$kver/build"
# stap reads the build tree's .config (the harness reads its compiler from it too).
test -f "/kroot/usr/src/linux-headers-$kver/.config"
set +x
echo "STAPMATRIX VMLINUX=${real#/}"
echo "STAPMATRIX VMLINUZ=$vmlinuz"
echo "STAPMATRIX MODULE_DEBUGINFO=${moddebug:-none}"
echo "extract-kernel: $kver ready: vmlinux $(stat -c %s "/kroot$real") bytes"
