/* adam_c.h: the public C interface of adam_c: fused, in-place Adam/AdamW/AMSGrad steps on float buffers. */
#ifndef ADAM_C_H
#define ADAM_C_H

#include <stddef.h>
#include <stdint.h>

/* ADAMC_VERSION_MAJOR/MINOR/PATCH/STRING/NUMBER: the version of this header, generated from pyproject.toml. */
#include "adam_c_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library in use at run time, e.g. "0.1.0" (compare with ADAMC_VERSION_STRING, the header's). */
const char *adamc_version(void);

/* Every entry point returns one of these; nothing is written when the result is not ADAMC_OK. */
typedef enum adamc_status {
    ADAMC_OK = 0,
    ADAMC_ERR_NULL_POINTER = 1,   /* a required pointer is NULL while n > 0 */
    ADAMC_ERR_MISALIGNED = 2,     /* a pointer is not aligned to its element size */
    ADAMC_ERR_OVERLAP = 3,        /* two buffers of one update share memory */
    ADAMC_ERR_HYPERPARAMETER = 4, /* lr/eps/weight_decay < 0, a beta outside [0, 1), a NaN, or step < 1 */
    ADAMC_ERR_DTYPE = 5,          /* dtype is not ADAMC_FLOAT32 or ADAMC_FLOAT64 */
    ADAMC_ERR_UNKNOWN_TARGET = 6, /* a SIMD target name that is unknown or not supported by this CPU */
    ADAMC_ERR_NO_MEMORY = 7,      /* a table of over 32 tensors needed scratch memory that malloc refused */
    ADAMC_ERR_STRUCT_SIZE = 8,    /* a struct's struct_size is not one this library knows: set it with *_init */
    ADAMC_ERR_OPTION = 9,         /* a step option is invalid: grad_scale <= 0 or not finite, max_grad_norm < 0 or
                                   * NaN, ema_decay outside [0, 1], a rounding mode the dtype cannot use */
    ADAMC_ERR_CALLBACK = 10       /* adamc_step_multi_sharded's reduce_sumsq callback returned nonzero */
} adamc_status;

/* Element types. float16 is IEEE binary16, bfloat16 the upper half of a float32. Low-precision params compute in
 * float32 with float32 state; their grads are in the param's dtype or float32. */
typedef enum adamc_dtype { ADAMC_FLOAT32 = 0, ADAMC_FLOAT64 = 1, ADAMC_FLOAT16 = 2, ADAMC_BFLOAT16 = 3 } adamc_dtype;

/* How a float32 result is written to a low-precision param without a master copy. */
typedef enum adamc_rounding {
    ADAMC_ROUND_NEAREST = 0,   /* round to nearest, ties to even (NaN stays NaN, quiet) */
    ADAMC_ROUND_STOCHASTIC = 1 /* bfloat16 only: rounds up with probability equal to the distance; the random bits
                                * come from a counter-based hash of (seed, step, index, element), so results do
                                * not depend on threads or SIMD target */
} adamc_rounding;

/* Growing structs: adamc_hparams and adamc_tensor start with struct_size, which must be sizeof the struct in the
 * header the caller was compiled with. Set it with adamc_hparams_init / adamc_tensor_init (or the *_INIT macros),
 * which also set every field to its default, then assign the fields you use. A later version may append fields:
 * it will keep accepting the sizes of every earlier header (reading the new fields as their defaults), so a
 * program built against this header keeps working; a library older than the header refuses a size it does not
 * know with ADAMC_ERR_STRUCT_SIZE instead of misreading memory. A struct_size of 0 (a struct not initialised
 * this way) is refused the same way. The *_init functions write the struct of this header and always will: a
 * version that appends fields keeps them writing this size (a program built against this header passes a struct
 * of it) and adds new init functions for the larger struct. */

