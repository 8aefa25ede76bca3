"""Reliability: Python threads, OpenMP thread counts (bit-identical results) and fork() after parallel steps."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import adam_c
from adam_c import _core
from reference import assert_bitwise_equal


@pytest.fixture
def threading_knobs():
    """Lets a test change adam_c's thread count and parallel threshold; both are restored afterwards."""
    threshold = _core.get_parallel_threshold()
    yield
    adam_c.set_num_threads(None)
    _core.set_parallel_threshold(threshold)
    assert _core.get_parallel_threshold() == threshold


def _params(seed, sizes, dtypes=(np.float32, np.float64)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtypes[i % len(dtypes)]) for i, n in enumerate(sizes)]


def _grads(seed, params, steps):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(steps)]


def _make(params, variant):
    """Optimizers of different kinds, so concurrent threads run different kernels."""
    if variant == 0:
        return adam_c.Adam(params, lr=1e-2)
    if variant == 1:
        return adam_c.AdamW(params, lr=1e-2, amsgrad=True)
    half = len(params) // 2
    return adam_c.Adam([{"params": params[:half], "maximize": True}, {"params": params[half:], "weight_decay": 0.1}],
                       lr=3e-3)


def _result(opt):
    out = [p.copy() for g in opt.param_groups for p in g["params"]]
    for i, entry in sorted(opt.state.items()):
        out.append(np.array(entry["step"]))
        out.extend(entry[k].copy() for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if k in entry)
    return out


def _run_threads(work, n_threads):
    """Starts work(k) on n_threads threads at once (a barrier lines them up) and re-raises what any of them hit."""
    barrier = threading.Barrier(n_threads)
    errors = []

    def run(k):
        try:
            barrier.wait()
            work(k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a stepping thread hung"
    assert not errors, errors


def _assert_same_results(a, b, what):
    assert len(a) == len(b), what
    for i, (x, y) in enumerate(zip(a, b)):
        assert_bitwise_equal(x, y, f"{what}: item {i}")


# ---------------------------------------------------------------- Python threads


@pytest.mark.parametrize("threshold", [None, 0])
def test_threads_stepping_different_optimizers(threading_knobs, threshold):
    """Six Python threads stepping six optimizers at once (GIL released in the C call; some steps large enough to
    run their own OpenMP region) give exactly the results of running them one after another."""
    if threshold is not None:
        _core.set_parallel_threshold(threshold)
        adam_c.set_num_threads(2)
    n_opts, n_steps = 6, 25
    sizes = [[70_000, 5, 300], [17, 1, 0, 999], [40_000, 40_000], [3, 100_003], [64, 65, 66], [1 << 14]]
    grads = [_grads(100 + k, _params(k, sizes[k]), n_steps) for k in range(n_opts)]

    sequential = []
    for k in range(n_opts):
        opt = _make(_params(k, sizes[k]), k % 3)
        for g in grads[k]:
            opt.step(g)
        sequential.append(_result(opt))

    opts = [_make(_params(k, sizes[k]), k % 3) for k in range(n_opts)]

    def work(k):
        for g in grads[k]:
            opts[k].step(g)

    _run_threads(work, n_opts)
    for k in range(n_opts):
        _assert_same_results(_result(opts[k]), sequential[k], f"optimizer {k}")


def test_one_optimizer_from_several_threads_never_tears(threading_knobs):
    """Three threads stepping ONE optimizer concurrently with the same grads: every step is applied whole (the
    optimizer serialises them), the step counts add up, and the result is that of N sequential steps."""
    _core.set_parallel_threshold(0)
    adam_c.set_num_threads(2)
    sizes = [5000, 33, 1, 20_000]
    grads = [np.full(n, 0.25, np.float32) if i % 2 == 0 else np.linspace(-1, 1, n) for i, n in enumerate(sizes)]
    per_thread, n_threads = 40, 3

    expected_opt = adam_c.Adam(_params(9, sizes), lr=1e-2, amsgrad=True, weight_decay=0.01)
    for _ in range(per_thread * n_threads):
        expected_opt.step(grads)
    expected = _result(expected_opt)

    opt = adam_c.Adam(_params(9, sizes), lr=1e-2, amsgrad=True, weight_decay=0.01)

    def work(_):
        for _ in range(per_thread):
            opt.step(grads)

    _run_threads(work, n_threads)
    assert [e["step"] for e in opt.state.values()] == [per_thread * n_threads] * len(sizes)
    _assert_same_results(_result(opt), expected, "concurrently stepped optimizer")


def test_threads_with_functional_steps_on_disjoint_buffers(threading_knobs):
    """adam_step from several threads on disjoint buffers (the header's thread-safety promise)."""
    _core.set_parallel_threshold(0)
    adam_c.set_num_threads(2)
    n, n_threads, n_steps = 30_000, 4, 20
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, decoupled_weight_decay=True)

    def fresh(k):
        rng = np.random.default_rng(k)
        return [rng.standard_normal(n) for _ in range(2)] + [np.zeros(n), np.zeros(n)]

    expected = []
    for k in range(n_threads):
        p, g, m, v = fresh(k)
        for s in range(1, n_steps + 1):
            adam_c.adam_step(p, g, m, v, step=s, **kw)
        expected.append([p, m, v])

    bufs = [fresh(k) for k in range(n_threads)]

    def work(k):
        p, g, m, v = bufs[k]
        for s in range(1, n_steps + 1):
            adam_c.adam_step(p, g, m, v, step=s, **kw)

    _run_threads(work, n_threads)
    for k in range(n_threads):
        p, _, m, v = bufs[k]
        _assert_same_results([p, m, v], expected[k], f"thread {k}")


