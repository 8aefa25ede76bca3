"""adam_c.Adam's argument errors name the argument.

Betas, numbers that are not floats, state or grads buffers offered as params, byte-swapped params, a dict of grads."""
import numpy as np
import pytest

import adam_c
from _numpy_steps import _trained, assert_snapshot_equal, full_snapshot


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
    """A live state buffer or opt.grads buffer offered as a new param: ValueError naming both."""
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


# ================================================================ byte order, a dict of grads


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
