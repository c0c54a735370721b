/*
 * test_queue.c - the delivery queue (queue.h): durability, recovery from
 * damaged and half-written files, locking across threads and processes,
 * flush, the retry schedule and expiry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "queue_file.h"
#include "queue_internal.h"
#include "semail/queue.h"

static const char *const RCPTS[] = {"bob@example.org", "carol@example.net"};
static const char DATA[] = "From: alice@a.semail.test\r\nSubject: hi\r\n\r\nHello.\r\n";

typedef struct fixture {
    char dir[64];
} fixture;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/semail-queue-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static char *path_in(const fixture *f, const char *sub, const char *name)
{
    static _Thread_local char p[256];
    snprintf(p, sizeof(p), "%s/%s/%s", f->dir, sub, name);
    return p;
}

static size_t count_files(const fixture *f, const char *sub)
{
    char p[256];
    size_t n = 0;
    struct dirent *de;
    DIR *d;
    snprintf(p, sizeof(p), "%s/%s", f->dir, sub);
    if ((d = opendir(p)) == NULL)
        return 0;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static semail_queue *open_q(const fixture *f)
{
    semail_queue *q = NULL;
    assert_int_equal(semail_queue_open(&q, f->dir, NULL), 0);
    return q;
}

static void submit(semail_queue *q, char *qid)
{
    assert_int_equal(
        semail_queue_submit(qid, q, "alice@a.semail.test", RCPTS, 2, DATA, sizeof(DATA) - 1), 0);
}

static semail_queue_result result(int code, const char *enh, const char *text)
{
    semail_queue_result r;
    memset(&r, 0, sizeof(r));
    r.code = code;
    snprintf(r.enhanced, sizeof(r.enhanced), "%s", enh);
    snprintf(r.remote_host, sizeof(r.remote_host), "mx.example.org");
    snprintf(r.text, sizeof(r.text), "%s", text);
    r.time_ms = 1700000000000;
    return r;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf;
    long n;
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    rewind(fp);
    buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void spew(const char *path, const char *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

typedef struct listing {
    size_t n;
    char qids[64][SEMAIL_QUEUE_QID_SIZE];
    semail_queue_rcpt_state states[64][2];
    unsigned attempts[64];
} listing;

static int collect(const semail_queue_info *info, void *payload)
{
    listing *l = payload;
    if (l->n < 64) {
        memcpy(l->qids[l->n], info->qid, SEMAIL_QUEUE_QID_SIZE);
        for (size_t i = 0; i < info->rcpt_count && i < 2; i++)
            l->states[l->n][i] = info->rcpts[i].state;
        l->attempts[l->n] = info->attempts;
    }
    l->n++;
    return 0;
}

static listing list(semail_queue *q)
{
    listing l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(semail_queue_list(q, collect, &l), 0);
    return l;
}

/* ---- round trip ------------------------------------------------------------ */

static void test_queue__round_trip_survives_restart(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0", "queued as 123"),
                        later = result(451, "4.3.0", "try later");
    const semail_queue_info *info;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    size_t len;
    listing l;

    submit(q, qid);
    l = list(q);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.qids[0], qid);

    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    info = semail_queue_entry_info(e);
    assert_string_equal(info->sender, "alice@a.semail.test");
    assert_int_equal(info->rcpt_count, 2);
    assert_string_equal(info->rcpts[1].address, "carol@example.net");
    assert_int_equal(info->size, sizeof(DATA) - 1);
    assert_memory_equal(semail_queue_entry_data(e, &len), DATA, sizeof(DATA) - 1);
    assert_int_equal(len, sizeof(DATA) - 1);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_PENDING, &later), 0);
    assert_int_equal(semail_queue_schedule(e, info->arrival_ms + 600000), 0);
    semail_queue_release(e);
    semail_queue_free(q);

    q = open_q(f); /* the "restart" */
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    info = semail_queue_entry_info(e);
    assert_int_equal(info->attempts, 1);
    assert_int_equal(info->next_attempt_ms, info->arrival_ms + 600000);
    assert_int_equal(info->rcpts[0].state, SEMAIL_QUEUE_DELIVERED);
    assert_int_equal(info->rcpts[0].result.code, 250);
    assert_string_equal(info->rcpts[0].result.text, "queued as 123");
    assert_int_equal(info->rcpts[1].state, SEMAIL_QUEUE_PENDING);
    assert_string_equal(info->rcpts[1].result.enhanced, "4.3.0");
    assert_string_equal(info->rcpts[1].result.remote_host, "mx.example.org");
    assert_int_equal(info->rcpts[1].result.time_ms, 1700000000000);
    assert_int_equal(semail_queue_remove(e), 0);
    semail_queue_release(e);
    assert_int_equal(list(q).n, 0);
    assert_int_equal(count_files(f, "state"), 0);
    semail_queue_free(q);
}

