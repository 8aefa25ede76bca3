/* adam_c.c: the public entry points: validation, per-step constants, SIMD dispatch and the threading policy. */
#include "adam_c.h"
#include "adam_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_OPENMP) && !defined(_WIN32)
#include <pthread.h>
#define ADAMC_HAVE_ATFORK 1
#endif

/* ------------------------------------------------------------------ targets */

static int always_supported(void) { return 1; }

/* Best last: the loader picks the last one the CPU supports. */
static const adamc_target targets[] = {
    {"baseline", adamc_kernel_f32_baseline, adamc_kernel_f64_baseline, adamc_probe_f32_baseline,
     adamc_probe_f64_baseline, always_supported},
#ifdef ADAMC_HAVE_AVX2
    {"avx2", adamc_kernel_f32_avx2, adamc_kernel_f64_avx2, adamc_probe_f32_avx2, adamc_probe_f64_avx2,
     adamc_cpu_has_avx2_fma},
#endif
#ifdef ADAMC_HAVE_AVX512
    {"avx512", adamc_kernel_f32_avx512, adamc_kernel_f64_avx512, adamc_probe_f32_avx512,
     adamc_probe_f64_avx512, adamc_cpu_has_avx512},
#endif
};
#define TARGET_COUNT ((int)(sizeof(targets) / sizeof(targets[0])))

/* Decided once (at load, or by adamc_set_target), read by every step; never consulted inside a loop. */
static const adamc_target *active_target = &targets[0];

static int find_target(const char *name)
{
    for (int i = 0; i < TARGET_COUNT; i++)
        if (name && strcmp(targets[i].name, name) == 0)
            return i;
    return -1;
}

#ifdef ADAMC_HAVE_ATFORK
static volatile int parallel_started = 0;
static volatile int forked_child = 0;
static void on_fork_child(void)
{
    if (parallel_started)
        forked_child = 1;
}
#endif

__attribute__((constructor)) static void adamc_init(void)
{
    int best = 0;
    for (int i = 0; i < TARGET_COUNT; i++)
        if (targets[i].cpu_supports())
            best = i;
    active_target = &targets[best];
    const char *forced = getenv("ADAM_C_TARGET");
    if (forced && *forced) {
        int i = find_target(forced);
        if (i >= 0 && targets[i].cpu_supports())
            active_target = &targets[i];
        /* an unknown or unsupported name keeps the best target; the Python layer warns about it */
    }
#ifdef ADAMC_HAVE_ATFORK
    pthread_atfork(NULL, NULL, on_fork_child);
#endif
}

int adamc_target_count(void) { return TARGET_COUNT; }

const char *adamc_target_name(int index)
{
    return (index >= 0 && index < TARGET_COUNT) ? targets[index].name : NULL;
}

int adamc_target_supported(int index)
{
    return (index >= 0 && index < TARGET_COUNT) ? targets[index].cpu_supports() : 0;
}

const char *adamc_current_target(void) { return active_target->name; }

adamc_status adamc_set_target(const char *name)
{
    int i = find_target(name);
    if (i < 0 || !targets[i].cpu_supports())
        return ADAMC_ERR_UNKNOWN_TARGET;
    active_target = &targets[i];
    return ADAMC_OK;
}

/* ------------------------------------------------------------------ threads */

static int num_threads_override = 0;
/* Below this many float32 elements (or half as many float64) a step is one serial pass: forking threads costs
 * more than it saves. Measured with `python -m adam_c.bench --sweep-threshold` (2 cores, Zen 3): two threads
 * start to win at ~8k elements for both dtypes and are clearly ahead from ~16k. */
static size_t parallel_threshold = 16384;
/* Work units handed to threads are cut on 64-byte boundaries so no cache line is written by two threads. */
#define CACHE_LINE 64

int adamc_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int adamc_in_forked_child(void)
{
#ifdef ADAMC_HAVE_ATFORK
    return forked_child;
#else
    return 0;
#endif
}

