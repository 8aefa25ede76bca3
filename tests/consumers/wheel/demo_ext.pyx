# cython: language_level=3, boundscheck=False, wraparound=False
"""demo_ext.pyx: a Cython consumer of adam_c: cimports the C API from adam_c.capi and steps in nogil code."""
from adam_c.capi cimport (ADAMC_OK, adamc_hparams, adamc_hparams_init, adamc_status, adamc_status_message,
                          adamc_step_f32, adamc_step_f64)
from libc.stdlib cimport calloc, free


cdef adamc_status step_f32(float[::1] p, float[::1] g, float *m, float *v, float *vmax, long t,
                           const adamc_hparams *hp) noexcept nogil:
    return adamc_step_f32(&p[0], &g[0], m, v, vmax, p.shape[0], t, hp)


cdef adamc_status step_f64(double[::1] p, double[::1] g, double *m, double *v, double *vmax, long t,
                           const adamc_hparams *hp) noexcept nogil:
    return adamc_step_f64(&p[0], &g[0], m, v, vmax, p.shape[0], t, hp)


def run(list params, list grads_per_step):
    """check_demo.py's problem with one adamc_step_f32/f64 call per tensor and step, state in C buffers."""
    cdef adamc_hparams hp[2]
    adamc_hparams_init(&hp[0])
    hp[0].lr = 1e-2
    hp[0].weight_decay = 0.01
    hp[0].amsgrad = 1
    adamc_hparams_init(&hp[1])
    hp[1].lr = 3e-3
    hp[1].beta1 = 0.8
    hp[1].weight_decay = 0.1
    hp[1].decoupled_weight_decay = 1
    hp[1].maximize = 1
    cdef float[::1] p0 = params[0], p2 = params[2]
    cdef double[::1] p1 = params[1]
    cdef float *s0 = <float *>calloc(3 * p0.shape[0], sizeof(float))
    cdef double *s1 = <double *>calloc(3 * p1.shape[0], sizeof(double))
    cdef float *s2 = <float *>calloc(3 * p2.shape[0], sizeof(float))
    cdef float[::1] g0, g2
    cdef double[::1] g1
    cdef long t
    cdef adamc_status st = ADAMC_OK
    try:
        for t in range(1, len(grads_per_step) + 1):
            g0, g1, g2 = grads_per_step[t - 1]
            with nogil:
                st = step_f32(p0, g0, s0, s0 + p0.shape[0], s0 + 2 * p0.shape[0], t, &hp[0])
                if st == ADAMC_OK:
                    st = step_f64(p1, g1, s1, s1 + p1.shape[0], s1 + 2 * p1.shape[0], t, &hp[0])
                if st == ADAMC_OK:
                    st = step_f32(p2, g2, s2, s2 + p2.shape[0], NULL, t, &hp[1])
            if st != ADAMC_OK:
                raise ValueError(adamc_status_message(st).decode())
    finally:
        free(s0)
        free(s1)
        free(s2)
