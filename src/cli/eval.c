/* eval.c — `moe eval`: loss and perplexity per token file and per domain
 * (optionally also with each token's top expert dropped), and zero-shot
 * multiple-choice tasks; a table on the terminal and a JSON file
 * (docs/EVAL.md, "eval.json"). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/eval/eval.h"
#include "moe/run/rundir.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe eval --model DIR [--data FILE.tok]... [--task NAME|FILE.jsonl]...\n"
        "                [--robustness] [--json FILE] [options]\n\n"
        "  --model DIR        model or run directory (a run uses its newest checkpoint)\n"
        "  --data FILE.tok    token file: loss and perplexity overall and per domain\n"
        "                     (its document table); repeat for several files\n"
        "  --task NAME|FILE   multiple-choice task (JSONL, docs/EVAL.md): a path, or a\n"
        "                     name looked up as NAME.jsonl in $MOE_TASK_DIR,\n"
        "                     data/corpus/small/tasks and data/corpus/full/tasks\n"
        "                     (e.g. --task cloze); repeatable\n"
        "  --robustness       also the perplexity with every token's top expert dropped\n"
        "                     by each router (METHOD §2.3)\n"
        "  --json FILE        write the results as JSON (default: DIR/eval.json when\n"
        "                     DIR is a run directory, i.e. holds metrics.jsonl; '-':\n"
        "                     stdout, the table then goes to stderr)\n"
        "  --max-tokens N     evaluate about N tokens of each file, in windows spread\n"
        "                     evenly over it, each domain its share (0: all)\n"
        "  --limit N          score at most the first N items of each task (0: all)\n"
        "  --seq T            window length (default: the model's seq_len)\n"
        "  --batch B          windows per forward (default 8)\n"
        "  --tokenizer FILE   tokenizer for tasks (default: the checkpoint's)\n"
        "  --threads N        OpenMP threads (default: all cores)\n"
        "  --precision P      auto, fp32 or bf16 matrix products (default: the model's)\n");
}

/* The command line. */
typedef struct eval_opts {
    const char *model_dir, *json_path, *tok_path, *precision;
    const char **data, **tasks;        /* [n_data], [n_tasks] */
    size_t n_data, n_tasks;
    long max_tokens, limit, seq, batch, threads;
    int robustness;
    int json_stdout;                   /* json_path is the original stdout (--json -) */
} eval_opts;

/* What the evaluation holds: the model, its inputs and their results. */
typedef struct eval_state {
    char ckpt[4096];
    size_t T;                          /* window length */
    moe_model *m;
    moe_tokenizer *tok;                /* for tasks (NULL without) */
    moe_tokens *toks;                  /* [n_data] */
    moe_loss_sums *base, *drop;        /* [n_data] */
    char (*names)[256];                /* [n_data] base names of the token files */
    moe_eval_file *files;              /* [n_data] */
    moe_task *tk;                      /* [n_tasks] */
    moe_mc_result *mr;                 /* [n_tasks] */
    moe_eval_task *tasks;              /* [n_tasks] */
} eval_state;

/* A task argument: a file path, or a name in the task folders. */
static int resolve_task(const char *arg, char *out, size_t cap, moe_err *err) {
    size_t n = strlen(arg);
    if (strchr(arg, '/') || (n > 6 && !strcmp(arg + n - 6, ".jsonl")))
        return moe_path(out, cap, err, "%s", arg);
    const char *env = getenv("MOE_TASK_DIR");
    const char *dirs[] = {env && *env ? env : NULL, "data/corpus/small/tasks", "data/corpus/full/tasks"};
    for (size_t i = 0; i < 3; i++) {
        if (!dirs[i]) continue;
        if (moe_path(out, cap, err, "%s/%s.jsonl", dirs[i], arg)) return -1;
        if (!access(out, R_OK)) return 0;
    }
    return moe_errf(err, "task '%s': no %s.jsonl in %s%sdata/corpus/small/tasks or data/corpus/full/tasks "
                    "(give a path to a .jsonl task file, or build the corpus with tools/build_corpus.py)",
                    arg, arg, env && *env ? env : "", env && *env ? ", " : "");
}

