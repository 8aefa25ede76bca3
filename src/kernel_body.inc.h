/* kernel_body.inc.h: THE Adam kernel, written once; included per compute type by kernel_target.inc.h.
 * Expects ADAMC_T (compute type), ADAMC_IS_F64 (0/1), ADAMC_SQRT, ADAMC_NAME(x) (x + type + target suffix). */
/*
 * Structure: the body walks its range in tiles of ADAMC_TILE elements. Per tile, every buffer goes through a
 * per-type helper: load_* gives a pointer to compute-type values (the buffer itself when it already has the
 * compute type, else a converted copy in an L1 tile), out_* the place the math writes to (the buffer or a tile),
 * store_* converts a tile back (rounding to nearest even, or stochastically). The math loop in between is the same
 * for every storage type. In the same-type kernels (float32/float64, the hot path) every argument is a
 * compile-time constant, so the helpers fold away (no copies) and each option set is its own branch-free loop.
 * In the general kernels the storage types are uniform run-time values: the helpers then choose a conversion
 * once per tile (outside the math loop), so 4 loops (AMSGrad x EMA) serve every storage combination; nothing is
 * decided per element. Without AMSGrad and EMA, the common options also get compiled instances, and so do the
 * common layouts (all bfloat16, bfloat16 params with or without a float32 master, bfloat16 state), where bfloat16
 * inputs are converted in registers inside the math loop ("fuse"): the same body, chosen once per segment.
 * Multiply-adds are separate operations and the build uses -ffp-contract=off, so every target rounds exactly like
 * the others (and like PyTorch's unfused formulas).
 *
 * State hooks: load_state / out_state / store_state take the state's storage type `stype` (compute type, bfloat16,
 * or blockwise int8 from state_codec.inc.h). Tiles start at `begin` and advance by ADAMC_TILE, so when `begin` is a
 * multiple of 256 every tile is one 256-element block (blockwise quantisation reads its scale per tile).
 */

/* Values of buffer `src` (storage type `type`) at elements [i, i + k), as compute-type values. */
static inline __attribute__((always_inline)) const ADAMC_T *ADAMC_NAME(load)(const int type, const void *src,
                                                                             size_t i, size_t k, ADAMC_T *tile)
{
#if ADAMC_IS_F64
    (void)type, (void)k, (void)tile;
    return (const double *)src + i;
#else
    if (type == ADAMC_FLOAT16) {
        adamc_tile_f16_to_f32(tile, (const uint16_t *)src + i, k);
        return tile;
    }
    if (type == ADAMC_BFLOAT16) {
        adamc_tile_bf16_to_f32(tile, (const uint16_t *)src + i, k);
        return tile;
    }
    return (const float *)src + i;
#endif
}

/* Where the math writes results for buffer `dst`: the buffer itself if it has the compute type, else the tile. */
static inline __attribute__((always_inline)) ADAMC_T *ADAMC_NAME(out)(const int type, void *dst, size_t i,
                                                                      ADAMC_T *tile)
{
#if ADAMC_IS_F64
    (void)type, (void)tile;
    return (double *)dst + i;
#else
    return type == ADAMC_FLOAT32 ? (float *)dst + i : tile;
#endif
}

/* Writes k compute-type values to buffer `dst` of storage type `type` (nothing to do for the compute type). */
static inline __attribute__((always_inline)) void ADAMC_NAME(store)(const int type, const int stochastic, void *dst,
                                                                    size_t i, size_t k, const ADAMC_T *vals,
                                                                    const adamc_coeffs *c)
{
#if ADAMC_IS_F64
    (void)type, (void)stochastic, (void)dst, (void)i, (void)k, (void)vals, (void)c;
#else
    if (type == ADAMC_FLOAT16)
        adamc_tile_f32_to_f16((uint16_t *)dst + i, vals, k);
    else if (type == ADAMC_BFLOAT16 && stochastic)
        adamc_tile_f32_to_bf16_sr((uint16_t *)dst + i, vals, k, (uint64_t)i, c->sr_key_lo, c->sr_key_hi);
    else if (type == ADAMC_BFLOAT16)
        adamc_tile_f32_to_bf16((uint16_t *)dst + i, vals, k);
#endif
}

