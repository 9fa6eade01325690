/* fileio.c — whole-file reads, atomic writes (tmp file, fsync, rename, fsync
 * of the directory; through a symlink to its target; straight to devices,
 * pipes and "-"), mkdir -p and directory fsync. */
#include "moe/util/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

char *moe_read_file(const char *path, size_t *len_out, moe_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { moe_errf(err, "cannot open %s: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, len = 0;
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 2;   /* +1 to see EOF in one read, +1 for NUL */
    char *buf = malloc(cap);
    if (!buf) {
        fclose(fp);
        moe_errf(err, "%s: out of memory reading %zu bytes", path, cap);
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = cap > ((size_t)-1) / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(fp);
                moe_errf(err, "%s: out of memory reading (%zu bytes so far)", path, len);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - 1 - len;
        size_t n = fread(buf + len, 1, want, fp);
        len += n;
        if (n < want) break;   /* end of file or error (checked below) */
    }
    if (ferror(fp)) {
        int e = errno;
        free(buf);
        fclose(fp);
        moe_errf(err, "cannot read %s: %s", path, strerror(e));
        return NULL;
    }
    fclose(fp);
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

int moe_map_file(const char *path, moe_mapped *m, moe_err *err) {
    memset(m, 0, sizeof *m);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        m->len = (size_t)st.st_size;
        if (m->len) {
            void *p = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                int e = errno;
                close(fd);
                return moe_errf(err, "cannot map %s (%zu bytes): %s", path, m->len, strerror(e));
            }
            m->data = p;
            m->mapped = 1;
        }
        close(fd);
        return 0;
    }
    close(fd);   /* not a regular file: read it as a stream */
    char *buf = moe_read_file(path, &m->len, err);
    if (!buf) return -1;
    m->data = (const unsigned char *)buf;
    return 0;
}

void moe_map_release_pages(const moe_mapped *m, size_t offset, size_t len) {
    if (!m->mapped || offset >= m->len) return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE), end = offset + len;
    if (end > m->len) end = m->len;
    /* the pages the range touches: the mapping is read-only and never
     * written, so a dropped page is only read again from the file when used */
    offset = offset / page * page;
    end = (end + page - 1) / page * page;
    if (end > offset) madvise((void *)(m->data + offset), end - offset, MADV_DONTNEED);
}

void moe_unmap_file(moe_mapped *m) {
    if (m->mapped) munmap((void *)m->data, m->len);
    else free((void *)m->data);
    memset(m, 0, sizeof *m);
}

/* The descriptor a path names without naming a file: "-" (stdout),
 * /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N; -1 for any other. */
static int named_fd(const char *path) {
    if (!strcmp(path, "-") || !strcmp(path, "/dev/stdout")) return 1;
    if (!strcmp(path, "/dev/stderr")) return 2;
    const char *n = !strncmp(path, "/dev/fd/", 8) ? path + 8
                  : !strncmp(path, "/proc/self/fd/", 14) ? path + 14 : NULL;
    if (!n || !*n || strspn(n, "0123456789") != strlen(n) || strlen(n) > 6) return -1;
    return atoi(n);
}

/* Follows the symbolic links of path (a dangling one too: the file is
 * created where it points) into out, so the rename replaces the target and
 * the link stays. A path that is not a link is copied as is. */
static int resolve_links(const char *path, char *out, size_t n, moe_err *err) {
    char cur[4096], target[4096];
    snprintf(cur, sizeof cur, "%s", path);
    for (int hops = 0;; hops++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) break;
        if (hops == 40) return moe_errf(err, "cannot write %s: %s", path, strerror(ELOOP));
        ssize_t k = readlink(cur, target, sizeof target - 1);
        if (k < 0) return moe_errf(err, "cannot read the link %s: %s", cur, strerror(errno));
        target[k] = '\0';
        const char *slash = strrchr(cur, '/');
        if (target[0] == '/' || !slash) snprintf(cur, sizeof cur, "%s", target);
        else if (snprintf(cur + (slash - cur) + 1, sizeof cur - (size_t)(slash - cur) - 1, "%s", target) >=
                 (int)(sizeof cur - (size_t)(slash - cur) - 1))
            return moe_errf(err, "cannot write %s: the link's target is longer than %zu bytes", path,
                            sizeof cur - 1);
    }
    if (strlen(cur) >= n) return moe_errf(err, "cannot write %.200s...: path longer than %zu bytes", cur, n - 1);
    memcpy(out, cur, strlen(cur) + 1);
    return 0;
}

/* Devices, pipes and "-" are written straight through: renaming a file over
 * them would replace the device node (or /dev/stdout) with a regular file. */
static int open_direct(moe_afile *f, const char *path, int fd, moe_err *err) {
    if (fd >= 0) {
        if (fd == 1) fflush(stdout);   /* what moe printed before comes first */
        fd = dup(fd);
    } else {
        fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
    }
    FILE *fp = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!fp) {
        int e = errno;
        if (fd >= 0) close(fd);
        return moe_errf(err, "cannot open %s for writing: %s", path, strerror(e));
    }
    f->fp = fp;
    f->direct = 1;
    return 0;
}

