/* complete.c — completions for `moe serve`, token by token: the prompt's
 * log-probs from the same forward pass as `moe score`, generation with the
 * KV cache and sampler of `moe generate` (src/model/decode.c), stop strings,
 * and the responses as OpenAI's JSON or server-sent-event chunks
 * (docs/SERVE.md). One job at a time uses a moe_serve; the caller
 * serialises. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/json.h"
#include "moe/serve/serve.h"

enum { P_START, P_GEN, P_END, P_DONE };

int moe_serve_init(moe_serve *s, moe_model *m, const moe_tokenizer *tok, const char *model_id,
                   long created, moe_err *err) {
    memset(s, 0, sizeof *s);
    s->m = m;
    s->tok = tok;
    s->created = created;
    snprintf(s->model_id, sizeof s->model_id, "%s", model_id);
    s->V = (size_t)m->cfg.vocab_size;
    s->W = (size_t)m->cfg.max_seq_len;
    s->tv = moe_tokenizer_vocab_size(tok);
    s->eot = moe_tokenizer_eot(tok);
    if (s->tv > s->V)
        return moe_errf(err, "the tokenizer has %zu ids but the model only %zu", s->tv, s->V);
    moe_err why;
    if (moe_decode_check(&m->cfg, &why) == 0) {
        if (moe_kv_cache_create(m, &s->c, err)) return -1;
    } else {
        snprintf(s->no_decode, sizeof s->no_decode, "this model cannot generate (max_tokens must be 0): %.200s", why.msg);
    }
    if (moe_sampler_init(&s->s, s->tv, 1.0, 0, 1.0, err)) return -1;
    if (!(s->logits = moe_malloc(s->V * sizeof(float), err))) return -1;
    if (moe_sample_holes(tok, &s->unused, &s->n_unused, err)) return -1;  /* never sampled */
    return 0;
}

void moe_serve_free(moe_serve *s) {
    moe_kv_cache_free(s->c);
    moe_sampler_free(&s->s);
    free(s->logits);
    free(s->unused);
    memset(s, 0, sizeof *s);
}

moe_serve_limits moe_serve_limits_of(const moe_serve *s) {
    return (moe_serve_limits){.context = s->W, .vocab = s->V};
}

int moe_serve_models_json(const moe_serve *s, moe_buf *out) {
    int rc = moe_buf_printf(out, "{\"object\": \"list\", \"data\": [{\"id\": ");
    rc |= moe_serve_write_text(out, s->model_id, strlen(s->model_id));
    rc |= moe_buf_printf(out, ", \"object\": \"model\", \"created\": %ld, \"owned_by\": \"moe\", "
                              "\"context_length\": %zu}]}", s->created, s->W);
    return rc ? -1 : 0;
}

static int refuse(moe_serve_error *e, int status, const char *param, const char *msg) {
    e->status = status;
    snprintf(e->message, sizeof e->message, "%.500s", msg);
    snprintf(e->param, sizeof e->param, "%s", param);
    return -1;
}

int moe_serve_begin(moe_serve *s, moe_serve_req *req, moe_serve_job *j, moe_serve_error *e) {
    memset(j, 0, sizeof *j);
    j->req = *req;
    memset(req, 0, sizeof *req);
    moe_serve_req *r = &j->req;
    const char *param = r->chat ? "messages" : "prompt";
    for (size_t i = 0; i < r->n_prompts; i++) {
        moe_serve_prompt *p = &r->prompts[i];
        if (p->text) {
            uint32_t *ids = NULL;
            size_t n = 0;
            moe_err err;
            if (moe_tokenizer_encode(s->tok, p->text, p->len, &ids, &n, &err)) return refuse(e, 400, param, err.msg);
            if (!(p->ids = malloc((n ? n : 1) * sizeof(int)))) { free(ids); return refuse(e, 503, "", "out of memory"); }
            for (size_t k = 0; k < n; k++) p->ids[k] = (int)ids[k];
            free(ids);
            p->n_ids = n;
        }
        if (p->n_ids == 0) p->ids[p->n_ids++] = (int)s->eot;  /* an empty prompt starts a document */
        if (p->n_ids > s->W) {
            char msg[160];
            snprintf(msg, sizeof msg, "'%s' has %zu tokens, more than the model's context of %zu",
                     param, p->n_ids, s->W);
            return refuse(e, 400, param, msg);
        }
        j->prompt_tokens += p->n_ids;
    }
    if (r->max_tokens > 0 && !s->c) return refuse(e, 400, "max_tokens", s->no_decode);
    snprintf(j->id, sizeof j->id, "%s-%lu", r->chat ? "chatcmpl" : "cmpl", ++s->next_id);
    moe_rng_seed(&j->rng, (uint64_t)r->seed);
    /* top_p 0 keeps only the most probable token */
    s->s.temperature = r->top_p > 0 ? r->temperature : 0.0;
    s->s.top_p = r->top_p > 0 ? r->top_p : 1.0;
    s->s.top_k = r->top_k;
    j->next = -1;
    return 0;
}

