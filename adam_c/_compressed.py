"""_compressed.py: compressed optimizer state (state_dtype): validation, buffers, conversion to and from float32.

Layouts, per param and state key (exp_avg, exp_avg_sq, max_exp_avg_sq):
- "float32" (default): an array of the param's compute dtype and shape.
- "bfloat16": a uint16 array of the param's shape holding bfloat16 bit patterns (the upper half of a float32).
- "int8": uint8 codes of the param's shape (the 8-bit dynamic map, see _codec) and "<key>_absmax", float32, one per
  256-element block (the last one shorter). Params under 4096 elements keep float32 state (their bytes do not
  matter and their statistics are the least smooth).
"""
from typing import NamedTuple

import numpy as np

from . import _codec
from ._validation import compute_dtype, torch_to_numpy

STATE_DTYPES = ("float32", "bfloat16", "int8")
SIGNED = {"exp_avg": True, "exp_avg_sq": False, "max_exp_avg_sq": False}
# the C kernel's codes for a tensor's state storage (adamc_tensor.state_dtype)
KERNEL_CODE = {"float32": 0, "bfloat16": 1, "int8": 2}


def check_state_dtype(value, name="state_dtype"):
    """None or one of STATE_DTYPES (also accepts numpy/ml_dtypes dtype objects of those names) -> the name."""
    if value is None:
        return "float32"
    if isinstance(value, (np.dtype, type)):
        try:
            value = np.dtype(value).name
        except TypeError:
            raise TypeError(f"{name} must be one of {STATE_DTYPES}, got {value!r}") from None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {STATE_DTYPES} (a string), got {type(value).__name__}")
    if value not in STATE_DTYPES:
        raise ValueError(f"{name} must be one of {STATE_DTYPES}, got {value!r}")
    return value


def check_state_rounding(value, state_dtype, name="state_rounding"):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be 'nearest' or 'stochastic', got {type(value).__name__}")
    if value not in ("nearest", "stochastic"):
        raise ValueError(f"{name} must be 'nearest' or 'stochastic', got {value!r}")
    if value == "stochastic" and state_dtype != "bfloat16":
        raise ValueError(f"{name}='stochastic' needs state_dtype='bfloat16', got state_dtype={state_dtype!r}")
    return value


def layout_for(state_dtype, size):
    """The storage the state of a param of `size` elements really uses: int8 falls back to float32 under
    MIN_QUANTIZED_SIZE elements."""
    if state_dtype == "int8" and size < _codec.MIN_QUANTIZED_SIZE:
        return "float32"
    return state_dtype


