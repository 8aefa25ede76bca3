/* adam_c.c: the step driver: thread settings, per-step constants, chunks over the table, the norm pass. */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT: the CPUs this process may run on */
#endif
#include "adam_c.h"
#include "adam_internal.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <errno.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif

/* ------------------------------------------------------------------ threads */

/* adamc_set_num_threads' value (0: none), and what a step uses without it: OMP_NUM_THREADS or the CPU count,
 * read once at load (as an OpenMP runtime reads it), changed at run time by threadpoolctl's limits. */
static int num_threads_override = 0;
static int num_threads_default = 1;

static int cap_threads(long n) { return n < 1 ? 1 : (n > ADAMC_MAX_THREADS ? ADAMC_MAX_THREADS : (int)n); }

/* The CPUs this process may run on (its affinity mask: taskset, a container's cpuset), as OpenMP counts them. */
static int available_cpus(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? cap_threads(n) : 1;
}

/* OMP_NUM_THREADS read as OpenMP reads it: the first value of a list ("4,2" sets nested levels, adam_c has one),
 * blanks around it allowed; anything else (empty, 0, negative, not a number) leaves the CPU count. */
static int threads_from_environment(void)
{
    const char *s = getenv("OMP_NUM_THREADS");
    if (s) {
        char *end;
        errno = 0;
        long n = strtol(s, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (end != s && (*end == '\0' || *end == ',') && n >= 1)
            return errno == ERANGE ? ADAMC_MAX_THREADS : cap_threads(n);
    }
    return cap_threads(available_cpus());
}

void adamc_threads_init(void) { num_threads_default = threads_from_environment(); }

/* Below this many float32 elements (or half as many float64) a step is one serial pass: even a worker that is
 * already awake costs more than it saves. Above it, an optimizer's plan measures (autotune.c). */
static size_t parallel_threshold = 16384;
static int autotune_enabled = 1;
/* Work units are cut on 64-byte boundaries of the param buffer so no cache line is written by two threads. */
#define CACHE_LINE 64

int adamc_has_openmp(void) { return 0; }

int adamc_get_num_threads(void)
{
#if ADAMC_HAVE_POOL
    return num_threads_override > 0 ? num_threads_override : num_threads_default;
#else
    return 1;
#endif
}

void adamc_set_num_threads(int n) { num_threads_override = n <= 0 ? 0 : cap_threads(n); }
int adamc_get_default_num_threads(void) { return num_threads_default; }
void adamc_set_default_num_threads(int n) { num_threads_default = cap_threads(n); }
size_t adamc_get_parallel_threshold(void) { return parallel_threshold; }
void adamc_set_parallel_threshold(size_t n) { parallel_threshold = n; }
void adamc_set_autotune(int enabled) { autotune_enabled = enabled != 0; }
int adamc_get_autotune(void) { return autotune_enabled; }

/* ------------------------------------------------------------------ the step */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void compute_coeffs(const adamc_tensor *t, const adamc_step_options *o, adamc_coeffs *c)
{
    const adamc_hparams *hp = t->hp;
    const double step = (double)t->step;
    /* torch: bias_correction1 = 1 - beta1**step; step_size = lr / bias_correction1;
     *        bias_correction2_sqrt = (1 - beta2**step) ** 0.5 -- all Python floats, i.e. double */
    const double bias_correction1 = 1.0 - pow(hp->beta1, step);
    const double bias_correction2 = 1.0 - pow(hp->beta2, step);
    c->neg_step_size = -(hp->lr / bias_correction1);
    c->bias_correction2_sqrt = pow(bias_correction2, 0.5);
    c->lerp_weight = 1.0 - hp->beta1;
    c->beta2 = hp->beta2;
    c->one_minus_beta2 = 1.0 - hp->beta2;
    c->eps = hp->eps;
    c->weight_decay = hp->weight_decay;
    c->decay_keep = 1.0 - hp->lr * hp->weight_decay;
    /* torch's fused Adam under GradScaler divides the grads by float32(scale) in the compute type. For a power of
     * two whose reciprocal is a normal float32 (every GradScaler scale) the multiply by that exact reciprocal
     * rounds the same exact quotient, so it gives the same bits (under FTZ/DAZ too); any other scale divides. */
    const double scale = (double)(float)o->grad_scale;
    int exponent;
    const int pow2 = frexp(scale, &exponent) == 0.5 && exponent - 1 >= -126 && exponent - 1 <= 126;
    c->inv_scale = pow2 ? 1.0 / scale : 1.0;
    c->grad_div = pow2 ? 1.0 : scale;
    c->grad_mul1 = hp->maximize ? -c->inv_scale : c->inv_scale; /* -(g*s) == g*(-s): the sign is exact */
    c->grad_mul2 = 1.0;                                           /* the clip coefficient, set after the norm */
    c->ema_keep = t->step == 1 ? 0.0 : o->ema_decay;              /* Keras: the first update copies the param */
    c->ema_weight = 1.0 - c->ema_keep;
    const uint64_t key = mix64(o->seed ^ mix64((uint64_t)t->step ^ mix64(t->index)));
    c->sr_key_lo = (uint32_t)key;
    c->sr_key_hi = (uint32_t)(key >> 32);
    for (int s = 0; s < 3; s++) { /* the state's streams: exp_avg, exp_avg_sq, max_exp_avg_sq */
        const uint64_t state_key = mix64(key + 1u + (uint64_t)s);
        c->state_key_lo[s] = (uint32_t)state_key;
        c->state_key_hi[s] = (uint32_t)(state_key >> 32);
    }
    c->state = t->state_dtype;
    c->grad_type = grad_type_of(t);
    int variant = 0;
    if (hp->amsgrad)
        variant |= ADAMC_VARIANT_AMSGRAD;
    if (hp->weight_decay != 0.0)
        variant |= hp->decoupled_weight_decay ? ADAMC_VARIANT_DECOUPLED : ADAMC_VARIANT_L2;
    if (hp->maximize || o->grad_scale != 1.0 || o->max_grad_norm > 0.0)
        variant |= ADAMC_VARIANT_GRAD_MUL;
    if (!pow2)
        variant |= ADAMC_VARIANT_GRAD_MUL | ADAMC_VARIANT_GRAD_DIV;
    /* torch decides lerp's form on the weight in the compute type: |w| < 0.5 */
    const int lerp_small = t->dtype == ADAMC_FLOAT64 ? c->lerp_weight < 0.5 : (float)c->lerp_weight < 0.5f;
    if (!lerp_small)
        variant |= ADAMC_VARIANT_LERP_LARGE;
    c->variant = variant;
    /* the kernel: the same-type one for float32/float64 with compute-type state, no EMA and no division, else a
     * general one */
    if (!is_low_precision(t->dtype) && !t->ema && t->state_dtype == ADAMC_STATE_COMPUTE && pow2)
        c->kind = -1;
    else
        c->kind = ADAMC_KIND(hp->amsgrad != 0, t->ema != NULL);
}

/* Runs elements [begin, end) of tensor t with the active target's kernel. */
static void run_segment(const adamc_target *target, const adamc_tensor *t, const adamc_coeffs *c, size_t begin,
                        size_t end)
{
    if (end > begin)
        (t->dtype == ADAMC_FLOAT64 ? target->step_f64 : target->step_f32)(t, c, begin, end);
}

/* Elements a cut inside tensor t must be a multiple of (relative to the tensor's start; a power of two): int8
 * state's block, so a block (and its absmax) is never split between chunks; else 1. */
static size_t cut_granule(const adamc_tensor *t)
{
    return t->state_dtype == ADAMC_STATE_INT8 ? ADAMC_STATE_BLOCK : 1;
}

/* The norm pass cuts at multiples of this many elements of a tensor (never by address): its sums then depend on
 * the tensor sizes alone, not on where the buffers happen to be allocated. */
#define NORM_GRANULE 64u

/* Where byte `cut` of the concatenated work lands: tensor index and element offset, moved forward to the next
 * 64-byte boundary of the param buffer so neighbouring chunks never share a cache line (then to the tensor's cut
 * granule). Both chunks beside a cut compute it with this same function, so the chunks tile the work exactly.
 * by_index (the read-only norm pass): to the next multiple of NORM_GRANULE elements instead of the cache line. */
static void locate_cut(const adamc_tensor *tensors, const size_t *byte_start, size_t count, size_t cut,
                       int by_index, size_t *tensor_out, size_t *offset_out)
{
    size_t lo = 0, hi = count; /* find the last tensor whose start is <= cut */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (byte_start[mid] <= cut)
            lo = mid;
        else
            hi = mid;
    }
    const adamc_tensor *t = &tensors[lo];
    const size_t elsize = element_size(t);
    size_t offset = (cut - byte_start[lo]) / elsize;
    uintptr_t addr = (uintptr_t)t->param + offset * elsize;
    size_t misalign = addr % CACHE_LINE;
    if (by_index)
        misalign = 0;
    if (misalign && offset > 0)
        offset += (CACHE_LINE - misalign) / elsize;
    size_t granule = cut_granule(t);
    if (by_index && granule < NORM_GRANULE)
        granule = NORM_GRANULE; /* cut_granule is a power of two: the larger one is a multiple of the other */
    if (granule > 1 && offset % granule)
        offset += granule - offset % granule;
    if (offset > t->n)
        offset = t->n;
    *tensor_out = lo;
    *offset_out = offset;
}

