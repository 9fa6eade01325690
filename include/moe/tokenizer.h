/* tokenizer.h — byte-level BPE tokenizers: the "bytes" tokenizer, BPE trained
 * here (moe_bpe_train), and tiktoken rank tables (e.g. r50k_base); encoding,
 * decoding, and the tokenizer file format (docs/FORMAT.md, "Tokenizer file"). */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include "moe/common.h"

/* Kinds of tokenizer:
 *  - MOE_TOK_BYTES: ids 0..255 are the bytes, 256 is <|endoftext|>, vocab 257.
 *  - MOE_TOK_BPE:   trained here. ids 0..255 are the bytes, merge i creates
 *                   id 256+i, <|endoftext|> is vocab_size-1. Encoding applies
 *                   the merges by rank (merge index), lowest first.
 *  - MOE_TOK_RANKS: a tiktoken rank table (token bytes -> rank = id). Encoding
 *                   is tiktoken's byte-pair algorithm (repeatedly merge the
 *                   adjacent pair whose concatenation has the lowest rank);
 *                   <|endoftext|> is vocab_size-1 (50256 for r50k_base).
 * BPE and RANKS pre-split text with the GPT-2 pattern (PCRE2, UTF mode; bytes
 * that are not valid UTF-8 each form their own chunk). */
typedef enum { MOE_TOK_BYTES = 0, MOE_TOK_BPE = 1, MOE_TOK_RANKS = 2 } moe_tok_kind;

typedef struct moe_tokenizer moe_tokenizer;  /* immutable once built; thread-safe to share */

#define MOE_EOT_TEXT "<|endoftext|>"

/* Loads our tokenizer file (first line "moe-tokenizer ...") or a tiktoken
 * rank file (lines "base64(token) rank"), detected from the content. The name
 * "bytes" gives the bytes tokenizer. Errors name the file and line. */
int moe_tokenizer_load(const char *path, moe_tokenizer **out, moe_err *err);
/* The same from text in memory; `what` names it in error messages. */
int moe_tokenizer_parse(const char *text, size_t len, const char *what,
                        moe_tokenizer **out, moe_err *err);
moe_tokenizer *moe_tokenizer_bytes(moe_err *err);
/* Writes our format (atomically). */
int moe_tokenizer_save(const moe_tokenizer *t, const char *path, moe_err *err);
/* The file text, appended to *out. */
int moe_tokenizer_serialize(const moe_tokenizer *t, moe_buf *out, moe_err *err);

moe_tok_kind moe_tokenizer_kind(const moe_tokenizer *t);
uint32_t moe_tokenizer_vocab_size(const moe_tokenizer *t);
uint32_t moe_tokenizer_eot(const moe_tokenizer *t);
/* Bytes of token `id` (eot gives "<|endoftext|>"); NULL if id >= vocab. */
const uint8_t *moe_tokenizer_token(const moe_tokenizer *t, uint32_t id, size_t *len);
void moe_tokenizer_free(moe_tokenizer *t);

/* Encoding flags. */
#define MOE_ENC_ALLOW_SPECIAL 1u  /* the literal "<|endoftext|>" in text becomes eot */

/* Encodes text[len] (any bytes) into a malloc'd ids[n]. Inputs above ~1 MB are
 * split at safe points (where the pre-split cannot change) and encoded in
 * parallel with OpenMP. The literal "<|endoftext|>" is encoded as plain text. */
int moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len,
                         uint32_t **ids, size_t *n, moe_err *err);
int moe_tokenizer_encode_ex(const moe_tokenizer *t, const char *text, size_t len,
                            unsigned flags, uint32_t **ids, size_t *n, moe_err *err);
/* ids -> bytes, appended to *out; lossless for any byte string. An id >= vocab
 * is an error that names its position. */
int moe_tokenizer_decode(const moe_tokenizer *t, const uint32_t *ids, size_t n,
                         moe_buf *out, moe_err *err);

/* A single-threaded encoder with its own match state and chunk cache: use one
 * per thread to encode many documents. */
typedef struct moe_encoder moe_encoder;
typedef struct moe_ids {
    uint32_t *ids;   /* [n] */
    size_t n, cap;
} moe_ids;
moe_encoder *moe_encoder_new(const moe_tokenizer *t, moe_err *err);
/* Appends the ids of text[len] to *out. */
int moe_encoder_encode(moe_encoder *e, const char *text, size_t len, unsigned flags,
                       moe_ids *out, moe_err *err);
void moe_encoder_free(moe_encoder *e);
int moe_ids_push(moe_ids *v, uint32_t id);
void moe_ids_free(moe_ids *v);

/* Where a text of len bytes may be cut so that the pre-split of the pieces
 * equals the pre-split of the whole: returns a cut position in [lo, len]
 * (len if none is found at or after lo). */
size_t moe_pretok_safe_cut(const char *text, size_t len, size_t lo);

/* BPE training. A trainer counts the pre-split chunks of the texts given to
 * it (in parallel, OpenMP), then learns merges until the vocabulary (bytes +
 * merges + <|endoftext|>) has vocab_size entries or no pair is left. Ties
 * between pairs of equal count go to the smaller (left id, right id), so the
 * result depends only on the multiset of chunks, not on thread count. */
typedef struct moe_bpe_trainer moe_bpe_trainer;
/* Progress: phase "count" (done/total bytes of the current add call) or
 * "merge" (done/total merges). May be NULL. */
typedef void (*moe_bpe_progress)(void *user, const char *phase, size_t done, size_t total);

moe_bpe_trainer *moe_bpe_trainer_new(moe_err *err);
int moe_bpe_trainer_add(moe_bpe_trainer *tr, const char *const *texts, const size_t *lens,
                        size_t n, moe_bpe_progress progress, void *user, moe_err *err);
/* Number of chunks counted so far (with and without repeats). */
void moe_bpe_trainer_stats(const moe_bpe_trainer *tr, uint64_t *chunks, size_t *unique);
int moe_bpe_trainer_finish(moe_bpe_trainer *tr, uint32_t vocab_size,
                           moe_bpe_progress progress, void *user,
                           moe_tokenizer **out, moe_err *err);
void moe_bpe_trainer_free(moe_bpe_trainer *tr);

/* One call: count texts[n] and learn merges. vocab_size >= 257. */
int moe_bpe_train(const char *const *texts, const size_t *lens, size_t n, uint32_t vocab_size,
                  moe_tokenizer **out, moe_err *err);

/* Builds a BPE tokenizer from merges (a[i], b[i]) -> 256+i, i < n_merges;
 * validates that each refers to existing ids and that no pair repeats. */
int moe_tokenizer_from_merges(const uint32_t *a, const uint32_t *b, size_t n_merges,
                              moe_tokenizer **out, moe_err *err);

/* For other programs' descriptions of a tokenizer (src/data/tok_merges.c):
 * the pre-split pattern in PCRE2 syntax (NULL for bytes, which needs none),
 * and the merge (a, b) that makes token id, as Hugging Face and llama.cpp
 * list BPE merges (in id order). moe_tokenizer_merge_of returns 0 and sets
 * *a, *b; 1 when id is a byte, eot, or a rank-table token that tiktoken's
 * algorithm never produces whole; -1 when out of memory. */
const char *moe_tokenizer_split_pattern(const moe_tokenizer *t);
int moe_tokenizer_merge_of(const moe_tokenizer *t, uint32_t id, uint32_t *a, uint32_t *b);

#endif
