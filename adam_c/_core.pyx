# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""_core.pyx: the only module that knows both C and Python: buffers in, C status codes out as exceptions."""

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp

import numpy as np

from ._validation import MAX_STEP as _MAX_STEP
from ._validation import ReentrantCallError, coerce_grad, describe_overlap, dtype_code, grads_sequence, read_group

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef int raise_status(adamc_status status, str context) except -1:
    message = adamc_status_message(status).decode()
    if status == ADAMC_ERR_NO_MEMORY:
        raise MemoryError(f"{context}: {message}")
    raise ValueError(f"{context}: {message}")


cdef int reduce_trampoline(double *sumsq, void *ctx) noexcept with gil:
    """adamc_step_multi_sharded's reduce_sumsq for TorchStepPlan.run: calls holder[0](sumsq) (a Python
    all-reduce) between the grad pass and the update; an exception is kept in holder[1] and abandons the step."""
    cdef list holder = <list>ctx
    try:
        sumsq[0] = float(holder[0](sumsq[0]))
        return 0
    except BaseException as e:
        holder[1] = e
        return 1


cdef inline void fill_hparams(adamc_hparams *hp, double lr, double beta1, double beta2, double eps,
                              double weight_decay, bint amsgrad, bint maximize,
                              bint decoupled_weight_decay) noexcept nogil:
    hp.struct_size = sizeof(adamc_hparams)
    hp.lr = lr
    hp.beta1 = beta1
    hp.beta2 = beta2
    hp.eps = eps
    hp.weight_decay = weight_decay
    hp.amsgrad = amsgrad
    hp.maximize = maximize
    hp.decoupled_weight_decay = decoupled_weight_decay


def step_buffers(floating[::1] param, const floating[::1] grad, floating[::1] exp_avg,
                 floating[::1] exp_avg_sq, floating[::1] max_exp_avg_sq, int64_t step, double lr,
                 double beta1, double beta2, double eps, double weight_decay, bint amsgrad, bint maximize,
                 bint decoupled_weight_decay):
    """One step on flat, already validated buffers of one dtype (the policy lives in adam_c.functional)."""
    cdef Py_ssize_t n = param.shape[0]
    cdef adamc_hparams hp
    cdef adamc_status status
    cdef floating *vmax = NULL
    if grad.shape[0] != n or exp_avg.shape[0] != n or exp_avg_sq.shape[0] != n:
        raise ValueError("param, grad, exp_avg and exp_avg_sq must have the same number of elements")
    if amsgrad:
        if max_exp_avg_sq is None or max_exp_avg_sq.shape[0] != n:
            raise ValueError("max_exp_avg_sq must have the same number of elements as param when amsgrad=True")
    fill_hparams(&hp, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)
    if n == 0:
        with nogil:
            if floating is float:
                status = adamc_step_f32(NULL, NULL, NULL, NULL, NULL, 0, step, &hp)
            else:
                status = adamc_step_f64(NULL, NULL, NULL, NULL, NULL, 0, step, &hp)
    else:
        if amsgrad:
            vmax = &max_exp_avg_sq[0]
        with nogil:
            if floating is float:
                status = adamc_step_f32(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], vmax, n, step, &hp)
            else:
                status = adamc_step_f64(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], vmax, n, step, &hp)
    if status != ADAMC_OK:
        raise_status(status, "adam_step")


cdef inline bint read_group_fast(object group, adamc_hparams *hp):
    """Fill hp from a group dict whose values are exactly what the constructor stores (floats, a tuple of two
    floats, bools) and in range; False for anything else, which then goes through the Python validator."""
    if type(group) is not dict:
        return False
    cdef dict d = <dict>group
    lr = d.get("lr")
    betas = d.get("betas")
    eps = d.get("eps")
    wd = d.get("weight_decay")
    ams = d.get("amsgrad")
    maximize = d.get("maximize")
    decoupled = d.get("decoupled_weight_decay")
    if not (type(lr) is float and type(eps) is float and type(wd) is float and type(betas) is tuple
            and type(ams) is bool and type(maximize) is bool and type(decoupled) is bool):
        return False
    if len(<tuple>betas) != 2:
        return False
    beta1 = (<tuple>betas)[0]
    beta2 = (<tuple>betas)[1]
    if not (type(beta1) is float and type(beta2) is float):
        return False
    cdef double c_lr = <double>lr, c_eps = <double>eps, c_wd = <double>wd
    cdef double c_b1 = <double>beta1, c_b2 = <double>beta2
    if not (c_lr >= 0.0 and c_eps >= 0.0 and c_wd >= 0.0 and 0.0 <= c_b1 < 1.0 and 0.0 <= c_b2 < 1.0):
        return False
    fill_hparams(hp, c_lr, c_b1, c_b2, c_eps, c_wd, ams is True, maximize is True, decoupled is True)
    return True


class PlanOutdated(Exception):
    """Raised by StepPlan.run and TorchStepPlan.run before they change anything: what the plan points at changed
    (a group's params list or one of its members, a param's or state buffer's dtype, shape, memory or
    writeability; opt.state edited, a param without state got a grad), so the caller must validate the params
    again and build a new plan."""


class AmsgradBuffersMissing(PlanOutdated):
    """Raised by StepPlan.run before it changes anything: a group turned amsgrad on, so max_exp_avg_sq
    buffers must be allocated and the plan rebuilt."""


cdef int64_t MAX_STEP = _MAX_STEP  # the largest step count, 2**62 - 1, in both plans (and checkpoints)
cdef double STEP_LIMIT = float(_MAX_STEP + 1)  # 2**62, exact: a whole double below it is <= MAX_STEP