/* The state's hooks: stype is the state's adamc_state_dtype (a uniform run-time value in the general kernels).
 * Compute type: the buffer itself. bfloat16 and int8 (float32 compute only): decoded into the tile, the math writes
 * the tile, store_state encodes it. For int8 the tile is one 256-element block (the pass starts on a block boundary,
 * see cut_granule in adam_c.c): its absmax is scale[i / 256]. sgn: exp_avg (signed map); the others are unsigned
 * and never round a nonzero value to 0. */
static inline __attribute__((always_inline)) const ADAMC_T *ADAMC_NAME(load_state)(const int stype, const void *src,
                                                                                   const float *scale,
                                                                                   const int sgn, size_t i,
                                                                                   size_t k, ADAMC_T *tile)
{
#if ADAMC_IS_F64
    (void)stype, (void)scale, (void)sgn, (void)k, (void)tile;
#else
    if (stype == ADAMC_STATE_BFLOAT16) {
        adamc_tile_bf16_to_f32(tile, (const uint16_t *)src + i, k);
        return tile;
    }
    if (stype == ADAMC_STATE_INT8) {
        adamc_q8_decode_tile(tile, (const uint8_t *)src + i, k, scale[i / ADAMC_Q8_BLOCK], sgn);
        return tile;
    }
#endif
    return (const ADAMC_T *)src + i;
}
static inline __attribute__((always_inline)) ADAMC_T *ADAMC_NAME(out_state)(const int stype, void *dst, size_t i,
                                                                            ADAMC_T *tile)
{
    return stype == ADAMC_STATE_COMPUTE ? (ADAMC_T *)dst + i : tile;
}
static inline __attribute__((always_inline)) void ADAMC_NAME(store_state)(const int stype, void *dst, float *scale,
                                                                          const int sgn, size_t i, size_t k,
                                                                          const ADAMC_T *vals, const int stochastic,
                                                                          uint32_t key_lo, uint32_t key_hi)
{
#if ADAMC_IS_F64
    (void)stype, (void)dst, (void)scale, (void)sgn, (void)i, (void)k, (void)vals, (void)stochastic, (void)key_lo,
        (void)key_hi;
#else
    if (stype == ADAMC_STATE_BFLOAT16 && stochastic)
        adamc_tile_f32_to_bf16_sr((uint16_t *)dst + i, vals, k, (uint64_t)i, key_lo, key_hi);
    else if (stype == ADAMC_STATE_BFLOAT16)
        adamc_tile_f32_to_bf16((uint16_t *)dst + i, vals, k);
    else if (stype == ADAMC_STATE_INT8)
        adamc_q8_encode_tile((uint8_t *)dst + i, &scale[i / ADAMC_Q8_BLOCK], vals, k, sgn, !sgn);
#endif
}

/* One pass over elements [begin, end) of tensor t.
 * ptype/gtype/stype: storage types of param, grad, state. master: param is written from t->master (read and
 * updated in the compute type). stochastic: stochastic rounding of the param (these four: constants or uniform
 * run-time values, used per tile). ema: update t->ema. amsgrad (both compile-time constants).
 * decay: 0 none, 1 L2, 2 decoupled, -1 read from c->variant. lerp_large: 0/1, or -1 read from c->variant.
 * grad_mul: multiply grads by c->grad_mul1 then c->grad_mul2. grad_div (a uniform run-time value, never with
 * fuse): divide each tile of grads by c->grad_div first (a loss scale that is not a power of two). */
