"""Malformed input to adam_c.Adam and adam_step never crashes: only TypeError/ValueError, and nothing changed.

Hypothesis garbage as constructor arguments, grads, group values, thread and target settings."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adam_c
from reference import assert_bitwise_equal
from _malformed import ALLOWED, FUZZ, assert_same, garbage, make_optimizer, odd_arrays, snapshot, still_works

# ---------------------------------------------------------------- constructor

VALID = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
         "decoupled_weight_decay": False}


@FUZZ
@given(st.data())
def test_constructor_garbage(data):
    """Any mix of valid and garbage constructor arguments: an optimizer that works, or TypeError/ValueError."""
    p = np.ones(4, np.float32)
    kwargs = {k: (data.draw(garbage, label=k) if data.draw(st.booleans(), label=f"garbage {k}") else v)
              for k, v in VALID.items()}
    params = data.draw(st.one_of(st.just([p]), garbage, st.lists(st.one_of(st.just(p), garbage), max_size=3),
                                 st.builds(lambda g: [{"params": [p], **g}],
                                           st.dictionaries(st.sampled_from(list(VALID)), garbage, max_size=3))),
                       label="params")
    cls = data.draw(st.sampled_from([adam_c.Adam, adam_c.AdamW]))
    if cls is adam_c.AdamW:
        kwargs.pop("decoupled_weight_decay")
    before = p.copy()
    try:
        opt = cls(params, **kwargs)
    except ALLOWED:
        assert_bitwise_equal(p, before, "param after a rejected constructor")
        return
    opt.step()  # zero grads: a valid step


@pytest.mark.parametrize("kw", [
    {"lr": 10**400}, {"eps": 10**400}, {"weight_decay": 10**400}, {"betas": (0.9, 10**400)},
    {"lr": Fraction(10**400, 7)}, {"betas": {"a": 0.9, "b": 0.99}}, {"betas": {1: 0.9, 2: 0.99}},
    {"lr": float("nan")}, {"lr": -1}, {"betas": (1.0, 0.9)}, {"amsgrad": "yes"}, {"lr": None}, {"lr": 1j},
], ids=lambda v: repr(v)[:32])
def test_constructor_bad_hyperparameters(kw):
    with pytest.raises(ALLOWED):
        adam_c.Adam([np.ones(3)], **kw)
    with pytest.raises(ALLOWED):
        adam_c.Adam([{"params": [np.ones(3)], **kw}])


# ---------------------------------------------------------------- step


@FUZZ
@given(st.data())
def test_step_garbage(data):
    """Garbage grads (types, dtypes, shapes, lengths, non-contiguous, byte-swapped), garbage written into
    param_groups, garbage closures: a normal step or TypeError/ValueError with nothing changed."""
    opt = make_optimizer()
    params = [p for g in opt.param_groups for p in g["params"]]
    kind = data.draw(st.sampled_from(["grads", "entry", "group", "closure"]))
    grads = [np.ones_like(p) for p in params]
    closure = None
    restore = None
    if kind == "grads":
        grads = data.draw(garbage)
    elif kind == "entry":
        grads[data.draw(st.integers(0, len(grads) - 1))] = data.draw(st.one_of(garbage, odd_arrays))
    elif kind == "group":
        gi = data.draw(st.integers(0, len(opt.param_groups) - 1))
        key = data.draw(st.sampled_from(list(VALID)))
        restore = (gi, key, opt.param_groups[gi][key])
    else:
        result = data.draw(st.one_of(garbage, st.tuples(st.floats(), garbage), st.tuples(st.just(1.0),
                                                                                            st.just(grads))))
        closure = lambda: result  # noqa: E731
    before = snapshot(opt)
    if restore is not None:
        opt.param_groups[restore[0]][restore[1]] = data.draw(garbage)
    try:
        opt.step(grads, closure=closure)
        ok = True
    except ALLOWED:
        ok = False
    if restore is not None:
        opt.param_groups[restore[0]][restore[1]] = restore[2]
    if not ok:
        assert_same(before, snapshot(opt), f"step ({kind})")
    still_works(opt)


@pytest.mark.parametrize("key,value", [("lr", 10**400), ("eps", 10**400), ("betas", {"x": 1, "y": 2}),
                                       ("lr", -1.0), ("betas", (0.9, 1.0)), ("amsgrad", None), ("lr", "1")],
                         ids=lambda v: repr(v)[:24])
def test_step_with_bad_group_value(key, value):
    """A hyperparameter made invalid between steps: TypeError/ValueError from step, nothing changed."""
    opt = make_optimizer()
    before = snapshot(opt)
    opt.param_groups[1][key] = value
    with pytest.raises(ALLOWED):
        opt.step([np.ones_like(p) for g in opt.param_groups for p in g["params"]])
    opt.param_groups[1][key] = before["groups"][1][key]
    assert_same(before, snapshot(opt), f"{key}={value!r}")


def test_failed_first_step_changes_nothing():
    """A fresh optimizer whose first step is rejected still has no state (as before the call)."""
    p = np.ones(3, np.float32)
    opt = adam_c.Adam([p])
    before = snapshot(opt)
    with pytest.raises(ValueError):
        opt.step([np.ones(4, np.float32)])
    assert_same(before, snapshot(opt), "rejected first step")


def test_failed_step_after_enabling_amsgrad_changes_nothing():
    """Turning amsgrad on and then making a step that is rejected leaves the state as it was."""
    opt = make_optimizer()
    opt.param_groups[0]["amsgrad"] = True
    before = snapshot(opt)
    with pytest.raises(ValueError):
        opt.step([np.ones((9, 9), np.float32)] + [None] * 4)
    assert_same(before, snapshot(opt), "rejected step after amsgrad was turned on")


# ---------------------------------------------------------------- adam_step


@FUZZ
@given(st.data())
def test_adam_step_garbage(data):
    """adam_step with any argument replaced by garbage: a valid step or TypeError/ValueError, buffers intact."""
    bufs = [np.full(6, 0.5) for _ in range(5)]
    args = {"param": bufs[0], "grad": bufs[1], "exp_avg": bufs[2], "exp_avg_sq": bufs[3], "max_exp_avg_sq": bufs[4],
            "step": 1, "lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
            "amsgrad": True, "maximize": False, "decoupled_weight_decay": False}
    for key in data.draw(st.lists(st.sampled_from(sorted(args)), min_size=1, max_size=3, unique=True)):
        args[key] = data.draw(st.one_of(garbage, odd_arrays), label=key)
    before = [b.copy() for b in bufs]
    try:
        adam_c.adam_step(args.pop("param"), args.pop("grad"), args.pop("exp_avg"), args.pop("exp_avg_sq"), **args)
    except ALLOWED:
        for b, b0 in zip(bufs, before):
            assert_bitwise_equal(b, b0, "buffer after a rejected adam_step")


def test_set_num_threads_and_target_garbage():
    for bad in (-1, 1.5, "2", True, [1], 10**400):
        with pytest.raises(ALLOWED):
            adam_c.set_num_threads(bad)
    for bad in (None, 3, "no-such-target", "", b"avx2"):
        with pytest.raises(ALLOWED):
            adam_c.set_target(bad)
    assert math.isfinite(adam_c.get_num_threads())
