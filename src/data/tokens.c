/* tokens.c — token files (format in data.h and docs/FORMAT.md) and the
 * training batch loader. */
#include "moe/data/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/checksum.h"
#include "moe/util/fileio.h"
#include "moe/util/rng.h"

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) { wr32(p, (uint32_t)v); wr32(p + 4, (uint32_t)(v >> 32)); }

/* CRC-32 of the whole file except the CRC field itself (bytes 40..43). */
static uint32_t file_crc(const unsigned char *b, size_t len) {
    return moe_crc32(moe_crc32(0, b, 40), b + 44, len - 44);
}

/* What one pass over a mapped token file finds: the CRC-32 of all of it,
 * that of all but its CRC field, and the first id >= vocab (bad < n). */
typedef struct file_scan {
    uint32_t whole_crc, body_crc;
    size_t bad;
    uint32_t bad_id;
} file_scan;

/* Reads the file once, 1 MiB at a time, and releases each chunk's pages
 * from this process as soon as it is read: validating a corpus larger than
 * memory keeps one chunk resident. The ids are [n] of `width` bytes at
 * offset MOE_TOKENS_HEADER (the caller checked that they fit the file). */
static file_scan scan_file(const moe_mapped *m, size_t n, uint32_t width, uint32_t vocab) {
    const size_t chunk = (size_t)1 << 20;   /* a multiple of the page size and of width */
    const size_t H = MOE_TOKENS_HEADER;
    const unsigned char *b = m->data;
    file_scan r = {.bad = n};
    for (size_t off = 0; off < m->len; off += chunk) {
        size_t end = off + chunk < m->len ? off + chunk : m->len;
        r.whole_crc = moe_crc32(r.whole_crc, b + off, end - off);
        if (off == 0) /* the file is at least a header long: skip the CRC field */
            r.body_crc = moe_crc32(moe_crc32(0, b, 40), b + 44, end - 44);
        else
            r.body_crc = moe_crc32(r.body_crc, b + off, end - off);
        /* the ids whose first byte lies in [off, end) */
        size_t lo = off <= H ? 0 : (off - H + width - 1) / width;
        size_t hi = end <= H ? 0 : (end - H + width - 1) / width;
        if (hi > n) hi = n;
        for (size_t i = lo; vocab && r.bad == n && i < hi; i++) {
            const unsigned char *p = b + H + i * width;
            uint32_t id = width == 2 ? (uint32_t)(p[0] | p[1] << 8) : rd32(p);
            if (id >= vocab) { r.bad = i; r.bad_id = id; }
        }
        moe_map_release_pages(m, off, end - off);
    }
    return r;
}

void moe_tokens_free(moe_tokens *t) {
    if (!t) return;
    free(t->ids);
    moe_unmap_file(&t->map);
    free(t->doc_start);
    free(t->doc_domain);
    for (size_t i = 0; i < t->n_domains; i++) free(t->domain_names[i]);
    free(t->domain_names);
    free(t->path);
    free(t->tokenizer);
    memset(t, 0, sizeof *t);
}

