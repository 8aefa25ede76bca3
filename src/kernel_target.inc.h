/* kernel_target.inc.h: instantiates the kernel for float32 and float64 under one target suffix.
 * Each kernel_<target>.c defines ADAMC_TARGET_SUFFIX and includes this; CMake gives each its ISA flags. */
#include <math.h>
#include "adam_internal.h"

#define ADAMC_CAT3_(a, b, c) a##_##b##_##c
#define ADAMC_CAT3(a, b, c) ADAMC_CAT3_(a, b, c)

#define ADAMC_T float
#define ADAMC_SQRT sqrtf
#define ADAMC_NAME(x) ADAMC_CAT3(x, f32, ADAMC_TARGET_SUFFIX)
#include "kernel_body.inc.h"
#undef ADAMC_T
#undef ADAMC_SQRT
#undef ADAMC_NAME

#define ADAMC_T double
#define ADAMC_SQRT sqrt
#define ADAMC_NAME(x) ADAMC_CAT3(x, f64, ADAMC_TARGET_SUFFIX)
#include "kernel_body.inc.h"
#undef ADAMC_T
#undef ADAMC_SQRT
#undef ADAMC_NAME
