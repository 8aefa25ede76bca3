"""_engine.py: what every optimizer front-end shares: params/state layout, step plan, per-optimizer lock, commit.

The NumPy optimizer (optim.Adam) and a torch front-end keep their own param_groups and hand them to an Engine:
layouts are validated and adopted whole, the lock is re-entrancy-, Ctrl-C- and fork-aware, and a step whose C
call ran is committed whole.
"""
import copy
import operator
import os
import threading
import weakref
from collections.abc import Mapping
from itertools import chain

import numpy as np

from . import _compressed, _core
from ._mixed import MixedOptions
from ._validation import (ReentrantCallError, check_param, compute_dtype, first_overlap, grads_sequence, has_schedules,
                          read_group, resolve_schedules)

ADAM_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
MIXED_KEYS = ("master", "ema")  # mixed precision (see _mixed.py): float32 master copy, EMA of the params
# int8 state (see _compressed.py): one float32 absmax per 256-element block of each Adam buffer
ABSMAX_KEYS = tuple(key + "_absmax" for key in ADAM_KEYS)
STATE_KEYS = ADAM_KEYS + MIXED_KEYS + ABSMAX_KEYS

# ---------------------------------------------------------------- opt.state

class StateView(dict):
    """`opt.state` and each of its entries: the optimizer's live arrays (change them in place), read-only as
    mappings. The optimizer steps its own buffers, so an array assigned to an entry would be silently ignored (it
    was, until this refused it); torch's `opt.state[p][key] = t` is `adam_c.torch`'s, where it works. Copies and
    pickles are plain dicts."""

    __slots__ = ()

    def _refuse(self, *args, **kwargs):
        raise TypeError("opt.state is a view of the optimizer's own buffers: change an array in place "
                        "(opt.state[i]['exp_avg'][...] = x), or replace state with opt.load_state_dict(...)")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore

    def __reduce__(self):
        return (dict, (dict(self),))

    def __copy__(self):
        return dict(self)

    def __deepcopy__(self, memo):
        return copy.deepcopy(dict(self), memo)


# ---------------------------------------------------------------- the lock

_LOCKS: "weakref.WeakSet[CallLock]" = weakref.WeakSet()


