/* thread_pool.c: adam_c's worker threads: fixed chunks claimed one at a time, so a step never waits for a thread
 * the OS has not scheduled. */
/*
 * Why not an OpenMP parallel region: a region ends in a barrier that waits for every thread of the team. Inside
 * a real training loop BLAS worker threads keep spinning on the cores after each matmul, and a team member that
 * cannot run makes the whole step wait a scheduler time slice (4-8 ms for a 14 us step). Here the caller starts
 * on the work at once and claims chunks from a shared counter; workers join when the OS runs them. When the
 * caller has claimed the last chunk it waits only for chunks that another thread has already claimed, i.e. is
 * running. A worker that wakes up late finds nothing to claim and goes back to sleep.
 *
 * Other things an OpenMP runtime does not give us: a fork() child never waits for threads it does not have (GNU
 * OpenMP can hang a child whose parent, or any library in it, had started a team): its steps run serially; failing to create a thread means fewer helpers, never
 * exit(); and every chunk runs with the caller's floating-point mode (MXCSR: FTZ/DAZ, rounding), which is per
 * thread, so results never depend on which thread ran a chunk.
 *
 * Chunk boundaries are chosen by the caller from the workload alone, never from the thread count, so results are
 * bit-identical however many threads take part (NaN payloads included).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dl_iterate_phdr, before any system header */
#endif
#include "adam_c.h"
#include "adam_internal.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if ADAMC_HAVE_POOL
#include <pthread.h>
#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sched.h>
#include <signal.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ADAMC_X86 1
#endif

/* The shared job word, read and claimed atomically as one 64-bit value:
 * generation (16 bits) | helpers allowed (8) | number of chunks (20) | next unclaimed chunk (20). */
#define NEXT_BITS 20
#define CHUNK_BITS 20
#define HELPER_BITS 8
#define FIELD(x, shift, bits) ((uint32_t)(((x) >> (shift)) & ((1u << (bits)) - 1u)))
#define GEN_OF(s) FIELD(s, NEXT_BITS + CHUNK_BITS + HELPER_BITS, 16)
#define HELPERS_OF(s) FIELD(s, NEXT_BITS + CHUNK_BITS, HELPER_BITS)
#define NCHUNKS_OF(s) FIELD(s, NEXT_BITS, CHUNK_BITS)
#define NEXT_OF(s) FIELD(s, 0, NEXT_BITS)

static uint64_t make_state(uint32_t gen, uint32_t helpers, uint32_t nchunks)
{
    return ((uint64_t)(gen & 0xFFFFu) << (NEXT_BITS + CHUNK_BITS + HELPER_BITS)) |
           ((uint64_t)helpers << (NEXT_BITS + CHUNK_BITS)) | ((uint64_t)nchunks << NEXT_BITS);
}

typedef struct pool {
    _Atomic uint64_t state;
    _Atomic uint32_t completed;  /* chunks of the current job finished, by anyone */
    _Atomic int sleepers;        /* workers blocked on `wake` */
    /* the current job: written by the caller before it publishes a new generation, read after a claim */
    adamc_chunk_fn run;
    const void *ctx;
    unsigned fp_mode;
    int created;                 /* worker threads started (they live until the process ends) */
    pthread_mutex_t caller_lock; /* one job at a time; a second caller runs serially instead of waiting */
    pthread_mutex_t sleep_lock;
    pthread_cond_t wake;
} pool;

static _Atomic int executor_mode = ADAMC_EXECUTOR_AUTO;
static _Atomic int last_executor = ADAMC_EXECUTOR_POOL;

