/* options.c — the one option mechanism of every subcommand: glibc's
 * getopt_long (--opt VALUE, --opt=VALUE, -h, "--" ends the options), with
 * our own one-line messages naming the command and the option, and the
 * parsers of numeric values; the precision helpers the commands share, and
 * an output option that names stdout. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/util/common.h"
#include "moe/kernels/kernels.h"
#include "moe/model/model.h"

void cli_begin(cli_parser *p, const char *cmd, int argc, char **argv, const struct option *opts) {
    memset(p, 0, sizeof *p);
    p->cmd = cmd;
    p->argc = argc;
    p->argv = argv;
    p->opts = opts;
    optind = 0;  /* 0: glibc re-initialises its scanner (a fresh parse per command) */
    opterr = 0;  /* the messages are ours */
}

/* The name part of "--name" or "--name=value" into out. */
static void long_name(const char *arg, char *out, size_t cap) {
    const char *s = arg + (arg[0] == '-') + (arg[1] == '-');
    size_t n = strcspn(s, "=");
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

static const struct option *by_val(const cli_parser *p, int val) {
    for (const struct option *o = p->opts; o->name; o++)
        if (o->val == val) return o;
    return NULL;
}

/* "unknown option" with the reason glibc had: an ambiguous abbreviation, or
 * no such option (with the nearest name when it looks like a typo). */
static void unknown(const cli_parser *p, const char *arg) {
    char name[128];
    long_name(arg, name, sizeof name);
    size_t n = strlen(name), matches = 0;
    char list[512] = "";
    for (const struct option *o = p->opts; o->name; o++)
        if (n && !strncmp(o->name, name, n) && strlen(list) + strlen(o->name) + 5 < sizeof list) {
            matches++;
            strcat(strcat(list, matches > 1 ? ", --" : "--"), o->name);
        }
    if (matches > 1) {
        fprintf(stderr, "moe %s: option '--%s' is ambiguous: %s\n", p->cmd, name, list);
        return;
    }
    const char *best = NULL;
    int best_d = 3;
    for (const struct option *o = p->opts; o->name; o++) {
        int d = moe_edit_distance(name, o->name);
        if (d < best_d && 3 * (size_t)d < strlen(o->name)) { best_d = d; best = o->name; }
    }
    if (best) fprintf(stderr, "moe %s: unknown option '%s' (did you mean --%s?)\n", p->cmd, arg, best);
    else fprintf(stderr, "moe %s: unknown option '%s' (see 'moe %s --help')\n", p->cmd, arg, p->cmd);
}

int cli_next(cli_parser *p) {
    int idx = -1;
    p->value = NULL;
    p->name[0] = '\0';
    int c = getopt_long(p->argc, p->argv, p->in_order ? "-:h" : ":h", p->opts, &idx);
    if (c == -1) {
        p->first_positional = optind;
        return -1;
    }
    const char *arg = optind > 0 && optind <= p->argc ? p->argv[optind - 1] : "?";
    if (c == ':') {  /* a known option without its value */
        const struct option *o = by_val(p, optopt);
        fprintf(stderr, "moe %s: option --%s needs a value\n", p->cmd, o ? o->name : arg);
        return '?';
    }
    if (c == '?') {
        if (optopt && optopt != '?' && !strncmp(arg, "--", 2) && by_val(p, optopt)) {
            fprintf(stderr, "moe %s: option --%s takes no value, found '%s'\n", p->cmd, by_val(p, optopt)->name, arg);
        } else if (optopt && strncmp(arg, "--", 2)) {
            char s[3] = {'-', (char)optopt, '\0'};
            unknown(p, s);
        } else {
            unknown(p, arg);
        }
        return '?';
    }
    if (c == 1) {  /* in_order: a positional argument, in its place */
        p->value = optarg;
        return c;
    }
    const struct option *o = idx >= 0 ? &p->opts[idx] : by_val(p, c);
    if (idx >= 0 && optind >= 1) {  /* glibc takes any unique prefix (--st for --steps): we do not */
        int at = optarg && optind >= 2 && optarg == p->argv[optind - 1] ? optind - 2 : optind - 1;
        char typed[128];
        long_name(p->argv[at], typed, sizeof typed);
        if (strcmp(typed, o->name)) {
            fprintf(stderr, "moe %s: unknown option '--%s' (did you mean --%s?)\n", p->cmd, typed, o->name);
            return '?';
        }
    }
    snprintf(p->name, sizeof p->name, "--%s", o ? o->name : "help");
    p->value = optarg;
    return c;
}

int cli_positionals(const cli_parser *p, int max) {
    int n = p->argc - p->first_positional;
    if (n > max) {
        fprintf(stderr, "moe %s: unexpected argument '%s' (options start with --; see 'moe %s --help')\n",
                p->cmd, p->argv[p->first_positional + max], p->cmd);
        return -1;
    }
    return n;
}

/* strtol / strtod over the whole of val, without errno tricks left to callers. */
static int parse_long(const char *val, long *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *val, double *out) {
    char *end;
    errno = 0;
    double v = strtod(val, &end);
    if (end == val || *end || (errno && v != 0.0)) return -1;  /* underflow to 0 is a number */
    *out = v;
    return 0;
}

int cli_int(const cli_parser *p, const char *val, long lo, long hi, long *out) {
    long v;
    if (parse_long(val, &v)) {
        double d;
        if (!parse_double(val, &d))
            fprintf(stderr, "moe %s: option %s: expected a whole number in [%ld, %ld], found '%s'\n",
                    p->cmd, p->name, lo, hi, val);
        else
            fprintf(stderr, "moe %s: option %s: expected a whole number, found '%s'\n", p->cmd, p->name, val);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "moe %s: option %s: expected a whole number in [%ld, %ld], found '%s'\n",
                p->cmd, p->name, lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_double(const cli_parser *p, const char *val, double lo, double hi, double *out) {
    double v;
    if (parse_double(val, &v)) {
        fprintf(stderr, "moe %s: option %s: expected a number, found '%s'\n", p->cmd, p->name, val);
        return -1;
    }
    if (!(v >= lo && v <= hi)) {
        fprintf(stderr, "moe %s: option %s: expected a number in [%g, %g], found '%s'\n", p->cmd, p->name,
                lo, hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_number(const cli_parser *p, const char *val, int whole, double *out) {
    double v;  /* a whole number may be written 1e3, as config files may */
    if (parse_double(val, &v) || (whole && (v != floor(v) || !isfinite(v)))) {
        fprintf(stderr, "moe %s: option %s: expected %s, found '%s'\n", p->cmd, p->name,
                whole ? "a whole number" : "a number", val);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_precision(const char *cmd, const char *val) {
    if (!strcmp(val, "auto") || !strcmp(val, "fp32") || !strcmp(val, "bf16")) return 0;
    fprintf(stderr, "moe %s: option --precision: expected auto, fp32 or bf16, found '%s'\n", cmd, val);
    return -1;
}

void cli_note_precision(const char *cmd, const moe_model *model) {
    if (strcmp(model->cfg.precision, moe_model_precision(model)))
        fprintf(stderr, "moe %s: precision %s asked for, but this CPU (as oneDNN sees it) has no "
                "bf16 dot products, or MOE_NO_BF16 is set: running %s\n", cmd,
                model->cfg.precision, moe_model_precision(model));
}

void cli_inference_ready(const char *cmd, moe_model *model) {
    cli_note_precision(cmd, model);
    moe_k_ctx_freeze_weights(model->kc, model->params, model->n_params);
}

const char *cli_stdout_output(const char *path, char *buf, size_t cap) {
    if (!path || (strcmp(path, "-") && strcmp(path, "/dev/stdout"))) return path;
    fflush(stdout);
    int fd = dup(1);
    if (fd < 0 || dup2(2, 1) < 0) return path;   /* then the lines and the output share stdout */
    snprintf(buf, cap, "/dev/fd/%d", fd);
    return buf;
}
