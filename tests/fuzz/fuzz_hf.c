/* fuzz_hf.c — libFuzzer harness: any bytes as a Hugging Face directory to
 * import. The input is config.json, a NUL byte, then model.safetensors
 * (no NUL: an empty model.safetensors), so the fuzzer mutates the config
 * and the tensors together. The seeds are `moe export --format hf` of tiny
 * Llama, Mixtral (also without moe_config) and Qwen2-MoE (moe_every 2,
 * granularity 2) models. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_file.h"
#include "moe/interop/interop.h"

static int write_file(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite(data, 1, size, f);
    return fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[96], path[128];
    snprintf(dir, sizeof dir, "%s/moe-fuzz-hf-%d", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid());
    mkdir(dir, 0700);
    const uint8_t *nul = memchr(data, 0, size);
    size_t json = nul ? (size_t)(nul - data) : size, rest = nul ? size - json - 1 : 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (write_file(path, data, json)) return 0;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (write_file(path, nul ? nul + 1 : data, rest)) return 0;
    moe_model *m;
    moe_tokenizer *tok;
    moe_err err;
    char why[256];
    if (moe_import_hf(dir, &m, &tok, why, sizeof why, &err) == 0) {
        moe_tokenizer_free(tok);
        moe_model_free(m);
    }
    return 0;
}
