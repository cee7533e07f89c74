#define _GNU_SOURCE /* memmem */
#include "server/sched.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/timer.h"
#include "model/model.h"

/* ---- jobs ---------------------------------------------------------------- */

lf_job *lf_job_new(const lf_request_params *p, char *const *stop, int n_stop) {
    lf_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->params = *p;
    j->prompt_ids = malloc((size_t)p->n_prompt * sizeof(int));
    j->text = malloc(256);
    j->cap = 256;
    if (!j->prompt_ids || !j->text) goto fail;
    j->text[0] = 0;
    memcpy(j->prompt_ids, p->prompt, (size_t)p->n_prompt * sizeof(int));
    j->params.prompt = j->prompt_ids;
    j->params.stop_ids = NULL;
    j->params.n_stop_ids = 0;
    for (int i = 0; i < n_stop; i++) {
        if (!(j->stop[i] = strdup(stop[i]))) goto fail;
        j->n_stop++;
        if (strlen(stop[i]) > j->max_stop) j->max_stop = strlen(stop[i]);
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 2;
    j->engine_id = -1;
    j->t_arrival = lf_now_ms();
    return j;
fail:
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->prompt_ids);
    free(j->text);
    free(j);
    return NULL;
}

void lf_job_unref(lf_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (left > 0) return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    if (j->detok) lf_detok_stream_free(j->detok);
    free(j->prompt_ids);
    free(j->text);
    free(j->tokens);
    free(j);
}

/* Tell the scheduler that a job wants its attention (cancelled, or a stop
 * string found): it looks at its jobs at its next loop. */
static void sched_poke(lf_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->wake = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void lf_job_cancel(lf_sched *s, lf_job *j) {
    pthread_mutex_lock(&j->mu);
    bool was = j->cancel || j->done;
    j->cancel = true;
    pthread_mutex_unlock(&j->mu);
    if (!was) sched_poke(s);
}

/* Append text to the job (caller holds j->mu). */
static bool job_append(lf_job *j, const char *t, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t nc = (j->len + n + 1) * 2;
        char *ns = realloc(j->text, nc);
        if (!ns) return false;
        j->text = ns;
        j->cap = nc;
    }
    memcpy(j->text + j->len, t, n);
    j->len += n;
    j->text[j->len] = 0;
    return true;
}

/* Cut the text at the first stop string that starts at or after `from`;
 * otherwise advance `safe` to where no stop string can still begin (on a
 * character boundary). Caller holds j->mu. */
static void job_scan_stop(lf_job *j, size_t from, bool final) {
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit = memmem(j->text + from, j->len - from, j->stop[i], strlen(j->stop[i]));
        if (hit) {
            j->len = (size_t)(hit - j->text);
            j->text[j->len] = 0;
            j->stop_hit = true;
        }
        if (j->stop_hit) from = from < j->len ? from : j->len;
    }
    size_t safe = j->len;
    if (!final && !j->stop_hit && j->max_stop > 1) {
        safe = j->len > j->max_stop - 1 ? j->len - (j->max_stop - 1) : 0;
        while (safe > 0 && ((unsigned char)j->text[safe] & 0xC0) == 0x80) safe--;
    }
    if (safe > j->safe) j->safe = safe;
}

/* Where the stop-string scan of text appended now starts: the last
 * max_stop bytes before it can begin a match (caller holds j->mu). */
static size_t stop_scan_from(const lf_job *j) {
    return j->len > j->max_stop ? j->len - j->max_stop : 0;
}

/* ---- the delivery thread --------------------------------------------------- */

