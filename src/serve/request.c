/* request.c — the OpenAI API's request bodies for `moe serve`: JSON parsed,
 * every field checked (unknown ones refused by name), prompts and chat
 * messages turned into moe_serve_prompt; and the error body in OpenAI's
 * shape. No HTTP and no model here (docs/SERVE.md lists the fields). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/json.h"
#include "moe/serve/serve.h"

static int refuse(moe_serve_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(moe_serve_error *e, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    e->status = 400;
    snprintf(e->param, sizeof e->param, "%s", param);
    return -1;
}

/* A number field in [lo, hi] (whole: an integer). */
static int number(const moe_json_value *v, const char *name, double lo, double hi, int whole, double *out,
                  moe_serve_error *e) {
    if (v->type != MOE_JSON_NUMBER)
        return refuse(e, name, "'%s' must be a number", name);
    if (!isfinite(v->number) || v->number < lo || v->number > hi || (whole && v->number != floor(v->number)))
        return refuse(e, name, "'%s' must be %s in [%g, %g], found %g", name,
                      whole ? "a whole number" : "a number", lo, hi, v->number);
    *out = v->number;
    return 0;
}

static int boolean(const moe_json_value *v, const char *name, int *out, moe_serve_error *e) {
    if (v->type != MOE_JSON_BOOL) return refuse(e, name, "'%s' must be true or false", name);
    *out = v->boolean;
    return 0;
}

/* Copies len bytes into a NUL-terminated malloc'd string. */
static char *dup_bytes(const char *s, size_t len) {
    char *d = malloc(len + 1);
    if (d) { memcpy(d, s, len); d[len] = '\0'; }
    return d;
}

static int oom(moe_serve_error *e) {
    e->status = 503;
    snprintf(e->message, sizeof e->message, "out of memory");
    e->param[0] = '\0';
    return -1;
}

/* A token-id array as one prompt. */
static int ids_prompt(const moe_json_value *a, const moe_serve_limits *lim, moe_serve_prompt *p,
                      moe_serve_error *e) {
    if (a->count == 0) return refuse(e, "prompt", "'prompt' has an empty token array");
    if (a->count > lim->context)
        return refuse(e, "prompt", "'prompt' has %zu tokens, more than the model's context of %zu",
                      a->count, lim->context);
    if (!(p->ids = malloc(a->count * sizeof(int)))) return oom(e);
    for (size_t i = 0; i < a->count; i++) {
        const moe_json_value *x = &a->items[i];
        if (x->type != MOE_JSON_NUMBER || x->number != floor(x->number) || x->number < 0 ||
            x->number >= (double)lim->vocab)
            return refuse(e, "prompt", "'prompt' token %zu must be a token id in [0, %zu)", i, lim->vocab);
        p->ids[i] = (int)x->number;
    }
    p->n_ids = a->count;
    return 0;
}

/* prompt: a string, an array of strings, an array of ids, or an array of id arrays. */
static int parse_prompt(const moe_json_value *v, const moe_serve_limits *lim, moe_serve_req *r,
                        moe_serve_error *e) {
    size_t n = v->type == MOE_JSON_STRING ? 1 : v->type == MOE_JSON_ARRAY ? v->count : 0;
    if (v->type != MOE_JSON_STRING && v->type != MOE_JSON_ARRAY)
        return refuse(e, "prompt", "'prompt' must be a string, an array of strings, an array of token "
                                   "ids or an array of token-id arrays");
    if (n == 0) return refuse(e, "prompt", "'prompt' is an empty array");
    int flat_ids = v->type == MOE_JSON_ARRAY && v->items[0].type == MOE_JSON_NUMBER;
    if (flat_ids) n = 1;
    if (n > MOE_SERVE_MAX_PROMPTS)
        return refuse(e, "prompt", "'prompt' has %zu prompts; at most %d per request", n, MOE_SERVE_MAX_PROMPTS);
    if (!(r->prompts = calloc(n, sizeof *r->prompts))) return oom(e);
    r->n_prompts = n;
    if (flat_ids) return ids_prompt(v, lim, &r->prompts[0], e);
    for (size_t i = 0; i < n; i++) {
        const moe_json_value *x = v->type == MOE_JSON_STRING ? v : &v->items[i];
        moe_serve_prompt *p = &r->prompts[i];
        if (x->type == MOE_JSON_STRING) {
            if (!(p->text = dup_bytes(x->string, x->len))) return oom(e);
            p->len = x->len;
        } else if (x->type == MOE_JSON_ARRAY) {
            if (ids_prompt(x, lim, p, e)) return -1;
        } else {
            return refuse(e, "prompt", "'prompt' item %zu must be a string or an array of token ids", i);
        }
    }
    return 0;
}

