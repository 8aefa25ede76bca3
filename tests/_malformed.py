"""_malformed.py: test helper: hypothesis garbage, and the check that a call on adam_c.Adam fails cleanly.

A trained optimizer, full snapshots, and the check that a call raised only TypeError/ValueError, changed nothing
and left an optimizer that still steps."""
import copy
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, Phase, settings
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
