/* test_json.c — unit tests of the strict JSON parser and the JSON writers. */
#include "harness.h"
#include "moe/util/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static moe_json_value *parse(const char *s, moe_err *err) {
    return moe_json_parse(s, strlen(s), "t.json", err);
}

/* Parsing must fail and the message must contain `want`. */
static void expect_error(const char *text, const char *want) {
    moe_err err = {{0}};
    moe_json_value *v = parse(text, &err);
    CHECK(v == NULL, "parsed invalid JSON: %s", text);
    CHECK(strstr(err.msg, want) != NULL, "input %s: message '%s' lacks '%s'", text, err.msg, want);
    CHECK(strncmp(err.msg, "t.json:", 7) == 0, "message '%s' does not start with the source", err.msg);
    CHECK(strchr(err.msg, '\n') == NULL, "message '%s' is not one line", err.msg);
    moe_json_free(v);
}

static void test_document(void) {
    moe_err err = {{0}};
    const char *text = "{\n  \"b\": [1, -2.5e3, true, false, null],\n  \"a\": {\"x\": \"y\"},\n  \"\": 0\n}\n";
    moe_json_value *v = parse(text, &err);
    CHECK(v != NULL, "%s", err.msg);
    if (!v) return;
    CHECK(v->type == MOE_JSON_OBJECT && v->count == 3, "type %d count %zu", v->type, v->count);
    CHECK(strcmp(v->keys[0], "b") == 0 && strcmp(v->keys[1], "a") == 0 && strcmp(v->keys[2], "") == 0,
          "key order lost");
    const moe_json_value *b = moe_json_get(v, "b");
    CHECK(b && b->type == MOE_JSON_ARRAY && b->count == 5, "b");
    if (b && b->count == 5) {
        CHECK(b->items[0].number == 1 && b->items[1].number == -2500, "numbers");
        CHECK(b->items[2].type == MOE_JSON_BOOL && b->items[2].boolean == 1, "true");
        CHECK(b->items[3].type == MOE_JSON_BOOL && b->items[3].boolean == 0, "false");
        CHECK(b->items[4].type == MOE_JSON_NULL, "null");
        CHECK(b->line == 2 && b->col == 8, "b at %d:%d", b->line, b->col);
        CHECK(b->items[1].line == 2 && b->items[1].col == 12, "b[1] at %d:%d", b->items[1].line, b->items[1].col);
    }
    const moe_json_value *x = moe_json_get(moe_json_get(v, "a"), "x");
    CHECK(x && x->type == MOE_JSON_STRING && strcmp(x->string, "y") == 0 && x->len == 1, "a.x");
    CHECK(moe_json_get(v, "missing") == NULL, "missing key");
    CHECK(moe_json_get(b, "b") == NULL, "moe_json_get on an array");
    CHECK(v->line == 1 && v->col == 1, "root at %d:%d", v->line, v->col);
    moe_json_free(v);

    v = parse("  42  ", &err);
    CHECK(v && v->type == MOE_JSON_NUMBER && v->number == 42, "scalar root");
    moe_json_free(v);
    v = parse("[]", &err);
    CHECK(v && v->type == MOE_JSON_ARRAY && v->count == 0, "empty array");
    moe_json_free(v);
    v = parse("{}", &err);
    CHECK(v && v->type == MOE_JSON_OBJECT && v->count == 0, "empty object");
    moe_json_free(v);
}

static void test_strings(void) {
    moe_err err = {{0}};
    moe_json_value *v = parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\\u0000z\"", &err);
    CHECK(v && v->type == MOE_JSON_STRING, "%s", err.msg);
    if (v) {
        const char want[] = "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\0z";
        CHECK(v->len == sizeof want - 1, "len %zu", v->len);
        CHECK(memcmp(v->string, want, sizeof want) == 0, "decoded bytes differ");
    }
    moe_json_free(v);
    v = parse("\"h\xc3\xa9llo \xf0\x9f\x98\x80\"", &err);   /* raw UTF-8 passes through */
    CHECK(v && strcmp(v->string, "h\xc3\xa9llo \xf0\x9f\x98\x80") == 0, "raw UTF-8");
    moe_json_free(v);
}

