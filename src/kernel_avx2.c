/* kernel_avx2.c: the Adam kernels compiled for the "avx2" SIMD target (ISA flags set per file in CMakeLists.txt). */
#define ADAMC_TARGET_SUFFIX avx2
#include "kernel_target.inc.h"
