#!/usr/bin/env bash
# .ci/aarch64.sh: keeps ARM working: cross-builds the C core and its C test program (tests/c/test_kernels.c) for
# aarch64 with gcc-aarch64-linux-gnu (cmake/aarch64-linux-gnu.cmake), with no compiler warning allowed, and runs
# the test program under qemu-user. Installs the cross compiler and qemu with apt-get when they are missing (CI
# runs as root). Run from anywhere; CI: `bash .ci/aarch64.sh`. Environment: AARCH64_BUILD (default build/aarch64),
# JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${AARCH64_BUILD:-$ROOT/build/aarch64}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
start=$(date +%s)
say() { printf '\n== aarch64: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

command -v cmake >/dev/null || { echo "aarch64.sh: cmake is required" >&2; exit 2; }
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user)
if [ "${#missing[@]}" -ne 0 ]; then
    say "installing ${missing[*]} with apt-get"
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "aarch64.sh: needs ${missing[*]} (apt-get install as root; or put aarch64-linux-gnu-gcc and" \
             "qemu-aarch64 on PATH)" >&2
        exit 2
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
QEMU=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu

say "cross-build: C core and test program, Release, $(aarch64-linux-gnu-gcc -dumpfullversion)"
rm -rf "$BUILD"
mkdir -p "$(dirname "$BUILD")"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" -DADAM_C_TESTS=ON \
    -DADAM_C_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1 \
    || { cat "$BUILD.configure.log" >&2; exit 1; }
# every compile command's output is kept: a warning (the baseline kernels' auto-vectorised NEON code included)
# fails the stage as an error would
if ! cmake --build "$BUILD" -j "$JOBS" >"$BUILD.build.log" 2>&1; then
    cat "$BUILD.build.log" >&2
    exit 1
fi
if grep -q "warning:" "$BUILD.build.log"; then
    grep -B2 -A6 "warning:" "$BUILD.build.log" >&2
    echo "aarch64.sh: the aarch64 build has compiler warnings" >&2
    exit 1
fi
machine=$(readelf -h "$BUILD/test_kernels" | sed -n 's/^ *Machine: *//p')
[ "$machine" = "AArch64" ] || { echo "aarch64.sh: test_kernels is built for '$machine', not AArch64" >&2; exit 1; }
if readelf -d "$BUILD/libadam_c.so" | grep -q "omp"; then
    echo "aarch64.sh: libadam_c.so links an OpenMP runtime" >&2
    exit 1
fi

say "C test program under $(basename "$QEMU") ($("$QEMU" --version | head -1))"
status=0
timeout 900 "$QEMU" "$BUILD/test_kernels" >"$BUILD.test.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    cat "$BUILD.test.log" >&2
    echo "aarch64.sh: the C test program failed under qemu (exit $status)" >&2
    exit 1
fi
head -1 "$BUILD.test.log"
say "done: $(tail -1 "$BUILD.test.log")"
