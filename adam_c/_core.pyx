# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""_core.pyx: the only module that knows both C and Python: buffers in, C status codes out as exceptions."""

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp

import numpy as np

from ._validation import coerce_grad, describe_overlap, grads_sequence, read_group

cnp.import_array()

ctypedef fused floating:
    float
    double


cdef int raise_status(adamc_status status, str context) except -1:
    message = adamc_status_message(status).decode()
    if status == ADAMC_ERR_NO_MEMORY:
        raise MemoryError(f"{context}: {message}")
    raise ValueError(f"{context}: {message}")


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


class AmsgradBuffersMissing(Exception):
    """Raised by StepPlan.run before it changes anything: a group turned amsgrad on, so max_exp_avg_sq
    buffers must be allocated and the plan rebuilt."""


cdef class StepPlan:
    """The pointer table of an optimizer, prepared once: params, state buffers, dtypes, group membership.

    Each run() reads the groups' hyperparameters (through a Python validator), validates and points at the
    grads, then makes ONE C call for all tensors with the GIL released. It changes nothing if anything fails.
    """
    cdef adamc_tensor *table      # one prepared entry per param; grad and step are filled per run
    cdef adamc_tensor *work       # the entries of this run (params whose grad is not None)
    cdef Py_ssize_t *work_index
    cdef adamc_hparams *hparams   # one per group, rewritten each run
    cdef Py_ssize_t n_tensors
    cdef Py_ssize_t n_groups
    cdef int *typenums
    cdef list params              # the arrays the pointers point into: kept alive as long as the plan
    cdef list buffers
    cdef int64_t[::1] steps
    cdef list group_sizes
    cdef list group_has_vmax
    cdef list scales              # int8 state's block scales (absmax arrays), kept alive with the plan
    cdef adamc_autotune *tune     # this plan's measured serial-or-threads decision (same workload every step)

    def __cinit__(self):
        self.tune = adamc_autotune_new()
        if self.tune == NULL:
            raise MemoryError("StepPlan: out of memory")
        self.table = NULL
        self.work = NULL
        self.work_index = NULL
        self.hparams = NULL
        self.typenums = NULL

    def __init__(self, list params, list exp_avgs, list exp_avg_sqs, list max_exp_avg_sqs, list group_sizes,
                 int64_t[::1] steps, list state_codes=None, list exp_avg_absmax=None, list exp_avg_sq_absmax=None,
                 list max_exp_avg_sq_absmax=None, int state_rounding=0):
        cdef Py_ssize_t n = len(params)
        cdef Py_ssize_t i, gi, start
        cdef cnp.ndarray p
        if len(exp_avgs) != n or len(exp_avg_sqs) != n or len(max_exp_avg_sqs) != n or steps.shape[0] != n:
            raise ValueError("StepPlan: state lists must be aligned with params")
        if sum(group_sizes) != n:
            raise ValueError("StepPlan: group sizes must add up to the number of params")
        self.n_tensors = n
        self.n_groups = len(group_sizes)
        self.params = list(params)
        self.buffers = [list(exp_avgs), list(exp_avg_sqs), list(max_exp_avg_sqs)]
        self.scales = [list(exp_avg_absmax or [None] * n), list(exp_avg_sq_absmax or [None] * n),
                       list(max_exp_avg_sq_absmax or [None] * n)]
        self.steps = steps
        self.group_sizes = list(group_sizes)
        self.table = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work = <adamc_tensor *>calloc(max(n, 1), sizeof(adamc_tensor))
        self.work_index = <Py_ssize_t *>calloc(max(n, 1), sizeof(Py_ssize_t))
        self.hparams = <adamc_hparams *>calloc(max(self.n_groups, 1), sizeof(adamc_hparams))
        self.typenums = <int *>calloc(max(n, 1), sizeof(int))
        if not (self.table and self.work and self.work_index and self.hparams and self.typenums):
            raise MemoryError("StepPlan: out of memory")
        self.group_has_vmax = []
        i = 0
        for gi in range(self.n_groups):
            start = i
            for _ in range(group_sizes[gi]):
                p = <cnp.ndarray?>params[i]
                adamc_tensor_init(&self.table[i])
                self.typenums[i] = cnp.PyArray_TYPE(p)
                self.table[i].param = cnp.PyArray_DATA(p)
                self.table[i].exp_avg = cnp.PyArray_DATA(<cnp.ndarray?>exp_avgs[i])
                self.table[i].exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray?>exp_avg_sqs[i])
                if max_exp_avg_sqs[i] is not None:
                    self.table[i].max_exp_avg_sq = cnp.PyArray_DATA(<cnp.ndarray?>max_exp_avg_sqs[i])
                self.table[i].n = cnp.PyArray_SIZE(p)
                self.table[i].hp = &self.hparams[gi]
                self.table[i].dtype = ADAMC_FLOAT32 if self.typenums[i] == cnp.NPY_FLOAT32 else ADAMC_FLOAT64
                self.table[i].index = i  # keys stochastic rounding: stable while the param list is
                if state_codes is not None:  # compressed state (adamc_state_dtype)
                    self.table[i].state_dtype = state_codes[i]
                    self.table[i].state_rounding = state_rounding
                    if self.scales[0][i] is not None:
                        self.table[i].exp_avg_absmax = <float *>cnp.PyArray_DATA(<cnp.ndarray?>self.scales[0][i])
                        self.table[i].exp_avg_sq_absmax = <float *>cnp.PyArray_DATA(
                            <cnp.ndarray?>self.scales[1][i])
                    if self.scales[2][i] is not None:
                        self.table[i].max_exp_avg_sq_absmax = <float *>cnp.PyArray_DATA(
                            <cnp.ndarray?>self.scales[2][i])
                i += 1
            self.group_has_vmax.append(all(max_exp_avg_sqs[j] is not None for j in range(start, i)))

    def __dealloc__(self):
        adamc_autotune_free(self.tune)
        free(self.table)
        free(self.work)
        free(self.work_index)
        free(self.hparams)
        free(self.typenums)

    cdef inline bint grad_fits(self, object grad, Py_ssize_t i):
        """The cheap check every grad passes in normal use: an aligned, native, C-contiguous ndarray of the
        param's dtype and shape. Anything else goes to the Python validator (which converts or raises)."""
        cdef cnp.ndarray g, p
        if not cnp.PyArray_Check(grad):
            return False
        g = <cnp.ndarray>grad
        p = <cnp.ndarray>self.params[i]
        if cnp.PyArray_TYPE(g) != self.typenums[i]:
            return False
        if not (cnp.PyArray_IS_C_CONTIGUOUS(g) and cnp.PyArray_ISALIGNED(g) and cnp.PyArray_ISNOTSWAPPED(g)):
            return False
        if cnp.PyArray_NDIM(g) != cnp.PyArray_NDIM(p):
            return False
        if cnp.PyArray_NDIM(p) == 0:
            return True  # 0-d: no dims to compare (memcmp of NULL pointers is undefined even for 0 bytes)
        return memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(p), cnp.PyArray_NDIM(p) * sizeof(cnp.npy_intp)) == 0

    def run(self, grads, list groups, bint probe=False):
        """One step of every param whose grad is not None. Raises before changing anything.
        probe=True runs the memory-floor probe instead (same table and threading, no Adam math, steps kept)."""
        cdef Py_ssize_t gi, i, k = 0
        cdef adamc_status status
        cdef list keep = []
        if len(groups) != self.n_groups:
            raise RuntimeError("StepPlan: param_groups changed without a rebuild")
        for gi in range(self.n_groups):
            if not read_group_fast(groups[gi], &self.hparams[gi]):
                lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled = read_group(groups[gi], gi)
                fill_hparams(&self.hparams[gi], lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled)
            if self.hparams[gi].amsgrad and not self.group_has_vmax[gi]:
                raise AmsgradBuffersMissing(gi)
        if not isinstance(grads, (list, tuple)):
            grads = grads_sequence(grads)
        if len(grads) != self.n_tensors:
            raise ValueError(f"grads: expected {self.n_tensors} gradients (one per param, in group order), "
                             f"got {len(grads)}")
        for i in range(self.n_tensors):
            grad = grads[i]
            if grad is None:
                continue
            if not self.grad_fits(grad, i):
                grad = coerce_grad(grad, i, self.params[i])
                keep.append(grad)
            self.work[k] = self.table[i]
            self.work[k].grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
            self.work[k].step = self.steps[i] + 1
            self.work_index[k] = i
            k += 1
        with nogil:
            if probe:
                status = adamc_memory_probe(self.work, k)
            else:
                status = adamc_step_multi_tuned(self.work, k, self.tune)
        if status == ADAMC_ERR_OVERLAP:
            raise ValueError(describe_overlap(grads, self.params, list(zip(
                ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), self.buffers))))
        if status != ADAMC_OK:
            raise_status(status, "step")
        if probe:
            return
        for i in range(k):
            self.steps[self.work_index[i]] += 1

    def threading(self):
        """This plan's threading decision: {"threads": 1 serial / n threads / 0 undecided, "serial_us",
        "threads_us" (medians of recent timed steps, None before any), "steps"}."""
        cdef adamc_autotune_info info
        adamc_autotune_get(self.tune, &info)
        return {"threads": info.threads,
                "serial_us": info.serial_ns / 1e3 if info.serial_ns > 0 else None,
                "threads_us": info.parallel_ns / 1e3 if info.parallel_ns > 0 else None,
                "steps": int(info.steps)}


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


def max_threads():
    return ADAMC_MAX_THREADS


def set_autotune(bint enabled):
    adamc_set_autotune(enabled)


def get_autotune():
    return bool(adamc_get_autotune())


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


def version():
    """The C library's version string (adamc_version())."""
    return adamc_version().decode()
