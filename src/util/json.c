/* json.c — the strict RFC 8259 JSON parser (text -> moe_json_value tree, with
 * "WHAT:LINE:COL: expected X, found Y" errors), the typed member lookups and
 * the JSON text writers. */
#include "moe/util/json.h"
#include "moe/util/fileio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256

/* Parser state. Columns count bytes from the start of the line; newlines can
 * only occur in whitespace (raw control characters are invalid in strings),
 * so line/line_start are updated only by skip_ws(). */
typedef struct parser {
    const char *s;
    size_t len, pos;
    int line;
    size_t line_start;
    int depth;
    const char *what;
    moe_err *err;
} parser;

static int col_of(const parser *p, size_t pos) { return (int)(pos - p->line_start) + 1; }

/* Describes the byte at pos for the "found Y" part of a message. */
static void describe(const parser *p, size_t pos, char *buf, size_t n) {
    if (pos >= p->len) { snprintf(buf, n, "end of input"); return; }
    unsigned char c = (unsigned char)p->s[pos];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, n, "'%c'", c);
    else if (c == '\n') snprintf(buf, n, "newline");
    else if (c < 0x20) snprintf(buf, n, "control character 0x%02X", c);
    else snprintf(buf, n, "byte 0x%02X", c);
}

/* Error at pos: "WHAT:LINE:COL: expected X, found <byte at pos>". */
static int fail_at(parser *p, size_t pos, const char *expected) {
    char found[64];
    describe(p, pos, found, sizeof found);
    return moe_errf(p->err, "%s:%d:%d: expected %s, found %s", p->what, p->line,
                    col_of(p, pos), expected, found);
}

/* Error at pos with a custom "found" text. */
static int fail_found(parser *p, size_t pos, const char *expected, const char *found) {
    return moe_errf(p->err, "%s:%d:%d: expected %s, found %s", p->what, p->line,
                    col_of(p, pos), expected, found);
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == '\n') { p->pos++; p->line++; p->line_start = p->pos; }
        else if (c == ' ' || c == '\t' || c == '\r') p->pos++;
        else break;
    }
}