/* Why a second thread: on_token runs inside lf_engine_step, serially, while
 * the GPU waits for the next step. Decoding, appending, the stop-string scan,
 * the latencies and the futex wake of each stream's HTTP thread cost several
 * microseconds a token (4.5 ms a step at 1,440 streams on the H200:
 * bench/results/serve.md), so the scheduler only records (job, token, time)
 * and this thread does the rest while the next step runs.
 *
 * Order: a job's end travels as a record in the same queue, after its
 * tokens (job_finish queues it; the job has left the live list by then, so
 * no token of it can follow). The delivery thread handles a batch in order,
 * so a job's text is complete before its end is delivered, and the end sees
 * a stop string found in its last tokens. The other choice, draining this
 * thread before each finish, would stall the scheduler at every finish.
 *
 * A stop string found here sets stop_hit under the job's mutex and pokes the
 * scheduler, which cancels the sequence at its next loop: the tokens made in
 * between are not delivered, and the end says "stop" whatever the engine's
 * reason was. */

/* Decode one token record: append it, look for stop strings; the latencies
 * from the time the scheduler recorded it. */
static void deliver_token(lf_sched *s, const lf_delivery *d) {
    lf_job *j = d->job;
    if (j->stop_hit) return; /* written only by this thread */
    if (d->flags & LF_DELIVER_FIRST) lf_histogram_observe(&s->dm.ttft, (d->t_ms - j->t_arrival) / 1e3);
    else lf_histogram_observe(&s->dm.itl, (d->t_ms - j->t_last) / 1e3);
    j->t_last = d->t_ms;
    const char *text = NULL;
    size_t n = 0;
    lf_error err = {{0}};
    /* the end-of-sequence token has no text (as `longflow generate`) */
    if (!(d->flags & LF_DELIVER_EOS) && j->detok && lf_detok_stream_push(j->detok, d->tok, &text, &n, &err)) n = 0;
    pthread_mutex_lock(&j->mu);
    if (j->n_tokens == j->cap_tokens) {
        int nc = j->cap_tokens ? 2 * j->cap_tokens : 64;
        int *nt = realloc(j->tokens, (size_t)nc * sizeof(int));
        if (nt) {
            j->tokens = nt;
            j->cap_tokens = nc;
        }
    }
    if (j->n_tokens < j->cap_tokens) j->tokens[j->n_tokens++] = d->tok;
    size_t from = stop_scan_from(j), safe = j->safe;
    if (n) job_append(j, text, n);
    job_scan_stop(j, from, false);
    bool stopped = j->stop_hit;
    if (j->safe > safe) j->wake_pending = true;
    pthread_mutex_unlock(&j->mu);
    if (stopped) sched_poke(s);
}

/* A job's end record: flush the decoder, set the end (all but done, which
 * waits for /metrics), count it. */
static void deliver_end(lf_sched *s, lf_job *j) {
    const lf_job_end *e = &j->end;
    const char *text = NULL;
    size_t n = 0;
    if (j->detok && !j->stop_hit) lf_detok_stream_flush(j->detok, &text, &n);
    pthread_mutex_lock(&j->mu);
    size_t from = stop_scan_from(j);
    if (n) job_append(j, text, n);
    job_scan_stop(j, from, true);
    j->finish = j->stop_hit ? "stop" : e->finish;
    snprintf(j->error, sizeof j->error, "%s", e->error);
    j->kv_tokens_peak = e->kv_tokens_peak;
    j->kv_bytes = e->kv_bytes;
    j->kv_slots = e->kv_slots;
    const char *finish = j->finish;
    pthread_mutex_unlock(&j->mu);
    if (e->has_result) lf_metrics_delivery_finished(&s->dm, e->prompt, e->generated, e->evicted, finish);
}

/* Deliver one batch: the records in order; then /metrics (so that a client
 * that has its answer sees it counted); then the ends; then the wake-ups
 * (outside the jobs' mutexes); then the scheduler's references go. */
