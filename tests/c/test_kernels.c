/* test_kernels.c: memory safety, status codes and bit-exactness of the adam_c C core through its public API. */
/*
 * Every kernel (adamc_step_f32/f64, adamc_step_multi, adamc_memory_probe) runs on every SIMD target this CPU
 * supports, over lengths 0..300 and a few large ones, with buffers at every element-aligned byte offset from a
 * 64-byte aligned base, every option combination, and canary bytes before and after every buffer. Results are
 * compared bit for bit with a scalar reference below (one rounding per operation, as torch.optim.Adam with
 * foreach=False). Meant to run under ASan+UBSan (CMake option ADAM_C_SANITIZE) as well as in a Release build.
 * Prints "N passed, M failed" and exits non-zero on any failure.
 */
#include "adam_c.h"

#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ bookkeeping */

static long n_passed = 0, n_failed = 0;
static const char *current_target_name = "?";

#define MAX_REPORTS 40
static void report_failure(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report_failure(const char *file, int line, const char *fmt, ...)
{
    n_failed++;
    if (n_failed > MAX_REPORTS) {
        if (n_failed == MAX_REPORTS + 1)
            fprintf(stderr, "(further failures not printed)\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d [target %s]: ", file, line, current_target_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* One verified case counts once: CHECK(cond, msg...) passes or fails it. */
#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (cond)                                                                                                 \
            n_passed++;                                                                                           \
        else                                                                                                      \
            report_failure(__FILE__, __LINE__, __VA_ARGS__);                                                      \
    } while (0)

/* ------------------------------------------------------------------ random numbers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }
static size_t rng_below(size_t n) { return n ? (size_t)(rng_next() % n) : 0; }

/* ------------------------------------------------------------------ guarded buffers */

#define GUARD 128 /* canary bytes before the 64-byte slack in front of a buffer and after its largest size */
#define CANARY 0xA5

typedef struct gbuf {
    unsigned char *arena;
    size_t arena_bytes;
    unsigned char *ptr; /* arena + GUARD + offset */
    size_t bytes;
} gbuf;

static unsigned char canary_block[4096];

/* 1 if all `len` bytes at q are the canary. */
static int all_canary(const unsigned char *q, size_t len)
{
    while (len) {
        const size_t k = len < sizeof canary_block ? len : sizeof canary_block;
        if (memcmp(q, canary_block, k) != 0)
            return 0;
        q += k;
        len -= k;
    }
    return 1;
}

/* Room for `capacity` bytes at any offset 0..63 from a 64-byte aligned address, canaries all around. */
static void gbuf_init(gbuf *b, size_t capacity, size_t offset)
{
    size_t total = GUARD + 64 + capacity + GUARD;
    total = (total + 63) / 64 * 64;
    b->arena = aligned_alloc(64, total);
    if (!b->arena) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(b->arena, CANARY, total);
    b->arena_bytes = total;
    b->ptr = b->arena + GUARD + offset;
    b->bytes = capacity;
}

/* Moves the buffer to byte `offset` with `bytes` bytes and makes everything else canary again. */
static void gbuf_place(gbuf *b, size_t bytes, size_t offset)
{
    memset(b->arena, CANARY, b->arena_bytes);
    b->ptr = b->arena + GUARD + offset;
    b->bytes = bytes;
}

static void gbuf_free(gbuf *b)
{
    free(b->arena);
    b->arena = NULL;
}

/* 1 if every byte outside [ptr, ptr + bytes) is still the canary. */
static int gbuf_guards_ok(const gbuf *b)
{
    return all_canary(b->arena, (size_t)(b->ptr - b->arena)) &&
           all_canary(b->ptr + b->bytes, (size_t)(b->arena + b->arena_bytes - (b->ptr + b->bytes)));
}

/* 1 if the whole arena (contents and guards) equals `snapshot`. */
static int gbuf_same(const gbuf *b, const unsigned char *snapshot)
{
    return memcmp(b->arena, snapshot, b->arena_bytes) == 0;
}

static unsigned char *gbuf_snapshot(const gbuf *b)
{
    unsigned char *s = malloc(b->arena_bytes);
    if (!s)
        exit(2);
    memcpy(s, b->arena, b->arena_bytes);
    return s;
}

/* ------------------------------------------------------------------ the scalar reference */

/* One operation per statement into `volatile` temporaries: each result is rounded to T exactly once and
 * nothing can be contracted into an FMA, whatever flags this file is built with.
 * torch.optim.Adam(foreach=False), per element:
 *   grad = -g if maximize; L2: grad = grad + wd*param; AdamW: param = param*(1 - lr*wd)
 *   exp_avg.lerp_(grad, 1 - beta1)      (w < 0.5: avg + w*(grad - avg); else grad - (grad - avg)*(1 - w))
 *   exp_avg_sq = exp_avg_sq*beta2 + (1 - beta2)*grad*grad
 *   amsgrad: max_sq = maximum(max_sq, exp_avg_sq) (NaN propagates)
 *   denom = sqrt(sq)/sqrt(1 - beta2^t) + eps;  param = param + (-lr/(1 - beta1^t))*exp_avg/denom
 * Scalars are computed in double (Python floats) and rounded to T once. */
#define DEFINE_REFERENCE(T, SUFFIX, SQRT)                                                                         \
    static void ref_step_##SUFFIX(T *p, const T *g, T *m, T *v, T *vmax, size_t n, int64_t step,                \
                                  const adamc_hparams *hp)                                                        \
    {                                                                                                             \
        const double bias_correction1 = 1.0 - pow(hp->beta1, (double)step);                                      \
        const double bias_correction2 = 1.0 - pow(hp->beta2, (double)step);                                      \
        const T neg_step_size = (T)(-(hp->lr / bias_correction1));                                                \
        const T bc2_sqrt = (T)pow(bias_correction2, 0.5);                                                         \
        const T w = (T)(1.0 - hp->beta1);                                                                         \
        volatile T wc_v = (T)1 - w;                                                                               \
        const T wc = wc_v;                                                                                        \
        const int lerp_small = w < (T)0.5;                                                                        \
        const T beta2 = (T)hp->beta2;                                                                             \
        const T one_minus_beta2 = (T)(1.0 - hp->beta2);                                                           \
        const T wd = (T)hp->weight_decay;                                                                         \
        const T keep = (T)(1.0 - hp->lr * hp->weight_decay);                                                      \
        const T eps = (T)hp->eps;                                                                                 \
        const int decay = hp->weight_decay != 0.0;                                                                \
        for (size_t i = 0; i < n; i++) {                                                                          \
            volatile T grad = hp->maximize ? -g[i] : g[i];                                                        \
            volatile T param = p[i];                                                                              \
            if (decay && !hp->decoupled_weight_decay) {                                                           \
                volatile T t = wd * param;                                                                        \
                grad = grad + t;                                                                                  \
            }                                                                                                     \
            if (decay && hp->decoupled_weight_decay)                                                              \
                param = param * keep;                                                                             \
            const T avg = m[i];                                                                                   \
            volatile T diff = grad - avg;                                                                         \
            volatile T new_avg;                                                                                   \
            if (lerp_small) {                                                                                     \
                volatile T t = w * diff;                                                                          \
                new_avg = avg + t;                                                                                \
            } else {                                                                                              \
                volatile T t = diff * wc;                                                                         \
                new_avg = grad - t;                                                                               \
            }                                                                                                     \
            volatile T a = v[i] * beta2;                                                                          \
            volatile T b = one_minus_beta2 * grad;                                                                \
            volatile T c = b * grad;                                                                              \
            volatile T new_sq = a + c;                                                                            \
            volatile T denom_sq = new_sq;                                                                         \
            if (hp->amsgrad) {                                                                                    \
                const T old = vmax[i];                                                                            \
                const T sq = new_sq;                                                                              \
                const T mx = (isnan(sq) || isnan(old)) ? (isnan(sq) ? sq : old) : (sq > old ? sq : old);          \
                vmax[i] = mx;                                                                                     \
                denom_sq = mx;                                                                                    \
            }                                                                                                     \
            volatile T root = SQRT(denom_sq);                                                                     \
            volatile T scaled = root / bc2_sqrt;                                                                  \
            volatile T denom = scaled + eps;                                                                      \
            volatile T num = neg_step_size * new_avg;                                                             \
            volatile T upd = num / denom;                                                                         \
            m[i] = new_avg;                                                                                       \
            v[i] = new_sq;                                                                                        \
            p[i] = param + upd;                                                                                   \
        }                                                                                                         \
    }
DEFINE_REFERENCE(float, f32, sqrtf)
DEFINE_REFERENCE(double, f64, sqrt)

static void ref_step(int dtype, void *p, const void *g, void *m, void *v, void *vmax, size_t n, int64_t step,
                     const adamc_hparams *hp)
{
    if (dtype == ADAMC_FLOAT32)
        ref_step_f32(p, g, m, v, vmax, n, step, hp);
    else
        ref_step_f64(p, g, m, v, vmax, n, step, hp);
}

/* The probe's documented effect: p += g, m += g, v += g. */
static void ref_probe(int dtype, void *p, const void *g, void *m, void *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dtype == ADAMC_FLOAT32) {
            const float gi = ((const float *)g)[i];
            ((float *)p)[i] += gi;
            ((float *)m)[i] += gi;
            ((float *)v)[i] += gi;
        } else {
            const double gi = ((const double *)g)[i];
            ((double *)p)[i] += gi;
            ((double *)m)[i] += gi;
            ((double *)v)[i] += gi;
        }
    }
}

/* ------------------------------------------------------------------ values */

static size_t elsize_of(int dtype) { return dtype == ADAMC_FLOAT32 ? sizeof(float) : sizeof(double); }

enum { KIND_PARAM, KIND_GRAD, KIND_AVG, KIND_SQ };

static double special_value(int dtype)
{
    static const double specials64[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 4.9406564584124654e-324,
                                        1e-310, DBL_MIN, DBL_MAX, -DBL_MAX, 1e30, -1e30, 1e-30, 1e300};
    static const double specials32[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, 1.401298464324817e-45,
                                        1e-40, FLT_MIN, FLT_MAX, -FLT_MAX, 1e30, -1e30, 1e-30, 1e38};
    const size_t k = rng_below(sizeof(specials64) / sizeof(specials64[0]));
    return dtype == ADAMC_FLOAT32 ? specials32[k] : specials64[k];
}

static double random_value(int kind, int dtype, int specials)
{
    static const double scales[7] = {1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3};
    if (specials && rng_below(6) == 0) {
        double s = special_value(dtype);
        return (kind == KIND_SQ && !(s != s)) ? fabs(s) : s;
    }
    const double u = rng_unit() * 2.0 - 1.0;
    switch (kind) {
    case KIND_PARAM: return u;
    case KIND_GRAD: return u * scales[rng_below(7)];
    case KIND_AVG: return 0.1 * u;
    default: return 0.01 * fabs(u);
    }
}

/* Random values of one kind; written with memcpy, so `dst` may have any alignment. */
static void fill(void *dst, size_t n, int dtype, int kind, int specials)
{
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++) {
        const double x = random_value(kind, dtype, specials);
        if (dtype == ADAMC_FLOAT32) {
            const float f = (float)x;
            memcpy(d + i * sizeof f, &f, sizeof f);
        } else {
            memcpy(d + i * sizeof x, &x, sizeof x);
        }
    }
}

/* Bit equality, except that any NaN equals any NaN (sign and payload of a NaN are not part of the contract). */
static int same_values(const void *a, const void *b, size_t n, int dtype, size_t *where)
{
    if (memcmp(a, b, n * elsize_of(dtype)) == 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        int eq;
        if (dtype == ADAMC_FLOAT32) {
            const float x = ((const float *)a)[i], y = ((const float *)b)[i];
            eq = (isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof x) == 0;
        } else {
            const double x = ((const double *)a)[i], y = ((const double *)b)[i];
            eq = (isnan(x) && isnan(y)) || memcmp(&x, &y, sizeof x) == 0;
        }
        if (!eq) {
            if (where)
                *where = i;
            return 0;
        }
    }
    return 1;
}

