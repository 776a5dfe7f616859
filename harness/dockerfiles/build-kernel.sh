#!/bin/sh
# Usage: build-kernel.sh configure BASE [FRAGMENT...]   |   build-kernel.sh build
# Runs in the kernel build image (images/kernel-build.Dockerfile), no network: the source at
# /usr/src/linux (read-only), the build directory at /usr/src/linux-build, ccache at /ccache,
# config fragments at /config. BASE is a make target (defconfig, tinyconfig, allnoconfig) or
# "file:/config/NAME" (a full .config). Fragments are files under /config, or "target:NAME"
# for a fragment of the source tree (kernel/configs/NAME, arch/x86/configs/NAME).
set -eu
src=/usr/src/linux out=/usr/src/linux-build
# Reproducible and cache-friendly: a fixed timestamp, user, host and build number make the
# same source give the same objects, so ccache and make reuse them (tuxmake does the same);
# LOCALVERSION set (empty) keeps setlocalversion from appending "+".
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 2026" KBUILD_BUILD_USER=stapmatrix \
    KBUILD_BUILD_HOST=stapmatrix KBUILD_BUILD_VERSION=1 LOCALVERSION=
export CCACHE_DIR=/ccache CCACHE_BASEDIR=/usr/src CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
export PATH=/usr/lib/ccache:$PATH
mkdir -p "$out"

case "$1" in
configure)
    base=$2
    shift 2
    case "$base" in
        file:*) cp "${base#file:}" "$out/.config" ;;
        *) make -C "$src" O="$out" -s "$base" ;;
    esac
    # The fragments stay positional parameters, each target:NAME replaced by its file in place
    # (the list rotates once), never a string the shell would split or glob.
    count=$#
    while [ "$count" -gt 0 ]; do
        fragment=$1
        shift
        case "$fragment" in
            target:*)
                name=${fragment#target:}
                found=""
                for place in "$src/kernel/configs/$name" "$src/arch/x86/configs/$name"; do
                    [ -f "$place" ] && found=$place && break
                done
                if [ -z "$found" ]; then
                    echo "build-kernel: this source has no config fragment $name (looked in kernel/configs and arch/x86/configs)" >&2
                    exit 2
                fi
                fragment=$found ;;
        esac
        set -- "$@" "$fragment"
        count=$((count - 1))
    done
    # merge_config.sh -m merges without running make; olddefconfig then resolves dependencies.
    [ "$#" -eq 0 ] || (cd "$out" && "$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$@")
    make -C "$src" O="$out" -s olddefconfig
    echo "build-kernel: configured $(cat "$out/include/config/kernel.release" 2>/dev/null || make -C "$src" O="$out" -s kernelrelease)"
    ;;
build)
    ccache -z >/dev/null
    make -C "$src" O="$out" -j"$(nproc)" bzImage modules
    echo "build-kernel: built $(cat "$out/include/config/kernel.release")"
    ccache -s | sed -n 's/^ *\(Hits\|Misses\|Cacheable calls\)/ccache: &/p' || true
    ;;
*)
    echo "usage: build-kernel.sh configure BASE [FRAGMENT...] | build" >&2
    exit 2
    ;;
esac