static void deliver_batch(lf_sched *s, const lf_delivery *b, int n, const lf_metrics_step *st) {
    for (int i = 0; i < n; i++) {
        if (b[i].flags & LF_DELIVER_FINISH) deliver_end(s, b[i].job);
        else deliver_token(s, &b[i]);
    }
    lf_metrics_publish(s->metrics, st, &s->dm);
    memset(&s->dm, 0, sizeof s->dm);
    for (int i = 0; i < n; i++) {
        if (!(b[i].flags & LF_DELIVER_FINISH)) continue;
        lf_job *j = b[i].job;
        pthread_mutex_lock(&j->mu);
        j->done = true;
        pthread_mutex_unlock(&j->mu);
        j->wake_pending = true;
    }
    for (int i = 0; i < n; i++) {
        lf_job *j = b[i].job;
        if (j->wake_pending) pthread_cond_broadcast(&j->cv);
        j->wake_pending = false;
        if (b[i].flags & LF_DELIVER_FINISH) lf_job_unref(j); /* its last record */
    }
}

static void *deliverer_main(void *arg) {
    lf_sched *s = arg;
    pthread_mutex_lock(&s->dmu);
    for (;;) {
        while (!s->dquit && s->dq_loops == 0) pthread_cond_wait(&s->dcv, &s->dmu);
        if (s->dq_loops == 0) break; /* quit, and nothing left to deliver */
        lf_delivery *b = s->dq;
        int n = s->dq_n, cap = s->dq_cap;
        lf_metrics_step st = s->dq_step;
        s->dq = s->dbatch;
        s->dq_cap = s->dbatch_cap;
        s->dq_n = 0;
        s->dq_loops = 0;
        s->dbatch = b;
        s->dbatch_cap = cap;
        pthread_cond_signal(&s->dtaken);
        pthread_mutex_unlock(&s->dmu);
        double t0 = lf_now_ms();
        deliver_batch(s, b, n, &st);
        s->dm.host_s += (lf_now_ms() - t0) / 1e3; /* published with the next batch */
        pthread_mutex_lock(&s->dmu);
    }
    pthread_mutex_unlock(&s->dmu);
    lf_metrics_publish(s->metrics, NULL, &s->dm);
    return NULL;
}

/* After the scheduler: delivers what its last loops queued, then stops. */
static void deliverer_stop(lf_sched *s) {
    if (!s->deliverer_started) return;
    pthread_mutex_lock(&s->dmu);
    s->dquit = true;
    pthread_cond_signal(&s->dcv);
    pthread_mutex_unlock(&s->dmu);
    pthread_join(s->deliverer, NULL);
    s->deliverer_started = false;
    free(s->items);
    free(s->dq);
    free(s->dbatch);
    s->items = s->dq = s->dbatch = NULL;
}

/* ---- the scheduler thread ------------------------------------------------ */

/* Room for `need` records in a record array (doubling); false when out of
 * memory. */
static bool records_reserve(lf_delivery **a, int *cap, long need) {
    if (need <= *cap) return true;
    long nc = 2 * need;
    if (nc > INT_MAX) return false;
    lf_delivery *na = realloc(*a, (size_t)nc * sizeof *na);
    if (!na) return false;
    *a = na;
    *cap = (int)nc;
    return true;
}

/* Append this loop's records to the queued batch (caller holds dmu);
 * false when it cannot grow. */
static bool dq_append(lf_sched *s) {
    if (!records_reserve(&s->dq, &s->dq_cap, (long)s->dq_n + s->n_items)) return false;
    memcpy(s->dq + s->dq_n, s->items, (size_t)s->n_items * sizeof *s->items);
    s->dq_n += s->n_items;
    return true;
}

/* Room for `more` records in this loop's array; false when out of memory. */
static bool items_reserve(lf_sched *s, long more) {
    return records_reserve(&s->items, &s->cap_items, s->n_items + more);
}

/* Record for the delivery thread. There is room: the loop reserved it
 * (reserve_loop); should that ever be wrong, it grows here. */
static void items_push(lf_sched *s, lf_job *j, int tok, int flags, double t_ms) {
    if (s->n_items == s->cap_items && !items_reserve(s, 1)) {
        fprintf(stderr, "longflow serve: out of memory: a token of request %d was not delivered\n", j->engine_id);
        return;
    }
    s->items[s->n_items++] = (lf_delivery){.job = j, .t_ms = t_ms, .tok = tok, .flags = flags};
}

