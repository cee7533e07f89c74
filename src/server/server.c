#include "server/server.h"

#include <signal.h>
#ifdef __GLIBC__
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/gguf_tokenizer.h"
#include "model/model.h"

/* The served model's name: the directory's last component. */
static void model_name(const char *dir, char *out, size_t n) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    size_t k = len - start < n - 1 ? len - start : n - 1;
    memcpy(out, dir + start, k);
    out[k] = 0;
}

/* Load the model, tokenizer and engine; plan the GPU pool. Prints. */
static int load(lf_server *s, const char *dir, const lf_engine_config *ec, lf_model **m, lf_tokenizer **t) {
    lf_error err = {{0}};
    const char *tdir = s->opt.tokenizer_dir ? s->opt.tokenizer_dir : dir;
    int rc = s->opt.random_preset ? lf_model_random(s->opt.random_preset, LF_DTYPE_BF16, 1, m, &err)
                                  : lf_model_load_mode(dir, ec->device == LF_DEVICE_CUDA ? LF_WEIGHTS_BF16 : LF_WEIGHTS_QUANT,
                                                       m, &err);
    if (rc || lf_model_tokenizer_load(tdir, t, &err) ||
        lf_engine_create(*m, ec, &s->engine, &err)) {
        fprintf(stderr, "longflow serve: %s\n", err.msg);
        return -1;
    }
    s->model = *m;
    s->tok = *t;
    s->context = (*m)->cfg.max_position;
    if (ec->device == LF_DEVICE_CUDA) {
        int mp = s->opt.max_prompt < s->context ? s->opt.max_prompt : s->context - 1;
        if (lf_engine_reserve(s->engine, mp, &err)) {
            fprintf(stderr, "longflow serve: %s\n", err.msg);
            return -1;
        }
    }
    s->has_chat = lf_chat_select(*t, s->opt.chat_template, &s->family, &err) == 0;
    if (!s->has_chat) {
        if (s->opt.chat_template) {
            fprintf(stderr, "longflow serve: %s\n", err.msg);
            return -1;
        }
        fprintf(stderr, "longflow serve: no chat template (%s): /v1/chat/completions will refuse requests\n",
                err.msg);
    }
    return 0;
}

/* Wait for SIGINT or SIGTERM (blocked in every thread, taken here). */
static int wait_signal(const sigset_t *set) {
    int sig = 0;
    sigwait(set, &sig);
    return sig;
}

int lf_serve_run(const lf_serve_options *o, const char *model_dir, const lf_engine_config *ec,
                 const lf_api_defaults *defaults) {
    static lf_server srv; /* one per process: its threads may outlive a stack frame's errors */
    lf_server *s = &srv;
    memset(s, 0, sizeof *s);
    s->opt = *o;
    s->defaults = *defaults;
    model_name(o->random_preset ? o->random_preset : model_dir, s->model_name, sizeof s->model_name);
    s->defaults.model_name = s->model_name;
    atomic_init(&s->ready, false);
    atomic_init(&s->next_id, 1);
    atomic_init(&s->http_jobs, 0);
    lf_metrics_init(&s->metrics);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* before any thread starts: they all inherit it */
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    lf_model *m = NULL;
    lf_tokenizer *t = NULL;
    lf_error err = {{0}};
    if (lf_http_start(s, &err)) {
        fprintf(stderr, "longflow serve: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr, "longflow serve: listening on http://%s:%d (loading %s)\n", o->host, o->port, model_dir);
    if (load(s, model_dir, ec, &m, &t)) goto out;
    lf_engine_stats st;
    lf_engine_stats_get(s->engine, &st);
    int max_inflight = st.max_batch + o->max_queue;
    lf_metrics_set_max_sequences(&s->metrics, st.max_batch);
    if (lf_sched_start(&s->sched, s->engine, m, t, &s->metrics, max_inflight, &err)) {
        fprintf(stderr, "longflow serve: %s\n", err.msg);
        goto out;
    }
    atomic_store(&s->ready, true);
    fprintf(stderr, "longflow serve: ready: model %s, %d sequences at once, queue %d, policy %s\n", s->model_name,
            st.max_batch, o->max_queue, lf_policy_name(ec->policy.kind));
    int sig = wait_signal(&set);
    fprintf(stderr, "longflow serve: %s: no new connections; finishing %d requests (up to %d s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", lf_sched_inflight(&s->sched), o->shutdown_timeout_s);
    lf_http_quiesce(s);
    lf_sched_shutdown(&s->sched, o->shutdown_timeout_s);
    /* let the HTTP threads write their last event before the connections close */
    for (int i = 0; i < 200 && atomic_load(&s->http_jobs) > 0; i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
    rc = 0;
out:
    lf_http_stop(s); /* waits for the connection threads */
    if (s->sched.started) lf_sched_shutdown(&s->sched, 0);
    lf_engine_free(s->engine);
    lf_tokenizer_free(t);
    lf_model_free(m);
    lf_metrics_destroy(&s->metrics);
    if (rc == 0) fprintf(stderr, "longflow serve: stopped\n");
    return rc;
}
