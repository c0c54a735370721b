/*
 * test_mbox.c - the mboxrd writer and the all-or-nothing transaction.
 *
 * Faults: the I/O seam fails the Nth write or fsync (or every write after
 * byte N) with a chosen errno; a real full filesystem is a 64 KiB tmpfs
 * (skipped with a message when mounting is not permitted).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "mbox_internal.h"
#include "mbox_testutil.h"

/* ---- the writer ------------------------------------------------------- */

static int buf_sink(void *payload, const char *p, size_t n)
{
    return semail__buf_add(payload, p, n);
}

/* Quote IN as one data part fed in pieces of STEP bytes (0: at once). */
static char *quote(const char *in, size_t len, size_t step)
{
    semail_buf b;
    semail__mbox_quote q;

    semail__buf_init(&b, 1 << 24);
    assert_int_equal(semail__buf_add(&b, "", 0), 0);
    semail__mbox_quote_init(&q, buf_sink, &b);
    for (size_t i = 0; i < len;) {
        size_t k = step == 0 || len - i < step ? len - i : step;
        assert_int_equal(semail__mbox_quote_feed(&q, in + i, k), 0);
        i += k;
    }
    assert_int_equal(semail__mbox_quote_finish(&q), 0);
    return b.data;
}

static void assert_quoted(const char *in, const char *expected)
{
    char *out = quote(in, strlen(in), 0);
    assert_string_equal(out, expected);
    free(out);
}

static void test_mbox__quotes_from_at_every_line_start(void **state)
{
    assert_quoted("From a\nFrom b\n>From c\n>>From d\n",
                  ">From a\n>From b\n>>From c\n>>>From d\n\n");
}

static void test_mbox__leaves_other_froms_alone(void **state)
{
    assert_quoted("Fromage\nFrom\nFrom:x\n x From y\n>From\n>>Fro m\nfrom z\n",
                  "Fromage\nFrom\nFrom:x\n x From y\n>From\n>>Fro m\nfrom z\n\n");
}

static void test_mbox__turns_crlf_into_lf_and_keeps_bare_cr(void **state)
{
    assert_quoted("a\r\nb\rc\r\n\r\nFrom x\r\n", "a\nb\rc\n\n>From x\n\n");
    /* A bare CR does not start a line. */
    assert_quoted("x\rFrom y\r\n", "x\rFrom y\n\n");
    assert_quoted("\r\r\n", "\r\n\n");
}

static void test_mbox__ends_with_a_newline_and_an_empty_line(void **state)
{
    assert_quoted("abc", "abc\n\n");
    assert_quoted("abc\n", "abc\n\n");
    assert_quoted("abc\n\n", "abc\n\n\n");
    assert_quoted("abc\r", "abc\r\n\n");
    assert_quoted("", "\n");
    assert_quoted("Fro", "Fro\n\n");
    assert_quoted("From", "From\n\n");
    assert_quoted(">>", ">>\n\n");
}

/* Any split of the input gives the same output (the writer streams). */
static void test_mbox__quoting_does_not_depend_on_the_split(void **state)
{
    static const char in[] = "From x\r\n>From y\r\n\r\nFro\rm\r\n>>>From \r\nFrom\r\r\nx From "
                             "\nFrom";
    char *whole = quote(in, sizeof(in) - 1, 0);

    for (size_t step = 1; step < sizeof(in); step++) {
        char *part = quote(in, sizeof(in) - 1, step);
        assert_string_equal(part, whole);
        free(part);
    }
    free(whole);
}

static void test_mbox__from_line_is_mboxrd_in_utc(void **state)
{
    semail_buf b;

    semail__buf_init(&b, 4096);
    assert_int_equal(semail__mbox_from_line(buf_sink, &b, "bob@example.org", TU_DATE), 0);
    assert_string_equal(b.data, "From bob@example.org Sun Nov 29 05:03:16 2026\n");
    semail__buf_reset(&b);
    assert_int_equal(semail__mbox_from_line(buf_sink, &b, "", 1793595796), 0);
    assert_string_equal(b.data, "From MAILER-DAEMON Mon Nov  2 05:03:16 2026\n");
    semail__buf_reset(&b);
    assert_int_equal(semail__mbox_from_line(buf_sink, &b, NULL, TU_DATE), 0);
    assert_string_equal(b.data, "From MAILER-DAEMON Sun Nov 29 05:03:16 2026\n");
    semail__buf_free(&b);
}

