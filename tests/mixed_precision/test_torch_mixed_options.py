"""test_torch_mixed_options.py: adam_c.torch's master weights, stochastic rounding, EMA and max_grad_norm match
adam_c.Adam bit for bit, survive checkpoints, refuse bad input without changing anything."""
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")

import adam_c  # noqa: E402
import adam_c.torch as at  # noqa: E402
from adam_c._mixed import numpy_view  # noqa: E402

SHAPES = [(37,), (5, 7)]  # odd lengths


def _bits(t):
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).clone()
    return t.clone()


def _same_bits(a, b):
    return torch.equal(_bits(a), _bits(b))


def _pair(dtype, seed=0, **options):
    """A torch optimizer and an adam_c.Adam on NumPy views of identical copies of the same params."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=gen).to(dtype) for shape in SHAPES]
    twins = [p.clone() for p in params]
    cls = options.pop("cls", "Adam")
    opt = getattr(at, cls)(params, lr=1e-2, weight_decay=0.1, **options)
    ref = getattr(adam_c, cls)([numpy_view(t) for t in twins], lr=1e-2, weight_decay=0.1, **options)
    return opt, ref, params, twins, gen


def _step_both(opt, ref, params, gen, **step_options):
    grads = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step(**step_options)
    ref.step([numpy_view(g) for g in grads], **step_options)


def _assert_match(opt, ref, params, twins):
    saved = ref.state_dict()["state"]
    for i, (p, twin) in enumerate(zip(params, twins)):
        assert _same_bits(p, twin), f"param {i}"
        entry = opt.state[p]
        assert int(entry["step"].item()) == int(saved[i]["step"])
        for key in saved[i]:
            if key == "step":
                continue
            mine = entry[key]
            theirs = torch.from_numpy(np.ascontiguousarray(saved[i][key])).reshape(p.shape)
            assert mine.dtype == theirs.dtype, key
            assert torch.equal(mine, theirs), f"param {i} {key}"
        assert set(k for k in entry if k != "step") == set(k for k in saved[i] if k != "step")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_master_weights_match_numpy_bit_for_bit(dtype, cls):
    opt, ref, params, twins, gen = _pair(dtype, cls=cls, master_weights=True)
    for _ in range(4):
        _step_both(opt, ref, params, gen)
    for p in params:
        assert opt.state[p]["master"].dtype == torch.float32
        # the param is its master rounded to nearest even
        assert _same_bits(p, opt.state[p]["master"].to(dtype))
    _assert_match(opt, ref, params, twins)


def test_stochastic_rounding_matches_numpy_and_follows_the_seed():
    opt, ref, params, twins, gen = _pair(torch.bfloat16, seed=1, rounding="stochastic")
    for _ in range(3):
        _step_both(opt, ref, params, gen)
    _assert_match(opt, ref, params, twins)
    # another seed rounds some element differently (same grads, same start)
    _, _, others, _, gen2 = _pair(torch.bfloat16, seed=1, rounding="stochastic")
    other_seed = at.Adam(others, lr=1e-2, weight_decay=0.1, rounding="stochastic", seed=12345)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen2).to(p.dtype) for p in others]
        for p, g in zip(others, grads):
            p.grad = g
        other_seed.step()
    assert not all(_same_bits(a, b) for a, b in zip(params, others))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_ema_matches_numpy_and_ema_weights_swaps_bits(dtype):
    options = {"ema_decay": 0.9}
    if dtype == torch.bfloat16:
        options["master_weights"] = True
    opt, ref, params, twins, gen = _pair(dtype, **options)
    for _ in range(3):
        _step_both(opt, ref, params, gen)
    _assert_match(opt, ref, params, twins)
    before = [_bits(p) for p in params]
    with opt.ema_weights(), ref.ema_weights():
        for p, twin in zip(params, twins):
            assert _same_bits(p, twin)
            assert _same_bits(p, opt.state[p]["ema"].to(dtype))
        assert not all(torch.equal(_bits(p), b) for p, b in zip(params, before))
    assert all(torch.equal(_bits(p), b) for p, b in zip(params, before))


def test_ema_weights_needs_ema_decay():
    p = torch.zeros(3)
    with pytest.raises(ValueError, match="ema_decay"):
        with at.Adam([p]).ema_weights():
            pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_grad_norm_matches_numpy_and_clip_grad_norm(dtype):
    opt, ref, params, twins, gen = _pair(dtype, master_weights=dtype != torch.float32)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen).to(dtype) * 3 for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step(max_grad_norm=0.25)
        ref.step([numpy_view(g) for g in grads], max_grad_norm=0.25)
        assert opt.last_grad_norm == pytest.approx(ref.last_grad_norm, rel=1e-12)  # sums in another memory order
        assert opt.last_step_skipped is False
        copies = [g.clone().float().requires_grad_() for g in grads]
        for c, g in zip(copies, grads):
            c.grad = g.float()
        expected = torch.nn.utils.clip_grad_norm_(copies, 0.25).item()
        assert opt.last_grad_norm == pytest.approx(expected, rel=1e-5)
    _assert_match(opt, ref, params, twins)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert opt.last_grad_norm is None


def test_max_grad_norm_clips_like_torch_float64():
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(41, dtype=torch.float64, generator=gen)
    q = p.clone().requires_grad_()
    g = torch.randn(41, dtype=torch.float64, generator=gen) * 10
    opt = at.Adam([p], lr=0.1)
    p.grad = g.clone()
    opt.step(max_grad_norm=1.0)
    q.grad = g.clone()
    torch.nn.utils.clip_grad_norm_([q], 1.0)
    torch_opt = torch.optim.Adam([q], lr=0.1)
    torch_opt.step()
    assert torch.allclose(p, q.detach(), rtol=1e-12, atol=1e-14)


def test_grad_scaler_path_still_skips_and_reports():
    p = torch.randn(9)
    opt = at.Adam([p], master_weights=True)
    p.grad = torch.ones(9)
    before = p.clone()
    opt.step(grad_scale=torch.tensor(2.0), found_inf=torch.tensor(1.0), max_grad_norm=1.0)
    assert opt.last_step_skipped is True and torch.equal(p, before) and not opt.state
    opt.step(grad_scale=torch.tensor(2.0), found_inf=torch.tensor(0.0), max_grad_norm=100.0)
    assert opt.last_step_skipped is False
    assert opt.last_grad_norm == pytest.approx(1.5, rel=1e-6)  # norm of the unscaled grads: sqrt(9) / 2
    assert "master" not in opt.state[p]  # float32 params need no master (as adam_c.Adam)


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_checkpoint_round_trip_keeps_master_and_ema(dtype):
    options = {"master_weights": True, "ema_decay": 0.95}
    opt, ref, params, twins, gen = _pair(dtype, **options)
    for _ in range(2):
        _step_both(opt, ref, params, gen)
    saved = _roundtrip(opt.state_dict())
    keys = ("master", "ema") if dtype != torch.float32 else ("ema",)  # float32 params have no master
    assert all(saved["state"][0][key].dtype == torch.float32 for key in keys)
    assert dtype != torch.float32 or "master" not in saved["state"][0]
    fresh_params = [p.clone() for p in params]
    fresh = at.Adam(fresh_params, lr=1e-2, weight_decay=0.1, **options)
    fresh.load_state_dict(saved)
    for p, q in zip(params, fresh_params):
        for key in keys:
            assert fresh.state[q][key].dtype == torch.float32  # not cast to the param dtype by torch
            assert torch.equal(fresh.state[q][key], opt.state[p][key])
    grads = [torch.randn(p.shape, generator=gen).to(dtype) for p in params]
    for p, q, g in zip(params, fresh_params, grads):
        p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    fresh.step()
    for p, q in zip(params, fresh_params):
        assert _same_bits(p, q)
        for key in keys:
            assert torch.equal(opt.state[p][key], fresh.state[q][key])


def test_checkpoint_without_master_starts_it_from_the_param():
    p = torch.randn(13).to(torch.bfloat16)
    p.grad = torch.randn(13).to(torch.bfloat16)
    plain = torch.optim.Adam([p.clone().requires_grad_()], lr=1e-2)
    plain.param_groups[0]["params"][0].grad = p.grad.clone()
    plain.step()
    opt = at.Adam([p], lr=1e-2, master_weights=True, ema_decay=0.5)
    opt.load_state_dict(_roundtrip(plain.state_dict()))
    assert "master" not in opt.state[p]
    start = p.clone()
    opt.step()
    # the master started as float32(param) and was then stepped: the param is it rounded
    assert opt.state[p]["master"].dtype == torch.float32
    assert _same_bits(p, opt.state[p]["master"].to(torch.bfloat16))
    assert not _same_bits(p, start)
    # and a master from a checkpoint this optimizer does not keep is dropped
    no_master = at.Adam([p], lr=1e-2)
    no_master.load_state_dict(_roundtrip(opt.state_dict()))
    assert "master" not in no_master.state[p] and "ema" not in no_master.state[p]


@pytest.mark.parametrize("bad, error", [
    (lambda m: m.reshape(1, -1)[:, :-1].clone(), ValueError),  # wrong shape
    (lambda m: m.to(torch.float64), TypeError),                # wrong dtype (the param's own is upcast exactly)
])
def test_bad_checkpoint_master_changes_nothing(bad, error):
    p = torch.randn(11).to(torch.bfloat16)
    opt = at.Adam([p], master_weights=True)
    p.grad = torch.randn(11).to(torch.bfloat16)
    opt.step()
    saved = _roundtrip(opt.state_dict())
    saved["state"][0]["master"] = bad(saved["state"][0]["master"])
    master = opt.state[p]["master"]
    before = master.clone()
    with pytest.raises(error, match="master"):
        opt.load_state_dict(saved)
    assert opt.state[p]["master"] is master and torch.equal(master, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"rounding": "stochastic", "master_weights": True}, "stochastic"),
    ({"rounding": "sometimes"}, "rounding"),
    ({"ema_decay": 1.5}, "ema_decay"),
    ({"ema_decay": -0.1}, "ema_decay"),
    ({"master_weights": "yes"}, "master_weights"),
])
def test_bad_options_refused(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        at.Adam([torch.zeros(3, dtype=torch.bfloat16)], **kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        adam_c.Adam([np.zeros(3, np.float32)], **kwargs)


def test_stochastic_rounding_refuses_float16_params():
    with pytest.raises(ValueError, match="stochastic"):
        at.Adam([torch.zeros(3, dtype=torch.float16)], rounding="stochastic")
    opt = at.Adam([torch.zeros(3, dtype=torch.bfloat16)], rounding="stochastic")
    with pytest.raises(ValueError, match="stochastic"):
        opt.add_param_group({"params": [torch.zeros(5, dtype=torch.float16)]})
    assert len(opt.param_groups) == 1


def test_master_weights_with_float32_params_is_ignored_like_numpy():
    p = torch.randn(7)
    twin = p.clone()
    opt = at.Adam([p], master_weights=True)
    ref = adam_c.Adam([numpy_view(twin)], master_weights=True)
    g = torch.randn(7)
    p.grad = g
    opt.step()
    ref.step([g.numpy()])
    assert "master" not in opt.state[p] and "master" not in ref.state_dict()["state"][0]
    assert torch.equal(p, twin)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), "1"])
def test_bad_max_grad_norm_changes_nothing(value):
    p = torch.randn(9).to(torch.bfloat16)
    opt = at.Adam([p], master_weights=True, ema_decay=0.9)
    p.grad = torch.randn(9).to(torch.bfloat16)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    param_before = p.clone()
    with pytest.raises((TypeError, ValueError), match="max_grad_norm"):
        opt.step(max_grad_norm=value)
    assert _same_bits(p, param_before)
    for k, v in opt.state[p].items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("key", ["master", "ema"])
def test_plan_notices_replaced_master_or_ema(key):
    p = torch.randn(15).to(torch.bfloat16)
    opt = at.Adam([p], lr=0.1, master_weights=True, ema_decay=0.5)
    p.grad = torch.randn(15).to(torch.bfloat16)
    opt.step()
    old = opt.state[p][key]
    new = old.clone() + 1.0
    opt.state[p][key] = new
    old_before, new_before = old.clone(), new.clone()
    opt.step()
    assert torch.equal(old, old_before)        # the table no longer points at the replaced tensor
    assert not torch.equal(new, new_before)    # but at the new one
    if key == "master":
        assert _same_bits(p, new.to(torch.bfloat16))


def test_plan_notices_master_replaced_in_place_by_set_():
    p = torch.randn(15).to(torch.bfloat16)
    opt = at.Adam([p], lr=0.1, master_weights=True)
    p.grad = torch.randn(15).to(torch.bfloat16)
    opt.step()
    master = opt.state[p]["master"]
    with torch.no_grad():
        master.set_(master.clone() + 1.0)  # same tensor object, new memory
    opt.step()
    assert _same_bits(p, master.to(torch.bfloat16))


def test_bad_master_in_state_refused_before_anything_changes():
    p = torch.randn(15).to(torch.bfloat16)
    opt = at.Adam([p], lr=0.1, master_weights=True)
    p.grad = torch.randn(15).to(torch.bfloat16)
    opt.step()
    opt.state[p]["master"] = torch.zeros(14)
    before = p.clone()
    with pytest.raises(ValueError, match="master"):
        opt.step()
    assert _same_bits(p, before) and int(opt.state[p]["step"].item()) == 1


def test_state_bytes_counts_master_and_ema_like_numpy():
    opt, ref, params, twins, gen = _pair(torch.bfloat16, master_weights=True, ema_decay=0.9)
    _step_both(opt, ref, params, gen)
    assert opt.state_bytes() == ref.state_bytes()


def test_channels_last_param_gets_master_and_ema_in_its_layout():
    gen = torch.Generator().manual_seed(5)
    p = torch.randn(3, 5, 7, 9, generator=gen).to(torch.bfloat16).to(memory_format=torch.channels_last)
    twin = p.contiguous()
    opt = at.Adam([p], lr=1e-2, master_weights=True, ema_decay=0.9)
    ref = at.Adam([twin], lr=1e-2, master_weights=True, ema_decay=0.9)
    for _ in range(2):
        g = torch.randn(p.shape, generator=gen).to(torch.bfloat16)
        p.grad = g.contiguous(memory_format=torch.channels_last)
        twin.grad = g.clone()
        opt.step(max_grad_norm=1.0)
        ref.step(max_grad_norm=1.0)
    assert opt.state[p]["master"].stride() == p.stride()
    assert _same_bits(p, twin)
    assert torch.equal(opt.state[p]["ema"], ref.state[twin]["ema"])
    assert opt.last_grad_norm == pytest.approx(ref.last_grad_norm, rel=1e-12)  # sums in another memory order


def test_state_float32_includes_master_and_ema_copies():
    opt, ref, params, twins, gen = _pair(torch.bfloat16, master_weights=True, ema_decay=0.9)
    _step_both(opt, ref, params, gen)
    mine, theirs = opt.state_float32(), ref.state_float32()
    for i, p in enumerate(params):
        for key in ("master", "ema"):
            assert torch.equal(mine[i][key], torch.from_numpy(np.asarray(theirs[i][key])).reshape(p.shape))
            assert mine[i][key] is not opt.state[p][key]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_checkpoint_without_master_resumes_bit_exactly(dtype):
    """A float16/bfloat16 param's float32 state survives save and load unrounded (torch's own loader would cast it to
    the param's dtype): the resumed run equals the uninterrupted one bit for bit."""
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(300, generator=gen).to(dtype)
    grads = [(torch.randn(300, generator=gen) * 1e-3).to(dtype) for _ in range(6)]

    def run(p, opt, gs):
        for g in gs:
            p.grad = g.clone()
            opt.step()

    straight = torch.nn.Parameter(start.clone())
    opt = at.Adam([straight], lr=1e-2)
    run(straight, opt, grads)

    first = torch.nn.Parameter(start.clone())
    opt1 = at.Adam([first], lr=1e-2)
    run(first, opt1, grads[:3])
    buf = io.BytesIO()
    torch.save(opt1.state_dict(), buf)
    buf.seek(0)
    resumed = torch.nn.Parameter(first.detach().clone())
    opt2 = at.Adam([resumed], lr=1e-2)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert opt2.state[resumed]["exp_avg"].dtype == torch.float32
    run(resumed, opt2, grads[3:])
    assert _same_bits(resumed.detach(), straight.detach())
    assert _same_bits(opt2.state[resumed]["exp_avg_sq"], opt.state[straight]["exp_avg_sq"])