/* Hyperparameters of one parameter group, as in torch.optim.Adam. */
typedef struct adamc_hparams {
    size_t struct_size;         /* sizeof(adamc_hparams); set by adamc_hparams_init */
    double lr;
    double beta1;
    double beta2;
    double eps;
    double weight_decay;
    int amsgrad;                /* keep max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq) and use it in the denominator */
    int maximize;               /* ascend instead of descend: the gradient is negated */
    int decoupled_weight_decay; /* AdamW: param *= 1 - lr*weight_decay first; else L2: grad += weight_decay*param */
} adamc_hparams;

/* One buffer set of a multi-tensor step. All buffers have n elements, are contiguous and do not overlap each other
 * nor any buffer of another entry (param == grad aliasing is not allowed either). param has `dtype`, grad has
 * the param's dtype, or float32 when grad_float32 is set (float16/bfloat16 params only); exp_avg, exp_avg_sq,
 * max_exp_avg_sq, master and ema hold the compute type: float64 for float64 params, else float32.
 * max_exp_avg_sq is read only when hp->amsgrad is set.
 * master (optional, float16/bfloat16 params only): the float32 master weights. The step reads and updates the
 * master and writes the param as the master rounded to nearest even, in the same pass.
 * ema (optional): an exponential moving average of the updated params (the master where there is one), updated in
 * the same pass with adamc_step_options.ema_decay: ema = ema*d + param*(1 - d), d = 0 on step 1 (Keras' use_ema). */
typedef struct adamc_tensor {
    size_t struct_size;        /* sizeof(adamc_tensor), the same in every entry of a table; set by adamc_tensor_init */
    void *param;
    const void *grad;
    void *exp_avg;
    void *exp_avg_sq;
    void *max_exp_avg_sq;
    size_t n;
    int64_t step;              /* 1-based number of this update (t in the formulas), >= 1 */
    const adamc_hparams *hp;   /* hyperparameters of this tensor's group; shared between entries is fine */
    int dtype;                 /* adamc_dtype */
    /* ---- appended in 0.2: every default is 0/NULL, and an entry of the 0.1 size reads them as defaults */
    int grad_float32;          /* 1: the grad is float32 (for a float16/bfloat16 param); 0 (default): param's dtype */
    int rounding;              /* adamc_rounding of a low-precision param without master; default nearest */
    void *master;              /* float32 master copy, or NULL (default) */
    void *ema;                 /* EMA buffer in the compute type, or NULL (default) */
    uint64_t index;            /* stable number of this tensor, keys stochastic rounding; default 0 */
    /* compressed optimizer state (float32 compute: float32, float16 or bfloat16 params) */
    int state_dtype;           /* adamc_state_dtype of exp_avg, exp_avg_sq, max_exp_avg_sq; default: compute type */
    int state_rounding;        /* adamc_rounding of bfloat16 state (the state's own random stream); default nearest */
    float *exp_avg_absmax;     /* int8 state: one float32 scale per 256-element block (ceil(n / 256)) of each */
    float *exp_avg_sq_absmax;
    float *max_exp_avg_sq_absmax; /* read only with amsgrad */
} adamc_tensor;

/* How the state (exp_avg, exp_avg_sq, max_exp_avg_sq) of an entry is stored. The step decodes it to float32,
 * does float32 math and encodes the new values, in the same pass; the param update uses the float32 values.
 * ADAMC_STATE_BFLOAT16: uint16 bfloat16 bits, rounded to nearest even (or stochastically, state_rounding).
 * ADAMC_STATE_INT8: uint8 codes of the 8-bit dynamic map (Dettmers et al. 2022; signed for exp_avg, unsigned for
 * the others) times a float32 absmax per 256-element block, recomputed from the new values each step; a nonzero
 * exp_avg_sq never becomes code 0; a block holding inf or NaN gets a NaN absmax (the whole block decodes as NaN).
 * A block is never split between threads. */