/* Parses the token file mapped in t->map; errors name `path`. */
static int parse_tokens(const char *path, moe_tokens *t, moe_err *err) {
    const unsigned char *b = t->map.data;
    size_t len = t->map.len;
    if (len < MOE_TOKENS_HEADER)
        return moe_errf(err, "%s: truncated token file: %zu bytes, the header alone is %d",
                        path, len, MOE_TOKENS_HEADER);
    if (memcmp(b, MOE_TOKENS_MAGIC, 8))
        return moe_errf(err, "%s: not a moe token file (bad magic; expected \"%s\")", path,
                        MOE_TOKENS_MAGIC);
    uint32_t version = rd32(b + 8), width = rd32(b + 12), n_domains = rd32(b + 32);
    uint32_t crc = rd32(b + 40), flags = rd32(b + 44);
    uint64_t n = rd64(b + 16), n_docs = rd64(b + 24);
    t->vocab_size = rd32(b + 36);
    if (version != MOE_TOKENS_VERSION)
        return moe_errf(err, "%s: token file version %u, this moe reads version %u", path,
                        version, MOE_TOKENS_VERSION);
    if (width != 2 && width != 4)
        return moe_errf(err, "%s: bytes per token must be 2 or 4, found %u", path, width);
    if (flags & ~(MOE_TOKENS_HAS_CRC | MOE_TOKENS_HAS_TOKENIZER))
        return moe_errf(err, "%s: unknown flags 0x%x in the header", path, flags);
    for (size_t i = 48; i < MOE_TOKENS_HEADER; i++)
        if (b[i]) return moe_errf(err, "%s: reserved header byte %zu is not zero", path, i);

    size_t pos = MOE_TOKENS_HEADER;
    if (n > (len - pos) / width)
        return moe_errf(err, "%s: truncated: header says %llu tokens of %u bytes, file has %zu "
                        "bytes after the header", path, (unsigned long long)n, width, len - pos);
    t->n = (size_t)n;
    t->width = width;
    t->file_ids = b + pos;
    file_scan scan = scan_file(&t->map, t->n, width, t->vocab_size);
    if (scan.bad < t->n)
        return moe_errf(err, "%s: token %zu has id %u, outside vocab_size %u", path, scan.bad,
                        scan.bad_id, t->vocab_size);
    t->file_bytes = len;
    t->file_crc = scan.whole_crc;
    pos += t->n * width;
    if (n_docs > (len - pos) / 16)
        return moe_errf(err, "%s: truncated document table (%llu documents declared)", path,
                        (unsigned long long)n_docs);
    t->n_docs = (size_t)n_docs;
    t->doc_start = moe_calloc(t->n_docs, sizeof(uint64_t), err);
    t->doc_domain = moe_calloc(t->n_docs, sizeof(uint32_t), err);
    if (!t->doc_start || !t->doc_domain) return -1;
    for (size_t i = 0; i < t->n_docs; i++) {
        t->doc_start[i] = rd64(b + pos + 16 * i);
        t->doc_domain[i] = rd32(b + pos + 16 * i + 8);
        int bad_start = i == 0 ? t->doc_start[0] != 0
                               : t->doc_start[i] <= t->doc_start[i - 1];
        if (bad_start || t->doc_start[i] >= n)
            return moe_errf(err, "%s: document %zu starts at token %llu: documents must start "
                            "at 0 and increase strictly inside the %llu tokens", path, i,
                            (unsigned long long)t->doc_start[i], (unsigned long long)n);
        if (t->doc_domain[i] >= n_domains && n_domains)
            return moe_errf(err, "%s: document %zu has domain %u, only %u domains named", path,
                            i, t->doc_domain[i], n_domains);
    }
    pos += t->n_docs * 16;
    if (n_domains > (len - pos) / 4)
        return moe_errf(err, "%s: truncated: %u domain names declared, %zu bytes left", path,
                        n_domains, len - pos);
    t->domain_names = moe_calloc(n_domains, sizeof(char *), err);
    if (!t->domain_names) return -1;
    for (uint32_t i = 0; i < n_domains; i++) {
        if (len - pos < 4) return moe_errf(err, "%s: truncated domain names", path);
        uint32_t l = rd32(b + pos);
        pos += 4;
        if (l > len - pos || l > 4096)
            return moe_errf(err, "%s: domain name %u of %u bytes runs past the end", path, i, l);
        t->domain_names[i] = moe_malloc(l + 1, err);
        if (!t->domain_names[i]) return -1;
        memcpy(t->domain_names[i], b + pos, l);
        t->domain_names[i][l] = '\0';
        t->n_domains = i + 1;
        pos += l;
    }
    if (flags & MOE_TOKENS_HAS_TOKENIZER) {
        if (len - pos < 8) return moe_errf(err, "%s: truncated: the tokenizer section has no length", path);
        uint64_t l = rd64(b + pos);
        pos += 8;
        if (l > len - pos || l == 0)
            return moe_errf(err, "%s: the tokenizer section of %llu bytes does not fit the %zu bytes "
                            "left", path, (unsigned long long)l, len - pos);
        t->tokenizer = moe_malloc((size_t)l + 1, err);
        if (!t->tokenizer) return -1;
        memcpy(t->tokenizer, b + pos, (size_t)l);
        t->tokenizer[l] = '\0';
        t->tokenizer_len = (size_t)l;
        pos += (size_t)l;
    }
    if (pos != len)
        return moe_errf(err, "%s: %zu unexpected bytes after the %s", path, len - pos,
                        (flags & MOE_TOKENS_HAS_TOKENIZER) ? "tokenizer" : "domain names");
    if ((flags & MOE_TOKENS_HAS_CRC) && scan.body_crc != crc)
        return moe_errf(err, "%s: checksum mismatch: the file is corrupt", path);
    return 0;
}

void moe_tokens_release(const moe_tokens *t, size_t first, size_t n) {
    if (t->ids || !t->map.mapped || first >= t->n) return;
    if (n > t->n - first) n = t->n - first;
    moe_map_release_pages(&t->map, (size_t)(t->file_ids - t->map.data) + first * t->width,
                          n * t->width);
}

