"""_torch_checkpoint.py: adam_c.Adam (NumPy) state_dicts to torch.optim.Adam's layout and back; torch imported lazily."""
import numbers
from collections.abc import Mapping
from typing import Any, Dict

import numpy as np

from . import _compressed
from ._checkpoint import _step_value
from ._validation import HYPERPARAMETERS, check_lr, torch_to_numpy

_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_ABSMAX_KEYS = tuple(key + "_absmax" for key in _STATE_KEYS)  # int8 state's block scales (see _compressed)
_MIXED_KEYS = ("master", "ema")  # mixed precision's float32 master and the params' EMA (compute dtype)
# torch.optim.Adam's group keys, in its order; the four flags mean nothing to the NumPy optimizer
_TORCH_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach", "capturable",
                     "differentiable", "fused", "decoupled_weight_decay")
_TORCH_FLAGS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}
_FLOAT32_EXACT_STEPS = 2 ** 24  # torch keeps `step` in a float32 tensor: whole numbers are exact up to here


def _parts(state_dict):
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"state_dict is missing the key {key!r}")
    if not isinstance(state_dict["state"], Mapping):
        raise TypeError("state_dict['state'] must be a dict")
    if not isinstance(state_dict["param_groups"], (list, tuple)):
        raise TypeError("state_dict['param_groups'] must be a list of dicts")
    for i, group in enumerate(state_dict["param_groups"]):
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"state_dict['param_groups'][{i}] must be a dict with a 'params' key")
    return state_dict["state"], state_dict["param_groups"]


def to_torch_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """adam_c.Adam(W).state_dict() in torch.optim.Adam's exact layout (torch tensors copied from the arrays,
    `step` as a float32 0-d tensor, torch's group keys), loadable by adam_c.torch.Adam/AdamW and by
    torch.optim.Adam/AdamW, and by torch.load(weights_only=True) after torch.save. Compressed state keeps its
    format as adam_c.torch holds it (bfloat16 bits as torch.bfloat16, int8 codes as torch.uint8 with their float32
    block scales, and "state_dtype"): adam_c.torch reads it in any state_dtype; torch.optim reads the bfloat16
    one as values but not int8 codes."""
    import torch
    state, groups = _parts(state_dict)
    out_state = {}
    for pid, entry in state.items():
        where = f"state_dict['state'][{pid!r}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
        step = _step_value(entry.get("step"), f"{where}['step']")
        if step > _FLOAT32_EXACT_STEPS:
            raise ValueError(f"{where}['step'] = {step} is above 2**24, where torch's float32 step counter "
                             "stops counting")
        out = {"step": torch.tensor(float(step), dtype=torch.float32)}
        layout = _compressed.entry_layout(entry, where)  # a named TypeError for a state_dtype that is no name
        compressed = layout != "float32"
        for key in _STATE_KEYS:
            if entry.get(key) is not None:
                array = np.asarray(entry[key])
                if compressed and array.dtype == np.uint16:  # bfloat16 state: adam_c.torch keeps torch.bfloat16
                    out[key] = torch.from_numpy(np.array(array, copy=True).view(np.int16)).view(torch.bfloat16)
                    continue
                if compressed and array.dtype == np.uint8:  # int8 state: codes as they are
                    out[key] = torch.from_numpy(np.array(array, copy=True))
                    continue
                if array.dtype not in (np.float32, np.float64):
                    raise TypeError(f"{where}[{key!r}] must be float32 or float64, got {array.dtype}")
                out[key] = torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), copy=True))
        for key in _ABSMAX_KEYS:
            if compressed and entry.get(key) is not None:
                out[key] = torch.from_numpy(np.array(entry[key], dtype=np.float32, copy=True))
        for key in _MIXED_KEYS:
            if entry.get(key) is not None:
                array = np.asarray(entry[key])
                if array.dtype not in (np.float32, np.float64):
                    raise TypeError(f"{where}[{key!r}] must be float32 or float64, got {array.dtype}")
                out[key] = torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), copy=True))
        if compressed:
            out["state_dtype"] = layout  # adam_c.torch reads it to know the codes
        out_state[pid] = out
    out_groups = []
    for gi, group in enumerate(groups):
        new = {key: group[key] for key in HYPERPARAMETERS if key in group}
        if callable(new.get("lr")) and not isinstance(new["lr"], type):
            new["lr"] = _schedule_value(new["lr"], group["params"], state, f"state_dict['param_groups'][{gi}]['lr']")
        if "betas" in new:
            new["betas"] = tuple(new["betas"])
        new.update({k: group.get(k, v) for k, v in _TORCH_FLAGS.items()})
        new = {k: new[k] for k in _TORCH_GROUP_KEYS if k in new}
        new.update({k: v for k, v in group.items() if k not in new and k != "params"})
        new["params"] = list(group["params"])
        out_groups.append(new)
    return {"state": out_state, "param_groups": out_groups}