static pool the_pool = {
    .caller_lock = PTHREAD_MUTEX_INITIALIZER,
    .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static unsigned read_fp_mode(void)
{
#ifdef ADAMC_X86
    return _mm_getcsr();
#else
    return 0;
#endif
}

static void apply_fp_mode(unsigned mode)
{
#ifdef ADAMC_X86
    if (_mm_getcsr() != mode)
        _mm_setcsr(mode);
#else
    (void)mode;
#endif
}

static inline void cpu_relax(void)
{
#ifdef ADAMC_X86
    _mm_pause();
#endif
}

/* Claims and runs chunks of the job whose state word is `s` until none is left or a new job replaced it.
 * Returns the number of chunks this thread ran. */
static uint32_t work_on(pool *pl, uint64_t s)
{
    const uint32_t gen = GEN_OF(s);
    uint32_t done = 0;
    while (GEN_OF(s) == gen && NEXT_OF(s) < NCHUNKS_OF(s)) {
        if (!atomic_compare_exchange_weak_explicit(&pl->state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue; /* s now holds the current word */
        /* The claim synchronised with the caller's publication: its job fields are visible and stay valid until
         * this chunk is counted as completed (the caller waits for that before it returns). */
        apply_fp_mode(pl->fp_mode);
        pl->run(pl->ctx, NEXT_OF(s));
        atomic_fetch_add_explicit(&pl->completed, 1, memory_order_release);
        done++;
        s = atomic_load_explicit(&pl->state, memory_order_acquire);
    }
    return done;
}

/* How long an idle worker keeps polling for the next job before it sleeps. Short: in a training loop the cores
 * belong to BLAS between steps; back-to-back steps of a benchmark still find the workers awake. */
#define SPIN_NS 50000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker_main(void *arg)
{
    pool *pl = &the_pool;
    const uint32_t index = (uint32_t)(uintptr_t)arg; /* 0-based among workers; the caller is not counted */
    uint32_t seen = GEN_OF(atomic_load_explicit(&pl->state, memory_order_acquire));
    for (;;) {
        uint64_t s = atomic_load_explicit(&pl->state, memory_order_acquire);
        if (GEN_OF(s) == seen) {
            const uint64_t until = now_ns() + SPIN_NS;
            unsigned polls = 0;
            while (GEN_OF(s = atomic_load_explicit(&pl->state, memory_order_acquire)) == seen) {
                cpu_relax();
                if ((++polls & 255u) == 0 && now_ns() > until)
                    break;
            }
            if (GEN_OF(s) == seen) {
                pthread_mutex_lock(&pl->sleep_lock);
                atomic_fetch_add_explicit(&pl->sleepers, 1, memory_order_seq_cst);
                while (GEN_OF(atomic_load_explicit(&pl->state, memory_order_seq_cst)) == seen)
                    pthread_cond_wait(&pl->wake, &pl->sleep_lock);
                atomic_fetch_sub_explicit(&pl->sleepers, 1, memory_order_seq_cst);
                pthread_mutex_unlock(&pl->sleep_lock);
                continue;
            }
        }
        seen = GEN_OF(s);
        if (index < HELPERS_OF(s))
            work_on(pl, s);
    }
    return NULL;
}

/* Starts workers until `wanted` exist; returns how many exist (fewer if the OS refused a thread). */
static int ensure_workers(pool *pl, int wanted)
{
    if (pl->created >= wanted)
        return pl->created;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return pl->created;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024); /* the kernels use a few hundred bytes of stack */
    /* workers block every signal: handlers (Python's included) run on the application's threads */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (pl->created < wanted) {
        pthread_t tid;
        if (pthread_create(&tid, &attr, worker_main, (void *)(uintptr_t)pl->created) != 0)
            break; /* out of threads or memory: run with the helpers we have */
        pl->created++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return pl->created;
}

/* fork(): the child has none of the workers, and a lock held by another thread of the parent stays held in the
 * child's copy. Start over with fresh locks, and run the child's steps serially (see in_fork_child). */
static int restarts = 0;
/* Set in a fork() child: its steps run serially. Creating threads there is only as safe as every library's fork
 * handling (a sanitizer's thread registry, say, may have been locked by a thread that does not exist in the
 * child); a serial step needs nothing from the parent's threads. */
static int in_fork_child = 0;
static void pool_after_fork_in_child(void)
{
    pool *pl = &the_pool;
    if (pl->created > 0)
        restarts++;
    in_fork_child = 1;
    atomic_store(&pl->state, 0);
    atomic_store(&pl->completed, 0);
    atomic_store(&pl->sleepers, 0);
    pl->created = 0;
    pthread_mutex_init(&pl->caller_lock, NULL);
    pthread_mutex_init(&pl->sleep_lock, NULL);
    pthread_cond_init(&pl->wake, NULL);
}

static void team_init(void);

void adamc_pool_init(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_in_child);
    team_init();
    /* ADAM_C_EXECUTOR=pool|openmp|auto forces the executor at load (an unknown value keeps "auto"; the Python
     * package checks the value and says so) */
    const char *forced = getenv("ADAM_C_EXECUTOR");
    while (forced != NULL && (*forced == ' ' || *forced == '\t'))
        forced++;
    if (forced != NULL && strncmp(forced, "pool", 4) == 0 && strspn(forced + 4, " \t\n") == strlen(forced + 4))
        atomic_store(&executor_mode, ADAMC_EXECUTOR_POOL);
    else if (forced != NULL && strncmp(forced, "openmp", 6) == 0 && strspn(forced + 6, " \t\n") == strlen(forced + 6))
        atomic_store(&executor_mode, ADAMC_EXECUTOR_OPENMP);
}

int adamc_pool_restarts(void) { return restarts; }


/* ---- The OpenMP team executor.
 * In a torch process, torch's OpenMP worker threads keep spinning on the cores for a while after each parallel
 * region (forward, backward): a worker of this pool that wakes up then finds no free core, and the caller steps
 * alone. When a GNU-compatible OpenMP runtime is already loaded in the process (torch's bundled libgomp), a step
 * from the main thread runs its chunks on that runtime's team instead: the threads that hold the cores take the
 * chunks at once. Nothing links against OpenMP: the runtime is found among the loaded objects at run time and used
 * only through GOMP_parallel, which GNU OpenMP and LLVM/Intel's libomp/libiomp5 all export. The chunks are the
 * same, claimed from a counter, so results do not depend on the executor or the thread count; each team thread
 * runs them in the caller's floating-point mode and gets its own mode back afterwards.
 * Where it is not used ("auto"): a thread other than the main one (libgomp keeps one team per master thread: each
 * stepping thread would start a team of its own); more than one runtime loaded (which one holds the cores is not
 * known); a process that had a runtime loaded when adam_c loaded but only one thread then (a fork() child of a
 * process that ran OpenMP: its runtime's team threads are gone, and a parallel region there hangs); a fork child of
 * a process that loaded adam_c (serial, as with the pool); a call from inside a parallel region. */
#if defined(__linux__)
typedef void (*gomp_parallel_fn)(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
typedef int (*omp_int_fn)(void);

#define MAX_RUNTIMES 4
#define RESEARCH_NS 100000000ull /* while no runtime is found, look again at most every 100 ms */

static struct {
    pthread_mutex_t lock;
    unsigned long long adds_seen; /* dl_iterate_phdr's load counter when the objects were last searched */
    uint64_t searched_ns;
    int searched;
    int runtimes;                 /* usable runtimes found (more than one: "auto" keeps the pool) */
    gomp_parallel_fn parallel;
    omp_int_fn in_parallel;
    omp_int_fn max_threads;
    char path[512];
} omp_rt = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int team_unsafe = 0;     /* set at load: a fork() child of a process whose runtime ran (see above) */
static _Thread_local int team_hint = 0; /* adamc_set_team_hint */
static unsigned team_birth_mode; /* the floating-point mode at load: what team threads born in a step start with */

typedef struct runtime_names {
    int n;
    char name[MAX_RUNTIMES][512];
} runtime_names;

static int is_runtime_name(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return strncmp(base, "libgomp", 7) == 0 || strncmp(base, "libiomp5", 8) == 0 || strncmp(base, "libomp", 6) == 0;
}

static int read_adds(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1; /* the first object is enough */
}

/* Only copies names: dlopen/dlsym inside a dl_iterate_phdr callback would take the loader's locks in the other
 * order from a thread inside dlopen, a deadlock. */
static int collect_runtime_names(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    runtime_names *out = (runtime_names *)data;
    if (is_runtime_name(info->dlpi_name) && out->n < MAX_RUNTIMES) {
        strncpy(out->name[out->n], info->dlpi_name, sizeof out->name[0] - 1);
        out->name[out->n][sizeof out->name[0] - 1] = '\0';
        out->n++;
    }
    return 0;
}

/* Called with omp_rt.lock held. */
static void search_runtimes(void)
{
    runtime_names found = {0};
    dl_iterate_phdr(collect_runtime_names, &found);
    int usable = 0;
    for (int i = 0; i < found.n; i++) {
        void *h = dlopen(found.name[i], RTLD_LAZY | RTLD_NOLOAD); /* already loaded: a reference, never a load */
        if (h == NULL)
            continue;
        gomp_parallel_fn par = (gomp_parallel_fn)dlsym(h, "GOMP_parallel");
        omp_int_fn inpar = (omp_int_fn)dlsym(h, "omp_in_parallel");
        omp_int_fn maxt = (omp_int_fn)dlsym(h, "omp_get_max_threads");
        if (par == NULL || inpar == NULL || maxt == NULL) {
            dlclose(h);
            continue;
        }
        if (usable++ == 0) { /* the handle is kept (never dlclose'd): the runtime cannot be unloaded under us */
            omp_rt.parallel = par;
            omp_rt.in_parallel = inpar;
            omp_rt.max_threads = maxt;
            strncpy(omp_rt.path, found.name[i], sizeof omp_rt.path - 1);
        } else {
            dlclose(h);
        }
    }
    omp_rt.runtimes = usable;
}

/* The loaded OpenMP runtime's GOMP_parallel, or NULL; *count: how many usable runtimes are loaded. Once found it is
 * kept; until then the loaded objects are searched again only when the process has loaded a library since the last
 * search (torch may be imported after adam_c), and at most every RESEARCH_NS. */
static gomp_parallel_fn openmp_runtime(int *count)
{
    pthread_mutex_lock(&omp_rt.lock);
    if (omp_rt.parallel == NULL) {
        const uint64_t now = now_ns();
        if (!omp_rt.searched || now - omp_rt.searched_ns >= RESEARCH_NS) {
            unsigned long long adds = 0;
            dl_iterate_phdr(read_adds, &adds);
            if (!omp_rt.searched || adds != omp_rt.adds_seen)
                search_runtimes();
            omp_rt.searched = 1;
            omp_rt.searched_ns = now;
            omp_rt.adds_seen = adds;
        }
    }
    gomp_parallel_fn par = omp_rt.parallel;
    if (count)
        *count = omp_rt.runtimes;
    pthread_mutex_unlock(&omp_rt.lock);
    return par;
}

/* Threads of this process (/proc/self/stat's num_threads), or 0 if unknown. */
static long process_threads(void)
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces; fields after it are plain */
    if (p == NULL)
        return 0;
    long value = 0;
    /* after ") ": state(3) ppid(4) ... num_threads is field 20, the 18th after the name */
    for (int field = 3; field <= 20 && p != NULL; field++) {
        p = strchr(p + 1, ' ');
        if (p != NULL && field == 20)
            value = strtol(p + 1, NULL, 10);
    }
    return value;
}

static void team_init(void)
{
    team_birth_mode = read_fp_mode();
    runtime_names found = {0};
    dl_iterate_phdr(collect_runtime_names, &found); /* names only: this runs inside the loader (a constructor) */
    if (found.n > 0 && process_threads() == 1)
        team_unsafe = 1;
}

typedef struct team_job {
    adamc_chunk_fn run;
    const void *ctx;
    unsigned fp_mode;
    uint32_t nchunks;
    _Atomic uint32_t next;
} team_job;

static void team_body(void *arg)
{
    team_job *job = (team_job *)arg;
    const unsigned own_mode = read_fp_mode();
    int applied = 0;
    for (;;) {
        const uint32_t c = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (c >= job->nchunks)
            break;
        if (!applied) {
            apply_fp_mode(job->fp_mode);
            applied = 1;
        }
        job->run(job->ctx, c);
    }
    if (applied)
        apply_fp_mode(own_mode);
}

/* Runs the job on the loaded OpenMP runtime's team, of at most `threads` and at most the runtime's own thread
 * count (torch.set_num_threads sets it: the team never grows past the threads its owner asked for); 0 if it
 * cannot or should not (see above). */
static int run_on_team(adamc_chunk_fn run, const void *ctx, size_t nchunks, int threads, int mode)
{
    if (mode == ADAMC_EXECUTOR_AUTO && (!team_hint || team_unsafe || (pid_t)syscall(SYS_gettid) != getpid()))
        return 0;
    int runtimes = 0;
    gomp_parallel_fn par = openmp_runtime(&runtimes);
    if (par == NULL || (mode == ADAMC_EXECUTOR_AUTO && runtimes > 1) || omp_rt.in_parallel())
        return 0;
    const int team = omp_rt.max_threads();
    if (team < threads)
        threads = team;
    if (threads <= 1)
        return 0;
    team_job job = {.run = run, .ctx = ctx, .fp_mode = read_fp_mode(), .nchunks = (uint32_t)nchunks};
    atomic_init(&job.next, 0);
    /* Team threads the runtime starts inside this call inherit the caller's mode: they start with the mode the
     * process had when adam_c loaded instead, and the caller (which runs chunks too) gets its own back after. */
    apply_fp_mode(team_birth_mode);
    par(team_body, &job, (unsigned)threads, 0);
    apply_fp_mode(job.fp_mode);
    return 1;
}

const char *adamc_openmp_runtime_path(void)
{
    return openmp_runtime(NULL) != NULL ? omp_rt.path : NULL;
}
#else /* no dl_iterate_phdr: the pool only */
static void team_init(void) {}
static int run_on_team(adamc_chunk_fn run, const void *ctx, size_t nchunks, int threads, int mode)
{
    (void)run, (void)ctx, (void)nchunks, (void)threads, (void)mode;
    return 0;
}
const char *adamc_openmp_runtime_path(void) { return NULL; }
#endif

#if defined(__linux__)
void adamc_set_team_hint(int on) { team_hint = on != 0; }
#else
void adamc_set_team_hint(int on) { (void)on; }
#endif

int adamc_set_executor(int mode)
{
    if (mode != ADAMC_EXECUTOR_AUTO && mode != ADAMC_EXECUTOR_POOL && mode != ADAMC_EXECUTOR_OPENMP)
        return -1;
    atomic_store(&executor_mode, mode);
    return 0;
}

int adamc_get_executor(void) { return atomic_load(&executor_mode); }

int adamc_last_executor(void) { return atomic_load(&last_executor); }

int adamc_pool_run(adamc_chunk_fn run, const void *ctx, size_t nchunks, int threads)
{
    pool *pl = &the_pool;
    if (threads > ADAMC_MAX_THREADS)
        threads = ADAMC_MAX_THREADS;
    if (threads <= 1 || nchunks <= 1 || nchunks > ADAMC_MAX_CHUNKS || in_fork_child ||
        pthread_mutex_trylock(&pl->caller_lock) != 0) {
        /* serial: the same chunks in order (a busy pool means the cores are busy with another step anyway) */
        for (size_t c = 0; c < nchunks; c++)
            run(ctx, c);
        return 0;
    }
    /* one job at a time for either executor: a second caller's team would oversubscribe the cores */
    const int mode = atomic_load_explicit(&executor_mode, memory_order_relaxed);
    if (mode != ADAMC_EXECUTOR_POOL && run_on_team(run, ctx, nchunks, threads, mode)) {
        atomic_store_explicit(&last_executor, ADAMC_EXECUTOR_OPENMP, memory_order_relaxed);
        pthread_mutex_unlock(&pl->caller_lock);
        return 1;
    }
    atomic_store_explicit(&last_executor, ADAMC_EXECUTOR_POOL, memory_order_relaxed);
    int helpers = ensure_workers(pl, threads - 1);
    if (helpers > threads - 1)
        helpers = threads - 1;
    pl->run = run;
    pl->ctx = ctx;
    pl->fp_mode = read_fp_mode();
    atomic_store_explicit(&pl->completed, 0, memory_order_relaxed);
    const uint32_t gen = GEN_OF(atomic_load_explicit(&pl->state, memory_order_relaxed)) + 1;
    const uint64_t s = make_state(gen, (uint32_t)helpers, (uint32_t)nchunks);
    atomic_store_explicit(&pl->state, s, memory_order_seq_cst);
    if (atomic_load_explicit(&pl->sleepers, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&pl->sleep_lock);
        pthread_cond_broadcast(&pl->wake);
        pthread_mutex_unlock(&pl->sleep_lock);
    }
    work_on(pl, s);
    /* every chunk is claimed; wait for those other threads are running (each is a few microseconds of work) */
    unsigned polls = 0;
    while (atomic_load_explicit(&pl->completed, memory_order_acquire) < (uint32_t)nchunks) {
        cpu_relax();
        if ((++polls & 1023u) == 0)
            sched_yield();
    }
    pthread_mutex_unlock(&pl->caller_lock);
    return 1;
}

#else /* no pthreads: everything runs on the caller */

int adamc_set_executor(int mode) { return mode == ADAMC_EXECUTOR_AUTO || mode == ADAMC_EXECUTOR_POOL ? 0 : -1; }
void adamc_set_team_hint(int on) { (void)on; }
int adamc_get_executor(void) { return ADAMC_EXECUTOR_POOL; }
int adamc_last_executor(void) { return ADAMC_EXECUTOR_POOL; }
const char *adamc_openmp_runtime_path(void) { return NULL; }

void adamc_pool_init(void) {}

int adamc_pool_restarts(void) { return 0; }

int adamc_pool_run(adamc_chunk_fn run, const void *ctx, size_t nchunks, int threads)
{
    (void)threads;
    for (size_t c = 0; c < nchunks; c++)
        run(ctx, c);
    return 0;
}
#endif
