"""What a checkpoint's state entries hold, read from what is there: int8 state that went through torch.optim,
empty entries, and a "state_dtype" that is not a string."""
import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402

N = 8192  # int8 state needs 4096 elements or more


def _int8_through_torch_optim(dtype):
    """adam_c.torch's int8 state of a `dtype` param, loaded by torch.optim.Adam (which casts every state tensor to
    the param's dtype and turns the "state_dtype" string into a generator's repr) and saved again."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(N, generator=gen).to(dtype)
    opt = at.Adam([p], lr=1e-2, state_dtype="int8")
    for _ in range(2):
        p.grad = torch.randn(N, generator=gen).to(dtype)
        opt.step()
    plain = torch.optim.Adam([p.clone()])
    plain.load_state_dict(opt.state_dict())
    through = plain.state_dict()
    assert through["state"][0]["exp_avg"].dtype == dtype  # the codes are numbers now
    assert "generator" in through["state"][0]["state_dtype"]
    return p, opt, through


def test_int8_state_of_a_float32_param_is_recovered_from_torch_optims_checkpoint():
    """float32 params: every code is exact as a float32 number and the float32 block scales are untouched."""
    p, opt, through = _int8_through_torch_optim(torch.float32)
    twin_p = p.clone()
    twin = at.Adam([twin_p], lr=1e-2, state_dtype="int8")
    twin.load_state_dict(through)
    for key in ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax"):
        assert torch.equal(twin.state[twin_p][key], opt.state[p][key]), key
    numpy_sd = adam_c.from_torch_state_dict(through)
    assert numpy_sd["state"][0]["exp_avg"].dtype == np.uint8
    np.testing.assert_array_equal(numpy_sd["state"][0]["exp_avg"], opt.state[p]["exp_avg"].numpy())
    q = p.numpy().copy()
    nopt = adam_c.Adam([q], lr=1e-2, state_dtype="int8")
    nopt.load_state_dict(numpy_sd)
    np.testing.assert_array_equal(nopt.state_float32()[0]["exp_avg"], opt.state_float32()[0]["exp_avg"].numpy())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int8_state_whose_scales_torch_optim_cast_is_refused_not_misread(dtype):
    """A float16/bfloat16 param: torch.optim cast the block scales to its dtype, which lost their bits. adam_c
    read the codes as bfloat16 state (exp_avg off by up to 255.6); now it refuses, naming what happened."""
    p, _, through = _int8_through_torch_optim(dtype)
    for state_dtype in ("int8", "float32", "bfloat16"):
        q = p.clone()
        twin = at.Adam([q], state_dtype=state_dtype)
        with pytest.raises(ValueError, match=r"int8 state.*block scales.*cannot be recovered"):
            twin.load_state_dict(through)
        assert not twin.state
    with pytest.raises(ValueError, match=r"int8 state.*block scales.*cannot be recovered"):
        adam_c.from_torch_state_dict(through)


def test_int8_codes_that_are_not_whole_numbers_are_refused():
    p, _, through = _int8_through_torch_optim(torch.float32)
    through["state"][0]["exp_avg"] = through["state"][0]["exp_avg"] + 0.5
    with pytest.raises(ValueError, match=r"\['exp_avg'\].*int8 codes"):
        at.Adam([p.clone()], state_dtype="int8").load_state_dict(through)
    with pytest.raises(ValueError, match=r"\['exp_avg'\].*int8 codes"):
        adam_c.from_torch_state_dict(through)


@pytest.mark.parametrize("kw", [{"state_dtype": "bfloat16"}, {"master_weights": True},
                                {"state_dtype": "bfloat16", "master_weights": True}])
def test_state_torch_optim_cast_to_float16_is_refused_not_misread(kw):
    """A float16 param's adam_c state (bfloat16 codes, or float32 moments beside a float32 master) through
    torch.optim's load_state_dict: cast to float16, which flushed every exp_avg_sq to 0 (the next update was about
    860 times too large). Refused by both loaders, the optimizer left as it was; adam_c's own checkpoint and
    torch.optim's own float16 state still load."""
    torch.manual_seed(0)
    p = torch.randn(N).half()
    opt = at.Adam([p], lr=1e-3, **kw)
    for _ in range(3):
        p.grad = (torch.randn(N) * 1e-4).half()
        opt.step()
    saved = opt.state_dict()
    plain = torch.optim.Adam([p.clone()])
    plain.load_state_dict(saved)
    through = plain.state_dict()
    assert through["state"][0]["exp_avg_sq"].dtype == torch.float16
    twin = at.Adam([p.clone()], lr=1e-3, **kw)
    with pytest.raises(ValueError, match=r"went through torch.optim.*float16.*cannot be recovered"):
        twin.load_state_dict(through)
    assert not twin.state
    with pytest.raises(ValueError, match=r"went through torch.optim.*float16.*cannot be recovered"):
        adam_c.from_torch_state_dict(through)
    twin.load_state_dict(saved)  # its own checkpoint
    q = p.clone()
    torch_run = torch.optim.Adam([q])
    q.grad = (torch.randn(N) * 1e-4).half()
    torch_run.step()
    at.Adam([q.clone()]).load_state_dict(torch_run.state_dict())  # torch.optim's own float16 state


