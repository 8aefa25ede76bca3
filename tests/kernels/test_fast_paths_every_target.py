"""The kernel's compiled fast paths and fused bfloat16 layouts give the same bits on every SIMD target and thread count.

Inputs include inf/NaN/denormal/-0 values; params start 2 or 4 bytes past an allocation, so thread cuts land at odd
element offsets; lengths sit around 16/64/256. The oracle tests (mixed_precision/test_mixed.py,
compressed_state/test_compressed_state.py) pin the bits to the NumPy reference on ordinary inputs; this pins every
target and thread count to each other on hostile ones.
"""
import itertools

import ml_dtypes
import numpy as np
import pytest

import adam_c
from adam_c import _core

BF16 = np.dtype(ml_dtypes.bfloat16)
F32 = np.dtype(np.float32)
LAYOUTS = {  # param dtype, grad dtype, master, state_dtype, state_rounding
    "all-bf16": (BF16, BF16, False, "bfloat16", "nearest"),
    "all-bf16-state-sr": (BF16, BF16, False, "bfloat16", "stochastic"),
    "bf16-master": (BF16, BF16, True, None, "nearest"),
    "bf16-no-master": (BF16, BF16, False, None, "nearest"),
    "f32-bf16-state": (F32, F32, False, "bfloat16", "nearest"),
    "bf16-master-int8": (BF16, BF16, True, "int8", "nearest"),
}
OPTIONS = {  # hyperparameters, step options
    "plain": ({}, {}),
    "adamw": (dict(weight_decay=0.1, decoupled_weight_decay=True), {}),
    "maximize": (dict(maximize=True), {}),
    "adamw-scale-clip": (dict(weight_decay=0.1, decoupled_weight_decay=True), dict(grad_scale=8.0, max_grad_norm=0.5)),
    "lerp-large": (dict(betas=(0.3, 0.99)), {}),
}
SIZES = [1, 15, 16, 17, 63, 65, 255, 256, 257, 4097, 20011]
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-39, 3e38], np.float32)


def _values(rng, n, special):
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 1, n)).astype(np.float32)
    if special:
        k = max(1, n // 50)
        x[rng.integers(0, n, k)] = rng.choice(SPECIALS, k)
    return x


def _offset_array(rng, n, dtype, off, special):
    base = np.zeros(n + off, dtype)
    with np.errstate(all="ignore"):
        base[off:] = _values(rng, n, special).astype(dtype)
    return base[off:]


def _run(layout, option):
    pdtype, gdtype, master, state_dtype, state_rounding = LAYOUTS[layout]
    hp, step_kw = OPTIONS[option]
    rng = np.random.default_rng(0)
    params = [_offset_array(rng, n, pdtype, i % 3, True) for i, n in enumerate(SIZES)]
    opt = adam_c.Adam(params, lr=1e-2, master_weights=master, state_dtype=state_dtype,
                      state_rounding=state_rounding, seed=3, **hp)
    for step in range(3):
        opt.step([_offset_array(rng, n, gdtype, (i + 1) % 3, step == 1) for i, n in enumerate(SIZES)], **step_kw)
    out = [np.ascontiguousarray(p).copy() for p in params]
    for i in range(len(SIZES)):
        out += [np.ascontiguousarray(v).copy() for k, v in sorted(opt.state[i].items()) if isinstance(v, np.ndarray)]
    return out


def _same(a, b):
    """Bits equal, NaN payloads aside (bfloat16 state arrays are uint16 patterns: NaN when exponent all ones)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype in (F32, BF16):
        u = np.uint32 if a.dtype == F32 else np.uint16
        return bool(((a.view(u) == b.view(u)) | (np.isnan(a.astype(np.float32)) & np.isnan(b.astype(np.float32)))).all())
    if a.dtype == np.uint16:
        nan = ((a & 0x7FFF) > 0x7F80) & ((b & 0x7FFF) > 0x7F80)
        return bool(((a == b) | nan).all())
    return bool(np.array_equal(a, b))


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fast_and_fused_paths_same_bits_every_target_and_thread_count(restore_target, low_parallel_threshold,
                                                                       num_threads, layout, option):
    adam_c.set_threading("fixed")
    try:
        results = []
        for target, threads in itertools.product([t for t in _core.target_names() if _core.target_supported(t)],
                                                 (1, 2, 3)):
            adam_c.set_target(target)
            num_threads(threads)
            results.append(((target, threads), _run(layout, option)))
    finally:
        adam_c.set_threading("auto")
    (first_key, first), rest = results[0], results[1:]
    for key, out in rest:
        for idx, (a, b) in enumerate(zip(out, first)):
            assert _same(a, b), f"array {idx}: {key} differs from {first_key}"
