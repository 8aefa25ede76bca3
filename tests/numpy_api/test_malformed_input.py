"""Reliability: malformed input (hypothesis garbage) never crashes: only TypeError/ValueError, nothing changed."""
import copy
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import adam_c
from reference import assert_bitwise_equal

# no shrinking: a failure is reported as found (shrinking garbage can take minutes); max_examples keeps it fast
FUZZ = settings(max_examples=150, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ALLOWED = (TypeError, ValueError)

# ---------------------------------------------------------------- garbage

HUGE_INTS = st.sampled_from([2**62, 2**63, 2**64, -2**63, 10**30, 10**400, -10**400])
odd_arrays = st.one_of(
    hnp.arrays(st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex128]),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    st.just(np.zeros(3, dtype=">f8")),              # byte-swapped
    st.just(np.zeros((4, 4))[:, 1]),                # non-contiguous
    st.just(np.array(["a", "b"])),                  # strings
    st.just(np.array([1, "x", None], dtype=object)),
    st.just(np.frombuffer(b"\0" * 40, dtype=np.float64)),  # read-only
    st.just(np.ones(3).view([("a", "f8")])),        # structured
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), HUGE_INTS, st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(max_magnitude=10), st.text(max_size=5), st.binary(max_size=5),
    st.fractions(max_denominator=10), st.decimals(allow_nan=True),
    st.sampled_from([np.float64("nan"), np.float32(0.5), np.int64(3), np.bool_(True), Fraction(10**400, 3),
                     object(), type, print, Ellipsis, range(3), slice(1), b"\x00"]),
)
garbage = st.recursive(
    st.one_of(scalars, odd_arrays),
    lambda children: st.one_of(st.lists(children, max_size=3), st.tuples(children, children),
                               st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-2, 5)), children,
                                               max_size=3),
                               st.sets(st.integers(), max_size=3), st.frozensets(st.text(max_size=2), max_size=2)),
    max_leaves=6)


# ---------------------------------------------------------------- snapshots


