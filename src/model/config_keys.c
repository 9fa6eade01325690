/* config_keys.c — the table of configuration keys: type, default, range and
 * meaning; JSON reading with validation; JSON writing; the docs table. */
#include "moe/model/config.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "moe/model/ffn.h"
#include "moe/moe/router.h"

typedef enum { K_INT, K_FLOAT, K_BOOL, K_ENUM } key_kind;

typedef struct {
    const char *name;
    key_kind kind;
    size_t offset;
    double def, lo, hi;
    const char *choices;   /* K_ENUM: '|'-separated allowed values; first is default
                            * (NULL for "ffn" and "router": their kinds' tables, see
                            * enum_choices).
                            * K_FLOAT: the range's brackets when an end is open,
                            * "[)", "(]" or "()"; NULL: closed, [lo, hi] */
    const char *doc;
} key_spec;

#define OFF(f) offsetof(moe_config, f)
static const key_spec KEYS[] = {
    /* model */
    {"vocab_size", K_INT, OFF(vocab_size), 257, 2, 16777216, 0, "number of token ids (257: the 256 bytes and the end-of-text token)"},
    {"hidden", K_INT, OFF(hidden), 128, 2, 65536, 0, "model width (at least 2: a head of even size)"},
    {"n_layers", K_INT, OFF(n_layers), 4, 1, 1024, 0, "transformer blocks"},
    {"n_heads", K_INT, OFF(n_heads), 4, 1, 1024, 0, "attention heads (hidden must be divisible by it; head size even)"},
    {"n_kv_heads", K_INT, OFF(n_kv_heads), 2, 1, 1024, 0, "key/value heads for grouped-query attention (divides n_heads)"},
    {"ffn_dim", K_INT, OFF(ffn_dim), 0, 0, 1048576, 0, "SwiGLU intermediate size; 0 means 4 x hidden"},
    {"max_seq_len", K_INT, OFF(max_seq_len), 1024, 1, 1048576, 0, "longest sequence the model accepts"},
    {"rope_theta", K_FLOAT, OFF(rope_theta), 10000, 1, 1e12, 0, "RoPE base"},
    {"norm_eps", K_FLOAT, OFF(norm_eps), 1e-5, 1e-12, 1, 0, "RMSNorm epsilon"},
    {"init_std", K_FLOAT, OFF(init_std), 0.01, 1e-6, 1, 0, "std of the normal init (output projections: /sqrt(2 n_layers))"},
    {"ffn", K_ENUM, OFF(ffn), 0, 0, 0, NULL, "feed-forward kind: dense SwiGLU, a mixture of experts, CartesianMoE's two sub-layers, or Lory's segment-level expert merging (docs/ROUTERS.md)"},
    {"moe_every", K_INT, OFF(moe_every), 1, 1, 1024, 0, "with ffn other than dense: layer l (0-based) uses it iff (l+1) % moe_every == 0, else dense"},
    {"dense_first_layers", K_INT, OFF(dense_first_layers), 0, 0, 1024, 0, "the first N layers are dense whatever moe_every says (CartesianMoE's reference: 1); must leave at least one layer of kind ffn"},
    {"router", K_ENUM, OFF(router), 0, 0, 0, NULL, "MoE router: softmax top-k (dMoE), ReLU (ReMoE), top-p, hash, expert choice, SparseMixer-v2, learned hash (a per-token-id logit table: CartesianMoE's Hash baseline) (docs/ROUTERS.md)"},
    {"n_experts", K_INT, OFF(n_experts), 8, 1, 4096, 0, "E: experts per MoE layer (before granularity)"},
    {"top_k", K_INT, OFF(top_k), 1, 1, 4096, 0, "k: active experts per token (ReLU: the target average)"},
    {"granularity", K_INT, OFF(granularity), 1, 1, 1024, 0, "G: E*G experts of size ffn_dim/G with k*G active"},
    {"n_shared_experts", K_INT, OFF(n_shared_experts), 0, 0, 1024, 0, "always-active experts of size ffn_dim/G added to the output"},
    {"n_zero_experts", K_INT, OFF(n_zero_experts), 0, 0, 4096, 0, "MoE++ zero-computation experts routed beside the FFN experts: zero experts output 0 (router topk or relu, ffn \"moe\"; docs/ROUTERS.md)"},
    {"n_copy_experts", K_INT, OFF(n_copy_experts), 0, 0, 4096, 0, "MoE++: copy experts, output x (the expert's input)"},
    {"n_const_experts", K_INT, OFF(n_const_experts), 0, 0, 4096, 0, "MoE++: constant experts, output a1 x + a2 v with [a1, a2] = softmax(W x), W [2, hidden] and v [hidden] learned per expert"},
    {"norm_topk_prob", K_BOOL, OFF(norm_topk_prob), 0, 0, 1, 0, "TopK: renormalise the k gates to sum 1 (Mixtral; k=1: a gate of exactly 1)"},
    {"aux_loss_coef", K_FLOAT, OFF(aux_loss_coef), 0.01, 0, 100, 0, "TopK load-balancing loss coefficient c_aux"},
    {"z_loss_coef", K_FLOAT, OFF(z_loss_coef), 0, 0, 100, 0, "router z-loss coefficient c_z (0: off)"},
    {"k_warm", K_INT, OFF(k_warm), 0, 0, 4096, 0, "TopK near-dense warm-up: experts per token during warm-up (0: off)"},
    {"k_warm_steps", K_INT, OFF(k_warm_steps), 0, 0, 1e9, 0, "TopK: steps that use k_warm"},
    {"scoring_func", K_ENUM, OFF(scoring_func), 0, 0, 0, "softmax|sigmoid", "TopK: the router's scores: softmax over the experts, or sigmoid of each logit (DeepSeek-V3: the top-k chosen on the sigmoid scores, their gates always renormalised over the chosen k; the balance loss uses the scores normalised over all experts; no z-loss; docs/ROUTERS.md)"},
    {"routed_scaling_factor", K_FLOAT, OFF(routed_scaling_factor), 1, 0, 100, "(]", "TopK: the chosen gates are multiplied by this factor, after any renormalisation (DeepSeek-V3: 2.5)"},
    {"global_batch_balance", K_BOOL, OFF(global_batch_balance), 0, 0, 1, 0, "TopK: the load-balancing loss counts the tokens per expert f_i over the global batch (every micro-batch of the step and every rank) instead of the micro-batch; with grad_accum > 1 each step first routes its micro-batches in a forward-only pass to count them (Qwen, arXiv 2501.11873; docs/ROUTERS.md)"},
    {"aux_free_bias", K_BOOL, OFF(aux_free_bias), 0, 0, 1, 0, "TopK: auxiliary-loss-free balancing: a per-expert bias b (per layer) is added to the scores only to choose the top-k (the gates use the unbiased scores) and after each step b_i += aux_free_rate * sign(mean load - load_i), loads counted over the step's micro-batches and ranks; saved with the model, no gradient (Wang et al. 2024, DeepSeek-V3; docs/ROUTERS.md)"},
    {"aux_free_rate", K_FLOAT, OFF(aux_free_rate), 1e-3, 0, 1, "(]", "TopK with aux_free_bias: the bias update rate u per step"},
    {"relu_lambda0", K_FLOAT, OFF(relu_lambda0), 1e-8, 0, 1e6, 0, "ReMoE: initial L1 coefficient lambda_0"},
    {"relu_alpha", K_FLOAT, OFF(relu_alpha), 1.2, 1, 100, 0, "ReMoE: lambda is multiplied or divided by alpha each step"},
    {"l1_load_balance", K_BOOL, OFF(l1_load_balance), 1, 0, 1, 0, "ReMoE: load-balanced L1 (false: plain L1, f = 1)"},
    {"target_sparsity", K_FLOAT, OFF(target_sparsity), 0, 0, 1, "[)", "ReMoE target sparsity; 0 means 1 - k/E"},
    {"relu_lambda_per_layer", K_BOOL, OFF(relu_lambda_per_layer), 0, 0, 1, 0, "ReMoE: each MoE layer has its own lambda, driven to target_sparsity by the same alpha rule from that layer's own sparsity of the step (false: one lambda from the mean over layers, as the paper); ffn \"moe\" with router \"relu\" only (docs/ROUTERS.md)"},
    {"shared_gate", K_BOOL, OFF(shared_gate), 0, 0, 1, 0, "mix routed and shared experts' outputs by a learned 2-way softmax gate with bias (SMoE-Share); needs n_shared_experts >= 1"},
    {"top_p", K_FLOAT, OFF(top_p), 0.4, 0.01, 1, 0, "TopP: take experts by falling probability until their sum reaches top_p"},
    {"topp_entropy_coef", K_FLOAT, OFF(topp_entropy_coef), 1e-4, 0, 100, 0, "TopP: coefficient of the dynamic loss (mean entropy of the router distribution)"},
    {"jitter_eps", K_FLOAT, OFF(jitter_eps), 0.01, 0, 1, 0, "SparseMixer-v2: experts whose logit is within 2 x jitter_eps (relative) of the best are candidates"},
    {"lory_segment", K_INT, OFF(lory_segment), 256, 1, 1048576, 0, "Lory: segment length in tokens"},
    /* training */
    {"steps", K_INT, OFF(steps), 1000, 1, 1e9, 0, "optimiser steps"},
    {"batch_size", K_INT, OFF(batch_size), 8, 1, 1e6, 0, "sequences per micro-batch"},
    {"seq_len", K_INT, OFF(seq_len), 128, 1, 1048576, 0, "tokens per sequence (at most max_seq_len)"},
    {"grad_accum", K_INT, OFF(grad_accum), 1, 1, 1e6, 0, "micro-batches per optimiser step"},
    {"lr", K_FLOAT, OFF(lr), 5e-4, 0, 10, 0, "peak learning rate"},
    {"warmup", K_INT, OFF(warmup), -1, -1, 1e9, 0, "linear warm-up steps; -1 means 1% of steps"},
    {"min_lr_ratio", K_FLOAT, OFF(min_lr_ratio), 0.1, 0, 1, 0, "cosine decay ends at lr x this"},
    {"weight_decay", K_FLOAT, OFF(weight_decay), 0.01, 0, 10, 0, "AdamW decay (not applied to 1-D tensors)"},
    {"beta1", K_FLOAT, OFF(beta1), 0.9, 0, 1, "[)", "AdamW beta1"},
    {"beta2", K_FLOAT, OFF(beta2), 0.999, 0, 1, "[)", "AdamW beta2"},
    {"adam_eps", K_FLOAT, OFF(adam_eps), 1e-8, 0, 1, "(]", "AdamW epsilon (> 0: a parameter whose gradient is zero divides 0 by it)"},
    {"grad_clip", K_FLOAT, OFF(grad_clip), 1.0, 0, 1e9, 0, "global gradient-norm clip; 0 disables"},
    {"seed", K_INT, OFF(seed), 1, 0, 2147483647, 0, "seed for init and shuffling"},
    {"threads", K_INT, OFF(threads), 0, 0, 4096, 0, "threads; 0 means all cores"},
    {"precision", K_ENUM, OFF(precision), 0, 0, 0, "auto|fp32|bf16", "matrix products of the layers: fp32, or bf16 inputs with fp32 accumulation (mixed precision: weights, optimizer, loss, softmax, norms and routing stay fp32; falls back to fp32 where the CPU lacks bf16 dot products); auto: bf16 where oneDNN runs bf16 products on AMX tiles (Intel Sapphire Rapids and later), else fp32 (also on CPUs with AVX512_BF16 alone, such as AMD Zen 4/5, where bf16 trains moe's models slower than fp32), chosen when the model is created and recorded in its config.json (a checkpoint without the key is fp32; docs/PERFORMANCE.md)"},
    {"shuffle", K_BOOL, OFF(shuffle), 1, 0, 1, 0, "shuffle rows (seeded); false reads them in order"},
    {"checkpoint_every", K_INT, OFF(checkpoint_every), 0, 0, 1e9, 0, "steps between checkpoints; 0 means only at the end"},
    {"checkpoint_minutes", K_FLOAT, OFF(checkpoint_minutes), 30, 0, 1e9, 0, "also a checkpoint after a step that ends this many minutes of wall time after the last one (or the start), so that a kill loses at most about this much; 0: off (then only checkpoint_every and the end)"},
    {"keep_checkpoints", K_INT, OFF(keep_checkpoints), 2, 1, 1000, 0, "step checkpoints kept on disk"},
    {"expert_parallel", K_INT, OFF(expert_parallel), 1, 1, 4096, 0, "EP: ranks that share every MoE layer's experts (mpirun, docs/DISTRIBUTED.md); divides n_experts and the number of ranks"},
    {"zero_stage", K_INT, OFF(zero_stage), 0, 0, 1, 0, "1: shard the AdamW moments over the ranks (ZeRO-1: gradients reduce-scattered, weights all-gathered); 0: every rank holds them"},
    {"rebalance_experts", K_INT, OFF(rebalance_experts), 100, 0, 1e9, 0, "EP: steps between placements of the experts on the ranks by load (routed rows counted), the first after step 1; experts that change rank take their weights and moments along; 0 keeps contiguous blocks (docs/DISTRIBUTED.md)"},
    {"max_bad_steps", K_INT, OFF(max_bad_steps), 3, 1, 1000000, 0, "non-finite steps in a row (each skipped) before training returns to the last checkpoint"},
};
#undef OFF
#define N_KEYS (sizeof KEYS / sizeof KEYS[0])

