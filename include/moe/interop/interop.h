/* interop.h — models that leave moe and come back (docs/INTEROP.md):
 * export to llama.cpp's GGUF and to the Hugging Face (transformers) layout,
 * import from both, and sparse upcycling of a dense model. Each export
 * picks the foreign architecture whose maths is the model's, or refuses
 * with a message that names the key or router that cannot be expressed. */
#ifndef MOE_INTEROP_H
#define MOE_INTEROP_H

#include "moe/util/common.h"
#include "moe/model/model.h"
#include "moe/util/safetensors.h"
#include "moe/data/tokenizer.h"

/* Writes FILE.gguf (version 3): architecture `llama` (dense, or Mixtral-style
 * experts with renormalised gates), `deepseek` (softmax gates not
 * renormalised, shared experts) or `bailingmoe` (renormalised gates with
 * shared experts); the tokenizer as tokenizer.ggml.* (model gpt2). type is
 * MOE_ST_F32, MOE_ST_F16 or MOE_ST_BF16 for the matrices (norms stay F32). */
int moe_export_gguf(const moe_model *m, const moe_tokenizer *tok, const char *path,
                    moe_st_dtype type, moe_err *err);

/* Writes DIR/config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json, generation_config.json: LlamaForCausalLM,
 * MixtralForCausalLM (renormalised gates) or Qwen2MoeForCausalLM. */
int moe_export_hf(const moe_model *m, const moe_tokenizer *tok, const char *dir,
                  moe_st_dtype type, moe_err *err);

/* Writes DIR/model.onnx (a decoder graph, opset 17: input_ids,
 * attention_mask, position_ids and past_key_values.N.key/value in; logits
 * and present.N.key/value out; every expert computed and weighted by
 * moe's gates), config.json and tokenizer.json. type is MOE_ST_F32 or MOE_ST_F16
 * (float16 initializers, each Cast to float). Refuses what the graph
 * cannot compute, naming it (docs/INTEROP.md). */
int moe_export_onnx(const moe_model *m, const moe_tokenizer *tok, const char *dir,
                    moe_st_dtype type, moe_err *err);

/* Reads a GGUF file / a Hugging Face directory of the Llama or Mixtral
 * families (and what moe exports) into a new model; *tok is the tokenizer
 * when it is a byte-level BPE moe can hold, else NULL (*why says why). */
int moe_import_gguf(const char *path, moe_model **m, moe_tokenizer **tok,
                    char *why, size_t why_cap, moe_err *err);
int moe_import_hf(const char *dir, moe_model **m, moe_tokenizer **tok,
                  char *why, size_t why_cap, moe_err *err);

/* Sparse upcycling: dst (a TopK MoE model, freshly initialised) takes every
 * tensor of the dense model and the dense FFN of each MoE layer in every
 * expert; the routers keep their fresh init. Shapes must agree (same
 * hidden, heads, vocab, layers; granularity 1; no shared experts). */
int moe_upcycle(moe_model *dst, const moe_model *dense, moe_err *err);

#endif
