/* kernel_avx512_zen4.c: the Adam kernels compiled for the "avx512_zen4" SIMD target (avx512 + VBMI + AVX512-BF16). */
#define ADAMC_TARGET_SUFFIX avx512_zen4
#include "kernel_target.inc.h"
