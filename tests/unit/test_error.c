/*
 * test_error.c - the thread-local last error and the helpers that record it.
 *
 * Specifies that semail__err() and semail__errno() return the code they were
 * given (every "return semail__err(...)" relies on it, and internal.h tells
 * the static analyzer so) and record it with its message for this thread only.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static void test_error__err_returns_and_records_its_code(void **state)
{
    (void)state;
    semail_error_clear();
    assert_int_equal(semail__err(SEMAIL_ENOTFOUND, "no box %s", "bob"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_error_last_code(), SEMAIL_ENOTFOUND);
    assert_string_equal(semail_error_last(), "no box bob");
}

static void test_error__errno_returns_its_code_and_appends_strerror(void **state)
{
    (void)state;
    assert_int_equal(semail__errno(SEMAIL_EIO, ENOENT, "open %s", "x"), SEMAIL_EIO);
    assert_int_equal(semail_error_last_code(), SEMAIL_EIO);
    assert_string_equal(semail_error_last(), "open x: No such file or directory");
}

static void *record_elsewhere(void *arg)
{
    (void)arg;
    (void)semail__err(SEMAIL_EFULL, "another thread");
    return NULL;
}

static void test_error__is_per_thread(void **state)
{
    pthread_t t;

    (void)state;
    (void)semail__err(SEMAIL_EEXISTS, "mine");
    assert_int_equal(pthread_create(&t, NULL, record_elsewhere, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(semail_error_last_code(), SEMAIL_EEXISTS);
    assert_string_equal(semail_error_last(), "mine");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error__err_returns_and_records_its_code),
        cmocka_unit_test(test_error__errno_returns_its_code_and_appends_strerror),
        cmocka_unit_test(test_error__is_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
