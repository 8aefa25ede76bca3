/* state_codec.inc.h: compressed optimizer state in registers: the blockwise 8-bit dynamic map (encode/decode tiles).
 *
 * The map is Dettmers et al.'s (2022) "dynamic" map, 7 decades 10^-6..10^0 of evenly spaced bin centres plus 0 and 1,
 * signed for exp_avg and unsigned for exp_avg_sq / max_exp_avg_sq, values normalised by their 256-element block's
 * absmax. Encoding is arithmetic, not a table search (which would need gathers): the decade is found by comparing
 * with 7 constant switch points (the midpoints between neighbouring map values across decades), the bin by one
 * multiply. Every constant of the map is a float32 that tools/gen_codec_tables.py generates from adam_c/_codec.py,
 * which computes the same formulas in NumPy; tests compare the two bit for bit. Included by kernel_target.inc.h (per SIMD target); float32 only.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ADAMC_Q8_BLOCK 256

/* The per-decade tables (adamc_q8s_* signed, adamc_q8u_* unsigned), the AVX-512 per-binade tables and the VBMI
 * byte planes: generated from adam_c/_codec.py by tools/gen_codec_tables.py. */
#include "state_codec_tables.inc.h"

/* Cascaded selects over the 6 decade boundaries; constant indices, so every operand is an immediate vector. */
#define ADAMC_Q8_PICK(cond, d)                                                                                \
    {                                                                                                         \
        const int in = (cond);                                                                                \
        lo = in ? LO[d] : lo;                                                                                 \
        iw = in ? IW[d] : iw;                                                                                 \
        cm1 = in ? CM1[d] : cm1;                                                                              \
        first = in ? FIRST[d] : first;                                                                        \
    }

/* One value x (float32) times 1/absmax -> its code. sgn: signed map; keep_nonzero: a nonzero value never gets code 0
 * (v's zero point). NaN -> 0 (its block's absmax is NaN, so the block decodes as NaN anyway). */
static inline __attribute__((always_inline)) uint8_t adamc_q8_encode(const float x, const float inv, const int sgn,
                                                                     const int keep_nonzero)
{
    const float *EDGES = sgn ? adamc_q8s_edges : adamc_q8u_edges;
    const float *LO = sgn ? adamc_q8s_lo : adamc_q8u_lo;
    const float *IW = sgn ? adamc_q8s_inv_width : adamc_q8u_inv_width;
    const float *CM1 = sgn ? adamc_q8s_countm1 : adamc_q8u_countm1;
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    float a = sgn ? fabsf(x) * inv : x * inv;
    a = a == a ? a : 0.0f;
    float lo = LO[0], iw = IW[0], cm1 = CM1[0];
    int32_t first = FIRST[0];
    ADAMC_Q8_PICK(a >= EDGES[1], 1)
    ADAMC_Q8_PICK(a >= EDGES[2], 2)
    ADAMC_Q8_PICK(a >= EDGES[3], 3)
    ADAMC_Q8_PICK(a >= EDGES[4], 4)
    ADAMC_Q8_PICK(a >= EDGES[5], 5)
    ADAMC_Q8_PICK(a >= EDGES[6], 6)
    float pos = (a - lo) * iw;
    pos = pos > 0.0f ? pos : 0.0f;
    pos = pos < cm1 ? pos : cm1; /* now in [0, bins - 1]: truncation is floor */
    int32_t idx = first + (int32_t)pos;
    const int zero = keep_nonzero ? !(a > 0.0f) : !(a >= EDGES[0]);
    idx = zero ? 0 : idx;
    const int one = a >= EDGES[7];
    if (sgn) {
        const int neg = x < 0.0f;
        /* arithmetic, not nested selects (which gcc turns into a table load): +1.0 -> 0x80, -1.0 -> 127 | 0x80 */
        idx = one ? 0x80 - neg : idx;
        idx |= (neg & (idx != 0)) << 7;
    } else {
        idx = one ? 255 : idx;
    }
    return (uint8_t)idx;
}

/* code -> value in [-1, 1] times absmax. The bin index is converted to float up front and the per-decade first
 * codes are float constants: gcc does not if-convert an int->float conversion it has placed under a condition. */