/* 0 to go on, 1 after --help, 2 on a usage error (its line printed). */
static int parse(int argc, char **argv, eval_opts *o) {
    enum { O_MODEL = 256, O_DATA, O_TASK, O_JSON, O_TOKENIZER, O_MAX_TOKENS, O_LIMIT, O_SEQ, O_BATCH,
           O_THREADS, O_ROBUSTNESS, O_PRECISION };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
        {"data", required_argument, 0, O_DATA}, {"task", required_argument, 0, O_TASK},
        {"json", required_argument, 0, O_JSON}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"max-tokens", required_argument, 0, O_MAX_TOKENS}, {"limit", required_argument, 0, O_LIMIT},
        {"seq", required_argument, 0, O_SEQ}, {"batch", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS}, {"robustness", no_argument, 0, O_ROBUSTNESS},
        {"precision", required_argument, 0, O_PRECISION},
        {0, 0, 0, 0}};
    cli_parser p;
    cli_begin(&p, "eval", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        const char *v = p.value;
        int bad = 0;
        switch (c) {
        case 'h': help(stdout); return 1;
        case O_ROBUSTNESS: o->robustness = 1; break;
        case O_MODEL: o->model_dir = v; break;
        case O_DATA: o->data[o->n_data++] = v; break;
        case O_TASK: o->tasks[o->n_tasks++] = v; break;
        case O_JSON: o->json_path = v; break;
        case O_TOKENIZER: o->tok_path = v; break;
        case O_MAX_TOKENS: bad = cli_int(&p, v, 0, 1L << 40, &o->max_tokens); break;
        case O_LIMIT: bad = cli_int(&p, v, 0, 1L << 30, &o->limit); break;
        case O_SEQ: bad = cli_int(&p, v, 1, 1 << 20, &o->seq); break;
        case O_BATCH: bad = cli_int(&p, v, 1, 4096, &o->batch); break;
        case O_THREADS: bad = cli_int(&p, v, 1, 1024, &o->threads); break;
        case O_PRECISION: bad = cli_precision("eval", v); o->precision = v; break;
        default: bad = 1;
        }
        if (bad) return 2;
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!o->model_dir) { fprintf(stderr, "moe eval: --model DIR is required\n"); return 2; }
    if (!o->n_data && !o->n_tasks) { fprintf(stderr, "moe eval: give at least one --data or --task\n"); return 2; }
    return 0;
}

static int state_alloc(eval_state *s, const eval_opts *o, moe_err *err) {
    size_t D = o->n_data ? o->n_data : 1, K = o->n_tasks ? o->n_tasks : 1;
    s->toks = calloc(D, sizeof *s->toks);
    s->base = calloc(D, sizeof *s->base);
    s->drop = calloc(D, sizeof *s->drop);
    s->names = calloc(D, sizeof *s->names);
    s->files = calloc(D, sizeof *s->files);
    s->tk = calloc(K, sizeof *s->tk);
    s->mr = calloc(K, sizeof *s->mr);
    s->tasks = calloc(K, sizeof *s->tasks);
    if (!s->toks || !s->base || !s->drop || !s->names || !s->files || !s->tk || !s->mr || !s->tasks)
        return moe_errf(err, "out of memory");
    return 0;
}

static void state_free(eval_state *s, const eval_opts *o) {
    for (size_t i = 0; i < o->n_data && s->toks && s->base && s->drop; i++) {
        moe_loss_sums_free(&s->base[i]);
        moe_loss_sums_free(&s->drop[i]);
        moe_tokens_free(&s->toks[i]);
    }
    for (size_t i = 0; i < o->n_tasks && s->tk; i++) moe_task_free(&s->tk[i]);
    free(s->toks); free(s->base); free(s->drop); free(s->names); free(s->files);
    free(s->tk); free(s->mr); free(s->tasks);
    moe_tokenizer_free(s->tok);
    moe_model_free(s->m);
}

/* The model and every input, read before the long part so that bad input
 * fails first. */
