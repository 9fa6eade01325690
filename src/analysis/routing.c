/* routing.c — routing statistics (METHOD §3): the routers of a model, masks
 * and flip rate, routed-token ratios per (site, expert) overall and per
 * domain, per-token routing probability, active experts against token
 * frequency, their JSON, and the pass over a token file that gathers them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/analysis/analysis.h"
#include "moe/eval/eval.h"
#include "moe/util/json.h"

/* ---- sites and masks ---------------------------------------------------- */

size_t moe_routing_sites(const moe_model *m, moe_site *sites, size_t cap) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const moe_ffn *f = m->blocks[l].ffn;
        if (!f->ops->routing) continue;
        for (int which = 0; which < 8; which++) {
            const float *g;
            size_t N, E;
            if (f->ops->routing(f, which, &g, &N, &E)) break;
            if (n < cap) sites[n] = (moe_site){.layer = l, .which = which, .E = E};
            n++;
        }
    }
    return n;
}

const float *moe_site_gates(const moe_model *m, const moe_site *s, size_t *N) {
    const moe_ffn *f = m->blocks[s->layer].ffn;
    const float *g;
    size_t E;
    if (!f->ops->routing || f->ops->routing(f, s->which, &g, N, &E) || E != s->E) return NULL;
    return g;
}

void moe_mask_from_gates(const float *gates, size_t N, size_t E, uint8_t *mask) {
    for (size_t i = 0; i < N * E; i++) mask[i] = gates[i] != 0.0f;
}

double moe_flip_rate(const uint8_t *prev, const uint8_t *cur, size_t n) {
    size_t flips = 0;
    for (size_t i = 0; i < n; i++) flips += (prev[i] != 0) != (cur[i] != 0);
    return n ? (double)flips / (double)n : 0.0;
}

/* ---- statistics ----------------------------------------------------------- */

/* Per-token tables above this many entries are skipped (memory). */
#define TOKEN_TABLE_MAX ((size_t)1 << 26)

void moe_route_stats_free(moe_route_stats *st) {
    free(st->sites); free(st->dom_tokens); free(st->routed); free(st->routed_dom);
    free(st->gate_sum); free(st->tok_routed); free(st->tok_gate); free(st->tok_count);
    free(st->tok_active); free(st->idle);
    memset(st, 0, sizeof *st);
}

int moe_route_stats_init(moe_route_stats *st, const moe_site *sites, size_t n_sites,
                         size_t V, size_t n_domains, moe_err *err) {
    memset(st, 0, sizeof *st);
    if (n_domains == 0) n_domains = 1;
    st->n_sites = n_sites;
    st->V = V;
    st->n_domains = n_domains;
    for (size_t s = 0; s < n_sites; s++) if (sites[s].E > st->E) st->E = sites[s].E;
    size_t S = n_sites ? n_sites : 1, E = st->E ? st->E : 1;
    st->sites = moe_calloc(S, sizeof *st->sites, err);
    st->dom_tokens = st->sites ? moe_calloc(n_domains, sizeof(double), err) : NULL;
    st->routed = st->dom_tokens ? moe_calloc(S * E, sizeof(double), err) : NULL;
    st->routed_dom = st->routed ? moe_calloc(S * n_domains * E, sizeof(double), err) : NULL;
    st->gate_sum = st->routed_dom ? moe_calloc(S * E, sizeof(double), err) : NULL;
    st->tok_count = st->gate_sum ? moe_calloc(n_domains * V, sizeof(double), err) : NULL;
    st->tok_active = st->tok_count ? moe_calloc(n_domains * V, sizeof(double), err) : NULL;
    st->idle = st->tok_active ? moe_calloc(S, sizeof(double), err) : NULL;
    if (!st->idle) { moe_route_stats_free(st); return -1; }
    if (n_sites) memcpy(st->sites, sites, n_sites * sizeof *sites);
    if (S * E * V <= TOKEN_TABLE_MAX) {
        st->tok_routed = moe_calloc(S * E * V, sizeof(uint32_t), err);
        st->tok_gate = st->tok_routed ? moe_calloc(S * E * V, sizeof(float), err) : NULL;
        if (!st->tok_gate) { moe_route_stats_free(st); return -1; }
    }
    return 0;
}