static double value_at(const void *a, size_t i, int dtype)
{
    return dtype == ADAMC_FLOAT32 ? (double)((const float *)a)[i] : ((const double *)a)[i];
}

/* ------------------------------------------------------------------ option combinations */

#define N_COMBOS 24 /* amsgrad x {no decay, L2, decoupled} x maximize x {small lerp weight, large lerp weight} */
static adamc_hparams combo_hparams(int combo)
{
    adamc_hparams hp;
    adamc_hparams_init(&hp);
    hp.amsgrad = combo & 1;
    const int decay = (combo >> 1) % 3;
    hp.maximize = (combo / 6) & 1;
    const int lerp_large = (combo / 12) & 1;
    hp.lr = 1e-3;
    hp.beta1 = lerp_large ? 0.3 : 0.9; /* lerp weight 1 - beta1: 0.1 (< 0.5) or 0.7 */
    hp.beta2 = 0.999;
    hp.eps = 1e-8;
    hp.weight_decay = decay ? 0.01 : 0.0;
    hp.decoupled_weight_decay = decay == 2;
    return hp;
}

static const int64_t STEPS[] = {1, 2, 3, 10, 1000, 123456789};
#define N_STEPS ((int)(sizeof(STEPS) / sizeof(STEPS[0])))

/* ------------------------------------------------------------------ one buffer set */

/* Inputs and expected outputs of one step: p, g, m, v, vmax as plain arrays. A case may use a prefix of them
 * (the update is elementwise, so a prefix of the expected output is the expected output of the prefix). */
typedef struct caseio {
    int dtype;
    size_t n;
    void *in[5];
    void *out[5];
} caseio;

static const int KINDS[5] = {KIND_PARAM, KIND_GRAD, KIND_AVG, KIND_SQ, KIND_SQ};

static void caseio_init(caseio *c, int dtype, size_t n, int specials)
{
    c->dtype = dtype;
    c->n = n;
    for (int k = 0; k < 5; k++) {
        c->in[k] = malloc(n * elsize_of(dtype) + 1);
        c->out[k] = malloc(n * elsize_of(dtype) + 1);
        if (!c->in[k] || !c->out[k])
            exit(2);
        fill(c->in[k], n, dtype, KINDS[k], specials);
    }
}

/* out = the reference step applied to in (vmax's output is only meaningful with amsgrad). */
static void caseio_expect(caseio *c, int64_t step, const adamc_hparams *hp)
{
    for (int k = 0; k < 5; k++)
        memcpy(c->out[k], c->in[k], c->n * elsize_of(c->dtype));
    ref_step(c->dtype, c->out[0], c->out[1], c->out[2], c->out[3], c->out[4], c->n, step, hp);
}

static void caseio_free(caseio *c)
{
    for (int k = 0; k < 5; k++) {
        free(c->in[k]);
        free(c->out[k]);
    }
}

/* Five guarded buffers (p, g, m, v, vmax) with room for `capacity` bytes each at any offset below 64. */
typedef struct workspace {
    gbuf b[5];
} workspace;

static void ws_init(workspace *w, size_t capacity)
{
    for (int k = 0; k < 5; k++)
        gbuf_init(&w->b[k], capacity, 0);
}

static void ws_free(workspace *w)
{
    for (int k = 0; k < 5; k++)
        gbuf_free(&w->b[k]);
}

/* Copies the case's inputs to the given byte offsets, canaries everywhere else. */
static void ws_place(workspace *w, const caseio *c, const size_t offsets[5])
{
    const size_t bytes = c->n * elsize_of(c->dtype);
    for (int k = 0; k < 5; k++) {
        gbuf_place(&w->b[k], bytes, offsets[k]);
        memcpy(w->b[k].ptr, c->in[k], bytes);
    }
}

static adamc_status ws_step(workspace *w, int dtype, size_t n, void *vmax, int64_t step, const adamc_hparams *hp)
{
    if (dtype == ADAMC_FLOAT32)
        return adamc_step_f32((float *)w->b[0].ptr, (const float *)w->b[1].ptr, (float *)w->b[2].ptr,
                              (float *)w->b[3].ptr, (float *)vmax, n, step, hp);
    return adamc_step_f64((double *)w->b[0].ptr, (const double *)w->b[1].ptr, (double *)w->b[2].ptr,
                          (double *)w->b[3].ptr, (double *)vmax, n, step, hp);
}

static const char *BUF_NAMES[5] = {"param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};

/* After a step: p, m, v (and vmax with amsgrad) equal the expected outputs; grad, and vmax without amsgrad,
 * still hold their inputs; every canary holds. Reports the first difference; returns 1 if all is well. */
static int ws_verify(const workspace *w, const caseio *c, int ams, const char *what)
{
    for (int k = 0; k < 5; k++) {
        if (!gbuf_guards_ok(&w->b[k])) {
            report_failure(__FILE__, __LINE__, "%s: canary of %s overwritten (n=%zu, %s, offset %zu)", what,
                           BUF_NAMES[k], c->n, c->dtype == ADAMC_FLOAT32 ? "f32" : "f64",
                           (size_t)(w->b[k].ptr - w->b[k].arena - GUARD));
            return 0;
        }
    }
    size_t at = 0;
    for (int k = 0; k < 5; k++) {
        const void *want = (k == 1 || (k == 4 && !ams)) ? c->in[k] : c->out[k];
        if (!same_values(w->b[k].ptr, want, c->n, c->dtype, &at)) {
            report_failure(__FILE__, __LINE__, "%s: %s[%zu] = %.17g, expected %.17g (n=%zu, %s)", what,
                           BUF_NAMES[k], at, value_at(w->b[k].ptr, at, c->dtype), value_at(want, at, c->dtype),
                           c->n, c->dtype == ADAMC_FLOAT32 ? "f32" : "f64");
            return 0;
        }
    }
    return 1;
}

/* Places the case, steps, verifies: one pass or one failure. Without amsgrad, `pass_vmax` decides whether the
 * (canary-surrounded, must-stay-untouched) vmax buffer or NULL is passed. */
static int run_case(workspace *w, const caseio *c, const size_t offsets[5], const adamc_hparams *hp,
                    int64_t step, int pass_vmax, const char *what)
{
    ws_place(w, c, offsets);
    void *vmax = (hp->amsgrad || pass_vmax) ? (void *)w->b[4].ptr : NULL;
    const adamc_status st = ws_step(w, c->dtype, c->n, vmax, step, hp);
    int ok = st == ADAMC_OK;
    if (!ok)
        report_failure(__FILE__, __LINE__, "%s: status %d (%s), expected OK (n=%zu)", what, (int)st,
                       adamc_status_message(st), c->n);
    else
        ok = ws_verify(w, c, hp->amsgrad, what);
    if (ok)
        n_passed++;
    return ok;
}

/* One case on fresh random data. */
static int check_single(int dtype, size_t n, const size_t offsets[5], const adamc_hparams *hp, int64_t step,
                        int specials, const char *what)
{
    caseio c;
    workspace w;
    caseio_init(&c, dtype, n, specials);
    caseio_expect(&c, step, hp);
    ws_init(&w, n * elsize_of(dtype));
    const int ok = run_case(&w, &c, offsets, hp, step, (int)(rng_next() & 1), what);
    ws_free(&w);
    caseio_free(&c);
    return ok;
}

/* ------------------------------------------------------------------ tests: single steps */

#define MAX_SMALL 300

/* Lengths 0..300 x every element-aligned offset (0..63 bytes) x every option combination, both dtypes: all
 * buffers at one offset (test_mixed_offsets gives each its own). The expected output is computed once per
 * combination on 300 elements; every shorter length checks its prefix. */
static void test_lengths_offsets_combos(void)
{
    for (int dtype = 0; dtype < 2; dtype++) {
        const size_t es = elsize_of(dtype);
        caseio master;
        workspace w;
        caseio_init(&master, dtype, MAX_SMALL, 0);
        ws_init(&w, MAX_SMALL * es);
        for (int combo = 0; combo < N_COMBOS; combo++) {
            const adamc_hparams hp = combo_hparams(combo);
            const int64_t step = STEPS[combo % N_STEPS];
            caseio_expect(&master, step, &hp);
            for (size_t n = 0; n <= MAX_SMALL; n++) {
                caseio c = master;
                c.n = n;
                for (size_t off = 0; off < 64; off += es) {
                    const size_t offsets[5] = {off, off, off, off, off};
                    run_case(&w, &c, offsets, &hp, step, (int)((n + off) & 1), "lengths x offsets x combos");
                }
            }
        }
        ws_free(&w);
        caseio_free(&master);
    }
}

static void test_mixed_offsets(void)
{
    for (int dtype = 0; dtype < 2; dtype++) {
        const size_t es = elsize_of(dtype);
        for (int specials = 0; specials < 2; specials++) {
            caseio master;
            workspace w;
            caseio_init(&master, dtype, MAX_SMALL, specials);
            ws_init(&w, MAX_SMALL * es);
            for (int combo = 0; combo < N_COMBOS; combo++) {
                const adamc_hparams hp = combo_hparams(combo);
                const int64_t step = STEPS[rng_below(N_STEPS)];
                caseio_expect(&master, step, &hp);
                for (size_t n = (size_t)combo % 3; n <= MAX_SMALL; n += 3) {
                    caseio c = master;
                    c.n = n;
                    size_t offsets[5];
                    for (int k = 0; k < 5; k++)
                        offsets[k] = rng_below(64 / es) * es;
                    run_case(&w, &c, offsets, &hp, step, (int)(n & 1), specials ? "mixed offsets, special values"
                                                                                 : "mixed offsets");
                }
            }
            ws_free(&w);
            caseio_free(&master);
        }
    }
}

/* Zeros, signed zeros, subnormals, huge values, infinities and NaNs in every buffer, with extreme but valid
 * hyperparameters: the same bits as the reference (NaN for NaN). */
static void test_special_values(void)
{
    const double lrs[] = {0.0, 1e-3, 1.0, 1e30};
    const double beta1s[] = {0.0, 0.5, 0.9, 0.999999};
    const double beta2s[] = {0.0, 0.5, 0.999, 0.99999999};
    const double epss[] = {0.0, 1e-300, 1e-8, 1e30};
    const double wds[] = {1e-50, 0.01, 1e6};
    for (int dtype = 0; dtype < 2; dtype++) {
        const size_t es = elsize_of(dtype);
        caseio master;
        workspace w;
        caseio_init(&master, dtype, 70, 1);
        ws_init(&w, 70 * es);
        for (int trial = 0; trial < 600; trial++) {
            adamc_hparams hp = combo_hparams(trial % N_COMBOS);
            hp.lr = lrs[rng_below(4)];
            hp.beta1 = beta1s[rng_below(4)];
            hp.beta2 = beta2s[rng_below(4)];
            hp.eps = epss[rng_below(4)];
            if (hp.weight_decay != 0.0)
                hp.weight_decay = wds[rng_below(3)];
            const int64_t step = STEPS[rng_below(N_STEPS)];
            caseio_expect(&master, step, &hp);
            caseio c = master;
            c.n = rng_below(71);
            size_t offsets[5];
            for (int k = 0; k < 5; k++)
                offsets[k] = rng_below(64 / es) * es;
            run_case(&w, &c, offsets, &hp, step, trial & 1, "special values, extreme hyperparameters");
        }
        ws_free(&w);
        caseio_free(&master);
    }
}

/* Large lengths cross the parallel threshold: thread counts 1..3 with the default threshold. */
static void test_large(void)
{
    const size_t lengths[] = {4099, 100003, ((size_t)1 << 20) + 3};
    for (int li = 0; li < 3; li++) {
        const size_t n = lengths[li];
        for (int dtype = 0; dtype < 2; dtype++) {
            const size_t es = elsize_of(dtype);
            caseio c;
            workspace w;
            caseio_init(&c, dtype, n, 0);
            ws_init(&w, n * es);
            const int n_combos = li == 0 ? N_COMBOS : 2;
            for (int ci = 0; ci < n_combos; ci++) {
                const int combo = li == 0 ? ci : (ci == 0 ? 0 : N_COMBOS - 1);
                const adamc_hparams hp = combo_hparams(combo);
                caseio_expect(&c, 7, &hp);
                const size_t off = li == 0 ? ((size_t)ci % (64 / es)) * es : es;
                const size_t offsets[5] = {off, (off + es) % 64, off, (off + 2 * es) % 64, (off + 3 * es) % 64};
                for (int threads = 1; threads <= (li == 0 ? 1 : 3); threads++) {
                    adamc_set_num_threads(threads);
                    run_case(&w, &c, offsets, &hp, 7, ci & 1, "large");
                }
                adamc_set_num_threads(0);
            }
            ws_free(&w);
            caseio_free(&c);
        }
    }
}

/* Parallel threshold 0: even a small step is split between threads (cut on 64-byte boundaries). */
static void test_parallel_small(void)
{
    const size_t saved = adamc_get_parallel_threshold();
    adamc_set_parallel_threshold(0);
    for (int dtype = 0; dtype < 2; dtype++) {
        const size_t es = elsize_of(dtype);
        caseio master;
        workspace w;
        caseio_init(&master, dtype, MAX_SMALL, 0);
        ws_init(&w, MAX_SMALL * es);
        for (int threads = 2; threads <= 4; threads++) {
            adamc_set_num_threads(threads);
            const adamc_hparams hp = combo_hparams((threads * 5) % N_COMBOS);
            const int64_t step = STEPS[threads % N_STEPS];
            caseio_expect(&master, step, &hp);
            /* every length with 2 threads; a sample with more threads than cores (slow: they take turns) */
            for (size_t n = 0; n <= MAX_SMALL; n += (threads == 2 ? 1 : 13)) {
                caseio c = master;
                c.n = n;
                size_t offsets[5];
                for (int k = 0; k < 5; k++)
                    offsets[k] = rng_below(64 / es) * es;
                run_case(&w, &c, offsets, &hp, step, (int)(n & 1), "parallel split, threshold 0");
            }
        }
        ws_free(&w);
        caseio_free(&master);
    }
    adamc_set_num_threads(0);
    adamc_set_parallel_threshold(saved);
}

/* ------------------------------------------------------------------ tests: status codes */

/* A set of 5 guarded buffers; `fn` gets the pointers, returns a status, and nothing may change. */
typedef struct arena5 {
    gbuf b[5];
    unsigned char *snap[5];
} arena5;

static void arena5_init(arena5 *a, int dtype, size_t n, const size_t offsets[5])
{
    for (int k = 0; k < 5; k++) {
        gbuf_init(&a->b[k], n * elsize_of(dtype) + 64, offsets[k]);
        fill(a->b[k].ptr, n, dtype, k == 0 ? KIND_PARAM : k == 1 ? KIND_GRAD : KIND_SQ, 0);
        a->snap[k] = gbuf_snapshot(&a->b[k]);
    }
}

static int arena5_unchanged(const arena5 *a)
{
    for (int k = 0; k < 5; k++)
        if (!gbuf_same(&a->b[k], a->snap[k]))
            return 0;
    return 1;
}

static void arena5_free(arena5 *a)
{
    for (int k = 0; k < 5; k++) {
        gbuf_free(&a->b[k]);
        free(a->snap[k]);
    }
}

static adamc_status step_ptrs(int dtype, void *p, const void *g, void *m, void *v, void *vmax, size_t n,
                              int64_t step, const adamc_hparams *hp)
{
    if (dtype == ADAMC_FLOAT32)
        return adamc_step_f32(p, g, m, v, vmax, n, step, hp);
    return adamc_step_f64(p, g, m, v, vmax, n, step, hp);
}

static adamc_status multi_ptrs(int dtype, void *p, const void *g, void *m, void *v, void *vmax, size_t n,
                               int64_t step, const adamc_hparams *hp, int probe)
{
    adamc_tensor t = {sizeof(adamc_tensor), p, g, m, v, vmax, n, step, hp, dtype};
    return probe ? adamc_memory_probe(&t, 1) : adamc_step_multi(&t, 1);
}

/* Which entry point a status test goes through: 0 step_f32/f64, 1 step_multi, 2 memory_probe. */
static adamc_status call_entry(int entry, int dtype, void *const ptrs[5], size_t n, int64_t step,
                               const adamc_hparams *hp)
{
    if (entry == 0)
        return step_ptrs(dtype, ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], n, step, hp);
    return multi_ptrs(dtype, ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], n, step, hp, entry == 2);
}
static const char *ENTRY_NAMES[3] = {"adamc_step_f32/f64", "adamc_step_multi", "adamc_memory_probe"};

