"""test_schedules.py: adam_c.schedules' values (against torch.optim.lr_scheduler) and schedules as an optimizer lr."""
import math
import pickle
import warnings

import numpy as np
import pytest

import adam_c
from adam_c import schedules as S

STEPS = 41  # odd, past every total_steps below so the held tail is covered too


def torch_lrs(lr, make_scheduler, steps=STEPS):
    """torch's lr for updates 1..steps: the group's lr before the (t-1)-th scheduler.step()."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(torch.optim.lr_scheduler, opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's internal step(0) at a milestone warns on some versions
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            scheduler.step()
    return out


def warmup(lr_sched, opt, w):
    if w == 1:  # a warmup of one step is the full lr (LinearLR needs total_iters >= 1)
        return lr_sched.LambdaLR(opt, lambda e: 1.0)
    return lr_sched.LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=w - 1)


def then(lr_sched, opt, w, decay):
    """torch's composition that adam_c's warmup + decay reproduces."""
    if w == 0:
        return decay
    return lr_sched.SequentialLR(opt, [warmup(lr_sched, opt, w), decay], milestones=[w])


def assert_close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("w", [0, 2, 5])
def test_constant_with_warmup_matches_torch(w):
    s = S.constant_with_warmup(3e-3, warmup_steps=w)
    ours = [s(t) for t in range(1, STEPS + 1)]
    if w == 0:
        assert ours == [3e-3] * STEPS
        return
    assert_close(ours, torch_lrs(3e-3, lambda L, o: warmup(L, o, w)))
    assert ours[w - 1] == 3e-3 and ours[0] == pytest.approx(3e-3 / w)


@pytest.mark.parametrize("w,total,min_lr", [(0, 17, 0.0), (3, 23, 1e-4), (7, 9, 5e-4)])
def test_cosine_with_warmup_matches_torch(w, total, min_lr):
    s = S.cosine_with_warmup(1e-2, warmup_steps=w, total_steps=total, min_lr=min_lr)
    ours = [s(t) for t in range(1, STEPS + 1)]
    theirs = torch_lrs(1e-2, lambda L, o: then(L, o, w, L.CosineAnnealingLR(o, T_max=total - w, eta_min=min_lr)))
    # torch's cosine is periodic past T_max; adam_c holds min_lr from step total + 1 on
    assert_close(ours[:total + 1], theirs[:total + 1])
    assert ours[total:] == [pytest.approx(min_lr, abs=1e-18)] * (STEPS - total)
    assert max(ours) == pytest.approx(1e-2)


@pytest.mark.parametrize("w,total,end_lr", [(0, 13, 0.0), (4, 19, 2e-4), (1, 2, 1e-3)])
def test_linear_decay_matches_torch(w, total, end_lr):
    s = S.linear_decay(2e-3, total_steps=total, warmup_steps=w, end_lr=end_lr)
    ours = [s(t) for t in range(1, STEPS + 1)]
    decay = lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=end_lr / 2e-3, total_iters=total - w)
    theirs = torch_lrs(2e-3, lambda L, o: then(L, o, w, decay(L, o)))
    assert_close(ours, theirs)
    assert ours[-1] == pytest.approx(end_lr, abs=1e-18)


@pytest.mark.parametrize("w,step_size,gamma", [(0, 5, 0.5), (3, 7, 0.1), (6, 1, 0.9)])
def test_step_decay_matches_torch(w, step_size, gamma):
    s = S.step_decay(1e-2, step_size=step_size, gamma=gamma, warmup_steps=w)
    ours = [s(t) for t in range(1, STEPS + 1)]
    assert_close(ours, torch_lrs(1e-2, lambda L, o: then(L, o, w, L.StepLR(o, step_size=step_size, gamma=gamma))))


@pytest.mark.parametrize("w,gamma", [(0, 0.9), (5, 0.97)])
def test_exponential_decay_matches_torch(w, gamma):
    s = S.exponential_decay(1e-2, gamma=gamma, warmup_steps=w)
    ours = [s(t) for t in range(1, STEPS + 1)]
    assert_close(ours, torch_lrs(1e-2, lambda L, o: then(L, o, w, L.ExponentialLR(o, gamma=gamma))))


def test_schedules_hold_their_end_values_far_out():
    assert S.cosine_with_warmup(1.0, warmup_steps=2, total_steps=5, min_lr=0.25)(10**12) == 0.25
    assert S.linear_decay(1.0, total_steps=5, end_lr=0.5)(10**12) == 0.5
    assert S.step_decay(1.0, step_size=1, gamma=0.5)(5000) == 0.0
    with pytest.raises(ValueError, match="largest float"):  # a growing lr past the largest float: an error, not inf
        S.exponential_decay(1.0, gamma=2.0)(10**6)


# ---------------------------------------------------------------- argument validation

GOOD = {
    S.constant_with_warmup: dict(lr=1e-3, warmup_steps=3),
    S.cosine_with_warmup: dict(lr=1e-3, warmup_steps=3, total_steps=11, min_lr=0.0),
    S.linear_decay: dict(lr=1e-3, total_steps=11, warmup_steps=3, end_lr=0.0),
    S.step_decay: dict(lr=1e-3, step_size=3, gamma=0.5, warmup_steps=3),
    S.exponential_decay: dict(lr=1e-3, gamma=0.9, warmup_steps=3),
}
BAD_VALUES = {  # argument -> [(value, exception)]
    "lr": [(-1e-3, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1e-3", TypeError),
           (True, TypeError), (None, TypeError)],
    "warmup_steps": [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
    "total_steps": [(0, ValueError), (3, ValueError), (2.0, TypeError), (None, TypeError)],
    "min_lr": [(-1.0, ValueError), (math.nan, ValueError), ("0", TypeError)],
    "end_lr": [(-1.0, ValueError), (math.inf, ValueError), ([0.0], TypeError)],
    "step_size": [(0, ValueError), (-2, ValueError), (2.5, TypeError)],
    "gamma": [(0.0, ValueError), (-0.5, ValueError), (math.nan, ValueError), ("0.5", TypeError)],
}


@pytest.mark.parametrize("make", list(GOOD), ids=lambda f: f.__name__)
def test_bad_arguments_are_named(make):
    checked = 0
    for arg, cases in BAD_VALUES.items():
        if arg not in GOOD[make]:
            continue
        for value, exc in cases:
            kwargs = dict(GOOD[make], **{arg: value})
            lr = kwargs.pop("lr")
            with pytest.raises(exc, match=arg):
                make(lr, **kwargs)
            checked += 1
    assert checked >= 8
    lr = GOOD[make]["lr"]
    s = make(lr, **{k: v for k, v in GOOD[make].items() if k != "lr"})
    for value, exc in [(0, ValueError), (-3, ValueError), (1.0, TypeError), (True, TypeError), ("2", TypeError)]:
        with pytest.raises(exc, match="step"):
            s(value)
    assert s(np.int64(3)) == s(3) == lr  # end of the warmup
    assert s == make(lr, **{k: v for k, v in GOOD[make].items() if k != "lr"})
    assert pickle.loads(pickle.dumps(s)) == s
    assert repr(s).startswith(make.__name__ + "(")


# ---------------------------------------------------------------- a schedule as an optimizer's lr

def problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(37).astype(np.float32), rng.standard_normal((3, 5))]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(15)]
    return params, grads


class Counting:
    """A schedule that records the steps it was called with."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, step):
        self.calls.append(step)
        return self.inner(step)


