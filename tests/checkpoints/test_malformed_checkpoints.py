"""adam_c.Adam.load_state_dict given malformed checkpoints: only TypeError/ValueError, and nothing changed.

Hypothesis-mutated state_dicts: garbage values, missing or extra keys, bad steps and hyperparameters, None arrays."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from _malformed import ALLOWED, FUZZ, HUGE_INTS, assert_same, garbage, make_optimizer, odd_arrays, snapshot, still_works


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
