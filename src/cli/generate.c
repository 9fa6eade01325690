/* generate.c — `moe generate`: sample text from a model, streaming it as it
 * is produced. (Recomputes the whole context for every token; a KV cache is
 * the next step.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/model.h"
#include "moe/rng.h"
#include "moe/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe generate --model DIR [--prompt TEXT] [--max-tokens N] [--temperature T]\n"
        "                    [--top-k K] [--seed S] [--tokenizer FILE]\n\n"
        "Streams the continuation of TEXT to stdout; stops at <|endoftext|> or after N tokens.\n"
        "The tokenizer is --tokenizer, else DIR's own 'tokenizer' file, else bytes when the\n"
        "model's vocab_size is 257. Temperature 0 is greedy decoding.\n");
}

/* Samples from logits[V] at temperature temp among the top_k largest (0: all). */
static int sample(const float *logits, size_t V, double temp, long top_k, moe_rng *rng) {
    size_t best = 0;
    for (size_t i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    if (temp <= 0) return (int)best;
    float kth = -INFINITY;  /* threshold: the k-th largest logit */
    if (top_k > 0 && (size_t)top_k < V) {
        float *tmp = malloc(V * sizeof(float));
        if (!tmp) return (int)best;
        memcpy(tmp, logits, V * sizeof(float));
        for (long k = 0; k < top_k; k++) {  /* partial selection: k is small */
            size_t m = (size_t)k;
            for (size_t i = (size_t)k + 1; i < V; i++) if (tmp[i] > tmp[m]) m = i;
            float t = tmp[k]; tmp[k] = tmp[m]; tmp[m] = t;
        }
        kth = tmp[top_k - 1];
        free(tmp);
    }
    double total = 0.0;
    for (size_t i = 0; i < V; i++)
        if (logits[i] >= kth) total += exp((logits[i] - logits[best]) / temp);
    double u = moe_rng_uniform(rng) * total;
    for (size_t i = 0; i < V; i++) {
        if (logits[i] < kth) continue;
        u -= exp((logits[i] - logits[best]) / temp);
        if (u <= 0) return (int)i;
    }
    return (int)best;
}

int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *prompt = "", *tok_path = NULL;
    long max_tokens = 200, top_k = 0, seed = 1;
    double temp = 0.8;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); return 0; }
        else if (!strcmp(a, "--model")) { if (!(model_dir = cli_value("generate", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--prompt")) { if (!(prompt = cli_value("generate", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--tokenizer")) { if (!(tok_path = cli_value("generate", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--max-tokens")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_int("generate", a, v, 1, 1000000, &max_tokens)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_int("generate", a, v, 0, 1 << 24, &top_k)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_int("generate", a, v, 0, 2147483647, &seed)) return 2;
        } else if (!strcmp(a, "--temperature")) {
            if (!(v = cli_value("generate", argc, argv, &i)) || cli_double("generate", a, v, 0, 100, &temp)) return 2;
        } else { fprintf(stderr, "moe generate: unknown option '%s' (see --help)\n", a); return 2; }
    }
    if (!model_dir) { fprintf(stderr, "moe generate: --model DIR is required\n"); return 2; }

    moe_err err;
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    uint32_t *ids = NULL;
    int *ctx = NULL;
    size_t n = 0;
    int rc = 1;
    char ckpt[4096], own[4200];
    if (moe_resolve_checkpoint(model_dir, ckpt, sizeof ckpt, &err) || moe_model_load(ckpt, &m, &err)) goto out;
    snprintf(own, sizeof own, "%s/tokenizer", ckpt);
    if (!tok_path && access(own, R_OK) == 0) tok_path = own;
    if (tok_path ? moe_tokenizer_load(tok_path, &tok, &err) : !(tok = moe_tokenizer_bytes(&err))) goto out;
    if (moe_tokenizer_vocab_size(tok) > (uint32_t)m->cfg.vocab_size) {
        moe_errf(&err, "tokenizer has %u ids but the model only %d%s", moe_tokenizer_vocab_size(tok),
                 m->cfg.vocab_size, tok_path ? "" : " (give --tokenizer FILE)");
        goto out;
    }
    if (moe_tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n, &err)) goto out;
    size_t W = (size_t)m->cfg.max_seq_len;
    ctx = malloc((n + (size_t)max_tokens + 1) * sizeof(int));
    if (!ctx) { moe_errf(&err, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) ctx[i] = (int)ids[i];
    if (n == 0) ctx[n++] = (int)moe_tokenizer_eot(tok);  /* an empty prompt starts a document */
    moe_rng rng;
    moe_rng_seed(&rng, (uint64_t)seed);
    fputs(prompt, stdout);
    fflush(stdout);
    for (long k = 0; k < max_tokens; k++) {
        size_t T = n < W ? n : W;
        if (moe_model_forward(m, ctx + n - T, NULL, 1, T, NULL, NULL, &err)) goto out;
        int next = sample(m->logits + (T - 1) * (size_t)m->cfg.vocab_size,
                          moe_tokenizer_vocab_size(tok), temp, top_k, &rng);
        if ((uint32_t)next == moe_tokenizer_eot(tok)) break;
        ctx[n++] = next;
        moe_buf piece = {0};
        uint32_t id = (uint32_t)next;
        if (moe_tokenizer_decode(tok, &id, 1, &piece, &err)) goto out;
        if (piece.len) fwrite(piece.data, 1, piece.len, stdout);
        fflush(stdout);
        moe_buf_free(&piece);
    }
    fputc('\n', stdout);
    rc = 0;
out:
    if (rc) fprintf(stderr, "moe generate: %s\n", err.msg);
    free(ctx);
    free(ids);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    return rc;
}