static void test_queue__qids_are_unique_sortable_and_alphanumeric(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    char qids[5][SEMAIL_QUEUE_QID_SIZE];
    listing l;

    for (int i = 0; i < 5; i++) {
        submit(q, qids[i]);
        assert_int_equal(strlen(qids[i]), SEMAIL_QUEUE_QID_LEN);
        assert_int_equal(strspn(qids[i], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                         SEMAIL_QUEUE_QID_LEN);
        if (i > 0)
            assert_true(strcmp(qids[i - 1], qids[i]) < 0);
        usleep(2000);
    }
    l = list(q);
    assert_int_equal(l.n, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(l.qids[i], qids[i]);
    semail_queue_free(q);
}

static void test_queue__refuses_bad_envelopes(void **state)
{
    fixture *f = *state;
    semail_queue_options opts = SEMAIL_QUEUE_OPTIONS_INIT;
    semail_queue *q = NULL;
    const char *crlf[] = {"bob@example.org\r\nRCPT TO:<x@y>"};
    const char *empty[] = {""};
    const char *null[] = {NULL};
    char qid[SEMAIL_QUEUE_QID_SIZE];

    opts.max_message_size = 10;
    assert_int_equal(semail_queue_open(&q, f->dir, &opts), 0);
    assert_int_equal(semail_queue_submit(qid, q, "a@b", RCPTS, 0, "x", 1), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_submit(qid, q, "a@b", crlf, 1, "x", 1), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_submit(qid, q, "a\nb@c", RCPTS, 1, "x", 1), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_submit(qid, q, "a@b", empty, 1, "x", 1), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_submit(qid, q, "a@b", null, 1, "x", 1), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_submit(qid, q, "a@b", RCPTS, 1, DATA, sizeof(DATA) - 1),
                     SEMAIL_ETOOBIG);
    assert_int_equal(list(q).n, 0);
    assert_int_equal(count_files(f, "tmp"), 0);
    /* The null sender is fine: bounces are queued with it. */
    assert_int_equal(semail_queue_submit(qid, q, "", RCPTS, 1, "x", 1), 0);
    assert_int_equal(semail_queue_lock(NULL, q, qid), SEMAIL_EINVAL);
    semail_queue_entry *e;
    assert_int_equal(semail_queue_lock(&e, q, "../../etc/passwd"), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_lock(&e, q, "0000000000000000ZZ"), SEMAIL_ENOTFOUND);
    semail_queue_free(q);
}

static void test_queue__final_states_are_final(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result bad = result(550, "5.1.1", "no such user");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_FAILED, &bad), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_PENDING, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_record(e, 2, SEMAIL_QUEUE_DELIVERED, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_record(e, 1, (semail_queue_rcpt_state)7, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[0].state, SEMAIL_QUEUE_FAILED);
    assert_int_equal(semail_queue_remove(e), 0);
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_DELIVERED, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_queue_remove(e), SEMAIL_EINVAL);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue__record_sanitizes_and_cuts_the_result(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result r = result(550, "5.7.1", "");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    memset(r.text, 'x', sizeof(r.text) - 1);
    memcpy(r.text, "no\r\nX-Evil: 1", 13);
    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_FAILED, &r), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    const char *text = semail_queue_entry_info(e)->rcpts[0].result.text;
    assert_int_equal(strncmp(text, "no  X-Evil: 1xxx", 16), 0);
    assert_int_equal(strlen(text), SEMAIL_QUEUE_TEXT_SIZE - 1);
    semail_queue_release(e);
    semail_queue_free(q);
}

/* ---- damaged files ----------------------------------------------------------- */

/* A state file cut anywhere (a crash of a careless writer, a bad disk) is never "delivered". */
static void test_queue__truncated_state_is_never_delivered(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0", "ok"), bad = result(550, "5.1.1", "unknown");
    char qid[SEMAIL_QUEUE_QID_SIZE], *full;
    size_t len;

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_FAILED, &bad), 0);
    semail_queue_release(e);
    semail_queue_free(q);
    full = slurp(path_in(f, "state", qid), &len);

    for (size_t cut = 0; cut <= len; cut++) {
        spew(path_in(f, "state", qid), full, cut);
        q = open_q(f);
        listing l = list(q);
        assert_int_equal(l.n, 1);
        assert_int_equal(semail_queue_lock(&e, q, qid), 0);
        const semail_queue_info *info = semail_queue_entry_info(e);
        if (cut < len) {
            assert_int_equal(info->rcpts[0].state, SEMAIL_QUEUE_PENDING);
            assert_int_equal(info->rcpts[1].state, SEMAIL_QUEUE_PENDING);
            assert_int_equal(l.states[0][0], SEMAIL_QUEUE_PENDING);
        } else {
            assert_int_equal(info->rcpts[0].state, SEMAIL_QUEUE_DELIVERED);
            assert_int_equal(info->rcpts[1].state, SEMAIL_QUEUE_FAILED);
        }
        semail_queue_release(e);
        semail_queue_free(q);
    }
    /* One flipped byte anywhere: the checksum catches it. */
    for (size_t i = 0; i < len; i++) {
        full[i] ^= 0x01;
        spew(path_in(f, "state", qid), full, len);
        full[i] ^= 0x01;
        q = open_q(f);
        assert_int_equal(semail_queue_lock(&e, q, qid), 0);
        assert_int_equal(semail_queue_entry_info(e)->rcpts[0].state, SEMAIL_QUEUE_PENDING);
        semail_queue_release(e);
        semail_queue_free(q);
    }
    free(full);
}