static const key_spec *find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(KEYS[i].name, name)) return &KEYS[i];
    return NULL;
}

/* The known key nearest to an unknown one, if it is near enough to be a
 * typo: at most 2 edits, and fewer than a third of the name's length. */
static const char *nearest_key(const char *name) {
    const char *best = NULL;
    int best_d = 3;
    for (size_t i = 0; i < N_KEYS; i++) {
        int d = moe_edit_distance(name, KEYS[i].name);
        if (d < best_d && 3 * (size_t)d < strlen(KEYS[i].name)) { best_d = d; best = KEYS[i].name; }
    }
    return best;
}

/* The allowed range as it is written in messages and docs: "[0, 1)". */
static void range_text(const key_spec *k, char *out, size_t cap) {
    const char *br = k->kind == K_FLOAT && k->choices ? k->choices : "[]";
    char lo[32], hi[32];
    moe_json_format_double(lo, sizeof lo, k->lo);
    moe_json_format_double(hi, sizeof hi, k->hi);
    snprintf(out, cap, "%c%s, %s%c", br[0], lo, hi, br[1]);
}

static int in_range(const key_spec *k, double v) {
    const char *br = k->kind == K_FLOAT && k->choices ? k->choices : "[]";
    return (br[0] == '(' ? v > k->lo : v >= k->lo) && (br[1] == ')' ? v < k->hi : v <= k->hi);
}

