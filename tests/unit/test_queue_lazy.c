/*
 * test_queue_lazy.c - the relay's cheaper queue path (queue_internal.h):
 * lazy records write nothing until saved or scheduled, a message delivered
 * at its first attempt leaves no state file, removals share the fsync of
 * msg/, and a state file holding earlier results forces an immediate sync.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "queue_internal.h"
#include "semail/queue.h"

static const char *const RCPTS[] = {"bob@example.org", "carol@example.net"};
static const char DATA[] = "Subject: hi\r\n\r\nHello.\r\n";

typedef struct fixture {
    char dir[64];
} fixture;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/semail-qlazy-XXXXXX");
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

static semail_queue_result result(int code, const char *enh)
{
    semail_queue_result r;
    memset(&r, 0, sizeof(r));
    r.code = code;
    snprintf(r.enhanced, sizeof(r.enhanced), "%s", enh);
    r.time_ms = 1700000000000;
    return r;
}

static void test_queue_lazy__delivered_at_once_leaves_no_state_file(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_record_lazy(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail__queue_record_lazy(e, 1, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[1].state, SEMAIL_QUEUE_DELIVERED);
    assert_int_equal(count_files(f, "state"), 0);
    assert_int_equal(count_files(f, "tmp"), 0);
    assert_int_equal(semail__queue_remove_lazy(e), 0);
    semail_queue_release(e);
    assert_int_equal(count_files(f, "msg"), 0);
    assert_int_equal(count_files(f, "state"), 0);
    semail_queue_free(q);
}

static void test_queue_lazy__unsaved_results_are_delivered_again(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_record_lazy(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    semail_queue_release(e); /* as a crash would */
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[0].state, SEMAIL_QUEUE_PENDING);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue_lazy__schedule_writes_the_lazy_results(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0"), bad = result(550, "5.1.1");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_record_lazy(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail__queue_record_lazy(e, 1, SEMAIL_QUEUE_FAILED, &bad), 0);
    assert_int_equal(semail__queue_mark_notified_lazy(e), 1);
    assert_int_equal(semail_queue_schedule(e, 1), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[0].state, SEMAIL_QUEUE_DELIVERED);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[1].state, SEMAIL_QUEUE_FAILED);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[1].notified, 1);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue_lazy__save_writes_only_when_something_changed(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0");
    char qid[SEMAIL_QUEUE_QID_SIZE];

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_save(e), 0);
    assert_int_equal(count_files(f, "state"), 0);
    assert_int_equal(semail__queue_record_lazy(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail__queue_save(e), 0);
    assert_int_equal(count_files(f, "state"), 1);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail_queue_entry_info(e)->rcpts[0].state, SEMAIL_QUEUE_DELIVERED);
    semail_queue_release(e);
    semail_queue_free(q);
}

static void test_queue_lazy__removals_share_one_directory_sync(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    char qids[10][SEMAIL_QUEUE_QID_SIZE];
    unsigned long before;

    for (int i = 0; i < 10; i++)
        submit(q, qids[i]);
    before = semail__queue_removal_syncs(q);
    for (int i = 0; i < 10; i++) {
        semail_queue_entry *e;
        assert_int_equal(semail_queue_lock(&e, q, qids[i]), 0);
        assert_int_equal(semail__queue_remove_lazy(e), 0);
        semail_queue_release(e);
    }
    assert_true(semail__queue_removal_syncs(q) - before < 10);
    assert_int_equal(semail__queue_sync_removals(q), 0);
    assert_int_equal(semail__queue_sync_removals(q), 0);
    assert_true(semail__queue_removal_syncs(q) - before <= 2);
    assert_int_equal(count_files(f, "msg"), 0);
    semail_queue_free(q);
}

static void test_queue_lazy__removal_after_a_recorded_result_syncs_at_once(void **state)
{
    fixture *f = *state;
    semail_queue *q = open_q(f);
    semail_queue_entry *e;
    semail_queue_result ok = result(250, "2.0.0"), later = result(451, "4.3.0");
    char qid[SEMAIL_QUEUE_QID_SIZE];
    unsigned long before;

    submit(q, qid);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_record_lazy(e, 0, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    assert_int_equal(semail__queue_record_lazy(e, 1, SEMAIL_QUEUE_PENDING, &later), 0);
    assert_int_equal(semail_queue_schedule(e, 1), 0);
    semail_queue_release(e);
    assert_int_equal(semail_queue_lock(&e, q, qid), 0);
    assert_int_equal(semail__queue_record_lazy(e, 1, SEMAIL_QUEUE_DELIVERED, &ok), 0);
    before = semail__queue_removal_syncs(q);
    assert_int_equal(semail__queue_remove_lazy(e), 0);
    /* The state on disk says bob has it: the removal must not be undone. */
    assert_int_equal(semail__queue_removal_syncs(q), before + 1);
    semail_queue_release(e);
    assert_int_equal(count_files(f, "msg"), 0);
    assert_int_equal(count_files(f, "state"), 0);
    semail_queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queue_lazy__delivered_at_once_leaves_no_state_file,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_lazy__unsaved_results_are_delivered_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_lazy__schedule_writes_the_lazy_results, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_lazy__save_writes_only_when_something_changed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_lazy__removals_share_one_directory_sync, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_queue_lazy__removal_after_a_recorded_result_syncs_at_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