struct step_job;
/* What one thread does with elements [begin, end) of tensor i within chunk `chunk`. */
typedef void (*segment_fn)(const struct step_job *job, size_t chunk, size_t i, size_t begin, size_t end);

/* One step's work, cut into chunks of `chunk_bytes` of the concatenated params (the last one shorter). */
typedef struct step_job {
    const adamc_target *target;
    const adamc_tensor *tensors; /* normalised copies of the caller's entries */
    const adamc_coeffs *coeffs;
    const size_t *byte_start;
    size_t count;
    size_t total_bytes;
    size_t chunk_bytes;
    segment_fn segment;
    double *partial;             /* norm pass: 2 doubles per chunk (sum of squares, non-finite marker) */
    int by_index;                /* cut by element index only (the norm pass), see locate_cut */
} step_job;

static void step_segment(const step_job *job, size_t chunk, size_t i, size_t begin, size_t end)
{
    (void)chunk;
    run_segment(job->target, &job->tensors[i], &job->coeffs[i], begin, end);
}

static void probe_segment(const step_job *job, size_t chunk, size_t i, size_t begin, size_t end)
{
    (void)chunk;
    const adamc_tensor *t = &job->tensors[i];
    const size_t n = end - begin;
    if (t->dtype == ADAMC_FLOAT32 && t->state_dtype != ADAMC_STATE_COMPUTE)
        job->target->probe_state((float *)t->param + begin, (const float *)t->grad + begin,
                                 (unsigned char *)t->exp_avg + begin * state_size(t),
                                 (unsigned char *)t->exp_avg_sq + begin * state_size(t), n, t->state_dtype);
    else if (t->dtype == ADAMC_FLOAT32)
        job->target->probe_f32((float *)t->param + begin, (const float *)t->grad + begin,
                               (float *)t->exp_avg + begin, (float *)t->exp_avg_sq + begin, n);
    else if (t->dtype == ADAMC_FLOAT64)
        job->target->probe_f64((double *)t->param + begin, (const double *)t->grad + begin,
                               (double *)t->exp_avg + begin, (double *)t->exp_avg_sq + begin, n);
}

