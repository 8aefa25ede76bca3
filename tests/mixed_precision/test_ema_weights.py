"""ema_weights(): the params are swapped to their EMA all or nothing, and no step runs while they hold it."""
import numpy as np
import pytest

import adam_c

torch = pytest.importorskip("torch")
import adam_c.torch as at  # noqa: E402


def _numpy_case():
    a, b = np.ones(16, np.float32), np.full(16, 2.0, np.float32)
    opt = adam_c.Adam([a, b], lr=0.1, ema_decay=0.5)
    for _ in range(2):
        opt.step([np.ones(16, np.float32), np.ones(16, np.float32)])
    return opt, [a, b], lambda: opt.step([np.ones(16, np.float32), np.ones(16, np.float32)])


def _torch_case():
    a, b = torch.ones(16), torch.full((16,), 2.0)
    opt = at.Adam([a, b], lr=0.1, ema_decay=0.5)

    def step():
        a.grad, b.grad = torch.ones(16), torch.ones(16)
        opt.step()
    step()
    step()
    return opt, [a, b], step


def _values(params):
    return [np.array(p, copy=True) if isinstance(p, np.ndarray) else p.clone() for p in params]


def _same(xs, ys):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(xs, ys))


def _state(opt):
    def copied(v):
        if isinstance(v, torch.Tensor):
            return v.detach().clone().numpy()
        return np.array(v, copy=True) if isinstance(v, np.ndarray) else v
    return {i: {k: copied(v) for k, v in e.items()} for i, e in opt.state_float32().items()}


def _same_state(s, t):
    return s.keys() == t.keys() and all(
        s[i].keys() == t[i].keys() and all(np.array_equal(np.asarray(s[i][k]), np.asarray(t[i][k])) for k in s[i])
        for i in s)


CASES = [pytest.param(_numpy_case, id="numpy"), pytest.param(_torch_case, id="torch")]


@pytest.mark.parametrize("make", CASES)
def test_a_step_inside_the_block_is_refused_and_changes_nothing(make):
    opt, params, step = make()
    own, state = _values(params), _state(opt)
    with opt.ema_weights():
        ema = _values(params)
        assert not _same(ema, own)
        with pytest.raises(RuntimeError, match=r"ema_weights"):
            step()
        assert _same(_values(params), ema) and _same_state(_state(opt), state)
    assert _same(_values(params), own) and _same_state(_state(opt), state)
    step()  # after the block, steps run again
    assert not _same(_values(params), own)


@pytest.mark.parametrize("make", CASES)
def test_blocks_do_not_nest(make):
    opt, params, _ = make()
    own = _values(params)
    with opt.ema_weights():
        with pytest.raises(RuntimeError, match="ema_weights"):
            with opt.ema_weights():
                pass
    assert _same(_values(params), own)


def test_numpy_a_param_that_cannot_be_written_leaves_every_param_as_it_was():
    opt, params, step = _numpy_case()
    own = _values(params)
    params[1].flags.writeable = False  # the second one fails after the first was swapped
    with pytest.raises(ValueError):
        with opt.ema_weights():
            pytest.fail("the block must not run")
    assert _same(_values(params), own)
    params[1].flags.writeable = True
    step()  # not refused as "inside ema_weights"


def test_torch_an_inference_tensor_param_leaves_every_param_as_it_was():
    a = torch.ones(16)
    with torch.inference_mode():
        b = torch.full((16,), 2.0)  # an inference tensor: written in place only inside inference mode
    opt = at.Adam([a, b], lr=0.1, ema_decay=0.5)
    for _ in range(2):
        a.grad, b.grad = torch.ones(16), torch.ones(16)
        with torch.inference_mode():
            opt.step()
    own = _values([a, b])
    with pytest.raises(RuntimeError):
        with opt.ema_weights():
            pytest.fail("the block must not run")
    assert _same(_values([a, b]), own), "a param kept its EMA after the swap failed"
    with torch.inference_mode():
        with opt.ema_weights():  # inside inference mode every param can be written
            assert not _same(_values([a, b]), own)
        opt.step()  # not refused as "inside ema_weights"