static inline __attribute__((always_inline)) void ADAMC_NAME(pass)(
    const adamc_tensor *t, const adamc_coeffs *c, size_t begin, size_t end, const int ptype, const int gtype,
    const int stype, const int master, const int stochastic, const int ema, const int amsgrad, const int decay,
    const int lerp_large, const int grad_mul, const int fuse, const int grad_div)
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
    const ADAMC_T grad_mul1 = (ADAMC_T)c->grad_mul1;
    const ADAMC_T grad_mul2 = (ADAMC_T)c->grad_mul2;
    const ADAMC_T divisor = (ADAMC_T)c->grad_div;
    const ADAMC_T ema_keep = (ADAMC_T)c->ema_keep;
    const ADAMC_T ema_weight = (ADAMC_T)c->ema_weight;
    /* uniform over the pass; constants where the instantiation fixes them */
    const int l2 = decay >= 0 ? decay == 1 : (c->variant & ADAMC_VARIANT_L2) != 0;
    const int decoupled = decay >= 0 ? decay == 2 : (c->variant & ADAMC_VARIANT_DECOUPLED) != 0;
    const int large = lerp_large >= 0 ? lerp_large : (c->variant & ADAMC_VARIANT_LERP_LARGE) != 0;
    /* fuse (only where the storage types are compile-time constants): bfloat16 inputs are converted in registers
     * inside the math loop instead of into tiles first (a tile costs a store and a load per value; outputs still
     * go through tiles, whose conversion uses AVX512-BF16 where the CPU has it) */
    const int fuse_g = fuse && gtype == ADAMC_BFLOAT16;
    const int fuse_p = fuse && !master && ptype == ADAMC_BFLOAT16;
    const int fuse_s = fuse && stype == ADAMC_STATE_BFLOAT16;

    ADAMC_T gtile[ADAMC_TILE], ptile[ADAMC_TILE], mtile[ADAMC_TILE], vtile[ADAMC_TILE], xtile[ADAMC_TILE];
    for (size_t i = begin; i < end; i += ADAMC_TILE) {
        const size_t k = end - i < ADAMC_TILE ? end - i : ADAMC_TILE;
        if (stype == ADAMC_STATE_INT8 && i + ADAMC_TILE < end) {
            /* The next tile's int8 codes (4 cache lines per state array). At one byte per element these streams
             * advance a quarter as fast as the float32 ones, and the hardware prefetchers leave them behind:
             * measured interleaved in one process (3.2e7 elements, 2 threads, Zen 4), this makes the int8-state
             * step 16-26% faster; prefetching the other streams too, or further ahead, gained nothing more, and
             * for bfloat16 state it gained nothing at all. */
            const size_t next = i + ADAMC_TILE;
            /* only lines inside the buffers: an address past the end is undefined even if a prefetch never faults */
            for (size_t line = 0; line < ADAMC_TILE && next + line < end; line += 64) {
                __builtin_prefetch((const uint8_t *)t->exp_avg + next + line, 1);
                __builtin_prefetch((const uint8_t *)t->exp_avg_sq + next + line, 1);
                if (amsgrad)
                    __builtin_prefetch((const uint8_t *)t->max_exp_avg_sq + next + line, 1);
            }
        }
        /* the bfloat16 bits the fused loads read (formed only for buffers that hold bfloat16) */
        const uint16_t *const g16 = fuse_g ? (const uint16_t *)t->grad + i : NULL;
        const uint16_t *const p16 = fuse_p ? (const uint16_t *)t->param + i : NULL;
        const uint16_t *const m16 = fuse_s ? (const uint16_t *)t->exp_avg + i : NULL;
        const uint16_t *const v16 = fuse_s ? (const uint16_t *)t->exp_avg_sq + i : NULL;
        const ADAMC_T *gp = fuse_g ? NULL : ADAMC_NAME(load)(gtype, t->grad, i, k, gtile);
        if (grad_div && !fuse_g) { /* torch's fused Adam: g / float32(scale) in the compute type, into the tile */
#pragma omp simd
            for (size_t j = 0; j < k; j++)
                gtile[j] = gp[j] / divisor;
            gp = gtile;
        }
        const ADAMC_T *pin = master ? (const ADAMC_T *)t->master + i
                             : fuse_p ? NULL
                                      : ADAMC_NAME(load)(ptype, t->param, i, k, ptile);
        ADAMC_T *pout = master ? (ADAMC_T *)t->master + i : ADAMC_NAME(out)(ptype, t->param, i, ptile);
        const ADAMC_T *min = fuse_s ? NULL : ADAMC_NAME(load_state)(stype, t->exp_avg, t->exp_avg_absmax, 1, i, k, mtile);
        ADAMC_T *mout = ADAMC_NAME(out_state)(stype, t->exp_avg, i, mtile);
        const ADAMC_T *vin = fuse_s ? NULL
                                    : ADAMC_NAME(load_state)(stype, t->exp_avg_sq, t->exp_avg_sq_absmax, 0, i, k, vtile);
        ADAMC_T *vout = ADAMC_NAME(out_state)(stype, t->exp_avg_sq, i, vtile);
        const ADAMC_T *xin = amsgrad ? ADAMC_NAME(load_state)(stype, t->max_exp_avg_sq, t->max_exp_avg_sq_absmax, 0,
                                                             i, k, xtile)
                                     : NULL;
        ADAMC_T *xout = amsgrad ? ADAMC_NAME(out_state)(stype, t->max_exp_avg_sq, i, xtile) : NULL;
        ADAMC_T *eb = ema ? (ADAMC_T *)t->ema + i : NULL;

#pragma omp simd
        for (size_t j = 0; j < k; j++) {
            ADAMC_T grad = fuse_g ? (ADAMC_T)adamc_bf16_to_f32(g16[j]) : gp[j];
            if (grad_mul)
                grad = grad * grad_mul1 * grad_mul2; /* (g * mul1) * mul2: torch's unscale_, then clip */
            ADAMC_T param = fuse_p ? (ADAMC_T)adamc_bf16_to_f32(p16[j]) : pin[j];
            if (decay < 0) { /* run-time choice: both computed, one selected (bit-identical to the fixed forms) */
                const ADAMC_T g_l2 = grad + weight_decay * param;
                const ADAMC_T p_dec = param * decay_keep;
                grad = l2 ? g_l2 : grad;
                param = decoupled ? p_dec : param;
            } else {
                if (l2)
                    grad = grad + weight_decay * param;
                if (decoupled)
                    param = param * decay_keep;
            }
            const ADAMC_T avg = fuse_s ? (ADAMC_T)adamc_bf16_to_f32(m16[j]) : min[j];
            const ADAMC_T diff = grad - avg;
            /* torch's lerp: start + w*(end - start) for w < 0.5, else end - (end - start)*(1 - w) */
            ADAMC_T new_avg;
            if (lerp_large < 0) {
                const ADAMC_T small_form = avg + lerp_weight * diff;
                const ADAMC_T large_form = grad - diff * lerp_weight_comp;
                new_avg = large ? large_form : small_form;
            } else {
                new_avg = large ? grad - diff * lerp_weight_comp : avg + lerp_weight * diff;
            }
            const ADAMC_T old_sq = fuse_s ? (ADAMC_T)adamc_bf16_to_f32(v16[j]) : vin[j];
            const ADAMC_T new_sq = old_sq * beta2 + one_minus_beta2 * grad * grad;
            ADAMC_T denom_sq = new_sq;
            if (amsgrad) {
                const ADAMC_T old_max = xin[j];
                /* torch.maximum propagates NaN from either side */
                const ADAMC_T new_max = (new_sq > old_max || new_sq != new_sq) ? new_sq : old_max;
                xout[j] = new_max;
                denom_sq = new_max;
            }
            const ADAMC_T denom = ADAMC_SQRT(denom_sq) / bc2_sqrt + eps;
            const ADAMC_T new_param = param + neg_step_size * new_avg / denom;
            mout[j] = new_avg;
            vout[j] = new_sq;
            pout[j] = new_param;
            if (ema)
                eb[j] = eb[j] * ema_keep + new_param * ema_weight;
        }

        ADAMC_NAME(store)(ptype, stochastic, t->param, i, k, pout, c);
        if (stype != ADAMC_STATE_COMPUTE) {
            const int sr = t->state_rounding == ADAMC_ROUND_STOCHASTIC; /* uniform: a branch per tile */
            ADAMC_NAME(store_state)(stype, t->exp_avg, t->exp_avg_absmax, 1, i, k, mout, sr, c->state_key_lo[0],
                                    c->state_key_hi[0]);
            ADAMC_NAME(store_state)(stype, t->exp_avg_sq, t->exp_avg_sq_absmax, 0, i, k, vout, sr,
                                    c->state_key_lo[1], c->state_key_hi[1]);
            if (amsgrad)
                ADAMC_NAME(store_state)(stype, t->max_exp_avg_sq, t->max_exp_avg_sq_absmax, 0, i, k, xout, sr,
                                        c->state_key_lo[2], c->state_key_hi[2]);
        }
    }
}

