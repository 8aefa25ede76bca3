"""_checkpoint.py: validation of a state_dict against an optimizer, done completely before anything changes."""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ._compressed import load_saved
from ._validation import HYPERPARAMETERS, MAX_STEP, check_hyperparameters, compute_dtype, torch_to_numpy


def _is_torch_tensor(value):
    return type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy")


def _step_value(value, where):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be an integer, got bool")
    if _is_torch_tensor(value):
        value = torch_to_numpy(value, where)  # torch stores steps as 0-d tensors
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"{where} must be a single number, got an array of shape {value.shape}")
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{where} must be an integer, got an array of dtype {value.dtype}")
        value = value.reshape(()).item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, numbers.Integral):
        step = int(value)
    elif isinstance(value, numbers.Real):
        try:
            whole = math.isfinite(value) and value == int(value)
        except OverflowError:  # e.g. Fraction(10**400, 3)
            whole = False
        if not whole:
            raise ValueError(f"{where} must be a whole number in [0, 2**62 - 1], got {value!r}")
        step = int(value)
    else:
        raise TypeError(f"{where} must be an integer, got {type(value).__name__}")
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"{where} must be in [0, 2**62 - 1] (2**62 - 1 is the largest step count), got {step}")
    return step


def _state_array(value, param, where):
    """A fresh C-contiguous copy of `value` in the param's state dtype (float64 for float64 params, else
    float32) and shape."""
    if _is_torch_tensor(value):
        value = torch_to_numpy(value, where)
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{where} must be an array, got {type(value).__name__}") from exc
    if array.dtype.kind not in "fiu" and array.dtype != param.dtype:
        raise TypeError(f"{where} must be a real float array, got dtype {array.dtype}")
    if array.shape != param.shape:
        raise ValueError(f"{where} has shape {array.shape}, but its param has shape {param.shape}")
    return np.array(array, dtype=compute_dtype(param.dtype), order="C", copy=True)


def validate_state_dict(opt, state_dict):
    """(groups, state): per group the new hyperparameters and extra keys; per param index its step and arrays.
    Raises TypeError/ValueError naming the offending entry; reads `opt` only."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"state_dict is missing the key {key!r}")
    saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
    if isinstance(saved_groups, (str, bytes, Mapping)) or not isinstance(saved_groups, (list, tuple)):
        raise TypeError("state_dict['param_groups'] must be a list of dicts")
    if not isinstance(saved_state, Mapping):
        raise TypeError("state_dict['state'] must be a dict")
    if len(saved_groups) != len(opt.param_groups):
        raise ValueError(f"state_dict has {len(saved_groups)} param groups, the optimizer has "
                         f"{len(opt.param_groups)}")

    index_of = {}  # saved id -> our param index, by position as torch does
    groups = []
    position = 0
    for gi, (saved, group) in enumerate(zip(saved_groups, opt.param_groups)):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(saved, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(saved).__name__}")
        if "params" not in saved:
            raise ValueError(f"{where} is missing the key 'params'")
        ids = saved["params"]
        if isinstance(ids, (str, bytes, Mapping)) or not isinstance(ids, (list, tuple)):
            raise TypeError(f"{where}['params'] must be a list of ints")
        if len(ids) != len(group["params"]):
            raise ValueError(f"{where} has {len(ids)} params, the optimizer's group {gi} has "
                             f"{len(group['params'])}")
        for pid in ids:
            if isinstance(pid, (bool, np.bool_)) or not isinstance(pid, numbers.Integral):
                raise TypeError(f"{where}['params'] must hold ints, got {type(pid).__name__}")
            if int(pid) in index_of:
                raise ValueError(f"{where}['params'] repeats the index {int(pid)}")
            index_of[int(pid)] = position
            position += 1
        merged = {k: group[k] for k in HYPERPARAMETERS}
        merged.update({k: saved[k] for k in HYPERPARAMETERS if k in saved})
        new = check_hyperparameters(merged, where)
        new.update({k: v for k, v in saved.items() if k != "params" and k not in HYPERPARAMETERS})
        groups.append(new)

    ams_of = []
    for new, group in zip(groups, opt.param_groups):
        ams_of.extend([new["amsgrad"]] * len(group["params"]))
    state = {}
    for pid, entry in saved_state.items():
        where = f"state_dict['state'][{pid!r}]"
        if isinstance(pid, (bool, np.bool_)) or not isinstance(pid, numbers.Integral):
            raise TypeError(f"{where}: state keys must be ints (param indices)")
        if int(pid) not in index_of:
            raise ValueError(f"{where}: no param has the index {pid!r}")
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
        if not entry:
            continue  # {}: a param without state (torch makes one wherever opt.state[p] is read)
        i = index_of[int(pid)]
        param = opt._params[i]
        required = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if ams_of[i] else [])
        for key in required:
            if entry.get(key) is None:
                raise ValueError(f"{where} is missing the key {key!r}")
        checked = {"step": _step_value(entry["step"], f"{where}['step']")}
        state_format = opt._engine.mixed.state_format(param.size)
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in entry and entry[key] is not None:
                # in this optimizer's state format, converted from the saved one (a same-format load copies codes)
                checked[key], absmax = load_saved(entry, key, param, state_format, where, _state_array)
                if absmax is not None:
                    checked[key + "_absmax"] = absmax
        for key in ("master", "ema"):
            if key in entry and entry[key] is not None:
                checked[key] = _state_array(entry[key], param, f"{where}[{key!r}]")
        state[i] = checked
    return groups, state
