/*
 * test_mbox_lock.c - the dot-lock, the kernel lock and the file checks of
 * an mbox append: timeouts, stale locks, other lockers (mutt-style fcntl
 * locks in another process, OFD locks in this one), symlinks, hard links.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "mbox_internal.h"
#include "mbox_testutil.h"

typedef struct fixture {
    char dir[64];
    char path[128];
    char lock[160];
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    tu_tmpdir(fx->dir, sizeof(fx->dir));
    tu_path(fx->path, sizeof(fx->path), fx->dir, "INBOX");
    snprintf(fx->lock, sizeof(fx->lock), "%s.lock", fx->path);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    tu_rmrf(fx->dir);
    free(fx);
    return 0;
}

static const char old[] = "From a@b Sun Nov 29 05:03:16 2026\nold\n\n";

static void assert_unchanged(const char *path)
{
    size_t len;
    char *got = tu_read(path, &len);
    assert_non_null(got);
    assert_int_equal(len, sizeof(old) - 1);
    assert_memory_equal(got, old, len);
    free(got);
}

static int append_one(const char *path, unsigned int timeout_ms)
{
    semail_mbox_message m = tu_msg("x@y", "hello\n");
    semail_mbox_options o = tu_opts(timeout_ms);
    return semail_mbox_append(path, &m, &o);
}

static void test_mbox_lock__held_dot_lock_times_out(void **state)
{
    fixture *fx = *state;
    struct timespec t0;

    tu_write(fx->lock, "1\n", 2);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(append_one(fx->path, 300), SEMAIL_ELOCKED);
    assert_true(tu_elapsed_ms(&t0) >= 290);
    assert_false(tu_exists(fx->path));
    assert_true(tu_exists(fx->lock)); /* someone else's: left alone */
}

static void test_mbox_lock__removes_a_stale_dot_lock(void **state)
{
    fixture *fx = *state;
    struct timeval old_times[2] = {{time(NULL) - 1000, 0}, {time(NULL) - 1000, 0}};
    semail_mbox_message m = tu_msg("x@y", "hello\n");
    semail_mbox_options o = tu_opts(5000);

    o.stale_lock_s = 60;
    tu_write(fx->lock, "1\n", 2);
    assert_int_equal(utimes(fx->lock, old_times), 0);
    assert_int_equal(semail_mbox_append(fx->path, &m, &o), 0);
    assert_false(tu_exists(fx->lock));
    /* A fresh one is not stale. */
    tu_write(fx->lock, "1\n", 2);
    o.lock_timeout_ms = 200;
    assert_int_equal(semail_mbox_append(fx->path, &m, &o), SEMAIL_ELOCKED);
}

/* "<pid>\n" for procmail, then the undo record, in place before any data byte. */
static void test_mbox_lock__dot_lock_holds_the_pid_and_the_undo_record(void **state)
{
    fixture *fx = *state;
    semail__mbox_locked lk;
    semail_mbox_options o = tu_opts(1000);
    struct timespec deadline;
    char expected[256];
    size_t len;

    o.stale_lock_s = 300;
    o.file_mode = 0600;
    semail__mbox_deadline(&deadline, 1000);
    assert_int_equal(semail__mbox_lock(&lk, fx->path, &o, &deadline), 0);
    assert_true(lk.created);
    assert_int_equal(lk.size, 0);
    char *got = tu_read(fx->lock, &len);
    tu_lock_content(expected, sizeof(expected), (long)getpid(), fx->path, 0);
    assert_string_equal(got, expected);
    free(got);
    semail__mbox_unlock(&lk);
    assert_false(tu_exists(fx->lock));
    semail__mbox_unlock(&lk); /* idempotent */

    tu_write(fx->path, old, sizeof(old) - 1);
    assert_int_equal(semail__mbox_lock(&lk, fx->path, &o, &deadline), 0);
    got = tu_read(fx->lock, &len);
    tu_lock_content(expected, sizeof(expected), (long)getpid(), fx->path, sizeof(old) - 1);
    assert_string_equal(got, expected);
    free(got);
    semail__mbox_unlock(&lk);
}

/* A child holds a POSIX fcntl() lock, as mutt and Dovecot take. */
static void test_mbox_lock__waits_for_the_fcntl_lock_of_another_process(void **state)
{
    fixture *fx = *state;
    int ready[2], go[2], status;
    char c;
    struct timespec t0;
    size_t len;

    tu_write(fx->path, old, sizeof(old) - 1);
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        int fd = open(fx->path, O_RDWR);
        if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
            _exit(1);
        if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(2);
        usleep(300 * 1000);
        _exit(0);
    }
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(append_one(fx->path, 300), SEMAIL_ELOCKED);
    assert_unchanged(fx->path);
    assert_false(tu_exists(fx->lock));

    assert_int_equal(write(go[1], "g", 1), 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(append_one(fx->path, 10000), 0);
    assert_true(tu_elapsed_ms(&t0) >= 200);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char *got = tu_read(fx->path, &len);
    assert_int_equal(tu_count_messages(got, len), 2);
    free(got);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
}

/*
 * OFD locks conflict within one process (so between threads), also with a
 * POSIX lock of the same process: a POSIX F_SETLK would just succeed here.
 */
