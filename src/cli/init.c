/* init.c — `moe init`: write a randomly initialised model. */
#include <stdio.h>

#include "cli/cli.h"
#include "moe/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe init --config FILE.json --out DIR [--seed N]\n\n"
        "Writes DIR/config.json and DIR/model.safetensors with the SPEC init\n"
        "(normal(0, init_std); output projections init_std/sqrt(2 n_layers); norms 1).\n"
        "  --config FILE  model and training keys (docs/CONFIG.md)\n"
        "  --out DIR      where to write the model\n"
        "  --seed N       init seed (default: the config's seed)\n");
}

int cmd_init(int argc, char **argv) {
    enum { O_CONFIG = 256, O_OUT, O_SEED };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"config", required_argument, 0, O_CONFIG},
        {"out", required_argument, 0, O_OUT}, {"seed", required_argument, 0, O_SEED}, {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL;
    long seed = -1;
    cli_parser p;
    cli_begin(&p, "init", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_CONFIG: config = p.value; break;
        case O_OUT: out = p.value; break;
        case O_SEED: if (cli_int(&p, p.value, 0, 2147483647, &seed)) return 2; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!config || !out) { fprintf(stderr, "moe init: --config and --out are required\n"); help(stderr); return 2; }
    moe_err err;
    moe_config cfg;
    moe_model *m;
    if (moe_config_load(config, &cfg, &err)) { fprintf(stderr, "moe init: %s\n", err.msg); return 1; }
    if (seed >= 0) cfg.seed = (int)seed;
    if (moe_model_create(&cfg, &m, &err)) { fprintf(stderr, "moe init: %s\n", err.msg); return 1; }
    moe_model_init(m, (uint64_t)cfg.seed);
    int rc = moe_model_save(m, out, &err);
    if (rc) fprintf(stderr, "moe init: %s\n", err.msg);
    else printf("wrote %s (%zu parameters)\n", out, m->n_params);
    moe_model_free(m);
    return rc ? 1 : 0;
}
