/* ix.h — what the GGUF and Hugging Face exporters share (src/interop/):
 * the choice of foreign architecture (the plan), the table that maps each
 * foreign tensor to the moe tensor it comes from and how (the maps), the
 * byte-level token strings, and the 16-bit float conversions. */
#ifndef MOE_IX_H
#define MOE_IX_H

#include "moe/interop/interop.h"

typedef enum { IX_GGUF, IX_HF } ix_format;

typedef struct ix_plan {
    ix_format format;
    const char *arch;     /* GGUF general.architecture or HF class name */
    int moe;              /* the model has MoE layers */
    int n_expert, n_used; /* E*G routed experts, k*G of them per token */
    int expert_ff;        /* Fe = ffn_dim / G */
    int n_shared;         /* shared experts written (1 all-zero one if zero_shared) */
    int zero_shared;      /* the architecture needs a shared expert the model lacks */
    int renorm;           /* gates divided by their sum */
    int qkv_bias;         /* HF Qwen2-MoE: zero q/k/v biases */
    int moe_every;
} ix_plan;

/* The plan for config c in a format, or -1 with a message saying what
 * cannot be expressed and why (and which key to change when one would). */
int ix_plan_make(const moe_config *c, ix_format format, ix_plan *p, moe_err *err);

/* After an import has set the shape keys: training keys that must fit
 * them (seq_len <= max_seq_len) are brought within range. */
void ix_config_fit(moe_config *c);
/* 0 when a file holding `held` values (a tied head counted) holds as many
 * as the finalized config c has parameters (moe_model_count_params), else
 * -1 with "WHAT describes N parameters but WHERE hold M values". An import
 * checks this before it builds the model, so that a corrupt header cannot
 * ask for a huge allocation. */
int ix_check_held(const moe_config *c, double held, const char *what, const char *where, moe_err *err);

/* How a foreign tensor is made from a moe tensor (and back). */
typedef enum {
    IX_COPY,          /* same values, same order (a reshape at most) */
    IX_ROPE,          /* rows of each head from rotate-half to interleaved pairs
                       * (llama.cpp's rope); arg = heads */
    IX_SLICE,         /* expert arg of a stacked [E, ...] tensor (HF per-expert) */
    IX_SHARED_DOWN,   /* [S, D, Fe] -> [D, S*Fe] (concatenated shared experts); arg = S */
    IX_ZERO,          /* no moe tensor: zeros (an architecture's required shared expert) */
} ix_op;

typedef struct ix_map {
    char name[128];       /* foreign name */
    const moe_tensor *src;/* NULL for IX_ZERO */
    ix_op op;
    int arg;
    int ndim;
    int64_t shape[3];     /* foreign shape, row-major (outermost first) */
    int is_norm;          /* 1-D: always written as F32 */
} ix_map;

/* Every foreign tensor of model m under plan p, in file order. */
int ix_maps_make(const moe_model *m, const ix_plan *p, ix_map **maps, size_t *n, moe_err *err);
size_t ix_map_size(const ix_map *x);
/* out[ix_map_size] = the foreign tensor from the model's parameters. */
void ix_map_export(const ix_map *x, const float *params, float *out);
/* The inverse: writes the model's parameters from the foreign tensor. */
void ix_map_import(const ix_map *x, const float *in, float *params);

/* Tokenizer */
/* GPT-2's byte-level alphabet: the UTF-8 text of token bytes p[n], every
 * byte shown as a printable character (appended to out). */
int ix_token_text(const uint8_t *p, size_t n, moe_buf *out);
/* The inverse: bytes of a token text; -1 if a character is not of the alphabet. */
int ix_token_bytes(const char *s, size_t len, moe_buf *out);
/* The pre-tokenizer names of the tokenizer's split pattern: llama.cpp's
 * tokenizer.ggml.pre and the regex for tokenizer.json; -1 with a message
 * for a pattern that has no name in llama.cpp (gguf_pre NULL: only the
 * regex is asked for, and every pattern has one). */
int ix_pretok_names(const moe_tokenizer *tok, const char **gguf_pre, const char **regex,
                    moe_err *err);
/* Text of token id of a vocabulary padded to vocab ids (ids past the
 * tokenizer's are "<|moe_pad_N|>"). */
int ix_vocab_text(const moe_tokenizer *tok, uint32_t id, moe_buf *out);

/* The padded vocabulary of V ids as llama.cpp and tokenizer.json list it:
 * token texts, types (1 normal, 3 control: eot, 5 unused: padding) and the
 * merges "A B" in id order. Refuses two ids with the same bytes. */
typedef struct ix_vocab {
    moe_buf text;      /* token texts, concatenated */
    size_t *off;       /* [n + 1] */
    int *type;         /* [n] */
    uint32_t n;
    moe_buf merges;    /* merge texts, concatenated */
    size_t *moff;      /* [n_merges + 1] */
    size_t n_merges;
} ix_vocab;
int ix_vocab_make(const moe_tokenizer *tok, uint32_t V, ix_vocab *v, moe_err *err);
void ix_vocab_free(ix_vocab *v);
/* tokenizer.json (Hugging Face tokenizers: a byte-level BPE, the special
 * tokens added whole) of vocabulary v, split by regex, appended to o; -1
 * when out of memory. The HF and ONNX exports both write it. */
int ix_tokenizer_json(const moe_tokenizer *tok, const ix_vocab *v, const char *regex, moe_buf *o);
/* DIR/tokenizer.json, tokenizer_config.json (<|endoftext|> as bos and eos,
 * nothing added) and generation_config.json (eot, max_len). */
int ix_tokenizer_files(const char *dir, const moe_tokenizer *tok, const ix_vocab *v, const char *regex,
                       int max_len, moe_err *err);
/* A moe BPE tokenizer from token texts and merges when they are moe's
 * layout (bytes 0..255 in order, merge i makes id 256+i, then
 * <|endoftext|>); else *out = NULL and why says what differs. */
int ix_tokenizer_from_vocab(const char *const *texts, const size_t *lens, size_t n,
                            const char *const *merges, const size_t *mlens, size_t nm,
                            moe_tokenizer **out, char *why, size_t why_cap, moe_err *err);

/* 16-bit floats (round to nearest even) */
uint16_t ix_f32_to_f16(float f);
uint16_t ix_f32_to_bf16(float f);
float ix_f16_to_f32(uint16_t h);
float ix_bf16_to_f32(uint16_t h);

#endif