static void free_contents(moe_json_value *v) {
    if (!v) return;
    if (v->type == MOE_JSON_STRING) free(v->string);
    if (v->type == MOE_JSON_ARRAY || v->type == MOE_JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) {
            free_contents(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

void moe_json_free(moe_json_value *v) {
    free_contents(v);
    free(v);
}

static int parse_value(parser *p, moe_json_value *out);

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads 4 hex digits at p->pos (after "\u"). */
static int parse_hex4(parser *p, unsigned *out) {
    unsigned u = 0;
    for (int i = 0; i < 4; i++) {
        int h = p->pos < p->len ? hexval(p->s[p->pos]) : -1;
        if (h < 0) return fail_at(p, p->pos, "4 hex digits after \\u");
        u = u * 16 + (unsigned)h;
        p->pos++;
    }
    *out = u;
    return 0;
}

static int put_utf8(moe_buf *b, unsigned cp) {
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (unsigned char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (unsigned char)(0xC0 | (cp >> 6)); u[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12)); u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | (cp >> 18)); u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return moe_buf_append(b, u, n);
}

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if invalid
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Parses a string starting at the opening quote into a malloc'd buffer. */
static int parse_string(parser *p, char **out, size_t *out_len) {
    moe_buf b = {0};
    p->pos++;  /* opening quote */
    for (;;) {
        if (p->pos >= p->len) { moe_buf_free(&b); return fail_at(p, p->pos, "closing '\"' of string"); }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) {
            moe_buf_free(&b);
            return fail_at(p, p->pos, "an escape sequence for control characters in a string");
        }
        if (c == '\\') {
            size_t esc = p->pos;
            p->pos++;
            char e = p->pos < p->len ? p->s[p->pos] : 0;
            const char *simple = NULL;
            switch (e) {
            case '"': simple = "\""; break;
            case '\\': simple = "\\"; break;
            case '/': simple = "/"; break;
            case 'b': simple = "\b"; break;
            case 'f': simple = "\f"; break;
            case 'n': simple = "\n"; break;
            case 'r': simple = "\r"; break;
            case 't': simple = "\t"; break;
            default: break;
            }
            if (simple) {
                p->pos++;
                if (moe_buf_append(&b, simple, 1)) goto oom;
                continue;
            }
            if (e != 'u') {
                moe_buf_free(&b);
                return fail_at(p, p->pos, "one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u after '\\'");
            }
            p->pos++;
            unsigned cp = 0;
            if (parse_hex4(p, &cp)) { moe_buf_free(&b); return -1; }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                moe_buf_free(&b);
                return fail_found(p, esc, "a high surrogate (\\uD800-\\uDBFF) before a low surrogate",
                                  "a lone low surrogate");
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                size_t lo_at = p->pos;
                unsigned lo = 0;
                if (p->pos + 1 < p->len && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
                    p->pos += 2;
                    if (parse_hex4(p, &lo)) { moe_buf_free(&b); return -1; }
                }
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    moe_buf_free(&b);
                    return fail_found(p, lo_at, "a low surrogate \\uDC00-\\uDFFF after a high surrogate",
                                      lo ? "another escape" : "no \\u escape");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (put_utf8(&b, cp)) goto oom;
            continue;
        }
        size_t n = utf8_len((const unsigned char *)p->s + p->pos, p->len - p->pos);
        if (n == 0) { moe_buf_free(&b); return fail_at(p, p->pos, "valid UTF-8 in string"); }
        if (moe_buf_append(&b, p->s + p->pos, n)) goto oom;
        p->pos += n;
    }
    if (!b.data && moe_buf_append(&b, "", 0)) goto oom;
    *out = b.data;
    *out_len = b.len;
    return 0;
oom:
    moe_buf_free(&b);
    return moe_errf(p->err, "%s: out of memory parsing a string", p->what);
}

static int is_digit(const parser *p, size_t i) {
    return i < p->len && p->s[i] >= '0' && p->s[i] <= '9';
}

/* Validates the RFC 8259 number grammar, then converts with strtod. */
static int parse_number(parser *p, moe_json_value *out) {
    size_t start = p->pos, i = p->pos;
    if (i < p->len && p->s[i] == '-') i++;
    if (!is_digit(p, i)) return fail_at(p, i, "a digit in number");
    if (p->s[i] == '0') {
        i++;
        if (is_digit(p, i)) return fail_at(p, i, "'.', 'e' or the end of the number after a leading 0");
    } else {
        while (is_digit(p, i)) i++;
    }
    if (i < p->len && p->s[i] == '.') {
        i++;
        if (!is_digit(p, i)) return fail_at(p, i, "a digit after the decimal point");
        while (is_digit(p, i)) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (!is_digit(p, i)) return fail_at(p, i, "a digit in the exponent");
        while (is_digit(p, i)) i++;
    }
    size_t n = i - start;
    char small[64], *buf = small;
    if (n >= sizeof small) {
        buf = malloc(n + 1);
        if (!buf) return moe_errf(p->err, "%s: out of memory parsing a number", p->what);
    }
    memcpy(buf, p->s + start, n);
    buf[n] = '\0';
    errno = 0;
    double x = strtod(buf, NULL);
    int range = errno == ERANGE && isinf(x);
    if (range) {
        char found[96];
        snprintf(found, sizeof found, "%.*s%s", n > 40 ? 40 : (int)n, buf, n > 40 ? "..." : "");
        if (buf != small) free(buf);
        return fail_found(p, start, "a number within the range of a double", found);
    }
    if (buf != small) free(buf);
    out->type = MOE_JSON_NUMBER;
    out->number = x;
    p->pos = i;
    return 0;
}

static int parse_literal(parser *p, const char *word, moe_json_value *out, moe_json_type t, int b) {
    size_t n = strlen(word);
    for (size_t i = 0; i < n; i++) {
        if (p->pos + i >= p->len || p->s[p->pos + i] != word[i]) {
            char exp[32];
            snprintf(exp, sizeof exp, "'%s'", word);
            return fail_at(p, p->pos + i, exp);
        }
    }
    p->pos += n;
    out->type = t;
    out->boolean = b;
    return 0;
}

/* Grows items (and keys, for objects) to hold at least need entries. */
static int grow(parser *p, moe_json_value *v, size_t *cap, size_t need, int with_keys) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    moe_json_value *items = realloc(v->items, nc * sizeof *items);
    if (!items) return moe_errf(p->err, "%s: out of memory parsing", p->what);
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return moe_errf(p->err, "%s: out of memory parsing", p->what);
        v->keys = keys;
    }
    *cap = nc;
    return 0;
}

