"""One engine under two front-ends: adam_c.Adam (NumPy) and adam_c.torch.Adam give the same bits in every mode."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import adam_c  # noqa: E402
import adam_c.torch as at  # noqa: E402
from adam_c._validation import BFLOAT16  # noqa: E402

SIZES, STEPS = (1, 7, 333, 4099), 6

# (name, param dtype, constructor options, step options)
MODES = [
    ("plain float32", "float32", {}, {}),
    ("plain float64", "float64", {}, {}),
    ("adamw amsgrad maximize", "float32", {"weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True,
                                           "maximize": True}, {}),
    ("l2 weight decay", "float64", {"weight_decay": 0.05}, {}),
    ("grad_scale 3", "float32", {}, {"grad_scale": 3.0}),
    ("grad_scale 1024", "float32", {}, {"grad_scale": 1024.0}),
    ("max_grad_norm", "float32", {}, {"max_grad_norm": 0.5}),
    ("bfloat16 params, master", "bfloat16", {"master_weights": True}, {}),
    ("bfloat16 params, stochastic", "bfloat16", {"rounding": "stochastic", "seed": 11}, {}),
    ("float16 params, master, ema", "float16", {"master_weights": True, "ema_decay": 0.9}, {}),
    ("ema", "float32", {"ema_decay": 0.99}, {"max_grad_norm": 2.0}),
    ("bfloat16 state", "float32", {"state_dtype": "bfloat16"}, {}),
    ("int8 state, amsgrad", "float32", {"state_dtype": "int8", "amsgrad": True}, {}),
    ("bfloat16 state, stochastic", "bfloat16", {"state_dtype": "bfloat16", "state_rounding": "stochastic",
                                                "rounding": "stochastic", "seed": 5}, {"max_grad_norm": 1.0}),
]


def to_torch(a, dtype):
    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def to_numpy(t, dtype):
    if dtype == "bfloat16":
        return t.detach().view(torch.int16).numpy().view(BFLOAT16)
    return t.detach().numpy()


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("name, dtype, options, step_options", MODES, ids=[m[0] for m in MODES])
def test_both_front_ends_give_the_same_bits(name, dtype, options, step_options):
    rng = np.random.default_rng(7)
    np_dtype = BFLOAT16 if dtype == "bfloat16" else np.dtype(dtype)
    params = [rng.standard_normal(n).astype(np.float32).astype(np_dtype) for n in SIZES]
    grads = [[(rng.standard_normal(n) * 10 ** rng.uniform(-3, 1)).astype(np.float32).astype(np_dtype)
              for n in SIZES] for _ in range(STEPS)]
    ours = [p.copy() for p in params]
    theirs = [torch.nn.Parameter(to_torch(p, dtype)) for p in params]
    opt_np = adam_c.Adam(ours, lr=1e-2, **options)
    opt_t = at.Adam(theirs, lr=1e-2, **options)
    torch_step_options = dict(step_options)
    if "grad_scale" in step_options:  # a tensor in torch (GradScaler's), a number in NumPy
        torch_step_options["grad_scale"] = torch.tensor([step_options["grad_scale"]])
    for step in range(STEPS):
        opt_np.step([g.copy() for g in grads[step]], **step_options)
        for t, g in zip(theirs, grads[step]):
            t.grad = to_torch(g, dtype)
        opt_t.step(**torch_step_options)
        for i, (a, t) in enumerate(zip(ours, theirs)):
            assert np.array_equal(bits(a), bits(to_numpy(t, dtype))), f"{name}: param {i} after step {step + 1}"
        if "max_grad_norm" in step_options:
            assert opt_np.last_grad_norm == opt_t.last_grad_norm
    if options.get("ema_decay"):
        with opt_np.ema_weights(), opt_t.ema_weights():
            for a, t in zip(ours, theirs):
                assert np.array_equal(bits(a), bits(to_numpy(t, dtype))), f"{name}: EMA weights"
