/* init.c — `moe init`: write a randomly initialised model. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/util/checksum.h"
#include "moe/util/fileio.h"
#include "moe/interop/interop.h"
#include "moe/model/model.h"
#include "moe/data/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe init --config FILE.json --out DIR [--seed N] [--force] [--upcycle DENSE]\n\n"
        "Writes DIR/config.json and DIR/model.safetensors with the METHOD §1 init\n"
        "(normal(0, init_std); output projections init_std/sqrt(2 n_layers); norms 1).\n"
        "  --config FILE    model and training keys (docs/CONFIG.md)\n"
        "  --out DIR        where to write the model\n"
        "  --seed N         init seed (default: the config's seed)\n"
        "  --upcycle DENSE  sparse upcycling: start from the trained dense model DENSE\n"
        "                   (a model or run directory): every tensor copied, the dense FFN\n"
        "                   of each MoE layer copied into every expert, the routers fresh\n"
        "                   from the init; its tokenizer comes along (docs/INTEROP.md)\n"
        "  --force          overwrite a model that DIR already holds (never a training\n"
        "                   run or one of its checkpoints)\n");
}

/* Copies the dense model at `dense` into m (moe_upcycle) and saves m with
 * the dense model's tokenizer, if it has one. */
static int upcycle_from(moe_model *m, const char *dense, const char *out, moe_err *err) {
    char ckpt[4096], path[4096];
    moe_model *d = NULL;
    moe_tokenizer *tok = NULL;
    int rc = moe_resolve_checkpoint(dense, ckpt, sizeof ckpt, err) || moe_model_load(ckpt, &d, err) ||
             moe_upcycle(m, d, err) || moe_checkpoint_tokenizer(ckpt, NULL, &tok, err) ||
             moe_model_save(m, out, err) ? -1 : 0;
    if (!rc && tok)
        rc = moe_path(path, sizeof path, err, "%s/tokenizer", out) || moe_tokenizer_save(tok, path, err) ||
             moe_checksums_write(out, err) ? -1 : 0;
    moe_tokenizer_free(tok);
    moe_model_free(d);
    return rc;
}

int cmd_init(int argc, char **argv) {
    enum { O_CONFIG = 256, O_OUT, O_SEED, O_UPCYCLE, O_FORCE };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"config", required_argument, 0, O_CONFIG},
        {"out", required_argument, 0, O_OUT}, {"seed", required_argument, 0, O_SEED},
        {"upcycle", required_argument, 0, O_UPCYCLE}, {"force", no_argument, 0, O_FORCE}, {0, 0, 0, 0}};
    const char *config = NULL, *out = NULL, *upcycle = NULL;
    long seed = -1;
    int force = 0;
    cli_parser p;
    cli_begin(&p, "init", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_CONFIG: config = p.value; break;
        case O_OUT: out = p.value; break;
        case O_UPCYCLE: upcycle = p.value; break;
        case O_FORCE: force = 1; break;
        case O_SEED: if (cli_int(&p, p.value, 0, 2147483647, &seed)) return 2; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!config || !out) { fprintf(stderr, "moe init: --config and --out are required\n"); help(stderr); return 2; }
    moe_err err;
    moe_config cfg;
    moe_model *m;
    if (cli_check_out("init", out, force, &err) || moe_config_load(config, &cfg, &err)) {
        fprintf(stderr, "moe init: %s\n", err.msg);
        return 1;
    }
    if (seed >= 0) cfg.seed = (int)seed;
    if (moe_model_create(&cfg, &m, &err)) { fprintf(stderr, "moe init: %s\n", err.msg); return 1; }
    moe_model_init(m, (uint64_t)cfg.seed);
    int rc = upcycle ? upcycle_from(m, upcycle, out, &err) : moe_model_save(m, out, &err);
    if (rc) fprintf(stderr, "moe init: %s\n", err.msg);
    else printf("wrote %s (%zu parameters)\n", out, m->n_params);
    moe_model_free(m);
    return rc ? 1 : 0;
}
