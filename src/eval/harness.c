/* harness.c — zero-shot tasks in the JSONL forms that lm-evaluation-harness
 * reads (the Hugging Face datasets' records), turned into moe's multiple-
 * choice items with the harness's prompts (docs/EVAL.md): ARC, BoolQ,
 * HellaSwag, PIQA, RACE (one question per line) and LAMBADA (last word,
 * greedy accuracy). The form is recognised by its keys. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moe/eval/eval.h"
#include "moe/util/json.h"

/* A label that may be an integer or a string of digits ("0"). */
static int int_label(const moe_json_value *v, long *out) {
    if (!v) return -1;
    if (v->type == MOE_JSON_NUMBER && v->number == floor(v->number)) { *out = (long)v->number; return 0; }
    if (v->type == MOE_JSON_BOOL) { *out = v->boolean; return 0; }
    if (v->type == MOE_JSON_STRING && v->len > 0) {
        char *end;
        long x = strtol(v->string, &end, 10);
        if (*end == 0) { *out = x; return 0; }
    }
    return -1;
}

static char *cat(moe_err *err, const char *a, const char *b, const char *c, const char *d) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + strlen(d);
    char *s = moe_malloc(n + 1, err);
    if (s) { strcpy(s, a); strcat(s, b); strcat(s, c); strcat(s, d); }
    return s;
}

/* HellaSwag's preprocess: strip, " [title]" -> ". ", drop "[...]", "  " -> " ". */
static char *hs_clean(const char *in, moe_err *err) {
    size_t n = strlen(in);
    char *s = moe_malloc(2 * n + 1, err);
    if (!s) return NULL;
    while (*in && isspace((unsigned char)*in)) in++;
    n = strlen(in);
    while (n && isspace((unsigned char)in[n - 1])) n--;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!strncmp(in + i, " [title]", 8)) { s[o++] = '.'; s[o++] = ' '; i += 8; continue; }
        if (in[i] == '[') {
            const char *close = memchr(in + i, ']', n - i);
            if (close) { i = (size_t)(close - in) + 1; continue; }
        }
        s[o++] = in[i++];
    }
    s[o] = 0;
    /* "  " -> " " (Python's str.replace: one pass, non-overlapping) */
    size_t w = 0;
    for (size_t r = 0; r < o;) {
        if (s[r] == ' ' && s[r + 1] == ' ') { s[w++] = ' '; r += 2; }
        else s[w++] = s[r++];
    }
    s[w] = 0;
    return s;
}

static int set_choices(moe_mc_item *it, const char *const *texts, size_t n, moe_err *err) {
    it->n_choices = n;
    if (!(it->choices = moe_calloc(n, sizeof(char *), err))) return -1;
    for (size_t c = 0; c < n; c++)
        if (!(it->choices[c] = cat(err, " ", texts[c], "", ""))) return -1;  /* the harness's " " delimiter */
    it->delim_bytes = 1;
    return 0;
}

static int bad(moe_err *err, const char *where, const char *form, const char *what) {
    return moe_errf(err, "%s: %s item: expected %s", where, form, what);
}

