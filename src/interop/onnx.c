/* onnx.c — `moe export --format onnx`: DIR/model.onnx, a decoder graph in
 * ONNX (opset 17 of the default domain, standard operators only) that
 * computes what moe computes, every router included, plus config.json and
 * tokenizer.json, tokenizer_config.json and generation_config.json beside
 * it (docs/INTEROP.md). The protobuf is written here
 * by hand: varints and length-delimited fields of ModelProto, GraphProto,
 * NodeProto, TensorProto, ValueInfoProto and AttributeProto.
 *
 * Inputs: input_ids [batch, seq] int64, attention_mask [batch, total] int64,
 * position_ids [batch, seq] int64, past_key_values.N.key / .value
 * [batch, n_kv_heads, past, head_dim] float. Outputs: logits
 * [batch, seq, vocab] and present.N.key / .value [batch, n_kv_heads, total,
 * head_dim] (keys after RoPE). An MoE layer computes every expert on every
 * token and sums them weighted by a [tokens, E] gate matrix that is zero for
 * the experts not chosen, so the routing is moe's exactly and a token may
 * have no expert at all. */
#include "ix.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/util/fileio.h"
#include "moe/util/json.h"
#include "moe/moe/router.h"
#include "moe/util/version.h"

#define NAME 256   /* room for a tensor name and a suffix */
#define PREFIX 96  /* a block's prefix, "model.layers.L.mlp" */

/* ---- protobuf ------------------------------------------------------------ */

enum { PB_VARINT = 0, PB_LEN = 2 };
/* TensorProto.DataType */
enum { DT_FLOAT = 1, DT_INT64 = 7, DT_BOOL = 9, DT_FLOAT16 = 10, DT_DOUBLE = 11 };

static int pb_varint(moe_buf *b, uint64_t v) {
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return moe_buf_append(b, t, n);
}
static int pb_key(moe_buf *b, int field, int wire) { return pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }
static int pb_int(moe_buf *b, int field, int64_t v) { return pb_key(b, field, PB_VARINT) | pb_varint(b, (uint64_t)v); }
static int pb_bytes(moe_buf *b, int field, const void *p, size_t n) {
    return pb_key(b, field, PB_LEN) | pb_varint(b, n) | (n ? moe_buf_append(b, p, n) : 0);
}
static int pb_str(moe_buf *b, int field, const char *s) { return pb_bytes(b, field, s, strlen(s)); }
static int pb_msg(moe_buf *b, int field, const moe_buf *m) { return pb_bytes(b, field, m->data, m->len); }

/* ---- the graph ----------------------------------------------------------- */

typedef struct og {
    moe_buf nodes;   /* GraphProto.node fields, encoded */
    moe_buf inits;   /* GraphProto.initializer fields */
    int fp16;        /* matrices stored as float16, each Cast to float */
    int count;       /* names handed out */
    int failed;      /* out of memory somewhere: checked once at the end */
} og;

typedef struct { char s[NAME]; } val;  /* the name of a value in the graph */

static val fresh(og *g, const char *what) {
    val v;
    snprintf(v.s, sizeof v.s, "%s_%d", what, g->count++);
    return v;
}
static val named(const char *fmt, int i) {
    val v;
    snprintf(v.s, sizeof v.s, fmt, i);
    return v;
}

/* Attributes, each appended to a as NodeProto.attribute (field 5). */
static void attr_int(og *g, moe_buf *a, const char *name, int64_t v) {
    moe_buf m = {0};
    g->failed |= pb_str(&m, 1, name) | pb_int(&m, 3, v) | pb_int(&m, 20, 2) | pb_msg(a, 5, &m);
    moe_buf_free(&m);
}
static void attr_ints(og *g, moe_buf *a, const char *name, int n, const int64_t *v) {
    moe_buf m = {0};
    g->failed |= pb_str(&m, 1, name);
    for (int i = 0; i < n; i++) g->failed |= pb_int(&m, 8, v[i]);
    g->failed |= pb_int(&m, 20, 7) | pb_msg(a, 5, &m);
    moe_buf_free(&m);
}

/* One node: op over the inputs in[] (NULL-terminated; "" an omitted
 * optional input); outputs out[nout] get fresh names unless out_name is
 * given (then the single output takes it). */
static void node(og *g, const char *op, moe_buf *attrs, const char *const *in, int nout, val *out,
                 const char *out_name) {
    moe_buf n = {0};
    val given = {{0}};
    if (out_name) snprintf(given.s, sizeof given.s, "%s", out_name);
    for (int i = 0; in[i]; i++) g->failed |= pb_str(&n, 1, in[i]);
    for (int i = 0; i < nout; i++) {
        out[i] = out_name ? given : fresh(g, op);
        g->failed |= pb_str(&n, 2, out[i].s);
    }
    val nm = fresh(g, "node");
    g->failed |= pb_str(&n, 3, nm.s) | pb_str(&n, 4, op);
    if (attrs) {
        g->failed |= moe_buf_append(&n, attrs->data, attrs->len);
        moe_buf_free(attrs);
    }
    g->failed |= pb_msg(&g->nodes, 1, &n);
    moe_buf_free(&n);
}
static val op_v(og *g, const char *op, moe_buf *attrs, const char *const *in) {
    val out;
    node(g, op, attrs, in, 1, &out, NULL);
    return out;
}
#define OP(g, op, ...) op_v(g, op, NULL, (const char *const[]){__VA_ARGS__, NULL})
#define OPA(g, op, attrs, ...) op_v(g, op, attrs, (const char *const[]){__VA_ARGS__, NULL})

/* An initializer of type dt, shape dims[ndim], raw little-endian bytes. */
static val init_raw(og *g, const char *name, int dt, int ndim, const int64_t *dims, const void *raw,
                    size_t bytes) {
    val v;
    if (name) snprintf(v.s, sizeof v.s, "%s", name);
    else v = fresh(g, "const");
    moe_buf t = {0};
    for (int i = 0; i < ndim; i++) g->failed |= pb_int(&t, 1, dims[i]);
    g->failed |= pb_int(&t, 2, dt) | pb_str(&t, 8, v.s) | pb_bytes(&t, 9, raw, bytes) | pb_msg(&g->inits, 5, &t);
    moe_buf_free(&t);
    return v;
}
static val c_i64(og *g, int n, const int64_t *v) { return init_raw(g, NULL, DT_INT64, 1, (int64_t[]){n}, v, 8 * (size_t)n); }
static val c_i64s(og *g, int64_t v) { return init_raw(g, NULL, DT_INT64, 0, NULL, &v, 8); }
static val c_f32(og *g, float v) { return init_raw(g, NULL, DT_FLOAT, 0, NULL, &v, 4); }
static val c_f64(og *g, double v) { return init_raw(g, NULL, DT_DOUBLE, 0, NULL, &v, 8); }
#define I64S(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / 8), (int64_t[]){__VA_ARGS__}

