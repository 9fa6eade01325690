/* fuzz_json_config.c — libFuzzer harness: any bytes as a config file (JSON
 * parser + config validation). Must never crash, leak or read out of bounds. */
#include <stdint.h>
#include <stdlib.h>

#include "moe/model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    moe_json_value *j = moe_json_parse((const char *)data, size, "fuzz.json", &err);
    if (!j) return 0;
    moe_config c;
    moe_config_defaults(&c);
    if (moe_config_apply_json(&c, j, "fuzz.json", &err) == 0) moe_config_finalize(&c, &err);
    moe_buf b = {0};
    moe_json_write_string(&b, (const char *)data, size);
    moe_buf_free(&b);
    moe_json_free(j);
    return 0;
}