void moe_route_stats_add(moe_route_stats *st, const float *const *gates, size_t N,
                         const int *tokens, const uint32_t *domains) {
    size_t E = st->E, V = st->V, D = st->n_domains;
    for (size_t t = 0; t < N; t++) {
        size_t v = (size_t)tokens[t], d = domains ? domains[t] : 0;
        if (v >= V) continue;
        if (d >= D) d = 0;
        double active = 0.0;
        for (size_t s = 0; s < st->n_sites; s++) {
            size_t Es = st->sites[s].E;
            const float *g = gates[s] + t * Es;
            double before = active;
            for (size_t e = 0; e < Es; e++) {
                if (g[e] == 0.0f) continue;
                active += 1.0;
                st->routed[s * E + e] += 1.0;
                st->routed_dom[(s * D + d) * E + e] += 1.0;
                st->gate_sum[s * E + e] += g[e];
                if (st->tok_routed) {
                    st->tok_routed[(s * E + e) * V + v]++;
                    st->tok_gate[(s * E + e) * V + v] += g[e];
                }
            }
            st->idle[s] += active == before;
        }
        st->tokens += 1.0;
        st->dom_tokens[d] += 1.0;
        st->tok_count[d * V + v] += 1.0;
        st->tok_active[d * V + v] += st->n_sites ? active / (double)st->n_sites : 0.0;
    }
}

int moe_print_layer_activity(FILE *f, const moe_model *m, const char *who) {
    moe_site sites[256];
    size_t ns = moe_routing_sites(m, sites, 256), shown = 0;  /* sites of the last forward */
    if (ns > 256) ns = 256;
    char warn[512] = "";
    for (size_t s = 0; s < ns; s++) {
        size_t N, E = sites[s].E, idle = 0, pairs = 0;
        const float *g = moe_site_gates(m, &sites[s], &N);
        if (!g || N == 0) continue;
        for (size_t t = 0; t < N; t++) {
            size_t a = 0;
            for (size_t e = 0; e < E; e++) a += g[t * E + e] != 0.0f;
            pairs += a;
            idle += a == 0;
        }
        char name[32];
        snprintf(name, sizeof name, sites[s].which ? "%d.%d" : "%d", sites[s].layer, sites[s].which);
        if (!shown++) fprintf(f, "%s: active experts per token by layer (last forward):", who);
        fprintf(f, "%s %s: %.2f", shown > 1 ? "," : "", name, (double)pairs / (double)N);
        size_t used = strlen(warn);
        if ((double)idle > MOE_NO_EXPERT_WARN * (double)N && used + 40 < sizeof warn)
            snprintf(warn + used, sizeof warn - used, "%s%s (%.0f%%)", used ? ", " : "", name,
                     100.0 * (double)idle / (double)N);
    }
    if (shown) fprintf(f, "\n");
    if (warn[0])
        fprintf(f, "%s: warning: most tokens use no expert in layer %s: their FFN output is zero there "
                "(see docs/MOE.md)\n", who, warn);
    return warn[0] ? 1 : 0;
}

double moe_no_expert_fraction(const moe_route_stats *st, size_t s) {
    return st->tokens > 0 ? st->idle[s] / st->tokens : 0.0;
}

double moe_routed_ratio(const moe_route_stats *st, size_t s, long d, size_t e) {
    double n = d < 0 ? st->tokens : st->dom_tokens[d];
    double r = d < 0 ? st->routed[s * st->E + e] : st->routed_dom[(s * st->n_domains + (size_t)d) * st->E + e];
    return n > 0 ? r / n : 0.0;
}

static double token_count(const moe_route_stats *st, size_t v) {
    double c = 0.0;
    for (size_t d = 0; d < st->n_domains; d++) c += st->tok_count[d * st->V + v];
    return c;
}

double moe_token_routing_prob(const moe_route_stats *st, size_t s, size_t e, size_t v) {
    double c = token_count(st, v);
    if (!st->tok_routed || c == 0) return 0.0;
    return st->tok_routed[(s * st->E + e) * st->V + v] / c;
}

void moe_freq_buckets_free(moe_freq_bucket *b, long n) {
    for (long i = 0; i < n; i++) free(b[i].active_dom);
    free(b);
}

