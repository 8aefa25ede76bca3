"""test_torch_dropin_mixed.py: adam_c.torch steps float16/bfloat16 params through the same C path as adam_c.Adam (bit
for bit), keeps their state in float32, and exchanges checkpoints with torch.optim (whose state is float16/bfloat16)."""
import ml_dtypes
import numpy as np
import pytest

import adam_c
from adam_c._mixed import numpy_view

torch = pytest.importorskip("torch")
import adam_c.torch as adam_torch  # noqa: E402

DTYPES = [(torch.bfloat16, np.dtype(ml_dtypes.bfloat16)), (torch.float16, np.dtype(np.float16))]
SIZES = (33, 1001)


def make(tdtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=gen).to(tdtype).requires_grad_() for n in SIZES]


def grads_for(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(p.shape, generator=gen) * 0.1).to(p.dtype) for p in params]


@pytest.mark.parametrize("tdtype,ndtype", DTYPES, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_same_bits_as_the_numpy_optimizer(tdtype, ndtype, amsgrad):
    tparams = make(tdtype)
    nparams = [numpy_view(p).copy() for p in tparams]
    assert all(a.dtype == ndtype for a in nparams)
    topt = adam_torch.AdamW(tparams, lr=1e-2, weight_decay=0.01, amsgrad=amsgrad)
    nopt = adam_c.AdamW(nparams, lr=1e-2, weight_decay=0.01, amsgrad=amsgrad)
    for s in range(6):
        grads = grads_for(tparams, s)
        for p, g in zip(tparams, grads):
            p.grad = g
        topt.step()
        nopt.step([numpy_view(g) for g in grads])
        for i, (tp, npar) in enumerate(zip(tparams, nparams)):
            assert numpy_view(tp).tobytes() == npar.tobytes(), (s, i)
    for i, tp in enumerate(tparams):
        state = topt.state[tp]
        for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
            assert state[key].dtype == torch.float32
            assert state[key].numpy().tobytes() == nopt.state[i][key].tobytes(), (i, key)


@pytest.mark.parametrize("tdtype,ndtype", DTYPES, ids=["bfloat16", "float16"])
def test_checkpoints_go_both_ways_with_torch_optim(tdtype, ndtype):
    params = make(tdtype)
    opt = adam_torch.Adam(params, lr=1e-2)
    for s in range(3):
        for p, g in zip(params, grads_for(params, s)):
            p.grad = g
        opt.step()
    twins = [p.detach().clone().requires_grad_() for p in params]
    topt = torch.optim.Adam(twins, lr=1e-2)
    topt.load_state_dict(opt.state_dict())
    saved = topt.state_dict()
    assert saved["state"][0]["exp_avg"].dtype == tdtype  # torch.optim casts state to the param dtype
    again = [p.detach().clone().requires_grad_() for p in params]
    back = adam_torch.Adam(again, lr=1e-2)
    back.load_state_dict(saved)
    nparams = [numpy_view(p).copy() for p in again]
    nopt = adam_c.Adam(nparams, lr=1e-2)
    nopt.load_state_dict(saved)  # the NumPy optimizer reads torch's bfloat16/float16 state too
    grads = grads_for(again, 3)
    for p, g in zip(again, grads):
        p.grad = g
    back.step()  # the float16/bfloat16 state is taken in float32 (exactly) and stepped
    nopt.step([numpy_view(g) for g in grads])
    for i, p in enumerate(again):
        assert back.state[p]["exp_avg"].dtype == torch.float32 and back.state[p]["step"].item() == 4
        assert numpy_view(p).tobytes() == nparams[i].tobytes()
        for key in ("exp_avg", "exp_avg_sq"):
            assert back.state[p][key].numpy().tobytes() == nopt.state[i][key].tobytes(), (i, key)


def test_state_of_another_dtype_is_refused_and_nothing_changes():
    params = make(torch.bfloat16)
    opt = adam_torch.Adam(params, lr=1e-2)
    for p, g in zip(params, grads_for(params, 0)):
        p.grad = g
    opt.step()
    opt.state[params[1]]["exp_avg"] = opt.state[params[1]]["exp_avg"].double()
    before = [p.detach().clone() for p in params]
    with pytest.raises(TypeError, match="exp_avg.*float64"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert opt.state[params[0]]["step"].item() == 1
