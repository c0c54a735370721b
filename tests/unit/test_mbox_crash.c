/*
 * test_mbox_crash.c - an append killed mid-write (kill -9) is cut away by
 * the next append to that mbox, through the undo record of the dot-lock.
 *
 * Crashes are real: a forked child appends through the I/O seam, which
 * stops after exactly BUDGET bytes and then either SIGKILLs the child or
 * tells the parent, which kill -9s it. Nothing is timed by sleeping.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "mbox_internal.h"
#include "mbox_testutil.h"

static const char old_mbox[] = "From old@x Sun Nov 29 05:03:16 2026\nSubject: old\n\nold body\n\n"
                               "From old2@x Sun Nov 29 05:03:16 2026\nSubject: old2\n\nbody 2\n\n";
static const char old_folder[] = "From f@x Sun Nov 29 05:03:16 2026\nSubject: f\n\nfolder\n\n";
static const char new_body[] = "Subject: new\n\nnew body\n";
static const char new_mbox[] = "From new@x Sun Nov 29 05:03:16 2026\nSubject: new\n\nnew body\n\n";

/* ---- the crashing child -------------------------------------------------- */

typedef struct crash {
    size_t budget; /* bytes written before the crash */
    size_t written;
    int ready_fd; /* >= 0: say so there and wait for kill -9; -1: SIGKILL itself */
} crash;

static void die(crash *c)
{
    if (c->ready_fd >= 0) {
        if (write(c->ready_fd, "r", 1) == 1)
            for (;;)
                pause();
    }
    kill(getpid(), SIGKILL);
}

static ssize_t crash_write(void *payload, int fd, const void *p, size_t n)
{
    crash *c = payload;
    ssize_t w;

    if (c->written >= c->budget)
        die(c);
    if (n > c->budget - c->written)
        n = c->budget - c->written;
    if ((w = write(fd, p, n)) > 0)
        c->written += (size_t)w;
    return w;
}

static int plain_fsync(void *payload, int fd, bool is_dir)
{
    return is_dir ? fsync(fd) : fdatasync(fd);
}