static void test_rejections(void) {
    expect_error("", "t.json:1:1: expected a JSON value, found end of input");
    expect_error("   \n  ", "t.json:2:3: expected a JSON value, found end of input");
    expect_error("{\"a\": 1,\n \"b\" 2}", "t.json:2:6: expected ':' after object key, found '2'");
    expect_error("{\"a\": 1 x}", "t.json:1:9: expected ',' or '}' after object member, found 'x'");
    expect_error("{\"a\": 1,}", "expected a string key after ',', found '}'");
    expect_error("{a: 1}", "expected a string key or '}', found 'a'");
    expect_error("[1, 2", "expected ',' or ']' after array element, found end of input");
    expect_error("[1,]", "expected a JSON value, found ']'");
    expect_error("[1] 2", "t.json:1:5: expected end of input after the JSON value, found '2'");
    expect_error("{} {}", "expected end of input after the JSON value, found '{'");
    expect_error("tru", "expected 'true', found end of input");
    expect_error("nul1", "expected 'null', found '1'");
    expect_error("falsy", "expected 'false', found 'y'");
    expect_error("True", "expected a JSON value, found 'T'");
    expect_error("{\"k\": 1, \"k\": 2}", "t.json:1:10: expected unique object keys, found duplicate key \"k\"");
    expect_error("{\"a\\u0000b\": 1}", "found a key containing \\u0000");
    /* strings */
    expect_error("\"abc", "expected closing '\"' of string, found end of input");
    expect_error("\"a\nb\"", "t.json:1:3: expected an escape sequence for control characters in a string, found newline");
    expect_error("\"a\tb\"", "found control character 0x09");
    expect_error("\"\\x\"", "expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u after '\\', found 'x'");
    expect_error("\"\\u12g4\"", "expected 4 hex digits after \\u, found 'g'");
    expect_error("\"\\ud83d\"", "expected a low surrogate \\uDC00-\\uDFFF after a high surrogate, found no \\u escape");
    expect_error("\"\\ud83d\\u0041\"", "found another escape");
    expect_error("\"\\ude00\"", "found a lone low surrogate");
    expect_error("\"\xff\"", "expected valid UTF-8 in string, found byte 0xFF");
    expect_error("\"\xc0\xaf\"", "expected valid UTF-8 in string");        /* overlong '/' */
    expect_error("\"\xed\xa0\x80\"", "expected valid UTF-8 in string");     /* encoded surrogate */
    expect_error("\xef\xbb\xbf{}", "expected a JSON value, found byte 0xEF"); /* BOM */
    /* numbers */
    expect_error("01", "expected '.', 'e' or the end of the number after a leading 0, found '1'");
    expect_error("-", "expected a digit in number, found end of input");
    expect_error("-a", "expected a digit in number, found 'a'");
    expect_error("1.", "expected a digit after the decimal point, found end of input");
    expect_error("1.e5", "expected a digit after the decimal point, found 'e'");
    expect_error(".5", "expected a JSON value, found '.'");
    expect_error("+1", "expected a JSON value, found '+'");
    expect_error("1e", "expected a digit in the exponent, found end of input");
    expect_error("1e+", "expected a digit in the exponent");
    expect_error("0x10", "expected end of input after the JSON value, found 'x'");
    expect_error("NaN", "expected a JSON value, found 'N'");
    expect_error("-Infinity", "expected a digit in number, found 'I'");
    expect_error("[1e400]", "t.json:1:2: expected a number within the range of a double, found 1e400");
}

static void test_numbers(void) {
    const char *ok[] = {"0", "-0", "1", "-1", "0.5", "1e10", "1E-10", "1e+2", "123456789012345678901234567890",
                        "2.2250738585072014e-308", "4.9e-324", "1e-400", "1.7976931348623157e308"};
    double want[] = {0, -0.0, 1, -1, 0.5, 1e10, 1e-10, 100, 123456789012345678901234567890.0,
                     2.2250738585072014e-308, 4.9e-324, 0, 1.7976931348623157e308};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        moe_err err = {{0}};
        moe_json_value *v = parse(ok[i], &err);
        CHECK(v && v->type == MOE_JSON_NUMBER && v->number == want[i], "%s: %s", ok[i], err.msg);
        moe_json_free(v);
    }
    moe_err err = {{0}};
    moe_json_value *v = parse("-0", &err);
    CHECK(v && signbit(v->number), "-0 keeps its sign");
    moe_json_free(v);
}

