/* ix.h — what the GGUF and Hugging Face exporters share (src/interop/):
 * the choice of foreign architecture (the plan), the table that maps each
 * foreign tensor to the moe tensor it comes from and how (the maps), the
 * vocabulary as foreign text, and the 16-bit float conversions. */
#ifndef MOE_IX_H
#define MOE_IX_H

#include "moe/interop/interop.h"

typedef enum { MOE_IX_GGUF, MOE_IX_HF } moe_ix_format;

typedef struct moe_ix_plan {
    moe_ix_format format;
    const char *arch;     /* GGUF general.architecture or HF class name */
    int moe;              /* the model has MoE layers */
    int n_expert, n_used; /* E*G routed experts, k*G of them per token */
    int expert_ff;        /* Fe = ffn_dim / G */
    int n_shared;         /* shared experts written (1 all-zero one if zero_shared) */
    int zero_shared;      /* the architecture needs a shared expert the model lacks */
    int renorm;           /* gates divided by their sum */
    int qkv_bias;         /* HF Qwen2-MoE: zero q/k/v biases */
    int moe_every;
} moe_ix_plan;

/* The plan for config c in a format, or -1 with a message saying what
 * cannot be expressed and why (and which key to change when one would). */
int moe_ix_plan_make(const moe_config *c, moe_ix_format format, moe_ix_plan *p, moe_err *err);

/* After an import has set the shape keys: training keys that must fit
 * them (seq_len <= max_seq_len) are brought within range. */
void moe_ix_config_fit(moe_config *c);
/* 0 when a file holding `held` values (a tied head counted) holds as many
 * as the finalized config c has parameters (moe_model_count_params), else
 * -1 with "WHAT describes N parameters but WHERE hold M values". An import
 * checks this before it builds the model, so that a corrupt header cannot
 * ask for a huge allocation. */
int moe_ix_check_held(const moe_config *c, double held, const char *what, const char *where, moe_err *err);

/* How a foreign tensor is made from a moe tensor (and back). */
typedef enum {
    MOE_IX_COPY,          /* same values, same order (a reshape at most) */
    MOE_IX_ROPE,          /* rows of each head from rotate-half to interleaved pairs
                       * (llama.cpp's rope); arg = heads */
    MOE_IX_SLICE,         /* expert arg of a stacked [E, ...] tensor (HF per-expert) */
    MOE_IX_SHARED_DOWN,   /* [S, D, Fe] -> [D, S*Fe] (concatenated shared experts); arg = S */
    MOE_IX_ZERO,          /* no moe tensor: zeros (an architecture's required shared expert) */
} moe_ix_op;

typedef struct moe_ix_map {
    char name[128];       /* foreign name */
    const moe_tensor *src;/* NULL for MOE_IX_ZERO */
    moe_ix_op op;
    int arg;
    int ndim;
    int64_t shape[3];     /* foreign shape, row-major (outermost first) */
    int is_norm;          /* 1-D: always written as F32 */
} moe_ix_map;

/* Every foreign tensor of model m under plan p, in file order. */
int moe_ix_maps_make(const moe_model *m, const moe_ix_plan *p, moe_ix_map **maps, size_t *n, moe_err *err);
size_t moe_ix_map_size(const moe_ix_map *x);
/* out[moe_ix_map_size] = the foreign tensor from the model's parameters. */
void moe_ix_map_export(const moe_ix_map *x, const float *params, float *out);
/* The inverse: writes the model's parameters from the foreign tensor. */
void moe_ix_map_import(const moe_ix_map *x, const float *in, float *params);

/* Tokenizer (the byte-level alphabet, and reading a vocabulary back from
 * texts, are in include/moe/data/tokenizer.h) */
/* The pre-tokenizer names of the tokenizer's split pattern: llama.cpp's
 * tokenizer.ggml.pre and the regex for tokenizer.json; -1 with a message
 * for a pattern that has no name in llama.cpp (gguf_pre NULL: only the
 * regex is asked for, and every pattern has one). */
int moe_ix_pretok_names(const moe_tokenizer *tok, const char **gguf_pre, const char **regex,
                    moe_err *err);
/* Text of token id of a vocabulary padded to vocab ids (ids past the
 * tokenizer's are "<|moe_pad_N|>"). */
int moe_ix_vocab_text(const moe_tokenizer *tok, uint32_t id, moe_buf *out);

/* The padded vocabulary of V ids as llama.cpp and tokenizer.json list it:
 * token texts, types (1 normal, 3 control: eot, 5 unused: padding) and the
 * merges "A B" in id order. Refuses two ids with the same bytes. */
typedef struct moe_ix_vocab {
    moe_buf text;      /* token texts, concatenated */
    size_t *off;       /* [n + 1] */
    int *type;         /* [n] */
    uint32_t n;
    moe_buf merges;    /* merge texts, concatenated */
    size_t *moff;      /* [n_merges + 1] */
    size_t n_merges;
} moe_ix_vocab;
int moe_ix_vocab_make(const moe_tokenizer *tok, uint32_t V, moe_ix_vocab *v, moe_err *err);
void moe_ix_vocab_free(moe_ix_vocab *v);
/* tokenizer.json (Hugging Face tokenizers: a byte-level BPE, the special
 * tokens added whole) of vocabulary v, split by regex, appended to o; -1
 * when out of memory. The HF and ONNX exports both write it. */
int moe_ix_tokenizer_json(const moe_tokenizer *tok, const moe_ix_vocab *v, const char *regex, moe_buf *o);
/* DIR/tokenizer.json, tokenizer_config.json (<|endoftext|> as bos and eos,
 * nothing added) and generation_config.json (eot, max_len). */
int moe_ix_tokenizer_files(const char *dir, const moe_tokenizer *tok, const moe_ix_vocab *v, const char *regex,
                       int max_len, moe_err *err);
/* 16-bit floats (round to nearest even) */
uint16_t moe_ix_f32_to_f16(float f);
uint16_t moe_ix_f32_to_bf16(float f);
float moe_ix_f16_to_f32(uint16_t h);
float moe_ix_bf16_to_f32(uint16_t h);

#endif