static void test_mbox__from_line_sender_has_no_space_or_control(void **state)
{
    semail_buf b;

    semail__buf_init(&b, 4096);
    assert_int_equal(
        semail__mbox_from_line(buf_sink, &b, "\"john doe\"@x\r\n\t\x7f\xc3\xa9", TU_DATE), 0);
    assert_string_equal(b.data, "From \"john_doe\"@x____\xc3\xa9 Sun Nov 29 05:03:16 2026\n");
    semail__buf_free(&b);
}

/* ---- appends ------------------------------------------------------------ */

static const char old_mbox[] = "From old@x Sun Nov 29 05:03:16 2026\nSubject: old\n\nold body\n\n";

static void test_mbox__append_writes_the_exact_mboxrd_bytes(void **state)
{
    char dir[64], path[128];
    static const char prepend[] = "Return-Path: <bob@example.org>\r\nReceived: from x\r\n";
    static const char data[] = "Subject: hi\r\n\r\nFrom here\r\n>From there\r\nend";
    semail_mbox_message m = {"bob@example.org",   TU_DATE, prepend,
                             sizeof(prepend) - 1, data,    sizeof(data) - 1};
    size_t len;
    struct stat st;

    tu_tmpdir(dir, sizeof(dir));
    tu_path(path, sizeof(path), dir, "INBOX");
    assert_int_equal(semail_mbox_append(path, &m, NULL), 0);
    assert_int_equal(semail_mbox_append(path, &m, NULL), 0);
    char *got = tu_read(path, &len);
    static const char one[] = "From bob@example.org Sun Nov 29 05:03:16 2026\n"
                              "Return-Path: <bob@example.org>\nReceived: from x\n"
                              "Subject: hi\n\n>From here\n>>From there\nend\n\n";
    assert_int_equal(len, 2 * (sizeof(one) - 1));
    assert_memory_equal(got, one, sizeof(one) - 1);
    assert_memory_equal(got + sizeof(one) - 1, one, sizeof(one) - 1);
    assert_int_equal(tu_count_messages(got, len), 2);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    char lock[160];
    snprintf(lock, sizeof(lock), "%s.lock", path);
    assert_false(tu_exists(lock));
    free(got);
    tu_rmrf(dir);
}

static void test_mbox__quotes_the_prepend_and_ends_its_last_line(void **state)
{
    char dir[64], path[128];
    static const char prepend[] = "X-A: 1\nFrom evil\nX-B: 2";
    semail_mbox_message m = {"", TU_DATE, prepend, sizeof(prepend) - 1, "Body\n", 5};
    size_t len;

    tu_tmpdir(dir, sizeof(dir));
    tu_path(path, sizeof(path), dir, "f");
    assert_int_equal(semail_mbox_append(path, &m, NULL), 0);
    char *got = tu_read(path, &len);
    assert_string_equal(got, "From MAILER-DAEMON Sun Nov 29 05:03:16 2026\n"
                             "X-A: 1\n>From evil\nX-B: 2\nBody\n\n");
    free(got);
    tu_rmrf(dir);
}

/* A damaged mbox that lacks its final newline must not swallow the From_ line. */
static void test_mbox__appends_after_a_damaged_last_line(void **state)
{
    char dir[64], path[128];
    semail_mbox_message m = tu_msg("a@b", "x\n");
    size_t len;

    tu_tmpdir(dir, sizeof(dir));
    tu_path(path, sizeof(path), dir, "INBOX");
    static const char damaged[] = "From z@z Sun Nov 29 05:03:16 2026\ncut";
    tu_write(path, damaged, sizeof(damaged) - 1);
    assert_int_equal(semail_mbox_append(path, &m, NULL), 0);
    char *got = tu_read(path, &len);
    assert_string_equal(got, "From z@z Sun Nov 29 05:03:16 2026\ncut\n"
                             "From a@b Sun Nov 29 05:03:16 2026\nx\n\n");
    free(got);
    tu_rmrf(dir);
}

