/*
 * test_dns_update.c - TSIG key files, RFC 2136 UPDATE messages and TSIG
 * (RFC 8945) checked byte for byte against BIND's own tools.
 *
 * The recorded packets below were captured on 127.0.0.1 with a recording
 * TCP proxy between `nsupdate -v -k tsig.key` (BIND 9.18.49, Debian 12) and
 * named 9.18.49 serving a dynamic zone semail.test, with the key KEY_FILE:
 *   ADD:    prereq nxdomain alice.semail.test
 *           update add alice.semail.test 300 MX 10 mx.semail.test
 *           update add alice.semail.test 300 TXT "v=spf1 mx -all"
 *   (the same again: YXDOMAIN)
 *   REMOVE: update delete alice.semail.test MX
 *           update delete alice.semail.test TXT
 *   (REMOVE signed with another secret under the same key name: BADSIG)
 * nsupdate's requests show the query id and the time signed; our builder,
 * given the same id and time, must produce the same bytes (so the same
 * MAC), and named's answers must verify against our request's MAC.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dns_update_internal.h"
#include "semail/dns.h"

static const char KEY_FILE[] = "key \"semail-update\" {\n"
                               "\talgorithm hmac-sha256;\n"
                               "\tsecret \"nLGuBDoNZJqULfXSPXQlGJ7a82oGZ2i5/3+TrLqVVOg=\";\n"
                               "};\n";

#define TIME_SIGNED 0x6b0bb73bULL

static const char ADD_REQ[] =
    "c7fd280000010001000200010673656d61696c0474657374000006000105616c696365c00c00ff00fe0000000000"
    "00c01d000f00010000012c0007000a026d78c00cc01d001000010000012c000f0e763d73706631206d78202d616c"
    "6c0d73656d61696c2d7570646174650000fa00ff00000000003d0b686d61632d7368613235360000006b0bb73b01"
    "2c0020508241bbca1717a48521e85d37ed673aa8bb33a312fd82d242e320f77ab983b5c7fd00000000";
static const char ADD_ANS[] =
    "c7fda80000010000000000010673656d61696c047465737400000600010d73656d61696c2d757064617465000"
    "0fa00ff00000000003d0b686d61632d7368613235360000006b0bb73b012c0020d0b3a2692cf81567ba33de00"
    "2af7859c0a0f2c10d119b2fa03485f48334affebc7fd00000000";
static const char ADD2_REQ[] =
    "ffbe280000010001000200010673656d61696c0474657374000006000105616c696365c00c00ff00fe0000000000"
    "00c01d000f00010000012c0007000a026d78c00cc01d001000010000012c000f0e763d73706631206d78202d616c"
    "6c0d73656d61696c2d7570646174650000fa00ff00000000003d0b686d61632d7368613235360000006b0bb73b01"
    "2c0020dd07d15ca51be4a97cadd0a0a5b563994df14f952a37ed7b7e086f369d8d03d6ffbe00000000";
static const char ADD2_ANS[] = /* YXDOMAIN, signed */
    "ffbea80600010000000000010673656d61696c047465737400000600010d73656d61696c2d757064617465000"
    "0fa00ff00000000003d0b686d61632d7368613235360000006b0bb73b012c0020b000701ef8f530525e232dea"
    "10ffffc00963e53f1f5dd04f1014687c6e2e2be5ffbe00000000";
static const char REMOVE_REQ[] =
    "de0a280000010000000200010673656d61696c0474657374000006000105616c696365c00c000f00ff0000000000"
    "00c01d001000ff0000000000000d73656d61696c2d7570646174650000fa00ff00000000003d0b686d61632d7368"
    "613235360000006b0bb73b012c00209d053018ce98f9311f48a03ba6b97a0a5ed7a62b8d766b51c4512db1cf8ceb"
    "84de0a00000000";
static const char REMOVE_ANS[] =
    "de0aa80000010000000000010673656d61696c047465737400000600010d73656d61696c2d757064617465000"
    "0fa00ff00000000003d0b686d61632d7368613235360000006b0bb73b012c002085eeac574bbc53d00d7cd142"
    "b0296b6026df3a478acdf9394a368a97e0f5acfbde0a00000000";
