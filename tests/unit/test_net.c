/*
 * test_net.c - CIDR lists (net.h): what parses, what is refused and why,
 * and which addresses match, IPv4, IPv6 and IPv4-mapped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "semail/semail.h"

static semail_cidr_list *parse_ok(const char *const *items, size_t n)
{
    semail_cidr_list *l = NULL;

    if (semail_cidr_list_parse(&l, items, n) != 0)
        fail_msg("parse failed: %s", semail_error_last());
    assert_non_null(l);
    assert_int_equal(semail_cidr_list_count(l), n);
    return l;
}

static void test_net__default_trusted_networks_match_loopback_only(void **state)
{
    static const char *const items[] = {"127.0.0.0/8", "::1/128"};
    semail_cidr_list *l = parse_ok(items, 2);

    assert_int_equal(semail_cidr_list_match(l, "127.0.0.1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "127.255.255.254"), 1);
    assert_int_equal(semail_cidr_list_match(l, "::1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "128.0.0.1"), 0);
    assert_int_equal(semail_cidr_list_match(l, "126.255.255.255"), 0);
    assert_int_equal(semail_cidr_list_match(l, "::2"), 0);
    assert_int_equal(semail_cidr_list_match(l, "192.0.2.1"), 0);
    semail_cidr_list_free(l);
}

static void test_net__prefix_boundaries_inside_a_byte(void **state)
{
    static const char *const items[] = {"192.0.2.64/26", "2001:db8:aa00::/39"};
    semail_cidr_list *l = parse_ok(items, 2);

    assert_int_equal(semail_cidr_list_match(l, "192.0.2.63"), 0);
    assert_int_equal(semail_cidr_list_match(l, "192.0.2.64"), 1);
    assert_int_equal(semail_cidr_list_match(l, "192.0.2.127"), 1);
    assert_int_equal(semail_cidr_list_match(l, "192.0.2.128"), 0);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8:aa00::1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8:abff:ffff::1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8:a9ff:ffff::1"), 0);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8:ac00::"), 0);
    semail_cidr_list_free(l);
}

static void test_net__single_addresses_and_zero_prefixes(void **state)
{
    static const char *const hosts[] = {"198.51.100.7", "2001:db8::7"};
    static const char *const all4[] = {"0.0.0.0/0"};
    static const char *const all6[] = {"::/0"};
    semail_cidr_list *l = parse_ok(hosts, 2);

    assert_int_equal(semail_cidr_list_match(l, "198.51.100.7"), 1);
    assert_int_equal(semail_cidr_list_match(l, "198.51.100.8"), 0);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8::7"), 1);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8::8"), 0);
    semail_cidr_list_free(l);
    /* /0 covers its own family, never the other one. */
    l = parse_ok(all4, 1);
    assert_int_equal(semail_cidr_list_match(l, "203.0.113.9"), 1);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8::1"), 0);
    semail_cidr_list_free(l);
    l = parse_ok(all6, 1);
    assert_int_equal(semail_cidr_list_match(l, "2001:db8::1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "203.0.113.9"), 0);
    semail_cidr_list_free(l);
}

static void test_net__ipv4_mapped_addresses_are_ipv4(void **state)
{
    static const char *const v4[] = {"127.0.0.0/8"};
    static const char *const mapped[] = {"::ffff:10.0.0.0/104"};
    semail_cidr_list *l = parse_ok(v4, 1);
    unsigned char a6[16];

    assert_int_equal(semail_cidr_list_match(l, "::ffff:127.0.0.1"), 1);
    assert_int_equal(semail_cidr_list_match(l, "::ffff:128.0.0.1"), 0);
    assert_int_equal(inet_pton(AF_INET6, "::ffff:127.1.2.3", a6), 1);
    assert_int_equal(semail_cidr_list_match_addr(l, AF_INET6, a6), 1);
    semail_cidr_list_free(l);
    l = parse_ok(mapped, 1);
    assert_int_equal(semail_cidr_list_match(l, "10.1.2.3"), 1);
    assert_int_equal(semail_cidr_list_match(l, "11.1.2.3"), 0);
    semail_cidr_list_free(l);
}

static void test_net__binary_addresses(void **state)
{
    static const char *const items[] = {"192.0.2.0/24"};
    semail_cidr_list *l = parse_ok(items, 1);
    struct in_addr a4;

    assert_int_equal(inet_pton(AF_INET, "192.0.2.200", &a4), 1);
    assert_int_equal(semail_cidr_list_match_addr(l, AF_INET, &a4), 1);
    assert_int_equal(inet_pton(AF_INET, "192.0.3.1", &a4), 1);
    assert_int_equal(semail_cidr_list_match_addr(l, AF_INET, &a4), 0);
    assert_int_equal(semail_cidr_list_match_addr(l, AF_UNIX, &a4), SEMAIL_EINVAL);
    assert_int_equal(semail_cidr_list_match_addr(l, AF_INET, NULL), SEMAIL_EINVAL);
    semail_cidr_list_free(l);
}

static void test_net__blanks_around_items_are_ignored(void **state)
{
    static const char *const items[] = {"  10.0.0.0/8\t", "\t::1 "};
    semail_cidr_list *l = parse_ok(items, 2);

    assert_int_equal(semail_cidr_list_match(l, "10.9.9.9"), 1);
    assert_int_equal(semail_cidr_list_match(l, "::1"), 1);
    semail_cidr_list_free(l);
}

static void test_net__refuses_malformed_items_naming_them(void **state)
{
    static const struct {
        const char *item, *says;
    } bad[] = {
        {"", "empty"},
        {"   ", "empty"},
        {"10.0.0.1/8", "bits set beyond the /8 prefix"},
        {"2001:db8::1/32", "bits set beyond"},
        {"10.0.0.0/33", "prefix must be 0-32"},
        {"::/129", "prefix must be 0-128"},
        {"10.0.0.0/", "prefix"},
        {"10.0.0.0/+8", "prefix"},
        {"10.0.0.0/-1", "prefix"},
        {"10.0.0.0/0008", "prefix"},
        {"10.0.0.0/8/8", "prefix"},
        {"localhost", "not a numeric"},
        {"10.0.0", "not a numeric"},
        {"10.0.0.256", "not a numeric"},
        {"fe80::1%eth0", "not a numeric"},
        {"[::1]", "not a numeric"},
        {"10.0.0.0 /8", "not a numeric"},
        {"1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb/128", "too long"},
    };
    semail_cidr_list *l;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[1] = {bad[i].item};
        l = (semail_cidr_list *)1;
        if (semail_cidr_list_parse(&l, one, 1) != SEMAIL_EINVAL)
            fail_msg("'%s' was accepted", bad[i].item);
        assert_null(l);
        if (strstr(semail_error_last(), bad[i].says) == NULL)
            fail_msg("'%s': message '%s' does not say '%s'", bad[i].item, semail_error_last(),
                     bad[i].says);
    }
}

