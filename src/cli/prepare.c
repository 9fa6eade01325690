/* prepare.c — `moe prepare`: reads JSONL / text files / folders, encodes each
 * document (in parallel) followed by <|endoftext|>, and writes one token file
 * with the document table and domain names (include/moe/data.h). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/data.h"
#include "moe/textdocs.h"
#include "moe/tokenizer.h"

static const char *USAGE =
    "usage: moe prepare --input PATH... --out FILE.tok [--tokenizer FILE|bytes] [--threads N]\n"
    "                   [--domain-field KEY]\n"
    "       moe prepare --input FILE.bin --out FILE.tok (--tokenizer FILE | --vocab N)\n"
    "\n"
    "Encodes documents into one token file (docs/FORMAT.md), each document followed\n"
    "by <|endoftext|>, with a document table and domain names.\n"
    "  --input PATH...    .jsonl files ({\"text\": ..., \"domain\": ...} per line), text\n"
    "                     files (one document each), or folders of them (domain =\n"
    "                     first-level subfolder name, else \"default\")\n"
    "  --out FILE.tok     the token file to write (atomically)\n"
    "  --tokenizer FILE   a tokenizer file, a tiktoken rank file, or 'bytes' (default)\n"
    "  --threads N        encoding threads (default: all cores)\n"
    "  --domain-field KEY the JSONL key that names a document's domain (default\n"
    "                     \"domain\"; \"genre\" for data/corpus/*/brown.jsonl)\n"
    "\n"
    "A single input ending in .bin is a nanoGPT token file (raw uint16 ids, as its\n"
    "prepare.py writes train.bin / val.bin): its ids are copied as they are, checked\n"
    "against the vocabulary of --tokenizer (recorded in the file; e.g. tiktoken's\n"
    "r50k_base rank file for GPT-2) or of --vocab N, without a document table.\n";

