#!/bin/sh
# Usage: mkinitramfs.sh KVER OUTDIR [stapsh]
# Runs in the cell container (no network, the kernel's tree mounted read-only). Packs busybox,
# this image's own staprun and stapio with their libraries (staprun/stapio must come from the
# same systemtap build as the translator: the transport changed in 5.0), the uprobes target,
# the compiled modules in OUTDIR/modules and the test list OUTDIR/list into
# OUTDIR/initramfs.cpio, uncompressed: under TCG the guest kernel spends about a second
# gunzipping 30 MB (staprun's libraries), and copying it is cheaper. With "stapsh", also stapsh and the virtio modules it needs to
# listen on a virtio-serial port (Debian builds virtio, virtio_pci and virtio_console as
# modules; kernels stapmatrix builds have them built in), for `stap --remote` (systemtap's
# testsuite). The harness copies the kernel itself from the kernel store.
set -eu
kver=$1 out=$2 with_stapsh=${3:-}
root=$(mktemp -d)
mkdir -p "$root/bin" "$root/tests" "$root/usr/local/bin"
# The image's merged /usr (/lib -> usr/lib): stap resolves a library to its real path
# (/usr/lib/x86_64-linux-gnu/libc.so.6, ltrace's process probes) and the guest must have it
# there too, not only at the /lib path ldd names.
for dir in lib lib32 lib64 libx32; do
    if [ -L "/$dir" ]; then  # a relative link (usr/lib): its target made first, or mkdir -p fails
        mkdir -p "$root/$(readlink "/$dir")" && ln -s "$(readlink "/$dir")" "$root/$dir"
    fi
done
cp /bin/busybox "$root/bin/busybox"
cp /guest/init "$root/init"
mkdir -p "$root/etc"
printf '%s\n' "proc /proc proc defaults 0 0" "sysfs /sys sysfs defaults 0 0" \
    "devtmpfs /dev devtmpfs defaults 0 0" "tmpfs /tmp tmpfs defaults 0 0" \
    "debugfs /sys/kernel/debug debugfs defaults 0 0" "tracefs /sys/kernel/tracing tracefs defaults 0 0" \
    > "$root/etc/fstab"
# The one user the guest runs as: stapbpf (--runtime=bpf) looks its name up and stops with
# "an error occured while retrieving username" without /etc/passwd.
printf '%s\n' "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
printf '%s\n' "root:x:0:" > "$root/etc/group"
printf '%s\n' "127.0.0.1 localhost" "127.0.1.1 stapmatrix-guest" "::1 localhost ip6-localhost ip6-loopback" \
    > "$root/etc/hosts"
chmod 755 "$root/init"

