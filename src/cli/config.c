/* config.c — `moe config`: the config keys as documentation, defaults, or a
 * check of a user's file. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/model/config.h"
#include "moe/model/ffn.h"
#include "moe/model/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe config (--doc | --defaults | --check FILE.json | --params FILE.json [--sparsity S])\n\n"
        "  --doc          every key as a Markdown table (docs/CONFIG.md is this output)\n"
        "  --defaults     the default config as JSON, derived values resolved\n"
        "  --check FILE   validate FILE and print it with defaults filled in (and its\n"
        "                 parameter counts on stderr)\n"
        "  --params FILE  validate FILE and print its parameter counts as JSON: total,\n"
        "                 active per token (routed experts at k/E), embedding (input\n"
        "                 embedding + LM head), experts (routed and shared expert tensors)\n"
        "                 and experts_active (what a token uses of them), router (routers\n"
        "                 and shared gates)\n"
        "  --sparsity S   with --params: count the routed experts as active at 1 - S\n"
        "                 (a run's measured sparsity, metrics.jsonl) instead of k/E\n");
}

int cmd_config(int argc, char **argv) {
    enum { O_DOC = 256, O_DEFAULTS, O_CHECK, O_PARAMS, O_SPARSITY };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"doc", no_argument, 0, O_DOC},
        {"defaults", no_argument, 0, O_DEFAULTS}, {"check", required_argument, 0, O_CHECK},
        {"params", required_argument, 0, O_PARAMS}, {"sparsity", required_argument, 0, O_SPARSITY},
        {0, 0, 0, 0}};
    if (argc < 2) { help(stderr); return 2; }
    int mode = 0, modes = 0;
    const char *check = NULL;
    double sparsity = -1.0;  /* -1: the nominal share, k/E */
    cli_parser p;
    cli_begin(&p, "config", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_DOC: case O_DEFAULTS: mode = c; modes++; break;
        case O_CHECK: case O_PARAMS: mode = c; modes++; check = p.value; break;
        case O_SPARSITY: if (cli_double(&p, p.value, 0.0, 1.0, &sparsity)) return 2; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (modes != 1) { fprintf(stderr, "moe config: give exactly one of --doc, --defaults, --check FILE or --params FILE\n"); return 2; }
    if (sparsity >= 0.0 && mode != O_PARAMS) { fprintf(stderr, "moe config: --sparsity goes with --params\n"); return 2; }
    moe_buf out = {0};
    moe_config c;
    moe_err err;
    int rc = 0;
    if (mode == O_DOC) {
        rc = moe_config_doc(&out);
    } else if (mode == O_DEFAULTS) {
        moe_config_defaults(&c);
        rc = moe_config_finalize(&c, &err) || moe_config_to_json(&c, &out);
    } else {  /* --check, --params: the config is valid, and its size */
        moe_param_count pc;
        if (moe_config_load(check, &c, &err) ||
            moe_model_count_params_at(&c, 1, sparsity >= 0.0 ? 1.0 - sparsity : moe_ffn_active_share(&c), &pc, &err)) {
            fprintf(stderr, "moe config: %s\n", err.msg);
            return 1;
        }
        if (mode == O_PARAMS) {
            rc = moe_buf_printf(&out, "{\"total\": %zu, \"active\": %zu, \"embedding\": %zu, \"experts\": %zu, "
                                "\"experts_active\": %zu, \"router\": %zu}\n", pc.total, pc.active, pc.embedding,
                                pc.experts, pc.experts_active, pc.router);
        } else {
            fprintf(stderr, "moe config: %s: %.1fM parameters, %.1fM active per token (%.1fM of them "
                    "embedding and LM head)\n", check, pc.total / 1e6, pc.active / 1e6, pc.embedding / 1e6);
            rc = moe_config_to_json(&c, &out);
        }
    }
    if (rc || !out.data) { fprintf(stderr, "moe config: out of memory\n"); return 1; }
    fwrite(out.data, 1, out.len, stdout);
    moe_buf_free(&out);
    return 0;
}
