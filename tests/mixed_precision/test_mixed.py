"""Mixed precision: float16/bfloat16 params, master weights, rounding modes, loss scale, inf skip, global-norm
clipping and EMA against the NumPy oracle (tests/reference_mixed.py), on every SIMD target and thread count."""
import itertools
import math

import ml_dtypes
import numpy as np
import pytest

import adam_c
from adam_c import _core
from reference import assert_bitwise_equal
from reference_mixed import (BF16, F16, clip_coefficient, global_norm, mixed_step_reference, round_nearest,
                             unscaled)

SIZES = (1, 7, 33, 257, 1001, 20011)  # odd, below and above a tile (256), one large enough for many chunks
LR, BETA2, EPS, WD = 3e-3, 0.997, 1e-7, 0.1


def _u16(a):
    return np.ascontiguousarray(a).view(np.uint16)


# ---------------------------------------------------------------- conversions (all 65536 values, every target)

ALL16 = np.arange(65536, dtype=np.uint32).astype(np.uint16)


def _f32_samples():
    """float32 bit patterns: specials, every float16/bfloat16 rounding boundary region (ties included),
    denormals of both, and a wide random sample."""
    rng = np.random.default_rng(7)
    randoms = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    # bfloat16 ties: low 16 bits exactly 0x8000 (and neighbours); float16 ties: low 13 bits 0x1000
    bases = rng.integers(0, 2**32, 20_000, dtype=np.uint64).astype(np.uint32)
    bf_ties = np.concatenate([(bases & 0xFFFF0000) | d for d in (0x7FFF, 0x8000, 0x8001)]).astype(np.uint32)
    f16_range = rng.integers(0x33000000, 0x47800000 + 0x1000, 60_000, dtype=np.uint64).astype(np.uint32)
    f16_ties = np.concatenate([(f16_range & ~np.uint32(0x1FFF)) | d for d in (0x0FFF, 0x1000, 0x1001)])
    specials = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FBFFFFF,
                         0x00000001, 0x807FFFFF, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000, 0x38800000,
                         0x387FFFFF, 0x33000000, 0x33000001, 0x32FFFFFF, 0x7F7FFFFF, 0x7F7F8000],
                        dtype=np.uint32)
    bits = np.concatenate([specials, randoms, bf_ties, f16_ties.astype(np.uint32),
                           (f16_ties | np.uint32(0x80000000)).astype(np.uint32)])
    return bits.view(np.float32)


F32_SAMPLES = _f32_samples()


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_low_precision_to_float32_all_values(simd_target, dtype):
    src = ALL16.view(dtype)
    out = np.empty(65536, np.float32)
    _core.convert(src, out)
    with np.errstate(all="ignore"):
        expected = src.astype(np.float32)
    nan = np.isnan(expected)
    # numbers exactly (denormals and infinities included); NaN stays NaN, quiet, with sign and payload kept
    assert_bitwise_equal(out[~nan], expected[~nan], f"{dtype} -> float32 on {simd_target}")
    assert np.isnan(out[nan]).all()
    out_bits, exp_bits = out[nan].view(np.uint32), (_u16(src)[nan].astype(np.uint32) << 16 if dtype == BF16 else
                                                    expected[nan].view(np.uint32))
    if dtype == F16:  # as vcvtph2ps: quiet, sign and payload kept
        assert ((out_bits & 0x400000) != 0).all(), "NaN must come out quiet"
        assert ((out_bits | 0x400000) == (exp_bits | 0x400000)).all(), "NaN sign and payload kept"
    else:  # bfloat16 is the upper half of a float32: widening keeps every bit (arithmetic quiets it later)
        assert (out_bits == exp_bits).all()
    # and back: every value round-trips (NaNs quieted)
    back = np.empty(65536, dtype)
    _core.convert(out, back)
    quiet = _u16(src) | np.where(nan, 0x0200 if dtype == F16 else 0x0040, 0).astype(np.uint16)
    assert (_u16(back) == quiet).all(), f"{dtype} round trip on {simd_target}"