long moe_freq_buckets(const moe_route_stats *st, moe_freq_bucket **out, moe_err *err) {
    size_t D = st->n_domains, nb = 0;
    for (size_t v = 0; v < st->V; v++) {
        double c = token_count(st, v);
        if (c >= 1) { size_t b = (size_t)floor(log2(c)) + 1; if (b > nb) nb = b; }
    }
    moe_freq_bucket *b = moe_calloc(nb ? nb : 1, sizeof *b, err);
    double *occ_dom = b ? moe_calloc(nb * D + 1, sizeof(double), err) : NULL;
    if (!occ_dom) { free(b); return -1; }
    for (size_t i = 0; i < nb; i++) {
        b[i].lo = ldexp(1.0, (int)i);
        b[i].hi = ldexp(1.0, (int)i + 1);
        if (!(b[i].active_dom = moe_calloc(D, sizeof(double), err))) {
            moe_freq_buckets_free(b, (long)nb);
            free(occ_dom);
            return -1;
        }
    }
    for (size_t v = 0; v < st->V; v++) {
        double c = token_count(st, v);
        if (c < 1) continue;
        moe_freq_bucket *k = &b[(size_t)floor(log2(c))];
        k->types++;
        k->occurrences += c;
        for (size_t d = 0; d < D; d++) {
            k->active += st->tok_active[d * st->V + v];
            k->active_dom[d] += st->tok_active[d * st->V + v];
            occ_dom[(size_t)(k - b) * D + d] += st->tok_count[d * st->V + v];
        }
    }
    for (size_t i = 0; i < nb; i++) {
        b[i].active = b[i].occurrences > 0 ? b[i].active / b[i].occurrences : NAN;
        for (size_t d = 0; d < D; d++)
            b[i].active_dom[d] = occ_dom[i * D + d] > 0 ? b[i].active_dom[d] / occ_dom[i * D + d] : NAN;
    }
    free(occ_dom);
    *out = b;
    return (long)nb;
}

/* ---- JSON ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n) (0 if invalid). */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || len > n || (len == 2 && c < 0xC2)) return 0;
    for (size_t i = 1; i < len; i++) if ((s[i] & 0xC0) != 0x80) return 0;
    if (len == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))) return 0;
    if (len == 4 && ((c == 0xF0 && s[1] < 0x90) || c > 0xF4 || (c == 0xF4 && s[1] >= 0x90))) return 0;
    return len;
}

int moe_json_text(moe_buf *out, const uint8_t *s, size_t len) {
    moe_buf clean = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t k = utf8_seq(s + i, len - i);
        if (k) { rc = moe_buf_append(&clean, s + i, k); i += k; }
        else { rc = moe_buf_printf(&clean, "<0x%02X>", s[i]); i++; }
    }
    if (!rc) rc = moe_json_write_string(out, clean.data ? clean.data : "", clean.len);
    moe_buf_free(&clean);
    return rc;
}

static int write_num(moe_buf *b, double x) { return moe_json_write_double(b, x); }

/* The top_n ids of expert e at site s by routing probability. */
static size_t top_tokens(const moe_route_stats *st, size_t s, size_t e, size_t top_n,
                         size_t min_count, size_t *ids) {
    size_t n = 0;
    for (size_t v = 0; v < st->V; v++) {
        double c = token_count(st, v);
        if (c < (double)min_count || c < 1) continue;
        double p = moe_token_routing_prob(st, s, e, v);
        if (p <= 0) continue;
        size_t i = n < top_n ? n++ : top_n;  /* insertion into a sorted list of top_n */
        while (i > 0) {
            size_t u = ids[i - 1];
            double pu = moe_token_routing_prob(st, s, e, u), cu = token_count(st, u);
            if (pu > p || (pu == p && cu >= c)) break;
            if (i < top_n) ids[i] = u;
            i--;
        }
        if (i < top_n) ids[i] = v;
    }
    return n;
}