static void bar(double frac, double t, double mb) {
    int w = 30, k = (int)(frac * w + 0.5);
    char s[64];
    for (int i = 0; i < w; i++) s[i] = i < k ? '#' : '.';
    s[w] = 0;
    fprintf(stderr, "\rencoding [%s] %5.1f%%  %.0f MB  %.1f s", s, 100 * frac, mb, t);
    fflush(stderr);
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* `moe prepare --input FILE.bin`: a nanoGPT token file into a moe one. The
 * vocabulary is the tokenizer's (recorded in the file) or vocab. */
static int prepare_raw16(const char *cmd, const char *in, const char *out, const char *tokpath,
                         uint32_t vocab) {
    moe_err err;
    moe_tokenizer *tok = NULL;
    moe_buf text = {0};
    int rc = 1;
    if (tokpath) {
        if (moe_tokenizer_load(tokpath, &tok, &err) || moe_tokenizer_serialize(tok, &text, &err)) goto fail;
        if (vocab && vocab != moe_tokenizer_vocab_size(tok)) {
            moe_errf(&err, "--vocab %u differs from the tokenizer's %u ids (%s)", vocab,
                     moe_tokenizer_vocab_size(tok), tokpath);
            goto fail;
        }
        vocab = moe_tokenizer_vocab_size(tok);
    } else if (!vocab) {
        moe_errf(&err, "%s: a nanoGPT .bin file does not say its vocabulary: give --tokenizer FILE "
                 "(recorded in the token file) or --vocab N (GPT-2: 50257)", in);
        goto fail;
    }
    size_t n;
    if (moe_tokens_convert_raw16(in, out, vocab, text.data, text.len, &n, &err)) goto fail;
    printf("prepare: %zu tokens of a nanoGPT file (vocab %u%s) -> %s\n", n, vocab,
           tokpath ? ", tokenizer recorded" : ", no tokenizer recorded", out);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
    moe_buf_free(&text);
    moe_tokenizer_free(tok);
    return rc;
}

int cmd_prepare(int argc, char **argv) {
    const char *cmd = "prepare", *out = NULL, *tokpath = "bytes", *domain_field = NULL;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    size_t n_inputs = 0;
    long threads = 0, vocab = 0;
    if (!inputs) return 1;
    enum { O_INPUT = 256, O_OUT, O_TOKENIZER, O_THREADS, O_DOMAIN_FIELD, O_VOCAB };
    int tok_given = 0;
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"input", required_argument, 0, O_INPUT},
        {"out", required_argument, 0, O_OUT}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"threads", required_argument, 0, O_THREADS}, {"domain-field", required_argument, 0, O_DOMAIN_FIELD},
        {"vocab", required_argument, 0, O_VOCAB},
        {0, 0, 0, 0}};
    cli_parser p;
    cli_begin(&p, cmd, argc, argv, opts);
    p.in_order = 1;
    int last_input = 0;  /* --input a b c: the paths after --input's value, in order */
    for (int c; (c = cli_next(&p)) != -1;) {
        if (c == 1 && !last_input) {
            fprintf(stderr, "moe %s: unexpected argument '%s' (input paths follow --input)\n", cmd, p.value);
            goto usage;
        }
        last_input = c == O_INPUT || c == 1;
        switch (c) {
        case 'h': fputs(USAGE, stdout); free(inputs); return 0;
        case 1: case O_INPUT: inputs[n_inputs++] = p.value; break;
        case O_OUT: out = p.value; break;
        case O_TOKENIZER: tokpath = p.value; tok_given = 1; break;
        case O_VOCAB: if (cli_int(&p, p.value, 1, 65536, &vocab)) goto usage; break;
        case O_THREADS: if (cli_int(&p, p.value, 1, 1024, &threads)) goto usage; break;
        case O_DOMAIN_FIELD: domain_field = p.value; break;
        default: goto usage;
        }
    }
    if (!n_inputs || !out) {
        fprintf(stderr, "moe %s: --input and --out are required\n", cmd);
        goto usage;
    }
    if (n_inputs == 1 && has_suffix(inputs[0], ".bin")) {
        int rc = prepare_raw16(cmd, inputs[0], out, tok_given ? tokpath : NULL, (uint32_t)vocab);
        free(inputs);
        return rc;
    }
    if (vocab) {
        fprintf(stderr, "moe %s: --vocab is for a nanoGPT .bin input; text takes its vocabulary from "
                "--tokenizer\n", cmd);
        goto usage;
    }
    int nth = threads ? (int)threads : omp_get_max_threads();
    double t0 = omp_get_wtime();

    moe_err err;
    moe_tokenizer *tok = NULL;
    moe_docs docs = {.domain_field = domain_field};
    int rc = 1;
    if (moe_tokenizer_load(tokpath, &tok, &err)) { fprintf(stderr, "moe %s: %s\n", cmd, err.msg); goto done; }
    for (size_t i = 0; i < n_inputs; i++)
        if (moe_docs_add(&docs, inputs[i], NULL, &err)) { fprintf(stderr, "moe %s: %s\n", cmd, err.msg); goto done; }
    if (!docs.n) { fprintf(stderr, "moe %s: the inputs hold no documents\n", cmd); goto done; }

    /* encode every document, in parallel */
    moe_ids *enc = calloc(docs.n, sizeof *enc);
    if (!enc) { fprintf(stderr, "moe %s: out of memory\n", cmd); goto done; }
    const int tty = isatty(2);
    uint64_t done_bytes = 0;
    int failed = 0;
    moe_err first = {{0}};
    double last = 0;
    #pragma omp parallel num_threads(nth)
    {
        moe_err lerr;
        moe_encoder *e = moe_encoder_new(tok, &lerr);
        if (!e) {
            #pragma omp critical
            { if (!failed) first = lerr; failed = 1; }
        }
        #pragma omp for schedule(dynamic, 16)
        for (size_t i = 0; i < docs.n; i++) {
            if (!e || failed) continue;
            if (moe_encoder_encode(e, docs.docs[i].text, docs.docs[i].len, 0, &enc[i], &lerr) ||
                moe_ids_push(&enc[i], moe_tokenizer_eot(tok))) {
                #pragma omp critical
                {
                    if (!failed) { first = lerr; moe_err_prefix(&first, "document %zu", i + 1); }
                    failed = 1;
                }
            }
            uint64_t d;
            #pragma omp atomic capture
            d = done_bytes += docs.docs[i].len;
            if (tty && omp_get_thread_num() == 0) {
                double now = omp_get_wtime();
                if (now - last > 0.1) { last = now; bar(docs.bytes ? (double)d / docs.bytes : 1, now - t0, d / 1e6); }
            }
        }
        moe_encoder_free(e);
    }
    if (tty) { bar(1, omp_get_wtime() - t0, docs.bytes / 1e6); fputc('\n', stderr); }
    if (failed) { fprintf(stderr, "moe %s: %s\n", cmd, first.msg); goto free_enc; }

    /* one token file; domains that no document uses are dropped */
    size_t total = 0;
    for (size_t i = 0; i < docs.n; i++) total += enc[i].n;
    moe_tokens t = {0};
    uint32_t *remap = malloc(docs.n_domains * sizeof *remap);
    uint64_t *dom_tokens = calloc(docs.n_domains, sizeof *dom_tokens);
    t.ids = malloc(total * sizeof *t.ids);
    t.doc_start = malloc(docs.n * sizeof *t.doc_start);
    t.doc_domain = malloc(docs.n * sizeof *t.doc_domain);
    t.domain_names = malloc(docs.n_domains * sizeof *t.domain_names);
    if (!remap || !dom_tokens || !t.ids || !t.doc_start || !t.doc_domain || !t.domain_names) {
        fprintf(stderr, "moe %s: out of memory\n", cmd);
        goto free_t;
    }
    for (size_t d = 0; d < docs.n_domains; d++) remap[d] = UINT32_MAX;
    size_t o = 0;
    for (size_t i = 0; i < docs.n; i++) {
        uint32_t dm = docs.docs[i].domain;
        if (remap[dm] == UINT32_MAX) {
            remap[dm] = (uint32_t)t.n_domains;
            t.domain_names[t.n_domains++] = docs.domains[dm];
        }
        t.doc_start[i] = o;
        t.doc_domain[i] = remap[dm];
        memcpy(t.ids + o, enc[i].ids, enc[i].n * sizeof *t.ids);
        o += enc[i].n;
        dom_tokens[remap[dm]] += enc[i].n;
        moe_ids_free(&enc[i]);
    }
    t.n = total;
    t.n_docs = docs.n;
    t.vocab_size = moe_tokenizer_vocab_size(tok);
    moe_buf tok_text = {0};  /* recorded in the file: train carries it into the checkpoints */
    if (moe_tokenizer_serialize(tok, &tok_text, &err)) { fprintf(stderr, "moe %s: %s\n", cmd, err.msg); goto free_t; }
    t.tokenizer = tok_text.data;
    t.tokenizer_len = tok_text.len;
    int wrc = moe_tokens_write(out, &t, &err);
    moe_buf_free(&tok_text);
    if (wrc) { fprintf(stderr, "moe %s: %s\n", cmd, err.msg); goto free_t; }
    double secs = omp_get_wtime() - t0;
    printf("prepare: %zu docs, %zu tokens (vocab %u, %.1f MB of text, %.2f bytes/token) in %.1f s -> %s; "
           "tokens per domain:",
           docs.n, total, t.vocab_size, docs.bytes / 1e6, total ? (double)docs.bytes / total : 0.0, secs, out);
    for (size_t d = 0; d < t.n_domains; d++)
        printf(" %s=%llu", t.domain_names[d], (unsigned long long)dom_tokens[d]);
    printf("\n");
    rc = 0;
free_t:
    free(remap);
    free(dom_tokens);
    free(t.ids);
    free(t.doc_start);
    free(t.doc_domain);
    free(t.domain_names);
free_enc:
    for (size_t i = 0; i < docs.n; i++) moe_ids_free(&enc[i]);
    free(enc);
done:
    moe_docs_free(&docs);
    moe_tokenizer_free(tok);
    free(inputs);
    return rc;
usage:  /* the error line above says what is wrong; --help has the rest */
    free(inputs);
    return 2;
}