/* The grads' sum of squares of this segment, added to its chunk's partial (segments of a chunk run in order on
 * one thread, so the sum's order is fixed by the chunking alone). */
static void norm_segment(const step_job *job, size_t chunk, size_t i, size_t begin, size_t end)
{
    const adamc_tensor *t = &job->tensors[i];
    double bad = 0.0;
    const double sq = (t->dtype == ADAMC_FLOAT64 ? job->target->sumsq_f64 : job->target->sumsq_f32)(
        t, &job->coeffs[i], begin, end, &bad);
    job->partial[2 * chunk] += sq;
    job->partial[2 * chunk + 1] += bad;
}

static void run_chunk(const void *ctx, size_t chunk)
{
    const step_job *job = (const step_job *)ctx;
    size_t t0, off0, t1, off1;
    locate_cut(job->tensors, job->byte_start, job->count, chunk * job->chunk_bytes, job->by_index, &t0, &off0);
    const size_t cut1 = (chunk + 1) * job->chunk_bytes;
    if (cut1 >= job->total_bytes) {
        t1 = job->count - 1;
        off1 = job->tensors[t1].n;
    } else {
        locate_cut(job->tensors, job->byte_start, job->count, cut1, job->by_index, &t1, &off1);
    }
    for (size_t i = t0; i <= t1; i++) {
        const size_t begin = i == t0 ? off0 : 0;
        const size_t end = i == t1 ? off1 : job->tensors[i].n;
        if (begin < end)
            job->segment(job, chunk, i, begin, end);
    }
}

