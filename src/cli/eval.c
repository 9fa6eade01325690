/* eval.c — `moe eval`: loss and perplexity per token file and per domain
 * (optionally also with each token's top expert dropped), and zero-shot
 * multiple-choice tasks; a table on the terminal and a JSON file
 * (docs/EVAL.md, "eval.json"). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "moe/eval.h"
#include "moe/fileio.h"
#include "moe/json.h"

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

typedef struct {
    const char *path;
    char name[256];
    moe_loss_sums base, drop;
    int have_drop;
    char **domain_names;
    size_t n_domains;
} data_result;

static void base_name(char *out, size_t cap, const char *path, const char *ext) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b), e = strlen(ext);
    if (n > e && !strcmp(b + n - e, ext)) n -= e;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

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

static double ppl(double nll, double n) { return n > 0 ? exp(nll / n) : NAN; }

static void write_sums(moe_buf *b, const moe_loss_sums *s, char **names, size_t n_names) {
    moe_buf_printf(b, "\"tokens\": %.0f, \"loss\": ", s->total_count);
    json_write_double(b, s->total_count > 0 ? s->total_nll / s->total_count : NAN);
    moe_buf_printf(b, ", \"ppl\": ");
    json_write_double(b, ppl(s->total_nll, s->total_count));
    moe_buf_printf(b, ", \"domains\": [");
    for (size_t d = 0; d < s->n_domains; d++) {
        /* a token file without a document table has one domain and no names */
        const char *name = names && d < n_names && names[d] ? names[d] : "all";
        moe_buf_printf(b, "%s{\"name\": ", d ? ", " : "");
        json_write_string(b, name, strlen(name));
        moe_buf_printf(b, ", \"tokens\": %.0f, \"loss\": ", s->count[d]);
        json_write_double(b, s->count[d] > 0 ? s->nll[d] / s->count[d] : NAN);
        moe_buf_printf(b, ", \"ppl\": ");
        json_write_double(b, ppl(s->nll[d], s->count[d]));
        moe_buf_printf(b, "}");
    }
    moe_buf_printf(b, "]");
}

static void print_row(const char *name, double nll, double n, const moe_loss_sums *drop, double dnll, double dn) {
    if (n > 0) printf("  %-22s %9.0f %8.4f %10.2f", name, n, nll / n, ppl(nll, n));
    else printf("  %-22s %9.0f %8s %10s", name, n, "-", "-");
    if (drop && dn > 0) printf("   %9.4f %10.2f", dnll / dn, ppl(dnll, dn));
    else if (drop) printf("   %9s %10s", "-", "-");
    printf("\n");
}

/* v as JSON text (the results kept from an earlier eval.json). */
static void write_value(moe_buf *b, const json_value *v) {
    switch (v->type) {
    case JSON_NULL: moe_buf_printf(b, "null"); break;
    case JSON_BOOL: moe_buf_printf(b, v->boolean ? "true" : "false"); break;
    case JSON_NUMBER: json_write_double(b, v->number); break;
    case JSON_STRING: json_write_string(b, v->string, v->len); break;
    case JSON_ARRAY:
    case JSON_OBJECT:
        moe_buf_printf(b, v->type == JSON_ARRAY ? "[" : "{");
        for (size_t i = 0; i < v->count; i++) {
            if (i) moe_buf_printf(b, ", ");
            if (v->type == JSON_OBJECT) {
                json_write_string(b, v->keys[i], strlen(v->keys[i]));
                moe_buf_printf(b, ": ");
            }
            write_value(b, &v->items[i]);
        }
        moe_buf_printf(b, v->type == JSON_ARRAY ? "]" : "}");
        break;
    }
}

/* The earlier results at path to keep beside this evaluation's: those of
 * the same checkpoint and window length (NULL: none, or none that fit; a
 * line says which were dropped and why). */
static json_value *earlier_results(const char *path, const char *ckpt, size_t T) {
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) return NULL;
    moe_err err;
    json_value *old = json_parse_file(path, &err);
    if (!old) {
        fprintf(stderr, "moe eval: warning: the earlier results in %s cannot be read (%s): replacing them\n",
                path, err.msg);
        return NULL;
    }
    const json_value *c = json_get(old, "checkpoint"), *seq = json_get(old, "seq");
    const char *why = !c || c->type != JSON_STRING ? "no checkpoint recorded"
                    : strcmp(c->string, ckpt) ? "another checkpoint"
                    : !seq || seq->type != JSON_NUMBER || seq->number != (double)T ? "another --seq" : NULL;
    if (why) {
        fprintf(stderr, "moe eval: the earlier results in %s are of %s (%s): replaced, not merged\n", path, why,
                c && c->type == JSON_STRING ? c->string : "?");
        json_free(old);
        return NULL;
    }
    return old;
}

