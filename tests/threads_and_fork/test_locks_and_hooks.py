"""The optimizer's lock: released however a copy ends, held around the core only (hooks may call the optimizer),
and nothing of the optimizer kept alive by its own step plan."""
import copy
import gc
import threading
import weakref

import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402


def _numpy_opt(extra=None):
    p = np.ones(8, np.float32)
    group = {"params": [p]}
    group.update(extra or {})
    opt = adam_c.Adam([group], lr=0.1)
    return opt, lambda: opt.step([np.ones(8, np.float32)])


def _torch_opt(extra=None):
    p = torch.ones(8)
    group = {"params": [p]}
    group.update(extra or {})
    opt = at.Adam([group], lr=0.1)

    def step():
        p.grad = torch.ones(8)
        opt.step()
    return opt, step


FRONT_ENDS = [pytest.param(_numpy_opt, id="numpy"), pytest.param(_torch_opt, id="torch")]


def _in_thread(fn, timeout=30.0):
    """Runs fn in another thread; returns (finished, exception or None)."""
    out = []

    def run():
        try:
            fn()
            out.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out.append(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive()), (out[0] if out else None)


# ---------------------------------------------------------------- a failed deepcopy

@pytest.mark.parametrize("make", FRONT_ENDS)
def test_a_failed_deepcopy_releases_the_lock_in_this_thread(make):
    opt, step = make({"lock": threading.Lock()})  # a group value deepcopy cannot copy
    step()
    with pytest.raises(TypeError) as info:
        copy.deepcopy(opt)
    assert info.value.__traceback__ is not None  # the failed copy's frames (and what they hold) are still alive
    step()  # not "re-entrant call"
    finished, exc = _in_thread(step)
    assert finished and exc is None


@pytest.mark.parametrize("make", FRONT_ENDS)
def test_a_failed_deepcopy_in_a_worker_thread_does_not_block_other_threads(make):
    opt, step = make({"lock": threading.Lock()})
    kept = []

    def failing_copy():
        try:
            copy.deepcopy(opt)
        except TypeError as exc:
            kept.append(exc)  # the exception (and its traceback) outlives the worker's call
    finished, exc = _in_thread(failing_copy)
    assert finished and exc is None and len(kept) == 1
    finished, exc = _in_thread(step, timeout=20.0)
    assert finished, "step() in another thread blocked on the lock a failed deepcopy kept"
    assert exc is None
    step()


@pytest.mark.parametrize("make", FRONT_ENDS)
def test_deepcopy_still_copies_everything(make):
    opt, step = make()
    step()
    twin = copy.deepcopy(opt)
    a, b = opt.state_dict(), twin.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for key in a["state"]:
        for name, value in a["state"][key].items():
            other = b["state"][key][name]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other) and value.data_ptr() != other.data_ptr()
            elif isinstance(value, np.ndarray):
                assert np.array_equal(value, other) and not np.shares_memory(value, other)
            else:
                assert value == other
    step()  # both usable
    if isinstance(twin, at.Adam):
        twin.param_groups[0]["params"][0].grad = torch.ones(8)
        twin.step()
    else:
        twin.step([np.ones(8, np.float32)])


# ---------------------------------------------------------------- hooks that call the optimizer

def _calls(opt, p):
    """What a hook may do with its optimizer (as with torch.optim): zero_grad, state_dict, a copy, a step."""
    opt.zero_grad()
    p.grad = torch.ones_like(p)
    opt.step()
    copy.deepcopy(opt)
    return opt.state_dict()


@pytest.mark.parametrize("cls", [at.Adam, torch.optim.Adam], ids=["adam_c", "torch"])
def test_state_dict_and_load_state_dict_hooks_may_call_the_optimizer(cls):
    p = torch.ones(8)
    opt = cls([p], lr=0.1)
    p.grad = torch.ones(8)
    opt.step()
    seen = []
    busy = []

    def once(tag, fn):
        def hook(*args):
            if busy:  # the state_dict() inside a hook runs the hooks again
                return None
            busy.append(tag)
            try:
                fn()
                seen.append(tag)
            finally:
                busy.pop()
            return None
        return hook

    opt.register_state_dict_pre_hook(once("sd-pre", lambda: _calls(opt, p)))
    opt.register_state_dict_post_hook(once("sd-post", lambda: _calls(opt, p)))
    opt.register_load_state_dict_pre_hook(once("load-pre", lambda: _calls(opt, p)))
    opt.register_load_state_dict_post_hook(once("load-post", lambda: _calls(opt, p)))
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    assert seen == ["sd-pre", "sd-post", "load-pre", "load-post"]
    p.grad = torch.ones(8)
    opt.step()


def test_hooks_see_and_replace_the_state_dict_as_torchs_do():
    p = torch.ones(8)
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.ones(8)
    opt.step()

    def post(optimizer, state_dict):
        assert optimizer is opt
        return {**state_dict, "extra": 1}

    def load_pre(optimizer, state_dict):
        assert optimizer is opt and state_dict.get("extra") == 1
        out = dict(state_dict)
        del out["extra"]
        out["param_groups"] = [dict(g, lr=0.5) for g in out["param_groups"]]
        return out

    opt.register_state_dict_post_hook(post)
    opt.register_load_state_dict_pre_hook(load_pre)
    sd = opt.state_dict()
    assert sd["extra"] == 1
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.5 and "extra" in sd  # the caller's dict was not edited


# ---------------------------------------------------------------- no reference cycle

@pytest.mark.parametrize("which", ["torch", "numpy"])
def test_a_dropped_optimizer_frees_its_state_without_the_cyclic_gc(which):
    gc.collect()
    gc.disable()
    try:
        if which == "torch":
            p = torch.randn(1000)
            opt = at.Adam([p], lr=0.1, amsgrad=True)
            p.grad = torch.randn(1000)
            opt.step()
            opt.step()
            buffer = weakref.ref(opt.state[p]["exp_avg"])
        else:
            p = np.ones(1000, np.float32)
            opt = adam_c.Adam([p], lr=0.1)
            opt.step([np.ones(1000, np.float32)])
            buffer = weakref.ref(opt.state[0]["exp_avg"])
        owner = weakref.ref(opt)
        del opt
        assert owner() is None, "the optimizer is in a reference cycle"
        assert buffer() is None, "its state outlived it"
    finally:
        gc.enable()