static val cast(og *g, val x, int to) {
    moe_buf a = {0};
    attr_int(g, &a, "to", to);
    return OPA(g, "Cast", &a, x.s);
}

/* A weight: float32, or float16 and a Cast to float (1-D tensors, the
 * norms, always float32, as in GGUF). data is [prod dims] row-major. */
static val weight(og *g, const char *name, const float *data, int ndim, const int64_t *dims) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    if (!g->fp16 || ndim == 1) return init_raw(g, name, DT_FLOAT, ndim, dims, data, n * 4);
    uint16_t *h = malloc(n * 2 + 2);
    if (!h) { g->failed = 1; return fresh(g, "oom"); }
    for (size_t i = 0; i < n; i++) h[i] = moe_ix_f32_to_f16(data[i]);
    val w = init_raw(g, name, DT_FLOAT16, ndim, dims, h, n * 2);
    free(h);
    return cast(g, w, DT_FLOAT);
}

/* W^T of batch stacked [rows, cols] matrices: [batch, cols, rows] (the
 * batch dimension left out when batch is 0), so that x W^T is a MatMul. */
static val weight_t(og *g, const char *name, const float *w, int64_t batch, int64_t rows, int64_t cols) {
    int64_t nb = batch ? batch : 1;
    float *t = malloc((size_t)(nb * rows * cols) * sizeof(float) + 1);
    if (!t) { g->failed = 1; return fresh(g, "oom"); }
    for (int64_t b = 0; b < nb; b++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) t[(b * cols + c) * rows + r] = w[(b * rows + r) * cols + c];
    val v = batch ? weight(g, name, t, 3, (int64_t[]){batch, cols, rows}) : weight(g, name, t, 2, (int64_t[]){cols, rows});
    free(t);
    return v;
}

/* Graph input or output (ValueInfoProto) of element type elem; dims are
 * names ("batch") or numbers ("64"). */
static int value_info(moe_buf *graph, int field, const char *name, int elem, int ndim, const char *const *dims) {
    moe_buf shape = {0}, tensor = {0}, type = {0}, vi = {0};
    int rc = 0;
    for (int i = 0; i < ndim; i++) {
        moe_buf d = {0};
        rc |= dims[i][0] >= '0' && dims[i][0] <= '9' ? pb_int(&d, 1, atoll(dims[i])) : pb_str(&d, 2, dims[i]);
        rc |= pb_msg(&shape, 1, &d);
        moe_buf_free(&d);
    }
    rc |= pb_int(&tensor, 1, elem) | pb_msg(&tensor, 2, &shape) | pb_msg(&type, 1, &tensor);
    rc |= pb_str(&vi, 1, name) | pb_msg(&vi, 2, &type) | pb_msg(graph, field, &vi);
    moe_buf_free(&shape); moe_buf_free(&tensor); moe_buf_free(&type); moe_buf_free(&vi);
    return rc;
}

/* ---- building blocks ----------------------------------------------------- */

typedef struct ex {
    og *g;
    const moe_model *m;
    moe_err *err;
    val ids_flat;      /* [N] token ids of the call */
    val cos, sin;      /* [batch, 1, seq, hd/2] */
    val allowed;       /* [batch, 1, 1, seq, total] bool: key visible to query */
    val neg;           /* a finite -inf for masked scores */
} ex;

static const float *param(const ex *x, const char *name) {
    const moe_tensor *t = moe_layout_find(&x->m->layout, name);
    return t ? x->m->params + t->offset : NULL;
}
static int has(const ex *x, const char *fmt, const char *prefix) {
    char name[NAME];
    snprintf(name, sizeof name, fmt, prefix);
    return moe_layout_find(&x->m->layout, name) != NULL;
}
/* The named tensor (name = prefix + suffix), transposed as weight_t does. */
static val wt(ex *x, const char *prefix, const char *suffix, int64_t batch, int64_t rows, int64_t cols) {
    char name[NAME];
    snprintf(name, sizeof name, "%s%s", prefix, suffix);
    const float *p = param(x, name);
    if (!p) { x->g->failed = 1; return fresh(x->g, "missing"); }
    return weight_t(x->g, name, p, batch, rows, cols);
}

static val reduce_axes(og *g, const char *op, val v, int64_t axis, int keep) {
    moe_buf a = {0};
    attr_int(g, &a, "keepdims", keep);
    if (!strcmp(op, "ReduceSum")) return OPA(g, op, &a, v.s, c_i64(g, I64S(axis)).s);  /* axes an input */
    attr_ints(g, &a, "axes", 1, &axis);
    return OPA(g, op, &a, v.s);
}

/* RMSNorm as moe_k_rmsnorm_forward: the mean square and its reciprocal root in
 * double, then (x r) w in float. */
static val rmsnorm(ex *x, val v, const char *wname) {
    og *g = x->g;
    const moe_tensor *t = moe_layout_find(&x->m->layout, wname);
    if (!t) { g->failed = 1; return v; }
    val w = weight(g, wname, x->m->params + t->offset, 1, t->shape);
    val d = cast(g, v, DT_DOUBLE);
    val ms = reduce_axes(g, "ReduceMean", OP(g, "Mul", d.s, d.s), -1, 1);
    double eps = (double)(float)x->m->cfg.norm_eps;
    val r = OP(g, "Div", c_f64(g, 1.0).s, OP(g, "Sqrt", OP(g, "Add", ms.s, c_f64(g, eps).s).s).s);
    return OP(g, "Mul", OP(g, "Mul", v.s, cast(g, r, DT_FLOAT).s).s, w.s);
}

/* Softmax of the last axis as moe_router_softmax: x - max in float, the
 * exponentials and their sum in double, the quotient rounded to float. */
static val softmax_double(og *g, val l) {
    val mx = reduce_axes(g, "ReduceMax", l, -1, 1);
    val e = OP(g, "Exp", cast(g, OP(g, "Sub", l.s, mx.s), DT_DOUBLE).s);
    val s = reduce_axes(g, "ReduceSum", e, -1, 1);
    return cast(g, OP(g, "Div", e.s, s.s), DT_FLOAT);
}

