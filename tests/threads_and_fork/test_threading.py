"""Threading: the measured serial-or-threads decision, the worker pool's limits, and results that do not depend on
threads (floating-point modes, NaN bits)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adam_c
from adam_c import _core


@pytest.fixture
def forced_threads():
    """2 threads, every step split into chunks and offered to the pool (no measuring); restored afterwards."""
    saved = (_core.get_parallel_threshold(), _core.get_autotune())
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    yield
    _core.set_parallel_threshold(saved[0])
    _core.set_autotune(saved[1])
    adam_c.set_num_threads(None)


# ---------------------------------------------------------------- the decision, with controlled timings

RECHECK = 50  # adam_c.c: TUNE_RECHECK


def test_autotune_picks_threads_when_they_are_faster():
    modes, choice = _core.autotune_trace(lambda k, mode: 50_000 if mode else 100_000, 500, threads=2)
    assert choice == 2
    settled = modes[20:]
    assert settled.count(0) <= len(settled) // RECHECK + 1, "serial re-checks are rare once threads won"
    assert 0 in settled, "serial is re-checked now and then"


def test_autotune_keeps_serial_when_threads_cannot_run():
    # the training-loop pathology: a threaded step waits for a thread that BLAS keeps off the core
    modes, choice = _core.autotune_trace(lambda k, mode: 4_000_000 if mode else 15_000, 1000)
    assert choice == 1
    threaded = modes[20:].count(1)
    assert 1 <= threaded <= len(modes[20:]) // RECHECK + 1
    # cost of the exploration over 1000 steps, relative to always serial: bounded by the re-check rate
    total = sum(4_000_000 if m else 15_000 for m in modes)
    assert total / (15_000 * len(modes)) < 7.0  # with the pool a real threaded step costs ~serial; see below


def test_autotune_retries_a_losing_mode_less_and_less():
    # a busy core: every threaded step costs a scheduler slice; re-tries back off, so their total cost is small
    serial_ns, threaded_ns, steps = 15_000, 3_000_000, 20_000
    modes, choice = _core.autotune_trace(lambda k, mode: threaded_ns if mode else serial_ns, steps)
    assert choice == 1
    retries = modes[10:].count(1)
    assert retries <= 16, f"{retries} threaded re-tries in {steps} steps"
    total = sum(threaded_ns if m else serial_ns for m in modes)
    assert total / (serial_ns * steps) < 1.25, "exploration costs under 25% on average even in this extreme case"
    late = modes[steps // 2:]
    assert late.count(1) <= 4, "late in the run, re-tries are at most every 3200 steps"


def test_autotune_one_lucky_sample_does_not_bring_frequent_retries():
    # threads lose, but one re-try in five happens to look fast (noise): a lucky sample is confirmed at once and
    # then the back-off goes on where it was, never back to re-trying every few steps
    calls = {"threaded": 0}

    def times(k, mode):
        if not mode:
            return 100_000
        calls["threaded"] += 1
        return 50_000 if calls["threaded"] % 5 == 0 else 3_000_000
    modes, choice = _core.autotune_trace(times, 20_000)
    assert choice == 1
    assert modes[10:].count(1) <= 40, modes[10:].count(1)


def test_autotune_decides_on_three_samples_each():
    # one outlier among the first threaded samples must not decide: threads are clearly faster otherwise
    calls = {"threaded": 0}

    def times(k, mode):
        if not mode:
            return 100_000
        calls["threaded"] += 1
        return 9_000_000 if calls["threaded"] == 1 else 50_000
    modes, choice = _core.autotune_trace(times, 12)
    assert choice == 2, modes


def test_autotune_needs_a_clear_win_for_threads():
    _, choice = _core.autotune_trace(lambda k, mode: 98_500 if mode else 100_000, 300)
    assert choice == 1, "a 1.5% gain is within noise: stay serial"
    _, choice = _core.autotune_trace(lambda k, mode: 90_000 if mode else 100_000, 300)
    assert choice == 2


def test_autotune_follows_a_change_of_regime():
    # threads win for 300 steps, then another process takes the second core: threads become slow
    def times(k, mode):
        if k < 300:
            return 50_000 if mode else 100_000
        return 400_000 if mode else 100_000
    modes, choice = _core.autotune_trace(times, 320)
    assert choice == 1
    assert modes[310:].count(1) == 0, "switched back to serial within 10 steps of the change"

    def recovers(k, mode):  # the core comes back: threads win again, found at the periodic re-checks
        if k < 100:
            return 400_000 if mode else 100_000
        return 50_000 if mode else 100_000
    modes, choice = _core.autotune_trace(recovers, 100 + 4 * RECHECK)
    assert choice == 2


def test_autotune_finds_threads_whose_first_step_pays_a_wake_up():
    # back-to-back steps of 1e5 elements: a threaded step right after serial ones wakes the sleeping workers
    # (4x serial), while threaded steps in a row are faster than serial. Judging only a re-try's first step kept
    # serial forever; its first step is a wake-up now, and the next one decides.
    previous = {"mode": 0}

    def times(k, mode):
        warm = previous["mode"] == 1
        previous["mode"] = mode
        return (15_000 if warm else 100_000) if mode else 21_000
    modes, choice = _core.autotune_trace(times, 3 * RECHECK + 40)
    assert choice == 2, modes
    assert modes[-40:].count(1) >= 36, modes[-40:]  # serial only at its re-checks


def test_autotune_judges_a_hopeless_first_retry_at_once():
    # a thread that cannot run costs a scheduler slice: such a first re-try step is judged (no second slow step)
    modes, choice = _core.autotune_trace(lambda k, mode: 4_000_000 if mode else 15_000, 400)
    assert choice == 1
    runs = [i for i in range(21, len(modes)) if modes[i] == 1 and modes[i - 1] == 1]
    assert not runs, f"two threaded steps in a row at {runs}"


def test_autotune_ignores_unusable_samples():
    # a threaded run that found the pool busy reports ns < 0: never recorded, never decides
    modes, choice = _core.autotune_trace(lambda k, mode: -1.0 if mode else 100_000, 200)
    assert choice == 0, "no threaded sample: undecided"
    assert modes.count(1) >= 100, "it keeps asking for a usable threaded sample"


def test_optimizer_reports_its_decision():
    p = np.zeros(300_000, np.float32)
    opt = adam_c.Adam([p])
    assert opt.threading_info()["threads"] == 0
    g = np.ones_like(p)
    for _ in range(12):
        opt.step([g])
    info = opt.threading_info()
    assert info["steps"] == 12
    if adam_c.get_num_threads() > 1:
        assert info["threads"] in (1, adam_c.get_num_threads())
        assert info["serial_us"] > 0 and info["threads_us"] > 0
    small = adam_c.Adam([np.zeros(100, np.float32)])
    small.step([np.ones(100, np.float32)])
    assert small.threading_info()["steps"] == 0, "below the threshold: serial, nothing timed"


def test_set_threading_validates():
    with pytest.raises(ValueError, match="mode"):
        adam_c.set_threading("fast")
    assert adam_c.cpu_info()["threading"] == "auto"


# ---------------------------------------------------------------- results never depend on threads

def _run_threads(threads, p0, g, steps=3, **kw):
    adam_c.set_num_threads(threads)
    p = p0.copy()
    opt = adam_c.Adam([p], lr=1e-3, **kw)
    for _ in range(steps):
        opt.step([g])
    return p, opt.state[0]


def test_nan_bits_do_not_depend_on_thread_count(forced_threads):
    """NaN results (sign and payload included) are bit-identical for any thread count: chunk boundaries come
    from the workload alone. (Across SIMD targets only the NaN positions are promised; see README.)"""
    rng = np.random.default_rng(5)
    n = 200_003
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    bits = g.view(np.uint32)
    idx = rng.choice(n, 5000, replace=False)
    bits[idx[:2000]] = 0x7FC00000 | rng.integers(1, 1 << 22, 2000, dtype=np.uint32)     # +NaN, payloads
    bits[idx[2000:4000]] = 0xFFC00000 | rng.integers(1, 1 << 22, 2000, dtype=np.uint32)  # -NaN, payloads
    g[idx[4000:]] = np.inf
    p0[idx[4500:]] = -np.inf
    ref = _run_threads(1, p0, g, amsgrad=True)
    for threads in (2, 3):
        got = _run_threads(threads, p0, g, amsgrad=True)
        assert np.array_equal(got[0].view(np.uint32), ref[0].view(np.uint32)), f"{threads} threads: params"
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert np.array_equal(got[1][key].view(np.uint32), ref[1][key].view(np.uint32)), (threads, key)


FTZ_SCRIPT = textwrap.dedent(r"""
    import numpy as np, torch, adam_c
    from adam_c import _core
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    n = 400_001
    g = np.full(n, 1e-39, np.float32)      # denormal grads: m = 0.1*g is denormal too
    p0 = np.full(n, 1e-38, np.float32)

    def run(threads):
        adam_c.set_num_threads(threads)
        p = p0.copy()
        o = adam_c.Adam([p], lr=1e-40, weight_decay=0.0)
        for _ in range(2):
            o.step([g])
        return p, o.state[0]["exp_avg"].copy()

    run(2)                                 # the workers exist before the mode changes
    torch.set_flush_denormal(True)         # FTZ/DAZ in this (the calling) thread only
    serial = run(1)
    threaded = run(2)
    assert (serial[1] == 0).all(), "with DAZ the denormal grads read as zero"
    assert np.array_equal(serial[0].view(np.uint32), threaded[0].view(np.uint32)), "params differ 1 vs 2 threads"
    assert np.array_equal(serial[1].view(np.uint32), threaded[1].view(np.uint32)), "exp_avg differs"
    torch.set_flush_denormal(False)
    plain = run(2)
    assert (plain[1] != 0).all(), "without FTZ the denormal moments survive"
    print("FTZ-OK")
