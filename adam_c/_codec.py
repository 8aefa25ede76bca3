"""_codec.py: the compressed optimizer-state formats in NumPy (bf16 rounding, blockwise 8-bit dynamic codes).

These are the exact float32 formulas the C kernel applies in registers, written vectorised for NumPy: used to
convert state between fp32 and compressed layouts (checkpoints), by the quality harness, and as the tests' model.

The 8-bit code is the published "dynamic" map of Dettmers et al. (2022; bitsandbytes create_dynamic_map): values
normalised by the block's absmax, 7 decades 10^-6..10^0, decade d (0..6) holding evenly spaced bin centres
10^(d-6) * (0.1 + (k + 1/2) * 0.9 / F_d), plus 0 and 1. Signed (exp_avg): F_d = 2^d, sign + 7-bit magnitude code
2^d + k (so the decade is the code's leading bit), code 0x80 = +1.0 (the published map's lone 1.0). Unsigned
(exp_avg_sq): F_d = 2^(d+1), code 2^(d+1) - 1 + k, code 255 = 1.0. Encoding picks the nearest value with compares
and one multiply (no table search), so SIMD code needs no gathers.
"""
import numpy as np

BLOCK = 256                 # elements per absmax block
MIN_QUANTIZED_SIZE = 4096   # tensors with fewer elements keep fp32 state (as bitsandbytes: min_8bit_size)
DECADES = 7


def _decade_tables(signed):
    """Per decade d: first code, bin count F, low edge (0.1*10^(d-6)), inverse bin width, bin-centre base and
    width (decode: value = centre0 + k * width), all float32; and the 8 thresholds between neighbouring values
    (zero | decade 0 | ... | decade 6 | 1.0) at which encoding switches decade."""
    first, count, lo, inv_width, centre0, width = [], [], [], [], [], []
    for d in range(DECADES):
        f = 2 ** d if signed else 2 ** (d + 1)
        scale = 10.0 ** (d - 6)
        first.append(2 ** d if signed else 2 ** (d + 1) - 1)
        count.append(f)
        lo.append(0.1 * scale)
        inv_width.append(f / (0.9 * scale))
        centre0.append(scale * (0.1 + 0.45 / f))
        width.append(scale * 0.9 / f)
    f32 = lambda xs: np.array(xs, np.float32)  # noqa: E731
    centre0, width = f32(centre0), f32(width)
    count = np.array(count, np.int32)
    top = centre0 + (count - 1).astype(np.float32) * width
    # switch points: 0 -> smallest value, decade d-1's top -> decade d's bottom, top of decade 6 -> 1.0
    edges = [centre0[0] * np.float32(0.5)]
    edges += [(top[d - 1] + centre0[d]) * np.float32(0.5) for d in range(1, DECADES)]
    edges += [(top[DECADES - 1] + np.float32(1.0)) * np.float32(0.5)]
    return dict(first=np.array(first, np.int32), count=count, lo=f32(lo), inv_width=f32(inv_width),
                centre0=centre0, width=width, edges=np.array(edges, np.float32))


SIGNED = _decade_tables(True)
UNSIGNED = _decade_tables(False)


def code_values(signed):
    """The 256 values of a map, indexed by code (float32; for signed, code c and c | 0x80 are +/- except 0x80)."""
    t = SIGNED if signed else UNSIGNED
    return decode_normalized(np.arange(256, dtype=np.uint8), signed, t)


def decode_normalized(codes, signed, t=None):
    """codes (uint8) -> values in [-1, 1] (float32)."""
    t = t or (SIGNED if signed else UNSIGNED)
    c = codes.astype(np.int32)
    idx = c & 0x7F if signed else c
    # the decade is the number of decade starts at or below the code (compares, as in C)
    d = np.zeros(c.shape, np.int32)
    for k in range(1, DECADES):
        d += idx >= t["first"][k]
    k = (idx - t["first"][d]).astype(np.float32)
    mag = t["centre0"][d] + k * t["width"][d]
    if signed:
        mag = np.where(idx == 0, np.float32(0), mag)
        out = np.where(c & 0x80, -mag, mag)
        return np.where(c == 0x80, np.float32(1.0), out).astype(np.float32)
    mag = np.where(idx == 0, np.float32(0), mag)
    return np.where(idx == 255, np.float32(1.0), mag).astype(np.float32)