static void test_mbox__transaction_appends_to_every_path_in_order(void **state)
{
    char dir[64], a[128], b[128];
    semail_mbox_txn *txn;
    semail_mbox_message m1 = tu_msg("one@x", "1\n"), m2 = tu_msg("two@x", "2\n");
    size_t la, lb;

    tu_tmpdir(dir, sizeof(dir));
    tu_path(a, sizeof(a), dir, "zz");
    tu_path(b, sizeof(b), dir, "aa");
    assert_int_equal(semail_mbox_txn_new(&txn, NULL), 0);
    assert_int_equal(semail_mbox_txn_add(txn, a, &m1), 0);
    assert_int_equal(semail_mbox_txn_add(txn, b, &m1), 0);
    assert_int_equal(semail_mbox_txn_add(txn, a, &m2), 0);
    assert_int_equal(semail_mbox_txn_commit(txn), 0);
    assert_int_equal(semail_mbox_txn_commit(txn), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_txn_add(txn, a, &m1), SEMAIL_EINVAL);
    semail_mbox_txn_free(txn);
    char *ga = tu_read(a, &la), *gb = tu_read(b, &lb);
    assert_string_equal(ga, "From one@x Sun Nov 29 05:03:16 2026\n1\n\n"
                            "From two@x Sun Nov 29 05:03:16 2026\n2\n\n");
    assert_string_equal(gb, "From one@x Sun Nov 29 05:03:16 2026\n1\n\n");
    free(ga);
    free(gb);
    tu_rmrf(dir);
}

static void test_mbox__rejects_bad_arguments(void **state)
{
    semail_mbox_txn *txn;
    semail_mbox_message m = tu_msg("a@b", "x");
    semail_mbox_message nodata = {"a@b", 0, NULL, 0, NULL, 3};
    semail_mbox_options bad = SEMAIL_MBOX_OPTIONS_INIT;

    bad.version = 99;
    assert_int_equal(semail_mbox_txn_new(&txn, &bad), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_txn_new(&txn, NULL), 0);
    assert_int_equal(semail_mbox_txn_add(txn, "", &m), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_txn_add(txn, "/tmp/x", NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_txn_add(txn, "/tmp/x", &nodata), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_txn_commit(txn), 0); /* empty: nothing to do */
    semail_mbox_txn_free(txn);
    semail_mbox_txn_free(NULL);
}

/* ---- faults ------------------------------------------------------------ */

typedef struct fault {
    int fail_write; /* 1-based write call to fail; 0: none */
    int fail_fsync; /* 1-based fsync call to fail; 0: none */
    int err;
    size_t max_chunk; /* short writes: at most this much per call (0: any) */
    bool use_budget;  /* every write past BUDGET bytes fails */
    size_t budget;
    int writes, fsyncs;
    size_t written;
} fault;

static ssize_t fault_write(void *payload, int fd, const void *p, size_t n)
{
    fault *f = payload;
    ssize_t w;

    if (++f->writes == f->fail_write || (f->use_budget && f->written >= f->budget)) {
        errno = f->err;
        return -1;
    }
    if (f->max_chunk && n > f->max_chunk)
        n = f->max_chunk;
    if (f->use_budget && n > f->budget - f->written)
        n = f->budget - f->written;
    if ((w = write(fd, p, n)) > 0)
        f->written += (size_t)w;
    return w;
}

static int fault_fsync(void *payload, int fd, bool is_dir)
{
    fault *f = payload;
    if (++f->fsyncs == f->fail_fsync) {
        errno = f->err;
        return -1;
    }
    return is_dir ? fsync(fd) : fdatasync(fd);
}

typedef struct fixture {
    char dir[64];
    char inbox[128];  /* exists, holds old_mbox */
    char folder[128]; /* does not exist */
    char *big;        /* a message larger than the write buffer */
    size_t big_len;
} fixture;

static int fixture_setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    tu_tmpdir(fx->dir, sizeof(fx->dir));
    tu_path(fx->inbox, sizeof(fx->inbox), fx->dir, "INBOX");
    tu_path(fx->folder, sizeof(fx->folder), fx->dir, "alice@x,bob@y");
    tu_write(fx->inbox, old_mbox, sizeof(old_mbox) - 1);
    fx->big_len = 150 * 1024;
    fx->big = malloc(fx->big_len);
    assert_non_null(fx->big);
    for (size_t i = 0; i < fx->big_len; i++)
        fx->big[i] = (i % 61 == 60) ? '\n' : (char)('a' + i % 26);
    memcpy(fx->big + 61, "From the start\r\n", 16);
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture *fx = *state;
    tu_rmrf(fx->dir);
    free(fx->big);
    free(fx);
    return 0;
}

