"""The command lines (python -m adam_c, adam_c.bench, adam_c.quality, adam_c.bench.compressed) refuse bad options up
front with a usage error naming the option (exit status 2), never a traceback after minutes of work; the demo and
the bench explain themselves (BLAS threads, what was measured, defaults and durations, progress)."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import adam_c
from adam_c import __main__ as demo
from adam_c import bench, quality
from adam_c.bench import cli as bench_cli
from adam_c.bench import compressed as bench_compressed
from adam_c.bench import harness


@pytest.mark.parametrize("main, argv, words", [
    (demo.main, ["--hidden", "0"], "--hidden must be >= 1"),
    (demo.main, ["--epochs", "-1"], "--epochs must be >= 1"),
    (demo.main, ["--seed", "-1"], "--seed must be >= 0"),
    (demo.main, ["--lr", "-1"], "--lr must be a finite number > 0"),
    (demo.main, ["--lr", "nan"], "--lr must be a finite number > 0"),
    (bench.main, ["--threads", "300"], "--threads must be in 1..256"),
    (bench.main, ["--threads", "0"], "--threads must be in 1..256"),
    (bench.main, ["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: cannot write"),
    (bench.main, ["--torch-dropin", "--no-torch"], "it does not take --no-torch"),
    (bench.main, ["--torch-dropin", "--workloads", "call"], "it does not take --workloads"),
    (bench.main, ["--sweep-threshold", "--quality"], "it does not take --quality"),
    (bench_compressed.main, ["--elements", "-5"], "--elements must be >= 1"),
])
def test_bad_options_are_usage_errors(main, argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_quality_plot_without_matplotlib_is_refused_before_training(capsys):
    with pytest.raises(SystemExit) as exc:
        quality.main(["--plot", "out.png", "--models", "mlp"])
    assert exc.value.code == 2 and "--plot needs matplotlib" in capsys.readouterr().err


def test_demo_exit_status_1_says_why(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "adam_c", "--epochs", "1"], capture_output=True, text=True,
                          cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 1 and "not above 0.8" in proc.stdout, proc.stdout + proc.stderr


def test_bfloat16_grad_of_a_float32_param_names_the_mismatch():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = np.zeros(4, np.float32)
    opt = adam_c.Adam([p])
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype bfloat16, but its param has dtype float32"):
        opt.step([np.zeros(4, ml_dtypes.bfloat16)])
    assert not opt.state


# ---------------------------------------------------------------- the bench's command line and output

def test_sweep_threshold_takes_no_torch():
    """--no-torch keeps torch from being imported (to set its threads), which the threshold sweep does too."""
    args = bench_cli.parse_args(["--sweep-threshold", "--no-torch"])
    assert args.sweep_threshold and args.no_torch


def test_bench_help_states_every_default_and_the_durations():
    parser = bench_cli.build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or ""), action.option_strings
    text = parser.format_help()
    for workload in ("ram", "cache", "call", "multi", "loop", "mixed", "compressed"):
        assert f"{workload} ~" in " ".join(text.split()), workload
    assert "default run takes ~" in " ".join(text.split())


def test_progress_reports_eta_scaled_by_the_pace_so_far(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock[0])
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    progress = harness.Progress([("a", 20.0), ("b", 20.0), ("c", 20.0)], stream=Stream())
    clock[0] += 40.0  # "a" took twice its estimate: the rest is expected to as well
    progress.done("a")
    assert "[bench 1/3] a done; 40 s so far, about 80 s left" in "".join(lines)
    quiet = harness.Progress([("x", 5.0), ("y", 5.0)], stream=Stream())
    lines.clear()
    clock[0] += 4.0
    quiet.done("x")
    assert lines == []  # a run expected to take 10 s, 4 s in: no progress lines
    clock[0] += 40.0
    quiet.done("y")  # ... unless it has run longer than 30 s
    assert "[bench 2/2] y done" in "".join(lines) and "finishing" in "".join(lines)


def test_bench_harness_imports_no_workload(tmp_path):
    """The asv suite and every workload import the harness; it imports none of them (no import circle), and
    `python -m adam_c.bench` runs the package's __main__ (one copy of each module)."""
    code = ("import sys, adam_c.bench.harness; "
            "print(sorted(m for m in sys.modules if m.startswith('adam_c.bench')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['adam_c.bench', 'adam_c.bench.harness']"


# ---------------------------------------------------------------- the demo's BLAS threads

def _demo(tmp_path, env_extra, hide_threadpoolctl):
    env = {k: v for k, v in os.environ.items() if k not in demo.BLAS_THREAD_VARIABLES and k != demo.LIMITED_BY_DEMO}
    env.update(env_extra)
    if hide_threadpoolctl:  # as in a venv where only the README's first command ran: no threadpoolctl
        (tmp_path / "threadpoolctl.py").write_text("raise ImportError('threadpoolctl is not installed')\n")
        env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run([sys.executable, "-m", "adam_c", "--epochs", "1"], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=180)


def test_demo_limits_blas_without_threadpoolctl(tmp_path):
    """Without threadpoolctl the demo still runs BLAS on one thread (its time does not depend on the package)."""
    proc = _demo(tmp_path, {}, hide_threadpoolctl=True)
    assert "BLAS on 1 thread (" in proc.stdout, proc.stdout + proc.stderr
    assert "not above 0.8" in proc.stdout  # the run went to its end (1 epoch: exit status 1)


def test_demo_sets_openblas_threads_in_process(monkeypatch):
    """numpy's wheels carry OpenBLAS: without threadpoolctl the demo sets its threads through OpenBLAS's own call."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def openblas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["internal_api"] == "openblas"]

    if not openblas_threads():
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    for name in demo.BLAS_THREAD_VARIABLES + (demo.LIMITED_BY_DEMO,):
        monkeypatch.delenv(name, raising=False)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):  # restores the count on exit
        assert set(openblas_threads()) == {2}
        monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # as if not installed: import raises ImportError
        assert demo.limit_blas_threads() == "BLAS on 1 thread (OpenBLAS)"
        assert set(openblas_threads()) == {1}
        monkeypatch.delitem(sys.modules, "threadpoolctl")


@pytest.mark.skipif(os.name != "posix", reason="re-executes on POSIX only")
def test_demo_reexecutes_with_openblas_num_threads_when_it_cannot_set_them(monkeypatch, tmp_path):
    """Where neither threadpoolctl nor OpenBLAS's call can limit BLAS in-process, python -m adam_c re-executes
    itself once with OPENBLAS_NUM_THREADS=1 (BLAS reads it when it loads), and the new process says so."""
    for name in demo.BLAS_THREAD_VARIABLES + (demo.LIMITED_BY_DEMO,):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    monkeypatch.setattr(demo, "set_openblas_threads", lambda n: False)
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 4)
    calls = []
    monkeypatch.setattr(demo.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    demo.relaunch_with_one_blas_thread()
    assert len(calls) == 1
    path, argv, env = calls[0]
    assert path == sys.executable and env["OPENBLAS_NUM_THREADS"] == "1" and env[demo.LIMITED_BY_DEMO] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # the new process: no second re-exec
    demo.relaunch_with_one_blas_thread()
    assert len(calls) == 1
    child = subprocess.run([sys.executable, "-m", "adam_c", "--epochs", "1"], capture_output=True, text=True,
                           cwd=str(tmp_path), timeout=180,
                           env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    assert "BLAS on 1 thread (OPENBLAS_NUM_THREADS=1 for this demo)" in child.stdout, child.stdout + child.stderr


def test_demo_leaves_blas_threads_the_user_set(tmp_path):
    proc = _demo(tmp_path, {"OPENBLAS_NUM_THREADS": "2"}, hide_threadpoolctl=True)
    assert "BLAS threads as your environment sets them" in proc.stdout, proc.stdout + proc.stderr


def test_demo_with_threadpoolctl_limits_blas_in_process(tmp_path):
    pytest.importorskip("threadpoolctl")
    proc = _demo(tmp_path, {}, hide_threadpoolctl=False)
    assert "BLAS on 1 thread (threadpoolctl)" in proc.stdout, proc.stdout + proc.stderr


def test_demo_last_lines_say_what_was_measured_and_decided():
    import types
    opt = adam_c.Adam([np.zeros(70_000, np.float32)])
    lines = demo.explain_optimizer(opt, 0, 0.0)
    assert lines[0].startswith("optimizer: 0 calls of opt.step took 0.000 s in all")
    fake = types.SimpleNamespace(param_groups=opt.param_groups, threading_info=lambda: {
        "threads": 1, "serial_us": 18.2, "threads_us": 5030.2, "steps": 40})
    text = " ".join(demo.explain_optimizer(fake, 750, 750 * 129.8e-6))
    assert "chose 1 thread" in text and "a step on 1 thread took 18.2 us" in text and "5,030.2 us" in text
    assert "Threads lose here" in text and "includes those trial steps" in text
    fake.threading_info = lambda: {"threads": 2, "serial_us": 900.0, "threads_us": 500.0, "steps": 40}
    assert "chose 2 threads" in " ".join(demo.explain_optimizer(fake, 10, 0.005))


def test_bench_run_reports_each_planned_part(monkeypatch, capsys):
    """Each part of the plan reports itself done, under the label the plan gave it (so the ETA adds up); with
    the 30 s limit lowered the short run shows it, on stderr; stdout fits 100 columns."""
    monkeypatch.setattr(harness, "PROGRESS_AFTER_S", 0.0)
    try:
        assert bench_cli.main(["--quick", "--dtype", "float32", "--workloads", "call", "multi", "--no-torch"]) == 0
    finally:
        adam_c.set_num_threads(None)  # the bench pins its thread count; the next tests follow OpenMP again
    captured = capsys.readouterr()
    assert "[bench 1/2] float32 call done" in captured.err and "[bench 2/2] float32 multi done" in captured.err
    assert "[bench" not in captured.out
    assert max(len(line) for line in captured.out.splitlines()) <= 100, max(captured.out.splitlines(), key=len)


def test_bench_plan_labels_are_unique():
    import argparse
    args = argparse.Namespace(torch_dropin=False, sweep_threshold=False, quality=True, plot="x.png",
                              workloads=list(bench_cli.WORKLOADS) + ["mixed", "compressed"])
    labels = [label for label, _ in bench_cli.plan(args, harness.Settings(False), ["float32", "float64"])]
    assert len(labels) == len(set(labels)) > 20


def test_torchloop_interleaved_case_reports_each_variant_against_fused_and_the_floor(capsys):
    """bench --workloads torchloop's interleaved case (a few steps of a small tensor): adam_c, torch fused and
    the memory floor, each in ns per element with its ratios, in lines of at most 100 columns."""
    pytest.importorskip("torch")
    from adam_c.bench import torchloop
    result = torchloop.interleaved(steps=5, n=4096)
    out = capsys.readouterr().out
    assert set(result["ns_per_element"]) == {"adam_c", "torch fused", "memory floor"}
    assert all(value > 0 for value in result["ns_per_element"].values())
    lines = [line for line in out.splitlines() if line]
    assert len(lines) == 4 and all(len(line) <= 100 for line in lines), out
    assert "1.00 x fused" in lines[2] and "1.00 x floor" in lines[3]
