"""Checkpoint conversions of unusual state between adam_c.Adam, adam_c.torch and torch.optim.

Channels_last and Fortran-ordered int8 codes, master weights and EMA, state reshaped in place, missing moments,
odd tensors, and the step limit."""
import copy

import numpy as np
import pytest

import adam_c
from adam_c import _compressed
from adam_c._torch_checkpoint import from_torch_state_dict, to_torch_state_dict

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402
from _torch_steps import stepped_fmt, stepped_torch  # noqa: E402

ALLOWED = (TypeError, ValueError)


# ---------------------------------------------------------------- channels_last int8 into adam_c.Adam

def channels_last_int8():
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(3, 37, 9, 7, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
    opt = adam_torch.Adam([p], lr=1e-2, state_dtype="int8", amsgrad=True)
    for _ in range(3):
        p.grad = torch.randn(p.shape, generator=gen).to(memory_format=torch.channels_last)
        opt.step()
    return opt, p


@pytest.mark.parametrize("route", ["direct", "from_torch_state_dict", "torch_save"])
def test_channels_last_int8_checkpoint_decodes_right_in_the_numpy_optimizer(route, tmp_path):
    topt, p = channels_last_int8()
    sd = topt.state_dict()
    if route == "from_torch_state_dict":
        sd = from_torch_state_dict(sd)
    elif route == "torch_save":
        torch.save(sd, tmp_path / "ckpt.pt")
        sd = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    param = p.detach().contiguous().numpy().copy()
    nopt = adam_c.Adam([param], lr=1e-2, state_dtype="int8", amsgrad=True)
    nopt.load_state_dict(sd)
    decoded = topt.state_float32()[0]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        values = decoded[key].contiguous().numpy()
        codes, absmax = _compressed.from_float32("int8", key, values)  # C-order blocks of the same values
        assert nopt.state[0][key].tobytes() == codes.tobytes(), key
        assert nopt.state[0][key + "_absmax"].tobytes() == absmax.tobytes(), key


def test_channels_last_int8_into_float32_numpy_state_is_the_decoded_values():
    topt, p = channels_last_int8()
    nopt = adam_c.Adam([p.detach().contiguous().numpy().copy()], lr=1e-2, amsgrad=True)
    nopt.load_state_dict(topt.state_dict())
    decoded = topt.state_float32()[0]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_array_equal(nopt.state[0][key], decoded[key].contiguous().numpy())


# ---------------------------------------------------------------- master and EMA through the converters

def test_to_and_from_torch_state_dict_keep_master_and_ema():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(300).astype(np.float32)
    opt = adam_c.Adam([p], lr=1e-2, ema_decay=0.9)
    for _ in range(2):
        opt.step([rng.standard_normal(300).astype(np.float32)])
    sd = opt.state_dict()
    assert "ema" in sd["state"][0]
    tsd = to_torch_state_dict(sd)
    assert isinstance(tsd["state"][0]["ema"], torch.Tensor)
    np.testing.assert_array_equal(tsd["state"][0]["ema"].numpy(), sd["state"][0]["ema"])
    back = from_torch_state_dict(tsd)
    np.testing.assert_array_equal(back["state"][0]["ema"], sd["state"][0]["ema"])
    # the torch drop-in restores the same EMA
    tp = torch.from_numpy(p.copy()).requires_grad_()
    topt = adam_torch.Adam([tp], lr=1e-2, ema_decay=0.9)
    topt.load_state_dict(tsd)
    np.testing.assert_array_equal(topt.state[tp]["ema"].numpy(), sd["state"][0]["ema"])


def test_torch_master_survives_the_round_trip_through_numpy():
    ml_dtypes = pytest.importorskip("ml_dtypes")  # noqa: F841
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(300, generator=gen).to(torch.bfloat16).requires_grad_()
    opt = adam_torch.Adam([p], lr=1e-2, master_weights=True)
    for _ in range(2):
        p.grad = torch.randn(300, generator=gen).to(torch.bfloat16)
        opt.step()
    master = opt.state[p]["master"].clone()
    back = to_torch_state_dict(from_torch_state_dict(opt.state_dict()))
    assert torch.equal(back["state"][0]["master"], master)


# ---------------------------------------------------------------- odd tensors in compressed checkpoints

@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_absmax"])
@pytest.mark.parametrize("make", ["meta", "sparse"])
@pytest.mark.parametrize("front", ["numpy", "torch"])
def test_compressed_checkpoint_with_odd_tensor_names_the_entry(key, make, front):
    topt, p, _ = stepped_torch("int8")
    sd = topt.state_dict()
    value = sd["state"][0][key]
    sd["state"][0][key] = value.to("meta") if make == "meta" else value.to_sparse()
    if front == "numpy":
        opt = adam_c.Adam([p.detach().numpy().copy()], lr=1e-2, state_dtype="int8")
        opt.step([np.ones(5000, np.float32)])
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ALLOWED, match=key):
            opt.load_state_dict(sd)
        after = opt.state_dict()
        np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])
        return
    q = p.detach().clone().requires_grad_()
    opt = adam_torch.Adam([q], lr=1e-2, state_dtype="int8")
    with pytest.raises(ALLOWED, match=key):
        opt.load_state_dict(sd)
    assert not opt.state


