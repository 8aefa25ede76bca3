"""The process-level knobs: ADAM_C_TARGET, OMP_NUM_THREADS, set_num_threads, threadpoolctl; the demo and bench run."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import adam_c
from adam_c import _core


def run_python(code, tmp_path, timeout=120, **env):
    """Runs code in a fresh interpreter outside the checkout (so the installed adam_c is imported)."""
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=str(tmp_path))


INFO = "import adam_c, json; print(json.dumps(adam_c.cpu_info()))"


@pytest.mark.parametrize("target", _core.target_names())
def test_adam_c_target_forces_each_supported_target(target, tmp_path):
    if not _core.target_supported(target):
        pytest.skip(f"SIMD target {target!r} is not supported by this CPU")
    proc = run_python(INFO, tmp_path, ADAM_C_TARGET=target)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["target"] == target
    assert info["forced_target"] == target
    assert "RuntimeWarning" not in proc.stderr


@pytest.mark.parametrize("name", ["no-such-target", "AVX2"])
def test_adam_c_target_unknown_warns_and_keeps_the_best(name, tmp_path):
    proc = run_python(INFO, tmp_path, ADAM_C_TARGET=name)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" in proc.stderr and name in proc.stderr
    best = [t for t in _core.target_names() if _core.target_supported(t)][-1]
    assert json.loads(proc.stdout)["target"] == best


def test_unsupported_target_warns(tmp_path):
    unsupported = [t for t in _core.target_names() if not _core.target_supported(t)]
    if not unsupported:
        pytest.skip("this CPU supports every compiled target")
    proc = run_python(INFO, tmp_path, ADAM_C_TARGET=unsupported[0])
    assert "RuntimeWarning" in proc.stderr
    assert json.loads(proc.stdout)["target"] != unsupported[0]


# the CPU extensions each x86-64 target is compiled with, as Linux names them in /proc/cpuinfo
_TARGET_FLAGS = {"avx2": {"avx", "avx2", "fma", "f16c"},
                 "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512vl", "avx512bw", "avx512dq"},
                 "avx512_zen4": {"avx2", "fma", "f16c", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512vbmi",
                                 "avx512_bf16"}}


def _linux_cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.parametrize("target", sorted(_TARGET_FLAGS))
def test_target_supported_agrees_with_the_kernels_cpu_flags(target):
    """The library's CPUID/XGETBV checks say a target is supported exactly when the OS reports every extension
    that target's kernel file is compiled with (a target used without one would die of SIGILL)."""
    flags = _linux_cpu_flags()
    if flags is None or target not in _core.target_names():
        pytest.skip(f"needs Linux's /proc/cpuinfo and an x86-64 build with the {target!r} target")
    assert _core.target_supported(target) == _TARGET_FLAGS[target].issubset(flags), sorted(_TARGET_FLAGS[target] - flags)


def test_set_target_rejects_unknown_and_unsupported(restore_target):
    with pytest.raises(ValueError, match="target"):
        adam_c.set_target("sse9")
    with pytest.raises(TypeError, match="name"):
        adam_c.set_target(2)
    for name in _core.target_names():
        if not _core.target_supported(name):
            with pytest.raises(ValueError, match=name):
                adam_c.set_target(name)
    assert adam_c.cpu_info()["target"] == restore_target


def _cpus():
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
               _core.max_threads())


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("4,2", 4), (" 2 ", 2), ("2, 1", 2),
                                             ("", None), ("0", None), ("-2", None), ("abc", None), ("3x", None)])
def test_omp_num_threads_is_honoured(value, expected, tmp_path):
    """OMP_NUM_THREADS read as OpenMP reads it: its first value; anything that is not a positive number leaves the
    CPUs this process may run on."""
    code = "import adam_c; i = adam_c.cpu_info(); print(adam_c.get_num_threads(), i['default_num_threads'])"
    proc = run_python(code, tmp_path, OMP_NUM_THREADS=value)
    assert proc.returncode == 0, proc.stderr
    n = _cpus() if expected is None else expected
    assert proc.stdout.split() == [str(n), str(n)], (value, proc.stdout)


def test_without_omp_num_threads_the_cpus_of_the_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", "import adam_c; print(adam_c.get_num_threads())"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(_cpus())
    if hasattr(os, "sched_setaffinity") and shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1:
        cpu = min(os.sched_getaffinity(0))
        proc = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c",
                               "import adam_c; print(adam_c.get_num_threads())"],
                              capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "1", "a process pinned to one CPU uses one thread"


def test_no_openmp_runtime_is_loaded(tmp_path):
    """adam_c links no OpenMP runtime (a wheel would otherwise bundle a second libgomp beside torch's)."""
    code = ("import adam_c, numpy as np; p = np.zeros(100_000, np.float32); adam_c.Adam([p]).step([np.ones_like(p)]); "
            "maps = open('/proc/self/maps').read(); "
            "print(sorted({l.split('/')[-1] for l in maps.splitlines() "
            "              if l.split('/')[-1].startswith(('libgomp', 'libiomp', 'libomp'))}))")  # OpenMP runtimes
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps")
    proc = run_python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
    assert adam_c.cpu_info()["openmp"] is False


