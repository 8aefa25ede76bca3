"""The loss scale (grad_scale): one rule in both front-ends, applied inside the kernel with torch's fused Adam's bits."""
import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402
from adam_c._mixed import numpy_view  # noqa: E402

# GradScaler's scales are powers of two (multiplied by the exact reciprocal); the others are divided
SCALES = [pytest.param(1024.0, id="pow2-1024"), pytest.param(65536.0, id="pow2-65536"),
          pytest.param(3.0, id="3"), pytest.param(1000.0, id="1000"), pytest.param(98304.0, id="1.5*2**16")]
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float16, id="f16"),
          pytest.param(torch.bfloat16, id="bf16")]


def _problem(dtype, scale, n=4096, steps=3, seed=0):
    """Params and the loss-scaled grads a backward pass gives; float16 grads are small, so that unscaled (below
    float16's 6.1e-5) they would lose bits or flush to 0 if divided in float16."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen).to(dtype)
    size = 1e-6 if dtype == torch.float16 else 1e-3
    grads = [(torch.randn(n, generator=gen) * size * scale).to(dtype) for _ in range(steps)]
    return p, grads


def _torch_front_end(p0, grads, scale, **kw):
    p = p0.clone()
    opt = at.Adam([p], lr=1e-2, **kw)
    for g in grads:
        p.grad = g.clone()
        opt.step(grad_scale=torch.tensor(scale))
        assert torch.equal(p.grad, g)  # the user's .grad stays scaled
    return p, opt


def _numpy_front_end(p0, grads, scale, **kw):
    p = p0.clone()
    opt = adam_c.Adam([numpy_view(p)], lr=1e-2, **kw)
    for g in grads:
        opt.step([numpy_view(g.clone())], grad_scale=scale)
    return p, opt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
def test_both_front_ends_give_the_same_bits(dtype, scale):
    p0, grads = _problem(dtype, scale)
    a, opt_a = _torch_front_end(p0, grads, scale)
    b, opt_b = _numpy_front_end(p0, grads, scale)
    assert torch.equal(a, b), f"{(a != b).sum().item()} of {a.numel()} params differ"
    ta, tb = opt_a.state_float32()[0], opt_b.state_float32()[0]
    for key in ("exp_avg", "exp_avg_sq"):
        assert np.array_equal(ta[key].numpy(), tb[key]), key


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", SCALES)
def test_a_step_gives_torch_fused_adams_bits(dtype, scale):
    """torch.optim.Adam(fused=True) under GradScaler (grad_scale/found_inf attributes) divides by the scale in
    float32 (float16/bfloat16 grads are upcast first). One step: torch keeps float16/bfloat16 state in the param's
    dtype (adam_c keeps float32), and its vector lerp uses an FMA, so later steps are not comparable bit for bit."""
    p0, grads = _problem(dtype, scale, steps=1)
    ref = p0.clone()
    fused = torch.optim.Adam([ref], lr=1e-2, fused=True)
    fused.grad_scale, fused.found_inf = torch.tensor(scale), torch.tensor(0.0)
    ref.grad = grads[0].clone()
    fused.step()
    a, _ = _torch_front_end(p0, grads, scale)
    b, _ = _numpy_front_end(p0, grads, scale)
    assert torch.equal(a, ref), f"adam_c.torch: {(a != ref).sum().item()} params differ from torch's fused Adam"
    assert torch.equal(b, ref), f"adam_c.Adam: {(b != ref).sum().item()} params differ from torch's fused Adam"


@pytest.mark.parametrize("scale", [1024.0, 3.0])
def test_the_kernel_divides_or_multiplies_by_the_float32_scale(scale):
    """The same step with the grads unscaled beforehand in float32 (g / float32(scale)): identical bits."""
    rng = np.random.default_rng(1)
    g = (rng.standard_normal(1000) * scale).astype(np.float32)
    p0 = rng.standard_normal(1000).astype(np.float32)
    a, b = p0.copy(), p0.copy()
    adam_c.Adam([a], lr=1e-2).step([g], grad_scale=scale)
    adam_c.Adam([b], lr=1e-2).step([g / np.float32(scale)])
    assert np.array_equal(a, b)
    if scale != 1024.0:  # not the multiply by float32(1 / scale) an earlier rule used
        c = p0.copy()
        adam_c.Adam([c], lr=1e-2).step([g * np.float32(1.0 / scale)])
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("scale", [1024.0, 3.0])
def test_the_norm_is_the_unscaled_grads_norm(scale):
    rng = np.random.default_rng(2)
    g = (rng.standard_normal(3000) * scale).astype(np.float32)
    p = torch.zeros(3000)
    opt = at.Adam([p])
    p.grad = torch.from_numpy(g.copy())
    opt.step(grad_scale=torch.tensor(scale), max_grad_norm=1e9)
    q = np.zeros(3000, np.float32)
    nopt = adam_c.Adam([q])
    nopt.step([g / np.float32(scale)], max_grad_norm=1e9)
    assert opt.last_grad_norm == nopt.last_grad_norm


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zero_dimensional_low_precision_params_take_a_scaled_step(dtype):
    """A 0-d float16/bfloat16 param: the scale no longer promotes its grad to float32 (every scaled step was
    refused)."""
    p = torch.tensor(0.5, dtype=dtype)
    q = p.clone()
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.tensor(8.0, dtype=dtype)
    opt.step(grad_scale=torch.tensor([4.0]))
    nopt = adam_c.Adam([numpy_view(q)], lr=0.1)
    nopt.step([numpy_view(torch.tensor(8.0, dtype=dtype))], grad_scale=4.0)
    assert torch.equal(p, q) and p.item() != 0.5


def test_a_grad_scale_left_by_a_failed_gradscaler_step_applies_as_torch_does():
    """GradScaler deletes optimizer.grad_scale/found_inf only when step() returns; torch.optim's fused Adam reads
    what a failed step left in the next steps, and so does adam_c (which no longer fails on it)."""
    dtype = torch.bfloat16
    p = torch.tensor(0.5, dtype=dtype)
    ref = p.clone()
    opt = at.Adam([p], lr=0.1)
    fused = torch.optim.Adam([ref], lr=0.1, fused=True)
    for o in (opt, fused):
        o.grad_scale, o.found_inf = torch.tensor(4.0), torch.tensor(0.0)
    for _ in range(2):
        p.grad = torch.tensor(8.0, dtype=dtype)
        ref.grad = torch.tensor(8.0, dtype=dtype)
        opt.step()
        fused.step()
    assert torch.equal(p, ref)


@pytest.mark.parametrize("bad", [1e-50, 1e39])
def test_a_scale_that_is_not_a_float32_number_is_refused(bad):
    """The kernel divides by float32(grad_scale): 1e-50 would be 0 and 1e39 inf there."""
    p = np.ones(4, np.float32)
    opt = adam_c.Adam([p])
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step([np.ones(4, np.float32)], grad_scale=bad)
    assert np.array_equal(p, np.ones(4, np.float32)) and not opt.state


def test_no_extra_pass_over_the_grads():
    """adam_c.torch no longer unscales with torch._foreach_div before the C call."""
    import adam_c.torch as module
    p = torch.zeros(10)
    opt = at.Adam([p])
    p.grad = torch.ones(10)
    calls = []
    original = torch._foreach_div

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    torch._foreach_div = spy
    try:
        opt.step(grad_scale=torch.tensor(3.0))
    finally:
        torch._foreach_div = original
    assert calls == [] and not hasattr(module, "_unscaled")