/* INBOX is byte-identical, the new folder absent, no dot-lock left. */
static void assert_rolled_back(const fixture *fx)
{
    char lock[160];
    size_t len;
    char *got = tu_read(fx->inbox, &len);

    assert_int_equal(len, sizeof(old_mbox) - 1);
    assert_memory_equal(got, old_mbox, len);
    free(got);
    assert_false(tu_exists(fx->folder));
    snprintf(lock, sizeof(lock), "%s.lock", fx->inbox);
    assert_false(tu_exists(lock));
    snprintf(lock, sizeof(lock), "%s.lock", fx->folder);
    assert_false(tu_exists(lock));
}

static void assert_committed(const fixture *fx)
{
    size_t li, lf;
    char *in = tu_read(fx->inbox, &li), *fo = tu_read(fx->folder, &lf);

    assert_non_null(fo);
    assert_memory_equal(in, old_mbox, sizeof(old_mbox) - 1);
    assert_int_equal(tu_count_messages(in, li), 3);
    assert_int_equal(tu_count_messages(fo, lf), 1);
    assert_true(lf > fx->big_len);
    assert_memory_equal(fo + lf - 2, "\n\n", 2);
    free(in);
    free(fo);
}

/* Big message to INBOX and the folder, a small one to INBOX again. */
static int commit_with(fixture *fx, fault *f)
{
    semail_mbox_txn *txn;
    semail_mbox_message big = {"bob@y", TU_DATE, "Return-Path: <bob@y>\r\n",
                               22,      fx->big, fx->big_len};
    semail_mbox_message small = tu_msg("bob@y", "small\r\n");
    semail__mbox_io io = {fault_write, fault_fsync, f};
    int err;

    assert_int_equal(semail_mbox_txn_new(&txn, NULL), 0);
    semail__mbox_txn_set_io(txn, &io);
    assert_int_equal(semail_mbox_txn_add(txn, fx->folder, &big), 0);
    assert_int_equal(semail_mbox_txn_add(txn, fx->inbox, &big), 0);
    assert_int_equal(semail_mbox_txn_add(txn, fx->inbox, &small), 0);
    err = semail_mbox_txn_commit(txn);
    semail_mbox_txn_free(txn);
    return err;
}

static void test_mbox__rolls_back_when_any_write_fails(void **state)
{
    fixture *fx = *state;
    int n, err;

    for (n = 1;; n++) {
        fault f = {.fail_write = n, .err = (n % 2) ? ENOSPC : EIO, .max_chunk = 20000};
        err = commit_with(fx, &f);
        if (err == 0)
            break;
        assert_int_equal(err, (n % 2) ? SEMAIL_EFULL : SEMAIL_EIO);
        assert_rolled_back(fx);
    }
    assert_true(n > 10); /* the faults did hit every write */
    assert_committed(fx);
}

