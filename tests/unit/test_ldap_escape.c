/*
 * test_ldap_escape.c - escaping of values for LDAP filters (RFC 4515) and
 * DNs (RFC 4514), and the filling of "%u" templates. Pure: no server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ldap_internal.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Undo either escape: "\XX" is a byte, "\C" is C. Returns -1 on a bad escape. */
static int unescape(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (; *in; in++) {
        if (o + 1 >= size)
            return -1;
        if (*in != '\\') {
            out[o++] = *in;
            continue;
        }
        if (hexval(in[1]) >= 0 && hexval(in[2]) >= 0) {
            out[o++] = (char)(hexval(in[1]) * 16 + hexval(in[2]));
            in += 2;
        } else if (in[1] != '\0') {
            out[o++] = *++in;
        } else {
            return -1;
        }
    }
    out[o] = '\0';
    return 0;
}

static void assert_filter(const char *value, const char *expected)
{
    char out[256];
    int n = semail_ldap_escape_filter(out, sizeof(out), value);
    assert_int_equal(n, (int)strlen(expected));
    assert_string_equal(out, expected);
}

static void assert_dn(const char *value, const char *expected)
{
    char out[256];
    int n = semail_ldap_escape_dn(out, sizeof(out), value);
    assert_int_equal(n, (int)strlen(expected));
    assert_string_equal(out, expected);
}

static void test_ldap_escape__filter_escapes_the_rfc4515_specials(void **state)
{
    assert_filter("*", "\\2a");
    assert_filter("(", "\\28");
    assert_filter(")", "\\29");
    assert_filter("\\", "\\5c");
    assert_filter("*)(uid=*", "\\2a\\29\\28uid=\\2a");
    assert_filter("a*b(c)d\\e", "a\\2ab\\28c\\29d\\5ce");
}

static void test_ldap_escape__filter_keeps_names_and_other_punctuation(void **state)
{
    assert_filter("alice", "alice");
    assert_filter("a.b_c-1", "a.b_c-1");
    assert_filter("=,+;<>\"# &|!~", "=,+;<>\"# &|!~");
    assert_filter("", "");
}

static void test_ldap_escape__filter_hex_escapes_control_and_8bit_bytes(void **state)
{
    assert_filter("\x01", "\\01");
    assert_filter("a\nb", "a\\0ab");
    assert_filter("\x7f", "\\7f");
    assert_filter("\xc3\xa9t\xc3\xa9", "\\c3\\a9t\\c3\\a9");
}

static void test_ldap_escape__dn_escapes_the_rfc4514_specials(void **state)
{
    assert_dn(",", "\\,");
    assert_dn("+", "\\+");
    assert_dn("\"", "\\\"");
    assert_dn("\\", "\\\\");
    assert_dn("<>;=", "\\<\\>\\;\\=");
    assert_dn("x,ou=admins", "x\\,ou\\=admins");
    assert_dn("a*b(c)", "a*b(c)");
}

static void test_ldap_escape__dn_escapes_leading_and_trailing_spaces_and_hash(void **state)
{
    assert_dn(" a", "\\ a");
    assert_dn("a ", "a\\ ");
    assert_dn("a b", "a b");
    assert_dn(" ", "\\ ");
    assert_dn("#a", "\\#a");
    assert_dn("a#", "a#");
    assert_dn("  ", "\\ \\ ");
}

static void test_ldap_escape__dn_hex_escapes_control_and_8bit_bytes(void **state)
{
    assert_dn("\x01", "\\01");
    assert_dn("\xc3\xa9", "\\c3\\a9");
    assert_dn("alice", "alice");
}

