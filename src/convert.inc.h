/* convert.inc.h: float32 <-> float16/bfloat16 conversions (scalar bit operations and per-target tile loops). */
/*
 * Included once by kernel_target.inc.h per SIMD target. The scalar functions are pure integer/bit operations (plus
 * exact float operations), so they vectorise under `omp simd` on every target and give the same bits everywhere.
 * Where the file is compiled with F16C (avx2, avx512), float16 tiles use vcvtph2ps/vcvtps2ph with an explicit
 * round-to-nearest-even immediate; tests/c/test_kernels.c checks all 65536 float16 values and a large sample of
 * float32 values give identical bits on every target.
 * float32 -> bfloat16 on the avx512_zen4 target (compiled with AVX512-BF16) uses vcvtne2ps2bf16, except for groups
 * of 32 values holding a float32 denormal, which it would flush to zero: those take the bit operations, so every
 * target gives the same bits. The choice is the target's, made once at load: no CPU feature test in a tile.
 */
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Elements per tile: the kernel converts low-precision inputs into float32 tiles of this size (L1-resident), runs
 * the math on them and converts the results back. A multiple of every vector width and of 256 (the block of
 * blockwise-quantised state, issue 10). */
#define ADAMC_TILE 256

static inline uint32_t adamc_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float adamc_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float adamc_bf16_to_f32(uint16_t h) { return adamc_bits_f32((uint32_t)h << 16); }

/* Round to nearest, ties to even; a NaN keeps its sign and upper payload and becomes quiet. */
static inline uint16_t adamc_f32_to_bf16(float x)
{
    const uint32_t u = adamc_f32_bits(x);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* Stochastic rounding: adds 16 random bits below the kept ones, then truncates, so the magnitude rounds up with
 * probability equal to the distance to the lower neighbour. NaN as in adamc_f32_to_bf16. */
static inline uint16_t adamc_f32_to_bf16_sr(float x, uint32_t random16)
{
    const uint32_t u = adamc_f32_bits(x);
    const uint32_t rounded = (u + random16) >> 16;
    const uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* Exact: every float16 (denormals, inf, NaN made quiet as vcvtph2ps does) is a float32. */
static inline float adamc_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t em = h & 0x7FFFu;
    const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
    const uint32_t special = ((em << 13) + ((255u - 31u) << 23)) | (em > 0x7C00u ? 0x400000u : 0u);
    /* denormal: mantissa * 2^-24, exact (a power-of-two scale of an integer below 2^10) and a normal float32 */
    const uint32_t denormal = adamc_f32_bits((float)(int32_t)em * 0x1p-24f);
    const uint32_t r = em < 0x0400u ? denormal : (em >= 0x7C00u ? special : normal);
    return adamc_bits_f32(r | sign);
}

/* Round to nearest even, overflow to inf, float16 denormals exact; NaN quiet with its upper payload. */
static inline uint16_t adamc_f32_to_f16(float x)
{
    const uint32_t u = adamc_f32_bits(x);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t a = u & 0x7FFFFFFFu;
    const uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);
    /* rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a carry moves the exponent */
    const uint32_t normal = ((a - ((127u - 15u) << 23)) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
    /* below 2^-14: scale to units of 2^-24 (exact) and round to an integer with the float adder (the default
     * round-to-nearest-even mode); 1024 units becomes the smallest normal, 0x0400, as it should */
    const float scaled = adamc_bits_f32(a) * 0x1p24f;
    const uint32_t denormal = adamc_f32_bits(scaled + 0x1p23f) - 0x4B000000u;
    const uint32_t r = a > 0x7F800000u ? nan
                       : a >= 0x47800000u ? 0x7C00u
                       : a >= 0x38800000u ? normal
                                          : denormal;
    return (uint16_t)(r | sign);
}

/* ---- tiles (and the whole-buffer conversions of adamc_convert) */

static __attribute__((noinline)) void adamc_tile_bf16_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        dst[i] = adamc_bf16_to_f32(src[i]);
}

#if defined(__AVX512BF16__)
/* AVX512-BF16 (the avx512_zen4 target): vcvtne2ps2bf16 rounds 32 values to nearest even in one instruction, with
 * adamc_f32_to_bf16's bits for every input but one kind: a float32 denormal, which it flushes to zero. It stops at
 * the first group of 32 holding one and leaves it, and the rest of the tile, to the bit operations below (denormal
 * state is rare; the bits stay right). Returns how many leading values it converted (a multiple of 32). Not
 * inlined: the tile loop around it compiles the same as on the avx512 target. */