static const char BADSIG_REQ[] = /* REMOVE signed with another secret */
    "e9cf280000010000000200010673656d61696c0474657374000006000105616c696365c00c000f00ff0000000000"
    "00c01d001000ff0000000000000d73656d61696c2d7570646174650000fa00ff00000000003d0b686d61632d7368"
    "613235360000006b0bb73b012c00201258cb9dda517884acb4419c73ae858e24ec751bec008c9b8b39064080a653"
    "56e9cf00000000";
static const char BADSIG_ANS[] = /* NOTAUTH, TSIG error BADSIG, no MAC */
    "e9cfa80900010000000000010673656d61696c047465737400000600010d73656d61696c2d757064617465000"
    "0fa00ff00000000001d0b686d61632d7368613235360000006b0bb73b012c0000e9cf00100000";

typedef struct packet {
    uint8_t b[SEMAIL_DNS_UPDATE_MAX];
    size_t len;
} packet;

static packet hex(const char *s)
{
    packet p;
    size_t i, n = strlen(s);
    assert_true(n % 2 == 0 && n / 2 <= sizeof(p.b));
    for (i = 0; i < n; i += 2) {
        unsigned int v;
        assert_int_equal(sscanf(s + i, "%2x", &v), 1);
        p.b[i / 2] = (uint8_t)v;
    }
    p.len = n / 2;
    return p;
}

static semail_tsig_key *test_key(void)
{
    semail_tsig_key *k = NULL;
    assert_int_equal(semail_tsig_key_parse(&k, KEY_FILE, strlen(KEY_FILE)), 0);
    return k;
}

static semail_dns_name dname(const char *text)
{
    semail_dns_name n;
    assert_int_equal(semail__dns_check_host(&n, text), 0);
    return n;
}

static uint16_t id_of(const packet *p)
{
    return (uint16_t)((p->b[0] << 8) | p->b[1]);
}

/* Offset of the MAC in one of our signed requests (key and algorithm as KEY_FILE). */
static size_t mac_offset(const packet *p)
{
    return p->len - 6 - 32;
}

static void assert_packets_equal(const packet *got, const packet *want)
{
    size_t i;
    for (i = 0; i < got->len && i < want->len; i++)
        if (got->b[i] != want->b[i])
            fail_msg("packets differ at byte %zu: 0x%02x, want 0x%02x", i, got->b[i], want->b[i]);
    assert_int_equal(got->len, want->len);
}

/* ---- key files ---------------------------------------------------------- */

static void test_dns_update__reads_tsig_keygen_output(void **state)
{
    semail_tsig_key *k = test_key();
    assert_string_equal(semail_tsig_key_name(k), "semail-update");
    assert_string_equal(semail_tsig_key_algorithm(k), "hmac-sha256");
    assert_int_equal(k->secret_len, 32);
    assert_int_equal(k->secret[0], 0x9c); /* "nLGu" */
    assert_int_equal(k->mac_len, 32);
    semail_tsig_key_free(k);
}

static void test_dns_update__key_file_allows_comments_and_any_case(void **state)
{
    static const char text[] = "# made by hand\n// another comment\n/* and\n a block */\n"
                               "key Semail-Update. { secret \"AAECAwQFBgc=\"; algorithm "
                               "HMAC-SHA512; };";
    semail_tsig_key *k = NULL;
    assert_int_equal(semail_tsig_key_parse(&k, text, strlen(text)), 0);
    assert_string_equal(semail_tsig_key_name(k), "semail-update");
    assert_string_equal(semail_tsig_key_algorithm(k), "hmac-sha512");
    assert_int_equal(k->secret_len, 8);
    assert_int_equal(k->secret[7], 7);
    semail_tsig_key_free(k);
}