static int load_inputs(eval_state *s, const eval_opts *o, moe_err *err) {
    char path[4096];
    if (state_alloc(s, o, err) || moe_resolve_checkpoint(o->model_dir, s->ckpt, sizeof s->ckpt, err) ||
        moe_model_load_precision(s->ckpt, o->precision, &s->m, err))
        return -1;
    if (o->json_path && !o->json_stdout && cli_check_writable(o->json_path, "--json", err))
        return -1;
    cli_inference_ready("eval", s->m);
    s->m->training = 0;
    s->T = o->seq ? (size_t)o->seq : (size_t)s->m->cfg.seq_len;
    if (s->T > (size_t)s->m->cfg.max_seq_len) s->T = (size_t)s->m->cfg.max_seq_len;
    for (size_t i = 0; i < o->n_data; i++) {
        if (moe_tokens_read(o->data[i], &s->toks[i], err)) return -1;
        cli_warn_data_tokenizer("eval", s->ckpt, o->tok_path, &s->toks[i], o->data[i]);
    }
    for (size_t i = 0; i < o->n_tasks; i++)
        if (resolve_task(o->tasks[i], path, sizeof path, err) || moe_task_load(path, &s->tk[i], err)) return -1;
    if (!o->n_tasks) return 0;
    if (moe_checkpoint_tokenizer(s->ckpt, o->tok_path, &s->tok, err)) return -1;
    if (!s->tok)
        return moe_errf(err, "%s has no tokenizer file, which tasks need: give --tokenizer FILE "
                        "(or train with --tokenizer so checkpoints carry it)", s->ckpt);
    return 0;
}

/* The losses of every token file (and with the top expert dropped), then
 * the tasks; a line on stderr before each. */
static int measure(eval_state *s, const eval_opts *o, moe_err *err) {
    moe_model *m = s->m;
    for (size_t i = 0; i < o->n_data; i++) {
        moe_eval_file *f = &s->files[i];
        moe_rundir_base_name(s->names[i], sizeof s->names[i], o->data[i], ".tok");
        *f = (moe_eval_file){s->names[i], o->data[i], &s->base[i], NULL, s->toks[i].domain_names,
                             s->toks[i].n_domains};
        fprintf(stderr, "moe eval: %s ...\n", o->data[i]);
        m->drop_top_expert = 0;
        cli_progress pr;
        cli_progress_start(&pr, "eval", o->data[i]);
        moe_progress progress = {cli_progress_fn, &pr};
        if (moe_eval_loss(m, &s->toks[i], (size_t)o->batch, s->T, (size_t)o->max_tokens, &s->base[i], &progress,
                          err))
            return moe_err_prefix(err, "%s", o->data[i]);
        if (!o->robustness) continue;
        fprintf(stderr, "moe eval: %s, top expert dropped ...\n", o->data[i]);
        m->drop_top_expert = 1;
        cli_progress_start(&pr, "eval", o->data[i]);
        int e = moe_eval_loss(m, &s->toks[i], (size_t)o->batch, s->T, (size_t)o->max_tokens, &s->drop[i],
                              &progress, err);
        m->drop_top_expert = 0;
        if (e) return moe_err_prefix(err, "%s (robustness)", o->data[i]);
        f->drop = &s->drop[i];
    }
    for (size_t i = 0; i < o->n_tasks; i++) {
        fprintf(stderr, "moe eval: task %s (%zu items) ...\n", s->tk[i].name,
                o->limit && (size_t)o->limit < s->tk[i].n ? (size_t)o->limit : s->tk[i].n);
        if (moe_mc_eval(m, s->tok, &s->tk[i], (size_t)o->limit, &s->mr[i], err)) return -1;
        s->tasks[i] = (moe_eval_task){s->tk[i].name, s->tk[i].path, &s->mr[i]};
    }
    return 0;
}

static double ppl(double nll, double n) { return n > 0 ? exp(nll / n) : NAN; }

static void print_row(const char *name, double nll, double n, const moe_loss_sums *drop, double dnll, double dn) {
    if (n > 0) printf("  %-22s %9.0f %8.4f %10.2f", name, n, nll / n, ppl(nll, n));
    else printf("  %-22s %9.0f %8s %10s", name, n, "-", "-");
    if (drop && dn > 0) printf("   %9.4f %10.2f", dnll / dn, ppl(dnll, dn));
    else if (drop) printf("   %9s %10s", "-", "-");
    printf("\n");
}

