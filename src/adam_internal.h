/* adam_internal.h: what the dispatcher and the per-target kernels share; not installed. */
#ifndef ADAM_INTERNAL_H
#define ADAM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "adam_c.h" /* before the visibility pragma: its functions stay exported */

/* Everything declared here is internal: hidden from the shared library's exported symbols (only adam_c.h's are). */
#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility push(hidden)
#endif

/* Per-tensor constants of one step, computed once in double by the dispatcher (bias corrections, step size)
 * and rounded to the compute type once at the top of the kernel. */
typedef struct adamc_coeffs {
    double decay_keep;       /* AdamW: 1 - lr*weight_decay */
    double weight_decay;     /* Adam L2: grad += weight_decay*param */
    double lerp_weight;      /* 1 - beta1: exp_avg.lerp_(grad, 1 - beta1) */
    double beta2;
    double one_minus_beta2;
    double bias_correction2_sqrt;
    double neg_step_size;    /* -lr / (1 - beta1^t) */
    double eps;
    double grad_div;         /* the loss scale float32(grad_scale) the grads are divided by (GRAD_DIV), else 1 */
    double grad_mul1;        /* grad = (grad [/ grad_div] * grad_mul1) * grad_mul2: +-inv_scale (the sign is
                              * maximize; +-1 with GRAD_DIV) ... */
    double grad_mul2;        /* ... and the clip coefficient; exact no-ops when 1 */
    double inv_scale;        /* the exact reciprocal of a power-of-two loss scale (or 1), for the norm pass */
    double ema_keep;         /* ema = ema*ema_keep + param*ema_weight */
    double ema_weight;
    uint32_t sr_key_lo;      /* stochastic rounding key of (seed, step, tensor index) */
    uint32_t sr_key_hi;
    int variant;             /* ADAMC_VARIANT_* flags */
    int kind;                /* -1: the plain same-type kernel picked by `variant`; else ADAMC_KIND(...) */
    int grad_type;           /* resolved adamc_dtype of the grad */
    int state;               /* adamc_state_dtype of the state (compressed state always runs a general kernel) */
    uint32_t state_key_lo[3]; /* stochastic rounding keys of bfloat16 state: exp_avg, exp_avg_sq, max_exp_avg_sq */
    uint32_t state_key_hi[3];
} adamc_coeffs;

enum {
    ADAMC_VARIANT_AMSGRAD = 1,
    ADAMC_VARIANT_L2 = 2,        /* weight_decay != 0 and not decoupled */
    ADAMC_VARIANT_DECOUPLED = 4, /* weight_decay != 0 and decoupled (AdamW) */
    ADAMC_VARIANT_GRAD_MUL = 8,  /* grads are multiplied (maximize, loss scale, clipping) */
    ADAMC_VARIANT_LERP_LARGE = 16, /* lerp weight >= 0.5: torch's other lerp form */
    ADAMC_VARIANT_GRAD_DIV = 32    /* the loss scale is not a power of two: grads are divided by it (with GRAD_MUL;
                                    * only the general kernels, which divide per tile) */
};

/* The general kernels (any storage types, master, rounding, EMA): AMSGrad and EMA pick one of 4 loops. */
#define ADAMC_KIND(ams, ema) ((ams) * 2 + (ema))

/* One thread's share of one tensor: elements [begin, end) (indices into the whole tensor's buffers). */
typedef void (*adamc_kernel_fn)(const adamc_tensor *t, const adamc_coeffs *c, size_t begin, size_t end);
/* The grads' sum of squares over [begin, end) (after the loss-scale multiply), in double with 8 fixed lanes
 * summed in a fixed order; *nonfinite becomes NaN if any grad is inf or NaN. Same bits on every target. */
typedef double (*adamc_sumsq_fn)(const adamc_tensor *t, const adamc_coeffs *c, size_t begin, size_t end,
                                 double *nonfinite);
/* The memory-floor probe: the step's 4 reads and 3 writes with trivial arithmetic (p += g, m += g, v += g). */
typedef void (*adamc_probe_f32_fn)(float *p, const float *g, float *m, float *v, size_t n);
typedef void (*adamc_probe_f64_fn)(double *p, const double *g, double *m, double *v, size_t n);
/* The memory-floor probe of float32 params with compressed state (adamc_state_dtype `state`: 2-byte or 1-byte m, v;
 * the int8 block scales, 1/64 of those bytes, are left out). */
