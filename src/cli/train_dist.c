/* train_dist.c — the parts of `moe train` that only a run across ranks
 * needs (docs/DISTRIBUTED.md): the check that every rank runs the same
 * config on the same data, and the closing line of each rank's time in
 * collectives, bytes sent and peak memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/train_dist.h"

/* Across ranks: every rank's config (after the command-line overrides) and
 * token count must be rank 0's. Rank 0's text is broadcast; a rank that
 * differs names the first differing line. Collective. */
int train_check_same_setup(moe_comm *world, const moe_config *cfg, size_t data_tokens, moe_err *err) {
    moe_buf b = {0};
    if (moe_config_to_json(cfg, &b) || moe_buf_printf(&b, "data tokens %zu\n", data_tokens))
        { moe_buf_free(&b); return moe_errf(err, "out of memory"); }
    double len = (double)b.len;
    if (moe_comm_broadcast(world, &len, 1, MOE_F64, 0, err)) { moe_buf_free(&b); return -1; }
    char *ref = moe_calloc((size_t)len + 1, 1, err);
    int rc = ref ? 0 : -1;
    if (ref && world->rank == 0) memcpy(ref, b.data, b.len);
    if (ref && moe_comm_broadcast(world, ref, (size_t)len, MOE_BYTE, 0, err)) rc = -1;
    if (!rc && ((size_t)len != b.len || memcmp(ref, b.data, b.len))) {
        const char *p = b.data, *q = ref;  /* the first line that differs */
        while (*p && *p == *q) { p++; q++; }
        while (p > b.data && p[-1] != '\n') { p--; q--; }
        int lp = (int)strcspn(p, "\n"), lq = (int)strcspn(q, "\n");
        rc = moe_errf(err, "the config or data differ from rank 0's: here '%.*s', rank 0 '%.*s'; every "
                      "rank must run the same command on the same files", lp, p, lq, q);
    }
    free(ref);
    moe_buf_free(&b);
    return rc;
}

/* VmHWM of /proc/self/status: this process's peak resident memory, bytes. */
static double peak_memory(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lf kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

/* Across ranks, after training: each rank's share of time in collectives,
 * bytes sent per step and peak memory, printed by rank 0 (bench/scaling
 * reads this line). comm0: [seconds, bytes] when the loop began. */
int train_print_ranks(moe_comm *world, const moe_trainer *tr, const double comm0[2], double seconds,
                       long steps, moe_err *err) {
    size_t P = (size_t)world->size;
    double *all = moe_calloc(4 * P, sizeof(double), err);
    size_t *counts = moe_calloc(P, sizeof(size_t), err);
    if (!all || !counts) { free(all); free(counts); return -1; }
    double *mine = all + 4 * (size_t)world->rank;
    moe_trainer_comm_usage(tr, &mine[0], &mine[2]);
    mine[0] -= comm0[0];
    mine[1] = seconds;
    mine[2] -= comm0[1];
    mine[3] = peak_memory();
    for (size_t r = 0; r < P; r++) counts[r] = 4;
    int rc = moe_comm_allgather(world, all, counts, MOE_F64, err);
    if (!rc && world->rank == 0 && steps > 0) {
        fprintf(stderr, "moe train: per rank: collectives");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.1f%%", 100.0 * all[4 * r] / fmax(all[4 * r + 1], 1e-9));
        fprintf(stderr, " of the step time; sent per step");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.3f MB", all[4 * r + 2] / (double)steps / 1e6);
        fprintf(stderr, "; peak memory");
        for (size_t r = 0; r < P; r++) fprintf(stderr, " %.1f MiB", all[4 * r + 3] / 1048576.0);
        fprintf(stderr, "\n");
    }
    free(all);
    free(counts);
    return rc;
}
