/* tokcheck.c — a token file read by eval or analyze against the model's
 * tokenizer: one warning line when the file records another tokenizer (its
 * ids would mean other text to this model), as `train --model` warns. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "moe/util/common.h"
#include "moe/data/data.h"
#include "moe/model/model.h"
#include "moe/data/tokenizer.h"

void cli_warn_data_tokenizer(const char *cmd, const char *ckpt, const char *tok_path,
                             const moe_tokens *data, const char *data_path) {
    if (!data->tokenizer_len) return;   /* recorded none: nothing to compare */
    moe_err err;
    moe_tokenizer *mt = NULL, *dt = NULL;
    moe_buf a = {0}, b = {0};
    if (moe_checkpoint_tokenizer(ckpt, tok_path, &mt, &err)) goto out;
    if (!mt) {  /* a model without a tokenizer file reads bytes when its vocabulary is 257 */
        moe_config cfg;
        if (moe_checkpoint_config(ckpt, &cfg, &err) || cfg.vocab_size != 257 || !(mt = moe_tokenizer_bytes(&err)))
            goto out;
    }
    /* compared in our file format, a normal form */
    if (moe_tokenizer_parse(data->tokenizer, data->tokenizer_len, data_path, &dt, &err) ||
        moe_tokenizer_serialize(mt, &a, &err) || moe_tokenizer_serialize(dt, &b, &err))
        goto out;
    if (a.len != b.len || memcmp(a.data, b.data, a.len))
        fprintf(stderr, "moe %s: warning: %s was prepared with another tokenizer than the model's (%s): "
                "its ids stand for other text here, so the results say nothing about this model; prepare "
                "the text again with the model's tokenizer\n", cmd, data_path,
                tok_path ? tok_path : ckpt);
out:
    moe_tokenizer_free(mt);
    moe_tokenizer_free(dt);
    moe_buf_free(&a);
    moe_buf_free(&b);
}