/* messages: [{"role", "content"}...] joined as content + "\n" each. */
static int parse_messages(const moe_json_value *v, moe_serve_req *r, moe_serve_error *e) {
    if (v->type != MOE_JSON_ARRAY || v->count == 0)
        return refuse(e, "messages", "'messages' must be a non-empty array of {\"role\", \"content\"} objects");
    if (v->count > MOE_SERVE_MAX_MESSAGES)
        return refuse(e, "messages", "'messages' has %zu messages; at most %d", v->count, MOE_SERVE_MAX_MESSAGES);
    moe_buf text = {0};
    for (size_t i = 0; i < v->count; i++) {
        const moe_json_value *msg = &v->items[i], *role = moe_json_get(msg, "role"), *content = moe_json_get(msg, "content");
        if (msg->type != MOE_JSON_OBJECT) { moe_buf_free(&text); return refuse(e, "messages", "message %zu must be an object", i); }
        for (size_t k = 0; k < msg->count; k++)
            if (strcmp(msg->keys[k], "role") && strcmp(msg->keys[k], "content") && strcmp(msg->keys[k], "name")) {
                moe_buf_free(&text);
                return refuse(e, "messages", "message %zu: unknown field '%.64s' (supported: role, content, name)",
                              i, msg->keys[k]);
            }
        if (!role || role->type != MOE_JSON_STRING ||
            (strcmp(role->string, "system") && strcmp(role->string, "developer") &&
             strcmp(role->string, "user") && strcmp(role->string, "assistant"))) {
            moe_buf_free(&text);
            return refuse(e, "messages", "message %zu: 'role' must be system, developer, user or assistant", i);
        }
        int bad = !content;
        if (content && content->type == MOE_JSON_STRING) {
            bad = moe_buf_append(&text, content->string, content->len);
        } else if (content && content->type == MOE_JSON_ARRAY) {  /* [{"type": "text", "text": ...}] */
            for (size_t k = 0; k < content->count && !bad; k++) {
                const moe_json_value *part = &content->items[k], *t = moe_json_get(part, "type"), *s = moe_json_get(part, "text");
                bad = !t || t->type != MOE_JSON_STRING || strcmp(t->string, "text") || !s || s->type != MOE_JSON_STRING ||
                      part->count != 2 || moe_buf_append(&text, s->string, s->len);
            }
        } else if (!content || content->type != MOE_JSON_NULL) {
            bad = 1;
        }
        if (bad || moe_buf_append(&text, "\n", 1)) {
            moe_buf_free(&text);
            return refuse(e, "messages", "message %zu: 'content' must be a string or an array of "
                                         "{\"type\": \"text\", \"text\": ...} parts", i);
        }
    }
    if (!(r->prompts = calloc(1, sizeof *r->prompts))) { moe_buf_free(&text); return oom(e); }
    r->n_prompts = 1;
    r->prompts[0].text = text.data;
    r->prompts[0].len = text.len;
    return 0;
}

