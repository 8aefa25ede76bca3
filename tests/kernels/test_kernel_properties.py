"""Hypothesis properties of the kernels against the NumPy oracle (any shape, dtype, valid hyperparameters and
gradient scale), invalid hyperparameters as documented errors, and NaN/Inf propagation as in PyTorch."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import adam_c
from reference import ReferenceAdam, adam_step_reference, assert_bitwise_equal

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DTYPES = [np.float32, np.float64]

# ---------------------------------------------------------------- strategies


def _width(dtype):
    return 32 if np.dtype(dtype) == np.float32 else 64


def _finite(dtype, lo=None, hi=None):
    return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, allow_subnormal=True,
                     width=_width(dtype))


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7)

# valid hyperparameters, extremes included: lr 0 and huge, betas 0 and next to 1, eps 0/tiny/huge, large decay
lrs = st.one_of(st.sampled_from([0.0, 1e-3, 0.1, 1.0, 1e3, 1e30]), st.floats(0.0, 10.0))
betas = st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.999999, float(np.nextafter(1.0, 0.0))]),
                  st.floats(0.0, 1.0, exclude_max=True))
epss = st.sampled_from([0.0, 5e-324, 1e-300, 1e-45, 1e-30, 1e-8, 1.0, 1e30, 1e300])
weight_decays = st.one_of(st.just(0.0), st.sampled_from([1e-50, 1e-4, 0.01, 1.0, 1e4, 1e30]), st.floats(0.0, 10.0))
steps = st.one_of(st.integers(1, 20), st.sampled_from([1000, 10**6, 10**12, 2**53 + 1, 2**62 - 1]))
GRAD_SCALES = [0.0, 1e-30, 1e-20, 1e-10, 1e-3, 1.0, 1e3, 1e10, 1e20, 1e30]


@st.composite
def hyperparameters(draw):
    return dict(lr=draw(lrs), beta1=draw(betas), beta2=draw(betas), eps=draw(epss),
                weight_decay=draw(weight_decays), amsgrad=draw(st.booleans()), maximize=draw(st.booleans()),
                decoupled_weight_decay=draw(st.booleans()))


@st.composite
def gradients(draw, dtype, shape):
    """Moderate values times a scale from 1e-30 to 1e30, the full finite range, all zeros, or subnormals."""
    kind = draw(st.sampled_from(["scaled", "full", "zeros", "subnormal"]))
    info = np.finfo(dtype)
    if kind == "zeros":
        return np.zeros(shape, dtype) * draw(st.sampled_from([1.0, -1.0]))
    if kind == "full":
        return draw(hnp.arrays(dtype, shape, elements=_finite(dtype)))
    if kind == "subnormal":
        tiny = float(info.smallest_subnormal)
        values = [0.0, tiny, -tiny, 3 * tiny, float(info.tiny) / 2, -float(info.tiny) / 3, float(info.tiny)]
        return draw(hnp.arrays(dtype, shape, elements=st.sampled_from(values).map(dtype)))
    base = draw(hnp.arrays(dtype, shape, elements=_finite(dtype, -1.0, 1.0)))
    with np.errstate(all="ignore"):
        return (base * dtype(draw(st.sampled_from(GRAD_SCALES)))).astype(dtype)


@st.composite
def step_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(shapes)
    param = draw(hnp.arrays(dtype, shape, elements=_finite(dtype, -1e6, 1e6) | _finite(dtype)))
    grad = draw(gradients(dtype, shape))
    exp_avg = draw(hnp.arrays(dtype, shape, elements=_finite(dtype, -1e3, 1e3)))
    exp_avg_sq = draw(hnp.arrays(dtype, shape, elements=_finite(dtype, 0.0, 1e6) | _finite(dtype, 0.0)))
    max_exp_avg_sq = draw(hnp.arrays(dtype, shape, elements=_finite(dtype, 0.0, 1e6)))
    return dtype, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, draw(steps), draw(hyperparameters())


# ---------------------------------------------------------------- property tests against the NumPy oracle


@PROPERTY
@given(step_cases())
def test_adam_step_matches_reference(case):
    """adam_step on any shape, dtype, valid hyperparameters (extremes included) and gradient scale equals the
    NumPy oracle bit for bit (NaN where the oracle has NaN)."""
    dtype, param, grad, exp_avg, exp_avg_sq, vmax, step, hp = case
    expected = adam_step_reference(param, grad, exp_avg, exp_avg_sq, vmax, step=step, **hp)
    grad_before = grad.copy()
    p, m, v, mx = param.copy(), exp_avg.copy(), exp_avg_sq.copy(), vmax.copy()
    adam_c.adam_step(p, grad, m, v, step=step, max_exp_avg_sq=mx, **hp)
    assert_bitwise_equal(p, expected[0], "param")
    assert_bitwise_equal(m, expected[1], "exp_avg")
    assert_bitwise_equal(v, expected[2], "exp_avg_sq")
    assert_bitwise_equal(mx, expected[3] if hp["amsgrad"] else vmax, "max_exp_avg_sq")
    assert_bitwise_equal(grad, grad_before, "grad (read only)")


@st.composite
def optimizer_cases(draw):
    n_groups = draw(st.integers(1, 3))
    groups = []
    for _ in range(n_groups):
        hp = draw(hyperparameters())
        params = [draw(hnp.arrays(dtype, draw(shapes), elements=_finite(dtype, -10.0, 10.0)))
                  for dtype in draw(st.lists(st.sampled_from(DTYPES), min_size=1, max_size=4))]
        groups.append({"params": params, "lr": hp["lr"], "betas": (hp["beta1"], hp["beta2"]), "eps": hp["eps"],
                       "weight_decay": hp["weight_decay"], "amsgrad": hp["amsgrad"], "maximize": hp["maximize"],
                       "decoupled_weight_decay": hp["decoupled_weight_decay"]})
    n_steps = draw(st.integers(1, 4))
    all_params = [p for g in groups for p in g["params"]]
    grads = [[None if draw(st.integers(0, 7)) == 0 else draw(gradients(p.dtype.type, p.shape)) for p in all_params]
             for _ in range(n_steps)]
    return groups, grads


@PROPERTY
@given(optimizer_cases())
def test_optimizer_matches_reference(case):
    """The optimizer (one multi-tensor C call per step over groups of mixed dtypes, skipped params included)
    follows the NumPy oracle bit for bit over several steps."""
    groups, grads = case
    reference = ReferenceAdam(groups)
    opt = adam_c.Adam([{**g, "params": [p.copy() for p in g["params"]]} for g in groups])
    for step_grads in grads:
        reference.step(step_grads)
        opt.step(step_grads)
    mine = [p for g in opt.param_groups for p in g["params"]]
    for i, (a, b) in enumerate(zip(mine, reference.params)):
        assert_bitwise_equal(a, b, f"param {i}")
    i = 0
    for rg in reference.groups:
        for st_ref in rg["state"]:
            if st_ref["step"]:
                state = opt.state[i]
                assert state["step"] == st_ref["step"]
                assert_bitwise_equal(state["exp_avg"], st_ref["exp_avg"], f"exp_avg {i}")
                assert_bitwise_equal(state["exp_avg_sq"], st_ref["exp_avg_sq"], f"exp_avg_sq {i}")
                if rg["hp"]["amsgrad"]:
                    assert_bitwise_equal(state["max_exp_avg_sq"], st_ref["max_exp_avg_sq"], f"max {i}")
            else:
                assert opt.state.get(i, {"step": 0})["step"] == 0
            i += 1


@PROPERTY
@given(st.sampled_from(DTYPES), st.integers(0, 40), st.data())
def test_invalid_hyperparameters_are_documented_errors(dtype, n, data):
    """Out-of-range hyperparameters and steps are a ValueError (wrong types a TypeError) and write nothing."""
    bad = data.draw(st.sampled_from([
        ("lr", -1e-3), ("lr", float("nan")), ("lr", -np.inf), ("eps", -1e-12), ("eps", float("nan")),
        ("weight_decay", -0.5), ("weight_decay", float("nan")), ("beta1", 1.0), ("beta1", -0.1),
        ("beta1", float("nan")), ("beta2", 1.0), ("beta2", 1.5), ("beta2", float("nan")), ("step", 0),
        ("step", -5), ("step", 2**62), ("step", 2**64)]))
    hp = dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, amsgrad=True)
    hp[bad[0]] = bad[1]
    rng = np.random.default_rng(n)
    bufs = [rng.standard_normal(n).astype(dtype) for _ in range(5)]
    before = [b.copy() for b in bufs]
    with pytest.raises(ValueError):
        adam_c.adam_step(bufs[0], bufs[1], bufs[2], bufs[3], max_exp_avg_sq=bufs[4], **hp)
    for b, b0 in zip(bufs, before):
        assert_bitwise_equal(b, b0, "buffer after a rejected step")


# ---------------------------------------------------------------- NaN / Inf propagate as in PyTorch

COMBOS = [dict(amsgrad=a, maximize=m, weight_decay=wd, decoupled=d)
          for a in (False, True) for m in (False, True) for wd, d in ((0.0, False), (0.1, False), (0.1, True))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_inf_propagate_like_torch(dtype):
    """NaN and +-Inf in gradients (and from there in the state) end up in exactly the same elements, with the
    same signs, as in torch.optim.Adam/AdamW(foreach=False); finite elements agree to torch's documented ulps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    n = 64
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for combo in COMBOS:
        for beta1 in (0.9, 0.3):  # both lerp forms
            p0 = rng.standard_normal(n).astype(dtype)
            p_mine = p0.copy()
            tp = torch.tensor(p0.copy(), requires_grad=False)
            kw = dict(lr=1e-2, betas=(beta1, 0.999), eps=1e-8, weight_decay=combo["weight_decay"],
                      amsgrad=combo["amsgrad"], maximize=combo["maximize"], foreach=False)
            if combo["decoupled"]:
                topt = torch.optim.AdamW([tp], **kw)
                mine = adam_c.AdamW([p_mine], **{k: v for k, v in kw.items() if k != "foreach"})
            else:
                topt = torch.optim.Adam([tp], **kw)
                mine = adam_c.Adam([p_mine], **{k: v for k, v in kw.items() if k != "foreach"})
            for step in range(6):
                g = rng.standard_normal(n).astype(dtype)
                # specials in fresh places each step: NaN, +Inf, -Inf, huge values whose square overflows
                idx = rng.choice(n, size=8, replace=False)
                g[idx[:2]] = np.nan
                g[idx[2:4]] = np.inf
                g[idx[4:6]] = -np.inf
                g[idx[6:]] = np.finfo(dtype).max / 2 * (1 if step % 2 else -1)
                if step == 3:
                    g[:] = rng.standard_normal(n).astype(dtype)  # a clean step after poisoned ones
                tp.grad = torch.from_numpy(g.copy())
                topt.step()
                mine.step([g])
                theirs = tp.detach().numpy()
                what = f"{combo}, beta1={beta1}, step {step + 1}"
                np.testing.assert_array_equal(np.isnan(p_mine), np.isnan(theirs), err_msg=f"NaN positions: {what}")
                np.testing.assert_array_equal(np.isposinf(p_mine), np.isposinf(theirs), err_msg=f"+Inf: {what}")
                np.testing.assert_array_equal(np.isneginf(p_mine), np.isneginf(theirs), err_msg=f"-Inf: {what}")
                finite = np.isfinite(theirs)
                np.testing.assert_allclose(p_mine[finite], theirs[finite], rtol=rtol, atol=0, err_msg=what)
                tstate = topt.state[tp]
                for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if combo["amsgrad"] else ()):
                    a, b = mine.state[0][key], tstate[key].numpy()
                    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{key} NaN: {what}")
                    np.testing.assert_array_equal(np.isinf(a) & (a > 0), np.isinf(b) & (b > 0), err_msg=key)
                    np.testing.assert_array_equal(np.isinf(a) & (a < 0), np.isinf(b) & (b < 0), err_msg=key)
                assert mine.state[0]["step"] == int(tstate["step"])


