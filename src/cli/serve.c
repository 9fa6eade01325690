/* serve.c — `moe serve`: an OpenAI-compatible HTTP server (libmicrohttpd,
 * a thread per connection) over one model. This file owns the options, the
 * server loop, routing and the HTTP responses; requests and completions are
 * src/serve/ (docs/SERVE.md). One request uses the model at a time: the
 * others wait in a queue. SIGINT/SIGTERM stop it: waiting requests get 503,
 * a running one ends early, and the command returns 0. Built without
 * libmicrohttpd (MOE_NO_HTTP, set by the Makefile when pkg-config does not
 * find it), the command only says so. */
#include <stdio.h>

#include "cli/cli.h"

#ifdef MOE_NO_HTTP
int cmd_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "moe serve: this moe was built without libmicrohttpd: install it (apt-get install "
                    "libmicrohttpd-dev, or scripts/install-deps.sh) and rebuild (make clean; make)\n");
    return 1;
}
#else
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "moe/model/model.h"
#include "moe/serve/serve.h"
#include "moe/data/tokenizer.h"

#define MAX_BODY (1u << 20)      /* bytes of a request body; more gets 413 */
#define MAX_CONNECTIONS 16       /* open at once; more are refused by the library */
#define IDLE_TIMEOUT_S 60        /* an idle connection is closed after this */

static void help(FILE *f) {
    fprintf(f,
        "usage: moe serve --model DIR [--host 127.0.0.1] [--port 8080] [--tokenizer FILE]\n"
        "                 [--precision auto|fp32|bf16]\n\n"
        "Serves the model over HTTP with OpenAI's API: GET /v1/models, POST /v1/completions\n"
        "(prompt log-probs with echo, logprobs and max_tokens 0, as lm-evaluation-harness's\n"
        "local-completions asks) and POST /v1/chat/completions (the messages' contents joined,\n"
        "each followed by a newline); \"stream\": true sends server-sent events. Requests\n"
        "queue: one runs at a time. Ctrl-C or SIGTERM stops the server (docs/SERVE.md).\n\n"
        "  --model DIR        model or run directory (its newest checkpoint)\n"
        "  --host ADDR        IPv4 address to listen on (default 127.0.0.1; localhost)\n"
        "  --port N           TCP port (default 8080; 0: any free port, printed on stderr)\n"
        "  --tokenizer FILE   else DIR's own 'tokenizer' file, else bytes when vocab_size is 257\n"
        "  --precision P      auto, fp32 or bf16 matrix products (default: the model's own)\n\n"
        "Limits: request bodies of at most %u bytes (413 past it), %d connections at once,\n"
        "max_tokens and prompts of at most the model's max_seq_len tokens.\n", MAX_BODY, MAX_CONNECTIONS);
}

typedef struct server {
    moe_serve s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int busy;                 /* a request holds the model */
    atomic_int stopping;
} server;

/* Takes the model for one request (waits in line); -1 when stopping. */
static int acquire(server *sv) {
    pthread_mutex_lock(&sv->mu);
    while (sv->busy && !atomic_load(&sv->stopping)) pthread_cond_wait(&sv->cv, &sv->mu);
    int ok = !atomic_load(&sv->stopping);
    if (ok) sv->busy = 1;
    pthread_mutex_unlock(&sv->mu);
    return ok ? 0 : -1;
}

static void release(server *sv) {
    pthread_mutex_lock(&sv->mu);
    sv->busy = 0;
    pthread_cond_broadcast(&sv->cv);
    pthread_mutex_unlock(&sv->mu);
}

