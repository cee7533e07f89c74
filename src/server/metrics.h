/* The server's counters, gauges and latency histograms, rendered as
 * Prometheus text for GET /metrics. Thread-safe (one mutex). */
#ifndef LF_SERVER_METRICS_H
#define LF_SERVER_METRICS_H

#include <pthread.h>
#include <stddef.h>

#define LF_METRICS_BUCKETS 16
#define LF_FINISH_REASONS 4 /* stop, length, cancelled, error */

typedef struct lf_histogram {
    unsigned long counts[LF_METRICS_BUCKETS + 1]; /* last: +Inf */
    double sum;
    unsigned long n;
} lf_histogram;

typedef struct lf_metrics {
    pthread_mutex_t mu;
    unsigned long requests[6];      /* by status class: 200, 400, 401, 404/413, 429/503, 500 */
    unsigned long prompt_tokens, generation_tokens, evictions;
    unsigned long finished[LF_FINISH_REASONS]; /* engine requests by how they ended (lf_finish_labels) */
    int running, queued;            /* sequences */
    int max_sequences;              /* that can run at once (0 while loading) */
    long kv_slots_in_use, kv_slots_allocated; /* per layer, summed over running sequences */
    size_t kv_bytes_allocated;
    long kv_buffers_allocated, kv_buffers_reused; /* the engine's (lf_engine_stats) */
    lf_histogram ttft, itl;         /* seconds */
    unsigned long sched_steps;      /* engine steps the scheduler ran */
    double sched_host_s;            /* scheduler time outside the model's forward passes */
    double delivery_host_s;         /* the delivery thread's busy time */
} lf_metrics;

/* The scheduler thread's figures of one loop: its host time, whether it
 * stepped, and the gauges. */
typedef struct lf_metrics_step {
    double host_s;
    int stepped;                    /* 1 when an engine step ran */
    int running, queued;
    long slots_in_use, slots_allocated;
    size_t kv_bytes;
    long kv_buffers_allocated, kv_buffers_reused;
} lf_metrics_step;

/* The delivery thread's figures since it last published: the latencies of
 * the tokens it delivered, the requests it finished, its busy time. */
typedef struct lf_metrics_delivery {
    lf_histogram ttft, itl;
    unsigned long prompt_tokens, generation_tokens, evictions;
    unsigned long finished[LF_FINISH_REASONS];
    double host_s;
} lf_metrics_delivery;

void lf_metrics_init(lf_metrics *m);
void lf_metrics_destroy(lf_metrics *m);
void lf_metrics_request(lf_metrics *m, int status);
/* Count v (seconds) in h. */
void lf_histogram_observe(lf_histogram *h, double v);
/* A request the engine ran is over (into d); finish is "stop", "length",
 * "cancelled" or "error" (anything else counts as "error"). */
void lf_metrics_delivery_finished(lf_metrics_delivery *d, long prompt, long generated, long evicted,
                                  const char *finish);
/* One lock: add d's latencies, counts and host time; when st is given, add
 * its host time and step and set its gauges. */
void lf_metrics_publish(lf_metrics *m, const lf_metrics_step *st, const lf_metrics_delivery *d);
/* Sequences that can run at once (--max-seqs, or the GPU pool's entries). */
void lf_metrics_set_max_sequences(lf_metrics *m, int n);
/* Prometheus text exposition; malloc'd. */
char *lf_metrics_render(lf_metrics *m);

#endif