typedef enum adamc_state_dtype {
    ADAMC_STATE_COMPUTE = 0,
    ADAMC_STATE_BFLOAT16 = 1,
    ADAMC_STATE_INT8 = 2
} adamc_state_dtype;
#define ADAMC_STATE_BLOCK 256

/* torch.optim.Adam's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay, every flag off. */
#define ADAMC_HPARAMS_INIT {sizeof(adamc_hparams), 1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0}
/* An empty float32 entry (NULL buffers, n 0, step 1, no hparams): fill in the buffers, n, step, hp and dtype. */
#define ADAMC_TENSOR_INIT {sizeof(adamc_tensor), NULL, NULL, NULL, NULL, NULL, 0, 1, NULL, ADAMC_FLOAT32,          \
                           0, ADAMC_ROUND_NEAREST, NULL, NULL, 0, ADAMC_STATE_COMPUTE, ADAMC_ROUND_NEAREST, NULL, \
                           NULL, NULL}

/* Set *hp to ADAMC_HPARAMS_INIT (struct_size included). */
void adamc_hparams_init(adamc_hparams *hp);
/* Set *t to ADAMC_TENSOR_INIT (struct_size included). */
void adamc_tensor_init(adamc_tensor *t);

/* One Adam step on one float32 buffer set, in place.
 * Contract: p, m, v (and vmax when amsgrad) are written; g is only read. Buffers must not overlap
 * (ADAMC_ERR_OVERLAP), must be aligned to the element size (ADAMC_ERR_MISALIGNED), any other alignment is fine.
 * n == 0 is a valid no-op (the buffer pointers may then be NULL; hp, step and the codes are checked all the same).
 * step >= 1. Numerics follow torch.optim.Adam(foreach=False):
 * bias corrections and step size are computed in double once, then rounded to the element type.
 * Thread-safe for disjoint buffers; may split a large n over adam_c's worker threads. */
adamc_status adamc_step_f32(float *p, const float *g, float *m, float *v, float *vmax, size_t n, int64_t step,
                            const adamc_hparams *hp);
/* The same for float64. */
adamc_status adamc_step_f64(double *p, const double *g, double *m, double *v, double *vmax, size_t n,
                            int64_t step, const adamc_hparams *hp);

/* One Adam step on a table of buffer sets (any mix of dtypes and groups), as ONE parallel region whose work is
 * split by element ranges across tensor boundaries. Every entry is validated before anything is written.
 * Per-element results are bit-identical to adamc_step_f32/f64 and independent of the thread count.
 * Overlap BETWEEN entries is the caller's duty (checking it costs a sort); overlap within an entry is checked. */
adamc_status adamc_step_multi(const adamc_tensor *tensors, size_t count);

typedef struct adamc_autotune adamc_autotune; /* see "Measured threading decisions" below */

/* What happens around a step, fused with it (adamc_step_multi_ex). */
typedef struct adamc_step_options {
    size_t struct_size;     /* sizeof(adamc_step_options); set by adamc_step_options_init */
    double grad_scale;      /* loss scale: grads are divided by float32(grad_scale) in the compute type inside the
                             * kernel, as torch's fused Adam under GradScaler (a power of two is applied as a
                             * multiply by its exact reciprocal: the same bits); 1 (default) = none. Must be
                             * finite and > 0, as a float32 too. */
    double max_grad_norm;   /* > 0: clip by the global L2 norm of the (unscaled) grads of the whole table, as
                             * torch.nn.utils.clip_grad_norm_: coef = min(1, max_grad_norm / (norm + 1e-6)) folded
                             * into the grad multiplier. 0 (default) = no clipping. */
    int skip_nonfinite;     /* 1: if any grad holds an inf or NaN, write nothing and report skipped (GradScaler) */
    int compute_norm;       /* 1: compute and report the global grad norm even without clipping */
    double ema_decay;       /* d in [0, 1] for entries with an ema buffer; default 0.999 */
    uint64_t seed;          /* key of stochastic rounding; default 0 */
} adamc_step_options;
#define ADAMC_STEP_OPTIONS_INIT {sizeof(adamc_step_options), 1.0, 0.0, 0, 0, 0.999, 0}
void adamc_step_options_init(adamc_step_options *opts);