int moe_harness_item(const moe_json_value *v, moe_mc_item *it, const char *where, moe_err *err) {
    const moe_json_value *q = moe_json_get_typed(v, "question", MOE_JSON_STRING);
    char *ctx = NULL;
    /* ARC: question, choices {text: [...], label: [...]}, answerKey */
    if (moe_json_get(v, "answerKey")) {
        const moe_json_value *ch = moe_json_get(v, "choices"), *key = moe_json_get_typed(v, "answerKey", MOE_JSON_STRING);
        const moe_json_value *text = ch ? moe_json_get(ch, "text") : NULL, *label = ch ? moe_json_get(ch, "label") : NULL;
        if (!q || !key || !text || !label || text->type != MOE_JSON_ARRAY || label->type != MOE_JSON_ARRAY ||
            text->count < 2 || text->count != label->count)
            return bad(err, where, "ARC", "\"question\", \"choices\": {\"text\": [...], \"label\": [...]} of equal "
                       "length >= 2, and \"answerKey\"");
        const char *t[64];
        if (text->count > 64) return bad(err, where, "ARC", "at most 64 choices");
        it->gold = -1;
        for (size_t c = 0; c < text->count; c++) {
            if (text->items[c].type != MOE_JSON_STRING || label->items[c].type != MOE_JSON_STRING)
                return bad(err, where, "ARC", "strings in choices.text and choices.label");
            t[c] = text->items[c].string;
            if (!strcmp(label->items[c].string, key->string)) it->gold = (int)c;
        }
        if (it->gold < 0) return bad(err, where, "ARC", "\"answerKey\" among choices.label");
        if (!(ctx = cat(err, "Question: ", q->string, "\nAnswer:", ""))) return -1;
        it->context = ctx;
        return set_choices(it, t, text->count, err) ? -1 : 1;
    }
    /* BoolQ: passage, question, label (0 no, 1 yes) */
    if (moe_json_get(v, "passage")) {
        const moe_json_value *p = moe_json_get_typed(v, "passage", MOE_JSON_STRING);
        long lab;
        if (!p || !q || int_label(moe_json_get(v, "label"), &lab) || lab < 0 || lab > 1)
            return bad(err, where, "BoolQ", "\"passage\", \"question\" and \"label\" 0 or 1 (or true/false)");
        if (!(ctx = cat(err, p->string, "\nQuestion: ", q->string, "?\nAnswer:"))) return -1;
        it->context = ctx;
        it->gold = (int)lab;
        const char *t[2] = {"no", "yes"};
        return set_choices(it, t, 2, err) ? -1 : 1;
    }
    /* HellaSwag: activity_label, ctx_a, ctx_b (or ctx), endings, label */
    if (moe_json_get(v, "endings")) {
        const moe_json_value *act = moe_json_get_typed(v, "activity_label", MOE_JSON_STRING),
                         *a = moe_json_get_typed(v, "ctx_a", MOE_JSON_STRING), *b = moe_json_get_typed(v, "ctx_b", MOE_JSON_STRING);
        const moe_json_value *c0 = moe_json_get_typed(v, "ctx", MOE_JSON_STRING), *ends = moe_json_get(v, "endings");
        long lab;
        if (!act || !ends || ends->type != MOE_JSON_ARRAY || ends->count < 2 || ends->count > 64 ||
            int_label(moe_json_get(v, "label"), &lab) || lab < 0 || lab >= (long)ends->count || (!(a && b) && !c0))
            return bad(err, where, "HellaSwag", "\"activity_label\", \"ctx_a\" and \"ctx_b\" (or \"ctx\"), "
                       "\"endings\" (2 to 64 strings) and \"label\" indexing them");
        char *raw;
        if (a && b) {  /* ctx_a + " " + ctx_b.capitalize() */
            char *bc = cat(err, b->string, "", "", "");
            if (!bc) return -1;
            if (bc[0]) {
                bc[0] = (char)toupper((unsigned char)bc[0]);
                for (char *s = bc + 1; *s; s++) *s = (char)tolower((unsigned char)*s);
            }
            raw = cat(err, act->string, ": ", a->string, " ");
            char *r2 = raw ? cat(err, raw, bc, "", "") : NULL;
            free(raw);
            free(bc);
            raw = r2;
        } else {
            raw = cat(err, act->string, ": ", c0->string, "");
        }
        if (!raw) return -1;
        it->context = hs_clean(raw, err);
        free(raw);
        if (!it->context) return -1;
        it->gold = (int)lab;
        char *t[64] = {0};
        int rc = 1;
        for (size_t c = 0; c < ends->count && rc == 1; c++) {
            if (ends->items[c].type != MOE_JSON_STRING) rc = bad(err, where, "HellaSwag", "strings in \"endings\"");
            else if (!(t[c] = hs_clean(ends->items[c].string, err))) rc = -1;
        }
        if (rc == 1 && set_choices(it, (const char *const *)t, ends->count, err)) rc = -1;
        for (size_t c = 0; c < ends->count; c++) free(t[c]);
        return rc;
    }
    /* PIQA: goal, sol1, sol2, label */
    if (moe_json_get(v, "goal")) {
        const moe_json_value *g = moe_json_get_typed(v, "goal", MOE_JSON_STRING), *s1 = moe_json_get_typed(v, "sol1", MOE_JSON_STRING),
                         *s2 = moe_json_get_typed(v, "sol2", MOE_JSON_STRING);
        long lab;
        if (!g || !s1 || !s2 || int_label(moe_json_get(v, "label"), &lab) || lab < 0 || lab > 1)
            return bad(err, where, "PIQA", "\"goal\", \"sol1\", \"sol2\" and \"label\" 0 or 1");
        if (!(ctx = cat(err, "Question: ", g->string, "\nAnswer:", ""))) return -1;
        it->context = ctx;
        it->gold = (int)lab;
        const char *t[2] = {s1->string, s2->string};
        return set_choices(it, t, 2, err) ? -1 : 1;
    }
    /* RACE, one question per line: article, question, options, answer (a letter) */
    if (moe_json_get(v, "article")) {
        const moe_json_value *art = moe_json_get_typed(v, "article", MOE_JSON_STRING), *opts = moe_json_get(v, "options"),
                         *ans = moe_json_get_typed(v, "answer", MOE_JSON_STRING);
        if (!art || !q || !ans || !opts || opts->type != MOE_JSON_ARRAY || opts->count < 2 || opts->count > 26 ||
            strlen(ans->string) != 1 || ans->string[0] < 'A' || ans->string[0] >= 'A' + (int)opts->count)
            return bad(err, where, "RACE", "\"article\", \"question\", \"options\" (2 to 26 strings) and "
                       "\"answer\" a letter A.. indexing them");
        const char *t[26];
        for (size_t c = 0; c < opts->count; c++) {
            if (opts->items[c].type != MOE_JSON_STRING) return bad(err, where, "RACE", "strings in \"options\"");
            t[c] = opts->items[c].string;
        }
        if (!(ctx = cat(err, "Article: ", art->string, "\n\n", q->string))) return -1;
        it->context = ctx;
        it->gold = ans->string[0] - 'A';
        return set_choices(it, t, opts->count, err) ? -1 : 1;
    }
    /* LAMBADA: text; the context is everything before the last space, the
     * target " " + the last word, scored by greedy (argmax) match */
    const moe_json_value *text = moe_json_get_typed(v, "text", MOE_JSON_STRING);
    if (text && !moe_json_get(v, "choices")) {
        const char *sp = strrchr(text->string, ' ');
        if (!sp || sp == text->string || !sp[1])
            return bad(err, where, "LAMBADA", "\"text\" whose last word follows a space");
        size_t cl = (size_t)(sp - text->string);
        if (!(ctx = moe_malloc(cl + 1, err))) return -1;
        memcpy(ctx, text->string, cl);
        ctx[cl] = 0;
        it->context = ctx;
        it->gold = 0;
        it->last_word = 1;
        const char *t[1] = {sp + 1};
        return set_choices(it, t, 1, err) ? -1 : 1;
    }
    return 0;
}
