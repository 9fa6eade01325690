/* export.c — `moe export`: a model in llama.cpp's GGUF or the Hugging Face
 * layout (src/interop/, docs/INTEROP.md). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/interop/interop.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe export --format gguf|hf|onnx --out PATH [--type f32|f16|bf16]\n"
        "                  [--tokenizer FILE] [--force] MODEL\n\n"
        "Writes MODEL (a model or run directory: its newest checkpoint) for other programs:\n"
        "  --format gguf   one GGUF file for llama.cpp: architecture llama (dense, or\n"
        "                  Mixtral-style experts with norm_topk_prob), deepseek (TopK gates\n"
        "                  not renormalised, shared experts) or bailingmoe (renormalised\n"
        "                  gates with shared experts); the tokenizer embedded\n"
        "  --format hf     a directory for transformers: config.json (LlamaForCausalLM,\n"
        "                  MixtralForCausalLM or Qwen2MoeForCausalLM), model.safetensors,\n"
        "                  tokenizer.json, tokenizer_config.json, generation_config.json\n"
        "  --format onnx   a directory for onnxruntime and Transformers.js: model.onnx (a\n"
        "                  decoder with a KV cache that computes every router and FFN kind\n"
        "                  moe has; --type f32 or f16), config.json, the tokenizer files\n"
        "                  as hf's\n"
        "  --out PATH      the file (gguf) or directory (hf, onnx) to write\n"
        "  --type T        matrices in f32 (default), f16 or bf16; norms stay f32 in GGUF\n"
        "  --tokenizer F   else MODEL's own tokenizer, else bytes when vocab_size is 257\n"
        "  --force         hf, onnx: overwrite a model that PATH already holds (never a\n"
        "                  training run or one of its checkpoints)\n\n"
        "For gguf and hf, routers that neither program computes (relu, hash, expert_choice,\n"
        "sparsemixer, topp, cartesian, lory, shared_gate) are refused with the reason\n"
        "(docs/INTEROP.md).\n");
}

int cmd_export(int argc, char **argv) {
    enum { O_FORMAT = 256, O_OUT, O_TYPE, O_TOKENIZER, O_FORCE };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"format", required_argument, 0, O_FORMAT},
        {"out", required_argument, 0, O_OUT}, {"type", required_argument, 0, O_TYPE},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"force", no_argument, 0, O_FORCE},
        {0, 0, 0, 0}};
    const char *format = NULL, *out = NULL, *type = "f32", *tok_path = NULL, *model = NULL;
    int force = 0;
    cli_parser p;
    cli_begin(&p, "export", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        switch (c) {
        case 'h': help(stdout); return 0;
        case O_FORMAT: format = p.value; break;
        case O_OUT: out = p.value; break;
        case O_TYPE: type = p.value; break;
        case O_TOKENIZER: tok_path = p.value; break;
        case O_FORCE: force = 1; break;
        default: return 2;
        }
    }
    int npos = cli_positionals(&p, 1);
    if (npos < 0) return 2;
    if (npos == 1) model = argv[p.first_positional];
    if (!format || !out || !model) {
        fprintf(stderr, "moe export: --format, --out and MODEL are required\n");
        help(stderr);
        return 2;
    }
    int gguf = !strcmp(format, "gguf"), onnx = !strcmp(format, "onnx");
    if (!gguf && !onnx && strcmp(format, "hf")) {
        fprintf(stderr, "moe export: option --format: expected gguf, hf or onnx, found '%s'\n", format);
        return 2;
    }
    moe_st_dtype dt = !strcmp(type, "f32") ? MOE_ST_F32 : !strcmp(type, "f16") ? MOE_ST_F16 : !strcmp(type, "bf16") ? MOE_ST_BF16 : MOE_ST_U8;
    if (dt == MOE_ST_U8) { fprintf(stderr, "moe export: option --type: expected f32, f16 or bf16, found '%s'\n", type); return 2; }
    char stdout_path[32];
    if (gguf) out = cli_stdout_output(out, stdout_path, sizeof stdout_path);   /* "-": the file alone on stdout */
    moe_err err;
    if (!gguf && cli_check_out("export", out, force, &err)) { fprintf(stderr, "moe export: %s\n", err.msg); return 1; }
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    char ckpt[4096];
    int rc = moe_resolve_checkpoint(model, ckpt, sizeof ckpt, &err) || moe_model_load(ckpt, &m, &err) ||
             moe_checkpoint_tokenizer(ckpt, tok_path, &tok, &err);
    if (!rc && !tok) {
        if (m->cfg.vocab_size == 257) rc = !(tok = moe_tokenizer_bytes(&err));
        else {
            moe_errf(&err, "%s has no tokenizer and vocab_size is %d, not 257 (bytes): give --tokenizer",
                     ckpt, m->cfg.vocab_size);
            rc = 1;
        }
    }
    if (!rc) rc = gguf ? moe_export_gguf(m, tok, out, dt, &err)
                  : onnx ? moe_export_onnx(m, tok, out, dt, &err) : moe_export_hf(m, tok, out, dt, &err);
    if (rc) fprintf(stderr, "moe export: %s\n", err.msg);
    else printf("wrote %s (%s, %s)\n", out, format, type);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    return rc ? 1 : 0;
}