/* The same-type kernels (param, grad and state in the compute type, no EMA): every option compile-time. */
#define ADAMC_CASE(flags)                                                                                         \
    case flags:                                                                                                   \
        ADAMC_NAME(pass)(t, c, begin, end, ADAMC_SELF, ADAMC_SELF, ADAMC_STATE_COMPUTE, 0, 0, 0,                  \
                         ((flags) & ADAMC_VARIANT_AMSGRAD) != 0,                                                  \
                         ((flags) & ADAMC_VARIANT_L2) ? 1 : ((flags) & ADAMC_VARIANT_DECOUPLED) ? 2 : 0,          \
                         ((flags) & ADAMC_VARIANT_LERP_LARGE) != 0, ((flags) & ADAMC_VARIANT_GRAD_MUL) != 0, 0,   \
                         0);                                                                                      \
        return;
#define ADAMC_CASES_DECAY(base) ADAMC_CASE(base) ADAMC_CASE((base) | ADAMC_VARIANT_L2) \
                                ADAMC_CASE((base) | ADAMC_VARIANT_DECOUPLED)
#define ADAMC_CASES_AMS(base) ADAMC_CASES_DECAY(base) ADAMC_CASES_DECAY((base) | ADAMC_VARIANT_AMSGRAD)
#define ADAMC_CASES_MUL(base) ADAMC_CASES_AMS(base) ADAMC_CASES_AMS((base) | ADAMC_VARIANT_GRAD_MUL)