static val slice_last(og *g, val v, int64_t from, int64_t to) {
    return OP(g, "Slice", v.s, c_i64(g, I64S(from)).s, c_i64(g, I64S(to)).s, c_i64(g, I64S(-1)).s);
}

static val transpose(og *g, val v, int n, const int64_t *perm) {
    moe_buf a = {0};
    attr_ints(g, &a, "perm", n, perm);
    return OPA(g, "Transpose", &a, v.s);
}

static val unsqueeze(og *g, val v, int n, const int64_t *axes) {
    return OP(g, "Unsqueeze", v.s, c_i64(g, n, axes).s);
}

/* RoPE of moe (moe_k_rope): rotate-half pairs (i, i + hd/2) of each head of
 * v [batch, heads, seq, hd]. */
static val rope(ex *x, val v, int64_t hd) {
    og *g = x->g;
    val a = slice_last(g, v, 0, hd / 2), b = slice_last(g, v, hd / 2, hd);
    val lo = OP(g, "Sub", OP(g, "Mul", a.s, x->cos.s).s, OP(g, "Mul", b.s, x->sin.s).s);
    val hi = OP(g, "Add", OP(g, "Mul", b.s, x->cos.s).s, OP(g, "Mul", a.s, x->sin.s).s);
    moe_buf at = {0};
    attr_int(g, &at, "axis", -1);
    return OPA(g, "Concat", &at, lo.s, hi.s);
}

/* SwiGLU of n stacked experts on x3 [1, N, D]: [n, N, D] (n = 0: a dense
 * FFN's [N, D] on x [N, D]). Weights prefix + gate_proj/up_proj/down_proj. */
static val swiglu(ex *x, val xin, const char *prefix, int64_t n, int64_t F) {
    og *g = x->g;
    int64_t D = x->m->cfg.hidden;
    val w1 = wt(x, prefix, ".gate_proj.weight", n, F, D), w3 = wt(x, prefix, ".up_proj.weight", n, F, D);
    val w2 = wt(x, prefix, ".down_proj.weight", n, D, F);
    val h1 = OP(g, "MatMul", xin.s, w1.s), h3 = OP(g, "MatMul", xin.s, w3.s);
    val a = OP(g, "Mul", OP(g, "Mul", h1.s, OP(g, "Sigmoid", h1.s).s).s, h3.s);
    return OP(g, "MatMul", a.s, w2.s);
}

/* ---- routers: gates [N, E] ---------------------------------------------- */

typedef struct route_cfg {
    const char *router;
    int64_t E, k;
    int renorm;        /* selected gates divided by their sum */
    double top_p, eps; /* TopP threshold; SparseMixer's jitter_eps */
    int sigmoid;       /* TopK scoring_func "sigmoid" (always renormalised) */
    double scale;      /* TopK routed_scaling_factor */
    const float *bias; /* [E] TopK aux_free_bias: the selection bias, else NULL */
} route_cfg;

static val zeros_like(og *g, val v) { return OP(g, "ConstantOfShape", OP(g, "Shape", v.s).s); }

static val scatter(og *g, val into, val idx, val upd, int64_t axis) {
    moe_buf a = {0};
    attr_int(g, &a, "axis", axis);
    return OPA(g, "ScatterElements", &a, into.s, idx.s, upd.s);
}

static void topk(og *g, val v, val k, val out[2]) {
    moe_buf a = {0};
    attr_int(g, &a, "axis", -1);
    attr_int(g, &a, "largest", 1);
    attr_int(g, &a, "sorted", 1);
    node(g, "TopK", &a, (const char *const[]){v.s, k.s, NULL}, 2, out, NULL);
}

/* TopK (topk.c): the scores (softmax, or each logit's sigmoid in double)
 * of the k experts with the largest score (plus the selection bias in
 * double with aux_free_bias; ties to the lower index, as TopK's), at least
 * 1e-30, divided by their double sum when renormalised, times the routed
 * scaling factor (in double). */
static val gates_topk(og *g, val l, const route_cfg *r) {
    val p = r->sigmoid ? cast(g, OP(g, "Sigmoid", cast(g, l, DT_DOUBLE).s), DT_FLOAT) : softmax_double(g, l);
    val tk[2], k = c_i64(g, I64S(r->k)), sel;
    if (r->bias) {
        val b = init_raw(g, NULL, DT_FLOAT, 1, (int64_t[]){r->E}, r->bias, (size_t)r->E * sizeof(float));
        topk(g, OP(g, "Add", cast(g, p, DT_DOUBLE).s, cast(g, b, DT_DOUBLE).s), k, tk);
        moe_buf a = {0};
        attr_int(g, &a, "axis", -1);
        sel = OPA(g, "GatherElements", &a, p.s, tk[1].s);
    } else {
        topk(g, p, k, tk);
        sel = tk[0];
    }
    sel = OP(g, "Max", sel.s, c_f32(g, 1e-30f).s);
    if (r->renorm || r->sigmoid) {
        val d = cast(g, sel, DT_DOUBLE);
        val sum = OP(g, "Max", reduce_axes(g, "ReduceSum", d, -1, 1).s, c_f64(g, 1e-20).s);
        sel = cast(g, OP(g, "Div", d.s, sum.s), DT_FLOAT);
    }
    if (r->scale != 1.0) sel = cast(g, OP(g, "Mul", cast(g, sel, DT_DOUBLE).s, c_f64(g, r->scale).s), DT_FLOAT);
    return scatter(g, zeros_like(g, l), tk[1], sel, 1);
}

/* TopP (topp.c): experts by falling probability while the double sum of
 * those before stays under top_p; gate = p. */
static val gates_topp(og *g, val l, const route_cfg *r) {
    val p = softmax_double(g, l), tk[2];
    topk(g, p, c_i64(g, I64S(r->E)), tk);
    moe_buf a = {0};
    attr_int(g, &a, "exclusive", 1);
    val before = OPA(g, "CumSum", &a, cast(g, tk[0], DT_DOUBLE).s, c_i64s(g, -1).s);
    val keep = OP(g, "Less", before.s, c_f64(g, r->top_p).s);
    val sel = OP(g, "Where", keep.s, OP(g, "Max", tk[0].s, c_f32(g, 1e-30f).s).s, c_f32(g, 0.0f).s);
    return scatter(g, zeros_like(g, l), tk[1], sel, 1);
}

