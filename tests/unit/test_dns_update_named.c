/*
 * test_dns_update_named.c - dynamic updates and MX checks end to end
 * against a real BIND9 that the test starts itself (as nobody when run as
 * root, as test_mx_named.c does) on 127.0.0.1 and a free high port, with a
 * dynamic zone semail.test open to the TSIG key "semail-update". Skipped,
 * with a message, when /usr/sbin/named is not installed (Debian package
 * bind9). The last test stops named.
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

#include "dns_update_internal.h"
#include "mx_internal.h"
#include "semail/dns.h"

#define NAMED TU_NAMED

/* Same name as the server's key, another secret: BADSIG. */
#define WRONG_SECRET "/Hte84/JV1xCKS+T7u+WOxthgJBgy7yQbxwbyQFZbsw="
#define GOOD_SECRET  "nLGuBDoNZJqULfXSPXQlGJ7a82oGZ2i5/3+TrLqVVOg="
/* A key the server knows but its update-policy does not grant: REFUSED. */
#define OTHER_SECRET "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="

static const char ZONE[] = "$TTL 300\n"
                           "@ IN SOA ns.semail.test. hostmaster.semail.test. 1 3600 600 86400 300\n"
                           "@ IN NS ns.semail.test.\n"
                           "ns IN A 127.0.0.1\n"
                           "mx IN A 127.0.0.1\n"
                           "here IN MX 10 mx.semail.test.\n"
                           "byaddr IN MX 10 mail.byaddr.semail.test.\n"
                           "mail.byaddr IN A 127.0.0.1\n"
                           "elsewhere IN MX 10 mail.elsewhere.semail.test.\n"
                           "elsewhere IN MX 20 mx.semail.test.\n"
                           "mail.elsewhere IN A 192.0.2.1\n"
                           "noimplicit IN A 127.0.0.1\n"
                           "nullmx IN MX 0 .\n";

typedef struct named {
    char dir[64];
    char key[256], wrong_key[256], other_key[256];
    char server[32];
    pid_t pid;
    uint16_t port;
    semail_resolver *r;
} named;

static void write_file(const char *dir, const char *name, const char *text, char *path_out,
                       size_t size)
{
    char path[256];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_non_null(f = fopen(path, "w"));
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    if (path_out != NULL)
        snprintf(path_out, size, "%s", path);
}

static void write_key(const named *n, const char *file, const char *name, const char *secret,
                      char *path, size_t size)
{
    char text[256];
    snprintf(text, sizeof(text), "key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n",
             name, secret);
    write_file(n->dir, file, text, path, size);
}

static bool named_ready(semail_resolver *r)
{
    semail_dns_name name;
    semail_dns_answer ans;
    bool ok;
    assert_int_equal(semail__dns_name_from_text(&name, "semail.test"), 0);
    if (semail__resolver_query(r, &name, SEMAIL_DNS_T_SOA, &ans) < 0)
        return false;
    ok = ans.msg.rcode == SEMAIL_DNS_R_NOERROR && ans.msg.ancount == 1;
    semail__dns_answer_free(&ans);
    return ok;
}

static int chown_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    struct passwd *pw = getpwnam("nobody");
    return pw != NULL ? chown(path, pw->pw_uid, pw->pw_gid) : -1;
}

static void write_config(named *n)
{
    char conf[2048];
    snprintf(conf, sizeof(conf),
             "include \"%s\";\ninclude \"%s\";\n"
             "options { directory \"%s\"; pid-file \"%s/named.pid\";\n"
             "  session-keyfile \"%s/session.key\"; managed-keys-directory \"%s\";\n"
             "  listen-on port %u { 127.0.0.1; }; listen-on-v6 { none; };\n"
             "  recursion no; dnssec-validation no; notify no; allow-query { any; }; };\n"
             "controls { };\n"
             "zone \"semail.test\" { type primary; file \"%s/semail.test.zone\";\n"
             "  update-policy { grant semail-update zonesub ANY; }; };\n",
             n->key, n->other_key, n->dir, n->dir, n->dir, n->dir, n->port, n->dir);
    write_file(n->dir, "named.conf", conf, NULL, 0);
    write_file(n->dir, "semail.test.zone", ZONE, NULL, 0);
}

