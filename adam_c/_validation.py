"""_validation.py: argument checks shared by the optimizer and the functional form; every error names its argument."""
import numbers
import operator
from collections.abc import Mapping, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
try:  # bfloat16 for NumPy: the ml_dtypes package (JAX's and TensorFlow's); optional
    import ml_dtypes as _ml_dtypes
    BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is installed wherever bfloat16 arrays can exist
    BFLOAT16 = None
LOW_PRECISION_DTYPES = (np.dtype(np.float16),) + ((BFLOAT16,) if BFLOAT16 is not None else ())
PARAM_DTYPES: tuple = FLOAT_DTYPES + LOW_PRECISION_DTYPES  # dtypes of several kinds (bfloat16 is ml_dtypes)
_DTYPE_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}
if BFLOAT16 is not None:
    _DTYPE_CODES[BFLOAT16] = 3


def dtype_code(dtype):
    """The C core's adamc_dtype of a NumPy dtype (native byte order), -1 if it has none."""
    return _DTYPE_CODES.get(np.dtype(dtype), -1)


def compute_dtype(dtype):
    """The dtype of the state, master and EMA of a param of `dtype`: float64 stays float64, else float32."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


class ReentrantCallError(RuntimeError):
    """An optimizer was called from inside one of its own calls (the validators let it through unchanged)."""


# the largest step count (a param's number of updates) in both front-ends, their plans and checkpoints
MAX_STEP = 2**62 - 1

HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


def real(value, name):
    """A finite-or-infinite real number as float; bools, strings, complex and arrays are TypeErrors."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
            return float(value)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{name}={value!r} is too large for a float") from None
    except ReentrantCallError:
        raise
    except Exception as exc:  # a numbers.Real whose __float__ is broken (raises, or returns a non-float)
        raise TypeError(f"{name} must be a real number convertible to float, got {type(value).__name__} "
                        f"({type(exc).__name__}: {exc})") from exc
    return result


def flag(value, name):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_lr(value, name="lr"):
    lr = real(value, name)
    if not 0.0 <= lr:  # torch.optim's messages first (code matches on them), then the argument's name
        raise ValueError(f"Invalid learning rate: {value} ({name} must be >= 0)")
    return lr


def check_eps(value, name="eps"):
    eps = real(value, name)
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {value} ({name} must be >= 0)")
    return eps


def check_weight_decay(value, name="weight_decay"):
    wd = real(value, name)
    if not 0.0 <= wd:
        raise ValueError(f"Invalid weight_decay value: {value} ({name} must be >= 0)")
    return wd


def check_beta(value, name, index=None):
    """A beta in [0, 1); `index`: its position in a betas pair (torch.optim's message names it)."""
    beta = real(value, name)
    if not 0.0 <= beta < 1.0:
        at = "" if index is None else f" at index {index}"
        raise ValueError(f"Invalid beta parameter{at}: {value} ({name} must be in [0, 1))")
    return beta


def check_betas(value, name="betas"):
    """A pair: a tuple, list or other sequence, or a 1-d array of two numbers (sets and 0-d arrays are refused)."""
    if isinstance(value, np.ndarray):
        ok = value.ndim == 1 and value.shape[0] == 2
    else:
        ok = isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))
        if ok:
            try:
                ok = len(value) == 2
            except Exception:
                ok = False
    if not ok:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {_short_repr(value)}")
    try:
        first, second = value[0], value[1]
    except ReentrantCallError:
        raise
    except Exception as exc:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {_short_repr(value)}") from exc
    return (check_beta(first, f"{name}[0]", 0), check_beta(second, f"{name}[1]", 1))


def _short_repr(value):
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_lr_or_schedule(value, name="lr"):
    """An optimizer's lr: a number as check_lr, or a schedule (any callable step -> lr), kept as it is and called
    once per step by resolve_schedules."""
    if callable(value) and not isinstance(value, type):  # a class (float, np.float32) is a mistake, not a schedule
        return value
    return check_lr(value, name)


def has_schedules(groups):
    """Whether some group's lr is a schedule (a callable) that resolve_schedules calls."""
    return any(isinstance(g, Mapping) and callable(g.get("lr")) for g in groups)


def resolve_schedules(groups, steps):
    """The groups a step reads: `groups` itself when no lr is a schedule (the usual case costs one pass), else
    copies whose schedule lr is replaced by its value for the group's step about to be taken (1 + the largest
    step count among its params; `steps` is the optimizer's per-param count). Raises naming the group for a
    schedule that fails or returns a bad lr; changes nothing."""
    if not any(isinstance(g, Mapping) and callable(g.get("lr")) for g in groups):
        return groups
    resolved, start = [], 0
    for i, group in enumerate(groups):
        n = len(group["params"]) if isinstance(group, Mapping) and "params" in group else 0
        if isinstance(group, Mapping) and callable(group.get("lr")):
            counts = steps[start:start + n]  # empty if the groups were edited since `steps` was laid out
            step = int(counts.max()) + 1 if len(counts) else 1
            value = group["lr"](step)
            group = {**group, "lr": check_lr(value, f"param_groups[{i}]['lr']({step}) (the schedule's value)")}
        resolved.append(group)
        start += n
    return resolved


