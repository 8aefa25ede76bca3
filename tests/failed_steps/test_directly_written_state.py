"""State written directly into adam_c.torch's opt.state: a failed step leaves it as written.

float32 or float16 tensors, a number step, another compressed format; once the state is whole, a step converts
it as a loaded checkpoint would be."""
import pytest

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402
from _torch_steps import assert_same_snapshot, snapshot, stepped_fmt  # noqa: E402


# ---------------------------------------------------------------- a failed step converts nothing

@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_failed_step_leaves_directly_written_float32_state_as_written(state_dtype):
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(5000, generator=gen).requires_grad_()
    q = torch.randn(5000, generator=gen).requires_grad_()
    opt = adam_torch.Adam([p, q], lr=1e-2, state_dtype=state_dtype)
    m, v = torch.randn(5000, generator=gen), torch.rand(5000, generator=gen)
    opt.state[p] = {"step": torch.tensor(3.0), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    opt.state[q] = {"step": torch.tensor(3.0), "exp_avg": m.clone()}  # planned after p's state: the step fails
    p.grad, q.grad = torch.randn(5000, generator=gen), torch.randn(5000, generator=gen)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.step()
    entry = opt.state[p]
    assert entry.keys() == {"step", "exp_avg", "exp_avg_sq"}
    assert entry["exp_avg"].dtype == torch.float32 and torch.equal(entry["exp_avg"], m)
    assert torch.equal(entry["exp_avg_sq"], v)
    # and once q's state is whole, the step converts and runs
    opt.state[q]["exp_avg_sq"] = v.clone()
    opt.step()
    assert opt.state[p]["state_dtype"] == state_dtype


def test_failed_step_leaves_directly_written_float16_state_as_written():
    """Lossless normalizations of directly written state (torch.optim's float16 state of a float16 param made
    float32, a number step made a tensor) are undone by a failed step too."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(5000, generator=gen).half().requires_grad_()
    q = torch.randn(5000, generator=gen).half().requires_grad_()
    opt = adam_torch.Adam([p, q], lr=1e-2)
    opt.state[p] = {"step": torch.tensor(3.0), "exp_avg": torch.randn(5000).half(),
                    "exp_avg_sq": torch.rand(5000).half()}
    opt.state[q] = {"step": torch.tensor(3.0), "exp_avg": torch.randn(5000).half()}  # no exp_avg_sq: step fails
    p.grad, q.grad = torch.randn(5000).half(), torch.randn(5000).half()
    before = snapshot(opt, p)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.step()
    assert_same_snapshot(before, snapshot(opt, p))


def test_failed_step_leaves_a_number_step_as_written():
    p = torch.randn(5000).requires_grad_()
    q = torch.randn(5000).requires_grad_()
    opt = adam_torch.Adam([p, q], lr=1e-2)
    opt.state[p] = {"step": 3, "exp_avg": torch.randn(5000), "exp_avg_sq": torch.rand(5000)}
    opt.state[q] = {"step": torch.tensor(3.0), "exp_avg": torch.randn(5000)}
    p.grad, q.grad = torch.randn(5000), torch.randn(5000)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.step()
    assert opt.state[p]["step"] == 3 and not isinstance(opt.state[p]["step"], torch.Tensor)


@pytest.mark.parametrize("written, state_dtype", [("bfloat16", "int8"), ("int8", "bfloat16")])
def test_amsgrad_step_converts_directly_written_state_of_another_compressed_format(written, state_dtype):
    """With amsgrad, the zero max_exp_avg_sq is added after the entry is converted from its own state_dtype (added
    before, it was in the wrong format and valid state was refused)."""
    src, p, gen = stepped_fmt(state_dtype=written)
    entry = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in src.state[p].items()}
    q = p.detach().clone().requires_grad_()
    opt = adam_torch.Adam([q], lr=1e-2, state_dtype=state_dtype, amsgrad=True)
    opt.state[q] = entry
    q.grad = torch.randn(q.shape, generator=gen)
    opt.step()
    assert opt.state[q]["state_dtype"] == state_dtype and "max_exp_avg_sq" in opt.state[q]
