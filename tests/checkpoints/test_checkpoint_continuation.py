"""adam_c.Adam checkpoints (copy, deepcopy, pickle, np.savez into a fresh process) continue bit-identically."""
import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adam_c
from reference import assert_bitwise_equal

SIZES = [(4, 3), (17,), (), (0,), (129,), (2, 2, 2)]
DTYPES = [np.float32, np.float64, np.float32, np.float64, np.float64, np.float32]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(d) for s, d in zip(SIZES, DTYPES)]


def make_optimizer(params):
    """Three groups: Adam with L2, AMSGrad+AdamW, maximize with the large-weight lerp form."""
    return adam_c.Adam([
        {"params": params[:2], "weight_decay": 0.01},
        {"params": params[2:4], "amsgrad": True, "decoupled_weight_decay": True, "weight_decay": 0.1,
         "lr": 3e-3},
        {"params": params[4:], "maximize": True, "betas": (0.3, 0.99), "eps": 1e-6},
    ], lr=1e-2)


def grads_for(step, params):
    """Deterministic grads for step `step` (the same in any process); param 1 skips every third step."""
    rng = np.random.default_rng(1000 + step)
    out = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
    if step % 3 == 0:
        out[1] = None
    return out


def params_of(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def train(opt, first, last):
    for step in range(first, last):
        opt.step(grads_for(step, params_of(opt)))


def assert_same_optimizer(a, b, what):
    pa, pb = params_of(a), params_of(b)
    assert len(pa) == len(pb)
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert_bitwise_equal(x, y, f"{what}: param {i}")
    assert sorted(a.state) == sorted(b.state), what
    for i in a.state:
        assert a.state[i]["step"] == b.state[i]["step"], f"{what}: step of {i}"
        assert sorted(a.state[i]) == sorted(b.state[i]), f"{what}: keys of {i}"
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if k in a.state[i]:
                assert_bitwise_equal(a.state[i][k], b.state[i][k], f"{what}: state[{i}][{k!r}]")
    strip = [{k: v for k, v in g.items() if k != "params"} for g in a.param_groups]
    assert strip == [{k: v for k, v in g.items() if k != "params"} for g in b.param_groups], what


# ---------------------------------------------------------------- pickle and deepcopy


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copy_mid_training_continues_bit_identically(how):
    """A copy of an optimizer taken mid-training (params, grads buffers and state travel with it) continues
    exactly like the original; the two are independent afterwards."""
    params = make_params()
    opt = make_optimizer(params)
    opt.grads  # allocate the optimizer-owned grad buffers too
    train(opt, 0, 7)
    if how == "pickle":
        bundle = pickle.loads(pickle.dumps({"params": params, "opt": opt}, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        bundle = copy.deepcopy({"params": params, "opt": opt})
    clone, clone_params = bundle["opt"], bundle["params"]
    # the model's arrays and the optimizer's params are the same objects in the copy, new ones vs the original
    for mine, theirs, orig in zip(params_of(clone), clone_params, params):
        assert mine is theirs
        assert mine is not orig and not np.shares_memory(mine, orig)
    assert_same_optimizer(opt, clone, "right after the copy")
    for g_clone, g_orig in zip(clone.grads, opt.grads):
        assert g_clone is not g_orig and not np.shares_memory(g_clone, g_orig)
    # both continue (the copy first, so any shared buffer would show in the original's trajectory)
    train(clone, 7, 15)
    train(opt, 7, 15)
    assert_same_optimizer(opt, clone, "after continuing")
    reference = make_optimizer(make_params())
    train(reference, 0, 15)
    assert_same_optimizer(reference, opt, "vs an uninterrupted run")
    # and the copy still steps through its own grads buffers
    for g in clone.grads:
        g.fill(0.5)
    clone.step()
    assert clone.state[0]["step"] == opt.state[0]["step"] + 1


def test_pickle_fresh_optimizer_and_after_load_state_dict():
    params = make_params()
    opt = make_optimizer(params)
    clone = pickle.loads(pickle.dumps(opt))
    train(opt, 0, 3)
    train(clone, 0, 3)
    assert_same_optimizer(opt, clone, "pickled before the first step")
    other = make_optimizer(make_params(5))
    other.load_state_dict(opt.state_dict())
    again = pickle.loads(pickle.dumps(other))
    train(other, 3, 6)
    train(again, 3, 6)
    assert_same_optimizer(other, again, "pickled after load_state_dict")


# ---------------------------------------------------------------- np.savez and a fresh process


def save_checkpoint(path, opt):
    """What a user would do: arrays into an .npz, everything else (steps, groups) as JSON beside them."""
    sd = opt.state_dict()
    arrays = {f"param_{i}": p for i, p in enumerate(params_of(opt))}
    meta = {"steps": {}, "groups": []}
    for i, entry in sd["state"].items():
        meta["steps"][str(i)] = entry["step"]
        for k, v in entry.items():
            if k != "step":
                arrays[f"state_{i}_{k}"] = v
    for g in sd["param_groups"]:
        meta["groups"].append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


LOADER = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import adam_c
    sys.path[:0] = [sys.argv[3], sys.argv[4]]  # this test's directory, and tests/ for its helpers
    from test_checkpoint_continuation import grads_for, params_of, train

    data = np.load(sys.argv[1])
    meta = json.loads(str(data["meta"]))
    n_params = sum(len(g["params"]) for g in meta["groups"])
    params = [data[f"param_{i}"].copy() for i in range(n_params)]
    groups = []
    for g in meta["groups"]:
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": [params[i] for i in g["params"]]})
    opt = adam_c.Adam(groups)
    state = {}
    for i, step in meta["steps"].items():
        entry = {"step": step}
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if f"state_{i}_{k}" in data:
                entry[k] = data[f"state_{i}_{k}"]
        state[int(i)] = entry
    opt.load_state_dict({"state": state, "param_groups": meta["groups"]})
    train(opt, 9, 20)
    out = {f"param_{i}": p for i, p in enumerate(params_of(opt))}
    for i, entry in opt.state.items():
        out[f"step_{i}"] = np.array(entry["step"])
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if k in entry:
                out[f"state_{i}_{k}"] = entry[k]
    np.savez(sys.argv[2], **out)
    print("LOADED-OK")
""")


def test_savez_checkpoint_continues_in_a_fresh_process(tmp_path):
    params = make_params()
    opt = make_optimizer(params)
    train(opt, 0, 9)
    ckpt, result = tmp_path / "ckpt.npz", tmp_path / "result.npz"
    save_checkpoint(ckpt, opt)
    train(opt, 9, 20)  # the original continues here meanwhile
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", LOADER, str(ckpt), str(result), here, os.path.dirname(here)],
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0 and "LOADED-OK" in proc.stdout, proc.stderr[-3000:]
    got = np.load(result)
    for i, p in enumerate(params_of(opt)):
        assert_bitwise_equal(got[f"param_{i}"], p, f"param {i} after continuing in a fresh process")
    for i, entry in opt.state.items():
        assert int(got[f"step_{i}"]) == entry["step"]
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if k in entry:
                assert_bitwise_equal(got[f"state_{i}_{k}"], entry[k], f"state[{i}][{k!r}]")
    assert sorted(int(k[len("step_"):]) for k in got.files if k.startswith("step_")) == sorted(opt.state)
