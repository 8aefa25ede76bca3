"""Numerics of adam_c's kernels against the NumPy oracle: every SIMD target, dtype, option set and size, threads, buffers."""
import array
import itertools

import numpy as np
import pytest

import adam_c
from adam_c import _core
from reference import ReferenceAdam, adam_step_reference, assert_bitwise_equal

# vector widths -1/0/+1 for 256-bit (8 float32, 4 float64) and 512-bit (16 float32, 8 float64) registers,
# twice that, and an uneven mid size
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000]
BIG = 100003  # large enough to run in a parallel region
DTYPES = [np.float32, np.float64]
STEPS = (1, 2, 50)  # step 1 has the largest bias corrections; 50 a typical later one

LR, BETA2, EPS, WEIGHT_DECAY = 3e-3, 0.997, 1e-7, 0.1


def _options(amsgrad, decay, maximize, beta1):
    return {"amsgrad": amsgrad, "weight_decay": 0.0 if decay == "none" else WEIGHT_DECAY,
            "decoupled_weight_decay": decay == "decoupled", "maximize": maximize, "beta1": beta1}


# beta1 = 0.9: lerp weight 0.1 < 0.5 (start + w*(end - start)); beta1 = 0.3: weight 0.7, torch's other form
OPTION_GRID = [
    pytest.param(_options(ams, decay, mx, b1),
                 id=f"{'ams' if ams else 'noams'}-{decay}-{'max' if mx else 'min'}-b1={b1}")
    for ams, decay, mx, b1 in itertools.product([False, True], ["none", "l2", "decoupled"], [False, True],
                                                [0.9, 0.3])
]
# a subset for the expensive cases: every flag on at least once, both lerp forms
OPTION_SUBSET = [
    pytest.param(_options(False, "none", False, 0.9), id="plain"),
    pytest.param(_options(True, "l2", True, 0.9), id="ams-l2-max"),
    pytest.param(_options(False, "decoupled", False, 0.3), id="decoupled-b1=0.3"),
    pytest.param(_options(True, "decoupled", True, 0.3), id="ams-decoupled-max-b1=0.3"),
]


def random_buffers(n, dtype, seed, shape=None):
    """param, exp_avg, exp_avg_sq, max_exp_avg_sq with values over several orders of magnitude; max_exp_avg_sq
    is sometimes above and sometimes below exp_avg_sq so both sides of the maximum are taken."""
    rng = np.random.default_rng(seed)
    shape = (n,) if shape is None else shape
    scale = 10.0 ** rng.uniform(-3, 2, size=shape)
    p = np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)
    m = np.asarray(rng.standard_normal(shape) * 0.1 * scale, dtype=dtype)
    v = np.asarray(rng.random(shape) * 0.01 * scale * scale, dtype=dtype)
    vmax = np.asarray(v * rng.uniform(0.5, 1.5, size=shape), dtype=dtype)
    return p, m, v, vmax


def random_grad(n, dtype, seed, shape=None):
    rng = np.random.default_rng(seed + 1_000_003)
    shape = (n,) if shape is None else shape
    return np.asarray(rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 1, size=shape), dtype=dtype)


def step_kwargs(opts, step):
    return dict(step=step, lr=LR, beta1=opts["beta1"], beta2=BETA2, eps=EPS, weight_decay=opts["weight_decay"],
                amsgrad=opts["amsgrad"], maximize=opts["maximize"],
                decoupled_weight_decay=opts["decoupled_weight_decay"])