static inline __attribute__((always_inline)) float adamc_q8_decode(const uint8_t code, const float absmax,
                                                                   const int sgn)
{
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    const float *C0 = sgn ? adamc_q8s_centre0 : adamc_q8u_centre0;
    const float *W = sgn ? adamc_q8s_width : adamc_q8u_width;
    const int32_t c = code;
    const int32_t idx = sgn ? (c & 0x7F) : c;
    const float fidx = (float)idx;
    float c0 = C0[0], w = W[0], first = (float)FIRST[0];
#define ADAMC_Q8_PICK_DEC(d)                                                                                  \
    {                                                                                                         \
        const int in = fidx >= (float)FIRST[d]; /* float compares: gcc threads int ones into branches */ \
        c0 = in ? C0[d] : c0;                                                                                 \
        w = in ? W[d] : w;                                                                                    \
        first = in ? (float)FIRST[d] : first;                                                                 \
    }
    ADAMC_Q8_PICK_DEC(1)
    ADAMC_Q8_PICK_DEC(2)
    ADAMC_Q8_PICK_DEC(3)
    ADAMC_Q8_PICK_DEC(4)
    ADAMC_Q8_PICK_DEC(5)
    ADAMC_Q8_PICK_DEC(6)
#undef ADAMC_Q8_PICK_DEC
    /* the selects on the value are bit operations (exact; no float select gcc might keep as a branch) */
    uint32_t bits;
    const float mag = c0 + (fidx - first) * w; /* fidx - first: a small integer, exact */
    memcpy(&bits, &mag, sizeof bits);
    bits &= (uint32_t)0 - (uint32_t)(idx != 0);                 /* code 0 is 0 */
    bits |= sgn ? (uint32_t)(c >> 7) << 31 : 0u;                /* sign bit of the signed map */
    const uint32_t one = (uint32_t)0 - (uint32_t)(sgn ? c == 0x80 : idx == 255); /* the map's 1.0 */
    bits = (bits & ~one) | (0x3F800000u & one);
    float val;
    memcpy(&val, &bits, sizeof val);
    return val * absmax;
}


#if defined(__AVX512F__) && defined(__AVX512BW__)
/* ---- AVX-512: the same formulas with the decade found by table permutes instead of compare/blend chains (the
 * chains spill: 30+ constant vectors). The binade of |x|/absmax (its float exponent) holds at most one decade
 * switch point, so the decade is binade_decade[binade] + (a >= binade_edge[binade]): exactly the number of switch
 * points <= a that the generic code counts. Per-decade constants come from one vpermps each. The binade tables
 * (state_codec_tables.inc.h) are generated from adam_c._codec like the per-decade ones, plus decade 7 (the map's 1.0, see adamc_q8_encode16): binade 0 ([1, 2))
 * is decade 7 with a NaN edge, binade 1 switches to it at e7 (the switch point to 1.0); the tests compare every
 * target bit for bit. */
#include <immintrin.h>

/* A 16-lane table from a 7-entry one (entries 7..15 zero): one masked load. Built per block, so no stack copy (a
 * 512-bit load of values just stored in pieces misses store forwarding: measured as a third of the encoders' time). */
static inline __m512 adamc_q8_table7(const float *t7) { return _mm512_maskz_loadu_ps(0x7F, t7); }

/* The same with entries 8..15 a copy of 0..7 (the signed encoder's "negative" decades d + 8). */
static inline __m512 adamc_q8_table7_twice(const float *t7)
{
    const __m512 t = adamc_q8_table7(t7);
    return _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(1, 0, 1, 0));
}

/* The encoder's first code per decade from the 7-entry table: decade 7 is the map's 1.0 (0x80 signed, 255
 * unsigned); signed decades 8..14 are 0..6 with the sign bit, and 15 is the -1.0 code 0xFF. */
static inline __m512i adamc_q8_first16(const int32_t *first7, const int sgn)
{
    const __m512i t = _mm512_maskz_loadu_epi32(0x7F, first7);
    if (!sgn)
        return _mm512_mask_mov_epi32(t, 0x0080, _mm512_set1_epi32(255));
    const __m512i twice = _mm512_shuffle_i32x4(t, t, _MM_SHUFFLE(1, 0, 1, 0));
    const __m512i signed_ = _mm512_mask_or_epi32(twice, 0xFF80, twice, _mm512_set1_epi32(0x80)); /* lane 7: 0x80 */
    return _mm512_mask_mov_epi32(signed_, 0x8000, _mm512_set1_epi32(0xFF));
}