int adamc_get_num_threads(void)
{
#ifdef _OPENMP
    if (num_threads_override > 0)
        return num_threads_override;
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void adamc_set_num_threads(int n) { num_threads_override = n > 0 ? n : 0; }
size_t adamc_get_parallel_threshold(void) { return parallel_threshold; }
void adamc_set_parallel_threshold(size_t n) { parallel_threshold = n; }

/* ------------------------------------------------------------------ validation */

const char *adamc_status_message(adamc_status status)
{
    switch (status) {
    case ADAMC_OK: return "ok";
    case ADAMC_ERR_NULL_POINTER: return "a buffer pointer is NULL";
    case ADAMC_ERR_MISALIGNED: return "a buffer is not aligned to its element size";
    case ADAMC_ERR_OVERLAP: return "buffers of one update overlap in memory";
    case ADAMC_ERR_HYPERPARAMETER: return "invalid hyperparameter or step";
    case ADAMC_ERR_DTYPE: return "unsupported dtype";
    case ADAMC_ERR_UNKNOWN_TARGET: return "unknown or unsupported SIMD target";
    case ADAMC_ERR_NO_MEMORY: return "out of memory";
    case ADAMC_ERR_STRUCT_SIZE: return "struct_size of adamc_hparams/adamc_tensor is not this library's (use *_init)";
    }
    return "unknown status";
}

static adamc_status check_hparams(const adamc_hparams *hp, int64_t step)
{
    if (!hp)
        return ADAMC_ERR_NULL_POINTER;
    if (hp->struct_size != sizeof(adamc_hparams)) /* the only layout so far; see adam_c.h on growing structs */
        return ADAMC_ERR_STRUCT_SIZE;
    /* written so that NaN fails every test, as torch's `not 0.0 <= lr` does */
    if (!(hp->lr >= 0.0) || !(hp->eps >= 0.0) || !(hp->weight_decay >= 0.0))
        return ADAMC_ERR_HYPERPARAMETER;
    if (!(hp->beta1 >= 0.0 && hp->beta1 < 1.0) || !(hp->beta2 >= 0.0 && hp->beta2 < 1.0))
        return ADAMC_ERR_HYPERPARAMETER;
    if (step < 1)
        return ADAMC_ERR_HYPERPARAMETER;
    return ADAMC_OK;
}

static int ranges_overlap(const void *a, const void *b, size_t bytes)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    /* by distance, not by end address: y + bytes can wrap for absurd n and hide an overlap */
    return x <= y ? y - x < bytes : x - y < bytes;
}

static size_t element_size(const adamc_tensor *t) { return t->dtype == ADAMC_FLOAT32 ? sizeof(float) : sizeof(double); }

static adamc_status check_tensor(const adamc_tensor *t)
{
    if (t->struct_size != sizeof(adamc_tensor))
        return ADAMC_ERR_STRUCT_SIZE;
    if (t->dtype != ADAMC_FLOAT32 && t->dtype != ADAMC_FLOAT64)
        return ADAMC_ERR_DTYPE;
    adamc_status s = check_hparams(t->hp, t->step);
    if (s != ADAMC_OK || t->n == 0)
        return s;
    const int ams = t->hp->amsgrad != 0;
    const void *bufs[5] = {t->param, t->grad, t->exp_avg, t->exp_avg_sq, t->max_exp_avg_sq};
    const int nbufs = ams ? 5 : 4;
    const size_t elsize = element_size(t);
    if (t->n > SIZE_MAX / elsize)
        return ADAMC_ERR_OVERLAP; /* no real buffer is that large */
    const size_t bytes = t->n * elsize;
    for (int i = 0; i < nbufs; i++) {
        if (!bufs[i])
            return ADAMC_ERR_NULL_POINTER;
        if ((uintptr_t)bufs[i] % elsize)
            return ADAMC_ERR_MISALIGNED;
    }
    for (int i = 0; i < nbufs; i++)
        for (int j = i + 1; j < nbufs; j++)
            if (ranges_overlap(bufs[i], bufs[j], bytes))
                return ADAMC_ERR_OVERLAP;
    return ADAMC_OK;
}