def test_set_num_threads_overrides_and_none_restores():
    following = adam_c.get_num_threads()
    try:
        adam_c.set_num_threads(3)
        assert adam_c.get_num_threads() == 3
        assert adam_c.cpu_info()["num_threads"] == 3
    finally:
        adam_c.set_num_threads(None)
    assert adam_c.get_num_threads() == following


@pytest.mark.parametrize("bad, exc", [(1.5, TypeError), (True, TypeError), ("2", TypeError), (-1, ValueError),
                                      (10**6, ValueError), (10**400, ValueError)])
def test_set_num_threads_rejects(bad, exc):
    before = adam_c.get_num_threads()
    with pytest.raises(exc, match="n"):
        adam_c.set_num_threads(bad)
    assert adam_c.get_num_threads() == before


def test_threadpoolctl_lists_adam_c():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl < 3.5 cannot take adam_c's controller")
    ours = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "adam_c"]
    assert len(ours) == 1, threadpoolctl.threadpool_info()
    assert ours[0]["user_api"] == "openmp"
    assert os.path.samefile(ours[0]["filepath"], _core.__file__)
    assert ours[0]["version"] == adam_c.__version__
    assert ours[0]["num_threads"] == adam_c.cpu_info()["default_num_threads"]


def test_threadpool_limits_sets_adam_cs_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl < 3.5 cannot take adam_c's controller")
    before = adam_c.get_num_threads()
    try:
        with threadpoolctl.threadpool_limits(limits=1):
            assert adam_c.get_num_threads() == 1
        assert adam_c.get_num_threads() == before
        with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
            assert adam_c.get_num_threads() == 2
            adam_c.set_num_threads(3)  # an override wins over the limit ...
            assert adam_c.get_num_threads() == 3
            adam_c.set_num_threads(None)  # ... and None follows it again
            assert adam_c.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert adam_c.get_num_threads() == before, "a BLAS limit is not adam_c's"
        with threadpoolctl.threadpool_limits(limits={"openmp": 1}):
            assert adam_c.get_num_threads() == 1
        with threadpoolctl.threadpool_limits(limits=10**6):
            assert adam_c.get_num_threads() == _core.max_threads(), "capped as OMP_NUM_THREADS is"
        controller = threadpoolctl.ThreadpoolController().select(internal_api="adam_c")
        with controller.limit(limits=1):
            assert adam_c.get_num_threads() == 1
    finally:
        adam_c.set_num_threads(None)
    assert adam_c.get_num_threads() == before
    assert adam_c.cpu_info()["default_num_threads"] == before


LATE_THREADPOOLCTL = """
import sys
if sys.argv[1] == "before":
    import threadpoolctl
    threadpoolctl.threadpool_info()   # libraries listed before adam_c is loaded
import adam_c
if sys.argv[1] == "absent":
    from adam_c import _threadpoolctl
    assert not _threadpoolctl.register()
    print("NO-TPC", adam_c.get_num_threads())
else:
    import threadpoolctl
    ours = [i for i in threadpoolctl.threadpool_info() if i["internal_api"] == "adam_c"]
    assert len(ours) == 1, threadpoolctl.threadpool_info()
    with threadpoolctl.threadpool_limits(1):
        assert adam_c.get_num_threads() == 1
    print("TPC-OK", adam_c.get_num_threads())
"""


@pytest.mark.parametrize("order", ["before", "after", "absent"])
def test_threadpoolctl_imported_before_after_or_not_at_all(order, tmp_path):
    """threadpoolctl imported (and used) before adam_c still finds it; without threadpoolctl adam_c just works."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl < 3.5 cannot take adam_c's controller")
    code = LATE_THREADPOOLCTL
    if order == "absent":
        code = "import sys; sys.modules['threadpoolctl'] = None\n" + code
    proc = subprocess.run([sys.executable, "-c", code, order], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path), env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == (["NO-TPC", "2"] if order == "absent" else ["TPC-OK", "2"])


def test_demo_trains(tmp_path):
    proc = run_python("from adam_c.__main__ import main; raise SystemExit(main(['--epochs', '6']))", tmp_path,
                      timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    losses = [float(line.split("loss")[1].split()[0]) for line in proc.stdout.splitlines()
              if line.startswith("epoch")]
    assert len(losses) >= 2 and losses[-1] < 0.5 * losses[0], proc.stdout
    assert "test accuracy" in proc.stdout


def test_bench_smoke(tmp_path):
    """The main benchmark command runs end to end (quick and small: one workload, one dtype, no peers)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "adam_c.bench", "--quick", "--dtype", "float32",
                           "--workloads", "call", "--no-torch", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert adam_c.cpu_info()["target"] in proc.stdout
    assert "floor (probe)" in proc.stdout and "adam_c" in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100, max(proc.stdout.splitlines(), key=len)
    assert out.exists() and out.stat().st_size > 0