@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_float32_to_low_precision_rounds_to_nearest_even(simd_target, dtype):
    out = np.empty(F32_SAMPLES.size, dtype)
    _core.convert(F32_SAMPLES, out)
    expected = round_nearest(F32_SAMPLES, dtype)
    nan = np.isnan(F32_SAMPLES)
    assert (_u16(out)[~nan] == _u16(expected)[~nan]).all(), f"float32 -> {dtype} on {simd_target}"
    assert np.isnan(out[nan].astype(np.float32)).all()


def test_conversions_identical_bits_on_every_target(restore_target):
    """NaN payloads included: F16C (avx2, avx512) and the bit operations (baseline) agree bit for bit."""
    results = {}
    for target in [t for t in _core.target_names() if _core.target_supported(t)]:
        adam_c.set_target(target)
        outs = []
        for dtype in (F16, BF16):
            a = np.empty(65536, np.float32)
            _core.convert(ALL16.view(dtype), a)
            b = np.empty(F32_SAMPLES.size, dtype)
            _core.convert(F32_SAMPLES, b)
            outs += [a.view(np.uint32).copy(), _u16(b).copy()]
        results[target] = outs
    first = next(iter(results.values()))
    for target, outs in results.items():
        for x, y in zip(outs, first):
            assert (x == y).all(), target


def test_convert_refuses_other_pairs():
    with pytest.raises(ValueError, match="convert"):
        _core.convert(np.zeros(3), np.zeros(3, np.float16))  # float64 -> float16


# ---------------------------------------------------------------- the step against the oracle

def _make(sizes, pdtype, gdtype, seed):
    rng = np.random.default_rng(seed)
    params, grad_steps = [], []
    for n in sizes:
        scale = 10.0 ** rng.uniform(-2, 1, n)
        params.append((rng.standard_normal(n) * scale).astype(np.float32).astype(pdtype))
    for _ in range(3):
        grad_steps.append([(rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 0, n)).astype(np.float32)
                           .astype(gdtype) for n in sizes])
    return params, grad_steps


class Oracle:
    """The reference optimizer of one configuration (one group)."""

    def __init__(self, params, hp, master, ema_decay, rounding, seed):
        self.hp, self.rounding, self.seed, self.ema_decay = hp, rounding, seed, ema_decay
        self.params = [p.copy() for p in params]
        lowp = [p.dtype in (F16, BF16) for p in params]
        ct = [np.float64 if p.dtype == np.float64 else np.float32 for p in params]
        self.master = [p.astype(np.float32) if (master and lo) else None for p, lo in zip(params, lowp)]
        self.ema = [(m if m is not None else p.astype(c)).copy() if ema_decay is not None else None
                    for p, m, c in zip(params, self.master, ct)]
        self.m = [np.zeros(p.shape, c) for p, c in zip(params, ct)]
        self.v = [np.zeros(p.shape, c) for p, c in zip(params, ct)]
        self.vmax = [np.zeros(p.shape, c) for p, c in zip(params, ct)]
        self.t = 0

    def step(self, grads, grad_scale=None, clip_coef=1.0):
        self.t += 1
        if grad_scale is not None:
            grads = [unscaled(g, grad_scale) for g in grads]
        mul = 1.0
        for i, g in enumerate(grads):
            out = mixed_step_reference(
                self.params[i], g, self.m[i], self.v[i], self.vmax[i] if self.hp["amsgrad"] else None,
                master=self.master[i], ema=self.ema[i], ema_decay=self.ema_decay or 0.0, grad_mul=mul,
                clip_coef=clip_coef, rounding=self.rounding, seed=self.seed, index=i, step=self.t, **self.hp)
            self.params[i], self.m[i], self.v[i] = out["param"], out["exp_avg"], out["exp_avg_sq"]
            if self.hp["amsgrad"]:
                self.vmax[i] = out["max_exp_avg_sq"]
            if self.master[i] is not None:
                self.master[i] = out["master"]
            if self.ema[i] is not None:
                self.ema[i] = out["ema"]


