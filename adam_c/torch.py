"""torch.py: Adam and AdamW as torch.optim.Optimizer subclasses that step CPU tensors with adam_c's C engine."""
import contextlib
import copy
import inspect
import math
import numbers
import sys
import weakref
from collections import defaultdict
from collections.abc import Mapping
from itertools import chain
from types import MappingProxyType

import numpy as np
import torch
from torch.optim.optimizer import Optimizer

from . import _compressed, _core, _torch_exit
from ._checkpoint import _state_array
from ._engine import CallLock, ReleaseWhenSaved, ema_block_error, put_back, threading_report, write_all_or_nothing
from ._mixed import MixedOptions, check_step_extras, loss_scale, numpy_view, one_element_value
from ._validation import BFLOAT16, check_hyperparameters, first_overlap, real

try:  # the registries behind torch.optim.optimizer.register_optimizer_step_{pre,post}_hook
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
except ImportError:  # pragma: no cover - older torch
    _global_optimizer_pre_hooks, _global_optimizer_post_hooks = {}, {}

__all__ = ["Adam", "AdamW"]

_torch_exit.install()   # a process using torch.distributed with adam_c exits without gloo's abort at exit

_FLOAT_DTYPES = (torch.float32, torch.float64)
_PARAM_DTYPES = _FLOAT_DTYPES + (torch.float16, torch.bfloat16)
# the C core's adamc_dtype of each param dtype (the same codes as _validation.dtype_code)
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _state_dtype(dtype):
    """exp_avg/exp_avg_sq dtype of a param: float64 stays float64, else float32 (as adam_c.Adam's compute_dtype;
    torch.optim keeps float16/bfloat16 state, which this optimizer upcasts exactly when it first meets it)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_ABSMAX_KEYS = tuple(key + "_absmax" for key in _STATE_KEYS)
# every key that depends on how the state is stored (see _compressed): converted together, never cast by torch
_FORMAT_KEYS = _STATE_KEYS + _ABSMAX_KEYS + ("state_dtype",)
# mixed precision (MixedOptions.extra_buffers): float32 master of a float16/bfloat16 param, EMA in the compute dtype;
# loaded by this optimizer, never cast to the param dtype by torch
_MIXED_KEYS = ("master", "ema")
_LOW_PRECISION = (torch.float16, torch.bfloat16)
# compressed state as torch holds it (both load with torch.load(weights_only=True)): bfloat16 state as
# torch.bfloat16 (the very bits the kernel reads as uint16), int8 state as torch.uint8 codes
_LAYOUT_DTYPES = {"bfloat16": torch.bfloat16, "int8": torch.uint8}
_NUMPY_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
                 torch.float16: np.dtype(np.float16), torch.bfloat16: BFLOAT16}
_COMPAT_FLAGS = ("foreach", "capturable", "differentiable", "fused")
_data_ptr = torch.Tensor.data_ptr   # unbound: called on each param and grad by the plan without a bound method
_stride = torch.Tensor.stride
_storage = torch.Tensor.untyped_storage


# ---------------------------------------------------------------- DTensor (FSDP2, tensor parallel): local shards

def _dtensor_class():
    """torch's DTensor class once torch.distributed.tensor is imported (no DTensor exists before), else None."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _local(t):
    """What adam_c reads and writes of tensor t: a DTensor's local shard (FSDP2, tensor parallelism), else t."""
    cls = _dtensor_class()
    return t._local_tensor if cls is not None and isinstance(t, cls) else t


def _local_ptr(t):
    """The plan's data_ptr for an optimizer with DTensor params: the local shard's memory."""
    return _data_ptr(_local(t))


def _local_layout(t):
    """The plan's layout key for an optimizer with DTensor params: the local shard's shape and strides and the
    DTensor's placements (a grad fits its param only with all three equal), a plain tensor's strides."""
    cls = _dtensor_class()
    if cls is not None and isinstance(t, cls):
        local = t._local_tensor
        return (local.shape, local.stride(), t.placements, t.device_mesh)
    return t.stride()


def _local_storage(t):
    return _storage(_local(t))


def _increment_local_versions(tensors):
    """Autograd's version bump of the written params: a DTensor's wrapper and its local shard."""
    torch._C._increment_version(list({id(x): x for t in tensors for x in (t, _local(t))}.values()))


def _check_dtensor(t, name):
    """A DTensor adam_c can step: on a CPU mesh, no Partial placement (a pending reduction is not a value)."""
    for placement in t.placements:
        if placement.is_partial():
            raise ValueError(f"{name} is a DTensor with placements {tuple(t.placements)}: a Partial placement "
                             "holds a pending reduction, not values adam_c.torch can update (redistribute it to "
                             "Shard or Replicate first)")
    if t.device_mesh.device_type != "cpu":
        raise ValueError(f"{name} is a DTensor on a {t.device_mesh.device_type!r} device mesh; adam_c.torch steps "
                         "CPU tensors only (FSDP2: fully_shard(..., offload_policy=CPUOffloadPolicy()) keeps the "
                         "sharded params and their optimizer state on the CPU)")


# ---------------------------------------------------------------- validation of torch inputs

