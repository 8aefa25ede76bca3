/* kernel_body.inc.h: THE Adam kernel, written once; included per element type by kernel_target.inc.h.
 * Expects ADAMC_T (element type), ADAMC_SQRT, ADAMC_NAME(x) (x + type + target suffix). */

/* One specialised single pass. The flags are compile-time constants at every call site below, so each
 * combination becomes its own branch-free loop; nothing is decided per element. Multiply-adds are written as
 * separate operations and the build uses -ffp-contract=off, so every target rounds exactly like the others
 * (and like PyTorch's unfused formulas): results are bit-identical across targets and thread counts. */
static inline __attribute__((always_inline)) void ADAMC_NAME(pass)(
    ADAMC_T *restrict p, const ADAMC_T *restrict g, ADAMC_T *restrict m, ADAMC_T *restrict v,
    ADAMC_T *restrict vmax, size_t n, const adamc_coeffs *c, const int amsgrad, const int l2,
    const int decoupled, const int maximize, const int lerp_large)
{
    const ADAMC_T decay_keep = (ADAMC_T)c->decay_keep;
    const ADAMC_T weight_decay = (ADAMC_T)c->weight_decay;
    const ADAMC_T lerp_weight = (ADAMC_T)c->lerp_weight;
    const ADAMC_T lerp_weight_comp = (ADAMC_T)1 - lerp_weight; /* as torch: in the element type */
    const ADAMC_T beta2 = (ADAMC_T)c->beta2;
    const ADAMC_T one_minus_beta2 = (ADAMC_T)c->one_minus_beta2;
    const ADAMC_T bc2_sqrt = (ADAMC_T)c->bias_correction2_sqrt;
    const ADAMC_T neg_step_size = (ADAMC_T)c->neg_step_size;
    const ADAMC_T eps = (ADAMC_T)c->eps;

#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        ADAMC_T grad = maximize ? -g[i] : g[i];
        ADAMC_T param = p[i];
        if (l2)
            grad = grad + weight_decay * param;
        if (decoupled)
            param = param * decay_keep;
        const ADAMC_T avg = m[i];
        const ADAMC_T diff = grad - avg;
        /* torch's lerp: start + w*(end - start) for w < 0.5, else end - (end - start)*(1 - w) */
        const ADAMC_T new_avg = lerp_large ? grad - diff * lerp_weight_comp : avg + lerp_weight * diff;
        const ADAMC_T new_sq = v[i] * beta2 + one_minus_beta2 * grad * grad;
        ADAMC_T denom_sq = new_sq;
        if (amsgrad) {
            const ADAMC_T old_max = vmax[i];
            /* torch.maximum propagates NaN from either side */
            const ADAMC_T new_max = (new_sq > old_max || new_sq != new_sq) ? new_sq : old_max;
            vmax[i] = new_max;
            denom_sq = new_max;
        }
        const ADAMC_T denom = ADAMC_SQRT(denom_sq) / bc2_sqrt + eps;
        m[i] = new_avg;
        v[i] = new_sq;
        p[i] = param + neg_step_size * new_avg / denom;
    }
}

#define ADAMC_CASE(flags)                                                                                         \
    case flags:                                                                                                   \
        ADAMC_NAME(pass)(p, g, m, v, vmax, n, c, (flags) & ADAMC_VARIANT_AMSGRAD, (flags) & ADAMC_VARIANT_L2,    \
                         (flags) & ADAMC_VARIANT_DECOUPLED, (flags) & ADAMC_VARIANT_MAXIMIZE,                     \
                         (flags) & ADAMC_VARIANT_LERP_LARGE);                                                     \
        return;
#define ADAMC_CASES_DECAY(base) ADAMC_CASE(base) ADAMC_CASE((base) | ADAMC_VARIANT_L2) \
                                ADAMC_CASE((base) | ADAMC_VARIANT_DECOUPLED)
#define ADAMC_CASES_AMS(base) ADAMC_CASES_DECAY(base) ADAMC_CASES_DECAY((base) | ADAMC_VARIANT_AMSGRAD)
#define ADAMC_CASES_MAX(base) ADAMC_CASES_AMS(base) ADAMC_CASES_AMS((base) | ADAMC_VARIANT_MAXIMIZE)

/* Entry point of this type and target: one switch per call (per tensor segment), then one specialised loop. */
void ADAMC_NAME(adamc_kernel)(ADAMC_T *p, const ADAMC_T *g, ADAMC_T *m, ADAMC_T *v, ADAMC_T *vmax, size_t n,
                              const adamc_coeffs *c)
{
    switch (c->variant) {
        ADAMC_CASES_MAX(0)
        ADAMC_CASES_MAX(ADAMC_VARIANT_LERP_LARGE)
    default:
        return; /* unreachable: the dispatcher only builds the variants above */
    }
}

#undef ADAMC_CASE
#undef ADAMC_CASES_DECAY
#undef ADAMC_CASES_AMS
#undef ADAMC_CASES_MAX

/* The memory-floor probe of this type and target: the same bytes as a step (read p, g, m, v; write p, m, v)
 * with no math, so benchmarks can report a step as a fraction of what the memory system allows. */
void ADAMC_NAME(adamc_probe)(ADAMC_T *restrict p, const ADAMC_T *restrict g, ADAMC_T *restrict m,
                             ADAMC_T *restrict v, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        const ADAMC_T grad = g[i];
        p[i] = p[i] + grad;
        m[i] = m[i] + grad;
        v[i] = v[i] + grad;
    }
}
