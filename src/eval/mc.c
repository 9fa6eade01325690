/* mc.c — zero-shot multiple choice (METHOD §3) in the lm-evaluation-harness
 * conventions: the task file reader (JSONL, docs/EVAL.md), the summed
 * log-probability of each continuation given the context, and acc /
 * acc_norm (the sum divided by the continuation's length in bytes). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/eval/eval.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"

/* ---- task files --------------------------------------------------------- */

static char *dup_str(const char *s, size_t len, moe_err *err) {
    char *d = moe_malloc(len + 1, err);
    if (d) { memcpy(d, s, len); d[len] = 0; }
    return d;
}

void moe_task_free(moe_task *t) {
    for (size_t i = 0; i < t->n; i++) {
        moe_mc_item *it = &t->items[i];
        free(it->id);
        free(it->context);
        for (size_t c = 0; c < it->n_choices; c++) free(it->choices[c]);
        free(it->choices);
    }
    free(t->items);
    memset(t, 0, sizeof *t);
}

/* One line's object into *it; errors say what the line lacks. */
static int parse_item(const moe_json_value *v, moe_mc_item *it, const char *where, moe_err *err) {
    if (v->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: expected a JSON object {\"context\", \"choices\", \"gold\", \"id\"}", where);
    const moe_json_value *ctx = moe_json_get(v, "context"), *ch = moe_json_get(v, "choices"),
                     *gold = moe_json_get(v, "gold"), *id = moe_json_get(v, "id");
    if (!ctx) {  /* one of lm-evaluation-harness's forms? */
        int h = moe_harness_item(v, it, where, err);
        if (h != 0) {
            if (h > 0 && !(it->id = dup_str("", 0, err))) return -1;
            return h > 0 ? 0 : -1;
        }
    }
    if (!ctx || ctx->type != MOE_JSON_STRING)
        return moe_errf(err, "%s: expected a string \"context\"", where);
    if (!ch || ch->type != MOE_JSON_ARRAY || ch->count < 2)
        return moe_errf(err, "%s: expected \"choices\": an array of at least 2 strings", where);
    for (size_t c = 0; c < ch->count; c++)
        if (ch->items[c].type != MOE_JSON_STRING || ch->items[c].len == 0)
            return moe_errf(err, "%s: choice %zu: expected a non-empty string", where, c);
    if (!gold || gold->type != MOE_JSON_NUMBER || gold->number != floor(gold->number) ||
        gold->number < 0 || gold->number >= (double)ch->count)
        return moe_errf(err, "%s: expected \"gold\": an integer index into the %zu choices",
                        where, ch->count);
    if (id && id->type != MOE_JSON_STRING)
        return moe_errf(err, "%s: expected \"id\" to be a string", where);
    it->gold = (int)gold->number;
    it->n_choices = ch->count;
    if (!(it->context = dup_str(ctx->string, ctx->len, err))) return -1;
    if (!(it->id = dup_str(id ? id->string : "", id ? id->len : 0, err))) return -1;
    if (!(it->choices = moe_calloc(ch->count, sizeof(char *), err))) return -1;
    for (size_t c = 0; c < ch->count; c++)
        if (!(it->choices[c] = dup_str(ch->items[c].string, ch->items[c].len, err))) return -1;
    return 0;
}

/* moe_json_parse says "PATH:1:COL: msg" for the one-line text; make it
 * "PATH:LINE:COL: msg". */
static int json_line_error(moe_err *err, const char *path, size_t line) {
    if (!err) return -1;
    size_t pl = strlen(path);
    unsigned col;
    int used = 0;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    if (!strncmp(old, path, pl) && sscanf(old + pl, ":%*u:%u: %n", &col, &used) == 1 && used > 0)
        return moe_errf(err, "%s:%zu:%u: %s (each task line must be one JSON object)", path, line, col,
                        old + pl + used);
    return moe_errf(err, "%s:%zu: %s", path, line, old);
}

int moe_task_load(const char *path, moe_task *t, moe_err *err) {
    memset(t, 0, sizeof *t);
    if (moe_path(t->path, sizeof t->path, err, "%s", path)) return -1;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t bl = strlen(base);
    if (bl > 6 && !strcmp(base + bl - 6, ".jsonl")) bl -= 6;
    if (bl >= sizeof t->name) bl = sizeof t->name - 1;
    memcpy(t->name, base, bl);
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (!text) return -1;
    size_t cap = 0, line = 0;
    int rc = 0;
    size_t bom = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;   /* a UTF-8 byte-order mark */
    for (char *p = text + bom; *p && !rc;) {
        char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        char where[4200];
        snprintf(where, sizeof where, "%s:%zu", path, line);
        size_t k = 0;
        while (k < l && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < l) {
            moe_json_value *v = moe_json_parse(p, l, path, err);
            if (!v) { rc = json_line_error(err, path, line); break; }
            if (t->n == cap) {
                cap = cap ? 2 * cap : 256;
                moe_mc_item *ni = realloc(t->items, cap * sizeof *ni);
                if (!ni) { moe_json_free(v); rc = moe_errf(err, "out of memory reading %s", path); break; }
                t->items = ni;
            }
            moe_mc_item *it = &t->items[t->n++];
            memset(it, 0, sizeof *it);
            it->line = line;
            rc = parse_item(v, it, where, err);
            moe_json_free(v);
        }
        p += l + (nl != NULL);
    }
    free(text);
    if (!rc && t->n == 0) rc = moe_errf(err, "%s: no task items (expected one JSON object per line)", path);
    if (rc) moe_task_free(t);
    return rc;
}

/* ---- scoring ------------------------------------------------------------ */

void moe_mc_pick(const double *ll, const size_t *bytes, size_t n, int *pick, int *pick_norm) {
    int a = 0, b = 0;
    for (size_t i = 1; i < n; i++) {
        if (ll[i] > ll[a]) a = (int)i;
        double x = ll[i] / (double)(bytes[i] ? bytes[i] : 1), y = ll[b] / (double)(bytes[b] ? bytes[b] : 1);
        if (x > y) b = (int)i;
    }
    *pick = a;
    *pick_norm = b;
}

typedef struct { int *ids; size_t n, n_cont; } mc_seq;  /* ids[n], the last n_cont are the continuation */

/* The harness's _encode_pair: trailing spaces of the context move to the
 * continuation; continuation = encode(ctx + cont)[len(encode(ctx)):]. */
static int encode_pair(const moe_tokenizer *tok, const char *context, const char *choice,
                       mc_seq *out, moe_err *err) {
    size_t cl = strlen(context), sp = 0;
    while (sp < cl && context[cl - 1 - sp] == ' ') sp++;
    cl -= sp;
    size_t chl = strlen(choice);
    moe_buf whole = {0};
    if (moe_buf_append(&whole, context, cl + sp) || moe_buf_append(&whole, choice, chl)) {
        moe_buf_free(&whole);
        return moe_errf(err, "out of memory");
    }
    uint32_t *cids = NULL, *wids = NULL;
    size_t nc = 0, nw = 0;
    int rc = 0;
    if (cl == 0) {  /* empty context: <|endoftext|> + encode(continuation) */
        rc = moe_tokenizer_encode(tok, whole.data, whole.len, &wids, &nw, err);
        nc = 1;
        if (!rc) {
            uint32_t *g = realloc(wids, (nw + 1) * sizeof *g);
            if (!g) rc = moe_errf(err, "out of memory");
            else { wids = g; memmove(wids + 1, wids, nw * sizeof *wids); wids[0] = moe_tokenizer_eot(tok); nw++; }
        }
    } else {
        rc = moe_tokenizer_encode(tok, context, cl, &cids, &nc, err);
        if (!rc) rc = moe_tokenizer_encode(tok, whole.data, whole.len, &wids, &nw, err);
    }
    if (!rc && nw <= nc) rc = moe_errf(err, "the choice '%s' encodes to no tokens after the context", choice);
    if (!rc) {
        out->ids = moe_malloc(nw * sizeof(int), err);
        if (!out->ids) rc = -1;
        else {
            for (size_t i = 0; i < nw; i++) out->ids[i] = (int)wids[i];
            out->n = nw;
            out->n_cont = nw - nc;
        }
    }
    free(cids);
    free(wids);
    moe_buf_free(&whole);
    return rc;
}

/* Forwards choices [c0, c1) as one batch, right-padded; sets ll, and
 * greedy[c] (when not NULL) to 1 iff every continuation token is the
 * argmax of its row of logits (ties: the lower id). */
static int score_batch(moe_model *m, const mc_seq *seq, size_t c0, size_t c1, int pad,
                       double *ll, int *greedy, moe_err *err) {
    size_t W = (size_t)m->cfg.max_seq_len, T = 1, B = c1 - c0;
    for (size_t c = c0; c < c1; c++) {
        size_t n = seq[c].n - 1 < W ? seq[c].n - 1 : W;
        if (n > T) T = n;
    }
    int *in = moe_malloc(B * T * sizeof(int), err), *tg = in ? moe_malloc(B * T * sizeof(int), err) : NULL;
    if (!tg) { free(in); return -1; }
    for (size_t b = 0; b < B; b++) {
        const mc_seq *s = &seq[c0 + b];
        size_t n = s->n - 1 < W ? s->n - 1 : W, start = s->n - 1 - n;  /* input = ids[start, start+n) */
        for (size_t i = 0; i < T; i++) {
            in[b * T + i] = i < n ? s->ids[start + i] : pad;
            /* target position i predicts ids[start+i+1]: in the continuation iff start+i+1 >= s->n - n_cont */
            tg[b * T + i] = i < n && start + i + 1 >= s->n - s->n_cont ? s->ids[start + i + 1] : -1;
        }
    }
    double loss;
    int rc = moe_model_forward(m, in, tg, B, T, &loss, NULL, err);
    for (size_t b = 0; b < B && !rc; b++) {
        double sum = 0.0;
        int all = 1;
        for (size_t i = 0; i < T; i++) {
            if (tg[b * T + i] < 0) continue;
            sum -= m->losses[b * T + i];
            all &= m->argmax[b * T + i] == tg[b * T + i];
        }
        ll[c0 + b] = sum;
        if (greedy) greedy[c0 + b] = all;
    }
    free(in);
    free(tg);
    return rc;
}

/* moe_mc_loglik, and greedy[n_choices] (may be NULL): every continuation
 * token is the model's argmax. */
static int loglik(moe_model *m, const moe_tokenizer *tok, const moe_mc_item *it,
                  double *ll, int *greedy, moe_err *err) {
    mc_seq *seq = moe_calloc(it->n_choices, sizeof *seq, err);
    if (!seq) return -1;
    int rc = 0;
    for (size_t c = 0; c < it->n_choices && !rc; c++) {
        rc = encode_pair(tok, it->context, it->choices[c], &seq[c], err);
        for (size_t i = 0; !rc && i < seq[c].n; i++)
            if (seq[c].ids[i] >= m->cfg.vocab_size)
                rc = moe_errf(err, "the tokenizer gives id %d, outside the model's vocabulary [0, %d)",
                              seq[c].ids[i], m->cfg.vocab_size);
    }
    /* causal models score all choices in one right-padded batch; the others
     * (expert choice looks across the batch) one choice at a time */
    const char *why;
    int causal = moe_config_causal(&m->cfg, &why);
    int pad = (int)moe_tokenizer_eot(tok);
    if (!rc && causal) rc = score_batch(m, seq, 0, it->n_choices, pad, ll, greedy, err);
    for (size_t c = 0; !rc && !causal && c < it->n_choices; c++)
        rc = score_batch(m, seq, c, c + 1, pad, ll, greedy, err);
    for (size_t c = 0; c < it->n_choices; c++) free(seq[c].ids);
    free(seq);
    return rc;
}

int moe_mc_loglik(moe_model *m, const moe_tokenizer *tok, const moe_mc_item *it,
                  double *ll, moe_err *err) {
    return loglik(m, tok, it, ll, NULL, err);
}

int moe_mc_eval(moe_model *m, const moe_tokenizer *tok, const moe_task *task, size_t limit,
                moe_mc_result *r, moe_err *err) {
    memset(r, 0, sizeof *r);
    size_t n = limit && limit < task->n ? limit : task->n, right = 0, right_norm = 0;
    int training = m->training, rc = 0;
    m->training = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_mc_item *it = &task->items[i];
        double ll[it->n_choices];
        size_t bytes[it->n_choices];
        int greedy[it->n_choices];
        rc = loglik(m, tok, it, ll, greedy, err);
        if (rc) { moe_err_prefix(err, "%s:%zu", task->path, it->line); break; }
        for (size_t c = 0; c < it->n_choices; c++) bytes[c] = strlen(it->choices[c]) - it->delim_bytes;
        int p, pn;
        moe_mc_pick(ll, bytes, it->n_choices, &p, &pn);
        if (it->last_word) p = pn = greedy[0] ? it->gold : -1;  /* LAMBADA: greedy match */
        right += p == it->gold;
        right_norm += pn == it->gold;
    }
    m->training = training;
    if (rc) return rc;
    r->n = n;
    r->acc = n ? (double)right / (double)n : 0.0;
    r->acc_norm = n ? (double)right_norm / (double)n : 0.0;
    r->acc_stderr = n > 1 ? sqrt(r->acc * (1 - r->acc) / (double)(n - 1)) : 0.0;
    r->acc_norm_stderr = n > 1 ? sqrt(r->acc_norm * (1 - r->acc_norm) / (double)(n - 1)) : 0.0;
    return 0;
}
