/* tokenizer.c — `moe tokenizer train|encode|decode|info|convert`: learn a BPE
 * tokenizer from text, turn text into ids and ids into text with one, show
 * what a tokenizer file is, and write one in our format. */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/data/textdocs.h"
#include "moe/data/tokenizer.h"

static const char *TRAIN_USAGE =
    "usage: moe tokenizer train --input PATH... --vocab N --out FILE [--threads N]\n"
    "\n"
    "Learns a byte-level BPE tokenizer (GPT-2 pre-split) with N entries: the 256\n"
    "bytes, N-257 merges and <|endoftext|> (id N-1), and writes it to FILE\n"
    "(format: docs/FORMAT.md, \"Tokenizer file\").\n"
    "  --input PATH...  text files, folders of them, or .jsonl files with a \"text\"\n"
    "                   field per line (several paths may follow one --input)\n"
    "  --vocab N        vocabulary size, 257..16777216\n"
    "  --out FILE       where to write the tokenizer\n"
    "  --threads N      threads for counting (default: all cores)\n";

#define TOKENIZER_HELP \
    "  --tokenizer FILE  our tokenizer file, a tiktoken rank file, or 'bytes'. The\n" \
    "                    rank files of r50k_base, cl100k_base, o200k_base and Llama 3\n" \
    "                    (tokenizer.model) are recognised by their tokens and get\n" \
    "                    their split pattern and special tokens; any other splits\n" \
    "                    with gpt2 unless --pattern says otherwise\n" \
    "  --pattern NAME    split with gpt2 (= r50k), cl100k, o200k or llama3 (rank\n" \
    "                    files only)\n"

static const char *ENCODE_USAGE =
    "usage: moe tokenizer encode --tokenizer FILE|bytes [--pattern NAME] [--input FILE]\n"
    "                            [--allow-special] [--stats] [--quiet]\n"
    "\n"
    "Encodes the text of FILE (default: standard input) and prints the ids,\n"
    "separated by spaces, on one line.\n"
    TOKENIZER_HELP
    "  --allow-special   encode the texts of special tokens (e.g. <|endoftext|>) as\n"
    "                    their ids (default: as plain text)\n"
    "  --stats           print ids, bytes, encoding time and MB/s on standard error\n"
    "  --quiet           do not print the ids\n";

static const char *INFO_USAGE =
    "usage: moe tokenizer info --tokenizer FILE|bytes [--pattern NAME]\n"
    "\n"
    "Prints what the tokenizer is: kind, vocabulary size, split pattern, the\n"
    "known rank table it matches, eot and the special tokens.\n"
    TOKENIZER_HELP;

static const char *CONVERT_USAGE =
    "usage: moe tokenizer convert --tokenizer FILE [--pattern NAME] --out FILE\n"
    "\n"
    "Writes the tokenizer in our format (docs/FORMAT.md, \"Tokenizer file\"), which\n"
    "records its split pattern and special tokens: the way to give a rank file\n"
    "that is not recognised a pattern for every command that reads it.\n"
    TOKENIZER_HELP
    "  --out FILE        where to write it\n";

static const char *DECODE_USAGE =
    "usage: moe tokenizer decode --tokenizer FILE|bytes [--pattern NAME] [--input FILE]\n"
    "\n"
    "Reads token ids (decimal, separated by white space) from FILE (default:\n"
    "standard input) and writes the bytes they stand for to standard output.\n"
    TOKENIZER_HELP;

static const char *USAGE =
    "usage: moe tokenizer <train|encode|decode|info|convert> [options]\n"
    "\n"
    "  train    learn a BPE tokenizer from text\n"
    "  encode   text -> ids\n"
    "  decode   ids -> text\n"
    "  info     what a tokenizer file is (pattern, special tokens)\n"
    "  convert  write a tokenizer (e.g. a tiktoken rank file) in our format\n"
    "\n"
    "'moe tokenizer <sub> --help' describes each.\n";

