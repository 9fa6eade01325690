/* generate.c — `moe generate`: sample text from a model with a KV cache
 * (src/model/decode.c): the prompt in one batched prefill, then one decode
 * step per token, streaming the text as it is produced; --interactive keeps
 * the conversation's cache between prompts read line by line, with Ctrl-C
 * stopping an answer and /commands changing the sampling. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/stop_signals.h"
#include "moe/model/decode.h"
#include "moe/model/model.h"
#include "moe/util/rng.h"
#include "moe/data/tokenizer.h"

static void help(FILE *f) {
    fprintf(f,
        "usage: moe generate --model DIR [--prompt TEXT] [--max-tokens N] [--temperature T]\n"
        "                    [--top-k K] [--top-p P] [--seed S] [--tokenizer FILE]\n"
        "                    [--stats] [--interactive] [--precision auto|fp32|bf16]\n\n"
        "Streams the continuation of the prompt to stdout; stops at <|endoftext|> or after\n"
        "N tokens. The prompt is TEXT, else stdin when it is not a terminal, else empty\n"
        "(an empty prompt starts a new document). Decoding uses a KV cache: the prompt\n"
        "runs in one batched pass, then one pass of one token per generated token.\n\n"
        "  --model DIR        model or run directory (its newest checkpoint)\n"
        "  --max-tokens N     tokens to generate per prompt (default 200)\n"
        "  --temperature T    0 is greedy decoding (default 0.8)\n"
        "  --top-k K          sample among the K most probable tokens (default 0: all)\n"
        "  --top-p P          ... then among the fewest whose probability reaches P (default 1: off)\n"
        "  --seed S           sampling seed (default 1): same seed, same text\n"
        "  --tokenizer FILE   else DIR's own 'tokenizer' file, else bytes when vocab_size is 257\n"
        "                    (any other vocab_size without a tokenizer is refused)\n"
        "  --stats            print prefill and decode tokens/s and the mean number of\n"
        "                     active experts per token of each MoE layer to stderr\n"
        "  --interactive      read prompts line by line from stdin; each is appended to the\n"
        "                     conversation (after a newline) and answered; the KV cache is kept.\n"
        "                     An empty line continues the text. Ctrl-C stops the answer being\n"
        "                     written; Ctrl-C at the prompt, or end of input (Ctrl-D), leaves.\n"
        "                     A line starting with / changes the sampling for what follows:\n"
        "                     /temp T, /top-k K, /top-p P, /max N, /seed S, /reset (a new\n"
        "                     conversation), /help; //text sends the text /text.\n"
        "  --precision P      auto, fp32 or bf16 matrix products (default: the model's own)\n\n"
        "When the context reaches the model's max_seq_len, generation slides: it says so on\n"
        "stderr, keeps the last max_seq_len/2 tokens, recomputes their cache and goes on.\n"
        "Models whose router is not causal (expert choice, Lory) are refused (docs/GENERATE.md).\n");
}

/* The state of one generation session. */
typedef struct gen {
    moe_model *m;
    moe_kv_cache *c;
    const moe_tokenizer *tok;
    moe_sampler s;
    moe_rng rng;
    int *hist;                  /* [n_hist] every token run through the model */
    size_t n_hist, cap_hist;
    int *feed;                  /* [cap_feed] tokens of the next prefill */
    size_t cap_feed;
    float *logits;              /* [V] after the last token in the cache */
    uint32_t *unused;           /* [n_unused] ids with no token (holes a rank table
                                 * leaves, e.g. cl100k's 100256): never sampled */
    size_t n_unused;
    int pending;                /* sampled but not yet run through the model; -1 none */
    moe_buf text;               /* decoded bytes not yet printed (incomplete UTF-8) */
    double prefill_s, decode_s;
    size_t prefill_tok, decode_tok;
    volatile sig_atomic_t *stop; /* --interactive: set by Ctrl-C, ends the answer */
} gen;

/* Ctrl-C in --interactive: ends the current answer, or the session at the prompt. */
static volatile sig_atomic_t interrupted = 0;
static void on_interrupt(int sig) { (void)sig; interrupted = 1; }

static int push_hist(gen *g, const int *ids, size_t n, moe_err *err) {
    if (g->n_hist + n > g->cap_hist) {
        size_t cap = g->cap_hist ? g->cap_hist : 256;
        while (cap < g->n_hist + n) cap *= 2;
        int *h = realloc(g->hist, cap * sizeof(int));
        if (!h) return moe_errf(err, "out of memory for the context (%zu tokens)", cap);
        g->hist = h;
        g->cap_hist = cap;
    }
    memcpy(g->hist + g->n_hist, ids, n * sizeof(int));
    g->n_hist += n;
    return 0;
}

