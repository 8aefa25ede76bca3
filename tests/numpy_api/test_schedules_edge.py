"""Schedules at their edges: called once per group per step (plan rebuilt or not), growing schedules, and where a
schedule is not an lr (adam_c.torch, torch.optim checkpoints)."""
import io
import math

import numpy as np
import pytest

import adam_c
from adam_c import schedules


class Counting:
    """A schedule that records the steps it is called with."""

    def __init__(self, lr=0.01):
        self.lr, self.calls = lr, []

    def __call__(self, step):
        self.calls.append(step)
        return self.lr


def _grads(opt):
    return [np.ones_like(p) for g in opt.param_groups for p in g["params"]]


def test_called_once_per_step_when_amsgrad_is_switched_on():
    schedule = Counting()
    opt = adam_c.Adam([np.ones(8, np.float32)], lr=schedule)
    opt.step(_grads(opt))
    opt.param_groups[0]["amsgrad"] = True  # the plan is outdated: max_exp_avg_sq buffers, a rebuild
    opt.step(_grads(opt))
    assert schedule.calls == [1, 2]


def test_called_once_per_step_when_a_param_is_reshaped():
    schedule = Counting()
    p = np.ones(8, np.float32)
    opt = adam_c.Adam([p], lr=schedule)
    opt.step([np.ones(8, np.float32)])
    p.shape = (2, 4)
    opt.step([np.ones((2, 4), np.float32)])
    assert schedule.calls == [1, 2]


def test_called_once_per_group_with_the_step_of_edited_groups():
    """Groups edited since the last step: each schedule is called once, with the step its group is about to take
    (the largest count among its current params, carried by identity as the rebuilt plan carries them)."""
    first, second = Counting(), Counting()
    a, b, c = (np.ones(4, np.float32) for _ in range(3))
    opt = adam_c.Adam([{"params": [a], "lr": first}, {"params": [b], "lr": second}])
    for _ in range(3):
        opt.step(_grads(opt))
    opt.param_groups[1]["params"].insert(0, c)  # b moves to position 1 of group 1, c is new
    opt.step(_grads(opt))
    assert first.calls == [1, 2, 3, 4] and second.calls == [1, 2, 3, 4]
    opt.param_groups.reverse()  # the groups swap places: their params keep their counts
    opt.step(_grads(opt))
    assert first.calls[-1] == 5 and second.calls[-1] == 5
    assert len(first.calls) == 5 and len(second.calls) == 5


def test_a_failed_schedule_changes_nothing_and_is_not_retried():
    calls = []

    def failing(step):
        calls.append(step)
        raise ValueError("no lr today")
    p = np.ones(4, np.float32)
    opt = adam_c.Adam([p], lr=failing)
    with pytest.raises(ValueError, match="no lr today"):
        opt.step([np.ones(4, np.float32)])
    assert calls == [1] and np.array_equal(p, np.ones(4, np.float32)) and not opt.state


# ---------------------------------------------------------------- gamma > 1

@pytest.mark.parametrize("make", [
    pytest.param(lambda: schedules.step_decay(0.1, step_size=1, gamma=2.0), id="step_decay"),
    pytest.param(lambda: schedules.exponential_decay(0.1, gamma=2.0), id="exponential_decay"),
])
def test_growing_schedules_raise_a_clear_error_instead_of_overflowing(make):
    schedule = make()
    assert schedule(1000) == 0.1 * 2.0 ** 999  # still a float: torch's closed form, exactly
    for step in (1026, 5000, 10**6):
        with pytest.raises(ValueError, match=r"gamma \*\* .*larger than the largest float") as info:
            schedule(step)
        assert not isinstance(info.value, OverflowError)
    assert schedules.step_decay(0.0, step_size=1, gamma=2.0)(10**6) == 0.0  # 0 stays 0
    assert schedules.exponential_decay(0.1, gamma=0.5)(10**6) == 0.0  # decays to 0, no error


def test_a_growing_schedule_past_the_largest_float_fails_the_step_cleanly():
    p = np.ones(4, np.float32)
    opt = adam_c.Adam([p], lr=schedules.exponential_decay(1e-3, gamma=1.5))
    opt.step([np.ones(4, np.float32)])
    sd = opt.state_dict()
    sd["state"][0]["step"] = 5000
    opt.load_state_dict(sd)
    before = p.copy()
    with pytest.raises(ValueError, match="largest float"):
        opt.step([np.ones(4, np.float32)])
    assert np.array_equal(p, before) and opt.state[0]["step"] == 5000
    assert math.isfinite(schedules.exponential_decay(1e-3, gamma=1.5)(1000))


# ---------------------------------------------------------------- adam_c.torch and torch checkpoints

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402


def test_adam_c_torch_refuses_a_schedule_lr_naming_lr():
    schedule = schedules.cosine_with_warmup(0.1, warmup_steps=2, total_steps=10)
    p = torch.ones(4)
    with pytest.raises(TypeError, match=r"^lr must be a float or a 1-element Tensor.*lr_scheduler"):
        at.Adam([p], lr=schedule)
    opt = at.Adam([p], lr=0.1)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['lr'\]"):
        opt.add_param_group({"params": [torch.ones(3)], "lr": schedule})
    assert len(opt.param_groups) == 1
    opt.param_groups[0]["lr"] = schedule  # edited in place: the next step names it and changes nothing
    p.grad = torch.ones(4)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\]"):
        opt.step()
    assert torch.equal(p, torch.ones(4)) and not opt.state


def test_to_torch_state_dict_writes_a_schedules_value_for_the_next_step():
    schedule = schedules.cosine_with_warmup(0.1, warmup_steps=2, total_steps=10)
    p = np.ones(4, np.float32)
    opt = adam_c.Adam([p], lr=schedule)
    for _ in range(3):
        opt.step([np.ones(4, np.float32)])
    sd = adam_c.to_torch_state_dict(opt.state_dict())
    lr = sd["param_groups"][0]["lr"]
    assert type(lr) is float and lr == schedule(4)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)  # a schedule object would be refused here
    q = torch.ones(4)
    topt = torch.optim.Adam([q])
    topt.load_state_dict(loaded)
    q.grad = torch.ones(4)
    topt.step()
    assert topt.param_groups[0]["lr"] == schedule(4)
    never = adam_c.Adam([np.ones(4, np.float32)], lr=schedule)  # no state yet: the first step's value
    assert adam_c.to_torch_state_dict(never.state_dict())["param_groups"][0]["lr"] == schedule(1)
