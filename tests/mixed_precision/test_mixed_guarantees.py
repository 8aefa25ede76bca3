"""test_mixed_guarantees.py: the engine's guarantees hold for the mixed-precision options (master weights, EMA,
low-precision params): a failed or skipped step changes nothing, master and EMA survive
state_dict/load_state_dict, pickle and deepcopy, and group edits."""
import copy
import pickle

import ml_dtypes
import numpy as np
import pytest

import adam_c

BF16 = np.dtype(ml_dtypes.bfloat16)


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(1001).astype(BF16), rng.standard_normal(7).astype(np.float16),
            rng.standard_normal(13).astype(np.float32)]


def make_grads(params, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def snapshot(opt, params):
    state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
             for i, entry in opt.state.items()}
    return [p.copy() for p in params], state


def assert_same(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys()
        for k in sa[i]:
            if isinstance(sa[i][k], np.ndarray):
                assert sa[i][k].dtype == sb[i][k].dtype and sa[i][k].tobytes() == sb[i][k].tobytes(), (i, k)
            else:
                assert sa[i][k] == sb[i][k], (i, k)


def make_opt(params, **kw):
    return adam_c.AdamW(params, lr=1e-2, master_weights=True, ema_decay=0.9, **kw)


@pytest.mark.parametrize("stepped_before", [0, 2])
def test_skipped_step_changes_nothing(stepped_before):
    params = make_params()
    opt = make_opt(params)
    for s in range(stepped_before):
        opt.step(make_grads(params, s), grad_scale=2.0)
    before = snapshot(opt, params)
    grads = make_grads(params, 10)
    grads[1][3] = np.inf
    opt.step(grads, grad_scale=2.0)
    assert opt.last_step_skipped is True
    assert_same(before, snapshot(opt, params))
    if stepped_before == 0:
        assert opt.state == {}  # the fresh zero state and master/EMA copies of the skipped step were dropped
    opt.step(make_grads(params, 11), grad_scale=2.0)
    assert opt.last_step_skipped is False
    assert opt.state[0]["step"] == stepped_before + 1
    assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq", "master", "ema"}
    assert opt.state[0]["master"].dtype == np.float32 and opt.state[1]["exp_avg"].dtype == np.float32


def test_failed_step_changes_nothing():
    params = make_params()
    opt = make_opt(params)
    opt.step(make_grads(params, 0))
    before = snapshot(opt, params)
    grads = make_grads(params, 1)
    grads[0] = grads[0].astype(np.float64)  # a bfloat16 param takes bfloat16 or float32 grads only
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step(grads)
    assert_same(before, snapshot(opt, params))
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(make_grads(params, 1), grad_scale=0.0)
    assert_same(before, snapshot(opt, params))


def continue_both(a, pa, b, pb, steps=3):
    for s in range(steps):
        a.step(make_grads(pa, 100 + s), max_grad_norm=5.0)
        b.step(make_grads(pb, 100 + s), max_grad_norm=5.0)
        assert a.last_grad_norm == b.last_grad_norm
    assert_same(snapshot(a, pa), snapshot(b, pb))


def test_state_dict_round_trip_keeps_master_and_ema():
    params = make_params()
    opt = make_opt(params)
    for s in range(3):
        opt.step(make_grads(params, s))
    saved = opt.state_dict()
    assert {"master", "ema"} <= set(saved["state"][0]) and "master" not in saved["state"][2]
    copies = [p.copy() for p in params]
    other = make_opt(copies)
    other.load_state_dict(saved)
    assert_same(snapshot(opt, params), snapshot(other, copies))
    continue_both(opt, params, other, copies)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_pickle_and_deepcopy_keep_master_and_ema(how):
    params = make_params()
    opt = make_opt(params, rounding="nearest", seed=5)
    for s in range(3):
        opt.step(make_grads(params, s))
    twin = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    twin_params = twin.param_groups[0]["params"]
    assert_same(snapshot(opt, params), snapshot(twin, twin_params))
    continue_both(opt, params, twin, twin_params)
    with opt.ema_weights(), twin.ema_weights():
        assert all(a.tobytes() == b.tobytes() for a, b in zip(params, twin_params))


def test_group_edits_keep_master_and_ema_and_refuse_in_place_dtype_change():
    params = make_params()
    opt = make_opt(params)
    opt.step(make_grads(params, 0))
    master0 = opt.state[0]["master"].copy()
    extra = np.ones(5, BF16)
    opt.param_groups[0]["params"].append(extra)
    opt.step(make_grads(params + [extra], 1))
    assert opt.state[0]["step"] == 2 and opt.state[3]["step"] == 1
    assert not np.array_equal(opt.state[0]["master"], master0)  # carried over and stepped, not restarted
    before = snapshot(opt, params + [extra])
    params[1].dtype = BF16  # float16 memory reinterpreted as bfloat16: both valid param dtypes
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[1\].*dtype"):
        opt.step([g if i != 1 else np.zeros(7, BF16) for i, g in enumerate(make_grads(params + [extra], 2))])
    params[1].dtype = np.float16
    assert_same(before, snapshot(opt, params + [extra]))
    opt.step(make_grads(params + [extra], 3))
    assert opt.state[1]["step"] == 3
