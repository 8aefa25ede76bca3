"""adam_c.torch.Adam/AdamW against torch.optim.Adam/AdamW on real modules: trajectories, schedulers, GradScaler, hooks."""
import copy
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import adam_c  # noqa: E402
import adam_c.torch as at  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.optimizer import (register_optimizer_step_post_hook,  # noqa: E402
                                   register_optimizer_step_pre_hook)
from _torch_nets import RTOL, assert_close, batch, compare, make_net, train_step  # noqa: E402

STEPS = 25
DECAYS = {  # name: (weight_decay, class name, extra keyword)
    "none": (0.0, "Adam", {}),
    "l2": (0.05, "Adam", {}),
    "adamw": (0.1, "AdamW", {}),
    "adam-decoupled": (0.1, "Adam", {"decoupled_weight_decay": True}),
}
REFERENCES = {"foreach=False": {"foreach": False}, "fused=True": {"fused": True}}


def groups_of(net, lr_scale=1.0):
    return [{"params": list(net.emb.parameters()) + list(net.norm.parameters()), "lr": 1e-2 * lr_scale},
            {"params": list(net.conv.parameters()) + list(net.head.parameters()) + list(net.extra.parameters()),
             "lr": 3e-3 * lr_scale, "betas": (0.8, 0.99)}]


def make_pair(dtype, amsgrad, maximize, decay, reference, lr_scale=1.0):
    weight_decay, cls_name, extra = DECAYS[decay]
    net = make_net(dtype)
    ref_net = copy.deepcopy(net)
    common = dict(eps=1e-8, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, **extra)
    ours = getattr(at, cls_name)(groups_of(net, lr_scale), **common)
    ref = getattr(torch.optim, cls_name)(groups_of(ref_net), **common, **REFERENCES[reference])
    return net, ours, ref_net, ref


OPTIONS = [pytest.param(ams, mx, decay, id=f"{'ams' if ams else 'noams'}-{'max' if mx else 'min'}-{decay}")
           for ams, mx, decay in itertools.product([False, True], [False, True], list(DECAYS))]