/* SparseMixer-v2 at inference (sparsemixer.c, not training): k picks; each
 * takes the largest remaining logit, its candidates are the remaining
 * experts within 2 eps of it (relative), gate = their softmax at the pick. */
static val gates_sparsemixer(og *g, val z, const route_cfg *r) {
    val gates = zeros_like(g, z), zd = cast(g, z, DT_DOUBLE);
    val inf = c_f32(g, -INFINITY), zero_d = c_f64(g, 0.0);
    for (int64_t j = 0; j < r->k; j++) {
        val taken = OP(g, "Greater", gates.s, c_f32(g, 0.0f).s);
        val zm = OP(g, "Where", taken.s, inf.s, z.s);
        moe_buf a = {0};
        attr_int(g, &a, "axis", -1);
        attr_int(g, &a, "keepdims", 1);
        val best = OPA(g, "ArgMax", &a, zm.s);
        val mx = cast(g, reduce_axes(g, "ReduceMax", zm, -1, 1), DT_DOUBLE);
        val ratio = OP(g, "Div", OP(g, "Sub", mx.s, zd.s).s, OP(g, "Max", OP(g, "Abs", zd.s).s, mx.s).s);
        val far = OP(g, "Greater", ratio.s, c_f64(g, 2.0 * r->eps).s);
        val cand = OP(g, "And", OP(g, "Not", taken.s).s, OP(g, "Not", far.s).s);
        val e = OP(g, "Where", cand.s, OP(g, "Exp", OP(g, "Sub", zd.s, mx.s).s).s, zero_d.s);
        val pi = cast(g, OP(g, "Div", e.s, reduce_axes(g, "ReduceSum", e, -1, 1).s), DT_FLOAT);
        moe_buf b = {0};
        attr_int(g, &b, "axis", 1);
        val gv = OPA(g, "GatherElements", &b, pi.s, best.s);
        gates = scatter(g, gates, best, OP(g, "Max", gv.s, c_f32(g, 1e-30f).s), 1);
    }
    return gates;
}

/* Expert choice (expert_choice.c) over the N tokens of the call: expert e
 * takes the C = clamp(floor(N k / E), 1, N) tokens of largest p[., e]
 * (ties to the earlier token), gate = p. */
static val gates_expert_choice(og *g, val l, const route_cfg *r) {
    val p = softmax_double(g, l);
    val pt = transpose(g, p, I64S(1, 0));  /* [E, N] */
    moe_buf a = {0};
    attr_int(g, &a, "start", 0);
    attr_int(g, &a, "end", 1);
    val n = OPA(g, "Shape", &a, p.s);       /* [1] */
    val c = OP(g, "Div", OP(g, "Mul", n.s, c_i64(g, I64S(r->k)).s).s, c_i64(g, I64S(r->E)).s);
    c = OP(g, "Max", OP(g, "Min", c.s, n.s).s, c_i64(g, I64S(1)).s);
    val tk[2];
    topk(g, pt, c, tk);
    val sel = OP(g, "Max", tk[0].s, c_f32(g, 1e-30f).s);
    return transpose(g, scatter(g, zeros_like(g, pt), tk[1], sel, 1), I64S(1, 0));
}

/* A table of gates [V, E] by token id (hash, learned_hash: the routing of
 * a token depends on its id alone), computed by the model's own router of
 * block `layer`, with its state. */
static val gates_by_token(ex *x, const char *prefix, int layer, int64_t E) {
    og *g = x->g;
    int64_t V = x->m->cfg.vocab_size;
    moe_router *r = moe_model_router(x->m, layer, 0);
    float *gates = moe_malloc((size_t)(V * E) * sizeof(float), x->err);
    int *tok = moe_malloc((size_t)V * sizeof(int), x->err);
    char name[NAME];
    snprintf(name, sizeof name, "%s.router.token_weight", prefix);
    const float *table = param(x, name);
    moe_routing_state rs = {.lambda = 0};
    double aux;
    int rc = !gates || !tok || !r;
    for (int64_t v = 0; !rc && v < V; v++) tok[v] = (int)v;
    moe_ffn_ctx ctx = {.tokens = tok, .B = 1, .T = (size_t)V, .training = 0, .loss_scale = 1.0f, .rs = &rs};
    if (!rc) rc = r->ops->route(r, gates, table, (size_t)V, &ctx, &aux, x->err);
    val out = {{0}};
    if (!rc) {
        snprintf(name, sizeof name, "%s.router.gates_by_token", prefix);
        out = OP(g, "Gather", init_raw(g, name, DT_FLOAT, 2, (int64_t[]){V, E}, gates,
                                       (size_t)(V * E) * sizeof(float)).s, x->ids_flat.s);
    } else {
        g->failed = 1;
    }
    free(gates);
    free(tok);
    return out;
}

/* ---- feed-forward layers ------------------------------------------------- */

/* MoE++'s zero-computation experts (layer.c zc_forward) added to y [N, D]:
 * the copy experts' gates (columns c0.. of all [N, Et]) times x, and each
 * constant expert's gate times a1 x + a2 v, a = softmax(Wk x) (double).
 * Zero experts add nothing. */
static val zero_computation(ex *x, val y, val xv, val all, const char *prefix, int64_t c0, int64_t C, int64_t K) {
    og *g = x->g;
    int64_t D = x->m->cfg.hidden;
    if (C > 0) {
        val gc = reduce_axes(g, "ReduceSum", slice_last(g, all, c0, c0 + C), -1, 1);  /* [N, 1] */
        y = OP(g, "Add", y.s, OP(g, "Mul", gc.s, xv.s).s);
    }
    if (K == 0) return y;
    char name[NAME];
    snprintf(name, sizeof name, "%s.const_experts.vector", prefix);
    const float *v = param(x, name);
    if (!v) { g->failed = 1; return y; }
    val vk = weight(g, name, v, 2, (int64_t[]){K, D});                                     /* [K, D] */
    val z = OP(g, "MatMul", xv.s, wt(x, prefix, ".const_experts.weight", 0, K * 2, D).s);  /* [N, 2K] */
    val a = softmax_double(g, OP(g, "Reshape", z.s, c_i64(g, I64S(-1, K, 2)).s));         /* [N, K, 2] */
    val x3 = unsqueeze(g, xv, I64S(1));                                                    /* [N, 1, D] */
    val term = OP(g, "Add", OP(g, "Mul", slice_last(g, a, 0, 1).s, x3.s).s,
                  OP(g, "Mul", slice_last(g, a, 1, 2).s, vk.s).s);                         /* [N, K, D] */
    val gk = unsqueeze(g, slice_last(g, all, c0 + C, c0 + C + K), I64S(2));                /* [N, K, 1] */
    return OP(g, "Add", y.s, reduce_axes(g, "ReduceSum", OP(g, "Mul", gk.s, term.s), 1, 0).s);
}

