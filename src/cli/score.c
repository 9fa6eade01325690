/* score.c — `moe score`: log-probability of every next token of a sequence. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"
#include "moe/model/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe score --model DIR --tokens FILE [--precision auto|fp32|bf16]\n\n"
        "FILE (or - for stdin) holds whitespace-separated token ids. Prints JSON:\n"
        "  {\"tokens\": n, \"logprobs\": [log p(t1|t0), ...], \"mean_loss\": x}\n"
        "Sequences longer than max_seq_len + 1 are scored in consecutive windows\n"
        "(the context restarts at each window). --precision: the matrix products'\n"
        "precision (default: the model's own).\n");
}

/* Parses whitespace-separated non-negative ids from len bytes (a NUL byte
 * is an error, not the end); errors name the file and position. */
static int is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
static int parse_ids(const char *text, size_t len, const char *what, int **ids, size_t *n, moe_err *err) {
    size_t cap = 1024;
    *n = 0;
    *ids = moe_malloc(cap * sizeof(int), err);
    if (!*ids) return -1;
    for (size_t p = 0; p < len;) {
        if (is_space(text[p])) { p++; continue; }
        size_t e = p;
        long v = 0;
        while (e < len && text[e] >= '0' && text[e] <= '9' && v <= 2147483647) v = v * 10 + (text[e++] - '0');
        if (e == p || v > 2147483647 || (e < len && !is_space(text[e]))) {
            char q[96];
            size_t w = p;
            while (w < len && w - p < 20 && !is_space(text[w])) w++;
            return moe_errf(err, "%s: token %zu: expected a non-negative integer id, found '%s'",
                            what, *n + 1, cli_quote(q, sizeof q, text + p, w - p));
        }
        if (*n == cap) {
            int *g = realloc(*ids, 2 * cap * sizeof(int));
            if (!g) return moe_errf(err, "out of memory");
            *ids = g;
            cap *= 2;
        }
        (*ids)[(*n)++] = (int)v;
        p = e;
    }
    return 0;
}

int cmd_score(int argc, char **argv) {
    enum { O_MODEL = 256, O_TOKENS, O_PRECISION };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
        {"tokens", required_argument, 0, O_TOKENS},
        {"precision", required_argument, 0, O_PRECISION}, {0, 0, 0, 0}};
    const char *model_dir = NULL, *tokens = NULL, *precision = NULL;
    cli_parser p;
    cli_begin(&p, "score", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_MODEL: model_dir = p.value; break;
        case O_TOKENS: tokens = p.value; break;
        case O_PRECISION: if (cli_precision("score", p.value)) return 2; precision = p.value; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!model_dir || !tokens) { fprintf(stderr, "moe score: --model and --tokens are required\n"); return 2; }
    moe_err err;
    size_t len;
    char *text = !strcmp(tokens, "-") ? NULL : moe_read_file(tokens, &len, &err);
    if (!strcmp(tokens, "-")) {
        moe_buf in = {0};
        char chunk[65536];
        size_t r;
        while ((r = fread(chunk, 1, sizeof chunk, stdin)) > 0) moe_buf_append(&in, chunk, r);
        text = in.data ? in.data : calloc(1, 1);
        len = in.len;
    }
    if (!text) { fprintf(stderr, "moe score: %s\n", err.msg); return 1; }
    int *ids = NULL;
    size_t n = 0;
    moe_model *m = NULL;
    int rc = 1;
    if (parse_ids(text, len, strcmp(tokens, "-") ? tokens : "<stdin>", &ids, &n, &err)) goto out;
    if (n < 2) { moe_errf(&err, "%s: need at least 2 tokens to score, found %zu", tokens, n); goto out; }
    if (moe_model_load_precision(model_dir, precision, &m, &err)) goto out;
    cli_inference_ready("score", m);
    size_t V = (size_t)m->cfg.vocab_size, W = (size_t)m->cfg.max_seq_len;
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= (int)V) {
            moe_errf(&err, "%s: token %zu is %d, outside the model's vocabulary [0, %zu)", tokens, i + 1, ids[i], V);
            goto out;
        }
    moe_buf o = {0};
    double total = 0.0;
    moe_buf_printf(&o, "{\"tokens\": %zu, \"logprobs\": [", n);
    for (size_t start = 0; start + 1 < n; start += W) {
        size_t T = n - 1 - start < W ? n - 1 - start : W;
        double loss;
        if (moe_model_forward(m, ids + start, ids + start + 1, 1, T, &loss, NULL, &err)) { moe_buf_free(&o); goto out; }
        for (size_t t = 0; t < T; t++) {
            moe_buf_printf(&o, start + t ? ", " : "");
            moe_json_write_double(&o, -(double)m->losses[t]);
            total += m->losses[t];
        }
    }
    moe_buf_printf(&o, "], \"mean_loss\": ");
    moe_json_write_double(&o, total / (double)(n - 1));
    moe_buf_printf(&o, "}\n");
    fwrite(o.data, 1, o.len, stdout);
    moe_buf_free(&o);
    rc = 0;
out:
    if (rc) fprintf(stderr, "moe score: %s\n", err.msg);
    free(text);
    free(ids);
    moe_model_free(m);
    return rc;
}