/* Byte offsets that are not a multiple of the element size: ADAMC_ERR_MISALIGNED, nothing written. */
static void test_misaligned(void)
{
    const size_t lengths[] = {1, 5, 37};
    for (int entry = 0; entry < 3; entry++)
        for (int dtype = 0; dtype < 2; dtype++) {
            const size_t es = elsize_of(dtype);
            for (size_t off = 1; off < 64; off++) {
                if (off % es == 0)
                    continue;
                for (int which = 0; which < 5; which++)
                    for (int li = 0; li < 3; li++) {
                        size_t offsets[5] = {0, 0, 0, 0, 0};
                        offsets[which] = off;
                        arena5 a;
                        arena5_init(&a, dtype, lengths[li], offsets);
                        adamc_hparams hp = combo_hparams(1 + 2 * (int)(off % 12)); /* amsgrad on */
                        void *ptrs[5];
                        for (int k = 0; k < 5; k++)
                            ptrs[k] = a.b[k].ptr;
                        adamc_status st = call_entry(entry, dtype, ptrs, lengths[li], 3, &hp);
                        CHECK(st == ADAMC_ERR_MISALIGNED && arena5_unchanged(&a),
                              "%s: %s at byte offset %zu (dtype %d, n=%zu): status %d, unchanged %d",
                              ENTRY_NAMES[entry], BUF_NAMES[which], off, dtype, lengths[li], (int)st,
                              arena5_unchanged(&a));
                        arena5_free(&a);
                    }
            }
        }
}

static void test_null_pointers(void)
{
    const size_t zero_off[5] = {0, 0, 0, 0, 0};
    for (int entry = 0; entry < 3; entry++)
        for (int dtype = 0; dtype < 2; dtype++)
            for (int combo = 0; combo < N_COMBOS; combo++) {
                const adamc_hparams hp = combo_hparams(combo);
                for (int which = 0; which < 5; which++) {
                    arena5 a;
                    arena5_init(&a, dtype, 9, zero_off);
                    void *ptrs[5];
                    for (int k = 0; k < 5; k++)
                        ptrs[k] = a.b[k].ptr;
                    ptrs[which] = NULL;
                    adamc_status st = call_entry(entry, dtype, ptrs, 9, 1, &hp);
                    /* vmax is only required with amsgrad */
                    const adamc_status want = (which == 4 && !hp.amsgrad) ? ADAMC_OK : ADAMC_ERR_NULL_POINTER;
                    if (want == ADAMC_OK)
                        CHECK(st == ADAMC_OK && gbuf_guards_ok(&a.b[0]), "%s: NULL vmax without amsgrad: %d",
                              ENTRY_NAMES[entry], (int)st);
                    else
                        CHECK(st == want && arena5_unchanged(&a), "%s: NULL %s with n>0 (combo %d): status %d",
                              ENTRY_NAMES[entry], BUF_NAMES[which], combo, (int)st);
                    arena5_free(&a);
                }
                /* n == 0: every pointer may be NULL */
                void *nulls[5] = {NULL, NULL, NULL, NULL, NULL};
                adamc_status st = call_entry(entry, dtype, nulls, 0, 1, &hp);
                CHECK(st == ADAMC_OK, "%s: n=0 with NULL pointers: status %d", ENTRY_NAMES[entry], (int)st);
                /* NULL hyperparameters */
                st = call_entry(entry, dtype, nulls, 0, 1, NULL);
                CHECK(st == ADAMC_ERR_NULL_POINTER, "%s: NULL hparams: status %d", ENTRY_NAMES[entry], (int)st);
            }
    /* a NULL table: an error when count > 0, a no-op when count == 0 */
    CHECK(adamc_step_multi(NULL, 3) == ADAMC_ERR_NULL_POINTER, "adamc_step_multi(NULL, 3)");
    CHECK(adamc_memory_probe(NULL, 3) == ADAMC_ERR_NULL_POINTER, "adamc_memory_probe(NULL, 3)");
    CHECK(adamc_step_multi(NULL, 0) == ADAMC_OK, "adamc_step_multi(NULL, 0)");
    CHECK(adamc_memory_probe(NULL, 0) == ADAMC_OK, "adamc_memory_probe(NULL, 0)");
}

/* Two buffers of one update sharing memory: ADAMC_ERR_OVERLAP and nothing written; touching but disjoint
 * buffers are fine; vmax is ignored (may alias anything) when amsgrad is off. */
static void test_overlap(void)
{
    const size_t n = 16;
    for (int entry = 0; entry < 3; entry++)
        for (int dtype = 0; dtype < 2; dtype++) {
            const size_t es = elsize_of(dtype);
            for (int ams = 0; ams < 2; ams++) {
                adamc_hparams hp = combo_hparams(ams);
                const int nbufs = 5;
                for (int i = 0; i < nbufs; i++)
                    for (int j = 0; j < nbufs; j++) {
                        if (i == j)
                            continue;
                        /* buffer j starts `shift` elements after buffer i (negative: before) */
                        for (long shift = -(long)n; shift <= (long)n; shift++) {
                            gbuf big;
                            gbuf_init(&big, 8 * n * es + 64, 0);
                            fill(big.ptr, 8 * n, dtype, KIND_SQ, 0);
                            void *ptrs[5];
                            unsigned char *base = big.ptr + 3 * n * es; /* room on both sides */
                            /* the bystanders sit in distinct, disjoint places: [0, n), [6n, 7n), [7n, 8n) */
                            const size_t where[3] = {0, 6 * n, 7 * n};
                            int slot = 0;
                            for (int k = 0; k < nbufs; k++) {
                                if (k == i)
                                    ptrs[k] = base;
                                else if (k == j)
                                    ptrs[k] = base + shift * (long)es;
                                else
                                    ptrs[k] = big.ptr + where[slot++] * es;
                            }
                            unsigned char *snap = gbuf_snapshot(&big);
                            adamc_status st = call_entry(entry, dtype, ptrs, n, 2, &hp);
                            const int involved_vmax = i == 4 || j == 4;
                            const int overlaps = labs(shift) < (long)n;
                            adamc_status want = (overlaps && (ams || !involved_vmax)) ? ADAMC_ERR_OVERLAP
                                                                                        : ADAMC_OK;
                            if (want == ADAMC_ERR_OVERLAP)
                                CHECK(st == want && gbuf_same(&big, snap),
                                      "%s: %s and %s %ld elements apart (n=%zu, amsgrad %d): status %d",
                                      ENTRY_NAMES[entry], BUF_NAMES[i], BUF_NAMES[j], shift, n, ams, (int)st);
                            else
                                CHECK(st == ADAMC_OK && gbuf_guards_ok(&big),
                                      "%s: %s and %s %ld elements apart (n=%zu, amsgrad %d): status %d",
                                      ENTRY_NAMES[entry], BUF_NAMES[i], BUF_NAMES[j], shift, n, ams, (int)st);
                            free(snap);
                            gbuf_free(&big);
                        }
                    }
            }
        }
}