/* Room for what this loop can record: per job at most two tokens (a
 * prefill's and a decode's in one step) and its end. */
static bool reserve_loop(lf_sched *s, const lf_job *list) {
    long n = s->n_live;
    for (const lf_job *j = list; j; j = j->next) n++;
    return items_reserve(s, 3 * n);
}

/* Out of memory for the records: give the taken jobs (and the poke) back to
 * the inbox, to be taken at a later loop. */
static void inbox_put_back(lf_sched *s, lf_job *list, bool wake) {
    lf_job *tail = list;
    while (tail && tail->next) tail = tail->next;
    pthread_mutex_lock(&s->mu);
    if (list) {
        tail->next = s->inbox;
        if (!s->inbox) s->inbox_tail = tail;
        s->inbox = list;
    }
    s->wake = s->wake || wake;
    pthread_mutex_unlock(&s->mu);
    nanosleep(&(struct timespec){0, 10000000}, NULL);
}

/* Queue this loop's records and figures for the delivery thread: in place
 * of the queued batch when it has been taken, else after it (the delivery
 * thread is behind: a slow batch, or no core for it at the moment). The
 * scheduler waits only when LF_DELIVER_BEHIND loops are queued, or when the
 * queue cannot grow. */
#define LF_DELIVER_BEHIND 4
static void post_items(lf_sched *s) {
    pthread_mutex_lock(&s->dmu);
    for (;;) {
        if (s->dq_loops == 0) { /* the delivery thread took the last batch */
            lf_delivery *spare = s->dq;
            int spare_cap = s->dq_cap;
            s->dq = s->items;
            s->dq_cap = s->cap_items;
            s->dq_n = s->n_items;
            s->items = spare;
            s->cap_items = spare_cap;
            s->dq_step = s->step;
            s->dq_loops = 1;
            break;
        }
        if (s->dq_loops < LF_DELIVER_BEHIND && dq_append(s)) {
            double host_s = s->dq_step.host_s + s->step.host_s;
            int stepped = s->dq_step.stepped + s->step.stepped;
            s->dq_step = s->step; /* the latest gauges */
            s->dq_step.host_s = host_s;
            s->dq_step.stepped = stepped;
            s->dq_loops++;
            break;
        }
        pthread_cond_wait(&s->dtaken, &s->dmu);
    }
    s->n_items = 0;
    pthread_cond_signal(&s->dcv);
    pthread_mutex_unlock(&s->dmu);
    memset(&s->step, 0, sizeof s->step);
}

/* The live job of an engine request: a binary search, since live[] is in
 * the order of the engine's ids (they grow with each submission; removals
 * keep the order). One lookup per token: a linear scan would cost each step
 * O(live^2), e.g. a million comparisons at 1,458 streams. */
static lf_job *find_live(lf_sched *s, int engine_id) {
    int lo = 0, hi = s->n_live;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->live[mid]->engine_id < engine_id) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n_live && s->live[lo]->engine_id == engine_id ? s->live[lo] : NULL;
}

/* Token callback of lf_engine_step: record the token for the delivery
 * thread (no decoding, no lock). */
static void on_token(void *user, const lf_generation *g, int tok) {
    lf_sched *s = user;
    double now = lf_now_ms(); /* the host time counts the lookup too */
    lf_job *j = find_live(s, g->id);
    if (j) {
        bool eos = g->done && g->finish_reason && !strcmp(g->finish_reason, "eos");
        items_push(s, j, tok, (g->n_tokens == 1 ? LF_DELIVER_FIRST : 0) | (eos ? LF_DELIVER_EOS : 0), now);
    }
    s->step.host_s += (lf_now_ms() - now) / 1e3;
}

static const char *openai_finish(const char *engine_reason) {
    if (!engine_reason) return "error";
    if (!strcmp(engine_reason, "eos") || !strcmp(engine_reason, "stop")) return "stop";
    return engine_reason; /* "length", "cancelled", "error" */
}