/* The selection bias of block layer's TopK router (aux_free_bias), or NULL. */
static const float *selection_bias(const ex *x, int layer, int64_t E) {
    moe_router *r = moe_model_router(x->m, layer, 0);
    moe_router_state st[4];
    size_t n = r && r->ops->state ? r->ops->state(r, st, 4) : 0;
    for (size_t i = 0; i < n && i < 4; i++)
        if (!strcmp(st[i].name, "expert_bias") && st[i].n == (size_t)E) return st[i].data;
    return NULL;
}

/* One MoE layer (layer.c) of block `layer` on x [N, D]: [N, D]. cfg is the
 * layer's config (CartesianMoE's sub-layers: theirs). */
static val moe_layer(ex *x, val xv, const char *prefix, int layer, const moe_config *cfg) {
    og *g = x->g;
    int64_t D = cfg->hidden, G = cfg->granularity, E = cfg->n_experts * G, Fe = cfg->ffn_dim / G;
    int64_t S = cfg->n_shared_experts;
    const moe_router_kind *kind = moe_router_kind_find(cfg->router);
    moe_gate_rule rule = kind ? kind->gates : MOE_GATES_NONE;
    /* TopK's near-dense warm-up holds at inference too while step 0 < k_warm_steps */
    int64_t k = cfg->k_warm > 0 && cfg->k_warm_steps > 0 && rule == MOE_GATES_TOPK ? cfg->k_warm * G
                                                                                   : cfg->top_k * G;
    /* MoE++: the router chooses among Et = E + zero + copy + constant experts */
    int64_t Z = cfg->n_zero_experts, C = cfg->n_copy_experts, K = cfg->n_const_experts, Et = E + Z + C + K;
    route_cfg r = {cfg->router, Et, k, cfg->norm_topk_prob == 1 || (cfg->norm_topk_prob == MOE_RENORM_IF_SEVERAL && k > 1),
                   cfg->top_p, cfg->jitter_eps, !strcmp(cfg->scoring_func, "sigmoid"), cfg->routed_scaling_factor,
                   NULL};
    if (cfg->aux_free_bias && !(r.bias = selection_bias(x, layer, Et))) {
        g->failed = 1;
        moe_errf(x->err, "layer %d: the TopK router holds no expert_bias of %lld values", layer, (long long)Et);
    }
    if (rule == MOE_GATES_NONE) {
        g->failed = 1;
        moe_errf(x->err, "router \"%s\" has no ONNX form", cfg->router);
        return xv;
    }
    char pre[NAME];
    val gates;
    if (rule == MOE_GATES_BY_TOKEN) {
        gates = gates_by_token(x, prefix, layer, E);
    } else {
        val l = OP(g, "MatMul", xv.s, wt(x, prefix, ".router.weight", 0, Et, D).s);
        gates = rule == MOE_GATES_RELU            ? OP(g, "Relu", l.s)
              : rule == MOE_GATES_TOPP            ? gates_topp(g, l, &r)
              : rule == MOE_GATES_SPARSEMIXER     ? gates_sparsemixer(g, l, &r)
              : rule == MOE_GATES_EXPERT_CHOICE   ? gates_expert_choice(g, l, &r)
                                                  : gates_topk(g, l, &r);
    }
    val all = gates;  /* [N, Et] */
    if (Et > E) gates = slice_last(g, all, 0, E);
    val x3 = unsqueeze(g, xv, I64S(0));
    snprintf(pre, sizeof pre, "%s.experts", prefix);
    val ye = swiglu(x, x3, pre, E, Fe);                                  /* [E, N, D] */
    val gt = unsqueeze(g, transpose(g, gates, I64S(1, 0)), I64S(2));     /* [E, N, 1] */
    val y = reduce_axes(g, "ReduceSum", OP(g, "Mul", ye.s, gt.s), 0, 0);  /* [N, D] */
    if (S > 0) {
        snprintf(pre, sizeof pre, "%s.shared_experts", prefix);
        val s = reduce_axes(g, "ReduceSum", swiglu(x, x3, pre, S, Fe), 0, 0);
        if (cfg->shared_gate) {  /* c = softmax(x Wc^T + bc): y = c0 r + c1 s */
            char name[NAME];
            snprintf(name, sizeof name, "%s.shared_gate.bias", prefix);
            const float *bc = param(x, name);
            if (!bc) { g->failed = 1; return y; }
            val z = OP(g, "Add", OP(g, "MatMul", xv.s, wt(x, prefix, ".shared_gate.weight", 0, 2, D).s).s,
                       weight(g, name, bc, 1, (int64_t[]){2}).s);
            val c = softmax_double(g, z);
            y = OP(g, "Add", OP(g, "Mul", slice_last(g, c, 0, 1).s, y.s).s, OP(g, "Mul", slice_last(g, c, 1, 2).s, s.s).s);
        } else {
            y = OP(g, "Add", y.s, s.s);
        }
    }
    return Et > E ? zero_computation(x, y, xv, all, prefix, E + Z, C, K) : y;
}

/* Lory (lory.c) on x [batch, seq, D], as moe runs it over the tokens of a
 * call: each sequence cut into segments of `seg` tokens (the last may be
 * shorter); segment s runs one SwiGLU FFN of merged matrices sum_e w_e W_e,
 * w = softmax(Wr mean(x over segment s - 1)), the first segment routed by
 * its own mean. The sequence is padded with zero rows to whole segments
 * (they add nothing to the sums and are cut from the output). */
