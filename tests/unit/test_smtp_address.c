/*
 * test_smtp_address.c - RFC 5321 paths and the MAIL/RCPT arguments.
 *
 * Specifies semail_address_parse/_format and the hidden MAIL/RCPT argument
 * parsers: what is accepted, what is refused with which code, and that
 * relay tricks are kept verbatim in the local part for the embedder to see.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_internal.h"

static int parse(semail_address *a, const char *s, unsigned int flags)
{
    return semail_address_parse(a, s, strlen(s), flags, NULL);
}

static void fill(char *dst, char c, size_t n)
{
    memset(dst, c, n);
    dst[n] = '\0';
}

static void test_address__parses_plain_mailbox(void **state)
{
    semail_address a;
    size_t used;
    const char *s = "<user.name+tag@Mail.Example.COM> SIZE=10";

    assert_int_equal(semail_address_parse(&a, s, strlen(s), 0, &used), 0);
    assert_string_equal(a.local, "user.name+tag");
    assert_string_equal(a.domain, "Mail.Example.COM"); /* stored as written */
    assert_int_equal(a.is_null, 0);
    assert_int_equal(a.local_quoted, 0);
    assert_int_equal(used, strlen("<user.name+tag@Mail.Example.COM>"));
}

static void test_address__reads_only_len_bytes(void **state)
{
    semail_address a;
    const char s[] = "<a@b>c>";

    assert_int_equal(semail_address_parse(&a, s, 5, 0, NULL), 0);
    assert_string_equal(a.domain, "b");
    assert_int_equal(semail_address_parse(&a, s, 4, 0, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_address_parse(&a, "", 0, 0, NULL), SEMAIL_EINVAL);
}

static void test_address__null_path_only_when_allowed(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<>", SEMAIL_ADDRESS_ALLOW_NULL), 0);
    assert_int_equal(a.is_null, 1);
    assert_string_equal(a.local, "");
    assert_int_equal(parse(&a, "<>", 0), SEMAIL_EINVAL);
    assert_int_equal(a.is_null, 0);
    assert_int_equal(parse(&a, "< >", SEMAIL_ADDRESS_ALLOW_NULL), SEMAIL_EINVAL);
}

static void test_address__quoted_local_part_is_unescaped(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<\"john \\\"j\\\\ doe\"@example.org>", 0), 0);
    assert_string_equal(a.local, "john \"j\\ doe");
    assert_int_equal(a.local_quoted, 1);
    assert_int_equal(parse(&a, "<\"\"@example.org>", 0), 0);
    assert_string_equal(a.local, "");
    assert_int_equal(parse(&a, "<\"a\tb\"@example.org>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<\"ab@example.org>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<\"a\\\"@example.org>", 0), SEMAIL_EINVAL);
}

static void test_address__source_route_is_stripped(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<@relay1.example,@relay2.example:user@dest.example>", 0), 0);
    assert_string_equal(a.local, "user");
    assert_string_equal(a.domain, "dest.example");
    assert_int_equal(parse(&a, "<@relay1.example:user@dest.example>", 0), 0);
    assert_string_equal(a.domain, "dest.example");
    assert_int_equal(parse(&a, "<@:user@dest.example>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<@relay1.example,user@dest.example>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<@relay1.example user@dest.example>", 0), SEMAIL_EINVAL);
}

static void test_address__relay_tricks_are_kept_in_local_part(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<a%b@c.example>", 0), 0);
    assert_string_equal(a.local, "a%b");
    assert_string_equal(a.domain, "c.example");
    assert_int_equal(parse(&a, "<a!b@c.example>", 0), 0);
    assert_string_equal(a.local, "a!b");
    assert_int_equal(parse(&a, "<\"a@b\"@c.example>", 0), 0);
    assert_string_equal(a.local, "a@b");
    assert_int_equal(a.local_quoted, 1);
    assert_string_equal(a.domain, "c.example");
    /* Two @ outside quotes is not a mailbox at all. */
    assert_int_equal(parse(&a, "<a@b@c.example>", 0), SEMAIL_EINVAL);
}