int moe_afile_open(moe_afile *f, const char *path, moe_err *err) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    if (n == 0) return moe_errf(err, "cannot write a file with an empty path");
    if (n >= sizeof f->path) return moe_errf(err, "cannot write %.200s...: path longer than %zu bytes",
                                             path, sizeof f->path - 1);
    memcpy(f->path, path, n + 1);
    int fd = named_fd(path);
    struct stat st;
    if (fd < 0 && stat(path, &st) == 0) {
        if (S_ISBLK(st.st_mode))
            return moe_errf(err, "cannot write %s: it is a block device; moe writes files, character "
                            "devices and pipes only", path);
        if (S_ISCHR(st.st_mode) || S_ISFIFO(st.st_mode)) return open_direct(f, path, -1, err);
    }
    if (fd >= 0) return open_direct(f, path, fd, err);
    if (resolve_links(path, f->path, sizeof f->path, err)) return -1;
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", f->path, (long)getpid());
    FILE *fp = fopen(f->tmp, "wb");
    if (!fp) return moe_errf(err, "cannot create %s: %s", f->tmp, strerror(errno));
    f->fp = fp;
    return 0;
}

int moe_afile_write(moe_afile *f, const void *data, size_t len, moe_err *err) {
    if (!f->fp) return moe_errf(err, "cannot write %s: file is not open", f->path);
    if (len == 0) return 0;
    errno = 0;
    if (fwrite(data, 1, len, (FILE *)f->fp) != len) {
        int e = errno ? errno : EIO;
        moe_afile_abort(f);
        return moe_errf(err, "cannot write %s: %s", f->path, strerror(e));
    }
    return 0;
}

/* The directory holding path ("." if it has no slash). */
static void parent_dir(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(out, n, "."); return; }
    if (slash == path) { snprintf(out, n, "/"); return; }
    snprintf(out, n, "%.*s", (int)(slash - path), path);
}

int moe_afile_commit(moe_afile *f, moe_err *err) {
    FILE *fp = f->fp;
    if (!fp) return moe_errf(err, "cannot commit %s: file is not open", f->path);
    const char *step = "write";
    int e = 0;
    errno = 0;
    if (fflush(fp) != 0) e = errno ? errno : EIO;
    else if (!f->direct && fsync(fileno(fp)) != 0) { e = errno; step = "fsync"; }
    f->fp = NULL;
    errno = 0;
    if (fclose(fp) != 0 && !e) { e = errno ? errno : EIO; step = "close"; }
    if (f->direct) return e ? moe_errf(err, "cannot %s %s: %s", step, f->path, strerror(e)) : 0;
    if (e) {
        remove(f->tmp);
        return moe_errf(err, "cannot %s %s: %s", step, f->path, strerror(e));
    }
    if (rename(f->tmp, f->path) != 0) {
        e = errno;
        remove(f->tmp);
        return moe_errf(err, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(e));
    }
    char dir[sizeof f->path];
    parent_dir(f->path, dir, sizeof dir);
    return moe_fsync_dir(dir, err);
}

void moe_afile_abort(moe_afile *f) {
    if (!f->fp) return;
    fclose((FILE *)f->fp);
    f->fp = NULL;
    if (!f->direct) remove(f->tmp);
}

int moe_write_file_atomic(const char *path, const void *data, size_t len, moe_err *err) {
    moe_afile f;
    if (moe_afile_open(&f, path, err)) return -1;
    if (moe_afile_write(&f, data, len, err)) return -1;
    return moe_afile_commit(&f, err);
}

int moe_mkdirs(const char *path, moe_err *err) {
    size_t n = strlen(path);
    if (n == 0) return moe_errf(err, "cannot create a directory with an empty path");
    char *p = moe_malloc(n + 1, err);
    if (!p) return -1;
    memcpy(p, path, n + 1);
    int rc = 0;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        if (p[i - 1] == '/') continue;   /* "a//b" */
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0755) != 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST) rc = moe_errf(err, "cannot create directory %s: %s", p, strerror(e));
            else if (stat(p, &st) != 0)
                rc = moe_errf(err, "cannot create directory %s: %s", p, strerror(errno));
            else if (!S_ISDIR(st.st_mode))
                rc = moe_errf(err, "cannot create directory %s: %s", p, strerror(ENOTDIR));
        }
        p[i] = saved;
    }
    free(p);
    return rc;
}

int moe_dir_lock(const char *dir, int *fd_out, moe_err *err) {
    char path[4096];
    if (moe_path(path, sizeof path, err, "%s/.lock", dir)) return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return moe_errf(err, "cannot open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        close(fd);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        if (e != EWOULDBLOCK) return moe_errf(err, "cannot lock %s: %s", path, strerror(e));
        return moe_errf(err, "%s is in use by another moe process (pid %s), which holds %s: "
                        "wait for it to end, or choose another directory", dir, pid[0] ? pid : "unknown",
                        path);
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(fd);
        return moe_errf(err, "cannot write %s: %s", path, strerror(e));
    }
    *fd_out = fd;
    return 0;
}

void moe_dir_unlock(int fd) {
    if (fd >= 0) close(fd);
}

int moe_fsync_dir(const char *dir, moe_err *err) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return moe_errf(err, "cannot open directory %s: %s", dir, strerror(errno));
    int rc = 0;
    /* Some filesystems cannot fsync a directory (EINVAL): nothing to do there. */
    if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP)
        rc = moe_errf(err, "cannot fsync directory %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int moe_jsonl_keep_steps(const char *path, long step, moe_err *err) {
    if (access(path, F_OK)) return 0;
    size_t len;
    char *text = moe_read_file(path, &len, err);
    if (!text) return -1;
    moe_buf keep = {0};
    int rc = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line + 1) : strlen(line);
        long s = -1;
        if (sscanf(line, "{\"step\": %ld", &s) == 1 && s <= step && nl) rc |= moe_buf_append(&keep, line, l);
        line += l;
    }
    rc = rc ? moe_errf(err, "out of memory") : moe_write_file_atomic(path, keep.data ? keep.data : "", keep.len, err);
    moe_buf_free(&keep);
    free(text);
    return rc;
}