#define CHOICES_MAX 256  /* room for the kinds' names, '|'-separated */

/* The '|'-separated choices of enum key k, in buf if they are built: the
 * table's, or for "ffn" and "router" the names of the kinds' tables
 * (src/model/ffn.c, src/moe/router.c), so that a new kind needs no line
 * here. */
static const char *enum_choices(const key_spec *k, char *buf, size_t cap) {
    if (k->choices) return k->choices;
    int ffn = k->offset == offsetof(moe_config, ffn);
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; n < cap; i++) {
        const moe_ffn_kind *f = ffn ? moe_ffn_kind_at(i) : NULL;
        const moe_router_kind *r = ffn ? NULL : moe_router_kind_at(i);
        const char *name = f ? f->name : r ? r->name : NULL;
        if (!name) break;
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? "|" : "", name);
    }
    return buf;
}

/* Copies the n-th '|'-separated choice into out; returns 0 if it exists. */
static int enum_choice(const char *choices, int n, char *out, size_t cap) {
    const char *p = choices;
    for (int i = 0; i < n; i++) {
        p = strchr(p, '|');
        if (!p) return -1;
        p++;
    }
    size_t len = strcspn(p, "|");
    if (len + 1 > cap) return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

void moe_config_defaults(moe_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &KEYS[i];
        char *field = (char *)c + k->offset;
        switch (k->kind) {
        case K_INT: case K_BOOL: *(int *)field = (int)k->def; break;
        case K_FLOAT: *(double *)field = k->def; break;
        case K_ENUM: {
            char buf[CHOICES_MAX];
            enum_choice(enum_choices(k, buf, sizeof buf), 0, field, 16);
            break;
        }
        }
    }
}

