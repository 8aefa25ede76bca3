"""optim.py: Adam and AdamW for NumPy arrays with torch.optim's shape: param groups, step, state_dict."""
import threading
from collections.abc import Mapping

import numpy as np

from . import _compressed, _core
from ._validation import HYPERPARAMETERS, check_hyperparameters, check_param, first_overlap

_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class Adam:
    """Adam (and AMSGrad, AdamW via decoupled_weight_decay) updating NumPy arrays in place.

    params: an iterable of arrays, or of dicts {"params": [...], <hyperparameter>: value} (param groups).
    Each array: writable, C-contiguous, float32 or float64, any shape. One `step` is one C call over all params.
    state_dtype: "float32" (default), "bfloat16" or "int8": how exp_avg/exp_avg_sq(/max_exp_avg_sq) are stored
    (float32 params only); compressed state is decoded, updated in float32 and re-encoded inside the one pass.
    state_rounding: "nearest" (default) or "stochastic" (bfloat16 state only; reproducible: a counter-based hash
    of the step, the param's position and the element).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, state_dtype=None, state_rounding="nearest"):
        self.defaults = check_hyperparameters(
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
             "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}, "")
        if isinstance(params, (np.ndarray, Mapping)) or not _is_iterable(params):
            raise TypeError("params must be an iterable of arrays or of dicts (param groups), "
                            f"got {type(params).__name__}")
        entries = list(params)
        if not entries:
            raise ValueError("optimizer got an empty parameter list (params)")
        if all(isinstance(e, Mapping) for e in entries):
            groups = [self._checked_group(e, i, f"param_groups[{i}]") for i, e in enumerate(entries)]
        elif any(isinstance(e, Mapping) for e in entries):
            raise TypeError("params must be all arrays or all dicts (param groups), not a mix")
        else:
            groups = [self._checked_group({"params": entries}, 0, "params")]
        _check_distinct([p for g in groups for p in g["params"]])
        self.state_dtype = _compressed.check_state_dtype(state_dtype)
        self.state_rounding = _compressed.check_state_rounding(state_rounding, self.state_dtype)
        _compressed.check_params_support(self.state_dtype, [p for g in groups for p in g["params"]])
        self.param_groups = []
        self._layouts = []  # per param: the state layout it really uses (int8 keeps small params in float32)
        self._absmax = {key: [] for key in _STATE_KEYS}
        self._params = []
        self._state = {key: [] for key in _STATE_KEYS}
        self._steps = np.zeros(0, np.int64)
        self._grads = None
        self._plan = None
        self._lock = threading.Lock()
        for group in groups:
            self._append_group(group)

    # ------------------------------------------------------------ groups and params

    def _checked_group(self, group, index, where):
        """A new validated group dict (the caller's dict is not modified); raises before anything changes."""
        if not isinstance(group, Mapping):
            raise TypeError(f"param group {index} must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"param group {index} has no 'params' key")
        params = group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, (Mapping, str, bytes)) or not _is_iterable(params):
            raise TypeError(f"{where}['params'] must be an array or an iterable of arrays, "
                            f"got {type(params).__name__}")
        params = list(params)
        name = "params" if where == "params" else f"{where}['params']"
        for j, p in enumerate(params):
            check_param(p, f"{name}[{j}]")
        merged = dict(self.defaults)
        merged.update({k: v for k, v in group.items() if k != "params"})
        checked = check_hyperparameters(merged, "" if where == "params" else where)
        extra = {k: v for k, v in group.items() if k != "params" and k not in HYPERPARAMETERS}
        return {"params": params, **checked, **extra}

    def _append_group(self, group):
        n_new = len(group["params"])
        self.param_groups.append(group)
        self._params.extend(group["params"])
        self._layouts.extend(_compressed.layout_for(self.state_dtype, p) for p in group["params"])
        for key in _STATE_KEYS:
            self._state[key].extend([None] * n_new)
            self._absmax[key].extend([None] * n_new)
        self._steps = np.concatenate([self._steps, np.zeros(n_new, np.int64)])
        if self._grads is not None:
            self._grads.extend(np.zeros_like(p) for p in group["params"])
        self._plan = None

    def add_param_group(self, param_group):
        """Add a group (a dict with 'params' and any hyperparameters; missing ones take the defaults)."""
        with self._lock:
            group = self._checked_group(param_group, len(self.param_groups),
                                        f"param_groups[{len(self.param_groups)}]")
            _check_distinct(self._params + group["params"])
            _compressed.check_params_support(self.state_dtype, group["params"])
            self._append_group(group)

    # ------------------------------------------------------------ grads

    @property
    def grads(self):
        """Zero-initialised gradient buffers aligned with the params, allocated on first use."""
        if self._grads is None:
            self._grads = [np.zeros_like(p) for p in self._params]
        return self._grads

    def zero_grad(self):
        """Zero the optimizer-owned gradient buffers (opt.grads)."""
        if self._grads is not None:
            for g in self._grads:
                g.fill(0)

    # ------------------------------------------------------------ the step

    def step(self, grads=None, closure=None):
        """Update every param in place from `grads` (aligned with the params, in group order), or from
        opt.grads when grads is None. A grad of None skips its param. `closure`, if given, is called first and
        returns (loss, grads). Returns the loss, or None. Raises before changing anything."""
        loss = None
        if closure is not None:
            result = closure()
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError("closure must return a pair (loss, grads)")
            loss, closure_grads = result
            if closure_grads is not None:
                grads = closure_grads
        with self._lock:
            if grads is None:
                grads = self.grads
            if self._plan is not None:
                try:
                    self._plan.run(grads, self.param_groups)
                    return loss
                except _core.AmsgradBuffersMissing:
                    pass  # a group turned amsgrad on: allocate its buffers and rebuild below
            added = self._build_plan()
            try:
                self._plan.run(grads, self.param_groups)
            except BaseException:
                self._forget(added)  # a failed step changes nothing, not even new zero buffers
                raise
        return loss

    def _build_plan(self):
        """Allocate any missing state (zeros) and prepare the C pointer table; runs on the first step and after
        the params, groups or state buffers changed, never on a plain step. Returns what it allocated, as
        (key, index) pairs, so a step that then fails can take it back."""
        added = []
        i = 0
        for group in self.param_groups:
            ams = bool(group.get("amsgrad"))
            for p in group["params"]:
                for key in _STATE_KEYS if ams else _STATE_KEYS[:2]:
                    if self._state[key][i] is None:
                        self._state[key][i], self._absmax[key][i] = _compressed.zeros(self._layouts[i], p)
                        added.append((key, i))
                i += 1
        sizes = [len(g["params"]) for g in self.param_groups]
        self._plan = _core.StepPlan(self._params, *(self._state[k] for k in _STATE_KEYS), sizes, self._steps,
                                    [_compressed.KERNEL_CODE[layout] for layout in self._layouts],
                                    *(self._absmax[k] for k in _STATE_KEYS),
                                    state_rounding=int(self.state_rounding == "stochastic"))
        return added

    def _forget(self, added):
        for key, i in added:
            self._state[key][i] = None
            self._absmax[key][i] = None
        self._plan = None

    def threading_info(self):
        """How this optimizer's steps use threads, as measured: {"threads": 1 (serial) or n, 0 before it has
        decided; "serial_us" / "threads_us": median recent step times each way (None if not timed); "steps"}.
        Steps below cpu_info()["parallel_threshold"] elements always run serially and are not timed."""
        plan = self._plan
        if plan is None:
            return {"threads": 0, "serial_us": None, "threads_us": None, "steps": 0}
        return plan.threading()

    # ------------------------------------------------------------ state

    @property
    def state(self):
        """{index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}} for params with state: live arrays.
        Compressed state (see state_dtype) adds "state_dtype"; bfloat16 state holds uint16 bit patterns, int8
        state uint8 codes plus "<key>_absmax" (float32, one per 256-element block)."""
        out = {}
        for i in range(len(self._params)):
            if self._state["exp_avg"][i] is None:
                continue
            entry = {"step": int(self._steps[i])}
            if self._layouts[i] != "float32":
                entry["state_dtype"] = self._layouts[i]
            for key in _STATE_KEYS:
                if self._state[key][i] is not None:
                    entry[key] = self._state[key][i]
                    if self._absmax[key][i] is not None:
                        entry[key + "_absmax"] = self._absmax[key][i]
            out[i] = entry
        return out

    def state_float32(self):
        """{index: {"step", "exp_avg", ...}} with every state buffer decoded to float32 copies (any state_dtype)."""
        out = {}
        for i, entry in self.state.items():
            layout = self._layouts[i]
            decoded = {"step": entry["step"]}
            for key in _STATE_KEYS:
                if key in entry:
                    decoded[key] = _compressed.to_float32(layout, key, entry[key], entry.get(key + "_absmax"))
            out[i] = decoded
        return out

    def state_bytes(self):
        """Bytes the optimizer state takes now (state buffers and int8 block scales; not params or grads)."""
        return _compressed.state_nbytes(a for key in _STATE_KEYS for lst in (self._state[key], self._absmax[key])
                                        for a in lst)

    def state_dict(self):
        """{"state": {i: {...copies...}}, "param_groups": [{hyperparameters, "params": [i, ...]}]}, with
        integer indices running across groups as in torch.optim."""
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
                 for i, entry in self.state.items() if entry["step"] > 0}
        groups, start = [], 0
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = list(range(start, start + len(group["params"])))
            start += len(group["params"])
            groups.append(saved)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Replace hyperparameters and state from `state_dict`; everything is validated (group and param
        counts, keys, steps, shapes, dtypes) before anything changes. Arrays are copied in."""
        from ._checkpoint import validate_state_dict
        with self._lock:
            groups, state = validate_state_dict(self, state_dict)
            for group, new in zip(self.param_groups, groups):
                params = group["params"]
                group.clear()
                group.update(new)
                group["params"] = params
            n = len(self._params)
            self._steps = np.zeros(n, np.int64)
            for key in _STATE_KEYS:
                self._state[key] = [None] * n
                self._absmax[key] = [None] * n
            for i, entry in state.items():
                self._steps[i] = entry["step"]
                for key in _STATE_KEYS:
                    if key in entry:
                        self._state[key][i], self._absmax[key][i] = entry[key]
            self._plan = None

    # ------------------------------------------------------------ pickling, repr

    def __getstate__(self):
        return {"defaults": self.defaults, "param_groups": self.param_groups, "params": self._params,
                "state": self._state, "steps": self._steps, "grads": self._grads, "state_dtype": self.state_dtype,
                "layouts": self._layouts, "absmax": self._absmax, "state_rounding": self.state_rounding}

    def __setstate__(self, saved):
        self.defaults = saved["defaults"]
        self.param_groups = saved["param_groups"]
        self._params = saved["params"]
        self._state = saved["state"]
        self._steps = saved["steps"]
        self._grads = saved["grads"]
        self.state_dtype = saved.get("state_dtype", "float32")
        self.state_rounding = saved.get("state_rounding", "nearest")
        self._layouts = saved.get("layouts", ["float32"] * len(self._params))
        self._absmax = saved.get("absmax", {key: [None] * len(self._params) for key in _STATE_KEYS})
        self._plan = None
        self._lock = threading.Lock()

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


class AdamW(Adam):
    """Adam with decoupled weight decay (param *= 1 - lr*weight_decay before the update)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, state_dtype=None, state_rounding="nearest"):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True, state_dtype=state_dtype,
                         state_rounding=state_rounding)


def _is_iterable(obj):
    try:
        iter(obj)
    except TypeError:
        return False
    return True


def _check_distinct(params):
    """No array may appear twice or overlap another: each would be updated twice per step."""
    seen = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"the same array appears twice among the params (positions {seen[id(p)]} and {i})")
        seen[id(p)] = i
    pair = first_overlap([(f"param {i}", p) for i, p in enumerate(params)])
    if pair is not None:
        raise ValueError(f"params overlap in memory ({pair[0]} and {pair[1]} are views of one buffer)")