cdef inline bint kernel_ready(cnp.ndarray a, int typenum, void *data, cnp.npy_intp n):
    """The array still is what the plan recorded: same memory, dtype and size, and still writable, aligned,
    native and C-contiguous (all C-level reads: no Python code runs)."""
    return (cnp.PyArray_DATA(a) == data and cnp.PyArray_TYPE(a) == typenum and cnp.PyArray_SIZE(a) == n
            and cnp.PyArray_ISWRITEABLE(a) and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline cnp.npy_intp state_blocks(cnp.npy_intp n):
    """Block scales of an int8 state buffer of n elements: one per 256-element block, the last one shorter."""
    return (n + ADAMC_STATE_BLOCK - 1) // ADAMC_STATE_BLOCK


cdef dict autotune_report(const adamc_autotune *tune):
    cdef adamc_autotune_info info
    adamc_autotune_get(tune, &info)
    return {"threads": info.threads,
            "serial_us": info.serial_ns / 1e3 if info.serial_ns > 0 else None,
            "threads_us": info.parallel_ns / 1e3 if info.parallel_ns > 0 else None,
            "steps": int(info.steps)}


cdef class StepPlan:
    """The pointer table of an optimizer, prepared once: params, state buffers, dtypes, group membership.

    Each run() reads the groups' hyperparameters (through a Python validator), validates and points at the
    grads, then makes ONE C call for all tensors with the GIL released. It changes nothing if anything fails.

    Every run re-checks, after the last Python code it calls and right before the C call, that each param and
    state buffer still is what the table points at (memory, dtype, size, shape, writeable, layout) and, when
    built with group_lists, that each groups[i]["params"] is still the same list object with the same members;
    otherwise it raises PlanOutdated and the owner rebuilds. `commits` counts the runs whose C call succeeded
    (steps are counted in the same C-level sequence, so an exception raised later cannot undo half a step).
    """
    cdef adamc_tensor *table      # one prepared entry per param; grad and step are filled per run
    cdef adamc_tensor *work       # the entries of this run (params whose grad is not None)
    cdef Py_ssize_t *work_index
    cdef adamc_hparams *hparams   # one per group, rewritten each run
    cdef Py_ssize_t n_tensors
    cdef Py_ssize_t n_groups
    cdef int *typenums
    cdef int *codes               # adamc_dtype of each param
    cdef int *state_typenums      # typenum of its master and EMA (and plain state): float64 for float64 params,
                                  # else float32
    cdef int *store_typenums      # typenum of its exp_avg/exp_avg_sq/max_exp_avg_sq as stored: state_typenums,
                                  # or uint16 (bfloat16 state) / uint8 (int8 state codes)
    cdef list scales              # int8 state's block scales (float32 absmax arrays) per state key, or None
    cdef list params              # the arrays the pointers point into: kept alive as long as the plan
    cdef list buffers
    cdef int64_t[::1] steps
    cdef list group_sizes
    cdef list group_has_vmax
    cdef adamc_autotune *tune     # this plan's measured serial-or-threads decision (same workload every step)
    cdef object group_lists       # None, or the params list object of each group, checked by identity
    cdef int *ndims               # each param's shape when the plan was built, checked every run
    cdef cnp.npy_intp *dims
    cdef Py_ssize_t *dims_start
    cdef public Py_ssize_t commits
    cdef public bint in_c_call    # True while the C call runs with the GIL released (read after fork())

    def __cinit__(self):
        self.tune = adamc_autotune_new()
        if self.tune == NULL:
            raise MemoryError("StepPlan: out of memory")
        self.table = NULL
        self.work = NULL
        self.work_index = NULL
        self.hparams = NULL
        self.typenums = NULL
        self.ndims = NULL
        self.dims = NULL
        self.dims_start = NULL
        self.codes = NULL
        self.state_typenums = NULL
        self.store_typenums = NULL

    def __init__(self, list params, list exp_avgs, list exp_avg_sqs, list max_exp_avg_sqs, list group_sizes,
                 int64_t[::1] steps, group_lists=None, list masters=None, list emas=None, bint stochastic=False,
                 list state_codes=None, list exp_avg_absmax=None, list exp_avg_sq_absmax=None,
                 list max_exp_avg_sq_absmax=None, bint state_stochastic=False):
        cdef Py_ssize_t n = len(params)
        cdef Py_ssize_t i, j, gi, start, total_dims = 0
        cdef cnp.ndarray p
        if len(exp_avgs) != n or len(exp_avg_sqs) != n or len(max_exp_avg_sqs) != n or steps.shape[0] != n:
            raise ValueError("StepPlan: state lists must be aligned with params")
        if sum(group_sizes) != n:
            raise ValueError("StepPlan: group sizes must add up to the number of params")
        self.n_tensors = n
        self.n_groups = len(group_sizes)
        self.params = list(params)
        masters = masters if masters is not None else [None] * n
        emas = emas if emas is not None else [None] * n
        if len(masters) != n or len(emas) != n:
            raise ValueError("StepPlan: master/ema lists must be aligned with params")
        self.buffers = [list(exp_avgs), list(exp_avg_sqs), list(max_exp_avg_sqs), list(masters), list(emas)]
        state_codes = state_codes if state_codes is not None else [ADAMC_STATE_COMPUTE] * n
        self.scales = [list(exp_avg_absmax if exp_avg_absmax is not None else [None] * n),
                       list(exp_avg_sq_absmax if exp_avg_sq_absmax is not None else [None] * n),
                       list(max_exp_avg_sq_absmax if max_exp_avg_sq_absmax is not None else [None] * n)]
        if len(state_codes) != n or any(len(scales) != n for scales in self.scales):
            raise ValueError("StepPlan: state_codes and absmax lists must be aligned with params")
        self.steps = steps
        self.group_sizes = list(group_sizes)
        self.table = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work_index = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        self.hparams = <adamc_hparams *>calloc(max(self.n_groups, 1), sizeof(adamc_hparams))
        self.typenums = <int *>calloc(max(n, 1), sizeof(int))
        if group_lists is not None:
            self.group_lists = list(group_lists)
            if len(self.group_lists) != self.n_groups:
                raise ValueError("StepPlan: group_lists must have one list per group")
            start = 0
            for gi in range(self.n_groups):
                members = self.group_lists[gi]
                if type(members) is not list and type(members) is not tuple:
                    raise TypeError("StepPlan: group_lists must hold lists or tuples")
                if len(members) != group_sizes[gi] or any(
                        members[j] is not params[start + j] for j in range(group_sizes[gi])):
                    raise ValueError("StepPlan: group_lists must hold exactly the params, in order")
                start += group_sizes[gi]
        for i in range(n):
            total_dims += cnp.PyArray_NDIM(<cnp.ndarray?>params[i])
        self.ndims = <int *>calloc(max(n, 1), sizeof(int))
        self.dims_start = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        self.dims = <cnp.npy_intp *>calloc(max(total_dims, 1), sizeof(cnp.npy_intp))
        self.codes = <int *>calloc(max(n, 1), sizeof(int))
        self.state_typenums = <int *>calloc(max(n, 1), sizeof(int))
        self.store_typenums = <int *>calloc(max(n, 1), sizeof(int))
        if not (self.table and self.work and self.work_index and self.hparams and self.typenums and self.ndims
                and self.dims_start and self.dims and self.codes and self.state_typenums and self.store_typenums):
            raise MemoryError("StepPlan: out of memory")
        total_dims = 0
        for i in range(n):
            p = <cnp.ndarray>params[i]
            self.ndims[i] = cnp.PyArray_NDIM(p)
            self.dims_start[i] = total_dims
            for j in range(self.ndims[i]):
                self.dims[total_dims + j] = cnp.PyArray_DIMS(p)[j]
            total_dims += self.ndims[i]
        self.group_has_vmax = []
        i = 0
        for gi in range(self.n_groups):
            start = i
            for _ in range(group_sizes[gi]):
                p = <cnp.ndarray?>params[i]
                adamc_tensor_init(&self.table[i])
                self.typenums[i] = cnp.PyArray_TYPE(p)
                self.codes[i] = dtype_code(p.dtype)
                if self.codes[i] < 0:
                    raise TypeError(f"StepPlan: param {i} has dtype {p.dtype}, not float32, float64, float16 or "
                                    "bfloat16")
                self.state_typenums[i] = cnp.NPY_FLOAT64 if self.codes[i] == ADAMC_FLOAT64 else cnp.NPY_FLOAT32
                if not kernel_ready(p, self.typenums[i], cnp.PyArray_DATA(p), cnp.PyArray_SIZE(p)):
                    raise ValueError(f"StepPlan: param {i} is not writable, aligned, native and C-contiguous")
                state_code = state_codes[i]
                if state_code == ADAMC_STATE_COMPUTE:
                    self.store_typenums[i] = self.state_typenums[i]
                elif state_code == ADAMC_STATE_BFLOAT16 or state_code == ADAMC_STATE_INT8:
                    self.store_typenums[i] = (cnp.NPY_UINT16 if state_code == ADAMC_STATE_BFLOAT16
                                              else cnp.NPY_UINT8)
                    self.table[i].state_dtype = state_code
                    self.table[i].state_rounding = (ADAMC_ROUND_STOCHASTIC if state_stochastic
                                                    and state_code == ADAMC_STATE_BFLOAT16 else ADAMC_ROUND_NEAREST)
                else:
                    raise ValueError(f"StepPlan: state code {state_code!r} of param {i} is not a state dtype")
                for k, buffers in enumerate((exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters, emas)):
                    if buffers[i] is not None and not kernel_ready(
                            <cnp.ndarray?>buffers[i], self.store_typenums[i] if k < 3 else self.state_typenums[i],
                            cnp.PyArray_DATA(<cnp.ndarray>buffers[i]), cnp.PyArray_SIZE(p)):
                        raise ValueError(f"StepPlan: a state buffer of param {i} does not match it")
                for k in range(3):
                    scale = (<list>self.scales[k])[i]
                    if state_code == ADAMC_STATE_INT8 and (k < 2 or max_exp_avg_sqs[i] is not None):
                        if scale is None or not kernel_ready(<cnp.ndarray?>scale, cnp.NPY_FLOAT32,
                                                             cnp.PyArray_DATA(<cnp.ndarray>scale),
                                                             state_blocks(cnp.PyArray_SIZE(p))):
                            raise ValueError(f"StepPlan: an int8 state scale of param {i} does not match it")
                    elif scale is not None:
                        raise ValueError(f"StepPlan: param {i} has a state scale but no int8 state")
                self.table[i].param = cnp.PyArray_DATA(p)
                self.table[i].exp_avg = cnp.PyArray_DATA(<cnp.ndarray?>exp_avgs[i])
                self.table[i].exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray?>exp_avg_sqs[i])
                if max_exp_avg_sqs[i] is not None:
                    self.table[i].max_exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray?>max_exp_avg_sqs[i])
                self.table[i].n = cnp.PyArray_SIZE(p)
                self.table[i].hp = &self.hparams[gi]
                self.table[i].dtype = self.codes[i]
                if masters[i] is not None:
                    self.table[i].master = cnp.PyArray_DATA(<cnp.ndarray?>masters[i])
                if emas[i] is not None:
                    self.table[i].ema = cnp.PyArray_DATA(<cnp.ndarray?>emas[i])
                if stochastic and self.codes[i] == ADAMC_BFLOAT16 and masters[i] is None:
                    self.table[i].rounding = ADAMC_ROUND_STOCHASTIC
                self.table[i].index = <uint64_t>i
                if state_code == ADAMC_STATE_INT8:
                    self.table[i].exp_avg_absmax = <float *>cnp.PyArray_DATA(<cnp.ndarray>self.scales[0][i])
                    self.table[i].exp_avg_sq_absmax = <float *>cnp.PyArray_DATA(<cnp.ndarray>self.scales[1][i])
                    if self.scales[2][i] is not None:
                        self.table[i].max_exp_avg_sq_absmax = <float *>cnp.PyArray_DATA(
                            <cnp.ndarray>self.scales[2][i])
                i += 1
            self.group_has_vmax.append(all(max_exp_avg_sqs[j] is not None for j in range(start, i)))

    def __dealloc__(self):
        adamc_autotune_free(self.tune)
        free(self.table)
        free(self.work)
        free(self.work_index)
        free(self.hparams)
        free(self.typenums)
        free(self.ndims)
        free(self.dims)
        free(self.dims_start)
        free(self.codes)
        free(self.state_typenums)
        free(self.store_typenums)

    cdef bint unchanged(self, list groups):
        """True if everything the table points at is as recorded (see the class doc); runs no Python code.
        The caller has checked len(groups) == n_groups."""
        cdef Py_ssize_t gi, j, i = 0, size
        cdef cnp.ndarray p
        cdef object members
        if self.group_lists is not None:
            for gi in range(self.n_groups):
                group = groups[gi]
                if not isinstance(group, dict):  # a dict subclass (OrderedDict) too: read at C level below
                    return False
                members = (<dict>group).get("params")
                if members is not (<list>self.group_lists)[gi]:
                    return False
                size = self.group_sizes[gi]
                if type(members) is list:
                    if len(<list>members) != size:
                        return False
                    for j in range(size):
                        if (<list>members)[j] is not self.params[i + j]:
                            return False
                elif type(members) is tuple:  # immutable, but checked the same way for clarity
                    if len(<tuple>members) != size:
                        return False
                else:
                    return False
                i += size
        for i in range(self.n_tensors):
            p = <cnp.ndarray>self.params[i]
            if not kernel_ready(p, self.typenums[i], self.table[i].param, <cnp.npy_intp>self.table[i].n):
                return False
            if cnp.PyArray_NDIM(p) != self.ndims[i] or (self.ndims[i] > 0 and memcmp(
                    cnp.PyArray_DIMS(p), &self.dims[self.dims_start[i]],
                    self.ndims[i] * sizeof(cnp.npy_intp)) != 0):
                return False
            if not kernel_ready(<cnp.ndarray>(<list>self.buffers[0])[i], self.store_typenums[i], self.table[i].exp_avg,
                                <cnp.npy_intp>self.table[i].n):
                return False
            if not kernel_ready(<cnp.ndarray>(<list>self.buffers[1])[i], self.store_typenums[i],
                                self.table[i].exp_avg_sq, <cnp.npy_intp>self.table[i].n):
                return False
            if self.table[i].max_exp_avg_sq != NULL and not kernel_ready(
                    <cnp.ndarray>(<list>self.buffers[2])[i], self.store_typenums[i], self.table[i].max_exp_avg_sq,
                    <cnp.npy_intp>self.table[i].n):
                return False
            if self.table[i].exp_avg_absmax != NULL and not (
                    kernel_ready(<cnp.ndarray>(<list>self.scales[0])[i], cnp.NPY_FLOAT32,
                                 self.table[i].exp_avg_absmax, state_blocks(<cnp.npy_intp>self.table[i].n))
                    and kernel_ready(<cnp.ndarray>(<list>self.scales[1])[i], cnp.NPY_FLOAT32,
                                     self.table[i].exp_avg_sq_absmax, state_blocks(<cnp.npy_intp>self.table[i].n))):
                return False
            if self.table[i].max_exp_avg_sq_absmax != NULL and not kernel_ready(
                    <cnp.ndarray>(<list>self.scales[2])[i], cnp.NPY_FLOAT32, self.table[i].max_exp_avg_sq_absmax,
                    state_blocks(<cnp.npy_intp>self.table[i].n)):
                return False
            if self.table[i].master != NULL and not kernel_ready(
                    <cnp.ndarray>(<list>self.buffers[3])[i], self.state_typenums[i], self.table[i].master,
                    <cnp.npy_intp>self.table[i].n):
                return False
            if self.table[i].ema != NULL and not kernel_ready(
                    <cnp.ndarray>(<list>self.buffers[4])[i], self.state_typenums[i], self.table[i].ema,
                    <cnp.npy_intp>self.table[i].n):
                return False
        return True

    cdef inline bint grad_fits(self, object grad, Py_ssize_t i):
        """The cheap check every grad passes in normal use: an aligned, native, C-contiguous ndarray of the
        param's dtype and shape. Anything else goes to the Python validator (which converts or raises)."""
        cdef cnp.ndarray g, p
        if not cnp.PyArray_Check(grad):
            return False
        g = <cnp.ndarray>grad
        p = <cnp.ndarray>self.params[i]
        if cnp.PyArray_TYPE(g) != self.typenums[i] and not (
                cnp.PyArray_TYPE(g) == cnp.NPY_FLOAT32 and self.codes[i] >= ADAMC_FLOAT16):
            return False
        if not (cnp.PyArray_IS_C_CONTIGUOUS(g) and cnp.PyArray_ISALIGNED(g) and cnp.PyArray_ISNOTSWAPPED(g)):
            return False
        if cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p):
            return False
        if cnp.PyArray_NDIM(p) == 0:
            return True  # 0-d: no dims to compare (memcmp of NULL pointers is undefined even for 0 bytes)
        return memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(p), cnp.PyArray_NDIM(p) * sizeof(cnp.npy_intp)) == 0

    cdef list read_grads(self, object grads):
        """The grads as a private list holding each one (converted where needed) until the C call returns."""
        cdef Py_ssize_t i
        if type(grads) is list or type(grads) is tuple:
            grads = list(grads)  # a private copy: the caller's list may change in another thread
        else:
            grads = grads_sequence(grads)
        if len(<list>grads) != self.n_tensors:
            raise ValueError(f"grads: expected {self.n_tensors} gradients (one per param, in group order), "
                             f"got {len(grads)}")
        cdef list held = [None] * self.n_tensors
        for i in range(self.n_tensors):
            grad = (<list>grads)[i]
            if grad is None:
                continue
            if not self.grad_fits(grad, i):
                grad = coerce_grad(grad, i, self.params[i])  # may run Python code (__array__, ...)
            held[i] = grad
        return held

    def run(self, grads, groups, bint probe=False, double grad_scale=1.0, double max_grad_norm=0.0,
            bint skip_nonfinite=False, bint compute_norm=False, double ema_decay=0.999, uint64_t seed=0):
        """One step of every param whose grad is not None. Raises before changing anything.
        probe=True runs the memory-floor probe instead (same table and threading, no Adam math, steps kept).
        The other arguments are adamc_step_options (validated by the caller). Returns (skipped, grad_norm or
        None, clip_coef); a skipped step changes nothing, step counts and `commits` included.

        `grads` is read exactly once per index into a private list that holds every grad (and every converted
        copy) until the C call returns: another thread editing the caller's list, or a sequence that makes a
        new array on each access, cannot free memory C reads."""
        cdef Py_ssize_t gi, i, k = 0
        cdef adamc_status status
        cdef adamc_step_options opts
        cdef adamc_step_result result
        cdef list held
        if type(groups) is not list or len(<list>groups) != self.n_groups:
            raise PlanOutdated("param_groups changed since the plan was built")
        for gi in range(self.n_groups):
            if len(<list>groups) != self.n_groups:  # read_group runs Python code (__float__), which may pop groups
                raise PlanOutdated("param_groups changed while step() was reading them")
            if not read_group_fast((<list>groups)[gi], &self.hparams[gi]):
                lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled = read_group((<list>groups)[gi], gi)
                fill_hparams(&self.hparams[gi], lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled)
            if self.hparams[gi].amsgrad and not self.group_has_vmax[gi]:
                raise AmsgradBuffersMissing(gi)
        try:
            held = self.read_grads(grads)
        except (TypeError, ValueError):
            if len(<list>groups) != self.n_groups or not self.unchanged(<list>groups):
                # the grads may be fine and a param changed: say that instead
                raise PlanOutdated("the params, groups or state buffers changed since the plan was built")
            raise
        # no Python code runs from here to the C call: check what that code may have changed, then point at it
        if len(<list>groups) != self.n_groups or not self.unchanged(<list>groups):
            raise PlanOutdated("the params, groups or state buffers changed while the grads were read")
        for i in range(self.n_tensors):
            grad = held[i]
            if grad is None:
                continue
            if not self.grad_fits(grad, i):
                raise ValueError(f"grads[{i}] changed its dtype or shape while step() was reading the grads")
            self.work[k] = self.table[i]
            self.work[k].grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
            self.work[k].grad_float32 = (self.codes[i] >= ADAMC_FLOAT16
                                         and cnp.PyArray_TYPE(<cnp.ndarray>grad) == cnp.NPY_FLOAT32)
            if self.steps[i] >= MAX_STEP:  # checkpoints hold steps up to MAX_STEP: stop before the step leaves them
                raise ValueError(f"state of params[{i}]: 'step' is {self.steps[i]}; one more step would pass "
                                 "2**62 - 1, the largest step count")
            self.work[k].step = self.steps[i] + 1
            self.work_index[k] = i
            k += 1
        adamc_step_options_init(&opts)
        opts.grad_scale = grad_scale
        opts.max_grad_norm = max_grad_norm
        opts.skip_nonfinite = skip_nonfinite
        opts.compute_norm = compute_norm
        opts.ema_decay = ema_decay
        opts.seed = seed
        self.in_c_call = True
        with nogil:
            if probe:
                status = adamc_memory_probe(self.work, k)
            else:
                status = adamc_step_multi_ex(self.work, k, &opts, &result, self.tune)
        self.in_c_call = False
        skipped = status == ADAMC_OK and not probe and result.skipped
        if status == ADAMC_OK and not probe and not skipped:
            for i in range(k):
                self.steps[self.work_index[i]] += 1
            self.commits += 1
        if status == ADAMC_ERR_OVERLAP:
            raise ValueError(describe_overlap(held, self.params, list(zip(
                ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "master", "ema", "exp_avg_absmax", "exp_avg_sq_absmax",
                 "max_exp_avg_sq_absmax"), self.buffers + self.scales))))
        if status != ADAMC_OK:
            raise_status(status, "step")
        if probe:
            return None
        if skipped:
            return True, result.grad_norm, 1.0
        norm_computed = max_grad_norm > 0 or skip_nonfinite or compute_norm
        return False, (result.grad_norm if norm_computed else None), result.clip_coef

    def threading(self):
        """This plan's threading decision: {"threads": 1 serial / n threads / 0 undecided, "serial_us",
        "threads_us" (medians of recent timed steps, None before any), "steps"}."""
        return autotune_report(self.tune)