static int parse_stop(const moe_json_value *v, moe_serve_req *r, moe_serve_error *e) {
    size_t n = v->type == MOE_JSON_STRING ? 1 : v->type == MOE_JSON_ARRAY ? v->count : 0;
    if ((v->type != MOE_JSON_STRING && v->type != MOE_JSON_ARRAY) || n > MOE_SERVE_MAX_STOP)
        return refuse(e, "stop", "'stop' must be a string or an array of at most %d strings", MOE_SERVE_MAX_STOP);
    for (size_t i = 0; i < n; i++) {
        const moe_json_value *s = v->type == MOE_JSON_STRING ? v : &v->items[i];
        if (s->type != MOE_JSON_STRING || s->len == 0 || s->len > 256)
            return refuse(e, "stop", "'stop' strings must be 1 to 256 bytes long");
        if (!(r->stop[i] = dup_bytes(s->string, s->len))) return oom(e);
        r->stop_len[i] = s->len;
        r->n_stop = i + 1;
    }
    return 0;
}

static int parse_stream_options(const moe_json_value *v, moe_serve_req *r, moe_serve_error *e) {
    if (v->type != MOE_JSON_OBJECT) return refuse(e, "stream_options", "'stream_options' must be an object");
    for (size_t k = 0; k < v->count; k++) {
        if (strcmp(v->keys[k], "include_usage"))
            return refuse(e, "stream_options", "'stream_options': unknown field '%.64s' (supported: include_usage)",
                          v->keys[k]);
        if (boolean(&v->items[k], "stream_options.include_usage", &r->include_usage, e)) return -1;
    }
    return 0;
}

/* One member of the request object. */
static int parse_field(const char *key, const moe_json_value *v, int chat, const moe_serve_limits *lim,
                       moe_serve_req *r, int *has_stream_options, moe_serve_error *e) {
    double x = 0;
    if (v->type == MOE_JSON_NULL && strcmp(key, "prompt") && strcmp(key, "messages")) return 0;  /* null: the default */
    if (!strcmp(key, "model") || !strcmp(key, "user")) {
        if (v->type != MOE_JSON_STRING) return refuse(e, key, "'%s' must be a string", key);
        return 0;  /* one model is served: any name answers */
    }
    if (!chat && !strcmp(key, "prompt")) return parse_prompt(v, lim, r, e);
    if (chat && !strcmp(key, "messages")) return parse_messages(v, r, e);
    if (!strcmp(key, "max_tokens") || (chat && !strcmp(key, "max_completion_tokens"))) {
        if (number(v, key, chat ? 1 : 0, 1e18, 1, &x, e)) return -1;
        if (x > (double)lim->context)
            return refuse(e, key, "'%s' is %.0f, above the model's context of %zu tokens", key, x, lim->context);
        r->max_tokens = (long)x;
        return 0;
    }
    if (!strcmp(key, "temperature")) return number(v, key, 0, 2, 0, &r->temperature, e);
    if (!strcmp(key, "top_p")) return number(v, key, 0, 1, 0, &r->top_p, e);
    if (!strcmp(key, "top_k")) {
        if (number(v, key, 0, 1 << 24, 1, &x, e)) return -1;
        r->top_k = (long)x;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (number(v, key, -9007199254740992.0, 9007199254740992.0, 1, &x, e)) return -1;
        r->seed = (long)x;
        return 0;
    }
    if (!strcmp(key, "n")) {
        if (number(v, key, 1, 1, 1, &x, e)) return refuse(e, key, "'n' must be 1 (one choice per prompt)");
        return 0;
    }
    if (!strcmp(key, "frequency_penalty") || !strcmp(key, "presence_penalty")) {
        if (number(v, key, 0, 0, 0, &x, e)) return refuse(e, key, "'%s' is not supported: only 0", key);
        return 0;
    }
    if (!strcmp(key, "stop")) return parse_stop(v, r, e);
    if (!strcmp(key, "stream")) return boolean(v, key, &r->stream, e);
    if (!strcmp(key, "stream_options")) { *has_stream_options = 1; return parse_stream_options(v, r, e); }
    if (!chat && !strcmp(key, "echo")) return boolean(v, key, &r->echo, e);
    if (!chat && !strcmp(key, "logprobs")) {
        if (number(v, key, 0, MOE_SERVE_MAX_LOGPROBS, 1, &x, e)) return -1;
        r->logprobs = (long)x;
        return 0;
    }
    if (chat && !strcmp(key, "logprobs")) {
        int on = 0;
        if (boolean(v, key, &on, e)) return -1;
        if (on) return refuse(e, key, "'logprobs' is not supported in chat completions (use /v1/completions)");
        return 0;
    }
    return refuse(e, key, "unknown field '%.64s' (docs/SERVE.md lists the supported ones)", key);
}

