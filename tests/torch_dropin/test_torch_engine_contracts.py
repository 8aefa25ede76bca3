"""adam_c.torch built and stepped as other engines build and step their optimizers (torchao, Megatron, Horovod)."""
import pytest

torch = pytest.importorskip("torch")

import adam_c.torch as at  # noqa: E402

STEPS = 4


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))


def batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(6, 5, generator=gen), torch.randn(6, 2, generator=gen)


def params_after(cls, build, step_all):
    """STEPS steps of a fresh model with optimizers made by build(cls, model) and stepped by step_all."""
    net = model()
    opts = build(cls, net)
    for step in range(STEPS):
        x, y = batch(step)
        for opt in opts:
            opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        step_all(net, opts)
    return [p.detach().clone() for p in net.parameters()]


def same_as_torch(build, step_all=lambda net, opts: [o.step() for o in opts]):
    ours = params_after(at.AdamW, build, step_all)
    theirs = params_after(torch.optim.AdamW, build, step_all)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_one_optimizer_per_param_from_a_group_dict():
    """torchao's CPUOffloadOptimizer: optimizer_class([{"params": [p], **group}], **kwargs) for each param."""
    group = {"lr": 3e-3, "weight_decay": 0.05}
    same_as_torch(lambda cls, net: [cls([{"params": [p], **group}], betas=(0.8, 0.99)) for p in net.parameters()])


def test_class_injected_and_built_from_param_groups_alone():
    """Megatron's HybridDeviceOptimizer / Horovod: YourClass(param_groups), every hyperparameter defaulted."""
    def build(cls, net):
        groups = [{"params": list(net[0].parameters())}, {"params": list(net[2].parameters()), "lr": 1e-2}]
        opt = cls(groups)
        assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-2
        return [opt]
    same_as_torch(build)


def test_grads_replaced_with_set_each_step():
    """A new grad buffer each step through p.grad.set_(...) (no cached grad pointers): the old buffer, kept alive
    and zeroed, would give other params if the step read it."""
    old_buffers = []

    def step_all(net, opts):
        for p in net.parameters():
            old = p.grad.detach()      # shares the buffer autograd filled
            p.grad.set_(p.grad * 0.5)  # the same grad object over a new buffer
            old.zero_()
            old_buffers.append(old)
        for o in opts:
            o.step()
    same_as_torch(lambda cls, net: [cls(net.parameters(), lr=5e-3)], step_all)


def test_optimizer_per_param_stepped_in_backward_hooks():
    """One optimizer per param stepped from register_post_accumulate_grad_hook (the step inside backward)."""
    def run(cls):
        net = model()
        opts = {p: cls([p], lr=4e-3) for p in net.parameters()}

        def hook(p):
            opts[p].step()
            opts[p].zero_grad()
        handles = [p.register_post_accumulate_grad_hook(hook) for p in net.parameters()]
        for step in range(STEPS):
            x, y = batch(step)
            torch.nn.functional.mse_loss(net(x), y).backward()
        for h in handles:
            h.remove()
        return [p.detach().clone() for p in net.parameters()], opts
    ours, ours_opts = run(at.AdamW)
    theirs, _ = run(torch.optim.AdamW)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(float(o.state[p]["step"]) == STEPS for p, o in ours_opts.items())
