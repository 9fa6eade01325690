/* test_fileio.c — unit tests of whole-file reads, atomic writes (including a
 * write that fails for lack of space; through symlinks, to devices, pipes and
 * stdout), mkdir -p and directory fsync. */
#include "harness.h"
#include "moe/util/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* Number of entries in dir whose name contains ".tmp.". */
static int count_tmp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static int file_equals(const char *path, const void *data, size_t len) {
    moe_err err = {{0}};
    size_t got;
    char *buf = moe_read_file(path, &got, &err);
    int same = buf && got == len && memcmp(buf, data, len) == 0 && buf[len] == '\0';
    free(buf);
    return same;
}

static void test_write_read(void) {
    char p[512];
    path_in(p, sizeof p, "a.bin");
    const char data[] = "hello\0world\n";
    moe_err err = {{0}};
    CHECK(moe_write_file_atomic(p, data, sizeof data, &err) == 0, "%s", err.msg);
    CHECK(file_equals(p, data, sizeof data), "content differs");
    CHECK(moe_write_file_atomic(p, "new", 3, &err) == 0, "%s", err.msg);
    CHECK(file_equals(p, "new", 3), "overwrite differs");
    CHECK(moe_write_file_atomic(p, NULL, 0, &err) == 0, "%s", err.msg);
    CHECK(file_equals(p, "", 0), "empty file");
    CHECK(count_tmp_files() == 0, "temporary files left behind");

    /* bigger than the read chunk, written in pieces */
    size_t n = 300000;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (unsigned char)(i * 7 + 3);
    moe_afile f;
    CHECK(moe_afile_open(&f, p, &err) == 0, "%s", err.msg);
    for (size_t at = 0; at < n; at += 1000)
        CHECK(moe_afile_write(&f, big + at, n - at < 1000 ? n - at : 1000, &err) == 0, "%s", err.msg);
    CHECK(moe_afile_commit(&f, &err) == 0, "%s", err.msg);
    CHECK(file_equals(p, big, n), "big file differs");
    free(big);

    /* a file whose size stat does not know */
    size_t len;
    char *s = moe_read_file("/proc/self/status", &len, &err);
    CHECK(s && len > 0 && strlen(s) == len && strstr(s, "Name:"), "/proc/self/status: %s", err.msg);
    free(s);
}

static void test_abort_keeps_old(void) {
    char p[512];
    path_in(p, sizeof p, "keep.txt");
    moe_err err = {{0}};
    CHECK(moe_write_file_atomic(p, "old", 3, &err) == 0, "%s", err.msg);
    moe_afile f;
    CHECK(moe_afile_open(&f, p, &err) == 0, "%s", err.msg);
    CHECK(moe_afile_write(&f, "partial", 7, &err) == 0, "%s", err.msg);
    CHECK(count_tmp_files() == 1, "tmp file should exist while writing");
    CHECK(strstr(f.tmp, ".tmp.") != NULL, "tmp name %s", f.tmp);
    CHECK(file_equals(p, "old", 3), "old content must be visible while writing");
    moe_afile_abort(&f);
    moe_afile_abort(&f);   /* twice is harmless */
    CHECK(count_tmp_files() == 0, "abort left the tmp file");
    CHECK(file_equals(p, "old", 3), "abort damaged the old file");
}

static void test_errors(void) {
    moe_err err = {{0}};
    char p[512];
    path_in(p, sizeof p, "missing.txt");
    size_t len;
    CHECK(moe_read_file(p, &len, &err) == NULL, "read of a missing file");
    char want[600];
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", p);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);

    CHECK(moe_read_file(dir, &len, &err) == NULL, "read of a directory");
    snprintf(want, sizeof want, "cannot read %s: Is a directory", dir);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);

    path_in(p, sizeof p, "no/such/dir/x.txt");
    CHECK(moe_write_file_atomic(p, "x", 1, &err) == -1, "write into a missing directory");
    CHECK(strstr(err.msg, "cannot create ") && strstr(err.msg, "no/such/dir/x.txt.tmp.") &&
          strstr(err.msg, ": No such file or directory"), "%s", err.msg);

    CHECK(moe_write_file_atomic("", "x", 1, &err) == -1 && strstr(err.msg, "empty path"), "%s", err.msg);

    /* the target is a directory: rename fails, tmp file removed */
    path_in(p, sizeof p, "adir");
    CHECK(moe_mkdirs(p, &err) == 0, "%s", err.msg);
    CHECK(moe_write_file_atomic(p, "x", 1, &err) == -1, "rename over a directory");
    CHECK(strstr(err.msg, "cannot rename ") && strstr(err.msg, "Is a directory"), "%s", err.msg);
    CHECK(count_tmp_files() == 0, "tmp file left after a failed rename");

    CHECK(moe_fsync_dir(dir, &err) == 0, "%s", err.msg);
    path_in(p, sizeof p, "nodir");
    CHECK(moe_fsync_dir(p, &err) == -1, "fsync of a missing directory");
    snprintf(want, sizeof want, "cannot open directory %s: No such file or directory", p);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);
}