/* 16 values -> codes. Cheaper than the generic formulas but the same codes, because:
 * - decade 7 (tables: lo 0, 1/width 0, bins - 1 0, first = the 1.0 code) is the map's 1.0: binade 0 and binade 1
 *   above e7 (the only switch point in it) go there, so a >= e7 needs no separate select; binade 0's edge is NaN
 *   (never passed), so an infinite a (1/absmax overflows for a denormal absmax) stays in decade 7;
 * - no clamp of pos at 0: in decade d, a >= its switch point (or >= 0 in decade 0) keeps pos > -1 (pos >= -0.23,
 *   checked for both maps), and truncation towards zero then gives 0 like the clamp;
 * - no NaN -> 0: a NaN a (and a negative one, possible only in the unsigned map) fails the zero test below;
 *   NaN and inf have binade -128, i.e. 0 in the permutes' low 5 bits: decade 7, so inf still encodes as 1.0;
 * - values below 2^-31 (binade > 31, which the permutes would wrap) are clamped to binade 31 only when a nonzero
 *   value must keep a nonzero code; else they are below e0 and get code 0 anyway;
 * - signed: a negative value uses decade d + 8, whose tables are decade d's except the first code, which has the
 *   sign bit (first + k stays below 128, so adding the bin sets no other bit) and is 0xFF for -1.0 (the map has
 *   no -1.0: the nearest is the top bin's -0.99); the zero test comes last (a sign bit with code 0 stays 0). */
static inline __attribute__((always_inline)) void adamc_q8_encode16(uint8_t *codes, const float *vals,
                                                                    const __m512 inv, const int sgn,
                                                                    const int keep_nonzero, const __m512 t_lo,
                                                                    const __m512 t_iw, const __m512 t_cm1,
                                                                    const __m512i t_first, const __m512i bd_lo,
                                                                    const __m512i bd_hi, const __m512 be_lo,
                                                                    const __m512 be_hi, const __m512 e0)
{
    const __m512 x = _mm512_loadu_ps(vals);
    const __m512 ax = sgn ? _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x),
                                                                  _mm512_set1_epi32(0x7FFFFFFF)))
                          : x;
    const __m512 a = _mm512_mul_ps(ax, inv);
    /* binade j = 127 - biased exponent (the permutes read its low 5 bits) */
    __m512i j = _mm512_sub_epi32(_mm512_set1_epi32(127), _mm512_srli_epi32(_mm512_castps_si512(a), 23));
    if (keep_nonzero)
        j = _mm512_min_epi32(j, _mm512_set1_epi32(31));
    __m512i d = _mm512_permutex2var_epi32(bd_lo, j, bd_hi);
    const __m512 edge = _mm512_permutex2var_ps(be_lo, j, be_hi);
    d = _mm512_mask_add_epi32(d, _mm512_cmp_ps_mask(a, edge, _CMP_GE_OQ), d, _mm512_set1_epi32(1));
    if (sgn)
        d = _mm512_mask_add_epi32(d, _mm512_movepi32_mask(_mm512_castps_si512(x)), d, _mm512_set1_epi32(8));
    const __m512 lo = _mm512_permutexvar_ps(d, t_lo);
    const __m512 iw = _mm512_permutexvar_ps(d, t_iw);
    const __m512 cm1 = _mm512_permutexvar_ps(d, t_cm1);
    const __m512i first = _mm512_permutexvar_epi32(d, t_first);
    const __m512 pos = _mm512_min_ps(_mm512_mul_ps(_mm512_sub_ps(a, lo), iw), cm1); /* NaN -> cm1 */
    const __m512i idx = _mm512_add_epi32(first, _mm512_cvttps_epi32(pos));
    const __mmask16 nonzero = keep_nonzero ? _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_GT_OQ)
                                           : _mm512_cmp_ps_mask(a, e0, _CMP_GE_OQ);
    /* a masked vpmovdb is slow on Zen 4: zero the lanes first, then narrow */
    _mm_storeu_si128((__m128i *)codes, _mm512_cvtepi32_epi8(_mm512_maskz_mov_epi32(nonzero, idx)));
}

