#!/usr/bin/env bash
# .ci/asan.sh: the C core's test program (Release, then ASan+UBSan via CMake/CTest) and the Python suite under ASan.
#
# Run from the repo root with a venv's python (test extras installed) on PATH as `python`; CI: `bash .ci/asan.sh`.
# The Python pass builds a second copy of the extension with -DADAM_C_SANITIZE=ON (ASan + UBSan, no recovery)
# into build/asan-site, puts it first on PYTHONPATH, preloads gcc's ASan runtime into the (uninstrumented)
# interpreter and runs the whole pytest suite once. Python objects go through malloc (PYTHONMALLOC=malloc) so ASan
# sees them too; leak detection is off because CPython keeps some memory until exit by design. Any sanitizer
# report (in pytest or in any subprocess or forked child it starts, found through log_path) fails the script.
# Environment: ASAN_BUILD_ROOT (default build/) for build directories, JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${ASAN_BUILD_ROOT:-$ROOT/build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
start=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }
# every stage runs even if an earlier one failed, so one CI run shows everything; the exit status sums them up
failed_stages=()

command -v python >/dev/null || { echo "asan.sh: no 'python' on PATH (activate the CI venv first)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "asan.sh: cmake is required" >&2; exit 2; }

# ---------------------------------------------------------------- 1. the C test program, Release (vector paths)
say "C test program, Release build"
cmake -S "$ROOT" -B "$BUILD/c-release" -DADAM_C_TESTS=ON -DADAM_C_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD/c-release" -j "$JOBS" >/dev/null
ctest --test-dir "$BUILD/c-release" --output-on-failure || failed_stages+=("C test program (Release)")

# ---------------------------------------------------------------- 2. the C test program under ASan + UBSan
say "C test program, ASan + UBSan (Debug)"
cmake -S "$ROOT" -B "$BUILD/c-asan" -DADAM_C_TESTS=ON -DADAM_C_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$BUILD/c-asan" -j "$JOBS" >/dev/null
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$BUILD/c-asan" --output-on-failure || failed_stages+=("C test program (ASan+UBSan)")

# ---------------------------------------------------------------- 3. the extension built with the sanitizers
say "Python extension with ADAM_C_SANITIZE=ON"
SITE="$BUILD/asan-site"
rm -rf "$SITE"
python -m pip install -q --no-deps --target "$SITE" -Cbuild-dir="$BUILD/asan-py" \
    -Ccmake.define.ADAM_C_SANITIZE=ON -Ccmake.build-type=RelWithDebInfo "$ROOT"

# A Python of its own for this pass: a venv that sees the CI venv's packages (numpy, pytest, torch, ...) through a
# plain path entry, so the CI venv's .pth files, among them the editable install's import redirect to the source
# tree, are NOT processed and the ASan build in $SITE is the adam_c that every test (and subprocess) imports.
ASAN_VENV="$BUILD/asan-venv"
rm -rf "$ASAN_VENV"
python -m venv --without-pip "$ASAN_VENV"
ci_site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
asan_venv_site=$("$ASAN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n' "$SITE" "$ci_site" > "$asan_venv_site/asan_paths.pth"
PATH="$ASAN_VENV/bin:$PATH"
hash -r

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "asan.sh: gcc's libasan.so not found ($LIBASAN)" >&2; exit 2; }
LOGS="$BUILD/asan-logs"
rm -rf "$LOGS"
mkdir -p "$LOGS"
# libstdc++ too: ASan resolves its __cxa_throw interceptor when it starts, and the interpreter does not link
# libstdc++, so without it the first C++ exception thrown inside libtorch (any torch RuntimeError) aborts on
# "CHECK failed: real___cxa_throw != 0"
LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$LOGS/asan:log_exe_name=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan"
export PYTHONMALLOC=malloc
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONFAULTHANDLER=1

# run from an empty directory so the source tree's adam_c cannot shadow the build
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# the interpreter really runs the instrumented extension with the ASan runtime loaded
python - "$SITE" <<'PY'
import sys
import adam_c
from adam_c import _core
site = sys.argv[1]
assert _core.__file__.startswith(site), f"adam_c._core comes from {_core.__file__}, not the ASan build in {site}"
maps = open("/proc/self/maps").read()
assert "libasan" in maps, "the ASan runtime is not loaded"
print("ASan build in use:", _core.__file__, adam_c.cpu_info())
PY

# the harness is not vacuous: a deliberate heap overflow in this interpreter is reported (in a log of its own)
mkdir -p "$WORK/selftest"
ASAN_OPTIONS="detect_leaks=0:log_path=$WORK/selftest/asan" python -c '
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
ctypes.memmove(ctypes.create_string_buffer(64), libc.malloc(16), 64)
' >/dev/null 2>&1 || true
if ! grep -qs "heap-buffer-overflow" "$WORK"/selftest/asan.*; then
    echo "asan.sh: ASan did not report a deliberate heap overflow: the Python pass would prove nothing" >&2
    exit 2
fi

# ---------------------------------------------------------------- 4. the Python suite under ASan
say "Python test suite under ASan + UBSan"
# --capture=sys: pytest captures Python-level output only, so a sanitizer report written to fd 2 (UBSan ignores
# log_path) reaches this script's output and the log even when the process aborts on it
status=0
python -m pytest -p no:cacheprovider --rootdir "$ROOT" "$ROOT/tests" -q --capture=sys 2>&1 \
    | tee "$BUILD/asan-pytest.log" || status=$?

reports=$(find "$LOGS" -type f | sort)
if [ -n "$reports" ]; then
    echo "asan.sh: sanitizer reports:" >&2
    for f in $reports; do echo "---- $f" >&2; cat "$f" >&2; done
    failed_stages+=("Python suite under ASan: $(echo "$reports" | grep -c .) ASan report file(s)")
fi
inline=$(grep -cE "runtime error: |ERROR: AddressSanitizer|ERROR: LeakSanitizer" "$BUILD/asan-pytest.log" || true)
[ "$inline" -eq 0 ] || failed_stages+=("Python suite under ASan: $inline sanitizer report line(s) in the output")
[ "$status" -eq 0 ] || failed_stages+=("Python suite under ASan: pytest exit $status")
say "done"
if [ "${#failed_stages[@]}" -ne 0 ]; then
    printf 'asan.sh: FAILED: %s\n' "${failed_stages[@]}" >&2
    exit 1
fi
echo "asan.sh: C test program (Release, ASan+UBSan) and Python suite under ASan: all passed, no sanitizer reports"
