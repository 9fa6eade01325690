/* config.c — `moe config`: the config keys as documentation, defaults, or a
 * check of a user's file. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/config.h"
#include "moe/model.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe config (--doc | --defaults | --check FILE.json | --params FILE.json)\n\n"
        "  --doc          every key as a Markdown table (docs/CONFIG.md is this output)\n"
        "  --defaults     the default config as JSON, derived values resolved\n"
        "  --check FILE   validate FILE and print it with defaults filled in (and its\n"
        "                 parameter counts on stderr)\n"
        "  --params FILE  validate FILE and print its parameter counts as JSON: total,\n"
        "                 active per token (routed experts at k/E), embedding (input\n"
        "                 embedding + LM head), experts (routed and shared expert tensors)\n"
        "                 and experts_active (what a token uses of them), router (routers\n"
        "                 and shared gates)\n");
}

int cmd_config(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    moe_buf out = {0};
    moe_config c;
    moe_err err;
    int rc = 0;
    if (!strcmp(argv[1], "--doc")) {
        rc = moe_config_doc(&out);
    } else if (!strcmp(argv[1], "--defaults")) {
        moe_config_defaults(&c);
        rc = moe_config_finalize(&c, &err) || moe_config_to_json(&c, &out);
    } else if ((!strcmp(argv[1], "--check") || !strcmp(argv[1], "--params")) && argc == 3) {
        moe_param_count pc;
        if (moe_config_load(argv[2], &c, &err) || moe_model_count_params(&c, &pc, &err)) {
            fprintf(stderr, "moe config: %s\n", err.msg);
            return 1;
        }
        if (!strcmp(argv[1], "--params")) {
            rc = moe_buf_printf(&out, "{\"total\": %zu, \"active\": %zu, \"embedding\": %zu, \"experts\": %zu, "
                                "\"experts_active\": %zu, \"router\": %zu}\n", pc.total, pc.active, pc.embedding,
                                pc.experts, pc.experts_active, pc.router);
        } else {
            fprintf(stderr, "moe config: %s: %.1fM parameters, %.1fM active per token (%.1fM of them "
                    "embedding and LM head)\n", argv[2], pc.total / 1e6, pc.active / 1e6, pc.embedding / 1e6);
            rc = moe_config_to_json(&c, &out);
        }
    } else {
        fprintf(stderr, "moe config: unknown option '%s' (see --help)\n", argv[1]);
        return 2;
    }
    if (rc || !out.data) { fprintf(stderr, "moe config: out of memory\n"); return 1; }
    fwrite(out.data, 1, out.len, stdout);
    moe_buf_free(&out);
    return 0;
}
