/* options.c — shared option parsing for the subcommands, and the notes
 * they share. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/kernels.h"
#include "moe/model.h"

int cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || *end || end == val || v < lo || v > hi) {
        fprintf(stderr, "moe %s: option %s: expected an integer in [%ld, %ld], found '%s'\n",
                cmd, opt, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || *end || end == val || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moe %s: option %s: expected a number in [%g, %g], found '%s'\n",
                cmd, opt, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

const char *cli_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "moe %s: option %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    *i += 1;
    return argv[*i];
}

int cli_precision(const char *cmd, const char *val) {
    if (!strcmp(val, "fp32") || !strcmp(val, "bf16")) return 0;
    fprintf(stderr, "moe %s: option --precision: expected fp32 or bf16, found '%s'\n", cmd, val);
    return -1;
}

void cli_note_precision(const char *cmd, const moe_model *model) {
    if (strcmp(model->cfg.precision, moe_model_precision(model)))
        fprintf(stderr, "moe %s: precision %s asked for, but this CPU (as oneDNN sees it) has no "
                "bf16 dot products, or MOE_NO_BF16 is set: running %s\n", cmd,
                model->cfg.precision, moe_model_precision(model));
}

int cli_inference_precision(const char *cmd, moe_model *model, const char *precision,
                            moe_err *err) {
    if (precision && moe_model_set_precision(model, precision, err)) return -1;
    cli_note_precision(cmd, model);
    k_ctx_freeze_weights(model->kc, model->params, model->n_params);
    return 0;
}
