"""Checkpoints between adam_c.torch, torch.optim and the NumPy adam_c.Adam, in every direction, continuing exactly."""
import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import adam_c  # noqa: E402
import adam_c.torch as at  # noqa: E402
from _torch_nets import RTOL, batch, compare, make_net, train_step  # noqa: E402

CASES = [pytest.param(cls, dtype, ams, id=f"{cls}-{str(dtype)[6:]}-{'ams' if ams else 'noams'}")
         for cls in ("Adam", "AdamW") for dtype in (torch.float32, torch.float64) for ams in (False, True)]


def pair(cls, dtype, amsgrad, ref_kwargs=None):
    net = make_net(dtype)
    ref_net = copy.deepcopy(net)
    kw = dict(lr=5e-3, amsgrad=amsgrad, weight_decay=0.02)
    ours = getattr(at, cls)([{"params": list(net.emb.parameters()) + list(net.norm.parameters())},
                             {"params": [p for n, p in net.named_parameters() if not n.startswith(("emb", "norm"))],
                              "betas": (0.8, 0.99)}], **kw)
    ref = getattr(torch.optim, cls)([{"params": list(ref_net.emb.parameters()) + list(ref_net.norm.parameters())},
                                     {"params": [p for n, p in ref_net.named_parameters()
                                                 if not n.startswith(("emb", "norm"))], "betas": (0.8, 0.99)}],
                                    **kw, **(ref_kwargs or {"foreach": False}))
    return net, ours, ref_net, ref