static void test_address__address_literals(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<u@[192.0.2.1]>", 0), 0);
    assert_string_equal(a.domain, "[192.0.2.1]");
    assert_int_equal(parse(&a, "<u@[IPv6:2001:db8::1]>", 0), 0);
    assert_string_equal(a.domain, "[IPv6:2001:db8::1]");
    assert_int_equal(parse(&a, "<u@[IPv6:::ffff:192.0.2.1]>", 0), 0);
    assert_int_equal(parse(&a, "<u@[256.0.0.1]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[1.2.3]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[1.2.3.4.5]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[0001.2.3.4]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[IPv6:2001:db8::g]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[IPv6:1:2:3:4:5:6:7:8:9]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[foo:bar]>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[1.2.3.4>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<u@[[1.2.3.4]>", 0), SEMAIL_EINVAL);
}

static void test_address__refuses_illegal_characters(void **state)
{
    static const char *bad[] = {
        "user@example.com",  "<user@example.com",
        "<a b@c.example>",   "<a\x80@c.example>",
        "<a\x01@c.example>", "<a@b_c.example>",
        "<a@-b.example>",    "<a@b-.example>",
        "<a@b..example>",    "<a..b@c.example>",
        "<.a@c.example>",    "<a.@c.example>",
        "<a@c.example.>",    "<a@>",
        "<@c.example>",      "<a>",
        "<a@c.example>x",    "<a@c\xc3\xa9.example>",
        "<a@c.example >",    "<a(b)@c.example>",
        "<a,b@c.example>",   "<a@c.\xff>",
    };
    semail_address a;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(bad); i++) {
        size_t used = 99;
        int rc = semail_address_parse(&a, bad[i], strlen(bad[i]), SEMAIL_ADDRESS_ALLOW_NULL, &used);
        if (rc == 0 && used == strlen(bad[i]))
            fail_msg("accepted: %s", bad[i]);
        if (rc != 0) {
            assert_int_equal(rc, SEMAIL_EINVAL);
            assert_string_equal(a.local, "");
            assert_int_equal(used, 0);
        }
    }
    /* NUL inside the given length is an illegal character, not an end. */
    assert_int_equal(semail_address_parse(&a, "<a\0b@c.example>", 15, 0, NULL), SEMAIL_EINVAL);
}

static void test_address__postmaster_without_domain(void **state)
{
    semail_address a;

    assert_int_equal(parse(&a, "<Postmaster>", SEMAIL_ADDRESS_ALLOW_POSTMASTER), 0);
    assert_string_equal(a.local, "Postmaster");
    assert_string_equal(a.domain, "");
    assert_int_equal(parse(&a, "<POSTMASTER>", SEMAIL_ADDRESS_ALLOW_POSTMASTER), 0);
    assert_int_equal(parse(&a, "<Postmaster>", 0), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<\"Postmaster\">", SEMAIL_ADDRESS_ALLOW_POSTMASTER), SEMAIL_EINVAL);
    assert_int_equal(parse(&a, "<webmaster>", SEMAIL_ADDRESS_ALLOW_POSTMASTER), SEMAIL_EINVAL);
}

static void test_address__limits(void **state)
{
    char local[80], label[80], buf[400];
    semail_address a;

    fill(local, 'l', 64);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<%s@x.example>", local), 0);
    assert_int_equal(parse(&a, buf, 0), 0);
    fill(local, 'l', 65);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<%s@x.example>", local), 0);
    assert_int_equal(parse(&a, buf, 0), SEMAIL_ETOOBIG);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<\"%s\"@x.example>", local), 0);
    assert_int_equal(parse(&a, buf, 0), SEMAIL_ETOOBIG);

    fill(label, 'd', 63);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<u@%s.example>", label), 0);
    assert_int_equal(parse(&a, buf, 0), 0);
    fill(label, 'd', 64);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<u@%s.example>", label), 0);
    assert_int_equal(parse(&a, buf, 0), SEMAIL_EINVAL);

    /* A path of exactly 256 octets, brackets included: 1 + 64 + 1 + 189 + 1. */
    fill(local, 'l', 64);
    fill(label, 'd', 63);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<%s@%s.%s.%.61s>", local, label, label, label),
                     0);
    assert_int_equal(strlen(buf), SEMAIL_PATH_MAX);
    assert_int_equal(parse(&a, buf, 0), 0);
    assert_int_equal(semail__fmt(buf, sizeof(buf), "<%s@%s.%s.%.62s>", local, label, label, label),
                     0);
    assert_int_equal(strlen(buf), SEMAIL_PATH_MAX + 1);
    assert_int_equal(parse(&a, buf, 0), SEMAIL_ETOOBIG);
}

