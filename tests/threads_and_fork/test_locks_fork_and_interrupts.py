"""Reliability, round two: held grads, edited groups and arrays, re-entrancy, fork, Ctrl-C, torn snapshots, errors.

Anything that crashed or hung before runs in a fresh interpreter with a timeout (`run_isolated`), so a regression
fails its test instead of killing or hanging pytest.
"""
import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

import adam_c
from _forking import wait_for_child
from reference import adam_step_reference, assert_bitwise_equal

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)  # tests/: the helpers this module imports
ALLOWED = (TypeError, ValueError)


def run_isolated(tmp_path, body, timeout=90):
    """Runs this module's function `body` in a fresh interpreter (from outside the checkout, so the installed
    adam_c is imported) and fails on a crash, a hang or an exception."""
    code = f"import sys; sys.path[:0] = [{HERE!r}, {TESTS!r}]; " \
           f"import {__name__.rpartition('.')[2]} as m; m.{body}(); " \
           "print('BODY-OK', flush=True)"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=str(tmp_path))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{body} hung (killed after {timeout} s); output: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0 and "BODY-OK" in proc.stdout, \
        f"{body}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def expected_step(p, g, state=None, step=1, **hp):
    """The oracle's (param, exp_avg, exp_avg_sq, max_exp_avg_sq) after one step from `state`."""
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
              decoupled_weight_decay=False)
    kw.update(hp)
    zeros = np.zeros_like(p)
    m, v, vmax = state if state is not None else (zeros, zeros, zeros)
    return adam_step_reference(p, g, m, v, vmax, step=step, **kw)


def rand(shape, dtype=np.float64, seed=0):
    return np.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def flat_params(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def full_snapshot(opt):
    return ([p.copy() for p in flat_params(opt)],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in e.items()}
             for i, e in opt.state.items()})


def assert_snapshot_equal(a, b, what):
    assert len(a[0]) == len(b[0]), what
    for i, (x, y) in enumerate(zip(a[0], b[0])):
        assert_bitwise_equal(x, y, f"{what}: param {i}")
    assert sorted(a[1]) == sorted(b[1]), f"{what}: state entries {sorted(a[1])} vs {sorted(b[1])}"
    for i in a[1]:
        assert sorted(a[1][i]) == sorted(b[1][i]), f"{what}: state[{i}] keys"
        for k, v in a[1][i].items():
            if isinstance(v, np.ndarray):
                assert_bitwise_equal(b[1][i][k], v, f"{what}: state[{i}][{k!r}]")
            else:
                assert b[1][i][k] == v, f"{what}: state[{i}][{k!r}]"


# ================================================================ 1. grads held for the whole C call

BIG = 10_000_000  # 80 MB of float64: freed memory of this size goes back to the OS, so a dangling read faults


class FreshArrayEachAccess(list):
    """A list whose items are new arrays each time they are read (nothing else keeps them alive)."""

    def __getitem__(self, i):
        return np.full(BIG, 0.5)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def body_grads_fresh_on_each_access():
    p, p2 = np.zeros(BIG), np.zeros(BIG)
    opt = adam_c.Adam([p, p2], lr=0.25)
    for _ in range(3):
        opt.step(FreshArrayEachAccess([None, None]))
    assert opt.state[0]["step"] == 3
    q = np.zeros(1)
    ref = adam_c.Adam([q], lr=0.25)
    for _ in range(3):
        ref.step([np.full(1, 0.5)])
    assert (p == q[0]).all() and (p2 == q[0]).all(), (p[:3], q)


def body_grads_list_replaced_by_another_thread():
    p = np.zeros(BIG)
    opt = adam_c.Adam([p, np.zeros(3)], lr=0.25)
    grads = [np.full(BIG, 0.5), np.ones(3)]
    stop = threading.Event()

    def replace():
        while not stop.is_set():
            grads[0] = np.full(BIG, 0.5)  # the old array loses its last reference here

    t = threading.Thread(target=replace)
    t.start()
    try:
        for _ in range(15):
            opt.step(grads)
    finally:
        stop.set()
        t.join()
    assert opt.state[0]["step"] == 15 and np.isfinite(p).all() and (p == p[0]).all()


def test_grads_that_exist_only_during_the_call_are_kept_alive(tmp_path):
    """Item 1: every grad C reads is held until the C call returns (a sequence handing out fresh arrays)."""
    run_isolated(tmp_path, "body_grads_fresh_on_each_access")


def test_grads_list_mutated_by_another_thread_during_steps(tmp_path):
    """Item 1: another thread replacing grads[0] in the caller's list while steps run cannot free what C reads."""
    run_isolated(tmp_path, "body_grads_list_replaced_by_another_thread")


# ================================================================ 2. edited param_groups[i]["params"]


