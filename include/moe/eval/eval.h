/* eval.h — evaluation (METHOD §3): next-token loss and perplexity of a token
 * file overall and per domain (also with the routers' drop-top-expert
 * robustness flag), and zero-shot multiple choice over JSONL tasks in the
 * lm-evaluation-harness conventions (acc and acc_norm). */
#ifndef MOE_EVAL_H
#define MOE_EVAL_H

#include "moe/util/common.h"
#include "moe/data/data.h"
#include "moe/util/json.h"
#include "moe/model/model.h"
#include "moe/data/tokenizer.h"

/* ---- loss per domain ---------------------------------------------------- */

typedef struct moe_loss_sums {
    size_t n_domains;
    double *nll;        /* [n_domains] summed next-token losses (nats) */
    double *count;      /* [n_domains] predictions */
    double total_nll, total_count;
    moe_read_info read;  /* what of the file was read (moe_eval_loss fills it) */
} moe_loss_sums;

int moe_loss_sums_init(moe_loss_sums *s, size_t n_domains, moe_err *err);
void moe_loss_sums_free(moe_loss_sums *s);

/* Domain of token position pos: that of the document holding it (0 when the
 * file has no document table). */
uint32_t moe_tokens_domain_at(const moe_tokens *t, size_t pos);

/* Adds n losses: losses[i] is the loss of predicting t->ids[first + 1 + i];
 * it counts for the domain of that target token's document. */
void moe_loss_sums_add(moe_loss_sums *s, const moe_tokens *t, size_t first,
                       const float *losses, size_t n);

/* Loss of the model (m->training = 0 during, restored after) over t in
 * consecutive windows of T predictions (the context restarts at each
 * window, as in training rows), B windows per forward. All of t when
 * max_tokens is 0 or at least its size; else about max_tokens tokens in
 * windows sampled across the whole file, each domain its share
 * (moe_tokens_sample). Fills s (initialised here with t's domains, at least
 * one), s->read included. progress (may be NULL) hears of each forward. */
int moe_eval_loss(moe_model *m, const moe_tokens *t, size_t B, size_t T, size_t max_tokens,
                  moe_loss_sums *s, const moe_progress *progress, moe_err *err);

/* The same pass written as metrics.jsonl members for a validation loss
 * measured during training (docs/FORMAT.md): appends
 *   , "val_loss": L, "val": {"tokens": N, "domains": {"name": L_d, ...}}
 * to out (a line left open) and sets *loss. */
int moe_eval_loss_members(moe_model *m, const moe_tokens *t, size_t B, size_t T, size_t max_tokens,
                          moe_buf *out, double *loss, moe_err *err);

/* ---- multiple choice ---------------------------------------------------- */

typedef struct moe_mc_item {
    char *id;
    char *context;
    char **choices;     /* [n_choices] continuations, usually with a leading space */
    size_t n_choices;
    int gold;           /* index into choices */
    size_t line;        /* line of the task file */
    int last_word;      /* LAMBADA: one choice, right iff every token is the argmax */
    size_t delim_bytes; /* leading bytes of each choice not counted by acc_norm (the
                           harness's " " delimiter: 1 for its forms, 0 for ours) */
} moe_mc_item;

typedef struct moe_task {
    char path[4096];
    char name[256];     /* file name without directory and .jsonl */
    moe_mc_item *items;
    size_t n;
} moe_task;

/* Reads a task file: one JSON object per non-empty line with a string
 * "context", an array "choices" of at least 2 strings, an integer "gold"
 * in range and an optional string "id"; or a record in one of the forms
 * lm-evaluation-harness reads (moe_harness_item). Errors name the file, the
 * line and what was expected. */
int moe_task_load(const char *path, moe_task *t, moe_err *err);
void moe_task_free(moe_task *t);

/* A line in one of lm-evaluation-harness's JSONL forms (src/eval/harness.c,
 * docs/EVAL.md) into *it with the harness's prompt: ARC {question, choices
 * {text, label}, answerKey}, BoolQ {passage, question, label}, HellaSwag
 * {activity_label, ctx_a, ctx_b, endings, label}, PIQA {goal, sol1, sol2,
 * label}, RACE {article, question, options, answer}, LAMBADA {text}.
 * Returns 1 when converted, 0 when v is none of these forms, -1 on a
 * malformed record (the message names `where` and the form). */
int moe_harness_item(const moe_json_value *v, moe_mc_item *it, const char *where, moe_err *err);

/* The choices picked by acc (largest summed log-probability ll[i]) and by
 * acc_norm (largest ll[i] / bytes[i]); the first index wins ties. */
void moe_mc_pick(const double *ll, const size_t *bytes, size_t n, int *pick, int *pick_norm);

/* Summed log-probability of each continuation given the context, as the
 * harness computes it: whole = encode(context + choice), ctx = encode(context)
 * (<|endoftext|> if empty), continuation = whole[len(ctx):]; the input keeps
 * the last max_seq_len tokens of whole[:-1]. ll[n_choices]. */
int moe_mc_loglik(moe_model *m, const moe_tokenizer *tok, const moe_mc_item *it,
                  double *ll, moe_err *err);

typedef struct moe_mc_result {
    size_t n;               /* items scored */
    double acc, acc_norm;   /* fractions correct (last-word items: acc_norm = acc) */
    double acc_stderr, acc_norm_stderr;  /* sqrt(p(1-p)/(n-1)) */
} moe_mc_result;

/* Scores the first limit items (0: all). m->training = 0 during. */
int moe_mc_eval(moe_model *m, const moe_tokenizer *tok, const moe_task *task, size_t limit,
                moe_mc_result *r, moe_err *err);

#endif
