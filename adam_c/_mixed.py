"""_mixed.py: the storage options of an optimizer (master weights, rounding, EMA, compressed state) and of a step
(loss scale, inf skip, global-norm clipping), validated; every error names its argument."""
import math
import numbers

import numpy as np

from . import _compressed
from ._validation import BFLOAT16, LOW_PRECISION_DTYPES, flag, real

ROUNDINGS = ("nearest", "stochastic")


def low_precision(dtype):
    """float16 or bfloat16 (a NumPy dtype): a param stored with fewer bits than it is computed in."""
    return np.dtype(dtype) in LOW_PRECISION_DTYPES


class MixedOptions:
    """Optimizer-wide storage settings (plain data, picklable): mixed precision and the state's format."""

    # class-level defaults: options pickled before compressed state existed unpickle as float32 state
    state_dtype = "float32"
    state_rounding = "nearest"

    def __init__(self, master_weights, rounding, ema_decay, seed, state_dtype="float32", state_rounding="nearest"):
        self.master_weights = master_weights
        self.rounding = rounding
        self.ema_decay = ema_decay
        self.seed = seed
        self.state_dtype = state_dtype
        self.state_rounding = state_rounding

    @classmethod
    def default(cls):
        """No master weights, round to nearest, no EMA, float32 state."""
        return cls(False, "nearest", None, 0)

    @classmethod
    def checked(cls, master_weights, rounding, ema_decay, seed, state_dtype=None, state_rounding="nearest"):
        state_dtype = _compressed.check_state_dtype(state_dtype)
        state_rounding = _compressed.check_state_rounding(state_rounding, state_dtype)
        master_weights = flag(master_weights, "master_weights")
        if not isinstance(rounding, str) or rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
        if rounding == "stochastic" and master_weights:
            raise ValueError("rounding='stochastic' is for bfloat16 params without master weights; "
                             "with master_weights=True the params are rounded to nearest from the master")
        if ema_decay is not None:
            ema_decay = real(ema_decay, "ema_decay")
            if not 0.0 <= ema_decay <= 1.0:
                raise ValueError(f"ema_decay={ema_decay!r} must be in [0, 1]")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {seed}")
        return cls(master_weights, rounding, ema_decay, int(seed), state_dtype, state_rounding)

    def check_params(self, dtypes, where):
        """Refuse combinations the kernels cannot run for params of these (NumPy) dtypes, naming the param."""
        for j, dtype in enumerate(dtypes):
            dtype = np.dtype(dtype)
            if self.state_dtype != "float32" and dtype == np.float64:
                raise ValueError(f"{where}[{j}] has dtype float64: state_dtype={self.state_dtype!r} needs float32 "
                                 "compute (float32, float16 or bfloat16 params)")
            if self.rounding == "stochastic" and dtype != BFLOAT16 and dtype != np.float32 \
                    and dtype != np.float64:
                raise ValueError(f"{where}[{j}] has dtype {dtype}: rounding='stochastic' is for bfloat16 "
                                 "params (float16 params round to nearest; use master_weights=True)")

    def extra_buffers(self, dtype):
        """Which of "master", "ema" a param of this (NumPy) dtype needs."""
        keys = []
        if self.master_weights and low_precision(dtype):
            keys.append("master")
        if self.ema_decay is not None:
            keys.append("ema")
        return keys

    def state_format(self, size):
        """How the exp_avg/exp_avg_sq/max_exp_avg_sq of a param of `size` elements are stored: "float32" (the
        compute dtype), "bfloat16" or "int8" (int8 keeps params under 4096 elements in float32: see
        _compressed.layout_for)."""
        return _compressed.layout_for(self.state_dtype, size)

    def run_options(self):
        return {"ema_decay": 0.0 if self.ema_decay is None else self.ema_decay, "seed": self.seed}


def check_step_extras(grad_scale, max_grad_norm, skip_nonfinite):
    """StepPlan.run's keyword arguments for step(grad_scale=, max_grad_norm=, skip_nonfinite=)."""
    out = {}
    if grad_scale is not None:
        if is_tensor(grad_scale):  # a 1-element torch tensor, as GradScaler keeps its scale
            grad_scale = one_element_value(grad_scale, "grad_scale")
        out["grad_scale"] = loss_scale(grad_scale)
    if max_grad_norm is not None:
        norm = real(max_grad_norm, "max_grad_norm")
        if not norm > 0.0:  # NaN too
            raise ValueError(f"max_grad_norm={max_grad_norm!r} must be > 0")
        out["max_grad_norm"] = norm
    if skip_nonfinite is None:
        skip_nonfinite = grad_scale is not None
    if flag(skip_nonfinite, "skip_nonfinite"):
        out["skip_nonfinite"] = True  # False is StepPlan.run's default: a plain step passes no options at all
    return out


def is_tensor(value):
    """A torch tensor (duck-typed: torch is imported only by adam_c.torch), not a NumPy array."""
    return hasattr(value, "item") and hasattr(value, "numel") and not isinstance(value, np.ndarray)


def one_element_value(tensor, name, allow_bool=False):
    """The number in a 1-element dense CPU real torch tensor of any shape (GradScaler's scale and found_inf are
    shape (1,)); other tensors (more elements, meta or other devices, sparse, complex, bool unless allow_bool) are
    TypeErrors naming the argument."""
    try:
        numel, device, layout, dtype = tensor.numel(), str(tensor.device), str(tensor.layout), tensor.dtype
    except Exception as exc:
        raise TypeError(f"{name} must be a 1-element CPU tensor ({type(exc).__name__}: {exc})") from exc
    if numel != 1 or device != "cpu" or layout != "torch.strided" or dtype.is_complex or (
            str(dtype) == "torch.bool" and not allow_bool):
        raise TypeError(f"{name} must be a 1-element dense real CPU tensor (as GradScaler provides), got "
                        f"{numel} elements of {dtype} on {device} ({layout})")
    return tensor.item()


def loss_scale(value, name="grad_scale"):
    """A loss scale as float: a real number, finite and > 0, as a float32 too (the kernel divides the grads by
    float32(scale), as torch's fused Adam divides by GradScaler's float32 scale)."""
    scale = real(value, name)
    with np.errstate(over="ignore", under="ignore"):
        as_float32 = float(np.float32(scale)) if math.isfinite(scale) else scale
    if not (math.isfinite(scale) and scale > 0.0 and math.isfinite(as_float32) and as_float32 > 0.0):
        raise ValueError(f"{name}={value!r} must be finite and > 0 (as a float32 too)")
    return scale


def numpy_view(tensor):
    """Hook for adam_c.torch (issue 9 asks for torch half/bfloat16 params): a NumPy array sharing the memory of a
    contiguous CPU torch tensor, float16 and bfloat16 included (NumPy has no bfloat16, so the bits are viewed as
    ml_dtypes.bfloat16). The optimizer then updates the tensor in place through the array. Not a copy: keep the
    tensor alive as long as the array is used."""
    import torch  # only called with torch tensors

    if tensor.dtype == torch.bfloat16:
        if BFLOAT16 is None:
            raise TypeError("bfloat16 tensors need the ml_dtypes package (pip install ml_dtypes)")
        return tensor.detach().view(torch.int16).numpy().view(BFLOAT16)
    return tensor.detach().numpy()
