"""A slow NumPy oracle of adam_c's mixed-precision step: float16/bfloat16 params, master weights, rounding modes,
loss scale, inf skip, global-norm clipping and EMA, built on the float32 oracle in reference.py."""
import math

import ml_dtypes
import numpy as np

from reference import adam_step_reference

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
MASK32 = np.uint64(0xFFFFFFFF)


def compute_dtype(dtype):
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def round_nearest(x32, dtype):
    """float32 -> float16/bfloat16, round to nearest even (NumPy and ml_dtypes both do)."""
    with np.errstate(all="ignore"):
        return np.asarray(x32, np.float32).astype(dtype)


# ---- the counter-based stochastic rounding of the C core, in 64-bit NumPy integers

def _mix64(z):
    """splitmix64's finaliser of an int (Python ints, exact)."""
    m = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _hash32(x):
    x = x & MASK32
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & MASK32
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & MASK32
    x ^= x >> np.uint64(16)
    return x


def stochastic_random16(n, seed, step, index):
    """The 16 random bits of elements 0..n-1 of tensor `index` at `step` (seed, step, index: the key)."""
    key = _mix64(seed ^ _mix64(step ^ _mix64(index)))
    lo, hi = np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32)
    e = np.arange(n, dtype=np.uint64)
    h = _hash32(_hash32(e & MASK32 ^ lo) ^ hi ^ (e >> np.uint64(32)))
    return (h & np.uint64(0xFFFF)).astype(np.uint32)


def round_stochastic_bf16(x32, random16):
    """float32 -> bfloat16: add the random bits below the kept 16, truncate; NaN rounds to nearest (stays NaN)."""
    x32 = np.ascontiguousarray(x32, np.float32)
    u = x32.view(np.uint32).astype(np.uint64)
    rounded = ((u + random16.astype(np.uint64)) >> np.uint64(16)).astype(np.uint16)
    out = rounded.view(BF16).copy()
    nan = np.isnan(x32)
    out[nan] = round_nearest(x32[nan], BF16)
    return out


# ---- one step of one tensor

def mixed_step_reference(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, master=None, ema=None,
                         ema_decay=0.0, grad_mul=1.0, clip_coef=1.0, rounding="nearest", seed=0, index=0,
                         step, **hp):
    """One step; returns a dict of NEW arrays: param, exp_avg, exp_avg_sq, max_exp_avg_sq, master, ema.
    Math in the compute type (float32, float64 for float64 params), one rounding per operation:
    grad = (float(grad) * grad_mul) * clip_coef, grad_mul = float32(1/scale) (or 1); the param read is the
    master if any, else float(param); the result is written to the master and/or rounded to the param dtype;
    ema = ema*d + new*(1 - d) with d = 0 on step 1."""
    pdtype = np.asarray(param).dtype
    ct = compute_dtype(pdtype)
    T = ct.type
    with np.errstate(all="ignore"):
        g = np.asarray(grad).astype(ct)
        g = (g * T(grad_mul)) * T(clip_coef)
        p_in = np.asarray(master, ct) if master is not None else np.asarray(param).astype(ct)
        new_p, m, v, vmax = adam_step_reference(p_in, g, np.asarray(exp_avg, ct), np.asarray(exp_avg_sq, ct),
                                                None if max_exp_avg_sq is None else np.asarray(max_exp_avg_sq, ct),
                                                step=step, **hp)
        out = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax, "master": None, "ema": None}
        if master is not None:
            out["master"] = new_p
        if pdtype == ct:
            out["param"] = new_p
        elif rounding == "stochastic":
            flat = new_p.reshape(-1)
            out["param"] = round_stochastic_bf16(flat, stochastic_random16(flat.size, seed, step, index)).reshape(
                new_p.shape)
        else:
            out["param"] = round_nearest(new_p, pdtype)
        if ema is not None:
            keep = 0.0 if step == 1 else ema_decay
            out["ema"] = np.asarray(ema, ct) * T(keep) + new_p * T(1.0 - keep)
    return out


def global_norm(grads, inv_scale=1.0):
    """The global L2 norm of the unscaled grads (float(g) * float32 inv_scale, rounded in the compute type),
    exactly summed (math.fsum of float64 squares)."""
    squares = []
    with np.errstate(all="ignore"):
        for g in grads:
            ct = compute_dtype(np.asarray(g).dtype if np.asarray(g).dtype != BF16 else np.float32)
            x = np.asarray(g).astype(ct) * ct.type(inv_scale)
            squares.append(np.square(x.astype(np.float64)).reshape(-1))
    flat = np.concatenate(squares) if squares else np.zeros(0)
    if not np.all(np.isfinite(flat)):
        return math.inf if not np.any(np.isnan(flat)) else math.nan
    return math.sqrt(math.fsum(flat.tolist()))


def clip_coefficient(norm, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6), clamped to 1 (in double; NaN stays)."""
    coef = max_norm / (norm + 1e-6)
    return 1.0 if coef > 1.0 else coef


def unscaled(grad, grad_scale):
    """The grads as the step unscales them (torch's fused Adam under GradScaler): g / float32(grad_scale) in the
    compute type, a new array of that dtype (a power-of-two scale gives the same bits as a multiply by its
    reciprocal)."""
    g = np.asarray(grad)
    ct = compute_dtype(g.dtype if g.dtype != BF16 else np.float32)
    with np.errstate(all="ignore"):
        return g.astype(ct) / ct.type(np.float32(grad_scale))
