/* tok_hf.c — tokenizers as other programs write them down: GPT-2's
 * byte-to-character alphabet (both ways), a vocabulary given as token texts
 * and merges read back as a moe BPE tokenizer (what llama.cpp's GGUF and a
 * Hugging Face tokenizer.json list), and a Hugging Face tokenizer.json
 * (read; `moe export` writes it, src/interop/). */
#include "tok_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "moe/util/json.h"

/* ---- the byte-level alphabet ---------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes take code points 256, 257, ... in byte order. */
static int printable(uint32_t b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b < 256); }

static uint32_t byte_char(uint8_t b) {
    if (printable(b)) return b;
    uint32_t n = 0;
    for (uint32_t x = 0; x < b; x++) n += !printable(x);
    return 256 + n;
}

int moe_tok_bytes_to_text(const uint8_t *p, size_t n, moe_buf *out) {
    for (size_t i = 0; i < n; i++) {
        uint32_t c = byte_char(p[i]);
        char u[2] = {(char)(c < 0x80 ? c : 0xC0 | (c >> 6)), (char)(0x80 | (c & 0x3F))};
        if (moe_buf_append(out, u, c < 0x80 ? 1 : 2)) return -1;
    }
    return 0;
}

/* The byte a character of the alphabet stands for, or -1. */
static int char_byte(uint32_t c) {
    if (c < 256) return printable(c) ? (int)c : -1;
    uint32_t n = 256;
    for (int x = 0; x < 256; x++)
        if (!printable((uint32_t)x) && n++ == c) return x;
    return -1;
}

int moe_tok_text_to_bytes(const char *s, size_t len, moe_buf *out) {
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        if (p[i] < 0x80) { c = p[i]; i++; }
        else if ((p[i] & 0xE0) == 0xC0 && i + 1 < len) { c = (uint32_t)(p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F); i += 2; }
        else return -1;
        int b = char_byte(c);
        if (b < 0) return -1;
        uint8_t v = (uint8_t)b;
        if (moe_buf_append(out, &v, 1)) return -1;
    }
    return 0;
}

/* ---- a vocabulary of token texts ----------------------------------------- */

/* text -> id: an open-addressing table over the token texts */
typedef struct { const char *const *s; const size_t *n; uint32_t *slot; size_t cap; } text_map;

