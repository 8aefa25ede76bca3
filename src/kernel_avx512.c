/* kernel_avx512.c: the Adam kernels compiled for the "avx512" SIMD target (ISA flags set per file in CMakeLists.txt). */
#define ADAMC_TARGET_SUFFIX avx512
#include "kernel_target.inc.h"