int moe_tokens_read(const char *path, moe_tokens *out, moe_err *err) {
    memset(out, 0, sizeof *out);
    if (moe_map_file(path, &out->map, err)) return -1;
    int rc = parse_tokens(path, out, err);
    if (!rc) {
        out->path = strdup(path);
        if (!out->path) rc = moe_errf(err, "out of memory");
    }
    if (rc) moe_tokens_free(out);
    return rc;
}

int moe_tokens_write(const char *path, const moe_tokens *t, moe_err *err) {
    uint32_t width = 2;
    for (size_t i = 0; i < t->n; i++)
        if (moe_token(t, i) > 65535) { width = 4; break; }
    size_t names = 0;
    for (size_t i = 0; i < t->n_domains; i++) names += 4 + strlen(t->domain_names[i]);
    size_t len = MOE_TOKENS_HEADER + t->n * width + t->n_docs * 16 + names +
                 (t->tokenizer_len ? 8 + t->tokenizer_len : 0);
    unsigned char *b = moe_calloc(len, 1, err);
    if (!b) return -1;
    memcpy(b, MOE_TOKENS_MAGIC, 8);
    wr32(b + 8, MOE_TOKENS_VERSION);
    wr32(b + 12, width);
    wr64(b + 16, t->n);
    wr64(b + 24, t->n_docs);
    wr32(b + 32, (uint32_t)t->n_domains);
    wr32(b + 36, t->vocab_size);
    wr32(b + 44, MOE_TOKENS_HAS_CRC | (t->tokenizer_len ? MOE_TOKENS_HAS_TOKENIZER : 0));
    size_t pos = MOE_TOKENS_HEADER;
    for (size_t i = 0; i < t->n; i++, pos += width) {
        uint32_t id = moe_token(t, i);
        if (width == 2) { b[pos] = (unsigned char)id; b[pos + 1] = (unsigned char)(id >> 8); }
        else wr32(b + pos, id);
    }
    for (size_t i = 0; i < t->n_docs; i++, pos += 16) {
        wr64(b + pos, t->doc_start[i]);
        wr32(b + pos + 8, t->doc_domain[i]);
    }
    for (size_t i = 0; i < t->n_domains; i++) {
        uint32_t l = (uint32_t)strlen(t->domain_names[i]);
        wr32(b + pos, l);
        memcpy(b + pos + 4, t->domain_names[i], l);
        pos += 4 + l;
    }
    if (t->tokenizer_len) {
        wr64(b + pos, t->tokenizer_len);
        memcpy(b + pos + 8, t->tokenizer, t->tokenizer_len);
    }
    wr32(b + 40, file_crc(b, len));
    int rc = moe_write_file_atomic(path, b, len, err);
    free(b);
    return rc;
}

/* ---- nanoGPT's raw token files ----------------------------------------- */

/* The header of a token file of n uint16 ids, no document table, and a
 * tokenizer section of tok_len bytes when tok_len > 0; its CRC field is
 * left zero. */
static void raw16_header(unsigned char *h, uint64_t n, uint32_t vocab, size_t tok_len) {
    memset(h, 0, MOE_TOKENS_HEADER);
    memcpy(h, MOE_TOKENS_MAGIC, 8);
    wr32(h + 8, MOE_TOKENS_VERSION);
    wr32(h + 12, 2);
    wr64(h + 16, n);
    wr32(h + 36, vocab);
    wr32(h + 44, MOE_TOKENS_HAS_CRC | (tok_len ? MOE_TOKENS_HAS_TOKENIZER : 0));
}