static val lory_layer(ex *x, val xv, const char *prefix) {
    og *g = x->g;
    const moe_config *c = &x->m->cfg;
    int64_t D = c->hidden, F = c->ffn_dim, E = c->n_experts, seg = c->lory_segment;
    moe_buf a = {0};
    attr_int(g, &a, "start", 1);
    attr_int(g, &a, "end", 2);
    val S = OPA(g, "Shape", &a, xv.s);                                     /* [1] */
    val cseg = c_i64(g, I64S(seg));
    val nseg = OP(g, "Div", OP(g, "Add", S.s, c_i64(g, I64S(seg - 1)).s).s, cseg.s);
    val pad = OP(g, "Sub", OP(g, "Mul", nseg.s, cseg.s).s, S.s);
    moe_buf ca = {0};
    attr_int(g, &ca, "axis", 0);
    val pads = OPA(g, "Concat", &ca, c_i64(g, I64S(0, 0, 0, 0)).s, pad.s, c_i64(g, I64S(0)).s);
    val xp = OP(g, "Pad", xv.s, pads.s);                                    /* [B, nseg*seg, D] */
    val x4 = OP(g, "Reshape", xp.s, c_i64(g, I64S(0, -1, seg, D)).s);       /* [B, nseg, seg, D] */
    /* each segment's mean, summed in double as moe does, over its real rows */
    val sum = reduce_axes(g, "ReduceSum", cast(g, x4, DT_DOUBLE), 2, 0);   /* [B, nseg, D] */
    val start = OP(g, "Mul", OP(g, "Range", c_i64s(g, 0).s, OP(g, "Squeeze", nseg.s).s, c_i64s(g, 1).s).s, cseg.s);
    val count = OP(g, "Min", OP(g, "Sub", S.s, start.s).s, cseg.s);        /* [nseg] */
    val mean = cast(g, OP(g, "Div", sum.s, unsqueeze(g, cast(g, count, DT_DOUBLE), I64S(1)).s), DT_FLOAT);
    /* segment s is routed by the mean of s - 1, the first by its own */
    moe_buf c1 = {0};
    attr_int(g, &c1, "axis", 1);
    val prev = OP(g, "Slice", mean.s, c_i64(g, I64S(0)).s, OP(g, "Sub", nseg.s, c_i64(g, I64S(1)).s).s,
                  c_i64(g, I64S(1)).s);
    val mu = OPA(g, "Concat", &c1, OP(g, "Slice", mean.s, c_i64(g, I64S(0)).s, c_i64(g, I64S(1)).s,
                                       c_i64(g, I64S(1)).s).s, prev.s);
    val w = softmax_double(g, OP(g, "MatMul", mu.s, wt(x, prefix, ".router.weight", 0, E, D).s));  /* [B, nseg, E] */
    /* merged matrices [B, nseg, ...] = w [B, nseg, E] x W [E, ...], as x W^T */
    char name[NAME];
    val m[3];
    const char *suffix[3] = {".experts.gate_proj.weight", ".experts.up_proj.weight", ".experts.down_proj.weight"};
    for (int i = 0; i < 3; i++) {
        int64_t rows = i < 2 ? F : D, cols = i < 2 ? D : F;
        snprintf(name, sizeof name, "%s%s", prefix, suffix[i]);
        const float *p = param(x, name);
        if (!p) { g->failed = 1; return xv; }
        /* W_e^T of each expert, flattened: [E, cols * rows] */
        val t = OP(g, "Reshape", weight_t(g, name, p, E, rows, cols).s, c_i64(g, I64S(E, rows * cols)).s);
        m[i] = OP(g, "Reshape", OP(g, "MatMul", w.s, t.s).s, c_i64(g, I64S(0, -1, cols, rows)).s);
    }
    val h1 = OP(g, "MatMul", x4.s, m[0].s), h3 = OP(g, "MatMul", x4.s, m[1].s);  /* [B, nseg, seg, F] */
    val act = OP(g, "Mul", OP(g, "Mul", h1.s, OP(g, "Sigmoid", h1.s).s).s, h3.s);
    val y = OP(g, "Reshape", OP(g, "MatMul", act.s, m[2].s).s, c_i64(g, I64S(0, -1, D)).s);
    return OP(g, "Slice", y.s, c_i64(g, I64S(0)).s, S.s, c_i64(g, I64S(1)).s);
}

/* The FFN slot of block l on n [batch, seq, D] (h: the residual stream it
 * was normed from, for CartesianMoE): [batch, seq, D]. */
static val ffn(ex *x, int l, val n, val h) {
    og *g = x->g;
    const moe_config *c = &x->m->cfg;
    int64_t D = c->hidden;
    char pre[PREFIX];
    snprintf(pre, sizeof pre, "model.layers.%d.mlp", l);
    if (has(x, "%s.gate_proj.weight", pre)) return swiglu(x, n, pre, 0, c->ffn_dim);
    const moe_ffn_kind *kind = moe_ffn_kind_find(c->ffn);
    if (kind && kind->merges_experts) return lory_layer(x, n, pre);
    val shape = OP(g, "Shape", n.s);
    val x2 = OP(g, "Reshape", n.s, c_i64(g, I64S(-1, D)).s), y;
    if (has(x, "%s.norm_b.weight", pre)) {  /* CartesianMoE (cartesian.c) */
        moe_config sub = *c;
        strcpy(sub.ffn, "moe");
        strcpy(sub.router, "topk");
        sub.ffn_dim = c->ffn_dim / 2;
        sub.norm_topk_prob = MOE_RENORM_IF_SEVERAL;
        sub.n_shared_experts = 1;
        sub.shared_gate = 1;
        char sp[NAME], nb[NAME];
        snprintf(sp, sizeof sp, "%s.layer_a", pre);
        val a = moe_layer(x, x2, sp, l, &sub);
        val h1 = OP(g, "Add", OP(g, "Reshape", h.s, c_i64(g, I64S(-1, D)).s).s, a.s);
        snprintf(nb, sizeof nb, "%s.norm_b.weight", pre);
        snprintf(sp, sizeof sp, "%s.layer_b", pre);
        val b = moe_layer(x, rmsnorm(x, h1, nb), sp, l, &sub);
        y = OP(g, "Add", a.s, b.s);
    } else {
        y = moe_layer(x, x2, pre, l, c);
    }
    return OP(g, "Reshape", y.s, shape.s);
}

/* ---- the decoder --------------------------------------------------------- */

