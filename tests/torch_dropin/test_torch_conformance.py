"""test_torch_conformance.py: adam_c.torch.Adam/AdamW against torch.optim.Adam/AdamW through torch's own OptimizerInfo
inputs (torch.testing._internal.common_optimizers): every CPU optimizer input steps a model as torch.optim does,
every error input raises torch's error with a message matching torch's regex; and the torch.optim behaviours those
inputs do not reach (non-dense params, repeated params, meta and lazy params, the step counter's dtype, step's
signature)."""
import copy
import inspect
import re
import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

# torch's OptimizerInfo machinery, shipped in the wheel (it needs expecttest, in the test extra: not a skip)
import torch.testing._internal.common_optimizers as common_optimizers  # noqa: E402

import adam_c.torch as at  # noqa: E402
from torch import nn  # noqa: E402

PAIRS = {"Adam": (at.Adam, torch.optim.Adam, common_optimizers.optim_inputs_func_adam,
                  common_optimizers.optim_error_inputs_func_adam),
         "AdamW": (at.AdamW, torch.optim.AdamW, common_optimizers.optim_inputs_func_adamw,
                   common_optimizers.optim_error_inputs_func_adamw)}
DTYPES = (torch.float32, torch.float64)
STEPS = 12
# adam_c's kernel evaluates each update in one fused expression, torch's for-loop in separate tensor ops, each
# rounded: the two differ by a few units in the last place per step (measured over these inputs after 12 steps: at
# most 6e-7 relative in float32, 2e-6 with the float32 Tensor lr, 4e-15 in float64). torch.testing's default
# tolerances (float32: rtol 1.3e-6, atol 1e-5; float64: 1e-7) hold that, and are far below what one wrong term of
# the update (eps placement, bias correction, decay order) would change.


def _cpu_inputs(func):
    """torch's CPU optimizer inputs, plus the Tensor-lr one it gives only for MPS (a valid CPU config of torch)."""
    inputs = list(func(device="cpu", dtype=torch.float32))
    inputs += [oi for oi in func(device="mps", dtype=torch.float32) if "Tensor lr" in oi.desc]
    return inputs


def _input_cases():
    for name, (_, _, inputs_func, _) in PAIRS.items():
        for oi in _cpu_inputs(inputs_func):
            for dtype in DTYPES:
                yield pytest.param(name, oi, dtype, id=f"{name}-{oi.desc}-{str(dtype)[6:]}")


def _error_cases():
    for name, (_, _, _, errors_func) in PAIRS.items():
        for ei in errors_func(device="cpu", dtype=torch.float32):
            yield pytest.param(name, ei, id=f"{name}-{ei.optimizer_error_input.desc}")


class _Model(nn.Module):
    """Two layers, a non-dense (strided view) param, a param that never gets a grad, a 0-d param."""

    def __init__(self, dtype):
        super().__init__()
        self.l1 = nn.Linear(5, 4, dtype=dtype)
        self.l2 = nn.Linear(4, 3, dtype=dtype)
        self.strided = nn.Parameter(torch.randn(3, 4, 2, dtype=dtype)[..., 0])
        self.unused = nn.Parameter(torch.randn(2, dtype=dtype))
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=dtype))

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x))) @ self.strided * self.scale


