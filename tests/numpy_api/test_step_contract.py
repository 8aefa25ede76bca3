"""Small contracts of a step, the same in both front-ends: the norm of an empty step, dict-subclass groups, the
largest step count, and adam_step's argument names in its errors."""
from collections import OrderedDict

import numpy as np
import pytest

import adam_c
from adam_c import _validation

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402


# ---------------------------------------------------------------- last_grad_norm of a step with no elements

def test_numpy_the_grad_norm_of_a_step_without_elements_is_zero():
    """torch.nn.utils.clip_grad_norm_ of no grads is 0, not NaN."""
    opt = adam_c.Adam([np.ones(4, np.float32)])
    opt.step([None], max_grad_norm=1.0)
    assert opt.last_grad_norm == 0.0
    empty = adam_c.Adam([np.ones(0, np.float32), np.ones((3, 0), np.float32)])
    empty.step([np.ones(0, np.float32), np.ones((3, 0), np.float32)], max_grad_norm=1.0)
    assert empty.last_grad_norm == 0.0
    assert float(torch.nn.utils.clip_grad_norm_([], 1.0)) == 0.0


def test_torch_the_grad_norm_of_a_step_without_elements_is_zero():
    p = torch.ones(4)
    opt = at.Adam([p])
    opt.step(max_grad_norm=1.0)  # no grads at all
    assert opt.last_grad_norm == 0.0
    z = torch.ones(0)
    zopt = at.Adam([z])
    z.grad = torch.ones(0)
    zopt.step(max_grad_norm=1.0)
    assert zopt.last_grad_norm == 0.0


# ---------------------------------------------------------------- a group replaced by a dict subclass

def test_numpy_a_group_replaced_by_an_ordered_dict_steps():
    p, q = np.ones(8, np.float32), np.ones(8, np.float32)
    a, b = adam_c.Adam([p], lr=0.1), adam_c.Adam([q], lr=0.1)
    for opt in (a, b):
        opt.step([np.ones(8, np.float32)])
    a.param_groups[0] = OrderedDict(a.param_groups[0])
    for _ in range(2):
        a.step([np.full(8, 0.5, np.float32)])
        b.step([np.full(8, 0.5, np.float32)])
    assert np.array_equal(p, q) and a.state[0]["step"] == 3


def test_torch_a_group_replaced_by_an_ordered_dict_steps():
    p, q = torch.ones(8), torch.ones(8)
    a, b = at.Adam([p], lr=0.1), at.Adam([q], lr=0.1)
    a.param_groups[0] = OrderedDict(a.param_groups[0])
    for _ in range(2):
        p.grad, q.grad = torch.full((8,), 0.5), torch.full((8,), 0.5)
        a.step()
        b.step()
    assert torch.equal(p, q)


# ---------------------------------------------------------------- one largest step count

def test_one_step_limit_in_both_front_ends():
    big = 4_200_000_000_000_000_000  # above the 4.0e18 the torch front-end once stopped at, below 2**62 - 1
    p = np.ones(4, np.float32)
    nopt = adam_c.Adam([p])
    nopt.step([np.ones(4, np.float32)])
    sd = nopt.state_dict()
    sd["state"][0]["step"] = big
    nopt.load_state_dict(sd)
    nopt.step([np.ones(4, np.float32)])
    assert nopt.state[0]["step"] == big + 1

    t = torch.ones(4)
    topt = at.Adam([t])
    t.grad = torch.ones(4)
    topt.step()
    topt.state[t]["step"] = torch.tensor(float(big), dtype=torch.float64)
    topt.step()
    assert float(topt.state[t]["step"]) == float(big + 1)

    topt.state[t]["step"] = torch.tensor(2.0**62, dtype=torch.float64)  # one more would pass 2**62 - 1
    before = t.clone()
    with pytest.raises(ValueError, match=r"'step'.*2\*\*62 - 1"):
        topt.step()
    assert torch.equal(t, before)
    sd["state"][0]["step"] = 2**62
    with pytest.raises(ValueError, match=r"2\*\*62 - 1"):
        nopt.load_state_dict(sd)
    assert _validation.MAX_STEP == 2**62 - 1  # the one constant both use


# ---------------------------------------------------------------- adam_step's errors

@pytest.mark.parametrize("name", ["beta1", "beta2"])
@pytest.mark.parametrize("value", [1.0, -0.1, "x"])
def test_adam_step_errors_name_beta1_and_beta2(name, value):
    bufs = [np.zeros(4, np.float32) for _ in range(4)]
    kw = {"beta1": 0.9, "beta2": 0.999, name: value}
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b") as info:
        adam_c.adam_step(*bufs, step=1, lr=1e-3, eps=1e-8, **kw)
    assert "beta[" not in str(info.value)
