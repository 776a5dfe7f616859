#!/bin/sh
# For each gcc-N installed, a directory holding a `gcc` that is gcc-N: a kernel built from
# source calls plain `gcc`, and the compile container puts the directory of the version that
# built the kernel first in PATH (harness/modules.py), without an image per version.
set -eu
for compiler in /usr/bin/gcc-[0-9]*; do
    [ -x "$compiler" ] || continue
    version=${compiler##*/gcc-}
    mkdir -p "/usr/local/lib/stapmatrix/gcc-$version"
    ln -sf "$compiler" "/usr/local/lib/stapmatrix/gcc-$version/gcc"
done