# ---------------------------------------------------------------- SIMD targets and threads

def target_names():
    """Names of the SIMD targets compiled into this build, best last."""
    return [adamc_target_name(i).decode() for i in range(adamc_target_count())]


def target_supported(str name):
    for i in range(adamc_target_count()):
        if adamc_target_name(i).decode() == name:
            return bool(adamc_target_supported(i))
    return False


def current_target():
    return adamc_current_target().decode()


def set_target(str name):
    cdef bytes encoded = name.encode()
    cdef adamc_status status = adamc_set_target(encoded)
    if status != ADAMC_OK:
        raise ValueError(f"target: {name!r} is not a SIMD target this CPU supports; "
                         f"compiled: {target_names()}")


def get_num_threads():
    return adamc_get_num_threads()


def set_num_threads_raw(int n):
    adamc_set_num_threads(n)


def get_parallel_threshold():
    return adamc_get_parallel_threshold()


def set_parallel_threshold(size_t n):
    adamc_set_parallel_threshold(n)


def has_openmp():
    return bool(adamc_has_openmp())


def pool_restarts():
    return adamc_pool_restarts()


_EXECUTORS = ("auto", "pool", "openmp")  # adam_internal.h's ADAMC_EXECUTOR_* in order


def set_executor(str mode):
    if mode not in _EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(map(repr, _EXECUTORS))}, got {mode!r}")
    if adamc_set_executor(_EXECUTORS.index(mode)) != 0:
        raise ValueError(f"executor {mode!r} is not available in this build (no threads)")