def _hp(amsgrad, decay, maximize, beta1):
    return dict(lr=LR, beta1=beta1, beta2=BETA2, eps=EPS, weight_decay=0.0 if decay == "none" else WD,
                amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=decay == "decoupled")


MODES = [  # (param dtype, grad dtype, master, rounding)
    pytest.param(F16, F16, False, "nearest", id="f16"),
    pytest.param(F16, np.float32, False, "nearest", id="f16-g32"),
    pytest.param(F16, F16, True, "nearest", id="f16-master"),
    pytest.param(BF16, BF16, False, "nearest", id="bf16"),
    pytest.param(BF16, np.float32, True, "nearest", id="bf16-g32-master"),
    pytest.param(BF16, BF16, True, "nearest", id="bf16-master"),
    pytest.param(BF16, BF16, False, "stochastic", id="bf16-sr"),
    pytest.param(BF16, np.float32, False, "stochastic", id="bf16-g32-sr"),
    pytest.param(np.dtype(np.float32), np.float32, False, "nearest", id="f32"),
    pytest.param(np.dtype(np.float64), np.float64, False, "nearest", id="f64"),
]
OPTIONS = [
    pytest.param(_hp(False, "none", False, 0.9), id="plain"),
    pytest.param(_hp(True, "l2", True, 0.9), id="ams-l2-max"),
    pytest.param(_hp(False, "decoupled", False, 0.3), id="decoupled-b1=0.3"),
    pytest.param(_hp(False, "decoupled", False, 0.9), id="adamw"),  # the general kernel's compiled fast path
]
EXTRAS = [  # (ema_decay, grad_scale, max_grad_norm)
    pytest.param(None, None, None, id="bare"),
    pytest.param(0.9, 512.0, None, id="ema-scale"),
    pytest.param(None, 3.0, 0.05, id="scale-clip"),
    pytest.param(0.99, None, 1e3, id="ema-noclip"),
]


