/* textdocs.c — reading JSONL, plain text files and folders into documents
 * with domain names (see include/moe/data/textdocs.h). */
#include "moe/data/textdocs.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "moe/data/data.h"
#include "moe/util/fileio.h"
#include "moe/util/json.h"

void moe_docs_free(moe_docs *d) {
    for (size_t i = 0; i < d->n_bufs; i++) free(d->bufs[i]);
    for (size_t i = 0; i < d->n_domains; i++) free(d->domains[i]);
    free(d->bufs);
    free(d->domains);
    free(d->docs);
    memset(d, 0, sizeof *d);
}

static int own(moe_docs *d, char *buf, moe_err *err) {
    if (d->n_bufs == d->cap_bufs) {
        size_t cap = d->cap_bufs ? d->cap_bufs * 2 : 64;
        char **b = realloc(d->bufs, cap * sizeof *b);
        if (!b) { free(buf); return moe_errf(err, "out of memory reading documents"); }
        d->bufs = b;
        d->cap_bufs = cap;
    }
    d->bufs[d->n_bufs++] = buf;
    return 0;
}

static long domain_id(moe_docs *d, const char *name, size_t len, moe_err *err) {
    for (size_t i = 0; i < d->n_domains; i++)
        if (strlen(d->domains[i]) == len && !memcmp(d->domains[i], name, len)) return (long)i;
    char **nd = realloc(d->domains, (d->n_domains + 1) * sizeof *nd);
    if (!nd) return moe_errf(err, "out of memory reading documents");
    d->domains = nd;
    char *s = malloc(len + 1);
    if (!s) return moe_errf(err, "out of memory reading documents");
    memcpy(s, name, len);
    s[len] = 0;
    d->domains[d->n_domains] = s;
    return (long)d->n_domains++;
}

static int push_doc(moe_docs *d, const char *text, size_t len, uint32_t domain, moe_err *err) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 1024;
        moe_docs_doc *nd = realloc(d->docs, cap * sizeof *nd);
        if (!nd) return moe_errf(err, "out of memory reading documents");
        d->docs = nd;
        d->cap = cap;
    }
    d->docs[d->n++] = (moe_docs_doc){text, len, domain};
    d->bytes += len;
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Rewrites moe_json_parse's "\x01:1:COL: msg" into "path:LINE:COL: msg". */
static int json_line_err(moe_err *err, const char *path, size_t line) {
    if (!err) return -1;
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    unsigned col;
    int used = 0;
    if (old[0] == '\x01' && sscanf(old + 1, ":%*d:%u: %n", &col, &used) == 1 && used > 0)
        return moe_errf(err, "%s:%zu:%u: %s", path, line, col, old + 1 + used);
    return moe_errf(err, "%s:%zu: %s", path, line, old[0] == '\x01' ? old + 1 : old);
}

static int add_jsonl(moe_docs *d, const char *path, uint32_t dom, moe_err *err) {
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (!text) return -1;
    char *arena = malloc(len + 1);
    if (!arena) { free(text); return moe_errf(err, "%s: out of memory", path); }
    if (own(d, arena, err)) { free(text); return -1; }
    size_t used = 0, line = 0;
    size_t bom = len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3) ? 3 : 0;   /* a UTF-8 byte-order mark */
    for (size_t p = bom; p < len;) {
        const char *nl = memchr(text + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - text) : len;
        line++;
        size_t n = e - p;
        if (n && text[p + n - 1] == '\r') n--;
        size_t blank = 0;   /* a line of only spaces and tabs holds no document */
        while (blank < n && (text[p + blank] == ' ' || text[p + blank] == '\t')) blank++;
        if (blank < n) {
            moe_json_value *v = moe_json_parse(text + p, n, "\x01", err);
            if (!v) { free(text); return json_line_err(err, path, line); }
            const char *field = d->domain_field ? d->domain_field : "domain";
            const moe_json_value *t = moe_json_get(v, "text"), *dm = moe_json_get(v, field);
            int rc = 0;
            if (v->type != MOE_JSON_OBJECT)
                rc = moe_errf(err, "%s:%zu: expected a JSON object per line, found another value", path, line);
            else if (!t)
                rc = moe_errf(err, "%s:%zu: missing \"text\" field (each line needs {\"text\": \"...\"})", path, line);
            else if (t->type != MOE_JSON_STRING)
                rc = moe_errf(err, "%s:%zu: expected \"text\" to be a string", path, line);
            else if (dm && dm->type != MOE_JSON_STRING)
                rc = moe_errf(err, "%s:%zu: expected \"%s\" to be a string", path, line, field);
            else if (dm && (dm->len == 0 || memchr(dm->string, 0, dm->len)))
                rc = moe_errf(err, "%s:%zu: expected \"%s\" to be a non-empty name without NUL", path, line, field);
            long did = dom;
            if (!rc && dm) did = domain_id(d, dm->string, dm->len, err);
            if (!rc && did >= 0) {
                memcpy(arena + used, t->string, t->len);
                rc = push_doc(d, arena + used, t->len, (uint32_t)did, err);
                used += t->len;
            }
            moe_json_free(v);
            if (rc || did < 0) { free(text); return -1; }
        }
        p = e + 1;
    }
    free(text);
    d->files++;
    return 0;
}

