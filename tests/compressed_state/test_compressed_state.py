"""Compressed optimizer state (state_dtype bfloat16 / int8): bit-exact against the NumPy oracle on every target and
thread count, block edges, checkpoints and conversions, state_bytes, bad input."""
import io
import pickle

import ml_dtypes
import numpy as np
import pytest

import adam_c
from adam_c import _codec
from reference import assert_bitwise_equal
from reference_compressed import compressed_step_reference

KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
OPTIONS = [
    dict(),
    dict(amsgrad=True),
    dict(weight_decay=0.1),
    dict(weight_decay=0.05, decoupled_weight_decay=True, amsgrad=True),
    dict(weight_decay=0.05, decoupled_weight_decay=True),  # AdamW: the general kernel's compiled fast path
    dict(maximize=True),  # grads multiplied (as by a loss scale), default lerp form: another compiled fast path
    dict(maximize=True, betas=(0.5, 0.9)),  # lerp weight 0.5: torch's other lerp form
]
# odd lengths, block edges, the int8 small-tensor fallback (< 4096) and a multi-block tail
SIZES = [1, 255, 4095, 4096, 4097, 4351, 4352, 70_001]


def zero_state(n, state_dtype):
    if state_dtype == "int8" and n >= _codec.MIN_QUANTIZED_SIZE:
        return lambda: (np.zeros(n, np.uint8), np.zeros(-(-n // 256), np.float32))
    if state_dtype == "bfloat16":
        return lambda: np.zeros(n, np.uint16)
    return lambda: np.zeros(n, np.float32)


def layout_of(n, state_dtype):
    return "float32" if state_dtype == "int8" and n < _codec.MIN_QUANTIZED_SIZE else state_dtype


def grads_for(rng, sizes, steps):
    """Grads spanning many magnitudes (per tensor and step) with exact zeros, as real grads have."""
    out = []
    for _ in range(steps):
        step = []
        for n in sizes:
            g = rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.uniform(-7, 1))
            g[rng.random(n) < 0.05] = 0
            step.append(g)
        out.append(step)
    return out


def run_both(sizes, state_dtype, opts, steps=4, seed=0, state_rounding="nearest"):
    """(optimizer params and state, oracle params and state) after `steps` steps from the same start."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    ref_params = [p.copy() for p in params]
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False)
    hp.update(opts)
    opt = adam_c.Adam(params, state_dtype=state_dtype, state_rounding=state_rounding, **hp)
    keys = KEYS if hp["amsgrad"] else KEYS[:2]
    ref_state = [{k: zero_state(n, state_dtype)() for k in keys} for n in sizes]
    beta1, beta2 = hp.pop("betas")
    for step, grads in enumerate(grads_for(rng, sizes, steps), start=1):
        opt.step(grads)
        for i, (n, g) in enumerate(zip(sizes, grads)):
            ref_params[i], ref_state[i] = compressed_step_reference(
                ref_params[i], g, ref_state[i], state_dtype=layout_of(n, state_dtype), step=step,
                rounding=state_rounding, index=i, beta1=beta1, beta2=beta2, **hp)
    return params, opt, ref_params, ref_state, keys


def assert_matches(params, opt, ref_params, ref_state, keys, sizes, state_dtype):
    for i, n in enumerate(sizes):
        assert_bitwise_equal(params[i], ref_params[i], f"param {i} (n={n})")
        entry = opt.state[i]
        layout = layout_of(n, state_dtype)
        assert entry.get("state_dtype", "float32") == layout
        for k in keys:
            if layout == "int8":
                codes, absmax = ref_state[i][k]
                assert np.array_equal(entry[k], codes), f"{k} codes of param {i} (n={n})"
                assert_bitwise_equal(entry[k + "_absmax"], absmax, f"{k} absmax of param {i}")
            elif layout == "bfloat16":
                assert entry[k].dtype == np.uint16
                # as bfloat16, so NaNs compare equal whatever their sign or payload (not part of the contract)
                bf16 = ml_dtypes.bfloat16
                assert_bitwise_equal(entry[k].view(bf16), np.asarray(ref_state[i][k]).view(bf16),
                                     f"{k} of param {i} (n={n})")
            else:
                assert_bitwise_equal(entry[k], ref_state[i][k], f"{k} of param {i} (n={n})")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_oracle_bitwise_every_target(simd_target, state_dtype, opts):
    sizes = SIZES
    assert_matches(*run_both(sizes, state_dtype, opts), sizes, state_dtype)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_threads_split_on_block_boundaries_and_change_no_bits(simd_target, state_dtype, threads,
                                                              low_parallel_threshold, num_threads):
    num_threads(threads)
    adam_c.set_threading("fixed")  # threads on every step (the measured choice could stay serial)
    try:
        sizes = [300_001, 4097, 70_001, 9, 262_144 + 77]  # chunks of ~32 KiB are cut inside these tensors
        assert_matches(*run_both(sizes, state_dtype, dict(amsgrad=True), steps=3), sizes, state_dtype)
    finally:
        adam_c.set_threading("auto")


def test_bf16_stochastic_state_rounding_matches_oracle(simd_target, low_parallel_threshold, num_threads):
    num_threads(2)
    sizes = [70_001, 5, 4097]
    assert_matches(*run_both(sizes, "bfloat16", dict(amsgrad=True), state_rounding="stochastic"), sizes,
                   "bfloat16")


def test_nonfinite_grad_poisons_only_its_int8_block():
    n = 4096 + 300
    p = np.ones(n, np.float32)
    opt = adam_c.Adam([p], state_dtype="int8")
    g = np.full(n, 1e-3, np.float32)
    g[600] = np.inf
    opt.step([g])
    m = opt.state_float32()[0]["exp_avg"]
    assert np.all(np.isnan(m[512:768])) and np.all(np.isfinite(m[:512])) and np.all(np.isfinite(m[768:]))


# ---------------------------------------------------------------- memory and checkpoints

def test_state_bytes():
    big, small = np.zeros(100_000, np.float32), np.zeros(1000, np.float32)
    for state_dtype, per_el in (("float32", 8), ("bfloat16", 4), ("int8", 2)):
        opt = adam_c.Adam([big, small], state_dtype=state_dtype)
        assert opt.state_bytes() == 0
        opt.step([np.ones_like(big), np.ones_like(small)])
        scales = 2 * 4 * -(-100_000 // 256) if state_dtype == "int8" else 0
        small_bytes = 8 * 1000 if state_dtype == "int8" else per_el * 1000
        assert opt.state_bytes() == per_el * 100_000 + scales + small_bytes


def trained(state_dtype, n=5000, steps=3, amsgrad=True):
    rng = np.random.default_rng(1)
    p = rng.standard_normal(n).astype(np.float32)
    q = rng.standard_normal(7).astype(np.float32)
    opt = adam_c.Adam([p, q], amsgrad=amsgrad, state_dtype=state_dtype)
    for _ in range(steps):
        opt.step([rng.standard_normal(n).astype(np.float32), rng.standard_normal(7).astype(np.float32)])
    return opt, p, q


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_dict_roundtrip_is_exact_and_pickles(state_dtype):
    opt, p, q = trained(state_dtype)
    sd = pickle.loads(pickle.dumps(opt.state_dict()))
    opt2 = adam_c.Adam([p.copy(), q.copy()], amsgrad=True, state_dtype=state_dtype)
    opt2.load_state_dict(sd)
    for i in (0, 1):
        for k, v in opt.state[i].items():
            got = opt2.state[i][k]
            assert (got == v) if isinstance(v, (int, str)) else np.array_equal(got, v), k
    g = [np.full(5000, 0.1, np.float32), np.full(7, 0.1, np.float32)]
    p2 = opt2.param_groups[0]["params"][0]
    opt.step(g)
    opt2.step(g)
    assert_bitwise_equal(p2, p, "param after a step from the loaded state")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_dict_survives_torch_save_weights_only(state_dtype):
    torch = pytest.importorskip("torch")
    opt, p, q = trained(state_dtype)
    sd = opt.state_dict()
    as_tensors = {"param_groups": sd["param_groups"],
                  "state": {i: {k: (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16)
                                    if isinstance(v, np.ndarray) and v.dtype == np.uint16
                                    else torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                                for k, v in e.items()} for i, e in sd["state"].items()}}
    buf = io.BytesIO()
    torch.save(as_tensors, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    opt2 = adam_c.Adam([p.copy(), q.copy()], amsgrad=True, state_dtype=state_dtype)
    opt2.load_state_dict(loaded)
    for k, v in opt.state[0].items():
        got = opt2.state[0][k]
        assert (got == v) if isinstance(v, (int, str)) else np.array_equal(got, v), k


@pytest.mark.parametrize("src,dst", [("float32", "int8"), ("int8", "float32"), ("bfloat16", "int8"),
                                     ("float32", "bfloat16"), ("bfloat16", "float32")])
def test_conversion_between_layouts(src, dst):
    opt, p, q = trained(src)
    fp32 = opt.state_float32()
    opt2 = adam_c.Adam([p.copy(), q.copy()], amsgrad=True, state_dtype=dst)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[0].get("state_dtype", "float32") == dst
    back = opt2.state_float32()
    for k in KEYS:
        a, b = back[0][k], fp32[0][k]
        if dst == "int8":  # one requantization: the dynamic map's error bound
            blockmax = np.repeat(_codec.absmax_blocks(b.reshape(-1)), 256)[:b.size]
            assert np.all(np.abs(a - b) <= np.maximum(0.0071 * blockmax, 0.071 * np.abs(b)) + 1e-30), k
        elif dst == "bfloat16":
            np.testing.assert_allclose(a, b, rtol=2 ** -8, atol=0)
        else:
            assert_bitwise_equal(a, b, k)  # decoding is exact
        if dst != "bfloat16":  # the 7-element param keeps float32 state under int8: exact
            assert_bitwise_equal(back[1][k], fp32[1][k], k)


def test_torch_adam_checkpoint_into_int8_and_back():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(6000).astype(np.float32)))
    topt = torch.optim.Adam([w], lr=1e-3)
    for _ in range(3):
        w.grad = torch.from_numpy(rng.standard_normal(6000).astype(np.float32))
        topt.step()
    buf = io.BytesIO()
    torch.save(topt.state_dict(), buf)
    buf.seek(0)
    tsd = torch.load(buf, weights_only=True)
    p = w.detach().numpy().copy()
    opt = adam_c.Adam([p], lr=1e-3, state_dtype="int8")
    opt.load_state_dict(tsd)
    assert opt.state[0]["state_dtype"] == "int8" and opt.state[0]["step"] == 3
    m = opt.state_float32()[0]["exp_avg"]
    ref = tsd["state"][0]["exp_avg"].numpy()
    assert np.abs(m - ref).max() <= 0.0071 * np.abs(ref).max()
    back = adam_c.Adam([p.copy()], lr=1e-3)  # and back to float32 state
    back.load_state_dict(opt.state_dict())
    assert back.state[0]["exp_avg"].dtype == np.float32
    assert_bitwise_equal(back.state[0]["exp_avg"], m, "decoded exp_avg")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(state_dtype="int4"), ValueError, "state_dtype"),
    (dict(state_dtype=8), TypeError, "state_dtype"),
    (dict(state_dtype="float16"), ValueError, "state_dtype"),
    (dict(state_rounding="up"), ValueError, "state_rounding"),
    (dict(state_dtype="int8", state_rounding="stochastic"), ValueError, "state_rounding"),
])
def test_bad_state_options_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        adam_c.Adam([np.zeros(5, np.float32)], **kwargs)


def test_float64_params_refuse_compressed_state_and_nothing_changes():
    with pytest.raises(ValueError, match=r"params\[0\] has dtype float64.*float32 compute"):
        adam_c.Adam([np.zeros(5, np.float64)], state_dtype="int8")
    opt = adam_c.Adam([np.zeros(5, np.float32)], state_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"float64.*float32 compute"):
        opt.add_param_group({"params": [np.zeros(3, np.float64)]})
    assert len(opt.param_groups) == 1 and len(opt._params) == 1


def test_bad_compressed_checkpoint_is_refused_unchanged():
    opt, p, q = trained("int8")
    before = {k: v.copy() for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    sd = opt.state_dict()
    bad = pickle.loads(pickle.dumps(sd))
    del bad["state"][0]["exp_avg_absmax"]
    with pytest.raises(ValueError, match="exp_avg_absmax"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["exp_avg"] = bad["state"][0]["exp_avg"].astype(np.float32)
    with pytest.raises(TypeError, match="uint8"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["state_dtype"] = "int3"
    with pytest.raises(ValueError, match="state_dtype"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["exp_avg_sq_absmax"] = bad["state"][0]["exp_avg_sq_absmax"][:-1]
    with pytest.raises(ValueError, match="exp_avg_sq_absmax"):
        opt.load_state_dict(bad)
    for value in (-1.0, np.inf):
        bad = pickle.loads(pickle.dumps(sd))
        bad["state"][0]["exp_avg_absmax"][3] = value
        with pytest.raises(ValueError, match="exp_avg_absmax.*negative or infinite"):
            opt.load_state_dict(bad)
    nan_block = pickle.loads(pickle.dumps(sd))
    nan_block["state"][0]["exp_avg_absmax"][3] = np.nan  # what a block that held inf/NaN stores: loads
    trained("int8")[0].load_state_dict(nan_block)
    for k, v in before.items():
        assert np.array_equal(opt.state[0][k], v), k


# ---------------------------------------------------------------- the harness and the bench run

def test_quality_harness_native_equals_emulation():
    """The quality harness's emulation (round the fp32 state after each step) is exactly the kernel's compressed
    state: the same final loss bits for the demo MLP (a short run)."""
    from adam_c import quality
    for dtype in ("bfloat16", "int8"):
        native = quality.run_mlp(dtype, ["float32", dtype], epochs=2)
        emulated = quality.run_mlp(dtype, ["float32"], epochs=2)
        assert native["curve"] == emulated["curve"], dtype


def test_compressed_bench_runs():
    from adam_c.bench import Settings
    from adam_c.bench.compressed import run_compressed
    settings = Settings(quick=True)
    settings.min_rounds, settings.max_rounds, settings.budget_s = 1, 2, 0.0
    lines = []
    records = run_compressed(settings, 1, n=50_000, log=lambda *a: lines.extend("".join(a).splitlines()))
    assert lines and max(len(line) for line in lines) <= 100, max(lines, key=len)
    names = {r["implementation"] for r in records}
    assert {"adam_c float32", "adam_c bfloat16", "adam_c int8", "floor int8"} <= names
    by = {r["implementation"]: r for r in records}
    assert by["adam_c int8"]["state_bytes"] < by["adam_c bfloat16"]["state_bytes"] < by["adam_c float32"]["state_bytes"]


# ---------------------------------------------------------------- mixed precision (C API through ctypes)

def _c_api():
    """The installed shared library and ctypes mirrors of adamc_hparams / adamc_tensor (their struct_size is
    checked by the library itself, so a wrong mirror fails with ADAMC_ERR_STRUCT_SIZE, not silently)."""
    import ctypes
    import os
    lib = ctypes.CDLL(os.path.join(adam_c.get_library_dir(), "libadam_c.so"))

    class HParams(ctypes.Structure):
        _fields_ = [("struct_size", ctypes.c_size_t), ("lr", ctypes.c_double), ("beta1", ctypes.c_double),
                    ("beta2", ctypes.c_double), ("eps", ctypes.c_double), ("weight_decay", ctypes.c_double),
                    ("amsgrad", ctypes.c_int), ("maximize", ctypes.c_int), ("decoupled_weight_decay", ctypes.c_int)]

    class Tensor(ctypes.Structure):
        _fields_ = [("struct_size", ctypes.c_size_t), ("param", ctypes.c_void_p), ("grad", ctypes.c_void_p),
                    ("exp_avg", ctypes.c_void_p), ("exp_avg_sq", ctypes.c_void_p),
                    ("max_exp_avg_sq", ctypes.c_void_p), ("n", ctypes.c_size_t), ("step", ctypes.c_int64),
                    ("hp", ctypes.POINTER(HParams)), ("dtype", ctypes.c_int), ("grad_float32", ctypes.c_int),
                    ("rounding", ctypes.c_int), ("master", ctypes.c_void_p), ("ema", ctypes.c_void_p),
                    ("index", ctypes.c_uint64), ("state_dtype", ctypes.c_int), ("state_rounding", ctypes.c_int),
                    ("exp_avg_absmax", ctypes.c_void_p), ("exp_avg_sq_absmax", ctypes.c_void_p),
                    ("max_exp_avg_sq_absmax", ctypes.c_void_p)]

    lib.adamc_step_multi.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t]
    return lib, HParams, Tensor


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("param_dtype", [2, 3], ids=["float16", "bfloat16"])  # ADAMC_FLOAT16, ADAMC_BFLOAT16
def test_low_precision_params_with_master_and_compressed_state(state_dtype, param_dtype):
    """float16/bfloat16 params with a float32 master and compressed state: the master and the state follow
    exactly the float32-param run with the same grads, and the param is the master rounded to nearest even."""
    import ctypes
    import ml_dtypes
    lib, HParams, Tensor = _c_api()
    n, steps = 5000, 3
    rng = np.random.default_rng(4)
    start = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) * np.float32(0.01) for _ in range(steps)]
    ref = start.copy()
    opt = adam_c.Adam([ref], lr=1e-2, amsgrad=True, state_dtype=state_dtype)
    for g in grads:
        opt.step([g])

    low = np.float16 if param_dtype == 2 else ml_dtypes.bfloat16
    param = start.astype(low)
    master = start.copy()
    hp = HParams()
    lib.adamc_hparams_init(ctypes.byref(hp))
    hp.lr, hp.amsgrad = 1e-2, 1
    code = np.uint8 if state_dtype == "int8" else np.uint16
    state = [np.zeros(n, code) for _ in range(3)]
    scales = [np.zeros(-(-n // 256), np.float32) for _ in range(3)]
    for step, g in enumerate(grads, start=1):
        t = Tensor()
        lib.adamc_tensor_init(ctypes.byref(t))
        t.param, t.grad, t.n, t.step, t.hp, t.dtype = param.ctypes.data, g.ctypes.data, n, step, ctypes.pointer(hp), \
            param_dtype
        t.grad_float32, t.master = 1, master.ctypes.data
        t.exp_avg, t.exp_avg_sq, t.max_exp_avg_sq = (s.ctypes.data for s in state)
        t.state_dtype = 2 if state_dtype == "int8" else 1
        if state_dtype == "int8":
            t.exp_avg_absmax, t.exp_avg_sq_absmax, t.max_exp_avg_sq_absmax = (s.ctypes.data for s in scales)
        assert lib.adamc_step_multi(ctypes.byref(t), 1) == 0
    assert_bitwise_equal(master, ref, "master")
    assert np.array_equal(param.view(np.uint16), ref.astype(low).view(np.uint16))
    for k, s, a in zip(KEYS, state, scales):
        assert np.array_equal(s, opt.state[0][k]), k
        if state_dtype == "int8":
            assert_bitwise_equal(a, opt.state[0][k + "_absmax"], k)


def test_c_api_refuses_bad_state_settings_and_writes_nothing():
    import ctypes
    lib, HParams, Tensor = _c_api()
    n = 300
    p, g = np.ones(n, np.float32), np.ones(n, np.float32)
    m, v = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    hp = HParams()
    lib.adamc_hparams_init(ctypes.byref(hp))

    def status(**fields):
        t = Tensor()
        lib.adamc_tensor_init(ctypes.byref(t))
        t.param, t.grad, t.exp_avg, t.exp_avg_sq, t.n, t.hp = (p.ctypes.data, g.ctypes.data, m.ctypes.data,
                                                                v.ctypes.data, n, ctypes.pointer(hp))
        t.state_dtype = 2
        for k, val in fields.items():
            setattr(t, k, val)
        return lib.adamc_step_multi(ctypes.byref(t), 1)

    scale = np.zeros(2, np.float32)
    assert status() == 1                                    # int8 without its scales: NULL pointer
    assert status(state_dtype=7) == 5                       # unknown state type: ADAMC_ERR_DTYPE
    assert status(state_rounding=1, exp_avg_absmax=scale.ctypes.data, exp_avg_sq_absmax=scale.ctypes.data) == 9
    assert status(exp_avg_absmax=m.ctypes.data, exp_avg_sq_absmax=scale.ctypes.data) == 3  # scale overlaps m
    assert np.all(p == 1) and not m.any() and not v.any()


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_grad_scale_and_ema_fused_with_compressed_state(state_dtype):
    """The fused mixed-precision options on the compressed-state kernels: a loss scale divides the grads in the
    kernel (the same bits as pre-scaled grads) and the EMA follows the updated params (first step copies, then the
    decay)."""
    import ctypes
    lib, HParams, Tensor = _c_api()

    class Options(ctypes.Structure):
        _fields_ = [("struct_size", ctypes.c_size_t), ("grad_scale", ctypes.c_double),
                    ("max_grad_norm", ctypes.c_double), ("skip_nonfinite", ctypes.c_int),
                    ("compute_norm", ctypes.c_int), ("ema_decay", ctypes.c_double), ("seed", ctypes.c_uint64)]

    lib.adamc_step_multi_ex.argtypes = [ctypes.POINTER(Tensor), ctypes.c_size_t, ctypes.POINTER(Options),
                                        ctypes.c_void_p, ctypes.c_void_p]
    n, steps, scale, decay = 4500, 3, 1024.0, 0.9
    rng = np.random.default_rng(6)
    start = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) * np.float32(8.0) for _ in range(steps)]
    ref = start.copy()
    opt = adam_c.Adam([ref], lr=1e-2, state_dtype=state_dtype)
    ema_ref = None
    inv = np.float32(1.0 / scale)
    for g in grads:
        opt.step([g * inv])
        ema_ref = ref.copy() if ema_ref is None else ema_ref * np.float32(decay) + ref * np.float32(1 - decay)

    p, ema = start.copy(), np.zeros(n, np.float32)
    hp = HParams()
    lib.adamc_hparams_init(ctypes.byref(hp))
    hp.lr = 1e-2
    o = Options()
    lib.adamc_step_options_init(ctypes.byref(o))
    o.grad_scale, o.ema_decay = scale, decay
    code = np.uint8 if state_dtype == "int8" else np.uint16
    m, v = np.zeros(n, code), np.zeros(n, code)
    sm, sv = np.zeros(-(-n // 256), np.float32), np.zeros(-(-n // 256), np.float32)
    for step, g in enumerate(grads, start=1):
        t = Tensor()
        lib.adamc_tensor_init(ctypes.byref(t))
        t.param, t.grad, t.exp_avg, t.exp_avg_sq, t.n, t.step, t.hp = (p.ctypes.data, g.ctypes.data, m.ctypes.data,
                                                                       v.ctypes.data, n, step, ctypes.pointer(hp))
        t.ema, t.state_dtype = ema.ctypes.data, (2 if state_dtype == "int8" else 1)
        if state_dtype == "int8":
            t.exp_avg_absmax, t.exp_avg_sq_absmax = sm.ctypes.data, sv.ctypes.data
        assert lib.adamc_step_multi_ex(ctypes.byref(t), 1, ctypes.byref(o), None, None) == 0
    assert_bitwise_equal(p, ref, "param")
    assert np.array_equal(m, opt.state[0]["exp_avg"]) and np.array_equal(v, opt.state[0]["exp_avg_sq"])
    assert_bitwise_equal(ema, ema_ref, "ema")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("param_dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("opts", [dict(), dict(amsgrad=True, weight_decay=0.01, decoupled_weight_decay=True),
                                  dict(weight_decay=0.01, decoupled_weight_decay=True, maximize=True)],
                         ids=["default", "amsgrad,adamw", "adamw,maximize"])  # the last: a compiled fast path
def test_low_precision_params_without_master_and_compressed_state(simd_target, state_dtype, param_dtype, opts):
    """All-low-precision training (torch's bf16 fused step keeps bf16 state too): float16/bfloat16 params and grads,
    no master, compressed state. Each step is the float32 oracle on the params read exactly as float32, the param
    rounded to nearest even afterwards."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    low = np.dtype(np.float16) if param_dtype == "float16" else np.dtype(ml_dtypes.bfloat16)
    sizes = [7, 4095, 4097, 70_001]
    rng = np.random.default_rng(11)
    params = [rng.standard_normal(n).astype(np.float32).astype(low) for n in sizes]
    ref = [p.astype(np.float32) for p in params]
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False)
    hp.update(opts)
    opt = adam_c.Adam(params, state_dtype=state_dtype, **hp)
    keys = KEYS if hp["amsgrad"] else KEYS[:2]
    ref_state = [{k: zero_state(n, state_dtype)() for k in keys} for n in sizes]
    beta1, beta2 = hp.pop("betas")
    for step, grads in enumerate(grads_for(rng, sizes, 3), start=1):
        grads = [g.astype(low) for g in grads]
        opt.step(grads)
        for i, (n, g) in enumerate(zip(sizes, grads)):
            new, ref_state[i] = compressed_step_reference(
                ref[i], g.astype(np.float32), ref_state[i], state_dtype=layout_of(n, state_dtype), step=step,
                index=i, beta1=beta1, beta2=beta2, **hp)
            ref[i] = new.astype(low).astype(np.float32)  # the stored param, rounded to nearest even
    for i, n in enumerate(sizes):
        assert np.array_equal(params[i].view(np.uint16), ref[i].astype(low).view(np.uint16)), f"param {i} (n={n})"
        for k in keys:
            if layout_of(n, state_dtype) == "int8":
                assert np.array_equal(opt.state[i][k], ref_state[i][k][0]), f"{k} codes of param {i}"
                assert_bitwise_equal(opt.state[i][k + "_absmax"], ref_state[i][k][1], f"{k} absmax of param {i}")
            elif layout_of(n, state_dtype) == "bfloat16":
                assert np.array_equal(opt.state[i][k], ref_state[i][k]), f"{k} of param {i}"
            else:
                assert_bitwise_equal(opt.state[i][k], ref_state[i][k], f"{k} of param {i}")


def test_all_bf16_with_bf16_state_tracks_torch_bf16_fused_adam():
    """adam_c with bfloat16 params, grads and state follows torch.optim.Adam(fused=True) on bfloat16 params (whose
    state is bfloat16): both do float32 math on bfloat16 storage; torch may fuse multiply-adds, so the params may
    differ by a bfloat16 rounding step now and then, never more."""
    torch = pytest.importorskip("torch")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    n, steps = 50_000, 20
    rng = np.random.default_rng(5)
    start = rng.standard_normal(n).astype(np.float32).astype(ml_dtypes.bfloat16)
    grads = [(rng.standard_normal(n) * 1e-2).astype(np.float32).astype(ml_dtypes.bfloat16) for _ in range(steps)]
    ours = start.copy()
    opt = adam_c.Adam([ours], lr=1e-3, state_dtype="bfloat16")
    tp = torch.nn.Parameter(torch.from_numpy(start.view(np.uint16).copy()).view(torch.bfloat16))
    topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
    for g in grads:
        opt.step([g])
        tp.grad = torch.from_numpy(g.view(np.uint16).copy()).view(torch.bfloat16)
        topt.step()
    theirs = tp.detach().float().numpy()
    mine = ours.astype(np.float32)
    spacing = np.abs(mine) * 2.0 ** -7 + 1e-30  # one bfloat16 rounding step at that magnitude, generously
    assert np.all(np.abs(mine - theirs) <= spacing), np.max(np.abs(mine - theirs) / spacing)
    assert np.mean(mine == theirs) > 0.95
    for key in ("exp_avg", "exp_avg_sq"):
        theirs = topt.state[tp][key].float().numpy()
        mine = opt.state_float32()[0][key]
        # the same bfloat16 values but where a rounding tie breaks the other way (a value next to zero included)
        assert np.mean(mine == theirs) > 0.999, key
        assert np.all(np.abs(mine - theirs) <= np.maximum(np.abs(theirs) * 2.0 ** -7,
                                                          np.abs(theirs).max() * 1e-6)), key


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_denormal_blocks_match_oracle_every_target(simd_target, state_dtype):
    """A block whose state is denormal (its absmax too: 1/absmax overflows to inf) encodes as on every other
    target and as the oracle; blocks of zeros and of mixed signs beside it."""
    n = 4096 + 3 * 256 + 5
    rng = np.random.default_rng(8)
    params = [rng.standard_normal(n).astype(np.float32)]
    ref_params = [params[0].copy()]
    grads = rng.standard_normal(n).astype(np.float32) * np.float32(1e-3)
    grads[:256] = np.float32(1e-39) * np.sign(rng.standard_normal(256)).astype(np.float32)  # denormal m
    grads[256:512] = 0                                                                     # a block of zeros
    grads[512:768] = np.float32(2e-45)                                                     # the smallest
    opt = adam_c.Adam(params, lr=1e-2, state_dtype=state_dtype)
    state = {k: zero_state(n, state_dtype)() for k in KEYS[:2]}
    for step in (1, 2, 3):
        opt.step([grads])
        ref_params[0], state = compressed_step_reference(ref_params[0], grads, state, state_dtype=state_dtype,
                                                         step=step, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                                         weight_decay=0.0, maximize=False,
                                                         decoupled_weight_decay=False)
    assert_matches(params, opt, ref_params, [state], KEYS[:2], [n], state_dtype)


def test_state_changed_in_place_is_refused_naming_it_and_nothing_changes():
    """A block-scale or code array of int8 state reinterpreted or resized in place: the next step refuses it with
    an error naming that array, and writes nothing."""
    rng = np.random.default_rng(9)
    p = rng.standard_normal(5000).astype(np.float32)
    g = rng.standard_normal(5000).astype(np.float32)
    opt = adam_c.Adam([p], state_dtype="int8")
    opt.step([g])
    before = p.copy()
    scale = opt.state[0]["exp_avg_absmax"]
    scale.dtype = np.int32
    with pytest.raises(TypeError, match=r"opt\.state\[0\]\['exp_avg_absmax'\] has dtype int32.*float32"):
        opt.step([g])
    scale.dtype = np.float32
    codes = opt.state[0]["exp_avg_sq"]
    codes.dtype = np.uint16
    with pytest.raises(TypeError, match=r"opt\.state\[0\]\['exp_avg_sq'\] has dtype uint16.*uint8"):
        opt.step([g])
    codes.dtype = np.uint8
    scale = opt.state[0]["exp_avg_sq_absmax"]
    saved = scale.copy()
    scale.resize(3, refcheck=False)
    with pytest.raises(ValueError, match=r"opt\.state\[0\]\['exp_avg_sq_absmax'\] has 3 elements.*20"):
        opt.step([g])
    scale.resize(saved.size, refcheck=False)
    scale[...] = saved
    assert np.array_equal(p, before) and opt.state[0]["step"] == 1
    opt.step([g])  # restored: steps again
    assert opt.state[0]["step"] == 2
