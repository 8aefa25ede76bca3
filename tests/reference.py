"""A slow, obviously-correct NumPy oracle of one Adam/AdamW/AMSGrad step, following torch.optim.Adam(foreach=False)."""
import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def lerp(start, end, weight):
    """torch.lerp with a scalar weight, in the element dtype: two formulas, chosen by |weight| < 0.5."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (weight.dtype.type(1) - weight)


def adam_step_reference(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq=None, *, step, lr, beta1, beta2, eps,
                        weight_decay=0.0, amsgrad=False, maximize=False, decoupled_weight_decay=False):
    """One step; returns NEW arrays (param, exp_avg, exp_avg_sq, max_exp_avg_sq or None); inputs are not touched.

    Every elementwise operation runs in the arrays' dtype (float32 stays float32), one rounding per operation
    (NumPy never fuses a multiply-add). Scalars that torch computes as Python floats (bias corrections, step size,
    1 - beta2, 1 - lr*weight_decay) are computed here in double and rounded to the element type once.
    """
    dtype = np.asarray(param).dtype
    assert dtype in FLOAT_DTYPES, dtype
    T = dtype.type
    p = np.array(param, dtype=dtype, copy=True)
    g = np.array(grad, dtype=dtype, copy=True)
    m = np.array(exp_avg, dtype=dtype, copy=True)
    v = np.array(exp_avg_sq, dtype=dtype, copy=True)
    vmax = np.array(max_exp_avg_sq, dtype=dtype, copy=True) if amsgrad else None
    assert int(step) >= 1

    with np.errstate(all="ignore"):
        if maximize:
            g = -g
        if weight_decay != 0:
            if decoupled_weight_decay:
                p = p * T(1.0 - lr * weight_decay)
            else:
                g = g + T(weight_decay) * p
        m = lerp(m, g, T(1.0 - beta1))
        v = v * T(beta2) + T(1.0 - beta2) * g * g

        step = float(step)  # torch reads the step from a float tensor
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5

        if amsgrad:
            vmax = np.maximum(vmax, v)  # NaN-propagating, like torch.maximum
            denom = np.sqrt(vmax) / T(bias_correction2_sqrt) + T(eps)
        else:
            denom = np.sqrt(v) / T(bias_correction2_sqrt) + T(eps)
        p = p + (T(-step_size) * m) / denom

    for a in (p, m, v) + ((vmax,) if amsgrad else ()):
        assert a.dtype == dtype, (a.dtype, dtype)
    return (np.asarray(p, dtype=dtype), np.asarray(m, dtype=dtype), np.asarray(v, dtype=dtype),
            None if vmax is None else np.asarray(vmax, dtype=dtype))


class ReferenceAdam:
    """A reference optimizer over lists of arrays (one group per dict), for trajectory comparisons."""

    def __init__(self, groups):
        self.groups = []
        for group in groups:
            params = [np.array(p, copy=True) for p in group["params"]]
            hp = {k: v for k, v in group.items() if k != "params"}
            self.groups.append({"params": params, "hp": hp,
                                "state": [dict(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p),
                                               max_exp_avg_sq=np.zeros_like(p)) for p in params]})

    def step(self, grads):
        it = iter(grads)
        for group in self.groups:
            hp = group["hp"]
            for k, (p, st) in enumerate(zip(group["params"], group["state"])):
                g = next(it)
                if g is None:
                    continue
                st["step"] += 1
                beta1, beta2 = hp["betas"]
                new_p, m, v, vmax = adam_step_reference(
                    p, g, st["exp_avg"], st["exp_avg_sq"], st["max_exp_avg_sq"], step=st["step"], lr=hp["lr"],
                    beta1=beta1, beta2=beta2, eps=hp["eps"], weight_decay=hp["weight_decay"],
                    amsgrad=hp["amsgrad"], maximize=hp["maximize"],
                    decoupled_weight_decay=hp["decoupled_weight_decay"])
                group["params"][k] = new_p
                st["exp_avg"], st["exp_avg_sq"] = m, v
                if vmax is not None:
                    st["max_exp_avg_sq"] = vmax

    @property
    def params(self):
        return [p for g in self.groups for p in g["params"]]


# ---------------------------------------------------------------- comparison helpers shared by the tests

def _uint_view(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_bitwise_equal(actual, expected, what=""):
    """Same dtype, same shape, and the same bits in every element; all NaNs count as equal to each other
    (NaN payloads are not part of the contract), a NaN never equals a number, and -0.0 differs from +0.0."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    same = (_uint_view(actual) == _uint_view(expected)) | (nan_a & nan_e)
    if not same.all():
        bad = np.flatnonzero(~same.reshape(-1))
        i = bad[0]
        raise AssertionError(f"{what}: {bad.size} of {actual.size} elements differ in bits; first at flat index "
                             f"{i}: {actual.reshape(-1)[i]!r} vs expected {expected.reshape(-1)[i]!r}")