static int setup(void **state)
{
    static named n;
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    int i;

    memset(&n, 0, sizeof(n));
    if (access(NAMED, X_OK) != 0) {
        print_message("SKIP: %s not installed (Debian package bind9)\n", NAMED);
        *state = NULL;
        return 0;
    }
    snprintf(n.dir, sizeof(n.dir), "/tmp/semail-dnsupd-XXXXXX");
    assert_non_null(mkdtemp(n.dir));
    assert_true((n.port = tu_free_port()) != 0);
    write_key(&n, "tsig.key", "semail-update", GOOD_SECRET, n.key, sizeof(n.key));
    write_key(&n, "wrong.key", "semail-update", WRONG_SECRET, n.wrong_key, sizeof(n.wrong_key));
    write_key(&n, "other.key", "other-key", OTHER_SECRET, n.other_key, sizeof(n.other_key));
    write_config(&n);
    if (getuid() == 0)
        assert_int_equal(nftw(n.dir, chown_entry, 8, FTW_PHYS), 0);
    assert_true((n.pid = fork()) >= 0);
    if (n.pid == 0)
        tu_exec_named(n.dir);
    snprintf(n.server, sizeof(n.server), "127.0.0.1:%u", n.port);
    o.server = n.server;
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

static void stop_named(named *n)
{
    if (n->pid > 0) {
        kill(n->pid, SIGTERM);
        waitpid(n->pid, NULL, 0);
        n->pid = 0;
    }
}

static int teardown(void **state)
{
    named *n = *state;
    if (n == NULL)
        return 0;
    semail_resolver_free(n->r);
    stop_named(n);
    nftw(n->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

#define SKIP_WITHOUT_NAMED()                                                                       \
    do {                                                                                           \
        if (*state == NULL)                                                                        \
            skip();                                                                                \
    } while (0)

static semail_dns_updater *updater(const named *n, const char *server, const char *key,
                                   const char *zone, unsigned int timeout_ms)
{
    semail_dns_updater_options o;
    semail_dns_updater *u = NULL;
    assert_int_equal(semail_dns_updater_options_init(&o), 0);
    o.server = server;
    o.zone = zone;
    o.tsig_key = key;
    o.timeout_ms = timeout_ms;
    if (semail_dns_updater_new(&u, &o) < 0)
        fail_msg("semail_dns_updater_new: %s", semail_error_last());
    return u;
}

/* RCODE of the answer to NAME/TYPE, and the number of records of TYPE in it. */
static unsigned int query(const named *n, const char *name, uint16_t type, size_t *count,
                          semail_dns_answer *keep)
{
    semail_dns_name qn;
    semail_dns_answer ans;
    semail_dns_rr rr;
    size_t off, i;
    unsigned int rcode;

    assert_int_equal(semail__dns_name_from_text(&qn, name), 0);
    assert_int_equal(semail__resolver_query(n->r, &qn, type, &ans), 0);
    rcode = ans.msg.rcode;
    *count = 0;
    off = ans.msg.an_off;
    for (i = 0; i < ans.msg.ancount; i++) {
        assert_int_equal(semail__dns_rr_read(&ans.msg, &off, &rr), 0);
        if (rr.type == type)
            (*count)++;
    }
    if (keep != NULL)
        *keep = ans;
    else
        semail__dns_answer_free(&ans);
    return rcode;
}

static void assert_mail_records(const named *n, const char *name, const char *mx, const char *spf)
{
    semail_dns_answer ans;
    semail_dns_rr rr;
    semail_dns_name host;
    char text[SEMAIL_DNS_TEXT_MAX];
    uint16_t pref;
    size_t count, off;

    assert_int_equal(query(n, name, SEMAIL_DNS_T_MX, &count, &ans), SEMAIL_DNS_R_NOERROR);
    assert_int_equal(count, 1);
    off = ans.msg.an_off;
    assert_int_equal(semail__dns_rr_read(&ans.msg, &off, &rr), 0);
    assert_int_equal(semail__dns_rr_mx(&ans.msg, &rr, &pref, &host), 0);
    assert_int_equal(semail__dns_name_to_text(text, sizeof(text), &host), 0);
    assert_string_equal(text, mx);
    assert_int_equal(pref, SEMAIL_DNS_MX_PREFERENCE);
    assert_int_equal(rr.ttl, 300);
    semail__dns_answer_free(&ans);

    assert_int_equal(query(n, name, SEMAIL_DNS_T_TXT, &count, &ans), SEMAIL_DNS_R_NOERROR);
    assert_int_equal(count, 1);
    off = ans.msg.an_off;
    assert_int_equal(semail__dns_rr_read(&ans.msg, &off, &rr), 0);
    assert_int_equal(rr.rdlen, strlen(spf) + 1);
    assert_int_equal(ans.data[rr.rdoff], strlen(spf));
    assert_memory_equal(ans.data + rr.rdoff + 1, spf, strlen(spf));
    semail__dns_answer_free(&ans);
}

static void test_dns_update_named__add_refuse_remove_remove(void **state)
{
    named *n = *state;
    semail_dns_updater *u;
    size_t count;
    SKIP_WITHOUT_NAMED();
    u = updater(n, n->server, n->key, "semail.test", 2000);

    assert_int_equal(query(n, "alice.semail.test", SEMAIL_DNS_T_MX, &count, NULL),
                     SEMAIL_DNS_R_NXDOMAIN);
    if (semail_dns_add_mail_records(u, "alice.semail.test", "mx.semail.test", "v=spf1 mx -all", 0) <
        0)
        fail_msg("add: %s", semail_error_last());
    assert_mail_records(n, "alice.semail.test", "mx.semail.test", "v=spf1 mx -all");

    assert_int_equal(
        semail_dns_add_mail_records(u, "alice.semail.test", "other.example.org", "v=spf1 -all", 60),
        SEMAIL_EEXISTS);
    print_message("again: %s\n", semail_error_last());
    assert_non_null(strstr(semail_error_last(), "alice.semail.test is already in use"));
    assert_mail_records(n, "alice.semail.test", "mx.semail.test", "v=spf1 mx -all");

    assert_int_equal(semail_dns_remove_name_records(u, "alice.semail.test."), 0);
    assert_int_equal(query(n, "alice.semail.test", SEMAIL_DNS_T_MX, &count, NULL),
                     SEMAIL_DNS_R_NXDOMAIN);
    assert_int_equal(semail_dns_remove_name_records(u, "alice.semail.test"), 0);
    /* The name is free again. */
    assert_int_equal(semail_dns_add_mail_records(u, "alice.semail.test", "mx.semail.test", NULL, 0),
                     0);
    assert_int_equal(query(n, "alice.semail.test", SEMAIL_DNS_T_TXT, &count, NULL),
                     SEMAIL_DNS_R_NOERROR);
    assert_int_equal(count, 0);
    assert_int_equal(semail_dns_remove_name_records(u, "alice.semail.test"), 0);
    semail_dns_updater_free(u);
}

static void test_dns_update_named__name_with_other_records_is_in_use(void **state)
{
    named *n = *state;
    semail_dns_updater *u;
    size_t count;
    SKIP_WITHOUT_NAMED();
    u = updater(n, n->server, n->key, "semail.test", 2000);
    assert_int_equal(
        semail_dns_add_mail_records(u, "ns.semail.test", "mx.semail.test", "v=spf1 mx -all", 0),
        SEMAIL_EEXISTS);
    /* Removing takes only MX and TXT: the A record stays. */
    assert_int_equal(semail_dns_remove_name_records(u, "ns.semail.test"), 0);
    assert_int_equal(query(n, "ns.semail.test", SEMAIL_DNS_T_A, &count, NULL),
                     SEMAIL_DNS_R_NOERROR);
    assert_int_equal(count, 1);
    semail_dns_updater_free(u);
}

static void test_dns_update_named__bad_names_send_nothing(void **state)
{
    named *n = *state;
    semail_dns_updater *u;
    SKIP_WITHOUT_NAMED();
    /* A server that does not exist: a check that let a name through would say ETEMP. */
    u = updater(n, "127.0.0.1:1", n->key, "semail.test", 2000);
    assert_int_equal(semail_dns_add_mail_records(u, "Alice.semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_EINVAL);
    assert_int_equal(semail_dns_add_mail_records(u, "semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_EINVAL);
    assert_int_equal(semail_dns_remove_name_records(u, "semail.test"), SEMAIL_EINVAL);
    assert_int_equal(semail_dns_add_mail_records(u, "x.example.org", "mx.semail.test", NULL, 0),
                     SEMAIL_EINVAL);
    assert_int_equal(semail_dns_add_mail_records(u, "x.semail.test", "mx_1.semail.test", NULL, 0),
                     SEMAIL_EINVAL);
    assert_int_equal(
        semail_dns_add_mail_records(u, "x.semail.test", "mx.semail.test", "v=spf1\n-all", 0),
        SEMAIL_EINVAL);
    assert_int_equal(
        semail_dns_add_mail_records(u, "x.semail.test", "mx.semail.test", NULL, 0x80000000u),
        SEMAIL_EINVAL);
    print_message("%s\n", semail_error_last());
    semail_dns_updater_free(u);
}

static void test_dns_update_named__refusals_are_eperm(void **state)
{
    named *n = *state;
    semail_dns_updater *u;
    size_t count;
    SKIP_WITHOUT_NAMED();

    u = updater(n, n->server, n->wrong_key, "semail.test", 2000);
    assert_int_equal(semail_dns_add_mail_records(u, "bob.semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_EPERM);
    print_message("wrong secret: %s\n", semail_error_last());
    assert_non_null(strstr(semail_error_last(), "BADSIG"));
    semail_dns_updater_free(u);

    u = updater(n, n->server, n->other_key, "semail.test", 2000);
    assert_int_equal(semail_dns_add_mail_records(u, "bob.semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_EPERM);
    print_message("key not granted: %s\n", semail_error_last());
    assert_non_null(strstr(semail_error_last(), "REFUSED"));
    semail_dns_updater_free(u);

    u = updater(n, n->server, n->key, "other.test", 2000);
    assert_int_equal(semail_dns_add_mail_records(u, "bob.other.test", "mx.semail.test", NULL, 0),
                     SEMAIL_EPERM);
    print_message("zone not served: %s\n", semail_error_last());
    semail_dns_updater_free(u);

    assert_int_equal(query(n, "bob.semail.test", SEMAIL_DNS_T_MX, &count, NULL),
                     SEMAIL_DNS_R_NXDOMAIN);
}

static void check(const named *n, const char *domain, semail_dns_mx_verdict want)
{
    semail_dns_mx_check c;
    assert_int_equal(semail_dns_check_mx(&c, n->r, domain, "MX.semail.test."), 0);
    print_message("%s: %d %s\n", domain, c.verdict, c.text);
    assert_int_equal(c.verdict, want);
    assert_non_null(strstr(c.text, domain));
}

static void test_dns_update_named__check_mx(void **state)
{
    named *n = *state;
    semail_dns_mx_check c;
    SKIP_WITHOUT_NAMED();
    check(n, "here.semail.test", SEMAIL_DNS_MX_HERE);
    check(n, "byaddr.semail.test", SEMAIL_DNS_MX_HERE);
    check(n, "elsewhere.semail.test", SEMAIL_DNS_MX_ELSEWHERE);
    check(n, "nosuch.semail.test", SEMAIL_DNS_MX_NONE);
    check(n, "noimplicit.semail.test", SEMAIL_DNS_MX_NONE);
    check(n, "nullmx.semail.test", SEMAIL_DNS_MX_NONE);
    check(n, "example.org", SEMAIL_DNS_MX_UNKNOWN); /* REFUSED: not a verdict */
    assert_int_equal(semail_dns_check_mx(&c, n->r, "bad domain", "mx.semail.test"), SEMAIL_EINVAL);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_dns_update_named__silent_server_times_out(void **state)
{
    named *n = *state;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    char server[32];
    semail_dns_updater *u;
    int64_t t0, ms;
    int fd;
    SKIP_WITHOUT_NAMED();

    /* A listener that never accepts: the kernel completes the handshake. */
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true((fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 4), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    snprintf(server, sizeof(server), "127.0.0.1:%u", ntohs(sin.sin_port));
    u = updater(n, server, n->key, "semail.test", 300);
    t0 = now_ms();
    assert_int_equal(semail_dns_add_mail_records(u, "carol.semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_ETEMP);
    ms = now_ms() - t0;
    print_message("silent server: %s (%lld ms)\n", semail_error_last(), (long long)ms);
    assert_true(ms >= 250 && ms < 1500);
    close(fd);
    semail_dns_updater_free(u);
}

/* Last: stops named. */
static void test_dns_update_named__stopped_server_is_etemp(void **state)
{
    named *n = *state;
    semail_dns_updater *u;
    int64_t t0;
    SKIP_WITHOUT_NAMED();
    u = updater(n, n->server, n->key, "semail.test", 1000);
    stop_named(n);
    t0 = now_ms();
    assert_int_equal(semail_dns_add_mail_records(u, "dave.semail.test", "mx.semail.test", NULL, 0),
                     SEMAIL_ETEMP);
    print_message("stopped: %s\n", semail_error_last());
    assert_true(now_ms() - t0 < 1500);
    assert_int_equal(semail_dns_remove_name_records(u, "dave.semail.test"), SEMAIL_ETEMP);
    semail_dns_updater_free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_update_named__add_refuse_remove_remove),
        cmocka_unit_test(test_dns_update_named__name_with_other_records_is_in_use),
        cmocka_unit_test(test_dns_update_named__bad_names_send_nothing),
        cmocka_unit_test(test_dns_update_named__refusals_are_eperm),
        cmocka_unit_test(test_dns_update_named__check_mx),
        cmocka_unit_test(test_dns_update_named__silent_server_times_out),
        cmocka_unit_test(test_dns_update_named__stopped_server_is_etemp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