void moe_serve_job_free(moe_serve_job *j) {
    moe_serve_req_free(&j->req);
    moe_buf_free(&j->text);
    moe_buf_free(&j->lp_tokens);
    moe_buf_free(&j->lp_values);
    moe_buf_free(&j->lp_top);
    moe_buf_free(&j->lp_offsets);
    moe_buf_free(&j->choices);
    memset(j, 0, sizeof *j);
}

/* ---- logprobs ---------------------------------------------------------- */

/* A token as a JSON string: its text, or "bytes:\xNN..." when its bytes
 * are not valid UTF-8 on their own (as OpenAI writes them) or hold a NUL
 * (a top_logprobs key with one trips many JSON readers). */
static int write_token(const moe_serve *s, int id, moe_buf *out) {
    size_t len = 0;
    const uint8_t *b = id >= 0 && (size_t)id < s->tv ? moe_tokenizer_token(s->tok, (uint32_t)id, &len) : NULL;
    if (!b) {
        char t[32];
        snprintf(t, sizeof t, "<id %d>", id);
        return moe_json_write_string(out, t, strlen(t));
    }
    if (moe_serve_utf8_valid((const char *)b, len) && !memchr(b, 0, len)) return moe_json_write_string(out, (const char *)b, len);
    moe_buf t = {0};
    int rc = moe_buf_printf(&t, "bytes:");
    for (size_t i = 0; i < len; i++) rc |= moe_buf_printf(&t, "\\x%02x", b[i]);
    rc |= moe_json_write_string(out, t.data, t.len);
    moe_buf_free(&t);
    return rc;
}

/* Appends one token to the logprobs arrays: value (NULL: null) and its
 * top n entries from row[V] - lse (NULL: null); target's own entry is the
 * exact value, so "is it the most probable" compares like with like. */
static int add_logprob(moe_serve *s, moe_serve_job *j, int id, const double *value, const float *row, float lse,
                       size_t offset) {
    const char *sep = j->n_lp ? ", " : "";
    int rc = moe_buf_printf(&j->lp_tokens, "%s", sep);
    rc |= write_token(s, id, &j->lp_tokens);
    rc |= moe_buf_printf(&j->lp_values, "%s", sep);
    rc |= value ? moe_json_write_double(&j->lp_values, *value) : moe_buf_printf(&j->lp_values, "null");
    rc |= moe_buf_printf(&j->lp_offsets, "%s%zu", sep, offset);
    rc |= moe_buf_printf(&j->lp_top, "%s", sep);
    if (!row || !value) {
        rc |= moe_buf_printf(&j->lp_top, "null");
    } else {
        size_t n = (size_t)j->req.logprobs, have = 0;
        int best[MOE_SERVE_MAX_LOGPROBS];
        for (size_t i = 0; i < s->V && n; i++) {  /* insertion into the n largest, first id on ties */
            if (have == n && !(row[i] > row[best[n - 1]])) continue;
            size_t k = have < n ? have++ : n - 1;
            while (k > 0 && row[i] > row[best[k - 1]]) { best[k] = best[k - 1]; k--; }
            best[k] = (int)i;
        }
        rc |= moe_buf_printf(&j->lp_top, "{");
        for (size_t k = 0; k < have; k++) {
            rc |= moe_buf_printf(&j->lp_top, "%s", k ? ", " : "");
            rc |= write_token(s, best[k], &j->lp_top);
            rc |= moe_buf_printf(&j->lp_top, ": ");
            rc |= moe_json_write_double(&j->lp_top, best[k] == id ? *value : (double)(row[best[k]] - lse));
        }
        rc |= moe_buf_printf(&j->lp_top, "}");
    }
    j->n_lp++;
    return rc ? -1 : 0;
}