/* A child commits MSG to every path of PATHS through the crash seam. */
static pid_t spawn_append(const char *const *paths, size_t n, const semail_mbox_message *msg,
                          size_t budget, int ready_fd)
{
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0) {
        crash c = {budget, 0, ready_fd};
        /* A test that fails before its kill -9 must not leave us paused for ever. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        semail__mbox_io io = {crash_write, plain_fsync, &c};
        semail_mbox_txn *txn;
        if (semail_mbox_txn_new(&txn, NULL) < 0)
            _exit(1);
        semail__mbox_txn_set_io(txn, &io);
        for (size_t i = 0; i < n; i++)
            if (semail_mbox_txn_add(txn, paths[i], msg) < 0)
                _exit(1);
        _exit(semail_mbox_txn_commit(txn) == 0 ? 0 : 2);
    }
    return pid;
}

static void assert_killed(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

/* The child SIGKILLs itself after BUDGET bytes; reaped on return. Its pid. */
static pid_t crash_after(const char *const *paths, size_t n, const semail_mbox_message *msg,
                         size_t budget)
{
    pid_t pid = spawn_append(paths, n, msg, budget, -1);
    assert_killed(pid);
    return pid;
}

/* ---- helpers ------------------------------------------------------------ */

typedef struct fixture {
    char dir[64];
    char inbox[128];
    char folder[128];
    char inbox_lock[160];
    char folder_lock[160];
    char *big; /* a message body, NUL-terminated */
    size_t big_len;
    pid_t child; /* a paused child to kill if the test fails first; 0: none */
} fixture;

static void make_big(fixture *fx, size_t len)
{
    free(fx->big);
    fx->big = malloc(len + 1);
    assert_non_null(fx->big);
    for (size_t i = 0; i < len; i++)
        fx->big[i] = (i % 61 == 60) ? '\n' : (char)('a' + i % 26);
    memcpy(fx->big, "Subject: big\r\n\r\n", 16);
    fx->big[len] = '\0';
    fx->big_len = len;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    tu_tmpdir(fx->dir, sizeof(fx->dir));
    tu_path(fx->inbox, sizeof(fx->inbox), fx->dir, "INBOX");
    tu_path(fx->folder, sizeof(fx->folder), fx->dir, "alice@x,bob@y");
    snprintf(fx->inbox_lock, sizeof(fx->inbox_lock), "%s.lock", fx->inbox);
    snprintf(fx->folder_lock, sizeof(fx->folder_lock), "%s.lock", fx->folder);
    tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    tu_write(fx->folder, old_folder, sizeof(old_folder) - 1);
    make_big(fx, 256 * 1024);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    if (fx->child > 0) {
        kill(fx->child, SIGKILL);
        (void)waitpid(fx->child, NULL, 0);
    }
    tu_rmrf(fx->dir);
    free(fx->big);
    free(fx);
    return 0;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* The mboxrd size of MSG: append it to a scratch mbox. */
static size_t output_size(const fixture *fx, const semail_mbox_message *msg)
{
    char scratch[160];
    size_t n;

    tu_path(scratch, sizeof(scratch), fx->dir, "scratch");
    assert_int_equal(semail_mbox_append(scratch, msg, NULL), 0);
    n = (size_t)file_size(scratch);
    unlink(scratch);
    return n;
}

/* Append the small new message; *RECOVERED gets the transaction's count. */
static int append_new(const char *path, unsigned int timeout_ms, unsigned int *recovered)
{
    semail_mbox_message m = tu_msg("new@x", new_body);
    semail_mbox_options o = tu_opts(timeout_ms);
    semail_mbox_txn *txn;
    int err;

    assert_int_equal(semail_mbox_txn_new(&txn, &o), 0);
    assert_int_equal(semail_mbox_txn_add(txn, path, &m), 0);
    err = semail_mbox_txn_commit(txn);
    if (recovered != NULL)
        *recovered = semail__mbox_txn_recovered(txn);
    semail_mbox_txn_free(txn);
    return err;
}

/* PATH holds exactly A then B. */
static void assert_content(const char *path, const char *a, size_t alen, const char *b, size_t blen)
{
    size_t len;
    char *got = tu_read(path, &len);

    assert_non_null(got);
    assert_int_equal(len, alen + blen);
    assert_memory_equal(got, a, alen);
    assert_memory_equal(got + alen, b, blen);
    free(got);
}

static void assert_old_plus_new(const char *path, const char *old, size_t old_len)
{
    assert_content(path, old, old_len, new_mbox, sizeof(new_mbox) - 1);
}

/* A pid that is certainly not running (reaped at once). */
static pid_t dead_pid(void)
{
    int status;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* ---- the record ---------------------------------------------------------- */

static void test_mbox_crash__parses_only_its_own_lock_lines(void **state)
{
    static const char owner[] = "semail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836";
    static const struct {
        const char *text;
        bool ours;
    } cases[] = {
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 2049:77 4096\n", true},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 - -\n", true},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\ntail", true},
        {"", false},
        {"123\n", false},
        {"123", false},
        {"0\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
        {"-5\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
        {"+5\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
        {" 5\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
        {"4294967296\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
        {"123\nsemail 00000000-0000-0000-0000-000000000000 4026531836 1:2 3\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531837 1:2 3\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 40265318361 1:2 3\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 -3\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 - 3\n", false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 "
         "9223372036854775808\n",
         false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 "
         "9223372036854775807\n",
         true},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 "
         "18446744073709551616:2 3\n",
         false},
        {"123\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 a:b c\n", false},
        {"123\r\nsemail 76ac482e-07dc-48f0-a598-5fd2b0d670b2 4026531836 1:2 3\n", false},
    };
    semail__mbox_undo u;
    char big[300];

    for (size_t i = 0; i < SEMAIL_ARRAY_LEN(cases); i++) {
        bool got = semail__mbox_parse_lock(cases[i].text, strlen(cases[i].text), owner, &u);
        if (got != cases[i].ours)
            fail_msg("case %zu: %s", i, cases[i].text);
    }
    assert_true(semail__mbox_parse_lock(cases[0].text, strlen(cases[0].text), owner, &u));
    assert_int_equal(u.pid, 123);
    assert_true(u.has_file);
    assert_int_equal(u.dev, 2049);
    assert_int_equal(u.ino, 77);
    assert_int_equal(u.size, 4096);
    assert_true(semail__mbox_parse_lock(cases[1].text, strlen(cases[1].text), owner, &u));
    assert_false(u.has_file);
    /* No owner (no /proc) never matches; a NUL inside or an over-long lock is not ours. */
    assert_false(semail__mbox_parse_lock(cases[0].text, strlen(cases[0].text), "", &u));
    assert_false(semail__mbox_parse_lock(cases[0].text, strlen(cases[0].text) + 1, owner, &u));
    memset(big, '1', sizeof(big));
    memcpy(big, cases[0].text, strlen(cases[0].text));
    assert_false(semail__mbox_parse_lock(big, sizeof(big), owner, &u));
}

/* ---- crashes -------------------------------------------------------------- */

/* 8 MB, killed by the parent half-way; the record was in the lock before. */
static void test_mbox_crash__kill_9_mid_write_is_cut_away_by_the_next_append(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    size_t budget = 4 * 1024 * 1024 + 12345, len;
    int ready[2];
    char c, expected[256];
    unsigned int recovered = 99;
    struct timespec t0;

    make_big(fx, 8 * 1024 * 1024);
    semail_mbox_message m = tu_msg("big@x", fx->big);
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fx->child = spawn_append(paths, 1, &m, budget, ready[1]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    tu_lock_content(expected, sizeof(expected), (long)pid, fx->inbox, sizeof(old_mbox) - 1);
    char *lock = tu_read(fx->inbox_lock, &len);
    assert_string_equal(lock, expected);
    free(lock);
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_killed(pid);
    fx->child = 0;
    close(ready[0]);
    close(ready[1]);
    assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) - 1 + budget));

    /* Stale at once: neither the 300 s stale age nor the 30 s timeout is waited for. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(append_new(fx->inbox, 30000, &recovered), 0);
    assert_true(tu_elapsed_ms(&t0) < 2000);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    assert_false(tu_exists(fx->inbox_lock));
}

/* Killed after 0, 1, ... bytes up to the last one, also in a new mbox. */
static void test_mbox_crash__kill_at_any_byte_is_undone(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);
    size_t total = output_size(fx, &m);
    unsigned int recovered;
    size_t budgets[64], n = 0;

    budgets[n++] = 0;
    budgets[n++] = 1;
    budgets[n++] = 65535;
    budgets[n++] = 65536;
    budgets[n++] = 65537;
    budgets[n++] = total - 1;
    for (size_t b = 2; b < total && n < SEMAIL_ARRAY_LEN(budgets); b += total / 23)
        budgets[n++] = b;
    for (size_t i = 0; i < n; i++) {
        tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
        crash_after(paths, 1, &m, budgets[i]);
        assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) - 1 + budgets[i]));
        assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
        assert_int_equal(recovered, budgets[i] > 0);
        assert_old_plus_new(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    }

    /* The crashed append had created the mbox: it is cut to nothing. */
    unlink(fx->inbox);
    crash_after(paths, 1, &m, 1000);
    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->inbox, "", 0);
}

/* Folder written whole, INBOX half; each is recovered by its own next append. */
static void test_mbox_crash__both_mboxes_of_a_transaction_are_recovered(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->folder, fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);
    size_t one = output_size(fx, &m);
    unsigned int recovered;

    crash_after(paths, 2, &m, one + one / 2);
    assert_int_equal(file_size(fx->folder), (off_t)(sizeof(old_folder) - 1 + one));
    assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) - 1 + one / 2));
    assert_true(tu_exists(fx->folder_lock));

    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    /* Not committed: the whole message in the folder goes too. */
    assert_int_equal(append_new(fx->folder, 2000, &recovered), 0);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->folder, old_folder, sizeof(old_folder) - 1);
}