def test_nan_inf_in_state_and_hyperparameters_propagate():
    """NaN/Inf already in the state, and lr = inf, flow through exactly as the oracle says (no masking)."""
    for dtype in DTYPES:
        p = np.array([1.0, 2.0, -3.0, 0.0, 5.0, np.inf, -np.inf, np.nan], dtype)
        g = np.array([0.5, np.nan, 1.0, 0.0, -np.inf, 1.0, 1.0, 1.0], dtype)
        m = np.array([np.nan, 0.0, np.inf, 0.0, 0.0, 0.0, 0.0, 0.0], dtype)
        v = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.inf, 0.0, 0.0], dtype)
        vmax = np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0, np.inf, 0.0], dtype)
        for amsgrad in (False, True):
            for lr in (1e-3, np.inf, 0.0):
                hp = dict(step=2, lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=amsgrad)
                expected = adam_step_reference(p, g, m, v, vmax, **hp)
                bufs = [a.copy() for a in (p, g, m, v, vmax)]
                adam_c.adam_step(bufs[0], bufs[1], bufs[2], bufs[3], max_exp_avg_sq=bufs[4], **hp)
                assert_bitwise_equal(bufs[0], expected[0], f"param lr={lr} amsgrad={amsgrad}")
                assert_bitwise_equal(bufs[2], expected[1], "exp_avg")
                assert_bitwise_equal(bufs[3], expected[2], "exp_avg_sq")
                if amsgrad:
                    assert_bitwise_equal(bufs[4], expected[3], "max_exp_avg_sq")
                assert np.isnan(bufs[0][1]) and np.isnan(bufs[0][0])  # NaN grad, NaN exp_avg: NaN param
