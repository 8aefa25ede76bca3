"""The executor of parallel steps: adam_c's own pool, or the thread team of an OpenMP runtime already loaded (torch's).

Whichever runs the chunks, results are bit-identical, the caller's floating-point mode applies to every chunk and
the team's threads get their own mode back, a fork() child steps serially, and the choice is reported.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adam_c
from adam_c import _core

torch = pytest.importorskip("torch")  # loads torch's OpenMP runtime: the team executor has something to run on


@pytest.fixture
def threaded():
    """2 threads, every step offered to the executor (no measuring); restored afterwards."""
    saved = (_core.get_parallel_threshold(), _core.get_autotune(), _core.get_executor())
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    adam_c.set_num_threads(2)
    yield
    _core.set_parallel_threshold(saved[0])
    _core.set_autotune(saved[1])
    _core.set_executor(saved[2])
    adam_c.set_num_threads(None)


def _python(tmp_path, *args, env=None, timeout=120):
    """This interpreter on args (e.g. "-c", script), in tmp_path, with env: the completed process."""
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(tmp_path))


def _problem(n, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    grads[1][::97] = np.nan
    grads[2][::89] = np.inf
    return p, grads


def _run(executor, threads, n=300_007, **kw):
    adam_c.set_executor(executor)
    adam_c.set_num_threads(threads)
    p, grads = _problem(n)
    opt = adam_c.AdamW([p], lr=1e-2, amsgrad=True, **kw)
    for g in grads:
        opt.step([g])
    ran = _core.last_executor()
    state = {k: np.asarray(v).copy() for k, v in opt.state_dict()["state"][0].items() if k != "step"}
    return p, state, ran


def test_torch_runtime_is_found_and_reported():
    info = adam_c.cpu_info()
    assert info["executor"] in ("auto", "pool", "openmp")
    runtime = info["openmp_runtime"]
    assert runtime is not None and os.path.basename(runtime).startswith(("libgomp", "libiomp5", "libomp")), runtime


@pytest.mark.parametrize("kw", [{}, {"state_dtype": "bfloat16"}, {"state_dtype": "int8"}], ids=["fp32", "bf16", "int8"])
def test_results_do_not_depend_on_the_executor(threaded, kw):
    ref_p, ref_state, ran = _run("pool", 1, **kw)
    for executor, threads in (("pool", 2), ("openmp", 2), ("auto", 2), ("openmp", 3)):
        p, state, ran = _run(executor, threads, **kw)
        # adam_c.Adam's steps keep the pool under "auto" (a NumPy loop's hot threads are BLAS's, not the team's)
        assert ran == ("openmp" if executor == "openmp" else "pool"), (executor, ran)
        assert np.array_equal(p.view(np.uint32), ref_p.view(np.uint32)), (executor, threads, "params")
        for key, value in ref_state.items():
            assert state[key].tobytes() == value.tobytes(), (executor, threads, key)


def test_torch_dropin_steps_on_the_team(threaded):
    import adam_c.torch as at

    def trained(executor):
        adam_c.set_executor(executor)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 256))
        opt = at.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(16, 256)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step(max_grad_norm=1.0)
        return [p.detach().clone() for p in model.parameters()], _core.last_executor()

    pool, ran_pool = trained("pool")
    team, ran_team = trained("auto")
    assert (ran_pool, ran_team) == ("pool", "openmp")
    for a, b in zip(pool, team):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_set_executor_validates_and_changes_nothing_on_error():
    before = adam_c.cpu_info()["executor"]
    with pytest.raises(TypeError, match="mode must be a str"):
        adam_c.set_executor(1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="executor must be one of 'auto', 'pool', 'openmp', got 'gomp'"):
        adam_c.set_executor("gomp")
    assert adam_c.cpu_info()["executor"] == before


TEAM_MODE_SCRIPT = textwrap.dedent(r"""
    import numpy as np, torch, adam_c
    from adam_c import _core
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    adam_c.set_num_threads(2)
    adam_c.set_executor("openmp")
    n = 400_001
    g = np.full(n, 1e-39, np.float32)      # denormal grads: with DAZ they read as zero
    p = np.full(n, 1e-38, np.float32)
    torch.ones(1 << 20).add_(1)            # torch's team exists
    torch.set_flush_denormal(True)         # FTZ/DAZ in this (the calling) thread only
    o = adam_c.Adam([p], lr=1e-40)
    o.step([g])
    assert _core.last_executor() == "openmp"
    assert (o.state[0]["exp_avg"] == 0).all(), "the caller's DAZ applied to every chunk the team ran"
    torch.set_flush_denormal(False)
    # torch's own parallel work afterwards: the team threads must have their own mode back (no FTZ)
    x = torch.full((1 << 22,), 1e-20, dtype=torch.float32)
    y = x * x * 1e18                        # 1e-22: normal; the product 1e-40 on the way is a denormal
    z = (x * 1e-20)                         # 1e-40: denormal results, flushed to 0 under FTZ
    assert torch.count_nonzero(z).item() == z.numel(), "a team thread kept the caller's FTZ"
    print("TEAM-MODE-OK")
