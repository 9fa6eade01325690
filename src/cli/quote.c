/* quote.c — shows a piece of user input inside an error message: printable
 * bytes as they are, anything else (NUL, control bytes) as \xNN, so that the
 * message quotes exactly what the file holds. */
#include <stdio.h>

#include "cli/cli.h"

const char *cli_quote(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    if (cap) out[o < cap ? o : cap - 1] = '\0';
    return out;
}
