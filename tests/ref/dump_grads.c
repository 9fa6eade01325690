/* dump_grads.c — test helper: one forward + backward of moe on the first
 * sequential batch of a token file; writes logits, losses and every
 * parameter gradient to a safetensors file for the PyTorch comparison, and
 * prints the precision the products ran in.
 *   dump_grads MODEL_DIR TOKENS B T OUT.safetensors [STEP] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/data/data.h"
#include "moe/model/model.h"
#include "moe/util/safetensors.h"

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: dump_grads MODEL_DIR TOKENS B T OUT.safetensors [STEP]\n");
        return 2;
    }
    size_t B = (size_t)atol(argv[3]), T = (size_t)atol(argv[4]);
    moe_err err;
    moe_model *m;
    moe_tokens tok;
    moe_loader ld;
    if (moe_model_load(argv[1], &m, &err) || moe_tokens_read(argv[2], &tok, &err) ||
        moe_loader_init(&ld, &tok, B, T, 0, 0, &err)) {
        fprintf(stderr, "dump_grads: %s\n", err.msg);
        return 1;
    }
    printf("precision %s\n", moe_model_precision(m));  /* in effect (bf16 may fall back) */
    int *x = malloc(B * T * sizeof(int)), *y = malloc(B * T * sizeof(int));
    moe_loader_next(&ld, x, y, &err);
    double lm, aux;
    m->training = 1;
    m->step = argc > 6 ? atol(argv[6]) : 0;
    moe_model_zero_grad(m);
    m->keep_logits = 1;
    if (moe_model_forward_backward(m, x, y, B, T, 1.0f, &lm, &aux, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    size_t V = (size_t)m->cfg.vocab_size, n = m->layout.count;
    float *logits = malloc(B * T * V * sizeof(float));
    memcpy(logits, m->logits, B * T * V * sizeof(float));
    moe_st_entry *e = calloc(n + 2, sizeof *e);
    char (*names)[MOE_NAME_MAX + 8] = calloc(n, sizeof *names);
    double losses[2] = {lm, aux};
    e[0] = (moe_st_entry){.name = "logits", .dtype = MOE_ST_F32, .ndim = 2, .shape = {(int64_t)(B * T), (int64_t)V}, .data = logits};
    e[1] = (moe_st_entry){.name = "losses", .dtype = MOE_ST_F64, .ndim = 1, .shape = {2}, .data = losses};
    for (size_t i = 0; i < n; i++) {
        const moe_tensor *t = &m->layout.tensors[i];
        snprintf(names[i], sizeof names[i], "grad.%s", t->name);
        e[i + 2].name = names[i];
        e[i + 2].dtype = MOE_ST_F32;
        e[i + 2].ndim = t->ndim;
        memcpy(e[i + 2].shape, t->shape, sizeof t->shape);
        e[i + 2].data = m->grads + t->offset;
    }
    int rc = moe_st_write(argv[5], e, n + 2, NULL, NULL, 0, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    free(e); free(names); free(logits); free(x); free(y);
    moe_loader_free(&ld);
    moe_tokens_free(&tok);
    moe_model_free(m);
    return rc ? 1 : 0;
}
