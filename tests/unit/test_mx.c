/*
 * test_mx.c - MX resolution against answers recorded from BIND9
 * (data/dns/recorded.h, made by data/dns/capture.py from
 * data/dns/example.test.zone), replayed by a fake DNS server on loopback
 * that can also misbehave (wrong ids, wrong questions, SERVFAIL, silence,
 * garbage); and the wire parser against hostile packets.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "dns_wire.h"
#include "mx_internal.h"
#include "semail/mx.h"

#include "data/dns/recorded.h"

/* ---- a fake DNS server replaying recorded answers ------------------------ */

typedef enum fake_mode {
    FAKE_RECORDED,             /* the recorded answer to the question */
    FAKE_SERVFAIL,             /* SERVFAIL to everything */
    FAKE_SERVFAIL_ADDRESSES,   /* recorded MX answers, SERVFAIL to A and AAAA */
    FAKE_REFUSED,              /* REFUSED to everything */
    FAKE_SILENT,               /* no answer at all */
    FAKE_WRONG_ID_FIRST,       /* an answer with another id, then the right one */
    FAKE_WRONG_QUESTION_FIRST, /* an answer to another question, then the right one */
    FAKE_WRONG_ID_ONLY,        /* only answers with another id */
    FAKE_CUT_SHORT,            /* the right answer cut in the middle of a record */
    FAKE_FORCE_NOERROR         /* the recorded answer, its error code cleared */
} fake_mode;

typedef struct fake_dns {
    int udp, tcp, stop[2];
    uint16_t port;
    fake_mode mode;
    pthread_t thread;
    unsigned int udp_queries, tcp_queries; /* read after join only */
} fake_dns;

static size_t question_end(const uint8_t *p, size_t len)
{
    size_t off = SEMAIL_DNS_HEADER_LEN;
    while (off < len && p[off] != 0)
        off += (size_t)p[off] + 1;
    return off + 5 <= len ? off + 5 : 0;
}

static bool same_question(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (tolower(a[i]) != tolower(b[i]))
            return false;
    return true;
}

/* The recorded answer whose question is the query's, or NULL. */
static const struct recorded *find_recorded(const uint8_t *q, size_t qlen)
{
    size_t qe = question_end(q, qlen), i;
    for (i = 0; qe && i < sizeof(recorded_udp) / sizeof(recorded_udp[0]); i++) {
        const struct recorded *r = &recorded_udp[i];
        if (question_end(r->data, r->len) == qe && same_question(r->data + 12, q + 12, qe - 12))
            return r;
    }
    return NULL;
}

/* The answer to send for query Q: into OUT, returns its length (0: none). */
static size_t make_answer(uint8_t *out, const uint8_t *q, size_t qlen, int rcode, bool tcp)
{
    const struct recorded *r = find_recorded(q, qlen);
    size_t n;

    if (r != NULL && tcp && r->data == rec_big_mx) {
        memcpy(out, rec_big_mx_tcp, sizeof(rec_big_mx_tcp));
        n = sizeof(rec_big_mx_tcp);
    } else if (r != NULL && rcode < 0) {
        memcpy(out, r->data, r->len);
        n = r->len;
    } else { /* echo the question with an error code */
        n = question_end(q, qlen);
        if (n == 0)
            return 0;
        memcpy(out, q, n);
        out[2] = 0x81;
        out[3] = (uint8_t)(0x80 | (rcode < 0 ? SEMAIL_DNS_R_SERVFAIL : rcode));
    }
    out[0] = q[0];
    out[1] = q[1];
    return n;
}