_CHECKS = {"lr": check_lr_or_schedule, "betas": check_betas, "eps": check_eps, "weight_decay": check_weight_decay,
           "amsgrad": flag, "maximize": flag, "decoupled_weight_decay": flag}


def check_hyperparameters(hp, where):
    """Validated copy of the hyperparameters in mapping `hp`. Names in messages are the plain keyword ("lr")
    when `where` is empty, else where['lr'] (e.g. param_groups[1]['lr'])."""
    out = {}
    for key in HYPERPARAMETERS:
        name = f"{where}[{key!r}]" if where else key
        if key not in hp:
            raise ValueError(f"{where or 'hyperparameters'} is missing the hyperparameter {key!r}")
        out[key] = _CHECKS[key](hp[key], name)
    return out


def plain_hyperparameters(group):
    """The group's entries other than 'params', with each valid hyperparameter as a plain Python float, bool or
    tuple of floats (np.float32, 0-d arrays, Fractions, np.bool_ normalised) so a state_dict is JSON-friendly;
    an invalid or unknown value is passed through unchanged (the next step reports it)."""
    out = {}
    for key, value in group.items():
        if key == "params":
            continue
        check = _CHECKS.get(key)
        if check is not None:
            try:
                value = check(value, key)
            except (TypeError, ValueError):
                pass
        out[key] = value
    return out


def read_group(group, index):
    """The tuple a step needs from param_groups[index], validated, with messages naming the entry. The step plan
    reads plain float/bool groups in Cython and calls this only for anything else (which it converts or refuses)."""
    if not isinstance(group, Mapping):
        raise TypeError(f"param_groups[{index}] must be a dict, got {type(group).__name__}")
    hp = check_hyperparameters(group, f"param_groups[{index}]")
    beta1, beta2 = hp["betas"]
    return (hp["lr"], beta1, beta2, hp["eps"], hp["weight_decay"], hp["amsgrad"], hp["maximize"],
            hp["decoupled_weight_decay"])


def check_param(array, name):
    """A param the optimizer may update in place: a writable, aligned, native, C-contiguous float ndarray
    (float32, float64, float16 or bfloat16)."""
    if not isinstance(array, np.ndarray):
        hint = (" (for torch tensors use adam_c.torch.Adam or AdamW, drop-ins for torch.optim)"
                if type(array).__module__.startswith("torch") else "")
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}{hint}")
    return _check_kernel_buffer(array, name, writable=True,
                                contiguity_hint=" (np.ascontiguousarray makes a copy, which would not be updated)",
                                dtypes=PARAM_DTYPES)


def _check_kernel_buffer(array, name, writable, contiguity_hint="", dtypes=FLOAT_DTYPES):
    """What the C kernel needs of an ndarray: a supported float dtype, native, C-contiguous, aligned (and
    writable)."""
    if not array.dtype.isnative and array.dtype.newbyteorder("=") in dtypes:
        raise ValueError(f"{name} must be in native byte order, got {array.dtype.str} (byte-swapped); convert it "
                         f"with arr.astype(arr.dtype.newbyteorder('=')) (a copy)")
    if array.dtype not in dtypes:
        names = "float32 or float64" if dtypes == FLOAT_DTYPES else "float32, float64, float16 or bfloat16"
        raise TypeError(f"{name} must have dtype {names}, got {array.dtype}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous{contiguity_hint}")
    if writable and not array.flags.writeable:
        raise ValueError(f"{name} must be writable")
    if not array.flags.aligned:
        raise ValueError(f"{name} must be aligned to its element size")
    return array


def coerce_grad(grad, index, param):
    """A grad that failed the fast check: convert what converts losslessly (non-contiguous, other containers)
    to a C-contiguous array of the param's dtype and shape, and name the problem otherwise."""
    name = f"grads[{index}]"
    try:
        array = np.asarray(grad)
    except ReentrantCallError:
        raise
    except Exception as exc:  # objects numpy cannot read at all
        raise TypeError(f"{name} must be an array of numbers, got {type(grad).__name__}") from exc
    if param.dtype in LOW_PRECISION_DTYPES:
        # a float16/bfloat16 param takes grads of its own dtype or float32 (converted in the kernel)
        if array.dtype not in (param.dtype, np.dtype(np.float32)) or not array.dtype.isnative:
            raise TypeError(f"{name} has dtype {array.dtype}, but its param has dtype {param.dtype} "
                            f"(grads of a {param.dtype} param must be {param.dtype} or float32)")
        if array.shape != param.shape:
            raise ValueError(f"{name} has shape {array.shape}, but its param has shape {param.shape}")
        return np.require(array, requirements=["C", "A"])
    if array.dtype in LOW_PRECISION_DTYPES:  # e.g. bfloat16 (kind "V" for ml_dtypes): name the mismatch
        raise TypeError(f"{name} has dtype {array.dtype}, but its param has dtype {param.dtype} (grads of a "
                        f"{param.dtype} param must be {param.dtype})")
    if array.dtype.kind not in "fiu" or array.dtype == np.dtype(object):
        raise TypeError(f"{name} must be a float array, got dtype {array.dtype}")
    if array.dtype.kind != "f" or array.dtype.itemsize != param.dtype.itemsize:
        raise TypeError(f"{name} has dtype {array.dtype}, but its param has dtype {param.dtype}")
    if array.shape != param.shape:
        raise ValueError(f"{name} has shape {array.shape}, but its param has shape {param.shape}")
    return np.require(array, dtype=param.dtype.newbyteorder("="), requirements=["C", "A"])