typedef void (*adamc_probe_state_fn)(float *p, const float *g, void *m, void *v, size_t n, int state);
/* float32 <-> float16/bfloat16 (adamc_convert); returns 0 for an unsupported pair. */
typedef int (*adamc_convert_fn)(const void *src, int src_dtype, void *dst, int dst_dtype, size_t n);

/* One compiled SIMD target: the same kernel source built with that target's ISA flags. */
typedef struct adamc_target {
    const char *name;
    adamc_kernel_fn step_f32;    /* float32 compute: float32, float16 and bfloat16 params */
    adamc_kernel_fn step_f64;
    adamc_sumsq_fn sumsq_f32;
    adamc_sumsq_fn sumsq_f64;
    adamc_probe_f32_fn probe_f32;
    adamc_probe_f64_fn probe_f64;
    adamc_convert_fn convert;
    adamc_probe_state_fn probe_state;
    int (*cpu_supports)(void);
} adamc_target;

#define ADAMC_DECLARE_TARGET(suffix)                                                                              \
    void adamc_kernel_f32_##suffix(const adamc_tensor *, const adamc_coeffs *, size_t, size_t);                   \
    void adamc_kernel_f64_##suffix(const adamc_tensor *, const adamc_coeffs *, size_t, size_t);                   \
    double adamc_sumsq_f32_##suffix(const adamc_tensor *, const adamc_coeffs *, size_t, size_t, double *);         \
    double adamc_sumsq_f64_##suffix(const adamc_tensor *, const adamc_coeffs *, size_t, size_t, double *);         \
    void adamc_probe_f32_##suffix(float *, const float *, float *, float *, size_t);                               \
    void adamc_probe_f64_##suffix(double *, const double *, double *, double *, size_t);                           \
    int adamc_convert_##suffix(const void *, int, void *, int, size_t);                                           \
    void adamc_probe_state_##suffix(float *, const float *, void *, void *, size_t, int);

ADAMC_DECLARE_TARGET(baseline)
#ifdef ADAMC_HAVE_AVX2
ADAMC_DECLARE_TARGET(avx2)
#endif
#ifdef ADAMC_HAVE_AVX512
ADAMC_DECLARE_TARGET(avx512)
#endif
#ifdef ADAMC_HAVE_AVX512_ZEN4
ADAMC_DECLARE_TARGET(avx512_zen4)
#endif

/* ---- The targets (dispatch.c): chosen once at load or by adamc_set_target, read by every step and conversion. */
extern const adamc_target *adamc_active_target;

/* ---- Validation (validate.c) and the sizes it and the step driver share. */
static inline size_t dtype_size(int dtype)
{
    switch (dtype) {
    case ADAMC_FLOAT64: return sizeof(double);
    case ADAMC_FLOAT16:
    case ADAMC_BFLOAT16: return 2;
    default: return sizeof(float);
    }
}
static inline int is_low_precision(int dtype) { return dtype == ADAMC_FLOAT16 || dtype == ADAMC_BFLOAT16; }
/* The param's element size: chunks are cut in param bytes. */
static inline size_t element_size(const adamc_tensor *t) { return dtype_size(t->dtype); }
/* State, master and ema: float64 for float64 params, else float32. */
static inline size_t compute_size(const adamc_tensor *t) { return t->dtype == ADAMC_FLOAT64 ? sizeof(double) : sizeof(float); }
static inline int grad_type_of(const adamc_tensor *t) { return t->grad_float32 ? ADAMC_FLOAT32 : t->dtype; }
/* Bytes per element of exp_avg / exp_avg_sq / max_exp_avg_sq. */
static inline size_t state_size(const adamc_tensor *t)
{
    switch (t->state_dtype) {
    case ADAMC_STATE_BFLOAT16: return 2;
    case ADAMC_STATE_INT8: return 1;
    default: return compute_size(t);
    }
}

/* The 0.1 layout of adamc_tensor ended with `dtype`; its size is that end rounded up to the struct's alignment. */
#define TENSOR_V1_FIELDS offsetof(adamc_tensor, grad_float32)
#define TENSOR_V1_SIZE ((offsetof(adamc_tensor, dtype) + sizeof(int) + _Alignof(adamc_tensor) - 1) / \
                        _Alignof(adamc_tensor) * _Alignof(adamc_tensor))