/* A message file cut anywhere is moved to corrupt/ at open, never delivered. */
static void test_queue__truncated_message_is_quarantined(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    char qid[SEMAIL_QUEUE_QID_SIZE], *full;
    size_t len;

    submit(q, qid);
    semail_queue_free(q);
    full = slurp(path_in(f, "msg", qid), &len);
    for (size_t cut = 0; cut < len; cut++) {
        spew(path_in(f, "msg", qid), full, cut);
        q = open_q(f);
        assert_int_equal(list(q).n, 0);
        assert_int_equal(semail_queue_lock(&e, q, qid), SEMAIL_ENOTFOUND);
        assert_int_equal(semail_queue_lock_due(&e, q, INT64_MAX, NULL), SEMAIL_ENOTFOUND);
        assert_int_equal(count_files(f, "corrupt"), 1);
        assert_int_equal(unlink(path_in(f, "corrupt", qid)), 0);
        semail_queue_free(q);
    }
    free(full);
}

/* Damaged data (right size, wrong bytes) is caught by the checksum when locked. */
static void test_queue__damaged_data_is_caught_at_lock(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    char qid[SEMAIL_QUEUE_QID_SIZE], *full;
    size_t len;

    submit(q, qid);
    full = slurp(path_in(f, "msg", qid), &len);
    full[len - 20] ^= 0x20; /* in the data, before the trailer */
    spew(path_in(f, "msg", qid), full, len);
    free(full);
    assert_int_equal(semail_queue_lock(&e, q, qid), SEMAIL_EIO);
    assert_null(e);
    assert_int_equal(count_files(f, "msg"), 0);
    assert_int_equal(count_files(f, "corrupt"), 1);
    semail_queue_free(q);
}

static void test_queue__open_removes_what_dead_writers_left(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int held;

    submit(q, qid);
    semail_queue_free(q);
    spew(path_in(f, "tmp", "0123456789ABCDEF.dead"), "SEMAIL-QUEUE-MSG 1\nqid", 22);
    spew(path_in(f, "state", "0000000000000000ORPHAN"), "x", 1);
    /* A writer still alive holds a lock on its temporary file: left alone. */
    spew(path_in(f, "tmp", "0123456789ABCDEF.live"), "SEMAIL", 6);
    held = open(path_in(f, "tmp", "0123456789ABCDEF.live"), O_RDONLY);
    assert_true(held >= 0);
    assert_int_equal(flock(held, LOCK_EX), 0);

    q = open_q(f);
    assert_int_equal(access(path_in(f, "tmp", "0123456789ABCDEF.dead"), F_OK), -1);
    assert_int_equal(access(path_in(f, "tmp", "0123456789ABCDEF.live"), F_OK), 0);
    assert_int_equal(access(path_in(f, "state", "0000000000000000ORPHAN"), F_OK), -1);
    assert_int_equal(list(q).n, 1);
    semail_queue_free(q);
    close(held);
}

