"""Groups and arrays edited between steps are followed like torch or refused by name; a refused step changes nothing.

Params replaced, appended, popped or moved; dtype, shape or writeability changed in place; groups deleted or
malformed."""
import pickle

import numpy as np
import pytest

import adam_c
from reference import assert_bitwise_equal
from _numpy_steps import assert_snapshot_equal, expected_step, full_snapshot, rand, run_isolated


# ================================================================ edited param_groups[i]["params"]


def test_replacing_group_params_steps_the_new_arrays_like_torch():
    """After group["params"] is replaced, the new arrays are stepped (fresh state), the old ones not."""
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
    """Append / pop / move between groups: each param keeps its own state; indices follow positions."""
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
    """Replacing the params and then turning amsgrad on used to mix old pointers with new sizes."""
    run_isolated(tmp_path, "body_replaced_params_then_amsgrad")


# ================================================================ dtype / shape changed in place


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
    """p.dtype = np.float16 after construction (or after steps): TypeError naming it, nothing written."""
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
    """A reshape of the held array (same size): the state follows the new shape, values continue."""
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


# ================================================================ read-only params


def test_param_made_read_only_after_construction_is_refused():
    """flags.writeable = False after construction (before and after a step): ValueError, not written."""
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
    """Unpickled over read-only out-of-band buffers, the optimizer refuses to step (no write)."""
    run_isolated(tmp_path, "body_pickle5_read_only_buffers")


# ================================================================ failed steps change nothing; group errors


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
    """Deleted 'params', appended/popped groups, junk: TypeError/ValueError naming the entry (never
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