/* Chunk size from the workload alone (never from the thread count, so results cannot depend on it): at least
 * 32 KiB of params, at most 256 chunks, a multiple of the cache line. */
#define MIN_CHUNK_BYTES (32u * 1024u)
#define TARGET_CHUNKS 256u
static size_t chunk_bytes_for(size_t total_bytes)
{
    size_t bytes = (total_bytes + TARGET_CHUNKS - 1) / TARGET_CHUNKS;
    if (bytes < MIN_CHUNK_BYTES)
        bytes = MIN_CHUNK_BYTES;
    return (bytes + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
}

static double elapsed_ns(const struct timespec *start)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    return (double)(end.tv_sec - start->tv_sec) * 1e9 + (double)(end.tv_nsec - start->tv_nsec);
}

/* ------------------------------------------------------------------ running a table */

/* Validates the table and the options, computes per-tensor constants once, then runs `segment` over all elements
 * as fixed chunks of the concatenated tensors: serially below the threshold, else on the worker pool (see
 * thread_pool.c), where the caller never waits for a thread that is not running. With norm/inf options, a first
 * pass over the grads (same chunks) decides whether the step runs and with which clip factor. */
/* The norm decisions from this table's sum of squares (and its NaN marker), after the shards' reduction when
 * the options ask for one: fills found; returns ADAMC_ERR_CALLBACK if the reduction failed. */
typedef struct shard_reduce {
    adamc_reduce_fn fn; /* NULL: the table is the whole model */
    void *ctx;
    int called;         /* set once fn ran */
} shard_reduce;

static adamc_status decide_norm(const adamc_step_options *o, shard_reduce *reduce, double sumsq, double bad,
                                adamc_step_result *found)
{
    if (reduce->fn) {
        reduce->called = 1;
        if (reduce->fn(&sumsq, reduce->ctx) != 0)
            return ADAMC_ERR_CALLBACK;
        if (!isfinite(sumsq)) {
            /* every shard sees this total, so all skip together: a NaN may be a refused shard's (no norm to clip
             * by), and clipping by a non-finite norm would write NaN into every shard */
            found->grad_norm = sqrt(sumsq);
            found->skipped = 1;
            return ADAMC_OK;
        }
    }
    const double norm = sqrt(sumsq); /* inf or NaN when a grad is (squares are >= 0, so no inf - inf) */
    found->grad_norm = norm;
    if (isnan(bad) && o->skip_nonfinite) {
        found->skipped = 1;
    } else if (o->max_grad_norm > 0.0) {
        /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), clamped to 1 */
        double coef = o->max_grad_norm / (norm + 1e-6);
        found->clip_coef = coef > 1.0 ? 1.0 : coef;
    }
    return ADAMC_OK;
}