/* The prompt's log-probs: one forward with targets, as `moe score` runs it
 * (token 0 has none: null). */
static int prompt_logprobs(moe_serve *s, moe_serve_job *j, const moe_serve_prompt *p, moe_err *err) {
    size_t n = p->n_ids, offset = 0, len;
    if (n >= 2) {
        double loss;
        s->m->keep_logits = 1;
        int rc = moe_model_forward(s->m, p->ids, p->ids + 1, 1, n - 1, &loss, NULL, err);
        s->m->keep_logits = 0;
        if (rc) return -1;
    }
    for (size_t t = 0; t < n; t++) {
        double v = t ? -(double)s->m->losses[t - 1] : 0.0;
        const float *row = t ? s->m->logits + (t - 1) * s->V : NULL;
        if (add_logprob(s, j, p->ids[t], t ? &v : NULL, row, t ? s->m->lse[t - 1] : 0.0f, offset))
            return moe_errf(err, "out of memory");
        if ((size_t)p->ids[t] < s->tv && moe_tokenizer_token(s->tok, (uint32_t)p->ids[t], &len)) offset += len;
    }
    return 0;
}

/* ---- generation -------------------------------------------------------- */

static int sample(moe_serve *s, moe_serve_job *j) {
    for (size_t i = 0; i < s->n_unused; i++) s->logits[s->unused[i]] = -INFINITY;
    return moe_sample(&s->s, s->logits, &j->rng);
}

static float logsumexp(const float *x, size_t n) {
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    return mx + (float)log(sum);
}

/* Where the first stop string starts in the generated text, or -1. */
static long find_stop(const moe_serve_job *j) {
    const char *t = j->text.data + j->gen_start;
    size_t n = j->text.len - j->gen_start;
    long first = -1;
    for (size_t k = 0; k < j->req.n_stop; k++) {
        size_t m = j->req.stop_len[k];
        for (size_t i = 0; i + m <= n; i++)
            if (!memcmp(t + i, j->req.stop[k], m)) {
                if (first < 0 || (long)i < first) first = (long)i;
                break;
            }
    }
    return first;
}

/* Starts choice j->pi: echo, prompt log-probs, prefill, first sample. */
static int start_choice(moe_serve *s, moe_serve_job *j, moe_err *err) {
    const moe_serve_prompt *p = &j->req.prompts[j->pi];
    j->text.len = 0;
    j->lp_tokens.len = j->lp_values.len = j->lp_top.len = j->lp_offsets.len = 0;
    j->n_lp = 0;
    j->produced = 0;
    j->sent = 0;
    j->finish = NULL;
    if (j->req.echo) {
        int rc = p->text ? moe_buf_append(&j->text, p->text, p->len) : 0;
        for (size_t i = 0; !p->text && !rc && i < p->n_ids; i++) {
            size_t len;
            const uint8_t *b = (size_t)p->ids[i] < s->tv ? moe_tokenizer_token(s->tok, (uint32_t)p->ids[i], &len) : NULL;
            if (b) rc = moe_buf_append(&j->text, b, len);
        }
        if (rc) return moe_errf(err, "out of memory");
        if (j->req.logprobs >= 0 && prompt_logprobs(s, j, p, err)) return -1;
    }
    j->gen_start = j->text.len;
    if (j->req.max_tokens == 0) { j->finish = "length"; j->phase = P_END; return 0; }
    moe_kv_cache_rewind(s->c, 0);
    if (moe_decode_prefill(s->m, s->c, p->ids, p->n_ids, s->logits, err)) return -1;
    j->next = sample(s, j);
    j->phase = P_GEN;
    return 0;
}

/* Takes the sampled token: text, log-prob, the stop checks, then the next
 * decode step and sample (the order of moe generate). */