/* A holder that is alive mid-write is waited for, its bytes left alone. */
static void test_mbox_crash__a_live_holder_is_waited_for(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);
    int ready[2];
    char c;
    unsigned int recovered;
    struct timespec t0;

    assert_int_equal(pipe(ready), 0);
    pid_t pid = fx->child = spawn_append(paths, 1, &m, 100000, ready[1]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(append_new(fx->inbox, 300, &recovered), SEMAIL_ELOCKED);
    assert_true(tu_elapsed_ms(&t0) >= 290);
    assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) - 1 + 100000));
    assert_true(tu_exists(fx->inbox_lock));

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_killed(pid);
    fx->child = 0;
    close(ready[0]);
    close(ready[1]);
    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
}

/*
 * Records that kill(pid, 0) cannot judge: another boot (or host), another
 * pid namespace, a live pid. Plain locks: waited for, removed by age only,
 * and the mbox never cut.
 */
static void test_mbox_crash__a_foreign_or_live_record_is_a_plain_lock(void **state)
{
    fixture *fx = *state;
    static const char partial[] = "From partial@x Sun Nov 29 05:03:16 2026\nhalf a line\n";
    char owner[128], other[3][160], lock[320], before[512];
    struct timeval aged[2] = {{time(NULL) - 1000, 0}, {time(NULL) - 1000, 0}};
    struct stat st;
    unsigned int recovered;
    pid_t dead = dead_pid();
    size_t blen;

    tu_owner(owner, sizeof(owner));
    snprintf(other[0], sizeof(other[0]), "%ld\nsemail 00000000-0000-0000-0000-000000000000 %s",
             (long)dead, strrchr(owner, ' ') + 1);
    snprintf(other[1], sizeof(other[1]), "%ld\n%.*s 1", (long)dead,
             (int)(strrchr(owner, ' ') - owner), owner);
    snprintf(other[2], sizeof(other[2]), "1\n%s", owner); /* init: always alive */
    for (int i = 0; i < 3; i++) {
        semail_mbox_options o = tu_opts(300);
        tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
        assert_int_equal(stat(fx->inbox, &st), 0);
        snprintf(lock, sizeof(lock), "%s %llu:%llu %zu\n", other[i], (unsigned long long)st.st_dev,
                 (unsigned long long)st.st_ino, sizeof(old_mbox) - 1);
        int fd = open(fx->inbox, O_WRONLY | O_APPEND);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, partial, sizeof(partial) - 1), (ssize_t)sizeof(partial) - 1);
        close(fd);
        tu_write(fx->inbox_lock, lock, strlen(lock));

        assert_int_equal(append_new(fx->inbox, 300, &recovered), SEMAIL_ELOCKED);
        assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) + sizeof(partial) - 2));
        assert_int_equal(utimes(fx->inbox_lock, aged), 0);
        o.stale_lock_s = 60;
        o.lock_timeout_ms = 2000;
        semail_mbox_message m = tu_msg("new@x", new_body);
        semail_mbox_txn *txn;
        assert_int_equal(semail_mbox_txn_new(&txn, &o), 0);
        assert_int_equal(semail_mbox_txn_add(txn, fx->inbox, &m), 0);
        assert_int_equal(semail_mbox_txn_commit(txn), 0);
        assert_int_equal(semail__mbox_txn_recovered(txn), 0);
        semail_mbox_txn_free(txn);
        blen = (size_t)snprintf(before, sizeof(before), "%s%s", old_mbox, partial);
        assert_old_plus_new(fx->inbox, before, blen);
    }
}