static void fake_udp(fake_dns *f)
{
    uint8_t q[512], a[4096];
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    ssize_t ql = recvfrom(f->udp, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
    size_t n, qe;
    int rcode = -1;

    if (ql < SEMAIL_DNS_HEADER_LEN || (qe = question_end(q, (size_t)ql)) == 0)
        return;
    f->udp_queries++;
    if (f->mode == FAKE_SILENT)
        return;
    if (f->mode == FAKE_SERVFAIL)
        rcode = SEMAIL_DNS_R_SERVFAIL;
    if (f->mode == FAKE_REFUSED)
        rcode = SEMAIL_DNS_R_REFUSED;
    if (f->mode == FAKE_SERVFAIL_ADDRESSES && q[qe - 3] != SEMAIL_DNS_T_MX)
        rcode = SEMAIL_DNS_R_SERVFAIL;
    n = make_answer(a, q, (size_t)ql, rcode, false);
    if (f->mode == FAKE_WRONG_ID_FIRST || f->mode == FAKE_WRONG_ID_ONLY) {
        a[1] ^= 0x5a;
        sendto(f->udp, a, n, 0, (struct sockaddr *)&from, fl);
        a[1] ^= 0x5a;
        if (f->mode == FAKE_WRONG_ID_ONLY)
            return;
    }
    if (f->mode == FAKE_WRONG_QUESTION_FIRST) {
        uint8_t other[sizeof(rec_nullmx_mx)];
        memcpy(other, rec_nullmx_mx, sizeof(other));
        other[0] = q[0];
        other[1] = q[1];
        sendto(f->udp, other, sizeof(other), 0, (struct sockaddr *)&from, fl);
    }
    if (f->mode == FAKE_FORCE_NOERROR && n > 3)
        a[3] &= 0xF0;
    if (f->mode == FAKE_CUT_SHORT && n > qe + 6)
        n = qe + 6;
    sendto(f->udp, a, n, 0, (struct sockaddr *)&from, fl);
}

static void fake_tcp(fake_dns *f)
{
    uint8_t q[514], a[4098];
    size_t n;
    int c = accept(f->tcp, NULL, NULL);
    struct timeval tv = {1, 0};

    if (c < 0)
        return;
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (recv(c, q, 2, MSG_WAITALL) == 2) {
        size_t ql = ((size_t)q[0] << 8) | q[1];
        if (ql <= 512 && recv(c, q, ql, MSG_WAITALL) == (ssize_t)ql) {
            f->tcp_queries++;
            n = make_answer(a + 2, q, ql, -1, true);
            a[0] = (uint8_t)(n >> 8);
            a[1] = (uint8_t)n;
            send(c, a, n + 2, MSG_NOSIGNAL);
        }
    }
    close(c);
}

static void *fake_run(void *arg)
{
    fake_dns *f = arg;
    for (;;) {
        struct pollfd p[3] = {{f->udp, POLLIN, 0}, {f->tcp, POLLIN, 0}, {f->stop[0], POLLIN, 0}};
        if (poll(p, 3, -1) < 0)
            continue;
        if (p[2].revents)
            return NULL;
        if (p[0].revents)
            fake_udp(f);
        if (p[1].revents)
            fake_tcp(f);
    }
}

/* Bind UDP and TCP on one free loopback port. */
static void fake_start(fake_dns *f, fake_mode mode)
{
    int tries;
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    for (tries = 0; tries < 50; tries++) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t sl = sizeof(sin);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        f->udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        f->tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(f->udp >= 0 && f->tcp >= 0);
        assert_int_equal(bind(f->udp, (struct sockaddr *)&sin, sizeof(sin)), 0);
        assert_int_equal(getsockname(f->udp, (struct sockaddr *)&sin, &sl), 0);
        if (bind(f->tcp, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(f->tcp, 8) == 0) {
            f->port = ntohs(sin.sin_port);
            break;
        }
        close(f->udp);
        close(f->tcp);
    }
    assert_true(f->port != 0);
    assert_int_equal(pipe(f->stop), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_run, f), 0);
}

static void fake_stop(fake_dns *f)
{
    assert_int_equal(write(f->stop[1], "x", 1), 1);
    pthread_join(f->thread, NULL);
    close(f->udp);
    close(f->tcp);
    close(f->stop[0]);
    close(f->stop[1]);
}

static semail_resolver *resolver_for(const fake_dns *f, unsigned int timeout_ms)
{
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r = NULL;
    char server[32];
    snprintf(server, sizeof(server), "127.0.0.1:%u", f->port);
    o.server = server;
    o.timeout_ms = timeout_ms;
    o.attempts = 1;
    assert_int_equal(semail_resolver_new(&r, &o), 0);
    return r;
}

/* Resolve DOMAIN against a fake server in MODE. */
static semail_mx_result *resolve_with(fake_mode mode, const char *domain, fake_dns *f)
{
    semail_mx_result *res = NULL;
    semail_resolver *r;
    fake_start(f, mode);
    r = resolver_for(f, 300);
    assert_int_equal(semail_mx_resolve(&res, r, domain), 0);
    assert_non_null(res);
    semail_resolver_free(r);
    fake_stop(f);
    return res;
}