@pytest.mark.parametrize("reference", list(REFERENCES))
@pytest.mark.parametrize("amsgrad,maximize,decay", OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_trajectory_matches_torch(dtype, amsgrad, maximize, decay, reference):
    net, ours, ref_net, ref = make_pair(dtype, amsgrad, maximize, decay, reference)
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5) for o in (ours, ref)]
    for k in range(STEPS):
        train_step(net, ours, k, dtype, schedules[0])
        train_step(ref_net, ref, k, dtype, schedules[1])
        if k in (0, STEPS // 2, STEPS - 1):
            compare(net, ours, ref_net, ref, RTOL[dtype], f"after step {k + 1}")
    assert ours.state[net.extra.weight]["step"].item() == STEPS - len([k for k in range(STEPS) if k % 5 == 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_trajectory_check_can_fail(dtype):
    """The tolerance notices a learning rate off by 1e-2 (float32) or 1e-7 (float64) relative."""
    net, ours, ref_net, ref = make_pair(dtype, True, False, "l2", "foreach=False",
                                        lr_scale=1.0 + (1e-2 if dtype == torch.float32 else 1e-7))
    for k in range(STEPS):
        train_step(net, ours, k, dtype)
        train_step(ref_net, ref, k, dtype)
    with pytest.raises(AssertionError):
        compare(net, ours, ref_net, ref, RTOL[dtype], "at the end")


def _schedulers(opt):
    S = torch.optim.lr_scheduler
    return {
        "LambdaLR": lambda: S.LambdaLR(opt, lambda e: 0.9 ** e),
        "MultiplicativeLR": lambda: S.MultiplicativeLR(opt, lambda e: 0.95),
        "StepLR": lambda: S.StepLR(opt, 3, 0.5),
        "MultiStepLR": lambda: S.MultiStepLR(opt, [2, 5], 0.3),
        "ConstantLR": lambda: S.ConstantLR(opt, 0.5, 4),
        "LinearLR": lambda: S.LinearLR(opt, 0.2, 1.0, 6),
        "ExponentialLR": lambda: S.ExponentialLR(opt, 0.9),
        "PolynomialLR": lambda: S.PolynomialLR(opt, 8, 2.0),
        "CosineAnnealingLR": lambda: S.CosineAnnealingLR(opt, 5, 1e-4),
        "CosineAnnealingWarmRestarts": lambda: S.CosineAnnealingWarmRestarts(opt, 3, 2),
        "CyclicLR-betas": lambda: S.CyclicLR(opt, 1e-4, 1e-2, step_size_up=3, cycle_momentum=True,
                                            base_momentum=0.8, max_momentum=0.9),
        "OneCycleLR-betas": lambda: S.OneCycleLR(opt, max_lr=[2e-2, 5e-3], total_steps=STEPS + 1,
                                                 cycle_momentum=True),
        "SequentialLR": lambda: S.SequentialLR(opt, [S.LinearLR(opt, 0.1, 1.0, 4), S.CosineAnnealingLR(opt, 8)],
                                               milestones=[4]),
        "ChainedScheduler": lambda: S.ChainedScheduler([S.ExponentialLR(opt, 0.95), S.StepLR(opt, 4, 0.5)]),
        "ReduceLROnPlateau": lambda: S.ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.5),
    }


@pytest.mark.parametrize("name", list(_schedulers(None)))
def test_every_scheduler(name):
    """Each scheduler drives adam_c exactly as torch's Adam (OneCycleLR/CyclicLR edit betas[0] every step)."""
    dtype = torch.float64
    net, ours, ref_net, ref = make_pair(dtype, False, False, "l2", "foreach=False")
    scheds = [_schedulers(o)[name]() for o in (ours, ref)]
    for k in range(STEPS):
        losses = [train_step(n, o, k, dtype) for n, o in ((net, ours), (ref_net, ref))]
        for s, loss in zip(scheds, losses):
            s.step(loss) if name == "ReduceLROnPlateau" else s.step()
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in ref.param_groups]
    assert [g["betas"] for g in ours.param_groups] == [g["betas"] for g in ref.param_groups]
    if name.endswith("-betas"):
        assert ours.param_groups[0]["betas"][0] != 0.9  # the scheduler really edits betas
    compare(net, ours, ref_net, ref, RTOL[dtype], f"with {name}")


def test_tensor_lr_and_betas_follow_a_scheduler():
    dtype = torch.float32
    net, ref_net = make_net(dtype), make_net(dtype)
    ours = at.Adam(net.parameters(), lr=torch.tensor(1e-2), betas=(torch.tensor(0.85), torch.tensor(0.995)))
    ref = torch.optim.Adam(ref_net.parameters(), lr=torch.tensor(1e-2),
                           betas=(torch.tensor(0.85), torch.tensor(0.995)), foreach=False)
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, 0.8) for o in (ours, ref)]
    for k in range(10):
        train_step(net, ours, k, dtype, scheds[0])
        train_step(ref_net, ref, k, dtype, scheds[1])
    assert isinstance(ours.param_groups[0]["lr"], torch.Tensor)
    assert ours.param_groups[0]["lr"].item() == pytest.approx(1e-2 * 0.8 ** 10)
    compare(net, ours, ref_net, ref, RTOL[dtype], "with a tensor lr")


def _scaled_run(opt_factory, inject_inf_at=(), unscale_and_clip=False, steps=8):
    net = make_net(torch.float32, seed=3)
    opt = opt_factory(net)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    grads_after_step = []
    for k in range(steps):
        tokens, images, target = batch(k, torch.float32)
        opt.zero_grad()
        loss = ((net(tokens, images) - target) ** 2).mean()
        scaler.scale(loss).backward()
        if k in inject_inf_at:
            net.head.weight.grad[0, 0] = float("inf")
        if unscale_and_clip:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.05)
        scaler.step(opt)
        grads_after_step.append((net.head.bias.grad.clone(), scaler.get_scale()))
        scaler.update()
    return net, opt, scaler, grads_after_step


