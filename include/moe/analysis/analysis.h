/* analysis.h — routing statistics (METHOD §3): routing masks and the flip rate,
 * the routers ("sites") of a model, routed-token ratios per (layer, expert)
 * overall and per domain, active experts per token against token frequency,
 * the per-token routing probability (ReMoE table 12), the training-time
 * calibration probe, and the HTML report that draws them. */
#ifndef MOE_ANALYSIS_H
#define MOE_ANALYSIS_H

#include <stdint.h>
#include <stdio.h>

#include "moe/util/common.h"
#include "moe/data/data.h"
#include "moe/util/json.h"
#include "moe/model/model.h"
#include "moe/data/tokenizer.h"

/* ---- routing masks and flip rate -------------------------------------- */

/* One router of one block (a CartesianMoE block has two: which 0 and 1). */
typedef struct moe_site {
    int layer;      /* block index */
    int which;      /* router index within the block */
    size_t E;       /* experts this router chooses from */
} moe_site;

/* The routers that the last forward of m used, in block order; writes at
 * most cap of them and returns how many there are (0 for a dense model). */
size_t moe_routing_sites(const moe_model *m, moe_site *sites, size_t cap);

/* Gates [N,E] of site s from the last forward (NULL if unavailable). */
const float *moe_site_gates(const moe_model *m, const moe_site *s, size_t *N);

/* mask[N*E] = (gates != 0). */
void moe_mask_from_gates(const float *gates, size_t N, size_t E, uint8_t *mask);

/* Flip rate between two 0/1 routing masks of n = L*T*E entries (METHOD §3):
 * sum |cur - prev| / n. The flip count is E * flip rate. */
double moe_flip_rate(const uint8_t *prev, const uint8_t *cur, size_t n);

/* One line on f: "WHO: active experts per token by layer (last forward):
 * 0: 2.86, 1: 0.39 ...", from the gates of m's last forward; then, if some
 * layer had more than MOE_NO_EXPERT_WARN of its tokens routed to no expert,
 * a "WHO: warning: ..." line naming them. Returns 1 if it warned, 0 if not
 * (nothing is printed for a model without routers). */
int moe_print_layer_activity(FILE *f, const moe_model *m, const char *who);

/* ---- routing statistics over a data set -------------------------------- */

/* Accumulates routing over forwards of a data set. Token ids < V, domains
 * < n_domains (a file without a document table has one domain). */
typedef struct moe_route_stats {
    size_t n_sites, V, n_domains, E;   /* E: the largest E of any site */
    moe_site *sites;                   /* [n_sites] */
    double tokens;                     /* positions seen */
    double *dom_tokens;                /* [n_domains] positions per domain */
    double *routed;                    /* [S,E] positions routed to e */
    double *routed_dom;                /* [S,n_domains,E] */
    double *gate_sum;                  /* [S,E] sum of active gates */
    uint32_t *tok_routed;              /* [S,E,V] occurrences of id v routed to e */
    float *tok_gate;                   /* [S,E,V] sum of their gates */
    double *tok_count;                 /* [n_domains,V] occurrences of id v */
    double *tok_active;                /* [n_domains,V] sum of active experts per site */
    moe_read_info read;                /* what of the file was read */
    double *idle;                      /* [S] positions with no active expert at site s */
} moe_route_stats;

int moe_route_stats_init(moe_route_stats *st, const moe_site *sites, size_t n_sites,
                         size_t V, size_t n_domains, moe_err *err);
void moe_route_stats_free(moe_route_stats *st);

/* Adds N positions: gates[s] is site s's [N, sites[s].E] gate matrix,
 * tokens[N] the routed (input) token ids, domains[N] their domains. */
void moe_route_stats_add(moe_route_stats *st, const float *const *gates, size_t N,
                         const int *tokens, const uint32_t *domains);

/* Fraction of the positions of domain d (d < 0: all) routed to expert e at site s. */
double moe_routed_ratio(const moe_route_stats *st, size_t s, long d, size_t e);
/* Fraction of the positions that no expert of site s took (they pass only
 * the residual and any shared experts). */
double moe_no_expert_fraction(const moe_route_stats *st, size_t s);
/* A site where more than this fraction of tokens use no expert is flagged
 * by analyze, train and the report ("most tokens skip the FFN"). */
#define MOE_NO_EXPERT_WARN 0.5
/* Fraction of the occurrences of token id v routed to expert e at site s
 * (ReMoE table 12); 0 when v never occurs. */
double moe_token_routing_prob(const moe_route_stats *st, size_t s, size_t e, size_t v);

/* Active experts per token against token frequency (METHOD §3, ReMoE fig 7):
 * token ids are bucketed by how often they occur in the data (bucket b holds
 * the ids whose count is in [2^b, 2^(b+1))); for each bucket, the mean over
 * its occurrences of the number of active experts per router site. */
