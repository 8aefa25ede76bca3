"""adam_c: fused, in-place Adam/AdamW/AMSGrad for NumPy arrays and other CPU buffers, with a C core."""
import operator as _operator
import os as _os
import warnings as _warnings
from typing import Optional as _Optional

import numpy as _np

try:
    from . import _core
except ImportError as _exc:  # NumPy's convention: say what to do, not "circular import"
    raise ImportError(
        "adam_c's compiled extension (adam_c._core) could not be imported. If you are in adam_c's source tree, "
        "install it first (`pip install -e .` builds the extension in place, then `python -m adam_c` and "
        "`pytest` work from here), or run Python from another directory so the installed adam_c is used. "
        f"Original error: {_exc}") from None
from . import schedules
from ._torch_checkpoint import from_torch_state_dict, to_torch_state_dict
from .functional import adam_step
from .optim import Adam, AdamW
from ._threadpoolctl import register as _register_with_threadpoolctl
from .typing import CpuInfo as _CpuInfo

__version__: str = _core.version()  # the C library's, generated from pyproject.toml's version
__all__ = ["Adam", "AdamW", "adam_step", "cpu_info", "from_torch_state_dict", "get_cmake_dir", "get_include",
           "get_library_dir", "get_num_threads", "get_pkgconfig_dir", "set_num_threads", "set_target",
           "set_executor", "set_threading", "to_torch_state_dict"]

_MAX_THREADS = _core.max_threads()  # a bound the C pool enforces too; beyond it the OS may refuse threads
_register_with_threadpoolctl()

_forced = _os.environ.get("ADAM_C_TARGET", "").strip()
_forced_executor = _os.environ.get("ADAM_C_EXECUTOR", "").strip()
if _forced_executor and _forced_executor not in ("auto", "pool", "openmp"):
    _warnings.warn(f"ADAM_C_EXECUTOR={_forced_executor!r} is not 'auto', 'pool' or 'openmp'; using 'auto'",
                   RuntimeWarning, stacklevel=2)
if _forced and _core.current_target() != _forced:
    _warnings.warn(f"ADAM_C_TARGET={_forced!r} is not a SIMD target this CPU supports "
                   f"(compiled: {_core.target_names()}); using {_core.current_target()!r}", RuntimeWarning,
                   stacklevel=2)


def cpu_info() -> _CpuInfo:
    """What adam_c runs on: the SIMD target in use, all compiled targets and which this CPU supports, and its
    threads: "num_threads" what a large step uses, "default_num_threads" what it uses without set_num_threads
    (OMP_NUM_THREADS or the CPU count, changed by threadpoolctl's limits). "openmp" is False: adam_c links no
    OpenMP runtime. ADAM_C_TARGET=<name> in the environment forces a target at import."""
    names = _core.target_names()
    return {
        "target": _core.current_target(),
        "targets": names,
        "supported_targets": [n for n in names if _core.target_supported(n)],
        "forced_target": _forced or None,
        "openmp": _core.has_openmp(),
        "num_threads": _core.get_num_threads(),
        "default_num_threads": _core.get_default_num_threads(),
        "parallel_threshold": _core.get_parallel_threshold(),
        "threading": "auto" if _core.get_autotune() else "fixed",
        "pool_restarts_after_fork": _core.pool_restarts(),
        "executor": _core.get_executor(),
        "openmp_runtime": _core.openmp_runtime(),
    }


def set_executor(mode: str) -> None:
    """Which threads run a parallel step. "auto" (default): adam_c.torch's steps from the main thread run on the
    thread team of an OpenMP runtime already loaded in the process (torch's, whose threads hold the cores after
    forward and backward), everything else on adam_c's own pool;
    "pool": always the pool; "openmp": the team whenever a runtime is loaded. ADAM_C_EXECUTOR=<mode> in the
    environment sets it at import. Results are bit-identical whichever runs the step."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    _core.set_executor(mode)


def set_threading(mode: str) -> None:
    """"auto" (default): each optimizer times its steps serially and with threads and keeps the faster, so a
    step inside a training loop is never slowed down by threads that cannot run; "fixed": threads for every step
    above cpu_info()["parallel_threshold"] (benchmarks of the threaded path, tests). Results are the same."""
    if mode not in ("auto", "fixed"):
        raise ValueError(f"mode must be 'auto' or 'fixed', got {mode!r}")
    _core.set_autotune(mode == "auto")


def set_target(name: str) -> None:
    """Switch the SIMD target (cpu_info()["targets"]: "baseline", "avx2", "avx512", "avx512_zen4" on x86-64) for
    this process; ValueError if the CPU lacks it.
    Meant for tests and benchmarks; not to be called while another thread is stepping."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _core.set_target(name)


def get_num_threads() -> int:
    """Threads a large step uses: set_num_threads' value, else the default: OMP_NUM_THREADS (its first value,
    read at import) or the CPUs this process may run on, changed by threadpoolctl.threadpool_limits."""
    return _core.get_num_threads()


def set_num_threads(n: _Optional[int]) -> None:
    """Use n >= 1 threads for large steps (threadpoolctl's limits then no longer apply to adam_c); None (or 0)
    follows the default again (OMP_NUM_THREADS or the CPU count, and threadpoolctl's limits)."""
    if n is None:
        n = 0
    if isinstance(n, (bool, _np.bool_)) or not hasattr(type(n), "__index__"):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    n = _operator.index(n)  # NumPy integers too (a thread count from np.argmin, say)
    if not 0 <= n <= _MAX_THREADS:
        raise ValueError(f"n must be in 1..{_MAX_THREADS}, or 0/None to follow OMP_NUM_THREADS, got {n}")
    _core.set_num_threads_raw(n)


# ---------------------------------------------------------------- the C library inside the installed package
# The wheel (and an editable install) put the C header, libadam_c.so/.a and the CMake and pkg-config packages
# next to the compiled extension module, which is where an editable install keeps them too (the .py files may be
# elsewhere). For building C, C++ or Cython code against this adam_c (see README, "From C").

def _package_file(*parts: str) -> str:
    path = _os.path.join(_os.path.dirname(_os.path.abspath(_core.__file__)), *parts)
    if not _os.path.isdir(path):
        raise FileNotFoundError(f"adam_c was installed without its C library files: {path} does not exist "
                                "(reinstall adam_c from its wheel or source with pip)")
    return path


def get_include() -> str:
    """The directory holding adam_c.h (and adam_c_version.h), for -I or include_dirs."""
    return _package_file("include")


def get_library_dir() -> str:
    """The directory holding libadam_c.so and libadam_c.a, for -L (and an rpath) with -ladam_c."""
    return _package_file("lib")


def get_cmake_dir() -> str:
    """The directory holding adam_cConfig.cmake: pass it as -Dadam_c_DIR=... (or add it to CMAKE_PREFIX_PATH),
    then find_package(adam_c CONFIG REQUIRED) gives adam_c::adam_c (shared) and adam_c::adam_c_static."""
    return _package_file("lib", "cmake", "adam_c")


def get_pkgconfig_dir() -> str:
    """The directory holding adam_c.pc, for PKG_CONFIG_PATH."""
    return _package_file("lib", "pkgconfig")
