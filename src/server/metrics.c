#include "server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* upper bounds (seconds) shared by the TTFT and inter-token histograms */
static const double bounds[LF_METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                                  0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0,  60.0};
static const char *const status_labels[6] = {"200", "400", "401", "404_413", "429_503", "500"};
static const char *const finish_labels[LF_FINISH_REASONS] = {"stop", "length", "cancelled", "error"};

void lf_metrics_init(lf_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
}

void lf_metrics_destroy(lf_metrics *m) { pthread_mutex_destroy(&m->mu); }

static int status_class(int status) {
    switch (status) {
    case 200: return 0;
    case 401: return 2;
    case 404:
    case 413: return 3;
    case 429:
    case 503: return 4;
    default: return status >= 500 ? 5 : 1;
    }
}

void lf_metrics_request(lf_metrics *m, int status) {
    pthread_mutex_lock(&m->mu);
    m->requests[status_class(status)]++;
    pthread_mutex_unlock(&m->mu);
}

static int finish_class(const char *finish) {
    for (int i = 0; i < LF_FINISH_REASONS - 1; i++)
        if (finish && !strcmp(finish, finish_labels[i])) return i;
    return LF_FINISH_REASONS - 1;
}

void lf_metrics_delivery_finished(lf_metrics_delivery *d, long prompt, long generated, long evicted,
                                  const char *finish) {
    d->prompt_tokens += (unsigned long)prompt;
    d->generation_tokens += (unsigned long)generated;
    d->evictions += (unsigned long)(evicted > 0 ? evicted : 0);
    d->finished[finish_class(finish)]++;
}

void lf_histogram_observe(lf_histogram *h, double v) {
    int b = 0;
    while (b < LF_METRICS_BUCKETS && v > bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

static void histogram_add(lf_histogram *to, const lf_histogram *h) {
    for (int i = 0; i <= LF_METRICS_BUCKETS; i++) to->counts[i] += h->counts[i];
    to->sum += h->sum;
    to->n += h->n;
}

void lf_metrics_set_max_sequences(lf_metrics *m, int n) {
    pthread_mutex_lock(&m->mu);
    m->max_sequences = n;
    pthread_mutex_unlock(&m->mu);
}

void lf_metrics_publish(lf_metrics *m, const lf_metrics_step *st, const lf_metrics_delivery *d) {
    pthread_mutex_lock(&m->mu);
    histogram_add(&m->ttft, &d->ttft);
    histogram_add(&m->itl, &d->itl);
    m->prompt_tokens += d->prompt_tokens;
    m->generation_tokens += d->generation_tokens;
    m->evictions += d->evictions;
    for (int i = 0; i < LF_FINISH_REASONS; i++) m->finished[i] += d->finished[i];
    m->delivery_host_s += d->host_s;
    if (st) {
        m->sched_steps += (unsigned long)st->stepped;
        m->sched_host_s += st->host_s;
        m->running = st->running;
        m->queued = st->queued;
        m->kv_slots_in_use = st->slots_in_use;
        m->kv_slots_allocated = st->slots_allocated;
        m->kv_bytes_allocated = st->kv_bytes;
        m->kv_buffers_allocated = st->kv_buffers_allocated;
        m->kv_buffers_reused = st->kv_buffers_reused;
    }
    pthread_mutex_unlock(&m->mu);
}

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || !b->s) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = (b->cap + (size_t)k + 1) * 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            free(b->s);
            b->s = NULL;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

static void histogram(sbuf *b, const char *name, const char *help, const lf_histogram *h) {
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long cum = 0;
    for (int i = 0; i < LF_METRICS_BUCKETS; i++) {
        cum += h->counts[i];
        put(b, "%s_bucket{le=\"%g\"} %lu\n", name, bounds[i], cum);
    }
    cum += h->counts[LF_METRICS_BUCKETS];
    put(b, "%s_bucket{le=\"+Inf\"} %lu\n%s_sum %.6f\n%s_count %lu\n", name, cum, name, h->sum, name, h->n);
}

static void scalar(sbuf *b, const char *name, const char *type, const char *help, double v) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %.0f\n", name, help, name, type, name, v);
}

char *lf_metrics_render(lf_metrics *m) {
    sbuf b = {malloc(4096), 0, 4096};
    if (!b.s) return NULL;
    b.s[0] = 0;
    pthread_mutex_lock(&m->mu);
    put(&b, "# HELP longflow_requests_total HTTP requests answered, by status\n"
            "# TYPE longflow_requests_total counter\n");
    for (int i = 0; i < 6; i++)
        put(&b, "longflow_requests_total{status=\"%s\"} %lu\n", status_labels[i], m->requests[i]);
    scalar(&b, "longflow_prompt_tokens_total", "counter", "prompt tokens of finished requests",
           (double)m->prompt_tokens);
    scalar(&b, "longflow_generation_tokens_total", "counter", "generated tokens of finished requests",
           (double)m->generation_tokens);
    scalar(&b, "longflow_kv_evictions_total", "counter",
           "tokens the KV policies evicted (per layer, finished requests)", (double)m->evictions);
    put(&b, "# HELP longflow_requests_finished_total requests the engine ran, by how they ended\n"
            "# TYPE longflow_requests_finished_total counter\n");
    for (int i = 0; i < LF_FINISH_REASONS; i++)
        put(&b, "longflow_requests_finished_total{reason=\"%s\"} %lu\n", finish_labels[i], m->finished[i]);
    scalar(&b, "longflow_running_sequences", "gauge", "sequences generating now", m->running);
    scalar(&b, "longflow_queued_sequences", "gauge", "requests waiting for a place", m->queued);
    scalar(&b, "longflow_max_sequences", "gauge", "sequences that can run at once (0 while loading)",
           m->max_sequences);
    scalar(&b, "longflow_kv_slots_in_use", "gauge", "KV slots per layer holding a token, all running sequences",
           (double)m->kv_slots_in_use);
    scalar(&b, "longflow_kv_slots_allocated", "gauge", "KV slots per layer allocated, all running sequences",
           (double)m->kv_slots_allocated);
    scalar(&b, "longflow_kv_bytes_allocated", "gauge", "K and V bytes allocated, all running sequences",
           (double)m->kv_bytes_allocated);
    scalar(&b, "longflow_kv_buffers_allocated_total", "counter", "KV cache buffers allocated (CPU)",
           (double)m->kv_buffers_allocated);
    scalar(&b, "longflow_kv_buffers_reused_total", "counter",
           "KV cache buffers taken again from finished sequences (CPU)", (double)m->kv_buffers_reused);
    histogram(&b, "longflow_time_to_first_token_seconds", "time from a request's arrival to its first token",
              &m->ttft);
    histogram(&b, "longflow_inter_token_latency_seconds", "time between consecutive tokens of a request",
              &m->itl);
    scalar(&b, "longflow_scheduler_steps_total", "counter", "engine steps the scheduler ran", (double)m->sched_steps);
    put(&b, "# HELP longflow_scheduler_host_seconds_total scheduler time outside the model's forward passes\n"
            "# TYPE longflow_scheduler_host_seconds_total counter\nlongflow_scheduler_host_seconds_total %.6f\n",
        m->sched_host_s);
    put(&b, "# HELP longflow_delivery_host_seconds_total delivery thread time: decoding, stop strings, handing text "
            "to the HTTP threads\n# TYPE longflow_delivery_host_seconds_total counter\n"
            "longflow_delivery_host_seconds_total %.6f\n",
        m->delivery_host_s);
    pthread_mutex_unlock(&m->mu);
    return b.s;
}