# ---------------------------------------------------------------- OpenMP thread counts


def _trajectory(sizes, n_steps, seed):
    params = _params(seed, sizes)
    half = len(params) // 2
    opt = adam_c.Adam([{"params": params[:half], "amsgrad": True},
                       {"params": params[half:], "weight_decay": 0.05, "decoupled_weight_decay": True,
                        "betas": (0.2, 0.99)}], lr=1e-2)
    for g in _grads(seed + 1, params, n_steps):
        opt.step(g)
    return _result(opt)


@pytest.mark.parametrize("threshold", [0, None])
def test_results_bit_identical_across_openmp_thread_counts(threading_knobs, threshold):
    """1, 2, 3 and 5 threads (and threshold 0, so the split runs on small data too) give the same bits."""
    if threshold is not None:
        sizes = [200_003, 7, 0, 65_536, 1, 131_071, 12]  # large: above the default threshold
    else:
        sizes = [1, 2, 3, 15, 16, 17, 0, 63, 64, 65, 100, 255, 256, 257, 1000, 4099]
        _core.set_parallel_threshold(0)
    results = {}
    for threads in (1, 2, 3, 5):
        adam_c.set_num_threads(threads)
        assert adam_c.get_num_threads() == threads
        results[threads] = _trajectory(sizes, 4, seed=len(sizes))
    for threads in (2, 3, 5):
        _assert_same_results(results[threads], results[1], f"{threads} threads vs 1")


def test_functional_bit_identical_across_thread_counts(threading_knobs):
    _core.set_parallel_threshold(0)
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        start = [rng.standard_normal(10_007).astype(dtype) for _ in range(5)]
        start[3], start[4] = np.abs(start[3]), np.abs(start[4])
        outs = []
        for threads in (1, 2, 4):
            adam_c.set_num_threads(threads)
            b = [a.copy() for a in start]
            adam_c.adam_step(b[0], b[1], b[2], b[3], max_exp_avg_sq=b[4], step=3, lr=1e-3, beta1=0.9, beta2=0.999,
                             eps=1e-8, amsgrad=True, maximize=True, weight_decay=0.5)
            outs.append(b)
        for b in outs[1:]:
            _assert_same_results(b, outs[0], f"{dtype.__name__} adam_step")


# ---------------------------------------------------------------- fork