/* The general kernels: AMSGrad and EMA compile-time (they add memory streams to the loop); everything else is a
 * uniform run-time value: storage types (state included), master and rounding pick per-tile conversions (outside
 * the math loop),
 * weight decay, lerp form and grad multipliers are selected inside it (see pass). 4 loops per compute type. */
#define ADAMC_GCASE(ams, ema)                                                                                     \
    case ADAMC_KIND(ams, ema):                                                                                    \
        ADAMC_NAME(pass)(t, c, begin, end, t->dtype, c->grad_type, c->state, t->master != NULL,                   \
                         t->rounding == ADAMC_ROUND_STOCHASTIC, ema, ams, -1, -1, 1, 0,                           \
                         (c->variant & ADAMC_VARIANT_GRAD_DIV) != 0);                                             \
        return;
/* The compiled fast paths of the general kernel: no AMSGrad, no EMA, torch's default lerp form, no decay or
 * AdamW's, grads multiplied or not: these options fixed at compile time, so the loop does not compute every form
 * and select (same bits). Storage types (pt, gt, st, master mst, stochastic rounding sr) are either run-time
 * values or, with fuse, compile-time constants of a common bfloat16 layout, whose inputs are then converted in
 * registers (see fuse in pass). Options outside these four sets break out to the general loops. In cache, one
 * thread, Zen 4, A/B in one run: the options alone about 0.94x the time of the general loop for all-bfloat16 and
 * bf16 params + master, the fused layouts 0.73-0.82x more. */
