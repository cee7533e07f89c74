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
    long kv_slots_in_use, kv_slots_allocated; /* per layer, summed over running sequences */
    size_t kv_bytes_allocated;
    lf_histogram ttft, itl;         /* seconds */
} lf_metrics;

void lf_metrics_init(lf_metrics *m);
void lf_metrics_destroy(lf_metrics *m);
void lf_metrics_request(lf_metrics *m, int status);
/* A request the engine ran is over; finish is "stop", "length", "cancelled"
 * or "error" (anything else counts as "error"). */
void lf_metrics_tokens(lf_metrics *m, long prompt, long generated, long evicted, const char *finish);
void lf_metrics_latency(lf_metrics *m, double ttft_s, double itl_s); /* < 0: not observed */
void lf_metrics_gauges(lf_metrics *m, int running, int queued, long slots_in_use, long slots_allocated,
                       size_t kv_bytes);
/* Prometheus text exposition; malloc'd. */
char *lf_metrics_render(lf_metrics *m);

#endif