static int is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* Reads a whole stream. */
static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap * 2 + 1);
            if (!b) { free(buf); return NULL; }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) { free(buf); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

static char *read_input(const char *cmd, const char *path, size_t *len) {
    FILE *f = path ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "moe tokenizer %s: %s: cannot open: %s\n", cmd, path, strerror(errno));
        return NULL;
    }
    char *text = read_stream(f, len);
    if (!text) fprintf(stderr, "moe tokenizer %s: %s: read error\n", cmd, path ? path : "<stdin>");
    if (path) fclose(f);
    return text;
}

/* ------------------------------------------------------------------ train */

typedef struct progress_state {
    int tty;
    double t0, last;
    const char *phase;
} progress_state;

static void on_progress(void *user, const char *phase, size_t done, size_t total) {
    progress_state *p = user;
    if (!p->tty) return;
    double now = omp_get_wtime();
    if (p->phase == phase && now - p->last < 0.2 && done < total) return;
    if (p->phase && strcmp(p->phase, phase)) fputc('\n', stderr);
    p->phase = phase;
    p->last = now;
    if (!strcmp(phase, "count"))
        fprintf(stderr, "\rcounting chunks  %5.1f%%  %.0f MB", total ? 100.0 * done / total : 100.0,
                done / 1e6);
    else
        fprintf(stderr, "\rlearning merges  %zu / %zu", done, total);
    fflush(stderr);
}

typedef struct train_opts {
    const char *out;
    const char **inputs;    /* [n_inputs] */
    size_t n_inputs;
    long vocab, threads;
} train_opts;

/* 0 to go on, 1 after --help, 2 on a usage error (its line printed). */
static int parse_train(int argc, char **argv, train_opts *o) {
    const char *cmd = "tokenizer train";
    enum { O_INPUT = 256, O_VOCAB, O_OUT, O_THREADS };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"input", required_argument, 0, O_INPUT},
        {"vocab", required_argument, 0, O_VOCAB}, {"out", required_argument, 0, O_OUT},
        {"threads", required_argument, 0, O_THREADS}, {0, 0, 0, 0}};
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
        case 'h': fputs(TRAIN_USAGE, stdout); return 1;
        case 1: case O_INPUT: o->inputs[o->n_inputs++] = p.value; break;
        case O_VOCAB: if (cli_int(&p, p.value, 257, 1 << 24, &o->vocab)) return 2; break;
        case O_OUT: o->out = p.value; break;
        case O_THREADS: if (cli_int(&p, p.value, 1, 1024, &o->threads)) return 2; break;
        default: return 2;
        }
    }
    if (!o->n_inputs || !o->vocab || !o->out) {
        fprintf(stderr, "moe %s: --input, --vocab and --out are required\n", cmd);
        return 2;
    }
    return 0;
}