/* Appends the entries of array `key` of old whose "name" is none of
 * names[0..n) (this evaluation's own replace them); first: no entry yet. */
static void keep_entries(moe_buf *b, const json_value *old, const char *key, const char *const *names,
                         size_t n, int first) {
    const json_value *a = old ? json_get(old, key) : NULL;
    for (size_t i = 0; a && a->type == JSON_ARRAY && i < a->count; i++) {
        const json_value *nm = json_get(&a->items[i], "name");
        int replaced = !nm || nm->type != JSON_STRING;
        for (size_t k = 0; k < n && !replaced; k++) replaced = !strcmp(names[k], nm->string);
        if (replaced) continue;
        moe_buf_printf(b, "%s\n ", first ? "" : ",");
        write_value(b, &a->items[i]);
        first = 0;
    }
}

int cmd_eval(int argc, char **argv) {
    const char *cmd = "eval", *model_dir = NULL, *json_path = NULL, *tok_path = NULL;
    const char *precision = NULL;
    const char **data = calloc((size_t)argc, sizeof *data), **tasks = calloc((size_t)argc, sizeof *tasks);
    size_t n_data = 0, n_tasks = 0;
    long max_tokens = 0, limit = 0, seq = 0, batch = 8, threads = 0;
    int robustness = 0;
    if (!data || !tasks) { free(data); free(tasks); return 1; }
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
    cli_begin(&p, cmd, argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        const char *v = p.value;
        int bad = 0;
        switch (c) {
        case 'h': help(stdout); free(data); free(tasks); return 0;
        case O_ROBUSTNESS: robustness = 1; break;
        case O_MODEL: model_dir = v; break;
        case O_DATA: data[n_data++] = v; break;
        case O_TASK: tasks[n_tasks++] = v; break;
        case O_JSON: json_path = v; break;
        case O_TOKENIZER: tok_path = v; break;
        case O_MAX_TOKENS: bad = cli_int(&p, v, 0, 1L << 40, &max_tokens); break;
        case O_LIMIT: bad = cli_int(&p, v, 0, 1L << 30, &limit); break;
        case O_SEQ: bad = cli_int(&p, v, 1, 1 << 20, &seq); break;
        case O_BATCH: bad = cli_int(&p, v, 1, 4096, &batch); break;
        case O_THREADS: bad = cli_int(&p, v, 1, 1024, &threads); break;
        case O_PRECISION: bad = cli_precision(cmd, v); precision = v; break;
        default: bad = 1;
        }
        if (bad) goto usage;
    }
    if (cli_positionals(&p, 0) < 0) goto usage;
    if (!model_dir) { fprintf(stderr, "moe eval: --model DIR is required\n"); goto usage; }
    if (!n_data && !n_tasks) { fprintf(stderr, "moe eval: give at least one --data or --task\n"); goto usage; }
    if (threads) omp_set_num_threads((int)threads);
    char stdout_path[32];
    json_path = cli_stdout_output(json_path, stdout_path, sizeof stdout_path);

    moe_err err;
    moe_model *m = NULL;
    moe_tokenizer *tok = NULL;
    data_result *dr = calloc(n_data ? n_data : 1, sizeof *dr);
    moe_tokens *toks = calloc(n_data ? n_data : 1, sizeof *toks);
    moe_task *tk = calloc(n_tasks ? n_tasks : 1, sizeof *tk);
    moe_mc_result *mr = calloc(n_tasks ? n_tasks : 1, sizeof *mr);
    char ckpt[4096], path[4096], json_default[4200];
    int rc = 1;
    if (!dr || !toks || !tk || !mr) { moe_errf(&err, "out of memory"); goto fail; }
    if (moe_resolve_checkpoint(model_dir, ckpt, sizeof ckpt, &err) || moe_model_load(ckpt, &m, &err)) goto fail;
    if (!json_path) {  /* a run directory gets eval.json */
        if (moe_path(json_default, sizeof json_default, &err, "%s/metrics.jsonl", model_dir)) goto fail;
        if (!access(json_default, F_OK)) {
            if (moe_path(json_default, sizeof json_default, &err, "%s/eval.json", model_dir)) goto fail;
            json_path = json_default;
        }
    }
    if (json_path && json_path != stdout_path && cli_check_writable(json_path, "--json", &err)) goto fail;
    if (cli_inference_precision(cmd, m, precision, &err)) goto fail;
    m->training = 0;
    size_t T = seq ? (size_t)seq : (size_t)m->cfg.seq_len;
    if (T > (size_t)m->cfg.max_seq_len) T = (size_t)m->cfg.max_seq_len;
    /* read everything first, so that bad input fails before the long part */
    for (size_t i = 0; i < n_data; i++) {
        if (moe_tokens_read(data[i], &toks[i], &err)) goto fail;
        cli_warn_data_tokenizer(cmd, ckpt, tok_path, &toks[i], data[i]);
    }
    for (size_t i = 0; i < n_tasks; i++)
        if (resolve_task(tasks[i], path, sizeof path, &err) || moe_task_load(path, &tk[i], &err)) goto fail;
    if (n_tasks) {
        if (moe_checkpoint_tokenizer(ckpt, tok_path, &tok, &err)) goto fail;
        if (!tok) {
            moe_errf(&err, "%s has no tokenizer file, which tasks need: give --tokenizer FILE "
                     "(or train with --tokenizer so checkpoints carry it)", ckpt);
            goto fail;
        }
    }

    for (size_t i = 0; i < n_data; i++) {
        data_result *r = &dr[i];
        r->path = data[i];
        base_name(r->name, sizeof r->name, data[i], ".tok");
        r->domain_names = toks[i].domain_names;
        r->n_domains = toks[i].n_domains;
        fprintf(stderr, "moe eval: %s ...\n", data[i]);
        m->drop_top_expert = 0;
        cli_progress pr;
        cli_progress_start(&pr, cmd, data[i]);
        moe_progress progress = {cli_progress_fn, &pr};
        if (moe_eval_loss(m, &toks[i], (size_t)batch, T, (size_t)max_tokens, &r->base, &progress, &err)) {
            moe_err_prefix(&err, "%s", data[i]);
            goto fail;
        }
        if (robustness) {
            fprintf(stderr, "moe eval: %s, top expert dropped ...\n", data[i]);
            m->drop_top_expert = 1;
            cli_progress_start(&pr, cmd, data[i]);
            int e = moe_eval_loss(m, &toks[i], (size_t)batch, T, (size_t)max_tokens, &r->drop, &progress, &err);
            m->drop_top_expert = 0;
            if (e) { moe_err_prefix(&err, "%s (robustness)", data[i]); goto fail; }
            r->have_drop = 1;
        }
    }
    for (size_t i = 0; i < n_tasks; i++) {
        fprintf(stderr, "moe eval: task %s (%zu items) ...\n", tk[i].name,
                limit && (size_t)limit < tk[i].n ? (size_t)limit : tk[i].n);
        if (moe_mc_eval(m, tok, &tk[i], (size_t)limit, &mr[i], &err)) goto fail;
    }

    /* the table */
    printf("\nmoe eval: %s (%s ffn, %s router, %d experts, top_k %d)\n", ckpt, m->cfg.ffn, m->cfg.router,
           m->cfg.n_experts, m->cfg.top_k);
    for (size_t i = 0; i < n_data; i++) {
        data_result *r = &dr[i];
        printf("\n  %-22s %9s %8s %10s", r->name, "tokens", "loss", "ppl");
        if (r->have_drop) printf("   %9s %10s", "loss -top", "ppl -top");
        printf("\n");
        print_row("all", r->base.total_nll, r->base.total_count, r->have_drop ? &r->drop : NULL,
                  r->drop.total_nll, r->drop.total_count);
        if (r->n_domains > 1)
            for (size_t d = 0; d < r->base.n_domains; d++)
                print_row(r->domain_names[d], r->base.nll[d], r->base.count[d], r->have_drop ? &r->drop : NULL,
                          r->have_drop ? r->drop.nll[d] : 0, r->have_drop ? r->drop.count[d] : 0);
        char read[256];
        moe_read_info_text(&r->base.read, read, sizeof read);
        printf("  (read %s)\n", read);
    }
    for (size_t i = 0; i < n_data; i++)
        if (dr[i].have_drop && dr[i].drop.total_nll == dr[i].base.total_nll) {
            if (!strcmp(m->cfg.ffn, "dense"))
                printf("\n  note: dropping the top expert changed nothing: the model is dense, it has no experts\n");
            else
                printf("\n  note: dropping the top expert changed nothing: the %s router does not implement it\n",
                       m->cfg.router);
            break;
        }
    if (n_tasks) printf("\n  %-22s %9s %16s %16s\n", "task", "items", "acc", "acc_norm");
    for (size_t i = 0; i < n_tasks; i++)
        printf("  %-22s %9zu %8.4f ±%6.4f %8.4f ±%6.4f\n", tk[i].name, mr[i].n, mr[i].acc, mr[i].acc_stderr,
               mr[i].acc_norm, mr[i].acc_norm_stderr);
    if (n_tasks) printf("  (chance: 1 / number of choices; acc_norm divides by the choice's length in bytes)\n");

    /* the JSON: this evaluation's results, and those of an earlier one of
     * the same checkpoint on other data files or tasks */
    json_value *earlier = json_path && json_path != stdout_path ? earlier_results(json_path, ckpt, T) : NULL;
    moe_buf b = {0};
    moe_buf_printf(&b, "{\n\"format\": \"moe-eval\", \"version\": 1,\n\"model\": ");
    json_write_string(&b, model_dir, strlen(model_dir));
    moe_buf_printf(&b, ", \"checkpoint\": ");
    json_write_string(&b, ckpt, strlen(ckpt));
    moe_buf_printf(&b, ", \"ffn\": \"%s\", \"router\": \"%s\", \"n_experts\": %d, \"top_k\": %d, \"seq\": %zu,\n"
                   "\"data\": [", m->cfg.ffn, m->cfg.router, m->cfg.n_experts, m->cfg.top_k, T);
    for (size_t i = 0; i < n_data; i++) {
        data_result *r = &dr[i];
        moe_buf_printf(&b, "%s\n {\"name\": ", i ? "," : "");
        json_write_string(&b, r->name, strlen(r->name));
        moe_buf_printf(&b, ", \"path\": ");
        json_write_string(&b, r->path, strlen(r->path));
        moe_buf_printf(&b, ", ");
        moe_read_info_json(&r->base.read, &b);
        moe_buf_printf(&b, ", ");
        write_sums(&b, &r->base, r->domain_names, r->n_domains);
        if (r->have_drop) {
            moe_buf_printf(&b, ",\n  \"robustness\": {");
            write_sums(&b, &r->drop, r->domain_names, r->n_domains);
            moe_buf_printf(&b, "}");
        }
        moe_buf_printf(&b, "}");
    }
    const char **names = calloc(n_data + n_tasks + 1, sizeof *names);
    for (size_t i = 0; names && i < n_data; i++) names[i] = dr[i].name;
    for (size_t i = 0; names && i < n_tasks; i++) names[n_data + i] = tk[i].name;
    if (names) keep_entries(&b, earlier, "data", names, n_data, n_data == 0);
    moe_buf_printf(&b, "],\n\"tasks\": [");
    for (size_t i = 0; i < n_tasks; i++) {
        moe_buf_printf(&b, "%s\n {\"name\": ", i ? "," : "");
        json_write_string(&b, tk[i].name, strlen(tk[i].name));
        moe_buf_printf(&b, ", \"path\": ");
        json_write_string(&b, tk[i].path, strlen(tk[i].path));
        moe_buf_printf(&b, ", \"items\": %zu, \"acc\": ", mr[i].n);
        json_write_double(&b, mr[i].acc);
        moe_buf_printf(&b, ", \"acc_stderr\": ");
        json_write_double(&b, mr[i].acc_stderr);
        moe_buf_printf(&b, ", \"acc_norm\": ");
        json_write_double(&b, mr[i].acc_norm);
        moe_buf_printf(&b, ", \"acc_norm_stderr\": ");
        json_write_double(&b, mr[i].acc_norm_stderr);
        moe_buf_printf(&b, "}");
    }
    if (names) keep_entries(&b, earlier, "tasks", names + n_data, n_tasks, n_tasks == 0);
    moe_buf_printf(&b, "]\n}\n");
    json_free(earlier);
    if (!names) moe_buf_free(&b);   /* out of memory: refused below, not written without the earlier results */
    free(names);
    if (json_path) {
        if (!b.data || moe_write_file_atomic(json_path, b.data, b.len, &err)) { moe_buf_free(&b); goto fail; }
        if (json_path != stdout_path) printf("\nmoe eval: wrote %s\n", json_path);
    }
    moe_buf_free(&b);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "moe eval: %s\n", err.msg);
done:
    for (size_t i = 0; i < n_data && dr && toks; i++) {
        moe_loss_sums_free(&dr[i].base);
        moe_loss_sums_free(&dr[i].drop);
        moe_tokens_free(&toks[i]);
    }
    for (size_t i = 0; i < n_tasks && tk; i++) moe_task_free(&tk[i]);
    free(dr); free(toks); free(tk); free(mr);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    free(data);
    free(tasks);
    return rc;
usage:
    free(data);
    free(tasks);
    return 2;
}
