/* config.c — `moe config`: the config keys as documentation, defaults, or a
 * check of a user's file. */
#include <stdio.h>

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
    enum { O_DOC = 256, O_DEFAULTS, O_CHECK };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"doc", no_argument, 0, O_DOC},
        {"defaults", no_argument, 0, O_DEFAULTS}, {"check", required_argument, 0, O_CHECK}, {0, 0, 0, 0}};
    if (argc < 2) { help(stderr); return 2; }
    int mode = 0, modes = 0;
    const char *check = NULL;
    cli_parser p;
    cli_begin(&p, "config", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_DOC: case O_DEFAULTS: mode = c; modes++; break;
        case O_CHECK: mode = c; modes++; check = p.value; break;
        default: return 2;
        }
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (modes != 1) { fprintf(stderr, "moe config: give exactly one of --doc, --defaults or --check FILE\n"); return 2; }
    moe_buf out = {0};
    moe_config c;
    moe_err err;
    int rc = 0;
    if (mode == O_DOC) {
        rc = moe_config_doc(&out);
    } else if (mode == O_DEFAULTS) {
        moe_config_defaults(&c);
        rc = moe_config_finalize(&c, &err) || moe_config_to_json(&c, &out);
    } else {
        if (moe_config_load(check, &c, &err)) {
            fprintf(stderr, "moe config: %s\n", err.msg);
            return 1;
        }
        rc = moe_config_to_json(&c, &out);
    }
    if (rc || !out.data) { fprintf(stderr, "moe config: out of memory\n"); return 1; }
    fwrite(out.data, 1, out.len, stdout);
    moe_buf_free(&out);
    return 0;
}
