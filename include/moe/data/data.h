/* data.h — token files (the on-disk format documented in docs/FORMAT.md) and
 * the training batch loader (sequential or seeded-shuffled rows). */
#ifndef MOE_DATA_H
#define MOE_DATA_H

#include "moe/util/common.h"
#include "moe/util/fileio.h"

/* Token file layout (all integers little-endian):
 *   0  char[8]  magic "MOETOKS\0"
 *   8  u32      version (1)
 *  12  u32      bytes per token: 2 (uint16) or 4 (uint32)
 *  16  u64      n_tokens
 *  24  u64      n_docs      (0: no document table)
 *  32  u32      n_domains   (0: no domain names)
 *  36  u32      vocab_size  (0: unknown; else every id < vocab_size)
 *  40  u32      CRC-32 of the whole file but these 4 bytes (when flags bit 0)
 *  44  u32      flags: bit 0 = the CRC is present; bit 1 = a tokenizer
 *                section ends the file; other bits zero
 *  48  u8[16]   reserved, zero
 *  64  tokens   n_tokens * bytes-per-token
 *      docs     n_docs * { u64 first_token, u32 domain_id, u32 zero }
 *      domains  n_domains * { u32 byte_len, UTF-8 name }
 *      tokenizer (flags bit 1) { u64 byte_len, the tokenizer file's text }
 * Documents are contiguous, in order, first_token strictly increasing from 0.
 * Files without bit 1 (written before the tokenizer was recorded) read as
 * before, with no tokenizer. */
#define MOE_TOKENS_MAGIC "MOETOKS"
#define MOE_TOKENS_VERSION 1u
#define MOE_TOKENS_HEADER 64
#define MOE_TOKENS_HAS_CRC 1u
#define MOE_TOKENS_HAS_TOKENIZER 2u

/* The ids live in one of two places: `ids`, an array built in memory
 * (prepare, tests), or, for a file read by moe_tokens_read, the file itself,
 * memory-mapped (`map`: n ids of `width` bytes, little-endian, at
 * `file_ids`), so that a corpus larger than memory is read page by page and
 * never copied. Read them with moe_token(). */
typedef struct moe_tokens {
    uint32_t *ids;          /* [n] when built in memory, else NULL */
    const unsigned char *file_ids;  /* [n * width] inside map, when read from a file */
    uint32_t width;         /* bytes per id in file_ids: 2 or 4 */
    moe_mapped map;         /* the mapped file (moe_tokens_free unmaps it) */
    size_t n;
    uint32_t vocab_size;    /* 0 if unknown */
    size_t n_docs;
    uint64_t *doc_start;    /* [n_docs] first token of each document */
    uint32_t *doc_domain;   /* [n_docs] index into domain_names */
    size_t n_domains;
    char **domain_names;    /* [n_domains] */
    char *path;             /* the file it was read from (NULL when built in memory) */
    uint64_t file_bytes;    /* its size, and the CRC-32 of all of it: what a run */
    uint32_t file_crc;      /* records to know its data again (trainer_state.json) */
    char *tokenizer;        /* the tokenizer file text the ids came from (NULL: not recorded) */
    size_t tokenizer_len;
} moe_tokens;

