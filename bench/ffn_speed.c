/* ffn_speed.c — benchmark: forward + backward time of one feed-forward slot
 * on N tokens: a dense SwiGLU FFN of intermediate size F against MoE layers
 * of E experts of size F at sparsity 1 - 1/E (TopK k = 1, and the ReLU router
 * with its logits shifted so that one expert in E is active on average), i.e.
 * the same active size. Prints a table with the MoE / dense ratios and writes
 * JSON. Usage: ffn_speed [OUT.json] [REPEATS] */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/model/ffn.h"
#include "moe/util/rng.h"

typedef struct { const char *name, *ffn, *router; } variant;
typedef struct { int D, F, E; size_t N; } shape;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of forward + backward; *sparsity of the routed experts. */
static double time_ffn(const variant *v, const shape *s, int repeats, double *sparsity) {
    moe_config c;
    moe_err err;
    moe_config_defaults(&c);
    c.hidden = s->D; c.ffn_dim = s->F; c.n_experts = s->E; c.top_k = 1; c.n_layers = 1;
    strcpy(c.ffn, v->ffn);
    strcpy(c.router, v->router);
    if (moe_config_finalize(&c, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    moe_ffn *f;
    if (moe_ffn_create(&c, 0, &f, &err)) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    moe_layout L = {0};
    f->ops->layout(f, &L, "mlp");
    float *p = calloc(L.total, sizeof(float)), *g = calloc(L.total, sizeof(float));
    moe_layout_rewind(&L, p, g);
    f->ops->layout(f, &L, "mlp");
    moe_rng r;
    moe_rng_seed(&r, 1);
    for (size_t i = 0; i < L.total; i++) p[i] = (float)(0.05 * moe_rng_normal(&r));
    size_t N = s->N, D = (size_t)s->D;
    float *x = malloc(N * D * sizeof(float)), *y = malloc(N * D * sizeof(float));
    float *dy = malloc(N * D * sizeof(float)), *dx = malloc(N * D * sizeof(float));
    for (size_t i = 0; i < N * D; i++) { x[i] = (float)moe_rng_normal(&r); dy[i] = (float)moe_rng_normal(&r); }
    if (!strcmp(v->router, "relu") && strcmp(v->ffn, "dense")) {
        /* a constant input feature and a negative router weight on it act as
         * a bias: P(logit > 0) = 1/E, so sparsity ~ 1 - 1/E as in stage III */
        const moe_tensor *wr = moe_layout_find(&L, "mlp.router.weight");
        float *w = p + wr->offset;
        double sd = 0.0;
        for (size_t d = 1; d < D; d++) sd += (double)w[d] * w[d];
        double z = 0.0;  /* Phi^-1(1 - 1/E) by bisection */
        for (double lo = 0.0, hi = 10.0, k = 0; k < 60; k++) {
            z = 0.5 * (lo + hi);
            if (0.5 * erfc(z / sqrt(2.0)) > 1.0 / s->E) lo = z; else hi = z;
        }
        for (size_t t = 0; t < N; t++) x[t * D] = 1.0f;
        for (int e = 0; e < s->E; e++) w[(size_t)e * D] = (float)(-z * sqrt(sd));
    }
    moe_routing_state rs = {1e-8f, 0, 0};
    moe_ffn_ctx ctx = {.B = 1, .T = N, .training = 1, .loss_scale = 1.0f, .rs = &rs};
    double *t = malloc((size_t)repeats * sizeof(double));
    for (int k = -2; k < repeats; k++) {
        double t0 = moe_now_seconds();
        if (f->ops->forward(f, y, x, N, &ctx, &err) || f->ops->backward(f, dx, dy, x, N, &ctx, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            exit(1);
        }
        if (k >= 0) t[k] = moe_now_seconds() - t0;
    }
    qsort(t, (size_t)repeats, sizeof(double), cmp_double);
    double med = t[repeats / 2];
    *sparsity = rs.total_pairs > 0 ? 1.0 - rs.active_pairs / rs.total_pairs : 0.0;
    free(t); free(x); free(y); free(dy); free(dx); free(p); free(g);
    moe_layout_free(&L);
    moe_ffn_destroy(f);
    return med;
}

/* The CPU in words, for the JSON: /proc/cpuinfo's model name and the widest
 * vector unit the kernels use. */
static void cpu_name(char *out, size_t cap) {
    char line[512], name[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            snprintf(name, sizeof name, "%s", strchr(line, ':') + 2);
            name[strcspn(name, "\n")] = 0;
            break;
        }
    if (f) fclose(f);
    __builtin_cpu_init();
    const char *isa = __builtin_cpu_supports("avx512f") ? "AVX-512" : __builtin_cpu_supports("avx2") ? "AVX2" : "no AVX2";
    snprintf(out, cap, "%s, %s", name, isa);
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "bench/results/ffn_speed.json";
    char cpu[300];
    cpu_name(cpu, sizeof cpu);
    int repeats = argc > 2 ? atoi(argv[2]) : 9;
    const variant variants[] = {{"dense", "dense", "topk"}, {"topk", "moe", "topk"}, {"relu", "moe", "relu"}};
    const shape shapes[] = {{128, 512, 8, 2048}, {512, 2048, 8, 2048}};
    FILE *j = fopen(out, "w");
    if (!j) { perror(out); return 1; }
    fprintf(j, "{\"benchmark\": \"ffn_speed\", \"cpu\": \"%s\", \"threads\": %d, \"repeats\": %d, \"results\": [", cpu,
            omp_get_max_threads(), repeats);
    printf("%-22s %-6s %10s %9s %8s\n", "shape (D,F,E,N)", "ffn", "ms", "sparsity", "x dense");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const shape *s = &shapes[si];
        double dense_t = 0.0;
        for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
            double sp, sec = time_ffn(&variants[vi], s, repeats, &sp);
            if (vi == 0) dense_t = sec;
            char sh[64];
            snprintf(sh, sizeof sh, "%d,%d,%d,%zu", s->D, s->F, s->E, s->N);
            printf("%-22s %-6s %10.2f %9.3f %7.2fx\n", sh, variants[vi].name, sec * 1e3, sp, sec / dense_t);
            fprintf(j, "%s{\"D\": %d, \"F\": %d, \"E\": %d, \"N\": %zu, \"ffn\": \"%s\", \"seconds\": %.6f, "
                    "\"sparsity\": %.4f, \"ratio_to_dense\": %.4f}", si + vi ? ", " : "", s->D, s->F, s->E,
                    s->N, variants[vi].name, sec, sp, sec / dense_t);
        }
    }
    fprintf(j, "]}\n");
    fclose(j);
    printf("wrote %s\n", out);
    return 0;
}