static void test_dns_update__key_file_errors_name_the_line(void **state)
{
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"key \"k\" { algorithm hmac-sha256; };", "no secret"},
        {"key \"k\" { secret \"AAAA\"; };", "no algorithm"},
        {"key \"k\" {\n algorithm hmac-md5;\n secret \"AAAA\"; };", "line 2: unsupported"},
        {"key \"k\" { algorithm hmac-sha256; secret \"AAA\"; };", "base64"},
        {"key \"k\" { algorithm hmac-sha256; secret \"AA=A\"; };", "base64"},
        {"key \"k\" { algorithm hmac-sha256; secret \"AB==\"; };", "base64"}, /* not canonical */
        {"key \"k\" { algorithm hmac-sha256; secret \"AAAA\"; }; key \"j\" { };", "more than one"},
        {"key \"k\" { algorithm hmac-sha256; secret \"AAAA\" };", "expected ';'"},
        {"key \"k\" { algorithm hmac-sha256; secret \"AAAA; };", "unterminated"},
        {"key \"k\" { algorithm hmac-sha256; algorithm hmac-sha1; };", "twice"},
        {"key \"k\" { algorithm hmac-sha256; /* secret", "unterminated comment"},
        {"key \"bad name!\" { algorithm hmac-sha256; secret \"AAAA\"; };", "invalid key name"},
        {"zone \"k\" { };", "expected 'key'"},
        {"", "expected 'key'"},
    };
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        semail_tsig_key *k = NULL;
        int rc = semail_tsig_key_parse(&k, cases[i].text, strlen(cases[i].text));
        print_message("%s -> %s\n", cases[i].text, semail_error_last());
        assert_int_equal(rc, SEMAIL_EINVAL);
        assert_null(k);
        assert_non_null(strstr(semail_error_last(), cases[i].message));
    }
}

static void test_dns_update__key_load_missing_file_is_not_found(void **state)
{
    semail_tsig_key *k = NULL;
    char path[] = "/tmp/semail-tsig-XXXXXX";
    int fd;

    assert_int_equal(semail_tsig_key_load(&k, "/nonexistent/semail/tsig.key"), SEMAIL_ENOTFOUND);
    assert_true((fd = mkstemp(path)) >= 0);
    assert_int_equal(write(fd, "key x {", 7), 7);
    close(fd);
    assert_int_equal(semail_tsig_key_load(&k, path), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), path)); /* the message names the file */
    unlink(path);
}

/* ---- names -------------------------------------------------------------- */

static void test_dns_update__names_are_checked_before_building(void **state)
{
    static const char *const bad[] = {
        "Alice.semail.test",
        "semail.test",
        "test",
        "alice.example.org",
        "alice.xsemail.test",
        "-alice.semail.test",
        "alice-.semail.test",
        "al_ice.semail.test",
        "alice..semail.test",
        ".semail.test",
        "",
        "alice.semail.test..",
        "a b.semail.test",
        "alice.semail.test\n",
        "*.semail.test",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.semail.test",
    };
    semail_dns_name zone = dname("semail.test"), n;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (semail__dns_check_name_in_zone(&n, bad[i], &zone) != SEMAIL_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
    }
    assert_int_equal(semail__dns_check_name_in_zone(&n, NULL, &zone), SEMAIL_EINVAL);
    assert_int_equal(semail__dns_check_name_in_zone(&n, "alice.semail.test.", &zone), 0);
    assert_int_equal(semail__dns_check_name_in_zone(&n, "a-1.b2.semail.test", &zone), 0);
    /* Host names (zone, MX host) may come in any case and are folded. */
    n = dname("MX.Semail.TEST.");
    assert_memory_equal(n.wire, "\002mx\006semail\004test", 16);
}

/* ---- messages, byte for byte --------------------------------------------- */

static void test_dns_update__add_is_nsupdates_packet(void **state)
{
    semail_tsig_key *k = test_key();
    semail_dns_name zone = dname("semail.test"), name = dname("alice.semail.test");
    semail_dns_name mx = dname("mx.semail.test");
    packet want = hex(ADD_REQ), got;
    uint8_t mac[SEMAIL_TSIG_MAC_MAX];
    size_t mac_len = 0;

    assert_int_equal(semail__dns_update_build_add(got.b, sizeof(got.b), &got.len, id_of(&want),
                                                  &zone, &name, &mx, "v=spf1 mx -all", 300),
                     0);
    assert_int_equal(
        semail__tsig_sign(k, got.b, sizeof(got.b), &got.len, TIME_SIGNED, mac, &mac_len), 0);
    assert_packets_equal(&got, &want);
    assert_int_equal(mac_len, 32);
    assert_memory_equal(mac, want.b + mac_offset(&want), 32);
    semail_tsig_key_free(k);
}