@pytest.mark.parametrize("unscale_and_clip", [False, True], ids=["scaled-step", "unscale-clip-step"])
def test_grad_scaler_matches_torch_fused(unscale_and_clip):
    ours = _scaled_run(lambda n: at.Adam(n.parameters(), lr=1e-2), inject_inf_at=(3,),
                       unscale_and_clip=unscale_and_clip)
    ref = _scaled_run(lambda n: torch.optim.Adam(n.parameters(), lr=1e-2, fused=True), inject_inf_at=(3,),
                      unscale_and_clip=unscale_and_clip)
    assert ours[1]._step_supports_amp_scaling
    assert ours[2].get_scale() == ref[2].get_scale()
    compare(ours[0], ours[1], ref[0], ref[1], 2e-4, "under GradScaler")
    assert ours[1].state[ours[0].head.weight]["step"].item() == 7  # the inf step was skipped
    if not unscale_and_clip:
        # torch's fused kernel writes the unscaled grads back into .grad; adam_c unscales a temporary copy
        (ours_grad, ours_scale), (ref_grad, ref_scale) = ours[3][-1], ref[3][-1]
        assert ours_scale == ref_scale > 1
        torch.testing.assert_close(ours_grad / ours_scale, ref_grad)


def test_found_inf_skips_everything():
    net = make_net(torch.float64)
    opt = at.AdamW(net.parameters(), lr=1e-2, amsgrad=True)
    train_step(net, opt, 0, torch.float64)
    before = copy.deepcopy((list(net.parameters()), opt.state_dict()))
    tokens, images, target = batch(1, torch.float64)
    ((net(tokens, images) - target) ** 2).mean().backward()
    opt.step(found_inf=torch.tensor(1.0), grad_scale=torch.tensor(4.0))
    for p, q in zip(net.parameters(), before[0]):
        assert torch.equal(p, q)
    sd = opt.state_dict()
    for i, entry in before[1]["state"].items():
        for key, value in entry.items():
            assert torch.equal(sd["state"][i][key], value), key
    opt.step(found_inf=torch.tensor(0.0), grad_scale=torch.tensor(4.0))
    assert opt.state[net.head.weight]["step"].item() == 2


def test_grad_scale_divides_without_touching_grads():
    p, q = (nn.Parameter(torch.linspace(-1, 1, 17, dtype=torch.float64)) for _ in range(2))
    g = torch.linspace(3, -5, 17, dtype=torch.float64)
    p.grad, q.grad = g * 64.0, g.clone()
    at.Adam([p], lr=0.1).step(grad_scale=torch.tensor(64.0))
    at.Adam([q], lr=0.1).step()
    assert torch.equal(p, q)
    assert torch.equal(p.grad, g * 64.0)


def test_clip_grad_norm_then_step():
    dtype = torch.float64
    net, ours, ref_net, ref = make_pair(dtype, False, False, "adamw", "foreach=False")
    for k in range(8):
        for n, o in ((net, ours), (ref_net, ref)):
            tokens, images, target = batch(k, dtype)
            o.zero_grad()
            ((n(tokens, images) - target) ** 2).mean().backward()
            torch.nn.utils.clip_grad_norm_(n.parameters(), 0.01)
            o.step()
    compare(net, ours, ref_net, ref, RTOL[dtype], "after clipping")


def test_closure_runs_with_grad_enabled_and_returns_loss():
    net = make_net(torch.float64)
    opt = at.Adam(net.parameters())
    tokens, images, target = batch(0, torch.float64)
    seen = []

    def closure():
        seen.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = ((net(tokens, images) - target) ** 2).mean()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert seen == [True] and isinstance(loss, torch.Tensor)
    assert opt.state[net.head.weight]["step"].item() == 1


