/* adam_c.c: the public entry points: validation, per-step constants, SIMD dispatch and the threading policy. */
#include "adam_c.h"
#include "adam_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#ifdef _OPENMP
#include <omp.h>
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
    adamc_pool_init();
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
/* Below this many float32 elements (or half as many float64) a step is one serial pass: even a worker that is
 * already awake costs more than it saves. Above it, an optimizer's plan measures (see autotune below). */
static size_t parallel_threshold = 16384;
static int autotune_enabled = 1;
/* Work units are cut on 64-byte boundaries of the param buffer so no cache line is written by two threads. */
#define CACHE_LINE 64

int adamc_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int adamc_get_num_threads(void)
{
#if ADAMC_HAVE_POOL
    int n = num_threads_override;
#ifdef _OPENMP
    if (n <= 0)
        n = omp_get_max_threads();
#endif
    if (n < 1)
        n = 1;
    return n > ADAMC_MAX_THREADS ? ADAMC_MAX_THREADS : n;
#else
    return 1;
#endif
}

void adamc_set_num_threads(int n)
{
    num_threads_override = n <= 0 ? 0 : (n > ADAMC_MAX_THREADS ? ADAMC_MAX_THREADS : n);
}
size_t adamc_get_parallel_threshold(void) { return parallel_threshold; }
void adamc_set_parallel_threshold(size_t n) { parallel_threshold = n; }
void adamc_set_autotune(int enabled) { autotune_enabled = enabled != 0; }
int adamc_get_autotune(void) { return autotune_enabled; }

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

/* Where byte `cut` of the concatenated work lands: tensor index and element offset, moved forward to the next
 * 64-byte boundary of the param buffer so neighbouring chunks never share a cache line. Both chunks beside a cut
 * compute it with this same function, so the chunks tile the work exactly. */
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

/* One step's work, cut into chunks of `chunk_bytes` of the concatenated params (the last one shorter). */
typedef struct step_job {
    const adamc_target *target;
    const adamc_tensor *tensors;
    const adamc_coeffs *coeffs;
    const size_t *byte_start;
    size_t count;
    size_t total_bytes;
    size_t chunk_bytes;
    segment_fn segment;
} step_job;