/* A real crash: a process killed (SIGKILL) in the middle of submitting. */
static void test_queue__kill_during_submit_leaves_only_whole_messages(void **state)
{
    fixture *f = *state;
    semail_queue *q;
    semail_queue_entry *e;
    size_t big = 128 * 1024;
    char *data = malloc(big);
    listing l;
    pid_t pid;

    memset(data, 'a', big);
    for (int round = 0; round < 3; round++) {
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            semail_queue *cq = NULL;
            char qid[SEMAIL_QUEUE_QID_SIZE];
            if (semail_queue_open(&cq, f->dir, NULL) < 0)
                _exit(2);
            for (;;)
                semail_queue_submit(qid, cq, "a@b", RCPTS, 2, data, big);
        }
        usleep(30000 + round * 7000);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    q = open_q(f);
    assert_int_equal(count_files(f, "tmp"), 0);
    l = list(q);
    assert_true(l.n > 0);
    for (size_t i = 0; i < l.n && i < 64; i++) {
        assert_int_equal(semail_queue_lock(&e, q, l.qids[i]), 0);
        assert_int_equal(semail_queue_entry_info(e)->size, big);
        semail_queue_release(e);
    }
    assert_int_equal(count_files(f, "corrupt"), 0);
    semail_queue_free(q);
    free(data);
}

/* ---- concurrency ------------------------------------------------------------- */

#define WORK_MSGS    24
#define WORK_THREADS 4

typedef struct work {
    semail_queue *q;
    pthread_mutex_t mu;
    char qids[WORK_MSGS][SEMAIL_QUEUE_QID_SIZE];
    int handled[WORK_MSGS];
    int holding[WORK_MSGS];
    int overlap;
} work;

static void *worker(void *arg)
{
    work *w = arg;
    semail_queue_entry *e;

    while (semail_queue_lock_due(&e, w->q, INT64_MAX, NULL) == 0) {
        const char *qid = semail_queue_entry_info(e)->qid;
        int k = -1;
        for (int i = 0; i < WORK_MSGS; i++)
            if (strcmp(w->qids[i], qid) == 0)
                k = i;
        pthread_mutex_lock(&w->mu);
        if (k < 0 || w->holding[k]++)
            w->overlap++;
        w->handled[k < 0 ? 0 : k]++;
        pthread_mutex_unlock(&w->mu);
        usleep(1000);
        pthread_mutex_lock(&w->mu);
        if (k >= 0)
            w->holding[k]--;
        pthread_mutex_unlock(&w->mu);
        semail_queue_remove(e);
        semail_queue_release(e);
    }
    return NULL;
}

static void test_queue__two_threads_never_hold_the_same_message(void **state)
{
    fixture *f = *state;
    work w;
    pthread_t t[WORK_THREADS];
    semail_queue_entry *a, *b;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    w.q = open_q(f);
    for (int i = 0; i < WORK_MSGS; i++)
        submit(w.q, w.qids[i]);

    /* The plain case first: a second lock on a held message fails. */
    assert_int_equal(semail_queue_lock(&a, w.q, w.qids[0]), 0);
    assert_int_equal(semail_queue_lock(&b, w.q, w.qids[0]), SEMAIL_ELOCKED);
    semail_queue_release(a);

    for (int i = 0; i < WORK_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w), 0);
    for (int i = 0; i < WORK_THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(w.overlap, 0);
    for (int i = 0; i < WORK_MSGS; i++)
        assert_int_equal(w.handled[i], 1);
    assert_int_equal(list(w.q).n, 0);
    semail_queue_free(w.q);
    pthread_mutex_destroy(&w.mu);
}

/* What `semail-admin queue list|flush|delete` does from another process. */
static int admin_child(const char *dir, const char *held, const char *free_qid)
{
    semail_queue_options opts = SEMAIL_QUEUE_OPTIONS_INIT;
    semail_queue *q = NULL;
    listing l;

    memset(&l, 0, sizeof(l));
    if (semail_queue_open(&q, dir, NULL) < 0)
        return 10;
    if (semail_queue_list(q, collect, &l) != 0 || l.n != 2)
        return 11;
    if (semail_queue_delete(q, held) != SEMAIL_ELOCKED)
        return 12;
    if (semail_queue_delete(q, free_qid) != 0)
        return 13;
    if (semail_queue_delete(q, free_qid) != SEMAIL_ENOTFOUND)
        return 14;
    if (semail_queue_flush(q) != 0)
        return 15;
    semail_queue_free(q);
    /* With a lock timeout, delete waits for the delivery to end. */
    opts.lock_timeout_ms = 5000;
    if (semail_queue_open(&q, dir, &opts) < 0)
        return 16;
    if (semail_queue_delete(q, held) != 0)
        return 17;
    semail_queue_free(q);
    return 0;
}

