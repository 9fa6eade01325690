/* test_tokenizer.c — the BPE tokenizer: lossless round trips over random
 * bytes, training determinism and compression, save / load, rejection of
 * malformed files (message checked), r50k_base against known ids and the
 * merge priority recorded from tiktoken (ties, runs over 48 bytes), the known
 * rank tables (cl100k, o200k, Llama 3: special tokens, save / load), the
 * hand-written pre-split against PCRE2 running tiktoken's expressions, safe
 * cuts. Exits 77 (SKIP) when the r50k rank file cannot be had. */
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "harness.h"
#include "moe/data/tokenizer.h"
#include "../../src/data/tok_internal.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* Text from a pool of pieces (words, spaces, newlines, UTF-8, invalid bytes). */
static char *random_text(size_t pieces, int invalid, size_t *len) {
    static const char *pool[] = {
        "the", " the", " whale", " Ahab", "sea", " ship", "ing", "ed", " and", " of", ",", ".", " ",
        "  ", "\n", "\n\n", "\t", "'s", "'ll", " 42", "1999", "!?", " --", "\xc3\xa9", "\xe4\xb8\xad",
        "\xf0\x9f\x99\x82", "\xc2\xa0", "\xe3\x80\x80", " caf\xc3\xa9", "<|endoftext|>", "    ", "x"};
    static const char *bad[] = {"\xff", "\xfe", "\xc3", "\x80", "\xe4\xb8", "\xed\xa0\x80", "\xc0\xaf", "\0"};
    moe_buf b = {0};
    for (size_t i = 0; i < pieces; i++) {
        if (invalid && rnd(10) == 0) {
            const char *s = bad[rnd(sizeof bad / sizeof *bad)];
            moe_buf_append(&b, s, s[0] ? strlen(s) : 1);
        } else {
            const char *s = pool[rnd(sizeof pool / sizeof *pool)];
            moe_buf_append(&b, s, strlen(s));
        }
    }
    *len = b.len;
    if (!b.data) b.data = calloc(1, 1);
    return b.data;
}

/* English-like text: common words and words made of 1-4 random syllables. */
static char *english(size_t words, size_t *len) {
    static const char *w[] = {"the", "whale", "ship", "captain", "sea", "and", "of", "to", "a", "in",
                              "was", "he", "that", "it", "his", "with", "as", "for", "on", "but"};
    static const char *syl[] = {"ka", "lo", "mi", "ter", "an", "qu", "ee", "st", "ing", "ed", "re",
                                "pho", "ni", "sh", "ar", "ow", "ly", "th", "ve", "un", "di", "Ro"};
    moe_buf b = {0};
    for (size_t i = 0; i < words; i++) {
        if (i) {
            const char *sep = rnd(12) ? " " : (rnd(2) ? ".\n" : ", ");
            moe_buf_append(&b, sep, strlen(sep));
        }
        if (rnd(2)) {
            const char *s = w[rnd(sizeof w / sizeof *w)];
            moe_buf_append(&b, s, strlen(s));
        } else {
            for (uint32_t k = 1 + rnd(4); k; k--) {
                const char *s = syl[rnd(sizeof syl / sizeof *syl)];
                moe_buf_append(&b, s, strlen(s));
            }
        }
    }
    *len = b.len;
    return b.data;
}

static moe_tokenizer *small_bpe(uint32_t vocab) {
    size_t len;
    char *text = english(20000, &len);
    const char *texts[1] = {text};
    moe_tokenizer *t = NULL;
    moe_err err;
    int rc = moe_bpe_train(texts, &len, 1, vocab, &t, &err);
    CHECK(rc == 0, "%s", err.msg);
    free(text);
    return t;
}

static int roundtrip(const moe_tokenizer *t, const char *s, size_t n, unsigned flags) {
    uint32_t *ids;
    size_t k;
    moe_err err;
    if (moe_tokenizer_encode_ex(t, s, n, flags, &ids, &k, &err)) {
        fprintf(stderr, "  encode: %s\n", err.msg);
        return 0;
    }
    for (size_t i = 0; i < k; i++)
        if (ids[i] >= moe_tokenizer_vocab_size(t)) { free(ids); return 0; }
    moe_buf out = {0};
    int ok = moe_tokenizer_decode(t, ids, k, &out, &err) == 0 && out.len == n &&
             (n == 0 || !memcmp(out.data, s, n));
    moe_buf_free(&out);
    free(ids);
    return ok;
}

static const char *r50k_path(void) {
    static const char *p = ".cache/tiktoken/r50k_base.tiktoken";
    const char *env = getenv("MOE_R50K");
    if (env) return env;
    if (access(p, R_OK) && access("tools/npm_deps.sh", X_OK) == 0)
        if (system("tools/npm_deps.sh >/dev/null 2>&1")) {}
    return access(p, R_OK) == 0 ? p : NULL;
}

