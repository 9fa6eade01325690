/* fuzz_safetensors.c — libFuzzer harness: any bytes as a safetensors file. */
#include <stdint.h>

#include "fuzz_file.h"
#include "moe/util/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(data, size, ".safetensors");
    moe_st_file f;
    moe_err err;
    if (path && moe_st_read(path, &f, &err) == 0) {
        float out[16];
        for (size_t i = 0; i < f.count; i++) {
            const moe_st_tensor *t = &f.tensors[i];
            if (t->dtype == MOE_ST_F32 && t->end - t->begin <= sizeof out)
                moe_st_load_f32(&f, t->name, t->shape, t->ndim, out, &err);
        }
        moe_st_free(&f);
    }
    return 0;
}