/* The job is over (it has left the live list): record its end, release the
 * engine's request, and queue the end after its tokens; the delivery thread
 * finishes it and drops the scheduler's reference. */
static void job_finish(lf_sched *s, lf_job *j, const char *finish, const char *error) {
    const lf_generation *g = j->engine_id >= 0 ? lf_engine_result(s->engine, j->engine_id) : NULL;
    lf_job_end *e = &j->end;
    e->finish = finish;
    snprintf(e->error, sizeof e->error, "%s", error ? error : "");
    if (g) {
        e->has_result = true;
        e->kv_tokens_peak = g->kv_tokens_peak;
        e->kv_bytes = g->kv_bytes;
        e->kv_slots = g->kv_slots;
        e->prompt = g->n_prompt;
        e->generated = g->n_tokens;
        e->evicted = (long)g->n_prompt + g->n_tokens - 1 - (long)g->kv_tokens_peak; /* written - held */
        lf_engine_release(s->engine, j->engine_id, NULL);
    }
    items_push(s, j, -1, LF_DELIVER_FINISH, 0);
    pthread_mutex_lock(&s->mu);
    s->inflight--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* New jobs from the inbox go to the engine. */
static void take_inbox(lf_sched *s, lf_job *list) {
    while (list) {
        lf_job *j = list;
        list = j->next;
        lf_error err = {{0}};
        if (s->n_live == s->cap_live) {
            int nc = s->cap_live ? 2 * s->cap_live : 64;
            lf_job **nl = realloc(s->live, (size_t)nc * sizeof *nl);
            if (!nl) {
                job_finish(s, j, "error", "server out of memory");
                continue;
            }
            s->live = nl;
            s->cap_live = nc;
        }
        j->detok = lf_detok_stream_new(s->tok, false);
        j->engine_id = j->detok ? lf_engine_submit_params(s->engine, &j->params, &err) : -1;
        if (j->engine_id < 0) {
            job_finish(s, j, "error", j->detok ? err.msg : "server out of memory");
            continue;
        }
        s->live[s->n_live++] = j;
    }
}

/* Cancel what the HTTP side gave up on (or everything, at the shutdown
 * deadline), and stop what the delivery thread found a stop string in. */
static void cancel_jobs(lf_sched *s, bool all) {
    int kept = 0;
    for (int i = 0; i < s->n_live; i++) {
        lf_job *j = s->live[i];
        pthread_mutex_lock(&j->mu);
        bool cancel = j->cancel, stop = j->stop_hit;
        pthread_mutex_unlock(&j->mu);
        if (cancel || all || stop) {
            lf_engine_cancel(s->engine, j->engine_id, NULL);
            job_finish(s, j, stop ? "stop" : "cancelled",
                       stop ? NULL : all ? "server shutting down" : "client disconnected");
        } else {
            s->live[kept++] = j; /* in order (find_live) */
        }
    }
    s->n_live = kept;
}

/* Jobs the engine finished; a failed one gets its own message (g->note),
 * else the step's. */
static void finish_done_jobs(lf_sched *s, const char *step_error) {
    int kept = 0;
    for (int i = 0; i < s->n_live; i++) {
        lf_job *j = s->live[i];
        const lf_generation *g = lf_engine_result(s->engine, j->engine_id);
        if (g && g->done) {
            const char *f = openai_finish(g->finish_reason);
            job_finish(s, j, f, !strcmp(f, "error") ? (g->note ? g->note : step_error) : NULL);
        } else {
            s->live[kept++] = j; /* in order (find_live) */
        }
    }
    s->n_live = kept;
}

/* The gauges, for the delivery thread to publish with the loop's records. */
static void fill_gauges(lf_sched *s) {
    lf_metrics_step *st = &s->step;
    lf_engine_pending(s->engine, &st->queued, &st->running);
    st->slots_in_use = st->slots_allocated = 0;
    st->kv_bytes = 0;
    for (int i = 0; i < s->n_live; i++) {
        const lf_generation *g = lf_engine_result(s->engine, s->live[i]->engine_id);
        if (!g || g->kv_slots == 0) continue;
        st->slots_in_use += (long)g->kv_tokens_peak;
        st->slots_allocated += g->kv_slots;
        st->kv_bytes += g->kv_bytes;
    }
    lf_engine_stats es;
    lf_engine_stats_get(s->engine, &es);
    st->kv_buffers_allocated = es.kv_buffers_allocated;
    st->kv_buffers_reused = es.kv_buffers_reused;
}

static void *sched_main(void *arg) {
    lf_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->quit && !s->inbox && !s->wake && !s->abort_all && s->n_live == 0)
            pthread_cond_wait(&s->cv, &s->mu);
        lf_job *list = s->inbox;
        s->inbox = s->inbox_tail = NULL;
        bool all = s->abort_all, quit = s->quit, wake = s->wake;
        s->wake = false;
        pthread_mutex_unlock(&s->mu);

        double t0 = lf_now_ms();
        if (!reserve_loop(s, list)) {
            inbox_put_back(s, list, wake);
            continue;
        }
        take_inbox(s, list);
        if (wake || all) cancel_jobs(s, all);
        if (quit && s->n_live == 0) break;
        lf_error err = {{0}};
        int rc = 0;
        double t1 = lf_now_ms(), t2 = t1;
        if (lf_engine_pending(s->engine, NULL, NULL) > 0) {
            rc = lf_engine_step(s->engine, on_token, s, &err);
            s->step.stepped = 1;
            t2 = lf_now_ms();
        }
        finish_done_jobs(s, rc ? err.msg : NULL);
        fill_gauges(s);
        double t3 = lf_now_ms();
        s->step.host_s += (t1 - t0 + t3 - t2) / 1e3;
        post_items(s);
        /* its time (a wait, when the delivery thread is behind) goes with the next loop's figures */
        s->step.host_s += (lf_now_ms() - t3) / 1e3;
    }
    fill_gauges(s);
    post_items(s);
    return NULL;
}