static void test_queue__another_process_lists_flushes_and_deletes(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    char held[SEMAIL_QUEUE_QID_SIZE], other[SEMAIL_QUEUE_QID_SIZE];
    int status, go[2];
    pid_t pid;

    submit(q, held);
    submit(q, other);
    /* Fork first: a child would inherit (and keep) the flock of an open entry. */
    assert_int_equal(pipe(go), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char c;
        semail_queue_free(q);
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(9);
        _exit(admin_child(f->dir, held, other));
    }
    close(go[0]);
    assert_int_equal(semail_queue_lock(&e, q, held), 0);
    assert_int_equal(write(go[1], "x", 1), 1);
    close(go[1]);
    /* Hold the message until the child has flushed, then let its delete through. */
    for (int i = 0; i < 500 && access(path_in(f, ".", "flush"), F_OK) < 0; i++)
        usleep(10000);
    usleep(50000);
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, NULL), 0);
    semail_queue_release(e);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(list(q).n, 0);
    semail_queue_free(q);
}

static void test_queue__flush_makes_a_scheduled_message_due(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int64_t now = semail_queue_now_ms(), next;

    submit(q, qid);
    assert_int_equal(semail_queue_lock_due(&e, q, now + 1000, &next), 0);
    assert_int_equal(semail_queue_schedule(e, now + 3600000), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock_due(&e, q, now + 1000, &next), SEMAIL_ENOTFOUND);
    assert_int_equal(next, now + 3600000);
    usleep(2000);
    assert_int_equal(semail_queue_flush(q), 0);
    assert_int_equal(semail_queue_lock_due(&e, q, now + 1000, &next), 0);
    assert_string_equal(semail_queue_entry_info(e)->qid, qid);
    usleep(2000);
    assert_int_equal(semail_queue_schedule(e, now + 7200000), 0);
    semail_queue_release(e);
    /* The attempt after the flush used it up. */
    assert_int_equal(semail_queue_lock_due(&e, q, now + 1000, &next), SEMAIL_ENOTFOUND);
    assert_int_equal(next, now + 7200000);
    assert_int_equal(semail_queue_lock_due(&e, q, now + 7200000, &next), 0);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue__lock_due_takes_the_longest_due_first(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    char a[SEMAIL_QUEUE_QID_SIZE], b[SEMAIL_QUEUE_QID_SIZE];
    int64_t next;

    submit(q, a);
    submit(q, b);
    assert_int_equal(semail_queue_lock(&e, q, a), 0);
    assert_int_equal(semail_queue_schedule(e, 5000), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, b), 0);
    assert_int_equal(semail_queue_schedule(e, 3000), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock_due(&e, q, 2999, &next), SEMAIL_ENOTFOUND);
    assert_int_equal(next, 3000);
    assert_int_equal(semail_queue_lock_due(&e, q, 10000, &next), 0);
    assert_string_equal(semail_queue_entry_info(e)->qid, b);
    semail_queue_release(e);
    semail_queue_free(q);
}

/* ---- the due list ------------------------------------------------------------- */

#define DUE_MSGS 40

/* Index of QID in QIDS, or -1. */
static int qid_index(char (*qids)[SEMAIL_QUEUE_QID_SIZE], int n, const char *qid)
{
    for (int i = 0; i < n; i++)
        if (strcmp(qids[i], qid) == 0)
            return i;
    return -1;
}

/* Three messages in distinct milliseconds, so that their order is known. */
static void submit3(semail_queue *q, char *a, char *b, char *c)
{
    submit(q, a);
    usleep(2000);
    submit(q, b);
    usleep(2000);
    submit(q, c);
}