/* Token i (i < n). */
static inline uint32_t moe_token(const moe_tokens *t, size_t i) {
    if (t->ids) return t->ids[i];
    const unsigned char *p = t->file_ids + i * t->width;
    return t->width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8
                         : (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                               (uint32_t)p[3] << 24;
}

/* Done with ids [first, first + n) for now: the pages of a mapped file
 * that hold them leave this process's resident set (they are read again if
 * used again). Readers that walk a file call it after copying a window, so
 * a pass over a corpus larger than memory stays small. No-op in memory. */
void moe_tokens_release(const moe_tokens *t, size_t first, size_t n);

/* Maps the file (it stays mapped until moe_tokens_free) and checks all of
 * it (header, every id against vocab_size, documents, CRC) in one pass that
 * hands each chunk's pages back as it goes, so that reading a file costs
 * about the same resident memory whatever its size. */
int moe_tokens_read(const char *path, moe_tokens *out, moe_err *err);
/* Written atomically; uint16 when every id < 65536, else uint32. */
int moe_tokens_write(const char *path, const moe_tokens *t, moe_err *err);
void moe_tokens_free(moe_tokens *t);

/* nanoGPT's token files (its prepare.py writes train.bin / val.bin): raw
 * little-endian uint16 ids, no header, no document boundaries. Writes them
 * to `out` as a token file of width 2 (the same bytes after a header), no
 * document table, every id checked below vocab, and the tokenizer file text
 * tok_text[tok_len] recorded when tok_len > 0. Streams through a map: memory
 * does not grow with the file. *n_out (may be NULL): the ids written. */
int moe_tokens_convert_raw16(const char *in, const char *out, uint32_t vocab, const char *tok_text,
                             size_t tok_len, size_t *n_out, moe_err *err);

/* Progress of a long pass (eval, analyze): fn(ctx, done, total) after each
 * batch. NULL where no one is watching. */
typedef struct moe_progress {
    void (*fn)(void *ctx, size_t done, size_t total);
    void *ctx;
} moe_progress;

/* What an evaluation read of a token file: `tokens` of the file's `of`
 * (positions scored or analysed; all of them when not sampled), in
 * `windows` windows of `window` positions; sampled (max_tokens < the file):
 * evenly spaced windows, stratified by domain when the file has several. */
typedef struct moe_read_info {
    size_t tokens, of, windows, window;
    int sampled, stratified;
} moe_read_info;

/* Which windows to read when only max_tokens tokens of a file are wanted.
 * The file is cut into n_grid = (n - span) / stride + 1 windows, window w
 * holding tokens [w*stride, w*stride + span). k = max_tokens / stride of
 * them (at least 1, at most n_grid) are chosen evenly spaced through the
 * file; when the file names several domains, within each domain (that of a
 * window's first token) separately, k split in proportion to each domain's
 * windows, and every domain with a window gets one while k allows: a file
 * sorted by domain still gives each domain its share. Deterministic. Fills
 * *starts (malloc'd, ascending: first token of each window) and info. */
int moe_tokens_sample(const moe_tokens *t, size_t span, size_t stride, size_t max_tokens,
                      size_t **starts, moe_read_info *info, moe_err *err);
/* Appends "\"read\": {...}" (tokens, of, windows, window, sampling). */
int moe_read_info_json(const moe_read_info *r, moe_buf *out);
/* "3000 of 3000 tokens" or "300 of 3000 tokens: 10 evenly spaced windows of
 * 30, stratified by domain" into out[cap]. */
void moe_read_info_text(const moe_read_info *r, char *out, size_t cap);

/* The batch loader. A "row" is T+1 consecutive tokens; row i starts at token
 * i*T, so there are n_rows = (n - 1) / T rows per epoch.
 *  - sequential: batch b, row r of the batch is row index (b*B + r) mod n_rows
 *    (tests rely on this exact order);
 *  - shuffled: the same rows, in an order permuted per epoch by a seeded RNG. */
typedef struct moe_loader {
    const moe_tokens *tokens;
    size_t B, T;
    size_t n_rows;
    int shuffle;
    uint64_t seed;
    uint64_t position;      /* rows consumed so far (saved in checkpoints) */
    size_t *perm;           /* [n_rows] current epoch's order (shuffle only) */
    uint64_t perm_epoch;    /* epoch that perm holds */
} moe_loader;

int moe_loader_init(moe_loader *l, const moe_tokens *t, size_t B, size_t T,
                    int shuffle, uint64_t seed, moe_err *err);
/* Fills inputs[B*T] and targets[B*T] with the next batch and advances. */
int moe_loader_next(moe_loader *l, int *inputs, int *targets, moe_err *err);
void moe_loader_free(moe_loader *l);

#endif
