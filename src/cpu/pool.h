/* The CPU kernels' thread pool.
 *
 * lf_pool_run(n_tasks, fn, arg, nthreads) runs fn(arg, task, worker) for
 * task = 0..n_tasks-1 on the calling thread (worker 0) and up to nthreads-1
 * pool threads (workers 1..), each task exactly once, and returns when all
 * are done. Tasks are claimed one at a time from a shared counter, and the
 * caller only waits for tasks that were claimed: a pool thread the OS has not
 * scheduled yet (a busy machine, a VM with stolen time) finds no task left
 * when it wakes up and holds nobody up. (A fork-join OpenMP region waits for
 * every thread of its team to arrive, which on an oversubscribed machine
 * costs a scheduling delay per region.)
 *
 * Idle pool threads spin briefly for the next job, then sleep on a condition
 * variable. One job runs at a time; a call made while another thread's job
 * is running (or from inside a task) runs its tasks inline on the caller. */
#ifndef LF_CPU_POOL_H
#define LF_CPU_POOL_H

typedef void (*lf_pool_fn)(void *arg, int task, int worker);

/* Run the tasks; worker is in [0, nthreads) and identifies per-thread
 * scratch. nthreads <= 1 or n_tasks <= 1 runs inline. */
void lf_pool_run(int n_tasks, lf_pool_fn fn, void *arg, int nthreads);

#endif