@pytest.mark.parametrize("cls", [adam_c.Adam, adam_c.AdamW])
def test_schedule_lr_equals_setting_lr_by_hand(cls):
    sched = S.cosine_with_warmup(1e-2, warmup_steps=3, total_steps=11, min_lr=1e-4)
    counting = Counting(sched)
    params_a, grads = problem()
    params_b = [p.copy() for p in params_a]
    opt_a = cls(params_a, lr=counting, amsgrad=True)
    opt_b = cls(params_b, lr=0.0, amsgrad=True)
    for t, g in enumerate(grads, start=1):
        opt_a.step(g)
        opt_b.param_groups[0]["lr"] = sched(t)
        opt_b.step(g)
    assert counting.calls == list(range(1, len(grads) + 1))  # once per step, with the step about to be taken
    for a, b in zip(params_a, params_b):
        assert a.tobytes() == b.tobytes()
    assert opt_a.param_groups[0]["lr"] is counting  # the group keeps the schedule, not its value


def test_per_group_schedules_and_skipped_params():
    params, grads = problem(1)
    fixed = [p.copy() for p in params]
    first, second = Counting(S.step_decay(1e-2, step_size=2, gamma=0.5)), Counting(S.constant_with_warmup(1e-3,
                                                                                      warmup_steps=4))
    opt = adam_c.Adam([{"params": [params[0]], "lr": first}, {"params": [params[1]], "lr": second}])
    ref = adam_c.Adam([{"params": [fixed[0]], "lr": 0.0}, {"params": [fixed[1]], "lr": 0.0}])
    for t, g in enumerate(grads[:7], start=1):
        skip_second = t in (2, 3)  # the second group's param gets no grad: its step count stays
        step_grads = [g[0], None if skip_second else g[1]]
        opt.step(step_grads)
        ref.param_groups[0]["lr"] = first.inner(t)
        ref.param_groups[1]["lr"] = second.inner(second.calls[-1])
        ref.step(step_grads)
    assert first.calls == [1, 2, 3, 4, 5, 6, 7]
    assert second.calls == [1, 2, 2, 2, 3, 4, 5]
    for a, b in zip(params, fixed):
        assert a.tobytes() == b.tobytes()


