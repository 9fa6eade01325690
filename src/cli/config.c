/* config.c — `moe config`: the config keys as documentation, defaults, or a
 * check of a user's file. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/config.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe config (--doc | --defaults | --check FILE.json)\n\n"
        "  --doc         every key as a Markdown table (docs/CONFIG.md is this output)\n"
        "  --defaults    the default config as JSON, derived values resolved\n"
        "  --check FILE  validate FILE and print it with defaults filled in\n");
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
    } else if (!strcmp(argv[1], "--check") && argc == 3) {
        if (moe_config_load(argv[2], &c, &err)) {
            fprintf(stderr, "moe config: %s\n", err.msg);
            return 1;
        }
        rc = moe_config_to_json(&c, &out);
    } else {
        fprintf(stderr, "moe config: unknown option '%s' (see --help)\n", argv[1]);
        return 2;
    }
    if (rc || !out.data) { fprintf(stderr, "moe config: out of memory\n"); return 1; }
    fwrite(out.data, 1, out.len, stdout);
    moe_buf_free(&out);
    return 0;
}