/* One request's body as it arrives. */
typedef struct conn { moe_buf body; int too_big; } conn;

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, const moe_buf *b) {
    struct MHD_Response *r = MHD_create_response_from_buffer(b->len, b->len ? b->data : "",
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param, const char *msg) {
    moe_serve_error e = {.status = status};
    snprintf(e.message, sizeof e.message, "%s", msg);
    snprintf(e.param, sizeof e.param, "%s", param);
    moe_buf b = {0};
    moe_serve_error_json(&e, &b);
    enum MHD_Result rc = send_json(c, (unsigned)status, &b);
    moe_buf_free(&b);
    return rc;
}

/* A streaming response: the job holds the model until it ends or the
 * client goes away (stream_free). */
typedef struct stream {
    server *sv;
    moe_serve_job job;
    moe_buf out;
    size_t pos;
    int done, holding;
} stream;

static ssize_t stream_read(void *cls, uint64_t at, char *buf, size_t max) {
    (void)at;
    stream *st = cls;
    while (st->pos == st->out.len) {
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.len = st->pos = 0;
        moe_err err;
        if (moe_serve_step(&st->sv->s, &st->job, &st->out, &st->done, &err)) {
            fprintf(stderr, "moe serve: %s: %s (stream closed)\n", st->job.id, err.msg);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (st->done && st->holding) { release(st->sv); st->holding = 0; }
    }
    size_t n = st->out.len - st->pos < max ? st->out.len - st->pos : max;
    memcpy(buf, st->out.data + st->pos, n);
    st->pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream *st = cls;
    if (st->holding) release(st->sv);
    moe_serve_job_free(&st->job);
    moe_buf_free(&st->out);
    free(st);
}

static enum MHD_Result complete(server *sv, struct MHD_Connection *c, conn *r, int chat) {
    moe_serve_limits lim = moe_serve_limits_of(&sv->s);
    moe_serve_req req;
    moe_serve_error e;
    if (moe_serve_parse(r->body.data ? r->body.data : "", r->body.len, chat, &lim, &req, &e))
        return send_error(c, e.status, e.param, e.message);
    if (acquire(sv)) { moe_serve_req_free(&req); return send_error(c, 503, "", "the server is stopping"); }
    stream *st = calloc(1, sizeof *st);
    if (!st) { release(sv); moe_serve_req_free(&req); return send_error(c, 503, "", "out of memory"); }
    st->sv = sv;
    st->holding = 1;
    if (moe_serve_begin(&sv->s, &req, &st->job, &e)) {
        stream_free(st);
        return send_error(c, e.status, e.param, e.message);
    }
    if (st->job.req.stream) {
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read,
                                                                      st, stream_free);
        if (!resp) { stream_free(st); return MHD_NO; }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    moe_err err;
    int rc = moe_serve_run(&sv->s, &st->job, &st->out, &err);
    release(sv);
    st->holding = 0;
    enum MHD_Result res = rc ? send_error(c, atomic_load(&sv->stopping) ? 503 : 500, "", err.msg)
                             : send_json(c, MHD_HTTP_OK, &st->out);
    stream_free(st);
    return res;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    server *sv = cls;
    conn *r = *con_cls;
    if (!r) {  /* the headers: set up for the body */
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {  /* a piece of the body: kept up to MAX_BODY, the rest read and dropped */
        if (r->too_big || r->body.len + *upload_size > MAX_BODY || moe_buf_append(&r->body, upload, *upload_size)) {
            r->too_big = 1;
            moe_buf_free(&r->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    int is_post = !strcmp(method, "POST"), chat = !strcmp(url, "/v1/chat/completions");
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/v1/completions") || chat) {
        int want_post = strcmp(url, "/v1/models") != 0;
        if (want_post != is_post || (!is_post && strcmp(method, "GET")))
            return send_error(c, 405, "", want_post ? "use POST" : "use GET");
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "no such endpoint: %.100s (GET /v1/models, POST /v1/completions, "
                                  "POST /v1/chat/completions)", url);
        return send_error(c, 404, "", msg);
    }
    if (!is_post) {
        moe_buf b = {0};
        moe_serve_models_json(&sv->s, &b);
        enum MHD_Result rc = send_json(c, MHD_HTTP_OK, &b);
        moe_buf_free(&b);
        return rc;
    }
    if (r->too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "the request body is larger than %u bytes", MAX_BODY);
        return send_error(c, 413, "", msg);
    }
    return complete(sv, c, r, chat);
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls; (void)c; (void)t;
    conn *r = *con_cls;
    if (r) { moe_buf_free(&r->body); free(r); }
    *con_cls = NULL;
}

/* Loads the checkpoint and its tokenizer, as moe generate does. */
static int load(const char *model_dir, const char *tok_path, const char *precision, moe_model **m,
                moe_tokenizer **tok, moe_err *err) {
    char ckpt[4096];
    if (moe_resolve_checkpoint(model_dir, ckpt, sizeof ckpt, err) || moe_model_load_precision(ckpt, precision, m, err))
        return -1;
    cli_inference_ready("serve", *m);
    if (moe_checkpoint_tokenizer(ckpt, tok_path, tok, err)) return -1;
    if (!*tok && (*m)->cfg.vocab_size != 257)
        return moe_errf(err, "%s has no tokenizer file and its vocab_size is %d, not the 257 of the bytes "
                        "tokenizer: give --tokenizer FILE", ckpt, (*m)->cfg.vocab_size);
    if (!*tok && !(*tok = moe_tokenizer_bytes(err))) return -1;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    enum { O_MODEL = 256, O_HOST, O_PORT, O_TOKENIZER, O_PRECISION };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
        {"host", required_argument, 0, O_HOST}, {"port", required_argument, 0, O_PORT},
        {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"precision", required_argument, 0, O_PRECISION}, {0, 0, 0, 0}};
    const char *model_dir = NULL, *host = "127.0.0.1", *tok_path = NULL, *precision = NULL;
    long port = 8080;
    cli_parser p;
    cli_begin(&p, "serve", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_MODEL: model_dir = p.value; break;
        case O_HOST: host = p.value; break;
        case O_PORT: if (cli_int(&p, p.value, 0, 65535, &port)) return 2; break;
        case O_TOKENIZER: tok_path = p.value; break;
        case O_PRECISION: if (cli_precision("serve", p.value)) return 2; precision = p.value; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!model_dir) { fprintf(stderr, "moe serve: --model DIR is required\n"); return 2; }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, !strcmp(host, "localhost") ? "127.0.0.1" : host, &addr.sin_addr) != 1) {
        fprintf(stderr, "moe serve: option --host: expected an IPv4 address such as 127.0.0.1, found '%s'\n", host);
        return 2;
    }

    moe_err err;
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    server sv = {0};
    struct MHD_Daemon *d = NULL;
    int rc = 1;
    pthread_mutex_init(&sv.mu, NULL);
    pthread_cond_init(&sv.cv, NULL);
    if (load(model_dir, tok_path, precision, &m, &tok, &err) ||
        moe_serve_init(&sv.s, m, tok, model_dir, (long)time(NULL), &err))
        goto out;
    sv.s.stop = &sv.stopping;
    /* the signals go to sigwait below, never to the server's threads */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                         0, NULL, NULL, handle, &sv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                         MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_END);
    if (!d) { moe_errf(&err, "cannot listen on %s:%ld (is the port in use?)", host, port); goto out; }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "moe serve: %s on http://%s:%u/v1 (Ctrl-C stops)\n", model_dir, host,
            info ? (unsigned)info->port : (unsigned)port);
    fflush(stderr);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "moe serve: %s: stopping\n", sig == SIGINT ? "interrupted" : "terminated");
    atomic_store(&sv.stopping, 1);
    pthread_mutex_lock(&sv.mu);
    pthread_cond_broadcast(&sv.cv);
    pthread_mutex_unlock(&sv.mu);
    MHD_stop_daemon(d);
    rc = 0;
out:
    if (rc) fprintf(stderr, "moe serve: %s\n", err.msg);
    moe_serve_free(&sv.s);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    pthread_cond_destroy(&sv.cv);
    pthread_mutex_destroy(&sv.mu);
    return rc;
}
#endif