/* Runs ids[n] through the model after the cached context. n == 1 after a
 * sampled token is a decode step; anything else a prefill. If the context
 * would pass max_seq_len, slides: keeps its last max_seq_len/2 tokens. */
static int run_tokens(gen *g, const int *ids, size_t n, int is_step, moe_err *err) {
    size_t W = g->c->max_len;
    if (push_hist(g, ids, n, err)) return -1;
    double t0 = moe_now_seconds();
    int rc;
    if (g->c->len + n <= W) {
        rc = is_step ? moe_decode_step(g->m, g->c, ids[0], g->logits, err)
                     : moe_decode_prefill(g->m, g->c, ids, n, g->logits, err);
    } else {
        size_t keep = W / 2 ? W / 2 : 1;
        if (keep > g->n_hist) keep = g->n_hist;
        fprintf(stderr, "\nmoe generate: the context reached max_seq_len %zu; sliding: continuing from "
                        "its last %zu tokens (their cache is recomputed)\n", W, keep);
        moe_kv_cache_rewind(g->c, 0);
        rc = moe_decode_prefill(g->m, g->c, g->hist + g->n_hist - keep, keep, g->logits, err);
        n = keep;
        is_step = 0;
    }
    double dt = moe_now_seconds() - t0;
    if (is_step) { g->decode_s += dt; g->decode_tok += n; }
    else { g->prefill_s += dt; g->prefill_tok += n; }
    return rc;
}

/* Prints the bytes of token id, holding back an incomplete UTF-8 sequence. */
static int emit(gen *g, int id, moe_err *err) {
    size_t len;
    const uint8_t *b = moe_tokenizer_token(g->tok, (uint32_t)id, &len);
    if (!b) return moe_errf(err, "token id %d has no text", id);
    if (moe_buf_append(&g->text, b, len)) return moe_errf(err, "out of memory");
    size_t ready = moe_utf8_complete(g->text.data, g->text.len);
    fwrite(g->text.data, 1, ready, stdout);
    memmove(g->text.data, g->text.data + ready, g->text.len - ready);
    g->text.len -= ready;
    fflush(stdout);
    return 0;
}

static void flush_text(gen *g) {
    fwrite(g->text.data, 1, g->text.len, stdout);
    g->text.len = 0;
    fflush(stdout);
}

/* One turn: runs the pending token and the prompt's ids[n] (an empty
 * context starts with <|endoftext|>), then samples up to max_tokens. */
static int turn(gen *g, const uint32_t *ids, size_t n, long max_tokens, moe_err *err) {
    int eot = (int)moe_tokenizer_eot(g->tok);
    if (n + 2 > g->cap_feed) {
        int *f = realloc(g->feed, (n + 2) * sizeof(int));
        if (!f) return moe_errf(err, "out of memory for a prompt of %zu tokens", n);
        g->feed = f;
        g->cap_feed = n + 2;
    }
    size_t k = 0;
    if (g->pending >= 0) g->feed[k++] = g->pending;
    else if (g->n_hist == 0 && n == 0) g->feed[k++] = eot;
    for (size_t i = 0; i < n; i++) g->feed[k++] = (int)ids[i];
    g->pending = -1;
    if (k && run_tokens(g, g->feed, k, 0, err)) return -1;
    for (long t = 0; t < max_tokens; t++) {
        for (size_t i = 0; i < g->n_unused; i++) g->logits[g->unused[i]] = -INFINITY;
        int next = moe_sample(&g->s, g->logits, &g->rng);
        g->pending = next;
        if (next == eot) break;
        if (emit(g, next, err)) return -1;
        if (g->stop && !*g->stop && cli_sigint_take()) *g->stop = 1;  /* held while computing */
        if (t + 1 == max_tokens || (g->stop && *g->stop)) break;
        g->pending = -1;
        if (run_tokens(g, &next, 1, 1, err)) return -1;
    }
    flush_text(g);
    return 0;
}