class CallLock:
    """The lock every call of one optimizer holds: `with lock.held("step()"): ...`.

    A call from the thread that is already inside a call of the same optimizer (from a grads generator, a grad's
    __array__, an lr's __float__, a signal handler) raises RuntimeError instead of waiting for itself forever;
    other threads wait as on any lock. held() returns the underlying RLock, whose C-level __enter__/__exit__ the
    with statement calls directly: no Python frame runs between taking or releasing the lock and the protected
    block, so Ctrl-C cannot leave it taken. In a fork() child the lock starts unlocked again, since the thread that
    held it does not exist there (unless the forking thread held it itself, which then finishes its call); if a
    thread was inside the C call at the fork, the child's copy may hold half a step, and `torn_by_fork` says so.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self.running_plan = None  # the StepPlan whose run() is in progress, read by the fork handler
        self.torn_by_fork = False
        _LOCKS.add(self)

    def owned_here(self):
        return self._lock._is_owned()

    def held(self, call, *, allow_torn=False):
        """The lock to take with `with`, after checking that this thread is not inside a call already."""
        if self._lock._is_owned():
            raise ReentrantCallError(
                f"re-entrant call: {call} was called on an optimizer while this thread is already inside one of "
                "its calls (from a grads generator, an __array__ or __float__ method or a signal handler); make "
                "the call after the running one returns")
        if self.torn_by_fork and not allow_torn:
            raise RuntimeError(
                f"{call}: this process was forked while another thread was inside this optimizer's step, so this "
                "copy of its params and state may hold half of that step; restore it with load_state_dict() (or "
                "build a new optimizer) before using it here")
        return self._lock

    def _reset_in_fork_child(self):
        if self._lock._is_owned():
            return  # the forking thread is inside a call: it goes on and releases the lock as usual
        plan = self.running_plan
        if plan is not None and plan.in_c_call:  # another thread was in the C call: it stopped half way
            self.torn_by_fork = True
        self._lock = threading.RLock()
        self.running_plan = None


def _reset_locks_in_fork_child():
    for lock in list(_LOCKS):
        lock._reset_in_fork_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_in_fork_child)


class ReleaseWhenSaved:
    """pickle and deepcopy save the arrays that __reduce_ex__ returns after it has returned. This token is saved
    right after them: saving it (or dropping it, when saving failed) releases the optimizer's lock, so the arrays
    are saved while no step can change them. It unpickles as None."""

    def __init__(self, lock):
        self._lock = None
        self._target = lock

    def acquire(self, call):
        """Takes the lock for this token; if the token is dropped before it is saved, the lock is released."""
        lock = self._target.held(call)  # raises for a re-entrant call, taking nothing
        self._lock = lock  # from here on, dropping the token releases the lock if this thread took it
        lock.acquire()

    def release(self):
        lock, self._lock = self._lock, None
        if lock is not None and lock._is_owned():
            lock.release()

    def __reduce__(self):
        self.release()
        return (type(None), ())

    def __deepcopy__(self, memo):
        self.release()
        return None

    def __del__(self):
        self.release()


# ---------------------------------------------------------------- the layout


class Layout:
    """The params and their state at one moment, aligned by position (the flattened group order). A layout is never
    edited after it is adopted (except the step counts and array contents, by steps, and lazily allocated grads
    buffers), so switching to a new one is a single assignment."""

    __slots__ = ("lists", "params", "state", "steps", "grads", "plan", "dtypes", "shapes")

    def __init__(self, lists, params, state, steps, grads, plan=None):
        self.lists = lists        # each group's params list object, compared by identity
        self.params = params
        self.state = state        # {key: [array or None per param]}
        self.steps = steps        # int64 array, one count per param
        self.grads = grads        # opt.grads buffers (list aligned with params) or None until first used
        self.plan = plan
        self.dtypes = [p.dtype for p in params]
        self.shapes = [p.shape for p in params]

    def matches(self, groups):
        """True if `groups` still holds exactly these params lists and members, with the same dtypes and shapes."""
        if type(groups) is not list or len(groups) != len(self.lists):
            return False
        i = 0
        for group, members in zip(groups, self.lists):
            if not isinstance(group, dict) or group.get("params") is not members:  # dict subclasses too
                return False
            for p in members:
                if (i >= len(self.params) or p is not self.params[i] or p.dtype != self.dtypes[i]
                        or p.shape != self.shapes[i]):
                    return False
                i += 1
        return i == len(self.params)


def restore_layout(groups, params, state, steps, grads):
    """A layout from unpickled parts, taken as they are; the next step validates them like any edited layout."""
    lists = [g.get("params") if isinstance(g, dict) else None for g in groups]
    params = list(params)
    # a pickle from before mixed precision has no master/ema lists
    state = {k: list(state[k]) if k in state else [None] * len(params) for k in STATE_KEYS}
    return Layout(lists, params, state, np.array(steps, np.int64), grads)


def build_layout(groups, old, *, allocate, mixed=None):
    """A new Layout for `groups` (param_groups, possibly edited since `old` was built).

    Validates every group and param (TypeError/ValueError naming param_groups[i]...), carries each param's state,
    step count and grads buffer over from `old` by identity (a param new to the optimizer starts without state,
    a removed one drops its state, a moved one keeps it), refuses params that share memory with each other or with
    any state or grads buffer. allocate=True (a step) also validates the hyperparameters, creates the zero state
    the step needs (and the master/EMA copies `mixed` asks for) and the StepPlan. State, master and EMA have the
    param's compute_dtype (float32 for float16/bfloat16 params). Changes nothing: `old` stays valid if this
    raises."""
    mixed = mixed if mixed is not None else MixedOptions.default()
    if type(groups) is not list:
        raise TypeError(f"param_groups must be a list of dicts, got {type(groups).__name__}")
    lists, params, names, amsgrads = [], [], [], []
    for gi, group in enumerate(groups):
        where = f"param_groups[{gi}]"
        if not isinstance(group, dict):
            raise TypeError(f"{where} must be a dict, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{where} has no 'params' key")
        members = group["params"]
        if type(members) is not list and type(members) is not tuple:
            raise TypeError(f"{where}['params'] must be a list of arrays, got {type(members).__name__}")
        amsgrad = read_group(group, gi)[5] if allocate else False
        for j, p in enumerate(members):
            check_param(p, f"{where}['params'][{j}]")
            names.append(f"{where}['params'][{j}]")
        mixed.check_params([p.dtype for p in members], f"{where}['params']")
        lists.append(members)
        params.extend(members)
        amsgrads.extend([amsgrad] * len(members))

    seen = {}
    for i, p in enumerate(params):
        if id(p) in seen:
            raise ValueError(f"the same array appears twice among the params ({names[seen[id(p)]]} and {names[i]})")
        seen[id(p)] = i

    n = len(params)
    state = {key: [None] * n for key in STATE_KEYS}
    steps = np.zeros(n, np.int64)
    grads = None if old is None or old.grads is None else [None] * n
    old_index = {} if old is None else {id(p): i for i, p in enumerate(old.params)}
    for i, p in enumerate(params):
        j = old_index.get(id(p))
        if j is None or old.params[j] is not p:
            continue
        if p.dtype != old.dtypes[j]:  # reinterpreted in place (p.dtype = ...): its memory now means other values
            raise TypeError(f"{names[i]} has dtype {p.dtype} but was given to the optimizer with dtype "
                            f"{old.dtypes[j]}: a param's dtype must not change in place")
        for key in STATE_KEYS:
            buf = old.state[key][j]
            if buf is not None:
                state[key][i] = _carried_buffer(buf, p, names[i], f"opt.state[{i}][{key!r}]",
                                                _stored_as(key, mixed.state_format(p.size), p))
        steps[i] = old.steps[j]
        if grads is not None:
            g = old.grads[j]
            if g is not None and g.dtype == p.dtype and g.size == p.size and g.flags.c_contiguous:
                grads[i] = g.reshape(p.shape) if g.shape != p.shape else g
    if grads is not None:
        for i, p in enumerate(params):
            if grads[i] is None:
                grads[i] = np.zeros_like(p)

    named = [(names[i], p) for i, p in enumerate(params)]
    for key in STATE_KEYS:
        named.extend((f"opt.state[{i}][{key!r}]", b) for i, b in enumerate(state[key]) if b is not None)
    if grads is not None:
        named.extend((f"opt.grads[{i}]", g) for i, g in enumerate(grads))
    pair = first_overlap(named)
    if pair is not None:
        raise ValueError(f"{pair[0]} and {pair[1]} overlap in memory; every param needs memory of its own "
                         "(not a view of another param, of optimizer state or of opt.grads)")

    plan = None
    if allocate:
        for i, p in enumerate(params):
            for key in ADAM_KEYS if amsgrads[i] else ADAM_KEYS[:2]:
                if state[key][i] is None:
                    state[key][i], state[key + "_absmax"][i] = _compressed.zeros(mixed.state_format(p.size), p)
            for key in mixed.extra_buffers(p.dtype):  # master, then ema: they start as copies of the param
                if state[key][i] is None:
                    source = state["master"][i] if key == "ema" and state["master"][i] is not None else p
                    state[key][i] = source.astype(compute_dtype(p.dtype), order="C")
        plan = _core.StepPlan(params, *(state[k] for k in ADAM_KEYS), [len(m) for m in lists], steps,
                              group_lists=lists, masters=state["master"], emas=state["ema"],
                              stochastic=mixed.rounding == "stochastic",
                              state_codes=[_compressed.KERNEL_CODE[mixed.state_format(p.size)] for p in params],
                              exp_avg_absmax=state["exp_avg_absmax"], exp_avg_sq_absmax=state["exp_avg_sq_absmax"],
                              max_exp_avg_sq_absmax=state["max_exp_avg_sq_absmax"],
                              state_stochastic=mixed.state_rounding == "stochastic")
    return Layout(lists, params, state, steps, grads, plan)


def _stored_as(key, state_format, param):
    """(dtype, element count, shape) that state buffer `key` of `param` has in this state format."""
    if key.endswith("_absmax"):
        blocks = _compressed.n_blocks(param.size)
        return np.dtype(np.float32), blocks, (blocks,)
    if key in ADAM_KEYS and state_format != "float32":
        return np.dtype(np.uint16 if state_format == "bfloat16" else np.uint8), param.size, param.shape
    return np.dtype(compute_dtype(param.dtype)), param.size, param.shape


def _carried_buffer(buf, param, param_name, name, stored_as):
    """A state buffer kept for `param`: it must still match the param (whose dtype or shape may have been changed
    in place); a new shape of the same size is followed with a view. stored_as: _stored_as(...)."""
    dtype, size, shape = stored_as
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"{name} must be an ndarray, got {type(buf).__name__}")
    if buf.dtype != dtype:  # (a param whose own dtype changed in place was refused before this)
        raise TypeError(f"{name} has dtype {buf.dtype}, but that state of {param_name} ({param.dtype}) must have "
                        f"dtype {dtype}: optimizer state must not be changed in place")
    if buf.size != size:
        raise ValueError(f"{name} has {buf.size} elements, but {param_name} has {param.size}, so that state must "
                         f"have {size}: neither a param nor its optimizer state may be resized after the state was "
                         "created")
    if not (buf.flags.c_contiguous and buf.flags.aligned and buf.flags.writeable):
        raise ValueError(f"{name} must stay writable, aligned and C-contiguous")
    return buf.reshape(shape) if buf.shape != shape else buf


# ---------------------------------------------------------------- the engine


def _write_param(p, values):
    """p's elements set to values (its backup, or its EMA rounded to nearest even into p's dtype)."""
    if p.dtype == values.dtype:
        np.copyto(p, values.reshape(p.shape))
    else:
        _core.convert(values.reshape(-1), p.reshape(-1))


class Engine:
    """One optimizer's layout and lock, and the step: the front-end owns param_groups and passes them in.
    Methods other than the lock's are called with the lock held."""

    def __init__(self, groups, mixed=None):
        self.lock = CallLock()
        self.mixed = mixed if mixed is not None else MixedOptions.default()
        self.layout = build_layout(groups, None, allocate=False, mixed=self.mixed)
        self.ema_swapped = False  # the params hold their EMA (inside `with opt.ema_weights():`)

    @classmethod
    def restored(cls, groups, params, state, steps, grads, mixed=None):
        """An engine from unpickled parts (see restore_layout)."""
        engine = cls.__new__(cls)
        engine.lock = CallLock()
        engine.mixed = mixed if mixed is not None else MixedOptions.default()
        engine.layout = restore_layout(groups, params, state, steps, grads)
        engine.ema_swapped = False
        return engine

    def sync(self, groups):
        """The layout for the current param_groups (edited groups take effect here), adopted; validated."""
        layout = self.layout
        if not layout.matches(groups):
            layout = build_layout(groups, layout, allocate=False, mixed=self.mixed)
            self.layout = layout
        return layout

    def grad_buffers(self, groups):
        layout = self.sync(groups)
        if layout.grads is None:
            layout.grads = [np.zeros_like(p) for p in layout.params]
        return layout.grads

    def step(self, groups, grads, extras=None):
        """One step; raises before changing anything, and once the C call has run the step is kept whole.
        `extras`: StepPlan.run's per-step options from _mixed.check_step_extras (loss scale, clipping, skip).
        Returns (skipped, grad_norm or None, clip_coef); a skipped step changes nothing, step counts included."""
        if self.ema_swapped:
            raise ema_block_error("step()")
        options = self.mixed.run_options()
        if extras:
            options.update(extras)
        use_buffers = grads is None
        if use_buffers and self.layout.grads is None:
            # no grads given and opt.grads never allocated (or dropped by zero_grad(set_to_none=True)): like
            # torch.optim for params without a .grad, nothing is stepped (a step on zero grads would still move
            # the params by weight decay and momentum) and no step is counted
            return False, (0.0 if (extras or {}).get("max_grad_norm") else None), 1.0
        if use_buffers:
            grads = self.layout.grads  # the plan checks that they still match the groups
        elif type(grads) is not list and type(grads) is not tuple:
            grads = grads_sequence(grads)  # read once here: a generator must not be consumed per attempt
        # a schedule lr is called once per group per step, before the first attempt, for the step each group is
        # about to take (the counts a rebuilt layout carries over); both attempts read the values, the groups keep
        # the callables
        run_groups = resolve_schedules(groups, self._steps_of(groups)) if has_schedules(groups) else groups
        plan = self.layout.plan
        if plan is not None and grads is not None:
            self.lock.running_plan = plan
            try:
                return plan.run(grads, run_groups, **options)
            except _core.PlanOutdated:
                pass  # edited groups or params, or amsgrad turned on: validate and rebuild below
            finally:
                self.lock.running_plan = None
        if use_buffers:
            grads = self.grad_buffers(groups)
        new = build_layout(groups, self.layout, allocate=True, mixed=self.mixed)
        plan = new.plan
        self.lock.running_plan = plan
        try:
            return plan.run(grads, run_groups, **options)
        except _core.PlanOutdated as exc:
            raise ValueError("param_groups, a param or the optimizer state changed while step() was reading the "
                             "grads (from a generator, __array__ or __float__); nothing was changed") from exc
        finally:
            # no call in this block: a KeyboardInterrupt cannot land between the C call's commit and this one
            # (a skipped step commits nothing: its new zero state and master/EMA copies are dropped)
            if plan.commits:
                self.layout = new
            self.lock.running_plan = None

    def _steps_of(self, groups):
        """The step count of each param of `groups` as they are now (in group order): the adopted layout's, carried
        by identity as build_layout does when the groups were edited (0 for a param new to the optimizer)."""
        layout = self.layout
        try:  # the same params in the same order (identity only: a C-level pass, not Layout.matches's checks)
            same = (sum(len(g["params"]) for g in groups) == len(layout.params)
                    and all(map(operator.is_, chain.from_iterable(g["params"] for g in groups), layout.params)))
        except ReentrantCallError:
            raise
        except Exception:  # malformed groups: build_layout names what is wrong
            same = False
        if same:
            return layout.steps
        index = {id(p): i for i, p in enumerate(layout.params)}
        out = []
        for group in groups if isinstance(groups, (list, tuple)) else ():
            members = group.get("params") if isinstance(group, Mapping) else None
            for p in members if isinstance(members, (list, tuple)) else ():
                j = index.get(id(p))
                out.append(layout.steps[j] if j is not None and layout.params[j] is p else 0)
        return np.array(out, np.int64)

    def params_to_ema(self):
        """Write each param's EMA into it (rounded to nearest even for float16/bfloat16, as the step does) and
        return [(param, copy of its own values)] for restore_params; params without an EMA are left alone. All
        or nothing: if one cannot be written (a read-only param), those written are restored and it raises.
        Until restore_params, steps are refused (ema_swapped)."""
        if self.ema_swapped:
            raise ema_block_error("ema_weights()")
        layout = self.layout
        pairs = [(p, ema) for p, ema in zip(layout.params, layout.state["ema"]) if ema is not None]
        saved = write_all_or_nothing(pairs, np.copy, _write_param)
        self.ema_swapped = True
        return saved

    def restore_params(self, saved):
        try:
            put_back(saved, _write_param)
        finally:
            self.ema_swapped = False

    def state_view(self):
        """`opt.state`: _state_entries() as read-only mappings (see StateView) over the same live arrays."""
        return StateView({i: StateView(entry) for i, entry in self._state_entries().items()})

    def _state_entries(self):
        """{index: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq", "master", "ema"]}} of the adopted layout
        (live arrays). Compressed state adds "state_dtype" ("bfloat16": uint16 bit patterns; "int8": uint8 codes
        and "<key>_absmax" float32 block scales)."""
        layout = self.layout
        out = {}
        for i in range(len(layout.params)):
            if layout.state["exp_avg"][i] is None:
                continue
            entry = {"step": int(layout.steps[i])}
            state_format = self.mixed.state_format(layout.params[i].size)
            if state_format != "float32":
                entry["state_dtype"] = state_format
            shape = layout.params[i].shape
            for key in STATE_KEYS:
                buf = layout.state[key][i]
                if buf is not None:
                    # a buffer reshaped in place (same memory and size: the kernel does not mind) is shown and saved
                    # in its param's shape, block scales 1-D, so checkpoints load
                    want = (buf.size,) if key in ABSMAX_KEYS else shape
                    entry[key] = buf if buf.shape == want else buf.reshape(want)
            out[i] = entry
        return out

    def state_float32(self):
        """state_view() with exp_avg/exp_avg_sq/max_exp_avg_sq decoded to new float32 arrays (any state format),
        without the block scales and the state_dtype key."""
        out = {}
        for i, entry in self._state_entries().items():
            decoded = {}
            for key, value in entry.items():
                if key == "state_dtype" or key.endswith("_absmax"):
                    continue
                if key in ADAM_KEYS:
                    value = _compressed.to_float32(entry.get("state_dtype", "float32"), key, value,
                                                   entry.get(key + "_absmax"))
                decoded[key] = value
            out[i] = decoded
        return out

    def state_bytes(self):
        """Bytes the optimizer state takes now: Adam buffers, int8 block scales, master and EMA copies."""
        return _compressed.state_nbytes(buf for key in STATE_KEYS for buf in self.layout.state[key])