static void test_mbox__rolls_back_on_enospc_at_any_byte(void **state)
{
    fixture *fx = *state;
    fault probe = {0};
    size_t total;

    /* Learn the size of the whole commit, then undo it. */
    assert_int_equal(commit_with(fx, &probe), 0);
    total = probe.written;
    unlink(fx->folder);
    assert_int_equal(truncate(fx->inbox, sizeof(old_mbox) - 1), 0);
    for (size_t budget = 0; budget < total; budget += total / 53 + 1) {
        fault f = {.use_budget = true, .budget = budget, .err = ENOSPC, .max_chunk = 4096};
        assert_int_equal(commit_with(fx, &f), SEMAIL_EFULL);
        assert_rolled_back(fx);
    }
    fault last = {.use_budget = true, .budget = total - 1, .err = EDQUOT};
    assert_int_equal(commit_with(fx, &last), SEMAIL_EFULL);
    assert_rolled_back(fx);
    fault enough = {.use_budget = true, .budget = total, .err = ENOSPC};
    assert_int_equal(commit_with(fx, &enough), 0);
    assert_committed(fx);
}

static void test_mbox__rolls_back_when_any_fsync_fails(void **state)
{
    fixture *fx = *state;
    int n, err;

    for (n = 1;; n++) {
        fault f = {.fail_fsync = n, .err = (n % 2) ? EIO : EDQUOT};
        err = commit_with(fx, &f);
        if (err == 0)
            break;
        assert_int_equal(err, (n % 2) ? SEMAIL_EIO : SEMAIL_EFULL);
        assert_rolled_back(fx);
    }
    /* INBOX, the folder, and the folder's directory (a new entry). */
    assert_int_equal(n, 4);
    assert_committed(fx);
}

static void test_mbox__short_writes_are_completed(void **state)
{
    fixture *fx = *state;
    fault f = {.max_chunk = 1000};
    assert_int_equal(commit_with(fx, &f), 0);
    assert_true(f.writes > 300);
    assert_committed(fx);
}

/* ---- a real full filesystem -------------------------------------------- */

typedef struct tmpfs {
    char dir[64];
    bool mounted;
    char *big;
} tmpfs;

/* The mount is undone in the teardown, so that a failed assertion does not leak it. */
static int tmpfs_setup(void **state)
{
    tmpfs *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    tu_tmpdir(t->dir, sizeof(t->dir));
    t->mounted = mount("tmpfs", t->dir, "tmpfs", 0, "size=64k,mode=0700") == 0;
    if (!t->mounted)
        print_message("skipped: cannot mount a tmpfs on %s (%s); needs root and CAP_SYS_ADMIN\n",
                      t->dir, strerror(errno));
    *state = t;
    return 0;
}

static int tmpfs_teardown(void **state)
{
    tmpfs *t = *state;
    if (t->mounted)
        (void)umount2(t->dir, MNT_DETACH);
    rmdir(t->dir);
    free(t->big);
    free(t);
    return 0;
}

static void test_mbox__rolls_back_on_enospc(void **state)
{
    tmpfs *t = *state;
    char inbox[128], folder[128];
    size_t len, big_len = 200 * 1024;
    char *got;
    semail_mbox_txn *txn;

    if (!t->mounted)
        skip();
    t->big = malloc(big_len + 1);
    assert_non_null(t->big);
    memset(t->big, 'x', big_len);
    t->big[big_len] = '\0';
    tu_path(inbox, sizeof(inbox), t->dir, "INBOX");
    tu_path(folder, sizeof(folder), t->dir, "a@x,b@y");
    tu_write(inbox, old_mbox, sizeof(old_mbox) - 1);

    semail_mbox_message m = tu_msg("b@y", t->big);
    assert_int_equal(semail_mbox_txn_new(&txn, NULL), 0);
    assert_int_equal(semail_mbox_txn_add(txn, inbox, &m), 0);
    assert_int_equal(semail_mbox_txn_add(txn, folder, &m), 0);
    assert_int_equal(semail_mbox_txn_commit(txn), SEMAIL_EFULL);
    semail_mbox_txn_free(txn);
    got = tu_read(inbox, &len);
    assert_int_equal(len, sizeof(old_mbox) - 1);
    assert_memory_equal(got, old_mbox, len);
    free(got);
    assert_false(tu_exists(folder));

    /* The rollback gave the space back: a small message fits. */
    semail_mbox_message small = tu_msg("b@y", "hello\n");
    assert_int_equal(semail_mbox_append(inbox, &small, NULL), 0);
    got = tu_read(inbox, &len);
    assert_int_equal(tu_count_messages(got, len), 2);
    free(got);
}