""")


def test_workers_use_the_callers_floating_point_mode(tmp_path):
    """FTZ/DAZ set after the workers exist (torch.set_flush_denormal) applies to every chunk."""
    pytest.importorskip("torch")
    if not hasattr(__import__("torch"), "set_flush_denormal") or os.uname().machine not in ("x86_64", "AMD64"):
        pytest.skip("FTZ/DAZ control needs torch on x86-64")
    proc = subprocess.run([sys.executable, "-c", FTZ_SCRIPT], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert proc.returncode == 0 and "FTZ-OK" in proc.stdout, proc.stderr[-3000:]


# ---------------------------------------------------------------- limits of the pool

def test_set_num_threads_is_bounded_by_the_pool():
    top = _core.max_threads()
    assert adam_c.cpu_info()["num_threads"] <= top
    for bad in (top + 1, 4096, 10**9):
        with pytest.raises(ValueError, match=r"\bn\b"):
            adam_c.set_num_threads(bad)
    adam_c.set_num_threads(top)
    assert adam_c.get_num_threads() == top
    adam_c.set_num_threads(None)


def test_set_num_threads_takes_numpy_integers_and_refuses_the_rest():
    try:
        adam_c.set_num_threads(np.int64(1))
        assert adam_c.get_num_threads() == 1
        adam_c.set_num_threads(np.uint8(2))
        assert adam_c.get_num_threads() == 2
        for bad in (True, np.bool_(True), 1.0, np.float64(2.0), "2", [2]):
            with pytest.raises(TypeError, match=r"\bn must be an int"):
                adam_c.set_num_threads(bad)
            assert adam_c.get_num_threads() == 2, f"a refused {bad!r} changed the thread count"
    finally:
        adam_c.set_num_threads(None)


MANY_THREADS_SCRIPT = textwrap.dedent(r"""
    import os, resource, sys, threading
    import numpy as np, adam_c
    from adam_c import _core
    adam_c.set_num_threads(_core.max_threads())
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    threading.stack_size(512 * 1024)
    errors = []
    ready = threading.Barrier(11)

    def worker(k):
        try:
            p = np.zeros(200_000, np.float32)   # everything this thread needs exists before the limit
            g = np.ones_like(p)
            o = adam_c.Adam([p], lr=1e-2)
            ready.wait()
            for _ in range(3):
                o.step([g])
            if not np.allclose(p, -3e-2, rtol=1e-5):
                errors.append(k)
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(10)]
    for t in threads: t.start()
    if sys.argv[1] == "limited":
        # so little address space left that the OS refuses most worker stacks: fewer helpers, never exit()
        with open(f"/proc/{os.getpid()}/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 8 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
    ready.wait()
    for t in threads: t.join()
    assert not errors, errors
    print("MANY-OK", adam_c.get_num_threads())
""")


@pytest.mark.parametrize("mode", ["normal", "limited"])
def test_many_threads_from_many_python_threads(tmp_path, mode):
    """The most threads accepted, 10 Python threads stepping at once (and, 'limited', an OS that
    refuses thread stacks): correct results, no exit(), no hang."""
    if mode == "limited" and "libasan" in open("/proc/self/maps").read():
        pytest.skip("an address-space limit starves AddressSanitizer's own shadow memory (covered by the plain run)")
    proc = subprocess.run([sys.executable, "-c", MANY_THREADS_SCRIPT, mode], capture_output=True, text=True,
                          timeout=180, cwd=str(tmp_path))
    assert proc.returncode == 0 and "MANY-OK" in proc.stdout, (proc.returncode, proc.stderr[-3000:])


def test_huge_omp_num_threads_is_capped(tmp_path):
    code = ("import numpy as np, adam_c; from adam_c import _core; "
            "assert adam_c.get_num_threads() == _core.max_threads(), adam_c.get_num_threads(); "
            "p = np.zeros(1_000_000, np.float32); o = adam_c.Adam([p]); o.step([np.ones_like(p)]); "
            "assert np.allclose(p, -1e-3); print('CAP-OK')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env=dict(os.environ, OMP_NUM_THREADS="100000"))
    assert proc.returncode == 0 and "CAP-OK" in proc.stdout, proc.stderr[-3000:]