/* A burst of n messages costs one scan of the spool, not one per pick. */
static void test_queue__picks_are_served_from_one_scan(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *held[DUE_MSGS], *none;
    char qids[DUE_MSGS][SEMAIL_QUEUE_QID_SIZE];
    int seen[DUE_MSGS] = {0};
    int64_t now = semail_queue_now_ms() + 60000; /* one "now": the list never ages */
    unsigned long scans;

    for (int i = 0; i < DUE_MSGS; i++)
        submit(q, qids[i]);
    scans = semail__queue_due_scans(q);
    for (int i = 0; i < DUE_MSGS; i++) {
        int k;
        assert_int_equal(semail_queue_lock_due(&held[i], q, now, NULL), 0);
        k = qid_index(qids, DUE_MSGS, semail_queue_entry_info(held[i])->qid);
        assert_true(k >= 0);
        assert_int_equal(seen[k]++, 0);
        /* Longest due first: arrival (QID) order. */
        if (i > 0)
            assert_true(strcmp(semail_queue_entry_info(held[i - 1])->qid,
                               semail_queue_entry_info(held[i])->qid) < 0);
    }
    assert_int_equal(semail__queue_due_scans(q) - scans, 1);
    /* Used up: one more scan, which finds every message held. */
    assert_int_equal(semail_queue_lock_due(&none, q, now, NULL), SEMAIL_ENOTFOUND);
    assert_null(none);
    assert_int_equal(semail__queue_due_scans(q) - scans, 2);
    for (int i = 0; i < DUE_MSGS; i++)
        semail_queue_release(held[i]);
    semail_queue_free(q);
}

/* A message submitted through the handle joins the due list at once, no scan. */
static void test_queue__new_submission_is_picked_up_without_a_scan(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *a, *b, *c;
    char qa[SEMAIL_QUEUE_QID_SIZE], qb[SEMAIL_QUEUE_QID_SIZE], qc[SEMAIL_QUEUE_QID_SIZE];
    int64_t now = semail_queue_now_ms() + 60000;
    unsigned long scans;

    submit(q, qa);
    usleep(2000);
    submit(q, qb);
    scans = semail__queue_due_scans(q);
    assert_int_equal(semail_queue_lock_due(&a, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(a)->qid, qa);
    submit(q, qc);
    assert_int_equal(semail_queue_lock_due(&b, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(b)->qid, qb);
    assert_int_equal(semail_queue_lock_due(&c, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(c)->qid, qc);
    assert_int_equal(semail__queue_due_scans(q) - scans, 1);
    semail_queue_release(a);
    semail_queue_release(b);
    semail_queue_release(c);
    semail_queue_free(q);
}

/* A flush (here by another handle, as semail-admin does) makes the next pick scan again. */
static void test_queue__flush_by_another_handle_invalidates_the_due_list(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f), *admin = open_q(f);
    semail_queue_entry *e, *b, *c;
    char qa[SEMAIL_QUEUE_QID_SIZE], qb[SEMAIL_QUEUE_QID_SIZE], qc[SEMAIL_QUEUE_QID_SIZE];
    int64_t now = semail_queue_now_ms() + 1000;
    unsigned long scans;

    submit3(q, qa, qb, qc);
    scans = semail__queue_due_scans(q);
    assert_int_equal(semail_queue_lock_due(&e, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(e)->qid, qa);
    assert_int_equal(semail_queue_schedule(e, now + 3600000), 0);
    semail_queue_release(e);
    usleep(2000);
    assert_int_equal(semail_queue_flush(admin), 0);
    assert_int_equal(semail_queue_lock_due(&b, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(b)->qid, qb);
    assert_int_equal(semail__queue_due_scans(q) - scans, 2);
    assert_int_equal(semail_queue_lock_due(&c, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(c)->qid, qc);
    /* The scheduled one is in the new list: due by the flush. */
    assert_int_equal(semail_queue_lock_due(&e, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(e)->qid, qa);
    assert_int_equal(semail__queue_due_scans(q) - scans, 2);
    semail_queue_release(e);
    semail_queue_release(b);
    semail_queue_release(c);
    semail_queue_free(admin);
    semail_queue_free(q);
}

/* A listed message deleted elsewhere is skipped: the next candidate is taken. */
static void test_queue__message_deleted_elsewhere_is_skipped(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f), *admin = open_q(f);
    semail_queue_entry *a, *c, *e;
    char qa[SEMAIL_QUEUE_QID_SIZE], qb[SEMAIL_QUEUE_QID_SIZE], qc[SEMAIL_QUEUE_QID_SIZE];
    int64_t now = semail_queue_now_ms() + 60000;
    unsigned long scans;

    submit3(q, qa, qb, qc);
    scans = semail__queue_due_scans(q);
    assert_int_equal(semail_queue_lock_due(&a, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(a)->qid, qa);
    assert_int_equal(semail_queue_delete(admin, qb), 0);
    assert_int_equal(semail_queue_lock_due(&c, q, now, NULL), 0);
    assert_string_equal(semail_queue_entry_info(c)->qid, qc);
    assert_int_equal(semail__queue_due_scans(q) - scans, 1);
    assert_int_equal(semail_queue_lock_due(&e, q, now, NULL), SEMAIL_ENOTFOUND);
    assert_int_equal(count_files(f, "corrupt"), 0);
    semail_queue_release(a);
    semail_queue_release(c);
    semail_queue_free(admin);
    semail_queue_free(q);
}

#define HOLD_THREADS 4

typedef struct hold {
    semail_queue *q;
    int64_t now;
    semail_queue_entry *held[DUE_MSGS];
    int n;
} hold;

/* Take due messages until none is free, holding every one. */
static void *holder(void *arg)
{
    hold *h = arg;
    semail_queue_entry *e;

    while (h->n < DUE_MSGS && semail_queue_lock_due(&e, h->q, h->now, NULL) == 0)
        h->held[h->n++] = e;
    return NULL;
}

/* Threads sharing one due list each get different messages, and all of them. */
static void test_queue__threads_sharing_the_due_list_get_different_messages(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    char qids[DUE_MSGS][SEMAIL_QUEUE_QID_SIZE];
    int seen[DUE_MSGS] = {0}, total = 0;
    hold h[HOLD_THREADS];
    pthread_t t[HOLD_THREADS];
    unsigned long scans;

    for (int i = 0; i < DUE_MSGS; i++)
        submit(q, qids[i]);
    scans = semail__queue_due_scans(q);
    memset(h, 0, sizeof(h));
    h[0].now = semail_queue_now_ms() + 60000;
    for (int i = 0; i < HOLD_THREADS; i++) {
        h[i].q = q;
        h[i].now = h[0].now;
        assert_int_equal(pthread_create(&t[i], NULL, holder, &h[i]), 0);
    }
    for (int i = 0; i < HOLD_THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < HOLD_THREADS; i++) {
        for (int j = 0; j < h[i].n; j++) {
            int k = qid_index(qids, DUE_MSGS, semail_queue_entry_info(h[i].held[j])->qid);
            assert_true(k >= 0);
            assert_int_equal(seen[k]++, 0);
            semail_queue_release(h[i].held[j]);
            total++;
        }
    }
    assert_int_equal(total, DUE_MSGS);
    /* The first scan, then a few per thread once the list is used up (a
     * rescan can still find a message another thread took from the list
     * but has not locked yet, and then scan once more): far fewer than one
     * scan per pick, which is what this guards against. */
    assert_in_range(semail__queue_due_scans(q) - scans, 1, 1 + 2 * HOLD_THREADS);
    semail_queue_free(q);
}

/* ---- retries and expiry ------------------------------------------------------ */

static void test_queue__retry_follows_the_schedule_then_repeats_the_last(void **state)
{
    static const uint64_t sched[] = {60000, 120000, 600000};
    semail_queue_retry p = SEMAIL_QUEUE_RETRY_INIT;
    int64_t next;

    p.schedule_ms = sched;
    p.schedule_len = 3;
    p.jitter_percent = 0;
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 1, 1000), 0);
    assert_int_equal(next, 61000);
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 2, 1000), 0);
    assert_int_equal(next, 121000);
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 3, 1000), 0);
    assert_int_equal(next, 601000);
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 40, 1000), 0);
    assert_int_equal(next, 601000);
    /* Defaults: 5m first. */
    assert_int_equal(semail_queue_retry_next(&next, NULL, 0, 1, 0), 0);
    assert_in_range(next, 270000, 330000);
}