/* ---- concurrency --------------------------------------------------------- */

#define WORKERS 4
#define APPENDS 25

typedef struct worker {
    const char *path;
    int id;
    int failures;
} worker;

static void append_many(const char *path, int id, int *failures)
{
    char body[256];
    semail_mbox_options o = tu_opts(20000);

    for (int i = 0; i < APPENDS; i++) {
        snprintf(body, sizeof(body), "Subject: w%d m%d\n\nFrom w%d\nline 2 of w%d m%d\n", id, i, id,
                 id, i);
        semail_mbox_message m = tu_msg("w@x", body);
        if (semail_mbox_append(path, &m, &o) != 0)
            (*failures)++;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    append_many(w->path, w->id, &w->failures);
    return NULL;
}

/* Every message is there exactly once and intact. */
static void assert_all_delivered(const char *path)
{
    char needle[128];
    size_t len;
    char *got = tu_read(path, &len);

    assert_int_equal(tu_count_messages(got, len), WORKERS * APPENDS);
    for (int id = 0; id < WORKERS; id++) {
        for (int i = 0; i < APPENDS; i++) {
            snprintf(needle, sizeof(needle),
                     "\nSubject: w%d m%d\n\n>From w%d\nline 2 of w%d m%d\n\n", id, i, id, id, i);
            char *hit = strstr(got, needle);
            assert_non_null(hit);
            assert_null(strstr(hit + 1, needle));
        }
    }
    free(got);
}

static void test_mbox__threads_appending_at_once_lose_nothing(void **state)
{
    char dir[64], path[128];
    pthread_t th[WORKERS];
    worker w[WORKERS];

    tu_tmpdir(dir, sizeof(dir));
    tu_path(path, sizeof(path), dir, "INBOX");
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (worker){path, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_all_delivered(path);
    tu_rmrf(dir);
}

static void test_mbox__processes_appending_at_once_lose_nothing(void **state)
{
    char dir[64], path[128];
    pid_t pids[WORKERS];
    int status;

    tu_tmpdir(dir, sizeof(dir));
    tu_path(path, sizeof(path), dir, "INBOX");
    for (int i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            int failures = 0;
            append_many(path, i, &failures);
            _exit(failures == 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < WORKERS; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_all_delivered(path);
    tu_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbox__quotes_from_at_every_line_start),
        cmocka_unit_test(test_mbox__leaves_other_froms_alone),
        cmocka_unit_test(test_mbox__turns_crlf_into_lf_and_keeps_bare_cr),
        cmocka_unit_test(test_mbox__ends_with_a_newline_and_an_empty_line),
        cmocka_unit_test(test_mbox__quoting_does_not_depend_on_the_split),
        cmocka_unit_test(test_mbox__from_line_is_mboxrd_in_utc),
        cmocka_unit_test(test_mbox__from_line_sender_has_no_space_or_control),
        cmocka_unit_test(test_mbox__append_writes_the_exact_mboxrd_bytes),
        cmocka_unit_test(test_mbox__quotes_the_prepend_and_ends_its_last_line),
        cmocka_unit_test(test_mbox__appends_after_a_damaged_last_line),
        cmocka_unit_test(test_mbox__transaction_appends_to_every_path_in_order),
        cmocka_unit_test(test_mbox__rejects_bad_arguments),
        cmocka_unit_test_setup_teardown(test_mbox__rolls_back_when_any_write_fails, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mbox__rolls_back_on_enospc_at_any_byte, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mbox__rolls_back_when_any_fsync_fails, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mbox__short_writes_are_completed, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_mbox__rolls_back_on_enospc, tmpfs_setup,
                                        tmpfs_teardown),
        cmocka_unit_test(test_mbox__threads_appending_at_once_lose_nothing),
        cmocka_unit_test(test_mbox__processes_appending_at_once_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
