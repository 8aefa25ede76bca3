"""adam_c.Adam's state_dict, load_state_dict, pickle and deepcopy: format, copies, round trips, bad input.

Bit-identical round trips, saved ids mapped by position, dtypes cast on load, and bad state_dicts refused with
nothing changed."""
import copy
import pickle

import numpy as np
import pytest

import adam_c
from reference import ReferenceAdam, assert_bitwise_equal
from _numpy_api import assert_state_dicts_equal, assert_unchanged, grads_for, hp, rand, snapshot, two_group_setup


# ---------------------------------------------------------------- state_dict


def test_state_dict_format():
    params, groups = two_group_setup()
    opt = adam_c.Adam(groups, lr=0.02)
    for k in range(3):
        opt.step(grads_for(params, k))
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sorted(sd["state"]) == [0, 1, 2, 3, 4]
    assert all(type(i) is int for i in sd["state"])
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3, 4]]
    for gi, (saved, group) in enumerate(zip(sd["param_groups"], opt.param_groups)):
        assert {k: v for k, v in saved.items() if k != "params"} == {k: v for k, v in group.items() if k != "params"}
    assert sd["param_groups"][0]["name"] == "first" and sd["param_groups"][1]["tag"] == ["x"]
    for i, entry in sd["state"].items():
        ams = i < 2
        assert set(entry) == ({"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if ams else set()))
        assert type(entry["step"]) is int and entry["step"] == 3
        for key in set(entry) - {"step"}:
            assert isinstance(entry[key], np.ndarray)
            assert entry[key].shape == params[i].shape and entry[key].dtype == params[i].dtype
            assert entry[key].flags.c_contiguous


def test_state_dict_holds_copies():
    params, groups = two_group_setup()
    opt = adam_c.Adam(groups)
    opt.step(grads_for(params, 0))
    sd = opt.state_dict()
    kept = copy.deepcopy(sd)
    for i, entry in sd["state"].items():
        for key in set(entry) - {"step"}:
            assert not np.shares_memory(entry[key], opt.state[i][key])
            assert all(not np.shares_memory(entry[key], p) for p in params)
    opt.step(grads_for(params, 1))  # later steps do not reach into an earlier state_dict
    assert_state_dicts_equal(sd, kept)
    live = copy.deepcopy(opt.state_dict())
    for entry in sd["state"].values():  # nor do writes into a state_dict reach the optimizer
        entry["step"] = 1000
        for key in set(entry) - {"step"}:
            entry[key][...] = 1e9
    sd["param_groups"][0]["lr"] = 123.0
    sd["param_groups"][0]["params"].append(99)
    assert_state_dicts_equal(opt.state_dict(), live)
    assert opt.param_groups[0]["lr"] != 123.0 and len(opt.param_groups[0]["params"]) == 2


def _train(opt, params, seeds, lr_change_at=None):
    for k in seeds:
        if k == lr_change_at:
            opt.param_groups[0]["lr"] *= 0.5
        grads = grads_for(params, k)
        if k % 3 == 1:
            grads[1] = None
        opt.step(grads)


@pytest.mark.parametrize("via_pickle", [False, True], ids=["direct", "pickled"])
@pytest.mark.parametrize("cls", [adam_c.Adam, adam_c.AdamW])
def test_state_dict_round_trip_is_bit_identical(cls, via_pickle):
    params, groups = two_group_setup(7)
    opt = cls(groups, lr=0.01)
    _train(opt, params, range(5))
    sd = opt.state_dict()
    if via_pickle:
        sd = pickle.loads(pickle.dumps(sd))
    # a fresh optimizer over copies, built with different constructor hyperparameters: the state_dict wins
    copies = [p.copy() for p in params]
    fresh_groups = [{"params": copies[:2]}, {"params": copies[2:]}]
    fresh = cls(fresh_groups, lr=0.5, betas=(0.1, 0.2), amsgrad=True)
    fresh.load_state_dict(sd)
    assert_state_dicts_equal(fresh.state_dict(), opt.state_dict(), "after load")
    for g_fresh, g_copies in zip(fresh.param_groups, ([copies[:2], copies[2:]])):
        assert [id(p) for p in g_fresh["params"]] == [id(p) for p in g_copies]
    _train(opt, params, range(5, 12), lr_change_at=8)
    _train(fresh, copies, range(5, 12), lr_change_at=8)
    for i, (p, q) in enumerate(zip(params, copies)):
        assert_bitwise_equal(q, p, f"param {i} after resuming")
    assert_state_dicts_equal(fresh.state_dict(), opt.state_dict(), "after resuming")

    # and both equal an optimizer that never stopped
    straight = [p.copy() for p in two_group_setup(7)[0]]
    never = cls([{**groups[0], "params": straight[:2]}, {**groups[1], "params": straight[2:]}], lr=0.01)
    _train(never, straight, range(5))
    _train(never, straight, range(5, 12), lr_change_at=8)
    for i, (p, q) in enumerate(zip(params, straight)):
        assert_bitwise_equal(q, p, f"param {i} vs never stopping")


def test_load_state_dict_maps_saved_ids_by_position():
    """As in torch: saved param ids need not be 0..n-1; they map to this optimizer's params in order."""
    params, groups = two_group_setup(2)
    opt = adam_c.Adam(groups)
    opt.step(grads_for(params, 0))
    sd = opt.state_dict()
    shifted = {"state": {100 + i: entry for i, entry in sd["state"].items()},
               "param_groups": [dict(g, params=[100 + i for i in g["params"]]) for g in sd["param_groups"]]}
    copies = [p.copy() for p in params]
    fresh = adam_c.Adam([{"params": copies[:2]}, {"params": copies[2:]}])
    fresh.load_state_dict(shifted)
    assert_state_dicts_equal(fresh.state_dict(), sd)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_optimizer_pickle_and_deepcopy_resume_identically(how):
    params, groups = two_group_setup(6)
    opt = adam_c.Adam(groups)
    _train(opt, params, range(3))
    clone = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    clone_params = [p for g in clone.param_groups for p in g["params"]]
    assert all(not np.shares_memory(p, q) for p, q in zip(params, clone_params) if p.size)
    _train(opt, params, range(3, 6))
    _train(clone, clone_params, range(3, 6))
    for p, q in zip(params, clone_params):
        assert_bitwise_equal(q, p, "param of the clone")
    assert_state_dicts_equal(clone.state_dict(), opt.state_dict())


def test_load_state_dict_copies_arrays_in_and_casts_dtypes():
    p32 = rand(4, np.float32, seed=1)
    opt = adam_c.Adam([p32])
    src = {"state": {0: {"step": np.int64(3), "exp_avg": [1, 2, 3, 4],  # ints and a list: castable
                         "exp_avg_sq": np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float64)}},
           "param_groups": [{"params": [0], **hp(lr=0.25)}]}
    opt.load_state_dict(src)
    st = opt.state_dict()["state"][0]
    assert st["step"] == 3 and type(st["step"]) is int
    assert st["exp_avg"].dtype == np.float32 and st["exp_avg_sq"].dtype == np.float32
    np.testing.assert_array_equal(st["exp_avg_sq"], [1, 2, 3, 4])
    src["state"][0]["exp_avg_sq"][...] = 0  # the optimizer holds its own copy
    np.testing.assert_array_equal(opt.state_dict()["state"][0]["exp_avg_sq"], [1, 2, 3, 4])
    assert opt.param_groups[0]["lr"] == 0.25


def test_load_state_dict_then_step_matches_oracle():
    """Loaded moments and step counts are the ones the next step uses."""
    p = rand(9, seed=1)
    opt = adam_c.Adam([p], lr=0.01, amsgrad=True)
    m, v = rand(9, seed=2), np.abs(rand(9, seed=3))
    vmax = v * 1.5
    opt.load_state_dict({"state": {0: {"step": 41, "exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": vmax}},
                         "param_groups": [{"params": [0], **hp(lr=0.01, amsgrad=True)}]})
    ref = ReferenceAdam([{"params": [p], **hp(lr=0.01, amsgrad=True)}])
    st = ref.groups[0]["state"][0]
    st.update(step=41, exp_avg=m.copy(), exp_avg_sq=v.copy(), max_exp_avg_sq=vmax.copy())
    g = rand(9, seed=4)
    opt.step([g])
    ref.step([g])
    assert_bitwise_equal(p, ref.params[0], "param")
    assert opt.state_dict()["state"][0]["step"] == 42


def _bad_state_dicts():
    """(name, mutate(sd), exception, match) for a state_dict of two_group_setup after a few steps."""

    def setk(path, value):
        def mutate(sd):
            obj = sd
            for key in path[:-1]:
                obj = obj[key]
            obj[path[-1]] = value
        return mutate

    def delk(path):
        def mutate(sd):
            obj = sd
            for key in path[:-1]:
                obj = obj[key]
            del obj[path[-1]]
        return mutate

    def call(f):
        def mutate(sd):
            f(sd)
        return mutate

    return [
        ("group-count", call(lambda sd: sd["param_groups"].pop()), ValueError, "param groups"),
        ("group-count-extra", call(lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0]))), ValueError,
         "param groups"),
        ("params-per-group", setk(["param_groups", 1, "params"], [2, 3]), ValueError, "params"),
        ("params-moved", call(lambda sd: (sd["param_groups"][0]["params"].append(2),
                                          sd["param_groups"][1]["params"].remove(2))), ValueError, "params"),
        ("shape", setk(["state", 3, "exp_avg"], np.zeros(6)), ValueError, "exp_avg"),
        ("shape-0d", setk(["state", 1, "exp_avg_sq"], np.zeros(1)), ValueError, "exp_avg_sq"),
        ("complex", setk(["state", 0, "exp_avg"], np.zeros((3, 4), np.complex64)), TypeError, "exp_avg"),
        ("object", setk(["state", 0, "exp_avg"], np.empty((3, 4), object)), TypeError, "exp_avg"),
        ("strings", setk(["state", 3, "exp_avg_sq"], np.array(["a"] * 7)), TypeError, "exp_avg_sq"),
        ("not-array", setk(["state", 3, "exp_avg"], "abc"), TypeError, "exp_avg"),
        ("missing-exp_avg", delk(["state", 4, "exp_avg"]), ValueError, "exp_avg"),
        ("missing-exp_avg_sq", delk(["state", 4, "exp_avg_sq"]), ValueError, "exp_avg_sq"),
        ("missing-step", delk(["state", 4, "step"]), ValueError, "step"),
        ("missing-max", delk(["state", 0, "max_exp_avg_sq"]), ValueError, "max_exp_avg_sq"),
        ("missing-state", delk(["state"]), ValueError, "state"),
        ("missing-groups", delk(["param_groups"]), ValueError, "param_groups"),
        ("missing-params", delk(["param_groups", 0, "params"]), ValueError, "params"),
        ("step-negative", setk(["state", 3, "step"], -1), ValueError, "step"),
        ("step-fraction", setk(["state", 3, "step"], 1.5), ValueError, "step"),
        ("step-string", setk(["state", 3, "step"], "3"), TypeError, "step"),
        ("step-bool", setk(["state", 3, "step"], True), TypeError, "step"),
        ("lr-negative", setk(["param_groups", 1, "lr"], -0.1), ValueError, "lr"),
        ("betas-bad", setk(["param_groups", 0, "betas"], (0.9, 1.0)), ValueError, "betas"),
        ("amsgrad-string", setk(["param_groups", 1, "amsgrad"], "yes"), TypeError, "amsgrad"),
        ("index-unknown", setk(["state", 17], None), ValueError, "17"),
        ("index-string", call(lambda sd: sd["state"].__setitem__("0", sd["state"].pop(0))), TypeError, "state"),
        ("entry-not-dict", setk(["state", 2], [1, 2]), TypeError, "state"),
        ("groups-not-list", setk(["param_groups"], "abc"), TypeError, "param_groups"),
        ("not-a-dict", None, TypeError, "state_dict"),
    ]


BAD_STATE_DICTS = _bad_state_dicts()


@pytest.mark.parametrize("mutate,exc,match", [pytest.param(*case[1:], id=case[0]) for case in BAD_STATE_DICTS])
def test_load_state_dict_rejects_bad_input_unchanged(mutate, exc, match):
    params, groups = two_group_setup(4)
    opt = adam_c.Adam(groups)
    for k in range(2):
        opt.step(grads_for(params, k))
    source_params, source_groups = two_group_setup(9)
    source = adam_c.Adam(source_groups, lr=0.3)
    for k in range(3):
        source.step(grads_for(source_params, k))
    sd = source.state_dict()
    if mutate is None:
        sd = [sd]
    else:
        mutate(sd)
    before = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(opt, params, before)
    # and the optimizer carries on exactly like an untouched twin
    twin_params, twin_groups = two_group_setup(4)
    twin = adam_c.Adam(twin_groups)
    for k in range(3):
        twin.step(grads_for(twin_params, k))
    opt.step(grads_for(params, 2))
    for p, q in zip(params, twin_params):
        assert_bitwise_equal(p, q, "param after a failed load and a good step")
