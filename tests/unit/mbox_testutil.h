/*
 * mbox_testutil.h - small file helpers shared by the mbox unit tests.
 *
 * Contract: every helper fails the running test (cmocka) rather than
 * returning an error, except where a missing file is an expected answer.
 */
#ifndef SEMAIL_MBOX_TESTUTIL_H
#define SEMAIL_MBOX_TESTUTIL_H

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "semail/mbox.h"

/* "Sun Nov 29 05:03:16 2026" */
#define TU_DATE ((time_t)1795928596)

static inline void tu_tmpdir(char *dir, size_t size)
{
    assert_true(size > 32);
    snprintf(dir, size, "/tmp/semail-mbox-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static inline int tu_rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static inline void tu_rmrf(const char *dir)
{
    (void)nftw(dir, tu_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void tu_path(char *out, size_t size, const char *dir, const char *name)
{
    int n = snprintf(out, size, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < size);
}

/* The whole file, NUL-terminated; NULL when it does not exist. */
static inline char *tu_read(const char *path, size_t *len)
{
    struct stat st;
    char *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        assert_int_equal(errno, ENOENT);
        *len = 0;
        return NULL;
    }
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    buf[st.st_size] = '\0';
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static inline void tu_write(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static inline bool tu_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* How many messages an mbox reader sees: lines that start with "From ". */
static inline size_t tu_count_messages(const char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i + 5 <= len; i++)
        if ((i == 0 || buf[i - 1] == '\n') && memcmp(buf + i, "From ", 5) == 0)
            n++;
    return n;
}

static inline semail_mbox_message tu_msg(const char *sender, const char *data)
{
    semail_mbox_message m = {sender, TU_DATE, NULL, 0, data, strlen(data)};
    return m;
}

static inline semail_mbox_options tu_opts(unsigned int timeout_ms)
{
    semail_mbox_options o = SEMAIL_MBOX_OPTIONS_INIT;
    o.lock_timeout_ms = timeout_ms;
    return o;
}

/*
 * "semail <boot-id> <pid-ns>" as the dot-lock's record starts, found here
 * independently of the library (the namespace by stat(), not readlink()).
 */
static inline void tu_owner(char *out, size_t size)
{
    char boot[64] = "";
    struct stat st;
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(read(fd, boot, sizeof(boot) - 1), 37);
    close(fd);
    boot[36] = '\0';
    assert_int_equal(stat("/proc/self/ns/pid", &st), 0);
    int n = snprintf(out, size, "semail %s %llu", boot, (unsigned long long)st.st_ino);
    assert_true(n > 0 && (size_t)n < size);
}

/* The dot-lock content of PID appending to MBOX (as it is now) from SIZE bytes. */
static inline void tu_lock_content(char *out, size_t size, long pid, const char *mbox, off_t from)
{
    char owner[128];
    struct stat st;

    tu_owner(owner, sizeof(owner));
    assert_int_equal(stat(mbox, &st), 0);
    int n = snprintf(out, size, "%ld\n%s %llu:%llu %lld\n", pid, owner,
                     (unsigned long long)st.st_dev, (unsigned long long)st.st_ino, (long long)from);
    assert_true(n > 0 && (size_t)n < size);
}

static inline long tu_elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (long)(t1.tv_sec - t0->tv_sec) * 1000L + (t1.tv_nsec - t0->tv_nsec) / 1000000L;
}

#endif