/* The table on stdout. */
static void print_table(const eval_state *s, const eval_opts *o) {
    const moe_config *c = &s->m->cfg;
    printf("\nmoe eval: %s (%s ffn, %s router, %d experts, top_k %d)\n", s->ckpt, c->ffn, c->router,
           c->n_experts, c->top_k);
    for (size_t i = 0; i < o->n_data; i++) {
        const moe_eval_file *f = &s->files[i];
        const moe_loss_sums *b = f->base, *d = f->drop;
        printf("\n  %-22s %9s %8s %10s", f->name, "tokens", "loss", "ppl");
        if (d) printf("   %9s %10s", "loss -top", "ppl -top");
        printf("\n");
        print_row("all", b->total_nll, b->total_count, d, d ? d->total_nll : 0, d ? d->total_count : 0);
        if (f->n_domains > 1)
            for (size_t k = 0; k < b->n_domains; k++)
                print_row(f->domain_names[k], b->nll[k], b->count[k], d, d ? d->nll[k] : 0, d ? d->count[k] : 0);
        char read[256];
        moe_read_info_text(&b->read, read, sizeof read);
        printf("  (read %s)\n", read);
    }
    for (size_t i = 0; i < o->n_data; i++)
        if (s->files[i].drop && s->drop[i].total_nll == s->base[i].total_nll) {
            if (!moe_ffn_kind_find(c->ffn)->routed)
                printf("\n  note: dropping the top expert changed nothing: the model is dense, it has no experts\n");
            else
                printf("\n  note: dropping the top expert changed nothing: the %s router does not implement it\n",
                       c->router);
            break;
        }
    if (o->n_tasks) printf("\n  %-22s %9s %16s %16s\n", "task", "items", "acc", "acc_norm");
    for (size_t i = 0; i < o->n_tasks; i++)
        printf("  %-22s %9zu %8.4f ±%6.4f %8.4f ±%6.4f\n", s->tk[i].name, s->mr[i].n, s->mr[i].acc,
               s->mr[i].acc_stderr, s->mr[i].acc_norm, s->mr[i].acc_norm_stderr);
    if (o->n_tasks) printf("  (chance: 1 / number of choices; acc_norm divides by the choice's length in bytes)\n");
}

int cmd_eval(int argc, char **argv) {
    eval_opts o = {.batch = 8};
    o.data = calloc((size_t)argc, sizeof *o.data);
    o.tasks = calloc((size_t)argc, sizeof *o.tasks);
    int rc = !o.data || !o.tasks ? -1 : parse(argc, argv, &o);
    if (rc) { free(o.data); free(o.tasks); return rc < 0 ? 1 : rc == 1 ? 0 : 2; }
    if (o.threads) omp_set_num_threads((int)o.threads);
    char stdout_path[32], json_default[4200], note[4600];
    o.json_path = cli_stdout_output(o.json_path, stdout_path, sizeof stdout_path);
    o.json_stdout = o.json_path == stdout_path;
    if (!o.json_path && moe_rundir_is_run(o.model_dir) &&   /* a run directory gets eval.json */
        !moe_rundir_path(json_default, sizeof json_default, o.model_dir, MOE_RUN_EVAL, NULL))
        o.json_path = json_default;
    moe_err err;
    eval_state s = {0};
    rc = 1;
    if (load_inputs(&s, &o, &err) || measure(&s, &o, &err)) goto fail;
    print_table(&s, &o);
    /* this evaluation's results, and those of an earlier one of the same
     * checkpoint on other data files or tasks */
    moe_eval_results r = {o.model_dir, s.ckpt, &s.m->cfg, s.T, s.files, o.n_data, s.tasks, o.n_tasks};
    if (o.json_path) {
        int wrc = moe_eval_write(o.json_path, &r, !o.json_stdout, note, sizeof note, &err);
        if (note[0]) fprintf(stderr, "moe eval: %s\n", note);
        if (wrc) goto fail;
        if (!o.json_stdout) printf("\nmoe eval: wrote %s\n", o.json_path);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe eval: %s\n", err.msg);
done:
    state_free(&s, &o);
    free(o.data);
    free(o.tasks);
    return rc;
}
