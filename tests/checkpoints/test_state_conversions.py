"""Reliability, round three: state swapped under a torch plan, bad grad_scale/found_inf, failed steps that converted
state, channels_last int8 checkpoints, master/EMA through checkpoint converters, copies keeping GradScaler support,
odd tensors in compressed checkpoints, reshaped NumPy state. Each test failed before its fix."""
import copy
import pickle

import numpy as np
import pytest

import adam_c
from adam_c import _compressed
from adam_c._torch_checkpoint import from_torch_state_dict, to_torch_state_dict

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402

ALLOWED = (TypeError, ValueError)


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


# ---------------------------------------------------------------- 1: `.data =` on state tensors is noticed

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


# ---------------------------------------------------------------- 2, 8, 9: grad_scale and found_inf

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


# ---------------------------------------------------------------- 3: a failed step converts nothing

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


# ---------------------------------------------------------------- 4: channels_last int8 into adam_c.Adam

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


# ---------------------------------------------------------------- 5: master and EMA through the converters

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


# ---------------------------------------------------------------- 6: copies keep GradScaler support

@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_still_take_grad_scale_from_gradscaler(how):
    opt, p, _ = stepped_torch()
    other = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert getattr(other, "_step_supports_amp_scaling", False) is True


# ---------------------------------------------------------------- 7: odd tensors in compressed checkpoints

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


# ---------------------------------------------------------------- 10: compressed entries missing a moment

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


# ---------------------------------------------------------------- 11: NumPy state reshaped in place

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


# ---------------------------------------------------------------- the second review of these fixes

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


def test_grad_scale_of_shape_1_is_accepted_like_other_one_element_shapes():
    """GradScaler-style shape (1,) scales: torch._foreach_div takes only 0-d scale tensors (was a RuntimeError)."""
    a, pa, _ = stepped_fmt(steps=1)
    b, pb, _ = stepped_fmt(steps=1)
    g = torch.randn(pa.shape)
    pa.grad, pb.grad = g * 4.0, g.clone()
    a.step(grad_scale=torch.tensor([4.0]))
    b.step()
    assert torch.equal(pa, pb)


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


@pytest.mark.parametrize("found_inf, skipped", [(torch.tensor(True), True), (torch.tensor([False]), False)])
def test_torch_found_inf_bool_tensor_is_a_flag(found_inf, skipped):
    """A bool tensor found_inf (e.g. ~torch.isfinite(loss)) is a flag like True or torch.tensor(1.0)."""
    opt, p, gen = stepped_fmt()
    p.grad = torch.randn(p.shape, generator=gen)
    opt.step(found_inf=found_inf)
    assert opt.last_step_skipped is skipped


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


# ---------------------------------------------------------------- the third review: torch.optim round trips, hooks

def _steps(opt, params, n, seed=0):
    for t in range(n):
        g = torch.Generator().manual_seed(seed + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()


# ------------------------------------------------------------------ 1. checkpoints through torch.optim.Adam

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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_master_checkpoint_comes_back_after_torch_optim_loaded_it(dtype):
    """README: master/EMA are saved and "a torch.optim.Adam checkpoint ... starts them from the params", and
    float16/bfloat16 state that torch keeps in the param dtype "loads here, upcast exactly". But after
    torch.optim.Adam loads our master_weights checkpoint it holds state['master'] cast to the param dtype
    (torch casts every floating tensor), and loading that back is a TypeError ('master ... has dtype
    torch.bfloat16; ... are torch.float32') instead of an exact upcast (the cast master is the param's own bits)."""
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


# ------------------------------------------------------------------ 2. step hooks

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


# ------------------------------------------------------------------ 3. smaller divergences

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


# ---------------------------------------------------------------- the fourth review: C contracts, limits

def test_bfloat16_state_same_bits_on_every_target_under_flush_denormal(tmp_path):
    """After torch.set_flush_denormal(True) (FTZ + DAZ), a bfloat16 denormal carried through AMSGrad's max has the
    same bits on every target (the AVX512-BF16 store tested for denormals with vfpclassps, which follows DAZ, and
    flushed them). A fresh interpreter: the floating-point mode would leak into other tests."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent("""
        import numpy as np, torch, adam_c
        torch.set_flush_denormal(True)
        out = {}
        for target in adam_c.cpu_info()["supported_targets"]:
            adam_c.set_target(target)
            p = np.ones(64, np.float32)
            opt = adam_c.Adam([p], amsgrad=True, state_dtype="bfloat16")
            opt.step([np.full(64, 1e-3, np.float32)])
            opt.state[0]["exp_avg_sq"][...] = 0
            opt.state[0]["max_exp_avg_sq"][...] = 0x0001  # a bfloat16 denormal, e.g. from a checkpoint
            opt.step([np.zeros(64, np.float32)])  # v < max: the max passes through unchanged
            out[target] = (p.view(np.uint32).copy(), opt.state[0]["max_exp_avg_sq"].copy())
        ref = out["baseline"]
        print("DIFFER", [t for t in out if not (np.array_equal(out[t][0], ref[0]) and np.array_equal(out[t][1], ref[1]))],
              "MAX", hex(int(ref[1][0])), "TARGETS", sorted(out))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "DIFFER []" in r.stdout and "MAX 0x1 " in r.stdout, r.stdout


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