def run_and_compare(n, dtype, opts, seed, shape=None):
    """Steps STEPS through adam_c.adam_step and the oracle from the same state; every buffer must agree in every
    bit after every step, and the grad must not be written."""
    p, m, v, vmax = random_buffers(n, dtype, seed, shape)
    rp, rm, rv, rvmax = p.copy(), m.copy(), v.copy(), vmax.copy()
    for step in STEPS:
        g = random_grad(n, dtype, seed + step, shape)
        g_before = g.copy()
        kw = step_kwargs(opts, step)
        adam_c.adam_step(p, g, m, v, max_exp_avg_sq=vmax if opts["amsgrad"] else None, **kw)
        rp, rm, rv, new_vmax = adam_step_reference(rp, g, rm, rv, rvmax, **kw)
        where = f"n={n} {np.dtype(dtype).name} step={step} {opts}"
        assert_bitwise_equal(p, rp, f"param, {where}")
        assert_bitwise_equal(m, rm, f"exp_avg, {where}")
        assert_bitwise_equal(v, rv, f"exp_avg_sq, {where}")
        if opts["amsgrad"]:
            rvmax = new_vmax
            assert_bitwise_equal(vmax, rvmax, f"max_exp_avg_sq, {where}")
        assert_bitwise_equal(g, g_before, f"grad (must be read only), {where}")
    return p


# ---------------------------------------------------------------- the grid


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("opts", OPTION_GRID)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_adam_step_matches_reference_bitwise(simd_target, dtype, opts, n):
    run_and_compare(n, dtype, opts, seed=n * 7 + 1)


@pytest.mark.parametrize("opts", OPTION_SUBSET)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_adam_step_large_parallel_matches_reference(simd_target, dtype, opts, parallel_threshold, num_threads):
    if _core.get_parallel_threshold() >= BIG // 2:
        parallel_threshold(BIG // 4)
    assert BIG > _core.get_parallel_threshold()  # this step runs in a parallel region
    num_threads(2)
    run_and_compare(BIG, dtype, opts, seed=11)


@pytest.mark.parametrize("opts", OPTION_GRID)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_optimizer_multi_tensor_matches_reference(simd_target, dtype, opts, low_parallel_threshold, num_threads):
    """One optimizer over a tensor of every size (plus 0-d and 2-D ones): the multi-tensor C call, split across
    tensor boundaries by two threads, against the oracle step by step."""
    num_threads(2)
    shapes = [(n,) for n in SIZES] + [(), (3, 5), (0, 4)]
    params = [random_buffers(int(np.prod(s)), dtype, seed=i, shape=s)[0] for i, s in enumerate(shapes)]
    hp = {"lr": LR, "betas": (opts["beta1"], BETA2), "eps": EPS, "weight_decay": opts["weight_decay"],
          "amsgrad": opts["amsgrad"], "maximize": opts["maximize"],
          "decoupled_weight_decay": opts["decoupled_weight_decay"]}
    ref = ReferenceAdam([{"params": params, **hp}])
    opt = adam_c.Adam(params, lr=LR, betas=(opts["beta1"], BETA2), eps=EPS, weight_decay=opts["weight_decay"],
                      amsgrad=opts["amsgrad"], maximize=opts["maximize"],
                      decoupled_weight_decay=opts["decoupled_weight_decay"])
    for k in range(3):
        grads = [random_grad(int(np.prod(s)), dtype, seed=100 * k + i, shape=s) for i, s in enumerate(shapes)]
        opt.step(grads)
        ref.step(grads)
        for i, (p, rp) in enumerate(zip(params, ref.params)):
            assert_bitwise_equal(p, rp, f"param {i} shape {shapes[i]} after step {k + 1}")
        state = opt.state
        for i, st in enumerate(ref.groups[0]["state"]):
            assert state[i]["step"] == k + 1
            assert_bitwise_equal(state[i]["exp_avg"], st["exp_avg"], f"exp_avg {i}")
            assert_bitwise_equal(state[i]["exp_avg_sq"], st["exp_avg_sq"], f"exp_avg_sq {i}")
            if opts["amsgrad"]:
                assert_bitwise_equal(state[i]["max_exp_avg_sq"], st["max_exp_avg_sq"], f"max_exp_avg_sq {i}")


# ---------------------------------------------------------------- edge values


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["noams", "ams"])
def test_special_values_match_reference(simd_target, dtype, amsgrad):
    """inf, NaN, signed zeros, subnormals and huge values go through the same IEEE operations as the oracle."""
    finfo = np.finfo(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, finfo.tiny, -finfo.tiny, finfo.smallest_subnormal,
                         finfo.max, -finfo.max, 1.0, -1.0, 1e-30, 1e30], dtype=dtype)
    k = specials.size
    # every combination of a special param, grad, exp_avg and a special-ish exp_avg_sq/max
    idx = np.array(list(itertools.product(range(k), repeat=3)))
    p = specials[idx[:, 0]].copy()
    g = specials[idx[:, 1]].copy()
    m = specials[idx[:, 2]].copy()
    vs = np.abs(specials)
    v = vs[np.roll(idx[:, 0], 1)].copy()
    vmax = np.array(vs[np.roll(idx[:, 1], 3)], dtype=dtype)
    for opts in (_options(amsgrad, "none", False, 0.9), _options(amsgrad, "l2", True, 0.3),
                 _options(amsgrad, "decoupled", False, 0.9)):
        kw = step_kwargs(opts, 3)
        pp, mm, vv, vvmax = p.copy(), m.copy(), v.copy(), vmax.copy()
        with np.errstate(all="ignore"):
            adam_c.adam_step(pp, g, mm, vv, max_exp_avg_sq=vvmax if amsgrad else None, **kw)
        rp, rm, rv, rvmax = adam_step_reference(p, g, m, v, vmax, **kw)
        assert_bitwise_equal(pp, rp, f"param {opts}")
        assert_bitwise_equal(mm, rm, f"exp_avg {opts}")
        assert_bitwise_equal(vv, rv, f"exp_avg_sq {opts}")
        if amsgrad:
            assert_bitwise_equal(vvmax, rvmax, f"max_exp_avg_sq {opts}")