/* Refuses v for key k unless it is a number of the key's kind in its range. */
static int check_number(const key_spec *k, double v, const char *what, moe_err *err) {
    if ((k->kind == K_INT && v != floor(v)) || !in_range(k, v)) {
        char range[80], found[32];
        range_text(k, range, sizeof range);
        moe_json_format_double(found, sizeof found, v);
        return moe_errf(err, "%s%skey '%s': expected %s in %s, found %s", what ? what : "", what ? ": " : "",
                        k->name, k->kind == K_INT ? "a whole number" : "a number", range, found);
    }
    return 0;
}

static int set_number(moe_config *c, const key_spec *k, double v, const char *what, moe_err *err) {
    char *field = (char *)c + k->offset;
    if (check_number(k, v, what, err)) return -1;
    if (k->kind == K_INT) *(int *)field = (int)v;
    else *(double *)field = v;
    return 0;
}

int moe_config_set(moe_config *c, const char *key, double value, moe_err *err) {
    const key_spec *k = find_key(key);
    if (!k || (k->kind != K_INT && k->kind != K_FLOAT && k->kind != K_BOOL))
        return moe_errf(err, "unknown numeric config key '%s'", key);
    if (k->kind == K_BOOL) { *(int *)((char *)c + k->offset) = value != 0; return 0; }
    return set_number(c, k, value, NULL, err);
}

