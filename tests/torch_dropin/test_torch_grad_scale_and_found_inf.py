"""adam_c.torch's grad_scale and found_inf: what GradScaler passes works, the rest is refused by name.

Any one-element shape, bool flags and numbers are accepted, and copies of the optimizer keep GradScaler support."""
import copy
import pickle

import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")
from _torch_steps import assert_same_snapshot, snapshot, stepped_fmt, stepped_torch  # noqa: E402

# ---------------------------------------------------------------- grad_scale and found_inf

BAD_SCALES = [0.0, -2.0, float("nan"), float("inf")]


@pytest.mark.parametrize("value", BAD_SCALES)
def test_torch_grad_scale_must_be_finite_and_positive(value):
    opt, p, gen = stepped_torch()
    p.grad = torch.randn(p.shape, generator=gen)
    before = snapshot(opt, p)
    with pytest.raises(ValueError, match="grad_scale"):
        opt.step(grad_scale=torch.tensor(value))
    assert_same_snapshot(before, snapshot(opt, p))


@pytest.mark.parametrize("make", [lambda: torch.ones(2), lambda: torch.ones((), device="meta"),
                                  lambda: torch.ones(1).to_sparse()])
@pytest.mark.parametrize("front", ["numpy", "torch"])
def test_grad_scale_tensor_of_the_wrong_kind_names_grad_scale(make, front):
    if front == "numpy":
        p = np.ones(50, np.float32)
        opt = adam_c.Adam([p])
        with pytest.raises(TypeError, match="grad_scale"):
            opt.step([np.ones(50, np.float32)], grad_scale=make())
        assert np.all(p == 1.0) and not opt.state
        return
    opt, p, gen = stepped_torch()
    p.grad = torch.randn(p.shape, generator=gen)
    before = snapshot(opt, p)
    with pytest.raises(TypeError, match="grad_scale"):
        opt.step(grad_scale=make())
    assert_same_snapshot(before, snapshot(opt, p))


def test_torch_grad_scale_of_any_one_element_shape_divides_the_grads():
    a, pa, _ = stepped_torch(steps=1)
    b, pb, _ = stepped_torch(steps=1)
    g = torch.randn(pa.shape)
    pa.grad, pb.grad = g * 4.0, g.clone()
    a.step(grad_scale=torch.full((1, 1), 4.0))
    b.step()
    assert torch.equal(pa, pb)


@pytest.mark.parametrize("found_inf", [torch.ones(2), torch.zeros((), device="meta"), "yes", [1.0]])
def test_torch_found_inf_of_the_wrong_kind_names_found_inf(found_inf):
    opt, p, gen = stepped_torch()
    p.grad = torch.randn(p.shape, generator=gen)
    before = snapshot(opt, p)
    with pytest.raises(TypeError, match="found_inf"):
        opt.step(found_inf=found_inf)
    assert_same_snapshot(before, snapshot(opt, p))


def test_torch_found_inf_one_element_tensors_and_numbers_still_work():
    for found, skipped in ((torch.ones(1), True), (torch.zeros((1, 1)), False), (1.0, True), (0, False)):
        opt, p, gen = stepped_torch()
        p.grad = torch.randn(p.shape, generator=gen)
        before = snapshot(opt, p)
        opt.step(found_inf=found)
        assert opt.last_step_skipped is skipped
        assert (float(opt.state[p]["step"]) == 2.0) is skipped
        if skipped:
            assert_same_snapshot(before, snapshot(opt, p))


# ---------------------------------------------------------------- copies keep GradScaler support

@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_still_take_grad_scale_from_gradscaler(how):
    opt, p, _ = stepped_torch()
    other = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert getattr(other, "_step_supports_amp_scaling", False) is True


def test_grad_scale_of_shape_1_is_accepted_like_other_one_element_shapes():
    """GradScaler-style shape (1,) scales: torch._foreach_div takes only 0-d scale tensors (was a RuntimeError)."""
    a, pa, _ = stepped_fmt(steps=1)
    b, pb, _ = stepped_fmt(steps=1)
    g = torch.randn(pa.shape)
    pa.grad, pb.grad = g * 4.0, g.clone()
    a.step(grad_scale=torch.tensor([4.0]))
    b.step()
    assert torch.equal(pa, pb)


@pytest.mark.parametrize("found_inf, skipped", [(torch.tensor(True), True), (torch.tensor([False]), False)])
def test_torch_found_inf_bool_tensor_is_a_flag(found_inf, skipped):
    """A bool tensor found_inf (e.g. ~torch.isfinite(loss)) is a flag like True or torch.tensor(1.0)."""
    opt, p, gen = stepped_fmt()
    p.grad = torch.randn(p.shape, generator=gen)
    opt.step(found_inf=found_inf)
    assert opt.last_step_skipped is skipped