static int parse_array(parser *p, moe_json_value *out) {
    size_t cap = 0;
    out->type = MOE_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return 0; }
    for (;;) {
        if (grow(p, out, &cap, out->count + 1, 0)) return -1;
        moe_json_value *item = &out->items[out->count];
        memset(item, 0, sizeof *item);
        int rc = parse_value(p, item);
        out->count++;   /* counted even on failure so moe_json_free releases it */
        if (rc) return -1;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; skip_ws(p); continue; }
        if (p->pos < p->len && p->s[p->pos] == ']') { p->pos++; return 0; }
        return fail_at(p, p->pos, "',' or ']' after array element");
    }
}

/* Duplicate-key detection: an open-addressing hash of key indices. */
typedef struct keyset { size_t *slot; size_t cap; } keyset;

static size_t hash_str(const char *s) {
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Returns 1 if keys[idx] already occurs in the set, 0 if added, -1 on OOM. */
static int keyset_add(keyset *ks, char **keys, size_t idx) {
    if ((idx + 1) * 2 > ks->cap) {
        size_t nc = ks->cap ? ks->cap * 2 : 16;
        size_t *ns = malloc(nc * sizeof *ns);
        if (!ns) return -1;
        for (size_t i = 0; i < nc; i++) ns[i] = (size_t)-1;
        for (size_t i = 0; i < ks->cap; i++) {
            if (ks->slot[i] == (size_t)-1) continue;
            size_t h = hash_str(keys[ks->slot[i]]) & (nc - 1);
            while (ns[h] != (size_t)-1) h = (h + 1) & (nc - 1);
            ns[h] = ks->slot[i];
        }
        free(ks->slot);
        ks->slot = ns;
        ks->cap = nc;
    }
    size_t h = hash_str(keys[idx]) & (ks->cap - 1);
    while (ks->slot[h] != (size_t)-1) {
        if (strcmp(keys[ks->slot[h]], keys[idx]) == 0) return 1;
        h = (h + 1) & (ks->cap - 1);
    }
    ks->slot[h] = idx;
    return 0;
}

static int parse_object(parser *p, moe_json_value *out) {
    size_t cap = 0;
    keyset ks = {0};
    int rc = -1;
    out->type = MOE_JSON_OBJECT;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; return 0; }
    for (;;) {
        if (p->pos >= p->len || p->s[p->pos] != '"') {
            fail_at(p, p->pos, out->count ? "a string key after ','" : "a string key or '}'");
            goto done;
        }
        size_t key_at = p->pos;
        char *key;
        size_t key_len;
        if (parse_string(p, &key, &key_len)) goto done;
        if (strlen(key) != key_len) {
            free(key);
            fail_found(p, key_at, "an object key without \\u0000", "a key containing \\u0000");
            goto done;
        }
        if (grow(p, out, &cap, out->count + 1, 1)) { free(key); goto done; }
        out->keys[out->count] = key;
        moe_json_value *item = &out->items[out->count];
        memset(item, 0, sizeof *item);
        out->count++;
        int dup = keyset_add(&ks, out->keys, out->count - 1);
        if (dup < 0) { moe_errf(p->err, "%s: out of memory parsing", p->what); goto done; }
        if (dup) {
            char found[300];
            snprintf(found, sizeof found, "duplicate key \"%.200s\"", key);
            fail_found(p, key_at, "unique object keys", found);
            goto done;
        }
        skip_ws(p);
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            fail_at(p, p->pos, "':' after object key");
            goto done;
        }
        p->pos++;
        if (parse_value(p, item)) goto done;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; skip_ws(p); continue; }
        if (p->pos < p->len && p->s[p->pos] == '}') { p->pos++; rc = 0; goto done; }
        fail_at(p, p->pos, "',' or '}' after object member");
        goto done;
    }
done:
    free(ks.slot);
    return rc;
}

static int parse_value(parser *p, moe_json_value *out) {
    skip_ws(p);
    out->line = p->line;
    out->col = col_of(p, p->pos);
    if (p->pos >= p->len) return fail_at(p, p->pos, "a JSON value");
    char c = p->s[p->pos];
    switch (c) {
    case '{':
    case '[': {
        if (p->depth >= JSON_MAX_DEPTH) {
            char found[64];
            snprintf(found, sizeof found, "'%c' at depth %d", c, p->depth + 1);
            return fail_found(p, p->pos, "nesting at most 256 levels deep", found);
        }
        p->depth++;
        int rc = c == '{' ? parse_object(p, out) : parse_array(p, out);
        p->depth--;
        return rc;
    }
    case '"':
        out->type = MOE_JSON_STRING;
        return parse_string(p, &out->string, &out->len);
    case 't': return parse_literal(p, "true", out, MOE_JSON_BOOL, 1);
    case 'f': return parse_literal(p, "false", out, MOE_JSON_BOOL, 0);
    case 'n': return parse_literal(p, "null", out, MOE_JSON_NULL, 0);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
        return fail_at(p, p->pos, "a JSON value");
    }
}