int moe_config_apply_json(moe_config *c, const moe_json_value *obj, const char *what, moe_err *err) {
    if (!obj || obj->type != MOE_JSON_OBJECT)
        return moe_errf(err, "%s: expected a JSON object of config keys", what);
    for (size_t i = 0; i < obj->count; i++) {
        const char *name = obj->keys[i];
        const moe_json_value *v = &obj->items[i];
        const key_spec *k = find_key(name);
        if (!k) {
            const char *near = nearest_key(name);
            if (near) return moe_errf(err, "%s: unknown config key '%s': did you mean '%s'?", what, name, near);
            return moe_errf(err, "%s: unknown config key '%s' (see docs/CONFIG.md)", what, name);
        }
        char *field = (char *)c + k->offset;
        switch (k->kind) {
        case K_INT: case K_FLOAT:
            if (v->type != MOE_JSON_NUMBER)
                return moe_errf(err, "%s: key '%s': expected a number", what, name);
            if (set_number(c, k, v->number, what, err)) return -1;
            break;
        case K_BOOL:
            if (v->type != MOE_JSON_BOOL)
                return moe_errf(err, "%s: key '%s': expected true or false", what, name);
            *(int *)field = v->boolean;
            break;
        case K_ENUM: {
            char choice[16], buf[CHOICES_MAX];
            const char *choices = enum_choices(k, buf, sizeof buf);
            int ok = 0;
            if (v->type == MOE_JSON_STRING && strlen(v->string) != v->len)
                return moe_errf(err, "%s: key '%s': expected one of \"%s\", found a string holding "
                                "\\u0000 (a NUL character)", what, name, choices);
            if (v->type == MOE_JSON_STRING)
                for (int n = 0; !enum_choice(choices, n, choice, sizeof choice); n++)
                    if (!strcmp(choice, v->string)) { ok = 1; break; }
            if (!ok)
                return moe_errf(err, "%s: key '%s': expected one of \"%s\"", what, name, choices);
            strcpy(field, choice);
            break;
        }
        }
    }
    return 0;
}

/* Every key against the table, whoever filled the struct: a JSON config
 * was checked as it was read, but an imported model's (GGUF, Hugging Face)
 * or a program's was not, and the checks below divide by some of them. */
static int check_table(const moe_config *c, moe_err *err) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &KEYS[i];
        const char *field = (const char *)c + k->offset;
        char choice[16], buf[CHOICES_MAX];
        int n = 0;
        switch (k->kind) {
        case K_INT:
            if (check_number(k, *(const int *)field, "config", err)) return -1;
            break;
        case K_FLOAT:
            if (check_number(k, *(const double *)field, "config", err)) return -1;
            break;
        case K_BOOL:
            if (*(const int *)field != 0 && *(const int *)field != 1)
                return moe_errf(err, "config: key '%s': expected true or false, found %d", k->name,
                                *(const int *)field);
            break;
        case K_ENUM: {
            const char *choices = enum_choices(k, buf, sizeof buf);
            while (!enum_choice(choices, n, choice, sizeof choice) && strcmp(choice, field)) n++;
            if (enum_choice(choices, n, choice, sizeof choice))
                return moe_errf(err, "config: key '%s': expected one of \"%s\", found \"%.15s\"", k->name,
                                choices, field);
            break;
        }
        }
    }
    return 0;
}