static adamc_status run_table(const adamc_tensor *tensors, size_t count, segment_fn segment,
                              const adamc_step_options *opts, shard_reduce *reduce, adamc_step_result *result,
                              adamc_autotune *tune)
{
    adamc_step_options defaults;
    adamc_step_options_init(&defaults);
    const adamc_step_options *o = opts ? opts : &defaults;
    shard_reduce whole = {NULL, NULL, 0};
    if (!reduce)
        reduce = &whole;
    /* what the options found, copied to *result only when returning ADAMC_OK (a refused call writes nothing) */
    adamc_step_result found = {0, NAN, 1.0};
    adamc_status s = adamc_check_options(o);
    if (s != ADAMC_OK)
        return s;
    const int norm_pass = segment == step_segment && (o->max_grad_norm > 0.0 || o->skip_nonfinite || o->compute_norm);
    if (o->max_grad_norm > 0.0 || o->skip_nonfinite || o->compute_norm)
        found.grad_norm = 0.0; /* the norm of no elements (torch's clip_grad_norm_ of no grads), until computed */
    if (count == 0) {
        /* a shard with nothing to step still takes part in the shards' reduction */
        if (norm_pass && reduce->fn && (s = decide_norm(o, reduce, 0.0, 0.0, &found)) != ADAMC_OK)
            return s;
        if (result)
            *result = found;
        return ADAMC_OK;
    }
    if (!tensors)
        return ADAMC_ERR_NULL_POINTER;
    size_t stride = 0;
    memcpy(&stride, tensors, sizeof stride);
    if (stride != sizeof(adamc_tensor) && stride != TENSOR_V1_SIZE)
        return ADAMC_ERR_STRUCT_SIZE;

    /* small tables live on the stack; large ones cost one allocation per step */
    enum { STACK_TENSORS = 32 };
    adamc_coeffs coeff_stack[STACK_TENSORS];
    size_t start_stack[STACK_TENSORS];
    adamc_tensor entry_stack[STACK_TENSORS];
    adamc_coeffs *coeffs = coeff_stack;
    size_t *byte_start = start_stack;
    adamc_tensor *entries = entry_stack;
    void *heap = NULL;
    if (count > STACK_TENSORS) {
        if (count > SIZE_MAX / (sizeof(adamc_coeffs) + sizeof(adamc_tensor) + sizeof(size_t)))
            return ADAMC_ERR_NO_MEMORY;
        heap = malloc(count * (sizeof(adamc_coeffs) + sizeof(adamc_tensor) + sizeof(size_t)));
        if (!heap)
            return ADAMC_ERR_NO_MEMORY;
        coeffs = (adamc_coeffs *)heap;
        entries = (adamc_tensor *)(coeffs + count);
        byte_start = (size_t *)(entries + count);
    }
    size_t total_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        s = adamc_read_entry(tensors, i, stride, &entries[i]);
        if (s == ADAMC_OK)
            s = adamc_check_tensor(&entries[i]);
        if (s == ADAMC_OK && segment == probe_segment && is_low_precision(entries[i].dtype))
            s = ADAMC_ERR_DTYPE; /* the probe models the float32/float64 step only */
        if (s != ADAMC_OK) {
            free(heap);
            return s;
        }
        byte_start[i] = total_bytes;
        total_bytes += entries[i].n * element_size(&entries[i]);
    }
    if (total_bytes == 0) {
        free(heap);
        if (norm_pass && reduce->fn && (s = decide_norm(o, reduce, 0.0, 0.0, &found)) != ADAMC_OK)
            return s;
        if (result)
            *result = found;
        return ADAMC_OK;
    }
    for (size_t i = 0; i < count; i++)
        compute_coeffs(&entries[i], o, &coeffs[i]);

    const size_t chunk_bytes = chunk_bytes_for(total_bytes);
    step_job job = {adamc_active_target, entries, coeffs, byte_start, count, total_bytes, chunk_bytes, segment, NULL, 0};
    const size_t nchunks = (total_bytes + chunk_bytes - 1) / chunk_bytes;
    int nthreads = adamc_get_num_threads();
    /* the threshold is in float32 elements; a float64 element counts double (divided, so no overflow) */
    if (total_bytes / sizeof(float) < parallel_threshold || nchunks < 2)
        nthreads = 1;

    if (norm_pass) {
        double *partial = (double *)calloc(2 * nchunks, sizeof(double));
        if (!partial) {
            free(heap);
            return ADAMC_ERR_NO_MEMORY;
        }
        step_job norm_job = job;
        norm_job.segment = norm_segment;
        norm_job.partial = partial;
        norm_job.by_index = 1;
        adamc_pool_run(run_chunk, &norm_job, nchunks, nthreads);
        double sumsq = 0.0, bad = 0.0;
        for (size_t k = 0; k < nchunks; k++) { /* chunk order: the same bits for any thread count */
            sumsq += partial[2 * k];
            bad += partial[2 * k + 1];
        }
        free(partial);
        s = decide_norm(o, reduce, sumsq, bad, &found);
        if (s != ADAMC_OK || found.skipped) {
            free(heap);
            if (s == ADAMC_OK && result)
                *result = found;
            return s;
        }
        if (o->max_grad_norm > 0.0)
            for (size_t i = 0; i < count; i++)
                coeffs[i].grad_mul2 = found.clip_coef;
    }

    if (nthreads > 1 && tune && autotune_enabled) {
        const int mode = adamc_autotune_pick(tune);
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        const int offered = adamc_pool_run(run_chunk, &job, nchunks, mode ? nthreads : 1);
        const double ns = elapsed_ns(&start);
        /* a run that found the pool busy (another thread's step) was serial whatever was asked: not a sample */
        adamc_autotune_finish(tune, mode, mode == 0 || offered ? ns : -1.0, nthreads);
    } else {
        adamc_pool_run(run_chunk, &job, nchunks, nthreads);
    }
    free(heap);
    if (result)
        *result = found;
    return ADAMC_OK;
}

