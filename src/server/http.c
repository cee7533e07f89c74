/* libmicrohttpd glue: routes, authentication, body upload with a size
 * limit, the completion endpoints (whole answers and SSE streams), and the
 * detection of clients that went away (their request is cancelled). One
 * thread per connection: a handler may block while its job runs. */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/error.h"
#include "core/timer.h"
#include "server/response.h"
#include "server/server.h"
#include "server/think.h"

/* ---- small helpers ------------------------------------------------------- */

typedef struct conn_state {
    char *body;
    size_t len, cap;
    bool too_big;
} conn_state;

/* Queue a response with body (freed here); not counted in /metrics. */
static enum MHD_Result reply_raw(struct MHD_Connection *c, int status, const char *type, char *body) {
    if (!body) {
        body = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                      "\"code\":null}}");
        status = 500;
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 429 || status == 503) MHD_add_response_header(r, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* An API response, counted in longflow_requests_total (health checks and
 * scrapes of /metrics are not). */
static enum MHD_Result reply(struct MHD_Connection *c, lf_server *s, int status, const char *type, char *body) {
    lf_metrics_request(&s->metrics, body ? status : 500);
    return reply_raw(c, status, type, body);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, lf_server *s, const lf_api_error *e) {
    return reply(c, s, e->status, "application/json", lf_resp_error(e));
}

/* Has the client closed its end? (a read-side hang-up, or an error) */
static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait (job->mu held) until the job has new final text or is done, or the
 * client is gone (returns false). */
static bool wait_job(lf_job *j, size_t seen, struct MHD_Connection *c) {
    while (!j->done && j->safe <= seen) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += 50 * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&j->cv, &j->mu, &t);
        if (!j->done && j->safe <= seen && client_gone(c)) return false;
    }
    return true;
}

