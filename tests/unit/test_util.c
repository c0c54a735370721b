/*
 * test_util.c - the shared helpers of util.c that several parts of the
 * library rely on.
 *
 * Specifies semail__base64_decode(), used by SMTP AUTH and by TSIG key
 * files: strict RFC 4648 base64 (padding required, canonical, no blanks)
 * that never writes past the output it was given.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"
#include "semail/date.h"

static long decode(unsigned char *out, size_t size, const char *in)
{
    return semail__base64_decode(out, size, in, strlen(in));
}

static void test_util__base64_decodes_every_padding_form(void **state)
{
    unsigned char out[16];

    (void)state;
    assert_int_equal(decode(out, sizeof(out), ""), 0);
    assert_int_equal(decode(out, sizeof(out), "Zg=="), 1);
    assert_memory_equal(out, "f", 1);
    assert_int_equal(decode(out, sizeof(out), "Zm8="), 2);
    assert_memory_equal(out, "fo", 2);
    assert_int_equal(decode(out, sizeof(out), "Zm9vYmFy"), 6);
    assert_memory_equal(out, "foobar", 6);
    assert_int_equal(decode(out, sizeof(out), "+/+/"), 3);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);
}

static void test_util__base64_rejects_what_is_not_strict(void **state)
{
    unsigned char out[16];

    (void)state;
    assert_int_equal(decode(out, sizeof(out), "Zg"), -1);       /* no padding */
    assert_int_equal(decode(out, sizeof(out), "Zm9"), -1);      /* length not a multiple of 4 */
    assert_int_equal(decode(out, sizeof(out), "Zh=="), -1);     /* bits under padding */
    assert_int_equal(decode(out, sizeof(out), "Zm9="), -1);     /* bits under padding */
    assert_int_equal(decode(out, sizeof(out), "Z==="), -1);     /* too much padding */
    assert_int_equal(decode(out, sizeof(out), "Zm=v"), -1);     /* data after padding */
    assert_int_equal(decode(out, sizeof(out), "Zg==Zg=="), -1); /* padding in the middle */
    assert_int_equal(decode(out, sizeof(out), "Zm 9"), -1);     /* blank */
    assert_int_equal(decode(out, sizeof(out), "Zm9v\n"), -1);   /* line break */
    assert_int_equal(decode(out, sizeof(out), "Zm-_"), -1);     /* base64url alphabet */
}

static void test_util__base64_never_writes_past_the_output(void **state)
{
    unsigned char out[8];

    (void)state;
    memset(out, 0xAA, sizeof(out));
    assert_int_equal(decode(out, 5, "Zm9vYmFy"), -1);
    assert_int_equal(out[5], 0xAA);
    memset(out, 0xAA, sizeof(out));
    assert_int_equal(decode(out, 1, "Zm8="), -1);
    assert_int_equal(out[1], 0xAA);
    assert_int_equal(decode(out, 0, "Zg=="), -1);
    assert_int_equal(decode(out, 2, "Zm8="), 2);
    assert_int_equal(decode(out, 6, "Zm9vYmFy"), 6);
}

static void test_util__date_is_rfc5322_in_utc_whatever_the_locale(void **state)
{
    char out[SEMAIL_DATE_MAX];

    (void)state;
    assert_int_equal(semail_date_rfc5322(out, sizeof(out), 0), 0);
    assert_string_equal(out, "Thu, 1 Jan 1970 00:00:00 +0000");
    assert_int_equal(semail_date_rfc5322(out, sizeof(out), 1795929796), 0);
    assert_string_equal(out, "Sun, 29 Nov 2026 05:23:16 +0000");
}

static void test_util__date_refuses_a_short_buffer(void **state)
{
    char out[16] = "x";

    (void)state;
    assert_int_equal(semail_date_rfc5322(out, sizeof(out), 0), SEMAIL_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(semail_date_rfc5322(NULL, 10, 0), SEMAIL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_util__base64_decodes_every_padding_form),
        cmocka_unit_test(test_util__base64_rejects_what_is_not_strict),
        cmocka_unit_test(test_util__base64_never_writes_past_the_output),
        cmocka_unit_test(test_util__date_is_rfc5322_in_utc_whatever_the_locale),
        cmocka_unit_test(test_util__date_refuses_a_short_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
