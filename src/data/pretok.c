/* pretok.c — the GPT-2 pre-split: PCRE2 (JIT) matching of the pattern over
 * text that may hold invalid UTF-8, and the safe cut points for splitting a
 * large text into pieces that pre-split exactly as the whole does. */
#include "tok_internal.h"

#include <stdlib.h>

pcre2_code *tok_compile_gpt2(int *jit, moe_err *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)MOE_GPT2_PATTERN, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        moe_errf(err, "tokenizer: cannot compile the GPT-2 pattern at offset %zu: %s",
                 (size_t)eo, (const char *)msg);
        return NULL;
    }
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

int tok_iter_init(tok_iter *it, const pcre2_code *re, int jit, moe_err *err) {
    memset(it, 0, sizeof *it);
    it->re = re;
    it->jit = jit;
    it->md = pcre2_match_data_create_from_pattern(re, NULL);
    it->mc = pcre2_match_context_create(NULL);
    if (jit) it->js = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!it->md || !it->mc || (jit && !it->js)) {
        tok_iter_free(it);
        return moe_errf(err, "tokenizer: out of memory creating the PCRE2 match state");
    }
    if (jit) pcre2_jit_stack_assign(it->mc, NULL, it->js);
    return 0;
}

void tok_iter_reset(tok_iter *it, const char *s, size_t len) {
    it->s = (const uint8_t *)s;
    it->len = len;
    it->pos = 0;
    it->have_m = 0;
}

int tok_iter_next(tok_iter *it, size_t *start, size_t *end, moe_err *err) {
    if (it->pos >= it->len) return 0;
    if (!it->have_m) {
        int rc = it->jit
            ? pcre2_jit_match(it->re, it->s, it->len, it->pos, 0, it->md, it->mc)
            : pcre2_match(it->re, it->s, it->len, it->pos, 0, it->md, it->mc);
        if (rc == PCRE2_ERROR_NOMATCH) {
            /* only invalid UTF-8 is left: one chunk per byte */
            it->m_start = it->m_end = it->len;
        } else if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return moe_errf(err, "tokenizer: pre-split failed at byte %zu: %s", it->pos,
                            (const char *)msg);
        } else {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(it->md);
            it->m_start = ov[0];
            it->m_end = ov[1];
        }
        it->have_m = 1;
    }
    if (it->m_start > it->pos) {  /* an invalid byte before the next match */
        *start = it->pos;
        *end = ++it->pos;
        return 1;
    }
    *start = it->m_start;
    *end = it->m_end;
    it->pos = it->m_end;
    it->have_m = 0;
    return 1;
}

void tok_iter_free(tok_iter *it) {
    if (it->md) pcre2_match_data_free(it->md);
    if (it->mc) pcre2_match_context_free(it->mc);
    if (it->js) pcre2_jit_stack_free(it->js);
    it->md = NULL;
    it->mc = NULL;
    it->js = NULL;
}

/* A cut at p is safe when text[p-2] is a printable ASCII character other than
 * space, text[p-1] is '\n' and text[p] is a printable ASCII character other
 * than space: the chunk holding the '\n' is exactly "\n" both in the whole and
 * in the left piece (nothing whitespace precedes it, and the pattern's
 * lookahead (?!\S) cannot extend it), and no match starts before p and ends
 * after it. The pattern has no lookbehind, so matching from p onward does not
 * depend on what precedes p. */
static int graph(uint8_t c) { return c > 0x20 && c < 0x7f; }

size_t moe_pretok_safe_cut(const char *text, size_t len, size_t lo) {
    const uint8_t *s = (const uint8_t *)text;
    if (lo < 2) lo = 2;
    for (size_t p = lo; p < len; p++) {
        if (s[p - 1] != '\n') {
            const void *nl = memchr(s + p, '\n', len - p);
            if (!nl) return len;
            p = (size_t)((const uint8_t *)nl - s);  /* loop ++ puts p after the '\n' */
            continue;
        }
        if (graph(s[p - 2]) && graph(s[p])) return p;
    }
    return len;
}
