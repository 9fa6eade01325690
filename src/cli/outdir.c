/* outdir.c — the one check of a model directory a command is about to
 * write (init, import, export to a directory): a training run or one of its
 * checkpoints is never written over; a model only with --force. And whether
 * an output file can be written, checked before a long computation. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/util/common.h"
#include "moe/run/rundir.h"

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
    if (exists(out, "checkpoints") || moe_rundir_is_run(out))
        return moe_errf(err, "%s holds a training run; %s never overwrites one: choose another "
                        "--out", out, cmd);
    if (!force && (exists(out, "model.safetensors") || exists(out, "config.json")))
        return moe_errf(err, "%s already holds a model: choose another --out, or add --force to "
                        "overwrite it", out);
    return 0;
}

int cli_check_writable(const char *path, const char *option, moe_err *err) {
    struct stat st;
    if (!stat(path, &st) && !S_ISREG(st.st_mode)) return 0;   /* a device or pipe: opened when written */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (!stat(dir, &st) && S_ISDIR(st.st_mode) && !access(dir, W_OK)) return 0;
    return moe_errf(err, "cannot write %s (%s is not writable, checked before the computation): give %s FILE "
                    "in a folder you can write, or %s - for stdout", path, dir, option, option);
}
