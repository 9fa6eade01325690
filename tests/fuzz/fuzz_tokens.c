/* fuzz_tokens.c — libFuzzer harness: any bytes as a token file, then a few
 * batches from the loader when it loads. */
#include <stdint.h>

#include "fuzz_file.h"
#include "moe/data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(data, size, ".tok");
    moe_tokens t;
    moe_err err;
    if (!path || moe_tokens_read(path, &t, &err)) return 0;
    moe_loader l;
    int x[2 * 4], y[2 * 4];
    if (moe_loader_init(&l, &t, 2, 4, 1, 7, &err) == 0) {
        for (int i = 0; i < 3; i++) moe_loader_next(&l, x, y, &err);
        moe_loader_free(&l);
    }
    moe_tokens_free(&t);
    return 0;
}