int moe_route_stats_json(const moe_route_stats *st, const moe_tokenizer *tok,
                         char *const *domain_names, size_t top_n, size_t min_count,
                         moe_buf *out, moe_err *err) {
    size_t D = st->n_domains, E = st->E;
    int rc = moe_buf_printf(out, "\"tokens\": %.0f,\n\"domains\": [", st->tokens);
    for (size_t d = 0; d < D; d++) {
        const char *name = domain_names ? domain_names[d] : "all";
        rc |= moe_buf_printf(out, "%s{\"name\": ", d ? ", " : "");
        rc |= moe_json_write_string(out, name, strlen(name));
        rc |= moe_buf_printf(out, ", \"tokens\": %.0f}", st->dom_tokens[d]);
    }
    rc |= moe_buf_printf(out, "],\n\"sites\": [");
    size_t *ids = moe_calloc(top_n ? top_n : 1, sizeof *ids, err);
    if (!ids) return -1;
    for (size_t s = 0; s < st->n_sites; s++) {
        size_t Es = st->sites[s].E;
        double active = 0.0;
        for (size_t e = 0; e < Es; e++) active += st->routed[s * E + e];
        rc |= moe_buf_printf(out, "%s\n {\"layer\": %d, \"which\": %d, \"experts\": %zu, \"sparsity\": ",
                             s ? "," : "", st->sites[s].layer, st->sites[s].which, Es);
        rc |= write_num(out, st->tokens > 0 ? 1.0 - active / (st->tokens * (double)Es) : NAN);
        rc |= moe_buf_printf(out, ", \"active_per_token\": ");
        rc |= write_num(out, st->tokens > 0 ? active / st->tokens : NAN);
        rc |= moe_buf_printf(out, ", \"no_expert\": ");
        rc |= write_num(out, st->tokens > 0 ? moe_no_expert_fraction(st, s) : NAN);
        rc |= moe_buf_printf(out, ",\n  \"routed_ratio\": [");
        for (size_t e = 0; e < Es; e++) {
            rc |= moe_buf_printf(out, e ? ", " : "");
            rc |= write_num(out, moe_routed_ratio(st, s, -1, e));
        }
        rc |= moe_buf_printf(out, "],\n  \"mean_gate\": [");
        for (size_t e = 0; e < Es; e++) {
            double r = st->routed[s * E + e];
            rc |= moe_buf_printf(out, e ? ", " : "");
            rc |= write_num(out, r > 0 ? st->gate_sum[s * E + e] / r : 0.0);
        }
        rc |= moe_buf_printf(out, "],\n  \"routed_ratio_by_domain\": [");
        for (size_t d = 0; d < D; d++) {
            rc |= moe_buf_printf(out, "%s[", d ? ", " : "");
            for (size_t e = 0; e < Es; e++) {
                rc |= moe_buf_printf(out, e ? ", " : "");
                rc |= write_num(out, moe_routed_ratio(st, s, (long)d, e));
            }
            rc |= moe_buf_printf(out, "]");
        }
        rc |= moe_buf_printf(out, "],\n  \"top_tokens\": [");
        for (size_t e = 0; e < Es && st->tok_routed; e++) {
            size_t n = top_tokens(st, s, e, top_n, min_count, ids);
            rc |= moe_buf_printf(out, "%s\n   [", e ? "," : "");
            for (size_t i = 0; i < n; i++) {
                size_t v = ids[i], len = 0;
                double c = token_count(st, v), r = st->tok_routed[(s * E + e) * st->V + v];
                const uint8_t *bytes = tok ? moe_tokenizer_token(tok, (uint32_t)v, &len) : NULL;
                char idtext[32];
                if (!bytes) { len = (size_t)snprintf(idtext, sizeof idtext, "#%zu", v); bytes = (const uint8_t *)idtext; }
                rc |= moe_buf_printf(out, "%s{\"id\": %zu, \"text\": ", i ? ", " : "", v);
                rc |= moe_json_text(out, bytes, len);
                rc |= moe_buf_printf(out, ", \"prob\": ");
                rc |= write_num(out, r / c);
                rc |= moe_buf_printf(out, ", \"count\": %.0f, \"mean_gate\": ", c);
                rc |= write_num(out, r > 0 ? st->tok_gate[(s * E + e) * st->V + v] / r : 0.0);
                rc |= moe_buf_printf(out, "}");
            }
            rc |= moe_buf_printf(out, "]");
        }
        rc |= moe_buf_printf(out, "]}");
    }
    free(ids);
    rc |= moe_buf_printf(out, "],\n\"frequency_buckets\": [");
    moe_freq_bucket *b;
    long nb = moe_freq_buckets(st, &b, err);
    if (nb < 0) return -1;
    for (long i = 0; i < nb; i++) {
        rc |= moe_buf_printf(out, "%s\n {\"lo\": %.0f, \"hi\": %.0f, \"types\": %zu, \"occurrences\": %.0f, "
                             "\"active_experts\": ", i ? "," : "", b[i].lo, b[i].hi, b[i].types, b[i].occurrences);
        rc |= write_num(out, b[i].active);
        rc |= moe_buf_printf(out, ", \"by_domain\": [");
        for (size_t d = 0; d < D; d++) {
            rc |= moe_buf_printf(out, d ? ", " : "");
            rc |= write_num(out, b[i].active_dom[d]);
        }
        rc |= moe_buf_printf(out, "]}");
    }
    moe_freq_buckets_free(b, nb);
    rc |= moe_buf_printf(out, "]");
    return rc ? moe_errf(err, "out of memory writing the analysis") : 0;
}