def get_executor():
    return _EXECUTORS[adamc_get_executor()]


def last_executor():
    return _EXECUTORS[adamc_last_executor()]


def openmp_runtime():
    cdef const char *path = adamc_openmp_runtime_path()
    return None if path == NULL else path.decode("utf-8", "replace")


def max_threads():
    return ADAMC_MAX_THREADS


def set_autotune(bint enabled):
    adamc_set_autotune(enabled)


def get_autotune():
    return bool(adamc_get_autotune())


cdef extern from "adam_internal.h" nogil:  # not in _core.pxd: that one is public (adam_c.capi) and installed
    int adamc_get_default_num_threads()
    void adamc_set_default_num_threads(int n)
    int adamc_autotune_pick(const adamc_autotune *tune)
    void adamc_autotune_finish(adamc_autotune *tune, int mode, double ns, int threads)


# the thread count without an adamc_set_num_threads override: OMP_NUM_THREADS or the CPU count, threadpoolctl's knob
def get_default_num_threads():
    return adamc_get_default_num_threads()


def set_default_num_threads(int n):
    adamc_set_default_num_threads(n)


def autotune_trace(step_time, Py_ssize_t steps, int threads=2):
    """For tests: drive a fresh decision record with synthetic timings. step_time(k, mode) -> ns for step k run
    serially (mode 0) or with threads (mode 1). Returns (modes run, final choice: 1 serial / n threads)."""
    cdef adamc_autotune *tune = adamc_autotune_new()
    cdef adamc_autotune_info info
    cdef Py_ssize_t k
    cdef int mode
    if tune == NULL:
        raise MemoryError("autotune_trace: out of memory")
    modes = []
    try:
        for k in range(steps):
            mode = adamc_autotune_pick(tune)
            modes.append(mode)
            adamc_autotune_finish(tune, mode, float(step_time(k, mode)), threads)
        adamc_autotune_get(tune, &info)
        return modes, info.threads
    finally:
        adamc_autotune_free(tune)