static void print_stats(const gen *g) {
    fprintf(stderr, "stats: prefill %zu tokens in %.4f s: %.1f tokens/s\n", g->prefill_tok,
            g->prefill_s, g->prefill_s > 0 ? (double)g->prefill_tok / g->prefill_s : 0.0);
    fprintf(stderr, "stats: decode %zu tokens in %.4f s: %.1f tokens/s\n", g->decode_tok,
            g->decode_s, g->decode_s > 0 ? (double)g->decode_tok / g->decode_s : 0.0);
    const moe_kv_cache *c = g->c;
    int any = 0;
    for (size_t l = 0; l < c->n_layers; l++) {
        if (c->routed_tokens[l] <= 0) continue;
        fprintf(stderr, "stats: layer %zu: %.3f active experts per token of %d (%.0f tokens)\n", l,
                c->active_pairs[l] / c->routed_tokens[l], c->n_experts[l], c->routed_tokens[l]);
        any = 1;
    }
    if (!any) fprintf(stderr, "stats: no MoE layers (dense model)\n");
}

/* A /command of an interactive session: changes the sampling (checked as
 * the options are), starts a new conversation, or lists the commands. The
 * answer is one line on stderr. */
static void session_command(gen *g, const char *line, long *max_tokens, long *seed) {
    char name[16] = "", extra[2];
    double v = 0;
    int n = sscanf(line, "/%15s %lf %1s", name, &v, extra);
    int has = n >= 2;
    if (n == 3) {
        fprintf(stderr, "%s: one value, please (/help lists the commands)\n", line);
    } else if (!strcmp(name, "help") || !strcmp(name, "?")) {
        fprintf(stderr, "/temp T      temperature, 0 (greedy) .. 100; now %g\n"
                        "/top-k K     sample among the K most probable (0: all); now %ld\n"
                        "/top-p P     ... among the fewest reaching P, (0, 1]; now %g\n"
                        "/max N       tokens per answer, 1 .. 1000000; now %ld\n"
                        "/seed S      restart the sampling's random numbers from seed S\n"
                        "/reset       forget the conversation and start a new document\n"
                        "//text       send the text /text\n"
                        "empty line   continue the text; Ctrl-C stops an answer; Ctrl-C at the\n"
                        "             prompt or Ctrl-D leaves\n",
                g->s.temperature, g->s.top_k, g->s.top_p, *max_tokens);
    } else if (!strcmp(name, "reset") && !has) {
        moe_kv_cache_rewind(g->c, 0);
        g->n_hist = 0;
        g->pending = -1;
        fprintf(stderr, "new conversation\n");
    } else if ((!strcmp(name, "temp") || !strcmp(name, "temperature")) && has && v >= 0 && v <= 100) {
        g->s.temperature = v;
        fprintf(stderr, "temperature %g\n", v);
    } else if (!strcmp(name, "top-k") && has && v >= 0 && v <= (1 << 24) && v == (long)v) {
        g->s.top_k = (long)v;
        fprintf(stderr, "top-k %ld\n", g->s.top_k);
    } else if (!strcmp(name, "top-p") && has && v > 0 && v <= 1) {
        g->s.top_p = v;
        fprintf(stderr, "top-p %g\n", v);
    } else if (!strcmp(name, "max") && has && v >= 1 && v <= 1000000 && v == (long)v) {
        *max_tokens = (long)v;
        fprintf(stderr, "at most %ld tokens per answer\n", *max_tokens);
    } else if (!strcmp(name, "seed") && has && v >= 0 && v <= 2147483647 && v == (long)v) {
        *seed = (long)v;
        moe_rng_seed(&g->rng, (uint64_t)*seed);
        fprintf(stderr, "seed %ld\n", *seed);
    } else if (!strcmp(name, "temp") || !strcmp(name, "temperature") || !strcmp(name, "top-k") ||
               !strcmp(name, "top-p") || !strcmp(name, "max") || !strcmp(name, "seed") || !strcmp(name, "reset")) {
        fprintf(stderr, "%s: %s (/help lists the ranges)\n", line,
                !strcmp(name, "reset") ? "takes no value" : has ? "value out of range" : "needs a value");
    } else {
        fprintf(stderr, "unknown command '/%s' (/help lists them; //text sends /text)\n", name);
    }
}

static int read_all(FILE *f, moe_buf *out) {
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (moe_buf_append(out, chunk, r)) return -1;
    return ferror(f) ? -1 : 0;
}

typedef struct gen_opts {
    const char *model_dir, *prompt, *tok_path, *precision;
    long max_tokens, top_k, seed;
    double temp, top_p;
    int stats, interactive;
} gen_opts;