def test_amsgrad_max_propagates_nan():
    """torch.maximum propagates NaN from either side; so must max_exp_avg_sq."""
    p = np.ones(4)
    g = np.array([np.nan, 1.0, 1.0, np.nan])
    m = np.zeros(4)
    v = np.zeros(4)
    vmax = np.array([0.0, np.nan, 0.0, np.nan])
    adam_c.adam_step(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True,
                     max_exp_avg_sq=vmax)
    assert np.isnan(vmax).tolist() == [True, True, False, True]
    assert np.isnan(p).tolist() == [True, True, False, True]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("hp", [
    dict(beta1=0.0, beta2=0.999, lr=1e-3, eps=1e-8),
    dict(beta1=0.9, beta2=0.0, lr=1e-3, eps=1e-8),
    dict(beta1=0.5, beta2=0.5, lr=1e-3, eps=1e-8),          # lerp weight exactly 0.5: the large form
    dict(beta1=0.5 + 1e-12, beta2=0.9, lr=1e-3, eps=1e-8),  # weight < 0.5 in double, == 0.5 in float32
    dict(beta1=0.9, beta2=0.999, lr=0.0, eps=1e-8, weight_decay=0.5, decoupled_weight_decay=True),
    dict(beta1=0.9, beta2=0.999, lr=1e-3, eps=0.0),
    dict(beta1=0.999999, beta2=0.9999999, lr=10.0, eps=1e-3, weight_decay=200.0, decoupled_weight_decay=True),
    dict(beta1=0.9, beta2=0.999, lr=1e-3, eps=1e-8, weight_decay=1e3),
], ids=["beta1=0", "beta2=0", "betas=0.5", "beta1=0.5+1e-12", "lr=0-decoupled", "eps=0", "extreme", "l2-huge"])
def test_edge_hyperparameters_match_reference(simd_target, dtype, hp):
    n = 67
    p, m, v, vmax = random_buffers(n, dtype, seed=5)
    for step in (1, 2, 1000):
        g = random_grad(n, dtype, seed=step)
        kw = dict(hp, step=step, amsgrad=True)
        rp, rm, rv, rvmax = adam_step_reference(p, g, m, v, vmax, **kw)
        with np.errstate(all="ignore"):
            adam_c.adam_step(p, g, m, v, max_exp_avg_sq=vmax, **kw)
        for name, a, b in (("param", p, rp), ("exp_avg", m, rm), ("exp_avg_sq", v, rv), ("max", vmax, rvmax)):
            assert_bitwise_equal(a, b, f"{name} step {step} {hp}")