static __attribute__((noinline)) size_t adamc_tile_f32_to_bf16_ne(uint16_t *restrict dst, const float *restrict src,
                                                                  size_t n)
{
    /* A denormal has a zero exponent field and a nonzero mantissa. Tested on the bits, not with vfpclassps, which
     * follows the caller's denormals-are-zero mode (torch.set_flush_denormal) and under DAZ reports none: first the
     * exponent (as cheap as vfpclassps), then, only for groups holding a zero or denormal, the mantissa. */
    const __m512i exponent = _mm512_set1_epi32(0x7F800000), mantissa = _mm512_set1_epi32(0x007FFFFF);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512i lo = _mm512_loadu_si512(src + i), hi = _mm512_loadu_si512(src + i + 16);
        const __mmask16 tiny_lo = _mm512_testn_epi32_mask(lo, exponent), tiny_hi = _mm512_testn_epi32_mask(hi, exponent);
        if ((tiny_lo | tiny_hi) &&
            (_mm512_mask_test_epi32_mask(tiny_lo, lo, mantissa) | _mm512_mask_test_epi32_mask(tiny_hi, hi, mantissa)))
            break;
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_castsi512_ps(hi), _mm512_castsi512_ps(lo)));
    }
    return i;
}
#endif

static __attribute__((noinline)) void adamc_tile_f32_to_bf16(uint16_t *restrict dst, const float *restrict src, size_t n)
{
    size_t i = 0;
#if defined(__AVX512BF16__)
    i = adamc_tile_f32_to_bf16_ne(dst, src, n);
#endif
#if defined(__AVX512BW__) && defined(__AVX512DQ__)
    /* adamc_f32_to_bf16 on 32 values: the rounded pattern in the high word of each 32-bit lane (for NaN: u with
     * bit 22 set, whose high word is (u >> 16) | 0x40), then one word permute keeps the high words; fewer
     * instructions than the compiler's version (which narrows with vpmovzxwd/vpermt2w pairs) */
    static const uint16_t high_words[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                            33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    const __m512i sel = _mm512_loadu_si512(high_words);
    for (; i + 32 <= n; i += 32) {
        __m512i r[2];
        for (int h = 0; h < 2; h++) {
            const __m512 x = _mm512_loadu_ps(src + i + 16 * h);
            const __m512i u = _mm512_castps_si512(x);
            const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
            const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
            const __mmask16 nan = _mm512_fpclass_ps_mask(x, 0x81); /* quiet or signalling NaN */
            r[h] = _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x400000));
        }
        _mm512_storeu_si512(dst + i, _mm512_permutex2var_epi16(r[0], sel, r[1]));
    }
#elif defined(__AVX2__)
    /* the same on 16 values: rounded patterns shifted down, packed (in-lane), then the two middle quarters
     * swapped back into order */
    for (; i + 16 <= n; i += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            const __m256i u = _mm256_loadu_si256((const __m256i *)(src + i + 8 * h));
            const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
            const __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                                   _mm256_set1_epi32(0x7F800000));
            const __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
            r[h] = _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet, nan), 16);
        }
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), _MM_SHUFFLE(3, 1, 2, 0)));
    }
#endif
#pragma omp simd
    for (size_t j = i; j < n; j++)
        dst[j] = adamc_f32_to_bf16(src[j]);
}

static __attribute__((noinline)) void adamc_tile_f16_to_f32(float *restrict dst, const uint16_t *restrict src, size_t n)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#endif
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
#pragma omp simd
    for (size_t j = i; j < n; j++)
        dst[j] = adamc_f16_to_f32(src[j]);
}

static __attribute__((noinline)) void adamc_tile_f32_to_f16(uint16_t *restrict dst, const float *restrict src, size_t n)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#pragma omp simd
    for (size_t j = i; j < n; j++)
        dst[j] = adamc_f32_to_f16(src[j]);
}

/* A 32-bit integer hash with good avalanche (the "lowbias32" constants), in 32-bit lanes so it vectorises. */
static inline uint32_t adamc_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* Stochastic rounding of a tile whose first element is element `first` of its tensor: the random bits of element
 * e are hash(hash(lo32(e) ^ key_lo) ^ key_hi ^ hi32(e)), key from (seed, step, tensor index): a counter, not a
 * stream, so they do not depend on which thread or target ran the element. */
static __attribute__((noinline)) void adamc_tile_f32_to_bf16_sr(uint16_t *restrict dst, const float *restrict src, size_t n,
                                             uint64_t first, uint32_t key_lo, uint32_t key_hi)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        const uint64_t e = first + i;
        const uint32_t h = adamc_hash32(adamc_hash32((uint32_t)e ^ key_lo) ^ key_hi ^ (uint32_t)(e >> 32));
        dst[i] = adamc_f32_to_bf16_sr(src[i], h & 0xFFFFu);
    }
}
