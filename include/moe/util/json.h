/* json.h — a small strict JSON reader (RFC 8259) into a tree, and helpers to
 * write JSON text. Used for configs, trainer state, metrics and eval tasks. */
#ifndef MOE_JSON_H
#define MOE_JSON_H

#include "moe/util/common.h"

typedef enum {
    MOE_JSON_NULL, MOE_JSON_BOOL, MOE_JSON_NUMBER, MOE_JSON_STRING, MOE_JSON_ARRAY, MOE_JSON_OBJECT
} moe_json_type;

typedef struct moe_json_value moe_json_value;
struct moe_json_value {
    moe_json_type type;
    int boolean;          /* MOE_JSON_BOOL */
    double number;        /* MOE_JSON_NUMBER */
    char *string;         /* MOE_JSON_STRING: UTF-8, NUL-terminated (may hold \0 as "\u0000": see len) */
    size_t len;           /* MOE_JSON_STRING: byte length */
    size_t count;         /* MOE_JSON_ARRAY / MOE_JSON_OBJECT: number of items */
    moe_json_value *items;    /* MOE_JSON_ARRAY / MOE_JSON_OBJECT: the values, in order */
    char **keys;          /* MOE_JSON_OBJECT: keys[i] names items[i] (duplicates are a parse error) */
    int line, col;        /* where the value starts in the text (1-based) */
};

/* Parses exactly one JSON value (surrounded by optional whitespace).
 * `what` names the source in error messages (a file path, "<stdin>", ...):
 *   "config.json:3:14: expected ',' or '}' after object member, found 'x'".
 * Nesting deeper than 256 levels is rejected. Returns NULL on error. */
moe_json_value *moe_json_parse(const char *text, size_t len, const char *what, moe_err *err);

/* Reads and parses a whole file; errors name the path. */
moe_json_value *moe_json_parse_file(const char *path, moe_err *err);

void moe_json_free(moe_json_value *v);

/* Object member lookup (NULL if absent or v is not an object). */
const moe_json_value *moe_json_get(const moe_json_value *obj, const char *key);

/* The typed member lookups every reader uses. obj may be NULL or not an
 * object; a member that is absent or of another type gives NULL / dflt (a
 * reader that must refuse it writes its own message, naming file and key). */
const moe_json_value *moe_json_get_typed(const moe_json_value *obj, const char *key, moe_json_type type);
double moe_json_get_number(const moe_json_value *obj, const char *key, double dflt);
const char *moe_json_get_string(const moe_json_value *obj, const char *key, const char *dflt);
int moe_json_get_bool(const moe_json_value *obj, const char *key, int dflt);

/* What a value of type t is, for messages: "null", "a boolean", "a number",
 * "a string", "an array", "an object". */
const char *moe_json_type_name(moe_json_type t);

/* Appends `s` (len bytes) as a quoted, escaped JSON string. */
int moe_json_write_string(moe_buf *b, const char *s, size_t len);

/* Appends a number in the shortest form that reads back bit-identically:
 * the first of %.15g, %.16g, %.17g (doubles) or %.6g .. %.9g (floats) that
 * strtod / strtof returns exactly ("0.9", not "0.90000000000000002"); NaN /
 * Inf are written as null (JSON has no literal). */
int moe_json_write_double(moe_buf *b, double x);
int moe_json_write_float(moe_buf *b, float x);
/* The same text into buf (32 bytes suffice), for messages; no null case. */
void moe_json_format_double(char *buf, size_t cap, double x);
void moe_json_format_float(char *buf, size_t cap, float x);

#endif