static inline __attribute__((always_inline)) void adamc_q8_encode_avx512(uint8_t *restrict codes,
                                                                          const float *restrict vals, size_t k,
                                                                          const float inv, const int sgn,
                                                                          const int keep_nonzero)
{
    const float *LO = sgn ? adamc_q8s_lo : adamc_q8u_lo;
    const float *IW = sgn ? adamc_q8s_inv_width : adamc_q8u_inv_width;
    const float *CM1 = sgn ? adamc_q8s_countm1 : adamc_q8u_countm1;
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    const int32_t *BD = sgn ? adamc_q8s_binade_decade : adamc_q8u_binade_decade;
    const float *BE = sgn ? adamc_q8s_binade_edge : adamc_q8u_binade_edge;
    const float *EDGES = sgn ? adamc_q8s_edges : adamc_q8u_edges;
    const __m512 t_lo = sgn ? adamc_q8_table7_twice(LO) : adamc_q8_table7(LO);
    const __m512 t_iw = sgn ? adamc_q8_table7_twice(IW) : adamc_q8_table7(IW);
    const __m512 t_cm1 = sgn ? adamc_q8_table7_twice(CM1) : adamc_q8_table7(CM1);
    const __m512i t_first = adamc_q8_first16(FIRST, sgn); /* decade 7's lo, 1/width and bins - 1 are 0 */
    const __m512i bd_lo = _mm512_loadu_si512(BD), bd_hi = _mm512_loadu_si512(BD + 16);
    const __m512 be_lo = _mm512_loadu_ps(BE), be_hi = _mm512_loadu_ps(BE + 16);
    const __m512 vinv = _mm512_set1_ps(inv), e0 = _mm512_set1_ps(EDGES[0]);
    size_t i = 0;
    for (; i + 16 <= k; i += 16)
        adamc_q8_encode16(codes + i, vals + i, vinv, sgn, keep_nonzero, t_lo, t_iw, t_cm1, t_first, bd_lo, bd_hi,
                          be_lo, be_hi, e0);
    for (; i < k; i++)
        codes[i] = adamc_q8_encode(vals[i], inv, sgn, keep_nonzero);
}

static inline __attribute__((always_inline)) void adamc_q8_decode_avx512(float *restrict dst,
                                                                          const uint8_t *restrict codes, size_t k,
                                                                          const float absmax, const int sgn)
{
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    const float *C0 = sgn ? adamc_q8s_centre0 : adamc_q8u_centre0;
    const float *W = sgn ? adamc_q8s_width : adamc_q8u_width;
    const __m512 t_c0 = adamc_q8_table7(C0), t_w = adamc_q8_table7(W);
    const __m512 t_first = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(0x7F, FIRST));
    const __m512 vabsmax = _mm512_set1_ps(absmax);
    size_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
        const __m512i idx = sgn ? _mm512_and_si512(c, _mm512_set1_epi32(0x7F)) : c;
        const __m512 fidx = _mm512_cvtepi32_ps(idx);
        /* decade = number of first codes <= idx: floor(log2(idx)) (signed), floor(log2(idx + 1)) - 1 (unsigned),
         * from the float exponent, clamped to [0, 6] (code 0 and the unsigned 255 included) */
        const __m512 lg = sgn ? fidx : _mm512_add_ps(fidx, _mm512_set1_ps(1.0f));
        __m512i d = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(lg), 23),
                                     _mm512_set1_epi32(sgn ? 127 : 128));
        d = _mm512_min_epi32(_mm512_max_epi32(d, _mm512_setzero_si512()), _mm512_set1_epi32(6));
        const __m512 c0 = _mm512_permutexvar_ps(d, t_c0);
        const __m512 w = _mm512_permutexvar_ps(d, t_w);
        const __m512 first = _mm512_permutexvar_ps(d, t_first);
        const __m512 mag = _mm512_add_ps(c0, _mm512_mul_ps(_mm512_sub_ps(fidx, first), w));
        __m512i bits = _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(idx, idx), _mm512_castps_si512(mag));
        if (sgn) {
            bits = _mm512_or_si512(bits, _mm512_slli_epi32(_mm512_srli_epi32(c, 7), 31));
            bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(c, _mm512_set1_epi32(0x80)),
                                         _mm512_set1_epi32(0x3F800000));
        } else {
            bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(idx, _mm512_set1_epi32(255)),
                                         _mm512_set1_epi32(0x3F800000));
        }
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_castsi512_ps(bits), vabsmax));
    }
    for (; i < k; i++)
        dst[i] = adamc_q8_decode(codes[i], absmax, sgn);
}