def test_replacing_group_params_steps_the_new_arrays_like_torch():
    """Item 2: after group["params"] is replaced, the new arrays are stepped (fresh state), the old ones not."""
    a, b = rand(5, seed=1), rand(3, np.float32, seed=2)
    opt = adam_c.Adam([a], lr=0.1)
    opt.step([np.ones(5)])
    a_after = a.copy()
    opt.param_groups[0]["params"] = [b]
    g = rand(3, np.float32, seed=3)
    b0 = b.copy()
    opt.step([g])
    assert_bitwise_equal(a, a_after, "removed param")
    exp = expected_step(b0, g, lr=0.1)
    assert_bitwise_equal(b, exp[0], "new param")
    assert sorted(opt.state) == [0] and opt.state[0]["step"] == 1
    assert_bitwise_equal(opt.state[0]["exp_avg"], exp[1], "new param's exp_avg")


def test_appending_popping_and_moving_params_keep_state_by_identity():
    """Item 2: append / pop / move between groups: each param keeps its own state; indices follow positions."""
    a, b, c = rand(3, seed=1), rand(4, seed=2), rand(5, seed=3)
    opt = adam_c.Adam([{"params": [a, b]}, {"params": [], "lr": 0.5}], lr=0.1)
    opt.step([np.ones(3), np.ones(4)])
    state_b = {k: v.copy() for k, v in opt.state[1].items() if k != "step"}
    opt.param_groups[0]["params"].pop(0)          # a leaves: its state goes at the optimizer's next call
    assert sorted(opt.state) == [0], opt.state    # only b has state; it is now at index 0
    opt.param_groups[1]["params"].append(c)       # c arrives in group 1
    opt.param_groups[0]["params"].append(a)       # a comes back: fresh state
    b0, a0, c0 = b.copy(), a.copy(), c.copy()
    g = [np.full(4, 2.0), np.full(3, 3.0), np.full(5, 4.0)]
    opt.step(g)
    exp_b = expected_step(b0, g[0], (state_b["exp_avg"], state_b["exp_avg_sq"], None), step=2, lr=0.1)
    assert_bitwise_equal(b, exp_b[0], "b")
    assert_bitwise_equal(a, expected_step(a0, g[1], lr=0.1)[0], "a (fresh state)")
    assert_bitwise_equal(c, expected_step(c0, g[2], lr=0.5)[0], "c (its group's lr)")
    assert [opt.state[i]["step"] for i in range(3)] == [2, 1, 1]


def body_replaced_params_then_amsgrad():
    big = [np.ones(1000) for _ in range(4)]
    small = [np.ones(1) for _ in range(4)]
    opt = adam_c.Adam(big, lr=0.1)
    opt.step([np.ones(1000)] * 4)
    opt.param_groups[0]["params"] = small
    opt.param_groups[0]["amsgrad"] = True
    for _ in range(3):
        opt.step([np.ones(1)] * 4)
    assert all(opt.state[i]["step"] == 3 and opt.state[i]["max_exp_avg_sq"].shape == (1,) for i in range(4))
    assert (big[0] == big[1]).all()


def test_replaced_params_then_amsgrad_rebuild(tmp_path):
    """Item 2: replacing the params and then turning amsgrad on used to mix old pointers with new sizes."""
    run_isolated(tmp_path, "body_replaced_params_then_amsgrad")


# ================================================================ 3. dtype / shape changed in place


def body_dtype_changed_in_place():
    for stepped in (False, True):
        p = np.ones(1001, np.float32)
        other = np.ones(7)
        opt = adam_c.Adam([other, p])
        if stepped:
            opt.step([np.ones(7), np.ones(1001, np.float32)])
        before = (p.copy(), other.copy())
        p.dtype = np.float16  # NumPy 2 allows this: 2002 half floats over the same memory
        try:
            opt.step([np.ones(7), np.ones(p.shape, np.float16)])
        except TypeError as exc:
            assert "param_groups[0]['params'][1]" in str(exp := exc) and "float16" in str(exp), exc
        else:
            raise AssertionError("a float16 param was stepped")
        p.dtype = np.float32
        assert np.array_equal(p, before[0]) and np.array_equal(other, before[1])
        opt.step([np.ones(7), np.ones(1001, np.float32)])  # usable again once restored
        assert opt.state[1]["step"] == (2 if stepped else 1)


def test_param_dtype_changed_after_construction(tmp_path):
    """Item 3: p.dtype = np.float16 after construction (or after steps): TypeError naming it, nothing written."""
    run_isolated(tmp_path, "body_dtype_changed_in_place")


def test_param_dtype_reinterpreted_with_state_is_refused():
    p = np.ones(8, np.float32)
    opt = adam_c.Adam([p])
    opt.step([np.ones(8, np.float32)])
    p.dtype = np.float64  # a valid float64 param now, but its state is float32
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\].*dtype"):
        opt.step([np.ones(4)])
    p.dtype = np.float32
    assert opt.state[0]["step"] == 1


