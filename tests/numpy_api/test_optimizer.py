"""The adam_c.Adam / adam_c.AdamW API: signatures, param groups, grads, closures, and bad input."""
import copy
import inspect
import pickle

import numpy as np
import pytest

import adam_c
from reference import ReferenceAdam, assert_bitwise_equal
from _numpy_api import DEFAULTS, assert_unchanged, grads_for, hp, rand, snapshot, two_group_setup

HYPER_KEYS = tuple(DEFAULTS)


def reference_for(groups, defaults=DEFAULTS):
    return ReferenceAdam([{**defaults, **g} for g in groups])


# mixed precision (tests/mixed_precision/test_mixed.py): keyword-only, off by default
MIXED_DEFAULTS = {"master_weights": False, "rounding": "nearest", "ema_decay": None, "seed": 0,
                  "state_dtype": None, "state_rounding": "nearest"}


def test_adam_signature():
    sig = inspect.signature(adam_c.Adam)
    names = list(sig.parameters)
    assert names == ["params", "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                     "decoupled_weight_decay", *MIXED_DEFAULTS]
    for key, value in DEFAULTS.items():
        assert sig.parameters[key].default == value, key
    for key, value in MIXED_DEFAULTS.items():
        assert sig.parameters[key].default == value, key
    for key in ("maximize", "decoupled_weight_decay", *MIXED_DEFAULTS):
        assert sig.parameters[key].kind is inspect.Parameter.KEYWORD_ONLY
    for key in ("params", "lr", "betas", "eps", "weight_decay", "amsgrad"):
        assert sig.parameters[key].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_adamw_signature():
    sig = inspect.signature(adam_c.AdamW)
    assert list(sig.parameters) == ["params", "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                                    *MIXED_DEFAULTS]
    assert sig.parameters["weight_decay"].default == 1e-2
    assert sig.parameters["maximize"].kind is inspect.Parameter.KEYWORD_ONLY
    for key in ("lr", "betas", "eps", "amsgrad", "maximize"):
        assert sig.parameters[key].default == DEFAULTS[key], key
    with pytest.raises(TypeError, match="decoupled_weight_decay"):
        adam_c.AdamW([np.zeros(2)], decoupled_weight_decay=False)


def test_default_group_contents():
    p = np.zeros(3)
    group = adam_c.Adam([p]).param_groups[0]
    assert group["params"][0] is p and len(group["params"]) == 1
    assert {k: v for k, v in group.items() if k != "params"} == DEFAULTS
    group = adam_c.AdamW([p]).param_groups[0]
    assert {k: v for k, v in group.items() if k != "params"} == hp(weight_decay=1e-2, decoupled_weight_decay=True)
    assert isinstance(adam_c.AdamW([p]), adam_c.Adam)


def test_positional_arguments_and_keyword_only_flags():
    p = np.zeros(3)
    group = adam_c.Adam([p], 0.1, (0.8, 0.9), 1e-6, 0.01, True).param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"], group["amsgrad"]) == \
        (0.1, (0.8, 0.9), 1e-6, 0.01, True)
    with pytest.raises(TypeError):
        adam_c.Adam([p], 0.1, (0.8, 0.9), 1e-6, 0.01, True, True)  # maximize is keyword-only
    group = adam_c.Adam([p], maximize=True, decoupled_weight_decay=True).param_groups[0]
    assert group["maximize"] is True and group["decoupled_weight_decay"] is True


def test_adamw_is_adam_with_decoupled_weight_decay():
    a, b = rand(50, seed=1), rand(50, seed=1)
    opt_w = adam_c.AdamW([a], lr=0.05, weight_decay=0.3, amsgrad=True)
    opt_a = adam_c.Adam([b], lr=0.05, weight_decay=0.3, amsgrad=True, decoupled_weight_decay=True)
    opt_l2 = adam_c.Adam([c := a.copy()], lr=0.05, weight_decay=0.3, amsgrad=True)
    for k in range(5):
        g = rand(50, seed=10 + k)
        opt_w.step([g])
        opt_a.step([g])
        opt_l2.step([g])
    assert_bitwise_equal(a, b, "AdamW vs Adam(decoupled_weight_decay=True)")
    assert not np.array_equal(a, c)  # and L2 decay is a different thing


def test_params_may_be_any_iterable():
    params = [rand(4, seed=i) for i in range(3)]
    opt = adam_c.Adam(p for p in params)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in params]
    opt = adam_c.Adam(tuple(params))
    assert len(opt.param_groups[0]["params"]) == 3
    opt = adam_c.Adam([{"params": params[0]}, {"params": (params[1], params[2])}])  # a bare array as 'params'
    assert [len(g["params"]) for g in opt.param_groups] == [1, 2]


# ---------------------------------------------------------------- param groups and steps against the oracle


def test_param_groups_missing_keys_take_constructor_values_extra_keys_kept():
    params, groups = two_group_setup()
    opt = adam_c.Adam(groups, lr=0.02, betas=(0.8, 0.95), eps=1e-6, amsgrad=False)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 1e-2 and g1["lr"] == 0.02
    assert tuple(g0["betas"]) == (0.8, 0.95) and tuple(g1["betas"]) == (0.5, 0.99)
    assert g0["eps"] == g1["eps"] == 1e-6
    assert g0["amsgrad"] is True and g1["amsgrad"] is False
    assert g0["name"] == "first" and g1["tag"] == ["x"]
    assert [id(p) for p in g0["params"]] == [id(p) for p in params[:2]]
    assert set(g0) == set(HYPER_KEYS) | {"params", "name"}


def test_groups_step_like_the_oracle():
    params, groups = two_group_setup()
    ref = reference_for(groups)
    opt = adam_c.Adam(groups)
    for k in range(6):
        grads = grads_for(params, k)
        opt.step(grads)
        ref.step(grads)
    for i, (p, r) in enumerate(zip(params, ref.params)):
        assert_bitwise_equal(p, r, f"param {i}")
        assert p.dtype == r.dtype


def test_mixed_dtypes_keep_their_dtype():
    params = [rand(5, np.float32, 1), rand(5, np.float64, 2), rand((2, 3), np.float32, 3)]
    opt = adam_c.Adam(params, lr=0.1, weight_decay=0.01)
    ref = reference_for([{"params": params, "lr": 0.1, "weight_decay": 0.01}])
    for k in range(3):
        grads = grads_for(params, k)
        opt.step(grads)
        ref.step(grads)
    for p, r, dt in zip(params, ref.params, (np.float32, np.float64, np.float32)):
        assert p.dtype == dt
        assert_bitwise_equal(p, r, "param")
    for i, st in opt.state_dict()["state"].items():
        assert st["exp_avg"].dtype == params[i].dtype and st["exp_avg_sq"].dtype == params[i].dtype


def test_hyperparameters_changed_between_steps_take_effect():
    params, groups = two_group_setup(3)
    ref = reference_for(groups)
    opt = adam_c.Adam(groups)
    changes = [("lr", 0, 0.5), ("lr", 1, 1e-4), ("betas", 1, (0.9, 0.9)), ("weight_decay", 0, 0.0),
               ("maximize", 1, False), ("eps", 0, 1e-3), ("amsgrad", 1, True), ("lr", 0, np.float32(0.25)),
               ("decoupled_weight_decay", 0, True), ("weight_decay", 0, 2)]
    for k, (key, gi, value) in enumerate(changes):
        grads = grads_for(params, k)
        opt.step(grads)
        ref.step(grads)
        opt.param_groups[gi][key] = value
        ref.groups[gi]["hp"][key] = float(value) if key in ("lr", "eps", "weight_decay") else value
    opt.step(grads_for(params, 99))
    ref.step(grads_for(params, 99))
    for i, (p, r) in enumerate(zip(params, ref.params)):
        assert_bitwise_equal(p, r, f"param {i}")


def test_lr_change_matters():
    """The lr in param_groups is read at every step (not cached at construction)."""
    a, b = rand(10, seed=1), rand(10, seed=1)
    opt_a, opt_b = adam_c.Adam([a], lr=0.1), adam_c.Adam([b], lr=0.1)
    g = rand(10, seed=2)
    opt_a.step([g])
    opt_b.step([g])
    opt_b.param_groups[0]["lr"] = 0.0
    b_before = b.copy()
    opt_a.step([g])
    opt_b.step([g])
    assert_bitwise_equal(b, b_before, "lr=0 step")
    assert not np.array_equal(a, b)


def test_add_param_group():
    params, groups = two_group_setup(5)
    opt = adam_c.Adam(groups[:1], lr=0.03, eps=1e-5)
    ref = reference_for(groups[:1], hp(lr=0.03, eps=1e-5))
    for k in range(2):
        grads = grads_for(params[:2], k)
        opt.step(grads)
        ref.step(grads)
    _ = opt.grads  # allocated before the new group: must grow with it
    opt.add_param_group({"params": params[2:], "betas": (0.5, 0.99), "extra": 7})
    new = opt.param_groups[-1]
    assert new["lr"] == 0.03 and new["eps"] == 1e-5 and tuple(new["betas"]) == (0.5, 0.99) and new["extra"] == 7
    assert len(opt.grads) == len(params)
    assert all(g.shape == p.shape and g.dtype == p.dtype and not g.any() for g, p in zip(opt.grads[2:], params[2:]))
    ref.groups.append(ReferenceAdam([hp(lr=0.03, eps=1e-5, params=params[2:], betas=(0.5, 0.99))]).groups[0])
    for k in range(2, 4):
        grads = grads_for(params, k)
        opt.step(grads)
        ref.step(grads)
    for i, (p, r) in enumerate(zip(params, ref.params)):
        assert_bitwise_equal(p, r, f"param {i}")
    sd = opt.state_dict()
    assert [sd["state"][i]["step"] for i in (0, 1, 3, 4)] == [4, 4, 2, 2]
    assert sd["param_groups"][1]["params"] == [2, 3, 4]


@pytest.mark.parametrize("make_group,exc,match", [
    (lambda ps: {"params": [ps[0]]}, ValueError, "twice|same"),
    (lambda ps: {"params": [ps[0][1:]]}, ValueError, "overlap"),
    (lambda ps: {"params": [np.zeros(2)], "lr": -1.0}, ValueError, r"lr"),
    (lambda ps: {"params": [np.zeros(2)], "betas": (0.9, 1.5)}, ValueError, r"betas"),
    (lambda ps: {"params": [np.zeros(2, np.int32)]}, TypeError, r"params"),
    (lambda ps: {"lr": 0.1}, ValueError, r"params"),
    (lambda ps: [np.zeros(2)], TypeError, r"group|dict"),
])
def test_add_param_group_rejects_bad_groups_unchanged(make_group, exc, match):
    params = [rand(5, seed=1), rand(3, seed=2)]
    opt = adam_c.Adam(params)
    opt.step(grads_for(params, 0))
    _ = opt.grads
    before = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.add_param_group(make_group(params))
    assert_unchanged(opt, params, before)
    assert len(opt.grads) == 2
    opt.step(grads_for(params, 1))  # still usable


# ---------------------------------------------------------------- grads, zero_grad, closure


def test_grads_are_lazy_zero_and_stable():
    params, groups = two_group_setup()
    opt = adam_c.Adam(groups)
    grads = opt.grads
    assert opt.grads is grads  # the same buffers every time
    assert len(grads) == len(params)
    for g, p in zip(grads, params):
        assert g.shape == p.shape and g.dtype == p.dtype and not g.any()
        assert not np.shares_memory(g, p)


def test_step_without_grads_uses_opt_grads_accumulated_in_place():
    params, groups = two_group_setup(2)
    twin_params = [p.copy() for p in params]
    twin_groups = [dict(g, params=twin_params[:2] if i == 0 else twin_params[2:]) for i, g in enumerate(groups)]
    opt, twin = adam_c.Adam(groups), adam_c.Adam(twin_groups)
    for k in range(3):
        parts = [grads_for(params, 10 * k + j) for j in range(3)]
        for gi, g in enumerate(opt.grads):  # accumulate three micro-batches in place
            np.add(g, parts[0][gi], out=g)
            g += parts[1][gi]
            g[...] += parts[2][gi]
        summed = [(a + b) + c for a, b, c in zip(*parts)]
        assert opt.step() is None
        twin.step(summed)
        opt.zero_grad()
        assert all(not g.any() for g in opt.grads)
    for i, (p, q) in enumerate(zip(params, twin_params)):
        assert_bitwise_equal(p, q, f"param {i}")


def test_step_with_zero_grads_still_steps():
    p = rand(4, seed=1)
    before = p.copy()
    opt = adam_c.Adam([p], weight_decay=0.5, lr=0.1)
    opt.zero_grad()
    assert not opt.grads[0].any()  # allocated: zero grads given (never given at all: nothing is stepped, below)
    opt.step()  # zero grads from opt.grads; weight decay still moves p
    assert opt.state_dict()["state"][0]["step"] == 1
    assert not np.array_equal(p, before)


def test_zero_grad_keeps_buffers_and_is_a_noop_before_allocation():
    p = rand(4, seed=1)
    opt = adam_c.Adam([p])
    opt.zero_grad()  # nothing allocated yet: no error
    g = opt.grads[0]
    g += 3.0
    opt.zero_grad()
    assert opt.grads[0] is g and not g.any()


def test_grads_as_tuple_generator_and_non_contiguous():
    params = [rand((4, 6), seed=1), rand(5, seed=2)]
    twins = [p.copy() for p in params]
    opt, twin = adam_c.Adam(params, lr=0.1), adam_c.Adam(twins, lr=0.1)
    grads = grads_for(params, 3)
    big = np.zeros((4, 12))
    big[:, ::2] = grads[0]
    opt.step(tuple([big[:, ::2], grads[1]]))  # a strided view: converted, not rejected
    twin.step(grads)
    opt.step(g for g in grads)
    twin.step(list(grads))
    for p, q in zip(params, twins):
        assert_bitwise_equal(p, q, "param")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_byte_swapped_grads_are_converted(dtype):
    """A non-native-byte-order grad of the param's float type holds the same values: converted, not rejected."""
    p = rand(7, dtype, seed=1)
    q = p.copy()
    opt, twin = adam_c.Adam([p], lr=0.1), adam_c.Adam([q], lr=0.1)
    g = rand(7, dtype, seed=2)
    swapped = g.astype(g.dtype.newbyteorder())
    assert not swapped.dtype.isnative and np.array_equal(swapped, g)
    opt.step([swapped])
    twin.step([g])
    assert_bitwise_equal(p, q, "param")


def test_closure_returns_loss_and_grads():
    params = [rand(6, seed=1), rand((2, 3), np.float32, seed=2)]
    twins = [p.copy() for p in params]
    opt, twin = adam_c.Adam(params, lr=0.05), adam_c.Adam(twins, lr=0.05)
    calls = []

    def closure():
        calls.append(1)
        loss = float(sum(float((p * p).sum()) for p in params))
        return loss, [2 * p for p in params]

    for _ in range(3):
        expected_loss = float(sum(float((p * p).sum()) for p in params))
        loss = opt.step(closure=closure)
        assert loss == expected_loss
        twin.step([2 * p for p in twins])
    assert len(calls) == 3
    for p, q in zip(params, twins):
        assert_bitwise_equal(p, q, "param")


def test_closure_returning_no_grads_uses_opt_grads():
    p = rand(6, seed=1)
    q = p.copy()
    opt, twin = adam_c.Adam([p], lr=0.05), adam_c.Adam([q], lr=0.05)
    g = rand(6, seed=2)
    opt.grads[0][...] = g
    assert opt.step(closure=lambda: (1.5, None)) == 1.5
    twin.step([g])
    assert_bitwise_equal(p, q, "param")


@pytest.mark.parametrize("result", [1.0, (1.0,), (1.0, [np.zeros(1)], 3)], ids=["float", "1-tuple", "3-tuple"])
def test_closure_with_bad_result_changes_nothing(result):
    params = [rand(4, seed=1), rand(3, seed=2)]
    opt = adam_c.Adam(params)
    opt.step(grads_for(params, 0))
    before = snapshot(opt, params)
    with pytest.raises(TypeError, match="closure"):
        opt.step(closure=lambda: result)
    assert_unchanged(opt, params, before)


def test_none_grad_skips_param_and_its_step_count():
    params = [rand(5, seed=1), rand(4, seed=2), rand(3, np.float32, seed=3)]
    opt = adam_c.Adam(params, lr=0.1, amsgrad=True)
    ref = reference_for([{"params": params, "lr": 0.1, "amsgrad": True}])
    plan = [[0, 1, 2], [0, 2], [0, 2], [0, 1, 2], [1]]  # which params get a grad at each step
    counts = [0, 0, 0]
    for k, present in enumerate(plan):
        grads = [g if i in present else None for i, g in enumerate(grads_for(params, k))]
        frozen = {i: params[i].copy() for i in range(3) if i not in present}
        opt.step(grads)
        ref.step(grads)
        for i in frozen:
            assert_bitwise_equal(params[i], frozen[i], f"skipped param {i}")
        for i in present:
            counts[i] += 1
        assert [opt.state_dict()["state"][i]["step"] for i in range(3)] == counts
    for i, (p, r) in enumerate(zip(params, ref.params)):
        assert_bitwise_equal(p, r, f"param {i}")  # includes the step-count-dependent bias corrections


def test_never_stepped_params_have_no_saved_state():
    params = [rand(5, seed=1), rand(4, seed=2)]
    opt = adam_c.Adam(params)
    assert opt.state_dict()["state"] == {}
    opt.step([None, grads_for(params, 0)[1]])
    assert list(opt.state_dict()["state"]) == [1]


# ---------------------------------------------------------------- bad input: construction


def _noncontig():
    return np.zeros((4, 6))[:, ::2]


def _readonly():
    a = np.zeros(4)
    a.flags.writeable = False
    return a


def _byteswapped():
    return np.zeros(4, dtype=">f8" if np.little_endian else "<f8")


BAD_CONSTRUCTIONS = [
    ("noncontiguous", lambda: adam_c.Adam([np.zeros(2), _noncontig()]), ValueError, r"params\[1\].*contiguous"),
    ("fortran", lambda: adam_c.Adam([np.zeros((3, 4), order="F")]), ValueError, r"params\[0\].*contiguous"),
    ("readonly", lambda: adam_c.Adam([_readonly()]), ValueError, r"params\[0\].*writ"),
    ("int", lambda: adam_c.Adam([np.zeros(3, np.int64)]), TypeError, r"params\[0\].*dtype"),
    ("complex", lambda: adam_c.Adam([np.zeros(3, np.complex128)]), TypeError, r"params\[0\].*dtype"),
    # float16 and bfloat16 params are mixed precision (tests/mixed_precision/test_mixed.py)
    ("int16", lambda: adam_c.Adam([np.zeros(3, np.int16)]), TypeError, r"params\[0\].*dtype"),
    ("bool", lambda: adam_c.Adam([np.zeros(3, bool)]), TypeError, r"params\[0\].*dtype"),
    ("byteswapped", lambda: adam_c.Adam([_byteswapped()]), (TypeError, ValueError), r"params\[0\]"),
    ("list-param", lambda: adam_c.Adam([[1.0, 2.0]]), TypeError, r"params\[0\]"),
    ("scalar-param", lambda: adam_c.Adam([1.0]), TypeError, r"params\[0\]"),
    ("string-param", lambda: adam_c.Adam(["abc"]), TypeError, r"params\[0\]"),
    ("none", lambda: adam_c.Adam(None), TypeError, r"params"),
    ("bare-array", lambda: adam_c.Adam(np.zeros(3)), TypeError, r"params"),
    ("bare-dict", lambda: adam_c.Adam({"params": [np.zeros(3)]}), TypeError, r"params"),
    ("empty", lambda: adam_c.Adam([]), ValueError, r"params"),
    ("empty-generator", lambda: adam_c.Adam(iter([])), ValueError, r"params"),
    ("mixed-dicts-arrays", lambda: adam_c.Adam([{"params": [np.zeros(2)]}, np.zeros(2)]), TypeError, r"params"),
    ("group-no-params", lambda: adam_c.Adam([{"lr": 0.1}]), ValueError, r"params"),
    ("group-params-none", lambda: adam_c.Adam([{"params": None}]), TypeError, r"params"),
    ("group-bad-param", lambda: adam_c.Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2, np.int8)]}]),
     TypeError, r"param_groups\[1\]\['params'\]\[0\]"),
    ("group-bad-lr", lambda: adam_c.Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], "lr": -1}]),
     ValueError, r"param_groups\[1\]\['lr'\]"),
    ("group-bad-betas", lambda: adam_c.Adam([{"params": [np.zeros(2)], "betas": "ab"}]), TypeError, r"betas"),
    ("lr-negative", lambda: adam_c.Adam([np.zeros(2)], lr=-1e-3), ValueError, r"\blr\b"),
    ("lr-nan", lambda: adam_c.Adam([np.zeros(2)], lr=float("nan")), ValueError, r"\blr\b"),
    ("lr-string", lambda: adam_c.Adam([np.zeros(2)], lr="0.1"), TypeError, r"\blr\b"),
    ("lr-none", lambda: adam_c.Adam([np.zeros(2)], lr=None), TypeError, r"\blr\b"),
    ("lr-complex", lambda: adam_c.Adam([np.zeros(2)], lr=1e-3 + 0j), TypeError, r"\blr\b"),
    ("lr-array", lambda: adam_c.Adam([np.zeros(2)], lr=np.array([0.1, 0.2])), TypeError, r"\blr\b"),
    ("eps-negative", lambda: adam_c.Adam([np.zeros(2)], eps=-1e-8), ValueError, r"eps"),
    ("eps-string", lambda: adam_c.Adam([np.zeros(2)], eps="tiny"), TypeError, r"eps"),
    ("wd-negative", lambda: adam_c.Adam([np.zeros(2)], weight_decay=-0.1), ValueError, r"weight_decay"),
    ("wd-none", lambda: adam_c.Adam([np.zeros(2)], weight_decay=None), TypeError, r"weight_decay"),
    ("adamw-wd-negative", lambda: adam_c.AdamW([np.zeros(2)], weight_decay=-0.1), ValueError, r"weight_decay"),
    ("beta1-one", lambda: adam_c.Adam([np.zeros(2)], betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    ("beta2-one", lambda: adam_c.Adam([np.zeros(2)], betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    ("beta1-negative", lambda: adam_c.Adam([np.zeros(2)], betas=(-0.1, 0.999)), ValueError, r"betas\[0\]"),
    ("beta2-big", lambda: adam_c.Adam([np.zeros(2)], betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    ("beta-nan", lambda: adam_c.Adam([np.zeros(2)], betas=(float("nan"), 0.9)), ValueError, r"betas\[0\]"),
    ("betas-scalar", lambda: adam_c.Adam([np.zeros(2)], betas=0.9), TypeError, r"betas"),
    ("betas-triple", lambda: adam_c.Adam([np.zeros(2)], betas=(0.9, 0.99, 0.999)), TypeError, r"betas"),
    ("betas-strings", lambda: adam_c.Adam([np.zeros(2)], betas=("0.9", "0.99")), TypeError, r"betas\[0\]"),
    ("amsgrad-string", lambda: adam_c.Adam([np.zeros(2)], amsgrad="yes"), TypeError, r"amsgrad"),
    ("maximize-none", lambda: adam_c.Adam([np.zeros(2)], maximize=None), TypeError, r"maximize"),
    ("decoupled-float", lambda: adam_c.Adam([np.zeros(2)], decoupled_weight_decay=0.5), TypeError,
     r"decoupled_weight_decay"),
    ("same-array-twice", lambda: (lambda a: adam_c.Adam([a, np.zeros(1), a]))(np.zeros(3)), ValueError,
     r"params|twice"),
    ("same-array-two-groups", lambda: (lambda a: adam_c.Adam([{"params": [a]}, {"params": [a]}]))(np.zeros(3)),
     ValueError, r"params|twice"),
    ("overlapping-views", lambda: (lambda a: adam_c.Adam([a[:6], a[4:]]))(np.zeros(10)), ValueError,
     r"overlap"),
    ("overlapping-2d", lambda: (lambda a: adam_c.Adam([a, a.reshape(-1)[3:5]]))(np.zeros((3, 3))), ValueError,
     r"overlap"),
    ("overlapping-dtype-view", lambda: (lambda a: adam_c.Adam([a, a.view(np.float32)[2:4]]))(np.zeros(4)),
     ValueError, r"overlap"),
    ("misaligned", lambda: adam_c.Adam([np.frombuffer(bytearray(40), dtype=np.float64, count=4, offset=1)]),
     ValueError, r"params\[0\].*align"),
    ("overlapping-groups", lambda: (lambda a: adam_c.Adam([{"params": [a[:2]]}, {"params": [a[1:]]}]))(
        np.zeros(4, np.float32)), ValueError, r"overlap"),
]


@pytest.mark.parametrize("make,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BAD_CONSTRUCTIONS])
def test_constructor_rejects_bad_input(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_adjacent_views_and_empty_arrays_are_fine():
    a = np.zeros(10)
    opt = adam_c.Adam([a[:5], a[5:], np.zeros(0), np.zeros(0), np.zeros((0, 3))])
    opt.step([np.ones(5), np.ones(5), np.zeros(0), np.zeros(0), np.zeros((0, 3))])
    assert np.all(a < 0)


# ---------------------------------------------------------------- bad input: step


def _mk_bad_step_opt():
    params = [rand(5, np.float64, seed=1), rand((2, 3), np.float32, seed=2), rand((), np.float64, seed=3)]
    opt = adam_c.Adam([{"params": params[:2], "amsgrad": True}, {"params": params[2:]}], lr=0.1)
    opt.step(grads_for(params, 0))
    return params, opt


def _good(params):
    return grads_for(params, 5)


def _with(i, value):
    def make(params):
        grads = _good(params)
        grads[i] = value(params) if callable(value) else value
        return grads
    return make


BAD_STEPS = [
    ("too-few", lambda ps: _good(ps)[:2], ValueError, r"grads"),
    ("too-many", lambda ps: _good(ps) + [np.zeros(1)], ValueError, r"grads"),
    ("empty", lambda ps: [], ValueError, r"grads"),
    ("shape", _with(1, np.zeros((3, 2), np.float32)), ValueError, r"grads\[1\].*shape"),
    ("shape-flat", _with(1, np.zeros(6, np.float32)), ValueError, r"grads\[1\].*shape"),
    ("shape-0d", _with(2, np.zeros(1)), ValueError, r"grads\[2\].*shape"),
    ("dtype-f64-for-f32", _with(1, np.zeros((2, 3), np.float64)), TypeError, r"grads\[1\].*dtype"),
    ("dtype-f32-for-f64", _with(0, np.zeros(5, np.float32)), TypeError, r"grads\[0\].*dtype"),
    ("dtype-int", _with(0, np.zeros(5, np.int64)), TypeError, r"grads\[0\]"),
    ("dtype-complex", _with(0, np.zeros(5, np.complex128)), TypeError, r"grads\[0\]"),
    ("dtype-bool", _with(0, np.zeros(5, bool)), TypeError, r"grads\[0\]"),
    ("string", _with(2, "1.0"), TypeError, r"grads\[2\]"),
    ("bytes", _with(0, b"abcdefgh" * 5), TypeError, r"grads\[0\]"),
    ("object-array", _with(0, np.array([1.0, None, 2.0, 3.0, 4.0], dtype=object)), TypeError, r"grads\[0\]"),
    ("object-array-numbers", _with(0, np.ones(5, dtype=object)), TypeError, r"grads\[0\]"),
    ("string-array", _with(0, np.array(["1"] * 5)), TypeError, r"grads\[0\]"),
    ("dict", _with(0, {"a": 1}), TypeError, r"grads\[0\]"),
    ("ragged", _with(0, [[1.0], [1.0, 2.0]]), TypeError, r"grads\[0\]"),
    ("not-iterable", lambda ps: 5, TypeError, r"grads"),
    ("bare-array-for-0d", lambda ps: np.zeros(()), (TypeError, ValueError), r"grads"),
    ("grad-is-its-param", lambda ps: [ps[0], *_good(ps)[1:]], ValueError, r"grads\[0\]"),
]


@pytest.mark.parametrize("make_grads,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BAD_STEPS])
def test_step_rejects_bad_grads_unchanged(make_grads, exc, match):
    params, opt = _mk_bad_step_opt()
    grads = make_grads(params)
    before = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert_unchanged(opt, params, before)
    # the next good step is exactly the step an untouched twin takes
    twin_params = [p.copy() for p in before[0]]
    twin = adam_c.Adam([{"params": twin_params[:2], "amsgrad": True}, {"params": twin_params[2:]}], lr=0.1)
    twin.load_state_dict(before[1])
    good = grads_for(params, 6)
    opt.step(good)
    twin.step(good)
    for p, q in zip(params, twin_params):
        assert_bitwise_equal(p, q, "param after a failed and a good step")


BAD_GROUP_EDITS = [
    ("lr-negative", lambda g: g.__setitem__("lr", -0.1), ValueError, r"param_groups\[1\]\['lr'\]"),
    ("lr-nan", lambda g: g.__setitem__("lr", float("nan")), ValueError, r"lr"),
    ("lr-string", lambda g: g.__setitem__("lr", "0.1"), TypeError, r"lr"),
    ("betas-one", lambda g: g.__setitem__("betas", (0.9, 1.0)), ValueError, r"betas"),
    ("betas-short", lambda g: g.__setitem__("betas", (0.9,)), TypeError, r"betas"),
    ("eps-negative", lambda g: g.__setitem__("eps", -1.0), ValueError, r"eps"),
    ("wd-string", lambda g: g.__setitem__("weight_decay", "x"), TypeError, r"weight_decay"),
    ("maximize-none", lambda g: g.__setitem__("maximize", None), TypeError, r"maximize"),
    ("missing-eps", lambda g: g.pop("eps"), ValueError, r"eps"),
]


@pytest.mark.parametrize("edit,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BAD_GROUP_EDITS])
def test_step_rejects_bad_group_hyperparameters_unchanged(edit, exc, match):
    params, opt = _mk_bad_step_opt()
    edit(opt.param_groups[1])
    before = snapshot(opt, params)
    with pytest.raises(exc, match=match):
        opt.step(grads_for(params, 1))
    assert_unchanged(opt, params, before)


def test_failed_step_after_turning_amsgrad_on_changes_no_state():
    """Turning amsgrad on mid-training needs new buffers; a step that then fails must not leave them behind."""
    params, opt = _mk_bad_step_opt()
    opt.param_groups[1]["amsgrad"] = True
    before = snapshot(opt, params)
    bad = grads_for(params, 1)
    bad[2] = np.zeros(3)
    with pytest.raises(ValueError, match=r"grads\[2\]"):
        opt.step(bad)
    assert_unchanged(opt, params, before)


def test_failed_step_does_not_count_as_a_step_for_none_grads_either():
    params, opt = _mk_bad_step_opt()
    grads = [None, np.zeros((2, 3), np.float32), np.zeros(2)]
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"grads\[2\]"):
        opt.step(grads)
    assert_unchanged(opt, params, before)


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "int8"])
def test_state_entries_refuse_assignment_instead_of_ignoring_it(state_dtype):
    """opt.state's arrays are live, but the optimizer steps its own buffers: an array assigned to an entry used to
    be dropped without a word (the step went on with the old one). Now every mapping change raises; changes in
    place still count, and copies and pickles are plain dicts."""
    p = np.ones(5000, np.float32)
    g = np.full(5000, 0.5, np.float32)
    opt = adam_c.Adam([p], state_dtype=state_dtype)
    opt.step([g])
    before = {k: np.array(v, copy=True) for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    changes = [lambda s: s.__setitem__("exp_avg", np.zeros_like(s["exp_avg"])), lambda s: s.pop("exp_avg"),
               lambda s: s.update(step=5), lambda s: s.clear(), lambda s: s.__delitem__("exp_avg"),
               lambda s: s.setdefault("x", 1), lambda s: s.popitem()]
    for change in changes:
        with pytest.raises(TypeError, match="in place"):
            change(opt.state[0])
    with pytest.raises(TypeError, match="in place"):
        opt.state[1] = {}
    after = {k: v for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    assert before.keys() == after.keys()
    for k in before:
        assert before[k].tobytes() == after[k].tobytes(), k
    copied = copy.deepcopy(opt.state)
    pickled = pickle.loads(pickle.dumps(opt.state))
    for other in (copied, pickled):
        assert type(other) is dict and type(other[0]) is dict
    assert type(copy.copy(opt.state)) is dict and type(copy.copy(opt.state[0])) is dict
    assert copied[0]["exp_avg"] is not opt.state[0]["exp_avg"]
    assert copied[0]["exp_avg"].tobytes() == opt.state[0]["exp_avg"].tobytes()
    if state_dtype is None:  # a change in place is the optimizer's own: the next step starts from it
        opt.state[0]["exp_avg"][...] = 0.0
        opt.step([g])
        np.testing.assert_array_equal(opt.state[0]["exp_avg"], np.float32(0.1) * g)


def test_step_without_any_grads_changes_nothing_as_torch_skips_params_without_grad():
    """adam_c.AdamW([p]).step() with no grads ever given used to train on zeros (weight decay moved p to 0.99 and a
    step was counted); torch.optim skips params that have no grad."""
    p = np.ones(4, np.float32)
    opt = adam_c.AdamW([p], lr=0.1, weight_decay=0.1)
    opt.step()
    opt.step(max_grad_norm=1.0)
    assert p.tobytes() == np.ones(4, np.float32).tobytes()
    assert opt.state == {} and opt.state_dict()["state"] == {} and opt.last_grad_norm == 0.0
    opt.grads[0][...] = 1.0  # reading opt.grads allocates the buffers the step then reads
    opt.step()
    assert opt.state[0]["step"] == 1 and not np.array_equal(p, np.ones(4, np.float32))


def test_zero_grad_set_to_none_drops_the_grad_buffers():
    p = np.ones(3, np.float32)
    opt = adam_c.Adam([p], lr=0.1)
    assert "set_to_none" in inspect.signature(opt.zero_grad).parameters
    opt.grads[0][...] = 2.0
    opt.zero_grad()  # default: zeroed in place, the same arrays
    held = opt.grads[0]
    assert held is opt.grads[0] and not held.any()
    opt.grads[0][...] = 1.0
    opt.step()
    after_one = p.copy()
    opt.zero_grad(set_to_none=True)
    opt.step()  # no grads: as torch after zero_grad(), nothing is stepped or counted
    assert p.tobytes() == after_one.tobytes() and opt.state[0]["step"] == 1
    fresh = opt.grads[0]
    assert fresh is not held and not fresh.any()


@pytest.mark.parametrize("kwargs,message", [
    ({"betas": (1.0, 0.9)}, r"^Invalid beta parameter at index 0: 1.0 \(betas\[0\] must be in \[0, 1\)\)$"),
    ({"betas": (0.9, -0.5)}, r"^Invalid beta parameter at index 1: -0.5 \(betas\[1\]"),
    ({"weight_decay": -1}, r"^Invalid weight_decay value: -1 \(weight_decay must be >= 0\)$"),
    ({"lr": -0.5}, r"^Invalid learning rate: -0.5 \(lr must be >= 0\)$"),
    ({"eps": -1e-8}, r"^Invalid epsilon value: -1e-08 \(eps must be >= 0\)$"),
])
def test_hyperparameter_errors_are_torchs_messages_naming_the_argument(kwargs, message):
    """One rule for both front-ends (_validation.py): torch.optim's message, then the argument's name."""
    with pytest.raises(ValueError, match=message):
        adam_c.Adam([np.zeros(2, np.float32)], **kwargs)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['"):
        adam_c.Adam([{"params": [np.zeros(2, np.float32)], **kwargs}])