/* ---- a pass over a token file ------------------------------------------------ */

int moe_analyze_tokens(moe_model *m, const moe_tokens *t, size_t B, size_t T,
                       size_t max_tokens, moe_route_stats *st, const moe_progress *progress,
                       moe_err *err) {
    memset(st, 0, sizeof *st);
    if (T > (size_t)m->cfg.max_seq_len) T = (size_t)m->cfg.max_seq_len;
    if (B == 0) B = 1;
    int sampled = max_tokens && max_tokens < t->n;
    size_t n = sampled ? max_tokens : t->n;
    if (n == 0) return moe_errf(err, "the token file is empty");
    if (t->vocab_size > (uint32_t)m->cfg.vocab_size)
        return moe_errf(err, "the token file's vocabulary (%u) is larger than the model's "
                        "vocab_size (%d)", t->vocab_size, m->cfg.vocab_size);
    size_t *starts = NULL, rows, rest;
    moe_read_info read;
    if (sampled) {  /* rows of T tokens across the file */
        if (T > max_tokens) T = max_tokens;
        if (moe_tokens_sample(t, T, T, max_tokens, &starts, &read, err)) return -1;
        rows = read.windows;
        rest = 0;
    } else {
        rows = n / T;
        rest = n - rows * T;
        read = (moe_read_info){.tokens = n, .of = t->n, .windows = rows + (rest > 0), .window = T};
    }
    int *in = moe_malloc(B * T * sizeof(int), err);
    uint32_t *dom = in ? moe_malloc(B * T * sizeof(uint32_t), err) : NULL;
    moe_site sites[256];
    const float *gates[256];
    if (!dom) { free(in); free(starts); return -1; }
    int training = m->training, rc = 0, started = 0;
    m->training = 0;
    for (size_t r = 0; r < rows + (rest > 0) && !rc;) {
        size_t br = r < rows ? (rows - r < B ? rows - r : B) : 1, tw = r < rows ? T : rest;
        for (size_t b = 0; b < br; b++) {
            size_t first = starts ? starts[r + b] : (r + b) * T;
            for (size_t i = 0; i < tw; i++) {
                in[b * tw + i] = (int)moe_token(t, first + i);
                dom[b * tw + i] = moe_tokens_domain_at(t, first + i);
            }
            moe_tokens_release(t, first, tw);
        }
        if ((rc = moe_model_forward(m, in, NULL, br, tw, NULL, NULL, err))) break;
        size_t ns = moe_routing_sites(m, sites, 256);
        if (ns > 256) { rc = moe_errf(err, "more than 256 routers"); break; }
        if (!started) {
            if ((rc = moe_route_stats_init(st, sites, ns, (size_t)m->cfg.vocab_size, t->n_domains, err))) break;
            started = 1;
        }
        for (size_t s = 0; s < ns; s++) {
            size_t N;
            gates[s] = moe_site_gates(m, &sites[s], &N);
            if (!gates[s] || N != br * tw) { rc = moe_errf(err, "layer %d: no routing read-out", sites[s].layer); break; }
        }
        if (!rc) moe_route_stats_add(st, gates, br * tw, in, dom);
        r += br;
        if (progress && progress->fn) progress->fn(progress->ctx, r, rows + (rest > 0));
    }
    m->training = training;
    free(in);
    free(dom);
    free(starts);
    if (rc) moe_route_stats_free(st);
    else st->read = read;
    return rc;
}
