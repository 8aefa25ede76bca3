/* cpu_features.c: which SIMD targets this CPU and OS can run (CPUID feature bits AND XGETBV register state). */
#include "adam_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <stdint.h>

static uint64_t read_xcr0(void)
{
    uint32_t eax, edx;
    /* xgetbv is only legal once CPUID reported OSXSAVE; callers check that first. */
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* AVX needs the OS to save XMM and YMM state (XCR0 bits 1, 2); AVX-512 also opmask and ZMM (bits 5, 6, 7). */
static int os_saves(uint64_t mask)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & bit_OSXSAVE))
        return 0;
    return (read_xcr0() & mask) == mask;
}

int adamc_cpu_has_avx2_fma(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & bit_AVX) || !(c & bit_FMA) || !(c & bit_F16C)) /* F16C: float16 tiles */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (!(b & bit_AVX2))
        return 0;
    return os_saves(0x6);
}

int adamc_cpu_has_avx512(void)
{
    unsigned a, b, c, d;
    if (!adamc_cpu_has_avx2_fma())
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    /* the avx512 target is built for F + VL + BW + DQ (the Skylake-server set) */
    const unsigned need = bit_AVX512F | bit_AVX512VL | bit_AVX512BW | bit_AVX512DQ;
    if ((b & need) != need)
        return 0;
    return os_saves(0xE6);
}

int adamc_cpu_has_avx512_zen4(void)
{
    unsigned a, b, c, d;
    if (!adamc_cpu_has_avx512())
        return 0;
    /* the avx512_zen4 target adds VBMI (leaf 7.0 ECX: vpermi2b, the int8 state decoder) and AVX512-BF16
     * (leaf 7.1 EAX: vcvtne2ps2bf16, float32 -> bfloat16), the two extensions its kernel file is compiled with */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(c & bit_AVX512VBMI))
        return 0;
    if (a < 1 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) /* leaf 7's EAX: the highest subleaf */
        return 0;
    return (a & bit_AVX512BF16) != 0;
}
#else
int adamc_cpu_has_avx2_fma(void) { return 0; }
int adamc_cpu_has_avx512(void) { return 0; }
int adamc_cpu_has_avx512_zen4(void) { return 0; }
#endif
