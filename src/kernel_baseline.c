/* kernel_baseline.c: the Adam kernels compiled for the "baseline" SIMD target (ISA flags set per file in CMakeLists.txt). */
#define ADAMC_TARGET_SUFFIX baseline
#include "kernel_target.inc.h"