/* 1 if key k of c holds its default. */
static int is_default(const moe_config *c, const key_spec *k) {
    const char *field = (const char *)c + k->offset;
    switch (k->kind) {
    case K_INT: case K_BOOL: return *(const int *)field == (int)k->def;
    case K_FLOAT: return *(const double *)field == k->def;
    case K_ENUM: {
        char buf[CHOICES_MAX], def[16];
        return !enum_choice(enum_choices(k, buf, sizeof buf), 0, def, sizeof def) && !strcmp(field, def);
    }
    }
    return 1;
}

/* The keys a router kind owns (moe_router_kind.own_keys), set away from
 * their defaults, need that router on an FFN kind with router_options. */
static int check_own_keys(const moe_config *c, const moe_ffn_kind *fk, const moe_router_kind *rk,
                          moe_err *err) {
    for (size_t i = 0; i < N_KEYS; i++) {
        if (is_default(c, &KEYS[i])) continue;
        const moe_router_kind *owner;
        for (size_t j = 0; (owner = moe_router_kind_at(j)); j++)
            for (const char *const *key = owner->own_keys; key && *key; key++)
                if (!strcmp(*key, KEYS[i].name) && (!fk->router_options || rk != owner))
                    return moe_errf(err, "config: key '%s': needs ffn \"moe\" and router \"%s\", found ffn "
                                    "\"%s\", router \"%s\"", KEYS[i].name, owner->name, c->ffn, c->router);
    }
    return 0;
}

int moe_config_finalize(moe_config *c, moe_err *err) {
    if (check_table(c, err)) return -1;
    if (c->ffn_dim == 0) c->ffn_dim = 4 * c->hidden;
    if (c->warmup < 0) c->warmup = c->steps / 100;
    if (c->hidden % c->n_heads)
        return moe_errf(err, "config: key 'n_heads': %d does not divide hidden %d", c->n_heads, c->hidden);
    if ((c->hidden / c->n_heads) % 2)
        return moe_errf(err, "config: key 'n_heads': head size hidden/n_heads = %d must be even (RoPE)",
                        c->hidden / c->n_heads);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return moe_errf(err, "config: key 'n_kv_heads': %d must divide n_heads %d", c->n_kv_heads, c->n_heads);
    if (c->ffn_dim % c->granularity)
        return moe_errf(err, "config: key 'granularity': %d does not divide ffn_dim %d",
                        c->granularity, c->ffn_dim);
    /* both found: check_table has held them to the kinds' names */
    const moe_ffn_kind *fk = moe_ffn_kind_find(c->ffn);
    const moe_router_kind *rk = moe_router_kind_find(c->router);
    int zc = c->n_zero_experts + c->n_copy_experts + c->n_const_experts;
    if (zc && (!fk->router_options || !rk->zero_experts || c->shared_gate))
        return moe_errf(err, "config: zero-computation experts (n_zero_experts, n_copy_experts, "
                        "n_const_experts) need ffn \"moe\" with router \"topk\" or \"relu\" and no "
                        "shared_gate, found ffn \"%s\", router \"%s\"%s", c->ffn, c->router,
                        c->shared_gate ? ", shared_gate true" : "");
    if ((long)c->top_k * c->granularity > (long)c->n_experts * c->granularity + zc)
        return moe_errf(err, "config: key 'top_k': %d exceeds n_experts %d%s", c->top_k, c->n_experts,
                        zc ? " plus the zero-computation experts" : "");
    if (c->k_warm > c->n_experts)
        return moe_errf(err, "config: key 'k_warm': %d exceeds n_experts %d", c->k_warm, c->n_experts);
    if (c->target_sparsity == 0)  /* of all the experts the router chooses among */
        c->target_sparsity = 1.0 - (double)c->top_k * c->granularity / ((double)c->n_experts * c->granularity + zc);
    if (fk->router_options && c->shared_gate && c->n_shared_experts < 1)
        return moe_errf(err, "config: key 'shared_gate': needs n_shared_experts >= 1");
    if (fk->router_options && rk->validate && rk->validate(c, err)) return -1;
    if (fk->validate && fk->validate(c, err)) return -1;
    if (fk->routed && c->dense_first_layers >= c->n_layers)
        return moe_errf(err, "config: key 'dense_first_layers': %d leaves no %s layer of %d "
                        "(use ffn \"dense\" for a dense model)", c->dense_first_layers, c->ffn, c->n_layers);
    if (check_own_keys(c, fk, rk, err)) return -1;
    if (!strcmp(c->scoring_func, "sigmoid") && c->z_loss_coef > 0)
        return moe_errf(err, "config: key 'z_loss_coef': %g has no meaning with scoring_func \"sigmoid\" (the "
                        "z-loss is on the softmax's log-partition): set it to 0", c->z_loss_coef);
    if (c->expert_parallel > 1 && !fk->expert_parallel)
        return moe_errf(err, "config: key 'expert_parallel': %d needs ffn \"moe\" or \"cartesian\", "
                        "found \"%s\"", c->expert_parallel, c->ffn);
    if (c->n_experts % c->expert_parallel)
        return moe_errf(err, "config: key 'expert_parallel': %d does not divide n_experts %d",
                        c->expert_parallel, c->n_experts);
    if (c->seq_len > c->max_seq_len)
        return moe_errf(err, "config: key 'seq_len': %d exceeds max_seq_len %d", c->seq_len, c->max_seq_len);
    return 0;
}