/* Block l on h [batch, seq, D]: the next residual stream. */
static val block(ex *x, int l, val h) {
    og *g = x->g;
    const moe_config *c = &x->m->cfg;
    int64_t D = c->hidden, H = c->n_heads, KV = c->n_kv_heads, hd = D / H;
    char pre[PREFIX], name[NAME];
    snprintf(pre, sizeof pre, "model.layers.%d", l);
    snprintf(name, sizeof name, "%s.input_layernorm.weight", pre);
    val n1 = rmsnorm(x, h, name);
    val q = OP(g, "MatMul", n1.s, wt(x, pre, ".self_attn.q_proj.weight", 0, H * hd, D).s);
    val k = OP(g, "MatMul", n1.s, wt(x, pre, ".self_attn.k_proj.weight", 0, KV * hd, D).s);
    val v = OP(g, "MatMul", n1.s, wt(x, pre, ".self_attn.v_proj.weight", 0, KV * hd, D).s);
    /* [batch, seq, heads * hd] -> [batch, heads, seq, hd] */
    q = transpose(g, OP(g, "Reshape", q.s, c_i64(g, I64S(0, 0, H, hd)).s), I64S(0, 2, 1, 3));
    k = transpose(g, OP(g, "Reshape", k.s, c_i64(g, I64S(0, 0, KV, hd)).s), I64S(0, 2, 1, 3));
    v = transpose(g, OP(g, "Reshape", v.s, c_i64(g, I64S(0, 0, KV, hd)).s), I64S(0, 2, 1, 3));
    q = rope(x, q, hd);
    k = rope(x, k, hd);
    moe_buf a2 = {0}, a3 = {0};
    attr_int(g, &a2, "axis", 2);
    attr_int(g, &a3, "axis", 2);
    val pk = named("past_key_values.%d.key", l), pv = named("past_key_values.%d.value", l);
    val ks = named("present.%d.key", l), vs = named("present.%d.value", l);
    node(g, "Concat", &a2, (const char *const[]){pk.s, k.s, NULL}, 1, &ks, ks.s);
    node(g, "Concat", &a3, (const char *const[]){pv.s, v.s, NULL}, 1, &vs, vs.s);
    /* grouped-query attention: q [batch, KV, H/KV, seq, hd] against
     * k, v [batch, KV, 1, total, hd] */
    val q5 = OP(g, "Reshape", q.s, c_i64(g, I64S(0, KV, H / KV, -1, hd)).s);
    val k5 = transpose(g, unsqueeze(g, ks, I64S(2)), I64S(0, 1, 2, 4, 3));
    val s = OP(g, "Mul", OP(g, "MatMul", q5.s, k5.s).s, c_f32(g, 1.0f / sqrtf((float)hd)).s);
    moe_buf sa = {0};
    attr_int(g, &sa, "axis", -1);
    val p = OPA(g, "Softmax", &sa, OP(g, "Where", x->allowed.s, s.s, x->neg.s).s);
    val o = OP(g, "MatMul", p.s, unsqueeze(g, vs, I64S(2)).s);  /* [batch, KV, H/KV, seq, hd] */
    o = transpose(g, OP(g, "Reshape", o.s, c_i64(g, I64S(0, H, -1, hd)).s), I64S(0, 2, 1, 3));
    o = OP(g, "Reshape", o.s, c_i64(g, I64S(0, 0, H * hd)).s);
    val hm = OP(g, "Add", h.s, OP(g, "MatMul", o.s, wt(x, pre, ".self_attn.o_proj.weight", 0, D, H * hd).s).s);
    snprintf(name, sizeof name, "%s.post_attention_layernorm.weight", pre);
    val y = ffn(x, l, rmsnorm(x, hm, name), hm);
    return OP(g, "Add", y.s, hm.s);
}

/* RoPE tables by position (moe_k_rope_tables: angles in double, so the graph
 * gathers moe's own values) and the attention mask. */
static void prologue(ex *x) {
    og *g = x->g;
    const moe_config *c = &x->m->cfg;
    int64_t hd = c->hidden / c->n_heads, half = hd / 2, T = c->max_seq_len;
    float *cs = malloc((size_t)(T * half) * 2 * sizeof(float) + 1);
    if (!cs) { g->failed = 1; return; }
    moe_k_rope_tables(cs, cs + T * half, (size_t)T, (size_t)hd, c->rope_theta);
    val ct = init_raw(g, "rope.cos", DT_FLOAT, 2, (int64_t[]){T, half}, cs, (size_t)(T * half) * 4);
    val st = init_raw(g, "rope.sin", DT_FLOAT, 2, (int64_t[]){T, half}, cs + T * half, (size_t)(T * half) * 4);
    free(cs);
    x->cos = unsqueeze(g, OP(g, "Gather", ct.s, "position_ids"), I64S(1));
    x->sin = unsqueeze(g, OP(g, "Gather", st.s, "position_ids"), I64S(1));
    x->ids_flat = OP(g, "Reshape", "input_ids", c_i64(g, I64S(-1)).s);
    /* query i (at index past + i of the sequence) sees key j <= past + i
     * whose attention_mask is 1 */
    moe_buf a = {0}, b = {0};
    attr_int(g, &a, "start", 1);
    attr_int(g, &a, "end", 2);
    attr_int(g, &b, "start", 2);
    attr_int(g, &b, "end", 3);
    val seq = OP(g, "Squeeze", OPA(g, "Shape", &a, "input_ids").s);
    val past = OP(g, "Squeeze", OPA(g, "Shape", &b, "past_key_values.0.key").s);
    val total = OP(g, "Add", past.s, seq.s), one = c_i64s(g, 1);
    val qpos = unsqueeze(g, OP(g, "Range", past.s, total.s, one.s), I64S(1));  /* [seq, 1] */
    val kpos = OP(g, "Range", c_i64s(g, 0).s, total.s, one.s);                 /* [total] */
    val causal = OP(g, "LessOrEqual", kpos.s, qpos.s);                          /* [seq, total] */
    val am = unsqueeze(g, cast(g, (val){"attention_mask"}, DT_BOOL), I64S(1, 2, 3));  /* [batch,1,1,1,total] */
    x->allowed = OP(g, "And", causal.s, am.s);
    x->neg = c_f32(g, -3.0e38f);
}

static int graph_io(moe_buf *gr, const moe_config *c) {
    char hd[24], kv[24], V[24];
    snprintf(hd, sizeof hd, "%d", c->hidden / c->n_heads);
    snprintf(kv, sizeof kv, "%d", c->n_kv_heads);
    snprintf(V, sizeof V, "%d", c->vocab_size);
    int rc = value_info(gr, 11, "input_ids", DT_INT64, 2, (const char *const[]){"batch_size", "sequence_length"});
    rc |= value_info(gr, 11, "attention_mask", DT_INT64, 2, (const char *const[]){"batch_size", "total_sequence_length"});
    rc |= value_info(gr, 11, "position_ids", DT_INT64, 2, (const char *const[]){"batch_size", "sequence_length"});
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < 2; i++) {
            val n = named(i ? "past_key_values.%d.value" : "past_key_values.%d.key", l);
            rc |= value_info(gr, 11, n.s, DT_FLOAT, 4, (const char *const[]){"batch_size", kv, "past_sequence_length", hd});
        }
    rc |= value_info(gr, 12, "logits", DT_FLOAT, 3, (const char *const[]){"batch_size", "sequence_length", V});
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < 2; i++) {
            val n = named(i ? "present.%d.value" : "present.%d.key", l);
            rc |= value_info(gr, 12, n.s, DT_FLOAT, 4, (const char *const[]){"batch_size", kv, "total_sequence_length", hd});
        }
    return rc;
}

