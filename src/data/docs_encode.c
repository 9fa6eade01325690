/* docs_encode.c — documents (include/moe/data/textdocs.h) into one token file in
 * memory: every document encoded, in parallel, and followed by
 * <|endoftext|>, with the document table, the domains that documents use
 * and the tokenizer recorded (what `moe prepare` writes). */
#include "moe/data/textdocs.h"

#include <stdlib.h>
#include <string.h>

#include "moe/data/data.h"
#include "moe/data/tokenizer.h"

/* enc[i] = document i's ids and <|endoftext|>, threads at a time. */
static int encode_all(const moe_docs *docs, const moe_tokenizer *tok, int threads, const moe_progress *progress,
                      moe_ids *enc, moe_err *err) {
    const char **texts = moe_malloc((docs->n ? docs->n : 1) * sizeof *texts, err);
    size_t *lens = texts ? moe_malloc((docs->n ? docs->n : 1) * sizeof *lens, err) : NULL;
    if (!lens) { free(texts); return -1; }
    for (size_t i = 0; i < docs->n; i++) { texts[i] = docs->docs[i].text; lens[i] = docs->docs[i].len; }
    size_t at;
    int rc = moe_encode_pieces(tok, texts, lens, docs->n, 0, threads, progress, enc, &at, err);
    free(texts);
    free(lens);
    if (rc) return at < docs->n ? moe_err_prefix(err, "document %zu", at + 1) : -1;
    for (size_t i = 0; i < docs->n; i++)
        if (moe_ids_push(&enc[i], moe_tokenizer_eot(tok))) return moe_errf(err, "out of memory");
    return 0;
}

/* Joins enc[docs->n] into t (which owns everything it points to); domains
 * that no document uses are dropped, the others numbered in order of first
 * use. Frees each enc[i] once copied. */
static int join(const moe_docs *docs, moe_ids *enc, moe_tokens *t, moe_err *err) {
    size_t total = 0;
    for (size_t i = 0; i < docs->n; i++) total += enc[i].n;
    uint32_t *remap = malloc((docs->n_domains ? docs->n_domains : 1) * sizeof *remap);
    t->ids = malloc((total ? total : 1) * sizeof *t->ids);
    t->doc_start = malloc(docs->n * sizeof *t->doc_start);
    t->doc_domain = malloc(docs->n * sizeof *t->doc_domain);
    t->domain_names = calloc(docs->n_domains ? docs->n_domains : 1, sizeof *t->domain_names);
    if (!remap || !t->ids || !t->doc_start || !t->doc_domain || !t->domain_names) {
        free(remap);
        return moe_errf(err, "out of memory");
    }
    for (size_t d = 0; d < docs->n_domains; d++) remap[d] = UINT32_MAX;
    size_t o = 0;
    int rc = 0;
    for (size_t i = 0; i < docs->n; i++) {
        uint32_t dm = docs->docs[i].domain;
        if (remap[dm] == UINT32_MAX) {
            remap[dm] = (uint32_t)t->n_domains;
            if (!(t->domain_names[t->n_domains++] = strdup(docs->domains[dm]))) rc = -1;
        }
        t->doc_start[i] = o;
        t->doc_domain[i] = remap[dm];
        memcpy(t->ids + o, enc[i].ids, enc[i].n * sizeof *t->ids);
        o += enc[i].n;
        moe_ids_free(&enc[i]);
    }
    free(remap);
    t->n = total;
    t->n_docs = docs->n;
    return rc ? moe_errf(err, "out of memory") : 0;
}

int moe_docs_encode(const moe_docs *docs, const moe_tokenizer *tok, int threads, const moe_progress *progress,
                    moe_tokens *out, moe_err *err) {
    memset(out, 0, sizeof *out);
    moe_ids *enc = calloc(docs->n ? docs->n : 1, sizeof *enc);
    if (!enc) return moe_errf(err, "out of memory");
    moe_buf text = {0};  /* the tokenizer, recorded in the file: train carries it into the checkpoints */
    int rc = encode_all(docs, tok, threads, progress, enc, err) || join(docs, enc, out, err) ||
             moe_tokenizer_serialize(tok, &text, err) ? -1 : 0;
    for (size_t i = 0; i < docs->n; i++) moe_ids_free(&enc[i]);
    free(enc);
    out->vocab_size = moe_tokenizer_vocab_size(tok);
    out->tokenizer = text.data;
    out->tokenizer_len = text.len;
    if (rc) moe_tokens_free(out);
    return rc;
}
