"""Reliability of the torch drop-in (adam_c.torch) under the README "Guarantees": threads, fork, Ctrl-C, memory.

Every body that may crash or hang runs in a fresh interpreter with a timeout (run_isolated). Races are made
deterministic by polling the param's first element: the kernel (1 adam_c thread) writes it first, so once it
changed the other thread is inside the GIL-released C call, and a 8-16M-element step keeps it there for
tens of milliseconds.
"""
import copy
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")
import adam_c  # noqa: E402
import adam_c.torch as at  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_isolated(body, *args, timeout=120):
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_torch_threads_and_fork as m; m.{body}(*{args!r}); "
            "print('BODY-OK', flush=True)")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=HERE)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{body}{args} hung (killed after {timeout} s): {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0 and "BODY-OK" in proc.stdout, \
        f"{body}{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def wait_until_in_c_call(flat, first, stop=None):
    """Spin until the kernel has written flat[0] (the stepping thread is inside the C call)."""
    while flat[0].item() == first:
        if stop is not None and stop.is_set():
            return False
    return True


def make(variant, n):
    if variant == "bf16_master":
        p = torch.ones(n, dtype=torch.bfloat16)
        kw = dict(master_weights=True)
    elif variant == "int8":
        p = torch.ones(n)
        kw = dict(state_dtype="int8")
    else:
        p = torch.ones(n)
        kw = {}
    p.requires_grad_()
    p.grad = torch.full((n,), 0.5, dtype=p.dtype)
    return p, at.Adam([p], lr=0.1, **kw)


# ================================================================ 1. Ctrl-C right after the first step's C call


def body_ctrl_c_after_first_c_call(variant):
    adam_c.set_num_threads(1)
    n = 8_000_000
    for attempt in range(6):
        p, opt = make(variant, n)
        flat = p.detach()
        first = flat[0].item()
        stop = threading.Event()

        def sender():
            if wait_until_in_c_call(flat, first, stop):
                os.kill(os.getpid(), signal.SIGINT)  # Python's handler runs once the main thread can run bytecode

        t = threading.Thread(target=sender)
        t.start()
        interrupted = False
        try:
            try:
                opt.step()
            except KeyboardInterrupt:
                interrupted = True
            stop.set()
            t.join()
        except KeyboardInterrupt:
            continue  # the signal landed after step() returned: inconclusive, try again
        if not interrupted:
            continue
        changed = bool((flat != 1).any())
        entry = opt.state.get(p)
        assert changed, "the interrupt landed before the C call (expected only after it)"
        # README: "A step whose C call ran is kept whole: an exception raised right after it (Ctrl-C, a signal
        # handler) does not roll back part of it." Here the params were stepped but the new state was dropped.
        assert entry, f"{variant}: params stepped by the C call, but Ctrl-C removed their new state {dict(entry or {})}"
        assert float(entry["step"]) == 1.0, entry["step"]
        if variant == "bf16_master":
            assert "master" in entry
        return
    raise AssertionError("could not interrupt the step inside its C call in 6 attempts")


@pytest.mark.parametrize("variant", ["float32", "int8", "bf16_master"])
def test_torch_ctrl_c_right_after_first_c_call_keeps_step_whole(variant):
    run_isolated("body_ctrl_c_after_first_c_call", variant)


# ================================================================ 2. grad memory replaced during the C call


def body_grad_memory_replaced_during_c_call(how):
    adam_c.set_num_threads(1)
    n = 16_000_000  # 64 MB: glibc mmaps it, so freeing it unmaps it
    q, ref = make("float32", 8)
    ref.step()
    expected = q.detach()[0].item()
    p, opt = make("float32", n)
    flat = p.detach()
    first = flat[0].item()
    t = threading.Thread(target=opt.step)
    t.start()
    wait_until_in_c_call(flat, first)
    if how == "data":
        p.grad.data = torch.empty(0)  # what Module._apply does to grads (model.to(dtype), .half(), ...)
    else:
        p.grad.set_(torch.empty(0))
    junk = [torch.full((n // 4,), float("nan")) for _ in range(4)]  # noqa: F841
    t.join()
    assert bool((flat == expected).all()), "the step read freed grad memory"


@pytest.mark.parametrize("how", ["data", "set_"])
def test_torch_grad_memory_replaced_during_c_call_stays_alive(how):
    run_isolated("body_grad_memory_replaced_during_c_call", how)


# ================================================================ 3. fork while another thread is in the C call


def body_fork_during_torch_c_call():
    adam_c.set_num_threads(1)
    n = 16_000_000
    p, opt = make("float32", n)
    opt.step()  # plan and state exist
    saved = copy.deepcopy(opt.state_dict())
    for attempt in range(4):
        p.grad = torch.full((n,), 0.5)
        flat = p.detach()
        first = flat[0].item()
        step_before = float(opt.state[p]["step"])
        t = threading.Thread(target=opt.step)
        t.start()
        wait_until_in_c_call(flat, first)
        pid = os.fork()
        if pid == 0:
            code = 99
            try:
                if float(opt.state[p]["step"]) != step_before:
                    code = 7  # the step had finished before the fork: inconclusive
                else:  # forked mid-step: params written, step counter not yet; README: refuse until load_state_dict
                    refused = []
                    for call in (opt.step, opt.state_dict):
                        try:
                            call()
                            refused.append(False)
                        except RuntimeError as exc:
                            refused.append("forked" in str(exc))
                    opt.load_state_dict(saved)
                    opt.step()  # usable again once restored
                    code = 0 if all(refused) else 10 + refused[0] + 2 * refused[1]
            except BaseException:
                code = 98
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("forked child hung")
            time.sleep(0.005)
        t.join()
        code = os.waitstatus_to_exitcode(status)
        if code == 7:
            continue
        assert code == 0, (f"child of a fork taken inside another thread's C call was not refused (exit {code}: "
                           "10 = step() and state_dict() both went through on a half-stepped copy)")
        return
    raise AssertionError("never forked inside the C call")


def test_torch_fork_during_another_threads_c_call_is_refused():
    run_isolated("body_fork_during_torch_c_call")


# ================================================================ 4. deepcopy while another thread steps


def body_deepcopy_while_stepping():
    adam_c.set_num_threads(1)
    n = 16_000_000
    p, opt = make("float32", n)
    opt.step()
    after1 = p.detach().clone()
    p.grad = torch.full((n,), 0.5)
    flat = p.detach()
    first = flat[0].item()
    t = threading.Thread(target=opt.step)
    t.start()
    wait_until_in_c_call(flat, first)
    clone = copy.deepcopy(opt)  # README: "pickle and deepcopy keep the lock until the arrays are saved"
    t.join()
    cp = clone.param_groups[0]["params"][0].detach()
    step = float(clone.state[clone.param_groups[0]["params"][0]]["step"])
    whole1 = torch.equal(cp, after1) and step == 1.0
    whole2 = torch.equal(cp, flat) and step == 2.0
    assert whole1 or whole2, (f"deepcopy holds part of a step: step counter {step}, "
                              f"{int((cp != after1).sum())} of {n} param elements updated")


def test_torch_deepcopy_while_another_thread_steps_holds_one_whole_step():
    run_isolated("body_deepcopy_while_stepping")


# ================================================================ 5. re-entrant calls from inside step()


class _Hooked(torch.Tensor):
    hook = None
    busy = False

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if _Hooked.hook is not None and not _Hooked.busy:
            _Hooked.busy = True
            try:
                _Hooked.hook()
            finally:
                _Hooked.busy = False
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("call", ["state_dict", "load_state_dict", "add_param_group", "zero_grad"])
def test_torch_reentrant_call_from_inside_step_raises(call):
    p = torch.ones(10, requires_grad=True)
    opt = at.Adam([p], lr=0.1)
    p.grad = torch.full((10,), 0.5)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    calls = {"state_dict": lambda: opt.state_dict(),
             "load_state_dict": lambda: opt.load_state_dict(saved),
             "add_param_group": lambda: opt.add_param_group({"params": [torch.ones(3, requires_grad=True)]}),
             "zero_grad": lambda: opt.zero_grad()}
    p.grad = torch.full((10,), 0.5).as_subclass(_Hooked)  # read by the plan inside step()'s lock
    _Hooked.hook = calls[call]
    try:
        with pytest.raises(RuntimeError, match="re-entrant"):
            opt.step()
    finally:
        _Hooked.hook = None