def test_param_reshaped_in_place_keeps_stepping_with_its_state():
    """Item 3: a reshape of the held array (same size): the state follows the new shape, values continue."""
    p = rand(12, seed=4)
    opt = adam_c.Adam([p], lr=0.1)
    g = rand(12, seed=5)
    opt.step([g])
    m, v = opt.state[0]["exp_avg"].copy(), opt.state[0]["exp_avg_sq"].copy()
    p0 = p.copy()
    p.shape = (3, 4)
    opt.step([g.reshape(3, 4)])
    exp = expected_step(p0, g, (m, v, None), step=2, lr=0.1)
    assert_bitwise_equal(p.reshape(-1), exp[0], "reshaped param")
    assert opt.state[0]["exp_avg"].shape == (3, 4)
    opt.load_state_dict(opt.state_dict())  # the state matches the param's shape


# ================================================================ 4. read-only params


def test_param_made_read_only_after_construction_is_refused():
    """Item 4: flags.writeable = False after construction (before and after a step): ValueError, not written."""
    for stepped in (False, True):
        p = np.ones(5)
        opt = adam_c.Adam([p])
        if stepped:
            opt.step([np.ones(5)])
        p.flags.writeable = False
        before = p.copy()
        with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\].*writ"):
            opt.step([np.ones(5)])
        assert_bitwise_equal(p, before, "read-only param")
        p.flags.writeable = True
        opt.step([np.ones(5)])


def test_state_buffer_made_read_only_is_refused():
    p = np.ones(5)
    opt = adam_c.Adam([p])
    opt.step([np.ones(5)])
    opt.state[0]["exp_avg"].flags.writeable = False
    with pytest.raises(ValueError, match=r"opt.state\[0\]\['exp_avg'\]"):
        opt.step([np.ones(5)])


def body_pickle5_read_only_buffers():
    params = [np.ones(5), np.ones(3, np.float32)]
    opt = adam_c.Adam(params)
    opt.step([np.ones(5), np.ones(3, np.float32)])
    buffers = []
    data = pickle.dumps(opt, protocol=5, buffer_callback=buffers.append)
    raw = [bytes(b.raw()) for b in buffers]  # immutable bytes: what a read-only mmap or shared memory gives
    snapshot = [bytes(r) for r in raw]
    clone = pickle.loads(data, buffers=raw)
    try:
        clone.step([np.ones(5), np.ones(3, np.float32)])
    except ValueError as exc:
        assert "writ" in str(exc) and "param_groups[0]['params']" in str(exc), exc
    else:
        raise AssertionError("read-only unpickled params were stepped")
    assert raw == snapshot, "immutable bytes were written"
    # the optimizer's own state was copied (writable); with writable params it steps normally
    state = clone.state_dict()
    for g in clone.param_groups:
        g["params"] = [np.array(p) for p in g["params"]]
    clone.load_state_dict(state)
    clone.step([np.ones(5), np.ones(3, np.float32)])
    assert clone.state[0]["step"] == 2


def test_pickle5_read_only_out_of_band_buffers(tmp_path):
    """Item 4: unpickled over read-only out-of-band buffers, the optimizer refuses to step (no write)."""
    run_isolated(tmp_path, "body_pickle5_read_only_buffers")


# ================================================================ 6. fork while another thread is inside step


def body_fork_while_another_thread_steps():
    p = np.ones(1001)
    opt = adam_c.Adam([p], lr=0.1)
    inside, release = threading.Event(), threading.Event()

    def slow_grads():
        inside.set()
        release.wait(30)
        yield np.ones(1001)

    t = threading.Thread(target=lambda: opt.step(slow_grads()))
    t.start()
    assert inside.wait(30)
    pid = os.fork()
    if pid == 0:  # the child: the thread holding the lock does not exist here
        code = 1
        try:
            opt.step([np.ones(1001)])
            code = 0 if opt.state[0]["step"] == 1 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        release.set()
        raise AssertionError("the forked child's step hung on the inherited lock")
    release.set()
    t.join()
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert opt.state[0]["step"] == 1  # the parent's step completed normally


def body_fork_during_c_call_is_refused_or_clean():
    p = np.ones(4_000_001, np.float32)
    opt = adam_c.Adam([p], lr=0.1)
    g = np.full(p.shape, 0.5, np.float32)
    stop = threading.Event()

    def stepper():
        while not stop.is_set():
            opt.step([g])

    t = threading.Thread(target=stepper)
    t.start()
    outcomes = []
    try:
        for _ in range(6):
            time.sleep(0.01)
            pid = os.fork()
            if pid == 0:
                code = 3
                try:
                    opt.step([g])
                    code = 0
                except RuntimeError as exc:
                    code = 4 if "forked" in str(exc) else 5
                finally:
                    os._exit(code)
            outcomes.append(wait_for_child(pid, 30, "a forked child"))
    finally:
        stop.set()
        t.join()
    assert set(outcomes) <= {0, 4}, outcomes


