/* fileio.h — whole-file reads and crash-safe (atomic) file writes. */
#ifndef MOE_FILEIO_H
#define MOE_FILEIO_H

#include "moe/util/common.h"

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
char *moe_read_file(const char *path, size_t *len_out, moe_err *err);

/* A whole file, read-only: a regular file is memory-mapped (its pages are
 * read on demand and belong to the page cache, so a file larger than memory
 * costs no heap), anything else (a pipe, a device) is read into a buffer.
 * moe_unmap_file releases either; moe_map_release_pages tells the kernel
 * that this process is done with the pages holding [offset, offset + len)
 * for now: they leave its resident set and are read again from the file
 * (usually the page cache) when next used; a buffer is untouched. */
typedef struct moe_mapped {
    const unsigned char *data;  /* [len] */
    size_t len;
    int mapped;                 /* 1: mmap'd; 0: malloc'd (or empty) */
} moe_mapped;

int moe_map_file(const char *path, moe_mapped *m, moe_err *err);
void moe_map_release_pages(const moe_mapped *m, size_t offset, size_t len);
void moe_unmap_file(moe_mapped *m);

/* A file written atomically: bytes go to "<path>.tmp.<pid>", and
 * moe_afile_commit() flushes, fsyncs, renames over <path> and fsyncs the
 * directory, so a reader sees either the old file or the whole new one.
 * moe_afile_abort() removes the temporary file. A symlink is followed: its
 * target is replaced and the link stays. A character device or a pipe, and
 * "-", /dev/stdout, /dev/stderr, /dev/fd/N (the descriptor itself), are
 * written straight through (direct; nothing to rename, nothing an abort can
 * take back); a block device is refused. */
typedef struct moe_afile {
    void *fp;            /* FILE* */
    int direct;          /* 1: writing straight to a device, pipe or descriptor */
    char path[4096];     /* the file written (a symlink resolved) */
    char tmp[4200];
} moe_afile;

int moe_afile_open(moe_afile *f, const char *path, moe_err *err);
int moe_afile_write(moe_afile *f, const void *data, size_t len, moe_err *err);
int moe_afile_commit(moe_afile *f, moe_err *err);
void moe_afile_abort(moe_afile *f);

/* Convenience: the whole content at once, atomically. */
int moe_write_file_atomic(const char *path, const void *data, size_t len, moe_err *err);

/* Keeps the lines of a JSON-lines log whose leading "step" is <= step (and
 * that end in a newline), rewriting the file atomically: a resumed run cuts
 * its logs back to its checkpoint. A missing file is fine. */
int moe_jsonl_keep_steps(const char *path, long step, moe_err *err);

/* mkdir -p (0755). */
int moe_mkdirs(const char *path, moe_err *err);

/* An advisory lock on a directory that one writer at a time may own (a run
 * folder): flock(LOCK_EX | LOCK_NB) on DIR/.lock, which also records the
 * holder's pid. The lock dies with the process (a kill releases it). On
 * success *fd holds it until moe_dir_unlock; when another process holds it,
 * the error names DIR and that process's pid. */
int moe_dir_lock(const char *dir, int *fd, moe_err *err);
void moe_dir_unlock(int fd);

/* fsync a directory so that renames inside it are durable. */
int moe_fsync_dir(const char *dir, moe_err *err);

#endif
