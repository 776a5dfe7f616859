#!/bin/sh
# Usage: build-stap.sh CONFIGURE EXTRA_VERSION
# Runs in the stap-deps image (images/stap-source-deps.Dockerfile) with no network: the kept
# tree at /usr/local/src/systemtap (built in place, so its Makefiles name the path the image
# keeps it at for the testsuite), ccache at /ccache, an empty install directory at /install.
# CONFIGURE is "yes" when configure must run (a new directory, or a configure input changed);
# otherwise make rebuilds only what the changed files touch.
set -eu
tree=/usr/local/src/systemtap
cd "$tree"
export CCACHE_DIR=/ccache CCACHE_BASEDIR="$tree" CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-4G}
export PATH=/usr/lib/ccache:$PATH
if [ "$1" = yes ]; then
    # Releases before 5.1 hard-code -Werror, which newer compilers trip over; -Wno-error in
    # CFLAGS/CXXFLAGS comes after the Makefile's AM_ flags and wins for every version.
    timeout 1200 ./configure --prefix=/opt/systemtap --disable-docs --disable-refdocs --disable-htmldocs \
        --without-java --without-dyninst --without-python2-probes --without-python3-probes \
        --without-nss --without-avahi --with-extra-version="$2" \
        CFLAGS="-O2 -g -Wno-error" CXXFLAGS="-O2 -g -Wno-error"
fi
ccache -z >/dev/null
timeout 5400 make -j"$(nproc)"
timeout 1200 make install DESTDIR=/install
# The configured tree, without objects, for the testsuite (make installcheck) and the examples.
mkdir -p /install/usr/local/src/systemtap
tar -C "$tree" --exclude='*.o' -cf - . | tar -C /install/usr/local/src/systemtap -xf -
ccache -s | sed -n 's/^ *\(Hits\|Misses\|Cacheable calls\)/ccache: &/p' || true
echo "build-stap: installed"