/* Invalid hyperparameters or step: ADAMC_ERR_HYPERPARAMETER and nothing written, for n > 0 and n == 0. */
static void test_bad_hparams(void)
{
    const size_t zero_off[5] = {0, 0, 0, 0, 0};
    for (int entry = 0; entry < 3; entry++)
        for (int dtype = 0; dtype < 2; dtype++)
            for (int bad = 0; bad < 22; bad++) {
                adamc_hparams hp = combo_hparams(bad % N_COMBOS);
                int64_t step = 5;
                switch (bad) {
                case 0: hp.lr = -1e-3; break;
                case 1: hp.lr = NAN; break;
                case 2: hp.lr = -INFINITY; break;
                case 3: hp.eps = -1e-12; break;
                case 4: hp.eps = NAN; break;
                case 5: hp.weight_decay = -0.01; break;
                case 6: hp.weight_decay = NAN; break;
                case 7: hp.beta1 = 1.0; break;
                case 8: hp.beta1 = -0.1; break;
                case 9: hp.beta1 = NAN; break;
                case 10: hp.beta1 = 1.5; break;
                case 11: hp.beta2 = 1.0; break;
                case 12: hp.beta2 = -1e-300; break;
                case 13: hp.beta2 = NAN; break;
                case 14: hp.beta2 = INFINITY; break;
                case 15: step = 0; break;
                case 16: step = -1; break;
                case 17: step = INT64_MIN; break;
                case 18: hp.beta1 = nextafter(1.0, 2.0); break;
                case 19: hp.beta2 = -NAN; break;
                case 20: hp.eps = -INFINITY; break;
                default: hp.weight_decay = -INFINITY; break;
                }
                const size_t lengths[2] = {11, 0};
                for (int li = 0; li < 2; li++) {
                    arena5 a;
                    arena5_init(&a, dtype, lengths[li], zero_off);
                    void *ptrs[5];
                    for (int k = 0; k < 5; k++)
                        ptrs[k] = lengths[li] ? (void *)a.b[k].ptr : NULL;
                    adamc_status st = call_entry(entry, dtype, ptrs, lengths[li], step, &hp);
                    CHECK(st == ADAMC_ERR_HYPERPARAMETER && arena5_unchanged(&a),
                          "%s: bad hyperparameter case %d (n=%zu): status %d", ENTRY_NAMES[entry], bad,
                          lengths[li], (int)st);
                    arena5_free(&a);
                }
            }
    /* the edges that are valid: lr 0, betas 0, eps 0, weight_decay 0, -0.0 everywhere, a huge step */
    const double valid[][5] = {{0, 0, 0, 0, 0}, {-0.0, -0.0, -0.0, -0.0, -0.0}, {INFINITY, 0.5, 0.5, INFINITY, 0}};
    for (int dtype = 0; dtype < 2; dtype++)
        for (int vi = 0; vi < 3; vi++) {
            adamc_hparams hp = combo_hparams(0);
            hp.lr = valid[vi][0];
            hp.beta1 = valid[vi][1];
            hp.beta2 = valid[vi][2];
            hp.eps = valid[vi][3];
            hp.weight_decay = valid[vi][4];
            check_single(dtype, 13, zero_off, &hp, INT64_MAX, 0, "valid edge hyperparameters");
        }
}

static void test_bad_dtype(void)
{
    const int bad_dtypes[] = {4, -1, 99, 0x7fffffff}; /* 2 and 3 are float16 and bfloat16 since 0.2 */
    for (int entry = 1; entry < 3; entry++)
        for (int bi = 0; bi < 4; bi++) {
            const size_t zero_off[5] = {0, 0, 0, 0, 0};
            arena5 a;
            arena5_init(&a, ADAMC_FLOAT64, 7, zero_off);
            adamc_hparams hp = combo_hparams(1);
            adamc_tensor t = {sizeof(adamc_tensor), a.b[0].ptr, a.b[1].ptr, a.b[2].ptr, a.b[3].ptr, a.b[4].ptr, 7, 1,
                              &hp, bad_dtypes[bi]};
            adamc_status st = entry == 1 ? adamc_step_multi(&t, 1) : adamc_memory_probe(&t, 1);
            CHECK(st == ADAMC_ERR_DTYPE && arena5_unchanged(&a), "%s: dtype %d: status %d", ENTRY_NAMES[entry],
                  bad_dtypes[bi], (int)st);
            t.n = 0;
            st = entry == 1 ? adamc_step_multi(&t, 1) : adamc_memory_probe(&t, 1);
            CHECK(st == ADAMC_ERR_DTYPE, "%s: dtype %d with n=0: status %d", ENTRY_NAMES[entry], bad_dtypes[bi],
                  (int)st);
            arena5_free(&a);
        }
}

/* Growing structs: a struct_size the library does not know is refused before anything is written, through every
 * entry point; the initialisers give torch's defaults; the version call and macros agree. */
static void test_struct_size_and_version(void)
{
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", ADAMC_VERSION_MAJOR, ADAMC_VERSION_MINOR, ADAMC_VERSION_PATCH);
    CHECK(strcmp(adamc_version(), ADAMC_VERSION_STRING) == 0 && strcmp(expect, ADAMC_VERSION_STRING) == 0,
          "adamc_version() %s, ADAMC_VERSION_STRING %s, macros %s", adamc_version(), ADAMC_VERSION_STRING, expect);
    CHECK(ADAMC_VERSION_NUMBER == ADAMC_VERSION_MAJOR * 10000 + ADAMC_VERSION_MINOR * 100 + ADAMC_VERSION_PATCH,
          "ADAMC_VERSION_NUMBER");

    adamc_hparams hp;
    memset(&hp, 0xAB, sizeof hp);
    adamc_hparams_init(&hp);
    CHECK(hp.struct_size == sizeof(adamc_hparams) && hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.999 &&
              hp.eps == 1e-8 && hp.weight_decay == 0.0 && !hp.amsgrad && !hp.maximize && !hp.decoupled_weight_decay,
          "adamc_hparams_init sets torch's defaults and struct_size");
    const adamc_hparams from_macro = ADAMC_HPARAMS_INIT;
    CHECK(memcmp(&from_macro, &hp, offsetof(adamc_hparams, decoupled_weight_decay) + sizeof(int)) == 0,
          "ADAMC_HPARAMS_INIT == adamc_hparams_init");
    adamc_tensor t;
    memset(&t, 0xAB, sizeof t);
    adamc_tensor_init(&t);
    CHECK(t.struct_size == sizeof(adamc_tensor) && !t.param && !t.grad && !t.exp_avg && !t.exp_avg_sq &&
              !t.max_exp_avg_sq && t.n == 0 && t.step == 1 && !t.hp && t.dtype == ADAMC_FLOAT32,
          "adamc_tensor_init gives an empty entry");
    adamc_hparams_init(NULL); /* a no-op, not a crash */
    adamc_tensor_init(NULL);

    enum { N = 5 };
    float p[N], g[N], m[N], v[N], orig[4][N];
    for (int i = 0; i < N; i++) {
        p[i] = 1.0f + (float)i;
        g[i] = 0.5f - (float)i;
        m[i] = 0.25f * (float)i;
        v[i] = 0.125f * (float)i;
    }
    memcpy(orig[0], p, sizeof p), memcpy(orig[1], g, sizeof g), memcpy(orig[2], m, sizeof m), memcpy(orig[3], v, sizeof v);
    const size_t bad_sizes[] = {0, sizeof(adamc_hparams) - 1, sizeof(adamc_hparams) + 8, 4};
    for (size_t k = 0; k < sizeof bad_sizes / sizeof bad_sizes[0]; k++) {
        adamc_hparams bad;
        adamc_hparams_init(&bad);
        bad.struct_size = bad_sizes[k];
        adamc_status st = adamc_step_f32(p, g, m, v, NULL, N, 1, &bad);
        CHECK(st == ADAMC_ERR_STRUCT_SIZE, "step_f32 with hparams struct_size %zu: status %d", bad_sizes[k], (int)st);
        adamc_tensor_init(&t);
        t.param = p, t.grad = g, t.exp_avg = m, t.exp_avg_sq = v, t.n = N, t.hp = &bad;
        st = adamc_step_multi(&t, 1);
        CHECK(st == ADAMC_ERR_STRUCT_SIZE, "step_multi with hparams struct_size %zu: status %d", bad_sizes[k],
              (int)st);
        t.hp = &hp;
        t.struct_size = bad_sizes[k] == sizeof(adamc_hparams) - 1 ? sizeof(adamc_tensor) - 1 : bad_sizes[k];
        st = adamc_step_multi(&t, 1);
        CHECK(st == ADAMC_ERR_STRUCT_SIZE, "step_multi with tensor struct_size %zu: status %d", t.struct_size,
              (int)st);
        st = adamc_memory_probe(&t, 1);
        CHECK(st == ADAMC_ERR_STRUCT_SIZE, "memory_probe with tensor struct_size %zu: status %d", t.struct_size,
              (int)st);
    }
    CHECK(!memcmp(orig[0], p, sizeof p) && !memcmp(orig[1], g, sizeof g) && !memcmp(orig[2], m, sizeof m) &&
              !memcmp(orig[3], v, sizeof v),
          "a refused struct_size writes nothing");
    adamc_tensor_init(&t);
    t.param = p, t.grad = g, t.exp_avg = m, t.exp_avg_sq = v, t.n = N, t.hp = &hp;
    CHECK(adamc_step_multi(&t, 1) == ADAMC_OK && memcmp(orig[0], p, sizeof p) != 0,
          "an entry from adamc_tensor_init + adamc_hparams_init steps");
}

/* Status messages exist for every code; the target API rejects unknown names and changes nothing then. */
static void test_misc_api(void)
{
    for (int s = 0; s <= 8; s++) {
        const char *msg = adamc_status_message((adamc_status)s);
        CHECK(msg != NULL && msg[0] != '\0', "status message %d", s);
    }
    const int count = adamc_target_count();
    CHECK(count >= 1 && strcmp(adamc_target_name(0), "baseline") == 0 && adamc_target_supported(0) == 1,
          "target 0 is a supported 'baseline' (count %d)", count);
    CHECK(adamc_target_name(-1) == NULL && adamc_target_name(count) == NULL, "target_name out of range is NULL");
    CHECK(adamc_target_supported(-1) == 0 && adamc_target_supported(count) == 0, "target_supported out of range");
    const char *before = adamc_current_target();
    CHECK(adamc_set_target("no-such-target") == ADAMC_ERR_UNKNOWN_TARGET && adamc_current_target() == before,
          "set_target(unknown)");
    CHECK(adamc_set_target(NULL) == ADAMC_ERR_UNKNOWN_TARGET && adamc_current_target() == before,
          "set_target(NULL)");
    CHECK(adamc_set_target("") == ADAMC_ERR_UNKNOWN_TARGET && adamc_current_target() == before, "set_target('')");
    for (int i = 0; i < count; i++) {
        if (adamc_target_supported(i))
            continue;
        CHECK(adamc_set_target(adamc_target_name(i)) == ADAMC_ERR_UNKNOWN_TARGET && adamc_current_target() == before,
              "set_target(unsupported %s)", adamc_target_name(i));
    }
    const int following = adamc_get_num_threads(); /* OMP_NUM_THREADS or the CPU count */
    CHECK(following >= 1 && following <= ADAMC_MAX_THREADS, "default thread count %d", following);
    adamc_set_num_threads(3);
#if !defined(_WIN32)
    CHECK(adamc_get_num_threads() == 3, "set_num_threads(3) -> %d", adamc_get_num_threads());
#endif
    adamc_set_num_threads(ADAMC_MAX_THREADS + 1);
    CHECK(adamc_get_num_threads() <= ADAMC_MAX_THREADS, "set_num_threads(max + 1) is capped");
    adamc_set_num_threads(-5);
    CHECK(adamc_get_num_threads() == following, "set_num_threads(-5) follows the default again: %d, not %d",
          adamc_get_num_threads(), following);
    adamc_set_num_threads(0);
    CHECK(adamc_has_openmp() == 0, "no OpenMP runtime is linked");
    const size_t saved = adamc_get_parallel_threshold();
    adamc_set_parallel_threshold(12345);
    CHECK(adamc_get_parallel_threshold() == 12345, "parallel threshold round trip");
    adamc_set_parallel_threshold(saved);
}

/* ------------------------------------------------------------------ tests: multi-tensor tables */

typedef struct table {
    size_t count;
    adamc_tensor *t;
    gbuf (*b)[5];      /* per entry: p, g, m, v, vmax */
    void *(*orig)[5];  /* original contents */
    adamc_hparams hps[6];
} table;

