"""adam_c: fused, in-place Adam/AdamW/AMSGrad for NumPy arrays and other CPU buffers, with a C core."""
import os as _os
import warnings as _warnings

from . import _core
from ._torch_checkpoint import from_torch_state_dict, to_torch_state_dict
from .functional import adam_step
from .optim import Adam, AdamW

__version__ = "0.1.0"
__all__ = ["Adam", "AdamW", "adam_step", "cpu_info", "from_torch_state_dict", "get_num_threads", "set_num_threads",
           "set_target", "to_torch_state_dict"]

_MAX_THREADS = 4096  # far beyond any machine's cores, far below what would exhaust the OS creating threads

_forced = _os.environ.get("ADAM_C_TARGET", "").strip()
if _forced and _core.current_target() != _forced:
    _warnings.warn(f"ADAM_C_TARGET={_forced!r} is not a SIMD target this CPU supports "
                   f"(compiled: {_core.target_names()}); using {_core.current_target()!r}", RuntimeWarning,
                   stacklevel=2)


def cpu_info():
    """What adam_c runs on: the SIMD target in use, all compiled targets and which this CPU supports, OpenMP
    and threads. ADAM_C_TARGET=<name> in the environment forces a target at import."""
    names = _core.target_names()
    return {
        "target": _core.current_target(),
        "targets": names,
        "supported_targets": [n for n in names if _core.target_supported(n)],
        "forced_target": _forced or None,
        "openmp": _core.has_openmp(),
        "num_threads": _core.get_num_threads(),
        "parallel_threshold": _core.get_parallel_threshold(),
        "forked_child_serial": _core.in_forked_child(),
    }


def set_target(name):
    """Switch the SIMD target ("baseline", "avx2", "avx512") for this process; ValueError if the CPU lacks it.
    Meant for tests and benchmarks; not to be called while another thread is stepping."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _core.set_target(name)


def get_num_threads():
    """Threads a large step uses: set_num_threads' value, else OpenMP's (OMP_NUM_THREADS, threadpoolctl)."""
    return _core.get_num_threads()


def set_num_threads(n):
    """Use n >= 1 threads for large steps; None (or 0) follows OpenMP again."""
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int or None, got {type(n).__name__}")
    if not 0 <= n <= _MAX_THREADS:
        raise ValueError(f"n must be in 1..{_MAX_THREADS}, or 0/None to follow OpenMP, got {n}")
    _core.set_num_threads_raw(n)