def encode_normalized(x, signed, keep_nonzero=False):
    """x: float32 in [-1, 1] (already multiplied by 1/absmax) -> nearest code (uint8). keep_nonzero: a nonzero
    value never becomes code 0 (the smallest code instead: v's zero point, see README). NaN encodes as 0 (its
    block's absmax is NaN, so the whole block decodes as NaN)."""
    t = SIGNED if signed else UNSIGNED
    x = np.asarray(x, np.float32)
    a = np.abs(x) if signed else x
    a = np.where(a == a, a, np.float32(0))
    edges = t["edges"]
    d = np.zeros(a.shape, np.int32)
    for k in range(1, DECADES):
        d += a >= edges[k]
    # clamped in float, then truncated: floor for the non-negative values left (as the C kernel does)
    pos = (a - t["lo"][d]) * t["inv_width"][d]
    pos = np.minimum(np.maximum(pos, np.float32(0)), (t["count"][d] - 1).astype(np.float32))
    idx = t["first"][d] + pos.astype(np.int32)
    zero = ~(a > 0) if keep_nonzero else ~(a >= edges[0])
    idx = np.where(zero, 0, idx)
    one = a >= edges[DECADES]
    if signed:
        neg = x < 0
        idx = np.where(one & ~neg, 0x80, np.where(one, 127, idx))
        idx = np.where(neg & (idx != 0), idx | 0x80, idx)
    else:
        idx = np.where(one, 255, idx)
    return idx.astype(np.uint8)


def nearest_code_search(x, signed):
    """The slow, obviously-nearest encoder (searchsorted over the sorted map): ground truth for the arithmetic
    encoder above. Ties go to the smaller magnitude."""
    values = code_values(signed)
    order = np.argsort(values, kind="stable")
    sv = values[order]
    x = np.asarray(x, np.float32)
    j = np.clip(np.searchsorted(sv, x), 1, len(sv) - 1)
    lo, hi = sv[j - 1], sv[j]
    pick = np.where(np.abs(x - lo) <= np.abs(hi - x), j - 1, j)
    return order[pick].astype(np.uint8)


def absmax_blocks(x, block=BLOCK):
    """Per-block max |x| of a flat float32 array (last block shorter), float32."""
    n = x.size
    nb = -(-n // block)
    pad = np.zeros(nb * block, np.float32)
    pad[:n] = np.abs(x)
    blocks = pad.reshape(nb, block)
    with np.errstate(invalid="ignore"):
        # a block holding inf or NaN gets a NaN scale: the whole block decodes as NaN (as in C)
        return np.where(np.isfinite(blocks).all(axis=1), blocks.max(axis=1), np.float32(np.nan)).astype(np.float32)


def quantize_blockwise(x, signed, keep_nonzero=False, block=BLOCK):
    """Flat float32 -> (codes uint8 [n], absmax float32 [blocks]). A block of zeros has absmax 0, codes 0."""
    x = np.ascontiguousarray(x, np.float32).reshape(-1)
    absmax = absmax_blocks(x, block)
    # 1/absmax in float32 (0 for an all-zero block, and for inf/NaN: such a block decodes as NaN)
    finite = (absmax > 0) & (absmax < np.inf)  # NaN fails both
    inv = np.where(finite, np.float32(1) / np.where(finite, absmax, np.float32(1)), np.float32(0))
    per_el = np.repeat(inv, block)[:x.size]
    with np.errstate(invalid="ignore"):
        return encode_normalized(x * per_el, signed, keep_nonzero), absmax.astype(np.float32)


def dequantize(codes, absmax, signed, block=BLOCK):
    """(codes uint8 [n], absmax float32 [blocks]) -> flat float32 with the signed or unsigned map."""
    codes = np.ascontiguousarray(codes, np.uint8).reshape(-1)
    with np.errstate(invalid="ignore"):
        return decode_normalized(codes, signed) * np.repeat(np.asarray(absmax, np.float32), block)[:codes.size]


# ---------------------------------------------------------------- bfloat16

def bf16_round_bits(x):
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN (quiet)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    return np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), rounded)


def bf16_bits_to_f32(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def hash32(x):
    """lowbias32: the counter-based hash behind stochastic rounding (uint32 -> uint32)."""
    x = np.asarray(x, np.uint32).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def mix64(z):
    """splitmix64's finaliser (Python ints, 64-bit wraparound): keys of the stochastic-rounding streams."""
    m = 0xFFFFFFFFFFFFFFFF
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def state_key(seed, step, index, stream):
    """The kernel's key of a state buffer's random stream: stream 0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq,
    derived from the param's key mix64(seed ^ mix64(step ^ mix64(index)))."""
    key = mix64((int(seed) ^ mix64((int(step) ^ mix64(int(index))) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF)
    return mix64((key + 1 + stream) & 0xFFFFFFFFFFFFFFFF)


def bf16_stochastic_bits(x, key, first=0):
    """float32 -> bfloat16 bits, rounding up with probability equal to the dropped fraction: the 16 random bits
    of element e (= first + position) are hash32(hash32(lo32(e) ^ key_lo) ^ key_hi ^ hi32(e)), added below the
    kept bits before truncating. NaN stays NaN (quiet); inf stays inf."""
    x = np.ascontiguousarray(x, np.float32).reshape(-1)
    u = x.view(np.uint32)
    e = np.arange(x.size, dtype=np.uint64) + np.uint64(first)
    lo, hi = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
    h = hash32(hash32((e & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ lo) ^ hi ^ (e >> np.uint64(32)).astype(np.uint32))
    with np.errstate(over="ignore"):
        sr = ((u + (h & np.uint32(0xFFFF))) >> np.uint32(16)).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16), sr)
