/* tokenizer.h — byte-level BPE tokenizers: the "bytes" tokenizer, BPE trained
 * here (moe_bpe_train), and tiktoken rank tables (r50k_base, cl100k_base,
 * o200k_base, Llama 3, any other) with their split patterns and special
 * tokens; encoding, decoding, the tokenizer file format (docs/FORMAT.md,
 * "Tokenizer file"), and reading a Hugging Face tokenizer.json. */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include "moe/util/common.h"

/* Kinds of tokenizer:
 *  - MOE_TOK_BYTES: ids 0..255 are the bytes, 256 is <|endoftext|>, vocab 257.
 *  - MOE_TOK_BPE:   trained here. ids 0..255 are the bytes, merge i creates
 *                   id 256+i, <|endoftext|> is vocab_size-1. Encoding applies
 *                   the merges by rank (merge index), lowest first.
 *  - MOE_TOK_RANKS: a tiktoken rank table (token bytes -> rank = id). Encoding
 *                   is tiktoken's byte-pair algorithm (repeatedly merge the
 *                   adjacent pair whose concatenation has the lowest rank).
 *                   Special tokens follow the ranks: by default only
 *                   <|endoftext|> = vocab_size-1 (50256 for r50k_base); the
 *                   known tables (cl100k_base, o200k_base, Llama 3) have
 *                   tiktoken's / Meta's special tokens and ids, with gaps.
 * BPE and RANKS pre-split text with a pattern (below); bytes that are not
 * valid UTF-8 each form their own chunk. */
typedef enum { MOE_TOK_BYTES = 0, MOE_TOK_BPE = 1, MOE_TOK_RANKS = 2 } moe_tok_kind;

/* Pre-split patterns: tiktoken's regular expressions, matched by hand over
 * Unicode 16 classes (src/data/pretok.c):
 *  - MOE_PAT_GPT2:   r50k_base / p50k_base / GPT-2 (and BPE trained here)
 *  - MOE_PAT_CL100K: cl100k_base
 *  - MOE_PAT_O200K:  o200k_base
 *  - MOE_PAT_LLAMA3: Llama 3; the same expression as cl100k, kept apart so
 *                    that exporters can name the pre-tokenizer ("llama-bpe")
 * Names (moe_tok_pattern_name): "none", "gpt2", "cl100k", "o200k", "llama3". */
typedef enum {
    MOE_PAT_NONE = 0, MOE_PAT_GPT2 = 1, MOE_PAT_CL100K = 2, MOE_PAT_O200K = 3, MOE_PAT_LLAMA3 = 4
} moe_tok_pattern;
const char *moe_tok_pattern_name(moe_tok_pattern p);   /* NULL if out of range */
/* Name -> pattern; also takes "r50k" and "p50k" for gpt2. 0, or -1 if unknown. */
int moe_tok_pattern_parse(const char *name, size_t len, moe_tok_pattern *out);
/* The regular expression (tiktoken's pat_str, PCRE / Rust regex syntax); NULL for NONE. */
const char *moe_tok_pattern_regex(moe_tok_pattern p);

typedef struct moe_tokenizer moe_tokenizer;  /* immutable once built; thread-safe to share */

#define MOE_EOT_TEXT "<|endoftext|>"

/* Loads our tokenizer file (first line "moe-tokenizer ...") or a tiktoken
 * rank file (lines "base64(token) rank"), detected from the content. A rank
 * file that is r50k_base, cl100k_base, o200k_base or Llama 3's (recognised by
 * a hash of its tokens) gets that table's pattern and special tokens; any
 * other gets gpt2 and <|endoftext|> after the ranks. The name "bytes" gives
 * the bytes tokenizer. Errors name the file and line. */
int moe_tokenizer_load(const char *path, moe_tokenizer **out, moe_err *err);
/* The same from text in memory; `what` names it in error messages. */
int moe_tokenizer_parse(const char *text, size_t len, const char *what,
                        moe_tokenizer **out, moe_err *err);
moe_tokenizer *moe_tokenizer_bytes(moe_err *err);
/* Writes our format (atomically). */
int moe_tokenizer_save(const moe_tokenizer *t, const char *path, moe_err *err);
/* The file text, appended to *out. */
int moe_tokenizer_serialize(const moe_tokenizer *t, moe_buf *out, moe_err *err);

/* Sets the pre-split pattern of a rank table (before it is shared): for a
 * rank file whose pattern is not recognised. Other kinds refuse. */
int moe_tokenizer_set_pattern(moe_tokenizer *t, moe_tok_pattern p, moe_err *err);