/* What the options found. */
typedef struct adamc_step_result {
    int skipped;            /* 1 if a non-finite grad made the step write nothing (skip_nonfinite) */
    double grad_norm;       /* global L2 norm of the unscaled grads (double sums in a fixed order, the same bits
                             * for any thread count); 0 for a table with no elements; NaN when not computed */
    double clip_coef;       /* the factor the grads were multiplied with for clipping (1 when not clipped) */
} adamc_step_result;

/* adamc_step_multi_tuned with options (opts NULL: defaults; result may be NULL; tune may be NULL). With
 * skip_nonfinite, max_grad_norm or compute_norm, the grads are read once before the step (a parallel pass with
 * the step's fixed chunks); the step is skipped as a whole or runs with the clip factor folded in. */
adamc_status adamc_step_multi_ex(const adamc_tensor *tensors, size_t count, const adamc_step_options *opts,
                                 adamc_step_result *result, adamc_autotune *tune);

/* Sets *sumsq to the sum of the shards' sums of squared grads (an all-reduce); returns 0, or nonzero to abandon. */
typedef int (*adamc_reduce_fn)(double *sumsq, void *ctx);

/* adamc_step_multi_ex for a table that is one shard of the model (each process holds part of every param, as
 * under FSDP2 or ZeRO). With max_grad_norm, skip_nonfinite or compute_norm, reduce_sumsq (not NULL) is called once
 * per call, in the calling thread, after the grad pass and before anything is written (also for a table with no
 * elements, so every process takes part), with *sumsq = this table's sum of squared unscaled grads and ctx; the
 * norm, clip factor and skip decision then come from the total it leaves there. A non-finite total skips the step
 * (result->skipped; with max_grad_norm alone too, where a whole table would clip by it): every shard sees the same
 * total, so all skip together. A nonzero return abandons the step: ADAMC_ERR_CALLBACK, nothing written. A table
 * refused before the reduction (overlap, alignment, memory) still calls it once, with a NaN, so the other shards
 * skip instead of waiting, and returns its error. Without those options it is adamc_step_multi_ex and
 * reduce_sumsq is not called. */
adamc_status adamc_step_multi_sharded(const adamc_tensor *tensors, size_t count, const adamc_step_options *opts,
                                      adamc_reduce_fn reduce_sumsq, void *ctx, adamc_step_result *result,
                                      adamc_autotune *tune);

/* Converts n elements between float32 and float16/bfloat16 (either direction, or float32 to float32) with the
 * active target's conversions: round to nearest even, exact for float16 (denormals, inf, NaN quieted). Every
 * target gives the same bits, in any floating-point mode (FTZ/DAZ). ADAMC_ERR_DTYPE for any other pair (checked
 * first, also for n == 0); with n > 0, ADAMC_ERR_NULL_POINTER for a NULL buffer and ADAMC_ERR_MISALIGNED for one
 * not aligned to its element size. */
adamc_status adamc_convert(const void *src, int src_dtype, void *dst, int dst_dtype, size_t n);

/* Benchmark helper: the memory floor of a step. Same table, validation, threading and work split as
 * adamc_step_multi, but each element only does p += g, m += g, v += g (the same 4 reads and 3 writes, no math).
 * It overwrites the buffers with meaningless values. */
adamc_status adamc_memory_probe(const adamc_tensor *tensors, size_t count);

/* A human-readable message for a status code (static storage). */
const char *adamc_status_message(adamc_status status);