staprun=$(command -v staprun)
# stapio: next to a source build's staprun (PREFIX/libexec/systemtap), else where the
# package put it.
stapio="$(dirname "$staprun")/../libexec/systemtap/stapio"
[ -f "$stapio" ] || stapio=$(dpkg -L systemtap-runtime 2>/dev/null | grep '/stapio$' | head -1 || true)
[ -n "$stapio" ] || stapio=$(find /usr /opt -name stapio -type f | head -1)
stapio=$(readlink -f "$stapio")
# A binary at the same path in the guest, with the shared libraries ldd names.
copy_with_libraries() {
    for file in "$1" $(ldd "$1" 2>/dev/null | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'); do
        # The file at its real path (libcap.so.2.75: where stap, resolving links, places a
        # probe), then the name ldd gave (libcap.so.2) as a link, unless it is that file already.
        real=$(readlink -f "$file")
        mkdir -p "$root$(dirname "$real")"
        cp "$real" "$root$real"
        if [ ! -e "$root$file" ]; then
            mkdir -p "$root$(dirname "$file")"
            ln -s "$real" "$root$file"
        fi
    done
}
# sudo as root (process/auditbt runs `stap -c "sudo true"`) still loads its sudoers plugin
# and goes through PAM: without /etc/pam.d it stops with "unable to initialize PAM", without
# pam_unix's helper unix_chkpwd (which reads /etc/shadow) with "account validation failure".
# The image's own sudo and PAM configuration, its PAM modules, and root's shadow entry.
# `if`, not `[ ] &&`: a missing last file would end the loop, the function and (set -e) this
# script with status 1.
add_sudo_config() {
    for file in /usr/libexec/sudo/*.so /usr/lib/*/security/*.so /usr/sbin/unix_chkpwd; do
        if [ -f "$file" ]; then copy_with_libraries "$file"; fi
    done
    for config in /etc/sudoers /etc/sudoers.d /etc/sudo.conf /etc/pam.d /etc/security /etc/nsswitch.conf /etc/login.defs; do
        if [ -e "$config" ]; then cp -a "$config" "$root/etc/"; fi
    done
    printf '%s\n' "root:*:20000:0:99999:7:::" > "$root/etc/shadow"
    chmod 640 "$root/etc/shadow"
}
for binary in "$staprun" "$stapio" /usr/local/bin/stapmatrix-target; do
    copy_with_libraries "$binary"
done

if [ "$with_stapsh" = stapsh ]; then
    stapsh=$(command -v stapsh || true)
    [ -n "$stapsh" ] || stapsh=$(find /opt /usr/lib /usr/libexec -name stapsh -type f | head -1)
    copy_with_libraries "$stapsh"
    ln -s "$stapsh" "$root/bin/stapsh"
    # stapsh runs the staprun it was built with; in this guest that is staprun-parts, which
    # joins a module the host's relay sent in parts, then runs systemtap's staprun.
    staprun_in_guest="$root$(readlink -f "$staprun")"
    mv "$staprun_in_guest" "$staprun_in_guest.real"
    cp /guest/staprun-parts "$staprun_in_guest"
    chmod 755 "$staprun_in_guest"
    # The guest's background activity (guest/background.c says why), with the image's gcc.
    gcc -O2 -static -o "$root/usr/local/bin/stapmatrix-background" /guest/background.c
    # Programs the tests start in the guest (`stap -c CMD`: sleep, cat, stap itself, strace...)
    # and stapbpf for the bpf runtime, one name a line in OUTDIR/guest-programs: this image's,
    # at the same path, with their libraries, even where busybox has an applet of that name:
    # stap resolves a -c program's path in the container and probes that very file (ltrace's
    # process("/usr/bin/ls")). A name the image lacks is left to busybox, if it has it.
    if [ -f "$out/guest-programs" ]; then
        while read -r program; do
            found=$(command -v "$program" 2>/dev/null || true)
            case "$found" in /*) copy_with_libraries "$(readlink -f "$found")"
                [ "$found" = "$(readlink -f "$found")" ] || { mkdir -p "$root$(dirname "$found")"; ln -sf "$(readlink -f "$found")" "$root$found"; } ;;
            esac
            if [ "$program" = sudo ] && [ -n "$found" ]; then add_sudo_config; fi
        done < "$out/guest-programs"
    fi
    mkdir -p "$root/modules"
    # modules.dep was made when the kernel entered the store (harness/dockerfiles/extract-kernel.sh):
    # take the modules in load order, decompressed (busybox insmod cannot read .ko.xz).
    n=0
    # virtio_blk: the guest's small disk (harness/stapsh_guest.py); a kernel without it has none.
    for module in $(modprobe -a -S "$kver" --show-depends virtio_pci virtio_console virtio_blk 2>/dev/null | awk '$1 == "insmod" && !seen[$2]++ {print $2}'); do
        n=$((n + 1))
        name=$(printf '%02d-%s' "$n" "$(basename "$module" | sed 's/\.ko.*//')")
        case "$module" in
            *.xz) xz -dc "$module" > "$root/modules/$name.ko" ;;
            *.zst) zstd -dc "$module" > "$root/modules/$name.ko" ;;
            *) cp "$module" "$root/modules/$name.ko" ;;
        esac
    done
fi

cp "$out"/modules/*.ko "$root/tests/" 2>/dev/null || true
cp "$out/list" "$root/tests/list"
# busybox's applets as links made here, not by `busybox --install` at every boot.
for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
image="$out/initramfs${with_stapsh:+-$with_stapsh}.cpio"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$image"
rm -rf "$root"
echo "initramfs: $image $(stat -c %s "$image") bytes, staprun $staprun, stapio $stapio"
