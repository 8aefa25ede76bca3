"""_numpy_steps.py: test helper: adam_c.Adam snapshots, the oracle's one step, and a fresh-interpreter runner."""
import os
import subprocess
import sys

import numpy as np
import pytest

import adam_c
from reference import adam_step_reference, assert_bitwise_equal

TESTS = os.path.dirname(os.path.abspath(__file__))  # tests/: the helper modules a test module imports


def run_isolated(tmp_path, body, timeout=90):
    """Runs the calling test module's function `body` in a fresh interpreter (from outside the checkout, so the
    installed adam_c is imported) and fails on a crash, a hang or an exception."""
    caller = sys._getframe(1).f_globals["__file__"]  # the module that defines `body`
    here, module = os.path.dirname(os.path.abspath(caller)), os.path.splitext(os.path.basename(caller))[0]
    code = f"import sys; sys.path[:0] = [{here!r}, {TESTS!r}]; import {module} as m; m.{body}(); " \
           "print('BODY-OK', flush=True)"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=str(tmp_path))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{body} hung (killed after {timeout} s); output: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0 and "BODY-OK" in proc.stdout, \
        f"{body}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def expected_step(p, g, state=None, step=1, **hp):
    """The oracle's (param, exp_avg, exp_avg_sq, max_exp_avg_sq) after one step from `state`."""
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False)
    kw.update(hp)
    zeros = np.zeros_like(p)
    m, v, vmax = state if state is not None else (zeros, zeros, zeros)
    return adam_step_reference(p, g, m, v, vmax, step=step, **kw)


def rand(shape, dtype=np.float64, seed=0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def flat_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def full_snapshot(opt):
    return ([p.copy() for p in flat_params(opt)],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
             for i, e in opt.state.items()})


def assert_snapshot_equal(a, b, what):
    assert len(a[0]) == len(b[0]), what
    for i, (x, y) in enumerate(zip(a[0], b[0])):
        assert_bitwise_equal(x, y, f"{what}: param {i}")
    assert sorted(a[1]) == sorted(b[1]), f"{what}: state entries {sorted(a[1])} vs {sorted(b[1])}"
    for i in a[1]:
        assert sorted(a[1][i]) == sorted(b[1][i]), f"{what}: state[{i}] keys"
        for k, v in a[1][i].items():
            if isinstance(v, np.ndarray):
                assert_bitwise_equal(b[1][i][k], v, f"{what}: state[{i}][{k!r}]")
            else:
                assert b[1][i][k] == v, f"{what}: state[{i}][{k!r}]"



def _trained():
    params = [rand(3, seed=1), rand(2, np.float32, seed=2)]
    opt = adam_c.Adam(params, lr=0.1)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    return opt
