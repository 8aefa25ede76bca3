"""_torch_steps.py: test helper: adam_c.torch optimizers stepped a few times, and snapshots of their state."""
import pytest

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402


def stepped_torch(state_dtype="float32", shape=(5000,), steps=2, **kw):
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(shape, generator=gen).requires_grad_()
    opt = adam_torch.Adam([p], lr=1e-2, state_dtype=state_dtype, **kw)
    for _ in range(steps):
        p.grad = torch.randn(shape, generator=gen)
        opt.step()
    return opt, p, gen


def snapshot(opt, p):
    entry = opt.state[p]
    return (p.detach().clone(), {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                 for k, v in entry.items()})


def assert_same_snapshot(a, b):
    assert torch.equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        x, y = a[1][key], b[1][key]
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), key
        else:
            assert x == y, key


def stepped_fmt(shape=(5000,), state_dtype="float32", dtype=torch.float32, fmt=None, steps=2, **kw):
    """stepped_torch with a param dtype and memory format."""
    gen = torch.Generator().manual_seed(0)
    make = (lambda t: t) if fmt is None else (lambda t: t.to(memory_format=fmt))
    p = make(torch.randn(shape, generator=gen).to(dtype)).requires_grad_()
    opt = adam_torch.Adam([p], lr=1e-2, state_dtype=state_dtype, **kw)
    for _ in range(steps):
        p.grad = make(torch.randn(shape, generator=gen).to(dtype))
        opt.step()
    return opt, p, gen
