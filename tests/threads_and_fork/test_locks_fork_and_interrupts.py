"""adam_c.Adam under threads, fork and Ctrl-C: every step whole, no lock left taken, no freed memory read.

Grads held through the C call, fork while another thread steps, re-entrant calls, KeyboardInterrupt anywhere in
a step, and snapshots taken while another thread steps."""
import copy
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import adam_c
from _forking import wait_for_child
from _numpy_steps import assert_snapshot_equal, expected_step, flat_params, full_snapshot, run_isolated

# ================================================================ grads held for the whole C call

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
    """Every grad C reads is held until the C call returns (a sequence handing out fresh arrays)."""
    run_isolated(tmp_path, "body_grads_fresh_on_each_access")


def test_grads_list_mutated_by_another_thread_during_steps(tmp_path):
    """Another thread replacing grads[0] in the caller's list while steps run cannot free what C reads."""
    run_isolated(tmp_path, "body_grads_list_replaced_by_another_thread")


# ================================================================ fork while another thread is inside step


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
    """The fork child gets a fresh lock instead of the one held by a thread it does not have."""
    run_isolated(tmp_path, "body_fork_while_another_thread_steps", timeout=60)


def test_fork_during_another_threads_c_call(tmp_path):
    """Forked in the middle of another thread's C call, the child either steps (the step had not begun)
    or refuses with RuntimeError (its copy may hold half a step): never hangs."""
    run_isolated(tmp_path, "body_fork_during_c_call_is_refused_or_clean", timeout=120)


# ================================================================ re-entrant calls


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
    """step/load_state_dict/add_param_group/state_dict/pickle/zero_grad from inside a step (grads
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


# ================================================================ Ctrl-C right after the C call


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
    """A KeyboardInterrupt delivered while the first step's C call runs (so raised right after it) must
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
    """KeyboardInterrupt at random points of steps never leaves half a step or a taken lock."""
    run_isolated(tmp_path, "body_interrupts_anywhere_keep_steps_whole", timeout=120)


# ================================================================ untorn snapshots
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
    """state_dict(), pickle and deepcopy taken while another thread steps hold one consistent step."""
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