def test_torch_compiled_model():
    """A torch.compile'd model (AOT autograd; backend aot_eager, so no C++ toolchain or minutes of inductor
    compilation are needed) trains with adam_c exactly as with torch.optim.Adam."""
    try:
        import torch._dynamo  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"torch.compile unavailable: {exc}")
    dtype = torch.float64
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(9, 17), nn.GELU(), nn.LayerNorm(17), nn.Linear(17, 3)).to(dtype)
    ref_model = copy.deepcopy(base)
    model = torch.compile(base, backend="aot_eager")
    ours = at.AdamW(model.parameters(), lr=1e-2)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, foreach=False)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x = torch.randn(11, 9, generator=gen, dtype=dtype)
        for m, o in ((model, ours), (ref_model, ref)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(base.parameters(), ref_model.parameters()):
        assert_close(p, q, RTOL[dtype], "compiled model param")


def test_step_hooks_run_in_order_and_can_change_arguments():
    net = make_net(torch.float64)
    opt = at.Adam(net.parameters())
    calls = []
    loss_box = []

    def closure():
        opt.zero_grad()
        tokens, images, target = batch(0, torch.float64)
        loss = ((net(tokens, images) - target) ** 2).mean()
        loss.backward()
        loss_box.append(loss)
        return loss

    def pre(o, args, kwargs):
        calls.append(("pre", o is opt, len(args)))
        return (args[0], closure), kwargs  # a pre-hook may replace the arguments

    handles = [opt.register_step_pre_hook(pre),
               opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o is opt, len(a)))),
               register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("gpre",))),
               register_optimizer_step_post_hook(lambda o, a, k: calls.append(("gpost",)))]
    try:
        out = opt.step()
    finally:
        for h in handles:
            h.remove()
    assert calls == [("gpre",), ("pre", True, 1), ("post", True, 2), ("gpost",)]
    assert out is loss_box[0]
    calls.clear()
    opt.step(closure)
    assert calls == []  # removed hooks stay removed
    assert opt.state[net.head.weight]["step"].item() == 2


def test_state_dict_hooks():
    net = make_net(torch.float32)
    opt = at.Adam(net.parameters())
    train_step(net, opt, 0, torch.float32)
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("sd-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "note": "post"})
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load-post"))
    sd = opt.state_dict()
    assert sd["note"] == "post"
    opt.load_state_dict(sd)
    assert seen == ["sd-pre", "load-pre", "load-post"]
    train_step(net, opt, 1, torch.float32)
    assert opt.state[net.head.weight]["step"].item() == 2


def test_profiler_sees_the_step():
    net = make_net(torch.float32)
    opt = at.Adam(net.parameters())
    train_step(net, opt, 0, torch.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_step(net, opt, 1, torch.float32)
    assert any(e.name == "Optimizer.step#Adam.step" for e in prof.events())


def test_params_forms_and_names():
    net = make_net(torch.float32)
    for params in (net.parameters(), list(net.parameters()), net.named_parameters(),
                   [{"params": net.emb.parameters()}, {"params": list(net.head.parameters()), "lr": 0.1}]):
        opt = at.Adam(params)
        train_step(net, opt, 0, torch.float32)
        n_params = sum(len(g["params"]) for g in opt.param_groups)
        assert n_params in (3, 9) and len(opt.state) == n_params
    opt = at.AdamW(net.named_parameters())
    assert opt.state_dict()["param_groups"][0]["param_names"][0] == "emb.weight"


def test_params_without_grad_are_skipped_and_zero_grad_sets_none():
    a, b = nn.Parameter(torch.ones(5)), nn.Parameter(torch.ones(3))
    opt = at.Adam([a, b], lr=0.1)
    a.grad = torch.full((5,), 2.0)
    opt.step()
    assert b not in opt.state or not opt.state[b]
    assert torch.equal(b, torch.ones(3))
    b.grad = torch.ones(3)
    opt.step()
    assert opt.state[a]["step"].item() == 2 and opt.state[b]["step"].item() == 1
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.step()  # nothing has a grad: nothing changes
    assert opt.state[a]["step"].item() == 2


def test_permuted_params_and_grads_with_other_strides():
    """A permuted param, and grads whose strides differ from the param's (copied to its layout)."""
    base = torch.randn(4, 5, 3, dtype=torch.float64)
    p = nn.Parameter(base.permute(2, 0, 1).clone(memory_format=torch.preserve_format))
    q = nn.Parameter(p.detach().contiguous())
    assert not p.is_contiguous()
    opt_p, opt_q = at.Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1, foreach=False)
    gen = torch.Generator().manual_seed(0)
    for k in range(5):
        g = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
        p.grad = g.contiguous() if k % 2 else g.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        q.grad = g.clone()
        opt_p.step()
        opt_q.step()
    assert opt_p.state[p]["exp_avg"].stride() == p.stride()
    np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-12)