""")


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="FTZ/DAZ control needs x86-64")
def test_team_threads_get_the_callers_mode_and_their_own_back(tmp_path):
    if not hasattr(torch, "set_flush_denormal"):
        pytest.skip("this torch has no set_flush_denormal")
    proc = _python(tmp_path, "-c", TEAM_MODE_SCRIPT)
    assert proc.returncode == 0 and "TEAM-MODE-OK" in proc.stdout, proc.stderr[-3000:]


FORK_SCRIPT = textwrap.dedent(r"""
    import os, sys, numpy as np, torch, adam_c
    sys.path.insert(0, sys.argv[1])
    from _forking import wait_for_child
    from adam_c import _core
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    adam_c.set_num_threads(2)
    p = np.ones(200_000, np.float32); g = np.full_like(p, 0.5)
    adam_c.set_executor("openmp")
    o = adam_c.Adam([p]); o.step([g])
    assert _core.last_executor() == "openmp"
    torch.ones(1 << 20).add_(1)
    pid = os.fork()
    if pid == 0:
        o.step([g]); os._exit(0 if np.isfinite(p).all() else 3)
    code = wait_for_child(pid, 60, "a fork child's step after team steps")
    assert code == 0, code
    print("FORK-OK")
""")


def test_fork_child_of_a_team_user_steps_without_hanging(tmp_path):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, which holds _forking.py
    proc = _python(tmp_path, "-c", FORK_SCRIPT, here)
    assert proc.returncode == 0 and "FORK-OK" in proc.stdout, proc.stderr[-3000:]


def test_environment_forces_the_executor(tmp_path):
    code = "import adam_c, json; print(json.dumps(adam_c.cpu_info()['executor']))"
    for value, want in (("pool", "pool"), ("openmp", "openmp"), ("auto", "auto")):
        env = dict(os.environ, ADAM_C_EXECUTOR=value)
        out = _python(tmp_path, "-c", code, env=env, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f'"{want}"', out.stderr[-2000:]
    env = dict(os.environ, ADAM_C_EXECUTOR="gomp")
    out = _python(tmp_path, "-W", "error::RuntimeWarning", "-c", code, env=env, timeout=60)
    assert out.returncode != 0 and "ADAM_C_EXECUTOR='gomp'" in out.stderr


FORK_THEN_IMPORT_SCRIPT = textwrap.dedent(r"""
    import os, sys, signal, numpy as np, torch
    sys.path.insert(0, sys.argv[1])
    from _forking import wait_for_child
    torch.set_num_threads(2)
    x = torch.ones(1 << 22)
    for _ in range(3):
        x.add_(1)                          # torch's OpenMP team exists in the parent; adam_c is not loaded yet
    pid = os.fork()
    if pid == 0:                           # the child loads adam_c: its runtime's team threads are gone
        import adam_c
        from adam_c import _core
        _core.set_parallel_threshold(0)
        adam_c.set_threading("fixed")
        adam_c.set_num_threads(2)
        p = np.ones(400_000, np.float32)
        o = adam_c.Adam([p])
        o.step([np.full_like(p, 0.5)])
        os._exit(0 if _core.last_executor() == "pool" else 3)
    code = wait_for_child(pid, 60, "a fork child that loaded adam_c after its parent ran OpenMP")
    assert code == 0, code
    print("FORK-IMPORT-OK")