def roundtrip(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("cls,dtype,amsgrad", CASES)
def test_state_dict_layout_is_torchs(cls, dtype, amsgrad):
    net, ours, ref_net, ref = pair(cls, dtype, amsgrad)
    for k in range(3):
        train_step(net, ours, k, dtype)
        train_step(ref_net, ref, k, dtype)
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert list(mine) == list(theirs)
    for g_mine, g_theirs in zip(mine["param_groups"], theirs["param_groups"]):
        assert list(g_mine) == list(g_theirs)  # the same keys in the same order
        flags = ("foreach", "fused")  # the reference was built with foreach=False
        assert {k: v for k, v in g_mine.items() if k not in flags} == {k: v for k, v in g_theirs.items()
                                                                         if k not in flags}
        assert g_mine["foreach"] is None and g_mine["fused"] is None
    assert list(mine["state"]) == list(theirs["state"])
    for i, entry in theirs["state"].items():
        assert list(mine["state"][i]) == list(entry)
        for key, value in entry.items():
            ours_value = mine["state"][i][key]
            assert (ours_value.dtype, ours_value.shape, ours_value.stride()) == (value.dtype, value.shape,
                                                                                 value.stride()), key
    assert mine["state"][0]["step"].dtype == torch.float32 and mine["state"][0]["step"].dim() == 0


@pytest.mark.parametrize("cls,dtype,amsgrad", CASES)
@pytest.mark.parametrize("direction", ["torch-loads-ours", "ours-loads-torch"])
def test_checkpoints_continue_the_same_trajectory(cls, dtype, amsgrad, direction):
    """Train one side, save (torch.save, torch.load(weights_only=True)), load into the other, continue both."""
    net, ours, ref_net, ref = pair(cls, dtype, amsgrad, {"fused": True} if dtype == torch.float32 else None)
    source_net, source, target_net, target = ((net, ours, ref_net, ref) if direction == "torch-loads-ours"
                                              else (ref_net, ref, net, ours))
    for k in range(6):
        train_step(source_net, source, k, dtype)
    target_net.load_state_dict(source_net.state_dict())
    target.load_state_dict(roundtrip(source.state_dict()))
    compare(net, ours, ref_net, ref, 0.0, "right after loading")  # copied exactly
    for k in range(6, 14):
        train_step(source_net, source, k, dtype)
        train_step(target_net, target, k, dtype)
    compare(net, ours, ref_net, ref, RTOL[dtype], "after resuming")


def test_float64_step_tensors_and_number_steps_load():
    """torch keeps steps in float64 when that is the default dtype, and very old checkpoints as numbers."""
    net, ours, ref_net, ref = pair("Adam", torch.float64, False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for k in range(4):
            train_step(ref_net, ref, k, torch.float64)
    finally:
        torch.set_default_dtype(previous)
    sd = copy.deepcopy(ref.state_dict())  # state_dict() shares torch's per-param dicts
    assert sd["state"][0]["step"].dtype == torch.float64
    sd["state"][1]["step"] = 4  # a plain number
    net.load_state_dict(ref_net.state_dict())
    ours.load_state_dict(sd)
    for k in range(4, 8):
        train_step(net, ours, k, torch.float64)
        train_step(ref_net, ref, k, torch.float64)
    compare(net, ours, ref_net, ref, RTOL[torch.float64], "after resuming")


def test_copied_optimizer_is_independent():
    net = make_net(torch.float32)
    opt = at.Adam(net.parameters())
    train_step(net, opt, 0, torch.float32)
    clone = copy.deepcopy(opt)
    assert clone._plan is None and type(clone.state).__name__ == "_State"
    assert clone.state_dict()["state"][0]["step"].item() == 1


# ---------------------------------------------------------------- the NumPy optimizer and torch

def numpy_setup(dtype=np.float64, amsgrad=True, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(5, 7), (13,), (), (3, 1, 5)]
    arrays = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]
    grads = [[np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes] for _ in range(16)]
    groups = lambda ps: [{"params": ps[:2], "lr": 1e-2}, {"params": ps[2:], "lr": 3e-3, "betas": (0.8, 0.99)}]
    return arrays, grads, groups


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_numpy_optimizer_continues_in_torch_and_back(dtype, cls):
    arrays, grads, groups = numpy_setup(dtype)
    np_opt = getattr(adam_c, cls)(groups(arrays), amsgrad=True, weight_decay=0.03)
    for g in grads[:5]:
        np_opt.step(g)
    # NumPy -> torch (adam_c.torch and torch.optim), through torch.save/torch.load(weights_only=True)
    converted = roundtrip(adam_c.to_torch_state_dict(np_opt.state_dict()))
    assert converted["state"][0]["step"].dtype == torch.float32
    t_params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    r_params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    t_opt = getattr(at, cls)(groups(t_params), amsgrad=True, weight_decay=0.03)
    r_opt = getattr(torch.optim, cls)(groups(r_params), amsgrad=True, weight_decay=0.03, foreach=False)
    t_opt.load_state_dict(converted)
    r_opt.load_state_dict(copy.deepcopy(converted))
    for g in grads[5:10]:
        np_opt.step(g)
        for params, opt in ((t_params, t_opt), (r_params, r_opt)):
            for p, gi in zip(params, g):
                p.grad = torch.from_numpy(gi.copy())
            opt.step()
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for a, p, q in zip(arrays, t_params, r_params):
        np.testing.assert_array_equal(p.detach().numpy(), a)  # the same engine: bit-identical
        np.testing.assert_allclose(q.detach().numpy(), a, rtol=rtol, atol=rtol)
    # torch -> NumPy
    back = adam_c.from_torch_state_dict(t_opt.state_dict())
    assert isinstance(back["state"][0]["step"], int) and isinstance(back["state"][0]["exp_avg"], np.ndarray)
    assert "fused" not in back["param_groups"][0]
    np_copy = getattr(adam_c, cls)(groups([p.detach().numpy().copy() for p in t_params]), amsgrad=True,
                                   weight_decay=0.03)
    np_copy.load_state_dict(back)
    for g in grads[10:]:
        np_opt.step(g)
        np_copy.step([gi.copy() for gi in g])
    for a, b in zip(arrays, np_copy._params):
        np.testing.assert_array_equal(a, b)


def test_channels_last_param_takes_a_contiguous_checkpoint():
    """A checkpoint from the NumPy optimizer is C-ordered; a channels_last param gets its state in its layout."""
    net, ref_net = make_net(torch.float64), make_net(torch.float64)
    ours = at.Adam(net.parameters(), lr=1e-2)
    ref = torch.optim.Adam(ref_net.parameters(), lr=1e-2, foreach=False)
    for k in range(3):
        train_step(ref_net, ref, k, torch.float64)
    plain = adam_c.to_torch_state_dict(adam_c.from_torch_state_dict(ref.state_dict()))
    conv_index = [n for n, _ in net.named_parameters()].index("conv.weight")
    assert plain["state"][conv_index]["exp_avg"].is_contiguous()
    net.load_state_dict(ref_net.state_dict())
    ours.load_state_dict(plain)
    for k in range(3, 7):
        train_step(net, ours, k, torch.float64)
        train_step(ref_net, ref, k, torch.float64)
    assert ours.state[net.conv.weight]["exp_avg"].stride() == net.conv.weight.stride()
    compare(net, ours, ref_net, ref, RTOL[torch.float64], "after resuming")


def test_converters_refuse_malformed_input():
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        adam_c.to_torch_state_dict([])
    with pytest.raises(ValueError, match="missing the key 'param_groups'"):
        adam_c.from_torch_state_dict({"state": {}})
    with pytest.raises(ValueError, match="above 2\\*\\*24"):
        adam_c.to_torch_state_dict({"state": {0: {"step": 2 ** 24 + 1, "exp_avg": np.zeros(2),
                                                  "exp_avg_sq": np.zeros(2)}}, "param_groups": [{"params": [0]}]})