def test_fork_while_another_thread_holds_the_optimizer(tmp_path):
    """Item 6: the fork child gets a fresh lock instead of the one held by a thread it does not have."""
    run_isolated(tmp_path, "body_fork_while_another_thread_steps", timeout=60)


def test_fork_during_another_threads_c_call(tmp_path):
    """Item 6: forked in the middle of another thread's C call, the child either steps (the step had not begun)
    or refuses with RuntimeError (its copy may hold half a step): never hangs."""
    run_isolated(tmp_path, "body_fork_during_c_call_is_refused_or_clean", timeout=120)


# ================================================================ 7. re-entrant calls


def body_reentrant_calls_raise():
    p = np.ones(5)
    opt = adam_c.Adam([p], lr=0.1)
    opt.step([np.ones(5)])
    before = full_snapshot(opt)

    def calls(opt):
        return [lambda: opt.step([np.ones(5)]), lambda: opt.load_state_dict(opt.state_dict()),
                lambda: opt.add_param_group({"params": [np.ones(2)]}), lambda: opt.state_dict(),
                lambda: pickle.dumps(opt), lambda: opt.zero_grad()]

    for k in range(6):
        def generator():
            calls(opt)[k]()
            yield np.ones(5)
        try:
            opt.step(generator())
        except RuntimeError as exc:
            assert "re-entrant" in str(exc), exc
        else:
            raise AssertionError(f"re-entrant call {k} from a grads generator did not raise")

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            opt.load_state_dict(opt.state_dict())
            return np.ones(5)

    class SneakyLr(float):
        def __float__(self):
            opt.add_param_group({"params": [np.ones(2)]})
            return 0.1

    for attempt in (lambda: opt.step([Sneaky()]), "lr"):
        if attempt == "lr":
            opt.param_groups[0]["lr"] = SneakyLr(0.1)
            attempt = lambda: opt.step([np.ones(5)])  # noqa: E731
        try:
            attempt()
        except RuntimeError as exc:
            assert "re-entrant" in str(exc), exc
        else:
            raise AssertionError("re-entrant call did not raise")
    opt.param_groups[0]["lr"] = 0.1

    # a signal handler that steps the optimizer while it is inside step()
    def handler(signum, frame):
        opt.step([np.ones(5)])

    signal.signal(signal.SIGUSR1, handler)

    def signalling():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(3):  # the handler runs at one of these bytecodes
            pass
        yield np.ones(5)

    try:
        opt.step(signalling())
    except RuntimeError as exc:
        assert "re-entrant" in str(exc), exc
    else:
        raise AssertionError("re-entrant call from a signal handler did not raise")
    assert_snapshot_equal(before, full_snapshot(opt), "after the refused re-entrant calls")
    assert len(opt.param_groups) == 1
    opt.step([np.ones(5)])  # the lock was released each time
    assert opt.state[0]["step"] == 2


def test_reentrant_calls_raise_instead_of_deadlocking(tmp_path):
    """Item 7: step/load_state_dict/add_param_group/state_dict/pickle/zero_grad from inside a step (grads
    generator, __array__, __float__, signal handler) raise RuntimeError('re-entrant ...'), nothing changed."""
    run_isolated(tmp_path, "body_reentrant_calls_raise", timeout=60)


def test_reading_state_and_grads_from_inside_a_step_is_allowed():
    p = np.ones(3)
    opt = adam_c.Adam([p])
    opt.grads[0][:] = 1.0
    seen = []

    def generator():
        seen.append((dict(opt.state), [g.copy() for g in opt.grads]))
        yield np.ones(3)

    opt.step(generator())
    assert seen[0][0] == {} and np.array_equal(seen[0][1][0], np.ones(3))


# ================================================================ 9. Ctrl-C right after the C call