static void test_address__domain_over_255_is_too_big(void **state)
{
    char buf[600];
    size_t i, n = 0;
    semail_address a;

    buf[n++] = '<';
    buf[n++] = 'u';
    buf[n++] = '@';
    for (i = 0; i < 70; i++) {
        memcpy(buf + n, "abc.", 4);
        n += 4;
    }
    memcpy(buf + n, "ex>", 4);
    assert_int_equal(parse(&a, buf, 0), SEMAIL_ETOOBIG);
}

static void test_address__format_quotes_when_needed(void **state)
{
    semail_address a;
    char out[SEMAIL_PATH_MAX + 3];

    assert_int_equal(parse(&a, "<a.b@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "a.b@x.example");

    assert_int_equal(parse(&a, "<\"a b\\\"c\\\\\"@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "\"a b\\\"c\\\\\"@x.example");

    assert_int_equal(parse(&a, "<\"plain\"@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "plain@x.example");

    assert_int_equal(parse(&a, "<\"a..b\"@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "\"a..b\"@x.example");

    assert_int_equal(parse(&a, "<\"a@b\"@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "\"a@b\"@x.example");

    assert_int_equal(parse(&a, "<\"\"@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "\"\"@x.example");

    assert_int_equal(parse(&a, "<>", SEMAIL_ADDRESS_ALLOW_NULL), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "");

    assert_int_equal(parse(&a, "<Postmaster>", SEMAIL_ADDRESS_ALLOW_POSTMASTER), 0);
    assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
    assert_string_equal(out, "Postmaster");
}

static void test_address__format_refuses_small_buffer(void **state)
{
    semail_address a;
    char out[16];

    assert_int_equal(parse(&a, "<a@x.example>", 0), 0);
    assert_int_equal(semail_address_format(out, 11, &a), SEMAIL_ETOOBIG); /* NUL missing */
    assert_string_equal(out, "");
    assert_int_equal(semail_address_format(out, 12, &a), 0);
    assert_string_equal(out, "a@x.example");
    assert_int_equal(semail_address_format(out, 0, &a), SEMAIL_EINVAL);
}

static void test_address__format_round_trips(void **state)
{
    static const char *paths[] = {
        "<a@b.example>",       "<\"x y\"@b.example>", "<\"\\\\\\\"\"@b.example>", "<a%b@c.example>",
        "<\"a@b\"@c.example>", "<u@[IPv6:::1]>",      "<\".a\"@b.example>",
    };
    char out[SEMAIL_PATH_MAX + 3], path[SEMAIL_PATH_MAX + 5];
    semail_address a, b;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(paths); i++) {
        assert_int_equal(parse(&a, paths[i], 0), 0);
        assert_int_equal(semail_address_format(out, sizeof(out), &a), 0);
        assert_int_equal(semail__fmt(path, sizeof(path), "<%s>", out), 0);
        assert_int_equal(parse(&b, path, 0), 0);
        assert_string_equal(a.local, b.local);
        assert_string_equal(a.domain, b.domain);
    }
}

/* ---- MAIL / RCPT arguments ----------------------------------------------- */

static int mail(const char *arg, semail_address *a, smtp_mail_params *p, semail_reply *r)
{
    return semail__smtp_parse_mail(a, p, arg, strlen(arg), r);
}

static void test_mail_args__accepts_size_and_body(void **state)
{
    semail_address a;
    smtp_mail_params p;
    semail_reply r;

    assert_int_equal(mail("FROM:<a@b.example> SIZE=12345 BODY=8BITMIME", &a, &p, &r), 0);
    assert_string_equal(a.local, "a");
    assert_int_equal(p.size, 12345);
    assert_int_equal(p.body_8bit, 1);
    assert_int_equal(mail("from: <a@b.example>  body=7bit", &a, &p, &r), 0);
    assert_int_equal(p.size, 0);
    assert_int_equal(p.body_8bit, 0);
    assert_int_equal(mail("FROM:<>", &a, &p, &r), 0);
    assert_int_equal(a.is_null, 1);
}

static void test_mail_args__bad_parameters_answer_555(void **state)
{
    static const char *bad[] = {
        "FROM:<a@b.example> SIZE=1 SIZE=2",
        "FROM:<a@b.example> BODY=7BIT BODY=7BIT",
        "FROM:<a@b.example> SIZE=",
        "FROM:<a@b.example> SIZE",
        "FROM:<a@b.example> SIZE=12x",
        "FROM:<a@b.example> SIZE=-1",
        "FROM:<a@b.example> SIZE=99999999999999999999",
        "FROM:<a@b.example> BODY=BINARYMIME",
        "FROM:<a@b.example> AUTH=<>",
        "FROM:<a@b.example> SMTPUTF8",
    };
    semail_address a;
    smtp_mail_params p;
    semail_reply r;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(bad); i++) {
        if (mail(bad[i], &a, &p, &r) == 0)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(r.code, 555);
        assert_string_equal(r.enhanced, "5.5.4");
    }
}

static void test_mail_args__syntax_errors_answer_501(void **state)
{
    semail_address a;
    smtp_mail_params p;
    semail_reply r;

    assert_true(mail("FROM<a@b.example>", &a, &p, &r) < 0);
    assert_int_equal(r.code, 501);
    assert_string_equal(r.enhanced, "5.5.4");
    assert_true(mail("TO:<a@b.example>", &a, &p, &r) < 0);
    assert_int_equal(r.code, 501);
    assert_true(mail("FROM:<a b@b.example>", &a, &p, &r) < 0);
    assert_int_equal(r.code, 501);
    assert_string_equal(r.enhanced, "5.1.7");
    assert_true(mail("FROM:<a@b.example>SIZE=1", &a, &p, &r) < 0);
    assert_int_equal(r.code, 501);
    assert_true(mail("FROM:a@b.example", &a, &p, &r) < 0);
    assert_int_equal(r.code, 501);
}

static void test_rcpt_args__no_parameters_and_postmaster(void **state)
{
    semail_address a;
    semail_reply r;
    const char *s;

    s = "TO:<u@d.example>  ";
    assert_int_equal(semail__smtp_parse_rcpt(&a, s, strlen(s), &r), 0);
    s = "to: <Postmaster>";
    assert_int_equal(semail__smtp_parse_rcpt(&a, s, strlen(s), &r), 0);
    assert_string_equal(a.domain, "");
    s = "TO:<u@d.example> NOTIFY=NEVER";
    assert_true(semail__smtp_parse_rcpt(&a, s, strlen(s), &r) < 0);
    assert_int_equal(r.code, 555);
    assert_string_equal(r.enhanced, "5.5.4");
    s = "TO:<>";
    assert_true(semail__smtp_parse_rcpt(&a, s, strlen(s), &r) < 0);
    assert_int_equal(r.code, 501);
    assert_string_equal(r.enhanced, "5.1.3");
    s = "FROM:<u@d.example>";
    assert_true(semail__smtp_parse_rcpt(&a, s, strlen(s), &r) < 0);
    assert_int_equal(r.code, 501);
    assert_string_equal(r.enhanced, "5.5.4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address__parses_plain_mailbox),
        cmocka_unit_test(test_address__reads_only_len_bytes),
        cmocka_unit_test(test_address__null_path_only_when_allowed),
        cmocka_unit_test(test_address__quoted_local_part_is_unescaped),
        cmocka_unit_test(test_address__source_route_is_stripped),
        cmocka_unit_test(test_address__relay_tricks_are_kept_in_local_part),
        cmocka_unit_test(test_address__address_literals),
        cmocka_unit_test(test_address__refuses_illegal_characters),
        cmocka_unit_test(test_address__postmaster_without_domain),
        cmocka_unit_test(test_address__limits),
        cmocka_unit_test(test_address__domain_over_255_is_too_big),
        cmocka_unit_test(test_address__format_quotes_when_needed),
        cmocka_unit_test(test_address__format_refuses_small_buffer),
        cmocka_unit_test(test_address__format_round_trips),
        cmocka_unit_test(test_mail_args__accepts_size_and_body),
        cmocka_unit_test(test_mail_args__bad_parameters_answer_555),
        cmocka_unit_test(test_mail_args__syntax_errors_answer_501),
        cmocka_unit_test(test_rcpt_args__no_parameters_and_postmaster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