static void table_init(table *tb, size_t count, int specials)
{
    tb->count = count;
    tb->t = calloc(count + 1, sizeof(adamc_tensor));
    tb->b = calloc(count + 1, sizeof(*tb->b));
    tb->orig = calloc(count + 1, sizeof(*tb->orig));
    for (int h = 0; h < 6; h++) {
        tb->hps[h] = combo_hparams((int)rng_below(N_COMBOS));
        tb->hps[h].lr = 1e-3 * (double)(h + 1);
    }
    for (size_t i = 0; i < count; i++) {
        const int dtype = (int)rng_below(2);
        const size_t es = elsize_of(dtype);
        size_t n;
        const size_t r = rng_below(10);
        n = r == 0 ? 0 : r == 1 ? 1 + rng_below(3000) : rng_below(301);
        adamc_tensor *t = &tb->t[i];
        adamc_tensor_init(t);
        t->n = n;
        t->dtype = dtype;
        t->step = STEPS[rng_below(N_STEPS)];
        t->hp = &tb->hps[rng_below(6)];
        void **ptrs[5] = {&t->param, (void **)&t->grad, &t->exp_avg, &t->exp_avg_sq, &t->max_exp_avg_sq};
        static const int kinds[5] = {KIND_PARAM, KIND_GRAD, KIND_AVG, KIND_SQ, KIND_SQ};
        for (int k = 0; k < 5; k++) {
            gbuf_init(&tb->b[i][k], n * es, rng_below(64 / es) * es);
            fill(tb->b[i][k].ptr, n, dtype, kinds[k], specials);
            tb->orig[i][k] = malloc(n * es + 1);
            memcpy(tb->orig[i][k], tb->b[i][k].ptr, n * es);
            /* empty entries may carry NULL pointers; vmax is NULL when its group has no amsgrad, half the time */
            int null_it = (n == 0 && rng_below(2)) || (k == 4 && !t->hp->amsgrad && rng_below(2));
            *ptrs[k] = null_it ? NULL : tb->b[i][k].ptr;
        }
    }
}

static void table_reset(table *tb)
{
    for (size_t i = 0; i < tb->count; i++)
        for (int k = 0; k < 5; k++)
            memcpy(tb->b[i][k].ptr, tb->orig[i][k], tb->t[i].n * elsize_of(tb->t[i].dtype));
}

static void table_free(table *tb)
{
    for (size_t i = 0; i < tb->count; i++)
        for (int k = 0; k < 5; k++) {
            gbuf_free(&tb->b[i][k]);
            free(tb->orig[i][k]);
        }
    free(tb->t);
    free(tb->b);
    free(tb->orig);
}

/* The table's current contents, one malloc'd copy per buffer. */
static void ***table_capture(const table *tb)
{
    void ***out = calloc(tb->count + 1, sizeof(void **));
    for (size_t i = 0; i < tb->count; i++) {
        out[i] = calloc(5, sizeof(void *));
        const size_t bytes = tb->t[i].n * elsize_of(tb->t[i].dtype);
        for (int k = 0; k < 5; k++) {
            out[i][k] = malloc(bytes + 1);
            memcpy(out[i][k], tb->b[i][k].ptr, bytes);
        }
    }
    return out;
}

static void capture_free(void ***c, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        for (int k = 0; k < 5; k++)
            free(c[i][k]);
        free(c[i]);
    }
    free(c);
}

/* 1 if every buffer of the table equals `expected` (grad must be unchanged too) and every canary holds. */
static int table_matches(const table *tb, void ***expected, const char *what)
{
    for (size_t i = 0; i < tb->count; i++) {
        const adamc_tensor *t = &tb->t[i];
        for (int k = 0; k < 5; k++) {
            if (!gbuf_guards_ok(&tb->b[i][k])) {
                report_failure(__FILE__, __LINE__, "%s: canary of entry %zu's %s overwritten (n=%zu)", what, i,
                               BUF_NAMES[k], t->n);
                return 0;
            }
            size_t at = 0;
            if (!same_values(tb->b[i][k].ptr, expected[i][k], t->n, t->dtype, &at)) {
                report_failure(__FILE__, __LINE__, "%s: entry %zu of %zu (n=%zu, dtype %d) %s[%zu] = %.17g, expected %.17g",
                               what, i, tb->count, t->n, t->dtype, BUF_NAMES[k], at,
                               value_at(tb->b[i][k].ptr, at, t->dtype), value_at(expected[i][k], at, t->dtype));
                return 0;
            }
        }
    }
    return 1;
}

static void test_multi(void)
{
    const size_t counts[] = {0, 1, 2, 31, 32, 33, 200};
    const size_t saved_threshold = adamc_get_parallel_threshold();
    for (int ci = 0; ci < 7; ci++)
        for (int rep = 0; rep < 3; rep++) {
            table tb;
            table_init(&tb, counts[ci], rep == 2);
            /* expected: one single call per entry, serial */
            adamc_set_num_threads(1);
            int singles_ok = 1;
            for (size_t i = 0; i < tb.count; i++) {
                const adamc_tensor *t = &tb.t[i];
                adamc_status st = step_ptrs(t->dtype, t->param, t->grad, t->exp_avg, t->exp_avg_sq,
                                            t->max_exp_avg_sq, t->n, t->step, t->hp);
                singles_ok &= st == ADAMC_OK;
            }
            CHECK(singles_ok, "single calls of a %zu-entry table", tb.count);
            void ***expected = table_capture(&tb);
            /* ... which must also be the reference */
            int ref_ok = 1;
            for (size_t i = 0; i < tb.count && ref_ok; i++) {
                const adamc_tensor *t = &tb.t[i];
                const size_t bytes = t->n * elsize_of(t->dtype);
                void *r[5];
                for (int k = 0; k < 5; k++) {
                    r[k] = malloc(bytes + 1);
                    memcpy(r[k], tb.orig[i][k], bytes);
                }
                ref_step(t->dtype, r[0], r[1], r[2], r[3], r[4], t->n, t->step, t->hp);
                for (int k = 0; k < 5; k++) {
                    const int compare = k != 4 || t->hp->amsgrad;
                    if (compare && !same_values(r[k], expected[i][k], t->n, t->dtype, NULL))
                        ref_ok = 0;
                    free(r[k]);
                }
            }
            CHECK(ref_ok, "single calls of a %zu-entry table match the reference", tb.count);

            for (int threads = 1; threads <= 3; threads++)
                for (int th = 0; th < 2; th++) {
                    adamc_set_num_threads(threads);
                    adamc_set_parallel_threshold(th ? 0 : saved_threshold);
                    table_reset(&tb);
                    adamc_status st = adamc_step_multi(tb.t, tb.count);
                    char what[96];
                    snprintf(what, sizeof what, "step_multi(%zu entries, %d threads, threshold %zu)", tb.count,
                             threads, adamc_get_parallel_threshold());
                    CHECK(st == ADAMC_OK && table_matches(&tb, expected, what), "%s: status %d", what, (int)st);
                }

            /* the memory probe: p += g, m += g, v += g exactly once per element, vmax and g untouched */
            table_reset(&tb);
            for (size_t i = 0; i < tb.count; i++) {
                const adamc_tensor *t = &tb.t[i];
                ref_probe(t->dtype, tb.orig[i][0], tb.orig[i][1], tb.orig[i][2], tb.orig[i][3], t->n);
            }
            void ***probe_expected = table_capture(&tb); /* table now holds the originals; swap below */
            for (size_t i = 0; i < tb.count; i++)
                for (int k = 0; k < 5; k++) {
                    void *tmp = probe_expected[i][k];
                    probe_expected[i][k] = tb.orig[i][k];
                    tb.orig[i][k] = tmp;
                }
            for (int threads = 1; threads <= 3; threads++)
                for (int th = 0; th < 2; th++) {
                    adamc_set_num_threads(threads);
                    adamc_set_parallel_threshold(th ? 0 : saved_threshold);
                    table_reset(&tb);
                    adamc_status st = adamc_memory_probe(tb.t, tb.count);
                    char what[96];
                    snprintf(what, sizeof what, "memory_probe(%zu entries, %d threads, threshold %zu)", tb.count,
                             threads, adamc_get_parallel_threshold());
                    CHECK(st == ADAMC_OK && table_matches(&tb, probe_expected, what), "%s: status %d", what, (int)st);
                }
            capture_free(probe_expected, tb.count);
            capture_free(expected, tb.count);
            adamc_set_num_threads(0);
            adamc_set_parallel_threshold(saved_threshold);

            /* one bad entry anywhere in the table: an error, and nothing at all written */
            if (tb.count > 0) {
                table_reset(&tb);
                void ***before = table_capture(&tb);
                const size_t bad = rng_below(tb.count);
                adamc_tensor saved = tb.t[bad];
                adamc_hparams bad_hp = *saved.hp;
                bad_hp.beta2 = 1.0;
                const int kind = (int)(rng_below(4));
                adamc_status want;
                if (kind == 0) {
                    tb.t[bad].dtype = 7;
                    want = ADAMC_ERR_DTYPE;
                } else if (kind == 1) {
                    tb.t[bad].hp = &bad_hp;
                    want = ADAMC_ERR_HYPERPARAMETER;
                } else if (kind == 2) {
                    tb.t[bad].step = 0;
                    want = ADAMC_ERR_HYPERPARAMETER;
                } else {
                    /* exp_avg = param: an overlap within the entry (only when it has elements) */
                    if (tb.t[bad].n == 0 || !tb.t[bad].param) {
                        tb.t[bad].step = -3;
                        want = ADAMC_ERR_HYPERPARAMETER;
                    } else {
                        tb.t[bad].exp_avg = tb.t[bad].param;
                        want = ADAMC_ERR_OVERLAP;
                    }
                }
                adamc_set_parallel_threshold(0);
                adamc_set_num_threads(2);
                adamc_tensor broken = tb.t[bad];
                adamc_status st = adamc_step_multi(tb.t, tb.count);
                tb.t[bad] = saved; /* table_matches reads the entry's true dtype and size */
                CHECK(st == want && table_matches(&tb, before, "a table with one bad entry"),
                      "step_multi with bad entry %zu of %zu (kind %d): status %d, expected %d", bad, tb.count,
                      kind, (int)st, (int)want);
                tb.t[bad] = broken;
                st = adamc_memory_probe(tb.t, tb.count);
                tb.t[bad] = saved;
                CHECK(st == want && table_matches(&tb, before, "probe of a table with one bad entry"),
                      "memory_probe with bad entry %zu of %zu (kind %d): status %d", bad, tb.count, kind, (int)st);
                adamc_set_num_threads(0);
                adamc_set_parallel_threshold(saved_threshold);
                capture_free(before, tb.count);
            }
            table_free(&tb);
        }
}

/* ------------------------------------------------------------------ tests: fork, impossible sizes */

/* Runs fn in a fork()ed child with an alarm; the child's exit code 0 is a pass. */
static int run_in_child(int (*fn)(void), int timeout_s, int *signal_out)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm((unsigned)timeout_s);
        _exit(fn()); /* _exit: no atexit handlers (LeakSanitizer) in the child */
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    *signal_out = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int child_reports_not_forked(void) { return adamc_pool_restarts() == 0 ? 0 : 1; }

/* After the parent ran threaded steps: the child's pool started over (one restart), and a step asking for threads
 * (2 threads, threshold 0) runs serially instead of hanging, with the same results. */
static int child_steps_after_fork(void)
{
    if (adamc_pool_restarts() != 1)
        return 3;
    adamc_set_num_threads(2);
    adamc_set_parallel_threshold(0);
    const size_t n = 100003;
    const size_t offsets[5] = {0, 8, 16, 24, 32};
    const adamc_hparams hp = combo_hparams(5);
    caseio c;
    workspace w;
    caseio_init(&c, ADAMC_FLOAT32, n, 0);
    caseio_expect(&c, 4, &hp);
    ws_init(&w, n * sizeof(float));
    ws_place(&w, &c, offsets);
    if (ws_step(&w, ADAMC_FLOAT32, n, w.b[4].ptr, 4, &hp) != ADAMC_OK)
        return 4;
    for (int k = 0; k < 5; k++)
        if (k != 1 && !same_values(w.b[k].ptr, c.out[k], n, ADAMC_FLOAT32, NULL))
            return 5;
    ws_free(&w);
    caseio_free(&c);
    return 0;
}