static void assert_verdict(const semail_mx_result *res, semail_mx_status status,
                           const char *enhanced)
{
    if (semail_mx_result_status(res) != status)
        print_message("verdict: %s %s\n", semail_mx_result_enhanced(res),
                      semail_mx_result_text(res));
    assert_int_equal(semail_mx_result_status(res), status);
    assert_string_equal(semail_mx_result_enhanced(res), enhanced);
    if (status != SEMAIL_MX_OK)
        assert_int_equal(semail_mx_result_host_count(res), 0);
}

static void assert_address(const semail_mx_result *res, size_t host, size_t i, const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char text[INET6_ADDRSTRLEN];
    const void *bytes;

    assert_int_equal(semail_mx_result_address(&ss, &len, res, host, i), 0);
    if (ss.ss_family == AF_INET6) {
        assert_int_equal(len, sizeof(struct sockaddr_in6));
        assert_int_equal(((struct sockaddr_in6 *)&ss)->sin6_port, 0);
        bytes = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    } else {
        assert_int_equal(ss.ss_family, AF_INET);
        assert_int_equal(len, sizeof(struct sockaddr_in));
        assert_int_equal(((struct sockaddr_in *)&ss)->sin_port, 0);
        bytes = &((struct sockaddr_in *)&ss)->sin_addr;
    }
    assert_non_null(inet_ntop(ss.ss_family, bytes, text, sizeof(text)));
    assert_string_equal(text, ip);
}

/* ---- MX resolution --------------------------------------------------------- */

static void test_mx__orders_by_preference_and_shuffles_equals(void **state)
{
    semail_resolver *r;
    fake_dns f;
    int i, a_first = 0, b_first = 0;

    fake_start(&f, FAKE_RECORDED);
    r = resolver_for(&f, 1000);
    for (i = 0; i < 40; i++) {
        semail_mx_result *res;
        assert_int_equal(semail_mx_resolve(&res, r, "multi.example.test"), 0);
        assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
        assert_int_equal(semail_mx_result_host_count(res), 3);
        assert_int_equal(semail_mx_result_preference(res, 0), 10);
        assert_int_equal(semail_mx_result_preference(res, 1), 10);
        assert_string_equal(semail_mx_result_host(res, 2), "c.mx.example.test");
        assert_int_equal(semail_mx_result_preference(res, 2), 20);
        if (strcmp(semail_mx_result_host(res, 0), "a.mx.example.test") == 0) {
            a_first++;
            assert_string_equal(semail_mx_result_host(res, 1), "b.mx.example.test");
            assert_int_equal(semail_mx_result_address_count(res, 0), 2);
            assert_address(res, 0, 0, "::1"); /* IPv6 first */
            assert_address(res, 0, 1, "127.0.0.11");
        } else {
            b_first++;
            assert_string_equal(semail_mx_result_host(res, 0), "b.mx.example.test");
            assert_string_equal(semail_mx_result_host(res, 1), "a.mx.example.test");
        }
        assert_int_equal(semail_mx_result_implicit(res), 0);
        assert_null(semail_mx_result_host(res, 3));
        semail_mx_result_free(res);
    }
    /* Each order has probability 2^-40 of never showing up. */
    assert_true(a_first > 0);
    assert_true(b_first > 0);
    semail_resolver_free(r);
    fake_stop(&f);
}

static void test_mx__uses_domain_as_implicit_mx_without_mx_records(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "Implicit.Example.Test.", &f);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_int_equal(semail_mx_result_implicit(res), 1);
    assert_int_equal(semail_mx_result_host_count(res), 1);
    assert_string_equal(semail_mx_result_host(res, 0), "implicit.example.test");
    assert_int_equal(semail_mx_result_preference(res, 0), 0);
    assert_int_equal(semail_mx_result_address_count(res, 0), 2);
    assert_address(res, 0, 0, "::1");
    assert_address(res, 0, 1, "127.0.0.21");
    semail_mx_result_free(res);
}

static void test_mx__refuses_null_mx_with_5_1_10(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "nullmx.example.test", &f);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.1.10");
    assert_non_null(strstr(semail_mx_result_text(res), "does not accept mail"));
    assert_int_equal(f.udp_queries, 1); /* refused at once: no address look-up */
    semail_mx_result_free(res);
}