def convert(src, dst):
    """Copy flat array src into dst (same length) converting float32 <-> float16/bfloat16 with the active
    target's conversions (round to nearest even; the same bits on every target)."""
    cdef cnp.ndarray a = <cnp.ndarray?>src
    cdef cnp.ndarray b = <cnp.ndarray?>dst
    cdef adamc_status status
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b) and cnp.PyArray_ISWRITEABLE(b)):
        raise ValueError("convert: src and dst must be C-contiguous, dst writable")
    if a.size != b.size:
        raise ValueError("convert: src and dst must have the same number of elements")
    cdef int sc = dtype_code(a.dtype), dc = dtype_code(b.dtype)
    cdef size_t n = a.size
    cdef const void *sp = cnp.PyArray_DATA(a)
    cdef void *dp = cnp.PyArray_DATA(b)
    with nogil:
        status = adamc_convert(sp, sc, dp, dc, n)
    if status != ADAMC_OK:
        raise_status(status, "convert")


def version():
    """The C library's version string (adamc_version())."""
    return adamc_version().decode()


# ---------------------------------------------------------------- the torch front-end's plan (adam_c.torch)

from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.stdint cimport uintptr_t
from libc.math cimport isfinite


cdef object _KEY_GRAD = "grad"
cdef object _KEY_PARAMS = "params"
cdef object _KEY_STEP = "step"
cdef object _KEY_EXP_AVG = "exp_avg"
cdef object _KEY_EXP_AVG_SQ = "exp_avg_sq"
cdef object _KEY_MAX_EXP_AVG_SQ = "max_exp_avg_sq"
cdef object _KEY_DTYPE = "dtype"
cdef object _KEY_SHAPE = "shape"
cdef object _KEY_IS_CPU = "is_cpu"
cdef object _KEY_EXP_AVG_ABSMAX = "exp_avg_absmax"
cdef object _KEY_EXP_AVG_SQ_ABSMAX = "exp_avg_sq_absmax"
cdef object _KEY_MAX_EXP_AVG_SQ_ABSMAX = "max_exp_avg_sq_absmax"


cdef inline bint same_entry(object inner, object key, object expected):
    """inner[key] is `expected` (None: the key is absent or None), read without calling any Python code."""
    cdef PyObject *found = PyDict_GetItem(inner, key)
    if found == NULL:
        return expected is None
    return <object>found is expected


cdef class ParamEntry:
    """One param's row of a TorchStepPlan, as adam_c.torch prepared it: its memory and element count, its
    adamc_dtype, what a conforming grad looks like (dtype, shape, strides), and its state: the state dict the
    pointers came from, its (step, exp_avg, exp_avg_sq, max_exp_avg_sq or None) tensors and their data pointers,
    or None for a param without state yet."""
    cdef public Py_ssize_t group
    cdef public object param_ptr
    cdef public Py_ssize_t numel
    cdef public int code
    cdef public object dtype, shape, strides
    cdef public object state, tensors
    cdef public object step_ptr, exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr
    cdef public bint step_is_f64

    def __init__(self, Py_ssize_t group, object param_ptr, Py_ssize_t numel, int code, object dtype, object shape,
                 object strides, object state=None, object tensors=None, object step_ptr=0, bint step_is_f64=False,
                 object exp_avg_ptr=0, object exp_avg_sq_ptr=0, object max_exp_avg_sq_ptr=0):
        self.group, self.param_ptr, self.numel, self.code = group, param_ptr, numel, code
        self.dtype, self.shape, self.strides = dtype, shape, strides
        self.state, self.tensors = state, tensors
        self.step_ptr, self.step_is_f64 = step_ptr, step_is_f64
        self.exp_avg_ptr, self.exp_avg_sq_ptr, self.max_exp_avg_sq_ptr = exp_avg_ptr, exp_avg_sq_ptr, max_exp_avg_sq_ptr

    def repeat(self, Py_ssize_t group):
        """The row of this param listed again (in `group`): no elements, so it is stepped once."""
        return ParamEntry(group, self.param_ptr, 0, self.code, self.dtype, self.shape, self.strides, self.state,
                          self.tensors, self.step_ptr, self.step_is_f64, self.exp_avg_ptr, self.exp_avg_sq_ptr,
                          self.max_exp_avg_sq_ptr)