moe_tok_kind moe_tokenizer_kind(const moe_tokenizer *t);
/* One more than the largest id (ordinary or special). */
uint32_t moe_tokenizer_vocab_size(const moe_tokenizer *t);
/* The end-of-document token: <|endoftext|> (<|end_of_text|> for Llama 3). */
uint32_t moe_tokenizer_eot(const moe_tokenizer *t);
moe_tok_pattern moe_tokenizer_pattern(const moe_tokenizer *t);
/* The known rank table this is ("r50k_base", "cl100k_base", "o200k_base",
 * "llama3"), recognised by its tokens whatever file it came from; else NULL. */
const char *moe_tokenizer_vocab_name(const moe_tokenizer *t);
/* Special tokens (eot among them), i < moe_tokenizer_n_special, ascending
 * ids: the text, and the id in *id; NULL if i is out of range. */
uint32_t moe_tokenizer_n_special(const moe_tokenizer *t);
const char *moe_tokenizer_special(const moe_tokenizer *t, uint32_t i, uint32_t *id);
/* The index i of special token id among them, or -1 when id is not special. */
long moe_tokenizer_special_index(const moe_tokenizer *t, uint32_t id);
/* Bytes of token `id` (a special token gives its text, e.g. "<|endoftext|>");
 * NULL if id is no token (>= vocab_size, or an unused id between the
 * ordinary and special ones, as 100256 in cl100k_base). */
const uint8_t *moe_tokenizer_token(const moe_tokenizer *t, uint32_t id, size_t *len);
void moe_tokenizer_free(moe_tokenizer *t);

/* Encoding flags. */
#define MOE_ENC_ALLOW_SPECIAL 1u  /* special token texts (e.g. "<|endoftext|>") become their ids */

/* Encodes text[len] (any bytes) into a malloc'd ids[n]. Inputs above ~1 MB are
 * split at safe points (where the pre-split cannot change) and encoded in
 * parallel with OpenMP. Special token texts are encoded as plain text. */
int moe_tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len,
                         uint32_t **ids, size_t *n, moe_err *err);
int moe_tokenizer_encode_ex(const moe_tokenizer *t, const char *text, size_t len,
                            unsigned flags, uint32_t **ids, size_t *n, moe_err *err);
/* ids -> bytes, appended to *out; lossless for any byte string. An id that is
 * no token is an error that names its position. */
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

/* Many texts at once: appends the ids of texts[i][lens[i]] to out[i] for
 * every i < n, `threads` threads (0: OpenMP's default) each with its own
 * encoder. progress (may be NULL) hears of the bytes done, from one
 * thread. On an error: -1, the error of a failing text, and *failed_at (may
 * be NULL) its index (SIZE_MAX when an encoder could not be made). */
struct moe_progress;
int moe_encode_pieces(const moe_tokenizer *t, const char *const *texts, const size_t *lens, size_t n,
                      unsigned flags, int threads, const struct moe_progress *progress, moe_ids *out,
                      size_t *failed_at, moe_err *err);

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

/* For other programs' descriptions of a tokenizer (src/data/tok_merges.c;
 * the pre-split pattern is moe_tokenizer_pattern): the merge (a, b) that makes token id, as Hugging Face and llama.cpp
 * list BPE merges (in id order). moe_tokenizer_merge_of returns 0 and sets
 * *a, *b; 1 when id is a byte, eot, or a rank-table token that tiktoken's
 * algorithm never produces whole; -1 when out of memory. */
int moe_tokenizer_merge_of(const moe_tokenizer *t, uint32_t id, uint32_t *a, uint32_t *b);

/* Other programs' byte-level text of a tokenizer (src/data/tok_hf.c):
 * GPT-2's alphabet, where every byte is shown as a printable character.
 * moe_tok_bytes_to_text appends the UTF-8 text of token bytes p[n] to out;
 * moe_tok_text_to_bytes appends the bytes of a token text, -1 if a
 * character is not of the alphabet (both -1 when out of memory). */
int moe_tok_bytes_to_text(const uint8_t *p, size_t n, moe_buf *out);
int moe_tok_text_to_bytes(const char *s, size_t len, moe_buf *out);
/* A moe BPE tokenizer from token texts[n] (in that alphabet) and merges[nm]
 * ("A B") when they are moe's layout (bytes 0..255 in order, merge i makes
 * id 256+i, then <|endoftext|>), as llama.cpp's GGUF and tokenizer.json list
 * them; else 0 with *out NULL and why saying what differs. */
int moe_tokenizer_from_vocab_texts(const char *const *texts, const size_t *lens, size_t n,
                                   const char *const *merges, const size_t *mlens, size_t nm,
                                   moe_tokenizer **out, char *why, size_t why_cap, moe_err *err);
/* A Hugging Face tokenizer.json (what moe export writes, or another
 * byte-level BPE in moe's layout) as a tokenizer; 0 with *tok NULL and *why
 * set when it is not one moe can hold. moe_tokenizer_load reads one too. */
int moe_tokenizer_from_hf_json(const char *path, moe_tokenizer **tok, char *why, size_t why_cap,
                               moe_err *err);

#endif