int moe_tokens_convert_raw16(const char *in, const char *out, uint32_t vocab, const char *tok_text,
                             size_t tok_len, size_t *n_out, moe_err *err) {
    moe_mapped m;
    if (moe_map_file(in, &m, err)) return -1;
    int rc = 0;
    if (m.len % 2 || m.len == 0) {
        rc = moe_errf(err, "%s: %zu bytes: a nanoGPT token file holds uint16 ids, an even number of "
                      "bytes (at least one id)", in, m.len);
        goto done;
    }
    size_t n = m.len / 2;
    const size_t chunk = (size_t)1 << 20;
    unsigned char h[MOE_TOKENS_HEADER], len8[8];
    raw16_header(h, n, vocab, tok_len);
    wr64(len8, tok_len);
    /* pass 1: every id below vocab, and the CRC of all but the CRC field */
    uint32_t crc = moe_crc32(moe_crc32(0, h, 40), h + 44, MOE_TOKENS_HEADER - 44);
    for (size_t off = 0; off < m.len && !rc; off += chunk) {
        size_t end = off + chunk < m.len ? off + chunk : m.len;
        for (size_t i = off / 2; i < end / 2; i++) {
            uint32_t id = (uint32_t)(m.data[2 * i] | m.data[2 * i + 1] << 8);
            if (id >= vocab) {
                rc = moe_errf(err, "%s: token %zu has id %u, outside the vocabulary of %u", in, i, id, vocab);
                break;
            }
        }
        crc = moe_crc32(crc, m.data + off, end - off);
        moe_map_release_pages(&m, off, end - off);
    }
    if (rc) goto done;
    if (tok_len) crc = moe_crc32(moe_crc32(crc, len8, 8), tok_text, tok_len);
    wr32(h + 40, crc);
    /* pass 2: the header, the ids as they are (the same bytes), the tokenizer */
    moe_afile f;
    if (moe_afile_open(&f, out, err)) { rc = -1; goto done; }
    rc = moe_afile_write(&f, h, sizeof h, err);
    for (size_t off = 0; off < m.len && !rc; off += chunk) {
        size_t end = off + chunk < m.len ? off + chunk : m.len;
        rc = moe_afile_write(&f, m.data + off, end - off, err);
        moe_map_release_pages(&m, off, end - off);
    }
    if (!rc && tok_len) rc = moe_afile_write(&f, len8, 8, err) || moe_afile_write(&f, tok_text, tok_len, err);
    if (rc) moe_afile_abort(&f);
    else rc = moe_afile_commit(&f, err);
    if (n_out) *n_out = n;
done:
    moe_unmap_file(&m);
    return rc ? -1 : 0;
}

/* ---- sampling for evaluation ------------------------------------------ */

/* Splits k among the domains in proportion to weight[d] (largest remainder,
 * ties to the lower index); q[d] receives the shares. */
static void apportion(const size_t *weight, size_t nd, size_t k, size_t *q) {
    size_t total = 0, given = 0;
    for (size_t d = 0; d < nd; d++) total += weight[d];
    for (size_t d = 0; d < nd; d++) {
        q[d] = total ? (size_t)((double)k * (double)weight[d] / (double)total) : 0;
        given += q[d];
    }
    while (given < k && total) {  /* the largest remainders, one each */
        size_t best = nd;
        double best_frac = -1.0;
        for (size_t d = 0; d < nd; d++) {
            double exact = (double)k * (double)weight[d] / (double)total, frac = exact - (double)q[d];
            if (weight[d] && frac > best_frac) { best_frac = frac; best = d; }
        }
        if (best == nd) break;
        q[best]++;
        given++;
    }
}

int moe_tokens_sample(const moe_tokens *t, size_t span, size_t stride, size_t max_tokens,
                      size_t **starts, moe_read_info *info, moe_err *err) {
    *starts = NULL;
    if (stride == 0 || span < stride || t->n < span)
        return moe_errf(err, "need at least %zu tokens to read one window, found %zu", span, t->n);
    size_t n_grid = (t->n - span) / stride + 1, k = max_tokens / stride;
    if (k < 1) k = 1;
    if (k > n_grid) k = n_grid;
    size_t nd = t->n_domains > 1 ? t->n_domains : 1;
    size_t *count = moe_calloc(3 * nd, sizeof(size_t), err), *q = count ? count + nd : NULL;
    size_t *seen = q ? q + nd : NULL, *taken = NULL;
    uint32_t *dom = count ? moe_malloc(n_grid * sizeof(uint32_t), err) : NULL;
    *starts = dom ? moe_malloc(k * sizeof(size_t), err) : NULL;
    taken = *starts ? moe_calloc(nd, sizeof(size_t), err) : NULL;
    if (!taken) { free(count); free(dom); free(*starts); *starts = NULL; return -1; }
    /* the domain of each window: that of the document holding its first token */
    for (size_t w = 0, doc = 0; w < n_grid; w++) {
        size_t p = w * stride;
        while (doc + 1 < t->n_docs && t->doc_start[doc + 1] <= p) doc++;
        dom[w] = nd > 1 && t->n_docs ? t->doc_domain[doc] : 0;
        count[dom[w]]++;
    }
    /* each domain's share: one for every domain with a window while k
     * allows, the rest in proportion */
    size_t present = 0;
    for (size_t d = 0; d < nd; d++) present += count[d] > 0;
    if (k >= present) {
        size_t *rest = moe_calloc(nd, sizeof(size_t), err);
        if (!rest) { free(count); free(dom); free(*starts); free(taken); *starts = NULL; return -1; }
        for (size_t d = 0; d < nd; d++) rest[d] = count[d] ? count[d] - 1 : 0;
        apportion(rest, nd, k - present, q);
        for (size_t d = 0; d < nd; d++) q[d] += count[d] > 0;
        free(rest);
    } else {
        apportion(count, nd, k, q);
    }
    /* within a domain, q of its c windows, evenly spaced: local index
     * floor((2j + 1) c / (2q)) for j = 0 .. q-1 (strictly increasing as c >= q) */
    size_t n = 0;
    for (size_t w = 0; w < n_grid; w++) {
        size_t d = dom[w], j = taken[d];
        if (j < q[d] && seen[d] == (2 * j + 1) * count[d] / (2 * q[d])) {
            (*starts)[n++] = w * stride;
            taken[d]++;
        }
        seen[d]++;
    }
    free(count);
    free(dom);
    free(taken);
    *info = (moe_read_info){.tokens = n * stride, .of = t->n, .windows = n, .window = stride,
                            .sampled = 1, .stratified = present > 1};
    return 0;
}

