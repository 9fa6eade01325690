/* fuzz_gguf.c — libFuzzer harness: any bytes as a GGUF file to import. */
#include <stdint.h>

#include "fuzz_file.h"
#include "moe/interop/interop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(data, size, ".gguf");
    moe_model *m;
    moe_tokenizer *tok;
    moe_err err;
    char why[256];
    if (path && moe_import_gguf(path, &m, &tok, why, sizeof why, &err) == 0) {
        moe_tokenizer_free(tok);
        moe_model_free(m);
    }
    return 0;
}