static void test_dns_update__remove_is_nsupdates_packet(void **state)
{
    semail_tsig_key *k = test_key();
    semail_dns_name zone = dname("semail.test"), name = dname("alice.semail.test");
    packet want = hex(REMOVE_REQ), got;
    uint8_t mac[SEMAIL_TSIG_MAC_MAX];
    size_t mac_len = 0;

    assert_int_equal(
        semail__dns_update_build_remove(got.b, sizeof(got.b), &got.len, id_of(&want), &zone, &name),
        0);
    assert_int_equal(
        semail__tsig_sign(k, got.b, sizeof(got.b), &got.len, TIME_SIGNED, mac, &mac_len), 0);
    assert_packets_equal(&got, &want);
    semail_tsig_key_free(k);
}

static void test_dns_update__long_spf_is_split_in_255_byte_strings(void **state)
{
    semail_dns_name zone = dname("semail.test"), name = dname("bob.semail.test");
    semail_dns_name mx = dname("mail.example.org");
    char spf[SEMAIL_DNS_SPF_MAX + 1];
    packet got;
    semail_dns_msg m;
    semail_dns_rr rr;
    size_t off, i;

    memset(spf, 'a', SEMAIL_DNS_SPF_MAX);
    spf[SEMAIL_DNS_SPF_MAX] = '\0';
    assert_int_equal(
        semail__dns_update_build_add(got.b, sizeof(got.b), &got.len, 1, &zone, &name, &mx, spf, 60),
        0);
    assert_int_equal(semail__dns_msg_parse(&m, got.b, got.len, false), 0);
    assert_int_equal(m.opcode, SEMAIL_DNS_O_UPDATE);
    off = m.an_off;
    for (i = 0; i < 3; i++)
        assert_int_equal(semail__dns_rr_read(&m, &off, &rr), 0);
    assert_int_equal(rr.type, SEMAIL_DNS_T_TXT);
    assert_int_equal(rr.rdlen, SEMAIL_DNS_SPF_MAX + 2);
    assert_int_equal(got.b[rr.rdoff], 255);
    assert_int_equal(got.b[rr.rdoff + 256], SEMAIL_DNS_SPF_MAX - 255);
    assert_int_equal(off, got.len);
}

static void test_dns_update__builder_refuses_a_small_buffer(void **state)
{
    semail_dns_name zone = dname("semail.test"), name = dname("bob.semail.test");
    semail_dns_name mx = dname("mx.semail.test");
    uint8_t buf[64];
    size_t len = 0;
    assert_int_equal(semail__dns_update_build_add(buf, sizeof(buf), &len, 1, &zone, &name, &mx,
                                                  "v=spf1 mx -all", 60),
                     SEMAIL_ETOOBIG);
}

/* ---- answers -------------------------------------------------------------- */

static int judge_quietly(const char *req_hex, const char *ans_hex, uint64_t now, packet *edit_ans,
                         bool quiet)
{
    semail_tsig_key *k = test_key();
    packet req = hex(req_hex), ans = edit_ans ? *edit_ans : hex(ans_hex);
    int rc = semail__dns_update_result(k, req.b, req.b + mac_offset(&req), 32, ans.b, ans.len, now,
                                       "127.0.0.1:53", "alice.semail.test");
    if (!quiet)
        print_message("-> %d %s\n", rc, semail_error_last());
    semail_tsig_key_free(k);
    return rc;
}

static int judge(const char *req_hex, const char *ans_hex, uint64_t now, packet *edit_ans)
{
    return judge_quietly(req_hex, ans_hex, now, edit_ans, false);
}

