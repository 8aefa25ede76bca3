"""test_torch_compressed_state.py: adam_c.torch with state_dtype bfloat16 / int8 gives the same bits as adam_c.Adam
(params, codes, scales), keys stochastic state rounding the same way, converts checkpoints between formats (torch.optim
included, weights_only), refuses bad input unchanged and notices state tensors swapped or resized under its plan."""
import copy
import io

import numpy as np
import pytest

import adam_c
from adam_c import _codec, _compressed
from adam_c._torch_checkpoint import from_torch_state_dict, to_torch_state_dict

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402

KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
# odd sizes: the int8 small-tensor fallback (< 4096), a block edge, multi-block tails, a 2-D param
SHAPES = [(1,), (255,), (4095,), (4096,), (4097,), (61, 83), (9001,)]
OPTIONS = [
    dict(),
    dict(amsgrad=True),
    dict(weight_decay=0.1),
    dict(weight_decay=0.05, decoupled_weight_decay=True, amsgrad=True),
    dict(maximize=True, betas=(0.5, 0.9)),
]


def as_numpy(t):
    """A state tensor's bytes as adam_c.Adam stores them: bfloat16 state as uint16 bits."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16)
    return t.contiguous().numpy()


def make_params(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_() for s in shapes]


def make_grads(shapes, step, seed=0):
    """Grads of many magnitudes with exact zeros, as real grads have."""
    gen = torch.Generator().manual_seed(1000 * seed + step)
    out = []
    for s in shapes:
        g = torch.randn(s, generator=gen) * 10.0 ** float(torch.empty(()).uniform_(-6, 1, generator=gen))
        g[torch.rand(s, generator=gen) < 0.05] = 0
        out.append(g)
    return out


def twin_numpy(tparams, groups=None, **kwargs):
    """adam_c.Adam over copies of the params (same group split)."""
    nparams = [p.detach().numpy().copy() for p in tparams]
    if groups is None:
        return nparams, adam_c.Adam(nparams, **kwargs)
    split, start = [], 0
    for extra, size in groups:
        split.append({"params": nparams[start:start + size], **extra})
        start += size
    return nparams, adam_c.Adam(split, **kwargs)


def torch_groups(tparams, groups):
    split, start = [], 0
    for extra, size in groups:
        split.append({"params": tparams[start:start + size], **extra})
        start += size
    return split


def assert_same(topt, tparams, nopt, nparams, where):
    for i, p in enumerate(tparams):
        assert p.detach().numpy().tobytes() == nparams[i].tobytes(), f"{where}: param {i}"
        nentry = nopt.state.get(i)
        tentry = topt.state.get(p)
        if not tentry:  # adam_c.Adam allocates state for every param at its first step (step count 0)
            assert not nentry or nentry["step"] == 0, f"{where}: param {i} has state only in adam_c.Adam"
            continue
        assert tentry.get("state_dtype", "float32") == nentry.get("state_dtype", "float32"), (where, i)
        assert int(tentry["step"].item()) == nentry["step"], (where, i)
        for key in KEYS + tuple(k + "_absmax" for k in KEYS):
            if key not in nentry:
                assert tentry.get(key) is None, (where, i, key)
                continue
            got = as_numpy(tentry[key])
            assert got.dtype == nentry[key].dtype and got.shape == nentry[key].shape, (where, i, key)
            assert got.tobytes() == nentry[key].tobytes(), f"{where}: param {i} {key}"


def run_twins(state_dtype, opts, steps=4, groups=None, shapes=SHAPES, skip=None, **kwargs):
    """adam_c.torch and adam_c.Adam from the same start and grads, compared after every step. skip: (step, i)
    pairs whose grad is None."""
    tparams = make_params(shapes)
    hp = dict(lr=1e-2)
    hp.update(opts)
    decoupled = hp.pop("decoupled_weight_decay", False)
    nparams, nopt = twin_numpy(tparams, groups, state_dtype=state_dtype, decoupled_weight_decay=decoupled,
                               **hp, **kwargs)
    cls = adam_torch.AdamW if decoupled else adam_torch.Adam
    if not decoupled:
        hp.setdefault("weight_decay", 0.0)
    topt = cls(tparams if groups is None else torch_groups(tparams, groups), state_dtype=state_dtype, **hp,
               **kwargs)
    skip = skip or set()
    for step in range(1, steps + 1):
        grads = make_grads(shapes, step)
        for i, (p, g) in enumerate(zip(tparams, grads)):
            p.grad = None if (step, i) in skip else g
        topt.step()
        nopt.step([None if (step, i) in skip else g.numpy() for i, g in enumerate(grads)])
        assert_same(topt, tparams, nopt, nparams, f"step {step}")
    return topt, tparams, nopt, nparams


# ---------------------------------------------------------------- same bits as adam_c.Adam

@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_same_bits_as_the_numpy_optimizer(state_dtype, opts):
    topt, tparams, _, _ = run_twins(state_dtype, opts)
    for p in tparams:
        want = "float32" if state_dtype == "int8" and p.numel() < _codec.MIN_QUANTIZED_SIZE else state_dtype
        entry = topt.state[p]
        assert entry.get("state_dtype", "float32") == want
        expected = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.uint8}[want]
        assert entry["exp_avg"].dtype == expected and entry["exp_avg"].shape == p.shape
        if want == "int8":
            assert entry["exp_avg_absmax"].dtype == torch.float32
            assert tuple(entry["exp_avg_absmax"].shape) == (-(-p.numel() // 256),)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_groups_and_params_without_grads(state_dtype):
    groups = [(dict(lr=1e-2), 3), (dict(lr=3e-3, weight_decay=0.01, amsgrad=True), 4)]
    # params 1 and 5 skip some steps (their step counts and the stochastic keys of the others must still agree)
    run_twins(state_dtype, {}, steps=3, groups=groups, skip={(1, 1), (2, 5), (3, 1)})


def test_stochastic_bf16_state_rounding_keyed_like_the_numpy_optimizer():
    """Both front-ends key the state's random stream by (seed, step, the param's position in group order): a
    param that has no grad this step keeps its position. A different seed gives other bits."""
    skip = {(2, 0), (3, 4)}
    topt, tparams, _, _ = run_twins("bfloat16", dict(amsgrad=True), seed=12345, state_rounding="stochastic",
                                    skip=skip)
    other, other_params, _, _ = run_twins("bfloat16", dict(amsgrad=True), seed=777, state_rounding="stochastic",
                                          skip=skip)
    assert any(not torch.equal(topt.state[a]["exp_avg"].view(torch.int16),
                               other.state[b]["exp_avg"].view(torch.int16))
               for a, b in zip(tparams, other_params) if a.numel() > 1000)


def test_channels_last_param_walks_its_state_in_memory_order():
    """int8 scales cover 256 elements of the param's memory order, as the kernel walks it: the same bits as adam_c.Adam
    on the param's memory as one C-ordered array."""
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(3, 37, 9, 7, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
    order = (0, 2, 3, 1)  # channels_last's memory order
    flat = p.detach().permute(order).contiguous().numpy().copy()
    topt = adam_torch.Adam([p], lr=1e-2, state_dtype="int8")
    nopt = adam_c.Adam([flat], lr=1e-2, state_dtype="int8")
    for step in range(3):
        g = torch.randn(p.shape, generator=gen).to(memory_format=torch.channels_last)
        p.grad = g
        topt.step()
        nopt.step([g.permute(order).contiguous().numpy()])
    entry = topt.state[p]
    assert entry["exp_avg"].stride() == p.stride()
    assert p.detach().permute(order).contiguous().numpy().tobytes() == flat.tobytes()
    for key in ("exp_avg", "exp_avg_sq"):
        assert entry[key].permute(order).contiguous().numpy().tobytes() == nopt.state[0][key].tobytes()
        assert entry[key + "_absmax"].numpy().tobytes() == nopt.state[0][key + "_absmax"].tobytes()
    # into a C-ordered param, its codes are decoded in their own order and encoded in the param's blocks
    twin = p.detach().contiguous().clone().requires_grad_()
    fresh = adam_torch.Adam([twin], lr=1e-2, state_dtype="int8")
    fresh.load_state_dict(topt.state_dict())
    for key in ("exp_avg", "exp_avg_sq"):
        values = topt.state_float32()[0][key].contiguous().numpy()
        codes, absmax = _compressed.from_float32("int8", key, values)
        assert fresh.state[twin][key].is_contiguous()
        assert fresh.state[twin][key].numpy().tobytes() == codes.tobytes()
        assert fresh.state[twin][key + "_absmax"].numpy().tobytes() == absmax.tobytes()


def test_grad_scale_divides_the_grads_and_found_inf_skips():
    shapes = [(5000,), (77,)]
    a, b = make_params(shapes), make_params(shapes)
    oa = adam_torch.Adam(a, lr=1e-2, state_dtype="int8")
    ob = adam_torch.Adam(b, lr=1e-2, state_dtype="int8")
    scale = torch.tensor(1024.0)
    for step in range(1, 3):
        grads = make_grads(shapes, step)
        for p, q, g in zip(a, b, grads):
            p.grad = g * 1024.0
            q.grad = g
        oa.step(grad_scale=scale)
        ob.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        assert torch.equal(oa.state[p]["exp_avg"], ob.state[q]["exp_avg"])
    before = {k: v.clone() for k, v in oa.state[a[0]].items() if isinstance(v, torch.Tensor)}
    params_before = [p.detach().clone() for p in a]
    oa.step(grad_scale=scale, found_inf=torch.tensor(1.0))
    assert all(torch.equal(x, y) for x, y in zip(params_before, a))
    assert all(torch.equal(before[k], oa.state[a[0]][k]) for k in before)


def test_grad_scaler_with_int8_state_matches_the_numpy_optimizer():
    """torch.amp.GradScaler hands the step its scale and found_inf: the unscaled grads step the codes as
    adam_c.Adam does, and a step with an inf grad changes nothing."""
    gen = torch.Generator().manual_seed(11)
    net = torch.nn.Linear(81, 64)  # 5184 weights: int8 state; 64 biases: float32 state
    params = list(net.parameters())
    nparams = [p.detach().numpy().copy() for p in params]
    opt = adam_torch.Adam(params, lr=1e-2, state_dtype="int8")
    nopt = adam_c.Adam(nparams, lr=1e-2, state_dtype="int8")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    for k in range(6):
        opt.zero_grad()
        loss = (net(torch.randn(16, 81, generator=gen)) ** 2).mean()
        scaler.scale(loss).backward()
        if k == 2:
            net.weight.grad[0, 0] = float("inf")
        scale = torch.tensor(scaler.get_scale())
        if k != 2:
            nopt.step([(p.grad / scale).numpy() for p in params])
        scaler.step(opt)
        scaler.update()
        assert_same(opt, params, nopt, nparams, f"step {k}")
    assert opt.state[params[0]]["state_dtype"] == "int8" and opt.state[params[0]]["step"].item() == 5


# ---------------------------------------------------------------- state_bytes, state_float32, copies

def test_state_bytes_and_state_float32_match_the_numpy_optimizer():
    for state_dtype in ("float32", "bfloat16", "int8"):
        topt, tparams, nopt, _ = run_twins(state_dtype, dict(amsgrad=True), steps=2)
        assert topt.state_bytes() == nopt.state_bytes(), state_dtype
        tdec, ndec = topt.state_float32(), nopt.state_float32()
        assert sorted(tdec) == sorted(ndec)
        for i in ndec:
            assert tdec[i]["step"] == ndec[i]["step"]
            for key in KEYS:
                assert tdec[i][key].dtype == torch.float32
                assert tdec[i][key].numpy().tobytes() == ndec[i][key].astype(np.float32).tobytes(), (i, key)
    n = 9001 + 4097 + 4096 + 61 * 83
    small = 1 + 255 + 4095
    assert topt.state_bytes() == 3 * (n + 4 * sum(-(-m // 256) for m in (9001, 4097, 4096, 61 * 83)) + 4 * small)


def test_deepcopy_keeps_the_state_format():
    topt, tparams, _, _ = run_twins("int8", {}, steps=1, shapes=[(5000,)])
    clone = copy.deepcopy(topt)
    assert clone.state_dtype == "int8"
    p = next(iter(clone.state))
    p.grad = torch.ones(5000)
    clone.step()
    assert clone.state[p]["exp_avg"].dtype == torch.uint8 and clone.state[p]["step"].item() == 2


# ---------------------------------------------------------------- checkpoints

def roundtrip(state_dict):
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_checkpoint_roundtrip_is_exact_with_weights_only(state_dtype):
    topt, tparams, nopt, nparams = run_twins(state_dtype, dict(amsgrad=True), steps=3)
    saved = roundtrip(topt.state_dict())
    twins = [p.detach().clone().requires_grad_() for p in tparams]
    fresh = adam_torch.Adam(twins, lr=1e-2, amsgrad=True, weight_decay=0.0, state_dtype=state_dtype)
    fresh.load_state_dict(saved)
    for i, (p, q) in enumerate(zip(tparams, twins)):
        for key, value in topt.state[p].items():
            if isinstance(value, torch.Tensor):
                assert as_numpy(fresh.state[q][key]).tobytes() == as_numpy(value).tobytes(), key
                if key != "step" and "state_dtype" in saved["state"][i]:  # compressed codes: copied in
                    assert fresh.state[q][key].data_ptr() != saved["state"][i][key].data_ptr()
            else:
                assert fresh.state[q][key] == value
    grads = make_grads(SHAPES, 9)
    for p, q, g in zip(tparams, twins, grads):
        p.grad, q.grad = g, g.clone()
    topt.step()
    fresh.step()
    nopt.step([g.numpy() for g in grads])
    assert_same(fresh, twins, nopt, nparams, "after loading")


def test_torch_optim_checkpoint_into_int8_and_back_to_torch_optim():
    shapes = [(6000,), (33,)]
    ref = make_params(shapes)
    topt = torch.optim.Adam(ref, lr=1e-3)
    for step in range(1, 4):
        for p, g in zip(ref, make_grads(shapes, step)):
            p.grad = g
        topt.step()
    tsd = roundtrip(topt.state_dict())
    ours = [p.detach().clone().requires_grad_() for p in ref]
    opt = adam_torch.Adam(ours, lr=1e-3, state_dtype="int8")
    opt.load_state_dict(tsd)
    entry = opt.state[ours[0]]
    assert entry["state_dtype"] == "int8" and entry["step"].item() == 3
    for key in ("exp_avg", "exp_avg_sq"):  # quantized through the NumPy optimizer's converter
        codes, absmax = _compressed.from_float32("int8", key, tsd["state"][0][key].numpy())
        assert entry[key].numpy().tobytes() == codes.tobytes(), key
        assert entry[key + "_absmax"].numpy().tobytes() == absmax.tobytes(), key
    small = opt.state[ours[1]]  # under 4096 elements: float32 state, loaded by torch as it is
    assert "state_dtype" not in small and torch.equal(small["exp_avg"], tsd["state"][1]["exp_avg"])
    # and the NumPy optimizer makes the same codes from the same checkpoint
    nopt = adam_c.Adam([p.detach().numpy().copy() for p in ref], lr=1e-3, state_dtype="int8")
    nopt.load_state_dict(from_torch_state_dict(tsd))
    assert entry["exp_avg"].numpy().tobytes() == nopt.state[0]["exp_avg"].tobytes()

    int8_saved = roundtrip(opt.state_dict())
    plain = adam_torch.Adam([p.detach().clone().requires_grad_() for p in ref], lr=1e-3)
    plain.load_state_dict(int8_saved)  # decoded into float32 state
    back = plain.state[plain.param_groups[0]["params"][0]]
    assert back["exp_avg"].dtype == torch.float32 and "state_dtype" not in back and "exp_avg_absmax" not in back
    assert torch.equal(back["exp_avg"], opt.state_float32()[0]["exp_avg"])
    decoded = _compressed.to_float32("int8", "exp_avg", entry["exp_avg"].numpy(), entry["exp_avg_absmax"].numpy())
    assert back["exp_avg"].numpy().tobytes() == decoded.tobytes()
    err = (back["exp_avg"] - tsd["state"][0]["exp_avg"]).abs().max()
    assert err <= 0.0071 * tsd["state"][0]["exp_avg"].abs().max()
    again = torch.optim.Adam([p.detach().clone().requires_grad_() for p in ref], lr=1e-3)
    again.load_state_dict(roundtrip(plain.state_dict()))  # torch.optim reads the decoded float32 state
    assert torch.equal(again.state[again.param_groups[0]["params"][0]]["exp_avg"], back["exp_avg"])


@pytest.mark.parametrize("src,dst", [("bfloat16", "int8"), ("int8", "bfloat16"), ("float32", "bfloat16")])
def test_conversion_between_formats_matches_the_numpy_optimizer(src, dst):
    shapes = [(5000,), (70,)]
    topt, tparams, nopt, _ = run_twins(src, dict(amsgrad=True), steps=2, shapes=shapes)
    saved = roundtrip(topt.state_dict())
    tdst = adam_torch.Adam([p.detach().clone().requires_grad_() for p in tparams], lr=1e-2, amsgrad=True,
                           state_dtype=dst)
    tdst.load_state_dict(saved)
    ndst = adam_c.Adam([p.detach().numpy().copy() for p in tparams], lr=1e-2, amsgrad=True, state_dtype=dst)
    ndst.load_state_dict(nopt.state_dict())
    assert_same(tdst, tdst.param_groups[0]["params"], ndst, [p.detach().numpy() for p in tparams], "converted")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_numpy_optimizer_checkpoints_carry_codes_both_ways(state_dtype):
    shapes = [(5000,), (70,)]
    topt, tparams, nopt, nparams = run_twins(state_dtype, dict(amsgrad=True), steps=2, shapes=shapes)
    converted = roundtrip(to_torch_state_dict(nopt.state_dict()))
    twins = [p.detach().clone().requires_grad_() for p in tparams]
    fresh = adam_torch.Adam(twins, lr=1e-2, amsgrad=True, state_dtype=state_dtype)
    fresh.load_state_dict(converted)
    assert_same(fresh, twins, nopt, nparams, "from adam_c.Adam")
    back = adam_c.Adam([p.copy() for p in nparams], lr=1e-2, amsgrad=True, state_dtype=state_dtype)
    back.load_state_dict(from_torch_state_dict(topt.state_dict()))
    assert_same(topt, tparams, back, nparams, "into adam_c.Adam")


def test_bad_compressed_checkpoint_is_refused_unchanged():
    topt, tparams, _, _ = run_twins("int8", {}, steps=1, shapes=[(5000,)])
    good = topt.state_dict()
    fresh_p = tparams[0].detach().clone().requires_grad_()
    fresh = adam_torch.Adam([fresh_p], lr=1e-2, state_dtype="int8")
    cases = [
        ("exp_avg_absmax", torch.zeros(3), ValueError, "exp_avg_absmax"),
        ("exp_avg_absmax", None, ValueError, "exp_avg_absmax"),
        ("exp_avg", torch.zeros(5000), TypeError, "exp_avg"),
        ("exp_avg", torch.zeros(4999, dtype=torch.uint8), ValueError, "shape"),
        ("state_dtype", "int4", ValueError, "state_dtype"),
    ]
    for key, value, exc, match in cases:
        bad = copy.deepcopy(good)
        bad["state"][0][key] = value
        bad["param_groups"][0]["lr"] = 0.5
        with pytest.raises(exc, match=match):
            fresh.load_state_dict(bad)
        assert not fresh.state and fresh.param_groups[0]["lr"] == 1e-2, key


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(state_dtype="int4"), ValueError, "state_dtype"),
    (dict(state_dtype=8), TypeError, "state_dtype"),
    (dict(state_dtype="float16"), ValueError, "state_dtype"),
    (dict(state_dtype=torch.float16), ValueError, "state_dtype"),
    (dict(state_rounding="up"), ValueError, "state_rounding"),
    (dict(state_dtype="int8", state_rounding="stochastic"), ValueError, "state_rounding"),
    (dict(state_dtype="bfloat16", seed=-1), ValueError, "seed"),
    (dict(state_dtype="bfloat16", seed=1.5), TypeError, "seed"),
])
def test_bad_state_options_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        adam_torch.Adam(make_params([(5,)]), **kwargs)
    with pytest.raises(exc, match=match):
        adam_torch.AdamW(make_params([(5,)]), **kwargs)


def test_torch_dtypes_name_the_state_format():
    for given, name in ((torch.bfloat16, "bfloat16"), (torch.int8, "int8"), (torch.float32, "float32"),
                        (None, "float32")):
        assert adam_torch.Adam(make_params([(5,)]), state_dtype=given).state_dtype == name


def test_float64_params_refuse_compressed_state():
    params = [torch.zeros(5000, requires_grad=True), torch.zeros(7, dtype=torch.float64, requires_grad=True)]
    with pytest.raises(ValueError, match="params\\[1\\] has dtype float64.*float32 compute"):
        adam_torch.Adam(params, state_dtype="int8")
    opt = adam_torch.Adam(params[:1], state_dtype="bfloat16")
    with pytest.raises(ValueError, match="param_groups\\[1\\]\\['params'\\]\\[0\\] has dtype float64"):
        opt.add_param_group({"params": [params[1]]})
    assert len(opt.param_groups) == 1
    adam_torch.Adam(params)  # float32 state takes them all


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_low_precision_params_with_compressed_state_match_numpy_optimizer(dtype, state_dtype):
    """float16/bfloat16 params (no master: adam_c.torch has none) with compressed state: the same bits as
    adam_c.Adam on NumPy views of the same values (float16 / ml_dtypes.bfloat16)."""
    pytest.importorskip("ml_dtypes")
    from adam_c._mixed import numpy_view
    sizes = [(70, 100), (9,)]
    gen = torch.Generator().manual_seed(3)
    start = [torch.randn(s, generator=gen).to(dtype) for s in sizes]
    grads = [[(torch.randn(s, generator=gen) * 1e-2).to(dtype) for s in sizes] for _ in range(4)]
    tparams = [torch.nn.Parameter(t.clone()) for t in start]
    topt = adam_torch.AdamW(tparams, lr=1e-2, amsgrad=True, state_dtype=state_dtype)
    nparams = [numpy_view(t.clone()) for t in start]
    nopt = adam_c.AdamW(nparams, lr=1e-2, amsgrad=True, state_dtype=state_dtype)
    for step_grads in grads:
        for p, g in zip(tparams, step_grads):
            p.grad = g.clone()
        topt.step()
        nopt.step([numpy_view(g) for g in step_grads])
    for i, p in enumerate(tparams):
        assert np.array_equal(numpy_view(p.detach()).view(np.uint16), nparams[i].view(np.uint16)), i
        theirs, ours = topt.state[p], nopt.state[i]
        assert theirs.get("state_dtype", "float32") == ours.get("state_dtype", "float32")
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            t = theirs[key]
            t = t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()
            assert np.array_equal(t.reshape(-1), ours[key].reshape(-1)), (i, key)


def test_param_changed_to_float64_in_place_is_refused_unchanged():
    p = torch.zeros(5000, requires_grad=True)
    opt = adam_torch.Adam([p], lr=1e-2, state_dtype="int8")
    p.grad = torch.ones(5000)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
    p.data = p.data.double()
    p.grad = torch.ones(5000, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        opt.step()
    assert all(torch.equal(v, opt.state[p][k]) for k, v in before.items())


# ---------------------------------------------------------------- the plan notices what changed under it

def step_both(topt, tparams, nopt, step):
    grads = make_grads([tuple(p.shape) for p in tparams], step)
    for p, g in zip(tparams, grads):
        p.grad = g
    topt.step()
    nopt.step([g.numpy() for g in grads])


@pytest.mark.parametrize("key", ["exp_avg_absmax", "exp_avg_sq_absmax", "exp_avg", "exp_avg_sq"])
def test_swapped_state_tensor_or_scale_is_used(key):
    """A state tensor or scale replaced in opt.state (new values) is what the next step reads: the same edit on
    adam_c.Adam's arrays gives the same bits."""
    topt, tparams, nopt, nparams = run_twins("int8", {}, steps=2, shapes=[(5000,), (300,)])
    old = topt.state[tparams[0]][key]
    new = old.clone()
    if key.endswith("_absmax"):
        new *= 2
    else:
        new[::3] = 7
    topt.state[tparams[0]][key] = new
    nopt.state[0][key][...] = new.numpy()
    step_both(topt, tparams, nopt, 3)
    assert not torch.equal(old, topt.state[tparams[0]][key])  # the old tensor was not written
    assert_same(topt, tparams, nopt, nparams, "after the swap")


@pytest.mark.parametrize("key", ["exp_avg_absmax", "max_exp_avg_sq_absmax", "exp_avg"])
def test_state_tensor_moved_in_place_is_followed(key):
    """set_() gives a state tensor new memory without replacing the object: the plan sees the new pointer."""
    topt, tparams, nopt, nparams = run_twins("int8", dict(amsgrad=True), steps=2, shapes=[(5000,)])
    t = topt.state[tparams[0]][key]
    moved = t.clone()
    moved.view(-1)[:10] = 0
    t.set_(moved)
    nopt.state[0][key][...] = moved.numpy()
    step_both(topt, tparams, nopt, 3)
    assert topt.state[tparams[0]][key].data_ptr() == moved.data_ptr()
    assert_same(topt, tparams, nopt, nparams, "after set_")


@pytest.mark.parametrize("key,exc", [("exp_avg_absmax", ValueError), ("exp_avg_sq", ValueError)])
def test_resized_state_tensor_or_scale_is_refused_unchanged(key, exc):
    topt, tparams, _, _ = run_twins("int8", {}, steps=1, shapes=[(5000,)])
    p = tparams[0]
    before = {k: v.clone() for k, v in topt.state[p].items() if isinstance(v, torch.Tensor)}
    param_before = p.detach().clone()
    topt.state[p][key].resize_(3)  # same object, same memory: only the plan's shape check can tell
    p.grad = torch.ones(5000)
    with pytest.raises(exc, match=key):
        topt.step()
    assert torch.equal(p, param_before)
    for k, v in before.items():
        if k != key:
            assert torch.equal(topt.state[p][k], v), k


def test_state_written_directly_in_another_format_is_converted():
    """opt.state entries written directly (as ZeroRedundancyOptimizer does) in float32 are quantized like a
    checkpoint before the step."""
    p = make_params([(5000,)])[0]
    ref = torch.optim.Adam([p], lr=1e-2)
    p.grad = make_grads([(5000,)], 1)[0]
    ref.step()
    ours_p = p.detach().clone().requires_grad_()
    opt = adam_torch.Adam([ours_p], lr=1e-2, state_dtype="int8")
    opt.state[ours_p] = {k: v.clone() for k, v in ref.state[p].items()}
    nparams, nopt = twin_numpy([ours_p], state_dtype="int8", lr=1e-2)
    nopt.load_state_dict(from_torch_state_dict(ref.state_dict()))
    step_both(opt, [ours_p], nopt, 2)
    assert opt.state[ours_p]["exp_avg"].dtype == torch.uint8
    assert_same(opt, [ours_p], nopt, nparams, "converted entry")


@pytest.mark.parametrize("shape", [(5000,), (40, 130)])
def test_strided_int8_codes_assigned_to_state_are_copied_exactly(shape):
    """Codes written into opt.state as a strided view (not dense) whose elements run in the param's order: the step
    must go on exactly as with the same codes in a contiguous tensor. They used to be decoded and re-encoded, which
    is not exact (a block whose largest value is negative is stored as -0.99 of its scale) and changed the params."""
    runs = []
    for strided in (False, True):
        gen = torch.Generator().manual_seed(0)
        p = torch.nn.Parameter(torch.randn(shape, generator=gen))
        g = torch.randn(shape, generator=gen) * 0.1
        opt = adam_torch.Adam([p], state_dtype="int8")
        for _ in range(3):
            p.grad = g.clone()
            opt.step()
        for key in ("exp_avg", "exp_avg_sq"):
            codes = opt.state[p][key]
            if strided:  # the same codes, every other element of a wider tensor
                wide = torch.stack([codes, torch.zeros_like(codes)], -1)
                opt.state[p][key] = wide[..., 0]
                assert not opt.state[p][key].is_contiguous()
        for _ in range(3):
            p.grad = g.clone()
            opt.step()
        runs.append((p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)}))
    assert torch.equal(runs[0][0], runs[1][0])
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key