def _run_and_check(pdtype, gdtype, master, rounding, hp, ema_decay, grad_scale, max_grad_norm, threads, seed=3):
    params, grad_steps = _make(SIZES, pdtype, gdtype, seed)
    oracle = Oracle(params, hp, master, ema_decay, rounding, seed=11)
    kw = {k: hp[k] for k in ("lr", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")}
    opt = adam_c.Adam(params, betas=(hp["beta1"], hp["beta2"]), master_weights=master, rounding=rounding,
                      ema_decay=ema_decay, seed=11, **kw)
    adam_c.set_num_threads(threads)
    norms = []
    for grads in grad_steps:
        scaled = grads
        if grad_scale is not None:  # the loss-scaled grads a backward pass would produce
            scaled = [(g.astype(np.float32) * np.float32(grad_scale)).astype(g.dtype) for g in grads]
        opt.step(scaled, grad_scale=grad_scale, max_grad_norm=max_grad_norm)
        assert not opt.last_step_skipped
        coef = 1.0
        if max_grad_norm is not None:
            norm = opt.last_grad_norm
            expected = global_norm([unscaled(g, grad_scale) for g in scaled] if grad_scale else scaled)
            assert norm == pytest.approx(expected, rel=1e-12)
            norms.append(norm)
            coef = clip_coefficient(norm, max_grad_norm)  # from the reported norm: the update is then bit-exact
        else:
            assert opt.last_grad_norm is None or grad_scale is not None
        oracle.step(scaled, grad_scale, coef)
    for i, p in enumerate(params):
        assert_bitwise_equal(p, oracle.params[i], f"param {i} (n={p.size})")
        st = opt.state[i]
        assert_bitwise_equal(st["exp_avg"], oracle.m[i], f"exp_avg {i}")
        assert_bitwise_equal(st["exp_avg_sq"], oracle.v[i], f"exp_avg_sq {i}")
        if hp["amsgrad"]:
            assert_bitwise_equal(st["max_exp_avg_sq"], oracle.vmax[i], f"max_exp_avg_sq {i}")
        if oracle.master[i] is not None:
            assert_bitwise_equal(st["master"], oracle.master[i], f"master {i}")
        else:
            assert "master" not in st
        if ema_decay is not None:
            assert_bitwise_equal(st["ema"], oracle.ema[i], f"ema {i}")
    return params, norms


@pytest.mark.parametrize("extras", [e.values for e in EXTRAS], ids=[e.id for e in EXTRAS])
@pytest.mark.parametrize("hp", OPTIONS)
@pytest.mark.parametrize("pdtype,gdtype,master,rounding", MODES)
def test_step_matches_oracle(simd_target, num_threads, low_parallel_threshold, pdtype, gdtype, master, rounding,
                             hp, extras):
    ema_decay, grad_scale, max_grad_norm = extras
    if pdtype in (np.float32, np.float64) and master:
        pytest.skip("no master for float32/float64")
    _run_and_check(pdtype, gdtype, master, rounding, hp, ema_decay, grad_scale, max_grad_norm, threads=2)


@pytest.mark.parametrize("pdtype,gdtype,master,rounding", [MODES[1], MODES[4], MODES[6], MODES[8]])
def test_same_bits_for_any_thread_count_and_target(restore_target, num_threads, low_parallel_threshold, pdtype,
                                                   gdtype, master, rounding):
    """Params (stochastic rounding included) and the reported norm: identical for 1/2/3 threads on every target."""
    results = []
    for target, threads in itertools.product([t for t in _core.target_names() if _core.target_supported(t)],
                                             (1, 2, 3)):
        adam_c.set_target(target)
        params, norms = _run_and_check(pdtype, gdtype, master, rounding, _hp(True, "decoupled", False, 0.9), 0.9,
                                       256.0, 0.05, threads)
        results.append(([p.copy() for p in params], norms))
    first_params, first_norms = results[0]
    for params, norms in results[1:]:
        assert norms == first_norms  # exactly: the same double bits
        for p, q in zip(params, first_params):
            assert (np.ascontiguousarray(p).view(np.uint8) == np.ascontiguousarray(q).view(np.uint8)).all()


def test_stochastic_rounding_is_unbiased_and_keyed():
    """A step of half a bfloat16 ulp rounds up about half the time (never further); another seed, other draws."""
    n = 100_000
    g = np.full(n, 1.0, BF16)
    p = np.full(n, 1.0, BF16)
    # step 1 with maximize: p + lr * m_hat / (sqrt(v_hat) + eps) = 1 + 2^-8 exactly in float32: half an ulp
    adam_c.Adam([p], lr=2.0 ** -8, rounding="stochastic", seed=5, maximize=True).step([g])
    values = p.astype(np.float32)
    assert set(np.unique(values).tolist()) == {1.0, 1.0 + 2.0 ** -7}
    assert 0.48 < np.mean(values > 1.0) < 0.52
    q = np.full(n, 1.0, BF16)
    adam_c.Adam([q], lr=2.0 ** -8, rounding="stochastic", seed=6, maximize=True).step([g])
    assert (_u16(p) != _u16(q)).any() and 0.48 < np.mean(q.astype(np.float32) > 1.0) < 0.52
    r = np.full(n, 1.0, BF16)
    adam_c.Adam([r], lr=2.0 ** -8, rounding="nearest", maximize=True).step([g])
    assert (r.astype(np.float32) == 1.0).all()  # the tie goes to even (1.0)


# ---------------------------------------------------------------- skipping, reporting, EMA swap

@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("pdtype,master", [(BF16, True), (F16, False), (np.dtype(np.float32), False)])
def test_nonfinite_grad_skips_the_whole_step(low_parallel_threshold, bad, pdtype, master):
    params, grad_steps = _make(SIZES, pdtype, pdtype, 5)
    opt = adam_c.Adam(params, master_weights=master, ema_decay=0.9)
    opt.step(grad_steps[0], grad_scale=4.0)
    snapshot = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
                for i, e in opt.state.items()}
    before = [p.copy() for p in params]
    grads = [g.copy() for g in grad_steps[1]]
    grads[-1][grads[-1].size // 2] = bad  # one bad element in the largest tensor
    opt.step(grads, grad_scale=4.0, max_grad_norm=1.0)
    assert opt.last_step_skipped
    assert not math.isfinite(opt.last_grad_norm)
    for p, b in zip(params, before):
        assert (np.ascontiguousarray(p).view(np.uint8) == np.ascontiguousarray(b).view(np.uint8)).all()
    for i, entry in opt.state.items():
        assert entry["step"] == snapshot[i]["step"] == 1
        for k, v in entry.items():
            if isinstance(v, np.ndarray):
                assert_bitwise_equal(v, snapshot[i][k], k)
    opt.step(grad_steps[1], grad_scale=4.0)  # the next good step runs
    assert not opt.last_step_skipped and opt.state[0]["step"] == 2


def test_first_step_skipped_leaves_no_state():
    p = np.ones(5, BF16)
    opt = adam_c.Adam([p], master_weights=True, ema_decay=0.5)
    opt.step([np.array([1, 2, np.nan, 4, 5], np.float32)], grad_scale=8.0)
    assert opt.last_step_skipped and opt.state == {} and (p.astype(np.float32) == 1).all()


def test_without_skip_a_nonfinite_grad_goes_through_like_torch():
    """max_grad_norm alone (no grad_scale) does not skip: the norm is inf, the coefficient 0, inf*0 = NaN."""
    p = np.ones(4, np.float32)
    opt = adam_c.Adam([p])
    opt.step([np.array([1, np.inf, 1, 1], np.float32)], max_grad_norm=1.0)
    assert not opt.last_step_skipped and opt.last_grad_norm == math.inf
    assert np.isnan(p[1]) and (p[[0, 2, 3]] == 1.0).all()  # coefficient 0: finite grads become 0, no change


def test_ema_weights_swap_in_and_back():
    params, grad_steps = _make((33, 1001), BF16, BF16, 9)
    opt = adam_c.Adam(params, master_weights=True, ema_decay=0.9, lr=1e-2)
    for grads in grad_steps:
        opt.step(grads)
    before = [p.copy() for p in params]
    with opt.ema_weights():
        for p, i in zip(params, range(2)):
            assert (_u16(p) == _u16(round_nearest(opt.state[i]["ema"], BF16))).all()
        assert any((_u16(p) != _u16(b)).any() for p, b in zip(params, before))
    for p, b in zip(params, before):
        assert (_u16(p) == _u16(b)).all()
    plain = adam_c.Adam([np.ones(3, np.float32)])
    with pytest.raises(ValueError, match="ema_decay"):
        with plain.ema_weights():
            pass


def test_master_weights_state_dict_round_trip():
    params, grad_steps = _make((7, 300), BF16, BF16, 2)
    opt = adam_c.Adam(params, master_weights=True, ema_decay=0.5)
    opt.step(grad_steps[0])
    sd = opt.state_dict()
    assert sd["state"][0]["master"].dtype == np.float32 and sd["state"][0]["exp_avg"].dtype == np.float32
    twin_params = [p.copy() for p in params]
    twin = adam_c.Adam(twin_params, master_weights=True, ema_decay=0.5)
    twin.load_state_dict(sd)
    for o in (opt, twin):
        o.step(grad_steps[1])
    for p, q in zip(params, twin_params):
        assert (_u16(p) == _u16(q)).all()


# ---------------------------------------------------------------- bad input: clear errors, nothing changed

BAD_STEP_ARGS = [
    ({"grad_scale": 0.0}, ValueError, "grad_scale"),
    ({"grad_scale": -2.0}, ValueError, "grad_scale"),
    ({"grad_scale": float("nan")}, ValueError, "grad_scale"),
    ({"grad_scale": float("inf")}, ValueError, "grad_scale"),
    ({"grad_scale": "8"}, TypeError, "grad_scale"),
    ({"grad_scale": True}, TypeError, "grad_scale"),
    ({"max_grad_norm": 0.0}, ValueError, "max_grad_norm"),
    ({"max_grad_norm": -1.0}, ValueError, "max_grad_norm"),
    ({"max_grad_norm": float("nan")}, ValueError, "max_grad_norm"),
    ({"max_grad_norm": [1.0]}, TypeError, "max_grad_norm"),
    ({"skip_nonfinite": "yes"}, TypeError, "skip_nonfinite"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_STEP_ARGS)
def test_bad_step_arguments_change_nothing(kwargs, exc, match):
    p = np.ones(5, BF16)
    opt = adam_c.Adam([p], master_weights=True)
    with pytest.raises(exc, match=match):
        opt.step([np.ones(5, BF16)], **kwargs)
    assert opt.state == {} and (p.astype(np.float32) == 1).all()


BAD_CONSTRUCTIONS = [
    (lambda: adam_c.Adam([np.ones(3, BF16)], rounding="up"), ValueError, "rounding"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], rounding="stochastic", master_weights=True), ValueError, "rounding"),
    (lambda: adam_c.Adam([np.ones(3, F16)], rounding="stochastic"), ValueError, r"params\[0\].*stochastic"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], master_weights="yes"), TypeError, "master_weights"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], ema_decay=1.5), ValueError, "ema_decay"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], ema_decay="0.9"), TypeError, "ema_decay"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], seed=-1), ValueError, "seed"),
    (lambda: adam_c.Adam([np.ones(3, BF16)], seed=1.5), TypeError, "seed"),
]