#if defined(__AVX512VBMI__)
/* ---- AVX-512 VBMI decode (the avx512_zen4 target; vpermi2b is VBMI): a table lookup instead of the arithmetic. The
 * 256 float32 values of each map (code -> value in [-1, 1], exactly what adamc_q8_decode computes; generated from
 * adam_c._codec.code_values into state_codec_tables.inc.h) are stored as 4 byte planes;
 * vpermi2b looks 64 codes up in a 128-entry half plane, so 8 lookups and 4 byte blends give 64 values' bytes,
 * which unpacks interleave back into floats. The value times absmax is the same multiply as in the arithmetic
 * decoders, so the bits are the same (tests compare every target with the NumPy oracle). */

/* Decodes the first k codes (k a multiple of 64); returns k. Not inlined: the kernel around it compiles the same
 * as on the avx512 target. */
static __attribute__((noinline)) size_t adamc_q8_decode_vbmi(float *restrict dst, const uint8_t *restrict codes,
                                                             size_t k, const float absmax, const int sgn)
{
    const uint8_t(*P)[256] = sgn ? adamc_q8s_value_bytes : adamc_q8u_value_bytes;
    __m512i t[4][4];
    for (int p = 0; p < 4; p++)
        for (int q = 0; q < 4; q++)
            t[p][q] = _mm512_load_si512(P[p] + 64 * q);
    /* the unpacks interleave within 128-bit lanes: output vector r, lane L, float e is byte 16L + 4r + e of the
     * planes, so the codes are first permuted to put code 16r + 4L + e there (then the 4 outputs are in order) */
    static const uint8_t order[64] __attribute__((aligned(64))) = {
        0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51, 4, 5, 6, 7, 20, 21, 22, 23, 36, 37, 38, 39,
        52, 53, 54, 55, 8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43, 56, 57, 58, 59, 12, 13, 14, 15, 28, 29, 30,
        31, 44, 45, 46, 47, 60, 61, 62, 63};
    const __m512i perm = _mm512_load_si512(order);
    const __m512 vabsmax = _mm512_set1_ps(absmax);
    for (size_t i = 0; i < k; i += 64) {
        const __m512i c = _mm512_permutexvar_epi8(perm, _mm512_loadu_si512(codes + i));
        const __mmask64 high = _mm512_movepi8_mask(c); /* codes 128..255: the second half plane */
        __m512i b[4];
        for (int p = 0; p < 4; p++)
            b[p] = _mm512_mask_mov_epi8(_mm512_permutex2var_epi8(t[p][0], c, t[p][1]), high,
                                        _mm512_permutex2var_epi8(t[p][2], c, t[p][3]));
        const __m512i w01l = _mm512_unpacklo_epi8(b[0], b[1]), w01h = _mm512_unpackhi_epi8(b[0], b[1]);
        const __m512i w23l = _mm512_unpacklo_epi8(b[2], b[3]), w23h = _mm512_unpackhi_epi8(b[2], b[3]);
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01l, w23l)), vabsmax));
        _mm512_storeu_ps(dst + i + 16,
                         _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01l, w23l)), vabsmax));
        _mm512_storeu_ps(dst + i + 32,
                         _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(w01h, w23h)), vabsmax));
        _mm512_storeu_ps(dst + i + 48,
                         _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(w01h, w23h)), vabsmax));
    }
    return k;
}
#endif /* __AVX512VBMI__ */
#define ADAMC_Q8_HAVE_AVX512 1
#endif


#if !defined(ADAMC_Q8_HAVE_AVX512) && defined(__AVX2__)
/* ---- AVX2: the decade is the count of switch points <= a (6 compares), the per-decade constants come from one
 * vpermps each (8-entry tables) instead of blend chains. Same formulas, same bits. */