static bool authorized(const lf_server *s, struct MHD_Connection *c) {
    if (!s->opt.api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    const char *got = h + 7, *want = s->opt.api_key;
    size_t gl = strlen(got), wl = strlen(want);
    /* constant time in the key: every byte of the expected key is compared */
    unsigned char diff = (unsigned char)(gl != wl);
    for (size_t i = 0; i < wl; i++) diff |= (unsigned char)(want[i] ^ (i < gl ? got[i] : 0));
    return diff == 0;
}

static void fill_ctx(lf_server *s, bool chat, lf_resp_ctx *ctx) {
    snprintf(ctx->id, sizeof ctx->id, "%s-%ld", chat ? "chatcmpl" : "cmpl", atomic_fetch_add(&s->next_id, 1));
    ctx->model = s->model_name;
    ctx->created = (long)time(NULL);
    ctx->chat = chat;
}

static void fill_usage(const lf_job *j, lf_usage *u) {
    memset(u, 0, sizeof *u);
    u->prompt_tokens = j->params.n_prompt;
    u->completion_tokens = j->n_tokens;
    u->policy = lf_policy_name(j->params.policy);
    u->budget = j->params.policy == LF_POLICY_FULL ? 0 : j->params.budget;
    u->peak_slots = (long)j->kv_tokens_peak;
    u->slots = j->kv_slots;
    u->bytes = j->kv_bytes;
}

/* A job that ended without an answer: its error. */
static void job_error(const lf_job *j, lf_api_error *e) {
    if (!strcmp(j->finish, "cancelled"))
        lf_api_fail(e, 503, NULL, "shutting_down", "request cancelled: %s", j->error[0] ? j->error : "cancelled");
    else lf_api_fail(e, 500, NULL, "engine_error", "generation failed: %s", j->error[0] ? j->error : "unknown");
}

/* ---- streaming ------------------------------------------------------------ */

typedef struct stream_state {
    lf_server *srv;
    lf_job *job;
    struct MHD_Connection *conn;
    lf_resp_ctx ctx;
    bool chat, include_usage, role_sent, finished;
    lf_think_split think;
    size_t emitted;          /* bytes of job->text turned into chunks */
    char *out;               /* SSE bytes not yet handed to MHD */
    size_t out_len, out_pos, out_cap;
    /* the current chunk's text, split into reasoning and content */
    char *part[2];
    size_t part_len[2], part_cap[2];
} stream_state;

static void out_put(stream_state *st, char *s) {
    if (!s) return;
    size_t n = strlen(s);
    if (st->out_len + n > st->out_cap) {
        size_t nc = (st->out_len + n) * 2;
        char *no = realloc(st->out, nc);
        if (!no) {
            free(s);
            return;
        }
        st->out = no;
        st->out_cap = nc;
    }
    memcpy(st->out + st->out_len, s, n);
    st->out_len += n;
    free(s);
}

static void think_emit(void *user, bool reasoning, const char *text, size_t len) {
    stream_state *st = user;
    int k = reasoning ? 0 : 1;
    if (st->part_len[k] + len > st->part_cap[k]) {
        size_t nc = (st->part_len[k] + len) * 2;
        char *np = realloc(st->part[k], nc);
        if (!np) return;
        st->part[k] = np;
        st->part_cap[k] = nc;
    }
    memcpy(st->part[k] + st->part_len[k], text, len);
    st->part_len[k] += len;
}

/* Turn new text (and, when done, the end) into SSE chunks in st->out. */
static void produce(stream_state *st, const char *text, size_t n, bool done) {
    lf_job *j = st->job;
    st->part_len[0] = st->part_len[1] = 0;
    if (st->chat) lf_think_feed(&st->think, text, n, done, think_emit, st);
    else think_emit(st, false, text, n);
    if (st->part_len[0] || st->part_len[1] || !st->role_sent)
        out_put(st, lf_resp_chunk(&st->ctx, st->chat && !st->role_sent, st->part[0], st->part_len[0], st->part[1],
                                  st->part_len[1], NULL));
    st->role_sent = true;
    if (!done) return;
    if (!strcmp(j->finish, "stop") || !strcmp(j->finish, "length")) {
        out_put(st, lf_resp_chunk(&st->ctx, false, NULL, 0, NULL, 0, j->finish));
        if (st->include_usage) {
            lf_usage u;
            fill_usage(j, &u);
            out_put(st, lf_resp_usage_chunk(&st->ctx, &u));
        }
    } else {
        lf_api_error e;
        job_error(j, &e);
        out_put(st, lf_resp_error_event(&e));
    }
    out_put(st, strdup("data: [DONE]\n\n"));
    st->finished = true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    stream_state *st = cls;
    (void)pos;
    while (st->out_pos == st->out_len) {
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out_len = st->out_pos = 0;
        lf_job *j = st->job;
        pthread_mutex_lock(&j->mu);
        if (!wait_job(j, st->emitted, st->conn)) {
            pthread_mutex_unlock(&j->mu);
            lf_job_cancel(&st->srv->sched, j);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        size_t upto = j->done ? j->len : j->safe;
        size_t n = upto > st->emitted ? upto - st->emitted : 0;
        char *text = malloc(n + 1);
        if (text) memcpy(text, j->text + st->emitted, n);
        bool done = j->done;
        pthread_mutex_unlock(&j->mu);
        if (!text) return MHD_CONTENT_READER_END_WITH_ERROR;
        st->emitted += n;
        produce(st, text, n, done);
        free(text);
    }
    size_t k = st->out_len - st->out_pos < max ? st->out_len - st->out_pos : max;
    memcpy(buf, st->out + st->out_pos, k);
    st->out_pos += k;
    return (ssize_t)k;
}

static void stream_free(void *cls) {
    stream_state *st = cls;
    lf_job_cancel(&st->srv->sched, st->job); /* nothing when it is done */
    lf_job_unref(st->job);
    atomic_fetch_sub(&st->srv->http_jobs, 1);
    free(st->out);
    free(st->part[0]);
    free(st->part[1]);
    free(st);
}

static enum MHD_Result start_stream(struct MHD_Connection *c, lf_server *s, lf_job *j, const lf_api_request *r,
                                    bool think_open) {
    stream_state *st = calloc(1, sizeof *st);
    if (!st) {
        lf_job_cancel(&s->sched, j);
        lf_job_unref(j);
        atomic_fetch_sub(&s->http_jobs, 1);
        return MHD_NO;
    }
    st->srv = s;
    st->job = j;
    st->conn = c;
    st->chat = r->chat;
    st->include_usage = r->include_usage;
    fill_ctx(s, r->chat, &st->ctx);
    lf_think_init(&st->think, think_open);
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    lf_metrics_request(&s->metrics, 200);
    return ret;
}

/* ---- whole answers ------------------------------------------------------- */

static enum MHD_Result answer(struct MHD_Connection *c, lf_server *s, lf_job *j, const lf_api_request *r,
                              bool think_open) {
    pthread_mutex_lock(&j->mu);
    bool ok = wait_job(j, (size_t)-1, c);
    pthread_mutex_unlock(&j->mu);
    if (!ok) { /* the client left: nobody to answer */
        lf_job_cancel(&s->sched, j);
        lf_job_unref(j);
        atomic_fetch_sub(&s->http_jobs, 1);
        return MHD_NO;
    }
    enum MHD_Result ret;
    if (!strcmp(j->finish, "stop") || !strcmp(j->finish, "length")) {
        char *reasoning = NULL, *content = NULL;
        if (r->chat) lf_chat_split_think_ex(j->text, think_open, &reasoning, &content);
        lf_resp_ctx ctx;
        fill_ctx(s, r->chat, &ctx);
        lf_usage u;
        fill_usage(j, &u);
        char *body = lf_resp_complete(&ctx, reasoning && reasoning[0] ? reasoning : NULL,
                                      content ? content : j->text, j->finish, &u,
                                      r->return_token_ids ? j->tokens : NULL, j->n_tokens);
        free(reasoning);
        free(content);
        ret = reply(c, s, 200, "application/json", body);
    } else {
        lf_api_error e;
        job_error(j, &e);
        ret = reply_error(c, s, &e);
    }
    lf_job_unref(j);
    atomic_fetch_sub(&s->http_jobs, 1);
    return ret;
}

static enum MHD_Result completions(struct MHD_Connection *c, lf_server *s, conn_state *cs, bool chat) {
    lf_api_error e = {0};
    if (cs->too_big) {
        lf_api_fail(&e, 413, NULL, "body_too_large", "the request body is larger than %zu bytes", s->opt.max_body);
        return reply_error(c, s, &e);
    }
    lf_api_request r;
    if (lf_api_parse(cs->body ? cs->body : "", cs->len, chat, &s->defaults, &r, &e)) return reply_error(c, s, &e);
    lf_request_params p;
    int *prompt = NULL;
    bool think_open = false;
    enum MHD_Result ret;
    if (lf_server_prepare(s, &r, &p, &prompt, &think_open, &e)) {
        ret = reply_error(c, s, &e);
        goto out;
    }
    lf_job *j = lf_job_new(&p, r.stop, r.n_stop);
    if (!j) {
        lf_api_fail(&e, 500, NULL, NULL, "out of memory");
        ret = reply_error(c, s, &e);
        goto out;
    }
    if (lf_sched_submit(&s->sched, j, &e)) {
        j->refs = 1; /* the scheduler never took it */
        lf_job_unref(j);
        ret = reply_error(c, s, &e);
        goto out;
    }
    atomic_fetch_add(&s->http_jobs, 1);
    ret = r.stream ? start_stream(c, s, j, &r, think_open) : answer(c, s, j, &r, think_open);
out:
    free(prompt);
    lf_api_request_free(&r);
    return ret;
}

/* ---- routes -------------------------------------------------------------- */

static enum MHD_Result models(struct MHD_Connection *c, lf_server *s) {
    char *body = NULL;
    if (asprintf(&body,
                 "{\"object\":\"list\",\"data\":[{\"id\":\"%s\",\"object\":\"model\",\"created\":0,"
                 "\"owned_by\":\"longflow\",\"max_model_len\":%d}]}",
                 s->model_name, s->context) < 0)
        body = NULL;
    return reply(c, s, 200, "application/json", body);
}

static enum MHD_Result route(lf_server *s, struct MHD_Connection *c, const char *url, const char *method,
                             conn_state *cs) {
    lf_api_error e = {0};
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) goto not_allowed;
        bool ready = atomic_load(&s->ready);
        return reply_raw(c, ready ? 200 : 503, "application/json",
                         strdup(ready ? "{\"status\":\"ok\"}" : "{\"status\":\"loading\"}"));
    }
    if (!authorized(s, c)) {
        lf_api_fail(&e, 401, NULL, "invalid_api_key", "missing or wrong API key (Authorization: Bearer KEY)");
        return reply_error(c, s, &e);
    }
    bool chat = !strcmp(url, "/v1/chat/completions"), cmpl = !strcmp(url, "/v1/completions");
    if (!strcmp(url, "/metrics") && get)
        return reply_raw(c, 200, "text/plain; version=0.0.4", lf_metrics_render(&s->metrics));
    if (!atomic_load(&s->ready)) {
        lf_api_fail(&e, 503, NULL, "loading", "the model is still loading");
        return reply_error(c, s, &e);
    }
    if (!strcmp(url, "/v1/models") && get) return models(c, s);
    if ((chat || cmpl) && post) return completions(c, s, cs, chat);
    if (chat || cmpl || !strcmp(url, "/v1/models") || !strcmp(url, "/metrics")) goto not_allowed;
    lf_api_fail(&e, 404, NULL, "not_found", "no endpoint %.100s %.200s", method, url);
    return reply_error(c, s, &e);
not_allowed:
    lf_api_fail(&e, 405, NULL, "method_not_allowed", "%.100s is not allowed on %.200s", method, url);
    return reply_error(c, s, &e);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *data, size_t *data_size, void **con_cls) {
    lf_server *s = cls;
    (void)version;
    conn_state *cs = *con_cls;
    if (!cs) { /* first call: headers only */
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        return MHD_YES;
    }
    if (*data_size > 0) { /* body upload, bounded */
        if (!cs->too_big && cs->len + *data_size > s->opt.max_body) {
            cs->too_big = true;
            free(cs->body);
            cs->body = NULL;
            cs->len = 0;
        }
        if (!cs->too_big) {
            if (cs->len + *data_size + 1 > cs->cap) {
                size_t nc = (cs->len + *data_size + 1) * 2;
                char *nb = realloc(cs->body, nc);
                if (!nb) return MHD_NO;
                cs->body = nb;
                cs->cap = nc;
            }
            memcpy(cs->body + cs->len, data, *data_size);
            cs->len += *data_size;
            cs->body[cs->len] = 0;
        }
        *data_size = 0;
        return MHD_YES;
    }
    return route(s, c, url, method, cs);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_state *cs = *con_cls;
    if (!cs) return;
    free(cs->body);
    free(cs);
    *con_cls = NULL;
}