def body_interrupt_after_c_call_commits_whole():
    main = threading.main_thread().ident

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, handler)
    adam_c.set_num_threads(1)
    n = 6_000_001
    g = np.full(n, 0.5, np.float32)
    interrupted_after_c = 0
    for attempt in range(6):
        p = np.ones(n, np.float32)
        opt = adam_c.Adam([p], lr=0.1, amsgrad=attempt % 2 == 1)
        ready = threading.Event()

        def grads():
            ready.set()
            yield g

        def send():
            # signal once the C call is writing the params (it starts at element 0 and has millions to go):
            # the handler then runs, and raises, as soon as the step's C call returns
            ready.wait(10)
            deadline = time.monotonic() + 10
            while p[0] == 1.0 and time.monotonic() < deadline:
                time.sleep(0.0001)
            signal.pthread_kill(main, signal.SIGUSR1)

        t = threading.Thread(target=send)
        t.start()
        try:
            opt.step(grads())
        except KeyboardInterrupt:
            interrupted_after_c += bool(p[0] != 1.0)
        while t.is_alive():  # the signal may also land after the step returned
            try:
                t.join()
            except KeyboardInterrupt:
                pass
        stepped = bool(p[0] != 1.0)
        assert (p == p[0]).all(), "half a step"
        if stepped:  # the C call ran: its step is committed whole
            entry = opt.state[0]
            exp = expected_step(np.ones(1, np.float32), np.full(1, 0.5, np.float32), lr=0.1,
                                amsgrad=attempt % 2 == 1)
            assert entry["step"] == 1, entry["step"]
            assert (entry["exp_avg"] == exp[1][0]).all() and (entry["exp_avg_sq"] == exp[2][0]).all()
            assert ("max_exp_avg_sq" in entry) == (attempt % 2 == 1)
        else:
            assert opt.state == {}, "a step that did not run left state behind"
        opt.step([g])  # and it continues
        assert opt.state[0]["step"] == (2 if stepped else 1)
    assert interrupted_after_c >= 3, f"only {interrupted_after_c} interrupts landed after the C call"


def test_ctrl_c_right_after_the_c_call_keeps_the_step(tmp_path):
    """Item 9: a KeyboardInterrupt delivered while the first step's C call runs (so raised right after it) must
    not roll back the new moments: params, moments and step counts stay one consistent step."""
    run_isolated(tmp_path, "body_interrupt_after_c_call_commits_whole", timeout=120)


def body_interrupts_anywhere_keep_steps_whole():
    """Ctrl-C (a one-shot timer's KeyboardInterrupt) at random points of thousands of steps, first steps included:
    afterwards every param and its state are at the same whole step of the sequential run, and the lock is free."""
    armed = [False]

    def handler(signum, frame):
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, handler)
    ref_p = np.ones(1, np.float32)
    ref = adam_c.Adam([ref_p], lr=0.01, amsgrad=True)
    traj = [(np.float32(1.0), np.float32(0.0), np.float32(0.0))]
    for _ in range(40):
        ref.step([np.full(1, 0.5, np.float32)])
        traj.append((ref_p[0], ref.state[0]["exp_avg"][0], ref.state[0]["exp_avg_sq"][0]))
    rng = np.random.default_rng(0)
    grads = [np.full(2001, 0.5, np.float32) for _ in range(3)]
    interrupted = 0
    for it in range(2400):
        if it % 40 == 0:
            params = [np.ones(2001, np.float32) for _ in range(3)]
            opt = adam_c.Adam(params, lr=0.01, amsgrad=True)
        delay = float(rng.uniform(1e-6, 2e-4))
        armed[0] = True
        try:
            signal.setitimer(signal.ITIMER_REAL, delay)
            opt.step(grads)
            armed[0] = False
        except KeyboardInterrupt:
            interrupted += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        state = opt.state
        steps = {e["step"] for e in state.values()} or {0}
        assert len(steps) == 1, f"iteration {it}: step counts differ: {steps}"
        t = steps.pop()
        for i, p in enumerate(params):
            assert (p == traj[t][0]).all(), f"iteration {it}: param {i} is not at step {t}"
            if t:
                assert (state[i]["exp_avg"] == traj[t][1]).all() and (state[i]["exp_avg_sq"] == traj[t][2]).all(), \
                    f"iteration {it}: state[{i}] is not at step {t}"
    assert interrupted > 20, interrupted
    done = threading.Event()
    threading.Thread(target=lambda: (opt.state_dict(), done.set())).start()
    assert done.wait(20), "the optimizer's lock was left taken"


def test_interrupts_at_random_points_keep_every_step_whole(tmp_path):
    """Items 9 and 7: KeyboardInterrupt at random points of steps never leaves half a step or a taken lock."""
    run_isolated(tmp_path, "body_interrupts_anywhere_keep_steps_whole", timeout=120)


# ================================================================ 10. failed steps change nothing; group errors


def test_failed_first_step_with_array_amsgrad_names_it_and_allocates_nothing():
    p = np.ones(3)
    opt = adam_c.Adam([p])
    opt.param_groups[0]["amsgrad"] = np.array([True, False])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['amsgrad'\]"):
        opt.step([np.ones(3)])
    assert opt.state == {} and np.array_equal(p, np.ones(3))