/* A file that is not text to train on: a binary (a NUL byte in its first
 * 64 KiB: a moe token file, an executable, an archive) or JSON lines under
 * a .json name (its "text" fields would not be read): one message saying
 * which and what to do; 0 for text. */
static int not_text(const char *path, const char *text, size_t len, moe_err *err) {
    size_t head = len < 65536 ? len : 65536;
    const char *nul = memchr(text, 0, head);
    if (len >= 8 && !memcmp(text, MOE_TOKENS_MAGIC, 8))
        return moe_errf(err, "%s is a moe token file (written by moe prepare), not text: move it out of the "
                        "input folder", path);
    if (nul)
        return moe_errf(err, "%s is not a text file (a NUL byte at offset %zu): give text files or .jsonl, "
                        "and move other files out of the input folder", path, (size_t)(nul - text));
    if (ends_with(path, ".json")) {
        size_t lines = 0, objects = 0;
        for (const char *p = text, *end = text + len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *q = p;
            while (q < (nl ? nl : end) && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
            if (q < (nl ? nl : end)) { lines++; objects += *q == '{'; }
            p = nl ? nl + 1 : end;
        }
        if (lines > 1 && objects == lines)
            return moe_errf(err, "%s holds JSON lines (one object a line) under a .json name, which prepare "
                            "would read as plain text: rename it to .jsonl to read its \"text\" fields", path);
    }
    return 0;
}

static int add_file(moe_docs *d, const char *path, uint32_t dom, moe_err *err) {
    if (ends_with(path, ".jsonl")) return add_jsonl(d, path, dom, err);
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (text && not_text(path, text, len, err)) { free(text); return -1; }
    if (!text || own(d, text, err)) return -1;
    d->files++;
    return push_doc(d, text, len, dom, err);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* depth 0: the folder given; files under a first-level subfolder take its name */
static int add_dir(moe_docs *d, const char *path, uint32_t dom, int depth, moe_err *err) {
    DIR *dir = opendir(path);
    if (!dir) return moe_errf(err, "%s: cannot open folder", path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) { rc = moe_errf(err, "out of memory listing %s", path); break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) { rc = moe_errf(err, "out of memory listing %s", path); break; }
        n++;
    }
    closedir(dir);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char full[4096];
        int fl = snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (fl < 0 || (size_t)fl >= sizeof full) { rc = moe_errf(err, "path too long: %s/%s", path, names[i]); break; }
        struct stat st;
        if (stat(full, &st)) { rc = moe_errf(err, "%s: cannot stat", full); break; }
        if (S_ISDIR(st.st_mode)) {
            long sub = dom;
            if (depth == 0 && (sub = domain_id(d, names[i], strlen(names[i]), err)) < 0) { rc = -1; break; }
            rc = add_dir(d, full, (uint32_t)sub, depth + 1, err);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_file(d, full, dom, err);
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

int moe_docs_add(moe_docs *d, const char *path, const char *domain, moe_err *err) {
    if (!domain) domain = "default";
    struct stat st;
    if (stat(path, &st)) return moe_errf(err, "%s: no such file or folder", path);
    long dom = domain_id(d, domain, strlen(domain), err);
    if (dom < 0) return -1;
    if (S_ISDIR(st.st_mode)) return add_dir(d, path, (uint32_t)dom, 0, err);
    return add_file(d, path, (uint32_t)dom, err);
}