#include <immintrin.h>

/* An 8-lane table from a 7-entry one (entry 7 zero): one masked load (no stack copy, see adamc_q8_table7). */
static inline __m256i adamc_q8_mask7_256(void) { return _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0); }
static inline __m256 adamc_q8_table7_256(const float *t7) { return _mm256_maskload_ps(t7, adamc_q8_mask7_256()); }

static inline __attribute__((always_inline)) void adamc_q8_encode_avx2(uint8_t *restrict codes,
                                                                        const float *restrict vals, size_t k,
                                                                        const float inv, const int sgn,
                                                                        const int keep_nonzero)
{
    const float *LO = sgn ? adamc_q8s_lo : adamc_q8u_lo;
    const float *IW = sgn ? adamc_q8s_inv_width : adamc_q8u_inv_width;
    const float *CM1 = sgn ? adamc_q8s_countm1 : adamc_q8u_countm1;
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    const float *EDGES = sgn ? adamc_q8s_edges : adamc_q8u_edges;
    const __m256 t_lo = adamc_q8_table7_256(LO), t_iw = adamc_q8_table7_256(IW), t_cm1 = adamc_q8_table7_256(CM1);
    const __m256i t_first = _mm256_maskload_epi32(FIRST, adamc_q8_mask7_256());
    const __m256 vinv = _mm256_set1_ps(inv), zero = _mm256_setzero_ps();
    const __m256 e0 = _mm256_set1_ps(EDGES[0]), e7 = _mm256_set1_ps(EDGES[7]);
    const __m256 e1 = _mm256_set1_ps(EDGES[1]), e2 = _mm256_set1_ps(EDGES[2]), e3 = _mm256_set1_ps(EDGES[3]);
    const __m256 e4 = _mm256_set1_ps(EDGES[4]), e5 = _mm256_set1_ps(EDGES[5]), e6 = _mm256_set1_ps(EDGES[6]);
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256 x = _mm256_loadu_ps(vals + i);
        const __m256 ax = sgn ? _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x),
                                                                      _mm256_set1_epi32(0x7FFFFFFF)))
                              : x;
        /* no NaN -> 0 and no clamp of pos at 0 (as in the AVX-512 encoder: a NaN or negative a fails the zero
         * test, and pos > -1 in the decade the compares pick, so truncation gives 0 like the clamp) */
        const __m256 a = _mm256_mul_ps(ax, vinv);
        __m256i d = _mm256_setzero_si256(); /* minus the all-ones compare masks: +1 per switch point <= a */
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e1, _CMP_GE_OQ)));
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e2, _CMP_GE_OQ)));
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e3, _CMP_GE_OQ)));
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e4, _CMP_GE_OQ)));
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e5, _CMP_GE_OQ)));
        d = _mm256_sub_epi32(d, _mm256_castps_si256(_mm256_cmp_ps(a, e6, _CMP_GE_OQ)));
        const __m256 lo = _mm256_permutevar8x32_ps(t_lo, d);
        const __m256 iw = _mm256_permutevar8x32_ps(t_iw, d);
        const __m256 cm1 = _mm256_permutevar8x32_ps(t_cm1, d);
        const __m256i first = _mm256_permutevar8x32_epi32(t_first, d);
        const __m256 pos = _mm256_min_ps(_mm256_mul_ps(_mm256_sub_ps(a, lo), iw), cm1); /* NaN -> cm1 */
        __m256i idx = _mm256_add_epi32(first, _mm256_cvttps_epi32(pos));
        const __m256 nonzero = keep_nonzero ? _mm256_cmp_ps(a, zero, _CMP_GT_OQ) : _mm256_cmp_ps(a, e0, _CMP_GE_OQ);
        idx = _mm256_and_si256(idx, _mm256_castps_si256(nonzero));
        const __m256i one = _mm256_castps_si256(_mm256_cmp_ps(a, e7, _CMP_GE_OQ));
        if (sgn) {
            const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_LT_OQ));
            idx = _mm256_blendv_epi8(idx, _mm256_add_epi32(_mm256_set1_epi32(0x80), neg), one);
            const __m256i is_zero = _mm256_cmpeq_epi32(idx, _mm256_setzero_si256());
            idx = _mm256_or_si256(idx, _mm256_andnot_si256(is_zero, _mm256_and_si256(neg, _mm256_set1_epi32(0x80))));
        } else {
            idx = _mm256_blendv_epi8(idx, _mm256_set1_epi32(255), one);
        }
        const __m128i p16 = _mm_packus_epi32(_mm256_castsi256_si128(idx), _mm256_extracti128_si256(idx, 1));
        _mm_storel_epi64((__m128i *)(codes + i), _mm_packus_epi16(p16, p16));
    }
    for (; i < k; i++)
        codes[i] = adamc_q8_encode(vals[i], inv, sgn, keep_nonzero);
}