static void test_ldap_escape__refuses_to_truncate(void **state)
{
    char out[8];
    /* "*)" needs 6 bytes + NUL: fits in 7, not in 6. */
    assert_int_equal(semail_ldap_escape_filter(out, 7, "*)"), 6);
    assert_string_equal(out, "\\2a\\29");
    memset(out, 'x', sizeof(out));
    assert_int_equal(semail_ldap_escape_filter(out, 6, "*)"), SEMAIL_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(semail_ldap_escape_dn(out, 3, "abc"), SEMAIL_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(semail_ldap_escape_dn(out, 4, "abc"), 3);
}

static void test_ldap_escape__worst_case_fits_the_documented_size(void **state)
{
    char value[101], out[SEMAIL_LDAP_ESCAPED_MAX(100)];
    memset(value, '*', 100);
    value[100] = '\0';
    assert_int_equal(semail_ldap_escape_filter(out, sizeof(out), value), 300);
    memset(value, '\x01', 100);
    assert_int_equal(semail_ldap_escape_dn(out, sizeof(out), value), 300);
}

static void test_ldap_escape__null_arguments_are_invalid(void **state)
{
    char out[8];
    assert_int_equal(semail_ldap_escape_filter(NULL, 8, "a"), SEMAIL_EINVAL);
    assert_int_equal(semail_ldap_escape_filter(out, 8, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_ldap_escape_filter(out, 0, "a"), SEMAIL_EINVAL);
    assert_int_equal(semail_ldap_escape_dn(NULL, 8, "a"), SEMAIL_EINVAL);
    assert_int_equal(semail_ldap_escape_dn(out, 8, NULL), SEMAIL_EINVAL);
}

/* Every byte, alone and between letters, escapes to printable ASCII that
 * decodes back; filters never keep a bare special, DNs never an unescaped one. */
static void test_ldap_escape__every_byte_round_trips(void **state)
{
    char value[4], out[32], back[8];
    int c;
    for (c = 1; c < 256; c++) {
        const char *p;
        snprintf(value, sizeof(value), "a%cb", c);
        assert_true(semail_ldap_escape_filter(out, sizeof(out), value) > 0);
        for (p = out; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7f && !strchr("*()", *p));
        assert_int_equal(unescape(back, sizeof(back), out), 0);
        assert_string_equal(back, value);

        assert_true(semail_ldap_escape_dn(out, sizeof(out), value) > 0);
        for (p = out; *p; p++) {
            assert_true(*p >= 0x20 && *p < 0x7f);
            if (strchr(",+\"<>;=", *p))
                assert_true(p > out && p[-1] == '\\');
        }
        assert_int_equal(unescape(back, sizeof(back), out), 0);
        assert_string_equal(back, value);
    }
}

static void assert_expand(const char *tmpl, const char *value, semail__ldap_escaper esc,
                          const char *expected)
{
    semail_buf b;
    semail__buf_init(&b, SEMAIL_LDAP_TEXT_MAX);
    assert_int_equal(semail__ldap_expand(&b, tmpl, value, esc), 0);
    assert_string_equal(b.data, expected);
    semail__buf_free(&b);
}

static void test_ldap_escape__expand_fills_every_percent_u(void **state)
{
    assert_expand("(uid=%u)", "alice", semail_ldap_escape_filter, "(uid=alice)");
    assert_expand("(uid=%u)", "*)(uid=*", semail_ldap_escape_filter, "(uid=\\2a\\29\\28uid=\\2a)");
    assert_expand("(|(uid=%u)(mail=%u@x))", "a*", semail_ldap_escape_filter,
                  "(|(uid=a\\2a)(mail=a\\2a@x))");
    assert_expand("uid=%u,ou=people,dc=x", "a,ou=admins", semail_ldap_escape_dn,
                  "uid=a\\,ou\\=admins,ou=people,dc=x");
    assert_expand("%u", "b", semail_ldap_escape_dn, "b");
    assert_expand("100%%u %d", "b", semail_ldap_escape_filter, "100%b %d");
    assert_expand("(objectClass=*)", "b", semail_ldap_escape_filter, "(objectClass=*)");
    assert_expand("", "b", semail_ldap_escape_filter, "");
}

static void test_ldap_escape__expand_is_bounded(void **state)
{
    semail_buf b;
    semail__buf_init(&b, 15); /* "(uid=" + 9 bytes + ")" is 15 */
    assert_int_equal(semail__ldap_expand(&b, "(uid=%u)", "0123456789", semail_ldap_escape_filter),
                     SEMAIL_ETOOBIG);
    assert_int_equal(semail__ldap_expand(&b, "(uid=%u)", "012345678", semail_ldap_escape_filter),
                     0);
    assert_string_equal(b.data, "(uid=012345678)");
    assert_int_equal(semail__ldap_expand(&b, "(uid=%u)", "*", semail_ldap_escape_filter), 0);
    assert_string_equal(b.data, "(uid=\\2a)");
    semail__buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ldap_escape__filter_escapes_the_rfc4515_specials),
        cmocka_unit_test(test_ldap_escape__filter_keeps_names_and_other_punctuation),
        cmocka_unit_test(test_ldap_escape__filter_hex_escapes_control_and_8bit_bytes),
        cmocka_unit_test(test_ldap_escape__dn_escapes_the_rfc4514_specials),
        cmocka_unit_test(test_ldap_escape__dn_escapes_leading_and_trailing_spaces_and_hash),
        cmocka_unit_test(test_ldap_escape__dn_hex_escapes_control_and_8bit_bytes),
        cmocka_unit_test(test_ldap_escape__refuses_to_truncate),
        cmocka_unit_test(test_ldap_escape__worst_case_fits_the_documented_size),
        cmocka_unit_test(test_ldap_escape__null_arguments_are_invalid),
        cmocka_unit_test(test_ldap_escape__every_byte_round_trips),
        cmocka_unit_test(test_ldap_escape__expand_fills_every_percent_u),
        cmocka_unit_test(test_ldap_escape__expand_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