# ---------------------------------------------------------------- compressed entries missing a moment

@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("missing", ["exp_avg", "exp_avg_sq"])
def test_torch_compressed_entry_missing_a_moment_is_refused_at_load(state_dtype, missing):
    topt, p, _ = stepped_torch(state_dtype)
    sd = topt.state_dict()
    del sd["state"][0][missing]
    sd["state"][0].pop(missing + "_absmax", None)
    q = p.detach().clone().requires_grad_()
    opt = adam_torch.Adam([q], lr=1e-2, state_dtype=state_dtype)
    with pytest.raises(ValueError, match=missing):
        opt.load_state_dict(sd)
    assert not opt.state


# ---------------------------------------------------------------- NumPy state reshaped in place

@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
def test_numpy_state_reshaped_in_place_still_round_trips(state_dtype):
    rng = np.random.default_rng(3)
    p = rng.standard_normal((64, 80)).astype(np.float32)
    opt = adam_c.Adam([p], lr=1e-2, state_dtype=state_dtype)
    opt.step([rng.standard_normal((64, 80)).astype(np.float32)])
    opt.state[0]["exp_avg"].shape = (80, 64)  # same memory, same size: the kernel does not care
    opt.step([rng.standard_normal((64, 80)).astype(np.float32)])
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].shape == (64, 80)
    twin = adam_c.Adam([p.copy()], lr=1e-2, state_dtype=state_dtype)
    twin.load_state_dict(sd)
    np.testing.assert_array_equal(twin.state[0]["exp_avg"], opt.state[0]["exp_avg"].reshape(64, 80))


def test_from_torch_state_dict_keeps_channels_last_int8_values():
    """from_torch_state_dict keeps channels_last int8 codes in their memory order (it used to re-quantize them into
    C-order blocks), so loading its output gives exactly the values of the torch checkpoint."""
    topt, p, _ = stepped_fmt((3, 37, 9, 7), "int8", fmt=torch.channels_last, steps=3)
    decoded = topt.state_float32()[0]
    param = p.detach().contiguous().numpy().copy()
    nopt = adam_c.Adam([param.copy()], lr=1e-2)
    nopt.load_state_dict(from_torch_state_dict(topt.state_dict()))
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(nopt.state[0][key], decoded[key].contiguous().numpy())


def _numpy_int8_checkpoint_fortran():
    rng = np.random.default_rng(0)
    p = rng.standard_normal((64, 80)).astype(np.float32)
    opt = adam_c.Adam([p], lr=1e-2, state_dtype="int8")
    for _ in range(2):
        opt.step([rng.standard_normal((64, 80)).astype(np.float32)])
    sd = opt.state_dict()
    entry = sd["state"][0]
    for key in ("exp_avg", "exp_avg_sq"):
        entry[key] = np.asfortranarray(entry[key])  # same values, another memory order
    return p, sd


def _torch_int8_checkpoint_as_numpy_views():
    topt, p, _ = stepped_fmt((3, 37, 9, 7), "int8", fmt=torch.channels_last, steps=3)
    sd = topt.state_dict()
    sd["state"][0] = {k: (v.numpy() if isinstance(v, torch.Tensor) and k != "step" else v)
                      for k, v in sd["state"][0].items()}
    return p.detach().contiguous().numpy().copy(), sd


@pytest.mark.parametrize("make", [_numpy_int8_checkpoint_fortran, _torch_int8_checkpoint_as_numpy_views])
def test_both_front_ends_read_non_c_ordered_numpy_codes_alike(make):
    """One rule in both front-ends: int8 codes' blocks run in the codes' memory order, NumPy arrays too (adam_c.torch
    used to make them C-contiguous first, so the same dict loaded to different state)."""
    param, sd = make()
    nopt = adam_c.Adam([param.copy()], lr=1e-2)
    nopt.load_state_dict(copy.deepcopy(sd))
    t = torch.from_numpy(param.copy()).requires_grad_()
    topt = adam_torch.Adam([t], lr=1e-2)
    topt.load_state_dict(copy.deepcopy(sd))
    for key in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(nopt.state[0][key], topt.state[t][key].numpy(), err_msg=key)