static void test_mx__follows_cname_chain_of_the_domain(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "alias.example.test", &f);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_int_equal(semail_mx_result_host_count(res), 3);
    assert_string_equal(semail_mx_result_host(res, 2), "c.mx.example.test");
    assert_address(res, 2, 0, "127.0.0.13");
    semail_mx_result_free(res);
}

static void test_mx__follows_cname_of_an_mx_host(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "cnamehost.example.test", &f);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_int_equal(semail_mx_result_host_count(res), 1);
    assert_string_equal(semail_mx_result_host(res, 0), "hostalias.example.test");
    assert_int_equal(semail_mx_result_preference(res, 0), 5);
    assert_int_equal(semail_mx_result_address_count(res, 0), 2);
    assert_address(res, 0, 0, "::1");
    assert_address(res, 0, 1, "127.0.0.11");
    semail_mx_result_free(res);
}

static void test_mx__nxdomain_is_permanent_5_1_2(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "nosuch.example.test", &f);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2");
    assert_string_equal(semail_mx_result_text(res),
                        "Host or domain name not found. Name service error for "
                        "name=nosuch.example.test type=MX: Host not found");
    semail_mx_result_free(res);
}

static void test_mx__no_mx_and_no_address_is_permanent_5_1_2(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "empty.example.test", &f);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2");
    assert_int_equal(semail_mx_result_implicit(res), 1);
    semail_mx_result_free(res);
}

static void test_mx__mx_hosts_without_address_are_permanent_5_4_4(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "deadmx.example.test", &f);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.4.4");
    semail_mx_result_free(res);
}

static void test_mx__cname_loop_is_a_server_failure_from_bind(void **state)
{
    fake_dns f;
    /* BIND answers a CNAME loop with both CNAMEs and SERVFAIL. */
    semail_mx_result *res = resolve_with(FAKE_RECORDED, "loop1.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    semail_mx_result_free(res);
}

static void test_mx__cname_loop_in_an_answer_is_followed_a_bounded_number_of_times(void **state)
{
    fake_dns f;
    /* The same loop from a server that claims success. */
    semail_mx_result *res = resolve_with(FAKE_FORCE_NOERROR, "loop1.example.test", &f);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.4.4");
    assert_non_null(strstr(semail_mx_result_text(res), "CNAME chain too long"));
    assert_int_equal(f.udp_queries, 1);
    semail_mx_result_free(res);
}

static void test_mx__servfail_is_temporary_4_4_3(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_SERVFAIL, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    assert_non_null(strstr(semail_mx_result_text(res), "type=MX: Host not found, try again"));
    assert_non_null(strstr(semail_mx_result_text(res), "SERVFAIL"));
    semail_mx_result_free(res);
}

static void test_mx__refused_is_temporary_4_4_3(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_REFUSED, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    assert_non_null(strstr(semail_mx_result_text(res), "REFUSED"));
    semail_mx_result_free(res);
}

static void test_mx__timeout_is_temporary_4_4_3(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_SILENT, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    assert_non_null(strstr(semail_mx_result_text(res), "timeout"));
    semail_mx_result_free(res);
}

static void test_mx__temporary_when_no_host_resolved_and_a_lookup_failed(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_SERVFAIL_ADDRESSES, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    assert_non_null(strstr(semail_mx_result_text(res), "type=A"));
    semail_mx_result_free(res);
}

static void test_mx__ignores_answer_with_wrong_id(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_WRONG_ID_FIRST, "implicit.example.test", &f);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_int_equal(semail_mx_result_address_count(res, 0), 2);
    semail_mx_result_free(res);
}

