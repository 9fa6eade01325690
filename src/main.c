/* main.c — the `moe` command line: finds the subcommand and hands over. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/util/version.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"config", cmd_config, "list, document or check config keys"},
    {"init", cmd_init, "write a randomly initialised model"},
    {"train", cmd_train, "train a model (or resume a run)"},
    {"score", cmd_score, "log-probabilities of a token sequence"},
    {"generate", cmd_generate, "sample text from a model"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server over a model"},
    {"prepare", cmd_prepare, "turn text into a token file"},
    {"tokenizer", cmd_tokenizer, "train, encode or decode with a BPE tokenizer"},
    {"eval", cmd_eval, "loss, perplexity per domain, multiple-choice tasks"},
    {"analyze", cmd_analyze, "routing statistics of a model over a token file"},
    {"report", cmd_report, "an HTML report comparing runs"},
    {"export", cmd_export, "write a model as GGUF (llama.cpp) or for transformers"},
    {"import", cmd_import, "read a GGUF file or a transformers directory into a model"},
    {"sweep", cmd_sweep, "train and evaluate configs x seeds, resumably, and aggregate"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: moe <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'moe <command> --help' describes each command. An option's value follows it\n"
               "(--steps 100) or joins it with '=' (--steps=100); '--' ends the options.\n"
               "'moe --version' (or 'moe version') prints the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("moe %s\n", MOE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "moe: unknown command '%s' (run 'moe --help' for the list)\n", argv[1]);
    return 2;
}