def _run(cls, kwargs, dtype, steps, **extra):
    torch.manual_seed(0)
    model = _Model(dtype)
    opt = cls(model.parameters(), **copy.deepcopy(kwargs), **extra)
    data = torch.randn(steps, 6, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    for x in data:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("name,optimizer_input,dtype", list(_input_cases()))
def test_every_cpu_optimizer_input_steps_as_torch_optim(name, optimizer_input, dtype):
    ours_cls, torch_cls, _, _ = PAIRS[name]
    ours, ours_opt = _run(ours_cls, optimizer_input.kwargs, dtype, STEPS)
    theirs, theirs_opt = _run(torch_cls, optimizer_input.kwargs, dtype, STEPS, foreach=False)
    assert not torch.equal(ours.l1.weight, _Model(dtype).l1.weight)  # it trained
    lr = optimizer_input.kwargs.get("lr")
    # a float32 Tensor lr: torch.optim's step size is then rounded to float32, adam_c's is not (float64 params)
    tol = {"rtol": 1.3e-6, "atol": 1e-5} if isinstance(lr, torch.Tensor) and lr.dtype != dtype else {}
    for (pname, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert p.stride() == q.stride(), pname  # the non-dense param keeps its memory and strides
        torch.testing.assert_close(p, q, **tol, msg=lambda m: f"{pname}: {m}")
        mine, torchs = ours_opt.state.get(p), theirs_opt.state.get(q)
        if pname == "unused":
            assert not mine and not torchs  # no grad: no state, as torch
            continue
        assert set(mine) == set(torchs), pname
        for key in torchs:
            if key == "step":
                assert mine[key].dtype == torchs[key].dtype and mine[key].item() == torchs[key].item() == STEPS
            else:
                torch.testing.assert_close(mine[key], torchs[key], **tol, msg=lambda m: f"{pname} {key}: {m}")
    def groups(opt):  # foreach=False was given to torch.optim only (its default on CPU too)
        return [{k: v for k, v in g.items() if k != "foreach"} for g in opt.state_dict()["param_groups"]]
    assert groups(ours_opt) == groups(theirs_opt)


@pytest.mark.parametrize("name,error_input", list(_error_cases()))
def test_every_error_input_raises_torchs_error(name, error_input):
    ours_cls = PAIRS[name][0]
    oi = error_input.optimizer_error_input
    construction = error_input.error_on == common_optimizers.OptimizerErrorEnum.CONSTRUCTION_ERROR

    def attempt():
        opt = ours_cls(oi.params, **oi.kwargs)
        if not construction:
            opt.step()

    if issubclass(error_input.error_type, Warning):
        with pytest.warns(error_input.error_type, match=error_input.error_regex):
            attempt()
    else:
        with pytest.raises(error_input.error_type, match=error_input.error_regex):
            attempt()


def test_the_error_inputs_cover_what_the_issue_lists():
    """The inputs above are torch's own: they must still hold the cases this front-end was fixed for."""
    regexes = {ei.error_regex for name in PAIRS for ei in PAIRS[name][3](device="cpu", dtype=torch.float32)}
    for message in ("some parameters appear in more than one parameter group", "Tensor lr must be 1-element",
                    "Invalid beta parameter at index 0: 1.0", "Invalid weight_decay value: -1"):
        assert any(re.search(regex, message) for regex in regexes), message


# ---------------------------------------------------------------- non-dense params and grads

MODES = {
    "float32": ({}, torch.float32),
    "amsgrad-decay": ({"amsgrad": True, "weight_decay": 0.1, "maximize": True}, torch.float32),
    "float64": ({"amsgrad": True}, torch.float64),
    "bfloat16-state": ({"state_dtype": "bfloat16", "state_rounding": "stochastic", "seed": 3}, torch.float32),
    "int8-state": ({"state_dtype": "int8"}, torch.float32),
    "bf16-master-ema": ({"master_weights": True, "ema_decay": 0.9}, torch.bfloat16),
    "bf16-stochastic": ({"rounding": "stochastic", "seed": 5}, torch.bfloat16),
    "float16-master": ({"master_weights": True}, torch.float16),
}


def _strided_pair(dtype, shape=(64, 80)):
    """The same values as a non-dense view (every other element of a base, transposed) and as a dense tensor."""
    base = torch.randn(shape[1], shape[0], 2, generator=torch.Generator().manual_seed(2)).to(dtype)
    strided = nn.Parameter(base[..., 0].t())
    assert not strided.is_contiguous() and strided.stride() == (2, 2 * shape[0])
    return strided, nn.Parameter(strided.detach().clone())


@pytest.mark.parametrize("mode", list(MODES))
def test_non_dense_params_and_grads_step_as_their_dense_copies_bit_for_bit(mode):
    kwargs, dtype = MODES[mode]
    strided, dense = _strided_pair(dtype)
    small_s, small_d = nn.Parameter(torch.randn(7, 3, 2).to(dtype)[:, :, 1]), None
    small_d = nn.Parameter(small_s.detach().clone())
    base_of_strided = strided._base if strided._base is not None else None
    opts = [at.AdamW([strided, small_s], lr=1e-2, **kwargs), at.AdamW([dense, small_d], lr=1e-2, **kwargs)]
    gen = torch.Generator().manual_seed(4)
    for k in range(4):
        g = torch.randn(strided.shape, generator=gen).to(dtype)
        gs = torch.randn(small_s.shape, generator=gen).to(dtype)
        strided.grad = torch.randn(strided.shape[1], strided.shape[0], 3).to(dtype)[..., 1].t().copy_(g) \
            if k % 2 else g.clone()  # a non-dense grad every other step
        small_s.grad = gs.clone()
        dense.grad, small_d.grad = g.clone(), gs.clone()
        extra = {2: {"max_grad_norm": 5.0}, 3: {"grad_scale": torch.tensor(0.5)}}.get(k, {})  # GradScaler's keyword
        for opt in opts:
            opt.step(**extra)
        assert opts[0].last_grad_norm == opts[1].last_grad_norm
        assert torch.equal(strided, dense) and torch.equal(small_s, small_d), f"step {k + 1}"
        for a, b in ((strided, dense), (small_s, small_d)):
            sa, sb = opts[0].state[a], opts[1].state[b]
            assert set(sa) == set(sb)
            for key in sa:
                if isinstance(sa[key], torch.Tensor):
                    assert torch.equal(sa[key], sb[key]), (key, k)
    # the param is still the same view of its own memory (its base sees the update)
    assert strided.stride() == (2, 128) and (base_of_strided is None or strided._base is base_of_strided)
    if "ema_decay" in kwargs:
        with opts[0].ema_weights(), opts[1].ema_weights():
            assert torch.equal(strided, dense)
        assert torch.equal(strided, dense)


def test_non_dense_param_view_updates_its_base_memory():
    base = torch.zeros(4, 3, 2)
    p = nn.Parameter(base[..., 1])  # shares base's memory
    dense = nn.Parameter(torch.zeros(4, 3))
    for q in (p, dense):
        opt = at.Adam([q], lr=0.5)
        q.grad = torch.arange(12.0).reshape(4, 3)
        opt.step()
    assert not torch.equal(dense, torch.zeros(4, 3))
    assert torch.equal(base[..., 1], dense) and torch.equal(base[..., 0], torch.zeros(4, 3))
    assert p.data_ptr() == base.data_ptr() + base.element_size()


def test_failed_step_with_non_dense_params_changes_nothing():
    p, q = nn.Parameter(torch.randn(6, 4, 2)[..., 0]), nn.Parameter(torch.randn(5))
    opt = at.Adam([p, q], lr=0.1)
    p.grad, q.grad = torch.ones(6, 4), torch.ones(5)
    opt.step()
    before = (p.detach().clone(), q.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
    ptr, strides = p.data_ptr(), p.stride()
    opt.param_groups[0]["lr"] = float("nan")  # refused by the step, after the dense copies were made
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]"):
        opt.step()
    assert p.data_ptr() == ptr and p.stride() == strides
    assert torch.equal(p, before[0]) and torch.equal(q, before[1])
    assert all(torch.equal(opt.state[p][k], v) for k, v in before[2].items())
    opt.param_groups[0]["lr"] = 0.1
    opt.step()
    assert opt.state[p]["step"].item() == 2 and not torch.equal(p, before[0])


def test_self_overlapping_param_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"params\[0\] has elements that share memory"):
        at.Adam([nn.Parameter(torch.zeros(1, 3).expand(4, 3))])


# ---------------------------------------------------------------- repeated params, meta and lazy params

def test_repeated_param_in_a_group_warns_as_torch_and_is_stepped_once():
    p, q = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(3))
    p2, q2 = nn.Parameter(p.detach().clone()), nn.Parameter(q.detach().clone())
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        opt = at.Adam([p, q, p], lr=0.1, amsgrad=True)
    once = at.Adam([p2, q2], lr=0.1, amsgrad=True)
    for k in range(3):
        for a, b, o in ((p, q, opt), (p2, q2, once)):
            a.grad, b.grad = torch.full((5,), 1.0 + k), torch.full((3,), -2.0)
            o.step(max_grad_norm=3.0)
        assert torch.equal(p, p2) and torch.equal(q, q2)
        assert opt.last_grad_norm == once.last_grad_norm
    assert opt.state[p]["step"].item() == 3
    with pytest.warns(UserWarning, match="duplicate parameters"):
        ema = at.Adam([p, p], lr=0.1, ema_decay=0.5)
    for k in range(3):
        p.grad = torch.full((5,), 1.0 + k)
        ema.step()
    before = p.detach().clone()
    with ema.ema_weights():
        assert not torch.equal(p, before)
    assert torch.equal(p, before)  # restored once, to its own values
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        at.Adam([{"params": [p]}, {"params": [q, p]}])