def threading_report(plan):
    """threading_info() of both front-ends: the plan's measured serial-or-threads decision, zeros before the
    first step (no plan yet)."""
    if plan is None:
        return {"threads": 0, "serial_us": None, "threads_us": None, "steps": 0}
    return plan.threading()


def write_all_or_nothing(pairs, backup, write):
    """write(target, value) for each (target, value) of pairs, all or nothing (ema_weights() in both
    front-ends): returns [(target, backup(target))] taken before any write, for put_back. If a write fails, every
    target written so far, and the one that failed (it may be half written), gets its backup back; then the
    error propagates."""
    saved = [(target, backup(target)) for target, _ in pairs]
    done = 0
    try:
        for target, value in pairs:
            done += 1
            write(target, value)
    except BaseException:
        put_back(saved[:done], write, quiet=True)
        raise
    return saved


def put_back(saved, write, quiet=False):
    """write_all_or_nothing's targets given their backups back; quiet: a target that fails again (the one whose
    write failed) is skipped, so the others are restored."""
    for target, backup in saved:
        try:
            write(target, backup)
        except Exception:
            if not quiet:
                raise


def ema_block_error(call):
    """The error for a step (or another ema_weights()) while the params hold their EMA: its update would be
    overwritten when the block restores them."""
    return RuntimeError(f"{call} inside `with opt.ema_weights():` is refused: the params hold their EMA there, "
                        "and leaving the block restores their own values over any update; step after the block")
