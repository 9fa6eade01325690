/* import.c — `moe import`: a GGUF file or a Hugging Face directory of the
 * Llama / Mixtral families (or one moe exported) into a moe model directory
 * that every command reads (`moe train --model DIR` trains on from it). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "moe/util/checksum.h"
#include "moe/util/fileio.h"
#include "moe/interop/interop.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe import --out DIR [--tokenizer FILE] [--force] SOURCE\n\n"
        "Reads SOURCE, a .gguf file (architectures llama, deepseek, bailingmoe; tensors\n"
        "F32, F16 or BF16) or a Hugging Face directory (LlamaForCausalLM,\n"
        "MixtralForCausalLM, Qwen2MoeForCausalLM without a live shared expert), and writes\n"
        "DIR/config.json, DIR/model.safetensors and DIR/tokenizer, ready for moe score,\n"
        "generate, eval, and for training on (the config's training keys are moe's\n"
        "defaults unless SOURCE was written by moe export, which keeps them).\n"
        "  --out DIR        the model directory to write\n"
        "  --tokenizer F    the tokenizer to keep with the model, when SOURCE's is not\n"
        "                   a byte-level BPE in moe's layout (the import says so)\n"
        "  --force          overwrite a model that DIR already holds (never a training\n"
        "                   run or one of its checkpoints)\n");
}

int cmd_import(int argc, char **argv) {
    enum { O_OUT = 256, O_TOKENIZER, O_FORCE };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"out", required_argument, 0, O_OUT},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"force", no_argument, 0, O_FORCE},
        {0, 0, 0, 0}};
    const char *out = NULL, *tok_path = NULL, *src = NULL;
    int force = 0;
    cli_parser p;
    cli_begin(&p, "import", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_OUT: out = p.value; break;
        case O_TOKENIZER: tok_path = p.value; break;
        case O_FORCE: force = 1; break;
        default: return 2;
        }
    }
    int npos = cli_positionals(&p, 1);
    if (npos < 0) return 2;
    if (npos == 1) src = argv[p.first_positional];
    if (!out || !src) { fprintf(stderr, "moe import: --out and SOURCE are required\n"); help(stderr); return 2; }
    struct stat st;
    if (stat(src, &st)) { fprintf(stderr, "moe import: %s: no such file or directory\n", src); return 1; }
    moe_err err;
    if (cli_check_out("import", out, force, &err)) { fprintf(stderr, "moe import: %s\n", err.msg); return 1; }
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    char why[512] = "", path[4096];
    int rc = S_ISDIR(st.st_mode) ? moe_import_hf(src, &m, &tok, why, sizeof why, &err)
                                 : moe_import_gguf(src, &m, &tok, why, sizeof why, &err);
    if (!rc && tok_path) {
        moe_tokenizer_free(tok);
        rc = moe_tokenizer_load(tok_path, &tok, &err);
    }
    if (!rc && tok && moe_tokenizer_vocab_size(tok) > (uint32_t)m->cfg.vocab_size)
        rc = moe_errf(&err, "the tokenizer has %u ids, more than the model's vocab_size %d",
                      moe_tokenizer_vocab_size(tok), m->cfg.vocab_size);
    if (!rc) rc = moe_model_save(m, out, &err);
    if (!rc && tok)
        rc = moe_path(path, sizeof path, &err, "%s/tokenizer", out) || moe_tokenizer_save(tok, path, &err) ||
             moe_checksums_write(out, &err);
    if (rc) fprintf(stderr, "moe import: %s\n", err.msg);
    else {
        const moe_ffn_kind *fk = moe_ffn_kind_find(m->cfg.ffn);
        int routed = fk && fk->routed;
        printf("wrote %s (%zu parameters, ffn %s%s%s)\n", out, m->n_params, m->cfg.ffn,
               routed ? ", router " : "", routed ? m->cfg.router : "");
        if (!tok) fprintf(stderr, "moe import: no tokenizer kept: %s; give --tokenizer\n", why);
    }
    moe_tokenizer_free(tok);
    moe_model_free(m);
    return rc ? 1 : 0;
}