def test_zero_size_and_0d_params_match_torch():
    ours = [nn.Parameter(torch.zeros(0, 3)), nn.Parameter(torch.tensor(1.5)), nn.Parameter(torch.ones(5))]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    opt, ref = at.AdamW(ours, lr=0.1, amsgrad=True), torch.optim.AdamW(theirs, lr=0.1, amsgrad=True, foreach=False)
    for k in range(4):
        for params, o in ((ours, opt), (theirs, ref)):
            for i, p in enumerate(params):
                p.grad = torch.full_like(p, 0.5 - k + i)
            o.step()
    for p, q in zip(ours, theirs):
        assert_close(p, q, 2e-4, "param")
        assert opt.state[p]["step"].item() == ref.state[q]["step"].item() == 4


def test_step_bumps_param_versions_like_torch():
    """A graph that saved a param, stepped before its backward, fails as with torch.optim."""
    for cls in (at.Adam, torch.optim.Adam):
        w = nn.Parameter(torch.randn(3, 3))
        opt = cls([w])
        w.grad = torch.ones(3, 3)
        loss = (w * w).sum()
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_state_edits_and_param_data_swaps_are_seen():
    p = nn.Parameter(torch.zeros(7))
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.ones(7)
    opt.step()
    new_avg = torch.full((7,), 5.0)
    opt.state[p]["exp_avg"] = new_avg  # an entry replaced by hand
    opt.step()
    assert opt.state[p]["exp_avg"] is new_avg and new_avg[0].item() == pytest.approx(0.9 * 5 + 0.1)
    opt.state[p] = {k: v.clone() for k, v in opt.state[p].items()}  # a whole entry replaced (as ZeRO does)
    opt.step()
    assert opt.state[p]["step"].item() == 3
    p.data = torch.zeros(7)  # the param's storage replaced
    opt.step()
    assert (p.detach() != 0).all()
    q = nn.Parameter(torch.zeros(7))
    q.grad = torch.ones(7)
    opt.param_groups[0]["params"][0] = q  # a param replaced in place in its group's list
    opt.step()
    assert (q.detach() != 0).all() and opt.state[q]["step"].item() == 1


def test_param_resized_in_place_is_refused_not_overrun():
    p = nn.Parameter(torch.zeros(7))
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.ones(7)
    opt.step()
    p.data = p.data[:3]  # the same storage and data pointer, fewer elements: the plan must not step 7
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"state of params\[0\]\['exp_avg'\] has shape \(7,\), its param \(3,\)"):
        opt.step()
    assert opt.state[p]["step"].item() == 1


def test_amsgrad_switched_on_later_starts_its_max_from_zeros():
    p = nn.Parameter(torch.ones(5))
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.ones(5)
    opt.step()
    opt.param_groups[0]["amsgrad"] = True
    opt.step()
    assert torch.equal(opt.state[p]["max_exp_avg_sq"], opt.state[p]["exp_avg_sq"])


