"""_checkpoint.py: validation of a state_dict against an optimizer, done completely before anything changes."""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ._compressed import load_saved
from ._validation import HYPERPARAMETERS, check_hyperparameters

_MAX_STEP = 2**62


def _step_value(value, where):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where} must be an integer, got bool")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    elif hasattr(value, "item") and callable(value.item) and not isinstance(value, numbers.Number):
        value = value.item()  # a 0-d tensor, as torch stores steps
    if isinstance(value, numbers.Integral):
        step = int(value)
    elif isinstance(value, numbers.Real):
        try:
            whole = math.isfinite(value) and value == int(value)
        except OverflowError:  # e.g. Fraction(10**400, 3)
            whole = False
        if not whole:
            raise ValueError(f"{where} must be a whole number below 2**62, got {value!r}")
        step = int(value)
    else:
        raise TypeError(f"{where} must be an integer, got {type(value).__name__}")
    if not 0 <= step < _MAX_STEP:
        raise ValueError(f"{where} must be in [0, 2**62), got {step}")
    return step


def _state_array(value, param, where):
    """A fresh C-contiguous copy of `value` in the param's dtype and shape."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{where} must be an array, got {type(value).__name__}") from exc
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where} must be a real float array, got dtype {array.dtype}")
    if array.shape != param.shape:
        raise ValueError(f"{where} has shape {array.shape}, but its param has shape {param.shape}")
    return np.array(array, dtype=param.dtype, order="C", copy=True)


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
        i = index_of[int(pid)]
        param = opt._params[i]
        required = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if ams_of[i] else [])
        for key in required:
            if entry.get(key) is None:
                raise ValueError(f"{where} is missing the key {key!r}")
        checked = {"step": _step_value(entry["step"], f"{where}['step']")}
        layout = opt._layouts[i]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in entry and entry[key] is not None:
                # (buffer, absmax or None) in this optimizer's state layout, converted from the saved one
                checked[key] = load_saved(entry, key, param, layout, where, _state_array)
        state[i] = checked
    return groups, state