static uint32_t fixed_random(void *payload)
{
    return *(uint32_t *)payload;
}

static uint32_t counter_random(void *payload)
{
    uint32_t *c = payload;
    *c = *c * 1664525u + 1013904223u;
    return *c;
}

static void test_queue__retry_jitter_stays_within_bounds(void **state)
{
    static const uint64_t sched[] = {600000};
    semail_queue_retry p = SEMAIL_QUEUE_RETRY_INIT;
    uint32_t r = 0;
    int64_t next, lo = INT64_MAX, hi = 0;

    p.schedule_ms = sched;
    p.schedule_len = 1;
    p.jitter_percent = 10;
    p.random = fixed_random;
    p.random_payload = &r;
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 1, 0), 0);
    assert_int_equal(next, 540000);
    r = UINT32_MAX;
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 1, 0), 0);
    assert_int_equal(next, 660000);
    p.random = counter_random;
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(semail_queue_retry_next(&next, &p, 0, 1, 0), 0);
        assert_in_range(next, 540000, 660000);
        lo = next < lo ? next : lo;
        hi = next > hi ? next : hi;
    }
    assert_true(lo < 550000 && hi > 650000); /* the spread is really used */
    p.jitter_percent = 51;
    assert_int_equal(semail_queue_retry_next(&next, &p, 0, 1, 0), SEMAIL_EINVAL);
}