static int gen_token(moe_serve *s, moe_serve_job *j, moe_err *err) {
    int id = j->next;
    if (id == (int)s->eot) { j->finish = "stop"; j->phase = P_END; return 0; }
    size_t len, offset = j->text.len;
    const uint8_t *b = moe_tokenizer_token(s->tok, (uint32_t)id, &len);
    if (!b) return moe_errf(err, "token id %d has no text", id);
    if (moe_buf_append(&j->text, b, len)) return moe_errf(err, "out of memory");
    if (j->req.logprobs >= 0) {
        float lse = logsumexp(s->logits, s->V);
        double v = (double)(s->logits[id] - lse);
        if (add_logprob(s, j, id, &v, s->logits, lse, offset)) return moe_errf(err, "out of memory");
    }
    j->produced++;
    j->completion_tokens++;
    long at = j->req.n_stop ? find_stop(j) : -1;
    if (at >= 0) {
        j->text.len = j->gen_start + (size_t)at;
        j->finish = "stop";
    } else if (j->produced >= j->req.max_tokens || s->c->len >= s->W) {
        j->finish = "length";
    }
    if (j->finish) { j->phase = P_END; return 0; }
    if (moe_decode_step(s->m, s->c, id, s->logits, err)) return -1;
    j->next = sample(s, j);
    return 0;
}

/* ---- responses --------------------------------------------------------- */

static int head(const moe_serve *s, const moe_serve_job *j, moe_buf *o, const char *object) {
    int rc = moe_buf_printf(o, "{\"id\": \"%s\", \"object\": \"%s\", \"created\": %ld, \"model\": ", j->id,
                            object, s->created);
    rc |= moe_serve_write_text(o, s->model_id, strlen(s->model_id));
    return rc;
}

static int usage(const moe_serve_job *j, moe_buf *o) {
    return moe_buf_printf(o, "\"usage\": {\"prompt_tokens\": %zu, \"completion_tokens\": %zu, \"total_tokens\": %zu}",
                          j->prompt_tokens, j->completion_tokens, j->prompt_tokens + j->completion_tokens);
}

/* One SSE chunk of choice j->pi: text[from, to) and the finish reason (NULL: none). */
static int chunk(const moe_serve *s, const moe_serve_job *j, moe_buf *o, size_t from, size_t to,
                 const char *finish, int role) {
    int rc = moe_buf_printf(o, "data: ");
    rc |= head(s, j, o, j->req.chat ? "chat.completion.chunk" : "text_completion");
    rc |= moe_buf_printf(o, ", \"choices\": [{\"index\": %zu, ", j->pi);
    if (j->req.chat) {  /* the first chunk names the role; the last has an empty delta */
        rc |= moe_buf_printf(o, "\"delta\": {");
        if (role) rc |= moe_buf_printf(o, "\"role\": \"assistant\", \"content\": \"\"");
        if (to > from) {
            rc |= moe_buf_printf(o, "\"content\": ");
            rc |= moe_serve_write_text(o, j->text.data + from, to - from);
        }
        rc |= moe_buf_printf(o, "}");
    } else {
        rc |= moe_buf_printf(o, "\"text\": ");
        rc |= moe_serve_write_text(o, j->text.data ? j->text.data + from : "", to - from);
    }
    rc |= moe_buf_printf(o, ", \"logprobs\": null, \"finish_reason\": ");
    rc |= finish ? moe_buf_printf(o, "\"%s\"", finish) : moe_buf_printf(o, "null");
    rc |= moe_buf_printf(o, "}]}\n\n");
    return rc;
}

/* Streams the text that is safe to show: whole UTF-8 characters, and not
 * the last bytes that could still become a stop string. */
static int stream_text(moe_serve_job *j, const moe_serve *s, moe_buf *o) {
    size_t end = j->text.len, hold = 0;
    for (size_t k = 0; k < j->req.n_stop; k++) if (j->req.stop_len[k] - 1 > hold) hold = j->req.stop_len[k] - 1;
    end = end - j->gen_start > hold ? end - hold : j->gen_start;  /* the echoed prompt is never held */
    if (end <= j->sent) return 0;
    end = j->sent + moe_utf8_complete(j->text.data + j->sent, end - j->sent);
    if (end == j->sent) return 0;
    int rc = chunk(s, j, o, j->sent, end, NULL, 0);
    j->sent = end;
    return rc;
}

