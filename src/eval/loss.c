/* loss.c — next-token loss and perplexity of a token file, overall and per
 * domain (the domain of each prediction is that of its target token's
 * document). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/eval/eval.h"

int moe_loss_sums_init(moe_loss_sums *s, size_t n_domains, moe_err *err) {
    memset(s, 0, sizeof *s);
    if (n_domains == 0) n_domains = 1;
    s->n_domains = n_domains;
    s->nll = moe_calloc(n_domains, sizeof(double), err);
    s->count = s->nll ? moe_calloc(n_domains, sizeof(double), err) : NULL;
    if (!s->count) { moe_loss_sums_free(s); return -1; }
    return 0;
}

void moe_loss_sums_free(moe_loss_sums *s) {
    free(s->nll);
    free(s->count);
    memset(s, 0, sizeof *s);
}

uint32_t moe_tokens_domain_at(const moe_tokens *t, size_t pos) {
    if (t->n_docs == 0) return 0;
    size_t lo = 0, hi = t->n_docs;  /* last doc with doc_start <= pos */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->doc_start[mid] <= pos) lo = mid; else hi = mid;
    }
    return t->doc_domain[lo];
}

void moe_loss_sums_add(moe_loss_sums *s, const moe_tokens *t, size_t first,
                       const float *losses, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t d = moe_tokens_domain_at(t, first + 1 + i);
        if (d >= s->n_domains) d = 0;
        s->nll[d] += losses[i];
        s->count[d] += 1.0;
        s->total_nll += losses[i];
        s->total_count += 1.0;
    }
}

int moe_eval_loss(moe_model *m, const moe_tokens *t, size_t B, size_t T, size_t max_tokens,
                  moe_loss_sums *s, const moe_progress *progress, moe_err *err) {
    if (moe_loss_sums_init(s, t->n_domains, err)) return -1;
    if (T > (size_t)m->cfg.max_seq_len) T = (size_t)m->cfg.max_seq_len;
    if (B == 0) B = 1;
    int sampled = max_tokens && max_tokens < t->n;
    size_t n = sampled ? max_tokens : t->n;
    if (n < 2) return moe_errf(err, "need at least 2 tokens to evaluate, found %zu", n);
    if (t->vocab_size > (uint32_t)m->cfg.vocab_size)
        return moe_errf(err, "the token file's vocabulary (%u) is larger than the model's "
                        "vocab_size (%d)", t->vocab_size, m->cfg.vocab_size);
    size_t *starts = NULL, windows, rest;
    if (sampled) {  /* windows of T predictions (T + 1 tokens) across the file */
        if (T > max_tokens - 1) T = max_tokens - 1;
        if (moe_tokens_sample(t, T + 1, T, max_tokens, &starts, &s->read, err)) return -1;
        windows = s->read.windows;
        rest = 0;
    } else {
        size_t preds = n - 1;
        windows = preds / T;
        rest = preds - windows * T;
        s->read = (moe_read_info){.tokens = n, .of = t->n, .windows = windows + (rest > 0), .window = T};
    }
    int *in = moe_malloc(B * T * sizeof(int), err), *tg = in ? moe_malloc(B * T * sizeof(int), err) : NULL;
    if (!tg) { free(in); free(starts); return -1; }
    int training = m->training, rc = 0;
    m->training = 0;
    /* full windows, B per forward; then the remainder as one short window */
    for (size_t w = 0; w < windows + (rest > 0) && !rc;) {
        size_t bw = w < windows ? (windows - w < B ? windows - w : B) : 1;
        size_t tw = w < windows ? T : rest;
        for (size_t b = 0; b < bw; b++) {
            size_t first = starts ? starts[w + b] : (w + b) * T;
            for (size_t i = 0; i < tw; i++) {
                in[b * tw + i] = (int)moe_token(t, first + i);
                tg[b * tw + i] = (int)moe_token(t, first + i + 1);
            }
            moe_tokens_release(t, first, tw + 1);
        }
        double loss;
        rc = moe_model_forward(m, in, tg, bw, tw, &loss, NULL, err);
        for (size_t b = 0; b < bw && !rc; b++)
            moe_loss_sums_add(s, t, starts ? starts[w + b] : (w + b) * T, m->losses + b * tw, tw);
        w += bw;
        if (progress && progress->fn) progress->fn(progress->ctx, w, windows + (rest > 0));
    }
    m->training = training;
    free(in);
    free(tg);
    free(starts);
    return rc;
}

int moe_eval_loss_members(moe_model *m, const moe_tokens *t, size_t B, size_t T, size_t max_tokens,
                          moe_buf *out, double *loss, moe_err *err) {
    moe_loss_sums s;
    if (moe_eval_loss(m, t, B, T, max_tokens, &s, NULL, err)) { moe_loss_sums_free(&s); return -1; }
    *loss = s.total_count > 0 ? s.total_nll / s.total_count : NAN;
    moe_buf_printf(out, ", \"val_loss\": ");
    moe_json_write_double(out, *loss);
    moe_buf_printf(out, ", \"val\": {\"tokens\": %.0f, \"domains\": {", s.total_count);
    for (size_t d = 0, first = 1; d < s.n_domains; d++) {
        if (s.count[d] <= 0) continue;
        moe_buf_printf(out, "%s", first ? "" : ", ");
        const char *name = d < t->n_domains ? t->domain_names[d] : "all";
        moe_json_write_string(out, name, strlen(name));
        moe_buf_printf(out, ": ");
        moe_json_write_double(out, s.nll[d] / s.count[d]);
        first = 0;
    }
    moe_buf_printf(out, "}}");
    moe_loss_sums_free(&s);
    return 0;
}