static void test_fork_before_parallel(void)
{
    int sig = 0;
    int rc = run_in_child(child_reports_not_forked, 30, &sig);
    CHECK(rc == 0, "fork before any parallel region: child exit %d, signal %d (must not claim forked-child mode)",
          rc, sig);
}

static void test_fork_after_parallel(void)
{
    /* make sure the parent has run a parallel region */
    const size_t saved = adamc_get_parallel_threshold();
    adamc_set_parallel_threshold(0);
    adamc_set_num_threads(2);
    const size_t off[5] = {0, 0, 0, 0, 0};
    adamc_hparams hp = combo_hparams(0);
    check_single(ADAMC_FLOAT64, 100003, off, &hp, 1, 0, "parallel step before fork"); /* several chunks */
    adamc_set_num_threads(0);
    adamc_set_parallel_threshold(saved);
    int sig = 0;
    int rc = run_in_child(child_steps_after_fork, 60, &sig);
    CHECK(rc == 0, "forked child stepping after parallel parent: exit %d, signal %d (3: pool not restarted, "
          "4: status, 5: wrong values, SIGALRM=%d: hang)", rc, sig, SIGALRM);
}

/* n so large that its byte size is near SIZE_MAX cannot describe four disjoint buffers; the entry points must
 * refuse it rather than run off the end. Run in a child so a crash is a failed check, not a dead test. */
static int child_huge_n_f32(void)
{
    float p[4] = {0}, g[4] = {0}, m[4] = {0}, v[4] = {0};
    adamc_hparams hp = combo_hparams(0);
    adamc_set_num_threads(1);
    adamc_status st = adamc_step_f32(p, g, m, v, NULL, SIZE_MAX / sizeof(float), 1, &hp);
    return st == ADAMC_OK ? 1 : 0;
}

static int child_huge_n_f64(void)
{
    double p[4] = {0}, g[4] = {0}, m[4] = {0}, v[4] = {0};
    adamc_hparams hp = combo_hparams(0);
    adamc_set_num_threads(1);
    adamc_status st = adamc_step_f64(p, g, m, v, NULL, SIZE_MAX / sizeof(double), 1, &hp);
    return st == ADAMC_OK ? 1 : 0;
}

static int child_huge_n_over(void)
{
    double p[4] = {0}, g[4] = {0}, m[4] = {0}, v[4] = {0};
    adamc_hparams hp = combo_hparams(0);
    adamc_status st = adamc_step_f64(p, g, m, v, NULL, SIZE_MAX / 4, 1, &hp); /* n * 8 overflows size_t */
    return st == ADAMC_OK ? 1 : 0;
}

static void test_impossible_sizes(void)
{
    int sig = 0, rc;
    rc = run_in_child(child_huge_n_over, 30, &sig);
    CHECK(rc == 0, "f64 step with n*8 > SIZE_MAX: child exit %d, signal %d (must return an error)", rc, sig);
    rc = run_in_child(child_huge_n_f32, 30, &sig);
    CHECK(rc == 0, "f32 step with n = SIZE_MAX/4: child exit %d, signal %d (must return an error, not run)", rc,
          sig);
    rc = run_in_child(child_huge_n_f64, 30, &sig);
    CHECK(rc == 0, "f64 step with n = SIZE_MAX/8: child exit %d, signal %d (must return an error, not run)", rc,
          sig);
}

/* ------------------------------------------------------------------ main */


/* ------------------------------------------------------------------ mixed precision (0.2) */

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* float16 -> float by arithmetic (an independent route from the library's bit operations). */
static float ref_f16_to_f32(uint16_t h)
{
    const int sign = h >> 15, e = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (e == 31)
        return bits_f32((sign ? 0x80000000u : 0) | 0x7F800000u | (uint32_t)mant << 13 | (mant ? 0x400000u : 0));
    v = e == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, e - 25);
    return (float)(sign ? -v : v);
}

/* float -> the nearer of the two neighbouring 16-bit patterns (ties to the even pattern), by exact double
 * differences: an independent route for both float16 and bfloat16 (to_f32 decodes a pattern). */
static uint16_t ref_round16(float x, float (*to_f32)(uint16_t), int f16)
{
    const uint32_t u = f32_bits(x);
    const uint32_t sign16 = (u >> 16) & 0x8000u;
    const float a = fabsf(x);
    if (isnan(x))
        return 0; /* handled by the caller */
    /* largest pattern whose value is <= a: binary search over the positive patterns (monotonic in value) */
    uint32_t lo = 0, hi = f16 ? 0x7C00u : 0x7F80u; /* +inf */
    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if ((double)to_f32((uint16_t)mid) <= (double)a)
            lo = mid;
        else
            hi = mid;
    }
    if ((double)to_f32((uint16_t)hi) <= (double)a)
        lo = hi;
    if ((double)to_f32((uint16_t)lo) == (double)a)
        return (uint16_t)(sign16 | lo);
    /* between lo and lo + 1; the step above the largest finite rounds as if the exponent continued */
    const double below = to_f32((uint16_t)lo);
    const double above = (lo + 1 == (f16 ? 0x7C00u : 0x7F80u)) ? (f16 ? 65536.0 : ldexp(1.0, 128))
                                                                : (double)to_f32((uint16_t)(lo + 1));
    const double d0 = (double)a - below, d1 = above - (double)a;
    const uint32_t pick = d0 < d1 ? lo : d1 < d0 ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return (uint16_t)(sign16 | pick);
}
static float ref_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }
static uint16_t ref_f32_to_f16(float x) { return ref_round16(x, ref_f16_to_f32, 1); }
static uint16_t ref_f32_to_bf16(float x) { return ref_round16(x, ref_bf16_to_f32, 0); }

/* All 65536 float16/bfloat16 values through adamc_convert, and float32 samples (ties, denormals, specials) back,
 * against the references above; outputs land in guarded buffers at odd lengths. */
static void test_conversions(void)
{
    enum { N = 65536 };
    gbuf src, dst;
    gbuf_init(&src, N * 4, 0);
    gbuf_init(&dst, N * 4, 0);
    for (int kind = 0; kind < 2; kind++) {
        const int dtype = kind ? ADAMC_BFLOAT16 : ADAMC_FLOAT16;
        float (*to_f32)(uint16_t) = kind ? ref_bf16_to_f32 : ref_f16_to_f32;
        uint16_t (*from_f32)(float) = kind ? ref_f32_to_bf16 : ref_f32_to_f16;
        const size_t offsets[2] = {0, 2};
        for (int oi = 0; oi < 2; oi++) {
            const size_t n = N - oi; /* also an odd length */
            gbuf_place(&src, n * 2, offsets[oi]);
            gbuf_place(&dst, n * 4, 0);
            uint16_t *h = (uint16_t *)src.ptr;
            for (size_t i = 0; i < n; i++)
                h[i] = (uint16_t)i;
            adamc_status st = adamc_convert(h, dtype, dst.ptr, ADAMC_FLOAT32, n);
            const float *f = (const float *)dst.ptr;
            long bad = 0;
            for (size_t i = 0; i < n && st == ADAMC_OK; i++) {
                const float want = to_f32((uint16_t)i);
                const int nan = isnan(want);
                if (nan ? !(isnan(f[i]) && (f32_bits(f[i]) | 0x400000u) == (f32_bits(want) | 0x400000u))
                        : f32_bits(f[i]) != f32_bits(want))
                    bad++;
            }
            CHECK(st == ADAMC_OK && bad == 0 && gbuf_guards_ok(&src) && gbuf_guards_ok(&dst),
                  "dtype %d -> float32, n=%zu: status %d, %ld wrong", dtype, n, (int)st, bad);
        }
        /* float32 -> 16 bits: every 16-bit neighbourhood's ties and near-ties, plus random patterns */
        const size_t n = N - 1;
        gbuf_place(&src, n * 4, 0);
        gbuf_place(&dst, n * 2, 2);
        float *x = (float *)src.ptr;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)rng_next();
            if (i % 3 == 0)
                u = (u & (kind ? 0xFFFF0000u : 0xFFFFE000u)) | (kind ? 0x8000u : 0x1000u); /* exact tie */
            if (i % 5 == 0 && !kind)
                u = 0x33000000u + (uint32_t)(rng_next() % 0x14800000u); /* float16's range incl. denormals */
            x[i] = bits_f32(u);
        }
        x[0] = bits_f32(0x477FF000u), x[1] = bits_f32(0x7F7FFFFFu), x[2] = INFINITY, x[3] = -0.0f;
        x[4] = bits_f32(0x00000001u), x[5] = bits_f32(0x33000000u), x[6] = bits_f32(0x7F7F8000u);
        adamc_status st = adamc_convert(x, ADAMC_FLOAT32, dst.ptr, dtype, n);
        const uint16_t *y = (const uint16_t *)dst.ptr;
        long bad = 0;
        size_t first = 0;
        for (size_t i = 0; i < n && st == ADAMC_OK; i++) {
            const int ok = isnan(x[i]) ? isnan(to_f32(y[i])) : y[i] == from_f32(x[i]);
            if (!ok && bad++ == 0)
                first = i;
        }
        CHECK(st == ADAMC_OK && bad == 0 && gbuf_guards_ok(&src) && gbuf_guards_ok(&dst),
              "float32 -> dtype %d: status %d, %ld wrong (first: 0x%08x -> 0x%04x, want 0x%04x)", dtype, (int)st,
              bad, f32_bits(x[first]), y[first], from_f32(x[first]));
    }
    CHECK(adamc_convert(canary_block, ADAMC_FLOAT64, canary_block + 64, ADAMC_FLOAT16, 1) == ADAMC_ERR_DTYPE,
          "float64 -> float16 is refused");
    gbuf_free(&src);
    gbuf_free(&dst);
}

/* A mixed-precision table (bf16 + master + EMA, f16 with float32 grads, bf16 stochastic, f32 + EMA) stepped with
 * loss scale and clipping: buffers guarded, results identical on every target and for 1 and 3 threads, and an
 * inf grad skips the whole step. The per-element numerics are checked against the NumPy oracle in Python. */
enum { MIX_T = 4, MIX_BUFS = 7 };
static const size_t MIX_N[MIX_T] = {1001, 37, 513, 20011};
static unsigned char *mix_expected[MIX_T][MIX_BUFS];
static double mix_expected_norm;

