"""_numpy_api.py: test helper: adam_c.Adam set-ups, grads and the snapshots a failed call must leave alone."""
import copy

import numpy as np

from reference import assert_bitwise_equal

DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
            "maximize": False, "decoupled_weight_decay": False}


def hp(**overrides):
    return {**DEFAULTS, **overrides}


def rand(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return np.asarray(rng.standard_normal(shape), dtype=dtype)


def grads_for(params, seed):
    return [rand(p.shape, p.dtype, seed=seed * 1000 + i) for i, p in enumerate(params)]


def snapshot(opt, params):
    """Everything a failed call must leave alone: param values, the full state_dict, the group hyperparameters."""
    return ([p.copy() for p in params], opt.state_dict(),
            [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups],
            [list(map(id, g["params"])) for g in opt.param_groups])


def assert_state_dicts_equal(a, b, what="state_dict"):
    assert a["state"].keys() == b["state"].keys(), what
    for i in a["state"]:
        ea, eb = a["state"][i], b["state"][i]
        assert ea.keys() == eb.keys(), f"{what} state {i} keys"
        assert ea["step"] == eb["step"], f"{what} state {i} step"
        for key in ea:
            if key != "step":
                assert_bitwise_equal(ea[key], eb[key], f"{what} state {i} {key}")
    assert len(a["param_groups"]) == len(b["param_groups"])
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert ga == gb, what


def assert_unchanged(opt, params, before):
    old_params, old_sd, old_groups, old_ids = before
    for i, (p, q) in enumerate(zip(params, old_params)):
        assert_bitwise_equal(p, q, f"param {i} after a failed call")
    assert_state_dicts_equal(opt.state_dict(), old_sd, "state after a failed call")
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == old_groups
    assert [list(map(id, g["params"])) for g in opt.param_groups] == old_ids


def two_group_setup(seed=0):
    """Two groups, mixed dtypes and shapes (0-d and size-0 included), amsgrad in one, an extra key in each."""
    params = [rand((3, 4), np.float32, seed), rand((), np.float64, seed + 1), rand((0,), np.float32, seed + 2),
              rand((7,), np.float64, seed + 3), rand((2, 2, 2), np.float32, seed + 4)]
    groups = [{"params": params[:2], "lr": 1e-2, "amsgrad": True, "weight_decay": 0.1, "name": "first"},
              {"params": params[2:], "betas": (0.5, 0.99), "weight_decay": 0.05, "decoupled_weight_decay": True,
               "maximize": True, "tag": ["x"]}]
    return params, groups