/* The mbox was replaced (another inode) or shrunk since the crash: left alone. */
static void test_mbox_crash__a_changed_mbox_is_left_alone(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);
    char copy[160];
    size_t len;
    unsigned int recovered;

    /* Replaced by a copy (as a mail reader that rewrites and renames does). */
    crash_after(paths, 1, &m, 70000);
    char *was = tu_read(fx->inbox, &len);
    assert_int_equal(len, sizeof(old_mbox) - 1 + 70000);
    tu_path(copy, sizeof(copy), fx->dir, "INBOX.new");
    tu_write(copy, was, len);
    assert_int_equal(rename(copy, fx->inbox), 0);
    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 0);
    assert_false(tu_exists(fx->inbox_lock));
    /* The damaged copy is kept, our message after it (on a line of its own). */
    was = realloc(was, len + 1);
    assert_non_null(was);
    if (was[len - 1] != '\n')
        was[len++] = '\n';
    assert_old_plus_new(fx->inbox, was, len);
    free(was);

    /* Shrunk below the recorded size (a message deleted): never grown back. */
    size_t first = (size_t)(strstr(old_mbox, "From old2@x") - old_mbox);
    tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    crash_after(paths, 1, &m, 70000);
    assert_int_equal(truncate(fx->inbox, (off_t)first), 0);
    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 0);
    assert_old_plus_new(fx->inbox, old_mbox, first);
}