static int finish_choice(moe_serve *s, moe_serve_job *j, moe_buf *out) {
    int rc = 0;
    if (j->req.stream) {
        if (j->text.len > j->sent) rc |= chunk(s, j, out, j->sent, j->text.len, NULL, 0);
        j->sent = j->text.len;
        return rc | chunk(s, j, out, 0, 0, j->finish, 0);
    }
    moe_buf *o = &j->choices;
    rc |= moe_buf_printf(o, "%s{\"index\": %zu, ", j->pi ? ", " : "", j->pi);
    if (j->req.chat) {
        rc |= moe_buf_printf(o, "\"message\": {\"role\": \"assistant\", \"content\": ");
        rc |= moe_serve_write_text(o, j->text.data ? j->text.data : "", j->text.len);
        rc |= moe_buf_printf(o, "}, \"logprobs\": null");
    } else {
        rc |= moe_buf_printf(o, "\"text\": ");
        rc |= moe_serve_write_text(o, j->text.data ? j->text.data : "", j->text.len);
        if (j->req.logprobs >= 0)
            rc |= moe_buf_printf(o, ", \"logprobs\": {\"tokens\": [%s], \"token_logprobs\": [%s], "
                                    "\"top_logprobs\": [%s], \"text_offset\": [%s]}",
                                 j->lp_tokens.len ? j->lp_tokens.data : "", j->lp_values.len ? j->lp_values.data : "",
                                 j->lp_top.len ? j->lp_top.data : "", j->lp_offsets.len ? j->lp_offsets.data : "");
        else
            rc |= moe_buf_printf(o, ", \"logprobs\": null");
    }
    rc |= moe_buf_printf(o, ", \"finish_reason\": \"%s\"}", j->finish);
    return rc;
}

static int finish_job(const moe_serve *s, moe_serve_job *j, moe_buf *out) {
    int rc = 0;
    if (j->req.stream) {
        if (j->req.include_usage) {
            rc |= moe_buf_printf(out, "data: ");
            rc |= head(s, j, out, j->req.chat ? "chat.completion.chunk" : "text_completion");
            rc |= moe_buf_printf(out, ", \"choices\": [], ");
            rc |= usage(j, out);
            rc |= moe_buf_printf(out, "}\n\n");
        }
        return rc | moe_buf_printf(out, "data: [DONE]\n\n");
    }
    rc |= head(s, j, out, j->req.chat ? "chat.completion" : "text_completion");
    rc |= moe_buf_printf(out, ", \"choices\": [%s], ", j->choices.len ? j->choices.data : "");
    rc |= usage(j, out);
    return rc | moe_buf_printf(out, "}\n");
}

int moe_serve_step(moe_serve *s, moe_serve_job *j, moe_buf *out, int *done, moe_err *err) {
    *done = 0;
    if (s->stop && atomic_load(s->stop)) return moe_errf(err, "the server is stopping");
    int rc = 0;
    switch (j->phase) {
    case P_START:
        if (j->req.stream && j->req.chat && chunk(s, j, out, 0, 0, NULL, 1)) return moe_errf(err, "out of memory");
        rc = start_choice(s, j, err);
        break;
    case P_GEN:
        rc = gen_token(s, j, err);
        break;
    case P_END:
        if (finish_choice(s, j, out)) return moe_errf(err, "out of memory");
        j->phase = ++j->pi < j->req.n_prompts ? P_START : P_DONE;
        break;
    }
    if (rc) return -1;
    if (j->phase == P_DONE) {
        *done = 1;
        return finish_job(s, j, out) ? moe_errf(err, "out of memory") : 0;
    }
    if (j->req.stream && j->phase == P_GEN && stream_text(j, s, out)) return moe_errf(err, "out of memory");
    return 0;
}

int moe_serve_run(moe_serve *s, moe_serve_job *j, moe_buf *out, moe_err *err) {
    int done = 0;
    while (!done)
        if (moe_serve_step(s, j, out, &done, err)) return -1;
    return 0;
}
