"""optim.py: Adam and AdamW for NumPy arrays with torch.optim's shape: param groups, step, state_dict."""
import contextlib
import copy
from collections.abc import Mapping

import numpy as np

from . import _compressed
from ._engine import ADAM_KEYS as _ADAM_KEYS
from ._engine import STATE_KEYS as _STATE_KEYS
from ._engine import Engine, ReleaseWhenSaved, build_layout, restore_layout, threading_report
from ._mixed import MixedOptions, check_step_extras
from ._validation import (HYPERPARAMETERS, check_hyperparameters, check_param, compute_dtype, first_overlap,
                          plain_hyperparameters)


class Adam:
    """Adam (and AMSGrad, AdamW via decoupled_weight_decay) updating NumPy arrays in place.

    params: an iterable of arrays, or of dicts {"params": [...], <hyperparameter>: value} (param groups).
    Each array: writable, C-contiguous, float32, float64, float16 or bfloat16 (ml_dtypes), any shape. One `step`
    is one C call over all params.
    Mixed precision (README, "Mixed precision"): master_weights=True keeps a float32 master copy of each
    float16/bfloat16 param; rounding="stochastic" rounds bfloat16 params without master stochastically
    (reproducible from `seed`); ema_decay=d keeps an EMA of the params (see ema_weights()).
    Compressed state (README, "Compressed optimizer state"): state_dtype="bfloat16" or "int8" stores exp_avg,
    exp_avg_sq (and max_exp_avg_sq) in 2 or about 1 byte per element, decoded and re-encoded inside the one pass;
    state_rounding="stochastic" rounds bfloat16 state stochastically. See state_bytes() and state_float32().
    Editing param_groups[i]["params"] (replace, append, pop) takes effect at the next call, as in torch.optim: a
    new param starts with fresh state, a removed one drops its state, and opt.state's indices follow the params'
    current positions in group order.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, decoupled_weight_decay=False, master_weights=False, rounding="nearest",
                 ema_decay=None, seed=0, state_dtype=None, state_rounding="nearest"):
        self.defaults = check_hyperparameters(
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
             "maximize": maximize, "decoupled_weight_decay": decoupled_weight_decay}, "")
        mixed = MixedOptions.checked(master_weights, rounding, ema_decay, seed, state_dtype, state_rounding)
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
        for i, group in enumerate(groups):  # named as the caller wrote them (the engine checks edits again)
            mixed.check_params([p.dtype for p in group["params"]], "params" if len(groups) == 1 and not isinstance(entries[0], Mapping)
                               else f"param_groups[{i}]['params']")
        self.param_groups = groups
        self._engine = Engine(self.param_groups, mixed)
        self.last_step_skipped = False  # the last step found a non-finite grad and changed nothing
        self.last_grad_norm = None      # global grad norm of the last step (when it was computed)

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

    def add_param_group(self, param_group):
        """Add a group (a dict with 'params' and any hyperparameters; missing ones take the defaults). A param
        that shares memory with another param, optimizer state or an opt.grads buffer is refused."""
        engine = self._engine
        with engine.lock.held("add_param_group()"):
            engine.sync(self.param_groups)
            index = len(self.param_groups)
            group = self._checked_group(param_group, index, f"param_groups[{index}]")
            layout = build_layout(self.param_groups + [group], engine.layout, allocate=False, mixed=engine.mixed)
            self.param_groups.append(group)
            engine.layout = layout

    @property
    def _params(self):
        """The params in group order (the adopted layout's)."""
        return self._engine.layout.params

    @property
    def _plan(self):
        return self._engine.layout.plan

    # ------------------------------------------------------------ grads

    @property
    def grads(self):
        """Zero-initialised gradient buffers aligned with the params, allocated on first use (a new list after
        param_groups were edited)."""
        engine = self._engine
        if engine.lock.owned_here():  # read from inside one of this optimizer's calls: the adopted layout's
            layout = engine.layout
            if layout.grads is None:
                layout.grads = [np.zeros_like(p) for p in layout.params]
            return layout.grads
        with engine.lock.held("grads"):
            return engine.grad_buffers(self.param_groups)

    def zero_grad(self, set_to_none=False):
        """Zero the optimizer-owned gradient buffers (opt.grads). set_to_none=True drops them instead, as
        torch.optim's zero_grad sets each .grad to None: until opt.grads is read again (which allocates new zero
        buffers), step() without grads steps nothing and counts no step, as torch skips params without a grad.
        The default differs from torch's (True) so that code holding opt.grads' arrays keeps writing into the
        buffers the step reads."""
        engine = self._engine
        with engine.lock.held("zero_grad()"):
            if set_to_none:
                engine.sync(self.param_groups)
                engine.layout.grads = None
                return
            for g in engine.layout.grads or ():
                g.fill(0)

    # ------------------------------------------------------------ the step

    def step(self, grads=None, closure=None, *, grad_scale=None, max_grad_norm=None, skip_nonfinite=None):
        """Update every param in place from `grads` (aligned with the params, in group order), or from
        opt.grads when grads is None (if opt.grads was never read, or zero_grad(set_to_none=True) dropped it, no
        grads were given: nothing is stepped or counted). A grad of None skips its param. `closure`, if given, is
        called first and returns (loss, grads). Returns the loss, or None. Raises before changing anything; once the C call has
        run, the step is kept whole even if an exception (Ctrl-C) arrives right after it.

        Fused around the step (one extra read of the grads when any is used):
        grad_scale: the loss scale; grads are divided by float32(grad_scale) in the kernel, as torch's fused Adam
        does under GradScaler (a power of two multiplies by its exact reciprocal: the same bits, GradScaler's
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
        engine = self._engine
        with engine.lock.held("step()"):
            skipped, norm, _coef = engine.step(self.param_groups, grads, extras)
            self.last_step_skipped = bool(skipped)
            self.last_grad_norm = norm
        return loss

    @contextlib.contextmanager
    def ema_weights(self):
        """Within the block the params hold their EMA (rounded to the param dtype); afterwards their own values
        again, bit for bit (evaluate with the averaged weights, keep training with the others). Needs
        ema_decay; params without an EMA yet (never stepped) keep their values."""
        engine = self._engine
        if engine.mixed.ema_decay is None:
            raise ValueError("ema_weights() needs an optimizer built with ema_decay=")
        with engine.lock.held("ema_weights()"):
            engine.sync(self.param_groups)
            saved = engine.params_to_ema()
        try:
            yield self
        finally:
            with engine.lock.held("ema_weights()"):
                engine.restore_params(saved)

    def threading_info(self):
        """How this optimizer's steps use threads, as measured: {"threads": 1 (serial) or n, 0 before it has
        decided; "serial_us" / "threads_us": median recent step times each way (None if not timed); "steps"}.
        Steps below cpu_info()["parallel_threshold"] elements always run serially and are not timed."""
        return threading_report(self._plan)

    # ------------------------------------------------------------ state

    @property
    def state(self):
        """{index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq", "master", "ema"]}} for params with state:
        live arrays. Indices are the params' positions in group order."""
        engine = self._engine
        if engine.lock.owned_here():
            return engine.state_view()
        with engine.lock.held("state"):
            engine.sync(self.param_groups)
            return engine.state_view()

    @property
    def state_dtype(self):
        """How exp_avg/exp_avg_sq/max_exp_avg_sq are stored: "float32" (the compute dtype), "bfloat16" or "int8"."""
        return self._engine.mixed.state_dtype

    def state_float32(self):
        """{index: {"step", "exp_avg", ...}} like `state`, with the Adam buffers decoded to new float32 arrays
        (whatever state_dtype stores them as)."""
        engine = self._engine
        with engine.lock.held("state_float32()"):
            engine.sync(self.param_groups)
            return engine.state_float32()

    def state_bytes(self):
        """Bytes the optimizer state takes now (Adam buffers, int8 block scales, master and EMA copies; not
        params or grads)."""
        engine = self._engine
        with engine.lock.held("state_bytes()"):
            engine.sync(self.param_groups)
            return engine.state_bytes()

    def state_dict(self):
        """{"state": {i: {...copies...}}, "param_groups": [{hyperparameters, "params": [i, ...]}]}, with
        integer indices running across groups as in torch.optim. Hyperparameters are plain Python floats, bools
        and a tuple of floats (so the dict minus its arrays is JSON-serialisable); taken under the lock, so a
        step in another thread is never half in it."""
        engine = self._engine
        with engine.lock.held("state_dict()"):
            layout = engine.sync(self.param_groups)
            groups, start = [], 0
            amsgrad_of = []
            for gi, group in enumerate(self.param_groups):
                saved = plain_hyperparameters(group)
                saved["params"] = list(range(start, start + len(group["params"])))
                start += len(group["params"])
                amsgrad_of.extend([saved.get("amsgrad") is True] * len(group["params"]))
                groups.append(saved)
            state = {}
            for i, entry in engine.state_view().items():
                if entry["step"] == 0:
                    continue
                saved = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
                if amsgrad_of[i] and "max_exp_avg_sq" not in saved:
                    # amsgrad was turned on since the last step: the next step starts this buffer at zero
                    p = layout.params[i]
                    buf, absmax = _compressed.zeros(engine.mixed.state_format(p.size), p)
                    saved["max_exp_avg_sq"] = buf
                    if absmax is not None:
                        saved["max_exp_avg_sq_absmax"] = absmax
                state[i] = saved
            return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Replace hyperparameters and state from `state_dict`; everything is validated (group and param
        counts, keys, steps, shapes, dtypes) before anything changes. Arrays are copied in."""
        from ._checkpoint import validate_state_dict
        engine = self._engine
        with engine.lock.held("load_state_dict()", allow_torn=True):
            layout = engine.sync(self.param_groups)
            groups, state = validate_state_dict(self, state_dict)
            n = len(layout.params)
            steps = np.zeros(n, np.int64)
            buffers = {key: [None] * n for key in _STATE_KEYS}
            for i, entry in state.items():
                steps[i] = entry["step"]
                # a master or EMA this optimizer does not keep is not loaded
                for key in _ADAM_KEYS + tuple(engine.mixed.extra_buffers(layout.params[i].dtype)):
                    if key in entry:
                        buffers[key][i] = entry[key]
                    if key + "_absmax" in entry:  # int8 state's block scales (see _checkpoint)
                        buffers[key + "_absmax"][i] = entry[key + "_absmax"]
            new = restore_layout(self.param_groups, layout.params, buffers, steps, layout.grads)
            for group, checked in zip(self.param_groups, groups):
                params = group["params"]
                group.clear()
                group.update(checked)
                group["params"] = params
            engine.layout = new
            engine.lock.torn_by_fork = False  # restored: usable again in a fork child

    # ------------------------------------------------------------ pickling, repr

    def __reduce_ex__(self, protocol):
        """pickle (and copy.copy): params, grads buffers and state together, saved while the lock is held (a token
        saved after them releases it), so a step in another thread is never half in the copy."""
        engine = self._engine
        token = ReleaseWhenSaved(engine.lock)
        token.acquire("pickling or copying the optimizer")  # released when the token is saved or dropped
        try:
            saved = self._saved()
        except BaseException:
            token.release()
            raise
        return (_new_instance, (type(self),), (saved, token))

    def __deepcopy__(self, memo):
        """copy.deepcopy: the parts __reduce_ex__ saves, deep-copied while the lock is held and released however the
        copy ends (a copy that fails, e.g. on a group holding a threading.Lock, leaves the optimizer usable)."""
        new = _new_instance(type(self))
        memo[id(self)] = new
        with self._engine.lock.held("copying the optimizer (copy.deepcopy)"):
            saved = copy.deepcopy(self._saved(), memo)
        new.__setstate__(saved)
        return new

    def _saved(self):
        """What a copy or pickle holds (the live objects; called with the lock held)."""
        engine = self._engine
        layout = engine.sync(self.param_groups)
        return {"defaults": self.defaults, "param_groups": self.param_groups, "params": layout.params,
                "state": layout.state, "steps": layout.steps.copy(), "grads": layout.grads, "mixed": engine.mixed}

    def __setstate__(self, state):
        if isinstance(state, tuple):
            saved, token = state
            if isinstance(token, ReleaseWhenSaved):  # copy.copy: nothing was saved, the token is still live
                token.release()
        else:
            saved = state
        self.defaults = saved["defaults"]
        self.param_groups = saved["param_groups"]
        # state and grads buffers are the optimizer's own: unpickled read-only (protocol 5 out-of-band buffers),
        # they are copied; params are the user's, and a read-only one makes step() refuse with a clear error
        state = {key: [_writable(b) for b in saved["state"][key]] for key in _STATE_KEYS if key in saved["state"]}
        grads = saved["grads"]
        if grads is not None:
            grads = [_writable(g) for g in grads]
        self._engine = Engine.restored(self.param_groups, saved["params"], state, saved["steps"], grads,
                                       saved.get("mixed"))
        self.last_step_skipped, self.last_grad_norm = False, None

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
                 maximize=False, master_weights=False, rounding="nearest", ema_decay=None, seed=0,
                 state_dtype=None, state_rounding="nearest"):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=True, master_weights=master_weights,
                         rounding=rounding, ema_decay=ema_decay, seed=seed, state_dtype=state_dtype,
                         state_rounding=state_rounding)


def _new_instance(cls):
    return cls.__new__(cls)


def _writable(array):
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        return np.array(array, copy=True)
    return array


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
