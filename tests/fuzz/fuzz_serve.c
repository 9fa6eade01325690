/* fuzz_serve.c — libFuzzer harness: any bytes as a `moe serve` request body
 * (the first byte picks /v1/completions or /v1/chat/completions), through
 * the parser and validator (src/serve/request.c) and, when accepted, the
 * whole completion on a tiny random model with the bytes tokenizer
 * (src/serve/complete.c). Every answer must be valid JSON: the error body,
 * the response, or each server-sent event of a stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/json.h"
#include "moe/serve/serve.h"

static moe_serve *server(void) {
    static moe_serve s;
    static int ready;
    if (ready) return &s;
    const char *cfg_text = "{\"vocab_size\": 257, \"hidden\": 16, \"n_layers\": 1, \"n_heads\": 2, \"n_kv_heads\": 1,"
                           " \"ffn\": \"moe\", \"router\": \"relu\", \"n_experts\": 2, \"top_k\": 1,"
                           " \"ffn_dim\": 16, \"max_seq_len\": 16, \"seq_len\": 16, \"precision\": \"fp32\"}";
    moe_err err;
    moe_config c;
    moe_config_defaults(&c);
    moe_json_value *j = moe_json_parse(cfg_text, strlen(cfg_text), "cfg", &err);
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    if (!j || moe_config_apply_json(&c, j, "cfg", &err) || moe_config_finalize(&c, &err) ||
        moe_model_create(&c, &m, &err) || !(tok = moe_tokenizer_bytes(&err)) ||
        (moe_model_init(m, 7), moe_serve_init(&s, m, tok, "fuzz", 0, &err))) {
        fprintf(stderr, "fuzz_serve: %s\n", err.msg);
        abort();
    }
    moe_json_free(j);
    ready = 1;
    return &s;
}

static void must_be_json(const char *text, size_t len, const char *what) {
    moe_err err;
    moe_json_value *v = moe_json_parse(text, len, what, &err);
    if (!v) {
        fprintf(stderr, "fuzz_serve: invalid JSON %s: %s\n%.*s\n", what, err.msg, (int)len, text);
        abort();
    }
    moe_json_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    moe_serve *s = server();
    moe_serve_limits lim = moe_serve_limits_of(s);
    moe_serve_req req;
    moe_serve_error e;
    moe_buf out = {0};
    int chat = data[0] & 1;
    if (moe_serve_parse((const char *)data + 1, size - 1, chat, &lim, &req, &e)) {
        if (e.status < 400 || e.status > 599 || moe_serve_error_json(&e, &out)) abort();
        must_be_json(out.data, out.len, "error body");
        moe_buf_free(&out);
        return 0;
    }
    moe_serve_job job;
    moe_err err;
    if (moe_serve_begin(s, &req, &job, &e)) {
        if (e.status < 400 || e.status > 599) abort();
    } else if (moe_serve_run(s, &job, &out, &err)) {
        fprintf(stderr, "fuzz_serve: a request that was accepted failed: %s\n", err.msg);
        abort();
    } else if (!job.req.stream) {
        must_be_json(out.data, out.len, "response");
    } else {  /* "data: {...}\n\n" events, the last "data: [DONE]\n\n" */
        size_t at = 0;
        while (at < out.len) {
            char *end = strstr(out.data + at, "\n\n");
            if (strncmp(out.data + at, "data: ", 6) || !end) abort();
            if (strncmp(out.data + at + 6, "[DONE]", 6)) must_be_json(out.data + at + 6, (size_t)(end - out.data) - at - 6, "event");
            else if (end + 2 != out.data + out.len) abort();
            at = (size_t)(end - out.data) + 2;
        }
    }
    moe_serve_job_free(&job);
    moe_buf_free(&out);
    return 0;
}