int lf_sched_start(lf_sched *s, lf_engine *engine, const lf_model *m, const lf_tokenizer *tok, lf_metrics *metrics,
                   int max_inflight, lf_error *err) {
    memset(s, 0, sizeof *s);
    s->engine = engine;
    s->model = m;
    s->tok = tok;
    s->metrics = metrics;
    s->max_inflight = max_inflight;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->dmu, NULL);
    pthread_cond_init(&s->dcv, NULL);
    pthread_cond_init(&s->dtaken, NULL);
    if (pthread_create(&s->deliverer, NULL, deliverer_main, s))
        return lf_fail(err, "serve: cannot start the delivery thread");
    s->deliverer_started = true;
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        deliverer_stop(s);
        return lf_fail(err, "serve: cannot start the scheduler thread");
    }
    s->started = true;
    return 0;
}

int lf_sched_submit(lf_sched *s, lf_job *j, lf_api_error *e) {
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        return lf_api_fail(e, 503, NULL, "shutting_down", "the server is shutting down");
    }
    if (s->inflight >= s->max_inflight) {
        int n = s->inflight;
        pthread_mutex_unlock(&s->mu);
        return lf_api_fail(e, 429, NULL, "queue_full",
                           "the server is busy: %d requests running or queued (--max-seqs + --max-queue); retry later",
                           n);
    }
    s->inflight++;
    j->next = NULL;
    if (s->inbox_tail) s->inbox_tail->next = j;
    else s->inbox = j;
    s->inbox_tail = j;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int lf_sched_inflight(lf_sched *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->inflight;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void lf_sched_shutdown(lf_sched *s, double timeout_s) {
    if (!s->started) return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    int rc = 0;
    while (s->inflight > 0 && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&s->cv, &s->mu, &until);
    s->abort_all = s->inflight > 0;
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    deliverer_stop(s); /* after the scheduler: it delivers what the last loops queued */
    s->started = false;
    free(s->live);
    s->live = NULL;
    /* the mutex stays: late requests on open connections still get their 503 */
}
