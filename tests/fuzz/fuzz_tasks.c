/* fuzz_tasks.c — libFuzzer harness: any bytes as a multiple-choice task
 * file (JSONL), and the acc / acc_norm choice on what loads. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_file.h"
#include "moe/eval/eval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(data, size, ".jsonl");
    moe_task t;
    moe_err err;
    if (!path || moe_task_load(path, &t, &err)) return 0;
    for (size_t i = 0; i < t.n; i++) {
        size_t n = t.items[i].n_choices;
        double *ll = calloc(n, sizeof *ll);
        size_t *bytes = calloc(n, sizeof *bytes);
        int pick, pick_norm;
        for (size_t c = 0; c < n && ll && bytes; c++) { ll[c] = -(double)c; bytes[c] = c + 1; }
        if (ll && bytes) moe_mc_pick(ll, bytes, n, &pick, &pick_norm);
        free(ll);
        free(bytes);
    }
    moe_task_free(&t);
    return 0;
}
