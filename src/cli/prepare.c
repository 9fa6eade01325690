/* prepare.c — `moe prepare`: reads JSONL / text files / folders, encodes each
 * document (in parallel) followed by <|endoftext|>, and writes one token file
 * with the document table and domain names (include/moe/data/data.h). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/data/data.h"
#include "moe/data/textdocs.h"
#include "moe/data/tokenizer.h"

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

/* The encoding's progress bar on a terminal, redrawn at most every 0.1 s. */
typedef struct bar_state {
    double t0, last;
} bar_state;

static void bar_fn(void *ctx, size_t done, size_t total) {
    bar_state *b = ctx;
    double now = omp_get_wtime();
    if (now - b->last <= 0.1) return;
    b->last = now;
    bar(total ? (double)done / (double)total : 1, now - b->t0, (double)done / 1e6);
}

typedef struct prepare_opts {
    const char *out, *tokpath, *domain_field;
    const char **inputs;            /* [n_inputs] */
    size_t n_inputs;
    long threads, vocab;
    int tok_given;
} prepare_opts;

/* 0 to go on, 1 after --help, 2 on a usage error (its line printed). */
static int parse(int argc, char **argv, prepare_opts *o) {
    const char *cmd = "prepare";
    enum { O_INPUT = 256, O_OUT, O_TOKENIZER, O_THREADS, O_DOMAIN_FIELD, O_VOCAB };
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
            return 2;
        }
        last_input = c == O_INPUT || c == 1;
        switch (c) {
        case 'h': fputs(USAGE, stdout); return 1;
        case 1: case O_INPUT: o->inputs[o->n_inputs++] = p.value; break;
        case O_OUT: o->out = p.value; break;
        case O_TOKENIZER: o->tokpath = p.value; o->tok_given = 1; break;
        case O_VOCAB: if (cli_int(&p, p.value, 1, 65536, &o->vocab)) return 2; break;
        case O_THREADS: if (cli_int(&p, p.value, 1, 1024, &o->threads)) return 2; break;
        case O_DOMAIN_FIELD: o->domain_field = p.value; break;
        default: return 2;
        }
    }
    if (!o->n_inputs || !o->out) {
        fprintf(stderr, "moe %s: --input and --out are required\n", cmd);
        return 2;
    }
    return 0;
}

/* The closing line: documents, tokens, bytes per token, time, and the
 * tokens of each domain. */
static void summary(const moe_docs *docs, const moe_tokens *t, double secs, const char *out) {
    printf("prepare: %zu docs, %zu tokens (vocab %u, %.1f MB of text, %.2f bytes/token) in %.1f s -> %s; "
           "tokens per domain:",
           docs->n, t->n, t->vocab_size, docs->bytes / 1e6, t->n ? (double)docs->bytes / t->n : 0.0, secs, out);
    for (size_t d = 0; d < t->n_domains; d++) {
        unsigned long long n = 0;
        for (size_t i = 0; i < t->n_docs; i++)
            if (t->doc_domain[i] == d) n += (i + 1 < t->n_docs ? t->doc_start[i + 1] : t->n) - t->doc_start[i];
        printf(" %s=%llu", t->domain_names[d], n);
    }
    printf("\n");
}

/* Text inputs: the documents read, encoded and written as one token file. */
static int prepare_text(const prepare_opts *o) {
    int nth = o->threads ? (int)o->threads : omp_get_max_threads();
    bar_state bs = {omp_get_wtime(), 0};
    moe_progress progress = {bar_fn, &bs};
    moe_err err;
    moe_tokenizer *tok = NULL;
    moe_docs docs = {.domain_field = o->domain_field};
    moe_tokens t = {0};
    int rc = 1, tty = isatty(2);
    if (moe_tokenizer_load(o->tokpath, &tok, &err)) goto fail;
    for (size_t i = 0; i < o->n_inputs; i++)
        if (moe_docs_add(&docs, o->inputs[i], NULL, &err)) goto fail;
    if (!docs.n) { moe_errf(&err, "the inputs hold no documents"); goto fail; }
    int erc = moe_docs_encode(&docs, tok, nth, tty ? &progress : NULL, &t, &err);
    if (tty) { bar(1, omp_get_wtime() - bs.t0, docs.bytes / 1e6); fputc('\n', stderr); }
    if (erc || moe_tokens_write(o->out, &t, &err)) goto fail;
    summary(&docs, &t, omp_get_wtime() - bs.t0, o->out);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe prepare: %s\n", err.msg);
done:
    moe_tokens_free(&t);
    moe_docs_free(&docs);
    moe_tokenizer_free(tok);
    return rc;
}

int cmd_prepare(int argc, char **argv) {
    prepare_opts o = {.tokpath = "bytes"};
    o.inputs = calloc((size_t)argc, sizeof *o.inputs);
    if (!o.inputs) return 1;
    int rc = parse(argc, argv, &o);
    if (rc) rc = rc == 1 ? 0 : 2;
    else if (o.n_inputs == 1 && has_suffix(o.inputs[0], ".bin"))
        rc = prepare_raw16("prepare", o.inputs[0], o.out, o.tok_given ? o.tokpath : NULL, (uint32_t)o.vocab);
    else if (o.vocab) {
        fprintf(stderr, "moe prepare: --vocab is for a nanoGPT .bin input; text takes its vocabulary from "
                "--tokenizer\n");
        rc = 2;
    } else {
        rc = prepare_text(&o);
    }
    free(o.inputs);
    return rc;
}
