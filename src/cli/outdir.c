/* outdir.c — the one check of a model directory a command is about to
 * write (init, import, export to a directory): a training run or one of its
 * checkpoints is never written over; a model only with --force. */
#include <stdio.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "moe/common.h"

static int exists(const char *dir, const char *name) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

int cli_check_out(const char *cmd, const char *out, int force, moe_err *err) {
    if (exists(out, "trainer_state.json") || exists(out, "optimizer.safetensors"))
        return moe_errf(err, "%s is a training checkpoint; %s never overwrites one: choose "
                        "another --out", out, cmd);
    if (exists(out, "checkpoints") || exists(out, "metrics.jsonl"))
        return moe_errf(err, "%s holds a training run; %s never overwrites one: choose another "
                        "--out", out, cmd);
    if (!force && (exists(out, "model.safetensors") || exists(out, "config.json")))
        return moe_errf(err, "%s already holds a model: choose another --out, or add --force to "
                        "overwrite it", out);
    return 0;
}
