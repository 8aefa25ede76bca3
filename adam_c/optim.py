"""optim.py: Adam and AdamW for NumPy arrays with torch.optim's shape: param groups, step, state_dict."""
import contextlib
import threading
from collections.abc import Mapping

import numpy as np

from . import _core
from ._mixed import MixedOptions, check_step_extras
from ._validation import HYPERPARAMETERS, check_hyperparameters, check_param, compute_dtype, first_overlap

_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_MIXED_KEYS = ("master", "ema")  # mixed precision (see _mixed.py): fp32 master copy, EMA of the params


class Adam:
    """Adam (and AMSGrad, AdamW via decoupled_weight_decay) updating NumPy arrays in place.

    params: an iterable of arrays, or of dicts {"params": [...], <hyperparameter>: value} (param groups).
    Each array: writable, C-contiguous, float32, float64, float16 or bfloat16 (ml_dtypes), any shape. One `step`
    is one C call over all params.
    Mixed precision (README, "Mixed precision"): master_weights=True keeps a float32 master copy of each
    float16/bfloat16 param; rounding="stochastic" rounds bfloat16 params without master stochastically
    (reproducible from `seed`); ema_decay=d keeps an EMA of the params (see ema_weights()).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, master_weights=False, rounding="nearest",
                 ema_decay=None, seed=0):
        self.defaults = check_hyperparameters(
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
             "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}, "")
        self._mixed = MixedOptions.checked(master_weights, rounding, ema_decay, seed)
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
        self._mixed.check_params([p for g in groups for p in g["params"]], "params")
        self.param_groups = []
        self._params = []
        self._state = {key: [] for key in _STATE_KEYS + _MIXED_KEYS}
        self.last_step_skipped = False  # the last step found a non-finite grad and changed nothing
        self.last_grad_norm = None      # global grad norm of the last step (when it was computed)
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
        for key in _STATE_KEYS + _MIXED_KEYS:
            self._state[key].extend([None] * n_new)
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
            self._mixed.check_params(group["params"], f"param_groups[{len(self.param_groups)}]['params']")
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

    def step(self, grads=None, closure=None, *, grad_scale=None, max_grad_norm=None, skip_nonfinite=None):
        """Update every param in place from `grads` (aligned with the params, in group order), or from
        opt.grads when grads is None. A grad of None skips its param. `closure`, if given, is called first and
        returns (loss, grads). Returns the loss, or None. Raises before changing anything.

        Fused around the step (one extra read of the grads when any is used):
        grad_scale: the loss scale; grads are multiplied by float32(1/grad_scale) in the kernel (GradScaler's
        unscale_), and a non-finite grad skips the whole step (skip_nonfinite defaults to True with a
        grad_scale). max_grad_norm: clip by the global L2 norm over all grads (clip_grad_norm_ semantics).
        After the call, opt.last_step_skipped tells whether the step was skipped (nothing changed, step counts
        included) and opt.last_grad_norm holds the global norm of the unscaled grads (None if not computed)."""
        extras = check_step_extras(grad_scale, max_grad_norm, skip_nonfinite)
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
            run_options = dict(extras, **self._mixed.run_options())
            if self._plan is not None:
                try:
                    self._record(self._plan.run(grads, self.param_groups, **run_options))
                    return loss
                except _core.AmsgradBuffersMissing:
                    pass  # a group turned amsgrad on: allocate its buffers and rebuild below
            added = self._build_plan()
            try:
                outcome = self._plan.run(grads, self.param_groups, **run_options)
            except BaseException:
                self._forget(added)  # a failed step changes nothing, not even new zero buffers
                raise
            if outcome[0]:
                self._forget(added)  # a skipped step changes nothing either
            self._record(outcome)
        return loss

    def _record(self, outcome):
        skipped, norm, _coef = outcome
        self.last_step_skipped = bool(skipped)
        self.last_grad_norm = norm

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the params hold their EMA (rounded to the param dtype); afterwards their own values
        again, bit for bit (evaluate with the averaged weights, keep training with the others). Needs
        ema_decay; params without an EMA yet (never stepped) keep their values."""
        if self._mixed.ema_decay is None:
            raise ValueError("ema_weights() needs an optimizer built with ema_decay=")
        with self._lock:
            saved = []
            for p, ema in zip(self._params, self._state["ema"]):
                if ema is not None:
                    saved.append((p, p.copy()))
                    if p.dtype == ema.dtype:
                        np.copyto(p, ema)
                    else:  # float32 EMA into a float16/bfloat16 param: round to nearest even, as the step does
                        _core.convert(ema.reshape(-1), p.reshape(-1))
        try:
            yield self
        finally:
            with self._lock:
                for p, backup in saved:
                    np.copyto(p, backup)

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
                        self._state[key][i] = np.zeros(p.shape, compute_dtype(p.dtype))
                        added.append((key, i))
                for key in self._mixed.extra_buffers(p):  # master, ema: start as copies of the param
                    if self._state[key][i] is None:
                        source = self._state["master"][i] if key == "ema" and self._state["master"][i] is not None else p
                        self._state[key][i] = source.astype(compute_dtype(p.dtype), order="C")
                        added.append((key, i))
                i += 1
        sizes = [len(g["params"]) for g in self.param_groups]
        self._plan = _core.StepPlan(self._params, *(self._state[k] for k in _STATE_KEYS), sizes, self._steps,
                                    *(self._state[k] for k in _MIXED_KEYS),
                                    stochastic=self._mixed.rounding == "stochastic")
        return added

    def _forget(self, added):
        for key, i in added:
            self._state[key][i] = None
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
        """{index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq", "master", "ema"]}} for params with
        state: live arrays."""
        out = {}
        for i in range(len(self._params)):
            if self._state["exp_avg"][i] is None:
                continue
            entry = {"step": int(self._steps[i])}
            for key in _STATE_KEYS + _MIXED_KEYS:
                if self._state[key][i] is not None:
                    entry[key] = self._state[key][i]
            out[i] = entry
        return out

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
            for key in _STATE_KEYS + _MIXED_KEYS:
                self._state[key] = [None] * n
            for i, entry in state.items():
                self._steps[i] = entry["step"]
                wanted = _STATE_KEYS + tuple(self._mixed.extra_buffers(self._params[i]))
                for key in wanted:  # a master or EMA this optimizer does not keep is not loaded
                    if key in entry:
                        self._state[key][i] = entry[key]
            self._plan = None

    # ------------------------------------------------------------ pickling, repr

    def __getstate__(self):
        return {"defaults": self.defaults, "param_groups": self.param_groups, "params": self._params,
                "state": self._state, "steps": self._steps, "grads": self._grads, "mixed": self._mixed}

    def __setstate__(self, saved):
        self.defaults = saved["defaults"]
        self.param_groups = saved["param_groups"]
        self._params = saved["params"]
        self._state = saved["state"]
        self._steps = saved["steps"]
        self._grads = saved["grads"]
        self._mixed = saved.get("mixed", MixedOptions.checked(False, "nearest", None, 0))
        for key in _STATE_KEYS + _MIXED_KEYS:
            self._state.setdefault(key, [None] * len(self._params))
        self.last_step_skipped, self.last_grad_norm = False, None
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
                 maximize=False, master_weights=False, rounding="nearest", ema_decay=None, seed=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True, master_weights=master_weights,
                         rounding=rounding, ema_decay=ema_decay, seed=seed)


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