static void test_bytes_tokenizer(void) {
    moe_err err;
    moe_tokenizer *t = moe_tokenizer_bytes(&err);
    CHECK(t, "%s", err.msg);
    if (!t) return;
    CHECK(moe_tokenizer_vocab_size(t) == 257 && moe_tokenizer_eot(t) == 256, "vocab %u", moe_tokenizer_vocab_size(t));
    unsigned char all[256];
    for (int i = 0; i < 256; i++) all[i] = (unsigned char)(255 - i);
    uint32_t *ids;
    size_t n;
    CHECK(moe_tokenizer_encode(t, (const char *)all, 256, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 256 && ids[0] == 255 && ids[255] == 0, "n=%zu", n);
    free(ids);
    CHECK(moe_tokenizer_encode_ex(t, "a<|endoftext|>b", 15, MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n == 3 && ids[1] == 256, "n=%zu", n);
    free(ids);
    for (int r = 0; r < 50; r++) {
        size_t len;
        char *s = random_text(rnd(300), 1, &len);
        CHECK(roundtrip(t, s, len, 0), "bytes round trip %d", r);
        free(s);
    }
    moe_tokenizer_free(t);
}

static void test_roundtrip_random_bytes(void) {
    moe_tokenizer *t = small_bpe(600);
    if (!t) return;
    for (int r = 0; r < 300; r++) {
        size_t len = rnd(400);
        char *s = malloc(len + 1);
        for (size_t i = 0; i < len; i++) s[i] = (char)rnd(256);   /* mostly invalid UTF-8 */
        CHECK(roundtrip(t, s, len, 0), "random bytes %d", r);
        free(s);
        s = random_text(rnd(400), 1, &len);
        CHECK(roundtrip(t, s, len, 0), "random text %d", r);
        CHECK(roundtrip(t, s, len, MOE_ENC_ALLOW_SPECIAL), "random text (special) %d", r);
        free(s);
    }
    /* long chunks take the heap path */
    char long_run[5000];
    memset(long_run, ' ', sizeof long_run);
    CHECK(roundtrip(t, long_run, sizeof long_run, 0), "5000 spaces");
    memset(long_run, 'e', sizeof long_run);
    CHECK(roundtrip(t, long_run, sizeof long_run, 0), "5000 letters");
    CHECK(roundtrip(t, "", 0, 0), "empty");
    moe_tokenizer_free(t);
}

static void test_special_token(void) {
    moe_tokenizer *t = small_bpe(400);
    if (!t) return;
    const char *s = "the whale<|endoftext|>the sea";
    uint32_t *ids;
    size_t n, k = 0;
    moe_err err;
    CHECK(moe_tokenizer_encode_ex(t, s, strlen(s), MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) k += ids[i] == moe_tokenizer_eot(t);
    CHECK(k == 1, "eot count %zu with allow-special", k);
    free(ids);
    CHECK(moe_tokenizer_encode(t, s, strlen(s), &ids, &n, &err) == 0, "%s", err.msg);
    k = 0;
    for (size_t i = 0; i < n; i++) k += ids[i] == moe_tokenizer_eot(t);
    CHECK(k == 0, "eot count %zu by default (literal text)", k);
    free(ids);
    uint32_t bad[2] = {5, 400};
    moe_buf out = {0};
    CHECK(moe_tokenizer_decode(t, bad, 2, &out, &err) != 0 && strstr(err.msg, "id 400 at position 1"),
          "%s", err.msg);
    moe_buf_free(&out);
    moe_tokenizer_free(t);
}

static void test_training_deterministic(void) {
    size_t len;
    char *text = english(30000, &len);
    moe_err err;
    moe_buf a = {0}, b = {0};
    /* one text, one thread */
    omp_set_num_threads(1);
    const char *t1[1] = {text};
    moe_tokenizer *x = NULL, *y = NULL;
    CHECK(moe_bpe_train(t1, &len, 1, 1000, &x, &err) == 0, "%s", err.msg);
    /* the same text cut into many pieces at safe points, two threads, two add calls */
    omp_set_num_threads(2);
    const char *parts[4096];
    size_t plen[4096], np = 0;
    for (size_t p = 0; p < len && np < 4096;) {
        size_t q = moe_pretok_safe_cut(text, len, p + 1 + rnd(3000));
        parts[np] = text + p;
        plen[np++] = q - p;
        p = q;
    }
    moe_bpe_trainer *tr = moe_bpe_trainer_new(&err);
    CHECK(tr && moe_bpe_trainer_add(tr, parts, plen, np / 2, NULL, NULL, &err) == 0, "%s", err.msg);
    CHECK(moe_bpe_trainer_add(tr, parts + np / 2, plen + np / 2, np - np / 2, NULL, NULL, &err) == 0, "%s", err.msg);
    CHECK(moe_bpe_trainer_finish(tr, 1000, NULL, NULL, &y, &err) == 0, "%s", err.msg);
    moe_bpe_trainer_free(tr);
    CHECK(np > 10, "np=%zu", np);
    if (x && y) {
        moe_tokenizer_serialize(x, &a, &err);
        moe_tokenizer_serialize(y, &b, &err);
        CHECK(a.len == b.len && !memcmp(a.data, b.data, a.len), "two trainings differ");
        CHECK(moe_tokenizer_vocab_size(x) == 1000, "vocab %u", moe_tokenizer_vocab_size(x));
    }
    moe_buf_free(&a);
    moe_buf_free(&b);
    moe_tokenizer_free(x);
    moe_tokenizer_free(y);
    free(text);
}

static void test_merges_compress(void) {
    size_t len;
    char *text = english(50000, &len);
    moe_tokenizer *t = small_bpe(1024);
    moe_tokenizer *bytes = moe_tokenizer_bytes(NULL);
    if (!t || !bytes) { free(text); return; }
    uint32_t *ids;
    size_t n;
    moe_err err;
    CHECK(moe_tokenizer_encode(t, text, len, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n * 3 < len, "BPE: %zu tokens for %zu bytes", n, len);
    free(ids);
    /* a smaller vocabulary compresses less */
    moe_tokenizer *t2 = small_bpe(300);
    size_t n2;
    CHECK(moe_tokenizer_encode(t2, text, len, &ids, &n2, &err) == 0, "%s", err.msg);
    CHECK(n2 > n && n2 < len, "vocab 300: %zu tokens, vocab 1024: %zu, bytes %zu", n2, n, len);
    free(ids);
    CHECK(roundtrip(t, text, len, 0), "english round trip");
    /* a vocabulary larger than the text supports stops early */
    const char *tiny = "abababab";
    size_t tl = strlen(tiny);
    moe_tokenizer *t3 = NULL;
    CHECK(moe_bpe_train(&tiny, &tl, 1, 5000, &t3, &err) == 0, "%s", err.msg);
    CHECK(t3 && moe_tokenizer_vocab_size(t3) < 5000 && moe_tokenizer_vocab_size(t3) > 257, "tiny vocab");
    moe_tokenizer_free(t3);
    CHECK(moe_bpe_train(&tiny, &tl, 1, 100, &t3, &err) != 0 && strstr(err.msg, "at least 257"), "%s", err.msg);
    moe_tokenizer_free(t);
    moe_tokenizer_free(t2);
    moe_tokenizer_free(t3);
    moe_tokenizer_free(bytes);
    free(text);
}

static void test_save_load(void) {
    moe_tokenizer *t = small_bpe(700);
    if (!t) return;
    char path[] = "/tmp/moe_test_tok_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    moe_err err;
    CHECK(moe_tokenizer_save(t, path, &err) == 0, "%s", err.msg);
    moe_tokenizer *u = NULL;
    CHECK(moe_tokenizer_load(path, &u, &err) == 0, "%s", err.msg);
    if (u) {
        moe_buf a = {0}, b = {0};
        moe_tokenizer_serialize(t, &a, &err);
        moe_tokenizer_serialize(u, &b, &err);
        CHECK(a.len == b.len && !memcmp(a.data, b.data, a.len), "save/load changed the file");
        size_t len;
        char *s = random_text(3000, 1, &len);
        uint32_t *i1, *i2;
        size_t n1, n2;
        moe_tokenizer_encode(t, s, len, &i1, &n1, &err);
        moe_tokenizer_encode(u, s, len, &i2, &n2, &err);
        CHECK(n1 == n2 && !memcmp(i1, i2, n1 * 4), "loaded tokenizer encodes differently");
        free(i1); free(i2); free(s);
        moe_buf_free(&a);
        moe_buf_free(&b);
    }
    /* the bytes kind too */
    moe_tokenizer *by = moe_tokenizer_bytes(&err), *by2 = NULL;
    CHECK(moe_tokenizer_save(by, path, &err) == 0, "%s", err.msg);
    CHECK(moe_tokenizer_load(path, &by2, &err) == 0 && moe_tokenizer_kind(by2) == MOE_TOK_BYTES, "%s", err.msg);
    moe_tokenizer_free(by);
    moe_tokenizer_free(by2);
    CHECK(moe_tokenizer_load("bytes", &by, &err) == 0 && moe_tokenizer_vocab_size(by) == 257, "%s", err.msg);
    moe_tokenizer_free(by);
    CHECK(moe_tokenizer_load("/nonexistent/tok.txt", &by, &err) != 0 && strstr(err.msg, "/nonexistent/tok.txt"),
          "%s", err.msg);
    unlink(path);
    moe_tokenizer_free(t);
    moe_tokenizer_free(u);
}

/* A tiktoken text: the 256 bytes in order, then extra base64 tokens. */
static void tiktoken_text(moe_buf *b, const char *const *extra, size_t n_extra) {
    static const char B[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 256; i++)
        moe_buf_printf(b, "%c%c== %d\n", B[i >> 2], B[(i & 3) << 4], i);
    for (size_t i = 0; i < n_extra; i++) moe_buf_printf(b, "%s %zu\n", extra[i], 256 + i);
}

static void test_ranks_small(void) {
    /* "ab" (YWI=), "abc" (YWJj), "bc" (YmM=) */
    const char *extra[] = {"YWI=", "YmM=", "YWJj"};
    moe_buf b = {0};
    tiktoken_text(&b, extra, 3);
    moe_tokenizer *t = NULL;
    moe_err err;
    CHECK(moe_tokenizer_parse(b.data, b.len, "small.tiktoken", &t, &err) == 0, "%s", err.msg);
    moe_buf_free(&b);
    if (!t) return;
    CHECK(moe_tokenizer_vocab_size(t) == 260 && moe_tokenizer_eot(t) == 259, "vocab %u", moe_tokenizer_vocab_size(t));
    uint32_t *ids;
    size_t n;
    CHECK(moe_tokenizer_encode(t, "abcabd", 6, &ids, &n, &err) == 0, "%s", err.msg);
    /* a b c a b d -> ab c a b d -> ab c ab d -> abc ab d */
    CHECK(n == 3 && ids[0] == 258 && ids[1] == 256 && ids[2] == 'd', "abcabd -> %zu ids", n);
    free(ids);
    /* ranks save / load */
    moe_buf s1 = {0}, s2 = {0};
    moe_tokenizer_serialize(t, &s1, &err);
    moe_tokenizer *u = NULL;
    CHECK(moe_tokenizer_parse(s1.data, s1.len, "saved", &u, &err) == 0, "%s", err.msg);
    if (u) moe_tokenizer_serialize(u, &s2, &err);
    CHECK(s1.len == s2.len && !memcmp(s1.data, s2.data, s1.len), "ranks save/load");
    CHECK(!strncmp(s1.data, "moe-tokenizer 1 ranks 260\npattern gpt2\neot 259\ntokens 259\n", 56), "%.60s", s1.data);
    moe_buf_free(&s1);
    moe_buf_free(&s2);
    moe_tokenizer_free(u);
    moe_tokenizer_free(t);
}

typedef struct bad_case { const char *text; const char *want; } bad_case;

static void test_malformed_files(void) {
    static const bad_case cases[] = {
        {"", "t.tok: empty file"},
        {"moe-tokenizer 2 bpe 258\n", "t.tok:1: expected format version 1"},
        {"moe-tokenizer 1 wordpiece 258\n", "t.tok:1: expected kind 'bytes', 'bpe' or 'ranks', found 'moe-tokenizer 1 wordpiece 258'"},
        {"moe-tokenizer 1 bpe 256\n", "t.tok:1: expected a vocab_size in [257,"},
        {"moe-tokenizer 1 bpe 0258\n", "t.tok:1: expected a vocab_size"},
        {"moe-tokenizer 1 bytes 258\n", "t.tok:1: expected a vocab_size in [257, 257]"},
        {"moe-tokenizer 1  bpe 258\n", "t.tok:1: expected 'moe-tokenizer 1 <bytes|bpe|ranks> <vocab_size>'"},
        {"moe-tokenizer 1 bpe 258", "t.tok:1: expected the line to end with a newline"},
        {"moe-tokenizer 1 bpe 258\r\n", "t.tok:1: found a carriage return"},
        {"moe-tokenizer 1 bpe 258\n", "t.tok:2: unexpected end of file in the header"},
        {"moe-tokenizer 1 bpe 258\npattern cl100k\n", "t.tok:2: expected 'pattern gpt2', found 'pattern cl100k'"},
        {"moe-tokenizer 1 bytes 257\npattern gpt2\n", "t.tok:2: expected 'pattern none'"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 256\n", "t.tok:3: expected 'eot 257'"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 2\n", "t.tok:4: expected 'merges 1' (from vocab_size 258)"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\ntokens 1\n", "t.tok:4: expected 'merges 1'"},
        {"moe-tokenizer 1 bpe 259\npattern gpt2\neot 258\nmerges 2\n97 98\n",
         "t.tok:6: expected merge 1 of 2, found end of file"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n97 256\n",
         "t.tok:5: expected a merge '<left id> <right id>' with ids < 256 (merge 0 creates id 256), found '97 256'"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n97  98\n", "t.tok:5: expected a merge"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n97 98 99\n", "t.tok:5: expected a merge"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n097 98\n", "t.tok:5: expected a merge"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n-1 98\n", "t.tok:5: expected a merge"},
        {"moe-tokenizer 1 bpe 259\npattern gpt2\neot 258\nmerges 2\n97 98\n97 98\n",
         "t.tok:6: expected a new merge (this one repeats merge 0 on line 5)"},
        {"moe-tokenizer 1 bpe 258\npattern gpt2\neot 257\nmerges 1\n97 98\n\n",
         "t.tok:6: expected end of file after the last merge"},
        {"moe-tokenizer 1 bytes 257\npattern none\neot 256\nmerges 0\nextra\n", "t.tok:5: expected end of file"},
        {"moe-tokenizer 1 ranks 258\npattern gpt2\neot 257\ntokens 257\nYQ\n", "t.tok:5: expected a token's bytes in base64"},
        {"moe-tokenizer 1 ranks 258\npattern gpt2\neot 257\ntokens 257\nYQ==\n", "t.tok:6: expected token 1 of 257, found end of file"},
        {"moe-tokenizer 1 ranks 258\npattern cl200k\n", "t.tok:2: expected 'pattern <gpt2|cl100k|o200k|llama3>'"},
        {"moe-tokenizer 1 ranks 258\npattern r50k\n", "t.tok:2: expected 'pattern <gpt2|cl100k|o200k|llama3>'"},
        {"moe-tokenizer 1 ranks 258\npattern o200k\neot 258\n", "t.tok:3: expected 'eot <id>' with an id < vocab_size 258"},
        {"moe-tokenizer 1 ranks 300\npattern o200k\neot 257\ntokens 300\n", "t.tok:4: expected 'tokens <count>' with a count in [256, 299]"},
        {"IQ== 1\n", "t.tok:1: expected rank 0 (ranks must be 0, 1, 2, ... in order), found 'IQ== 1'"},
        {"IQ==  0\n", "t.tok:1: expected '<base64 token> <rank>' (tiktoken format)"},
        {"I@== 0\n", "t.tok:1: expected a non-empty base64 token before the rank"},
        {"IR== 0\n", "t.tok:1: expected a non-empty base64 token"},  /* non-zero padding bits */
        {"IQ== 0\nIg== 1\n", "t.tok: expected at least 256 tokens (one per byte), found 2"},
        {"IQ== 0\nIg== 1", "t.tok:2: expected the line to end with a newline"},
    };
    moe_err err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        moe_tokenizer *t = NULL;
        memset(err.msg, 0, sizeof err.msg);
        int rc = moe_tokenizer_parse(cases[i].text, strlen(cases[i].text), "t.tok", &t, &err);
        CHECK(rc != 0 && !t && strstr(err.msg, cases[i].want), "case %zu: got '%s', want '%s'", i,
              rc ? err.msg : "(accepted)", cases[i].want);
        moe_tokenizer_free(t);
    }
    /* rank tables: a byte without a token, a repeated token */
    moe_buf b = {0};
    const char *dup[] = {"YWI=", "YWI="};
    tiktoken_text(&b, dup, 2);
    moe_tokenizer *t = NULL;
    CHECK(moe_tokenizer_parse(b.data, b.len, "d.tiktoken", &t, &err) != 0 &&
          strstr(err.msg, "d.tiktoken: ranks 256 and 257 have the same token bytes"), "%s", err.msg);
    moe_buf_free(&b);
    tiktoken_text(&b, NULL, 0);
    char *nl = strchr(b.data, '\n');  /* drop byte 0x00: shift the rest down one rank */
    moe_buf c = {0};
    for (char *p = nl + 1; *p;) {
        char *e = strchr(p, '\n');
        char *sp = memchr(p, ' ', (size_t)(e - p));
        moe_buf_append(&c, p, (size_t)(sp - p));
        moe_buf_printf(&c, " %ld\n", atol(sp + 1) - 1);
        p = e + 1;
    }
    moe_buf_printf(&c, "YWI= 255\n");
    CHECK(moe_tokenizer_parse(c.data, c.len, "m.tiktoken", &t, &err) != 0 &&
          strstr(err.msg, "m.tiktoken: the single byte 0x00 has no token"), "%s", err.msg);
    moe_buf_free(&b);
    moe_buf_free(&c);
    /* our format with a ranks body that repeats a token */
    moe_buf r = {0};
    moe_buf_printf(&r, "moe-tokenizer 1 ranks 258\npattern gpt2\neot 257\ntokens 257\n");
    for (int i = 0; i < 256; i++) {
        static const char B[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        moe_buf_printf(&r, "%c%c==\n", B[i >> 2], B[(i & 3) << 4]);
    }
    moe_buf_printf(&r, "YQ==\n");
    CHECK(moe_tokenizer_parse(r.data, r.len, "r.tok", &t, &err) != 0 &&
          strstr(err.msg, "r.tok: ranks 97 and 256 have the same token bytes"), "%s", err.msg);
    moe_buf_free(&r);
}

/* Our format: ranks with the 256 single bytes as tokens, then `tail`. */
static void ranks_text(moe_buf *r, const char *head, const char *tail) {
    moe_buf_printf(r, "%s", head);
    for (int i = 0; i < 256; i++) {
        static const char B[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        moe_buf_printf(r, "%c%c==\n", B[i >> 2], B[(i & 3) << 4]);
    }
    moe_buf_printf(r, "%s", tail);
}

/* The special-token section of our format: accepted with gaps in the ids,
 * encoded with MOE_ENC_ALLOW_SPECIAL, saved as read; malformed ones refused. */
static void test_special_section(void) {
    const char *head = "moe-tokenizer 1 ranks 270\npattern o200k\neot 260\ntokens 256\n";
    moe_buf b = {0};
    ranks_text(&b, head, "specials 3\n258 <|start|>\n260 <|endoftext|>\n269 <|st|>\n");
    moe_tokenizer *t = NULL;
    moe_err err;
    CHECK(moe_tokenizer_parse(b.data, b.len, "s.tok", &t, &err) == 0, "%s", err.msg);
    if (t) {
        CHECK(moe_tokenizer_vocab_size(t) == 270 && moe_tokenizer_eot(t) == 260 &&
              moe_tokenizer_pattern(t) == MOE_PAT_O200K && moe_tokenizer_n_special(t) == 3 &&
              !moe_tokenizer_vocab_name(t), "vocab %u eot %u", moe_tokenizer_vocab_size(t), moe_tokenizer_eot(t));
        uint32_t id;
        CHECK(!strcmp(moe_tokenizer_special(t, 2, &id), "<|st|>") && id == 269, "special 2");
        uint32_t *ids;
        size_t n;
        const char *text = "a<|start|><|st|>b<|endoftext|>";
        CHECK(moe_tokenizer_encode_ex(t, text, strlen(text), MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0 &&
              n == 5 && ids[0] == 'a' && ids[1] == 258 && ids[2] == 269 && ids[3] == 'b' && ids[4] == 260,
              "specials encoded: %zu ids", n);
        free(ids);
        CHECK(moe_tokenizer_encode(t, text, strlen(text), &ids, &n, &err) == 0 && n == strlen(text), "plain");
        free(ids);
        size_t len;
        CHECK(!moe_tokenizer_token(t, 259, &len) && !moe_tokenizer_token(t, 270, &len) &&
              moe_tokenizer_token(t, 269, &len) && len == 6, "holes have no token");
        uint32_t hole[] = {'a', 259};
        moe_buf out = {0};
        CHECK(moe_tokenizer_decode(t, hole, 2, &out, &err) != 0 && strstr(err.msg, "id 259 at position 1 is no token"),
              "%s", err.msg);
        moe_buf_free(&out);
        moe_buf s1 = {0};
        moe_tokenizer_serialize(t, &s1, &err);
        CHECK(s1.len == b.len && !memcmp(s1.data, b.data, b.len), "saved as read");
        moe_buf_free(&s1);
        moe_tokenizer_free(t);
    }
    moe_buf_free(&b);
    static const bad_case cases[] = {
        {"", "s.tok:261: expected a 'specials <count>' section (tokens 256 and eot 260 differ"},
        {"specials 0\n", "s.tok:261: expected 'specials <count>' with a count in [1, 14]"},
        {"specials 1\n255 <|a|>\n", "s.tok:262: expected '<id> <text>' with an id in [256, 270)"},
        {"specials 2\n260 <|a|>\n259 <|b|>\n", "s.tok:263: expected '<id> <text>' with an id in [261, 270)"},
        {"specials 2\n260 <|a|>\n261 <|a|>\n", "s.tok:263: expected a text no other special token has"},
        {"specials 1\n260 <|a b|>\n", "s.tok:262: expected '<id> <text>'"},
        {"specials 1\n261 <|a|>\n", "s.tok: eot 260 is none of the special tokens"},
        {"specials 2\n260 <|a|>\n", "s.tok:263: expected special token 1 of 2, found end of file"},
        {"specials 1\n260 <|a|>\nx\n", "s.tok:263: expected end of file after the last special token"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        moe_buf c = {0};
        ranks_text(&c, head, cases[i].text);
        t = NULL;
        memset(err.msg, 0, sizeof err.msg);
        int rc = moe_tokenizer_parse(c.data, c.len, "s.tok", &t, &err);
        CHECK(rc != 0 && !t && strstr(err.msg, cases[i].want), "case %zu: got '%s', want '%s'", i,
              rc ? err.msg : "(accepted)", cases[i].want);
        moe_tokenizer_free(t);
        moe_buf_free(&c);
    }
}

/* The pre-split of each pattern equals PCRE2 running tiktoken's expression
 * (UTF, UCP, invalid UTF-8 allowed: each invalid byte a chunk of its own) on
 * random text made of characters whose classes PCRE2's older Unicode tables
 * share with Unicode 16: every alternative and its backtracking, contractions
 * in any case (and U+017F), invalid bytes, and long runs. */
static void test_pretok_vs_pcre2(void) {
    static const char *pool[] = {
        "a", "s", "t", "e", "l", "d", "v", "m", "r", "S", "T", "E", "L", "D", "V", "M", "R", "A", "Z",
        "'", "'", "'", "/", "!", ".", "-", "0", "7", "42", "1999", " ", " ", "  ", "\t", "\r", "\n", "\r\n",
        "\v", "\f", "\x1c", "\xc2\x85", "\xc2\xa0", "\xe2\x80\xa8", "\xe3\x80\x80",
        "\xc3\xa9", "\xc3\x89", "\xc7\x85", "\xca\xb0", "\xe4\xb8\xad", "\xcc\x81", "\xe0\xa4\x83",
        "\xe2\x83\x9d", "\xd9\xa3", "\xe2\x85\xab", "\xc2\xbd", "\xc2\xb2", "\xc5\xbf", "\xf0\x9f\x99\x82",
        "\xff", "\xc3", "\x80", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "\xf0\x9f\x99", "\xe4\xb8"};
    static const struct { moe_tok_pattern pat; const char *re; } pats[] = {
        {MOE_PAT_GPT2, MOE_PAT_GPT2_RE}, {MOE_PAT_CL100K, MOE_PAT_CL100K_RE},
        {MOE_PAT_O200K, MOE_PAT_O200K_RE}, {MOE_PAT_LLAMA3, MOE_PAT_CL100K_RE}};
    for (size_t k = 0; k < sizeof pats / sizeof *pats; k++) {
        CHECK(!strcmp(moe_tok_pattern_regex(pats[k].pat), pats[k].re), "regex %zu", k);
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pats[k].re, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
        CHECK(re, "pattern %zu does not compile at %zu", k, (size_t)eo);
        if (!re) continue;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
        moe_tok_iter it;
        moe_tok_iter_init(&it, pats[k].pat);
        size_t chunks = 0;
        for (int r = 0; r < 400; r++) {
            moe_buf b = {0};
            for (uint32_t i = rnd(200); i; i--) {
                const char *p = pool[rnd(sizeof pool / sizeof *pool)];
                for (uint32_t rep = rnd(40) ? 1 : 2 + rnd(6); rep; rep--) moe_buf_append(&b, p, strlen(p));
            }
            const uint8_t *s = (const uint8_t *)b.data;
            size_t len = b.len, pos = 0, a, e;
            moe_tok_iter_reset(&it, b.data, len);
            int same = 1;
            while (same && pos < len) {
                int rc = pcre2_match(re, s, len, pos, 0, md, NULL);
                size_t ms = len, me = len;
                if (rc >= 0) { ms = pcre2_get_ovector_pointer(md)[0]; me = pcre2_get_ovector_pointer(md)[1]; }
                for (; pos < ms && same; pos++)   /* invalid bytes before the match */
                    same = moe_tok_iter_next(&it, &a, &e) && a == pos && e == pos + 1;
                if (same && ms < len) {
                    same = moe_tok_iter_next(&it, &a, &e) && a == ms && e == me;
                    pos = me;
                    chunks++;
                }
                if (!same) CHECK(0, "pattern %zu text %d: chunk at %zu: ours [%zu, %zu), PCRE2 [%zu, %zu)", k, r,
                                 ms, a, e, ms, me);
            }
            CHECK(!same || !moe_tok_iter_next(&it, &a, &e), "pattern %zu text %d: extra chunk", k, r);
            moe_buf_free(&b);
        }
        CHECK(chunks > 10000, "only %zu chunks", chunks);
        /* cutting at safe points never changes the chunks */
        for (int r = 0; r < 300; r++) {
            moe_buf b = {0};
            for (uint32_t i = rnd(300); i; i--) {
                const char *p = rnd(3) ? pool[rnd(sizeof pool / sizeof *pool)] : rnd(2) ? "a\n/" : "!\n";
                moe_buf_append(&b, p, strlen(p));
            }
            moe_ids whole = {0}, parts = {0};
            size_t a, e;
            moe_tok_iter_reset(&it, b.data, b.len);
            while (moe_tok_iter_next(&it, &a, &e)) moe_ids_push(&whole, (uint32_t)e);
            for (size_t p = 0; p < b.len;) {
                size_t q = moe_pretok_safe_cut(b.data, b.len, p + 1 + rnd(20));
                moe_tok_iter_reset(&it, b.data + p, q - p);
                while (moe_tok_iter_next(&it, &a, &e)) moe_ids_push(&parts, (uint32_t)(p + e));
                p = q;
            }
            CHECK(whole.n == parts.n && (!whole.n || !memcmp(whole.ids, parts.ids, whole.n * 4)),
                  "pattern %zu text %d: safe cuts changed the chunks", k, r);
            moe_ids_free(&whole);
            moe_ids_free(&parts);
            moe_buf_free(&b);
        }
        pcre2_match_data_free(md);
        pcre2_code_free(re);
    }
}

static const char *tiktoken_path(const char *name) {
    static char p[128];
    const char *r50k = r50k_path();  /* installs the npm packages if it can */
    if (!r50k) return NULL;
    snprintf(p, sizeof p, ".cache/tiktoken/%s.tiktoken", name);
    return access(p, R_OK) == 0 ? p : NULL;
}

/* cl100k_base, o200k_base and Llama 3 are recognised with their pattern,
 * special tokens and eot; our format keeps all of it. (Their ids against
 * tiktoken's: tests/ref/test_tiktoken_ref.sh.) */
static void test_known_tables(void) {
    static const struct {
        const char *file, *name;
        moe_tok_pattern pat;
        uint32_t vocab, eot, n_special, hole;
        const char *sp;
        uint32_t sp_id;
    } known[] = {
        {"cl100k_base", "cl100k_base", MOE_PAT_CL100K, 100277, 100257, 5, 100256, "<|fim_middle|>", 100259},
        {"o200k_base", "o200k_base", MOE_PAT_O200K, 200019, 199999, 2, 200000, "<|endofprompt|>", 200018},
        {"llama3", "llama3", MOE_PAT_LLAMA3, 128256, 128001, 256, 0, "<|eot_id|>", 128009},
    };
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        const char *path = tiktoken_path(known[k].file);
        if (!path) {
            printf("# test_known_tables: skipped, no .cache/tiktoken/%s.tiktoken (run tools/npm_deps.sh)\n", known[k].file);
            continue;
        }
        moe_tokenizer *t = NULL, *u = NULL;
        moe_err err;
        CHECK(moe_tokenizer_load(path, &t, &err) == 0, "%s", err.msg);
        if (!t) continue;
        CHECK(moe_tokenizer_vocab_size(t) == known[k].vocab && moe_tokenizer_eot(t) == known[k].eot &&
              moe_tokenizer_pattern(t) == known[k].pat && moe_tokenizer_n_special(t) == known[k].n_special &&
              moe_tokenizer_vocab_name(t) && !strcmp(moe_tokenizer_vocab_name(t), known[k].name),
              "%s: vocab %u eot %u pattern %d specials %u", known[k].file, moe_tokenizer_vocab_size(t),
              moe_tokenizer_eot(t), moe_tokenizer_pattern(t), moe_tokenizer_n_special(t));
        size_t len;
        CHECK(!known[k].hole || !moe_tokenizer_token(t, known[k].hole, &len), "%s: hole", known[k].file);
        uint32_t *ids;
        size_t n;
        CHECK(moe_tokenizer_encode_ex(t, known[k].sp, strlen(known[k].sp), MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0 &&
              n == 1 && ids[0] == known[k].sp_id, "%s: %s", known[k].file, known[k].sp);
        free(ids);
        moe_buf s1 = {0}, s2 = {0};
        CHECK(moe_tokenizer_serialize(t, &s1, &err) == 0, "%s", err.msg);
        CHECK(moe_tokenizer_parse(s1.data, s1.len, "saved", &u, &err) == 0, "%s", err.msg);
        if (u) {
            moe_tokenizer_serialize(u, &s2, &err);
            CHECK(s1.len == s2.len && !memcmp(s1.data, s2.data, s1.len) && moe_tokenizer_pattern(u) == known[k].pat &&
                  moe_tokenizer_vocab_name(u) && !strcmp(moe_tokenizer_vocab_name(u), known[k].name),
                  "%s: save / load", known[k].file);
            const char *text = "Hello, world! It's 2024\n\n  \xe4\xb8\xad\xe6\x96\x87 caf\xc3\xa9 <|endoftext|>";
            uint32_t *a, *b2;
            size_t na, nb;
            moe_tokenizer_encode_ex(t, text, strlen(text), MOE_ENC_ALLOW_SPECIAL, &a, &na, &err);
            moe_tokenizer_encode_ex(u, text, strlen(text), MOE_ENC_ALLOW_SPECIAL, &b2, &nb, &err);
            CHECK(na == nb && !memcmp(a, b2, na * 4), "%s: encodes as before saving", known[k].file);
            free(a);
            free(b2);
        }
        moe_buf_free(&s1);
        moe_buf_free(&s2);
        moe_tokenizer_free(u);
        moe_tokenizer_free(t);
    }
}

/* Merge priority, pinned against OpenAI's encoder: the lowest rank merges
 * first and, among pairs of equal rank, the leftmost ("aaaaa" is "aaaa" + "a",
 * never "a" + "aaaa"); the same for chunks up to 48 bytes (a scan) and longer
 * ones (a heap). Expected ids recorded once from npm's tiktoken 1.0.22 by
 *   tools/npm_deps.sh && node tools/tiktoken_cases.js
 * whose output is the table below (each string is UNIT repeated COUNT times). */
static void test_r50k_merge_priority(void) {
    static const struct { const char *unit; int count; const char *ids; } cases[] = {
        {"a", 3, "46071"},
        {"a", 5, "24794 64"},
        {"a", 7, "24794 46071"},
        {"a", 9, "24794 24794 64"},
        {"a", 17, "24794 24794 24794 24794 64"},
        {"a", 33, "24794 24794 24794 24794 24794 24794 24794 24794 64"},
        {"a", 47, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 46071"},
        {"a", 48, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794"},
        {"a", 49, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 64"},
        {"a", 50, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 7252"},
        {"a", 64, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794"},
        {"a", 97, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 64"},
        {"a", 200, "24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794 24794"},
        {"ab", 3, "397 397 397"},
        {"ab", 24, "397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397"},
        {"ab", 25, "397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397 397"},
        {"aab", 17, "64 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 15498 397"},
        {"xyz", 16, "5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89"},
        {"xyz", 17, "5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89 5431 89"},
        {"\xc3\xa9", 24, "2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634"},
        {"\xc3\xa9", 25, "2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634"},
        {"\xc3\xa9", 31, "2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634 2634"},
        {"0", 7, "24598"},
        {"0", 49, "25645 25645 8269 10535 830"},
        {"7", 60, "3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324 3324"},
        {" ", 49, "220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220 220"},
        {"\x0a", 50, "628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628 628"},
    };
    const char *path = r50k_path();
    if (!path) {
        SKIP_TEST("test_r50k_merge_priority: no .cache/tiktoken/r50k_base.tiktoken (run tools/npm_deps.sh)");
        return;
    }
    moe_tokenizer *t = NULL;
    moe_err err;
    CHECK(moe_tokenizer_load(path, &t, &err) == 0, "%s", err.msg);
    if (!t) return;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t ul = strlen(cases[k].unit), len = ul * (size_t)cases[k].count;
        char *s = malloc(len + 1);
        for (int r = 0; r < cases[k].count; r++) memcpy(s + (size_t)r * ul, cases[k].unit, ul);
        uint32_t *ids = NULL;
        size_t n = 0;
        CHECK(moe_tokenizer_encode(t, s, len, &ids, &n, &err) == 0, "%s", err.msg);
        const char *q = cases[k].ids;
        size_t i = 0, first_bad = SIZE_MAX;
        while (*q) {
            char *end;
            unsigned long want = strtoul(q, &end, 10);
            if (first_bad == SIZE_MAX && (i >= n || ids[i] != want)) first_bad = i;
            i++;
            q = end;
        }
        if (first_bad == SIZE_MAX && i != n) first_bad = i;
        CHECK(first_bad == SIZE_MAX, "'%s' x %d (%zu bytes): %zu ids, tiktoken %zu; first difference at %zu",
              cases[k].unit, cases[k].count, len, n, i, first_bad);
        free(ids);
        free(s);
    }
    moe_tokenizer_free(t);
}

static void test_r50k(void) {
    const char *path = r50k_path();
    if (!path) {
        SKIP_TEST("test_r50k: no .cache/tiktoken/r50k_base.tiktoken (run tools/npm_deps.sh)");
        return;
    }
    moe_tokenizer *t = NULL;
    moe_err err;
    CHECK(moe_tokenizer_load(path, &t, &err) == 0, "%s", err.msg);
    if (!t) return;
    CHECK(moe_tokenizer_vocab_size(t) == 50257 && moe_tokenizer_eot(t) == 50256, "vocab %u eot %u",
          moe_tokenizer_vocab_size(t), moe_tokenizer_eot(t));
    static const struct { const char *s; uint32_t ids[12]; size_t n; } known[] = {
        {"hello world", {31373, 995}, 2},
        {"Hello, world!", {15496, 11, 995, 0}, 4},
        {" <|endoftext|>", {1279, 91, 437, 1659, 5239, 91, 29}, 7},
        {"The quick brown fox jumps over the lazy dog.", {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13}, 10},
        {"na\xc3\xafve caf\xc3\xa9 123456", {2616, 38776, 40304, 17031, 29228}, 5},
        {"    indented\n\n\tcode();", {220, 220, 220, 773, 4714, 628, 197, 8189, 9783}, 9},
    };
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
        uint32_t *ids;
        size_t n;
        CHECK(moe_tokenizer_encode(t, known[k].s, strlen(known[k].s), &ids, &n, &err) == 0, "%s", err.msg);
        int same = n == known[k].n;
        for (size_t i = 0; same && i < n; i++) same = ids[i] == known[k].ids[i];
        CHECK(same, "'%s': %zu ids, first %u", known[k].s, n, n ? ids[0] : 0);
        free(ids);
    }
    uint32_t *ids;
    size_t n;
    CHECK(moe_tokenizer_encode_ex(t, "<|endoftext|>", 13, MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0 &&
          n == 1 && ids[0] == 50256, "allow-special");
    free(ids);
    for (int r = 0; r < 100; r++) {
        size_t len;
        char *s = random_text(rnd(500), 1, &len);
        CHECK(roundtrip(t, s, len, 0), "r50k round trip %d", r);
        free(s);
    }
    moe_tokenizer_free(t);
}

/* Cutting at safe points never changes the encoding; large inputs (encoded
 * in parallel pieces) equal one serial encoder's result. */
static void test_safe_cuts(void) {
    moe_tokenizer *t = small_bpe(800);
    if (!t) return;
    moe_err err;
    moe_encoder *e = moe_encoder_new(t, &err);
    for (int r = 0; r < 200; r++) {
        size_t len;
        char *s = random_text(rnd(300), r & 1, &len);
        moe_ids whole = {0}, parts = {0};
        moe_encoder_encode(e, s, len, 0, &whole, &err);
        for (size_t p = 0; p < len;) {
            size_t q = moe_pretok_safe_cut(s, len, p + 1 + rnd(40));
            CHECK(q > p && q <= len, "cut %zu after %zu", q, p);
            moe_encoder_encode(e, s + p, q - p, 0, &parts, &err);
            p = q;
        }
        CHECK(whole.n == parts.n && (!whole.n || !memcmp(whole.ids, parts.ids, whole.n * 4)), "cuts changed encoding %d", r);
        moe_ids_free(&whole);
        moe_ids_free(&parts);
        free(s);
    }
    size_t len;
    char *big = random_text(800000, 1, &len);   /* several MB: the parallel path */
    moe_ids serial = {0};
    moe_encoder_encode(e, big, len, MOE_ENC_ALLOW_SPECIAL, &serial, &err);
    uint32_t *ids;
    size_t n;
    omp_set_num_threads(2);
    CHECK(moe_tokenizer_encode_ex(t, big, len, MOE_ENC_ALLOW_SPECIAL, &ids, &n, &err) == 0, "%s", err.msg);
    CHECK(n == serial.n && !memcmp(ids, serial.ids, n * 4), "parallel %zu vs serial %zu ids", n, serial.n);
    free(ids);
    moe_ids_free(&serial);
    free(big);
    moe_encoder_free(e);
    moe_tokenizer_free(t);
}

int main(void) {
    RUN(test_bytes_tokenizer);
    RUN(test_roundtrip_random_bytes);
    RUN(test_special_token);
    RUN(test_training_deterministic);
    RUN(test_merges_compress);
    RUN(test_save_load);
    RUN(test_ranks_small);
    RUN(test_malformed_files);
    RUN(test_special_section);
    RUN(test_pretok_vs_pcre2);
    RUN(test_known_tables);
    RUN(test_r50k);
    RUN(test_r50k_merge_priority);
    RUN(test_safe_cuts);
    TEST_MAIN_END();
}