static void mix_run(int threads, int pass)
{
    adamc_hparams hp;
    adamc_hparams_init(&hp);
    hp.amsgrad = 1, hp.weight_decay = 0.01, hp.decoupled_weight_decay = 1;
    const int dtypes[MIX_T] = {ADAMC_BFLOAT16, ADAMC_FLOAT16, ADAMC_BFLOAT16, ADAMC_FLOAT32};
    gbuf bufs[MIX_T][MIX_BUFS];
    adamc_tensor table[MIX_T];
    uint64_t saved_state = rng_state;
    rng_state = 12345; /* the same inputs every run */
    for (int k = 0; k < MIX_T; k++) {
        const size_t n = MIX_N[k];
        const size_t psize = dtypes[k] == ADAMC_FLOAT32 ? 4 : 2;
        const size_t sizes[MIX_BUFS] = {psize, k == 1 ? 4 : psize, 4, 4, 4, 4, 4};
        for (int b = 0; b < MIX_BUFS; b++) {
            gbuf_init(&bufs[k][b], n * sizes[b], (size_t)(b * 2 + k * 6) % 64 / sizes[b] * sizes[b]);
            for (size_t i = 0; i < n; i++) {
                const float v = b == 3 || b == 4 ? (float)(rng_unit() * 1e-3) : (float)(rng_unit() - 0.5);
                if (sizes[b] == 4)
                    memcpy(bufs[k][b].ptr + 4 * i, &v, 4);
                else {
                    const uint16_t h = dtypes[k] == ADAMC_FLOAT16 ? ref_f32_to_f16(v) : ref_f32_to_bf16(v);
                    memcpy(bufs[k][b].ptr + 2 * i, &h, 2);
                }
            }
        }
        adamc_tensor_init(&table[k]);
        table[k].param = bufs[k][0].ptr, table[k].grad = bufs[k][1].ptr, table[k].exp_avg = bufs[k][2].ptr;
        table[k].exp_avg_sq = bufs[k][3].ptr, table[k].max_exp_avg_sq = bufs[k][4].ptr, table[k].n = n;
        table[k].step = 3, table[k].hp = &hp, table[k].dtype = dtypes[k], table[k].index = (uint64_t)k;
        table[k].grad_float32 = k == 1;
        table[k].master = k == 0 ? bufs[k][5].ptr : NULL;
        table[k].ema = k == 0 || k == 3 ? bufs[k][6].ptr : NULL;
        table[k].rounding = k == 2 ? ADAMC_ROUND_STOCHASTIC : ADAMC_ROUND_NEAREST;
    }
    rng_state = saved_state;
    adamc_step_options opts;
    adamc_step_options_init(&opts);
    opts.grad_scale = 8.0, opts.max_grad_norm = 0.5, opts.skip_nonfinite = 1, opts.ema_decay = 0.9, opts.seed = 7;
    adamc_step_result res;
    adamc_set_num_threads(threads);
    adamc_set_parallel_threshold(8);
    if (pass == 1) { /* an inf in the last tensor: nothing may change */
        float inf = INFINITY;
        memcpy(bufs[3][1].ptr + 4 * 17, &inf, 4);
        unsigned char *snap[MIX_T][MIX_BUFS];
        for (int k = 0; k < MIX_T; k++)
            for (int b = 0; b < MIX_BUFS; b++)
                snap[k][b] = gbuf_snapshot(&bufs[k][b]);
        adamc_status st = adamc_step_multi_ex(table, MIX_T, &opts, &res, NULL);
        int same = 1;
        for (int k = 0; k < MIX_T; k++)
            for (int b = 0; b < MIX_BUFS; b++) {
                same &= gbuf_same(&bufs[k][b], snap[k][b]);
                free(snap[k][b]);
            }
        CHECK(st == ADAMC_OK && res.skipped == 1 && same && isinf(res.grad_norm),
              "mixed: an inf grad skips the step (status %d, skipped %d, norm %g, unchanged %d)", (int)st,
              res.skipped, res.grad_norm, same);
    } else {
        adamc_status st = adamc_step_multi_ex(table, MIX_T, &opts, &res, NULL);
        int guards = 1;
        for (int k = 0; k < MIX_T; k++)
            for (int b = 0; b < MIX_BUFS; b++)
                guards &= gbuf_guards_ok(&bufs[k][b]);
        CHECK(st == ADAMC_OK && !res.skipped && guards && res.grad_norm > 0 && res.clip_coef < 1.0,
              "mixed step: status %d, skipped %d, guards %d, norm %g, coef %g", (int)st, res.skipped, guards,
              res.grad_norm, res.clip_coef);
        int same = 1;
        for (int k = 0; k < MIX_T; k++)
            for (int b = 0; b < MIX_BUFS; b++) {
                if (!mix_expected[k][b])
                    mix_expected[k][b] = gbuf_snapshot(&bufs[k][b]);
                else
                    same &= gbuf_same(&bufs[k][b], mix_expected[k][b]);
            }
        if (mix_expected_norm == 0.0)
            mix_expected_norm = res.grad_norm;
        CHECK(same && res.grad_norm == mix_expected_norm,
              "mixed step with %d threads: the same bits as the first target/thread count (norm %.17g vs %.17g)",
              threads, res.grad_norm, mix_expected_norm);
    }
    adamc_set_num_threads(0);
    adamc_set_parallel_threshold(16384);
    for (int k = 0; k < MIX_T; k++)
        for (int b = 0; b < MIX_BUFS; b++)
            gbuf_free(&bufs[k][b]);
}

static void test_mixed_step(void)
{
    mix_run(1, 0);
    mix_run(3, 0);
    mix_run(2, 1);
}

/* A program built against the 0.1 header passes a table of 0.1-sized entries (no mixed-precision fields): it
 * must keep working, with the new fields read as their defaults, and give the same bits as the new layout. */
typedef struct tensor_v1 {
    size_t struct_size;
    void *param;
    const void *grad;
    void *exp_avg;
    void *exp_avg_sq;
    void *max_exp_avg_sq;
    size_t n;
    int64_t step;
    const adamc_hparams *hp;
    int dtype;
} tensor_v1;

/* The loss scale as torch's fused Adam applies it: grads divided by float32(grad_scale) in the compute type. A
 * step with grad_scale = s gives the bits of a plain step whose grads were divided so beforehand (a float16 param's
 * float16 grads as float32 quotients), for scales that are powers of two (applied as a multiply by the exact
 * reciprocal) and scales that are not (divided), with maximize, in every dtype; the norm is the unscaled grads'. */
static void test_grad_scale_rule(void)
{
    enum { N = 300 };
    const double scales[] = {3.0, 1000.0, 1024.0, 0.125, 98304.0, 1.0 / 3.0};
    const int dtypes[] = {ADAMC_FLOAT32, ADAMC_FLOAT64, ADAMC_FLOAT16};
    for (int si = 0; si < 6; si++)
        for (int di = 0; di < 3; di++)
            for (int maximize = 0; maximize < 2; maximize++) {
                const int dt = dtypes[di];
                const double s = scales[si];
                adamc_hparams hp;
                adamc_hparams_init(&hp);
                hp.lr = 1e-2, hp.weight_decay = 0.01, hp.maximize = maximize;
                /* a: scaled grads and grad_scale; b: the quotients (float32 for float16) and no scale */
                double pa[N], pb[N], ma[N], mb[N], va[N], vb[N], ga64[N], gb64[N];
                float pa32[N], pb32[N], ma32[N], mb32[N], va32[N], vb32[N], ga32[N], gb32[N];
                uint16_t pa16[N], pb16[N], ga16[N];
                const float s32 = (float)s;
                for (int i = 0; i < N; i++) {
                    const double g = (rng_unit() - 0.5) * 1e3 * (i % 7 == 0 ? 1e-6 : 1.0);
                    const double p = rng_unit() - 0.5;
                    pa[i] = pb[i] = p, pa32[i] = pb32[i] = (float)p;
                    pa16[i] = pb16[i] = ref_f32_to_f16((float)p);
                    ma[i] = mb[i] = va[i] = vb[i] = 0.0, ma32[i] = mb32[i] = va32[i] = vb32[i] = 0.0f;
                    ga64[i] = g, gb64[i] = g / (double)s32;
                    ga32[i] = (float)g, gb32[i] = (float)g / s32;
                    ga16[i] = ref_f32_to_f16((float)g);
                    if (dt == ADAMC_FLOAT16)
                        gb32[i] = ref_f16_to_f32(ga16[i]) / s32;
                }
                adamc_tensor a, b;
                adamc_tensor_init(&a);
                adamc_tensor_init(&b);
                a.n = b.n = N, a.step = b.step = 1, a.hp = b.hp = &hp, a.dtype = b.dtype = dt;
                if (dt == ADAMC_FLOAT64) {
                    a.param = pa, a.grad = ga64, a.exp_avg = ma, a.exp_avg_sq = va;
                    b.param = pb, b.grad = gb64, b.exp_avg = mb, b.exp_avg_sq = vb;
                } else {
                    a.exp_avg = ma32, a.exp_avg_sq = va32, b.exp_avg = mb32, b.exp_avg_sq = vb32;
                    if (dt == ADAMC_FLOAT32)
                        a.param = pa32, a.grad = ga32, b.param = pb32, b.grad = gb32;
                    else
                        a.param = pa16, a.grad = ga16, b.param = pb16, b.grad = gb32, b.grad_float32 = 1;
                }
                adamc_step_options oa, ob;
                adamc_step_options_init(&oa);
                adamc_step_options_init(&ob);
                oa.grad_scale = s, oa.compute_norm = ob.compute_norm = 1;
                adamc_step_result ra, rb;
                const adamc_status sa = adamc_step_multi_ex(&a, 1, &oa, &ra, NULL);
                const adamc_status sb = adamc_step_multi_ex(&b, 1, &ob, &rb, NULL);
                int same;
                if (dt == ADAMC_FLOAT64)
                    same = !memcmp(pa, pb, sizeof pa) && !memcmp(ma, mb, sizeof ma) && !memcmp(va, vb, sizeof va);
                else
                    same = !memcmp(ma32, mb32, sizeof ma32) && !memcmp(va32, vb32, sizeof va32) &&
                           (dt == ADAMC_FLOAT32 ? !memcmp(pa32, pb32, sizeof pa32) : !memcmp(pa16, pb16, sizeof pa16));
                CHECK(sa == ADAMC_OK && sb == ADAMC_OK && same && ra.grad_norm == rb.grad_norm,
                      "grad_scale %.17g (dtype %d, maximize %d): the bits of grads divided by float32(scale) "
                      "(status %d/%d, norm %.17g vs %.17g)", s, dt, maximize, (int)sa, (int)sb, ra.grad_norm,
                      rb.grad_norm);
            }
}

static void test_old_tensor_layout(void)
{
    enum { N = 77 };
    static float a[2][4][N], b[2][4][N];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++)
            for (int i = 0; i < N; i++)
                a[k][j][i] = b[k][j][i] = (float)(j == 3 ? rng_unit() : rng_unit() - 0.5);
    adamc_hparams hp;
    adamc_hparams_init(&hp);
    tensor_v1 old[2];
    adamc_tensor now[2];
    for (int k = 0; k < 2; k++) {
        old[k] = (tensor_v1){sizeof(tensor_v1), a[k][0], a[k][1], a[k][2], a[k][3], NULL, N, 2, &hp, ADAMC_FLOAT32};
        adamc_tensor_init(&now[k]);
        now[k].param = b[k][0], now[k].grad = b[k][1], now[k].exp_avg = b[k][2], now[k].exp_avg_sq = b[k][3];
        now[k].n = N, now[k].step = 2, now[k].hp = &hp;
    }
    CHECK(sizeof(tensor_v1) < sizeof(adamc_tensor), "the 0.1 layout is smaller");
    adamc_status s1 = adamc_step_multi((const adamc_tensor *)(const void *)old, 2);
    adamc_status s2 = adamc_step_multi(now, 2);
    CHECK(s1 == ADAMC_OK && s2 == ADAMC_OK && memcmp(a, b, sizeof a) == 0,
          "a table of 0.1-sized entries steps like the new layout (status %d, %d)", (int)s1, (int)s2);
}

static void test_bad_options(void)
{
    adamc_step_options o;
    /* 1e-50 and 1e39 are finite doubles but 0 and inf as a float32, the divisor the kernel uses */
    const double bad_scales[] = {0.0, -1.0, NAN, INFINITY, 1e-50, 1e39};
    for (int i = 0; i < 6; i++) {
        adamc_step_options_init(&o);
        o.grad_scale = bad_scales[i];
        CHECK(adamc_step_multi_ex(NULL, 0, &o, NULL, NULL) == ADAMC_ERR_OPTION, "grad_scale %g refused",
              bad_scales[i]);
    }
    adamc_step_options_init(&o);
    o.compute_norm = 1;
    adamc_step_result r = {0, NAN, 1.0};
    CHECK(adamc_step_multi_ex(NULL, 0, &o, &r, NULL) == ADAMC_OK && r.grad_norm == 0.0,
          "the grad norm of a table with no elements is 0 (torch's clip_grad_norm_ of no grads), got %g",
          r.grad_norm);
    adamc_step_options_init(&o);
    o.max_grad_norm = NAN;
    CHECK(adamc_step_multi_ex(NULL, 0, &o, NULL, NULL) == ADAMC_ERR_OPTION, "max_grad_norm NaN refused");
    adamc_step_options_init(&o);
    o.ema_decay = 1.5;
    CHECK(adamc_step_multi_ex(NULL, 0, &o, NULL, NULL) == ADAMC_ERR_OPTION, "ema_decay 1.5 refused");
    adamc_step_options_init(&o);
    o.struct_size = 0;
    CHECK(adamc_step_multi_ex(NULL, 0, &o, NULL, NULL) == ADAMC_ERR_STRUCT_SIZE, "options struct_size 0");
}

/* adamc_step_multi_sharded, for a table that is one shard of the model: with two shards whose sums of squares
 * are equal (a callback that doubles the sum stands in for the all-reduce), the step clips by sqrt(2) times the
 * shard's own norm, exactly as a table holding both shards; a shard with no elements still calls it; a failing
 * callback writes nothing (ADAMC_ERR_CALLBACK); without norm options it is not called. */