static void test_mx__ignores_answer_to_another_question(void **state)
{
    fake_dns f;
    /* The stray answer is nullmx's null MX: taking it would refuse the mail. */
    semail_mx_result *res = resolve_with(FAKE_WRONG_QUESTION_FIRST, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_int_equal(semail_mx_result_host_count(res), 3);
    semail_mx_result_free(res);
}

static void test_mx__only_answers_with_wrong_id_time_out(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_WRONG_ID_ONLY, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    semail_mx_result_free(res);
}

static void test_mx__answer_cut_short_is_temporary(void **state)
{
    fake_dns f;
    semail_mx_result *res = resolve_with(FAKE_CUT_SHORT, "multi.example.test", &f);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    assert_non_null(strstr(semail_mx_result_text(res), "malformed"));
    semail_mx_result_free(res);
}

static void test_mx__unreachable_server_is_temporary(void **state)
{
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r;
    semail_mx_result *res;
    fake_dns f;
    char server[32];

    fake_start(&f, FAKE_SILENT);
    fake_stop(&f); /* the port is now closed: ICMP port unreachable */
    snprintf(server, sizeof(server), "127.0.0.1:%u", f.port);
    o.server = server;
    o.timeout_ms = 2000;
    assert_int_equal(semail_resolver_new(&r, &o), 0);
    assert_int_equal(semail_mx_resolve(&res, r, "multi.example.test"), 0);
    assert_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3");
    semail_mx_result_free(res);
    semail_resolver_free(r);
}

static void test_mx__truncated_udp_answer_is_asked_again_over_tcp(void **state)
{
    semail_resolver *r;
    semail_dns_name name;
    semail_dns_answer ans;
    fake_dns f;

    fake_start(&f, FAKE_RECORDED);
    r = resolver_for(&f, 1000);
    assert_int_equal(semail__dns_name_from_text(&name, "big.example.test"), 0);
    assert_int_equal(semail__resolver_query(r, &name, SEMAIL_DNS_T_MX, &ans), 0);
    assert_false(ans.msg.tc);
    assert_int_equal(ans.msg.ancount, 30);
    semail__dns_answer_free(&ans);
    semail_resolver_free(r);
    fake_stop(&f);
    assert_int_equal(f.udp_queries, 1);
    assert_int_equal(f.tcp_queries, 1);
}

static void test_mx__domain_literal_needs_no_dns(void **state)
{
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r;
    semail_mx_result *res;

    o.server = "127.0.0.1:1"; /* never asked */
    assert_int_equal(semail_resolver_new(&r, &o), 0);
    assert_int_equal(semail_mx_resolve(&res, r, "[192.0.2.7]"), 0);
    assert_verdict(res, SEMAIL_MX_OK, "2.0.0");
    assert_address(res, 0, 0, "192.0.2.7");
    semail_mx_result_free(res);
    assert_int_equal(semail_mx_resolve(&res, r, "[IPv6:2001:db8::7]"), 0);
    assert_address(res, 0, 0, "2001:db8::7");
    semail_mx_result_free(res);
    assert_int_equal(semail_mx_resolve(&res, r, "[300.1.1.1]"), 0);
    assert_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2");
    semail_mx_result_free(res);
    semail_resolver_free(r);
}

static void test_mx__invalid_domain_is_permanent_without_query(void **state)
{
    static const char *const bad[] = {
        "", ".", "a..b", "a b.test", "caf\xc3\xa9.test", "x.-\x01.test"};
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r;
    size_t i;

    o.server = "127.0.0.1:1";
    assert_int_equal(semail_resolver_new(&r, &o), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        semail_mx_result *res;
        assert_int_equal(semail_mx_resolve(&res, r, bad[i]), 0);
        assert_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2");
        assert_null(strchr(semail_mx_result_text(res), '\x01'));
        semail_mx_result_free(res);
    }
    assert_int_equal(semail_mx_resolve(NULL, r, "x.test"), SEMAIL_EINVAL);
    semail_resolver_free(r);
}

static void test_resolver__refuses_bad_server_and_options(void **state)
{
    static const char *const bad[] = {"localhost:53", "127.0.0.1:", "127.0.0.1:70000",
                                      "[::1",         "[::1]x",     "1.2.3.4:5x"};
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r = NULL;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.server = bad[i];
        assert_int_equal(semail_resolver_new(&r, &o), SEMAIL_EINVAL);
        assert_null(r);
    }
    o.server = "[::1]:5353";
    assert_int_equal(semail_resolver_new(&r, &o), 0);
    semail_resolver_free(r);
    o.version = 99;
    assert_int_equal(semail_resolver_new(&r, &o), SEMAIL_EINVAL);
    assert_int_equal(semail_resolver_new(&r, NULL), 0); /* /etc/resolv.conf */
    semail_resolver_free(r);
}

/* ---- the wire parser ------------------------------------------------------- */

