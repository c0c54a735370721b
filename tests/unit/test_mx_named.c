/*
 * test_mx_named.c - MX resolution end to end against a real BIND9 that
 * the test starts itself (as nobody when run as root) on 127.0.0.1 and a
 * free high port, serving data/dns/example.test.zone. Skipped, with a
 * message, when /usr/sbin/named is not installed (Debian package bind9).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "named_testutil.h"

#include "mx_internal.h"
#include "semail/mx.h"

#define NAMED TU_NAMED

typedef struct named {
    char dir[64];
    pid_t pid;
    uint16_t port;
    semail_resolver *r;
} named;

static void copy_zone(const char *dir)
{
    char src[4096], dst[256], buf[8192];
    const char *slash = strrchr(__FILE__, '/');
    FILE *in, *out;
    size_t n;

    snprintf(src, sizeof(src), "%.*s/data/dns/example.test.zone",
             slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    snprintf(dst, sizeof(dst), "%s/example.test.zone", dir);
    assert_non_null(in = fopen(src, "r"));
    assert_non_null(out = fopen(dst, "w"));
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static bool named_ready(semail_resolver *r)
{
    semail_dns_name name;
    semail_dns_answer ans;
    bool ok;
    assert_int_equal(semail__dns_name_from_text(&name, "example.test"), 0);
    if (semail__resolver_query(r, &name, SEMAIL_DNS_T_SOA, &ans) < 0)
        return false;
    ok = ans.msg.rcode == SEMAIL_DNS_R_NOERROR && ans.msg.ancount == 1;
    semail__dns_answer_free(&ans);
    return ok;
}

static int setup(void **state)
{
    static named n;
    char conf[2048], path[128], server[32];
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    int i;

    memset(&n, 0, sizeof(n));
    if (access(NAMED, X_OK) != 0) {
        print_message("SKIP: %s not installed (Debian package bind9)\n", NAMED);
        *state = NULL;
        return 0;
    }
    snprintf(n.dir, sizeof(n.dir), "/tmp/semail-named-XXXXXX");
    assert_non_null(mkdtemp(n.dir));
    assert_true((n.port = tu_free_port()) != 0);
    snprintf(conf, sizeof(conf),
             "options { directory \"%s\"; pid-file \"%s/named.pid\";\n"
             "  session-keyfile \"%s/session.key\"; managed-keys-directory \"%s\";\n"
             "  listen-on port %u { 127.0.0.1; }; listen-on-v6 { none; };\n"
             "  recursion no; dnssec-validation no; notify no; allow-query { any; }; };\n"
             "controls { };\n"
             "zone \"example.test\" { type primary; file \"%s/example.test.zone\"; };\n",
             n.dir, n.dir, n.dir, n.dir, n.port, n.dir);
    snprintf(path, sizeof(path), "%s/named.conf", n.dir);
    tu_write_file(path, conf);
    copy_zone(n.dir);
    if (getuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        assert_non_null(pw);
        assert_int_equal(chown(n.dir, pw->pw_uid, pw->pw_gid), 0);
    }
    assert_true((n.pid = fork()) >= 0);
    if (n.pid == 0)
        tu_exec_named(n.dir);
    snprintf(server, sizeof(server), "127.0.0.1:%u", n.port);
    o.server = server;
    o.timeout_ms = 200;
    o.attempts = 1;
    assert_int_equal(semail_resolver_new(&n.r, &o), 0);
    for (i = 0; i < 100 && !named_ready(n.r); i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        assert_int_equal(waitpid(n.pid, NULL, WNOHANG), 0); /* named died: see named.log */
        nanosleep(&ts, NULL);
    }
    assert_true(i < 100);
    *state = &n;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    named *n = *state;
    if (n == NULL)
        return 0;
    semail_resolver_free(n->r);
    kill(n->pid, SIGTERM);
    waitpid(n->pid, NULL, 0);
    nftw(n->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static semail_mx_result *resolve(void **state, const char *domain)
{
    named *n = *state;
    semail_mx_result *res = NULL;
    assert_int_equal(semail_mx_resolve(&res, n->r, domain), 0);
    return res;
}

#define SKIP_WITHOUT_NAMED()                                                                       \
    do {                                                                                           \
        if (*state == NULL)                                                                        \
            skip();                                                                                \
    } while (0)

static void test_mx_named__orders_and_shuffles_mx_hosts(void **state)
{
    int i, a_first = 0, b_first = 0;
    SKIP_WITHOUT_NAMED();
    for (i = 0; i < 30; i++) {
        semail_mx_result *res = resolve(state, "multi.example.test");
        assert_int_equal(semail_mx_result_status(res), SEMAIL_MX_OK);
        assert_int_equal(semail_mx_result_host_count(res), 3);
        assert_string_equal(semail_mx_result_host(res, 2), "c.mx.example.test");
        if (strcmp(semail_mx_result_host(res, 0), "a.mx.example.test") == 0)
            a_first++;
        else
            b_first++;
        semail_mx_result_free(res);
    }
    assert_true(a_first > 0 && b_first > 0);
}

static void test_mx_named__implicit_mx_with_ipv6_first(void **state)
{
    struct sockaddr_storage ss;
    semail_mx_result *res;
    SKIP_WITHOUT_NAMED();
    res = resolve(state, "implicit.example.test");
    assert_int_equal(semail_mx_result_status(res), SEMAIL_MX_OK);
    assert_int_equal(semail_mx_result_implicit(res), 1);
    assert_int_equal(semail_mx_result_address_count(res, 0), 2);
    assert_int_equal(semail_mx_result_address(&ss, NULL, res, 0, 0), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(semail_mx_result_address(&ss, NULL, res, 0, 1), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    semail_mx_result_free(res);
}

static void test_mx_named__verdicts(void **state)
{
    static const struct {
        const char *domain;
        semail_mx_status status;
        const char *enhanced;
    } cases[] = {
        {"nullmx.example.test", SEMAIL_MX_PERMANENT, "5.1.10"},
        {"nosuch.example.test", SEMAIL_MX_PERMANENT, "5.1.2"},
        {"empty.example.test", SEMAIL_MX_PERMANENT, "5.1.2"},
        {"deadmx.example.test", SEMAIL_MX_PERMANENT, "5.4.4"},
        {"loop1.example.test", SEMAIL_MX_TEMPORARY, "4.4.3"}, /* BIND: SERVFAIL */
        {"alias.example.test", SEMAIL_MX_OK, "2.0.0"},
        {"cnamehost.example.test", SEMAIL_MX_OK, "2.0.0"},
        {"not-our-zone.test", SEMAIL_MX_TEMPORARY, "4.4.3"}, /* REFUSED */
    };
    size_t i;
    SKIP_WITHOUT_NAMED();
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        semail_mx_result *res = resolve(state, cases[i].domain);
        print_message("%s: %s %s\n", cases[i].domain, semail_mx_result_enhanced(res),
                      semail_mx_result_text(res));
        assert_int_equal(semail_mx_result_status(res), cases[i].status);
        assert_string_equal(semail_mx_result_enhanced(res), cases[i].enhanced);
        semail_mx_result_free(res);
    }
}

static void test_mx_named__big_answer_comes_over_tcp(void **state)
{
    semail_mx_result *res;
    SKIP_WITHOUT_NAMED();
    res = resolve(state, "big.example.test");
    assert_int_equal(semail_mx_result_status(res), SEMAIL_MX_OK);
    /* Only host 03 of the first ten (preference 10) has an address. */
    assert_int_equal(semail_mx_result_host_count(res), 1);
    assert_string_equal(semail_mx_result_host(res, 0),
                        "host-with-a-rather-long-name-03.example.test");
    semail_mx_result_free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mx_named__orders_and_shuffles_mx_hosts),
        cmocka_unit_test(test_mx_named__implicit_mx_with_ipv6_first),
        cmocka_unit_test(test_mx_named__verdicts),
        cmocka_unit_test(test_mx_named__big_answer_comes_over_tcp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