/* ---- SIMD targets: chosen once at load time (best the CPU supports, or $ADAM_C_TARGET), changeable for tests. */
/* Names of all targets compiled into this build, best last, e.g. "baseline", "avx2", "avx512". */
int adamc_target_count(void);
const char *adamc_target_name(int index);
/* 1 if the CPU (CPUID and the OS's XGETBV state) supports target `index`. */
int adamc_target_supported(int index);
/* Name of the target in use. */
const char *adamc_current_target(void);
/* Switch to a target by name; ADAMC_ERR_UNKNOWN_TARGET if unknown or unsupported (then nothing changes).
 * Not to be called while another thread is inside a step. */
adamc_status adamc_set_target(const char *name);

/* ---- Threads.
 * Large steps are split into chunks fixed by the workload alone (never by the thread count), claimed one at a
 * time by the calling thread and adam_c's own worker threads: a worker the OS has not scheduled (BLAS threads
 * still spinning after a matmul, another OpenMP library, a busy core) is simply not waited for, and results are
 * bit-identical for any number of threads. Workers run each chunk with the caller's floating-point mode. */
#define ADAMC_MAX_THREADS 256
/* Threads a large step may use: the override from adamc_set_num_threads, else the default: OMP_NUM_THREADS (its
 * first value, read when the library is loaded) or the number of CPUs this process may run on (from Python,
 * threadpoolctl.threadpool_limits changes the default too), capped at ADAMC_MAX_THREADS. 1 when built without
 * threads. */
int adamc_get_num_threads(void);
/* n in 1..ADAMC_MAX_THREADS overrides the default thread count; n <= 0 goes back to following the default;
 * larger n is capped. Creating threads that the OS refuses means fewer helpers, never an error. */
void adamc_set_num_threads(int n);
/* Element count (float32 elements; a float64 element counts twice) under which a step always runs serially. */
size_t adamc_get_parallel_threshold(void);
void adamc_set_parallel_threshold(size_t n);
/* 0: the library links no OpenMP runtime (its threads are its own pool). */
int adamc_has_openmp(void);
/* In a fork() child: 1 if the parent had started worker threads (then 0 in the parent, and in a child of a
 * process that had none). A fork child runs its steps serially: it never waits for threads it does not have. */
int adamc_pool_restarts(void);

/* ---- Measured threading decisions for recurring workloads.
 * A caller that steps the same table again and again (an optimizer) keeps one adamc_autotune per table and
 * passes it to adamc_step_multi_tuned. Above the parallel threshold adam_c then times steps run serially and
 * with threads, keeps whichever is faster (threads must win by 3%), and re-tries the other now and then (less and
 * less often while it keeps losing; the first step of a re-try, which wakes sleeping workers, is judged only if it
 * lost by milliseconds), so a step is not made slower by threads that cannot run, and threads that win in steady
 * state are found. The decision changes only timing, never results. (adamc_autotune is declared above: a typedef
 * repeated is C11, and this header is C99.) */
/* A new decision record (NULL if out of memory); free it with adamc_autotune_free. */
adamc_autotune *adamc_autotune_new(void);
void adamc_autotune_free(adamc_autotune *tune);
/* Like adamc_step_multi; tune may be NULL (then: threads above the threshold). Not to be shared between threads
 * running at the same time. */
adamc_status adamc_step_multi_tuned(const adamc_tensor *tensors, size_t count, adamc_autotune *tune);
/* What the record holds: the thread count of the current choice (1 = serial; 0 = not decided yet), the median
 * of recent serial and threaded step times in nanoseconds (0 = none yet), and the steps it has seen. */
typedef struct adamc_autotune_info {
    int threads;
    double serial_ns;
    double parallel_ns;
    uint64_t steps;
} adamc_autotune_info;
void adamc_autotune_get(const adamc_autotune *tune, adamc_autotune_info *info);
/* Global switch: 1 (default) lets adamc_step_multi_tuned measure; 0 makes it use threads above the threshold
 * always (tests, benchmarks of the threaded path). */
void adamc_set_autotune(int enabled);
int adamc_get_autotune(void);

#ifdef __cplusplus
}
#endif
#endif /* ADAM_C_H */