static void test_dns_update__named_answers_verify_and_map(void **state)
{
    semail_error_clear();
    assert_int_equal(judge(ADD_REQ, ADD_ANS, TIME_SIGNED, NULL), 0);
    assert_string_equal(semail_error_last(), ""); /* success records no error */
    assert_int_equal(judge(REMOVE_REQ, REMOVE_ANS, TIME_SIGNED + 299, NULL), 0);
    assert_int_equal(judge(ADD2_REQ, ADD2_ANS, TIME_SIGNED, NULL), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "alice.semail.test is already in use"));
    assert_int_equal(judge(BADSIG_REQ, BADSIG_ANS, TIME_SIGNED, NULL), SEMAIL_EPERM);
    assert_non_null(strstr(semail_error_last(), "BADSIG"));
}

static void test_dns_update__answer_with_bad_mac_is_refused(void **state)
{
    packet ans = hex(ADD_ANS);
    ans.b[ans.len - 10] ^= 1; /* a bit of the MAC */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "MAC does not verify"));
    /* An answer signed for another request does not do either. */
    ans = hex(ADD_ANS);
    ans.b[0] = 0xff; /* ADD2_REQ's id */
    ans.b[1] = 0xbe;
    assert_int_equal(judge(ADD2_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "MAC does not verify"));
    /* Nor does a changed answer under the right MAC: here its RCODE. */
    ans = hex(ADD2_ANS);
    ans.b[3] = 0;
    assert_int_equal(judge(ADD2_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
}

static void test_dns_update__answer_without_tsig_is_refused(void **state)
{
    packet ans = hex(ADD_ANS);
    ans.b[11] = 0; /* ARCOUNT 0 ... */
    ans.len = 29;  /* ... header and zone section only */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "not signed"));
    ans.b[3] = SEMAIL_DNS_R_REFUSED; /* an unsigned refusal still fails the call */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_EPERM);
    ans.b[3] = SEMAIL_DNS_R_SERVFAIL;
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
}

static void test_dns_update__answer_out_of_time_is_refused(void **state)
{
    assert_int_equal(judge(ADD_REQ, ADD_ANS, TIME_SIGNED + 301, NULL), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "clocks differ"));
    assert_int_equal(judge(ADD_REQ, ADD_ANS, TIME_SIGNED - 301, NULL), SEMAIL_ETEMP);
}

static void test_dns_update__answer_to_another_query_is_refused(void **state)
{
    packet ans = hex(ADD_ANS);
    ans.b[1] ^= 1; /* id */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "does not match"));
    ans = hex(ADD_ANS);
    ans.b[2] = 0x80; /* opcode QUERY */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
}

static void test_dns_update__malformed_answers_are_refused(void **state)
{
    packet full = hex(ADD_ANS), ans;
    size_t cut;
    /* Every truncation of a signed answer fails cleanly (ASan watches the reads). */
    for (cut = 0; cut < full.len; cut++) {
        ans = full;
        ans.len = cut;
        assert_true(judge_quietly(ADD_REQ, NULL, TIME_SIGNED, &ans, true) < 0);
    }
    ans = full;
    ans.b[ans.len++] = 0; /* a byte after the TSIG */
    assert_int_equal(judge(ADD_REQ, NULL, TIME_SIGNED, &ans), SEMAIL_ETEMP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_update__reads_tsig_keygen_output),
        cmocka_unit_test(test_dns_update__key_file_allows_comments_and_any_case),
        cmocka_unit_test(test_dns_update__key_file_errors_name_the_line),
        cmocka_unit_test(test_dns_update__key_load_missing_file_is_not_found),
        cmocka_unit_test(test_dns_update__names_are_checked_before_building),
        cmocka_unit_test(test_dns_update__add_is_nsupdates_packet),
        cmocka_unit_test(test_dns_update__remove_is_nsupdates_packet),
        cmocka_unit_test(test_dns_update__long_spf_is_split_in_255_byte_strings),
        cmocka_unit_test(test_dns_update__builder_refuses_a_small_buffer),
        cmocka_unit_test(test_dns_update__named_answers_verify_and_map),
        cmocka_unit_test(test_dns_update__answer_with_bad_mac_is_refused),
        cmocka_unit_test(test_dns_update__answer_without_tsig_is_refused),
        cmocka_unit_test(test_dns_update__answer_out_of_time_is_refused),
        cmocka_unit_test(test_dns_update__answer_to_another_query_is_refused),
        cmocka_unit_test(test_dns_update__malformed_answers_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
