"""No memory leaks: RSS stays flat over long runs of steps, failing calls and optimizers built and dropped."""
import gc
import os

import numpy as np
import pytest

import adam_c


# ---------------------------------------------------------------- leaks


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _growth(fn, warmup, repeat):
    for _ in range(warmup):
        fn()
    gc.collect()
    start = rss_bytes()
    for _ in range(repeat):
        fn()
    gc.collect()
    return rss_bytes() - start


MB = 1 << 20


def _under_asan():
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


# RSS says nothing under AddressSanitizer (freed memory sits in its quarantine; .ci/asan.sh also sets
# PYTHONMALLOC=malloc), so the leak checks run in the normal pass only
needs_rss = pytest.mark.skipif(not os.path.exists("/proc/self/statm") or _under_asan(),
                               reason="needs /proc/self/statm (Linux) and no AddressSanitizer runtime")


@needs_rss
def test_no_leak_over_100k_steps():
    """100k optimizer steps on small params (3 dtypes/groups, AMSGrad) keep RSS flat."""
    params = [np.ones(8, np.float32), np.ones(3), np.ones((2, 2), np.float32)]
    opt = adam_c.Adam([{"params": params[:2]}, {"params": params[2:], "amsgrad": True}], lr=1e-4)
    grads = [np.full_like(p, 0.1) for p in params]
    growth = _growth(lambda: opt.step(grads), 5_000, 100_000)
    assert opt.state[0]["step"] == 105_000
    assert growth < 2 * MB, f"RSS grew by {growth / MB:.2f} MB over 100k steps"


@needs_rss
def test_no_leak_functional_and_failing_calls():
    """The functional step, rejected steps (exceptions) and coerced grads do not leak either."""
    p, g, m, v = np.ones(16), np.full(16, 0.1), np.zeros(16), np.zeros(16)
    state = {"t": 0}

    def functional():
        state["t"] += 1
        adam_c.adam_step(p, g, m, v, step=state["t"], lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8)

    assert _growth(functional, 2_000, 30_000) < 2 * MB

    opt = adam_c.Adam([np.ones(5, np.float32)], lr=1e-3)
    opt.step([np.ones(5, np.float32)])
    bad = [np.ones(6, np.float32)]
    coerced = [np.full(10, 0.5, np.float32)[::2]]  # non-contiguous: copied on every step

    def failing():
        try:
            opt.step(bad)
        except ValueError:
            pass
        opt.step(coerced)

    assert _growth(failing, 2_000, 20_000) < 2 * MB


@needs_rss
def test_no_leak_construction_destruction_and_state_round_trips():
    """Building, stepping (which builds the C pointer table) and dropping optimizers, and state_dict /
    load_state_dict round trips, keep RSS flat."""
    p = [np.ones(32, np.float32), np.ones(7)]

    def build():
        opt = adam_c.AdamW([{"params": [p[0]]}, {"params": [p[1]], "amsgrad": True}], lr=1e-6)
        opt.step([np.zeros(32, np.float32), np.zeros(7)])
        del opt

    assert _growth(build, 1_000, 15_000) < 2 * MB

    opt = adam_c.Adam([np.ones(16)], lr=1e-3)
    opt.step([np.ones(16)])

    def round_trip():
        opt.load_state_dict(opt.state_dict())
        opt.step([np.ones(16)])

    assert _growth(round_trip, 500, 5_000) < 2 * MB