static inline __attribute__((always_inline)) void adamc_q8_decode_avx2(float *restrict dst,
                                                                        const uint8_t *restrict codes, size_t k,
                                                                        const float absmax, const int sgn)
{
    const int32_t *FIRST = sgn ? adamc_q8s_first : adamc_q8u_first;
    const float *C0 = sgn ? adamc_q8s_centre0 : adamc_q8u_centre0;
    const float *W = sgn ? adamc_q8s_width : adamc_q8u_width;
    const __m256 t_c0 = adamc_q8_table7_256(C0), t_w = adamc_q8_table7_256(W);
    const __m256 t_first = _mm256_cvtepi32_ps(_mm256_maskload_epi32(FIRST, adamc_q8_mask7_256()));
    const __m256 vabsmax = _mm256_set1_ps(absmax);
    size_t i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
        const __m256i idx = sgn ? _mm256_and_si256(c, _mm256_set1_epi32(0x7F)) : c;
        const __m256 fidx = _mm256_cvtepi32_ps(idx);
        const __m256 lg = sgn ? fidx : _mm256_add_ps(fidx, _mm256_set1_ps(1.0f));
        __m256i d = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(lg), 23),
                                     _mm256_set1_epi32(sgn ? 127 : 128));
        d = _mm256_min_epi32(_mm256_max_epi32(d, _mm256_setzero_si256()), _mm256_set1_epi32(6));
        const __m256 c0 = _mm256_permutevar8x32_ps(t_c0, d);
        const __m256 w = _mm256_permutevar8x32_ps(t_w, d);
        const __m256 first = _mm256_permutevar8x32_ps(t_first, d);
        const __m256 mag = _mm256_add_ps(c0, _mm256_mul_ps(_mm256_sub_ps(fidx, first), w));
        __m256i bits = _mm256_andnot_si256(_mm256_cmpeq_epi32(idx, _mm256_setzero_si256()),
                                           _mm256_castps_si256(mag));
        if (sgn) {
            bits = _mm256_or_si256(bits, _mm256_slli_epi32(_mm256_srli_epi32(c, 7), 31));
            bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x3F800000),
                                      _mm256_cmpeq_epi32(c, _mm256_set1_epi32(0x80)));
        } else {
            bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x3F800000),
                                      _mm256_cmpeq_epi32(idx, _mm256_set1_epi32(255)));
        }
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_castsi256_ps(bits), vabsmax));
    }
    for (; i < k; i++)
        dst[i] = adamc_q8_decode(codes[i], absmax, sgn);
}
#define ADAMC_Q8_HAVE_AVX2 1
#endif

/* k (<= 256) codes of one block -> float32 values. */
static inline __attribute__((always_inline)) void adamc_q8_decode_tile(float *restrict dst,
                                                                        const uint8_t *restrict codes, size_t k,
                                                                        const float absmax, const int sgn)
{
#if defined(ADAMC_Q8_HAVE_AVX512)
#if defined(__AVX512VBMI__)
    const size_t done = adamc_q8_decode_vbmi(dst, codes, k & ~(size_t)63, absmax, sgn);
#else
    const size_t done = 0;
#endif
    adamc_q8_decode_avx512(dst + done, codes + done, k - done, absmax, sgn);
#elif defined(ADAMC_Q8_HAVE_AVX2)
    adamc_q8_decode_avx2(dst, codes, k, absmax, sgn);
#else
#pragma omp simd
    for (size_t i = 0; i < k; i++)
        dst[i] = adamc_q8_decode(codes[i], absmax, sgn);
#endif
}