@pytest.mark.parametrize("make,exc,match", BAD_CONSTRUCTIONS)
def test_bad_constructions(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("pdtype,gdtype", [(BF16, np.float64), (BF16, F16), (F16, BF16), (F16, np.float64),
                                           (np.dtype(np.float32), BF16), (np.dtype(np.float32), F16)])
def test_unsupported_grad_dtypes_are_refused(pdtype, gdtype):
    p = np.ones(5, pdtype)
    opt = adam_c.Adam([p], master_weights=pdtype in (BF16, F16))
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([np.ones(5, gdtype)])
    assert opt.state == {} and (p.astype(np.float32) == 1).all()


def test_noncontiguous_low_precision_grad_is_accepted():
    p, q = np.ones(5, BF16), np.ones(5, BF16)
    g = np.arange(10, dtype=np.float32).astype(BF16)[::2]
    adam_c.Adam([p], lr=0.1).step([g])
    adam_c.Adam([q], lr=0.1).step([np.ascontiguousarray(g)])
    assert (_u16(p) == _u16(q)).all() and (p.astype(np.float32) != 1).any()


# ---------------------------------------------------------------- the demo

def test_demo_trains_bf16_with_master_weights_as_well_as_fp32(capsys):
    from adam_c.__main__ import main
    import argparse

    from adam_c import __main__ as demo

    def acc(*flags):
        args = argparse.Namespace(epochs=12, hidden=64, lr=1e-2, seed=0, dtype="float32", master_weights=False)
        for key, value in flags:
            setattr(args, key, value)
        return demo.train(args)

    fp32 = acc()
    bf16 = acc(("dtype", "bfloat16"), ("master_weights", True))
    capsys.readouterr()
    assert fp32 > 0.8 and abs(bf16 - fp32) <= 0.02, (fp32, bf16)
    assert main  # the CLI entry point exists (python -m adam_c --dtype bfloat16 --master-weights)


def test_loading_a_master_into_an_optimizer_without_master_weights_ignores_it():
    params, grad_steps = _make((7,), BF16, BF16, 4)
    opt = adam_c.Adam([params[0].copy()], master_weights=True)
    opt.step(grad_steps[0])
    plain = adam_c.Adam([params[0]])
    plain.load_state_dict(opt.state_dict())
    assert "master" not in plain.state[0] and "exp_avg" in plain.state[0]
