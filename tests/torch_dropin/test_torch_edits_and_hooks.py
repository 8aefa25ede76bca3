"""adam_c.torch with what torch users do around an optimizer: state swaps, step hooks, inference tensors.

State tensors' .data replaced, subclasses overriding step under torch's hooks, pre-hooks editing a keyword
closure, inference tensors, a bad step counter named by its group position."""
import copy

import pytest

import adam_c

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402
from _torch_steps import assert_same_snapshot, snapshot, stepped_torch  # noqa: E402


# ---------------------------------------------------------------- `.data =` on state tensors is noticed

@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq", "step"])
def test_state_tensor_data_replaced_is_what_the_next_step_updates(state_dtype, key):
    """`state[key].data = new` keeps the tensor object but gives it new memory: the next step must update the new
    memory, exactly as a fresh optimizer loaded with the same state does."""
    opt, p, gen = stepped_torch(state_dtype)
    entry = opt.state[p]
    if key == "step":
        entry["step"].data = torch.tensor(7.0)
    else:
        entry[key].data = entry[key].detach().clone()
    twin_p = p.detach().clone().requires_grad_()
    twin = adam_torch.Adam([twin_p], lr=1e-2, state_dtype=state_dtype)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch's load shares tensors it need not cast
    g = torch.randn(p.shape, generator=gen)
    p.grad, twin_p.grad = g, g.clone()
    opt.step()
    twin.step()
    assert torch.equal(p, twin_p)
    assert float(opt.state[p]["step"]) == float(twin.state[twin_p]["step"]) == (8.0 if key == "step" else 3.0)
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state[p][k], twin.state[twin_p][k]), k


def test_state_tensor_data_replaced_with_another_dtype_is_refused_or_followed():
    opt, p, gen = stepped_torch("float32")
    opt.state[p]["exp_avg"].data = torch.zeros(5000, dtype=torch.float64)
    p.grad = torch.randn(p.shape, generator=gen)
    before = snapshot(opt, p)
    with pytest.raises(TypeError, match="exp_avg"):
        opt.step()
    assert_same_snapshot(before, snapshot(opt, p))


# ---------------------------------------------------------------- step hooks

@pytest.mark.parametrize("kind", ["instance", "global"])
def test_subclass_overriding_step_runs_each_hook_once(kind):
    """torch's Optimizer.__init__ wraps a subclass's own step() in profile_hook_step, which runs the step
    pre/post hooks; super().step() then lands in Adam.step, whose `type(self).step is _ADAM_STEP` test is
    False, so it runs every hook a second time (and opens a second profiler range). torch.optim.Adam: once."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    class MyAdam(adam_torch.Adam):
        def step(self, closure=None):
            return super().step(closure)

    p = torch.nn.Parameter(torch.zeros(3))
    opt = MyAdam([p], lr=0.1)
    calls = []
    if kind == "instance":
        handles = [opt.register_step_pre_hook(lambda *a: calls.append("pre")),
                   opt.register_step_post_hook(lambda *a: calls.append("post"))]
    else:
        handles = [register_optimizer_step_pre_hook(lambda *a: calls.append("pre")),
                   register_optimizer_step_post_hook(lambda *a: calls.append("post"))]
    try:
        p.grad = torch.ones(3)
        opt.step()
    finally:
        for h in handles:
            h.remove()
    assert calls == ["pre", "post"]


def test_pre_hook_sees_and_can_replace_a_keyword_closure():
    """torch passes step's own (args, kwargs) to pre-hooks: opt.step(closure=c) shows up as kwargs['closure'],
    and a hook returning kwargs with another closure makes the step run that one. adam_c.torch turns the keyword
    into a positional arg before the hooks run, so the hook sees kwargs == {} and the closure it installs through
    kwargs is ignored (args[1], the old closure, wins)."""
    results = {}
    for name, cls in (("torch", torch.optim.Adam), ("adam_c", adam_torch.Adam)):
        p = torch.nn.Parameter(torch.zeros(3))
        opt = cls([p], lr=0.1)
        seen, ran = [], []

        def old():
            ran.append("old")
            p.grad = torch.ones(3)
            return 1.0

        def new():
            ran.append("new")
            p.grad = torch.ones(3)
            return 2.0

        def hook(o, args, kwargs):
            seen.append((len(args), sorted(kwargs)))
            return args, {**kwargs, "closure": new}

        opt.register_step_pre_hook(hook)
        loss = opt.step(closure=old)
        results[name] = (seen, ran, loss)
    assert results["adam_c"] == results["torch"] == ([(1, ["closure"])], ["new"], 2.0)


# ---------------------------------------------------------------- smaller divergences

def test_inference_tensor_param_is_not_written_outside_inference_mode():
    """torch refuses an in-place update of an inference tensor outside inference_mode (a RuntimeError); adam_c.torch
    refuses it by name (ValueError, the project's rule for bad input) before writing (it used to write it)."""
    with torch.inference_mode():
        q = torch.zeros(3)
    opt = adam_torch.Adam([q], lr=0.1)
    q.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"params\[0\] is an inference tensor"):
        opt.step()
    assert torch.equal(q, torch.zeros(3)) and not opt.state
    with torch.inference_mode():  # where torch allows it, the step runs
        opt.step()
    assert not torch.equal(q, torch.zeros(3))


def test_bad_step_counter_is_named_by_its_group_position():
    """README: errors name `params[3]`, or `param_groups[1]['params'][0]` where there are groups (as every other
    message of adam_c.torch does, via _param_label). The step counter check in TorchStepPlan.run names
    `params[1]` for the first param of the second group."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    opt = adam_torch.Adam([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.ones(2), torch.ones(3)
    opt.step()
    opt.state[b]["step"].fill_(-5)
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[0\]"):
        opt.step()