def test_numpy_block_scales_reshaped_in_place_still_round_trip():
    """Block scales reshaped in place (the step does not mind) are shown and saved 1-D, so the checkpoint loads."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal((64, 80)).astype(np.float32)
    opt = adam_c.Adam([p], lr=1e-2, state_dtype="int8")
    opt.step([rng.standard_normal((64, 80)).astype(np.float32)])
    scales = opt.state[0]["exp_avg_absmax"]
    scales.shape = (scales.size, 1)
    opt.step([rng.standard_normal((64, 80)).astype(np.float32)])
    sd = opt.state_dict()
    twin = adam_c.Adam([p.copy()], lr=1e-2, state_dtype="int8")
    twin.load_state_dict(sd)
    np.testing.assert_array_equal(twin.state[0]["exp_avg_absmax"], scales.reshape(-1))


def test_torch_float32_entry_missing_a_moment_is_refused_at_load():
    """A float32 (torch.optim format) entry without exp_avg_sq is refused at load, as adam_c.Adam does (it used to
    load, and then every step failed)."""
    topt, p, _ = stepped_fmt()
    sd = topt.state_dict()
    del sd["state"][0]["exp_avg_sq"]
    q = p.detach().clone().requires_grad_()
    opt = adam_torch.Adam([q], lr=1e-2)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        opt.load_state_dict(sd)
    assert not opt.state


def _steps(opt, params, n, seed=0):
    for t in range(n):
        g = torch.Generator().manual_seed(seed + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()


# ---------------------------------------------------------------- checkpoints through torch.optim.Adam

@pytest.mark.parametrize("state_dtype", ["bfloat16", "float32"])
def test_bfloat16_state_checkpoint_comes_back_after_torch_optim_loaded_it(state_dtype):
    """torch.optim's load_state_dict rebuilds every iterable state value as type(value)(generator), so our
    per-param "state_dtype" string comes back as "<generator object ...>"; the checkpoint torch then saves loads
    into adam_c.torch with bfloat16 or float32 state (torch only cast the bfloat16 state to float32, exactly)."""
    p = torch.nn.Parameter(torch.randn(5000))
    ours = adam_torch.Adam([p], lr=1e-2, state_dtype="bfloat16")
    _steps(ours, [p], 3)
    theirs = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2)
    theirs.load_state_dict(ours.state_dict())
    r = torch.nn.Parameter(p.detach().clone())
    back = adam_torch.Adam([r], lr=1e-2, state_dtype=state_dtype)
    back.load_state_dict(theirs.state_dict())
    for key in ("exp_avg", "exp_avg_sq"):
        want = ours.state[p][key] if state_dtype == "bfloat16" else ours.state[p][key].float()
        assert torch.equal(back.state[r][key], want)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_master_checkpoint_comes_back_after_torch_optim_loaded_it(dtype):
    """README: master/EMA are saved and "a torch.optim.Adam checkpoint ... starts them from the params", and
    bfloat16 state that torch keeps in the param dtype "loads here, upcast exactly". But after torch.optim.Adam
    loads our master_weights checkpoint it holds state['master'] cast to the param dtype (torch casts every
    floating tensor), and loading that back is a TypeError ('master ... has dtype torch.bfloat16; ... are
    torch.float32') instead of an exact upcast (the cast master is the param's own bits). (float16: the cast
    also flushed the moments, refused: test_checkpoint_detection.)"""
    p = torch.nn.Parameter(torch.randn(64).to(dtype))
    ours = adam_torch.Adam([p], lr=1e-2, master_weights=True, ema_decay=0.9)
    _steps(ours, [p], 3)
    theirs = torch.optim.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2)
    theirs.load_state_dict(ours.state_dict())
    r = torch.nn.Parameter(p.detach().clone())
    back = adam_torch.Adam([r], lr=1e-2, master_weights=True, ema_decay=0.9)
    back.load_state_dict(theirs.state_dict())
    assert back.state[r]["master"].dtype == torch.float32
    assert torch.equal(back.state[r]["master"], r.detach().float())


def test_step_that_would_reach_2_62_is_refused_and_the_checkpoint_reloads():
    """Checkpoints hold steps in [0, 2**62): a loaded step of 2**62 - 1 used to count on to 2**62, and the optimizer's
    own state_dict() was then refused by load_state_dict()."""
    p = np.ones(8, np.float32)
    opt = adam_c.Adam([p])
    opt.step([np.ones(8, np.float32)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = 2**62 - 1
    opt.load_state_dict(sd)
    before = p.copy()
    with pytest.raises(ValueError, match=r"params\[0\].*step"):
        opt.step([np.ones(8, np.float32)])
    assert np.array_equal(p, before) and opt.state[0]["step"] == 2**62 - 1
    opt.load_state_dict(opt.state_dict())
    sd["state"][0]["step"] = 2**62 - 2
    opt.load_state_dict(sd)
    opt.step([np.ones(8, np.float32)])  # up to 2**62 - 1 is fine
    assert opt.state[0]["step"] == 2**62 - 1
    opt.load_state_dict(opt.state_dict())