static int train(int argc, char **argv) {
    const char *cmd = "tokenizer train";
    train_opts o = {0};
    o.inputs = calloc((size_t)argc, sizeof *o.inputs);
    if (!o.inputs) return 1;
    int prc = parse_train(argc, argv, &o);
    if (prc) { free(o.inputs); return prc == 1 ? 0 : 2; }
    const char **inputs = o.inputs, *out = o.out;
    size_t n_inputs = o.n_inputs;
    long vocab = o.vocab;
    if (o.threads) omp_set_num_threads((int)o.threads);

    double t0 = omp_get_wtime();
    moe_err err;
    moe_docs docs = {0};
    for (size_t i = 0; i < n_inputs; i++) {
        if (moe_docs_add(&docs, inputs[i], NULL, &err)) {
            fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
            moe_docs_free(&docs);
            free(inputs);
            return 1;
        }
    }
    free(inputs);
    const char **texts = malloc((docs.n ? docs.n : 1) * sizeof *texts);
    size_t *lens = malloc((docs.n ? docs.n : 1) * sizeof *lens);
    if (!texts || !lens) { fprintf(stderr, "moe %s: out of memory\n", cmd); return 1; }
    for (size_t i = 0; i < docs.n; i++) { texts[i] = docs.docs[i].text; lens[i] = docs.docs[i].len; }
    double t_read = omp_get_wtime();

    progress_state ps = {isatty(2), t0, 0, NULL};
    moe_tokenizer *tok = NULL;
    moe_bpe_trainer *tr = moe_bpe_trainer_new(&err);
    int rc = !tr || moe_bpe_trainer_add(tr, texts, lens, docs.n, on_progress, &ps, &err);
    double t_count = omp_get_wtime();
    uint64_t chunks = 0;
    size_t unique = 0;
    if (!rc) {
        moe_bpe_trainer_stats(tr, &chunks, &unique);
        rc = moe_bpe_trainer_finish(tr, (uint32_t)vocab, on_progress, &ps, &tok, &err);
    }
    if (ps.tty && ps.phase) fputc('\n', stderr);
    double t_merge = omp_get_wtime();
    if (!rc) rc = moe_tokenizer_save(tok, out, &err);
    if (rc) fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
    else {
        uint32_t got = moe_tokenizer_vocab_size(tok);
        if (got < (uint32_t)vocab)
            fprintf(stderr, "moe %s: warning: the text has too few distinct pairs: vocabulary %u, not %ld\n",
                    cmd, got, vocab);
        printf("tokenizer: vocab %u (%u merges) from %zu docs, %.1f MB, %llu chunks (%zu distinct); "
               "read %.1f s, count %.1f s, merge %.1f s -> %s\n",
               got, got - 257, docs.n, docs.bytes / 1e6, (unsigned long long)chunks, unique,
               t_read - t0, t_count - t_read, t_merge - t_count, out);
    }
    moe_tokenizer_free(tok);
    moe_bpe_trainer_free(tr);
    free(texts);
    free(lens);
    moe_docs_free(&docs);
    return rc ? 1 : 0;
}

/* ------------------------------------------------------- encode / decode */

typedef struct io_opts {
    const char *tokenizer, *input, *pattern, *out;
    int allow_special, stats, quiet;
} io_opts;

/* Loads o->tokenizer and applies o->pattern; prints the error. */
static moe_tokenizer *load_tok(const char *cmd, const io_opts *o) {
    moe_err err;
    moe_tokenizer *tok;
    moe_tok_pattern pat;
    if (moe_tokenizer_load(o->tokenizer, &tok, &err)) {
        fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
        return NULL;
    }
    if (!o->pattern) return tok;
    if (moe_tok_pattern_parse(o->pattern, strlen(o->pattern), &pat) || pat == MOE_PAT_NONE) {
        fprintf(stderr, "moe %s: --pattern: expected gpt2, r50k, cl100k, o200k or llama3, found '%s'\n",
                cmd, o->pattern);
    } else if (moe_tokenizer_set_pattern(tok, pat, &err)) {
        fprintf(stderr, "moe %s: --pattern: %s\n", cmd, err.msg);
    } else {
        return tok;
    }
    moe_tokenizer_free(tok);
    return NULL;
}

