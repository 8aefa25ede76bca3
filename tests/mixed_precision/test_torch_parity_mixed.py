"""Mixed precision against torch where torch computes the same thing: the fp32-master recipe with bf16/fp16 copies,
GradScaler's unscale and skip, clip_grad_norm_'s norm and factor, fused Adam on bf16/fp16 params."""
import math

import ml_dtypes
import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")

BF16 = np.dtype(ml_dtypes.bfloat16)
SIZES = (33, 1001, 4099)
STEPS = 25


def to_torch(a):
    """A torch tensor with the same bits (bfloat16 through a uint16 view: NumPy has no torch bfloat16)."""
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def to_numpy(t, dtype):
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(BF16) if hasattr(torch, "uint16") else \
            t.view(torch.int16).numpy().view(np.uint16).view(BF16)
    return t.detach().numpy().astype(dtype, copy=False)


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in SIZES]
    grads = [[(rng.standard_normal(n) * 0.1).astype(np.float32).astype(dtype) for n in SIZES]
             for _ in range(STEPS)]
    return params, grads


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("decay", ["none", "adamw"])
def test_master_weights_match_torch_recipe(dtype, decay):
    """torch: fp32 master params, grads copied in from the low-precision grads, Adam (foreach=False) on the
    master, params copied back (round to nearest even). adam_c's master_weights does the same in one pass.
    torch's CPU kernels may fuse multiply-adds, so the masters agree to float32 rounding (as in
    kernels/test_numerics_vs_torch.py), and the params are the masters rounded: equal except where a master sits
    within its float32 difference of a rounding boundary (at most 1 ulp, rarely)."""
    params, grads = _data(dtype)
    cls, wd = (adam_c.AdamW, 0.01) if decay == "adamw" else (adam_c.Adam, 0.0)
    tcls = torch.optim.AdamW if decay == "adamw" else torch.optim.Adam
    ours = [p.copy() for p in params]
    opt = cls(ours, lr=1e-2, weight_decay=wd, master_weights=True)
    tparams = [to_torch(p) for p in params]
    masters = [torch.nn.Parameter(p.float()) for p in tparams]
    topt = tcls(masters, lr=1e-2, weight_decay=wd, foreach=False)
    for step_grads in grads:
        opt.step(step_grads)
        for m, g in zip(masters, step_grads):
            m.grad = to_torch(g).float()
        topt.step()
        with torch.no_grad():
            for p, m in zip(tparams, masters):
                p.copy_(m)
    for i, (p, tp, m) in enumerate(zip(ours, tparams, masters)):
        np.testing.assert_allclose(opt.state[i]["master"], m.detach().numpy(), rtol=2e-5, atol=1e-6)
        ours_bits = p.view(np.uint16).astype(np.int32)
        theirs = tp.view(torch.int16).numpy().view(np.uint16).astype(np.int32)
        assert np.abs(ours_bits - theirs).max() <= 1 and np.mean(ours_bits != theirs) < 0.01, i


@pytest.mark.parametrize("dtype", [BF16, np.dtype(np.float16)], ids=["bfloat16", "float16"])
def test_low_precision_params_close_to_torch_fused(dtype):
    """torch's fused Adam on bf16/fp16 params keeps bf16/fp16 state; adam_c keeps float32 state: not the same
    computation, so the trajectories agree to the params' precision (a few ulps), not bit for bit."""
    params, grads = _data(dtype, seed=1)
    ours = [p.copy() for p in params]
    opt = adam_c.Adam(ours, lr=1e-3)
    tparams = [torch.nn.Parameter(to_torch(p)) for p in params]
    topt = torch.optim.Adam(tparams, lr=1e-3, fused=True)
    for step_grads in grads:
        opt.step(step_grads)
        for tp, g in zip(tparams, step_grads):
            tp.grad = to_torch(g)
        topt.step()
    for p, tp in zip(ours, tparams):
        a = p.astype(np.float32)
        b = tp.detach().float().numpy()
        ulp = 2.0 ** -7 if dtype == BF16 else 2.0 ** -10
        np.testing.assert_allclose(a, b, rtol=4 * ulp, atol=1e-3)


def test_grad_scale_and_skip_match_grad_scaler():
    """GradScaler: unscale_ multiplies by float32(1/scale); a found inf skips optimizer.step. adam_c fuses both:
    the same skips and step counts, and the same params to float32 rounding (fp32 params, torch Adam
    foreach=False; torch's CPU kernels may fuse multiply-adds)."""
    params, grads = _data(np.float32, seed=2)
    scale = 1024.0
    ours = [p.copy() for p in params]
    opt = adam_c.Adam(ours, lr=1e-2)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    topt = torch.optim.Adam(tparams, lr=1e-2, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10**9)
    scaler.scale(torch.ones(()))
    skipped = 0
    for k, step_grads in enumerate(grads):
        scale = scaler.get_scale()  # halves after each skip: both use the scaler's current scale
        scaled = [g * np.float32(scale) for g in step_grads]
        if k % 7 == 3:
            scaled[1][k] = np.inf if k % 2 else np.nan
        opt.step(scaled, grad_scale=scale)
        for tp, g in zip(tparams, scaled):
            tp.grad = torch.from_numpy(g.copy())
        scaler.step(topt)  # unscale_ + found-inf check + (maybe) step
        scaler.update()
        found = k % 7 == 3
        assert opt.last_step_skipped == found
        skipped += found
    assert skipped >= 3
    for p, tp in zip(ours, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=2e-5, atol=1e-6)
    assert opt.state[0]["step"] == STEPS - skipped


@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    """The global norm equals clip_grad_norm_'s (torch sums in float32: relative 1e-6), and the clipped step
    equals torch's clip + step to float32 precision (torch's factor is computed in float32)."""
    params, grads = _data(np.float32, seed=3)
    ours = [p.copy() for p in params]
    opt = adam_c.Adam(ours, lr=1e-2)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    topt = torch.optim.Adam(tparams, lr=1e-2, foreach=False)
    for step_grads in grads[:10]:
        opt.step(step_grads, max_grad_norm=max_norm)
        for tp, g in zip(tparams, step_grads):
            tp.grad = torch.from_numpy(g.copy())
        norm = float(torch.nn.utils.clip_grad_norm_(tparams, max_norm))
        topt.step()
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-6)
        exact = math.sqrt(math.fsum(float(x) ** 2 for g in step_grads for x in g.astype(np.float64)))
        assert opt.last_grad_norm == pytest.approx(exact, rel=1e-13)
    for p, tp in zip(ours, tparams):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tdtype", [torch.bfloat16, torch.float16])
def test_numpy_view_hook_updates_torch_tensors_in_place(tdtype):
    """The hook adam_c.torch will use: torch half/bfloat16 params stepped through zero-copy NumPy views."""
    from adam_c._mixed import numpy_view

    p = torch.randn(1001).to(tdtype)
    g = (torch.randn(1001) * 0.1).to(tdtype)
    expected = p.clone()
    opt = adam_c.Adam([numpy_view(p)], lr=1e-2, master_weights=True)
    opt.step([numpy_view(g)])
    twin = adam_c.Adam([numpy_view(expected)], lr=1e-2, master_weights=True)
    twin.step([numpy_view(g).astype(np.float32)])  # float32 grads: the same values, the same result
    assert not torch.equal(p.float(), (torch.zeros(1001))) and torch.equal(p, expected)
    assert numpy_view(p).ctypes.data == p.data_ptr()