/* k (<= 256) float32 values of one block -> codes and the block's new absmax (max |x|; NaN if any value is not
 * finite, which makes the whole block decode as NaN). The max is exact in any order, so threads and targets agree. */
static inline __attribute__((always_inline)) void adamc_q8_encode_tile_body(uint8_t *restrict codes, float *absmax_out,
                                                                        const float *restrict vals, size_t k,
                                                                        const int sgn, const int keep_nonzero)
{
#if defined(ADAMC_Q8_HAVE_AVX512)
    /* the max of |x| as integers: the same order for non-negative floats, and inf/NaN are the patterns at or above
     * 0x7F800000 (one integer max per 16 values instead of a float max plus a finiteness test) */
    __m512i mbits = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 16 <= k; i += 16)
        mbits = _mm512_max_epu32(mbits, _mm512_and_si512(_mm512_loadu_si512(vals + i), _mm512_set1_epi32(0x7FFFFFFF)));
    if (i < k)
        mbits = _mm512_max_epu32(mbits, _mm512_and_si512(_mm512_maskz_loadu_epi32((__mmask16)((1u << (k - i)) - 1u),
                                                                                  vals + i),
                                                         _mm512_set1_epi32(0x7FFFFFFF)));
    const uint32_t mx = _mm512_reduce_max_epu32(mbits);
    const float absmax = mx >= 0x7F800000u ? NAN : adamc_bits_f32(mx);
#else
    float mx = 0.0f;
    int bad = 0;
#pragma omp simd reduction(max : mx) reduction(| : bad)
    for (size_t i = 0; i < k; i++) {
        const float a = fabsf(vals[i]);
        mx = a > mx ? a : mx;
        bad |= !(a <= FLT_MAX);
    }
    const float absmax = bad ? NAN : mx;
#endif
    *absmax_out = absmax;
    const float inv = absmax > 0.0f && absmax <= FLT_MAX ? 1.0f / absmax : 0.0f;
#if defined(ADAMC_Q8_HAVE_AVX512)
    adamc_q8_encode_avx512(codes, vals, k, inv, sgn, keep_nonzero);
#elif defined(ADAMC_Q8_HAVE_AVX2)
    adamc_q8_encode_avx2(codes, vals, k, inv, sgn, keep_nonzero);
#else
#pragma omp simd
    for (size_t i = 0; i < k; i++)
        codes[i] = adamc_q8_encode(vals[i], inv, sgn, keep_nonzero);
#endif
}

#if defined(ADAMC_Q8_HAVE_AVX512)
/* On AVX-512 the two encoders the kernel uses are separate functions, called once per block: inlined into the one
 * large kernel function, their code changed how gcc compiled the unrelated float32-state loops (measured: in-cache
 * float32 step 0.24 -> 0.30 ns/el). */
static __attribute__((noinline)) void adamc_q8_encode_tile_signed(uint8_t *restrict codes, float *absmax_out,
                                                                  const float *restrict vals, size_t k)
{
    adamc_q8_encode_tile_body(codes, absmax_out, vals, k, 1, 0);
}
static __attribute__((noinline)) void adamc_q8_encode_tile_unsigned_nonzero(uint8_t *restrict codes,
                                                                            float *absmax_out,
                                                                            const float *restrict vals, size_t k)
{
    adamc_q8_encode_tile_body(codes, absmax_out, vals, k, 0, 1);
}
#endif

static inline __attribute__((always_inline)) void adamc_q8_encode_tile(uint8_t *restrict codes, float *absmax_out,
                                                                        const float *restrict vals, size_t k,
                                                                        const int sgn, const int keep_nonzero)
{
#if defined(ADAMC_Q8_HAVE_AVX512)
    if (sgn && !keep_nonzero) {
        adamc_q8_encode_tile_signed(codes, absmax_out, vals, k);
        return;
    }
    if (!sgn && keep_nonzero) {
        adamc_q8_encode_tile_unsigned_nonzero(codes, absmax_out, vals, k);
        return;
    }
#endif
    adamc_q8_encode_tile_body(codes, absmax_out, vals, k, sgn, keep_nonzero);
}