/* 0 to go on, 1 after --help, 2 on a usage error (its line printed). */
static int parse(int argc, char **argv, gen_opts *o) {
    enum { O_MODEL = 256, O_PROMPT, O_TOKENIZER, O_STATS, O_INTERACTIVE, O_MAX_TOKENS, O_TOP_K, O_TOP_P,
           O_SEED, O_TEMPERATURE, O_PRECISION };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
        {"prompt", required_argument, 0, O_PROMPT}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"stats", no_argument, 0, O_STATS}, {"interactive", no_argument, 0, O_INTERACTIVE},
        {"max-tokens", required_argument, 0, O_MAX_TOKENS}, {"top-k", required_argument, 0, O_TOP_K},
        {"top-p", required_argument, 0, O_TOP_P}, {"seed", required_argument, 0, O_SEED},
        {"temperature", required_argument, 0, O_TEMPERATURE},
        {"precision", required_argument, 0, O_PRECISION}, {0, 0, 0, 0}};
    cli_parser p;
    cli_begin(&p, "generate", argc, argv, opts);
    for (int c; (c = cli_next(&p)) != -1;) {
        const char *v = p.value;
        int bad = 0;
        switch (c) {
        case 'h': help(stdout); return 1;
        case O_MODEL: o->model_dir = v; break;
        case O_PROMPT: o->prompt = v; break;
        case O_TOKENIZER: o->tok_path = v; break;
        case O_STATS: o->stats = 1; break;
        case O_INTERACTIVE: o->interactive = 1; break;
        case O_MAX_TOKENS: bad = cli_int(&p, v, 1, 1000000, &o->max_tokens); break;
        case O_TOP_K: bad = cli_int(&p, v, 0, 1 << 24, &o->top_k); break;
        case O_TOP_P: bad = cli_double(&p, v, 1e-9, 1, &o->top_p); break;
        case O_SEED: bad = cli_int(&p, v, 0, 2147483647, &o->seed); break;
        case O_TEMPERATURE: bad = cli_double(&p, v, 0, 100, &o->temp); break;
        case O_PRECISION: bad = cli_precision("generate", v); o->precision = v; break;
        default: return 2;
        }
        if (bad) return 2;
    }
    if (cli_positionals(&p, 0) < 0) return 2;
    if (!o->model_dir) { fprintf(stderr, "moe generate: --model DIR is required\n"); return 2; }
    if (o->interactive && o->prompt) {
        fprintf(stderr, "moe generate: --interactive reads its prompts from stdin; drop --prompt\n");
        return 2;
    }
    return 0;
}

/* The model (refused before its weights are read when it is not causal),
 * its tokenizer (*tok, owned by the caller), the KV cache and the sampler. */
static int gen_open(gen *g, moe_tokenizer **tok, const gen_opts *o, moe_err *err) {
    moe_config cfg;
    char ckpt[4096], path[4200];
    if (moe_resolve_checkpoint(o->model_dir, ckpt, sizeof ckpt, err) ||
        moe_path(path, sizeof path, err, "%s/config.json", ckpt) || moe_config_load(path, &cfg, err) ||
        moe_decode_check(&cfg, err) || moe_model_load_precision(ckpt, o->precision, &g->m, err))
        return -1;
    cli_inference_ready("generate", g->m);
    if (moe_checkpoint_tokenizer(ckpt, o->tok_path, tok, err)) return -1;
    if (!*tok && g->m->cfg.vocab_size != 257)  /* bytes would print garbage */
        return moe_errf(err, "%s has no tokenizer file and its vocab_size is %d, not the 257 of the bytes "
                        "tokenizer: give --tokenizer FILE (the one its data was prepared with), or "
                        "--tokenizer bytes if the data was bytes", ckpt, g->m->cfg.vocab_size);
    if (!*tok && !(*tok = moe_tokenizer_bytes(err))) return -1;  /* no tokenizer, 257 ids: bytes */
    g->tok = *tok;
    uint32_t tv = moe_tokenizer_vocab_size(*tok);
    if (tv > (uint32_t)g->m->cfg.vocab_size)
        return moe_errf(err, "tokenizer has %u ids but the model only %d%s", tv, g->m->cfg.vocab_size,
                        o->tok_path ? "" : " (give --tokenizer FILE)");
    if (moe_kv_cache_create(g->m, &g->c, err) ||
        moe_sampler_init(&g->s, tv, o->temp, o->top_k, o->top_p, err))
        return -1;
    g->logits = malloc((size_t)g->m->cfg.vocab_size * sizeof(float));
    if (!g->logits) return moe_errf(err, "out of memory");
    if (moe_sample_holes(*tok, &g->unused, &g->n_unused, err)) return -1;
    moe_rng_seed(&g->rng, (uint64_t)o->seed);
    return 0;
}

