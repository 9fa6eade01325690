/* cli.h — the subcommands of `moe` (one file each in src/cli/) and the small
 * option-parsing helpers they share. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <stddef.h>
#include <stdint.h>

int cmd_config(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_report(int argc, char **argv);

/* Option parsing: each returns 0 and sets *out, or prints
 * "moe CMD: option --name: expected ..., found '...'" and returns -1. */
int cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out);
int cli_double(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out);
/* argv[*i] is an option that takes a value: returns argv[*i+1] and advances,
 * or prints "missing value" and returns NULL. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);
/* --precision: val must be "fp32" or "bf16" (else a message, -1). */
int cli_precision(const char *cmd, const char *val);
/* One stderr line when `model` runs in another precision than it asks for
 * (bf16 asked, fp32 in effect on a CPU without bf16 dot products). */
struct moe_model;
void cli_note_precision(const char *cmd, const struct moe_model *model);
/* For score, eval and generate: runs `model` in `precision` when it is not
 * NULL (else in the model's own), notes a fallback, and marks its weights
 * as fixed so that bf16 copies are made once. Returns 0 or -1 (err). */
struct moe_err;
int cli_inference_precision(const char *cmd, struct moe_model *model, const char *precision,
                            struct moe_err *err);

#endif