int moe_config_load(const char *path, moe_config *c, moe_err *err) {
    moe_config_defaults(c);
    return moe_config_load_over(path, c, err);
}

int moe_config_load_over(const char *path, moe_config *c, moe_err *err) {
    moe_json_value *j = moe_json_parse_file(path, err);
    if (!j) return -1;
    int rc = moe_config_apply_json(c, j, path, err);
    moe_json_free(j);
    if (rc) return -1;
    if (moe_config_finalize(c, err)) return moe_err_prefix(err, "%s", path);
    return 0;
}

int moe_config_to_json(const moe_config *c, moe_buf *out) {
    int rc = moe_buf_printf(out, "{\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &KEYS[i];
        const char *field = (const char *)c + k->offset;
        rc |= moe_buf_printf(out, "  \"%s\": ", k->name);
        switch (k->kind) {
        case K_INT: rc |= moe_buf_printf(out, "%d", *(const int *)field); break;
        case K_BOOL: rc |= moe_buf_printf(out, "%s", *(const int *)field ? "true" : "false"); break;
        case K_FLOAT: rc |= moe_json_write_double(out, *(const double *)field); break;
        case K_ENUM: rc |= moe_json_write_string(out, field, strlen(field)); break;
        }
        rc |= moe_buf_printf(out, "%s\n", i + 1 < N_KEYS ? "," : "");
    }
    rc |= moe_buf_printf(out, "}\n");
    return rc ? -1 : 0;
}

int moe_config_doc(moe_buf *out) {
    int rc = moe_buf_printf(out, "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_spec *k = &KEYS[i];
        switch (k->kind) {
        case K_INT: case K_FLOAT: {
            char def[32], range[80];
            moe_json_format_double(def, sizeof def, k->def);
            range_text(k, range, sizeof range);
            rc |= moe_buf_printf(out, "| `%s` | %s | %s | %s | %s |\n", k->name,
                                 k->kind == K_INT ? "integer" : "number", def, range, k->doc);
            break;
        }
        case K_BOOL:
            rc |= moe_buf_printf(out, "| `%s` | boolean | %s | true, false | %s |\n",
                                 k->name, k->def ? "true" : "false", k->doc);
            break;
        case K_ENUM: {
            char def[16], buf[CHOICES_MAX];
            const char *choices = enum_choices(k, buf, sizeof buf);
            enum_choice(choices, 0, def, sizeof def);
            rc |= moe_buf_printf(out, "| `%s` | string | \"%s\" | ", k->name, def);
            for (const char *p = choices; *p; p++)
                rc |= *p == '|' ? moe_buf_printf(out, ", ") : moe_buf_append(out, p, 1);
            rc |= moe_buf_printf(out, " | %s |\n", k->doc);
            break;
        }
        }
    }
    return rc ? -1 : 0;
}

int moe_config_causal(const moe_config *c, const char **why) {
    const moe_ffn_kind *f = moe_ffn_kind_find(c->ffn);
    const moe_router_kind *r = moe_ffn_router_kind(c);
    const char *no = r && r->not_causal ? r->not_causal : f ? f->not_causal : NULL;
    if (why) *why = no;
    return no == NULL;
}