def test_lr_zero_leaves_param_unchanged():
    """A sanity check of the kernel and the oracle together: lr=0 moves the moments but not the param."""
    p, m, v, _ = random_buffers(100, np.float64, seed=3)
    p0, m0, v0 = p.copy(), m.copy(), v.copy()
    g = random_grad(100, np.float64, seed=3)
    adam_c.adam_step(p, g, m, v, step=1, lr=0.0, beta1=0.9, beta2=0.999, eps=1e-8)
    assert_bitwise_equal(p, p0, "param")
    assert not np.array_equal(m, m0) and not np.array_equal(v, v0)
    _, rm, rv, _ = adam_step_reference(p0, g, m0, v0, step=1, lr=0.0, beta1=0.9, beta2=0.999, eps=1e-8)
    assert_bitwise_equal(m, rm, "exp_avg")
    assert_bitwise_equal(v, rv, "exp_avg_sq")


# ---------------------------------------------------------------- targets and threads


@pytest.mark.parametrize("opts", OPTION_GRID)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_all_targets_bit_identical(restore_target, dtype, opts):
    """Every supported SIMD target gives the same bits (the avx512 one is checked where the CPU has it)."""
    targets = [t for t in _core.target_names() if _core.target_supported(t)]
    if len(targets) < 2:
        pytest.skip(f"only one SIMD target is supported on this CPU ({targets}); nothing to compare")
    n = 4099
    results = {}
    for target in targets:
        adam_c.set_target(target)
        p, m, v, vmax = random_buffers(n, dtype, seed=21)
        for step in STEPS:
            g = random_grad(n, dtype, seed=step)
            adam_c.adam_step(p, g, m, v, max_exp_avg_sq=vmax if opts["amsgrad"] else None,
                             **step_kwargs(opts, step))
        results[target] = (p, m, v, vmax)
    first = targets[0]
    for target in targets[1:]:
        for name, a, b in zip(("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), results[target],
                              results[first]):
            assert_bitwise_equal(a, b, f"{name}: target {target} vs {first}")


def test_unsupported_or_unknown_target_is_rejected(restore_target):
    before = adam_c.cpu_info()["target"]
    with pytest.raises(ValueError, match="target"):
        adam_c.set_target("no-such-target")
    for name in _core.target_names():
        if not _core.target_supported(name):
            with pytest.raises(ValueError, match=name):
                adam_c.set_target(name)
    with pytest.raises(TypeError, match="name"):
        adam_c.set_target(3)
    assert adam_c.cpu_info()["target"] == before


def test_set_num_threads_validates_and_restores(num_threads):
    for bad, exc in ((-1, ValueError), (True, TypeError), (1.5, TypeError), ("2", TypeError)):
        with pytest.raises(exc, match="n"):
            adam_c.set_num_threads(bad)
    num_threads(3)
    adam_c.set_num_threads(None)
    assert adam_c.get_num_threads() == adam_c.cpu_info()["num_threads"]
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert adam_c.get_num_threads() == 1  # follows threadpoolctl's limit when not overridden
    num_threads(2)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert adam_c.get_num_threads() == 2  # an override wins


def _odd_tensor_table(seed):
    """Many tensors of odd sizes, size-0 ones among them, mixed dtypes, in two groups with different options."""
    rng = np.random.default_rng(seed)
    sizes = [0, 1, 3, 0, 17, 1021, 5, 0, 4093, 31, 65, 2, 777, 0, 9, 8191, 13, 63, 129, 0, 33, 1, 7, 2047,
             11, 0, 3001, 19, 23, 57, 15, 255, 4, 6, 0, 97, 12345, 3, 1, 511]  # 40 tensors: more than the C stack table
    dtypes = [np.float32 if rng.random() < 0.5 else np.float64 for _ in sizes]
    params = [random_buffers(n, dt, seed=seed + i)[0] for i, (n, dt) in enumerate(zip(sizes, dtypes))]
    return sizes, dtypes, params


def _run_table(n_threads, steps, num_threads, seed=1):
    num_threads(n_threads)
    sizes, dtypes, params = _odd_tensor_table(seed)
    half = len(params) // 2
    groups = [{"params": params[:half], "lr": 1e-2, "amsgrad": True, "weight_decay": 0.05},
              {"params": params[half:], "lr": 3e-3, "betas": (0.3, 0.99), "weight_decay": 0.02,
               "decoupled_weight_decay": True, "maximize": True}]
    opt = adam_c.Adam(groups)
    for k in range(steps):
        grads = [random_grad(n, dt, seed=1000 * k + i) for i, (n, dt) in enumerate(zip(sizes, dtypes))]
        if k == 1:
            grads[3] = None
            grads[4] = None  # skipped params mixed in
        opt.step(grads)
    return params, opt


def test_thread_count_does_not_change_bits(simd_target, low_parallel_threshold, num_threads):
    """1, 2, 3 (and more) threads split the same multi-tensor step at different places: same bits, and the same
    bits as the oracle."""
    results = {}
    for n_threads in (1, 2, 3, 4, 7):
        params, opt = _run_table(n_threads, 3, num_threads)
        results[n_threads] = (params, opt.state_dict())
    base_params, base_sd = results[1]
    for n_threads, (params, sd) in results.items():
        for i, (a, b) in enumerate(zip(params, base_params)):
            assert_bitwise_equal(a, b, f"param {i} with {n_threads} threads vs 1")
        assert sd["state"].keys() == base_sd["state"].keys()
        for i, st in sd["state"].items():
            assert st["step"] == base_sd["state"][i]["step"]
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in st:
                    assert_bitwise_equal(st[key], base_sd["state"][i][key], f"{key} {i}, {n_threads} threads")

    # and the oracle agrees with all of them
    num_threads(1)
    sizes, dtypes, params0 = _odd_tensor_table(1)
    half = len(params0) // 2
    base = {"eps": 1e-8, "amsgrad": False, "maximize": False, "decoupled_weight_decay": False}
    ref = ReferenceAdam([{**base, "params": params0[:half], "lr": 1e-2, "betas": (0.9, 0.999), "amsgrad": True,
                          "weight_decay": 0.05},
                         {**base, "params": params0[half:], "lr": 3e-3, "betas": (0.3, 0.99), "weight_decay": 0.02,
                          "decoupled_weight_decay": True, "maximize": True}])
    for k in range(3):
        grads = [random_grad(n, dt, seed=1000 * k + i) for i, (n, dt) in enumerate(zip(sizes, dtypes))]
        if k == 1:
            grads[3] = None
            grads[4] = None
        ref.step(grads)
    for i, (a, b) in enumerate(zip(base_params, ref.params)):
        assert_bitwise_equal(a, b, f"param {i} vs oracle")
    assert base_sd["state"][4]["step"] == 2 and base_sd["state"][5]["step"] == 3


def test_single_tensor_split_between_threads_is_exact(num_threads, parallel_threshold):
    """A single tensor split between threads (uneven cut points) equals the serial result."""
    out = []
    for n_threads, threshold in ((1, 1 << 40), (2, 1), (3, 1), (5, 1)):
        num_threads(n_threads)
        parallel_threshold(threshold)
        out.append(run_and_compare(12347, np.float32, _options(True, "l2", False, 0.9), seed=4))
    for p in out[1:]:
        assert_bitwise_equal(p, out[0], "param")


# ---------------------------------------------------------------- buffers


@pytest.mark.parametrize("dtype,code", [(np.float32, "f"), (np.float64, "d")], ids=["f32", "f64"])
def test_array_array_buffers(dtype, code):
    n = 37
    p, m, v, vmax = random_buffers(n, dtype, seed=8)
    g = random_grad(n, dtype, seed=8)
    bufs = [array.array(code, a.tolist()) for a in (p, g, m, v, vmax)]
    kw = step_kwargs(_options(True, "l2", False, 0.9), 4)
    adam_c.adam_step(bufs[0], bufs[1], bufs[2], bufs[3], max_exp_avg_sq=bufs[4], **kw)
    expected = adam_step_reference(p, g, m, v, vmax, **kw)
    for name, buf, exp in zip(("param", "exp_avg", "exp_avg_sq", "max"), (bufs[0], bufs[2], bufs[3], bufs[4]),
                              expected):
        assert_bitwise_equal(np.frombuffer(buf, dtype=dtype), exp, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_memoryview_buffers(dtype):
    n = 41
    p, m, v, vmax = random_buffers(n, dtype, seed=9)
    g = random_grad(n, dtype, seed=9)
    expected = adam_step_reference(p, g, m, v, vmax, **step_kwargs(_options(True, "decoupled", True, 0.3), 2))
    adam_c.adam_step(memoryview(p), memoryview(g), memoryview(m), memoryview(v), max_exp_avg_sq=memoryview(vmax),
                     **step_kwargs(_options(True, "decoupled", True, 0.3), 2))
    for name, a, e in zip(("param", "exp_avg", "exp_avg_sq", "max"), (p, m, v, vmax), expected):
        assert_bitwise_equal(a, e, name)


def test_read_only_grad_is_accepted():
    p, m, v, _ = random_buffers(10, np.float64, seed=1)
    g = random_grad(10, np.float64, seed=1)
    g.flags.writeable = False
    expected = adam_step_reference(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    adam_c.adam_step(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    assert_bitwise_equal(p, expected[0], "param")


def _unaligned(n, dtype, seed, shift_elems):
    """An array whose data start is element-aligned but NOT 64-byte (cache-line/vector) aligned."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + 64, dtype=dtype)
    base = raw.__array_interface__["data"][0]
    start = (-(base % 64) // itemsize) % (64 // itemsize) + shift_elems  # 64-aligned + shift
    out = raw[start:start + n]
    out[...] = random_buffers(n, dtype, seed)[0]
    assert out.__array_interface__["data"][0] % 64 != 0
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_unaligned_numpy_buffers(simd_target, dtype, low_parallel_threshold, num_threads):
    """Buffers at different non-64-byte-aligned offsets (so vector loops need peeling and threads cut mid-line)."""
    num_threads(2)
    n = 1003
    p, g, m, v, vmax = (_unaligned(n, dtype, seed=i, shift_elems=s) for i, s in enumerate((1, 3, 5, 2, 7)))
    v[...] = np.abs(v)
    vmax[...] = np.abs(vmax)
    kw = step_kwargs(_options(True, "l2", True, 0.9), 3)
    expected = adam_step_reference(p, g, m, v, vmax, **kw)
    adam_c.adam_step(p, g, m, v, max_exp_avg_sq=vmax, **kw)
    for name, a, e in zip(("param", "exp_avg", "exp_avg_sq", "max"), (p, m, v, vmax), expected):
        assert_bitwise_equal(a, e, name)


def test_not_element_aligned_buffer_is_rejected_unchanged():
    raw = bytearray(8 * 11)
    p = np.frombuffer(raw, dtype=np.float64, count=10, offset=1)  # misaligned by one byte
    assert not p.flags.aligned
    m, v = np.zeros(10), np.zeros(10)
    g = np.ones(10)
    with pytest.raises(ValueError, match="param"):
        adam_c.adam_step(p, g, m, v, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8)
    assert bytes(raw) == bytes(8 * 11)
    assert not m.any() and not v.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_zero_dim_param(dtype):
    p, m, v, vmax = (np.asarray(a[0]).reshape(()) for a in random_buffers(1, dtype, seed=2))
    p, m, v, vmax = p.copy(), m.copy(), v.copy(), vmax.copy()
    p0 = p.copy()
    assert p.ndim == 0
    g = np.array(random_grad(1, dtype, seed=2)[0], dtype=dtype)
    kw = step_kwargs(_options(True, "l2", False, 0.9), 1)
    expected = adam_step_reference(p, g, m, v, vmax, **kw)
    adam_c.adam_step(p, g, m, v, max_exp_avg_sq=vmax, **kw)
    for name, a, e in zip(("param", "exp_avg", "exp_avg_sq", "max"), (p, m, v, vmax), expected):
        assert a.shape == ()
        assert_bitwise_equal(a, e, name)
    assert p != p0  # the caller's 0-d array itself was updated


# ---------------------------------------------------------------- functional bad input


def _fresh(n=8, dtype=np.float64):
    p, m, v, vmax = random_buffers(n, dtype, seed=13)
    return p, random_grad(n, dtype, seed=13), m, v, vmax


BASE = dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


@pytest.mark.parametrize("change,exc,match", [
    ({"step": 0}, ValueError, "step"),
    ({"step": -3}, ValueError, "step"),
    ({"step": 1.0}, TypeError, "step"),
    ({"step": True}, TypeError, "step"),
    ({"lr": -1e-3}, ValueError, "lr"),
    ({"lr": float("nan")}, ValueError, "lr"),
    ({"lr": "0.1"}, TypeError, "lr"),
    ({"eps": -1.0}, ValueError, "eps"),
    ({"beta1": 1.0}, ValueError, "beta"),
    ({"beta2": -0.1}, ValueError, "beta"),
    ({"beta1": None}, TypeError, "beta"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
    ({"weight_decay": [0.1]}, TypeError, "weight_decay"),
    ({"amsgrad": "yes"}, TypeError, "amsgrad"),
    ({"maximize": 2}, TypeError, "maximize"),
    ({"amsgrad": True}, ValueError, "max_exp_avg_sq"),  # no buffer given
])
def test_functional_bad_hyperparameters_change_nothing(change, exc, match):
    p, g, m, v, _ = _fresh()
    before = [a.copy() for a in (p, g, m, v)]
    with pytest.raises(exc, match=match):
        adam_c.adam_step(p, g, m, v, **{**BASE, **change})
    for a, b in zip((p, g, m, v), before):
        assert_bitwise_equal(a, b, "buffer after a failed adam_step")


def test_functional_bad_buffers_change_nothing():
    p, g, m, v, vmax = _fresh()
    snapshot = lambda: [a.copy() for a in (p, g, m, v, vmax)]  # noqa: E731
    before = snapshot()
    cases = [
        (lambda: adam_c.adam_step(p, g.astype(np.float32), m, v, **BASE), TypeError, "grad"),
        (lambda: adam_c.adam_step(p, g, m[:-1], v, **BASE), ValueError, "exp_avg"),
        (lambda: adam_c.adam_step(p, g, m, m, **BASE), ValueError, "exp_avg"),
        (lambda: adam_c.adam_step(p, p, m, v, **BASE), ValueError, "param"),
        (lambda: adam_c.adam_step(p, g, m, v, max_exp_avg_sq=v, **{**BASE, "amsgrad": True}), ValueError,
         "max_exp_avg_sq"),
        (lambda: adam_c.adam_step(p[::2], g[::2], m[::2], v[::2], **BASE), ValueError, "param"),
        (lambda: adam_c.adam_step(p.astype(np.int64), g, m, v, **BASE), TypeError, "param"),
        (lambda: adam_c.adam_step(p.astype(np.complex128), g, m, v, **BASE), TypeError, "param"),
        (lambda: adam_c.adam_step(p, None, m, v, **BASE), TypeError, "grad"),
        (lambda: adam_c.adam_step(p, "abc", m, v, **BASE), TypeError, "grad"),
        (lambda: adam_c.adam_step(p, g, np.frombuffer(m.tobytes()), v, **BASE), ValueError, "exp_avg"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
        for a, b in zip((p, g, m, v, vmax), before):
            assert_bitwise_equal(a, b, "buffer after a failed adam_step")


@pytest.mark.parametrize("container", [list, tuple], ids=["list", "tuple"])
def test_functional_non_buffer_state_is_rejected(container):
    """A Python list is no buffer: converting it would update a temporary copy and silently lose the step."""
    p, g, m, v, _ = _fresh(4)
    with pytest.raises((TypeError, ValueError), match="param"):
        adam_c.adam_step(container(p.tolist()), g, m, v, **BASE)
    with pytest.raises((TypeError, ValueError), match="exp_avg"):
        adam_c.adam_step(p, g, container(m.tolist()), v, **BASE)