def make_optimizer():
    """A trained optimizer: two groups (one AMSGrad/AdamW), mixed dtypes and shapes, a 0-d and an empty param."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(5)
    c = np.array(1.5, np.float32)
    d = np.zeros(0)
    e = rng.standard_normal(7)
    opt = adam_c.Adam([{"params": [a, b, c]}, {"params": [d, e], "amsgrad": True, "decoupled_weight_decay": True,
                                                 "weight_decay": 0.1, "lr": 0.01}], lr=1e-3)
    for _ in range(2):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in [a, b, c, d, e]])
    return opt


def snapshot(opt):
    """Full copies of everything a user can see: params (values and identity), state, groups."""
    return {
        "ids": [[id(p) for p in g["params"]] for g in opt.param_groups],
        "params": [[p.copy() for p in g["params"]] for g in opt.param_groups],
        "groups": [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups],
        "state": {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
                  for i, e in opt.state.items()},
        "state_dict": opt.state_dict(),
    }


def assert_same(before, after, what):
    assert before["ids"] == after["ids"], f"{what}: params replaced"
    for ga, gb in zip(before["params"], after["params"]):
        for a, b in zip(ga, gb):
            assert_bitwise_equal(b, a, f"{what}: param")
    assert before["groups"] == after["groups"], f"{what}: param_groups changed"
    assert sorted(before["state"]) == sorted(after["state"]), f"{what}: state entries changed"
    for i in before["state"]:
        ea, eb = before["state"][i], after["state"][i]
        assert sorted(ea) == sorted(eb), f"{what}: state[{i}] keys changed: {sorted(ea)} -> {sorted(eb)}"
        for k in ea:
            if isinstance(ea[k], np.ndarray):
                assert_bitwise_equal(eb[k], ea[k], f"{what}: state[{i}][{k!r}]")
            else:
                assert ea[k] == eb[k], f"{what}: state[{i}][{k!r}] {ea[k]!r} -> {eb[k]!r}"


def still_works(opt):
    """After any call (failed or not) the optimizer takes a normal step."""
    grads = [np.ones_like(p) for g in opt.param_groups for p in g["params"]]
    opt.step(grads)


def call_expecting_clean_failure(fn, opt, what):
    before = snapshot(opt)
    try:
        fn()
    except ALLOWED:
        assert_same(before, snapshot(opt), what)
        return False
    return True


# ---------------------------------------------------------------- load_state_dict


def _paths(tree, prefix=()):
    """Every (path, value) in a nested dict/list state_dict."""
    out = [(prefix, tree)]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.extend(_paths(v, prefix + (k,)))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out.extend(_paths(v, prefix + (i,)))
    return out


def _container(tree, path):
    for key in path[:-1]:
        tree = tree[key]
    return tree


STEP_VALUES = st.sampled_from([float("nan"), float("inf"), -1, -2**63, 2**62, 2**63, 10**400, 1.5, -0.5, "3",
                               None, True, np.float64("nan"), np.int64(-1), np.array([1, 2]), Fraction(7, 2),
                               Fraction(10**400, 3), 1e300, complex(1, 1), 3.0, np.float32(4.0), 0])


@st.composite
def mutated_state_dicts(draw):
    sd = make_optimizer().state_dict()
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(sd) if p]
        path = draw(st.sampled_from(paths))
        parent = _container(sd, path)
        action = draw(st.sampled_from(["replace", "delete", "extra", "step", "array", "hyper"]))
        if action == "replace":
            parent[path[-1]] = draw(garbage)
        elif action == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, list):
                parent.pop(path[-1])
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.one_of(st.text(max_size=4), st.integers(-3, 10), HUGE_INTS))] = draw(garbage)
        elif action == "step" and isinstance(sd.get("state"), dict) and sd["state"]:
            entry = sd["state"][draw(st.sampled_from(sorted(sd["state"], key=repr)))]
            if isinstance(entry, dict):
                entry["step"] = draw(STEP_VALUES)
        elif action == "array" and isinstance(sd.get("state"), dict) and sd["state"]:
            entry = sd["state"][draw(st.sampled_from(sorted(sd["state"], key=repr)))]
            if isinstance(entry, dict):
                entry[draw(st.sampled_from(["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]))] = draw(odd_arrays)
        elif action == "hyper" and isinstance(sd.get("param_groups"), list) and sd["param_groups"]:
            group = sd["param_groups"][draw(st.integers(0, len(sd["param_groups"]) - 1))]
            if isinstance(group, dict):
                group[draw(st.sampled_from(["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                            "decoupled_weight_decay", "params"]))] = draw(garbage)
    return sd


@FUZZ
@given(mutated_state_dicts())
def test_load_state_dict_garbage(sd):
    """Mutated state_dicts (garbage values, missing/extra keys, NaN/negative/huge steps, wrong shapes and
    dtypes): either loaded, or TypeError/ValueError with params, state and groups exactly as before."""
    opt = make_optimizer()
    loaded = call_expecting_clean_failure(lambda: opt.load_state_dict(sd), opt, "load_state_dict")
    if loaded:
        for entry in opt.state.values():
            assert isinstance(entry["step"], int) and 0 <= entry["step"] < 2**62
    still_works(opt)


@FUZZ
@given(garbage)
def test_load_state_dict_top_level_garbage(sd):
    opt = make_optimizer()
    call_expecting_clean_failure(lambda: opt.load_state_dict(sd), opt, "load_state_dict")
    still_works(opt)


@pytest.mark.parametrize("step", [float("nan"), float("inf"), -1, 2**62, 2**64, 10**400, 1e300, 2.5, "1", None,
                                  True, Fraction(10**400, 3), Fraction(5, 2), np.float64("nan"), complex(2, 0)],
                         ids=lambda v: repr(v)[:24])
def test_load_state_dict_bad_steps(step):
    """Each bad step value on its own: TypeError/ValueError and nothing changed."""
    opt = make_optimizer()
    sd = opt.state_dict()
    sd["state"][1]["step"] = step
    before = snapshot(opt)
    with pytest.raises(ALLOWED):
        opt.load_state_dict(sd)
    assert_same(before, snapshot(opt), f"step={step!r}")


@pytest.mark.parametrize("key,value", [
    ("lr", 10**400), ("eps", 10**400), ("weight_decay", 10**400), ("betas", (10**400, 0.9)),
    ("lr", Fraction(10**400, 3)), ("betas", {"a": 0.9, "b": 0.99}), ("betas", {0: 0.9}), ("lr", -1.0),
    ("lr", "0.1"), ("amsgrad", 2), ("betas", (0.9,)), ("eps", float("nan")),
], ids=lambda v: repr(v)[:24])
def test_load_state_dict_bad_hyperparameters(key, value):
    opt = make_optimizer()
    sd = opt.state_dict()
    sd["param_groups"][0][key] = value
    before = snapshot(opt)
    with pytest.raises(ALLOWED):
        opt.load_state_dict(sd)
    assert_same(before, snapshot(opt), f"{key}={value!r}")


@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"])
def test_load_state_dict_none_state_arrays(key):
    """A required state array given as None is rejected like a missing one (or loaded so that steps still work);
    an accepted None must never leave an optimizer whose every step fails."""
    opt = make_optimizer()
    sd = opt.state_dict()
    sd["state"][4][key] = None  # param 4 is in the AMSGrad group: all three arrays are required
    sd["state"][0][key] = None
    before = snapshot(opt)
    try:
        opt.load_state_dict(sd)
    except ALLOWED:
        assert_same(before, snapshot(opt), f"{key}=None")
    still_works(opt)


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