/* special_ok: 1 for encode's options, 2 for info / convert (no --input). */
static int parse_io(const char *cmd, const char *usage, int argc, char **argv, int special_ok, io_opts *o) {
    enum { O_TOKENIZER = 256, O_INPUT, O_PATTERN, O_OUT, O_ALLOW_SPECIAL, O_STATS, O_QUIET };
    static const struct option decode_opts[] = {
        {"help", no_argument, 0, 'h'}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"input", required_argument, 0, O_INPUT}, {"pattern", required_argument, 0, O_PATTERN},
        {0, 0, 0, 0}};
    static const struct option encode_opts[] = {
        {"help", no_argument, 0, 'h'}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"input", required_argument, 0, O_INPUT}, {"pattern", required_argument, 0, O_PATTERN},
        {"allow-special", no_argument, 0, O_ALLOW_SPECIAL}, {"stats", no_argument, 0, O_STATS},
        {"quiet", no_argument, 0, O_QUIET}, {0, 0, 0, 0}};
    static const struct option info_opts[] = {
        {"help", no_argument, 0, 'h'}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"pattern", required_argument, 0, O_PATTERN}, {"out", required_argument, 0, O_OUT},
        {0, 0, 0, 0}};
    const struct option *opts = special_ok == 2 ? info_opts : special_ok ? encode_opts : decode_opts;
    memset(o, 0, sizeof *o);
    cli_parser p;
    cli_begin(&p, cmd, argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': fputs(usage, stdout); return 1;
        case O_TOKENIZER: o->tokenizer = p.value; break;
        case O_INPUT: o->input = p.value; break;
        case O_PATTERN: o->pattern = p.value; break;
        case O_OUT: o->out = p.value; break;
        case O_ALLOW_SPECIAL: o->allow_special = 1; break;
        case O_STATS: o->stats = 1; break;
        case O_QUIET: o->quiet = 1; break;
        default: return -1;
        }
    }
    if (cli_positionals(&p, 0) < 0) return -1;
    if (!o->tokenizer) {
        fprintf(stderr, "moe %s: --tokenizer is required\n", cmd);
        return -1;
    }
    if (special_ok == 2 && !o->out && usage == CONVERT_USAGE) {
        fprintf(stderr, "moe %s: --out is required\n", cmd);
        return -1;
    }
    return 0;
}

static int encode(int argc, char **argv) {
    const char *cmd = "tokenizer encode";
    io_opts o;
    int pr = parse_io(cmd, ENCODE_USAGE, argc, argv, 1, &o);
    if (pr) return pr > 0 ? 0 : 2;  /* --help, or an option error already reported */
    moe_err err;
    moe_tokenizer *tok = load_tok(cmd, &o);
    if (!tok) return 1;
    size_t len;
    char *text = read_input("encode", o.input, &len);
    if (!text) { moe_tokenizer_free(tok); return 1; }
    uint32_t *ids;
    size_t n;
    double t0 = omp_get_wtime();
    int rc = moe_tokenizer_encode_ex(tok, text, len, o.allow_special ? MOE_ENC_ALLOW_SPECIAL : 0,
                                     &ids, &n, &err);
    double secs = omp_get_wtime() - t0;
    free(text);
    moe_tokenizer_free(tok);
    if (rc) { fprintf(stderr, "moe %s: %s\n", cmd, err.msg); return 1; }
    if (o.stats)
        fprintf(stderr, "encode: %zu ids from %zu bytes in %.3f s (%.2f MB/s, %d threads)\n", n, len, secs,
                secs > 0 ? len / 1e6 / secs : 0.0, omp_get_max_threads());
    if (o.quiet) { free(ids); return 0; }
    char buf[1 << 16];
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        if (b > sizeof buf - 16) { fwrite(buf, 1, b, stdout); b = 0; }
        b += (size_t)snprintf(buf + b, sizeof buf - b, i + 1 < n ? "%u " : "%u", ids[i]);
    }
    buf[b++] = '\n';
    fwrite(buf, 1, b, stdout);
    free(ids);
    if (fflush(stdout)) { fprintf(stderr, "moe %s: cannot write the output\n", cmd); return 1; }
    return 0;
}

