/* serve.h — the OpenAI-compatible completion API without the HTTP: request
 * bodies parsed and validated (JSON in, a request or a 4xx error in
 * OpenAI's shape out), and completions computed token by token into a JSON
 * response or server-sent-event chunks (docs/SERVE.md). The HTTP server
 * around it is src/cli/serve.c; this part needs no socket, so it can be
 * fuzzed and tested alone. */
#ifndef MOE_SERVE_H
#define MOE_SERVE_H

#include <stdatomic.h>

#include "moe/util/common.h"
#include "moe/model/decode.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"
#include "moe/data/tokenizer.h"

#define MOE_SERVE_MAX_STOP 4        /* stop strings per request (OpenAI's limit) */
#define MOE_SERVE_MAX_PROMPTS 64    /* prompts in one completions request */
#define MOE_SERVE_MAX_LOGPROBS 20   /* top_logprobs entries per token */
#define MOE_SERVE_MAX_MESSAGES 256  /* messages in one chat request */

/* A refused request: HTTP status (400, 404, 405, 413, 503), the message,
 * and the request field it is about ("" for none: written as null). */
typedef struct moe_serve_error {
    int status;
    char message[512];
    char param[64];
} moe_serve_error;

/* One prompt: text (a string, or a chat's messages joined) or token ids. */
typedef struct moe_serve_prompt {
    char *text;      /* NULL when given as ids */
    size_t len;
    int *ids;        /* [n_ids]: given, or the text encoded by moe_serve_begin */
    size_t n_ids;
} moe_serve_prompt;

typedef struct moe_serve_req {
    int chat;                    /* /v1/chat/completions */
    int stream, echo, include_usage;
    moe_serve_prompt *prompts;   /* [n_prompts]: one choice each */
    size_t n_prompts;
    long max_tokens;             /* >= 0; completions default 16, chat: the context */
    double temperature, top_p;   /* defaults 1 and 1 */
    long top_k;                  /* extension, as moe generate --top-k; 0: off */
    long seed;                   /* default 1, as moe generate */
    long logprobs;               /* -1: none; else top entries per token (<= MOE_SERVE_MAX_LOGPROBS) */
    char *stop[MOE_SERVE_MAX_STOP];
    size_t stop_len[MOE_SERVE_MAX_STOP], n_stop;
} moe_serve_req;

/* What a request is checked against: the model's context and vocabulary. */
typedef struct moe_serve_limits {
    size_t context;   /* max_seq_len: prompt tokens and max_tokens at most this */
    size_t vocab;     /* token ids in a prompt below this */
} moe_serve_limits;

/* Parses a request body (len bytes, any bytes) for /v1/completions (chat 0)
 * or /v1/chat/completions (chat 1). Returns 0 and fills req (free with
 * moe_serve_req_free), or -1 and e (status 400; an unknown field is named
 * in the message and in param). */
int moe_serve_parse(const char *body, size_t len, int chat, const moe_serve_limits *lim,
                    moe_serve_req *req, moe_serve_error *e);
void moe_serve_req_free(moe_serve_req *r);

/* Appends s[len] as a JSON string in valid UTF-8: each invalid sequence
 * (its maximal valid prefix, as the WHATWG decoder does) becomes U+FFFD, so
 * a client decoding moe's raw bytes sees the same text. */
int moe_serve_write_text(moe_buf *out, const char *s, size_t len);
/* 1 if s[len] is valid UTF-8 (no overlong forms, surrogates or bytes past U+10FFFF). */
int moe_serve_utf8_valid(const char *s, size_t len);

/* {"error": {"message", "type": "invalid_request_error", "param", "code": null}} */
int moe_serve_error_json(const moe_serve_error *e, moe_buf *out);

/* The model being served. One request at a time uses it (the caller
 * serialises); every per-request value lives in a moe_serve_job. */
typedef struct moe_serve {
    moe_model *m;
    const moe_tokenizer *tok;
    moe_kv_cache *c;          /* NULL when the model cannot decode token by token */
    char no_decode[256];      /* why, when c is NULL */
    char model_id[256];       /* the "model" the responses name */
    long created;             /* unix time the server started */
    size_t V, tv, W;          /* model vocabulary, tokenizer ids, context */
    uint32_t eot;
    float *logits;            /* [V] after the last token in the cache */
    uint32_t *unused;         /* [n_unused] ids below tv with no token: never sampled */
    size_t n_unused;
    moe_sampler s;
    unsigned long next_id;    /* numbers the responses' ids */
    atomic_int *stop;         /* set: the server is stopping; a job ends early (may be NULL) */
} moe_serve;

int moe_serve_init(moe_serve *s, moe_model *m, const moe_tokenizer *tok, const char *model_id,
                   long created, moe_err *err);
void moe_serve_free(moe_serve *s);
moe_serve_limits moe_serve_limits_of(const moe_serve *s);

/* GET /v1/models */
int moe_serve_models_json(const moe_serve *s, moe_buf *out);

/* One request being answered. */
typedef struct moe_serve_job {
    moe_serve_req req;
    char id[48];
    size_t pi;                /* prompt (choice) being computed */
    int phase;                /* internal: where the choice stands */
    long produced;            /* tokens generated for this choice */
    int next;                 /* the sampled token not yet run through the model */
    const char *finish;       /* "stop" or "length" when the choice is done */
    moe_rng rng;
    moe_buf text;             /* the choice's text (echoed prompt included) */
    size_t gen_start;         /* where the generated text starts in text */
    size_t sent;              /* bytes of text already streamed */
    moe_buf lp_tokens, lp_values, lp_top, lp_offsets;  /* logprobs arrays being built */
    size_t n_lp;
    moe_buf choices;          /* non-stream: the finished choices */
    size_t prompt_tokens, completion_tokens;
} moe_serve_job;

/* Prepares req (moved into job; req is emptied): encodes text prompts,
 * checks them against the context. -1 and e (4xx) when refused. */
int moe_serve_begin(moe_serve *s, moe_serve_req *req, moe_serve_job *j, moe_serve_error *e);
/* Advances the job by about one token and appends what is ready to out:
 * for a streaming request, "data: {...}\n\n" chunks (and "data: [DONE]\n\n"
 * at the end); otherwise nothing until the end, then the whole JSON body.
 * *done is set when the job has finished. -1 and err on a model failure or
 * when s->stop was set. */
int moe_serve_step(moe_serve *s, moe_serve_job *j, moe_buf *out, int *done, moe_err *err);
/* The whole job at once (moe_serve_step until done). */
int moe_serve_run(moe_serve *s, moe_serve_job *j, moe_buf *out, moe_err *err);
void moe_serve_job_free(moe_serve_job *j);

#endif