def test_failed_amsgrad_rebuild_step_gains_no_buffers():
    p = np.ones(3)
    opt = adam_c.Adam([{"params": [p]}, {"params": [np.ones(2)], "lr": 0.1}])
    opt.step([np.ones(3), np.ones(2)])
    opt.param_groups[0]["amsgrad"] = True
    opt.param_groups[1]["amsgrad"] = np.array([True, False])
    before = full_snapshot(opt)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['amsgrad'\]"):
        opt.step([np.ones(3), np.ones(2)])
    assert_snapshot_equal(before, full_snapshot(opt), "failed amsgrad-rebuild step")
    assert "max_exp_avg_sq" not in opt.state[0]


@pytest.mark.parametrize("stepped", [False, True])
@pytest.mark.parametrize("edit,exc,match", [
    (lambda o: o.param_groups[0].pop("params"), ValueError, r"param_groups\[0\] has no 'params'"),
    (lambda o: o.param_groups.append({"params": [np.ones(2)]}), ValueError, r"param_groups\[2\].*'lr'"),
    (lambda o: o.param_groups.append("junk"), TypeError, r"param_groups\[2\] must be a dict"),
    (lambda o: o.param_groups[1].__setitem__("params", np.ones(2)), TypeError, r"param_groups\[1\]\['params'\]"),
    (lambda o: o.param_groups[1]["params"].append(np.ones(2, np.int64)), TypeError,
     r"param_groups\[1\]\['params'\]\[1\]"),
    (lambda o: o.param_groups[1]["params"].append(o.param_groups[0]["params"][0]), ValueError,
     r"twice.*param_groups\[0\]\['params'\]\[0\].*param_groups\[1\]\['params'\]\[1\]"),
    (lambda o: setattr(o, "param_groups", tuple(o.param_groups)), TypeError, r"param_groups must be a list"),
], ids=["del-params", "append-raw-group", "append-junk", "params-array", "append-int-param", "append-duplicate",
        "groups-tuple"])
def test_malformed_group_edits_are_named_errors(stepped, edit, exc, match):
    """Item 10: deleted 'params', appended/popped groups, junk: TypeError/ValueError naming the entry (never
    KeyError/IndexError/AttributeError/RuntimeError), and nothing changes."""
    a, b = rand(3, seed=1), rand(4, seed=2)
    opt = adam_c.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}])
    if stepped:
        opt.step([np.ones(3), np.ones(4)])
    before = full_snapshot(opt)
    edit(opt)
    with pytest.raises(exc, match=match):
        opt.step([np.ones(3), np.ones(4)])  # the groups are checked before the grads
    assert np.array_equal(a, before[0][0]) and np.array_equal(b, before[0][1])


def test_popped_group_steps_the_remaining_params():
    a, b = rand(3, seed=1), rand(4, seed=2)
    opt = adam_c.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}])
    opt.step([np.ones(3), np.ones(4)])
    b_state = {k: v.copy() for k, v in opt.state[1].items() if k != "step"}
    a_before, b_before = a.copy(), b.copy()
    opt.param_groups.pop(0)
    opt.step([np.ones(4)])
    assert_bitwise_equal(a, a_before, "param of the popped group")
    exp = expected_step(b_before, np.ones(4), (b_state["exp_avg"], b_state["exp_avg_sq"], None), step=2, lr=0.1)
    assert_bitwise_equal(b, exp[0], "remaining param")
    assert sorted(opt.state) == [0] and opt.state[0]["step"] == 2


# ================================================================ 13. state_dict right after amsgrad is turned on


def test_state_dict_after_turning_amsgrad_on_reloads():
    params = [rand(3, seed=1), rand(2, np.float32, seed=2)]
    opt = adam_c.Adam(params, lr=0.1)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    opt.param_groups[0]["amsgrad"] = True
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    twin = adam_c.Adam([p.copy() for p in params], lr=0.1)
    twin.load_state_dict(sd)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    twin.step([np.ones(3), np.ones(2, np.float32)])
    for x, y in zip(flat_params(opt), flat_params(twin)):
        assert_bitwise_equal(x, y, "reloaded after amsgrad was turned on")
    assert_bitwise_equal(opt.state[0]["max_exp_avg_sq"], twin.state[0]["max_exp_avg_sq"], "max_exp_avg_sq")


# ================================================================ 14. plain group values, untorn snapshots


def test_state_dict_group_values_are_plain_python_and_json_serialisable():
    p = np.ones(3)
    opt = adam_c.Adam([p])
    g = opt.param_groups[0]
    g.update(lr=np.float32(0.25), eps=np.array(1e-6), weight_decay=Fraction(1, 4), amsgrad=np.bool_(True),
             betas=(np.float64(0.5), np.array(0.75)), maximize=0, note="kept")
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    saved = sd["param_groups"][0]
    assert saved == {"lr": 0.25, "eps": 1e-6, "weight_decay": 0.25, "amsgrad": True, "betas": (0.5, 0.75),
                     "maximize": False, "decoupled_weight_decay": False, "note": "kept", "params": [0]}
    for key in ("lr", "eps", "weight_decay", "amsgrad", "maximize", "betas"):
        value = saved[key]
        assert type(value) in (float, bool, tuple), (key, type(value))
    text = json.dumps({"param_groups": sd["param_groups"],
                       "state": {i: {"step": e["step"]} for i, e in sd["state"].items()}})
    assert '"lr": 0.25' in text
    assert g["weight_decay"] == Fraction(1, 4)  # the live group is the user's: not rewritten


