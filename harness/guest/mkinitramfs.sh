#!/bin/sh
# Usage: mkinitramfs.sh KVER OUTDIR
# Runs in the cell container (no network). Packs busybox, this image's own staprun and stapio
# with their libraries (staprun/stapio must come from the same systemtap build as the
# translator: the transport changed in 5.0), the uprobes target, the compiled modules in
# OUTDIR/modules and the test list OUTDIR/list into OUTDIR/initramfs.cpio.gz, and copies the
# kernel to OUTDIR/vmlinuz.
set -eu
kver=$1 out=$2
root=$(mktemp -d)
mkdir -p "$root/bin" "$root/tests" "$root/usr/local/bin"
cp /bin/busybox "$root/bin/busybox"
cp /guest/init "$root/init"
chmod 755 "$root/init"

staprun=$(command -v staprun)
# stapio: next to a source build's staprun (PREFIX/libexec/systemtap), else where the
# package put it.
stapio="$(dirname "$staprun")/../libexec/systemtap/stapio"
[ -f "$stapio" ] || stapio=$(dpkg -L systemtap-runtime 2>/dev/null | grep '/stapio$' | head -1 || true)
[ -n "$stapio" ] || stapio=$(find /usr /opt -name stapio -type f | head -1)
stapio=$(readlink -f "$stapio")
for binary in "$staprun" "$stapio" /usr/local/bin/stapmatrix-target; do
    mkdir -p "$root$(dirname "$binary")"
    cp -L "$binary" "$root$binary"
    for library in $(ldd "$binary" 2>/dev/null | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'); do
        mkdir -p "$root$(dirname "$library")"
        cp -L "$library" "$root$library"
    done
done

cp "$out"/modules/*.ko "$root/tests/" 2>/dev/null || true
cp "$out/list" "$root/tests/list"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out/initramfs.cpio.gz"
cp "/boot/vmlinuz-$kver" "$out/vmlinuz"
rm -rf "$root"
echo "initramfs: $(stat -c %s "$out/initramfs.cpio.gz") bytes, staprun $staprun, stapio $stapio"
