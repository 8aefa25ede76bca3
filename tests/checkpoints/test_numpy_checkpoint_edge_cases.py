"""adam_c.Adam's state_dict at its edges: amsgrad turned on, JSON-ready group values, odd tensors loaded.

After amsgrad is turned on the state_dict reloads; group values are plain Python; load_state_dict names an odd
tensor's entry and reads negative-bit views by value."""
import json
from fractions import Fraction

import numpy as np
import pytest

import adam_c
from reference import assert_bitwise_equal
from _numpy_steps import _trained, assert_snapshot_equal, flat_params, full_snapshot, rand


# ================================================================ state_dict right after amsgrad is turned on


def test_state_dict_after_turning_amsgrad_on_reloads():
    params = [rand(3, seed=1), rand(2, np.float32, seed=2)]
    opt = adam_c.Adam(params, lr=0.1)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    opt.param_groups[0]["amsgrad"] = True
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    twin = adam_c.Adam([p.copy() for p in params], lr=0.1)
    twin.load_state_dict(sd)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    twin.step([np.ones(3), np.ones(2, np.float32)])
    for x, y in zip(flat_params(opt), flat_params(twin)):
        assert_bitwise_equal(x, y, "reloaded after amsgrad was turned on")
    assert_bitwise_equal(opt.state[0]["max_exp_avg_sq"], twin.state[0]["max_exp_avg_sq"], "max_exp_avg_sq")


# ================================================================ plain group values


def test_state_dict_group_values_are_plain_python_and_json_serialisable():
    p = np.ones(3)
    opt = adam_c.Adam([p])
    g = opt.param_groups[0]
    g.update(lr=np.float32(0.25), eps=np.array(1e-6), weight_decay=Fraction(1, 4), amsgrad=np.bool_(True),
             betas=(np.float64(0.5), np.array(0.75)), maximize=0, note="kept")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    saved = sd["param_groups"][0]
    assert saved == {"lr": 0.25, "eps": 1e-6, "weight_decay": 0.25, "amsgrad": True, "betas": (0.5, 0.75),
                     "maximize": False, "decoupled_weight_decay": False, "note": "kept", "params": [0]}
    for key in ("lr", "eps", "weight_decay", "amsgrad", "maximize", "betas"):
        value = saved[key]
        assert type(value) in (float, bool, tuple), (key, type(value))
    text = json.dumps({"param_groups": sd["param_groups"],
                       "state": {i: {"step": e["step"]} for i, e in sd["state"].items()}})
    assert '"lr": 0.25' in text
    assert g["weight_decay"] == Fraction(1, 4)  # the live group is the user's: not rewritten


@pytest.mark.parametrize("make,exc,match", [
    (lambda t: {"step": t.tensor([1.0, 2.0])}, ValueError, r"\['step'\].*single number"),
    (lambda t: {"step": t.empty((), device="meta")}, TypeError, r"\['step'\].*meta"),
    (lambda t: {"exp_avg": t.empty(3, device="meta", dtype=t.float64)}, TypeError, r"\['exp_avg'\].*meta"),
    (lambda t: {"exp_avg": t.ones(3, dtype=t.complex128).conj()}, TypeError, r"\['exp_avg'\]"),
    (lambda t: {"step": t.tensor(3.0 + 1j).conj()}, TypeError, r"\['step'\]"),
], ids=["step-2-elements", "step-meta", "exp_avg-meta", "exp_avg-conj", "step-conj"])
def test_load_state_dict_with_odd_tensors_names_the_entry(make, exc, match):
    t = pytest.importorskip("torch")
    opt = _trained()
    sd = opt.state_dict()
    sd["state"][0].update(make(t))
    before = full_snapshot(opt)
    with pytest.raises(exc, match=r"state_dict\['state'\]\[0\]" + match):
        opt.load_state_dict(sd)
    assert_snapshot_equal(before, full_snapshot(opt), "after a refused load")


def test_load_state_dict_with_neg_bit_tensor_reads_its_values():
    t = pytest.importorskip("torch")
    opt = _trained()
    sd = opt.state_dict()
    values = sd["state"][0]["exp_avg"].copy()
    sd["state"][0]["exp_avg"] = t._neg_view(t.tensor(-values))
    sd["state"][0]["step"] = t._neg_view(t.tensor(-1.0))  # reads as 1.0
    opt.load_state_dict(sd)
    assert_bitwise_equal(opt.state[0]["exp_avg"], values, "neg-bit tensor's values")
    assert opt.state[0]["step"] == 1