/* A write that runs out of space (RLIMIT_FSIZE gives EFBIG, like ENOSPC on a
 * full disk) must be reported, remove the tmp file and keep the old file. */
static void test_full_disk(void) {
    char p[512];
    path_in(p, sizeof p, "full.bin");
    moe_err err = {{0}};
    CHECK(moe_write_file_atomic(p, "previous", 8, &err) == 0, "%s", err.msg);

    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    struct rlimit lim = {100000, old.rlim_max};
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0, "setrlimit: %s", strerror(errno));

    size_t n = 1 << 20;
    char *big = calloc(n, 1);
    int rc = moe_write_file_atomic(p, big, n, &err);
    CHECK(rc == -1, "a write past the limit succeeded");
    CHECK(strstr(err.msg, p) && strstr(err.msg, "File too large"), "%s", err.msg);

    /* small writes that only fail when the buffer is flushed at commit */
    moe_afile f;
    CHECK(moe_afile_open(&f, p, &err) == 0, "%s", err.msg);
    rc = 0;
    for (size_t at = 0; at < 99000 && rc == 0; at += 1000) rc = moe_afile_write(&f, big, 1000, &err);
    CHECK(rc == 0, "%s", err.msg);
    rc = moe_afile_write(&f, big, 2000, &err);
    if (rc == 0) rc = moe_afile_commit(&f, &err);
    else moe_afile_abort(&f);
    CHECK(rc == -1 && strstr(err.msg, "File too large"), "%s", err.msg);

    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_sig);
    free(big);
    CHECK(count_tmp_files() == 0, "tmp file left after a failed write");
    CHECK(file_equals(p, "previous", 8), "previous file damaged");
}

static void test_mkdirs(void) {
    moe_err err = {{0}};
    char p[512];
    path_in(p, sizeof p, "m/n//o/p/");
    CHECK(moe_mkdirs(p, &err) == 0, "%s", err.msg);
    path_in(p, sizeof p, "m/n/o/p");
    struct stat st;
    CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode), "%s not created", p);
    CHECK(moe_mkdirs(p, &err) == 0, "existing directory: %s", err.msg);
    CHECK(moe_fsync_dir(p, &err) == 0, "%s", err.msg);

    path_in(p, sizeof p, "m/file");
    CHECK(moe_write_file_atomic(p, "x", 1, &err) == 0, "%s", err.msg);
    CHECK(moe_mkdirs(p, &err) == -1, "mkdirs over a file");
    char want[600];
    snprintf(want, sizeof want, "cannot create directory %s: Not a directory", p);
    CHECK(strcmp(err.msg, want) == 0, "%s", err.msg);
    path_in(p, sizeof p, "m/file/sub");
    CHECK(moe_mkdirs(p, &err) == -1 && strstr(err.msg, "m/file: Not a directory"), "%s", err.msg);
    CHECK(moe_mkdirs("", &err) == -1, "empty path");
}

/* Issue 14.1: one writer per directory; the second is told who holds it. */
static void test_dir_lock(void) {
    moe_err err = {{0}};
    int a = -1, b = -1;
    CHECK(moe_dir_lock(dir, &a, &err) == 0 && a >= 0, "%s", err.msg);
    char want[600];
    snprintf(want, sizeof want, "%s is in use by another moe process (pid %ld)", dir, (long)getpid());
    CHECK(moe_dir_lock(dir, &b, &err) == -1 && strstr(err.msg, want), "second lock: %s", err.msg);
    moe_dir_unlock(a);
    CHECK(moe_dir_lock(dir, &b, &err) == 0, "after unlock: %s", err.msg);
    moe_dir_unlock(b);
    char p[512];
    path_in(p, sizeof p, "none/such");
    CHECK(moe_dir_lock(p, &b, &err) == -1 && strstr(err.msg, "none/such/.lock"), "%s", err.msg);
}

/* Issue 26.1: a symlinked output keeps being a symlink and its target gets
 * the content (a dangling one creates its target); a character device and a
 * pipe are written straight through, not replaced by a regular file; "-" and
 * /proc/self/fd/1 write to the descriptor itself. */