/* Recovery cannot lock the mbox (a reader holds it): the record stays for the next one. */
static void test_mbox_crash__an_unfinished_recovery_is_left_for_the_next_append(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    char expected[256];
    size_t len;
    unsigned int recovered;

    pid_t pid = crash_after(paths, 1, &m, 70000);
    tu_lock_content(expected, sizeof(expected), (long)pid, fx->inbox, sizeof(old_mbox) - 1);
    int fd = open(fx->inbox, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
    assert_int_equal(append_new(fx->inbox, 300, &recovered), SEMAIL_ELOCKED);
    char *lock = tu_read(fx->inbox_lock, &len);
    assert_non_null(lock);
    assert_string_equal(lock, expected);
    free(lock);
    assert_int_equal(file_size(fx->inbox), (off_t)(sizeof(old_mbox) - 1 + 70000));
    close(fd);
    assert_int_equal(append_new(fx->inbox, 2000, &recovered), 0);
    assert_int_equal(recovered, 1);
    assert_old_plus_new(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
}

/* ---- several recoverers at once --------------------------------------------- */

#define RACERS 4
#define ROUNDS 8

static const char racer_body_fmt[] = "Subject: racer %d\n\nbody of racer %d\n";

static int racer_append(const char *path, int id, unsigned int *recovered)
{
    char body[128];
    semail_mbox_options o = tu_opts(10000);
    semail_mbox_txn *txn;
    int err;

    snprintf(body, sizeof(body), racer_body_fmt, id, id);
    semail_mbox_message m = tu_msg("r@x", body);
    if ((err = semail_mbox_txn_new(&txn, &o)) < 0)
        return err;
    if ((err = semail_mbox_txn_add(txn, path, &m)) == 0)
        err = semail_mbox_txn_commit(txn);
    *recovered = semail__mbox_txn_recovered(txn);
    semail_mbox_txn_free(txn);
    return err;
}

/* The old messages, then every racer's message once, nothing else. */
static void assert_racers_delivered(const char *path)
{
    char needle[160];
    size_t len, want = sizeof(old_mbox) - 1;
    char *got = tu_read(path, &len);

    assert_memory_equal(got, old_mbox, sizeof(old_mbox) - 1);
    for (int id = 0; id < RACERS; id++) {
        int n = snprintf(needle, sizeof(needle), "From r@x Sun Nov 29 05:03:16 2026\n");
        n += snprintf(needle + n, sizeof(needle) - (size_t)n, racer_body_fmt, id, id);
        needle[n++] = '\n';
        needle[n] = '\0';
        char *hit = strstr(got, needle);
        assert_non_null(hit);
        assert_null(strstr(hit + 1, needle));
        want += (size_t)n;
    }
    assert_int_equal(len, want);
    free(got);
}

static void test_mbox_crash__racing_processes_cut_once_and_lose_nothing(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);

    for (int round = 0; round < ROUNDS; round++) {
        int go[2], status, total = 0;
        pid_t pids[RACERS];
        char c;

        tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
        crash_after(paths, 1, &m, 30000 + (size_t)round * 7001);
        assert_int_equal(pipe(go), 0);
        for (int i = 0; i < RACERS; i++) {
            pids[i] = fork();
            assert_true(pids[i] >= 0);
            if (pids[i] == 0) {
                unsigned int rec = 0;
                close(go[1]);
                if (read(go[0], &c, 1) != 0) /* released together when the pipe closes */
                    _exit(1);
                _exit(racer_append(fx->inbox, i, &rec) == 0 ? 10 + (int)rec : 1);
            }
        }
        close(go[0]);
        close(go[1]);
        for (int i = 0; i < RACERS; i++) {
            assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
            assert_true(WIFEXITED(status));
            assert_true(WEXITSTATUS(status) >= 10);
            total += WEXITSTATUS(status) - 10;
        }
        assert_int_equal(total, 1);
        assert_racers_delivered(fx->inbox);
        assert_false(tu_exists(fx->inbox_lock));
    }
}

typedef struct racer {
    const char *path;
    int id;
    pthread_barrier_t *start;
    int err;
    unsigned int recovered;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    pthread_barrier_wait(r->start);
    r->err = racer_append(r->path, r->id, &r->recovered);
    return NULL;
}

/* Threads share the pid: the lock on the lock file, not the pid, picks one. */
static void test_mbox_crash__racing_threads_cut_once_and_lose_nothing(void **state)
{
    fixture *fx = *state;
    const char *paths[] = {fx->inbox};
    semail_mbox_message m = tu_msg("big@x", fx->big);

    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_t start;
        pthread_t th[RACERS];
        racer r[RACERS];
        unsigned int total = 0;

        tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
        crash_after(paths, 1, &m, 30000 + (size_t)round * 7001);
        assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
        for (int i = 0; i < RACERS; i++) {
            r[i] = (racer){fx->inbox, i, &start, -1, 0};
            assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
        }
        for (int i = 0; i < RACERS; i++) {
            assert_int_equal(pthread_join(th[i], NULL), 0);
            assert_int_equal(r[i].err, 0);
            total += r[i].recovered;
        }
        pthread_barrier_destroy(&start);
        assert_int_equal(total, 1);
        assert_racers_delivered(fx->inbox);
    }
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbox_crash__parses_only_its_own_lock_lines),
        T(test_mbox_crash__kill_9_mid_write_is_cut_away_by_the_next_append),
        T(test_mbox_crash__kill_at_any_byte_is_undone),
        T(test_mbox_crash__both_mboxes_of_a_transaction_are_recovered),
        T(test_mbox_crash__a_live_holder_is_waited_for),
        T(test_mbox_crash__a_foreign_or_live_record_is_a_plain_lock),
        T(test_mbox_crash__a_changed_mbox_is_left_alone),
        T(test_mbox_crash__an_unfinished_recovery_is_left_for_the_next_append),
        T(test_mbox_crash__racing_processes_cut_once_and_lose_nothing),
        T(test_mbox_crash__racing_threads_cut_once_and_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
