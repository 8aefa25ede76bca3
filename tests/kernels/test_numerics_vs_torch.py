"""adam_c trajectories and state against torch.optim.Adam / AdamW (foreach=False) over many steps and every option set."""
import itertools

import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")

RTOL = {np.float32: 2e-4, np.float64: 1e-10}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
STEPS = 60
LR_CHANGE_AT = 30
SHAPES = [[(5, 7), (13,), ()], [(3, 3, 3), (0,), (31,)]]  # two groups; a 0-d and a size-0 param among them
DECAYS = {  # name: (weight_decay, class pair, extra constructor keyword)
    "none": (0.0, "Adam", {}),
    "l2": (0.05, "Adam", {}),
    "adamw": (0.1, "AdamW", {}),
    "adam-decoupled": (0.1, "Adam", {"decoupled_weight_decay": True}),
}


def assert_close(actual, expected, rtol, what):
    """Elementwise |actual - expected| <= rtol * max(|expected|, magnitude of the whole tensor)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    if actual.size == 0:
        return
    scale = float(np.max(np.abs(expected))) or 1e-300
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def make_pair(dtype, amsgrad, maximize, decay, lr_scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    init = [[np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes] for shapes in SHAPES]
    weight_decay, cls_name, extra = DECAYS[decay]
    np_params = [[a.copy() for a in group] for group in init]
    t_params = [[torch.tensor(a.copy(), requires_grad=True) for a in group] for group in init]
    group_hp = [{"lr": 1e-2}, {"lr": 3e-3, "betas": (0.8, 0.99)}]
    common = dict(eps=1e-8, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize, **extra)
    ours = getattr(adam_c, cls_name)(
        [{"params": ps, **{k: (v * lr_scale if k == "lr" else v) for k, v in hp.items()}}
         for ps, hp in zip(np_params, group_hp)], **common)
    theirs = getattr(torch.optim, cls_name)([{"params": ps, **hp} for ps, hp in zip(t_params, group_hp)],
                                            foreach=False, **common)
    return ours, theirs, [p for g in np_params for p in g], [p for g in t_params for p in g]


def step_both(ours, theirs, np_params, t_params, k, rng):
    grads = []
    for i, p in enumerate(np_params):
        if i == 1 and k % 7 == 3:
            grads.append(None)  # a param without a gradient this step: skipped by both
            continue
        grads.append(np.asarray(rng.standard_normal(p.shape) * (1 + k % 3), dtype=p.dtype))
    for g, tp in zip(grads, t_params):
        tp.grad = None if g is None else torch.from_numpy(g.copy())
    ours.step(grads)
    theirs.step()


def run_trajectory(dtype, amsgrad, maximize, decay, lr_scale=1.0, check_every=20):
    ours, theirs, np_params, t_params = make_pair(dtype, amsgrad, maximize, decay, lr_scale)
    rng = np.random.default_rng(1234)
    rtol = RTOL[dtype]
    for k in range(STEPS):
        if k == LR_CHANGE_AT:
            for opt in (ours, theirs):
                opt.param_groups[0]["lr"] = opt.param_groups[0]["lr"] * 0.5
                opt.param_groups[1]["lr"] = opt.param_groups[1]["lr"] * 2.0
        step_both(ours, theirs, np_params, t_params, k, rng)
        if (k + 1) % check_every == 0:
            compare(ours, theirs, np_params, t_params, rtol, f"after step {k + 1}")
    return ours, theirs, np_params, t_params


def compare(ours, theirs, np_params, t_params, rtol, when):
    for i, (p, tp) in enumerate(zip(np_params, t_params)):
        assert_close(p, tp.detach().numpy(), rtol, f"param {i} {when}")
    sd = ours.state_dict()
    for i, tp in enumerate(t_params):
        tstate = theirs.state[tp]
        assert sd["state"][i]["step"] == int(tstate["step"].item()), f"step of param {i} {when}"
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in tstate:
                assert key in sd["state"][i], f"{key} missing for param {i}"
                assert_close(sd["state"][i][key], tstate[key].numpy(), rtol, f"{key} of param {i} {when}")
            else:
                assert key not in sd["state"][i], f"{key} present for param {i} but not in torch's state"


OPTIONS = [pytest.param(ams, mx, decay, id=f"{'ams' if ams else 'noams'}-{'max' if mx else 'min'}-{decay}")
           for ams, mx, decay in itertools.product([False, True], [False, True], list(DECAYS))]


@pytest.mark.parametrize("amsgrad,maximize,decay", OPTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_trajectory_matches_torch(dtype, amsgrad, maximize, decay):
    run_trajectory(dtype, amsgrad, maximize, decay)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_parity_check_can_fail(dtype):
    """The tolerance is tight enough to notice a learning rate off by 1e-2 (f32) or 1e-7 (f64) relative.
    (Observed agreement is far tighter: about 2e-7 relative in float32 and 1e-15 in float64.)"""
    with pytest.raises(AssertionError):
        run_trajectory(dtype, True, False, "l2", lr_scale=1.0 + (1e-2 if dtype == np.float32 else 1e-7),
                       check_every=STEPS)


@pytest.mark.parametrize("cls_name", ["Adam", "AdamW"])
def test_torch_state_dict_loads_into_adam_c(cls_name):
    """A torch optimizer's state_dict (tensors, float step tensors, torch's extra group keys) resumes in adam_c."""
    decay = "adamw" if cls_name == "AdamW" else "l2"
    ours, theirs, np_params, t_params = make_pair(np.float64, True, False, decay)
    rng = np.random.default_rng(5)
    for k in range(10):  # train torch only; adam_c then picks up its state
        grads = [rng.standard_normal(p.shape) for p in np_params]
        grads[1] = None if k % 4 == 0 else grads[1]
        for g, tp in zip(grads, t_params):
            tp.grad = None if g is None else torch.from_numpy(g)
        theirs.step()
    for p, tp in zip(np_params, t_params):
        p[...] = tp.detach().numpy()
    ours.load_state_dict(theirs.state_dict())
    compare(ours, theirs, np_params, t_params, 0.0, "right after loading")  # copied exactly
    for k in range(10, 30):
        step_both(ours, theirs, np_params, t_params, k, rng)
    compare(ours, theirs, np_params, t_params, RTOL[np.float64], "after resuming")
