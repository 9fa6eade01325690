/* fuzz_file.h — harness helper: the readers under test take a path, so each
 * input is written to a per-process file in /dev/shm (or /tmp) first. */
#ifndef MOE_FUZZ_FILE_H
#define MOE_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static const char *fuzz_write(const uint8_t *data, size_t size, const char *suffix) {
    static char path[128];
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(path, sizeof path, "%s/moe-fuzz-%d%s", dir, (int)getpid(), suffix);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fwrite(data, 1, size, f);
    fclose(f);
    return path;
}

#endif