static uint64_t text_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int64_t text_get(const text_map *m, const char *s, size_t n) {
    for (size_t i = text_hash(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        uint32_t id = m->slot[i];
        if (id == UINT32_MAX) return -1;
        if (m->n[id] == n && !memcmp(m->s[id], s, n)) return id;
    }
}

int moe_tokenizer_from_vocab_texts(const char *const *texts, const size_t *lens, size_t n,
                                   const char *const *merges, const size_t *mlens, size_t nm,
                                   moe_tokenizer **out, char *why, size_t why_cap, moe_err *err) {
    *out = NULL;
    size_t eot = n;
    for (size_t i = 0; i < n; i++)
        if (lens[i] == strlen(MOE_EOT_TEXT) && !memcmp(texts[i], MOE_EOT_TEXT, lens[i])) { eot = i; break; }
    const char *bad = NULL;
    moe_buf b = {0};
    if (eot < 256 || eot == n || eot - 256 > nm) bad = "no <|endoftext|> after the 256 bytes and their merges";
    for (size_t i = 0; i < 256 && !bad; i++) {
        b.len = 0;
        if (moe_tok_text_to_bytes(texts[i], lens[i], &b) || b.len != 1 || (uint8_t)b.data[0] != i)
            bad = "ids 0..255 are not the bytes 0..255 in order";
    }
    moe_buf_free(&b);
    if (bad) {
        snprintf(why, why_cap, "the vocabulary is not moe's BPE layout (%s)", bad);
        return 0;
    }
    size_t nmerge = eot - 256, cap = 1;
    while (cap < 2 * eot) cap *= 2;
    text_map map = {texts, lens, malloc(cap * sizeof(uint32_t)), cap};
    uint32_t *ma = malloc((nmerge + 1) * sizeof *ma), *mb = malloc((nmerge + 1) * sizeof *mb);
    if (!map.slot || !ma || !mb) {
        free(map.slot); free(ma); free(mb);
        return moe_errf(err, "out of memory reading the vocabulary");
    }
    memset(map.slot, 0xFF, cap * sizeof(uint32_t));
    for (uint32_t id = 0; id < eot; id++) {
        size_t i = text_hash(texts[id], lens[id]) & (cap - 1);
        while (map.slot[i] != UINT32_MAX) i = (i + 1) & (cap - 1);
        map.slot[i] = id;
    }
    for (size_t i = 0; i < nmerge && !bad; i++) {
        const char *s = merges[i], *sp = memchr(s, ' ', mlens[i]);
        size_t id = 256 + i;
        int64_t a = sp ? text_get(&map, s, (size_t)(sp - s)) : -1;
        int64_t c = sp ? text_get(&map, sp + 1, mlens[i] - (size_t)(sp - s) - 1) : -1;
        if (a < 0 || c < 0 || (size_t)a >= id || (size_t)c >= id ||
            lens[a] + lens[c] != lens[id] || memcmp(texts[a], texts[id], lens[a]) ||
            memcmp(texts[c], texts[id] + lens[a], lens[c]))
            bad = "merge i does not make token 256+i from two earlier tokens";
        ma[i] = (uint32_t)a;
        mb[i] = (uint32_t)c;
    }
    int rc = 0;
    if (bad) snprintf(why, why_cap, "the vocabulary is not moe's BPE layout (%s)", bad);
    else rc = moe_tokenizer_from_merges(ma, mb, nmerge, out, err);
    free(map.slot); free(ma); free(mb);
    return rc;
}

/* ---- Hugging Face tokenizer.json ------------------------------------------ */

int moe_tokenizer_from_hf_json(const char *path, moe_tokenizer **tok, char *why, size_t cap, moe_err *err) {
    *tok = NULL;
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    const moe_json_value *m = moe_json_get(j, "model"), *ty = m ? moe_json_get(m, "type") : NULL;
    const moe_json_value *vocab = m ? moe_json_get(m, "vocab") : NULL, *merges = m ? moe_json_get(m, "merges") : NULL;
    int rc = 0;
    if (!ty || ty->type != MOE_JSON_STRING || strcmp(ty->string, "BPE") || !vocab || vocab->type != MOE_JSON_OBJECT ||
        !merges || merges->type != MOE_JSON_ARRAY) {
        snprintf(why, cap, "%s is not a BPE tokenizer", path);
        moe_json_free(j);
        return 0;
    }
    size_t n = vocab->count, nm = merges->count;
    const char **texts = calloc(n ? n : 1, sizeof *texts), **ms = calloc(nm ? nm : 1, sizeof *ms);
    size_t *lens = calloc(n ? n : 1, sizeof *lens), *mlens = calloc(nm ? nm : 1, sizeof *mlens);
    char **joined = calloc(nm ? nm : 1, sizeof *joined);
    if (!texts || !ms || !lens || !mlens || !joined) rc = moe_errf(err, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        const moe_json_value *id = &vocab->items[i];
        if (id->type != MOE_JSON_NUMBER || id->number < 0 || id->number >= (double)n || texts[(size_t)id->number]) {
            snprintf(why, cap, "%s: the vocabulary ids are not 0..%zu, once each", path, n - 1);
            break;
        }
        texts[(size_t)id->number] = vocab->keys[i];
        lens[(size_t)id->number] = strlen(vocab->keys[i]);
    }
    for (size_t i = 0; i < nm && !rc && !why[0]; i++) {
        const moe_json_value *x = &merges->items[i];
        if (x->type == MOE_JSON_STRING) {
            ms[i] = x->string;
            mlens[i] = x->len;
        } else if (x->type == MOE_JSON_ARRAY && x->count == 2 && x->items[0].type == MOE_JSON_STRING && x->items[1].type == MOE_JSON_STRING) {
            size_t a = x->items[0].len, b = x->items[1].len;
            if (!(joined[i] = malloc(a + b + 2))) { rc = moe_errf(err, "out of memory"); break; }
            memcpy(joined[i], x->items[0].string, a);
            joined[i][a] = ' ';
            memcpy(joined[i] + a + 1, x->items[1].string, b + 1);
            ms[i] = joined[i];
            mlens[i] = a + b + 1;
        } else {
            snprintf(why, cap, "%s: merge %zu is neither \"a b\" nor [a, b]", path, i);
        }
    }
    if (!rc && !why[0]) rc = moe_tokenizer_from_vocab_texts(texts, lens, n, ms, mlens, nm, tok, why, cap, err);
    for (size_t i = 0; joined && i < nm; i++) free(joined[i]);
    free(joined); free(texts); free(ms); free(lens); free(mlens);
    moe_json_free(j);
    return rc;
}