def _schedule_value(schedule, pids, state, where):
    """A schedule lr (adam_c.Adam's callables) as torch.optim holds an lr, a number: its value for the group's next
    step (1 + the largest step among the group's params, as adam_c.Adam calls it), what a torch LR scheduler
    would have left in the group. torch.optim has no schedule objects, and torch.load(weights_only=True) refuses
    one; to go on scheduling, attach a torch.optim.lr_scheduler."""
    steps = [0]
    for pid in pids:
        entry = state.get(pid) if isinstance(pid, numbers.Integral) else None
        if isinstance(entry, Mapping) and entry.get("step") is not None:
            steps.append(_step_value(entry["step"], f"state_dict['state'][{pid!r}]['step']"))
    step = max(steps) + 1
    return check_lr(schedule(step), f"{where}({step}) (the schedule's value)")


def _number(value):
    """A 1-element tensor (torch allows them for lr and betas) as a Python number."""
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        return value.item()
    return value


def from_torch_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A torch.optim.Adam(W) or adam_c.torch state_dict as adam_c.Adam(W) stores one: NumPy arrays (C-order
    copies), int steps, plain-number hyperparameters, without torch's foreach/capturable/differentiable/fused."""
    state, groups = _parts(state_dict)
    out_state = {}
    for pid, entry in state.items():
        where = f"state_dict['state'][{pid!r}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
        if not entry:
            continue  # {}: torch makes one wherever opt.state[p] is read; a param without state, as adam_c.Adam's
        out = {"step": _step_value(entry.get("step"), f"{where}['step']")}
        # the format (a "state_dtype" mangled by torch.optim read off the buffers)
        layout = None
        if "state_dtype" in entry:
            layout = _compressed.entry_layout(entry, where)
        else:
            _compressed.check_not_cast_to_float16(entry, where)  # (entry_layout's check, for float32 state)
        for key in _STATE_KEYS + _ABSMAX_KEYS + _MIXED_KEYS:
            value = entry.get(key)
            if value is None:
                continue
            name = f"{where}[{key!r}]"
            codes = layout == "int8" and key in _STATE_KEYS
            if codes and _compressed.torch_mangled(entry):
                value = _compressed.int8_codes(value, name)  # codes torch.optim cast to numbers
            elif hasattr(value, "detach"):
                # bfloat16 state of adam_c.torch: the NumPy optimizer's uint16 bits; torch.optim's bfloat16 state
                # of bfloat16 params: exact in float32 (torch_to_numpy's conversion)
                bits = layout == "bfloat16" and key in _STATE_KEYS
                value = _compressed._as_array(value, name) if bits else torch_to_numpy(value, name)
            # int8 codes keep their memory order, which their block scales cover (a channels_last param's are
            # channels_last): adam_c.Adam's load_state_dict decodes them in it; everything else in C order
            out[key] = np.array(value, order="K" if codes else "C", copy=True)
        if layout is not None and layout != "float32":
            out["state_dtype"] = layout
        out_state[pid] = out
    out_groups = []
    for group in groups:
        new = {k: v for k, v in group.items() if k not in _TORCH_FLAGS and k != "params"}
        if "lr" in new:
            new["lr"] = _number(new["lr"])
        if "betas" in new:
            new["betas"] = tuple(_number(b) for b in new["betas"])
        new["params"] = list(group["params"])
        out_groups.append(new)
    return {"state": out_state, "param_groups": out_groups}