int moe_serve_parse(const char *body, size_t len, int chat, const moe_serve_limits *lim,
                    moe_serve_req *r, moe_serve_error *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->chat = chat;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->seed = 1;
    r->logprobs = -1;
    moe_err err;
    moe_json_value *root = moe_json_parse(body, len, "request body", &err);
    if (!root) return refuse(e, "", "malformed JSON: %s", err.msg);
    int rc = 0, has_stream_options = 0;
    if (root->type != MOE_JSON_OBJECT) rc = refuse(e, "", "the request body must be a JSON object");
    for (size_t k = 0; !rc && k < root->count; k++)
        rc = parse_field(root->keys[k], &root->items[k], chat, lim, r, &has_stream_options, e);
    moe_json_free(root);
    if (!rc && !r->n_prompts)
        rc = refuse(e, chat ? "messages" : "prompt", "'%s' is required", chat ? "messages" : "prompt");
    if (!rc && has_stream_options && !r->stream)
        rc = refuse(e, "stream_options", "'stream_options' needs \"stream\": true");
    if (!rc && r->stream && r->logprobs >= 0)
        rc = refuse(e, "logprobs", "'logprobs' is not supported with \"stream\": true");
    if (!rc && r->max_tokens < 0) r->max_tokens = chat ? (long)lim->context : 16;
    if (rc) moe_serve_req_free(r);
    return rc;
}

void moe_serve_req_free(moe_serve_req *r) {
    for (size_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* Bytes of the valid UTF-8 sequence at s[0..n) (1..4), or 0 with *bad set
 * to the bytes of its maximal prefix (at least 1) when it is invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
    unsigned c = s[0];
    size_t need = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
    *bad = 1;
    if (need == 9) return 0;
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    for (size_t k = 1; k <= need; k++) {
        if (k >= n || s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xBF)) { *bad = k; return 0; }
    }
    return need + 1;
}

int moe_serve_utf8_valid(const char *s, size_t len) {
    size_t bad;
    for (size_t i = 0, k; i < len; i += k)
        if (!(k = utf8_seq((const unsigned char *)s + i, len - i, &bad))) return 0;
    return 1;
}

int moe_serve_write_text(moe_buf *out, const char *s, size_t len) {
    moe_buf t = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0, i = 0, bad;
    int rc = 0;
    while (i < len) {
        size_t k = utf8_seq(u + i, len - i, &bad);
        if (k) { i += k; run += k; continue; }
        rc |= moe_buf_append(&t, s + i - run, run);
        rc |= moe_buf_append(&t, "\xEF\xBF\xBD", 3);
        run = 0;
        i += bad;
    }
    if (t.len == 0 && !rc) return moe_json_write_string(out, s, len);  /* valid as it is */
    rc |= moe_buf_append(&t, s + len - run, run);
    rc |= moe_json_write_string(out, t.data, t.len);
    moe_buf_free(&t);
    return rc ? -1 : 0;
}

int moe_serve_error_json(const moe_serve_error *e, moe_buf *out) {
    static const char *types[] = {"invalid_request_error", "server_error"};
    int rc = moe_buf_printf(out, "{\"error\": {\"message\": ");
    rc |= moe_serve_write_text(out, e->message, strlen(e->message));
    rc |= moe_buf_printf(out, ", \"type\": \"%s\", \"param\": ", types[e->status >= 500]);
    rc |= e->param[0] ? moe_serve_write_text(out, e->param, strlen(e->param)) : moe_buf_printf(out, "null");
    rc |= moe_buf_printf(out, ", \"code\": null}}");
    return rc ? -1 : 0;
}
