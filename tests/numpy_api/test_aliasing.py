"""Buffers that share memory raise ValueError and change nothing; adjacent views are fine.

adam_step's five buffers, params of one optimizer, new param groups, and grads that alias a param or its state."""
import numpy as np
import pytest

import adam_c
from reference import assert_bitwise_equal

DTYPES = [np.float32, np.float64]




def _five(n, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(5)]


NAMES = ["param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("i,j", [(i, j) for i in range(5) for j in range(i + 1, 5)])
@pytest.mark.parametrize("shift", [0, 1, 7, -3])
def test_adam_step_overlapping_buffers_raise(dtype, i, j, shift):
    """Any two buffers of adam_step sharing memory (same array, or partially overlapping views of one buffer)
    raise ValueError, and nothing is written."""
    n = 16
    base = np.random.default_rng(1).standard_normal(6 * n).astype(dtype)
    bufs = _five(n, dtype)
    start = 2 * n
    bufs[i] = base[start:start + n]
    bufs[j] = base[start + shift:start + shift + n]
    others = [b.copy() for b in bufs]
    base_before = base.copy()
    with pytest.raises(ValueError, match="share memory|overlap"):
        adam_c.adam_step(bufs[0], bufs[1], bufs[2], bufs[3], max_exp_avg_sq=bufs[4], step=1, lr=1e-3, beta1=0.9,
                         beta2=0.999, eps=1e-8, amsgrad=True)
    assert_bitwise_equal(base, base_before, f"{NAMES[i]}/{NAMES[j]} base buffer")
    for k in range(5):
        assert_bitwise_equal(bufs[k], others[k], NAMES[k])


def test_adam_step_adjacent_views_are_fine():
    """Views of one buffer that touch but do not overlap are legal and give the same result as separate arrays."""
    n = 33
    base = np.random.default_rng(2).standard_normal(5 * n)
    base[3 * n:] = np.abs(base[3 * n:])
    views = [base[k * n:(k + 1) * n] for k in range(5)]
    separate = [v.copy() for v in views]
    kw = dict(step=4, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=True, weight_decay=0.1)
    adam_c.adam_step(views[0], views[1], views[2], views[3], max_exp_avg_sq=views[4], **kw)
    adam_c.adam_step(separate[0], separate[1], separate[2], separate[3], max_exp_avg_sq=separate[4], **kw)
    for k in range(5):
        assert_bitwise_equal(views[k], separate[k], NAMES[k])


def test_adam_step_memoryview_alias_raises():
    """Aliasing through other buffer-protocol objects (memoryview of the same array) is caught too."""
    a = np.ones(8)
    m, v = np.zeros(8), np.zeros(8)
    before = a.copy()
    with pytest.raises(ValueError):
        adam_c.adam_step(a, memoryview(a), m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    assert_bitwise_equal(a, before, "param")
    assert not m.any() and not v.any()


@pytest.mark.parametrize("make", [
    lambda a: [a[:10], a[5:15]],            # partial overlap
    lambda a: [a[:10], a[:10]],             # two views of the same elements
    lambda a: [a, a[3:4]],                  # a view inside another param
    lambda a: [a.reshape(4, 5), a[19:]],    # reshaped view overlapping the tail
    lambda a: [a, a],                       # the same array twice
])
def test_optimizer_overlapping_params_raise(make):
    a = np.zeros(20)
    params = make(a)
    with pytest.raises(ValueError):
        adam_c.Adam(params)
    with pytest.raises(ValueError):
        adam_c.Adam([{"params": [params[0]]}, {"params": [params[1]]}])


def test_add_param_group_overlapping_raises_and_changes_nothing():
    a = np.zeros(20)
    opt = adam_c.Adam([a[:10]], lr=0.1)
    groups_before = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [a[9:12]]})
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 1
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups_before
    opt.add_param_group({"params": [a[10:]]})  # adjacent is fine
    opt.step([np.ones(10), np.ones(10)])
    assert (a != 0).all()


def test_optimizer_grad_aliasing_raises_and_changes_nothing():
    """A grad that is its own param, or a view of its own param's state, raises ValueError; nothing changes."""
    p = np.linspace(-1, 1, 12)
    q = np.linspace(1, 2, 5)
    opt = adam_c.Adam([p, q], lr=0.1, amsgrad=True)
    opt.step([np.ones(12), np.ones(5)])
    snap = [p.copy(), q.copy()] + [opt.state[i][k].copy() for i in (0, 1)
                                    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")]
    for bad in ([p, np.ones(5)], [np.ones(12), q],
                [opt.state[0]["exp_avg"], np.ones(5)], [np.ones(12), opt.state[1]["max_exp_avg_sq"]]):
        with pytest.raises(ValueError):
            opt.step(bad)
        now = [p, q] + [opt.state[i][k] for i in (0, 1) for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")]
        for a, b in zip(now, snap):
            assert_bitwise_equal(a, b, "after a rejected aliased step")
        assert opt.state[0]["step"] == 1 and opt.state[1]["step"] == 1