def test_steps_from_two_threads_are_serialized():
    import threading
    params = [nn.Parameter(torch.zeros(n)) for n in (3, 50_001, 7)]
    opt = at.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    threads = [threading.Thread(target=lambda: [opt.step() for _ in range(50)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [opt.state[p]["step"].item() for p in params] == [100.0] * 3


def _param(*shape, **kw):
    return nn.Parameter(torch.zeros(*shape, **kw))


@pytest.mark.parametrize("make,error,match", [
    (lambda: [_param(3), _param(2, dtype=torch.float8_e4m3fn)], TypeError,
     r"params\[1\] has dtype torch.float8_e4m3fn"),  # float16/bfloat16: tests/mixed_precision/test_torch_dropin_mixed.py
    (lambda: [_param(3, dtype=torch.complex64)], TypeError, r"params\[0\] has complex dtype"),
    (lambda: [nn.Parameter(torch.zeros(3, 4).to_sparse())], TypeError, r"params\[0\] is a torch.sparse_coo"),
    (lambda: [nn.Parameter(torch.zeros(3).expand(4, 3))], ValueError, r"params\[0\] has elements that share memory"),
    (lambda: [torch.zeros(3).numpy()], TypeError, r"params\[0\] must be a torch.Tensor"),
    (lambda: [{"params": [_param(3)]}, {"params": [_param(2, 1).expand(2, 2)]}], ValueError,
     r"param_groups\[1\]\['params'\]\[0\] has elements that share memory"),
])
def test_bad_params_are_named(make, error, match):
    with pytest.raises(error, match=match):
        at.Adam(make())


def test_params_in_two_groups_and_overlapping_params_are_refused():
    p = _param(6)
    base = torch.zeros(10)
    with pytest.raises(ValueError, match="overlap in memory"):
        at.Adam([nn.Parameter(base[:6]), nn.Parameter(base[4:])])
    with pytest.raises(ValueError, match=r"overlap in memory \(params\[0\] and params\[1\]"):
        at.Adam([nn.Parameter(base[::2]), nn.Parameter(base[4:6])])  # a non-dense param's span
    at.Adam([nn.Parameter(base[::2]), nn.Parameter(base[1::2])])  # interleaved, no element shared: accepted
    opt = at.Adam([p])
    with pytest.raises(ValueError, match=r"some parameters appear in more than one parameter group \(params\[0\] "
                                         r"and param_groups\[1\]\['params'\]\[0\] are the same tensor\)"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("kwargs,error,match", [
    ({"capturable": True}, ValueError, "capturable"),
    ({"capturable": True}, AssertionError, "If capturable=True, params and state_steps must be on supported"),
    ({"differentiable": True}, ValueError, "differentiable"),
    ({"fused": True, "foreach": True}, ValueError, r"`fused` and `foreach` cannot be `True` together. \(fused"),
    ({"fused": True, "foreach": True}, RuntimeError, "`fused` and `foreach` cannot be `True` together."),
    ({"lr": -1.0}, ValueError, "Invalid learning rate"),
    ({"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]"),
    ({"lr": torch.tensor([1e-3, 1e-3])}, ValueError, "Tensor lr must be 1-element"),
    ({"weight_decay": "0"}, TypeError, "weight_decay"),
])
def test_bad_options_are_refused(kwargs, error, match):
    """adam_c's type (TypeError/ValueError) and, where torch.optim raises another type for the input, that one
    too, with torch's message."""
    with pytest.raises(error, match=match):
        at.Adam([_param(3)], **kwargs)


def test_compat_options_accepted():
    for kwargs in ({"fused": True}, {"foreach": True}, {"foreach": False, "fused": False}):
        p = _param(3)
        opt = at.Adam([p], **kwargs)
        p.grad = torch.ones(3)
        opt.step()
        assert opt.param_groups[0]["fused"] == kwargs.get("fused")


def test_bad_grads_are_named_and_change_nothing():
    a, b = _param(4), _param(2, 3)
    opt = at.Adam([a, b])
    a.grad = torch.ones(4)
    b.grad = torch.ones(2, 3).to_sparse()
    with pytest.raises(TypeError, match=r"params\[1\].grad is a torch.sparse_coo"):
        opt.step()
    with pytest.raises(RuntimeError, match="Adam does not support sparse gradients, please consider SparseAdam"):
        opt.step()  # (torch.optim's type and message: both catch it)
    assert not opt.state.get(a) and torch.equal(a, torch.zeros(4))
    b.grad = None
    opt.step()
    assert opt.state[a]["step"].item() == 1
    opt.param_groups[0]["lr"] = float("nan")
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]"):
        opt.step()
    assert opt.state[a]["step"].item() == 1


def test_grad_sharing_memory_with_its_param_is_refused():
    a, b = _param(3), _param(5)
    opt = at.Adam([a, b])
    a.grad, b.grad = torch.ones(3), b.detach()[:]
    with pytest.raises(ValueError, match=r"grad of params\[1\] shares memory with its param"):
        opt.step()
    assert torch.equal(a, torch.zeros(3)) and not opt.state.get(a)


def test_sparse_embedding_grad_is_refused():
    emb = nn.Embedding(11, 3, sparse=True)
    opt = at.Adam(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="SparseAdam"):
        opt.step()


def test_import_adam_c_does_not_import_torch():
    import os
    import subprocess
    import sys
    code = "import sys, adam_c; assert 'torch' not in sys.modules; import adam_c.torch; assert 'torch' in sys.modules"
    here = os.path.dirname(os.path.abspath(__file__))  # not the checkout root, whose adam_c has no built _core
    subprocess.run([sys.executable, "-c", code], check=True, cwd=here, timeout=120)


def test_numpy_adam_given_tensors_points_to_adam_c_torch():
    with pytest.raises(TypeError, match="adam_c.torch"):
        adam_c.Adam([nn.Parameter(torch.zeros(3))])