static void test_dns__parses_recorded_mx_answer(void **state)
{
    semail_dns_msg m;
    semail_dns_rr rr;
    semail_dns_name host;
    char text[SEMAIL_DNS_TEXT_MAX];
    size_t off;
    uint16_t pref;
    int i;

    assert_int_equal(semail__dns_msg_parse(&m, rec_multi_mx, sizeof(rec_multi_mx), false), 0);
    assert_true(m.qr);
    assert_int_equal(m.rcode, SEMAIL_DNS_R_NOERROR);
    assert_int_equal(m.qtype, SEMAIL_DNS_T_MX);
    assert_int_equal(semail__dns_name_to_text(text, sizeof(text), &m.qname), 0);
    assert_string_equal(text, "multi.example.test");
    assert_int_equal(m.ancount, 3);
    off = m.an_off;
    for (i = 0; i < 3; i++) {
        assert_int_equal(semail__dns_rr_read(&m, &off, &rr), 0);
        assert_int_equal(semail__dns_rr_mx(&m, &rr, &pref, &host), 0);
        assert_int_equal(semail__dns_name_to_text(text, sizeof(text), &host), 0);
        assert_true(strstr(text, ".mx.example.test") != NULL);
        assert_int_equal(pref, text[0] == 'c' ? 20 : 10);
    }
}

static void test_dns__rejects_every_truncation_of_recorded_answers(void **state)
{
    size_t i, n;
    for (i = 0; i < sizeof(recorded_udp) / sizeof(recorded_udp[0]); i++) {
        semail_dns_msg m;
        if (recorded_udp[i].data == rec_big_mx)
            continue; /* truncated by the server itself (TC) */
        assert_int_equal(
            semail__dns_msg_parse(&m, recorded_udp[i].data, recorded_udp[i].len, false), 0);
        for (n = 0; n < recorded_udp[i].len; n++)
            assert_int_equal(semail__dns_msg_parse(&m, recorded_udp[i].data, n, false),
                             SEMAIL_EINVAL);
    }
}