static void test_queue__retry_never_goes_past_expiry(void **state)
{
    static const uint64_t sched[] = {300000};
    semail_queue_retry p = SEMAIL_QUEUE_RETRY_INIT;
    int64_t next;

    p.schedule_ms = sched;
    p.schedule_len = 1;
    p.jitter_percent = 0;
    p.max_lifetime_ms = 600000;
    assert_int_equal(semail_queue_retry_next(&next, &p, 1000, 1, 1000 + 540000), 0);
    assert_int_equal(next, 1000 + 600000);
    assert_int_equal(semail_queue_retry_next(&next, &p, 1000, 1, 1000 + 700000), 0);
    assert_int_equal(next, 1000 + 700000);
    assert_int_equal(semail_queue_retry_expired(&p, 1000, 1000 + 599999), 0);
    assert_int_equal(semail_queue_retry_expired(&p, 1000, 1000 + 600000), 1);
    assert_int_equal(semail_queue_retry_expired(NULL, 0, 5LL * 86400000 - 1), 0);
    assert_int_equal(semail_queue_retry_expired(NULL, 0, 5LL * 86400000), 1);
}

static void test_queue__expire_fails_pending_recipients_with_4_4_7(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_retry p = SEMAIL_QUEUE_RETRY_INIT;
    semail_queue_result ok = result(250, "2.0.0", "ok"), later = result(451, "4.3.0", "try later");
    const semail_queue_info *info;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int64_t arrival;

    p.max_lifetime_ms = 3600000;
    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    arrival = semail_queue_entry_info(e)->arrival_ms;
    assert_int_equal(semail_queue_record(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_PENDING, &later), 0);
    assert_int_equal(semail_queue_expire(e, &p, arrival + 3599999), 0);
    assert_int_equal(semail_queue_expire(e, &p, arrival + 3600000), 1);
    semail_queue_release(e);
    semail_queue_free(q);

    q = open_q(f);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    info = semail_queue_entry_info(e);
    assert_int_equal(info->rcpts[0].state, SEMAIL_QUEUE_DELIVERED);
    assert_int_equal(info->rcpts[1].state, SEMAIL_QUEUE_FAILED);
    assert_string_equal(info->rcpts[1].result.enhanced, "4.4.7");
    assert_string_equal(info->rcpts[1].result.text,
                        "delivery time expired (last error: 451 4.3.0 try later)");
    assert_int_equal(info->rcpts[1].result.code, 0);
    assert_string_equal(info->rcpts[1].result.remote_host, "mx.example.org");
    assert_int_equal(semail_queue_expire(e, &p, arrival + 7200000), 0);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue__mark_notified_is_durable_and_once(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result bad = result(550, "5.1.1", "unknown");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_mark_notified(e), 0);
    assert_int_equal(semail_queue_record(e, 1, SEMAIL_QUEUE_FAILED, &bad), 0);
    assert_int_equal(semail_queue_mark_notified(e), 1);
    assert_int_equal(semail_queue_mark_notified(e), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[1].notified, 1);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[0].notified, 0);
    semail_queue_release(e);
    semail_queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queue__round_trip_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__qids_are_unique_sortable_and_alphanumeric,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__refuses_bad_envelopes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__final_states_are_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__record_sanitizes_and_cuts_the_result, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__truncated_state_is_never_delivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__truncated_message_is_quarantined, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__damaged_data_is_caught_at_lock, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__open_removes_what_dead_writers_left, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__kill_during_submit_leaves_only_whole_messages,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__two_threads_never_hold_the_same_message, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__another_process_lists_flushes_and_deletes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__flush_makes_a_scheduled_message_due, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__lock_due_takes_the_longest_due_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__picks_are_served_from_one_scan, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue__new_submission_is_picked_up_without_a_scan,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_queue__flush_by_another_handle_invalidates_the_due_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__message_deleted_elsewhere_is_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_queue__threads_sharing_the_due_list_get_different_messages, setup, teardown),
        cmocka_unit_test(test_queue__retry_follows_the_schedule_then_repeats_the_last),
        cmocka_unit_test(test_queue__retry_jitter_stays_within_bounds),
        cmocka_unit_test(test_queue__retry_never_goes_past_expiry),
        cmocka_unit_test_setup_teardown(test_queue__expire_fails_pending_recipients_with_4_4_7,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue__mark_notified_is_durable_and_once, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
