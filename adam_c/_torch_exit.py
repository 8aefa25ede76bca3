"""_torch_exit.py: a clean interpreter exit beside torch.distributed's gloo worker threads (a torch race, bounded here).

Why: torch's gloo backend runs each collective on a native worker thread, and that thread drops its reference to the
finished work (and to the Python-visible tensors the work holds) just after the caller's ``wait()`` returns. Dropping
a tensor that has a Python object takes the GIL. A process group stays alive as long as anything holds it (DDP,
ZeroRedundancyOptimizer and DeepSpeed's engine do, even after ``destroy_process_group()``), so when a script ends
right after its last collective, that drop can come after the interpreter has started to finalize; Python then ends
the thread with ``pthread_exit``, whose unwinding through torch's C++ destructor calls ``std::terminate``: the
process prints "terminate called without an active exception" and aborts (exit status 134) after its work is done.
It happens with ``torch.optim`` too (a gloo script with no adam_c in it aborts the same way); adam_c's own threads
never touch Python. The bound: an ``atexit`` handler, which runs before finalization starts,
gives up the GIL for a moment while gloo threads are alive, so a drop already on its way finishes first.
"""
import atexit
import os
import sys
import time

# long enough for a woken worker thread to be scheduled, take the GIL and finish its drop on a loaded machine
_GRACE_S = 0.05
_GLOO_THREAD_PREFIXES = ("pt_gloo", "gloo")


def gloo_threads_alive():
    """Whether torch.distributed's gloo threads run in this process (Linux: their names; elsewhere: a process group
    was set up)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return False
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return bool(getattr(dist, "is_available", lambda: False)() and dist.is_initialized())
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if f.read().startswith(_GLOO_THREAD_PREFIXES):
                    return True
        except OSError:  # the thread ended meanwhile
            continue
    return False


def _let_gloo_threads_finish():
    if gloo_threads_alive():
        time.sleep(_GRACE_S)   # releases the GIL


_installed = False


def install():
    """Register the exit handler once per process (adam_c.torch calls this at import)."""
    global _installed
    if not _installed:
        atexit.register(_let_gloo_threads_finish)
        _installed = True