/* ---- the daemon ---------------------------------------------------------- */

/* libmicrohttpd's own messages, at most one every 10 s (with the count of
 * those left out). Every client that hangs up mid-stream makes one ("Failed
 * to send the chunked response body ..."): written each time, they flood the
 * log, and once stderr is a pipe nobody drains, the connection threads block
 * in write(2) and never get to cancel their requests. */
static void http_log(void *cls, const char *fmt, va_list ap) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static double last_ms = -1e9;
    static long left_out = 0;
    (void)cls;
    pthread_mutex_lock(&mu);
    double now = lf_now_ms();
    if (now - last_ms < 10000.0) {
        left_out++;
        pthread_mutex_unlock(&mu);
        return;
    }
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strcspn(msg, "\n");
    fprintf(stderr, "longflow serve: http: %.*s", (int)n, msg);
    if (left_out > 0) fprintf(stderr, " (and %ld more messages in the last %.0f s)", left_out, (now - last_ms) / 1e3);
    fputc('\n', stderr);
    last_ms = now;
    left_out = 0;
    pthread_mutex_unlock(&mu);
}

/* Connections served at once: one file descriptor each, so the open-file
 * limit (its soft limit raised to the hard one first) less a reserve for
 * the model's files, the listening socket and the log; at least 16, at
 * most 65,536. The descriptors are watched with poll(2), which has no
 * FD_SETSIZE (1,024) ceiling as select(2) has. */
static unsigned connection_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return 1024u;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl)) getrlimit(RLIMIT_NOFILE, &rl);
    }
    const rlim_t reserve = 64, most = 65536;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > most + reserve) return (unsigned)most;
    return rl.rlim_cur > reserve + 16 ? (unsigned)(rl.rlim_cur - reserve) : 16u;
}

int lf_http_start(lf_server *s, lf_error *err) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", s->opt.port);
    int rc = getaddrinfo(s->opt.host, port, &hints, &ai);
    if (rc || !ai) return lf_fail(err, "--host %s: %s", s->opt.host, gai_strerror(rc));
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, (uint16_t)s->opt.port, NULL, NULL, handler, s, MHD_OPTION_EXTERNAL_LOGGER, http_log,
                              s, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                              MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)s->opt.timeout_s, MHD_OPTION_CONNECTION_LIMIT, connection_limit(), MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) return lf_fail(err, "cannot listen on %s:%d (in use, or not an address of this machine)", s->opt.host,
                                s->opt.port);
    return 0;
}

void lf_http_quiesce(lf_server *s) {
    if (!s->mhd) return;
    MHD_socket fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

void lf_http_stop(lf_server *s) {
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
}