static void test_depth(void) {
    char buf[2 * 300 + 1];
    for (int depth = 255; depth <= 258; depth++) {
        memset(buf, '[', (size_t)depth);
        memset(buf + depth, ']', (size_t)depth);
        buf[2 * depth] = '\0';
        moe_err err = {{0}};
        moe_json_value *v = parse(buf, &err);
        if (depth <= 256) CHECK(v != NULL, "depth %d rejected: %s", depth, err.msg);
        else CHECK(v == NULL && strstr(err.msg, "t.json:1:257: expected nesting at most 256 levels deep"),
                   "depth %d: %s", depth, err.msg);
        moe_json_free(v);
    }
    /* deep nesting of objects counts the same way */
    moe_buf b = {0};
    for (int i = 0; i < 257; i++) moe_buf_printf(&b, "{\"k\":");
    moe_buf_printf(&b, "1");
    for (int i = 0; i < 257; i++) moe_buf_printf(&b, "}");
    moe_err err = {{0}};
    moe_json_value *v = parse(b.data, &err);
    CHECK(v == NULL && strstr(err.msg, "nesting at most 256"), "%s", err.msg);
    moe_json_free(v);
    moe_buf_free(&b);
}

static void test_write_string(void) {
    const char raw[] = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\0end";
    moe_buf b = {0};
    CHECK(moe_json_write_string(&b, raw, sizeof raw - 1) == 0, "write");
    CHECK(strcmp(b.data, "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f \xc3\xa9\\u0000end\"") == 0,
          "escaped as %s", b.data);
    moe_err err = {{0}};
    moe_json_value *v = moe_json_parse(b.data, b.len, "w", &err);
    CHECK(v && v->type == MOE_JSON_STRING && v->len == sizeof raw - 1 && memcmp(v->string, raw, v->len) == 0,
          "round trip: %s", err.msg);
    moe_json_free(v);
    moe_buf_free(&b);
    CHECK(moe_json_write_string(&b, "", 0) == 0 && strcmp(b.data, "\"\"") == 0, "empty string");
    moe_buf_free(&b);
}

static void test_write_numbers(void) {
    double ds[] = {0.1, 1.0 / 3.0, -0.0, 1e-300, 4.9e-324, 1.7976931348623157e308, 123456789.0, -2.5};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        moe_buf b = {0};
        CHECK(moe_json_write_double(&b, ds[i]) == 0, "write");
        moe_err err = {{0}};
        moe_json_value *v = moe_json_parse(b.data, b.len, "d", &err);
        CHECK(v && v->type == MOE_JSON_NUMBER && memcmp(&v->number, &ds[i], sizeof(double)) == 0,
              "%.17g written as %s: %s", ds[i], b.data, err.msg);
        moe_json_free(v);
        moe_buf_free(&b);
    }
    float fs[] = {0.1f, 1.0f / 3.0f, -0.0f, 1e-45f, 3.4028235e38f, 16777217.0f, -7.25f};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) {
        moe_buf b = {0};
        CHECK(moe_json_write_float(&b, fs[i]) == 0, "write");
        moe_err err = {{0}};
        moe_json_value *v = moe_json_parse(b.data, b.len, "f", &err);
        float back = v ? (float)v->number : 1.0f;
        CHECK(v && memcmp(&back, &fs[i], sizeof(float)) == 0, "%.9g written as %s", (double)fs[i], b.data);
        moe_json_free(v);
        moe_buf_free(&b);
    }
    moe_buf b = {0};
    moe_json_write_double(&b, NAN);
    moe_buf_append(&b, ",", 1);
    moe_json_write_double(&b, -INFINITY);
    moe_buf_append(&b, ",", 1);
    moe_json_write_float(&b, INFINITY);
    moe_buf_append(&b, ",", 1);
    moe_json_write_float(&b, NAN);
    CHECK(strcmp(b.data, "null,null,null,null") == 0, "non-finite written as %s", b.data);
    moe_buf_free(&b);
}

/* The shortest text that reads back exactly: 0.9 is "0.9", not
 * "0.90000000000000002"; and on random bit patterns, whatever is written
 * reads back bit-identically and is the first of %.15g / %.16g / %.17g
 * (%.6g .. %.9g for floats) that does. */
