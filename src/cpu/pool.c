/* Thread pool for the CPU kernels: see pool.h.
 *
 * Job state: the job (fn, arg, n_tasks, nthreads) is published by the caller
 * with a generation number; tasks are claimed with a compare-and-swap on
 * ctr = (generation << 32) | next_task, so a thread that read a stale job
 * cannot claim a task of a newer one: its CAS fails (the generation only
 * grows). While a claim of generation g can still succeed, job g has an
 * unclaimed task, so the caller is still waiting and has not rewritten the
 * job fields. Before rewriting them for the next job the caller closes the
 * counter (the next generation, task index LF_CLOSED: nothing claimable), and
 * pool threads read the fields only after seeing the counter open, so a
 * thread that mixes old and new fields cannot claim anything. */
#include "cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LF_PAUSE() _mm_pause()
#else
#define LF_PAUSE() ((void)0)
#endif

#define LF_POOL_MAX 256
#define LF_CLOSED 0xffffffffu /* task index of a closed counter */
#define LF_SPIN_IDLE 20000 /* pause iterations a pool thread spins before sleeping */
#define LF_SPIN_YIELD 64   /* pause iterations between sched_yield calls while spinning */
#define LF_SPIN_WAIT 2000  /* pause iterations the caller spins before yielding */

static pthread_mutex_t g_run_lock = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t g_sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;

static atomic_int g_nworkers = 0;      /* pool threads started (workers 1..n) */
static atomic_uint g_seq = 0;          /* bumped for every job */
static atomic_int g_sleepers = 0;
static _Atomic uint64_t g_ctr = 0;     /* (generation << 32) | next task */
static atomic_int g_done = 0;          /* tasks finished in the current job */
static _Atomic(lf_pool_fn) g_fn;       /* static storage: starts null */
static _Atomic(void *) g_arg;
static atomic_int g_ntasks = 0;
static atomic_int g_nthreads = 0;
static uint32_t g_gen = 0;             /* written by the running caller only */
static _Thread_local bool t_in_task = false;

/* Claim and run tasks of generation gen until none is left. (All accesses
 * to the job state are sequentially consistent: see lf_pool_run.) */
static void work(uint32_t gen, lf_pool_fn fn, void *arg, int n, int worker) {
    for (;;) {
        uint64_t c = atomic_load(&g_ctr);
        if ((uint32_t)(c >> 32) != gen || (uint32_t)c >= (uint32_t)n) return;
        if (!atomic_compare_exchange_weak(&g_ctr, &c, c + 1)) continue;
        t_in_task = true;
        fn(arg, (int)(uint32_t)c, worker);
        t_in_task = false;
        atomic_fetch_add(&g_done, 1);
    }
}

static void *worker_main(void *p) {
    int id = (int)(intptr_t)p;
    unsigned last = atomic_load(&g_seq);
    for (;;) {
        unsigned s;
        int spins = 0;
        while ((s = atomic_load_explicit(&g_seq, memory_order_acquire)) == last) {
            if (++spins < LF_SPIN_IDLE) {
                /* Yield now and then: on a machine with more runnable
                 * threads than cores this thread may share a core with the
                 * caller, whose next job it is waiting for. */
                if (spins % LF_SPIN_YIELD == 0)
                    sched_yield();
                else
                    LF_PAUSE();
                continue;
            }
            pthread_mutex_lock(&g_sleep_lock);
            atomic_fetch_add(&g_sleepers, 1);
            while (atomic_load(&g_seq) == last) pthread_cond_wait(&g_wake, &g_sleep_lock);
            atomic_fetch_sub(&g_sleepers, 1);
            pthread_mutex_unlock(&g_sleep_lock);
            spins = 0;
        }
        last = s;
        /* The counter was open for generation g when read, so the fields read
         * after it are g's or newer; work() only runs a task whose claim for
         * g succeeds, which means g was still unfinished, so no newer job had
         * been started: the fields were g's. */
        uint64_t c = atomic_load(&g_ctr);
        /* closed: the fields are being rewritten; the caller bumps g_seq
         * again once the job is open */
        if ((uint32_t)c == LF_CLOSED) continue;
        lf_pool_fn fn = atomic_load(&g_fn);
        void *arg = atomic_load(&g_arg);
        int n = atomic_load(&g_ntasks);
        int nth = atomic_load(&g_nthreads);
        if (id < nth) work((uint32_t)(c >> 32), fn, arg, n, id);
    }
    return NULL;
}

/* Start pool threads up to want - 1 workers; returns the number running. */
static int ensure_workers(int want) {
    int have = atomic_load(&g_nworkers);
    while (have < want - 1 && have < LF_POOL_MAX) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, worker_main, (void *)(intptr_t)(have + 1));
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        atomic_store(&g_nworkers, ++have);
    }
    return have;
}

static void run_inline(int n_tasks, lf_pool_fn fn, void *arg) {
    for (int t = 0; t < n_tasks; t++) fn(arg, t, 0);
}

/* LF_POOL=omp: run jobs as OpenMP parallel loops instead (for comparison) */
static int use_omp(void) {
    static atomic_int mode = -1;
    int m = atomic_load(&mode);
    if (m < 0) {
        const char *e = getenv("LF_POOL");
        m = e && !strcmp(e, "omp");
        atomic_store(&mode, m);
    }
    return m;
}

void lf_pool_run(int n_tasks, lf_pool_fn fn, void *arg, int nthreads) {
    if (n_tasks <= 0) return;
    if (use_omp()) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads > 0 ? nthreads : 1) if (nthreads > 1 && n_tasks > 1)
        for (int t = 0; t < n_tasks; t++) fn(arg, t, omp_get_thread_num());
        return;
    }
    if (nthreads <= 1 || n_tasks == 1 || t_in_task || pthread_mutex_trylock(&g_run_lock) != 0) {
        run_inline(n_tasks, fn, arg);
        return;
    }
    int workers = ensure_workers(nthreads);
    if (workers == 0) {
        pthread_mutex_unlock(&g_run_lock);
        run_inline(n_tasks, fn, arg);
        return;
    }
    if (nthreads > workers + 1) nthreads = workers + 1;
    /* Close the counter (new generation, no task claimable) before the job
     * fields change: a thread still holding the previous generation, which
     * may read some new fields, then fails its claim. Every access is
     * seq_cst, so a thread that read a field written after the close also
     * sees the close. Then open it. */
    uint32_t gen = ++g_gen;
    atomic_store(&g_ctr, ((uint64_t)gen << 32) | LF_CLOSED);
    atomic_store(&g_fn, fn);
    atomic_store(&g_arg, arg);
    atomic_store(&g_ntasks, n_tasks);
    atomic_store(&g_nthreads, nthreads);
    atomic_store(&g_done, 0);
    atomic_store(&g_ctr, (uint64_t)gen << 32);
    atomic_fetch_add(&g_seq, 1); /* seq_cst: pairs with the sleepers count */
    if (atomic_load(&g_sleepers) > 0) {
        pthread_mutex_lock(&g_sleep_lock);
        pthread_cond_broadcast(&g_wake);
        pthread_mutex_unlock(&g_sleep_lock);
    }
    work(gen, fn, arg, n_tasks, 0);
    /* wait for the tasks others claimed */
    int spins = 0;
    while (atomic_load(&g_done) < n_tasks) {
        if (++spins < LF_SPIN_WAIT)
            LF_PAUSE();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&g_run_lock);
}
