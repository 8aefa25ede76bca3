/* autotune.c: the measured threading decision: each plan times its steps serially and with threads, keeps the faster. */
#include "adam_c.h"
#include "adam_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TUNE_SAMPLES 5       /* recent times kept per mode; their median decides */
#define TUNE_FIRST 3         /* samples of each mode before the first decision (a median of 3 survives an outlier) */
#define TUNE_RECHECK 50      /* after deciding, the other mode is re-tried after this many steps ... */
#define TUNE_RECHECK_MAX 3200 /* ... doubling (up to this) each time it loses again, so a mode that cannot win
                              * (threads on a busy core: one slow step each) costs less and less */
#define TUNE_MARGIN 0.97     /* threads are chosen only if their median is at least 3% below serial's */
#define TUNE_WAKE_NS 250000.0 /* the first step of a re-try pays for waking sleeping workers (tens of us on a VM):
                              * unless it lost by more than this, it is not judged; the next step is */

struct adamc_autotune {
    uint64_t steps;                        /* steps seen, the first (page faults, cold caches) not timed */
    double samples[2][TUNE_SAMPLES];       /* [0] serial, [1] threads; ns */
    unsigned filled[2];
    unsigned next[2];
    int choice;                            /* 0 serial, 1 threads; valid once both modes have samples */
    int threads;                           /* thread count of the last threaded run */
    uint64_t backoff;                      /* steps between re-tries of the mode not chosen while it loses */
    uint64_t next_check;                   /* the step that re-tries it */
    int retrying;                          /* inside a run of re-tries whose first (wake-up) step was seen */
};

adamc_autotune *adamc_autotune_new(void) { return (adamc_autotune *)calloc(1, sizeof(adamc_autotune)); }
void adamc_autotune_free(adamc_autotune *tune) { free(tune); }

static double tune_median(const adamc_autotune *tune, int mode)
{
    const unsigned n = tune->filled[mode];
    if (n == 0)
        return 0.0;
    double v[TUNE_SAMPLES];
    memcpy(v, tune->samples[mode], n * sizeof(double));
    for (unsigned i = 1; i < n; i++) /* insertion sort of at most 5 values */
        for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
            const double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void adamc_autotune_get(const adamc_autotune *tune, adamc_autotune_info *info)
{
    if (!info)
        return;
    memset(info, 0, sizeof *info);
    if (!tune)
        return;
    info->serial_ns = tune_median(tune, 0);
    info->parallel_ns = tune_median(tune, 1);
    info->steps = tune->steps;
    if (tune->filled[0] >= TUNE_FIRST && tune->filled[1] >= TUNE_FIRST)
        info->threads = tune->choice ? tune->threads : 1;
}

/* Which mode this step runs: explore both modes first (alternating), then the faster, re-trying the other one
 * after TUNE_RECHECK steps, then less and less often while it keeps losing (see adamc_autotune_record). */
int adamc_autotune_pick(const adamc_autotune *tune)
{
    if (tune->steps == 0)
        return 1; /* untimed warm-up step */
    if (tune->filled[0] < TUNE_FIRST || tune->filled[1] < TUNE_FIRST)
        return tune->filled[1] <= tune->filled[0];
    return tune->steps >= tune->next_check ? !tune->choice : tune->choice;
}

void adamc_autotune_record(adamc_autotune *tune, int mode, double ns)
{
    const int decided = tune->filled[0] >= TUNE_FIRST && tune->filled[1] >= TUNE_FIRST;
    if (decided && mode != tune->choice) {
        const double chosen = tune_median(tune, tune->choice);
        if (!tune->retrying && ns < chosen + TUNE_WAKE_NS) {
            /* The first step of a re-try runs after a stretch of the other mode: threads that slept since their last
             * step must be woken (a fixed cost a back-to-back loop pays once), serial starts beside a worker still
             * spinning. Judging it would keep a mode that wins in steady state from ever being chosen (back-to-back
             * steps of 1e5 elements: a cold threaded step is 4x serial, a warm one faster than serial). So it is
             * not a sample, unless it lost by more than any wake-up costs (a thread that cannot run: milliseconds);
             * the next step, also of this mode, is judged. */
            tune->retrying = 1;
            tune->next_check = tune->steps + 1;
            return;
        }
        /* a re-try of the mode not chosen: if it now looks faster, re-try it on the next steps too, so the median
         * can follow quickly; if it lost again, wait twice as long before the next re-try */
        const int promising = mode ? ns < TUNE_MARGIN * chosen : TUNE_MARGIN * ns < chosen;
        if (!promising)
            tune->backoff = tune->backoff >= TUNE_RECHECK_MAX / 2 ? TUNE_RECHECK_MAX : 2 * tune->backoff;
        tune->retrying = promising;
        tune->next_check = tune->steps + (promising ? 1 : tune->backoff);
    }
    tune->samples[mode][tune->next[mode]] = ns;
    tune->next[mode] = (tune->next[mode] + 1) % TUNE_SAMPLES;
    if (tune->filled[mode] < TUNE_SAMPLES)
        tune->filled[mode]++;
    if (tune->filled[0] >= TUNE_FIRST && tune->filled[1] >= TUNE_FIRST) {
        const int choice = tune_median(tune, 1) < TUNE_MARGIN * tune_median(tune, 0);
        if (choice != tune->choice || !decided) { /* a new decision: re-check it after the base interval */
            tune->backoff = TUNE_RECHECK;
            tune->next_check = tune->steps + TUNE_RECHECK;
            tune->retrying = 0;
        }
        tune->choice = choice;
    }
}

void adamc_autotune_finish(adamc_autotune *tune, int mode, double ns, int threads)
{
    if (tune->steps > 0 && ns >= 0.0) /* the first step (page faults, cold caches) is not a sample */
        adamc_autotune_record(tune, mode, ns);
    if (mode)
        tune->threads = threads;
    tune->steps++;
}