static void run_chunk(const void *ctx, size_t chunk)
{
    const step_job *job = (const step_job *)ctx;
    size_t t0, off0, t1, off1;
    locate_cut(job->tensors, job->byte_start, job->count, chunk * job->chunk_bytes, &t0, &off0);
    const size_t cut1 = (chunk + 1) * job->chunk_bytes;
    if (cut1 >= job->total_bytes) {
        t1 = job->count - 1;
        off1 = job->tensors[t1].n;
    } else {
        locate_cut(job->tensors, job->byte_start, job->count, cut1, &t1, &off1);
    }
    for (size_t i = t0; i <= t1; i++) {
        const size_t begin = i == t0 ? off0 : 0;
        const size_t end = i == t1 ? off1 : job->tensors[i].n;
        if (begin < end)
            job->segment(job->target, &job->tensors[i], &job->coeffs[i], begin, end);
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

/* ------------------------------------------------------------------ measured threading decisions */

#define TUNE_SAMPLES 5       /* recent times kept per mode; their median decides */
#define TUNE_RECHECK 50      /* after deciding, the other mode is re-tried after this many steps ... */
#define TUNE_RECHECK_MAX 3200 /* ... doubling (up to this) each time it loses again, so a mode that cannot win
                              * (threads on a busy core: one slow step each) costs less and less */
#define TUNE_MARGIN 0.97     /* threads are chosen only if their median is at least 3% below serial's */

struct adamc_autotune {
    uint64_t steps;                        /* steps seen, the first (page faults, cold caches) not timed */
    double samples[2][TUNE_SAMPLES];       /* [0] serial, [1] threads; ns */
    unsigned filled[2];
    unsigned next[2];
    int choice;                            /* 0 serial, 1 threads; valid once both modes have samples */
    int threads;                           /* thread count of the last threaded run */
    uint64_t interval;                     /* steps between re-tries of the mode not chosen */
    uint64_t next_check;                   /* the step that re-tries it */
};

adamc_autotune *adamc_autotune_new(void) { return (adamc_autotune *)calloc(1, sizeof(adamc_autotune)); }
void adamc_autotune_free(adamc_autotune *tune) { free(tune); }

static double tune_median(const adamc_autotune *tune, int mode)
{
    const unsigned n = tune->filled[mode];
    if (n == 0)
        return 0.0;
    double v[TUNE_SAMPLES];
    memcpy(v, tune->samples[mode], n * sizeof(double));
    for (unsigned i = 1; i < n; i++) /* insertion sort of at most 5 values */
        for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
            const double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void adamc_autotune_get(const adamc_autotune *tune, adamc_autotune_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    if (!tune)
        return;
    info->serial_ns = tune_median(tune, 0);
    info->parallel_ns = tune_median(tune, 1);
    info->steps = tune->steps;
    if (tune->filled[0] && tune->filled[1])
        info->threads = tune->choice ? tune->threads : 1;
}

/* Which mode this step runs: explore both modes first (alternating), then the faster, re-trying the other one
 * every TUNE_RECHECK steps. */
int adamc_autotune_pick(const adamc_autotune *tune)
{
    if (tune->steps == 0)
        return 1; /* untimed warm-up step */
    if (tune->filled[0] < 2 || tune->filled[1] < 2)
        return tune->filled[1] <= tune->filled[0];
    return tune->steps >= tune->next_check ? !tune->choice : tune->choice;
}

void adamc_autotune_record(adamc_autotune *tune, int mode, double ns)
{
    const int decided = tune->filled[0] >= 2 && tune->filled[1] >= 2;
    if (decided && mode != tune->choice) {
        /* a re-try of the mode not chosen: if it now looks faster, re-try it on the next steps too, so the median
         * can follow quickly; if it lost again, wait twice as long before the next re-try */
        const double chosen = tune_median(tune, tune->choice);
        const int promising = mode ? ns < TUNE_MARGIN * chosen : TUNE_MARGIN * ns < chosen;
        if (promising)
            tune->interval = 1;
        else
            tune->interval = tune->interval >= TUNE_RECHECK_MAX / 2 ? TUNE_RECHECK_MAX : 2 * tune->interval;
        tune->next_check = tune->steps + tune->interval;
    }
    tune->samples[mode][tune->next[mode]] = ns;
    tune->next[mode] = (tune->next[mode] + 1) % TUNE_SAMPLES;
    if (tune->filled[mode] < TUNE_SAMPLES)
        tune->filled[mode]++;
    if (tune->filled[0] && tune->filled[1]) {
        const int choice = tune_median(tune, 1) < TUNE_MARGIN * tune_median(tune, 0);
        if (choice != tune->choice || !decided) { /* a new decision: re-check it after the base interval */
            tune->interval = TUNE_RECHECK;
            tune->next_check = tune->steps + TUNE_RECHECK;
        }
        tune->choice = choice;
    }
}

void adamc_autotune_finish(adamc_autotune *tune, int mode, double ns, int threads)
{
    if (tune->steps > 0 && ns >= 0.0) /* the first step (page faults, cold caches) is not a sample */
        adamc_autotune_record(tune, mode, ns);
    if (mode)
        tune->threads = threads;
    tune->steps++;
}

static double elapsed_ns(const struct timespec *start)
{
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    return (double)(end.tv_sec - start->tv_sec) * 1e9 + (double)(end.tv_nsec - start->tv_nsec);
}

/* ------------------------------------------------------------------ running a table */

/* Validates the table, computes per-tensor constants once, then runs `segment` over all elements as fixed
 * chunks of the concatenated tensors: serially below the threshold, else on the worker pool (see
 * thread_pool.c), where the caller never waits for a thread that is not running. */
static adamc_status run_table(const adamc_tensor *tensors, size_t count, segment_fn segment, adamc_autotune *tune)
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
    if (total_bytes == 0)
        return ADAMC_OK;

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

    const size_t chunk_bytes = chunk_bytes_for(total_bytes);
    const step_job job = {active_target, tensors, coeffs, byte_start, count, total_bytes, chunk_bytes, segment};
    const size_t nchunks = (total_bytes + chunk_bytes - 1) / chunk_bytes;
    int nthreads = adamc_get_num_threads();
    /* the threshold is in float32 elements; a float64 element counts double (divided, so no overflow) */
    if (total_bytes / sizeof(float) < parallel_threshold || nchunks < 2)
        nthreads = 1;

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
    return ADAMC_OK;
}

adamc_status adamc_step_multi_tuned(const adamc_tensor *tensors, size_t count, adamc_autotune *tune)
{
    return run_table(tensors, count, run_segment, tune);
}

adamc_status adamc_step_multi(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, run_segment, NULL);
}

adamc_status adamc_memory_probe(const adamc_tensor *tensors, size_t count)
{
    return run_table(tensors, count, probe_segment, NULL);
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
