# _core.pxd: Cython declarations of the public C header src/adam_c.h.
from libc.stdint cimport int64_t, uint64_t

cdef extern from "adam_c.h" nogil:
    ctypedef enum adamc_status:
        ADAMC_OK
        ADAMC_ERR_NULL_POINTER
        ADAMC_ERR_MISALIGNED
        ADAMC_ERR_OVERLAP
        ADAMC_ERR_HYPERPARAMETER
        ADAMC_ERR_DTYPE
        ADAMC_ERR_UNKNOWN_TARGET
        ADAMC_ERR_NO_MEMORY
        ADAMC_ERR_STRUCT_SIZE
        ADAMC_ERR_OPTION
        ADAMC_ERR_CALLBACK

    ctypedef enum adamc_dtype:
        ADAMC_FLOAT32
        ADAMC_FLOAT64
        ADAMC_FLOAT16
        ADAMC_BFLOAT16

    ctypedef enum adamc_rounding:
        ADAMC_ROUND_NEAREST
        ADAMC_ROUND_STOCHASTIC

    ctypedef enum adamc_state_dtype:
        ADAMC_STATE_COMPUTE
        ADAMC_STATE_BFLOAT16
        ADAMC_STATE_INT8

    enum: ADAMC_STATE_BLOCK

    ctypedef struct adamc_hparams:
        size_t struct_size
        double lr
        double beta1
        double beta2
        double eps
        double weight_decay
        int amsgrad
        int maximize
        int decoupled_weight_decay

    ctypedef struct adamc_tensor:
        size_t struct_size
        void *param
        const void *grad
        void *exp_avg
        void *exp_avg_sq
        void *max_exp_avg_sq
        size_t n
        int64_t step
        const adamc_hparams *hp
        int dtype
        int grad_float32
        int rounding
        void *master
        void *ema
        uint64_t index
        int state_dtype
        int state_rounding
        float *exp_avg_absmax
        float *exp_avg_sq_absmax
        float *max_exp_avg_sq_absmax

    ctypedef struct adamc_step_options:
        size_t struct_size
        double grad_scale
        double max_grad_norm
        int skip_nonfinite
        int compute_norm
        double ema_decay
        uint64_t seed

    ctypedef struct adamc_step_result:
        int skipped
        double grad_norm
        double clip_coef

    void adamc_step_options_init(adamc_step_options *opts)
    adamc_status adamc_convert(const void *src, int src_dtype, void *dst, int dst_dtype, size_t n)

    const char *adamc_version()
    void adamc_hparams_init(adamc_hparams *hp)
    void adamc_tensor_init(adamc_tensor *t)

    adamc_status adamc_step_f32(float *p, const float *g, float *m, float *v, float *vmax, size_t n,
                                int64_t step, const adamc_hparams *hp)
    adamc_status adamc_step_f64(double *p, const double *g, double *m, double *v, double *vmax, size_t n,
                                int64_t step, const adamc_hparams *hp)
    adamc_status adamc_step_multi(const adamc_tensor *tensors, size_t count)
    adamc_status adamc_memory_probe(const adamc_tensor *tensors, size_t count)
    const char *adamc_status_message(adamc_status status)

    int adamc_target_count()
    const char *adamc_target_name(int index)
    int adamc_target_supported(int index)
    const char *adamc_current_target()
    adamc_status adamc_set_target(const char *name)

    int adamc_get_num_threads()
    void adamc_set_num_threads(int n)
    size_t adamc_get_parallel_threshold()
    void adamc_set_parallel_threshold(size_t n)
    int adamc_has_openmp()
    int adamc_pool_restarts()
    int adamc_set_executor(int mode)
    void adamc_set_team_hint(int on)
    int adamc_get_executor()
    int adamc_last_executor()
    const char *adamc_openmp_runtime_path()

    int ADAMC_MAX_THREADS
    ctypedef struct adamc_autotune:
        pass
    ctypedef struct adamc_autotune_info:
        int threads
        double serial_ns
        double parallel_ns
        unsigned long long steps
    adamc_autotune *adamc_autotune_new()
    void adamc_autotune_free(adamc_autotune *tune)
    adamc_status adamc_step_multi_tuned(const adamc_tensor *tensors, size_t count, adamc_autotune *tune)
    adamc_status adamc_step_multi_ex(const adamc_tensor *tensors, size_t count, const adamc_step_options *opts,
                                     adamc_step_result *result, adamc_autotune *tune)
    ctypedef int (*adamc_reduce_fn)(double *sumsq, void *ctx) noexcept
    adamc_status adamc_step_multi_sharded(const adamc_tensor *tensors, size_t count,
                                          const adamc_step_options *opts, adamc_reduce_fn reduce_sumsq, void *ctx,
                                          adamc_step_result *result, adamc_autotune *tune)
    void adamc_autotune_get(const adamc_autotune *tune, adamc_autotune_info *info)
    void adamc_set_autotune(int enabled)
    int adamc_get_autotune()
