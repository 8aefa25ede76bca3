/* dispatch.c: the SIMD targets compiled in, the one chosen at load (CPU check, ADAM_C_TARGET) and the target API. */
#include "adam_c.h"
#include "adam_internal.h"

#include <stdlib.h>
#include <string.h>

static int always_supported(void) { return 1; }

/* Best last: the loader picks the last one the CPU supports. */
#define ADAMC_TARGET_ENTRY(name, suffix, supports)                                                                \
    {name, adamc_kernel_f32_##suffix, adamc_kernel_f64_##suffix, adamc_sumsq_f32_##suffix,                        \
     adamc_sumsq_f64_##suffix, adamc_probe_f32_##suffix, adamc_probe_f64_##suffix, adamc_convert_##suffix,       \
     adamc_probe_state_##suffix, supports}
static const adamc_target targets[] = {
    ADAMC_TARGET_ENTRY("baseline", baseline, always_supported),
#ifdef ADAMC_HAVE_AVX2
    ADAMC_TARGET_ENTRY("avx2", avx2, adamc_cpu_has_avx2_fma),
#endif
#ifdef ADAMC_HAVE_AVX512
    ADAMC_TARGET_ENTRY("avx512", avx512, adamc_cpu_has_avx512),
#endif
#ifdef ADAMC_HAVE_AVX512_ZEN4
    /* avx512 plus VBMI and AVX512-BF16, named as Highway names this set (AVX3_ZEN4): AMD Zen 4 and later, Intel
     * Sapphire Rapids and later. Its extensions are compiled in, not tested per tile: forcing "avx512" on such
     * a CPU runs the avx512 code, and only it. */
    ADAMC_TARGET_ENTRY("avx512_zen4", avx512_zen4, adamc_cpu_has_avx512_zen4),
#endif
};
#define TARGET_COUNT ((int)(sizeof(targets) / sizeof(targets[0])))

/* Decided once (at load, or by adamc_set_target), read by every step; never consulted inside a loop. */
const adamc_target *adamc_active_target = &targets[0];

static int find_target(const char *name)
{
    for (int i = 0; i < TARGET_COUNT; i++)
        if (name && strcmp(targets[i].name, name) == 0)
            return i;
    return -1;
}

__attribute__((constructor)) static void adamc_init(void)
{
    int best = 0;
    for (int i = 0; i < TARGET_COUNT; i++)
        if (targets[i].cpu_supports())
            best = i;
    adamc_active_target = &targets[best];
    const char *forced = getenv("ADAM_C_TARGET");
    if (forced && *forced) {
        int i = find_target(forced);
        if (i >= 0 && targets[i].cpu_supports())
            adamc_active_target = &targets[i];
        /* an unknown or unsupported name keeps the best target; the Python layer warns about it */
    }
    adamc_threads_init();
    adamc_pool_init();
}

int adamc_target_count(void) { return TARGET_COUNT; }

const char *adamc_target_name(int index)
{
    return (index >= 0 && index < TARGET_COUNT) ? targets[index].name : NULL;
}

int adamc_target_supported(int index)
{
    return (index >= 0 && index < TARGET_COUNT) ? targets[index].cpu_supports() : 0;
}

const char *adamc_current_target(void) { return adamc_active_target->name; }

adamc_status adamc_set_target(const char *name)
{
    int i = find_target(name);
    if (i < 0 || !targets[i].cpu_supports())
        return ADAMC_ERR_UNKNOWN_TARGET;
    adamc_active_target = &targets[i];
    return ADAMC_OK;
}
