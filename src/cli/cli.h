/* cli.h — the subcommands of `moe` (one file each in src/cli/) and the small
 * option-parsing helpers they share. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>

int cmd_config(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_sweep(int argc, char **argv);

/* Option parsing, one mechanism for every command: getopt_long over a
 * command's table of long options (each also takes --name=VALUE; -h is
 * --help). A table ends with {0}; val is what cli_next returns.
 *
 *   cli_parser p;
 *   cli_begin(&p, "train", argc, argv, OPTS);
 *   for (int c; (c = cli_next(&p)) != -1;)
 *       switch (c) { case 'h': ...; case O_STEPS: use p.value; ...; default: return 2; }
 *
 * cli_next prints the error line itself ("moe CMD: unknown option '--x'",
 * "moe CMD: option --steps needs a value") and returns '?'. At -1, argv has
 * been permuted so that the positional arguments are argv[p.first_positional..]. */
typedef struct cli_parser {
    const char *cmd;               /* "train", "tokenizer encode": the messages' prefix */
    int argc;
    char **argv;
    const struct option *opts;
    const char *value;             /* the current option's value (NULL for a flag) */
    char name[64];                 /* the current option as "--name", for messages */
    int first_positional;
    int in_order;                  /* set after cli_begin: positional arguments come back
                                    * from cli_next as 1 (value in p.value), in their place */
} cli_parser;

void cli_begin(cli_parser *p, const char *cmd, int argc, char **argv, const struct option *opts);
int cli_next(cli_parser *p);
/* The number of positional arguments, or -1 (with a message) past max. */
int cli_positionals(const cli_parser *p, int max);

/* Value parsers for the current option: each returns 0 and sets *out, or
 * prints "moe CMD: option --name: expected ..., found '...'" and returns -1.
 * cli_number checks only the syntax ("a whole number" when whole); the
 * caller checks the range (config keys check their own). */
int cli_int(const cli_parser *p, const char *val, long lo, long hi, long *out);
int cli_double(const cli_parser *p, const char *val, double lo, double hi, double *out);
int cli_number(const cli_parser *p, const char *val, int whole, double *out);

/* Writes the n bytes at s into out[cap] for an error message: printable
 * ASCII as is, every other byte (NUL included) as \xNN. Returns out. */
const char *cli_quote(char *out, size_t cap, const char *s, size_t n);

/* Progress of a long pass on stderr (moe_progress's fn with a cli_progress
 * as ctx): redrawn on a terminal, a line every 30 s in a log, nothing for a
 * pass that ends within the first interval. */
typedef struct cli_progress {
    const char *cmd, *what;
    int tty, shown;
    double t0, last;
} cli_progress;
void cli_progress_start(cli_progress *p, const char *cmd, const char *what);
void cli_progress_fn(void *ctx, size_t done, size_t total);

/* --precision: val must be "auto", "fp32" or "bf16" (else a message, -1). */
int cli_precision(const char *cmd, const char *val);
/* One stderr line when `model` runs in another precision than it asks for
 * (bf16 asked, fp32 in effect on a CPU without bf16 dot products). */
struct moe_model;
void cli_note_precision(const char *cmd, const struct moe_model *model);
/* For score, eval, generate and serve, after the model is loaded in the
 * --precision asked for (moe_model_load_precision): notes a fallback, and
 * marks its weights as fixed so that bf16 copies are made once. */
void cli_inference_ready(const char *cmd, struct moe_model *model);
struct moe_err;

/* Before `cmd` writes a model into the directory out: a training
 * checkpoint or run there is refused always, a model without force (one
 * message naming out). Returns 0 or -1 (err). */
int cli_check_out(const char *cmd, const char *out, int force, struct moe_err *err);

/* eval, analyze: one warning line on stderr when the token file at
 * data_path records another tokenizer than the checkpoint's (or tok_path,
 * when given; bytes for a model of 257 ids without one). Silent when either
 * is unknown. */
struct moe_tokens;
void cli_warn_data_tokenizer(const char *cmd, const char *ckpt, const char *tok_path,
                             const struct moe_tokens *data, const char *data_path);

/* Before a long computation: one line naming path, its folder and `option`
 * ("--json") when the file could not be written there. 0 or -1 (err). */
int cli_check_writable(const char *path, const char *option, struct moe_err *err);

/* An output option that names stdout ("-" or /dev/stdout) gets stdout to
 * itself: the command's own lines move to stderr, and the returned path
 * ("/dev/fd/N" in buf) writes to the original stdout. Any other path comes
 * back as is. */
const char *cli_stdout_output(const char *path, char *buf, size_t cap);

#endif