/* ------------------------------------------------------------------ the step */

static void compute_coeffs(const adamc_tensor *t, adamc_coeffs *c)
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
    int variant = 0;
    if (hp->amsgrad)
        variant |= ADAMC_VARIANT_AMSGRAD;
    if (hp->weight_decay != 0.0)
        variant |= hp->decoupled_weight_decay ? ADAMC_VARIANT_DECOUPLED : ADAMC_VARIANT_L2;
    if (hp->maximize)
        variant |= ADAMC_VARIANT_MAXIMIZE;
    /* torch decides lerp's form on the weight in the element type: |w| < 0.5 */
    const int lerp_small = t->dtype == ADAMC_FLOAT32 ? (float)c->lerp_weight < 0.5f : c->lerp_weight < 0.5;
    if (!lerp_small)
        variant |= ADAMC_VARIANT_LERP_LARGE;
    c->variant = variant;
}

/* Runs elements [begin, end) of tensor t with the active target's kernel. */
static void run_segment(const adamc_target *target, const adamc_tensor *t, const adamc_coeffs *c, size_t begin,
                        size_t end)
{
    const size_t n = end - begin;
    if (n == 0)
        return;
    const int ams = t->hp->amsgrad != 0;
    if (t->dtype == ADAMC_FLOAT32) {
        target->step_f32((float *)t->param + begin, (const float *)t->grad + begin, (float *)t->exp_avg + begin,
                         (float *)t->exp_avg_sq + begin, ams ? (float *)t->max_exp_avg_sq + begin : NULL, n, c);
    } else {
        target->step_f64((double *)t->param + begin, (const double *)t->grad + begin,
                         (double *)t->exp_avg + begin, (double *)t->exp_avg_sq + begin,
                         ams ? (double *)t->max_exp_avg_sq + begin : NULL, n, c);
    }
}

#ifdef _OPENMP
/* Where the split at byte `cut` of the concatenated work lands: tensor index and element offset, moved forward
 * to the next 64-byte boundary of the param buffer so neighbouring threads never share a cache line.
 * Both threads beside a cut compute it with this same function, so the pieces tile the work exactly. */
static void locate_cut(const adamc_tensor *tensors, const size_t *byte_start, size_t count, size_t cut,
                       size_t *tensor_out, size_t *offset_out)
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
    if (misalign && offset > 0)
        offset += (CACHE_LINE - misalign) / elsize;
    if (offset > t->n)
        offset = t->n;
    *tensor_out = lo;
    *offset_out = offset;
}
#endif

/* What one thread does with elements [begin, end) of tensor i: the Adam kernel, or the bandwidth probe. */
typedef void (*segment_fn)(const adamc_target *target, const adamc_tensor *t, const adamc_coeffs *c, size_t begin,
                           size_t end);

static void probe_segment(const adamc_target *target, const adamc_tensor *t, const adamc_coeffs *c, size_t begin,
                          size_t end)
{
    (void)c;
    const size_t n = end - begin;
    if (t->dtype == ADAMC_FLOAT32)
        target->probe_f32((float *)t->param + begin, (const float *)t->grad + begin, (float *)t->exp_avg + begin,
                          (float *)t->exp_avg_sq + begin, n);
    else
        target->probe_f64((double *)t->param + begin, (const double *)t->grad + begin,
                          (double *)t->exp_avg + begin, (double *)t->exp_avg_sq + begin, n);
}

/* Validates the table, computes per-tensor constants once, then runs `segment` over all elements: serially
 * below the threshold, else in ONE parallel region whose threads take contiguous byte ranges of the
 * concatenated tensors (cut at cache-line boundaries), so no thread forks per tensor. */