def test_fused_meta_params_raise_torchs_fused_error_at_step():
    """torch's test_fused_error_on_params_on_meta: fused=True with meta params and grads is torch.optim's
    RuntimeError ("`fused=True` requires all the params to be floating point Tensors") at step(), nothing
    changed."""
    with torch.device("meta"):
        model = nn.Linear(3, 2)
        for p in model.parameters():
            p.grad = torch.rand_like(p)
    opt = at.AdamW(model.parameters(), fused=True)
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point Tensors"):
        opt.step()
    with pytest.raises(ValueError, match=r"params\[0\] is a meta tensor"):
        opt.step()
    assert not opt.state
    for p in model.parameters():  # without grads: adam_c's own refusal of meta params at step() (torch.optim
        p.grad = None             # would step nothing), which says how to materialise them
    with pytest.raises(ValueError, match=r"params\[0\] is on device meta.*to_empty"):
        opt.step()


def test_meta_params_are_accepted_and_trained_after_to_empty():
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)  # to_empty() then keeps the param objects
    try:
        model = nn.Linear(3, 2, device="meta")
        opt = at.AdamW(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match=r"params\[0\] is on device meta.*to_empty"):
            opt.step()
        model.to_empty(device="cpu")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.zero_()
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    assert opt.state[model.weight]["step"].item() == 1
    assert torch.allclose(model.weight, torch.full((2, 3), 1.0 - 0.1 * 0.01 - 0.1))


