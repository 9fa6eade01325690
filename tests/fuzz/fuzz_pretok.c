/* fuzz_pretok.c — libFuzzer harness: any bytes as text for every split
 * pattern; the chunks must be non-empty and tile the text, cutting at safe
 * points must not change them, and where every character is below U+0800
 * (classes that PCRE2's older Unicode tables share with Unicode 16) they must
 * equal PCRE2's matches of tiktoken's expression. */
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "data/tok_internal.h"

static int low_unicode(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xe0) return 0;  /* a 3- or 4-byte sequence: U+0800 and up */
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const struct { moe_tok_pattern pat; const char *re; } pats[] = {
        {MOE_PAT_GPT2, MOE_PAT_GPT2_RE}, {MOE_PAT_CL100K, MOE_PAT_CL100K_RE}, {MOE_PAT_O200K, MOE_PAT_O200K_RE}};
    static pcre2_code *re[3];
    static pcre2_match_data *md[3];
    if (!re[0])
        for (int k = 0; k < 3; k++) {
            int ec;
            PCRE2_SIZE eo;
            re[k] = pcre2_compile((PCRE2_SPTR)pats[k].re, PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
            if (!re[k]) abort();
            md[k] = pcre2_match_data_create_from_pattern(re[k], NULL);
        }
    int cmp = low_unicode(data, size);
    const char *text = (const char *)data;
    for (int k = 0; k < 3; k++) {
        moe_tok_iter it, piece;
        moe_tok_iter_init(&it, pats[k].pat);
        moe_tok_iter_init(&piece, pats[k].pat);
        moe_tok_iter_reset(&it, text, size);
        size_t a, e, pos = 0, cut = moe_pretok_safe_cut(text, size, 1 + size / 3), pa = 0, pe = 0;
        while (moe_tok_iter_next(&it, &a, &e)) {
            if (a != pos || e <= a || e > size) abort();  /* chunks tile the text */
            if (cmp) {  /* PCRE2: the next match, or invalid bytes (chunks of one) before it */
                int rc = pcre2_match(re[k], data, size, pos, 0, md[k], NULL);
                size_t ms = rc >= 0 ? pcre2_get_ovector_pointer(md[k])[0] : size;
                size_t me = rc >= 0 ? pcre2_get_ovector_pointer(md[k])[1] : size;
                if (ms > pos ? e != pos + 1 : e != me) abort();
            }
            /* the same chunks from the two pieces either side of a safe cut */
            if (a == 0) moe_tok_iter_reset(&piece, text, cut);
            if (a == cut && cut < size) moe_tok_iter_reset(&piece, text + cut, size - cut);
            if (!moe_tok_iter_next(&piece, &pa, &pe)) abort();
            size_t base = a >= cut ? cut : 0;
            if (pa + base != a || pe + base != e) abort();
            pos = e;
        }
        if (pos != size) abort();
    }
    return 0;
}