static adamc_status run_table(const adamc_tensor *tensors, size_t count, segment_fn segment)
{
    if (count == 0)
        return ADAMC_OK;
    if (!tensors)
        return ADAMC_ERR_NULL_POINTER;
    size_t total_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        adamc_status s = check_tensor(&tensors[i]);
        if (s != ADAMC_OK)
            return s;
        total_bytes += tensors[i].n * element_size(&tensors[i]);
    }

    /* small tables live on the stack; large ones cost one allocation per step */
    enum { STACK_TENSORS = 32 };
    adamc_coeffs coeff_stack[STACK_TENSORS];
    size_t start_stack[STACK_TENSORS];
    adamc_coeffs *coeffs = coeff_stack;
    size_t *byte_start = start_stack;
    void *heap = NULL;
    if (count > STACK_TENSORS) {
        heap = malloc(count * (sizeof(adamc_coeffs) + sizeof(size_t)));
        if (!heap)
            return ADAMC_ERR_NO_MEMORY;
        coeffs = (adamc_coeffs *)heap;
        byte_start = (size_t *)(coeffs + count);
    }
    size_t running = 0;
    for (size_t i = 0; i < count; i++) {
        compute_coeffs(&tensors[i], &coeffs[i]);
        byte_start[i] = running;
        running += tensors[i].n * element_size(&tensors[i]);
    }

    const adamc_target *target = active_target;
    int nthreads = adamc_get_num_threads();
    if (adamc_in_forked_child())
        nthreads = 1;
    /* the threshold is in float32 elements; a float64 element counts double (divided, so no overflow) */
    if (total_bytes / sizeof(float) < parallel_threshold)
        nthreads = 1;

    if (nthreads <= 1) {
        for (size_t i = 0; i < count; i++)
            segment(target, &tensors[i], &coeffs[i], 0, tensors[i].n);
    }
#ifdef _OPENMP
    else {
#ifdef ADAMC_HAVE_ATFORK
        parallel_started = 1;
#endif
#pragma omp parallel num_threads(nthreads)
        {
            const size_t team = (size_t)omp_get_num_threads();
            const size_t me = (size_t)omp_get_thread_num();
            size_t t0, off0, t1, off1;
            const size_t cut0 = (size_t)((double)total_bytes * (double)me / (double)team);
            locate_cut(tensors, byte_start, count, cut0, &t0, &off0);
            if (me + 1 == team) {
                t1 = count - 1;
                off1 = tensors[count - 1].n;
            } else {
                const size_t cut1 = (size_t)((double)total_bytes * (double)(me + 1) / (double)team);
                locate_cut(tensors, byte_start, count, cut1, &t1, &off1);
            }
            for (size_t i = t0; i <= t1; i++) {
                const size_t begin = i == t0 ? off0 : 0;
                const size_t end = i == t1 ? off1 : tensors[i].n;
                if (begin < end)
                    segment(target, &tensors[i], &coeffs[i], begin, end);
            }
        }
    }
#endif
    free(heap);
    return ADAMC_OK;
}

adamc_status adamc_step_multi(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, run_segment);
}

adamc_status adamc_memory_probe(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, probe_segment);
}

adamc_status adamc_step_f32(float *p, const float *g, float *m, float *v, float *vmax, size_t n, int64_t step,
                            const adamc_hparams *hp)
{
    const adamc_tensor t = {sizeof(adamc_tensor), p, g, m, v, vmax, n, step, hp, ADAMC_FLOAT32};
    return adamc_step_multi(&t, 1);
}

adamc_status adamc_step_f64(double *p, const double *g, double *m, double *v, double *vmax, size_t n,
                            int64_t step, const adamc_hparams *hp)
{
    const adamc_tensor t = {sizeof(adamc_tensor), p, g, m, v, vmax, n, step, hp, ADAMC_FLOAT64};
    return adamc_step_multi(&t, 1);
}
