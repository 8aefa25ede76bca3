#!/usr/bin/env bash
# .ci/consumers.sh: builds and runs small consumer projects of adam_c the way users would, outside the source tree,
# each checking its results bit for bit against adam_c.Adam (tests/consumers/check_demo.py):
#   install   cmake --install into a prefix (then moved: the packages are relocatable); exported symbols checked
#   cmake     a C program through find_package(adam_c CONFIG REQUIRED), with the shared and the static library
#   pkgconfig demo.c compiled as C++ through `pkg-config --cflags --libs adam_c` (and --static, .a only)
#   quickstart docs/examples/c (the C example the docs show) through its CMakeLists.txt (shared, static) and
#             through pkg-config (adam_c with an rpath, adam_c_static), run with no LD_LIBRARY_PATH
#   wheel     through the pip-installed package's adam_c.get_cmake_dir(): a C program and a Cython extension
#             that cimports adam_c.capi; the quickstart through `adam_c-config` / `python -m adam_c.config` and
#             through the package's adam_c_static.pc (this stage alone is what tests/packaging/test_consumers.py runs)
# Usage: bash .ci/consumers.sh [all|wheel]   with the venv's python on PATH (or PYTHON=...), adam_c installed in it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python}
STAGES=${1:-all}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
start=$(date +%s)
say() { printf '\n== consumers: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

command -v cmake >/dev/null || { echo "consumers.sh: cmake is required" >&2; exit 2; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# the consumers' sources are copied out too: nothing below reads the checkout except through an installed package
cp -r "$ROOT/tests/consumers" "$WORK/src"
cp -r "$ROOT/docs/examples/c" "$WORK/quickstart-src"
check() { (cd "$WORK" && "$PYTHON" "$WORK/src/check_demo.py" "$@"); }
# runs a quickstart build as a user would (no LD_LIBRARY_PATH: a shared one finds libadam_c through its rpath) and
# checks its output against adam_c.Adam
run_quickstart() {
    env -u LD_LIBRARY_PATH "$1" >"$1.txt"
    check --quickstart "$1.txt"
}
STEPS=25

if [ "$STAGES" = all ]; then
    say "install: cmake --install into a prefix, without Python"
    cmake -S "$ROOT" -B "$WORK/lib-build" -DCMAKE_BUILD_TYPE=Release -DADAM_C_PYTHON=OFF >/dev/null
    cmake --build "$WORK/lib-build" -j "$JOBS" >/dev/null
    cmake --install "$WORK/lib-build" --prefix "$WORK/prefix" >/dev/null
    mv "$WORK/prefix" "$WORK/moved-prefix"   # relocatable: nothing may point at the install location
    PREFIX="$WORK/moved-prefix"
    LIBDIR=$(dirname "$(find "$PREFIX" -name 'libadam_c.so' | head -1)")
    # the shared library exports exactly the functions adam_c.h declares
    declared=$(grep -oE '\badamc_[a-z0-9_]+\(' "$PREFIX/include/adam_c.h" | tr -d '(' | sort -u)
    exported=$(nm -D --defined-only "$LIBDIR/libadam_c.so" | awk '{print $3}' | sort -u)
    if [ "$declared" != "$exported" ]; then
        echo "consumers.sh: exported symbols differ from adam_c.h's functions:" >&2
        diff <(echo "$declared") <(echo "$exported") >&2 || true
        exit 1
    fi
    soname=$(readelf -d "$LIBDIR/libadam_c.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    echo "libadam_c.so: soname $soname, $(echo "$exported" | wc -l) exported adamc_* functions = adam_c.h's"

    say "cmake: C program through find_package(adam_c CONFIG REQUIRED), shared and static"
    cmake -S "$WORK/src/find_package" -B "$WORK/fp-build" -DCMAKE_PREFIX_PATH="$PREFIX" \
        -DCMAKE_BUILD_TYPE=Release | grep "adam_c"
    cmake --build "$WORK/fp-build" -j "$JOBS" >/dev/null
    "$WORK/fp-build/demo_shared" "$STEPS" >"$WORK/fp-shared.txt"
    check "$STEPS" "$WORK/fp-shared.txt"
    "$WORK/fp-build/demo_static" "$STEPS" >"$WORK/fp-static.txt"
    check "$STEPS" "$WORK/fp-static.txt"
    if readelf -d "$WORK/fp-build/demo_static" | grep -q 'libadam_c'; then
        echo "consumers.sh: demo_static depends on libadam_c.so" >&2
        exit 1
    fi

    say "pkgconfig: demo.c as C++ through pkg-config"
    command -v pkg-config >/dev/null || { echo "consumers.sh: pkg-config is required" >&2; exit 2; }
    CXX=${CXX:-c++}
    export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
    # shellcheck disable=SC2046
    "$CXX" -std=c++17 -O2 -Wall -Wextra -Werror -x c++ "$WORK/src/demo.c" -x none $(pkg-config --cflags --libs adam_c) \
        -Wl,-rpath,"$(pkg-config --variable=libdir adam_c)" -o "$WORK/demo_cxx"
    "$WORK/demo_cxx" "$STEPS" >"$WORK/cxx.txt"
    check "$STEPS" "$WORK/cxx.txt"
    # the header is C99: strict C99 compilers take it (a repeated typedef, say, is C11)
    # shellcheck disable=SC2046
    printf '#include <adam_c.h>\nint main(void) { return 0; }\n' |
        "${CC:-cc}" -std=c99 -pedantic-errors -Wall -Wextra -Werror -fsyntax-only -x c - $(pkg-config --cflags adam_c)
    # static: a copy of the prefix holding only libadam_c.a, so -ladam_c must resolve to it with Libs.private
    cp -r "$PREFIX" "$WORK/static-prefix"
    rm -f "$WORK/static-prefix/${LIBDIR#"$PREFIX"/}"/libadam_c.so*
    export PKG_CONFIG_PATH="$WORK/static-prefix/${LIBDIR#"$PREFIX"/}/pkgconfig"
    # shellcheck disable=SC2046
    "$CXX" -std=c++17 -O2 -x c++ "$WORK/src/demo.c" -x none $(pkg-config --static --cflags --libs adam_c) \
        -o "$WORK/demo_cxx_static"
    if readelf -d "$WORK/demo_cxx_static" | grep -q 'libadam_c'; then
        echo "consumers.sh: demo_cxx_static depends on libadam_c.so" >&2
        exit 1
    fi
    "$WORK/demo_cxx_static" "$STEPS" >"$WORK/cxx-static.txt"
    check "$STEPS" "$WORK/cxx-static.txt"
    unset PKG_CONFIG_PATH

    say "quickstart: docs/examples/c through CMake (shared, static) and pkg-config (rpath, adam_c_static)"
    for kind in shared static; do
        flag=OFF
        [ "$kind" = static ] && flag=ON
        cmake -S "$WORK/quickstart-src" -B "$WORK/qs-$kind" -DCMAKE_PREFIX_PATH="$PREFIX" -DQUICKSTART_STATIC=$flag \
            -DCMAKE_BUILD_TYPE=Release >/dev/null
        cmake --build "$WORK/qs-$kind" >/dev/null
        run_quickstart "$WORK/qs-$kind/quickstart"
    done
    if readelf -d "$WORK/qs-static/quickstart" | grep -q 'libadam_c'; then
        echo "consumers.sh: the static quickstart depends on libadam_c.so" >&2
        exit 1
    fi
    # the docs' commands, as written, against the full prefix (libadam_c.so beside libadam_c.a)
    export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
    cd "$WORK/quickstart-src"
    # shellcheck disable=SC2046
    cc quickstart.c $(pkg-config --cflags --libs adam_c) -Wl,-rpath,"$(pkg-config --variable=libdir adam_c)" \
        -o "$WORK/qs-pc-shared"
    # shellcheck disable=SC2046
    cc quickstart.c $(pkg-config --cflags --libs adam_c_static) -o "$WORK/qs-pc-static"
    cd "$ROOT"
    unset PKG_CONFIG_PATH
    readelf -d "$WORK/qs-pc-shared" | grep -q 'NEEDED.*libadam_c' ||
        { echo "consumers.sh: qs-pc-shared does not link libadam_c.so" >&2; exit 1; }
    if readelf -d "$WORK/qs-pc-static" | grep -q 'libadam_c'; then
        echo "consumers.sh: adam_c_static.pc linked libadam_c.so" >&2
        exit 1
    fi
    run_quickstart "$WORK/qs-pc-shared"
    run_quickstart "$WORK/qs-pc-static"
fi

say "wheel: a C program and a Cython extension through adam_c.get_cmake_dir()"
CMAKE_DIR=$(cd "$WORK" && "$PYTHON" -c "import adam_c; print(adam_c.get_cmake_dir())")
# Cython finds adam_c/capi.pxd under the directory holding the adam_c package (site-packages, or the checkout of
# an editable install)
PXD_ROOT=$(cd "$WORK" && "$PYTHON" -c "import adam_c, os; print(os.path.dirname(os.path.dirname(adam_c.__file__)))")
PY=$(cd "$WORK" && "$PYTHON" -c "import sys; print(sys.executable)")
# cython from this python's environment (pip's isolated build had its own); fall back to one on PATH
CYTHON=$(cd "$WORK" && "$PYTHON" -c "import shutil, sys, os; print(shutil.which('cython', path=os.path.dirname(sys.executable)) or '')" || true)
cmake -S "$WORK/src/wheel" -B "$WORK/wheel-build" -Dadam_c_DIR="$CMAKE_DIR" -DPython_EXECUTABLE="$PY" \
    -DADAM_C_PXD_ROOT="$PXD_ROOT" ${CYTHON:+-DCYTHON_EXECUTABLE="$CYTHON"} -DCMAKE_BUILD_TYPE=Release | grep "adam_c"
cmake --build "$WORK/wheel-build" -j "$JOBS" >/dev/null
"$WORK/wheel-build/demo" "$STEPS" >"$WORK/wheel.txt"
check "$STEPS" "$WORK/wheel.txt"
check "$STEPS" --cython "$WORK/wheel-build"

say "wheel: the quickstart through adam_c-config, python -m adam_c.config and the package's pkg-config files"
BINDIR=$(dirname "$PY")
CONFIG="$BINDIR/adam_c-config"
[ -x "$CONFIG" ] || { echo "consumers.sh: no adam_c-config console script beside $PY" >&2; exit 1; }
[ "$("$CONFIG" --version)" = "$(cd "$WORK" && "$PYTHON" -m adam_c.config --version)" ]
[ "$("$CONFIG" --cmake-dir)" = "$CMAKE_DIR" ]
cd "$WORK/quickstart-src"
# shellcheck disable=SC2046
cc quickstart.c $("$CONFIG" --cflags --libs --rpath) -o "$WORK/qs-config-shared"
# shellcheck disable=SC2046
cc quickstart.c $("$PYTHON" -m adam_c.config --cflags --libs-static) -o "$WORK/qs-config-static"
built=("$WORK/qs-config-shared" "$WORK/qs-config-static")
if command -v pkg-config >/dev/null; then
    PKG_DIR=$("$CONFIG" --pkgconfig-dir)
    # shellcheck disable=SC2046
    cc quickstart.c $(PKG_CONFIG_PATH="$PKG_DIR" pkg-config --cflags --libs adam_c_static) -o "$WORK/qs-wheel-pc-static"
    [ "$(PKG_CONFIG_PATH="$PKG_DIR" pkg-config --modversion adam_c)" = "$("$CONFIG" --version)" ]
    built+=("$WORK/qs-wheel-pc-static")
fi
cd "$ROOT"
cmake -S "$WORK/quickstart-src" -B "$WORK/qs-wheel-cmake" -Dadam_c_DIR="$("$CONFIG" --cmake-dir)" \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$WORK/qs-wheel-cmake" >/dev/null
built+=("$WORK/qs-wheel-cmake/quickstart")
for exe in "${built[@]}"; do
    run_quickstart "$exe"
done
if readelf -d "$WORK/qs-config-static" | grep -q 'libadam_c'; then
    echo "consumers.sh: adam_c-config --libs-static linked libadam_c.so" >&2
    exit 1
fi
say "all consumers built outside the tree and bit-identical to adam_c.Adam"