adamc_status adamc_step_multi_ex(const adamc_tensor *tensors, size_t count, const adamc_step_options *opts,
                                 adamc_step_result *result, adamc_autotune *tune)
{
    return run_table(tensors, count, step_segment, opts, NULL, result, tune);
}

adamc_status adamc_step_multi_sharded(const adamc_tensor *tensors, size_t count, const adamc_step_options *opts,
                                      adamc_reduce_fn reduce_sumsq, void *ctx, adamc_step_result *result,
                                      adamc_autotune *tune)
{
    if (!reduce_sumsq)
        return ADAMC_ERR_NULL_POINTER;
    shard_reduce reduce = {reduce_sumsq, ctx, 0};
    const adamc_status s = run_table(tensors, count, step_segment, opts, &reduce, result, tune);
    if (s != ADAMC_OK && !reduce.called && opts && opts->struct_size == sizeof *opts &&
        (opts->max_grad_norm > 0.0 || opts->skip_nonfinite || opts->compute_norm)) {
        /* refused on this shard only (overlap, alignment, memory): it still takes part in the reduction, with a
         * NaN that makes every other shard skip its step, instead of leaving them waiting */
        double poison = NAN;
        reduce_sumsq(&poison, ctx);
    }
    return s;
}

adamc_status adamc_step_multi_tuned(const adamc_tensor *tensors, size_t count, adamc_autotune *tune)
{
    return run_table(tensors, count, step_segment, NULL, NULL, NULL, tune);
}

adamc_status adamc_step_multi(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, step_segment, NULL, NULL, NULL, NULL);
}

adamc_status adamc_memory_probe(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, probe_segment, NULL, NULL, NULL, NULL);
}

adamc_status adamc_convert(const void *src, int src_dtype, void *dst, int dst_dtype, size_t n)
{
    /* the pairs the targets' convert functions take, checked first (also for n == 0, as the step checks codes) */
    const int from_f32 = src_dtype == ADAMC_FLOAT32 && (dst_dtype == ADAMC_FLOAT32 || is_low_precision(dst_dtype));
    const int to_f32 = dst_dtype == ADAMC_FLOAT32 && is_low_precision(src_dtype);
    if (!from_f32 && !to_f32)
        return ADAMC_ERR_DTYPE;
    if (n == 0)
        return ADAMC_OK;
    if (!src || !dst)
        return ADAMC_ERR_NULL_POINTER;
    if ((uintptr_t)src % (size_t)dtype_size(src_dtype) || (uintptr_t)dst % (size_t)dtype_size(dst_dtype))
        return ADAMC_ERR_MISALIGNED;
    return adamc_active_target->convert(src, src_dtype, dst, dst_dtype, n) ? ADAMC_OK : ADAMC_ERR_DTYPE;
}

adamc_status adamc_step_f32(float *p, const float *g, float *m, float *v, float *vmax, size_t n, int64_t step,
                            const adamc_hparams *hp)
{
    adamc_tensor t;
    adamc_tensor_init(&t);
    t.param = p, t.grad = g, t.exp_avg = m, t.exp_avg_sq = v, t.max_exp_avg_sq = vmax, t.n = n, t.step = step;
    t.hp = hp, t.dtype = ADAMC_FLOAT32;
    return adamc_step_multi(&t, 1);
}

adamc_status adamc_step_f64(double *p, const double *g, double *m, double *v, double *vmax, size_t n,
                            int64_t step, const adamc_hparams *hp)
{
    adamc_tensor t;
    adamc_tensor_init(&t);
    t.param = p, t.grad = g, t.exp_avg = m, t.exp_avg_sq = v, t.max_exp_avg_sq = vmax, t.n = n, t.step = step;
    t.hp = hp, t.dtype = ADAMC_FLOAT64;
    return adamc_step_multi(&t, 1);
}