def _plain_number(value, name):
    """A 1-element tensor hyperparameter (torch allows them for lr and betas) as a Python number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element, got {value.numel()} elements")
        return value.item()
    return value


def _checked_hyperparameters(hp, where):
    """check_hyperparameters (the one policy, shared with adam_c.Adam) on the group's values, with 1-element
    tensors read as numbers, plus the torch-only compatibility flags."""
    plain = {key: hp[key] for key in hp if key != "params"}
    name = (lambda key: f"{where}[{key!r}]") if where else (lambda key: key)
    _check_tensor_hyperparameters(plain, name)
    if "lr" in plain:
        plain["lr"] = _plain_number(plain["lr"], name("lr"))
        if callable(plain["lr"]) and not isinstance(plain["lr"], type):
            # adam_c.Adam's schedules (callables step -> lr) are not torch.optim's: its LR schedulers write a number
            # into group["lr"], and torch.load(weights_only=True) cannot read a schedule object from a checkpoint
            raise TypeError(f"{name('lr')} must be a float or a 1-element Tensor, got {type(plain['lr']).__name__} "
                            "(a schedule): with adam_c.torch use a torch.optim.lr_scheduler")
    betas = plain.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        plain["betas"] = tuple(_plain_number(b, f"{name('betas')}[{k}]") for k, b in enumerate(betas))
    checked = check_hyperparameters(plain, where)
    _check_compat_flags(plain, name)
    return checked


def _check_tensor_hyperparameters(hp, name):
    """torch.optim.Adam's rules for Tensor lr and betas, with its messages (checked before the values, as torch
    does): no Tensor with foreach=True unless capturable, and betas both Tensors or neither."""
    foreach_only = bool(hp.get("foreach")) and not hp.get("capturable")
    if isinstance(hp.get("lr"), torch.Tensor) and foreach_only:
        raise ValueError(f"lr as a Tensor is not supported for capturable=False and foreach=True ({name('lr')})")
    betas = hp.get("betas")
    if isinstance(betas, (tuple, list)) and len(betas) == 2:
        tensors = [isinstance(b, torch.Tensor) for b in betas]
        if tensors[0] != tensors[1]:
            raise ValueError(f"betas must be either both floats or both Tensors ({name('betas')})")
        for k in range(2):
            if tensors[k] and foreach_only:
                raise ValueError(f"betas[{k}] as a Tensor is not supported for capturable=False and foreach=True "
                                 f"({name('betas')})")


# Errors where torch.optim raises another type than adam_c's rule (TypeError/ValueError for bad input) for the
# same input: both types, so code written for either catches them, with torch's message first.
class _FusedForeachError(ValueError, RuntimeError):
    pass


class _CapturableError(ValueError, AssertionError):
    pass


class _SparseGradError(TypeError, RuntimeError):
    pass


class _FusedDeviceError(ValueError, RuntimeError):
    pass


def _clone(t):
    return t.detach().clone(memory_format=torch.preserve_format)


def _copy_into(t, values):
    t.copy_(values)  # (rounded to nearest even into a float16/bfloat16 param, as the step rounds)


def _check_compat_flags(hp, name):
    for key in _COMPAT_FLAGS:
        value = hp.get(key)
        if not (value is None or isinstance(value, bool)):
            raise TypeError(f"{name(key)} must be None or a bool, got {type(value).__name__}")
    if hp.get("capturable"):
        raise _CapturableError("If capturable=True, params and state_steps must be on supported devices: "
                               f"{name('capturable')}=True is for CUDA/XPU graph capture; adam_c steps CPU tensors "
                               "(use capturable=False)")
    if hp.get("differentiable"):
        raise ValueError(f"{name('differentiable')}=True (autograd through the step) is not supported: adam_c "
                         "updates the tensors in place in C")
    if hp.get("fused") and hp.get("foreach"):
        raise _FusedForeachError(f"`fused` and `foreach` cannot be `True` together. ({name('fused')} and "
                                 f"{name('foreach')})")


def _is_dense(t):
    """Non-overlapping and dense: some permutation of the dims is C-contiguous, so the elements fill one span."""
    t = _local(t)
    if t.numel() == 0:
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout(a, b):
    """a and b (dense, same shape) put every element at the same offset of their spans."""
    a, b = _local(a), _local(b)
    return all(sa == sb for size, sa, sb in zip(a.shape, a.stride(), b.stride()) if size != 1)


def _overlaps_itself(t):
    """True unless t's elements are provably at distinct addresses (strides sorted, each step past the previous
    dim's extent), as for any slice or permutation of a tensor; expand() makes stride 0."""
    extent = 1
    for stride, size in sorted((abs(st), sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride < extent:
            return True
        extent = stride * size
    return False


def _is_deferred(t):
    """A param torch.optim accepts before it has data: a lazy module's UninitializedParameter, or a meta tensor
    (deferred initialisation: build on "meta", then module.to_empty(device="cpu")). Checked again at the step."""
    return isinstance(t, torch.nn.parameter.UninitializedTensorMixin) or t.is_meta


def _check_tensor(t, name, what="tensor", *, strided=False, deferred=False):
    """A tensor adam_c can step: CPU, strided layout, float32/float64/float16/bfloat16, and dense (one flat
    buffer), or with strided=True any non-overlapping strides (stepped through a dense copy, see
    Adam._step_through_dense_copies). deferred=True (params at construction) lets meta and uninitialized params
    through."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if deferred and isinstance(t, torch.nn.parameter.UninitializedTensorMixin):
        return t  # no shape or data yet: checked at the first step after it is materialised
    if _local(t) is not t:
        _check_dtensor(t, name)
        _check_tensor(_local(t), name, what, strided=strided)
        return t
    if t.layout != torch.strided:
        if what == "gradient" and t.is_sparse:
            raise _SparseGradError(f"Adam does not support sparse gradients, please consider SparseAdam instead "
                                   f"({name} is a {t.layout} {what}; adam_c.torch steps dense tensors)")
        raise TypeError(f"{name} is a {t.layout} {what}; adam_c.torch steps dense (strided) tensors only "
                        "(for sparse gradients use torch.optim.SparseAdam)")
    if t.device.type != "cpu" and not (deferred and t.is_meta):
        hint = (" (a meta tensor holds no data: materialise the params in place before the first step, e.g. "
                "torch.__future__.set_swap_module_params_on_conversion(True) then module.to_empty(device='cpu'); "
                "without it to_empty() gives the module new params, so build the optimizer after it)"
                if t.is_meta else "")
        raise ValueError(f"{name} is on device {t.device}; adam_c.torch steps CPU tensors only{hint}")
    if t.is_complex():
        raise TypeError(f"{name} has complex dtype {t.dtype}; adam_c.torch supports float32, float64, float16 "
                        "and bfloat16 (optimize torch.view_as_real(...) of it instead)")
    if t.dtype not in _PARAM_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; adam_c.torch supports float32, float64, float16 and "
                        "bfloat16")
    if t.is_quantized or not (_is_dense(t) or (strided and not _overlaps_itself(t))):
        if strided and not t.is_quantized:
            raise ValueError(f"{name} has elements that share memory (strides {tuple(t.stride())} for shape "
                             f"{tuple(t.shape)}, as from expand()): it cannot be updated in place")
        raise ValueError(f"{name} must be dense and non-overlapping (some permutation of its dims contiguous, "
                         f"e.g. contiguous or channels_last); got strides {tuple(t.stride())} for shape "
                         f"{tuple(t.shape)}")
    return t


def _check_state_placement(t, p, name, what="the param's"):
    """State (or a grad) of a DTensor param is a DTensor of the param's mesh and placements (what FSDP2 and
    torch.distributed.checkpoint save, load and reshard); of any other param, not a DTensor."""
    if _local(p) is p:
        if _local(t) is not t:
            raise TypeError(f"{name} is a DTensor, its param a plain tensor")
        return
    if _local(t) is t:
        raise TypeError(f"{name} is a plain tensor, its param a DTensor: state of a DTensor param is a DTensor of "
                        "its mesh and placements (load sharded checkpoints with torch.distributed.checkpoint and "
                        "torch.distributed.checkpoint.state_dict.set_optimizer_state_dict)")
    if t.device_mesh != p.device_mesh or tuple(t.placements) != tuple(p.placements):
        raise ValueError(f"{name} is a DTensor with placements {tuple(t.placements)} on {t.device_mesh}, "
                         f"{what} {tuple(p.placements)} on {p.device_mesh}")
    if _local(t).shape != _local(p).shape:  # what the kernel reads and writes: this rank's shards, element for element
        raise ValueError(f"{name} is a DTensor whose local shard has shape {tuple(_local(t).shape)}, {what} "
                         f"{tuple(_local(p).shape)}")


def _check_distinct(params, labels, group_of):
    """No param in two groups (torch's rule and message), none sharing memory with another. A param repeated in
    one group is torch's warning (add_param_group gives it) and is stepped once."""
    seen = {}
    unique = []
    for i, p in enumerate(params):
        if id(p) in seen:
            if group_of(seen[id(p)]) != group_of(i):
                raise ValueError(f"some parameters appear in more than one parameter group ({labels(seen[id(p)])} "
                                 f"and {labels(i)} are the same tensor)")
            continue
        seen[id(p)] = i
        if not _is_deferred(p):  # no memory yet
            unique.append(i)
    dense = [(labels(i), numpy_view(_local(params[i]))) for i in unique if _is_dense(params[i])]
    pair = first_overlap(dense)
    if pair is None:  # a non-dense param's elements do not fill its span: exact test against each other param
        strided = [(labels(i), numpy_view(_local(params[i]))) for i in unique if not _is_dense(params[i])]
        pair = next(((a, b) for k, (a, x) in enumerate(strided) for b, y in dense + strided[k + 1:]
                     if np.may_share_memory(x, y) and np.shares_memory(x, y)), None)
    if pair is not None:
        raise ValueError(f"params overlap in memory ({pair[0]} and {pair[1]} are views of one storage)")


def _check_mixed_buffer(t, p, name):
    """A master or EMA of param p: a CPU dense tensor of p's compute dtype and shape (never a cast)."""
    _check_tensor(t, name)
    want = _state_dtype(p.dtype)
    if t.dtype != want:
        raise TypeError(f"{name} has dtype {t.dtype}; the master and EMA of a {p.dtype} param are {want}")
    if t.shape != p.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, its param {tuple(p.shape)}")


def _step_dtype(group):
    """torch.optim.Adam's dtype of state["step"] (optimizer._get_scalar_dtype): float32 for fused, else float64
    under torch.set_default_dtype(torch.float64), else float32."""
    if group.get("fused"):
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _nonzero(found_inf):
    """GradScaler's found_inf (a 1-element tensor) or a number/bool: is it nonzero (skip the step)?"""
    if isinstance(found_inf, torch.Tensor):
        return bool(one_element_value(found_inf, "found_inf", allow_bool=True))  # ~torch.isfinite(loss) too
    if isinstance(found_inf, (bool, np.bool_)):
        return bool(found_inf)
    return bool(real(found_inf, "found_inf"))


# ---------------------------------------------------------------- compressed state (state_dtype)
# The kernel walks a param and its state in memory order, and int8 scales cover 256 elements of that order. A
# dense param may be laid out in another order than C order (channels_last), so state is converted as 1-D runs in
# the param's memory order and stored with the param's strides.

def _memory_order(t):
    """The dims of a dense tensor from the largest stride to the smallest: permuted so, it is contiguous."""
    return sorted(range(t.dim()), key=lambda d: -t.stride(d))


def _flat(t, order):
    """t's elements as a 1-D tensor in the memory order of a tensor whose dims run in `order` (a view when t itself
    runs so, else a copy)."""
    return t.detach().permute(order).reshape(-1)


def _saved_tensor(value, name):
    """A checkpoint's state value as a CPU tensor (NumPy arrays, as adam_c.Adam saves them, too: uint16 is
    bfloat16 bits)."""
    if isinstance(value, np.ndarray):
        # a dense array keeps its memory order (int8 codes' block scales cover it, as adam_c.Adam reads them), any
        # other one is taken in C order (_compressed.memory_order's rule)
        value = np.array(value, order="K" if _compressed.memory_order(value) is not None else "C", copy=True)
        if value.dtype == np.uint16:
            return torch.from_numpy(value.view(np.int16)).view(torch.bfloat16)
        if value.dtype == BFLOAT16:
            value = value.astype(np.float32)
        return torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided or value.is_quantized:
        raise TypeError(f"{name} must be a dense (strided) tensor, got {value.layout}")
    if value.is_meta:
        raise TypeError(f"{name} is a meta tensor, which holds no data")
    try:
        return value.detach().cpu()
    except Exception as exc:  # a device this build cannot read
        raise TypeError(f"{name}: cannot read this tensor's values ({type(exc).__name__}: {exc})") from exc


def _tensor_like(param, array, order):
    """A new tensor with param's shape and strides holding `array` (1-D, in param's memory order): uint16 arrays
    (bfloat16 bits) become torch.bfloat16 tensors."""
    if array.dtype == np.uint16:
        source = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        source = torch.from_numpy(array)
    out = torch.empty_like(param, dtype=source.dtype, memory_format=torch.preserve_format, requires_grad=False)
    out.permute(order).view(-1).copy_(source)  # view(): fails loudly rather than copying if out is not dense
    return out


def _converted_state(entry, param, layout, where):
    """The format-dependent part of a state entry (any saved format: its "state_dtype" key, else float32) as new
    tensors in `layout` for `param`: exp_avg/exp_avg_sq/max_exp_avg_sq (those present), their int8 scales, and
    "state_dtype" for a compressed layout. Codes in the same layout are copied, not re-rounded; other layouts go
    through float32 (_compressed.load_saved, the NumPy optimizer's converter). Raises naming the entry; changes
    nothing."""
    saved_layout = _compressed.entry_layout(entry, where)
    order = _memory_order(param)
    n = param.numel()
    # load_saved reads the param's shape, size and dtype: those of its 1-D form, in its memory order
    flat_param = _compressed.ParamShape((n,), n, np.dtype(_NUMPY_DTYPES[param.dtype]))
    out = {}
    for key in _STATE_KEYS:
        if entry.get(key) is None:
            if key != "max_exp_avg_sq":  # refused now, not by every later step
                raise ValueError(f"{where} is missing {key!r}")
            continue
        name = f"{where}[{key!r}]"
        value = _saved_tensor(entry[key], name)
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"{name} has shape {tuple(value.shape)}, its param {tuple(param.shape)}")
        source_layout = saved_layout
        own = _memory_order(value) if _is_dense(value) else list(range(value.dim()))
        if saved_layout == "int8" and not (_is_dense(value) and _same_layout(value, param)) and own != order:
            # its scales cover blocks of its own memory order, which is not the param's: decode in that order
            # first. (Where the element orders agree, a strided or differently strided tensor of codes is copied
            # exactly below: re-encoding decoded codes is not exact, e.g. for a block whose largest value is
            # negative, stored as -0.99 of its scale.)
            decoded, _ = _compressed.load_saved(
                {"state_dtype": entry.get("state_dtype"), key: _flat(value, own),
                 key + "_absmax": entry.get(key + "_absmax")},
                key, flat_param, "float32", where, _state_array)
            value = _tensor_like(value, decoded.astype(np.float32), own)
            source_layout = "float32"
        # (the entry's own "state_dtype" where the format is the saved one: it may be one torch.optim mangled)
        shim = {"state_dtype": entry.get("state_dtype") if source_layout == saved_layout else source_layout,
                key: _flat(value, order)}
        if source_layout == "int8":
            shim[key + "_absmax"] = entry.get(key + "_absmax")
        buf, absmax = _compressed.load_saved(shim, key, flat_param, layout, where, _state_array)
        out[key] = _tensor_like(param, np.ascontiguousarray(buf), order)
        if absmax is not None:
            out[key + "_absmax"] = torch.from_numpy(np.ascontiguousarray(absmax))
    if layout != "float32":
        out["state_dtype"] = layout
    return out


def _loaded_dtensor_state(entry, param, where):
    """exp_avg/exp_avg_sq/max_exp_avg_sq (those present) of a checkpoint entry of DTensor param `param`: DTensors
    of its mesh and placements in its state dtype (converted exactly where torch.optim stored the param's own
    float16/bfloat16), as DCP's set_state_dict hands them over. Raises naming the entry; changes nothing."""
    if entry.get("state_dtype") not in (None, "float32"):
        raise ValueError(f"{where} holds {entry.get('state_dtype')!r} state: compressed state of DTensor params is "
                         "not supported (save and load it with state_dtype='float32')")
    out = {}
    want = _state_dtype(param.dtype)
    for key in _STATE_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        name = f"{where}[{key!r}]"
        _check_state_placement(value, param, name)
        if value.shape != param.shape:
            raise ValueError(f"{name} has shape {tuple(value.shape)}, its param {tuple(param.shape)}")
        if value.dtype != want and not (value.dtype == param.dtype and param.dtype in _LOW_PRECISION):
            raise TypeError(f"{name} has dtype {value.dtype}, its param {param.dtype} (state of a {param.dtype} "
                            f"param is {want})")
        out[key] = value.detach().to(dtype=want)
    return out


def _in_layout(entry, param, layout):
    """True if a compressed-layout entry already holds exactly what the kernel reads for `param` in `layout`."""
    if entry.get("state_dtype") != layout:
        return False
    want = _LAYOUT_DTYPES[layout]
    blocks = _compressed.n_blocks(param.numel())
    for key in _STATE_KEYS:
        t = entry.get(key)
        scale = entry.get(key + "_absmax")
        if t is None:
            if scale is not None:
                return False
            continue
        if not (isinstance(t, torch.Tensor) and t.dtype == want and t.device.type == "cpu"
                and t.layout == torch.strided and t.shape == param.shape and _is_dense(t) and _same_layout(t, param)):
            return False
        if layout == "int8":
            if not (isinstance(scale, torch.Tensor) and scale.dtype == torch.float32 and scale.device.type == "cpu"
                    and scale.layout == torch.strided and tuple(scale.shape) == (blocks,) and scale.is_contiguous()):
                return False
        elif scale is not None:
            return False
    return True


class _State(defaultdict):
    """opt.state: torch's defaultdict(dict) that counts its own assignments and deletions, so the step plan
    notices in O(1) when an entry is replaced (ZeroRedundancyOptimizer.load_state_dict writes entries
    directly). Changes inside an entry are checked per step by identity. Reading a missing key inserts {}
    as defaultdict does, without counting: a param without state is rebuilt for when it gets a grad anyway."""

    def __init__(self, default_factory=dict, *args, **kwargs):
        self.mutations = 0
        super().__init__(default_factory, *args, **kwargs)

    def __missing__(self, key):
        if self.default_factory is None:
            raise KeyError(key)
        value = self.default_factory()
        dict.__setitem__(self, key, value)
        return value

    def __setitem__(self, key, value):
        self.mutations += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self.mutations += 1
        super().__delitem__(key)

    def pop(self, *args):
        self.mutations += 1
        return super().pop(*args)

    def popitem(self):
        self.mutations += 1
        return super().popitem()

    def clear(self):
        self.mutations += 1
        super().clear()

    def update(self, *args, **kwargs):
        self.mutations += 1
        super().update(*args, **kwargs)

    def setdefault(self, key, default=None):
        self.mutations += 1
        return super().setdefault(key, default)

    def __ior__(self, other):  # type: ignore[misc]  # defaultdict types |= narrower than |
        self.mutations += 1
        return super().__ior__(other)


# ---------------------------------------------------------------- the optimizers

class Adam(Optimizer):
    """torch.optim.Adam's interface and checkpoints, adam_c's engine: one C call (one GIL release, one parallel
    region) steps every CPU float32/float64 param that has a .grad.

    Accepts what torch.optim.Adam accepts (tensors, param-group dicts, named_parameters()) and the same
    keywords; foreach and fused are accepted for compatibility (adam_c is always one fused multi-tensor call);
    capturable=True and differentiable=True are refused. Works with every torch LR scheduler, GradScaler
    (grad_scale / found_inf), step and state_dict hooks, and ZeroRedundancyOptimizer(optimizer_class=...).
    state_dict() has torch.optim.Adam's exact layout, so checkpoints load both ways.

    Compressed state (as adam_c.Adam's, README "Compressed optimizer state"): state_dtype="bfloat16" keeps
    exp_avg/exp_avg_sq/max_exp_avg_sq as torch.bfloat16 tensors, state_dtype="int8" as torch.uint8 codes plus
    float32 "<key>_absmax" block scales (params under 4096 elements keep float32 state); the entry then says
    "state_dtype". float32, float16 and bfloat16 params (not float64). state_rounding="stochastic" rounds
    bfloat16 state stochastically, keyed by `seed`, the step and the param's position (as adam_c.Adam). load_state_dict() converts between formats;
    torch.optim.Adam cannot read int8 codes (it would cast them to numbers): load such a checkpoint into an
    adam_c.torch.Adam with float32 state (decoded) and save that for it.

    Mixed precision (as adam_c.Adam's, README "Mixed precision"): master_weights=True keeps a float32
    state["master"] of each float16/bfloat16 param (updated in the kernel; the param is the master rounded to
    nearest even); rounding="stochastic" rounds bfloat16 params without master stochastically (keyed by seed,
    step, param position, element); ema_decay=d keeps state["ema"], an EMA of the params (see ema_weights()).
    step(max_grad_norm=) clips by the global grad norm inside the C call (opt.last_grad_norm).
    """

    # GradScaler passes grad_scale/found_inf instead of unscaling; a class attribute, so copies (deepcopy, pickle:
    # torch's __getstate__ keeps only defaults, state and param_groups) keep it
    _step_supports_amp_scaling = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False, seed=0, state_dtype=None, state_rounding="nearest",
                 master_weights=False, rounding="nearest", ema_decay=None):
        if isinstance(state_dtype, torch.dtype):  # torch.bfloat16 means "bfloat16", as np.dtype names do
            state_dtype = str(state_dtype).replace("torch.", "")
        # the NumPy optimizer's storage policy (master weights, rounding, EMA, state format)
        self._mixed = MixedOptions.checked(master_weights, rounding, ema_decay, seed, state_dtype, state_rounding)
        self.last_step_skipped = False  # the last step was skipped (GradScaler's found_inf)
        self.last_grad_norm = None      # global grad norm of the last step (with max_grad_norm), else None
        self._ema_swapped = False       # the params hold their EMA (inside `with opt.ema_weights():`)
        raw = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
               "maximize": maximize, "foreach": foreach, "capturable": capturable,
               "differentiable": differentiable, "fused": fused, "decoupled_weight_decay": decoupled_weight_decay}
        defaults = self._stored_hyperparameters(raw, "")
        self._plan = None
        # the NumPy optimizer's lock: a step from two threads at once must not share the plan's C table, a step from
        # inside a step (closure, hook, __float__) raises instead of deadlocking, and a fork child starts unlocked
        self._lock = CallLock()
        if not isinstance(params, torch.Tensor):
            try:
                params = list(params)
            except TypeError:
                raise TypeError("params must be an iterable of tensors, of (name, tensor) pairs or of dicts "
                                f"(param groups), got {type(params).__name__}") from None
            self._flat_params = not (params and isinstance(params[0], dict))
        super().__init__(params, defaults)
        self.state = _State(dict, self.state)

    @staticmethod
    def _stored_hyperparameters(hp, where):
        """The group values to store: validated, numbers as float (a Tensor lr or betas stays a Tensor, so
        schedulers can fill_ it), the compatibility flags as given."""
        checked = _checked_hyperparameters(hp, where)
        out = dict(hp)
        out.update(checked)
        if isinstance(hp.get("lr"), torch.Tensor):
            out["lr"] = hp["lr"]
        betas = hp.get("betas")
        if isinstance(betas, (tuple, list)) and any(isinstance(b, torch.Tensor) for b in betas):
            out["betas"] = tuple(b.squeeze() if isinstance(b, torch.Tensor) else b for b in betas)
        return out

    def __getstate__(self):
        """pickle and deepcopy: torch's state plus the storage options, saved while the lock is held (a token
        saved after the tensors releases it), so a step in another thread is never half in the copy."""
        token = ReleaseWhenSaved(self._lock)
        token.acquire("pickling or copying the optimizer")  # released when the token is saved or dropped
        try:
            state = dict(super().__getstate__())
            state["_mixed"] = self._mixed
            state["_lock_token"] = token  # last: saved after the tensors
        except BaseException:
            token.release()
            raise
        return state

    def __deepcopy__(self, memo):
        """copy.deepcopy: torch's state plus the storage options, deep-copied while the lock is held and released
        however the copy ends (a copy that fails, e.g. on a group holding a threading.Lock, leaves the optimizer
        usable in every thread)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        with self._lock.held("copying the optimizer (copy.deepcopy)"):
            state = dict(super().__getstate__())
            state["_mixed"] = self._mixed
            state = copy.deepcopy(state, memo)
        new.__setstate__(state)
        return new

    def __setstate__(self, state):
        token = state.pop("_lock_token", None) if isinstance(state, dict) else None
        if isinstance(token, ReleaseWhenSaved):  # copy.copy: nothing was saved, the token is still live
            token.release()
        super().__setstate__(state)
        self.__dict__.setdefault("_mixed", MixedOptions.default())
        self.__dict__.setdefault("last_step_skipped", False)
        self.__dict__.setdefault("last_grad_norm", None)
        self.__dict__.setdefault("_ema_swapped", False)
        self._plan = None
        if "_lock" not in self.__dict__:  # a copy gets its own lock; torch's load_state_dict keeps the one it holds
            self._lock = CallLock()
        self.state = _State(dict, self.state)
        self.__dict__.setdefault("_flat_params", False)
        for group in self.param_groups:
            for key, value in (("amsgrad", False), ("maximize", False), ("foreach", None), ("capturable", False),
                               ("differentiable", False), ("fused", None), ("decoupled_weight_decay", False)):
                group.setdefault(key, value)
            for p in group["params"]:  # older checkpoints store steps as numbers: torch makes them tensors
                entry = self.state.get(p)
                if entry and "step" in entry and not isinstance(entry["step"], torch.Tensor):
                    entry["step"] = torch.tensor(float(entry["step"]), dtype=_step_dtype(group))

    # ------------------------------------------------------------ params

    def _param_label(self, index):
        """How errors name a param: params[i] (its position in state_dict numbering), plus its group position
        and name where there are groups or names."""
        start = 0
        for gi, group in enumerate(self.param_groups):
            n = len(group["params"])
            if index < start + n:
                names = group.get("param_names")
                named = f" ({names[index - start]!r})" if names and index - start < len(names) else ""
                if len(self.param_groups) == 1 and getattr(self, "_flat_params", False):
                    return f"params[{index}]{named}"
                return f"param_groups[{gi}]['params'][{index - start}]{named}"
            start += n
        return f"params[{index}]"

    def add_param_group(self, param_group):
        """torch's add_param_group, after checking every tensor (CPU, dense, float32/float64, no duplicates or
        overlaps) and the group's hyperparameters; nothing is added when a check fails."""
        with self._lock.held("add_param_group()"):
            self._add_param_group(param_group)

    def zero_grad(self, set_to_none=True):
        """torch's zero_grad, under the optimizer's lock (not in the middle of another thread's step)."""
        with self._lock.held("zero_grad()"):
            super().zero_grad(set_to_none)

    def state_dict(self):
        """torch's state_dict (its layout; state tensors are the live ones, as torch.optim's: copy them before the
        next step if you keep them), taken under the optimizer's lock, so never in the middle of a step. The
        state_dict pre- and post-hooks run outside the lock, as torch's do around its body, so they may call this
        optimizer (zero_grad, state_dict, a step, a copy)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        with self._lock.held("state_dict()"):
            state_dict = Optimizer.state_dict(_Unhooked(self))
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        gi = len(self.param_groups)
        flat = gi == 0 and getattr(self, "_flat_params", False)
        where = "" if flat else f"param_groups[{gi}]"
        if "params" not in param_group:
            raise ValueError(f"param group {gi} has no 'params' key")
        group = param_group
        params = group["params"]
        if isinstance(params, torch.Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        existing = [p for g in self.param_groups for p in g["params"]]
        for j, entry in enumerate(params):
            tensor = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
            label = f"params[{j}]" if flat else f"param_groups[{gi}]['params'][{j}]"
            if isinstance(entry, tuple) and len(entry) == 2:
                label += f" ({entry[0]!r})"
            _check_tensor(tensor, label, "param", strided=True, deferred=True)
        self._check_state_support([e[1] if isinstance(e, tuple) and len(e) == 2 else e for e in params],
                                  "params" if flat else f"param_groups[{gi}]['params']")
        merged = dict(self.defaults)
        merged.update({k: v for k, v in group.items() if k not in ("params", "param_names")})
        stored = self._stored_hyperparameters(merged, where)
        tensors = existing + [e[1] if isinstance(e, tuple) and len(e) == 2 else e for e in params]
        n_old = len(existing)

        def label(i):
            if i < n_old:
                return self._param_label(i)
            return f"params[{i - n_old}]" if flat else f"param_groups[{gi}]['params'][{i - n_old}]"

        group_of = [i for i, g in enumerate(self.param_groups) for _ in g["params"]] + [gi] * len(params)
        _check_distinct(tensors, label, group_of.__getitem__)
        # all checks passed: torch's add_param_group (names, defaults) edits and appends the caller's dict
        param_group["params"] = params
        param_group.update({k: stored[k] for k in group if k in stored})
        super().add_param_group(param_group)
        self._plan = None

    def _check_state_support(self, tensors, where):
        """Compressed state needs float32 compute (float32, float16 or bfloat16 params), stochastic rounding
        bfloat16 (or float32/float64) params: MixedOptions.check_params, the NumPy optimizer's rule."""
        if self._mixed.state_dtype == "float32" and self._mixed.rounding == "nearest":
            return
        self._mixed.check_params([_NUMPY_DTYPES[t.dtype] for t in tensors], where)

    def _layout(self, param):
        """How param's state is stored: "float32" (its compute dtype), "bfloat16" or "int8": the engine's rule
        (MixedOptions.state_format), which only reads the element count."""
        return self._mixed.state_format(param.numel())

    @property
    def state_dtype(self):
        """How exp_avg/exp_avg_sq/max_exp_avg_sq are stored: "float32" (the compute dtype), "bfloat16" or "int8"."""
        return self._mixed.state_dtype

    # ------------------------------------------------------------ the step

    def step(self, *args, **kwargs):
        """step(closure=None, *, grad_scale=None, found_inf=None, max_grad_norm=None): one Adam step of every param
        whose .grad is not None. closure (optional) re-evaluates the model under torch.enable_grad() and returns the
        loss. grad_scale / found_inf (as GradScaler provides them, also read from the attributes it sets): grads are
        divided by grad_scale inside the step (the user's .grad tensors are left scaled), and a nonzero found_inf
        skips the step entirely (opt.last_step_skipped). max_grad_norm: clip by the global L2 norm of all
        (unscaled) grads, torch.nn.utils.clip_grad_norm_'s rule, fused into the C call; the norm before clipping is
        then in opt.last_grad_norm (else None). Raises a clear error before changing anything.

        Step pre/post hooks see the call's args and kwargs as given (torch's wrapper: a closure passed by keyword
        is in kwargs, where a pre-hook may replace it)."""
        if type(self).step is not _ADAM_STEP:
            # a subclass's own step, which torch's _patch_step_function wrapped: its wrapper ran the hooks and the
            # profiler range already, and super().step() lands here
            return self._step(*_bind_step(*args, **kwargs))
        if not (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks or torch.autograd._profiler_enabled()):
            return self._step(*_bind_step(*args, **kwargs))
        return self._step_with_hooks((self,) + args, kwargs)

    step.hooked = True  # type: ignore[attr-defined]  # Optimizer._patch_step_function: this step runs the hooks itself (see below)

    def _step_with_hooks(self, args, kwargs):
        """What torch's profile_hook_step wrapper does (a profiler range and the step pre/post hooks), only
        when something uses it: the range alone costs ~5 us, more than a whole small step."""
        with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
            for hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"a step pre-hook must return None or a tuple (new_args, new_kwargs), "
                                           f"got {result!r}")
                    args, kwargs = result
            out = self._step(*_bind_step(*args[1:], **kwargs))
            self._optimizer_step_code()
            for hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
                hook(self, args, kwargs)
            return out

    def _step(self, closure, grad_scale, found_inf, max_grad_norm=None):
        # the NumPy optimizer's rule for max_grad_norm (a real number > 0), checked before anything runs
        max_grad_norm = check_step_extras(None, max_grad_norm, False).get("max_grad_norm", 0.0)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if grad_scale is None:
            grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None:
            found_inf = getattr(self, "found_inf", None)
        calls = self._reductions[0] if max_grad_norm > 0 else None
        try:
            if self._ema_swapped:
                raise ema_block_error("step()")
            if found_inf is not None and _nonzero(found_inf):
                self._join_reduction(max_grad_norm, calls)  # (this rank's found_inf only: the others skip too)
                self.last_step_skipped, self.last_grad_norm = True, None
                return loss  # GradScaler found inf/NaN grads: no param, state or step changes
            grad_scale = 1.0 if grad_scale is None else _checked_grad_scale(grad_scale)
            return self._step_locked_part(loss, grad_scale, max_grad_norm)
        except BaseException:
            self._join_reduction(max_grad_norm, calls)
            raise

    @property
    def _reductions(self):
        """[how many times this optimizer's shard reductions ran]: a step joins one only if it did not (below)."""
        counter = self.__dict__.get("_reduction_count")
        if counter is None:
            counter = self._reduction_count = [0]
        return counter

    def _join_reduction(self, max_grad_norm, calls):
        """A step with fused clipping over DTensor params that ends on this rank before its C call reached the
        ranks' norm reduction (a rank-local found_inf, a refusal in Python) takes part in it with a NaN, which
        makes every other rank skip its step, instead of leaving them waiting in the all-reduce."""
        if calls is None or self._reductions[0] != calls:
            return
        # made from the params as they are now (the plan may be out of date): the reduction every other rank's
        # step makes from the same params, or none where they refuse them too
        params = [p for group in self.param_groups if isinstance(group, dict)
                  for p in (group.get("params") or ()) if isinstance(p, torch.Tensor)]
        if not any(_local(p) is not p for p in params):
            return
        try:
            _shard_sum(params, self._reductions)(math.nan)
        except Exception:  # refused on every rank alike, or the process group itself failed (the step's own
            pass           # error says more)

    def _step_locked_part(self, loss, grad_scale, max_grad_norm):
        with self._lock.held("step()"):
            if self._ema_swapped:  # (another thread entered ema_weights() since the check above)
                raise ema_block_error("step()")
            outcome = None
            if not self.__dict__.get("_has_strided"):
                try:
                    outcome = self._locked_step(grad_scale, max_grad_norm)
                except _StridedParams:  # raised before anything changed
                    self._has_strided = True
            if self.__dict__.get("_has_strided"):
                outcome = self._step_through_dense_copies(grad_scale, max_grad_norm)
            self.last_grad_norm, self.last_step_skipped = outcome
        return loss

    def _step_through_dense_copies(self, grad_scale, max_grad_norm):
        """_locked_step for an optimizer with non-dense params (strided views such as x[..., 0], which torch.optim
        steps): each such param's memory is swapped for a dense copy of its values (`p.data = copy`, so the param
        object, its state and its grad stay), the plan steps the copies, and the results are copied back into the
        param's own memory. The copies are kept between steps (the plan stays valid) and refreshed from the params
        each step. A step that fails before its C call ran copies nothing back: nothing changes."""
        old, copies = self.__dict__.get("_dense_copies", {}), {}
        swapped = []
        try:
            with torch.no_grad():
                params = [p for group in self.param_groups for p in group["params"]]
                for i, p in enumerate(params):
                    if not isinstance(p, torch.Tensor) or _is_deferred(p) or _is_dense(p) or id(p) in copies:
                        continue
                    _check_tensor(p, self._param_label(i), "param", strided=True)
                    key = (p.dtype, p.shape, p.stride())
                    entry = old.get(id(p))
                    if entry is None or entry[0] is not p or entry[1] != key:
                        entry = (p, key, torch.empty_like(p, memory_format=torch.preserve_format))
                    copies[id(p)] = entry
                    own = p.data  # the param's memory, strides and offset
                    entry[2].copy_(own)
                    p.data = entry[2]
                    swapped.append((p, own))
            self._dense_copies = copies  # those of params no longer non-dense (or gone) are dropped
            self._has_strided = bool(swapped)
            plan, commits = self._plan, (self._plan.commits if self._plan is not None else 0)
            done = False
            try:
                outcome = self._locked_step(grad_scale, max_grad_norm)
                done = True
            finally:
                # the C call ran (also when an exception came right after it): the update is copied back whole
                done = done or (self._plan is not None and self._plan.commits > (commits if self._plan is plan else 0))
                if done:
                    with torch.no_grad():
                        for p, own in swapped:
                            own.copy_(p.data)
        finally:
            for p, own in reversed(swapped):
                p.data = own
        return outcome

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the params hold their EMA (rounded to nearest even for float16/bfloat16, as
        adam_c.Adam.ema_weights); afterwards their own values again, bit for bit. Needs ema_decay; params
        without an EMA yet (never stepped) keep their values."""
        if self._mixed.ema_decay is None:
            raise ValueError("ema_weights() needs an optimizer built with ema_decay=")
        pairs = []
        with self._lock.held("ema_weights()"), torch.no_grad():
            if self._ema_swapped:
                raise ema_block_error("ema_weights()")
            outside_inference = not torch.is_inference_mode_enabled()
            for i, p in enumerate(p for group in self.param_groups for p in group["params"]):
                entry = self.state.get(p)
                ema = entry.get("ema") if isinstance(entry, dict) else None
                if isinstance(ema, torch.Tensor):
                    if outside_inference and p.is_inference():  # torch writes it, then raises: refused first
                        raise RuntimeError(f"ema_weights(): {self._param_label(i)} is an inference tensor (made "
                                           "under torch.inference_mode()): it can be written only inside "
                                           "inference mode")
                    pairs.append((p, ema))
            saved = write_all_or_nothing(pairs, _clone, _copy_into)  # the engine's all-or-nothing swap
            self._ema_swapped = True  # steps are refused until the params are their own again
        try:
            yield self
        finally:
            with self._lock.held("ema_weights()"), torch.no_grad():
                try:
                    put_back(saved, _copy_into)
                finally:
                    self._ema_swapped = False

    def threading_info(self):
        """How this optimizer's steps use threads, as measured (see adam_c.Adam.threading_info)."""
        return threading_report(self._plan)

    def _locked_step(self, grad_scale=1.0, max_grad_norm=0.0):
        """Run the plan (rebuilt when stale); returns (the global grad norm when clipping, else None; whether
        the step was skipped: a non-finite norm over DTensor shards)."""
        ema_decay = self._mixed.run_options()["ema_decay"]
        plan = self._plan
        if plan is not None:
            state = self.state
            try:
                mutations = state.mutations
            except AttributeError:  # opt.state was replaced by a plain dict: the rebuild wraps it again
                mutations = -1
            self._lock.running_plan = plan  # read by the fork handler (in_c_call)
            try:
                if self._inference_params:
                    self._check_inference()
                return plan.run(self.param_groups, state, mutations, grad_scale, max_grad_norm, ema_decay,
                                self._norm_reduction(max_grad_norm))[1:]
            except _core.PlanOutdated:
                pass
            finally:
                self._lock.running_plan = None
        created = self._build_plan()
        plan = self._plan
        commits = plan.commits
        self._lock.running_plan = plan
        try:
            if self._inference_params:
                self._check_inference()
            _, norm, skipped = plan.run(self.param_groups, self.state, self.state.mutations, grad_scale,
                                        max_grad_norm, ema_decay, self._norm_reduction(max_grad_norm))
            if skipped:  # (the ranks' norm was not finite) nothing was written: nor is new zero state kept
                self._forget(created)
            return norm, skipped
        except _core.PlanOutdated:
            self._forget(created)
            raise RuntimeError("adam_c.torch: the step plan was out of date right after it was built "
                               "(an adam_c bug; nothing was changed)") from None
        except BaseException:
            # a failed step changes nothing, not even new zero state; but one whose C call ran (an exception from
            # a signal handler right after it, Ctrl-C) keeps the state it stepped
            if plan.commits == commits:
                self._forget(created)
            raise
        finally:
            self._lock.running_plan = None

    def _norm_reduction(self, max_grad_norm):
        """With DTensor params and max_grad_norm: the plan's reduce_sumsq (_reduce_sumsq), else None."""
        if not max_grad_norm > 0 or self.__dict__.get("_sharded_params") is None:
            return None
        return self._reduce_sumsq

    def _reduce_sumsq(self, sumsq):
        """The all-reduce that makes the clip norm the whole model's, called by the running plan's C call (so
        after its checks: the plan's params are the optimizer's): made once per plan from them, refused (the C
        call then writes nothing) where one sum cannot give it."""
        reduction = self.__dict__.get("_norm_sum")
        if reduction is None:
            reduction = self._norm_sum = _shard_sum(self._sharded_params, self._reductions)
        return reduction(sumsq)

    def _check_inference(self):
        """torch's rule: an inference tensor (made under torch.inference_mode()) is updated in place only inside
        inference mode; a param that is one and has a grad is refused outside it, before anything changes."""
        if torch.is_inference_mode_enabled():
            return
        for i, p in self._inference_params:
            if p.grad is not None:
                raise ValueError(f"{self._param_label(i)} is an inference tensor (made under torch.inference_mode()): "
                                 "it can be updated in place only inside inference mode")

    # ------------------------------------------------------------ checkpoints and state

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, except that state stored in another format than this optimizer's (or in a
        compressed one) is converted into this optimizer's format instead of being cast by torch (which would turn
        int8 codes into numbers): a torch.optim.Adam checkpoint loads into int8/bfloat16 state, a compressed one
        into float32 state; same-format codes are copied as they are. Every entry is converted, and so checked,
        before anything changes. The user's load_state_dict pre-hooks see (a shallow copy of) the checkpoint as
        given, and they and the post-hooks run outside the optimizer's lock, as torch's run around its body, so
        they may call this optimizer."""
        state_dict = state_dict.copy()  # torch's: the pre-hooks may edit this shallow copy
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        converted = {}
        with self._lock.held("load_state_dict()", allow_torn=True):
            own = self._convert_checkpoint_state(state_dict, converted)
            Optimizer.load_state_dict(_Unhooked(self), state_dict if own is None else own)
            self._install_converted(converted)
            self._lock.torn_by_fork = False  # restored: usable again in a fork child
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _convert_checkpoint_state(self, state_dict, converted):
        """The last load pre-hook: convert the format-dependent keys of each entry that needs it (into
        `converted`, by param) and return a state_dict without them, for torch to load the rest."""
        if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("state"), Mapping):
            return None  # torch says what is wrong
        saved_groups = state_dict.get("param_groups")
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            return None
        id_map = {}
        for saved, group in zip(saved_groups, self.param_groups):
            if not isinstance(saved, Mapping) or len(saved.get("params", ())) != len(group["params"]):
                return None
            id_map.update(zip(saved["params"], group["params"]))
        state = dict(state_dict["state"])
        for pid, entry in state_dict["state"].items():
            p = id_map.get(pid)
            if p is None or not isinstance(entry, Mapping) or not entry:
                continue  # not ours, or {} (torch makes one wherever opt.state[p] is read): loaded as it is
            layout = self._layout(p)
            where = f"state_dict['state'][{pid!r}]"
            for key in _STATE_KEYS[:2]:  # refused now (as adam_c.Adam does), not by every later step
                if entry and entry.get(key) is None:
                    raise ValueError(f"{where} is missing {key!r}")
            extra = self._loaded_mixed(entry, p, where)
            if _local(p) is not p:  # a DTensor param (a DCP checkpoint): its state is DTensors, kept as such
                converted[p] = _loaded_dtensor_state(entry, p, where)
                converted[p].update(extra or {})
                state[pid] = {k: v for k, v in entry.items() if k not in _FORMAT_KEYS + _MIXED_KEYS}
                continue
            if layout == "float32" and entry.get("state_dtype") is None and p.dtype not in _LOW_PRECISION:
                if extra is None:
                    continue  # torch.optim's own format: torch loads it as it always does
                converted[p] = extra
                state[pid] = {k: v for k, v in entry.items() if k not in _MIXED_KEYS}
                continue
            else:
                # (a float16/bfloat16 param's float32 state must not be cast to the param's dtype by torch either,
                # or the restored run would differ from the saved one)
                converted[p] = _converted_state(entry, p, layout, where)
                converted[p].update(extra or {})
            state[pid] = {k: v for k, v in entry.items() if k not in _FORMAT_KEYS + _MIXED_KEYS}
        if not converted:
            return None
        out = dict(state_dict)
        out["state"] = state
        return out

    def _loaded_mixed(self, entry, p, where):
        """The checkpoint's master/EMA of param p that this optimizer keeps, checked and copied (torch would cast
        them to the param dtype), or None if the entry has neither key; ones it does not keep are dropped (as
        adam_c.Adam does) and missing ones start from the param on the next step."""
        if not any(key in entry for key in _MIXED_KEYS):
            return None
        out = {}
        for key in self._mixed.extra_buffers(_NUMPY_DTYPES[p.dtype]):
            if entry.get(key) is None:
                continue
            name = f"{where}[{key!r}]"
            t = _saved_tensor(entry[key], name)
            if t.dtype == p.dtype and p.dtype in _LOW_PRECISION:
                # torch.optim cast it to the param's dtype (a checkpoint that passed through it): exact in float32,
                # and a master cast so is the param's own bits, what a new master starts from
                t = t.float()
            _check_mixed_buffer(t, p, name)
            out[key] = torch.empty_like(p, dtype=t.dtype, memory_format=torch.preserve_format).copy_(t)
        return out

    def _install_converted(self, converted):
        for p, values in converted.items():
            self.state[p].update(values)
        self._plan = None

    def state_float32(self):
        """{index: {"step": int, "exp_avg": ..., "exp_avg_sq": ...[, "max_exp_avg_sq", "master", "ema"]}} for
        params with state (indices as in state_dict()), the Adam buffers decoded to new float32 tensors of the
        param's shape, whatever format stores them, master and EMA copied (as adam_c.Adam.state_float32)."""
        with self._lock.held("state_float32()"):
            out = {}
            for i, p in enumerate(p for group in self.param_groups for p in group["params"]):
                entry = self.state.get(p)
                if not entry or entry.get("exp_avg") is None:
                    continue
                if _local(p) is not p:  # DTensor state is float32 (compressed state is refused): copies of it
                    decoded = {k: entry[k].to(torch.float32, copy=True) for k in _STATE_KEYS
                               if isinstance(entry.get(k), torch.Tensor)}
                else:
                    decoded = _converted_state(entry, p, "float32", f"state of {self._param_label(i)}")
                    decoded = {k: v.to(torch.float32) for k, v in decoded.items()}
                step = entry.get("step")
                if isinstance(step, torch.Tensor):
                    step = _local(step)
                decoded.update((key, entry[key].to(torch.float32, copy=True)) for key in _MIXED_KEYS
                               if isinstance(entry.get(key), torch.Tensor))
                out[i] = {"step": int(step.item() if isinstance(step, torch.Tensor) else step), **decoded}
            return out

    def state_bytes(self):
        """Bytes the optimizer state takes now: the Adam buffers, int8 block scales, master and EMA copies (not
        params, grads or the step counters), as adam_c.Adam.state_bytes."""
        with self._lock.held("state_bytes()"):
            return _compressed.state_nbytes(
                _local(entry.get(key)) for entry in list(self.state.values()) if isinstance(entry, dict)
                for key in _STATE_KEYS + _ABSMAX_KEYS + _MIXED_KEYS if isinstance(entry.get(key), torch.Tensor))

    # ------------------------------------------------------------ the plan

    def _build_plan(self):
        """Validate params and groups, create the state of params that got their first grad (zeros, step 0),
        bring state tensors to their param's layout, and prepare the C pointer table. Runs on the first step
        and after anything the plan depends on changed. Returns the state it created, for _forget."""
        self._plan = None
        self._inference_params = []
        if not isinstance(self.state, _State):
            self.state = _State(dict, self.state)
        if not isinstance(self.param_groups, list):
            raise TypeError(f"param_groups must be a list, got {type(self.param_groups).__name__}")
        params, infos, compressed, mixed, keep, created = [], [], [], [], [], []
        sharded = False  # some param is a DTensor: the plan reads local shards through the _local_* accessors
        group_of, first = [], {}  # first: id(param) -> index of its first appearance (a repeat is stepped once)
        try:
            for gi, group in enumerate(self.param_groups):
                if not isinstance(group, dict) or not isinstance(group.get("params"), list):
                    raise TypeError(f"param_groups[{gi}] must be a dict with a list under 'params'")
                _checked_hyperparameters({k: v for k, v in group.items() if k != "params"},
                                         f"param_groups[{gi}]")
                amsgrad = bool(group["amsgrad"])
                for p in group["params"]:
                    i = len(params)
                    label = self._param_label(i)
                    params.append(p)
                    group_of.append(gi)
                    if isinstance(p, torch.nn.parameter.UninitializedTensorMixin):
                        if p.grad is not None:
                            raise ValueError(f"{label} is an uninitialized parameter with a grad")
                        continue  # a lazy module's param before its first forward: it has no grad to step
                    if p.is_meta and group.get("fused") and p.grad is not None:  # torch.optim's fused check
                        raise _FusedDeviceError("`fused=True` requires all the params to be floating point Tensors "
                                                f"of supported devices: ['cpu'] but {p.dtype} and meta ({label} is "
                                                "a meta tensor, which holds no data)")
                    _check_tensor(p, label, "param", strided=True)
                    if not _is_dense(p):
                        if _local(p) is not p:
                            raise ValueError(f"{label} is a DTensor whose local shard is not dense (strides "
                                             f"{tuple(_local(p).stride())} for shape {tuple(_local(p).shape)})")
                        raise _StridedParams()
                    if _local(p) is not p:
                        sharded = True
                        if self._mixed.state_dtype != "float32":
                            raise ValueError(f"{label} is a DTensor: state_dtype={self._mixed.state_dtype!r} "
                                             "(compressed state) is not supported for DTensor params, whose state "
                                             "must be DTensors of the param's placements for "
                                             "torch.distributed.checkpoint; use state_dtype='float32'")
                    keep.append(_local_storage(p))
                self._check_state_support(group["params"], "params" if len(self.param_groups) == 1
                                          and getattr(self, "_flat_params", False) else f"param_groups[{gi}]['params']")
                for p in group["params"]:
                    i = len(infos)
                    j = first.setdefault(id(p), i)
                    if j != i:  # torch warned of the repeat at add_param_group; one update per step
                        info, packed, extra = infos[j].repeat(gi), None, None
                    elif _is_deferred(p):
                        info, packed, extra = _core.ParamEntry(gi, 0, 0, _DTYPE_CODES.get(p.dtype, 0), p.dtype,
                                                               None, None), None, None
                    else:
                        info, packed, extra = self._plan_entry(gi, i, p, self._param_label(i), amsgrad, keep,
                                                               created)
                    infos.append(info)
                    compressed.append(packed)
                    mixed.append(extra)
            _check_distinct(params, self._param_label, group_of.__getitem__)
            written = [(f"state of {self._param_label(i)}[{key!r}]", numpy_view(_local(info.tensors[k + 1])))
                       for i, info in enumerate(infos) if info.tensors is not None and info.numel  # not a repeat
                       for k, key in enumerate(_STATE_KEYS) if info.tensors[k + 1] is not None]
            written += [(f"state of {self._param_label(i)}[{key!r}]", packed[2][k].numpy())
                        for i, packed in enumerate(compressed) if packed is not None
                        for k, key in enumerate(_ABSMAX_KEYS) if packed[2][k] is not None]
            written += [(f"state of {self._param_label(i)}[{key!r}]", numpy_view(_local(t)))
                        for i, extra in enumerate(mixed) if extra is not None
                        for key, t in zip(_MIXED_KEYS, extra) if t is not None]
            pair = first_overlap([(self._param_label(i), numpy_view(_local(p))) for i, p in enumerate(params)
                                  if first[id(p)] == i and not _is_deferred(p)] + written)
            if pair is not None:
                raise ValueError(f"{pair[0]} and {pair[1]} overlap in memory")
            # the plan reaches the optimizer's methods through weak references: the optimizer owns the plan, and
            # a plan owning the optimizer would leave every dropped optimizer (its state, the model's params and
            # grads) to the cyclic garbage collector
            self._layout_key = _local_layout if sharded else _stride
            self._sharded_params, self._norm_sum = (params if sharded else None), None
            self._plan = _core.TorchStepPlan(self.param_groups, self.state, self.state.mutations,
                                             list(self.param_groups), params, infos, keep,
                                             _local_ptr if sharded else _data_ptr, self._layout_key,
                                             _WeakMethod(self, "_read_group"), _WeakMethod(self, "_fix_grad"),
                                             _increment_local_versions if sharded else torch._C._increment_version,
                                             compressed, self._mixed.seed, mixed,
                                             self._mixed.rounding == "stochastic",
                                             _WeakMethod(self, "_param_label"),
                                             _local_storage if sharded else _storage)
            self._inference_params = [(i, p) for i, p in enumerate(params)
                                      if not _is_deferred(p) and p.is_inference()]
        except BaseException:
            self._forget(created)
            raise
        return created

    def _plan_entry(self, gi, i, p, label, amsgrad, keep, created):
        """The plan's _core.ParamEntry for param i, its `compressed` item and its `mixed` item (master,
        ema) or None, creating or normalizing its state as needed."""
        state = self.state.get(p)
        has_grad = p.grad is not None
        layout = self._layout(p)
        if not state:
            if not has_grad:
                return _core.ParamEntry(gi, _local_ptr(p), _local(p).numel(), _DTYPE_CODES[p.dtype], p.dtype,
                                        p.shape, _local_layout(p)), None, None
            state = {"step": torch.zeros((), dtype=_step_dtype(self.param_groups[gi]))}
            for key in _STATE_KEYS[:3 if amsgrad else 2]:
                state.update(self._zero_state(p, layout, key))
            if layout != "float32":
                state["state_dtype"] = layout
            created.append((p, self.state.get(p), None))
            self.state[p] = state
        where = f"state of {label}"
        if not isinstance(state, dict):
            raise TypeError(f"{where} must be a dict, got {type(state).__name__}")
        # Every change to an existing entry below is recorded in `created` first (_forget undoes it if the step
        # fails: a failed step changes nothing, not even a lossless normalization).
        if (layout != "float32" or state.get("state_dtype") is not None) and not _in_layout(state, p, layout):
            # entries written directly (not through load_state_dict) in another format: converted like a checkpoint
            converted = _converted_state(state, p, layout, where)
            _record(created, p, state, _FORMAT_KEYS)
            for key in _FORMAT_KEYS:
                state.pop(key, None)
            state.update(converted)
        if amsgrad and state.get("max_exp_avg_sq") is None and has_grad:
            # amsgrad switched on for a param that has state: its running max starts from zeros (in the layout the
            # entry has now, after any conversion)
            zeros = self._zero_state(p, layout, "max_exp_avg_sq")
            _record(created, p, state, zeros)
            state.update(zeros)
        step = state.get("step")
        if not isinstance(step, torch.Tensor):  # older checkpoints store a number: torch makes it a tensor
            if isinstance(step, bool) or not isinstance(step, numbers.Real):
                raise TypeError(f"{where}['step'] must be a number or a 0-d tensor, got {type(step).__name__}")
            _record(created, p, state, ("step",))
            step = state["step"] = torch.tensor(float(step), dtype=_step_dtype(self.param_groups[gi]))
        elif (step.numel() != 1 or step.device.type != "cpu" or step.dtype not in _FLOAT_DTYPES
              or step.layout != torch.strided or _local(step) is not step):
            if step.numel() != 1 or step.is_complex():
                raise ValueError(f"{where}['step'] must be a 0-d tensor, got shape {tuple(step.shape)}")
            if _local(step) is not step:  # a DTensor counter (torch's state is a plain tensor): its local value
                if not all(placement.is_replicate() for placement in step.placements):
                    raise ValueError(f"{where}['step'] is a DTensor with placements {tuple(step.placements)}; a "
                                     "step counter is one number on every rank (a plain tensor, or Replicate)")
                step = _local(step)
            _record(created, p, state, ("step",))
            step = state["step"] = torch.tensor(float(step.item()), dtype=_step_dtype(self.param_groups[gi]))
        keep.append(step.untyped_storage())
        tensors = [step]
        ptrs = []
        for key in _STATE_KEYS:
            t = state.get(key)
            if t is None:
                if key != "max_exp_avg_sq":
                    raise ValueError(f"{where} is missing {key!r}")
                tensors.append(None)
                ptrs.append(0)
                continue
            if layout != "float32":  # checked whole by _in_layout above
                keep.append(t.untyped_storage())
                tensors.append(t)
                ptrs.append(_data_ptr(t))
                continue
            name = f"{where}[{key!r}]"
            _check_tensor(t, name)
            _check_state_placement(t, p, name)
            want = _state_dtype(p.dtype)
            if t.dtype != want and not (t.dtype == p.dtype and want == torch.float32):
                raise TypeError(f"{name} has dtype {t.dtype}, its param {p.dtype} (state of a {p.dtype} param is "
                                f"{want})")
            if t.shape != p.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, its param {tuple(p.shape)}")
            if t.dtype != want or not _same_layout(t, p):
                # a contiguous checkpoint for a channels_last param, or torch.optim's float16/bfloat16 state
                # (exact in float32)
                with torch.no_grad():
                    t = torch.empty_like(p, dtype=want, memory_format=torch.preserve_format).copy_(t)
                _record(created, p, state, (key,))
                state[key] = t
            keep.append(_local_storage(t))
            tensors.append(t)
            ptrs.append(_local_ptr(t))
        packed = None
        if layout != "float32":
            scales = tuple(state.get(key) if layout == "int8" else None for key in _ABSMAX_KEYS)
            for scale in scales:
                if scale is not None:
                    keep.append(scale.untyped_storage())
            packed = (_compressed.KERNEL_CODE[layout], self._mixed.state_rounding == "stochastic", scales,
                      tuple(0 if scale is None else _data_ptr(scale) for scale in scales))
        extra = self._mixed_entry(p, state, where, keep, created)
        return _core.ParamEntry(gi, _local_ptr(p), _local(p).numel(), _DTYPE_CODES[p.dtype], p.dtype, p.shape,
                                _local_layout(p), state, tuple(tensors), _data_ptr(step),
                                step.dtype == torch.float64, ptrs[0], ptrs[1], ptrs[2]), packed, extra

    def _mixed_entry(self, p, state, where, keep, created):
        """(master, ema) of param p for the plan (each a tensor of p's compute dtype laid out like p, or None), or
        None without either: the buffers MixedOptions.extra_buffers asks for, created as the NumPy engine does
        (master = p in float32, ema = a copy of the master or of p) where the state lacks them."""
        keys = self._mixed.extra_buffers(_NUMPY_DTYPES[p.dtype])
        if not keys:
            return None
        want = _state_dtype(p.dtype)
        out = {}
        for key in keys:
            t = state.get(key)
            name = f"{where}[{key!r}]"
            if t is None:
                source = out.get("master", p) if key == "ema" else p
                with torch.no_grad():
                    t = torch.empty_like(p, dtype=want, memory_format=torch.preserve_format).copy_(source)
                _record(created, p, state, (key,))
                state[key] = t
            else:
                _check_mixed_buffer(t, p, name)
                _check_state_placement(t, p, name)
                if not _same_layout(t, p):  # a contiguous checkpoint of a channels_last param
                    with torch.no_grad():
                        t = torch.empty_like(p, dtype=want, memory_format=torch.preserve_format).copy_(t)
                    _record(created, p, state, (key,))
                    state[key] = t
            keep.append(_local_storage(t))
            out[key] = t
        return tuple(out.get(key) for key in _MIXED_KEYS)

    @staticmethod
    def _zero_state(p, layout, key):
        """{key: zeros[, key_absmax: zeros]}: a new state buffer of param p in `layout`, laid out like p."""
        if layout == "float32":
            return {key: torch.zeros_like(p, dtype=_state_dtype(p.dtype), memory_format=torch.preserve_format)}
        out = {key: torch.zeros_like(p, dtype=_LAYOUT_DTYPES[layout], memory_format=torch.preserve_format)}
        if layout == "int8":
            out[key + "_absmax"] = torch.zeros(_compressed.n_blocks(p.numel()), dtype=torch.float32)
        return out

    def _forget(self, created):
        """Undo what _build_plan recorded in `created`, newest first: (p, None, None) a new entry, (p, old entry,
        None) a replaced one, (p, entry, {key: old value or _ABSENT}) keys of an entry changed (see _record)."""
        for p, previous, key in reversed(created):
            if key is not None:
                for k, value in key.items():
                    if value is _ABSENT:
                        previous.pop(k, None)
                    else:
                        previous[k] = value
            elif previous is None:
                self.state.pop(p, None)
            else:
                self.state[p] = previous
        if created:
            self._plan = None

    def _read_group(self, group, index):
        """The plan's reader for a group its C-level fast path does not take (a Tensor lr, ints, ...)."""
        hp = _checked_hyperparameters(group, f"param_groups[{index}]")
        beta1, beta2 = hp["betas"]
        return (hp["lr"], beta1, beta2, hp["eps"], hp["weight_decay"], hp["amsgrad"], hp["maximize"],
                hp["decoupled_weight_decay"])

    def _fix_grad(self, grad, index, planned_shape, planned_strides):
        """A grad that failed the plan's quick check: the same values in its param's layout, or a clear error.
        If the param itself changed shape or strides in place (same storage), the plan is rebuilt first."""
        p = self._plan_param(index)
        if p.shape != planned_shape or self._layout_key(p) != planned_strides:
            raise _core.PlanOutdated()
        name = f"{self._param_label(index)}.grad"
        _check_tensor(grad, name, "gradient", strided=True)
        if _local(p) is not p or _local(grad) is not grad:
            return self._fix_local_grad(grad, p, name)
        if grad.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {grad.dtype}, its param {p.dtype}")
        if grad.shape != p.shape:
            raise ValueError(f"{name} has shape {tuple(grad.shape)}, its param {tuple(p.shape)}")
        if _same_layout(grad, p):
            return grad
        with torch.no_grad():
            return torch.empty_like(p, memory_format=torch.preserve_format).copy_(grad)

    @staticmethod
    def _fix_local_grad(grad, p, name):
        """_fix_grad for a DTensor param (or grad): the grad's local shard, laid out like the param's."""
        _check_state_placement(grad, p, name, what="its param's")
        if grad.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {grad.dtype}, its param {p.dtype}")
        local, own = _local(grad), _local(p)
        if local.shape != own.shape:
            raise ValueError(f"{name} has a local shard of shape {tuple(local.shape)}, its param "
                             f"{tuple(own.shape)}")
        if _same_layout(local, own) and _is_dense(local):
            return local
        with torch.no_grad():
            return torch.empty_like(own, memory_format=torch.preserve_format).copy_(local)

    def _plan_param(self, index):
        for group in self.param_groups:
            if index < len(group["params"]):
                return group["params"][index]
            index -= len(group["params"])
        raise IndexError(index)