FORK_SCRIPT = textwrap.dedent(r"""
    import multiprocessing as mp, os, sys
    import numpy as np
    import adam_c
    from adam_c import _core

    def expected_after(p, g, steps):
        # the same steps, serially in this process (results do not depend on threads)
        q = p.copy()
        o = adam_c.Adam([q], lr=1e-2, amsgrad=True)
        for _ in range(steps):
            o.step([g])
        return q

    def child_body(opt, param, before, g):
        info = adam_c.cpu_info()
        if info["pool_restarts_after_fork"] != 1:
            print("child: pool_restarts_after_fork =", info["pool_restarts_after_fork"], flush=True)
            return 3
        # the inherited optimizer and a new one, with 2 threads and threshold 0: would be parallel regions
        opt.step([g])
        if not np.array_equal(param, expected_after(before, g, 4)):
            return 4
        q = np.ones(300_000, np.float32)
        o = adam_c.Adam([q], lr=1e-2)
        o.step([np.full_like(q, 0.5)])
        if not (np.allclose(q, 1 - 1e-2, rtol=1e-5) and (q == q[0]).all()):
            return 5
        return 0

    def mp_target(opt, param, before, g):
        sys.exit(child_body(opt, param, before, g))

    # 1. a fork before any threaded step: the child has no pool to restart
    pid = os.fork()
    if pid == 0:
        os._exit(0 if adam_c.cpu_info()["pool_restarts_after_fork"] == 0 else 7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "early fork child: " + str(status)

    # 2. the parent runs parallel steps
    adam_c.set_num_threads(2)
    _core.set_parallel_threshold(0)
    rng = np.random.default_rng(0)
    param = rng.standard_normal(300_000).astype(np.float32)
    before = param.copy()
    g = rng.standard_normal(param.shape).astype(np.float32)
    opt = adam_c.Adam([param], lr=1e-2, amsgrad=True)
    for _ in range(3):
        opt.step([g])
    assert adam_c.cpu_info()["pool_restarts_after_fork"] == 0, "the parent is not a forked child"

    # 3. os.fork() child steps (serially, though threads 2 and threshold 0 ask for threads) and exits 0
    pid = os.fork()
    if pid == 0:
        try:
            code = child_body(opt, param, before, g)
        except BaseException as exc:
            print("child raised", repr(exc), flush=True)
            code = 9
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "os.fork child exit " + str(os.waitstatus_to_exitcode(status))

    # 4. the same through multiprocessing's "fork" start method
    ctx = mp.get_context("fork")
    proc = ctx.Process(target=mp_target, args=(opt, param, before, g))
    proc.start()
    proc.join(40)
    if proc.is_alive():
        proc.kill()
        raise SystemExit("multiprocessing fork child hung")
    assert proc.exitcode == 0, "multiprocessing child exit " + str(proc.exitcode)

    # 5. the parent is unaffected: still parallel, still correct
    opt.step([g])
    assert np.array_equal(param, expected_after(before, g, 4))
    print("FORK-OK", flush=True)
""")


def test_fork_after_parallel_steps_does_not_hang(tmp_path):
    """GNU OpenMP hangs a forked child that enters a parallel region; adam_c's pool starts over in a fork child
    (fresh locks, steps run serially), which never waits for threads it does not have. Run in a subprocess so
    that a hang fails this test (timeout) instead of hanging pytest."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    try:
        # cwd outside the checkout: `python -c` puts the cwd first on sys.path, where adam_c is not built
        proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=60,
                              env=env, cwd=str(tmp_path))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"fork test hung (killed after 60 s); output so far: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0 and "FORK-OK" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-3000:])


OTHER_OPENMP_USER_SCRIPT = textwrap.dedent(r"""
    import os, sys
    import numpy as np
    import torch  # its libgomp is the OpenMP runtime of the process
    import adam_c
    from adam_c import _core
    torch.set_num_threads(2)
    x = torch.randn(512, 512)
    for _ in range(5):
        (x @ x).sum()          # torch's OpenMP team exists and has run regions: GNU OpenMP's fork hazard
    t = torch.zeros(2_000_000)
    t.add_(1.0)                # an elementwise OpenMP region too
    adam_c.set_num_threads(2)
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    pid = os.fork()
    if pid == 0:
        q = np.ones(3_000_001, np.float32)
        o = adam_c.Adam([q], lr=1e-2)
        for _ in range(3):
            o.step([np.full_like(q, 0.5)])
        ok = (q == q[0]).all() and abs(q[0] - (1 - 3e-2)) < 1e-4
        os._exit(0 if ok else 5)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child exit " + str(os.waitstatus_to_exitcode(status))
    print("OTHER-OMP-FORK-OK", flush=True)
""")


def test_fork_after_another_openmp_user_does_not_hang(tmp_path):
    """A parent that ran torch's OpenMP (or any OpenMP library) and then forks: the child's first
    large step must not hang. adam_c's steps never enter an OpenMP parallel region, so the runtime's fork state
    does not matter."""
    pytest.importorskip("torch")
    try:
        proc = subprocess.run([sys.executable, "-c", OTHER_OPENMP_USER_SCRIPT], capture_output=True, text=True,
                              timeout=120, cwd=str(tmp_path), env=dict(os.environ, OMP_NUM_THREADS="2"))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"fork after torch's OpenMP hung (killed after 120 s): {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0 and "OTHER-OMP-FORK-OK" in proc.stdout, (proc.returncode, proc.stderr[-3000:])