#define ADAMC_FAST_VARIANTS(pt, gt, st, mst, sr, fuse)                                                            \
    switch (c->variant) {                                                                                         \
    case 0: ADAMC_NAME(pass)(t, c, begin, end, pt, gt, st, mst, sr, 0, 0, 0, 0, 0, fuse, 0); return;              \
    case ADAMC_VARIANT_DECOUPLED:                                                                                 \
        ADAMC_NAME(pass)(t, c, begin, end, pt, gt, st, mst, sr, 0, 0, 2, 0, 0, fuse, 0);                          \
        return;                                                                                                   \
    case ADAMC_VARIANT_GRAD_MUL:                                                                                  \
        ADAMC_NAME(pass)(t, c, begin, end, pt, gt, st, mst, sr, 0, 0, 0, 0, 1, fuse, 0);                          \
        return;                                                                                                   \
    case ADAMC_VARIANT_DECOUPLED | ADAMC_VARIANT_GRAD_MUL:                                                        \
        ADAMC_NAME(pass)(t, c, begin, end, pt, gt, st, mst, sr, 0, 0, 2, 0, 1, fuse, 0);                          \
        return;                                                                                                   \
    default: break;                                                                                               \
    }

/* Entry point of this compute type and target: one switch per call (per tensor segment), then one loop. */
void ADAMC_NAME(adamc_kernel)(const adamc_tensor *t, const adamc_coeffs *c, size_t begin, size_t end)
{
    if (c->kind < 0) {
        switch (c->variant) {
            ADAMC_CASES_MUL(0)
            ADAMC_CASES_MUL(ADAMC_VARIANT_LERP_LARGE)
        default:
            return; /* unreachable: the dispatcher only builds the variants above */
        }
    }
#if !ADAMC_IS_F64
    if (c->kind == ADAMC_KIND(0, 0)) {
        const int bf16_in = t->dtype == ADAMC_BFLOAT16 && c->grad_type == ADAMC_BFLOAT16;
        const int nearest = t->rounding != ADAMC_ROUND_STOCHASTIC;
        if (bf16_in && c->state == ADAMC_STATE_BFLOAT16 && !t->master && nearest) /* all bfloat16 */
            ADAMC_FAST_VARIANTS(ADAMC_BFLOAT16, ADAMC_BFLOAT16, ADAMC_STATE_BFLOAT16, 0, 0, 1)
        if (bf16_in && c->state == ADAMC_STATE_COMPUTE && t->master && nearest) /* float32 master */
            ADAMC_FAST_VARIANTS(ADAMC_BFLOAT16, ADAMC_BFLOAT16, ADAMC_STATE_COMPUTE, 1, 0, 1)
        if (bf16_in && c->state == ADAMC_STATE_COMPUTE && !t->master && nearest)
            ADAMC_FAST_VARIANTS(ADAMC_BFLOAT16, ADAMC_BFLOAT16, ADAMC_STATE_COMPUTE, 0, 0, 1)
        if (t->dtype == ADAMC_FLOAT32 && c->grad_type == ADAMC_FLOAT32 && c->state == ADAMC_STATE_BFLOAT16)
            ADAMC_FAST_VARIANTS(ADAMC_FLOAT32, ADAMC_FLOAT32, ADAMC_STATE_BFLOAT16, 0, 0, 1) /* bfloat16 state */
        ADAMC_FAST_VARIANTS(t->dtype, c->grad_type, c->state, t->master != NULL,
                            t->rounding == ADAMC_ROUND_STOCHASTIC, 0) /* any other layout */
    }
#endif
    switch (c->kind) {
        ADAMC_GCASE(0, 0)
        ADAMC_GCASE(0, 1)
        ADAMC_GCASE(1, 0)
        ADAMC_GCASE(1, 1)
    default:
        return; /* unreachable: the dispatcher only builds the kinds above */
    }
}

#undef ADAMC_CASE
#undef ADAMC_CASES_DECAY
#undef ADAMC_CASES_AMS
#undef ADAMC_CASES_MUL
#undef ADAMC_GCASE
#undef ADAMC_FAST_VARIANTS

/* Sum of squares of the unscaled grads over [begin, end) in double: 4 accumulators of 8 lanes (independent
 * chains, so the adds overlap), element e going to lane (e - begin) % 32 in the main loop and to accumulators in
 * turn in the tail, combined in a fixed order: every target gives the same bits for the same range. GCC vector
 * types make the lanes explicit (exact element-wise operations; each target maps them to its registers).
 * Non-finite grads: float32 squares cannot overflow a double sum, so a non-finite sum means a non-finite grad;
 * float64 squares can, so float64 grads also accumulate x - x (NaN exactly for inf/NaN). */