class _ShardSum:
    """The plan's reduce_sumsq for fused clipping over DTensor params: sums a process's squared grads over the
    process groups of the mesh dims the params are sharded on (replicated dims hold copies: summed once)."""

    def __init__(self, groups, counter):
        self.groups = groups
        self.counter = counter  # [calls] of this optimizer's reductions: see Adam._join_reduction

    def __call__(self, sumsq):
        self.counter[0] += 1
        total = torch.tensor([sumsq], dtype=torch.float64)
        for group in self.groups:
            torch.distributed.all_reduce(total, group=group)
        return total.item()


def _shard_sum(params, counter):
    """_ShardSum for params (all DTensors on one mesh with one placement), or a ValueError saying why not."""
    hint = "; clip with torch.nn.utils.clip_grad_norm_(params, max_norm) before step() instead"
    present = [p for p in params if not _is_deferred(p)]
    if any(_local(p) is p for p in present):
        raise ValueError("max_grad_norm with DTensor params needs every param to be a DTensor: a plain tensor param "
                         "is a copy on each process, which one sum of the processes' grads would count once per "
                         "process" + hint)
    mesh, placements = present[0].device_mesh, tuple(present[0].placements)
    for p in present:
        if p.device_mesh != mesh or tuple(p.placements) != placements:
            raise ValueError(f"max_grad_norm with DTensor params needs one mesh and one placement for all of them, "
                             f"got {placements} and {tuple(p.placements)}" + hint)
    return _ShardSum([mesh.get_group(d) for d, placement in enumerate(placements) if placement.is_shard()], counter)


