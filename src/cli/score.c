/* score.c — `moe score`: log-probability of every next token of a sequence. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/fileio.h"
#include "moe/json.h"
#include "moe/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe score --model DIR --tokens FILE [--precision fp32|bf16]\n\n"
        "FILE (or - for stdin) holds whitespace-separated token ids. Prints JSON:\n"
        "  {\"tokens\": n, \"logprobs\": [log p(t1|t0), ...], \"mean_loss\": x}\n"
        "Sequences longer than max_seq_len + 1 are scored in consecutive windows\n"
        "(the context restarts at each window). --precision: the matrix products'\n"
        "precision (default: the model's own).\n");
}

/* Parses whitespace-separated non-negative ids; errors name the file and position. */
static int parse_ids(const char *text, const char *what, int **ids, size_t *n, moe_err *err) {
    size_t cap = 1024;
    *n = 0;
    *ids = moe_malloc(cap * sizeof(int), err);
    if (!*ids) return -1;
    const char *p = text;
    while (1) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 2147483647 ||
            (*end && *end != ' ' && *end != '\n' && *end != '\t' && *end != '\r'))
            return moe_errf(err, "%s: token %zu: expected a non-negative integer id, found '%.*s'",
                            what, *n + 1, (int)(strcspn(p, " \t\r\n") < 20 ? strcspn(p, " \t\r\n") : 20), p);
        if (*n == cap) {
            int *g = realloc(*ids, 2 * cap * sizeof(int));
            if (!g) return moe_errf(err, "out of memory");
            *ids = g;
            cap *= 2;
        }
        (*ids)[(*n)++] = (int)v;
        p = end;
    }
    return 0;
}

int cmd_score(int argc, char **argv) {
    const char *model_dir = NULL, *tokens = NULL, *precision = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); return 0; }
        else if (!strcmp(a, "--model")) { if (!(model_dir = cli_value("score", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--tokens")) { if (!(tokens = cli_value("score", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--precision")) {
            if (!(precision = cli_value("score", argc, argv, &i)) || cli_precision("score", precision)) return 2;
        }
        else { fprintf(stderr, "moe score: unknown option '%s' (see --help)\n", a); return 2; }
    }
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
    }
    if (!text) { fprintf(stderr, "moe score: %s\n", err.msg); return 1; }
    int *ids = NULL;
    size_t n = 0;
    moe_model *m = NULL;
    int rc = 1;
    if (parse_ids(text, strcmp(tokens, "-") ? tokens : "<stdin>", &ids, &n, &err)) goto out;
    if (n < 2) { moe_errf(&err, "%s: need at least 2 tokens to score, found %zu", tokens, n); goto out; }
    if (moe_model_load(model_dir, &m, &err)) goto out;
    if (cli_inference_precision("score", m, precision, &err)) goto out;
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
            json_write_double(&o, -(double)m->losses[t]);
            total += m->losses[t];
        }
    }
    moe_buf_printf(&o, "], \"mean_loss\": ");
    json_write_double(&o, total / (double)(n - 1));
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