moe_json_value *moe_json_parse(const char *text, size_t len, const char *what, moe_err *err) {
    parser p = {.s = text, .len = text ? len : 0, .line = 1, .what = what ? what : "<json>", .err = err};
    moe_json_value *v = moe_calloc(1, sizeof *v, err);
    if (!v) return NULL;
    if (parse_value(&p, v)) { moe_json_free(v); return NULL; }
    skip_ws(&p);
    if (p.pos < p.len) {
        fail_at(&p, p.pos, "end of input after the JSON value");
        moe_json_free(v);
        return NULL;
    }
    return v;
}

moe_json_value *moe_json_parse_file(const char *path, moe_err *err) {
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (!text) return NULL;
    moe_json_value *v = moe_json_parse(text, len, path, err);
    free(text);
    return v;
}

const moe_json_value *moe_json_get(const moe_json_value *obj, const char *key) {
    if (!obj || obj->type != MOE_JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const moe_json_value *moe_json_get_typed(const moe_json_value *obj, const char *key, moe_json_type type) {
    const moe_json_value *v = moe_json_get(obj, key);
    return v && v->type == type ? v : NULL;
}

double moe_json_get_number(const moe_json_value *obj, const char *key, double dflt) {
    const moe_json_value *v = moe_json_get_typed(obj, key, MOE_JSON_NUMBER);
    return v ? v->number : dflt;
}

const char *moe_json_get_string(const moe_json_value *obj, const char *key, const char *dflt) {
    const moe_json_value *v = moe_json_get_typed(obj, key, MOE_JSON_STRING);
    return v ? v->string : dflt;
}

int moe_json_get_bool(const moe_json_value *obj, const char *key, int dflt) {
    const moe_json_value *v = moe_json_get_typed(obj, key, MOE_JSON_BOOL);
    return v ? v->boolean : dflt;
}

const char *moe_json_type_name(moe_json_type t) {
    switch (t) {
    case MOE_JSON_NULL: return "null";
    case MOE_JSON_BOOL: return "a boolean";
    case MOE_JSON_NUMBER: return "a number";
    case MOE_JSON_STRING: return "a string";
    case MOE_JSON_ARRAY: return "an array";
    case MOE_JSON_OBJECT: return "an object";
    }
    return "?";
}

int moe_json_write_string(moe_buf *b, const char *s, size_t len) {
    if (moe_buf_append(b, "\"", 1)) return -1;
    size_t run = 0;  /* bytes copied verbatim, flushed before each escape */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); e = esc; }
            break;
        }
        if (!e) { run++; continue; }
        if (run && moe_buf_append(b, s + i - run, run)) return -1;
        run = 0;
        if (moe_buf_append(b, e, strlen(e))) return -1;
    }
    if (run && moe_buf_append(b, s + len - run, run)) return -1;
    return moe_buf_append(b, "\"", 1);
}

void moe_json_format_double(char *buf, size_t cap, double x) {
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, cap, "%.*g", digits, x);
        if (digits == 17 || strtod(buf, NULL) == x) return;
    }
}

void moe_json_format_float(char *buf, size_t cap, float x) {
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)x);
        /* read back as a float, and as a double then rounded (Python, numpy) */
        if (digits == 9 || (strtof(buf, NULL) == x && (float)strtod(buf, NULL) == x)) return;
    }
}

int moe_json_write_double(moe_buf *b, double x) {
    if (!isfinite(x)) return moe_buf_append(b, "null", 4);
    char s[32];
    moe_json_format_double(s, sizeof s, x);
    return moe_buf_append(b, s, strlen(s));
}

int moe_json_write_float(moe_buf *b, float x) {
    if (!isfinite(x)) return moe_buf_append(b, "null", 4);
    char s[32];
    moe_json_format_float(s, sizeof s, x);
    return moe_buf_append(b, s, strlen(s));
}