def buffer_array(obj, name, writable):
    """A flat ndarray view of a buffer-protocol object (no copy), checked for what the C kernel needs.
    A buffer written in place must really be shared memory: a list or tuple (or anything numpy would copy) is
    refused rather than updated in a temporary copy."""
    if obj is None:
        raise TypeError(f"{name} must be a float32/float64 buffer, got None")
    if writable and not isinstance(obj, np.ndarray):
        try:
            obj = memoryview(obj)
        except TypeError:
            hint = " (for a torch tensor pass tensor.numpy())" if type(obj).__module__.startswith("torch") else ""
            raise TypeError(f"{name} must be a writable buffer (ndarray, memoryview, array.array), "
                            f"got {type(obj).__name__}{hint}") from None
    try:
        array = np.asarray(obj)
    except Exception as exc:
        raise TypeError(f"{name} must be a float32/float64 buffer, got {type(obj).__name__}") from exc
    return _check_kernel_buffer(array, name, writable).reshape(-1)


def grads_sequence(grads):
    """grads as a list; a bare array, a dict, a set or a non-iterable is refused with a message naming grads."""
    if isinstance(grads, np.ndarray):
        raise TypeError("grads must be a sequence with one array per param (e.g. [g]), got a single ndarray")
    if isinstance(grads, (Mapping, set, frozenset, str, bytes)):
        raise TypeError("grads must be a sequence (a list or tuple aligned with the params, in group order), "
                        f"got {type(grads).__name__}")
    try:
        return list(grads)
    except TypeError:
        raise TypeError(f"grads must be a sequence with one array per param, got {type(grads).__name__}") from None


def describe_overlap(grads, params, state_lists):
    """The message for a step the C core refused for overlap: which grad shares memory with what."""
    for i, grad in enumerate(grads):
        if grad is None or not isinstance(grad, np.ndarray):
            continue
        owners = [("its param", params[i])] + [(f"its {key}", lst[i]) for key, lst in state_lists]
        for what, array in owners:
            if array is not None and np.shares_memory(grad, array):
                return f"grads[{i}] shares memory with {what}; pass a separate gradient array"
    return "a grad shares memory with its param or optimizer state"


def check_step(value, name="step"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    step = operator.index(value)
    if not 1 <= step <= MAX_STEP:
        raise ValueError(f"{name} must be >= 1 (the 1-based number of this update), got {step}")
    return step


def first_overlap(named_arrays):
    """The first pair of names whose arrays share memory (by address range), or None."""
    spans = []
    for name, array in named_arrays:
        if array is None or array.nbytes == 0:
            continue
        start = array.__array_interface__["data"][0]
        spans.append((start, start + array.nbytes, name))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            return n0, n1
    # sorted by start, a span can also overlap one further on if it is long: check the running maximum end
    best_end, best_name = -1, None
    for start, end, name in spans:
        if start < best_end:
            return best_name, name
        if end > best_end:
            best_end, best_name = end, name
    return None


def torch_to_numpy(value, where):
    """A torch tensor's values as an ndarray; meta tensors (no data) and tensors numpy cannot read are refused
    with TypeError naming the entry (conjugate and negative bits are resolved first)."""
    try:
        is_meta = bool(getattr(value, "is_meta", False)) or str(value.device) == "meta"
    except Exception:
        is_meta = False
    if is_meta:
        raise TypeError(f"{where} is a meta tensor, which holds no data")
    if str(getattr(value, "layout", "torch.strided")) != "torch.strided":
        raise TypeError(f"{where} must be a dense (strided) tensor, got {value.layout}")
    if value.is_complex():
        raise TypeError(f"{where} must be a real tensor, got dtype {value.dtype}")
    try:
        value = value.detach()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; exact in float32 (state is float32)
            value = value.float()
        return value.resolve_conj().resolve_neg().cpu().numpy()
    except Exception as exc:  # sparse, quantized, other devices...: whatever torch refuses to hand to numpy
        raise TypeError(f"{where}: cannot read this tensor's values ({type(exc).__name__}: {exc})") from exc