class _StridedParams(Exception):
    """_build_plan found a non-dense param: the step goes through Adam._step_through_dense_copies."""


def _bind_step(closure=None, *, grad_scale=None, found_inf=None, max_grad_norm=None):
    """Adam.step's arguments, bound as its documented signature says (errors name step())."""
    return closure, grad_scale, found_inf, max_grad_norm


_bind_step.__qualname__ = "Adam.step"
_ADAM_STEP = Adam.step
# inspect.signature(opt.step) as torch.optim.Adam's (closure=None), plus adam_c's keywords: GradScaler reads it
# (no `grad_scaler` parameter: it sets opt.grad_scale / opt.found_inf instead)
_ADAM_STEP.__signature__ = inspect.signature(_bind_step).replace(  # type: ignore[attr-defined]
    parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                *inspect.signature(_bind_step).parameters.values()])
_ABSENT = object()  # _record: the key was not in the entry


def _record(created, p, entry, keys):
    """Note in `created` (see Adam._forget) what `entry` holds under `keys` now, before they are changed."""
    created.append((p, entry, {key: entry.get(key, _ABSENT) for key in keys}))


def _checked_grad_scale(grad_scale):
    """GradScaler's scale as the number the kernel divides the grads by (in the compute type, as torch's fused
    Adam; the user's .grad tensors are left as they are): a 1-element dense CPU tensor whose value is finite and
    > 0 (the NumPy optimizer's rule), else a TypeError/ValueError naming grad_scale."""
    if not isinstance(grad_scale, torch.Tensor):
        raise TypeError("grad_scale must be a 1-element CPU tensor (as GradScaler provides), got "
                        f"{type(grad_scale).__name__}")
    return loss_scale(one_element_value(grad_scale, "grad_scale"))