""")


def test_fork_child_that_loads_adam_c_after_the_fork_steps_on_the_pool(tmp_path):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, which holds _forking.py
    proc = _python(tmp_path, "-c", FORK_THEN_IMPORT_SCRIPT, here)
    assert proc.returncode == 0 and "FORK-IMPORT-OK" in proc.stdout, proc.stderr[-3000:]


TEAM_BIRTH_SCRIPT = textwrap.dedent(r"""
    import sys, numpy as np, torch, adam_c
    from adam_c import _core
    adam_c.set_executor(sys.argv[1])
    _core.set_parallel_threshold(0)
    adam_c.set_threading("fixed")
    adam_c.set_num_threads(2)
    torch.set_num_threads(2)
    p = np.ones(400_000, np.float32)
    o = adam_c.Adam([p])
    torch.set_flush_denormal(True)         # FTZ/DAZ in the caller only, around its step
    o.step([np.full_like(p, 0.5)])         # the runtime's first parallel region: its team is born in this step
    ran = _core.last_executor()
    torch.set_flush_denormal(False)
    z = torch.full((1 << 22,), 1e-20, dtype=torch.float32) * 1e-20   # 1e-40: 0 under FTZ
    flushed = z.numel() - torch.count_nonzero(z).item()
    print(ran, flushed)
""")


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "AMD64"), reason="FTZ/DAZ control needs x86-64")
def test_team_threads_born_in_a_step_do_not_keep_the_callers_mode(tmp_path):
    if not hasattr(torch, "set_flush_denormal"):
        pytest.skip("this torch has no set_flush_denormal")
    proc = _python(tmp_path, "-c", TEAM_BIRTH_SCRIPT, "openmp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["openmp", "0"], proc.stdout


def test_only_the_main_thread_steps_on_the_team(threaded):
    import threading

    import adam_c.torch as at
    adam_c.set_executor("auto")
    ran = []

    def step():
        p = torch.nn.Parameter(torch.randn(100_003))
        p.grad = torch.randn(100_003)
        at.Adam([p]).step()
        ran.append(_core.last_executor())

    t = threading.Thread(target=step)
    t.start()
    t.join(60)
    step()
    # libgomp keeps a team per master thread: another thread's step would start a team of its own
    assert ran == ["pool", "openmp"], ran


def test_environment_value_is_read_with_blanks_around_it(tmp_path):
    code = "import adam_c; print(adam_c.cpu_info()['executor'])"
    for value, want in ((" pool", "pool"), ("openmp\n", "openmp"), ("pool ", "pool")):
        env = dict(os.environ, ADAM_C_EXECUTOR=value)
        out = _python(tmp_path, "-c", code, env=env, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == want, (value, out.stdout, out.stderr[-2000:])


def test_numpy_front_end_keeps_the_pool_under_auto(threaded):
    """In a NumPy loop the threads still spinning after a matmul are BLAS's, not the OpenMP team's: the team's
    end-of-region barrier would wait for a team thread that cannot run, so adam_c.Adam's steps keep the pool unless
    the executor is forced."""
    adam_c.set_executor("auto")
    p, grads = _problem(100_003)
    opt = adam_c.Adam([p])
    opt.step([grads[0]])
    assert _core.last_executor() == "pool"
    adam_c.set_executor("openmp")
    opt.step([grads[0]])
    assert _core.last_executor() == "openmp"