static void test_links_devices_stdout(void) {
    moe_err err = {{0}};
    char target[512], link[512], link2[512], p[512];
    path_in(target, sizeof target, "target.json");
    path_in(link, sizeof link, "link.json");
    path_in(link2, sizeof link2, "link2.json");
    CHECK(moe_write_file_atomic(target, "old", 3, &err) == 0, "%s", err.msg);
    CHECK(symlink("target.json", link) == 0, "symlink: %s", strerror(errno));   /* relative */
    CHECK(symlink(link, link2) == 0, "symlink: %s", strerror(errno));           /* a chain */
    CHECK(moe_write_file_atomic(link2, "new", 3, &err) == 0, "%s", err.msg);
    struct stat st;
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "%s is no longer a symlink", link);
    CHECK(lstat(link2, &st) == 0 && S_ISLNK(st.st_mode), "%s is no longer a symlink", link2);
    CHECK(file_equals(target, "new", 3), "the link's target did not get the content");
    CHECK(count_tmp_files() == 0, "temporary files left behind");
    path_in(link, sizeof link, "dangling.json");
    CHECK(symlink("made.json", link) == 0, "symlink: %s", strerror(errno));
    CHECK(moe_write_file_atomic(link, "made", 4, &err) == 0, "%s", err.msg);
    path_in(p, sizeof p, "made.json");
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && file_equals(p, "made", 4), "dangling link");

    path_in(p, sizeof p, "null");   /* a copy of /dev/null */
    if (mknod(p, S_IFCHR | 0666, makedev(1, 3)) == 0) {
        CHECK(moe_write_file_atomic(p, "x", 1, &err) == 0, "%s", err.msg);
        CHECK(stat(p, &st) == 0 && S_ISCHR(st.st_mode), "the device became a regular file");
    } else {
        CHECK(errno == EPERM, "mknod: %s", strerror(errno));   /* no CAP_MKNOD: /dev/null itself */
        CHECK(moe_write_file_atomic("/dev/null", "x", 1, &err) == 0, "%s", err.msg);
        CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null became a regular file");
    }
    path_in(p, sizeof p, "fifo");
    CHECK(mkfifo(p, 0600) == 0, "mkfifo: %s", strerror(errno));
    pid_t reader = fork();
    if (reader == 0) {   /* reads the pipe into fifo.out */
        char q[600], buf[64];
        snprintf(q, sizeof q, "%s.out", p);
        int in = open(p, O_RDONLY), out = open(q, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        ssize_t k;
        while ((k = read(in, buf, sizeof buf)) > 0) if (write(out, buf, (size_t)k) != k) _exit(1);
        _exit(0);
    }
    CHECK(moe_write_file_atomic(p, "piped", 5, &err) == 0, "%s", err.msg);
    int status = 1, still_fifo = stat(p, &st) == 0 && S_ISFIFO(st.st_mode);
    CHECK(still_fifo, "the pipe became a regular file");
    if (!still_fifo) kill(reader, SIGKILL);   /* it waits on a pipe no writer will open */
    waitpid(reader, &status, 0);
    char q[600];
    snprintf(q, sizeof q, "%s.out", p);
    CHECK(status == 0 && file_equals(q, "piped", 5), "the pipe's reader got something else");

    /* "-" and /proc/self/fd/1 (what /dev/stdout links to; the link itself is
     * not used, so that a regression cannot replace this machine's):
     * stdout pointed at a file for the test, run from dir */
    path_in(p, sizeof p, "stdout.txt");
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) && chdir(dir) == 0, "chdir %s", dir);
    fflush(stdout);
    int saved = dup(1), fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    close(fd);
    printf("first ");   /* buffered: must come out before the file's content */
    int rc1 = moe_write_file_atomic("-", "dash ", 5, &err);
    int rc2 = moe_write_file_atomic("/proc/self/fd/1", "stdout", 6, &err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    CHECK(rc1 == 0 && rc2 == 0, "%s", err.msg);
    CHECK(file_equals(p, "first dash stdout", 17), "stdout did not get the content in order");
    CHECK(access("-", F_OK) != 0, "a file named '-' was created");
    CHECK(chdir(cwd) == 0, "chdir %s", cwd);
    CHECK(count_tmp_files() == 0, "temporary files left behind");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moe_test_fileio_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(test_write_read);
    RUN(test_abort_keeps_old);
    RUN(test_errors);
    RUN(test_full_disk);
    RUN(test_mkdirs);
    RUN(test_dir_lock);
    RUN(test_links_devices_stdout);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