def n_blocks(size):
    return -(-size // _codec.BLOCK)


def zeros(layout, param):
    """(buffer, absmax or None) of zeros for one state key."""
    if layout == "bfloat16":
        return np.zeros(param.shape, np.uint16), None
    if layout == "int8":
        return np.zeros(param.shape, np.uint8), np.zeros(n_blocks(param.size), np.float32)
    return np.zeros(param.shape, compute_dtype(param.dtype)), None


def to_float32(layout, key, buf, absmax):
    """A stored state buffer -> a new float32 array of its shape."""
    if layout == "bfloat16":
        return _codec.bf16_bits_to_f32(np.ascontiguousarray(buf)).reshape(buf.shape)
    if layout == "int8":
        return _codec.dequantize(buf, absmax, SIGNED[key]).reshape(buf.shape)
    return np.array(buf, np.float32)


def from_float32(layout, key, values):
    """float32 values -> (buffer, absmax or None) in `layout` (round to nearest; v never rounds to 0 in int8)."""
    values = np.ascontiguousarray(values, np.float32)
    if layout == "bfloat16":
        return _codec.bf16_round_bits(values).reshape(values.shape), None
    if layout == "int8":
        codes, absmax = _codec.quantize_blockwise(values, SIGNED[key], keep_nonzero=not SIGNED[key])
        return codes.reshape(values.shape), absmax
    return values.copy(), None


# torch.optim's load_state_dict rebuilds every non-tensor iterable state value as type(value)(generator): a string
# becomes the repr of a generator, so a checkpoint that passed through torch.optim.Adam has lost its "state_dtype"
_TORCH_MANGLED = "<generator object "


def torch_mangled(entry):
    """True if the entry's "state_dtype" is one torch.optim's load_state_dict mangled (see entry_layout)."""
    saved = entry.get("state_dtype")
    return isinstance(saved, str) and saved.startswith(_TORCH_MANGLED)


def _dtype_name(value):
    return str(getattr(value, "dtype", "")).replace("torch.", "")


def check_not_cast_to_float16(entry, where):
    """An adam_c entry that torch.optim's load_state_dict cast to a float16 param's dtype (seen by its mangled
    "state_dtype", or by a master/EMA, which adam_c keeps in float32, in 16 bits) has lost its moments: float16
    flushes an exp_avg_sq below 6e-8 to zero (the next update would be huge). Refused, not read; without the
    master/EMA keys it is torch.optim's own float16 state, which loads as torch loads it (no sign tells a cast
    float32 entry without them from that)."""
    cast = torch_mangled(entry) or any(_dtype_name(entry.get(key)) in ("float16", "bfloat16")
                                       for key in ("master", "ema"))
    if not cast:
        return
    lost = [key for key in SIGNED if _dtype_name(entry.get(key)) == "float16"]
    if lost:
        raise ValueError(f"{where} went through torch.optim's load_state_dict, which cast its state ({lost[0]!r}) "
                         "to the param's float16, which lost its values (small exp_avg_sq become 0): this state "
                         "cannot be recovered; load the checkpoint adam_c saved instead (or, to go on from "
                         "torch.optim's float16 state as it is, drop the entry's 'state_dtype', 'master' and "
                         "'ema' keys)")


def entry_layout(entry, where):
    """The layout a saved state entry says it has: its "state_dtype" key, else float32 (torch / older files). A
    "state_dtype" mangled by torch.optim is read off what is there: "<key>_absmax" block scales mean int8 codes
    (whatever dtype torch.optim cast them to: every code is exact in float32, float16 and bfloat16, see
    int8_codes), provided the scales are still float32 (torch.optim casts them to a float16/bfloat16 param's
    dtype, which loses their bits: refused); without scales, the buffers' dtype: torch.optim keeps bfloat16 state
    of bfloat16 params as it is and casts it to float32 values for float32 params (exact)."""
    saved = entry.get("state_dtype", "float32")
    name = f"{where}['state_dtype']"
    if hasattr(saved, "item") and not isinstance(saved, str):
        size = saved.numel() if callable(getattr(saved, "numel", None)) else np.size(saved)
        if size != 1:
            raise TypeError(f"{name} must be one of {STATE_DTYPES} (a string), got a {type(saved).__name__} of "
                            f"{size} elements")
        saved = saved.item()
    if not (isinstance(saved, str) and saved.startswith(_TORCH_MANGLED)):
        check_not_cast_to_float16(entry, where)  # (a cast master/EMA tells)
    else:
        scales = [key + "_absmax" for key in SIGNED if entry.get(key + "_absmax") is not None]
        for akey in scales:
            kind = str(getattr(entry[akey], "dtype", ""))
            if kind not in ("torch.float32", "float32"):
                raise ValueError(f"{where} held int8 state, but torch.optim's load_state_dict cast its block scales "
                                 f"({akey!r}) to {kind.replace('torch.', '')}, which lost their bits: this state "
                                 "cannot be recovered; load the checkpoint adam_c saved instead")
        if scales:
            return "int8"
        check_not_cast_to_float16(entry, where)
        kind = str(getattr(entry.get("exp_avg"), "dtype", ""))
        if kind in ("torch.bfloat16", "uint16"):
            return "bfloat16"
        if kind in ("torch.uint8", "uint8"):
            return "int8"
        return "float32"
    return check_state_dtype(saved, name)


def int8_codes(value, where):
    """int8 codes of an entry torch.optim mangled (torch_mangled) as an array: uint8 as saved, or read back from
    the numbers torch.optim's load_state_dict cast them to (float32, float16 or bfloat16: exact for every code),
    in their memory order; anything else is returned as it is for the caller to refuse. Numbers that are not all
    whole codes in [0, 255] are refused. (An entry that says "int8" itself must hold uint8 codes.)"""
    if hasattr(value, "detach") and hasattr(value, "numpy") and str(value.dtype) != "torch.uint8" \
            and getattr(value, "is_floating_point", lambda: False)():
        array = torch_to_numpy(value, where)  # bfloat16 as float32 (exact)
    else:
        array = _as_array(value, where)
    if array.dtype.kind != "f":
        return array
    with np.errstate(invalid="ignore"):
        whole = bool(np.all((array >= 0) & (array <= 255) & (array == np.floor(array))))
    if not whole:
        raise ValueError(f"{where} must hold int8 codes (whole numbers in [0, 255]), got other {array.dtype} values")
    return array.astype(np.uint8)  # order "K": the memory order the block scales cover


class ParamShape(NamedTuple):
    """What the checkpoint converters (load_saved and its plain_loader) read of a param: shape, element count,
    NumPy dtype. A NumPy array has these attributes itself; a torch front-end passes one of these."""
    shape: tuple
    size: int
    dtype: np.dtype


def load_saved(entry, key, param, layout, where, plain_loader):
    """A saved state entry's `key` (any layout) -> (buffer, absmax or None) in `layout`, validated, fresh copies.
    Same layout: the stored arrays are copied as they are (no re-rounding); another layout goes through float32.
    plain_loader(value, param, where): the checkpoint module's loader of a plain float array."""
    saved_layout = entry_layout(entry, where)
    if saved_layout == "float32":
        values = plain_loader(entry[key], param, f"{where}[{key!r}]")
        return (values, None) if layout == "float32" else from_float32(layout, key, values)
    recover = saved_layout == "int8" and torch_mangled(entry)
    value = (int8_codes if recover else _as_array)(entry[key], f"{where}[{key!r}]")
    want = np.uint16 if saved_layout == "bfloat16" else np.uint8
    if value.dtype != want:
        raise TypeError(f"{where}[{key!r}] must be {np.dtype(want).name} for state_dtype {saved_layout!r}, "
                        f"got {value.dtype}")
    if value.shape != param.shape:
        raise ValueError(f"{where}[{key!r}] has shape {value.shape}, but its param has shape {param.shape}")
    absmax = None
    if saved_layout == "int8":
        akey = key + "_absmax"
        if entry.get(akey) is None:
            raise ValueError(f"{where} is missing the key {akey!r} (int8 state)")
        absmax = _as_array(entry[akey], f"{where}[{akey!r}]")
        if absmax.dtype != np.float32 or absmax.shape != (n_blocks(param.size),):
            raise ValueError(f"{where}[{akey!r}] must be float32 of shape ({n_blocks(param.size)},), got "
                             f"{absmax.dtype} {absmax.shape}")
        if np.any(absmax < 0) or np.any(np.isinf(absmax)):
            raise ValueError(f"{where}[{akey!r}] holds a negative or infinite block scale (scales are each block's "
                             "largest magnitude, or NaN for a block that holds inf/NaN)")
        values = decoded_in_memory_order(value, absmax, key)
        if values is not None:  # a channels_last (or other non-C) tensor of codes: its values, in any layout
            return ((values.astype(compute_dtype(param.dtype)), None) if layout == "float32"
                    else from_float32(layout, key, values))
        absmax = np.array(absmax, order="C", copy=True)
    value = np.array(value, order="C", copy=True)
    if saved_layout == layout:
        return value, absmax
    values = to_float32(saved_layout, key, value, absmax)
    if layout == "float32":
        return values.astype(compute_dtype(param.dtype)), None
    return from_float32(layout, key, values)


def memory_order(array):
    """The axes of an array from the largest stride to the smallest, if walking them so is walking its memory
    (a dense array in any axis order: channels_last, Fortran), else None."""
    order = sorted(range(array.ndim), key=lambda d: -array.strides[d])
    return order if array.transpose(order).flags.c_contiguous else None


def decoded_in_memory_order(codes, absmax, key):
    """int8 codes whose block scales cover 256-element blocks of the codes' memory order (the order the kernel
    walks: adam_c.torch keeps a channels_last param's state channels_last) decoded to a new float32 array of their
    shape, or None where memory order is C order (the blocks adam_c.Adam's codes have: use them as they are)."""
    order = None if codes.flags.c_contiguous else memory_order(codes)
    if order is None:
        return None
    walked = codes.transpose(order)
    values = to_float32("int8", key, np.ascontiguousarray(walked).reshape(-1), absmax)
    return np.ascontiguousarray(values.reshape(walked.shape).transpose(np.argsort(order)))


def _as_array(value, where):
    """A saved code or scale array as an ndarray (torch.bfloat16 tensors as their uint16 bits); tensors numpy
    cannot read (meta, sparse, other devices) are TypeErrors naming `where`."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        if str(value.dtype) != "torch.bfloat16":
            return torch_to_numpy(value, where)
        if str(getattr(value, "layout", "torch.strided")) != "torch.strided":
            raise TypeError(f"{where} must be a dense (strided) tensor, got {value.layout}")
        return torch_to_numpy(value.view(_torch_int16()), where).view(np.uint16)
    try:
        return np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{where} must be an array, got {type(value).__name__}") from exc


def _torch_int16():
    import torch
    return torch.int16


def state_nbytes(arrays):
    return int(sum(a.nbytes for a in arrays if a is not None))

