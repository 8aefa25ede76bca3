/* kernel_target.inc.h: instantiates the kernel for float32 and float64 compute under one target suffix.
 * Each kernel_<target>.c defines ADAMC_TARGET_SUFFIX and includes this; CMake gives each its ISA flags. */
#include <math.h>
#include "adam_internal.h"
#include "convert.inc.h"
#include "state_codec.inc.h"

_Static_assert(ADAMC_TILE == ADAMC_Q8_BLOCK && ADAMC_Q8_BLOCK == ADAMC_STATE_BLOCK,
               "a kernel tile must be exactly one block of int8 state");

#define ADAMC_CAT3_(a, b, c) a##_##b##_##c
#define ADAMC_CAT3(a, b, c) ADAMC_CAT3_(a, b, c)
#define ADAMC_CAT2_(a, b) a##_##b
#define ADAMC_CAT2(a, b) ADAMC_CAT2_(a, b)

/* float32 compute: float32, float16 and bfloat16 params */
#define ADAMC_T float
#define ADAMC_IS_F64 0
#define ADAMC_SELF ADAMC_FLOAT32
#define ADAMC_SQRT sqrtf
#define ADAMC_NAME(x) ADAMC_CAT3(x, f32, ADAMC_TARGET_SUFFIX)
#include "kernel_body.inc.h"
#undef ADAMC_T
#undef ADAMC_IS_F64
#undef ADAMC_SELF
#undef ADAMC_SQRT
#undef ADAMC_NAME

#define ADAMC_T double
#define ADAMC_IS_F64 1
#define ADAMC_SELF ADAMC_FLOAT64
#define ADAMC_SQRT sqrt
#define ADAMC_NAME(x) ADAMC_CAT3(x, f64, ADAMC_TARGET_SUFFIX)
#include "kernel_body.inc.h"
#undef ADAMC_T
#undef ADAMC_IS_F64
#undef ADAMC_SELF
#undef ADAMC_SQRT
#undef ADAMC_NAME

/* Whole-buffer conversions with this target's tile helpers (adamc_convert). */
int ADAMC_CAT2(adamc_convert, ADAMC_TARGET_SUFFIX)(const void *src, int src_dtype, void *dst, int dst_dtype, size_t n)
{
    if (src_dtype == ADAMC_FLOAT32 && dst_dtype == ADAMC_FLOAT32)
        memmove(dst, src, n * sizeof(float));
    else if (src_dtype == ADAMC_FLOAT16 && dst_dtype == ADAMC_FLOAT32)
        adamc_tile_f16_to_f32((float *)dst, (const uint16_t *)src, n);
    else if (src_dtype == ADAMC_BFLOAT16 && dst_dtype == ADAMC_FLOAT32)
        adamc_tile_bf16_to_f32((float *)dst, (const uint16_t *)src, n);
    else if (src_dtype == ADAMC_FLOAT32 && dst_dtype == ADAMC_FLOAT16)
        adamc_tile_f32_to_f16((uint16_t *)dst, (const float *)src, n);
    else if (src_dtype == ADAMC_FLOAT32 && dst_dtype == ADAMC_BFLOAT16)
        adamc_tile_f32_to_bf16((uint16_t *)dst, (const float *)src, n);
    else
        return 0;
    return 1;
}

/* The memory-floor probe with compressed state: the bytes of a step (read p, g, m, v; write p, m, v) with m and v
 * 2 or 1 bytes wide, and no math. m and v are written back unchanged (the added 0 is not known at compile time):
 * codes that drifted through every bit pattern would feed the next real step NaNs and denormals. One loop body for
 * both element widths. */
#define ADAMC_PROBE_STATE_LOOP(T)                                                                                 \
    do {                                                                                                          \
        T *restrict ms = (T *)m, *restrict vs = (T *)v;                                                           \
        _Pragma("omp simd") for (size_t i = 0; i < n; i++) {                                                     \
            p[i] = p[i] + g[i];                                                                                   \
            const T zero = (T)(g[i] > 3.0e38f);                                                                   \
            ms[i] = (T)(ms[i] + zero);                                                                            \
            vs[i] = (T)(vs[i] + zero);                                                                            \
        }                                                                                                         \
    } while (0)
void ADAMC_CAT2(adamc_probe_state, ADAMC_TARGET_SUFFIX)(float *restrict p, const float *restrict g, void *m, void *v,
                                                        size_t n, int state)
{
    if (state == ADAMC_STATE_BFLOAT16)
        ADAMC_PROBE_STATE_LOOP(uint16_t);
    else
        ADAMC_PROBE_STATE_LOOP(uint8_t);
}
#undef ADAMC_PROBE_STATE_LOOP