static int calls_of_double_it;
static int double_it(double *sumsq, void *ctx)
{
    calls_of_double_it++;
    *sumsq *= *(const double *)ctx;
    return 0;
}
static int set_total(double *sumsq, void *ctx)
{
    *sumsq = *(const double *)ctx;
    return 0;
}
static int refuse(double *sumsq, void *ctx)
{
    (void)sumsq, (void)ctx;
    return 1;
}
static void test_sharded_norm(void)
{
    enum { N = 257 };
    float p1[N], g1[N], m1[N], v1[N], p2[2 * N], g2[2 * N], m2[2 * N], v2[2 * N];
    for (int i = 0; i < N; i++) {
        p1[i] = p2[i] = p2[N + i] = (float)(rng_unit() - 0.5);
        g1[i] = g2[i] = g2[N + i] = (float)(rng_unit() - 0.5);
        m1[i] = v1[i] = m2[i] = v2[i] = m2[N + i] = v2[N + i] = 0.0f;
    }
    adamc_hparams hp;
    adamc_hparams_init(&hp);
    adamc_tensor shard, whole;
    adamc_tensor_init(&shard);
    adamc_tensor_init(&whole);
    shard.n = N, whole.n = 2 * N, shard.step = whole.step = 1, shard.hp = whole.hp = &hp;
    shard.param = p1, shard.grad = g1, shard.exp_avg = m1, shard.exp_avg_sq = v1;
    whole.param = p2, whole.grad = g2, whole.exp_avg = m2, whole.exp_avg_sq = v2;
    double two = 2.0;
    adamc_step_options os, ow;
    adamc_step_options_init(&os);
    adamc_step_options_init(&ow);
    os.max_grad_norm = ow.max_grad_norm = 0.25;
    adamc_step_result rs = {0, -1.0, -1.0}, rw;
    CHECK(adamc_step_multi_sharded(&shard, 1, &os, refuse, NULL, &rs, NULL) == ADAMC_ERR_CALLBACK &&
              rs.grad_norm == -1.0 && memcmp(p1, p2, sizeof p1) == 0 && m1[0] == 0.0f,
          "a failing reduce_sumsq: ADAMC_ERR_CALLBACK, nothing written");
    CHECK(adamc_step_multi_sharded(&shard, 1, &os, NULL, NULL, &rs, NULL) == ADAMC_ERR_NULL_POINTER,
          "adamc_step_multi_sharded needs its reduce_sumsq");
    calls_of_double_it = 0;
    const adamc_status ss = adamc_step_multi_sharded(&shard, 1, &os, double_it, &two, &rs, NULL);
    const adamc_status sw = adamc_step_multi_ex(&whole, 1, &ow, &rw, NULL);
    CHECK(ss == ADAMC_OK && sw == ADAMC_OK && calls_of_double_it == 1 && rs.clip_coef < 1.0 &&
              fabs(rs.grad_norm - rw.grad_norm) <= 1e-12 * rw.grad_norm &&
              fabs(rs.clip_coef - rw.clip_coef) <= 1e-12,
          "reduce_sumsq: the norm of both shards (%.17g vs %.17g), called once", rs.grad_norm, rw.grad_norm);
    int same = 1;
    for (int i = 0; i < N; i++)
        same &= fabsf(p1[i] - p2[i]) <= 1e-6f * fabsf(p2[i]) + 1e-9f && p2[i] == p2[N + i];
    CHECK(same, "reduce_sumsq: the shard steps as its half of the whole table");
    calls_of_double_it = 0;
    CHECK(adamc_step_multi_sharded(NULL, 0, &os, double_it, &two, &rs, NULL) == ADAMC_OK && calls_of_double_it == 1,
          "a shard with no elements still takes part in the reduction");
    /* a shard whose table is refused (its grad is its param) still takes part, with a NaN */
    adamc_tensor bad = shard;
    bad.grad = bad.param;
    calls_of_double_it = 0;
    CHECK(adamc_step_multi_sharded(&bad, 1, &os, double_it, &two, &rs, NULL) == ADAMC_ERR_OVERLAP &&
              calls_of_double_it == 1,
          "a refused shard still takes part in the reduction (calls %d)", calls_of_double_it);
    /* ... and the shards that see its NaN (or any non-finite total) skip: nothing written, skipped reported,
     * with max_grad_norm alone (no skip_nonfinite) too */
    float before[N], m_before[N];
    memcpy(before, p1, sizeof p1);
    memcpy(m_before, m1, sizeof m1);
    adamc_step_result rn = {0, -1.0, -1.0};
    double nan_total = NAN;
    CHECK(adamc_step_multi_sharded(&shard, 1, &os, set_total, &nan_total, &rn, NULL) == ADAMC_OK && rn.skipped &&
              memcmp(before, p1, sizeof p1) == 0 && memcmp(m_before, m1, sizeof m1) == 0,
          "a NaN total skips the shard's step (skipped %d)", rn.skipped);
    double inf_total = INFINITY;
    rn.skipped = 0;
    CHECK(adamc_step_multi_sharded(&shard, 1, &os, set_total, &inf_total, &rn, NULL) == ADAMC_OK && rn.skipped &&
              memcmp(before, p1, sizeof p1) == 0 && isinf(rn.grad_norm),
          "an infinite total skips the shard's step and reports the norm");
    adamc_step_options plain;
    adamc_step_options_init(&plain);
    calls_of_double_it = 0;
    CHECK(adamc_step_multi_sharded(&shard, 1, &plain, double_it, &two, &rs, NULL) == ADAMC_OK &&
              calls_of_double_it == 0,
          "without norm options the reduction is not called");
}

/* Contracts a hostile review found loose: adamc_convert checks the dtype pair first (also for n == 0) and the
 * alignment of both buffers; a refused adamc_step_multi_ex leaves *result as it was; float32 -> bfloat16 keeps
 * denormals' bits on every target under FTZ/DAZ (the AVX512-BF16 path tested for denormals with vfpclassps,
 * which follows DAZ, so vcvtne2ps2bf16 flushed them there). */
static void test_contract_edges(void)
{
    float src[65];
    uint16_t dst[66];
    for (int i = 0; i < 65; i++)
        src[i] = 1.0f + (float)i;
    memset(dst, 0xAB, sizeof dst);
    CHECK(adamc_convert(src, 99, dst, ADAMC_FLOAT32, 0) == ADAMC_ERR_DTYPE, "convert: unknown dtype at n == 0");
    CHECK(adamc_convert(src, ADAMC_FLOAT64, dst, ADAMC_FLOAT16, 0) == ADAMC_ERR_DTYPE, "convert: f64 pair at n == 0");
    CHECK(adamc_convert((const char *)src + 1, ADAMC_FLOAT32, dst, ADAMC_BFLOAT16, 8) == ADAMC_ERR_MISALIGNED,
          "convert: misaligned float32 source");
    CHECK(adamc_convert(src, ADAMC_FLOAT32, (char *)dst + 1, ADAMC_FLOAT16, 8) == ADAMC_ERR_MISALIGNED,
          "convert: misaligned float16 destination");
    int untouched = 1;
    for (int i = 0; i < 66; i++)
        untouched &= dst[i] == 0xABAB;
    CHECK(untouched, "convert: a refused call writes nothing");

    adamc_step_options o;
    adamc_step_options_init(&o);
    o.grad_scale = -1.0;
    adamc_step_result r = {7, 3.0, 5.0};
    CHECK(adamc_step_multi_ex(NULL, 0, &o, &r, NULL) == ADAMC_ERR_OPTION && r.skipped == 7 && r.grad_norm == 3.0 &&
              r.clip_coef == 5.0,
          "step_multi_ex: a refused call leaves *result as it was");
    adamc_step_options_init(&o);
    CHECK(adamc_step_multi_ex(NULL, 0, &o, &r, NULL) == ADAMC_OK && r.skipped == 0 && isnan(r.grad_norm) &&
              r.clip_coef == 1.0,
          "step_multi_ex: an empty table reports no norm and no clipping");

#if defined(__x86_64__) || defined(__i386__)
    /* full groups of 32 (the vcvtne2ps2bf16 path) with denormals of both signs among normal values */
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = (i % 7 == 3) ? (i & 1 ? -1e-40f : 3e-39f) : (i % 11 == 5) ? (i & 1 ? -0.0f : 0.0f)
                                                                      : (float)i * 0.37f - 20.0f;
    for (int i = 192; i < 256; i++) /* groups with zeros but no denormal: the instruction's path */
        x[i] = (i % 5 == 0) ? 0.0f : (float)i;
    uint16_t want[256], got[256];
    const char *initial = adamc_current_target();
    const unsigned int csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(csr | 0x8040); /* FTZ + DAZ, as torch.set_flush_denormal(True) */
    adamc_set_target("baseline");
    adamc_status st0 = adamc_convert(x, ADAMC_FLOAT32, want, ADAMC_BFLOAT16, 256);
    for (int t = 1; t < adamc_target_count(); t++) {
        if (!adamc_target_supported(t))
            continue;
        adamc_set_target(adamc_target_name(t));
        memset(got, 0, sizeof got);
        adamc_status st = adamc_convert(x, ADAMC_FLOAT32, got, ADAMC_BFLOAT16, 256);
        CHECK(st0 == ADAMC_OK && st == ADAMC_OK && memcmp(got, want, sizeof got) == 0,
              "float32 -> bfloat16 under FTZ/DAZ: %s differs from baseline", adamc_target_name(t));
    }
    __builtin_ia32_ldmxcsr(csr);
    adamc_set_target(initial);
    CHECK(want[3] != 0 && want[3] == (uint16_t)(f32_bits(x[3]) >> 16), "a denormal keeps its bits (%04x)", want[3]);
#endif
}

/* ------------------------------------------------------------------ main */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Runs one test function and prints its name, time and failures. */
#define RUN(fn)                                                                                                   \
    do {                                                                                                          \
        const double t0_ = now_s();                                                                               \
        const long f0_ = n_failed;                                                                                \
        fn();                                                                                                     \
        printf("  %-28s %-8s %6.2f s%s\n", #fn, current_target_name, now_s() - t0_,                             \
               n_failed == f0_ ? "" : "  FAILED");                                                                \
    } while (0)

int main(void)
{
    memset(canary_block, CANARY, sizeof canary_block);
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *initial = adamc_current_target();
    printf("adam_c C tests: initial target %s, %d threads\n", initial, adamc_get_num_threads());

    RUN(test_fork_before_parallel); /* must come before anything runs a parallel region */
    RUN(test_misc_api);

    const int count = adamc_target_count();
    int ran = 0;
    for (int ti = 0; ti < count; ti++) {
        const char *name = adamc_target_name(ti);
        if (!adamc_target_supported(ti)) {
            printf("target %s: not supported by this CPU, skipped\n", name);
            continue;
        }
        CHECK(adamc_set_target(name) == ADAMC_OK && strcmp(adamc_current_target(), name) == 0, "set_target(%s)",
              name);
        current_target_name = name;
        const long before = n_failed;
        RUN(test_lengths_offsets_combos);
        RUN(test_mixed_offsets);
        RUN(test_special_values);
        RUN(test_large);
        RUN(test_parallel_small);
        RUN(test_multi);
        RUN(test_conversions);
        RUN(test_mixed_step);
        RUN(test_grad_scale_rule);
        printf("target %s: kernels %s\n", name, n_failed == before ? "ok" : "FAILED");
        ran++;
    }
    CHECK(ran >= 1, "at least one target ran");
    current_target_name = "any";
    adamc_set_target(initial);
    RUN(test_misaligned);
    RUN(test_null_pointers);
    RUN(test_overlap);
    RUN(test_bad_hparams);
    RUN(test_bad_dtype);
    RUN(test_bad_options);
    RUN(test_sharded_norm);
    RUN(test_contract_edges);
    RUN(test_old_tensor_layout);
    RUN(test_struct_size_and_version);
    RUN(test_fork_after_parallel);
    RUN(test_impossible_sizes);

    printf("%ld passed, %ld failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