SNAP_N = 400_001


def _snapshot_consistent(params, state, traj, what):
    """Every array uniform (a torn copy mixes two steps) and equal to the sequential run at that step; returns it."""
    steps = {e["step"] for e in state.values()}
    assert len(steps) == 1, f"{what}: step counts differ: {steps}"
    t = steps.pop()
    for i, p in enumerate(params or ()):
        assert (p == p.flat[0]).all(), f"{what}: param {i} mixes two steps"
        assert p.flat[0] == traj[t][0], f"{what}: param {i} is not at step {t}"
    for i, e in state.items():
        for k, j in (("exp_avg", 1), ("exp_avg_sq", 2)):
            arr = e[k]
            assert (arr == arr.flat[0]).all(), f"{what}: state[{i}][{k}] mixes two steps"
            assert arr.flat[0] == traj[t][j], f"{what}: state[{i}][{k}] is not at step {t}"
    return t


@pytest.mark.parametrize("how", ["state_dict", "pickle", "deepcopy"])
def test_snapshots_from_another_thread_are_never_torn(how):
    """Item 14: state_dict(), pickle and deepcopy taken while another thread steps hold one consistent step."""
    adam_c.set_num_threads(1)
    try:
        n_steps = 300
        ref_p = np.ones(1, np.float32)
        ref = adam_c.Adam([ref_p], lr=0.01)
        traj = [(1.0, 0.0, 0.0)]
        for _ in range(n_steps):
            ref.step([np.full(1, 0.5, np.float32)])
            traj.append((ref_p[0], ref.state[0]["exp_avg"][0], ref.state[0]["exp_avg_sq"][0]))
        params = [np.ones(SNAP_N, np.float32) for _ in range(3)]
        opt = adam_c.Adam(params, lr=0.01)
        grads = [np.full(SNAP_N, 0.5, np.float32) for _ in params]
        opt.step(grads)
        started, done = threading.Event(), threading.Event()
        seen = []

        def stepper():
            started.wait(30)
            for _ in range(n_steps - 1):  # until enough snapshots were taken during training
                if len(seen) >= 25:
                    break
                opt.step(grads)
                if len(seen) < 5:
                    time.sleep(0.001)  # a busy machine may not schedule the snapshot thread: give it a turn
            done.set()

        t = threading.Thread(target=stepper)
        t.start()
        started.set()
        while not done.is_set():
            if how == "state_dict":
                sd = opt.state_dict()
                params_now = None
                state = sd["state"]
            else:
                clone = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
                params_now, state = flat_params(clone), clone.state
            seen.append(_snapshot_consistent(params_now, state, traj, how))
        t.join()
        during = {t_ for t_ in seen if t_ < opt.state[0]["step"]}
        assert len(during) >= 3, f"too few snapshots taken during training: {seen}"
    finally:
        adam_c.set_num_threads(None)


# ================================================================ 15. the error contract


def _trained():
    params = [rand(3, seed=1), rand(2, np.float32, seed=2)]
    opt = adam_c.Adam(params, lr=0.1)
    opt.step([np.ones(3), np.ones(2, np.float32)])
    return opt


@pytest.mark.parametrize("make,exc,match", [
    (lambda t: {"step": t.tensor([1.0, 2.0])}, ValueError, r"\['step'\].*single number"),
    (lambda t: {"step": t.empty((), device="meta")}, TypeError, r"\['step'\].*meta"),
    (lambda t: {"exp_avg": t.empty(3, device="meta", dtype=t.float64)}, TypeError, r"\['exp_avg'\].*meta"),
    (lambda t: {"exp_avg": t.ones(3, dtype=t.complex128).conj()}, TypeError, r"\['exp_avg'\]"),
    (lambda t: {"step": t.tensor(3.0 + 1j).conj()}, TypeError, r"\['step'\]"),
], ids=["step-2-elements", "step-meta", "exp_avg-meta", "exp_avg-conj", "step-conj"])
def test_load_state_dict_with_odd_tensors_names_the_entry(make, exc, match):
    t = pytest.importorskip("torch")
    opt = _trained()
    sd = opt.state_dict()
    sd["state"][0].update(make(t))
    before = full_snapshot(opt)
    with pytest.raises(exc, match=r"state_dict\['state'\]\[0\]" + match):
        opt.load_state_dict(sd)
    assert_snapshot_equal(before, full_snapshot(opt), "after a refused load")


