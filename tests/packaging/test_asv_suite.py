"""test_asv_suite.py: the asv suite (asv_benchmarks/benchmarks) times through the bench's harness, skips only in
`setup` (asv counts a NotImplementedError anywhere else as a failure), and each benchmark runs at its first
parameters (what `asv run --quick` does for all of them, in seconds instead of minutes)."""
import ast
import importlib.util
import itertools
from pathlib import Path

import pytest

import adam_c.bench.harness

SUITE = Path(__file__).resolve().parents[2] / "asv_benchmarks" / "benchmarks" / "bench_step.py"


def load_suite():
    spec = importlib.util.spec_from_file_location("asv_bench_step", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_classes(module):
    return [obj for name, obj in vars(module).items() if isinstance(obj, type) and name.endswith("Suite")]


def test_not_implemented_only_in_setup():
    """A skip raised in a benchmark's body fails `asv run` (it did: track_default_over_serial 8/12 failed)."""
    tree = ast.parse(SUITE.read_text())
    helpers = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    offenders = []
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        for method in (node for node in cls.body if isinstance(node, ast.FunctionDef)):
            if method.name in ("setup", "setup_cache"):
                continue
            for node in ast.walk(method):
                raised = isinstance(node, ast.Raise) and node.exc is not None and "NotImplementedError" in \
                    ast.dump(node.exc)
                # a helper that may skip (use_threads) may be called from setup only
                calls_skipper = isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id == "use_threads"
                if raised or calls_skipper:
                    offenders.append(f"{cls.name}.{method.name}")
    assert "use_threads" in helpers
    assert offenders == []


def test_suite_times_through_the_harness():
    module = load_suite()
    assert module.measure_interleaved is adam_c.bench.harness.measure_interleaved
    assert module.Timed is adam_c.bench.harness.Timed
    source = SUITE.read_text()
    assert "perf_counter" not in source  # no second copy of the timing code


@pytest.mark.parametrize("cls_name", [c.__name__ for c in benchmark_classes(load_suite())])
def test_every_benchmark_runs_at_its_first_parameters(cls_name):
    module = load_suite()
    cls = getattr(module, cls_name)
    params = cls.params if isinstance(cls.params, tuple) else (cls.params,)
    ran = 0
    for combo in itertools.islice(itertools.product(*params), 3):
        suite = cls()
        try:
            suite.setup(*combo)
        except NotImplementedError:
            continue  # asv's skip, e.g. 2 threads on 1 CPU or torch not installed
        try:
            for name in dir(cls):
                if name.startswith(("time_", "track_")):
                    value = getattr(suite, name)(*combo)
                    if name.startswith("track_"):
                        assert isinstance(value, float) and value > 0, (name, combo, value)
                    ran += 1
        finally:
            if hasattr(suite, "teardown"):
                suite.teardown(*combo)
    assert ran > 0, f"{cls_name}: every parameter combination skipped"
