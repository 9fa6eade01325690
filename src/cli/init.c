/* init.c — `moe init`: write a randomly initialised model. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe init --config FILE.json --out DIR [--seed N] [--force]\n\n"
        "Writes DIR/config.json and DIR/model.safetensors with the SPEC init\n"
        "(normal(0, init_std); output projections init_std/sqrt(2 n_layers); norms 1).\n"
        "  --config FILE  model and training keys (docs/CONFIG.md)\n"
        "  --out DIR      where to write the model\n"
        "  --seed N       init seed (default: the config's seed)\n"
        "  --force        overwrite a model that DIR already holds (never a training\n"
        "                 run or one of its checkpoints)\n");
}

static int exists(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* A directory written by training (a run, or one of its checkpoints) is
 * never overwritten; a model that init wrote is, with --force only. */
static int check_out(const char *out, int force, moe_err *err) {
    if (exists(out, "trainer_state.json") || exists(out, "optimizer.safetensors"))
        return moe_errf(err, "%s is a training checkpoint; init never overwrites one: choose "
                        "another --out", out);
    if (exists(out, "checkpoints") || exists(out, "metrics.jsonl"))
        return moe_errf(err, "%s holds a training run; init never overwrites one: choose another "
                        "--out", out);
    if (!force && (exists(out, "model.safetensors") || exists(out, "config.json")))
        return moe_errf(err, "%s already holds a model: choose another --out, or add --force to "
                        "overwrite it", out);
    return 0;
}

int cmd_init(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    long seed = -1;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { help(stdout); return 0; }
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "--config")) { if (!(config = cli_value("init", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--out")) { if (!(out = cli_value("init", argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--seed")) {
            if (!(v = cli_value("init", argc, argv, &i)) || cli_int("init", a, v, 0, 2147483647, &seed)) return 2;
        } else { fprintf(stderr, "moe init: unknown option '%s' (see --help)\n", a); return 2; }
    }
    if (!config || !out) { fprintf(stderr, "moe init: --config and --out are required\n"); help(stderr); return 2; }
    moe_err err;
    moe_config cfg;
    moe_model *m;
    if (check_out(out, force, &err) || moe_config_load(config, &cfg, &err)) {
        fprintf(stderr, "moe init: %s\n", err.msg);
        return 1;
    }
    if (seed >= 0) cfg.seed = (int)seed;
    if (moe_model_create(&cfg, &m, &err)) { fprintf(stderr, "moe init: %s\n", err.msg); return 1; }
    moe_model_init(m, (uint64_t)cfg.seed);
    int rc = moe_model_save(m, out, &err);
    if (rc) fprintf(stderr, "moe init: %s\n", err.msg);
    else printf("wrote %s (%zu parameters)\n", out, m->n_params);
    moe_model_free(m);
    return rc ? 1 : 0;
}