/* Header: id 1, a response, one question; then BODY. */
static size_t packet(uint8_t *out, const uint8_t *body, size_t len, uint16_t ancount)
{
    static const uint8_t hdr[12] = {0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(out, hdr, 12);
    out[7] = (uint8_t)ancount;
    memcpy(out + 12, body, len);
    return 12 + len;
}

static void test_dns__rejects_compression_pointer_loops(void **state)
{
    /* The question's name is a pointer to itself. */
    static const uint8_t self[] = {0xc0, 12, 0, 15, 0, 1};
    /* Two pointers pointing at each other: offset 12 -> 14 -> 12. */
    static const uint8_t pair[] = {0xc0, 14, 0xc0, 12, 0, 15, 0, 1};
    /* A label, then a pointer back to the label: a.a.a.a... */
    static const uint8_t cycle[] = {1, 'a', 0xc0, 12, 0, 15, 0, 1};
    /* Pointers into the header and past the end. */
    static const uint8_t header[] = {0xc0, 2, 0, 15, 0, 1};
    static const uint8_t beyond[] = {0xc0, 0xff, 0, 15, 0, 1};
    static const uint8_t *const bodies[] = {self, pair, cycle, header, beyond};
    static const size_t lens[] = {sizeof(self), sizeof(pair), sizeof(cycle), sizeof(header),
                                  sizeof(beyond)};
    uint8_t pkt[64];
    size_t i;

    for (i = 0; i < 5; i++) {
        semail_dns_msg m;
        size_t n = packet(pkt, bodies[i], lens[i], 0);
        assert_int_equal(semail__dns_msg_parse(&m, pkt, n, false), SEMAIL_EINVAL);
    }
}

static void test_dns__follows_pointers_to_earlier_names(void **state)
{
    /* Question example.test MX; answer owner is a pointer to it; MX host
     * mx + pointer to the question name. */
    static const uint8_t body[] = {
        7,    'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0, 0, 15,  0,   1, /* q */
        0xc0, 12,  0,   15,  0,   1,   0,   0,   1, 0,   0,   7,   0,   5, 2, 'm', 'x', 0xc0, 12};
    uint8_t pkt[128];
    semail_dns_msg m;
    semail_dns_rr rr;
    semail_dns_name host;
    char text[SEMAIL_DNS_TEXT_MAX];
    uint16_t pref;
    size_t off, n = packet(pkt, body, sizeof(body), 1);

    assert_int_equal(semail__dns_msg_parse(&m, pkt, n, false), 0);
    off = m.an_off;
    assert_int_equal(semail__dns_rr_read(&m, &off, &rr), 0);
    assert_true(semail__dns_name_equal(&rr.owner, &m.qname));
    assert_int_equal(semail__dns_rr_mx(&m, &rr, &pref, &host), 0);
    assert_int_equal(pref, 5);
    assert_int_equal(semail__dns_name_to_text(text, sizeof(text), &host), 0);
    assert_string_equal(text, "mx.example.test");
    /* The same record with rdata one octet too long is refused. */
    assert_int_equal(pkt[12 + 18 + 11], 7);
    pkt[12 + 18 + 11] = 8;
    pkt[n++] = 0;
    assert_int_equal(semail__dns_msg_parse(&m, pkt, n, false), 0);
    off = m.an_off;
    assert_int_equal(semail__dns_rr_read(&m, &off, &rr), 0);
    assert_int_equal(semail__dns_rr_mx(&m, &rr, &pref, &host), SEMAIL_EINVAL);
}

static void test_dns__rejects_names_over_255_octets(void **state)
{
    /* 5 labels of 63 octets: 320 octets of name. */
    uint8_t pkt[512], body[400];
    semail_dns_msg m;
    size_t i, n = 0;
    char text[400];

    for (i = 0; i < 5; i++) {
        body[n++] = 63;
        memset(body + n, 'a', 63);
        n += 63;
    }
    body[n++] = 0;
    memcpy(body + n, "\0\x0f\0\x01", 4);
    n = packet(pkt, body, n + 4, 0);
    assert_int_equal(semail__dns_msg_parse(&m, pkt, n, false), SEMAIL_EINVAL);
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    for (i = 63; i < sizeof(text) - 1; i += 64)
        text[i] = '.';
    semail_dns_name name;
    assert_int_equal(semail__dns_name_from_text(&name, text), SEMAIL_EINVAL);
    text[63] = 'a'; /* a first label of 127 octets */
    text[200] = '\0';
    assert_int_equal(semail__dns_name_from_text(&name, text), SEMAIL_EINVAL);
}

static void test_dns__rejects_unknown_label_types_and_question_counts(void **state)
{
    static const uint8_t ext[] = {0x41, 0, 0, 15, 0, 1};
    uint8_t pkt[64];
    semail_dns_msg m;
    size_t n = packet(pkt, ext, sizeof(ext), 0);

    assert_int_equal(semail__dns_msg_parse(&m, pkt, n, false), SEMAIL_EINVAL);
    memcpy(pkt, rec_nullmx_mx, 12);
    pkt[5] = 0; /* no question */
    assert_int_equal(semail__dns_msg_parse(&m, pkt, 12, false), SEMAIL_EINVAL);
}

static void test_dns__random_garbage_is_rejected_cleanly(void **state)
{
    uint8_t pkt[600];
    unsigned int seed = 12345, round;
    for (round = 0; round < 20000; round++) {
        semail_dns_msg m;
        size_t n = (size_t)(rand_r(&seed) % (int)sizeof(pkt)), i;
        for (i = 0; i < n; i++)
            pkt[i] = (uint8_t)rand_r(&seed);
        if (n > 5) {
            pkt[4] = 0; /* one question, few records: get past the header often */
            pkt[5] = 1;
            pkt[6] = 0;
            pkt[8] = 0;
            pkt[10] = 0;
        }
        if (semail__dns_msg_parse(&m, pkt, n, false) == 0) {
            size_t off = m.an_off;
            semail_dns_rr rr;
            for (i = 0; i < m.ancount; i++)
                assert_int_equal(semail__dns_rr_read(&m, &off, &rr), 0);
        }
    }
}

/* ---- local addresses ------------------------------------------------------- */

static int local(const char *ip, uint16_t port, const char *const *ours, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char text[80];
    snprintf(text, sizeof(text), strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip, port);
    assert_int_equal(semail__sockaddr_parse(&ss, &len, NULL, text, 0), 0);
    return semail_mx_is_local_address((struct sockaddr *)&ss, len, ours, n);
}

static void test_mx_local__loopback_and_interfaces_are_local(void **state)
{
    assert_int_equal(local("127.0.0.1", 0, NULL, 0), 1);
    assert_int_equal(local("127.3.2.1", 25, NULL, 0), 1);
    assert_int_equal(local("::1", 25, NULL, 0), 1);
    assert_int_equal(local("::ffff:127.0.0.1", 25, NULL, 0), 1);
    assert_int_equal(local("0.0.0.0", 25, NULL, 0), 1);
    assert_int_equal(local("192.0.2.1", 25, NULL, 0), 0); /* TEST-NET-1 */
    assert_int_equal(local("2001:db8::1", 25, NULL, 0), 0);
}

static void test_mx_local__listen_addresses_make_the_port_count(void **state)
{
    static const char *const ours[] = {"[::]:587", "127.0.0.1:2525", "192.0.2.9"};
    /* The outbound's own submission port: a loop. */
    assert_int_equal(local("::1", 587, ours, 3), 1);
    assert_int_equal(local("127.0.0.1", 2525, ours, 3), 1);
    /* The platform's inbound MX on another port: a normal delivery. */
    assert_int_equal(local("127.0.0.1", 25, ours, 3), 0);
    assert_int_equal(local("127.0.0.2", 2525, ours, 3), 0);
    /* [::] is IPv6 only. */
    assert_int_equal(local("127.0.0.1", 587, ours, 3), 0);
    /* An address without port: ours on every port. */
    assert_int_equal(local("192.0.2.9", 25, ours, 3), 1);
    assert_int_equal(local("2001:db8::1", 587, ours, 3), 0);
}

static void test_mx_local__refuses_bad_input(void **state)
{
    static const char *const bad[] = {"not-an-address"};
    struct sockaddr sa = {.sa_family = AF_UNIX};
    assert_int_equal(local("127.0.0.1", 25, bad, 1), SEMAIL_EINVAL);
    assert_int_equal(semail_mx_is_local_address(&sa, sizeof(sa), NULL, 0), SEMAIL_EINVAL);
    assert_int_equal(semail_mx_is_local_address(NULL, 0, NULL, 0), SEMAIL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx__orders_by_preference_and_shuffles_equals),
        cmocka_unit_test(test_mx__uses_domain_as_implicit_mx_without_mx_records),
        cmocka_unit_test(test_mx__refuses_null_mx_with_5_1_10),
        cmocka_unit_test(test_mx__follows_cname_chain_of_the_domain),
        cmocka_unit_test(test_mx__follows_cname_of_an_mx_host),
        cmocka_unit_test(test_mx__nxdomain_is_permanent_5_1_2),
        cmocka_unit_test(test_mx__no_mx_and_no_address_is_permanent_5_1_2),
        cmocka_unit_test(test_mx__mx_hosts_without_address_are_permanent_5_4_4),
        cmocka_unit_test(test_mx__cname_loop_is_a_server_failure_from_bind),
        cmocka_unit_test(test_mx__cname_loop_in_an_answer_is_followed_a_bounded_number_of_times),
        cmocka_unit_test(test_mx__servfail_is_temporary_4_4_3),
        cmocka_unit_test(test_mx__refused_is_temporary_4_4_3),
        cmocka_unit_test(test_mx__timeout_is_temporary_4_4_3),
        cmocka_unit_test(test_mx__temporary_when_no_host_resolved_and_a_lookup_failed),
        cmocka_unit_test(test_mx__ignores_answer_with_wrong_id),
        cmocka_unit_test(test_mx__ignores_answer_to_another_question),
        cmocka_unit_test(test_mx__only_answers_with_wrong_id_time_out),
        cmocka_unit_test(test_mx__answer_cut_short_is_temporary),
        cmocka_unit_test(test_mx__unreachable_server_is_temporary),
        cmocka_unit_test(test_mx__truncated_udp_answer_is_asked_again_over_tcp),
        cmocka_unit_test(test_mx__domain_literal_needs_no_dns),
        cmocka_unit_test(test_mx__invalid_domain_is_permanent_without_query),
        cmocka_unit_test(test_resolver__refuses_bad_server_and_options),
        cmocka_unit_test(test_dns__parses_recorded_mx_answer),
        cmocka_unit_test(test_dns__rejects_every_truncation_of_recorded_answers),
        cmocka_unit_test(test_dns__rejects_compression_pointer_loops),
        cmocka_unit_test(test_dns__follows_pointers_to_earlier_names),
        cmocka_unit_test(test_dns__rejects_names_over_255_octets),
        cmocka_unit_test(test_dns__rejects_unknown_label_types_and_question_counts),
        cmocka_unit_test(test_dns__random_garbage_is_rejected_cleanly),
        cmocka_unit_test(test_mx_local__loopback_and_interfaces_are_local),
        cmocka_unit_test(test_mx_local__listen_addresses_make_the_port_count),
        cmocka_unit_test(test_mx_local__refuses_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
