/* hf.c — the Hugging Face (transformers) layout. */
#include "ix.h"

int moe_export_hf(const moe_model *m, const moe_tokenizer *tok, const char *dir, st_dtype type, moe_err *err) {
    (void)m; (void)tok; (void)dir; (void)type;
    return moe_errf(err, "not yet");
}
int moe_import_hf(const char *dir, moe_model **m, moe_tokenizer **tok, char *why, size_t why_cap, moe_err *err) {
    (void)dir; (void)m; (void)tok; (void)why; (void)why_cap;
    return moe_errf(err, "not yet");
}