static inline __attribute__((always_inline)) double ADAMC_NAME(sumsq_pass)(const adamc_tensor *t,
                                                                           const adamc_coeffs *c, size_t begin,
                                                                           size_t end, const int gtype,
                                                                           const int div, double *nonfinite)
{
    typedef ADAMC_T vec_t __attribute__((vector_size(8 * sizeof(ADAMC_T))));
    typedef double vec_d __attribute__((vector_size(8 * sizeof(double))));
    const ADAMC_T inv_scale = (ADAMC_T)c->inv_scale;
    const ADAMC_T divisor = (ADAMC_T)c->grad_div; /* div: the step divides by the loss scale, so does the norm */
    vec_d acc[4], bad[4];
    for (int q = 0; q < 4; q++)
        acc[q] = (vec_d){0, 0, 0, 0, 0, 0, 0, 0}, bad[q] = acc[q];
    ADAMC_T gtile[ADAMC_TILE];
#define ADAMC_SUMSQ_ADD(q, src)                                                                                   \
    do {                                                                                                          \
        vec_t g_;                                                                                                 \
        memcpy(&g_, (src), sizeof g_);                                                                            \
        const vec_d x_ = __builtin_convertvector(div ? g_ / divisor : g_ * inv_scale, vec_d);                     \
        acc[q] += x_ * x_;                                                                                        \
        if (ADAMC_IS_F64)                                                                                         \
            bad[q] += x_ - x_;                                                                                    \
    } while (0)
    int next = 0; /* the accumulator the next tail group goes to */
    for (size_t i = begin; i < end; i += ADAMC_TILE) {
        const size_t k = end - i < ADAMC_TILE ? end - i : ADAMC_TILE;
        const ADAMC_T *gp = ADAMC_NAME(load)(gtype, t->grad, i, k, gtile);
        size_t j = 0;
        for (; j + 32 <= k; j += 32) {
            ADAMC_SUMSQ_ADD(0, gp + j);
            ADAMC_SUMSQ_ADD(1, gp + j + 8);
            ADAMC_SUMSQ_ADD(2, gp + j + 16);
            ADAMC_SUMSQ_ADD(3, gp + j + 24);
        }
        /* only in the last tile (tiles are multiples of 32): groups of 8, then the rest padded with zeros */
        for (; j < k; j += 8) {
            ADAMC_T part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            memcpy(part, gp + j, (k - j < 8 ? k - j : 8) * sizeof(ADAMC_T));
            ADAMC_SUMSQ_ADD(next, part);
            next = (next + 1) & 3;
        }
    }
#undef ADAMC_SUMSQ_ADD
    const vec_d a = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    const vec_d b = (bad[0] + bad[1]) + (bad[2] + bad[3]);
    const double sum = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    *nonfinite = ADAMC_IS_F64 ? ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7])) : sum - sum;
    return sum;
}

double ADAMC_NAME(adamc_sumsq)(const adamc_tensor *t, const adamc_coeffs *c, size_t begin, size_t end,
                               double *nonfinite)
{
    const int div = (c->variant & ADAMC_VARIANT_GRAD_DIV) != 0; /* the multiply-or-divide choice, once per call */
#if ADAMC_IS_F64
    return div ? ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT64, 1, nonfinite)
               : ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT64, 0, nonfinite);
#else
    switch (c->grad_type * 2 + div) {
    case ADAMC_FLOAT16 * 2: return ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT16, 0, nonfinite);
    case ADAMC_FLOAT16 * 2 + 1: return ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT16, 1, nonfinite);
    case ADAMC_BFLOAT16 * 2: return ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_BFLOAT16, 0, nonfinite);
    case ADAMC_BFLOAT16 * 2 + 1: return ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_BFLOAT16, 1, nonfinite);
    default:
        return div ? ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT32, 1, nonfinite)
                   : ADAMC_NAME(sumsq_pass)(t, c, begin, end, ADAMC_FLOAT32, 0, nonfinite);
    }
#endif
}

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