/* Copies entry i of a caller's table (entries stride bytes apart) into *out, missing fields at their defaults. */
adamc_status adamc_read_entry(const adamc_tensor *tensors, size_t i, size_t stride, adamc_tensor *out);
/* ADAMC_OK if the (normalised) entry can be stepped: dtypes, options, hyperparameters, buffers and overlaps. */
adamc_status adamc_check_tensor(const adamc_tensor *t);
adamc_status adamc_check_options(const adamc_step_options *o);

/* ---- The worker pool (thread_pool.c). */
#if !defined(_WIN32)
#define ADAMC_HAVE_POOL 1
#else
#define ADAMC_HAVE_POOL 0
#endif
#define ADAMC_MAX_CHUNKS ((1u << 20) - 1u)
/* Runs one chunk of a job; `chunk` is in [0, nchunks). */
typedef void (*adamc_chunk_fn)(const void *ctx, size_t chunk);
/* Runs run(ctx, c) for every c in [0, nchunks) on the calling thread and up to threads - 1 pool workers, each
 * chunk with the caller's floating-point mode; returns once every chunk has run. Returns 1 if workers were
 * offered the job, 0 if it ran serially (threads <= 1, one chunk, or the pool busy with another caller's job). */
int adamc_pool_run(adamc_chunk_fn run, const void *ctx, size_t nchunks, int threads);
/* Which threads run a parallel step: ADAMC_EXECUTOR_AUTO (default) uses the thread team of a GNU-compatible
 * OpenMP runtime already loaded in the process (torch's, say) and otherwise adam_c's own pool;
 * ADAMC_EXECUTOR_POOL always the pool; ADAMC_EXECUTOR_OPENMP the team when there is a runtime (else the pool).
 * The chunks and so the results are the same whichever runs them. */
enum { ADAMC_EXECUTOR_AUTO = 0, ADAMC_EXECUTOR_POOL = 1, ADAMC_EXECUTOR_OPENMP = 2 };
int adamc_set_executor(int mode);     /* -1 for an unknown mode (nothing changes) */
/* "auto" uses the team only for calls of this thread made while the hint is on: adam_c.torch's steps, which come
 * right after torch's forward and backward, whose threads are the hot ones; a NumPy loop's BLAS threads are not
 * the team's, and its steps keep the pool. */
void adamc_set_team_hint(int on);
int adamc_get_executor(void);
int adamc_last_executor(void);        /* what ran the last parallel step: POOL or OPENMP */
const char *adamc_openmp_runtime_path(void); /* the loaded OpenMP runtime the team executor uses, or NULL */
/* Registers the fork handler that gives a child process a fresh pool (called once at load). */
void adamc_pool_init(void);
/* The thread count a step uses when adamc_set_num_threads has set none: OMP_NUM_THREADS (read at load) or the CPU
 * count; set (capped to 1..ADAMC_MAX_THREADS) by adam_c's threadpoolctl controller for threadpool_limits. */
int adamc_get_default_num_threads(void);
void adamc_set_default_num_threads(int n);
/* Reads OMP_NUM_THREADS (or counts the CPUs) for the default thread count (called once at load). */
void adamc_threads_init(void);

/* ---- The measured threading decision (autotune.c), exposed for tests that drive it with synthetic timings. */
struct adamc_autotune;
/* The mode the next step runs: 0 serial, 1 threads. */
int adamc_autotune_pick(const struct adamc_autotune *tune);
/* Adds one timed step of `mode`; the faster median decides. */
void adamc_autotune_record(struct adamc_autotune *tune, int mode, double ns);
/* Ends a step of `mode` that took ns nanoseconds (ns < 0: not a usable sample) with `threads` threads. */
void adamc_autotune_finish(struct adamc_autotune *tune, int mode, double ns, int threads);

/* CPU feature checks (cpu_features.c): CPUID and XGETBV, so the OS saves the wide registers too. */
int adamc_cpu_has_avx2_fma(void);
int adamc_cpu_has_avx512(void);
int adamc_cpu_has_avx512_zen4(void);

#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility pop
#endif
#endif /* ADAM_INTERNAL_H */