static int decode(int argc, char **argv) {
    const char *cmd = "tokenizer decode";
    io_opts o;
    int pr = parse_io(cmd, DECODE_USAGE, argc, argv, 0, &o);
    if (pr) return pr > 0 ? 0 : 2;
    moe_err err;
    moe_tokenizer *tok = load_tok(cmd, &o);
    if (!tok) return 1;
    size_t len;
    char *text = read_input("decode", o.input, &len);
    if (!text) { moe_tokenizer_free(tok); return 1; }
    moe_ids ids = {0};
    int rc = 0;
    size_t line = 1;
    for (size_t p = 0; p < len && !rc;) {
        char c = text[p];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') { line += c == '\n'; p++; continue; }
        size_t q = p;
        uint64_t v = 0;
        while (q < len && text[q] >= '0' && text[q] <= '9' && v <= UINT32_MAX) v = v * 10 + (uint64_t)(text[q++] - '0');
        int sep = q == len || text[q] == ' ' || text[q] == '\t' || text[q] == '\n' || text[q] == '\r';
        if (q == p || !sep || v >= moe_tokenizer_vocab_size(tok)) {
            size_t e = p;
            while (e < len && e - p < 20 && text[e] != ' ' && text[e] != '\n' && text[e] != '\t') e++;
            char q[96];
            fprintf(stderr, "moe %s: %s:%zu: expected a token id in [0, %u), found '%s'\n", cmd,
                    o.input ? o.input : "<stdin>", line, moe_tokenizer_vocab_size(tok),
                    cli_quote(q, sizeof q, text + p, e - p));
            rc = 1;
            break;
        }
        if (moe_ids_push(&ids, (uint32_t)v)) { fprintf(stderr, "moe %s: out of memory\n", cmd); rc = 1; }
        p = q;
    }
    free(text);
    moe_buf out = {0};
    if (!rc && moe_tokenizer_decode(tok, ids.ids, ids.n, &out, &err)) {
        fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
        rc = 1;
    }
    if (!rc && out.len && fwrite(out.data, 1, out.len, stdout) != out.len) rc = 1;
    if (!rc && fflush(stdout)) rc = 1;
    moe_buf_free(&out);
    moe_ids_free(&ids);
    moe_tokenizer_free(tok);
    return rc;
}

static int info(int argc, char **argv) {
    const char *cmd = "tokenizer info";
    io_opts o;
    int pr = parse_io(cmd, INFO_USAGE, argc, argv, 2, &o);
    if (pr) return pr > 0 ? 0 : 2;
    moe_tokenizer *tok = load_tok(cmd, &o);
    if (!tok) return 1;
    static const char *kinds[] = {"bytes", "bpe", "ranks"};
    const char *known = moe_tokenizer_vocab_name(tok);
    uint32_t n_sp = moe_tokenizer_n_special(tok), id;
    printf("kind %s\nvocab_size %u\npattern %s\nknown_table %s\neot %u\nspecial_tokens %u\n",
           kinds[moe_tokenizer_kind(tok)], moe_tokenizer_vocab_size(tok),
           moe_tok_pattern_name(moe_tokenizer_pattern(tok)), known ? known : "none", moe_tokenizer_eot(tok), n_sp);
    for (uint32_t i = 0; i < n_sp; i++) {
        const char *text = moe_tokenizer_special(tok, i, &id);
        printf("special %u %s\n", id, text);
    }
    moe_tokenizer_free(tok);
    return fflush(stdout) ? 1 : 0;
}

static int convert(int argc, char **argv) {
    const char *cmd = "tokenizer convert";
    io_opts o;
    int pr = parse_io(cmd, CONVERT_USAGE, argc, argv, 2, &o);
    if (pr) return pr > 0 ? 0 : 2;
    moe_tokenizer *tok = load_tok(cmd, &o);
    if (!tok) return 1;
    moe_err err;
    int rc = moe_tokenizer_save(tok, o.out, &err);
    if (rc) fprintf(stderr, "moe %s: %s\n", cmd, err.msg);
    else printf("tokenizer: %s, vocab %u, pattern %s -> %s\n", o.tokenizer, moe_tokenizer_vocab_size(tok),
                moe_tok_pattern_name(moe_tokenizer_pattern(tok)), o.out);
    moe_tokenizer_free(tok);
    return rc ? 1 : 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) { fputs(USAGE, stderr); return 2; }
    if (is_help(argv[1]) || !strcmp(argv[1], "help")) { fputs(USAGE, stdout); return 0; }
    if (!strcmp(argv[1], "train")) return train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "encode")) return encode(argc - 1, argv + 1);
    if (!strcmp(argv[1], "decode")) return decode(argc - 1, argv + 1);
    if (!strcmp(argv[1], "info")) return info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "convert")) return convert(argc - 1, argv + 1);
    fprintf(stderr, "moe tokenizer: unknown subcommand '%s' (train, encode, decode, info or convert; see --help)\n",
            argv[1]);
    return 2;
}