def test_lazy_module_params_are_accepted_and_trained_once_materialised():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(4), nn.Tanh(), nn.LazyLinear(1))
    ref = None
    opt = at.Adam(model.parameters(), lr=0.05)
    opt.step()  # nothing materialised, nothing to step
    x = torch.randn(8, 3)
    model(x)
    ref = copy.deepcopy(model)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.05, foreach=False)
    for _ in range(3):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)
    assert all(opt.state[p]["step"].item() == 3 for p in model.parameters())


# ---------------------------------------------------------------- the step counter, step's signature

@pytest.mark.parametrize("fused", [None, True])
def test_step_counter_dtype_follows_torchs_rule_under_float64_default(fused):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        steps = []
        for cls in (at.Adam, torch.optim.Adam):
            p = nn.Parameter(torch.ones(3, dtype=torch.float32))
            opt = cls([p], fused=fused)
            p.grad = torch.ones(3, dtype=torch.float32)
            opt.step()
            steps.append(opt.state[p]["step"])
            saved = opt.state_dict()
            saved["state"][0]["step"] = 1  # an older checkpoint's plain number
            opt.load_state_dict(saved)
            opt.step()
            steps.append(opt.state[p]["step"])
    finally:
        torch.set_default_dtype(default)
    assert [s.dtype for s in steps[:2]] == [s.dtype for s in steps[2:]]
    assert steps[0].dtype == (torch.float32 if fused else torch.float64)


def test_step_signature_is_torchs_and_grad_scaler_steps_it():
    sig = inspect.signature(at.Adam.step)
    assert list(sig.parameters)[:2] == list(inspect.signature(torch.optim.Adam.step).parameters)
    assert sig.parameters["closure"].default is None
    assert "grad_scaler" not in sig.parameters  # GradScaler then sets opt.grad_scale / opt.found_inf
    p = nn.Parameter(torch.ones(4))
    ref = nn.Parameter(torch.ones(4))
    opt, ref_opt = at.AdamW([p], lr=0.1), at.AdamW([ref], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((p * torch.arange(4.0)).sum()).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the deprecated grad_scaler keyword is not used
        scaler.step(opt)
    scaler.update()
    ref.grad = torch.arange(4.0)
    ref_opt.step()
    assert torch.equal(p, ref) and not hasattr(opt, "grad_scale")