typedef struct moe_freq_bucket {
    double lo, hi;          /* occurrence counts [lo, hi) */
    size_t types;           /* distinct ids in the bucket */
    double occurrences;
    double active;          /* mean active experts per site (all domains) */
    double *active_dom;     /* [n_domains] mean per domain (NAN: none there) */
} moe_freq_bucket;
/* Returns the number of buckets written into *out (malloc'd; free with
 * moe_freq_buckets_free), or -1 on error. */
long moe_freq_buckets(const moe_route_stats *st, moe_freq_bucket **out, moe_err *err);
void moe_freq_buckets_free(moe_freq_bucket *b, long n);

/* The members of analysis.json (docs/EVAL.md) after its header, without the
 * enclosing braces: "tokens", "domains", "sites" (per site the
 * sparsity, routed ratios overall and per domain, and the top_n tokens of
 * each expert by routing probability: ids seen at least min_count times,
 * decoded with tok, which may be NULL) and "frequency_buckets". */
int moe_route_stats_json(const moe_route_stats *st, const moe_tokenizer *tok,
                         char *const *domain_names, size_t top_n, size_t min_count,
                         moe_buf *out, moe_err *err);

/* Runs the model (m->training = 0) over t in rows of T tokens, B rows per
 * forward, and fills st (initialised here), st->read included: all of t
 * when max_tokens is 0 or at least its size, else about max_tokens
 * positions in rows sampled across the whole file, each domain its share
 * (moe_tokens_sample). progress (may be NULL) hears of each forward. */
int moe_analyze_tokens(moe_model *m, const moe_tokens *t, size_t B, size_t T,
                       size_t max_tokens, moe_route_stats *st, const moe_progress *progress,
                       moe_err *err);

/* Appends s[len] to out as a JSON string, with bytes that are not valid
 * UTF-8 written as "\u00XX"-free text "<0xXX>" (token pieces may split
 * characters). */
int moe_json_text(moe_buf *out, const uint8_t *s, size_t len);

/* ---- training-time probe (moe train --analysis-every) ------------------ */

/* A fixed calibration token set, measured every N optimiser steps: loss on
 * it, per-site sparsity, and the flip rate against the previous measurement.
 * Each measurement appends one JSON line to path (docs/EVAL.md). */
typedef struct moe_probe {
    int *inputs, *targets;      /* [rows*T] calibration rows */
    size_t rows, B, T;          /* forwards of B rows of T tokens */
    uint8_t *prev, *cur;        /* routing masks [sum over sites of rows*T*E] */
    size_t mask_len;
    int have_prev;
    double last_loss;           /* loss of the latest measurement (NAN: none yet) */
    char path[4096];
} moe_probe;

/* Takes the first n_tokens (rounded down to whole rows of T, at least one
 * row) of t. B is the number of rows per forward (use the training batch:
 * the model's buffers are sized for it). */
int moe_probe_init(moe_probe *p, const moe_tokens *t, size_t n_tokens, size_t B, size_t T,
                   const char *path, moe_err *err);
/* Forwards the calibration set with m->training = 0 (restored after) and
 * appends {"step", "loss", "sparsity", "flip_rate", "flip_count", "layers"}
 * to the file. The first measurement of a session has flip_rate null. */
int moe_probe_measure(moe_probe *p, moe_model *m, long step, moe_err *err);
/* The same without writing: a resumed run takes the mask of the step it
 * resumes at, so that its next flip rate is measured as if uninterrupted. */
int moe_probe_prime(moe_probe *p, moe_model *m, moe_err *err);
void moe_probe_free(moe_probe *p);


/* ---- the report ---------------------------------------------------------- */

/* One run's files as read from its folder (src/run/rundir.c reads them:
 * moe_rundir_report): the parsed lines of metrics.jsonl and
 * calibration.jsonl, and eval.json and analysis.json (NULL when absent). */
typedef struct moe_report_run {
    const char *dir;
    moe_json_value **metrics;          /* [n_metrics] */
    size_t n_metrics;
    moe_json_value **calibration;      /* [n_calibration] */
    size_t n_calibration;
    moe_json_value *eval, *analysis;
} moe_report_run;

/* One self-contained HTML page (inline SVG and CSS, no scripts, no external
 * assets) comparing runs[n] (1 to 64; docs/EVAL.md); summary, when not
 * NULL, is the summary.json (read from summary_path) of the sweep the first
 * run belongs to. */
int moe_report_html(const moe_report_run *runs, size_t n, const moe_json_value *summary, const char *summary_path,
                    moe_buf *out, moe_err *err);

#endif