def test_add_param_group_with_schedule_and_resume_from_state_dict():
    sched = S.linear_decay(5e-3, total_steps=9, warmup_steps=2, end_lr=1e-4)
    params, grads = problem(2)
    straight = [p.copy() for p in params]
    whole = adam_c.Adam([straight[0]], lr=1e-3)
    whole.add_param_group({"params": [straight[1]], "lr": sched})
    for g in grads:
        whole.step(g)

    first = adam_c.Adam([params[0]], lr=1e-3)
    first.add_param_group({"params": [params[1]], "lr": sched})
    for g in grads[:6]:
        first.step(g)
    saved = pickle.loads(pickle.dumps(first.state_dict()))  # the schedule travels with the groups
    assert saved["param_groups"][1]["lr"] == sched
    resumed = adam_c.Adam([params[0]], lr=1e-3)
    resumed.add_param_group({"params": [params[1]], "lr": 0.5})
    resumed.load_state_dict(saved)
    for g in grads[6:]:
        resumed.step(g)
    for a, b in zip(params, straight):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("bad,exc", [(lambda t: -1.0, ValueError), (lambda t: math.nan, ValueError),
                                     (lambda t: "fast", TypeError), (lambda t: None, TypeError)])
def test_bad_schedule_value_is_named_and_changes_nothing(bad, exc):
    params, grads = problem(3)
    opt = adam_c.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": bad}])
    before = [p.copy() for p in params]
    with pytest.raises(exc, match=r"param_groups\[1\]\['lr'\]\(1\)"):
        opt.step(grads[0])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before))
    assert opt.state == {}


def test_schedule_that_raises_changes_nothing():
    def broken(step):
        raise RuntimeError("schedule broke")

    params, grads = problem(4)
    opt = adam_c.Adam(params, lr=1e-3)
    opt.step(grads[0])
    before = [p.copy() for p in params]
    opt.param_groups[0]["lr"] = broken
    with pytest.raises(RuntimeError, match="schedule broke"):
        opt.step(grads[1])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(params, before))
    assert [s["step"] for s in opt.state.values()] == [1, 1]


@pytest.mark.parametrize("bad", [float, np.float32, "0.1"])
def test_lr_that_is_neither_number_nor_schedule_is_refused(bad):
    with pytest.raises(TypeError, match="lr"):
        adam_c.Adam([np.zeros(3)], lr=bad)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\]"):
        adam_c.Adam([{"params": [np.zeros(3)], "lr": bad}])


def test_functional_form_refuses_a_schedule():
    buffers = [np.zeros(5, np.float32) for _ in range(4)]
    with pytest.raises(TypeError, match="lr"):
        adam_c.adam_step(*buffers, step=1, lr=S.constant_with_warmup(1e-3), beta1=0.9, beta2=0.999, eps=1e-8)


def test_pickled_optimizer_keeps_its_schedule():
    params, grads = problem(5)
    opt = adam_c.Adam(params, lr=S.exponential_decay(1e-2, gamma=0.5, warmup_steps=1))
    opt.step(grads[0])
    clone = pickle.loads(pickle.dumps(opt))
    opt.step(grads[1])
    clone.step(grads[1])
    for a, b in zip(opt._params, clone._params):
        assert a.tobytes() == b.tobytes()
