/*
 * test_mbox_folder.c - semail_mbox_folder_name() against SPEC.md section 4.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "semail/mbox.h"

static void assert_folder(const char *rcpt, const char *sender, const char *expected)
{
    char out[SEMAIL_MBOX_FOLDER_MAX];
    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), rcpt, sender), 0);
    assert_string_equal(out, expected);
}

static void test_mbox_folder__spec_example(void **state)
{
    assert_folder("alice@alice.semail.test", "Bob@Example.org",
                  "alice@alice.semail.test,bob@example.org");
}

static void test_mbox_folder__lower_cases_both_addresses(void **state)
{
    assert_folder("ALICE@Alice.SEMAIL.test", "BOB@EXAMPLE.ORG",
                  "alice@alice.semail.test,bob@example.org");
}

static void test_mbox_folder__null_sender_is_mailer_daemon(void **state)
{
    assert_folder("alice@a.test", "", "alice@a.test,MAILER-DAEMON");
    assert_folder("alice@a.test", NULL, "alice@a.test,MAILER-DAEMON");
}

static void test_mbox_folder__keeps_the_allowed_bytes(void **state)
{
    assert_folder("a.b!#$&'*+=?^_`{|}~@-z09", "x@y", "a.b!#$&'*+=?^_`{|}~@-z09,x@y");
}

static void test_mbox_folder__escapes_everything_else_in_upper_hex(void **state)
{
    assert_folder("a,b@x", "c%d/e f@y", "a%2Cb@x,c%25d%2Fe%20f@y");
    assert_folder("\"q\\\"\"@x", "(c)[]<>:;@y", "%22q%5C%22%22@x,%28c%29%5B%5D%3C%3E%3A%3B@y");
    assert_folder("\xc3\xa9@x", "\x01\x7f\xff@y", "%C3%A9@x,%01%7F%FF@y");
}

static void test_mbox_folder__escapes_a_leading_dot_only(void **state)
{
    assert_folder(".a.@x", ".b@y", "%2Ea.@x,.b@y");
    assert_folder("..@x", "", "%2E.@x,MAILER-DAEMON");
}

/* Whatever the input, the name is one plain directory entry. */
static void test_mbox_folder__is_never_dot_dotdot_or_a_path(void **state)
{
    static const char *const inputs[] = {"", ".", "..", "/", "../..", "./", "a/../b", "..%2F"};
    char out[SEMAIL_MBOX_FOLDER_MAX];

    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        for (size_t j = 0; j < sizeof(inputs) / sizeof(inputs[0]); j++) {
            assert_int_equal(semail_mbox_folder_name(out, sizeof(out), inputs[i], inputs[j]), 0);
            assert_null(strchr(out, '/'));
            assert_true(out[0] != '\0' && out[0] != '.');
            assert_string_not_equal(out, "..");
        }
    }
    assert_folder("..", "..", "%2E.,..");
    assert_folder("", "", ",MAILER-DAEMON");
}

static void test_mbox_folder__too_long_is_an_error_not_a_truncation(void **state)
{
    char out[16];
    char big[2 * SEMAIL_MBOX_FOLDER_MAX];

    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), "abcdefghi@x", "ij@y"),
                     SEMAIL_ETOOBIG);
    assert_string_equal(out, "");
    /* Exactly fits: 15 bytes and the NUL. */
    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), "abcdefgh@x", "ij@y"), 0);
    assert_string_equal(out, "abcdefgh@x,ij@y");
    /* MAILER-DAEMON is checked against the room left as well: 17 bytes. */
    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), "a@x", ""), SEMAIL_ETOOBIG);
    char fits[18];
    assert_int_equal(semail_mbox_folder_name(fits, sizeof(fits), "a@x", ""), 0);
    assert_string_equal(fits, "a@x,MAILER-DAEMON");
    /* An escape that would cross the end fails too. */
    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), "abcdefghijklm%", ""),
                     SEMAIL_ETOOBIG);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char full[SEMAIL_MBOX_FOLDER_MAX];
    assert_int_equal(semail_mbox_folder_name(full, sizeof(full), big, "x@y"), SEMAIL_ETOOBIG);
}

static void test_mbox_folder__rejects_missing_arguments(void **state)
{
    char out[64];
    assert_int_equal(semail_mbox_folder_name(NULL, 64, "a@x", "b@y"), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_folder_name(out, sizeof(out), NULL, "b@y"), SEMAIL_EINVAL);
    assert_int_equal(semail_mbox_folder_name(out, 0, "a@x", "b@y"), SEMAIL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mbox_folder__spec_example),
        cmocka_unit_test(test_mbox_folder__lower_cases_both_addresses),
        cmocka_unit_test(test_mbox_folder__null_sender_is_mailer_daemon),
        cmocka_unit_test(test_mbox_folder__keeps_the_allowed_bytes),
        cmocka_unit_test(test_mbox_folder__escapes_everything_else_in_upper_hex),
        cmocka_unit_test(test_mbox_folder__escapes_a_leading_dot_only),
        cmocka_unit_test(test_mbox_folder__is_never_dot_dotdot_or_a_path),
        cmocka_unit_test(test_mbox_folder__too_long_is_an_error_not_a_truncation),
        cmocka_unit_test(test_mbox_folder__rejects_missing_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
