/* json.h — a small strict JSON reader (RFC 8259) into a tree, and helpers to
 * write JSON text. Used for configs, trainer state, metrics and eval tasks. */
#ifndef MOE_JSON_H
#define MOE_JSON_H

#include "moe/util/common.h"

typedef enum {
    JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} json_type;

typedef struct json_value json_value;
struct json_value {
    json_type type;
    int boolean;          /* JSON_BOOL */
    double number;        /* JSON_NUMBER */
    char *string;         /* JSON_STRING: UTF-8, NUL-terminated (may hold \0 as "\u0000": see len) */
    size_t len;           /* JSON_STRING: byte length */
    size_t count;         /* JSON_ARRAY / JSON_OBJECT: number of items */
    json_value *items;    /* JSON_ARRAY / JSON_OBJECT: the values, in order */
    char **keys;          /* JSON_OBJECT: keys[i] names items[i] (duplicates are a parse error) */
    int line, col;        /* where the value starts in the text (1-based) */
};

/* Parses exactly one JSON value (surrounded by optional whitespace).
 * `what` names the source in error messages (a file path, "<stdin>", ...):
 *   "config.json:3:14: expected ',' or '}' after object member, found 'x'".
 * Nesting deeper than 256 levels is rejected. Returns NULL on error. */
json_value *json_parse(const char *text, size_t len, const char *what, moe_err *err);

/* Reads and parses a whole file; errors name the path. */
json_value *json_parse_file(const char *path, moe_err *err);

void json_free(json_value *v);

/* Object member lookup (NULL if absent or v is not an object). */
const json_value *json_get(const json_value *obj, const char *key);

/* The typed member lookups every reader uses. obj may be NULL or not an
 * object; a member that is absent or of another type gives NULL / dflt (a
 * reader that must refuse it writes its own message, naming file and key). */
const json_value *json_get_typed(const json_value *obj, const char *key, json_type type);
double json_get_number(const json_value *obj, const char *key, double dflt);
const char *json_get_string(const json_value *obj, const char *key, const char *dflt);
int json_get_bool(const json_value *obj, const char *key, int dflt);

/* What a value of type t is, for messages: "null", "a boolean", "a number",
 * "a string", "an array", "an object". */
const char *json_type_name(json_type t);

/* Appends `s` (len bytes) as a quoted, escaped JSON string. */
int json_write_string(moe_buf *b, const char *s, size_t len);

/* Appends a number in the shortest form that reads back bit-identically:
 * the first of %.15g, %.16g, %.17g (doubles) or %.6g .. %.9g (floats) that
 * strtod / strtof returns exactly ("0.9", not "0.90000000000000002"); NaN /
 * Inf are written as null (JSON has no literal). */
int json_write_double(moe_buf *b, double x);
int json_write_float(moe_buf *b, float x);
/* The same text into buf (32 bytes suffice), for messages; no null case. */
void json_format_double(char *buf, size_t cap, double x);
void json_format_float(char *buf, size_t cap, float x);

#endif
