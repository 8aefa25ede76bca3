"""NumPy oracle of one Adam step with compressed state (bfloat16 or blockwise int8 m/v), composed from the fp32 oracle.

The compressed step is: load (decode) the state to float32, the ordinary float32 step of tests/reference.py, then
store (encode) the new state; the param update uses the new float32 values before they are stored. bfloat16
rounding is checked against ml_dtypes; the int8 codes come from adam_c._codec (whose encoder the tests check
against an exact nearest-value search over the published map).
"""
import numpy as np

from adam_c import _codec
from reference import adam_step_reference

STREAMS = {"exp_avg": 0, "exp_avg_sq": 1, "max_exp_avg_sq": 2}
SIGNED = {"exp_avg": True, "exp_avg_sq": False, "max_exp_avg_sq": False}


def bf16_round(x):
    """float32 -> bfloat16 bits (uint16), round to nearest even, through ml_dtypes (an independent rounding)."""
    import ml_dtypes
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def bf16_to_f32(bits):
    return (np.asarray(bits, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def int8_quantize(x, key):
    """float32 state -> (codes, absmax); v and max_exp_avg_sq never round a nonzero value to code 0."""
    return _codec.quantize_blockwise(np.asarray(x, np.float32).reshape(-1), SIGNED[key],
                                     keep_nonzero=not SIGNED[key])


def int8_dequantize(codes, absmax, key):
    return _codec.dequantize(codes, absmax, SIGNED[key])


def decode_state(stored, key, state_dtype):
    """Stored state -> float32 array: bf16 bits (uint16), (codes, absmax) for int8, or float32 as is."""
    if state_dtype == "bfloat16":
        return bf16_to_f32(stored)
    if state_dtype == "int8":
        codes, absmax = stored
        return int8_dequantize(codes, absmax, key).reshape(codes.shape)
    return np.array(stored, np.float32)


def encode_state(x, key, state_dtype, rounding="nearest", seed=0, step=1, index=0):
    if state_dtype == "bfloat16":
        if rounding == "stochastic":
            stream_key = _codec.state_key(seed, step, index, STREAMS[key])
            return _codec.bf16_stochastic_bits(x, stream_key).reshape(np.shape(x))
        return bf16_round(x)
    if state_dtype == "int8":
        codes, absmax = int8_quantize(x, key)
        return codes.reshape(np.shape(x)), absmax
    return np.array(x, np.float32)


def compressed_step_reference(param, grad, state, *, state_dtype, step, amsgrad=False, rounding="nearest", seed=0,
                              index=0, **hp):
    """One step on a float32 param; `state` maps exp_avg/exp_avg_sq[/max_exp_avg_sq] to their stored form.
    Returns (new param, new state dict), inputs untouched."""
    keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    loaded = {k: decode_state(state[k], k, state_dtype) for k in keys}
    p, m, v, vmax = adam_step_reference(param, grad, loaded["exp_avg"], loaded["exp_avg_sq"],
                                        loaded.get("max_exp_avg_sq"), step=step, amsgrad=amsgrad, **hp)
    new = {"exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}
    return p, {k: encode_state(new[k], k, state_dtype, rounding, seed, step, index) for k in keys}
