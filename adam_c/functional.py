"""functional.py: adam_step, the functional form of one Adam update on one set of buffers, in place."""
from . import _core
from ._validation import (buffer_array, check_beta, check_eps, check_lr, check_step, check_weight_decay,
                          first_overlap, flag)


def adam_step(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
              amsgrad=False, max_exp_avg_sq=None, maximize=False, decoupled_weight_decay=False):
    """One Adam/AdamW/AMSGrad update of `param`, `exp_avg`, `exp_avg_sq` (and `max_exp_avg_sq`) in place.

    Every buffer is any writable, C-contiguous float32/float64 buffer-protocol object (NumPy array, memoryview,
    array.array, a torch CPU tensor's .numpy()), all of one dtype and size; `grad` may be read-only.
    `step` is the 1-based number of this update. Buffers must not share memory. Nothing is written if any
    argument is invalid. Numerics: torch.optim.Adam(foreach=False) / AdamW.
    """
    step = check_step(step)
    lr = check_lr(lr)
    beta1 = check_beta(beta1, "beta1")  # named as adam_step's own arguments
    beta2 = check_beta(beta2, "beta2")
    eps = check_eps(eps)
    weight_decay = check_weight_decay(weight_decay)
    amsgrad = flag(amsgrad, "amsgrad")
    maximize = flag(maximize, "maximize")
    decoupled_weight_decay = flag(decoupled_weight_decay, "decoupled_weight_decay")

    named = [("param", buffer_array(param, "param", True)),
             ("grad", buffer_array(grad, "grad", False)),
             ("exp_avg", buffer_array(exp_avg, "exp_avg", True)),
             ("exp_avg_sq", buffer_array(exp_avg_sq, "exp_avg_sq", True))]
    if amsgrad:
        if max_exp_avg_sq is None:
            raise ValueError("max_exp_avg_sq is required when amsgrad=True")
        named.append(("max_exp_avg_sq", buffer_array(max_exp_avg_sq, "max_exp_avg_sq", True)))
    p = named[0][1]
    for name, array in named[1:]:
        if array.dtype != p.dtype:
            raise TypeError(f"{name} has dtype {array.dtype}, but param has dtype {p.dtype}")
        if array.size != p.size:
            raise ValueError(f"{name} has {array.size} elements, but param has {p.size}")
    pair = first_overlap(named)
    if pair is not None:
        raise ValueError(f"{pair[0]} and {pair[1]} share memory; every buffer must be distinct")
    arrays = [a for _, a in named]
    vmax = arrays[4] if amsgrad else None
    _core.step_buffers(arrays[0], arrays[1], arrays[2], arrays[3], vmax, step, lr, beta1, beta2, eps,
                       weight_decay, amsgrad, maximize, decoupled_weight_decay)
