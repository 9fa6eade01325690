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
int cmd_sweep(int argc, char **argv);

/* Option parsing: each returns 0 and sets *out, or prints
 * "moe CMD: option --name: expected ..., found '...'" and returns -1. */
int cli_int(const char *cmd, const char *opt, const char *val, long lo, long hi, long *out);
int cli_double(const char *cmd, const char *opt, const char *val, double lo, double hi, double *out);
/* argv[*i] is an option that takes a value: returns argv[*i+1] and advances,
 * or prints "missing value" and returns NULL. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

#endif
