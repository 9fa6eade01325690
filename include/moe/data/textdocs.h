/* textdocs.h — reading training text: JSONL files ({"text": ..., "domain":
 * ...} per line), plain text files, and folders of them, into a list of
 * documents with domain names (used by `moe prepare` and `moe tokenizer`);
 * and the documents encoded into one token file (`moe prepare`). */
#ifndef MOE_TEXTDOCS_H
#define MOE_TEXTDOCS_H

#include "moe/util/common.h"
#include "moe/data/data.h"
#include "moe/data/tokenizer.h"

typedef struct moe_docs_doc {
    const char *text;   /* [len] bytes, owned by the moe_docs */
    size_t len;
    uint32_t domain;    /* index into domains */
} moe_docs_doc;

typedef struct moe_docs {
    moe_docs_doc *docs;     /* [n] in input order */
    size_t n, cap;
    char **domains;         /* [n_domains] names, in order of first use */
    size_t n_domains;
    char **bufs;            /* owned memory the texts live in */
    size_t n_bufs, cap_bufs;
    uint64_t bytes;         /* sum of len */
    size_t files;           /* files read */
    const char *domain_field; /* JSONL key holding the domain (NULL: "domain") */
} moe_docs;

/* Adds the documents of `path`:
 *  - a file ending in .jsonl: one document per non-empty line, an object with
 *    a string "text" and optionally a string "domain" (else `domain`; the
 *    key can be changed with d->domain_field, e.g. "genre" for Brown);
 *  - any other file: one document (its bytes), domain `domain`;
 *  - a folder: its files, recursively, in name order, skipping names that
 *    start with '.'; files directly in it get `domain`, files under a
 *    subfolder get that subfolder's name.
 * `domain` NULL means "default". Errors name the file and line. */
int moe_docs_add(moe_docs *d, const char *path, const char *domain, moe_err *err);
void moe_docs_free(moe_docs *d);

/* Encodes every document of docs with tok, `threads` at a time, each
 * followed by <|endoftext|>, into *out (which owns what it points to; free
 * with moe_tokens_free): the ids in input order, a document table, the
 * domains that some document uses (numbered in order of first use) and
 * tok's file text. progress (may be NULL) hears of the bytes encoded, from
 * one thread. An error names the document (1-based). */
int moe_docs_encode(const moe_docs *docs, const moe_tokenizer *tok, int threads, const moe_progress *progress,
                    moe_tokens *out, moe_err *err);

#endif