int moe_read_info_json(const moe_read_info *r, moe_buf *out) {
    return moe_buf_printf(out, "\"read\": {\"tokens\": %zu, \"of\": %zu, \"windows\": %zu, "
                          "\"window\": %zu, \"sampling\": \"%s\"}", r->tokens, r->of, r->windows,
                          r->window, !r->sampled ? "all" : r->stratified
                          ? "evenly spaced windows, stratified by domain" : "evenly spaced windows");
}

void moe_read_info_text(const moe_read_info *r, char *out, size_t cap) {
    if (!r->sampled) snprintf(out, cap, "%zu of %zu tokens", r->tokens, r->of);
    else snprintf(out, cap, "%zu of %zu tokens: %zu evenly spaced windows of %zu%s", r->tokens, r->of,
                  r->windows, r->window, r->stratified ? ", stratified by domain" : "");
}

/* ---- loader ----------------------------------------------------------- */

int moe_loader_init(moe_loader *l, const moe_tokens *t, size_t B, size_t T,
                    int shuffle, uint64_t seed, moe_err *err) {
    memset(l, 0, sizeof *l);
    if (t->n < T + 1)
        return moe_errf(err, "%zu tokens, fewer than one sequence of %zu + 1 (seq_len + 1)",
                        t->n, T);
    l->tokens = t;
    l->B = B;
    l->T = T;
    l->n_rows = (t->n - 1) / T;
    l->shuffle = shuffle;
    l->seed = seed;
    l->perm_epoch = UINT64_MAX;
    if (shuffle) {
        l->perm = moe_malloc(l->n_rows * sizeof(size_t), err);
        if (!l->perm) return -1;
    }
    return 0;
}

/* Fisher-Yates permutation of the rows of one epoch, seeded by (seed, epoch). */
static void make_perm(moe_loader *l, uint64_t epoch) {
    moe_rng rng;
    moe_rng_seed(&rng, l->seed * 0x9E3779B97F4A7C15ull + epoch + 1);
    for (size_t i = 0; i < l->n_rows; i++) l->perm[i] = i;
    for (size_t i = l->n_rows; i > 1; i--) {
        size_t j = (size_t)moe_rng_below(&rng, i);
        size_t tmp = l->perm[i - 1]; l->perm[i - 1] = l->perm[j]; l->perm[j] = tmp;
    }
    l->perm_epoch = epoch;
}

int moe_loader_next(moe_loader *l, int *inputs, int *targets, moe_err *err) {
    (void)err;
    for (size_t r = 0; r < l->B; r++) {
        uint64_t k = l->position + r;
        size_t row = (size_t)(k % l->n_rows);
        if (l->shuffle) {
            uint64_t epoch = k / l->n_rows;
            if (epoch != l->perm_epoch) make_perm(l, epoch);
            row = l->perm[row];
        }
        size_t first = row * l->T;
        for (size_t j = 0; j < l->T; j++) {
            inputs[r * l->T + j] = (int)moe_token(l->tokens, first + j);
            targets[r * l->T + j] = (int)moe_token(l->tokens, first + j + 1);
        }
        moe_tokens_release(l->tokens, first, l->T + 1);
    }
    l->position += l->B;
    return 0;
}

void moe_loader_free(moe_loader *l) {
    free(l->perm);
    memset(l, 0, sizeof *l);
}