static void test_net__one_bad_item_fails_the_whole_list(void **state)
{
    static const char *const items[] = {"127.0.0.0/8", "bogus", "::1"};
    semail_cidr_list *l = NULL;

    assert_int_equal(semail_cidr_list_parse(&l, items, 3), SEMAIL_EINVAL);
    assert_null(l);
    assert_non_null(strstr(semail_error_last(), "'bogus'"));
}

static void test_net__empty_list_and_null_list_match_nothing(void **state)
{
    semail_cidr_list *l = NULL;

    assert_int_equal(semail_cidr_list_parse(&l, NULL, 0), 0);
    assert_non_null(l);
    assert_int_equal(semail_cidr_list_count(l), 0);
    assert_int_equal(semail_cidr_list_match(l, "127.0.0.1"), 0);
    semail_cidr_list_free(l);
    assert_int_equal(semail_cidr_list_match(NULL, "127.0.0.1"), 0);
    assert_int_equal(semail_cidr_list_count(NULL), 0);
    semail_cidr_list_free(NULL);
    assert_int_equal(semail_cidr_list_parse(NULL, NULL, 0), SEMAIL_EINVAL);
    assert_int_equal(semail_cidr_list_parse(&l, NULL, 1), SEMAIL_EINVAL);
}

static void test_net__client_text_that_is_not_an_address_never_matches(void **state)
{
    static const char *const items[] = {"0.0.0.0/0", "::/0"};
    semail_cidr_list *l = parse_ok(items, 2);

    assert_int_equal(semail_cidr_list_match(l, "unknown"), SEMAIL_EINVAL);
    assert_int_equal(semail_cidr_list_match(l, ""), SEMAIL_EINVAL);
    assert_int_equal(semail_cidr_list_match(l, "[127.0.0.1]:25"), SEMAIL_EINVAL);
    assert_int_equal(semail_cidr_list_match(l, NULL), SEMAIL_EINVAL);
    semail_cidr_list_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net__default_trusted_networks_match_loopback_only),
        cmocka_unit_test(test_net__prefix_boundaries_inside_a_byte),
        cmocka_unit_test(test_net__single_addresses_and_zero_prefixes),
        cmocka_unit_test(test_net__ipv4_mapped_addresses_are_ipv4),
        cmocka_unit_test(test_net__binary_addresses),
        cmocka_unit_test(test_net__blanks_around_items_are_ignored),
        cmocka_unit_test(test_net__refuses_malformed_items_naming_them),
        cmocka_unit_test(test_net__one_bad_item_fails_the_whole_list),
        cmocka_unit_test(test_net__empty_list_and_null_list_match_nothing),
        cmocka_unit_test(test_net__client_text_that_is_not_an_address_never_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