static void test_mbox_lock__kernel_lock_conflicts_within_the_process(void **state)
{
    fixture *fx = *state;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};

    tu_write(fx->path, old, sizeof(old) - 1);
    int fd = open(fx->path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_SETLK, &fl), 0);
    assert_int_equal(append_one(fx->path, 200), SEMAIL_ELOCKED);
    assert_unchanged(fx->path);
    close(fd);
    assert_int_equal(append_one(fx->path, 200), 0);
}

static void test_mbox_lock__refuses_a_symlink(void **state)
{
    fixture *fx = *state;
    char target[160], dangling[160], missing[160];

    tu_path(target, sizeof(target), fx->dir, "target");
    tu_path(dangling, sizeof(dangling), fx->dir, "dangling");
    tu_path(missing, sizeof(missing), fx->dir, "missing");
    tu_write(target, old, sizeof(old) - 1);
    assert_int_equal(symlink(target, fx->path), 0);
    assert_int_equal(append_one(fx->path, 200), SEMAIL_EPERM);
    assert_unchanged(target);
    assert_false(tu_exists(fx->lock));

    assert_int_equal(symlink(missing, dangling), 0);
    assert_int_equal(append_one(dangling, 200), SEMAIL_EPERM);
    assert_false(tu_exists(missing));
}

static void test_mbox_lock__refuses_a_hard_link(void **state)
{
    fixture *fx = *state;
    char other[160];

    tu_path(other, sizeof(other), fx->dir, "other");
    tu_write(other, old, sizeof(old) - 1);
    assert_int_equal(link(other, fx->path), 0);
    assert_int_equal(append_one(fx->path, 200), SEMAIL_EPERM);
    assert_unchanged(other);
    assert_false(tu_exists(fx->lock));
}

static void test_mbox_lock__refuses_what_is_not_a_regular_file(void **state)
{
    fixture *fx = *state;
    char fifo[160];

    assert_int_equal(mkdir(fx->path, 0700), 0);
    assert_int_equal(append_one(fx->path, 200), SEMAIL_EPERM);
    tu_path(fifo, sizeof(fifo), fx->dir, "fifo");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(append_one(fifo, 200), SEMAIL_EPERM);
}

static void test_mbox_lock__new_mbox_gets_the_mode_and_owner(void **state)
{
    fixture *fx = *state;
    semail_mbox_message m = tu_msg("x@y", "hello\n");
    semail_mbox_options o = tu_opts(1000);
    struct stat st;
    mode_t mask = umask(077);

    o.file_mode = 0640;
    o.uid = 4321;
    o.gid = 8765;
    assert_int_equal(semail_mbox_append(fx->path, &m, &o), 0);
    umask(mask);
    assert_int_equal(stat(fx->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    if (geteuid() == 0) {
        assert_int_equal(st.st_uid, 4321);
        assert_int_equal(st.st_gid, 8765);
    }
}

/* A transaction that cannot lock its second mbox leaves the first as it was. */
static void test_mbox_lock__failed_lock_leaves_no_new_file(void **state)
{
    fixture *fx = *state;
    char a[160], b[160], alock[170], block[170];
    semail_mbox_txn *txn;
    semail_mbox_message m = tu_msg("x@y", "hello\n");
    semail_mbox_options o = tu_opts(200);

    tu_path(a, sizeof(a), fx->dir, "a");
    tu_path(b, sizeof(b), fx->dir, "b");
    snprintf(alock, sizeof(alock), "%s.lock", a);
    snprintf(block, sizeof(block), "%s.lock", b);
    /* INBOX (existing) and a (new) sort first and get locked; b is held. */
    tu_write(fx->path, old, sizeof(old) - 1);
    tu_write(block, "1\n", 2);
    assert_int_equal(semail_mbox_txn_new(&txn, &o), 0);
    assert_int_equal(semail_mbox_txn_add(txn, b, &m), 0);
    assert_int_equal(semail_mbox_txn_add(txn, fx->path, &m), 0);
    assert_int_equal(semail_mbox_txn_add(txn, a, &m), 0);
    assert_int_equal(semail_mbox_txn_commit(txn), SEMAIL_ELOCKED);
    semail_mbox_txn_free(txn);
    assert_false(tu_exists(a));
    assert_false(tu_exists(alock));
    assert_false(tu_exists(fx->lock));
    assert_unchanged(fx->path);
    assert_false(tu_exists(b));
}

static void test_mbox_lock__missing_directory_is_an_error(void **state)
{
    fixture *fx = *state;
    char path[200];

    tu_path(path, sizeof(path), fx->dir, "nodir/INBOX");
    assert_true(append_one(path, 200) < 0);
    assert_false(tu_exists(path));
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_mbox_lock__held_dot_lock_times_out),
        T(test_mbox_lock__removes_a_stale_dot_lock),
        T(test_mbox_lock__dot_lock_holds_the_pid_and_the_undo_record),
        T(test_mbox_lock__waits_for_the_fcntl_lock_of_another_process),
        T(test_mbox_lock__kernel_lock_conflicts_within_the_process),
        T(test_mbox_lock__refuses_a_symlink),
        T(test_mbox_lock__refuses_a_hard_link),
        T(test_mbox_lock__refuses_what_is_not_a_regular_file),
        T(test_mbox_lock__new_mbox_gets_the_mode_and_owner),
        T(test_mbox_lock__failed_lock_leaves_no_new_file),
        T(test_mbox_lock__missing_directory_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