# ---------------------------------------------------------------- {} entries

def _with_empty_entry(cls, dtype, **kw):
    """A checkpoint of [a, b] where only a stepped and b's entry is {} (torch makes one whenever code reads
    opt.state[b] for a param without state)."""
    a, b = torch.randn(N).to(dtype), torch.randn(16).to(dtype)
    opt = cls([a, b], **kw)
    a.grad = torch.randn(N).to(dtype)
    opt.step()
    assert opt.state[b] == {}
    sd = opt.state_dict()
    assert sd["state"][1] == {}
    return a, b, opt, sd


CONFIGS = [pytest.param(torch.float16, {}, id="f16"), pytest.param(torch.bfloat16, {}, id="bf16"),
           pytest.param(torch.float32, {"state_dtype": "int8"}, id="int8"),
           pytest.param(torch.float32, {"state_dtype": "bfloat16"}, id="bf16-state"),
           pytest.param(torch.bfloat16, {"master_weights": True, "ema_decay": 0.9}, id="bf16-master-ema")]


@pytest.mark.parametrize("dtype,kw", CONFIGS)
def test_adam_c_torch_loads_its_own_checkpoint_with_an_empty_entry(dtype, kw):
    a, b, opt, sd = _with_empty_entry(at.Adam, dtype, **kw)
    twin = at.Adam([a.clone(), b.clone()], **kw)
    twin.load_state_dict(sd)
    ta, tb = twin.param_groups[0]["params"]
    assert twin.state[tb] == {}
    assert torch.equal(twin.state_float32()[0]["exp_avg"], opt.state_float32()[0]["exp_avg"])
    ta.grad, tb.grad = torch.ones_like(ta), torch.ones_like(tb)
    twin.step()  # b gets its first state here
    assert float(twin.state[tb]["step"]) == 1.0 and float(twin.state[ta]["step"]) == 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_torch_optim_checkpoints_with_an_empty_entry_load(dtype):
    a, b, _, sd = _with_empty_entry(torch.optim.Adam, dtype)
    for kw in ({}, {"state_dtype": "int8"} if dtype == torch.float32 else {"master_weights": True}):
        twin = at.Adam([a.clone(), b.clone()], **kw)
        twin.load_state_dict(sd)
        assert twin.state[twin.param_groups[0]["params"][1]] == {}
    numpy_sd = adam_c.from_torch_state_dict(sd)
    assert list(numpy_sd["state"]) == [0]  # b has no state, as in adam_c.Adam's own checkpoints
    if dtype == torch.float32:
        nopt = adam_c.Adam([a.numpy().copy(), b.numpy().copy()])
        nopt.load_state_dict(numpy_sd)
        nopt.load_state_dict(sd)  # a raw torch.optim checkpoint with its {} entry too
        assert list(nopt.state) == [0]


# ---------------------------------------------------------------- "state_dtype" that is not one string

@pytest.mark.parametrize("value", [pytest.param(np.array(["int8", "int8"]), id="array"),
                                   pytest.param(torch.tensor([1, 2]), id="tensor")])
def test_a_multi_element_state_dtype_is_a_named_type_error(value):
    p = torch.randn(N)
    opt = at.Adam([p], state_dtype="int8")
    p.grad = torch.randn(N)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0] = dict(sd["state"][0], state_dtype=value)
    twin = at.Adam([p.clone()], state_dtype="int8")
    with pytest.raises(TypeError, match=r"\['state_dtype'\] must be one of .* 2 elements"):
        twin.load_state_dict(sd)
    assert not twin.state
    with pytest.raises(TypeError, match=r"\['state_dtype'\] must be one of .* 2 elements"):
        adam_c.from_torch_state_dict(sd)
    q = np.ones(N, np.float32)
    nopt = adam_c.Adam([q], state_dtype="int8")
    nopt.step([np.ones(N, np.float32)])
    nsd = nopt.state_dict()
    nsd["state"][0]["state_dtype"] = value
    with pytest.raises(TypeError, match=r"\['state_dtype'\] must be one of .* 2 elements"):
        nopt.load_state_dict(nsd)
    with pytest.raises(TypeError, match=r"\['state_dtype'\] must be one of .* 2 elements"):
        adam_c.to_torch_state_dict(nsd)