def test_bench_plot_without_matplotlib_fails_at_once(tmp_path):
    """--plot without matplotlib: a usage error before any measuring (it used to run minutes, then exit 0)."""
    code = ("import sys, time; sys.modules['matplotlib'] = None; from adam_c.bench import main; t = time.time()\n"
            "try:\n    main(['--plot', 'out.png'])\nexcept SystemExit as exc:\n"
            "    print('EXIT', exc.code, round(time.time() - t, 1))")
    proc = run_python(code, tmp_path, timeout=120)
    exit_line = [line for line in proc.stdout.splitlines() if line.startswith("EXIT")]
    assert exit_line and exit_line[0].split()[1] == "2", proc.stdout + proc.stderr
    assert float(exit_line[0].split()[2]) < 5.0
    assert "matplotlib" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def test_demo_reports_the_optimizers_share(tmp_path):
    proc = run_python("from adam_c.__main__ import main; raise SystemExit(main(['--epochs', '2']))", tmp_path,
                      timeout=180)
    line = [x for x in proc.stdout.splitlines() if x.startswith("optimizer:")]
    assert line, proc.stdout + proc.stderr
    seconds = float(line[0].split(" took ")[1].split(" s in all")[0])
    assert 0 < seconds < 1.0, line[0]
    # what adam_c decided about threads, in words
    assert "threads: " in proc.stdout and ("chose" in proc.stdout or "threads: none" in proc.stdout), proc.stdout


def test_bench_interleaving_gives_every_implementation_every_predecessor():
    """A sample can slow down the next one (threads left spinning), so the bench must not give an implementation
    the same neighbour most of the time: the rotated round-robin it used did, and made an identical serial step
    look 2.4x slower. With a random order per round each one follows each other one about equally often."""
    from adam_c.bench import Timed, measure_interleaved
    sequence = []
    timed = [Timed(name, lambda: None) for name in "abcd"]
    for t in timed:
        t.sample = (lambda name: lambda: sequence.append(name))(t.name)
        t.summary = lambda: {}
        t.warm_up = lambda: None
    measure_interleaved(timed, 400, 400, 3600.0)  # max_rounds ends it
    assert len(sequence) == 1600
    follows = {}
    for before, after in zip(sequence, sequence[1:]):
        if before != after:
            follows[(before, after)] = follows.get((before, after), 0) + 1
    for after in "abcd":
        counts = [follows.get((before, after), 0) for before in "abcd" if before != after]
        assert min(counts) > 0.6 * max(counts), (after, counts)


def test_bench_loop_workload_smoke(tmp_path):
    """The training-loop workload runs end to end and reports both groups (torch's, when installed)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "adam_c.bench", "--quick", "--workloads", "loop", "--json",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # every table and the targets fit 100 columns (the loop's table was 175 wide)
    assert max(len(line) for line in proc.stdout.splitlines()) <= 100, max(proc.stdout.splitlines(), key=len)
    assert "targets:" in proc.stdout
    rows = [r for r in json.loads(out.read_text())["results"] if r.get("workload") == "loop"]
    assert [r["n_elements"] for r in rows] == [26_000, 100_000, 1_000_000, 8_000_000]
    has_torch = importlib.util.find_spec("torch") is not None
    for r in rows:
        assert r["adam_c_over_serial"] > 0 and r["b2b_speedup"] > 0 and r["b2b_probe_speedup"] > 0
        assert (r["adam_c_over_serial_with_torch"] is not None) == has_torch
        assert (r["adam_c_over_torch"] is not None) == has_torch


def test_bench_mixed_runs_with_its_probe_in_every_group(monkeypatch, capsys):
    """The mixed-precision bench end to end on small tensors: every variant's % of floor comes from the probe
    timed in its own group (a probe timed once, apart, gave figures above 100% when the host's bandwidth moved)."""
    from adam_c.bench import Settings
    from adam_c.bench import mixed as bench_mixed
    monkeypatch.setattr(bench_mixed, "TENSOR_ELEMENTS", 4_099)
    records = bench_mixed.run_mixed(Settings(True), {}, 2)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100, max(out.splitlines(), key=len)
    variants = {r["variant"] for r in records}
    assert len(variants) == 3, variants  # ml_dtypes is a test extra: the bf16 variants run too
    assert out.count("(the probe: ") == 3
    for r in records:
        assert r["percent_of_floor"] > 0 and r["ns_per_element"] > 0 and r["adam_c_over_this"] > 0
    names = {r["implementation"] for r in records}
    assert any(name.startswith("adam_c") for name in names)
    assert (importlib.util.find_spec("torch") is not None) == any(name.startswith("torch") for name in names)