def test_load_state_dict_with_neg_bit_tensor_reads_its_values():
    t = pytest.importorskip("torch")
    opt = _trained()
    sd = opt.state_dict()
    values = sd["state"][0]["exp_avg"].copy()
    sd["state"][0]["exp_avg"] = t._neg_view(t.tensor(-values))
    sd["state"][0]["step"] = t._neg_view(t.tensor(-1.0))  # reads as 1.0
    opt.load_state_dict(sd)
    assert_bitwise_equal(opt.state[0]["exp_avg"], values, "neg-bit tensor's values")
    assert opt.state[0]["step"] == 1


@pytest.mark.parametrize("kw,exc,match", [
    (dict(betas=np.array(0.9)), TypeError, r"^betas must be a pair"),
    (dict(betas={0.9, 0.99}), TypeError, r"^betas must be a pair"),
    (dict(betas=np.array([[0.9, 0.99]])), TypeError, r"^betas must be a pair"),
])
def test_bad_betas_messages_name_betas(kw, exc, match):
    with pytest.raises(exc, match=match):
        adam_c.Adam([np.ones(2)], **kw)


def test_betas_as_list_and_1d_array_still_accepted():
    opt = adam_c.Adam([np.ones(2)], betas=np.array([0.5, 0.75]))
    assert opt.defaults["betas"] == (0.5, 0.75) and type(opt.defaults["betas"][0]) is float
    assert adam_c.Adam([np.ones(2)], betas=[0.5, 0.75]).defaults["betas"] == (0.5, 0.75)


class IntFloat(float):
    def __float__(self):
        return 1  # an int: float() raises TypeError without naming anything


@pytest.mark.parametrize("key", ["lr", "eps", "weight_decay"])
def test_float_returning_int_names_the_argument(key):
    with pytest.raises(TypeError, match=rf"^{key} must be a real number"):
        adam_c.Adam([np.ones(2)], **{key: IntFloat(0.5)})
    opt = adam_c.Adam([np.ones(2)])
    opt.param_groups[0][key] = IntFloat(0.5)
    with pytest.raises(TypeError, match=rf"param_groups\[0\]\['{key}'\] must be a real number"):
        opt.step([np.ones(2)])


@pytest.mark.parametrize("which", ["exp_avg", "exp_avg_sq", "grads"])
def test_add_param_group_refuses_state_and_grads_buffers(which):
    """Item 15: a live state buffer or opt.grads buffer offered as a new param: ValueError naming both."""
    opt = _trained()
    buf = opt.grads[1] if which == "grads" else opt.state[1][which]
    name = r"opt\.grads\[1\]" if which == "grads" else rf"opt\.state\[1\]\['{which}'\]"
    before = full_snapshot(opt)
    with pytest.raises(ValueError, match=rf"(param_groups\[1\]\['params'\]\[0\].*{name}|{name}.*param_groups)"):
        opt.add_param_group({"params": [buf]})
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [buf[1:]]})  # a view of it, too
    assert len(opt.param_groups) == 1
    assert_snapshot_equal(before, full_snapshot(opt), "after a refused add_param_group")


def test_param_appended_to_a_group_may_not_be_a_state_buffer():
    opt = _trained()
    opt.param_groups[0]["params"].append(opt.state[0]["exp_avg_sq"])
    with pytest.raises(ValueError, match=r"opt\.state\[0\]\['exp_avg_sq'\]"):
        opt.step([np.ones(3), np.ones(2, np.float32), np.ones(3)])


# ================================================================ issue 11: byte order, a dict of grads


def test_byte_swapped_param_is_a_byte_order_error():
    swapped = np.zeros(4, dtype=np.dtype(np.float64).newbyteorder())
    with pytest.raises(ValueError, match=r"params\[0\] must be in native byte order.*newbyteorder\('='\)"):
        adam_c.Adam([swapped])
    grad = np.zeros(4, dtype=np.dtype(np.float32).newbyteorder())
    with pytest.raises(ValueError, match=r"grad must be in native byte order"):
        adam_c.adam_step(np.zeros(4, np.float32), grad, np.zeros(4, np.float32), np.zeros(4, np.float32), step=1,
                         lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)


def test_grads_as_a_dict_is_refused_as_not_a_sequence():
    opt = adam_c.Adam([np.ones(3)])
    with pytest.raises(TypeError, match=r"^grads must be a sequence \(a list or tuple aligned with the params"):
        opt.step({"w": np.ones(3)})
    with pytest.raises(TypeError, match=r"^grads must be a sequence"):
        opt.step({np.float64(1.0)})
    assert opt.state == {}
