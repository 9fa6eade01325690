/* fuzz_tokenizer.c — libFuzzer harness: any bytes as a tokenizer file (our
 * format or a tiktoken rank file); a tokenizer that loads must round-trip a
 * short text losslessly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe/data/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_tokenizer *t;
    moe_err err;
    if (moe_tokenizer_parse((const char *)data, size, "fuzz", &t, &err)) return 0;
    static const char text[] = "The whale, \xff\xfe and 42 caf\xc3\xa9s.";
    uint32_t *ids = NULL;
    size_t n = 0;
    if (moe_tokenizer_encode(t, text, sizeof text - 1, &ids, &n, &err) == 0) {
        moe_buf b = {0};
        if (moe_tokenizer_decode(t, ids, n, &b, &err) == 0 &&
            (b.len != sizeof text - 1 || memcmp(b.data, text, b.len)))
            abort();  /* a loaded tokenizer must be lossless */
        moe_buf_free(&b);
    }
    free(ids);
    moe_tokenizer_free(t);
    return 0;
}