cdef class TorchStepPlan:
    """The pointer table of an adam_c.torch optimizer, prepared once from already validated tensors.

    Holds the params, their state tensors and the storages behind them (so no pointer can dangle), plus what a
    conforming grad looks like (dtype, shape, strides). Each run() checks, without Python-level work beyond
    attribute reads, that nothing moved (the groups, every param's data pointer and state entries), reads each
    param's .grad, points at it, and makes ONE C call for all tensors with the GIL released. A grad that does
    not fit goes through a Python helper (copy to the param's layout, or a clear error). It raises
    PlanOutdated or another error before changing anything."""
    cdef adamc_tensor *table
    cdef adamc_tensor *work
    cdef Py_ssize_t *work_index
    cdef adamc_hparams *hparams
    cdef void **step_ptrs         # per param: data of the 0-d state['step'] tensor, or NULL without state
    cdef char *step_is_f64
    cdef char *has_vmax
    cdef uintptr_t *param_ptrs
    cdef Py_ssize_t *group_of
    cdef Py_ssize_t n_tensors
    cdef Py_ssize_t n_groups
    cdef list params
    cdef list inner               # per param: the state dict object the pointers came from, or None
    cdef list entries             # per param: (step, exp_avg, exp_avg_sq, max_exp_avg_sq or None) or None
    cdef list dtypes, shapes, strides
    cdef list group_dicts, group_lists, group_sizes
    cdef list keep                # storages of params and state: alive as long as the plan
    cdef adamc_autotune *tune     # this plan's measured serial-or-threads decision (same workload every step)
    cdef object groups_obj, state_obj
    cdef Py_ssize_t state_mutations
    cdef object data_ptr, stride_of, read_group, fix_grad, bump_versions, label
    cdef list scales              # per param: None, or (exp_avg_absmax, exp_avg_sq_absmax, max_exp_avg_sq_absmax
                                  # or None) of its int8 state, checked by identity each run
    cdef list watched             # per param: None, or ((tensor, data_ptr, dtype, shape), ...) of its compressed
                                  # state buffers and scales, re-read each run: the kernel trusts their sizes
    cdef uint64_t seed            # key of stochastic state rounding, with each entry's index (its position)
    cdef list mixed               # per param: None, or ((key, tensor, data_ptr, dtype, shape), ...) of its master
                                  # and EMA (float32/compute dtype), re-read each run like compressed buffers
    cdef object storage_of        # tensor -> its storage: held for each grad during the C call (see run)
    cdef public Py_ssize_t commits  # runs whose C call succeeded (the owner keeps the state it created then)
    cdef public bint in_c_call    # True while the C call runs with the GIL released (read after fork())

    def __cinit__(self):
        self.tune = adamc_autotune_new()
        if self.tune == NULL:
            raise MemoryError("TorchStepPlan: out of memory")
        self.table = NULL
        self.work = NULL
        self.work_index = NULL
        self.hparams = NULL
        self.step_ptrs = NULL
        self.step_is_f64 = NULL
        self.has_vmax = NULL
        self.param_ptrs = NULL
        self.group_of = NULL

    def __init__(self, object groups_obj, object state_obj, Py_ssize_t state_mutations, list group_dicts,
                 list params, list infos, list keep, object data_ptr, object stride_of, object read_group, object fix_grad,
                 object bump_versions, list compressed=None, uint64_t seed=0, list mixed=None,
                 bint stochastic=False, object label=None, object storage_of=None):
        """infos: per param (in group order) its ParamEntry. The helpers are Python callables: data_ptr(t),
        stride_of(t), read_group(group, index) -> hyperparameter tuple, fix_grad(grad, index, shape, strides) ->
        tensor in the param's dtype and layout (or raises; PlanOutdated if the param no longer has the shape
        and strides the plan was built for), bump_versions(list).
        compressed: per param None (state in the compute dtype) or (adamc_state_dtype, stochastic, scales, scale_ptrs)
        with scales = (exp_avg_absmax, exp_avg_sq_absmax, max_exp_avg_sq_absmax), tensors or None (int8 only), and
        scale_ptrs their data pointers. seed keys stochastic state rounding (with index = the param's position,
        as StepPlan does). mixed: per param None or (master, ema), each a tensor of the compute dtype or None
        (master only for float16/bfloat16 params). stochastic: bfloat16 params without a master round
        stochastically (keyed by seed and index), as StepPlan. label(i): how errors name param i (default
        params[i]). storage_of(t): t's storage object (torch.Tensor.untyped_storage), held for each grad while the
        C call reads it (another thread's `grad.data = t` or `grad.set_(t)` would free it otherwise)."""
        cdef Py_ssize_t n = len(params), i, gi
        if len(infos) != n:
            raise ValueError("TorchStepPlan: infos must be aligned with params")
        compressed = compressed if compressed is not None else [None] * n
        if len(compressed) != n:
            raise ValueError("TorchStepPlan: compressed must be aligned with params")
        mixed = mixed if mixed is not None else [None] * n
        if len(mixed) != n:
            raise ValueError("TorchStepPlan: mixed must be aligned with params")
        self.seed = seed
        self.label = label if label is not None else (lambda i: f"params[{i}]")
        self.storage_of = storage_of
        self.commits = 0
        self.in_c_call = False
        self.n_tensors = n
        self.n_groups = len(group_dicts)
        self.groups_obj = groups_obj
        self.state_obj = state_obj
        self.state_mutations = state_mutations
        self.group_dicts = list(group_dicts)
        self.group_lists = [g[_KEY_PARAMS] for g in group_dicts]
        self.group_sizes = [len(lst) for lst in self.group_lists]
        if sum(self.group_sizes) != n:
            raise ValueError("TorchStepPlan: group sizes must add up to the number of params")
        self.params = list(params)
        self.keep = list(keep)
        self.data_ptr, self.stride_of = data_ptr, stride_of
        self.read_group, self.fix_grad, self.bump_versions = read_group, fix_grad, bump_versions
        self.table = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work_index = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        self.hparams = <adamc_hparams *>calloc(max(self.n_groups, 1), sizeof(adamc_hparams))
        self.step_ptrs = <void **>calloc(max(n, 1), sizeof(void *))
        self.step_is_f64 = <char *>calloc(max(n, 1), sizeof(char))
        self.has_vmax = <char *>calloc(max(n, 1), sizeof(char))
        self.param_ptrs = <uintptr_t *>calloc(max(n, 1), sizeof(uintptr_t))
        self.group_of = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        if not (self.table and self.work and self.work_index and self.hparams and self.step_ptrs
                and self.step_is_f64 and self.has_vmax and self.param_ptrs and self.group_of):
            raise MemoryError("TorchStepPlan: out of memory")
        self.inner, self.entries, self.dtypes, self.shapes, self.strides = [], [], [], [], []
        self.scales, self.watched, self.mixed = [], [], []
        for i in range(n):
            row = <ParamEntry?>infos[i]
            gi, param_ptr, numel, code = row.group, row.param_ptr, row.numel, row.code
            dtype, shape, strides, inner, entry = row.dtype, row.shape, row.strides, row.state, row.tensors
            adamc_tensor_init(&self.table[i])
            self.group_of[i] = gi
            self.param_ptrs[i] = <uintptr_t>param_ptr
            self.dtypes.append(dtype)
            self.shapes.append(shape)
            self.strides.append(strides)
            self.inner.append(inner)
            self.entries.append(entry)
            self.table[i].param = <void *><uintptr_t>param_ptr
            self.table[i].n = <size_t>numel
            self.table[i].hp = &self.hparams[gi]
            if not ADAMC_FLOAT32 <= code <= ADAMC_BFLOAT16:
                raise ValueError(f"TorchStepPlan: param {i} has no adamc_dtype ({code!r})")
            self.table[i].dtype = code
            self.table[i].index = <uint64_t>i
            self.scales.append(None)
            self.watched.append(None)
            self.mixed.append(None)
            if entry is not None and mixed[i] is not None:
                self.set_mixed(i, mixed[i])
            if stochastic and code == ADAMC_BFLOAT16 and self.table[i].master == NULL:
                self.table[i].rounding = ADAMC_ROUND_STOCHASTIC
            if entry is not None and compressed[i] is not None:
                self.set_compressed(i, entry, compressed[i])
            if entry is not None:
                self.step_ptrs[i] = <void *><uintptr_t>row.step_ptr
                self.step_is_f64[i] = 1 if row.step_is_f64 else 0
                self.table[i].exp_avg = <void *><uintptr_t>row.exp_avg_ptr
                self.table[i].exp_avg_sq = <void *><uintptr_t>row.exp_avg_sq_ptr
                if (<tuple>entry)[3] is not None:  # by presence: an empty tensor's data pointer may be 0
                    self.table[i].max_exp_avg_sq = <void *><uintptr_t>row.max_exp_avg_sq_ptr
                    self.has_vmax[i] = 1

    cdef set_compressed(self, Py_ssize_t i, tuple entry, tuple info):
        """Table entry i stores its state as bfloat16 or int8 codes (info: see __init__); int8 needs one float32
        scale per 256-element block of each state buffer it has."""
        state_code, stochastic, scales, scale_ptrs = info
        cdef size_t blocks = (self.table[i].n + ADAMC_STATE_BLOCK - 1) // ADAMC_STATE_BLOCK
        if state_code != ADAMC_STATE_BFLOAT16 and state_code != ADAMC_STATE_INT8:
            raise ValueError(f"TorchStepPlan: state code {state_code!r} of param {i} is not a compressed state")
        if self.table[i].dtype == ADAMC_FLOAT64:
            raise ValueError(f"TorchStepPlan: param {i} has compressed state but is float64")
        self.table[i].state_dtype = state_code
        self.table[i].state_rounding = (ADAMC_ROUND_STOCHASTIC if stochastic and state_code == ADAMC_STATE_BFLOAT16
                                        else ADAMC_ROUND_NEAREST)
        watched = []
        for k in range(3):
            t = entry[k + 1]
            if t is not None:
                if t.numel() != <Py_ssize_t>self.table[i].n or t.element_size() != (
                        2 if state_code == ADAMC_STATE_BFLOAT16 else 1):
                    raise ValueError(f"TorchStepPlan: a state buffer of param {i} does not match its state code")
                watched.append((t, self.data_ptr(t), t.dtype, t.shape))
        if state_code == ADAMC_STATE_INT8:
            for k in range(3):
                scale = scales[k]
                if (scale is None) != (entry[k + 1] is None):
                    raise ValueError(f"TorchStepPlan: param {i} needs an int8 scale for each state buffer")
                if scale is not None:
                    if scale.numel() != <Py_ssize_t>blocks or scale.element_size() != 4:
                        raise ValueError(f"TorchStepPlan: an int8 state scale of param {i} does not match it")
                    watched.append((scale, self.data_ptr(scale), scale.dtype, scale.shape))
            self.table[i].exp_avg_absmax = <float *><uintptr_t>scale_ptrs[0]
            self.table[i].exp_avg_sq_absmax = <float *><uintptr_t>scale_ptrs[1]
            if scales[2] is not None:
                self.table[i].max_exp_avg_sq_absmax = <float *><uintptr_t>scale_ptrs[2]
            self.scales[i] = tuple(scales)
        self.watched[i] = tuple(watched)

    cdef set_mixed(self, Py_ssize_t i, tuple buffers):
        """Table entry i updates a float32 master (its param written as the master rounded to nearest) and/or an
        EMA of the compute dtype."""
        cdef Py_ssize_t width = 8 if self.table[i].dtype == ADAMC_FLOAT64 else 4
        watched = []
        for key, t in zip(("master", "ema"), buffers):
            if t is None:
                continue
            if key == "master" and self.table[i].dtype < ADAMC_FLOAT16:
                raise ValueError(f"TorchStepPlan: param {i} has a master but is not float16/bfloat16")
            local = getattr(t, "_local_tensor", t)  # a DTensor's local shard (state of a DTensor param)
            if local.numel() != <Py_ssize_t>self.table[i].n or t.element_size() != width:
                raise ValueError(f"TorchStepPlan: the {key} of param {i} does not match it")
            ptr = self.data_ptr(t)
            if key == "master":
                self.table[i].master = <void *><uintptr_t>ptr
            else:
                self.table[i].ema = <void *><uintptr_t>ptr
            watched.append((key, t, ptr, t.dtype, t.shape))
        self.mixed[i] = tuple(watched)

    cdef bint mixed_unchanged(self, Py_ssize_t i) except -1:
        """Param i's state still holds the master/EMA tensors the table points at, with the same memory, dtype and
        shape."""
        inner = self.inner[i]
        for key, t, ptr, dtype, shape in <tuple>self.mixed[i]:
            if not same_entry(inner, key, t):
                return False
            if self.data_ptr(t) != ptr or getattr(t, _KEY_DTYPE) is not dtype or getattr(t, _KEY_SHAPE) != shape:
                return False
        return True

    cdef bint compressed_unchanged(self, Py_ssize_t i) except -1:
        """Param i's int8 scales are still the entry's, and its compressed buffers and scales still have the
        memory, dtype and shape the table was built with (an in-place resize_ or set_ would change them)."""
        inner = self.inner[i]
        scales = self.scales[i]
        if scales is not None and not (same_entry(inner, _KEY_EXP_AVG_ABSMAX, (<tuple>scales)[0])
                                       and same_entry(inner, _KEY_EXP_AVG_SQ_ABSMAX, (<tuple>scales)[1])
                                       and same_entry(inner, _KEY_MAX_EXP_AVG_SQ_ABSMAX, (<tuple>scales)[2])):
            return False
        for t, ptr, dtype, shape in <tuple>self.watched[i]:
            if self.data_ptr(t) != ptr or getattr(t, _KEY_DTYPE) is not dtype or getattr(t, _KEY_SHAPE) != shape:
                return False
        return True

    def __dealloc__(self):
        adamc_autotune_free(self.tune)
        free(self.table)
        free(self.work)
        free(self.work_index)
        free(self.hparams)
        free(self.step_ptrs)
        free(self.step_is_f64)
        free(self.has_vmax)
        free(self.param_ptrs)
        free(self.group_of)

    cdef bint state_unchanged(self, Py_ssize_t i) except -1:
        """The state dict of param i still holds the very tensors the plan points into (string-keyed lookups
        only; replacing the dict itself in opt.state is caught by the state's mutation count), over the memory the
        table points at."""
        inner = self.inner[i]
        entry = <tuple>self.entries[i]
        if not (same_entry(inner, _KEY_STEP, entry[0]) and same_entry(inner, _KEY_EXP_AVG, entry[1])
                and same_entry(inner, _KEY_EXP_AVG_SQ, entry[2])
                and same_entry(inner, _KEY_MAX_EXP_AVG_SQ, entry[3])):
            return False
        # the same tensor objects, but still over the same memory? (`t.data = other` keeps the object and swaps its
        # memory.) The memory the table points at stays alive in self.keep whatever happens, so an unchanged data
        # pointer is the same live storage; compressed buffers are checked with their scales (compressed_unchanged).
        if <uintptr_t>self.data_ptr(entry[0]) != <uintptr_t>self.step_ptrs[i]:
            return False
        if self.watched[i] is None:
            if (<uintptr_t>self.data_ptr(entry[1]) != <uintptr_t>self.table[i].exp_avg
                    or <uintptr_t>self.data_ptr(entry[2]) != <uintptr_t>self.table[i].exp_avg_sq):
                return False
            if entry[3] is not None and <uintptr_t>self.data_ptr(entry[3]) != <uintptr_t>self.table[i].max_exp_avg_sq:
                return False
        return True

    cdef str describe_overlap(self, Py_ssize_t k):
        """Which grad of this run shares memory with its param or state (the C core refused the step)."""
        cdef Py_ssize_t j
        cdef uintptr_t g, other, nbytes
        for j in range(k):
            nbytes = self.work[j].n * (8 if self.work[j].dtype == ADAMC_FLOAT64 else 4)  # state size bounds the grad's
            g = <uintptr_t>self.work[j].grad
            for other in (<uintptr_t>self.work[j].param, <uintptr_t>self.work[j].exp_avg,
                          <uintptr_t>self.work[j].exp_avg_sq, <uintptr_t>self.work[j].max_exp_avg_sq):
                if other and nbytes and (g - other < nbytes if g >= other else other - g < nbytes):
                    return (f"the grad of {self.label(self.work_index[j])} shares memory with "
                            "its param or optimizer state; give it a separate gradient tensor")
        return "step: buffers of one update overlap in memory"

    cdef inline bint grad_fits(self, object grad, Py_ssize_t i) except -1:
        """The check every grad passes in normal use: a CPU tensor of the param's dtype, shape and strides
        (autograd lays grads out like their params). False sends the grad to the Python helper."""
        if getattr(grad, _KEY_DTYPE) is not self.dtypes[i] or getattr(grad, _KEY_IS_CPU) is not True:
            return False
        if self.stride_of(grad) != self.strides[i]:
            return False
        return getattr(grad, _KEY_SHAPE) == self.shapes[i]

    def run(self, list groups, object state, Py_ssize_t state_mutations, double grad_scale=1.0,
            double max_grad_norm=0.0, double ema_decay=0.0, object reduce_sumsq=None):
        """One step of every param whose .grad is not None. `state` is opt.state and `state_mutations` the
        count of its assignments and deletions. grad_scale: the loss scale the kernel divides the grads by (as
        StepPlan.run; the .grad tensors are left as they are). max_grad_norm > 0 clips by the global norm of the (unscaled)
        grads in the C call; ema_decay is the EMA's (validated by the caller). Returns (k, grad_norm or None,
        skipped): the number of params stepped, the global norm when clipping, and whether the shards' total was
        not finite, which skips the step (nothing written, no step counted). reduce_sumsq (params sharded across
        processes): called with this process's sum of squared grads, returns the sum over all processes (see
        adamc_step_multi_sharded). Raises PlanOutdated (rebuild, then run again) or a clear error,
        before changing anything."""
        cdef Py_ssize_t gi, i, j, k = 0
        cdef adamc_status status
        cdef adamc_step_options opts
        cdef adamc_step_result result
        cdef double value, new_value
        cdef float value32
        cdef list grads = []
        cdef list held = []  # the storages of the grads the C call reads: alive until it returns
        cdef list written
        cdef list reducer = None
        if (groups is not self.groups_obj or len(groups) != self.n_groups or state is not self.state_obj
                or state_mutations != self.state_mutations):
            raise PlanOutdated()
        i = 0
        for gi in range(self.n_groups):
            group = groups[gi]
            if group is not self.group_dicts[gi]:
                raise PlanOutdated()
            lst = (<dict>group).get(_KEY_PARAMS)
            if lst is not self.group_lists[gi] or len(lst) != self.group_sizes[gi]:
                raise PlanOutdated()
            for j in range(len(<list>lst)):  # a param replaced in place in the list (identity checks only)
                if (<list>lst)[j] is not self.params[i]:
                    raise PlanOutdated()
                i += 1
            if not read_group_fast(group, &self.hparams[gi]):
                lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled = self.read_group(group, gi)
                fill_hparams(&self.hparams[gi], lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled)
        for i in range(self.n_tensors):
            param = self.params[i]
            grad = getattr(param, _KEY_GRAD)
            if grad is None:
                continue
            if self.step_ptrs[i] == NULL or not self.state_unchanged(i):
                raise PlanOutdated()
            if self.watched[i] is not None and not self.compressed_unchanged(i):
                raise PlanOutdated()
            if self.mixed[i] is not None and not self.mixed_unchanged(i):
                raise PlanOutdated()
            if self.hparams[self.group_of[i]].amsgrad and not self.has_vmax[i]:
                raise PlanOutdated()
            if <uintptr_t>self.data_ptr(param) != self.param_ptrs[i]:
                raise PlanOutdated()
            grads.append(grad)
            self.work_index[k] = i
            k += 1
        for j in range(k):
            i = self.work_index[j]
            grad = grads[j]
            try:
                fits = self.grad_fits(grad, i)
            except ReentrantCallError:  # a grad subclass's __torch_function__ calling into this optimizer
                raise
            except Exception:  # e.g. a sparse grad has no strides: the helper names the problem
                fits = False
            if not fits:
                grad = self.fix_grad(grad, i, self.shapes[i], self.strides[i])
                grads[j] = grad
            self.work[j] = self.table[i]
            if self.storage_of is not None:  # storage, then its pointer: no Python code runs between the two
                held.append(self.storage_of(grad))
            self.work[j].grad = <const void *><uintptr_t>self.data_ptr(grad)
            if self.step_is_f64[i]:
                value = (<double *>self.step_ptrs[i])[0]
                new_value = value + 1.0
            else:
                value32 = (<float *>self.step_ptrs[i])[0]
                value32 = value32 + <float>1.0  # in float32, as torch's `step += 1` on a float32 tensor
                new_value = value32
            if not (isfinite(new_value) and new_value >= 1.0 and new_value < STEP_LIMIT
                    and new_value == <double><int64_t>new_value):
                raise ValueError(f"state of {self.label(i)}: 'step' must be a whole number >= 0 whose next step "
                                 f"is at most 2**62 - 1 (the largest step count), got {new_value - 1.0!r}")
            self.work[j].step = <int64_t>new_value
        adamc_step_options_init(&opts)
        opts.seed = self.seed
        opts.grad_scale = grad_scale
        opts.max_grad_norm = max_grad_norm
        opts.compute_norm = max_grad_norm > 0
        opts.ema_decay = ema_decay
        if reduce_sumsq is not None and max_grad_norm > 0:
            reducer = [reduce_sumsq, None]  # kept alive by this frame until the C call returns
        self.in_c_call = True
        adamc_set_team_hint(1)  # a torch loop's step: torch's OpenMP threads are the hot ones ("auto" executor)
        if reducer is None:
            with nogil:
                status = adamc_step_multi_ex(self.work, k, &opts, &result, self.tune)
        else:
            with nogil:
                status = adamc_step_multi_sharded(self.work, k, &opts, reduce_trampoline, <void *>reducer,
                                                  &result, self.tune)
        adamc_set_team_hint(0)
        self.in_c_call = False
        if status == ADAMC_ERR_OVERLAP:
            raise ValueError(self.describe_overlap(k))
        if status == ADAMC_ERR_CALLBACK:
            raise reducer[1]
        if status == ADAMC_ERR_NULL_POINTER:
            for j in range(k):  # a tensor without memory of its own (a DTensor grad of a plain param) passed the
                if self.work[j].grad == NULL and self.work[j].n:  # quick check: its helper names it
                    self.fix_grad(grads[j], self.work_index[j], self.shapes[self.work_index[j]],
                                  self.strides[self.work_index[j]])
        if status != ADAMC_OK:
            raise_status(status, "step")
        if result.skipped:  # a non-finite total over the shards (reduce_sumsq): nothing was written
            return 0, result.grad_norm, True
        # the step happened: count it and its step counters before any Python code (a signal handler) can run
        for j in range(k):
            i = self.work_index[j]
            if self.step_is_f64[i]:
                (<double *>self.step_ptrs[i])[0] = <double>self.work[j].step
            else:
                (<float *>self.step_ptrs[i])[0] = <float>self.work[j].step
        self.commits += 1
        written = []  # params only: autograd must see that a param saved by a pending graph has changed
        for j in range(k):
            written.append(self.params[self.work_index[j]])
        if k:
            self.bump_versions(written)
        return k, (result.grad_norm if max_grad_norm > 0 else None), False

    def threading(self):
        """This plan's threading decision, as StepPlan.threading()."""
        return autotune_report(self.tune)