static void gen_free(gen *g) {
    moe_buf_free(&g->text);
    free(g->hist);
    free(g->feed);
    free(g->logits);
    free(g->unused);
    moe_sampler_free(&g->s);
    moe_kv_cache_free(g->c);
    moe_model_free(g->m);
}

/* One prompt (--prompt, else stdin when it is not a terminal, else empty)
 * and its continuation. */
static int one_shot(gen *g, const gen_opts *o, moe_err *err) {
    moe_buf in = {0};
    uint32_t *ids = NULL;
    size_t n = 0;
    const char *text = o->prompt ? o->prompt : "";
    size_t len = o->prompt ? strlen(o->prompt) : 0;
    int rc = -1;
    if (!o->prompt && !isatty(STDIN_FILENO)) {
        if (read_all(stdin, &in)) { moe_errf(err, "cannot read the prompt from stdin"); goto out; }
        text = in.len ? in.data : "";
        len = in.len;
    }
    if (moe_tokenizer_encode(g->tok, text, len, &ids, &n, err)) goto out;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (turn(g, ids, n, o->max_tokens, err)) goto out;
    fputc('\n', stdout);
    rc = 0;
out:
    free(ids);
    moe_buf_free(&in);
    return rc;
}

/* --interactive: prompts line by line from stdin, /commands, Ctrl-C. */
static int interactive(gen *g, long max_tokens, long seed, moe_err *err) {
    int tty = isatty(STDIN_FILENO), eot = (int)moe_tokenizer_eot(g->tok), rc = 0;
    struct sigaction sa = {0};
    sa.sa_handler = on_interrupt;  /* no SA_RESTART: Ctrl-C at the prompt ends the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    g->stop = &interrupted;
    if (tty)
        fputs("moe generate: type a line and press Enter: it is added to the text and answered.\n"
              "An empty line continues the text. Ctrl-C stops an answer; Ctrl-C at the prompt or\n"
              "Ctrl-D leaves. /temp T, /top-k K, /top-p P, /max N change the sampling; /help.\n", stderr);
    moe_buf in = {0};
    uint32_t *ids = NULL;
    char *line = NULL;
    size_t n = 0, line_cap = 0;
    for (ssize_t got;;) {
        if (tty) fputs("> ", stderr);
        interrupted = 0;
        errno = 0;
        cli_sigint_hold(0);  /* only while nothing computes: stop_signals.c */
        got = getline(&line, &line_cap, stdin);
        cli_sigint_hold(1);
        if (got < 0 || interrupted) {  /* end of input, or Ctrl-C at the prompt */
            if (tty) fputc('\n', stderr);
            break;
        }
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        line[len] = '\0';
        if (len && line[0] == '/' && (len < 2 || line[1] != '/')) {
            session_command(g, line, &max_tokens, &seed);
            continue;
        }
        const char *text = line + (len >= 2 && line[0] == '/');  /* //text sends /text */
        len -= (size_t)(text - line);
        /* a new line of the conversation, unless this is its start or a new document */
        in.len = 0;
        if ((len && g->n_hist && g->pending != eot && moe_buf_append(&in, "\n", 1)) ||
            (len && moe_buf_append(&in, text, len))) { rc = moe_errf(err, "out of memory"); break; }
        free(ids);
        ids = NULL;
        if (moe_tokenizer_encode(g->tok, in.len ? in.data : "", in.len, &ids, &n, err) ||
            turn(g, ids, n, max_tokens, err)) { rc = -1; break; }
        fputc('\n', stdout);
        fflush(stdout);
        if (interrupted) fputs("[stopped]\n", stderr);
    }
    free(line);
    free(ids);
    moe_buf_free(&in);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_opts o = {.max_tokens = 200, .seed = 1, .temp = 0.8, .top_p = 1.0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    if (o.interactive) cli_sigint_hold(1);  /* before any thread: every one inherits it */
    moe_err err;
    moe_tokenizer *tok = NULL;
    gen g = {.pending = -1};
    rc = gen_open(&g, &tok, &o, &err) ||
         (o.interactive ? interactive(&g, o.max_tokens, o.seed, &err) : one_shot(&g, &o, &err));
    if (!rc && o.stats) print_stats(&g);
    if (rc) fprintf(stderr, "moe generate: %s\n", err.msg);
    gen_free(&g);
    moe_tokenizer_free(tok);
    return rc;
}