static void test_write_shortest(void) {
    const struct { double x; const char *want; } d[] = {
        {0.9, "0.9"}, {0.999, "0.999"}, {1e-8, "1e-08"}, {5e-4, "0.0005"}, {0.1 + 0.2, "0.30000000000000004"},
        {10000, "10000"}, {-2.5, "-2.5"}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        moe_buf b = {0};
        moe_json_write_double(&b, d[i].x);
        CHECK(b.data && strcmp(b.data, d[i].want) == 0, "%.17g written as %s, want %s", d[i].x, b.data, d[i].want);
        moe_buf_free(&b);
    }
    const struct { float x; const char *want; } f[] = {{0.9f, "0.9"}, {1e-8f, "1e-08"}, {0.1f, "0.1"}, {16777216.0f, "16777216"}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        moe_buf b = {0};
        moe_json_write_float(&b, f[i].x);
        CHECK(b.data && strcmp(b.data, f[i].want) == 0, "%.9g written as %s, want %s", (double)f[i].x, b.data, f[i].want);
        moe_buf_free(&b);
    }
    uint64_t s = 0x243F6A8885A308D3ull;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        double x;
        float y;
        uint32_t w = (uint32_t)(s >> 32);
        memcpy(&x, &s, sizeof x);
        memcpy(&y, &w, sizeof y);
        char got[32], want[32];
        if (isfinite(x)) {
            moe_json_format_double(got, sizeof got, x);
            for (int p = 15; p <= 17; p++) {
                snprintf(want, sizeof want, "%.*g", p, x);
                if (p == 17 || strtod(want, NULL) == x) break;
            }
            bad += strtod(got, NULL) != x || strcmp(got, want) != 0;
        }
        if (isfinite(y)) {
            moe_json_format_float(got, sizeof got, y);
            bad += strtof(got, NULL) != y || (float)strtod(got, NULL) != y || strlen(got) > 15;
        }
    }
    CHECK(bad == 0, "%d random numbers not written in their shortest exact form", bad);
}

static void test_file(void) {
    moe_err err = {{0}};
    moe_json_value *v = moe_json_parse_file("/nonexistent/dir/x.json", &err);
    CHECK(v == NULL && strstr(err.msg, "cannot open /nonexistent/dir/x.json: No such file or directory"),
          "%s", err.msg);
    char path[64];
    snprintf(path, sizeof path, "/tmp/moe_test_json_%d.json", (int)getpid());
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL, "cannot create %s", path);
    if (!fp) return;
    fputs("{\"a\": [1,\n 2 3]}", fp);
    fclose(fp);
    v = moe_json_parse_file(path, &err);
    char want[128];
    snprintf(want, sizeof want, "%s:2:4: expected ',' or ']' after array element, found '3'", path);
    CHECK(v == NULL && strcmp(err.msg, want) == 0, "%s", err.msg);
    fp = fopen(path, "w");
    fputs("{\"a\": [1, 2]}\n", fp);
    fclose(fp);
    v = moe_json_parse_file(path, &err);
    CHECK(v && moe_json_get(v, "a") && moe_json_get(v, "a")->count == 2, "%s", err.msg);
    moe_json_free(v);
    remove(path);
}

static void test_many_keys(void) {
    /* the duplicate-key set grows: many distinct keys, then one repeated */
    moe_buf b = {0};
    moe_buf_append(&b, "{", 1);
    for (int i = 0; i < 5000; i++) moe_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
    moe_buf_append(&b, "}", 1);
    moe_err err = {{0}};
    moe_json_value *v = moe_json_parse(b.data, b.len, "big", &err);
    CHECK(v && v->count == 5000, "%s", err.msg);
    if (v) {
        const moe_json_value *x = moe_json_get(v, "k4321");
        CHECK(x && x->number == 4321, "k4321");
        CHECK(strcmp(v->keys[4999], "k4999") == 0, "order");
    }
    moe_json_free(v);
    b.len--;
    moe_buf_printf(&b, ",\"k1234\":0}");
    v = moe_json_parse(b.data, b.len, "big", &err);
    CHECK(v == NULL && strstr(err.msg, "found duplicate key \"k1234\""), "%s", err.msg);
    moe_buf_free(&b);
}

int main(void) {
    RUN(test_document);
    RUN(test_strings);
    RUN(test_rejections);
    RUN(test_numbers);
    RUN(test_depth);
    RUN(test_write_string);
    RUN(test_write_numbers);
    RUN(test_write_shortest);
    RUN(test_file);
    RUN(test_many_keys);
    TEST_MAIN_END();
}