/* ModelProto bytes of model m. */
static int onnx_model(const moe_model *m, int fp16, moe_buf *out, moe_err *err) {
    og g = {.fp16 = fp16};
    ex x = {.g = &g, .m = m, .err = err};
    err->msg[0] = '\0';  /* a step that fails says why, else it was memory */
    const moe_config *c = &m->cfg;
    int64_t D = c->hidden, V = c->vocab_size;
    prologue(&x);
    val embed = weight(&g, "model.embed_tokens.weight", m->embed, 2, (int64_t[]){V, D});
    val h = OP(&g, "Gather", embed.s, "input_ids");
    for (int l = 0; l < c->n_layers && !g.failed; l++) h = block(&x, l, h);
    val nf = rmsnorm(&x, h, "model.norm.weight");
    val lo = named("logits", 0);
    node(&g, "MatMul", NULL, (const char *const[]){nf.s, weight_t(&g, "lm_head.weight", m->lm_head, 0, V, D).s, NULL},
         1, &lo, "logits");
    moe_buf gr = {0};
    int rc = g.failed;
    if (!rc) rc = moe_buf_append(&gr, g.nodes.data, g.nodes.len) | pb_str(&gr, 2, "moe") |
                  moe_buf_append(&gr, g.inits.data, g.inits.len) | graph_io(&gr, c);
    moe_buf_free(&g.nodes);
    moe_buf_free(&g.inits);
    moe_buf op = {0};
    if (!rc) rc = pb_int(out, 1, 8) | pb_str(out, 2, "moe") | pb_str(out, 3, MOE_VERSION) | pb_msg(out, 7, &gr) |
                  pb_str(&op, 1, "") | pb_int(&op, 2, 17) | pb_msg(out, 8, &op);
    moe_buf_free(&gr);
    moe_buf_free(&op);
    if (rc && !err->msg[0]) moe_errf(err, "out of memory building the ONNX graph");
    return rc ? -1 : 0;
}

/* config.json: the shape in transformers' key names, and moe's own config.
 * model_type "llama" names the graph's interface, not its maths: runners of
 * ONNX decoders (Transformers.js, Optimum) pick how to feed a graph by
 * model_type from a closed list, and Llama's is these inputs and outputs;
 * what the layers compute, routing included, is all inside model.onnx. */
static int config_json(const moe_model *m, const moe_tokenizer *tok, int fp16, moe_buf *o) {
    const moe_config *c = &m->cfg;
    uint32_t eot = moe_tokenizer_eot(tok);
    int rc = moe_buf_printf(o, "{\n  \"model_type\": \"llama\",\n"
                            "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
                            "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                            "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
                            "  \"max_position_embeddings\": %d,\n  \"bos_token_id\": %u,\n  \"eos_token_id\": %u,\n"
                            "  \"tie_word_embeddings\": false,\n  \"use_cache\": true,\n  \"torch_dtype\": \"%s\",\n"
                            "  \"rms_norm_eps\": ",
                            c->vocab_size, c->hidden, c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                            c->hidden / c->n_heads, c->max_seq_len, eot, eot, fp16 ? "float16" : "float32");
    rc |= moe_json_write_double(o, c->norm_eps);
    rc |= moe_buf_printf(o, ",\n  \"rope_theta\": ");
    rc |= moe_json_write_double(o, c->rope_theta);
    rc |= moe_buf_printf(o, ",\n  \"moe_config\": ");
    rc |= moe_config_to_json(c, o);
    rc |= moe_buf_printf(o, "}\n");
    return rc ? -1 : 0;
}

static int write_in(const char *dir, const char *name, const moe_buf *b, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/%s", dir, name)) return -1;
    return moe_write_file_atomic(path, b->data, b->len, err);
}

int moe_export_onnx(const moe_model *m, const moe_tokenizer *tok, const char *dir, moe_st_dtype type, moe_err *err) {
    if (type != MOE_ST_F32 && type != MOE_ST_F16)
        return moe_errf(err, "ONNX weights: expected type f32 or f16, found %s", type == MOE_ST_BF16 ? "bf16" : "another");
    const char *regex;
    moe_ix_vocab v;
    if (moe_ix_pretok_names(tok, NULL, &regex, err) || moe_ix_vocab_make(tok, (uint32_t)m->cfg.vocab_size, &v, err))
        return -1;
    /* protobuf messages are limited to 2 GiB (larger models need external
     * data, which is not written): refused before anything is built */
    double bytes = (double)m->n_params * (type == MOE_ST_F16 ? 2.0 : 4.0);
    if (bytes >= 0x1p31) {
        moe_ix_vocab_free(&v);
        return moe_errf(err, "the ONNX graph would hold %.2f GB of weights; protobuf allows 2 GiB (external "
                        "data is not written)%s", bytes / 1e9, type == MOE_ST_F16 ? "" : ": try --type f16");
    }
    moe_buf b = {0};
    int rc = moe_mkdirs(dir, err) || onnx_model(m, type == MOE_ST_F16, &b, err);
    if (!rc && b.len >= (size_t)1 << 31)
        rc = moe_errf(err, "the ONNX graph would be %.2f GB; protobuf allows 2 GiB (external data is not "
                      "written)", (double)b.len / 1e9);
    if (!rc) rc = write_in(dir, "model.onnx", &b, err);
    b.len = 0;
    if (!rc) rc = config_json(m, tok, type == MOE_ST_F16, &b) ? moe_errf(err, "out of memory") : write_in(dir, "config.json", &b, err);
    if (!rc) rc = moe_ix_tokenizer_files(dir, tok, &v, regex, m->cfg.max_seq_len, err);
    moe_buf_free(&b);
    moe_ix_vocab_free(&v);
    return rc ? -1 : 0;
}