class _WeakMethod:
    """owner.<name>(...) through a weak reference to owner (see Adam._build_plan)."""

    __slots__ = ("_owner", "_name")

    def __init__(self, owner, name):
        self._owner = weakref.ref(owner)
        self._name = name

    def __call__(self, *args):
        return getattr(self._owner(), self._name)(*args)


_NO_HOOKS: "Mapping[object, object]" = MappingProxyType({})


class _Unhooked:
    """An optimizer seen without its state_dict hooks: torch's state_dict()/load_state_dict() bodies run on it
    under the lock (reading and replacing the optimizer's param_groups and state), while Adam runs the user's
    hooks on the optimizer itself, outside the lock."""

    __slots__ = ("_opt",)
    _optimizer_state_dict_pre_hooks = _optimizer_state_dict_post_hooks = _NO_HOOKS
    _optimizer_load_state_dict_pre_hooks = _optimizer_load_state_dict_post_hooks = _NO_HOOKS

    def __init__(self, opt):
        self._opt = opt

    @property
    def param_groups(self):
        return self._opt.param_groups

    @property
    def state(self):
        return self._opt.state

    def __setstate__(self, state):
        self._opt.__setstate__(state)


class AdamW(Adam):
    """Adam with decoupled weight decay (param *= 1 - lr * weight_decay first), torch.optim.AdamW's defaults."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None, seed=0,
                 state_dtype=None, state_rounding="nearest", master_weights=False, rounding="nearest",
                 ema_decay=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, seed=seed, state_dtype=state_dtype,
                         state_rounding=state_rounding, master_weights=master_weights, rounding=rounding,
                         ema_decay=ema_decay)

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
