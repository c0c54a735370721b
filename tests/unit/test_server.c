/*
 * test_server.c - the server runtime (server.h) over real loopback sockets:
 * listen addresses, caps, timeouts, the graceful stop, privileges, TLS
 * listeners (a self-signed pair made with libcrypto, an OpenSSL client in
 * the test thread) and where AUTH is offered.
 * Each test runs a server in a thread on 127.0.0.1, port 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "semail/semail.h"

/* A running server, its thread, and what its callbacks saw. */
typedef struct fixture {
    semail_server *srv;
    pthread_t thread;
    int run_result;
    pthread_mutex_t mu;
    char log[8192];
    int delivered;
    int last_tls;       /* envelope of the last message */
    char last_user[64]; /* its auth_user, "-" for NULL */
} fixture;

static int rcpt_ok(semail_reply *reply, const semail_envelope *env, const semail_address *rcpt,
                   void *payload)
{
    semail_reply_set(reply, 250, "2.1.5", "Ok");
    return 0;
}

static int message_ok(semail_reply *reply, const semail_envelope *env, const char *data, size_t len,
                      void *payload)
{
    fixture *f = payload;
    pthread_mutex_lock(&f->mu);
    f->delivered++;
    f->last_tls = env->tls;
    snprintf(f->last_user, sizeof(f->last_user), "%s", env->auth_user ? env->auth_user : "-");
    pthread_mutex_unlock(&f->mu);
    semail_reply_set(reply, 250, "2.0.0", "Ok: queued as %s", env->txn_id);
    return 0;
}

static void log_line(const char *line, void *payload)
{
    fixture *f = payload;
    size_t n;
    pthread_mutex_lock(&f->mu);
    n = strlen(f->log);
    snprintf(f->log + n, sizeof(f->log) - n, "%s\n", line);
    pthread_mutex_unlock(&f->mu);
}

static void *run_thread(void *arg)
{
    fixture *f = arg;
    f->run_result = semail_server_run(f->srv);
    return NULL;
}

static void options(semail_server_options *o, fixture *f, const char *const *listen)
{
    assert_int_equal(semail_server_options_init(o), 0);
    o->listen = listen;
    o->listen_count = 1;
    o->name = "test";
    o->session.hostname = "mx.test";
    o->session.rcpt = rcpt_ok;
    o->session.message = message_ok;
    o->session.payload = f;
    o->log = log_line;
    o->log_payload = f;
    o->pregreet_ms = 0; /* fast greetings; the pregreet tests set it */
}

static fixture *start(semail_server_options *o)
{
    fixture *f = o->session.payload;
    assert_int_equal(semail_server_new(&f->srv, o), 0);
    assert_int_equal(semail_server_listen(f->srv), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, run_thread, f), 0);
    return f;
}

/* Stop, wait for run() to return, free. */
static void finish(fixture *f)
{
    semail_server_stop(f->srv);
    assert_int_equal(pthread_join(f->thread, NULL), 0);
    assert_int_equal(f->run_result, 0);
    semail_server_free(f->srv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static fixture *new_fixture(void)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    pthread_mutex_init(&f->mu, NULL);
    return f;
}

static int connect_to(const fixture *f)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)semail_server_port(f->srv, 0));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Read one reply line (up to LF) into BUF. */
static const char *read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t r = recv(fd, buf + n, 1, 0);
        if (r <= 0)
            break;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return buf;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void assert_prefix(const char *line, const char *prefix)
{
    if (strncmp(line, prefix, strlen(prefix)) != 0)
        fail_msg("expected '%s...', got '%s'", prefix, line);
}

/* Read the reply to EHLO up to its last line. */
static void skip_ehlo(int fd)
{
    char line[512];

    while (strncmp(read_line(fd, line, sizeof(line)), "250 ", 4) != 0)
        if (strncmp(line, "250-", 4) != 0)
            fail_msg("EHLO reply line '%s'", line);
}

static void assert_logged(fixture *f, const char *what)
{
    int i, found = 0;
    for (i = 0; i < 200 && !found; i++) {
        pthread_mutex_lock(&f->mu);
        found = strstr(f->log, what) != NULL;
        pthread_mutex_unlock(&f->mu);
        if (!found)
            usleep(10000);
    }
    if (!found)
        fail_msg("log has no '%s':\n%s", what, f->log);
}

static int delivered(fixture *f)
{
    int n;
    pthread_mutex_lock(&f->mu);
    n = f->delivered;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static const char *const loopback0[] = {"127.0.0.1:0"};

static void test_server__rejects_malformed_listen_addresses(void **state)
{
    static const char *const bad[] = {
        "",       "127.0.0.1", ":25",          "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:2x",
        "::1:25", "[::1]25",   "[1.2.3.4]:25", "[]:25"};
    semail_server_options o;
    semail_server *srv = NULL;
    fixture *f = new_fixture();
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *one[1] = {bad[i]};
        options(&o, f, one);
        if (semail_server_new(&srv, &o) != SEMAIL_EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_null(srv);
    }
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void test_server__needs_callbacks_and_hostname(void **state)
{
    semail_server_options o;
    semail_server *srv = NULL;
    fixture *f = new_fixture();

    options(&o, f, loopback0);
    o.session.rcpt = NULL;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    options(&o, f, loopback0);
    o.session.hostname = NULL;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void test_server__binds_ipv4_and_ipv6_on_one_port(void **state)
{
    static const char *const two[] = {"127.0.0.1:0", "[::1]:0"};
    semail_server_options o;
    semail_server *srv, *srv6;
    fixture *f = new_fixture();
    char addr[32];
    const char *one[1] = {addr};

    options(&o, f, two);
    o.listen_count = 1;
    assert_int_equal(semail_server_new(&srv, &o), 0);
    assert_int_equal(semail_server_listen(srv), 0);
    assert_true(semail_server_port(srv, 0) > 0);
    assert_int_equal(semail_server_port(srv, 1), 0);
    /* [::1] on the same port: IPv6-only sockets do not collide with IPv4. */
    snprintf(addr, sizeof(addr), "[::1]:%d", semail_server_port(srv, 0));
    options(&o, f, one);
    assert_int_equal(semail_server_new(&srv6, &o), 0);
    if (semail_server_listen(srv6) == 0)
        assert_int_equal(semail_server_port(srv6, 0), semail_server_port(srv, 0));
    semail_server_free(srv6);
    /* The same IPv4 address again fails, naming it. */
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", semail_server_port(srv, 0));
    assert_int_equal(semail_server_new(&srv6, &o), 0);
    assert_int_equal(semail_server_listen(srv6), SEMAIL_EIO);
    assert_non_null(strstr(semail_error_last(), addr));
    semail_server_free(srv6);
    semail_server_free(srv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void test_server__serves_a_transaction_and_logs_the_session(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    send_str(fd, "HELO client.test\r\n"); /* without ESMTP: no pipelining */
    assert_prefix(read_line(fd, line, sizeof(line)), "250 ");
    send_str(fd, "MAIL FROM:<a@b.test>\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.0");
    send_str(fd, "RCPT TO:<c@d.test>\r\nDATA\r\n"); /* 554 */
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.5");
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "554 5.5.1 Error: improper use of SMTP command pipelining\r\n");
    assert_int_equal(recv(fd, line, 1, 0), 0);
    close(fd);
    assert_logged(f, "helo=client.test commands=3 messages=0 rejected=1");
    assert_logged(f, "end=protocol");
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    send_str(fd, "EHLO client.test\r\n");
    skip_ehlo(fd);
    send_str(fd, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.0");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.5");
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    send_str(fd, "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.0.0 Ok: queued as ");
    assert_prefix(read_line(fd, line, sizeof(line)), "221 ");
    close(fd);
    assert_logged(f, "session client=[127.0.0.1]:");
    assert_logged(f, "helo=client.test commands=5 messages=1 rejected=0");
    assert_logged(f, "end=quit");
    assert_int_equal(delivered(f), 1);
    finish(f);
}

/* A writer thread for the pipelining test: many NOOPs, then QUIT. */
static void *flood(void *arg)
{
    int fd = *(int *)arg, i;
    static const char noop[] = "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n";

    for (i = 0; i < 4000; i++)
        if (send(fd, noop, sizeof(noop) - 1, MSG_NOSIGNAL) < 0)
            return NULL;
    (void)!send(fd, "QUIT\r\n", 6, MSG_NOSIGNAL);
    return NULL;
}

static void test_server__answers_deeply_pipelined_input_to_the_end(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512], last[512] = "";
    pthread_t writer;
    int fd, n = 0;

    options(&o, f, loopback0);
    o.session.max_junk_commands = 30000;
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    send_str(fd, "EHLO c\r\n");
    skip_ehlo(fd);
    assert_int_equal(pthread_create(&writer, NULL, flood, &fd), 0);
    /* 20000 replies (more than the session keeps pending), then 221 and the close. */
    while (read_line(fd, line, sizeof(line))[0] != '\0') {
        n++;
        memcpy(last, line, sizeof(line));
    }
    pthread_join(writer, NULL);
    assert_int_equal(n, 20001);
    assert_prefix(last, "221 ");
    close(fd);
    assert_logged(f, "commands=20002 messages=0 rejected=0");
    assert_logged(f, "end=quit");
    finish(f);
}

static void test_server__refuses_over_max_per_client_with_421(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int a, b;

    options(&o, f, loopback0);
    o.max_per_client = 1;
    start(&o);
    a = connect_to(f);
    assert_prefix(read_line(a, line, sizeof(line)), "220 ");
    b = connect_to(f);
    assert_string_equal(read_line(b, line, sizeof(line)),
                        "421 4.7.0 mx.test Too many connections, try again later\r\n");
    assert_int_equal(recv(b, line, 1, 0), 0);
    close(b);
    assert_logged(f, "reason=max_per_client");
    /* The slot is given back when the first session ends. */
    close(a);
    assert_logged(f, "end=eof");
    b = connect_to(f);
    assert_prefix(read_line(b, line, sizeof(line)), "220 ");
    close(b);
    finish(f);
}

static void test_server__refuses_over_max_connections_with_421(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int a, b;

    options(&o, f, loopback0);
    o.max_connections = 1;
    start(&o);
    a = connect_to(f);
    assert_prefix(read_line(a, line, sizeof(line)), "220 ");
    b = connect_to(f);
    assert_prefix(read_line(b, line, sizeof(line)), "421 4.7.0 ");
    close(b);
    assert_logged(f, "reason=max_connections");
    close(a);
    finish(f);
}

static void test_server__closes_an_idle_client_after_the_command_timeout(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    struct timespec t0, t1;
    long ms;
    int fd;

    options(&o, f, loopback0);
    o.timeout_ms = 300;
    start(&o);
    fd = connect_to(f);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "421 4.4.2 mx.test Timeout, closing connection\r\n");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 250 && ms < 3000);
    close(fd);
    assert_logged(f, "end=timeout");
    finish(f);
}

static void test_server__uses_the_data_timeout_inside_data(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.timeout_ms = 5000;
    o.data_timeout_ms = 300;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO c\r\n");
    skip_ehlo(fd);
    send_str(fd, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
    read_line(fd, line, sizeof(line));
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    assert_prefix(read_line(fd, line, sizeof(line)), "421 4.4.2 ");
    close(fd);
    assert_int_equal(delivered(f), 0);
    finish(f);
}

static void test_server__stop_closes_idle_sessions_at_once(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.grace_ms = 5000;
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    send_str(fd, "HELO c\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 ");
    semail_server_stop(f->srv);
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "421 4.3.2 mx.test Service shutting down\r\n");
    close(fd);
    finish(f);
    /* finish() returned: run() waited for the session thread. */
}

static void test_server__stop_lets_a_message_in_data_finish(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.grace_ms = 5000;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO c\r\n");
    skip_ehlo(fd);
    send_str(fd, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
    read_line(fd, line, sizeof(line));
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    send_str(fd, "Subject: x\r\n\r\npart one\r\n");
    semail_server_stop(f->srv);
    usleep(200000);
    send_str(fd, "part two\r\n.\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.0.0 ");
    assert_prefix(read_line(fd, line, sizeof(line)), "421 4.3.2 ");
    close(fd);
    assert_int_equal(delivered(f), 1);
    finish(f);
}

static void test_server__stop_closes_unfinished_sessions_after_the_grace_time(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.grace_ms = 300;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    skip_ehlo(fd);
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.0");
    semail_server_stop(f->srv);
    /* Mid-transaction: not closed at once, but when the grace time is over. */
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "421 4.3.2 mx.test Service shutting down\r\n");
    assert_int_equal(pthread_join(f->thread, NULL), 0);
    assert_int_equal(f->run_result, 0);
    assert_logged(f, "grace time over: closing 1 session(s)");
    close(fd);
    semail_server_free(f->srv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void test_server__stop_before_run_returns_at_once(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();

    options(&o, f, loopback0);
    assert_int_equal(semail_server_new(&f->srv, &o), 0);
    assert_int_equal(semail_server_listen(f->srv), 0);
    semail_server_stop(f->srv);
    assert_int_equal(semail_server_run(f->srv), 0);
    semail_server_free(f->srv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void test_server__privileges_drop_without_a_user_does_nothing(void **state)
{
    uid_t before = geteuid();
    assert_int_equal(semail_privileges_drop(NULL), 0);
    assert_int_equal(semail_privileges_drop(""), 0);
    assert_int_equal(geteuid(), before);
}

static void test_server__privileges_drop_to_an_unknown_user_fails(void **state)
{
    assert_int_equal(semail_privileges_drop("no-such-user-semail-test"), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(semail_error_last(), "no-such-user-semail-test"));
}

/* ---- TLS listeners and AUTH ------------------------------------------------- */

/* A self-signed pair (P-256, CN mx.test) in a fresh directory. */
typedef struct pki {
    char dir[64];
    char cert[96];
    char key[96];
    char other_key[96]; /* a key of another pair */
    char garbage[96];   /* not PEM */
} pki;

static void write_key(const char *path, EVP_PKEY *k)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
}

static void make_pki(pki *p)
{
    EVP_PKEY *k = EVP_EC_gen("P-256"), *k2 = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    FILE *fp;

    assert_non_null(k);
    assert_non_null(k2);
    assert_non_null(x);
    snprintf(p->dir, sizeof(p->dir), "/tmp/semail-tls-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->cert, sizeof(p->cert), "%s/cert.pem", p->dir);
    snprintf(p->key, sizeof(p->key), "%s/key.pem", p->dir);
    snprintf(p->other_key, sizeof(p->other_key), "%s/other.pem", p->dir);
    snprintf(p->garbage, sizeof(p->garbage), "%s/garbage.pem", p->dir);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"mx.test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    fp = fopen(p->cert, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, x), 1);
    fclose(fp);
    write_key(p->key, k);
    write_key(p->other_key, k2);
    fp = fopen(p->garbage, "w");
    assert_non_null(fp);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", fp);
    fclose(fp);
    X509_free(x);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
}

static void remove_pki(const pki *p)
{
    unlink(p->cert);
    unlink(p->key);
    unlink(p->other_key);
    unlink(p->garbage);
    rmdir(p->dir);
}

/* alice/secret only. */
static int auth_alice(semail_reply *reply, const semail_envelope *env, const char *user,
                      const char *pass, void *payload)
{
    if (strcmp(user, "alice") == 0 && strcmp(pass, "secret") == 0)
        semail_reply_set(reply, 235, "2.7.0", "Authentication successful");
    else
        semail_reply_set(reply, 535, "5.7.8", "Authentication credentials invalid");
    return 0;
}

static const char *const tls0[] = {"127.0.0.1:0"};

/* Listener 0 plain, listener 1 TLS, AUTH through auth_alice. */
static void tls_options(semail_server_options *o, fixture *f, const pki *p)
{
    options(o, f, loopback0);
    o->tls_listen = tls0;
    o->tls_listen_count = 1;
    o->tls_cert = p->cert;
    o->tls_key = p->key;
    o->session.auth = auth_alice;
}

static int connect_port(int port)
{
    struct sockaddr_in sa;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* A client context that trusts the test certificate (and checks the name). */
static SSL_CTX *client_ctx(const pki *p)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, p->cert, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

typedef struct tls_client {
    int fd;
    SSL *ssl;
} tls_client;

static void tls_open(tls_client *c, fixture *f, SSL_CTX *ctx)
{
    c->fd = connect_port(semail_server_port(f->srv, 1));
    c->ssl = SSL_new(ctx);
    assert_non_null(c->ssl);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "mx.test");
    assert_int_equal(SSL_set1_host(c->ssl, "mx.test"), 1);
    if (SSL_connect(c->ssl) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof(e));
        fail_msg("TLS handshake failed: %s", e);
    }
    assert_int_equal(SSL_get_verify_result(c->ssl), X509_V_OK);
}

static void tls_close(tls_client *c)
{
    SSL_free(c->ssl);
    close(c->fd);
}

static const char *tls_line(tls_client *c, char *buf, size_t size)
{
    size_t n = 0;
    while (n + 1 < size) {
        if (SSL_read(c->ssl, buf + n, 1) != 1)
            break;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return buf;
}

static void tls_send(tls_client *c, const char *s, size_t len)
{
    size_t done = 0;
    while (done < len) {
        int w = SSL_write(c->ssl, s + done, (int)(len - done));
        assert_true(w > 0);
        done += (size_t)w;
    }
}

static void tls_str(tls_client *c, const char *s)
{
    tls_send(c, s, strlen(s));
}

/* Read the EHLO reply; 1 when it advertises AUTH PLAIN LOGIN. */
static int ehlo_offers_auth(const char *(*next)(void *, char *, size_t), void *conn)
{
    char line[512];
    int auth = 0;

    for (;;) {
        next(conn, line, sizeof(line));
        if (strncmp(line, "250", 3) != 0)
            fail_msg("EHLO reply line '%s'", line);
        if (strcmp(line + 4, "AUTH PLAIN LOGIN\r\n") == 0)
            auth = 1;
        if (line[3] == ' ')
            return auth;
    }
}

static const char *next_tls(void *conn, char *buf, size_t size)
{
    return tls_line(conn, buf, size);
}

static const char *next_plain(void *conn, char *buf, size_t size)
{
    return read_line(*(int *)conn, buf, size);
}

static void test_server__tls_listener_serves_a_session_with_auth(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    tls_client c;
    SSL_CTX *ctx;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    start(&o);
    ctx = client_ctx(&p);
    tls_open(&c, f, ctx);
    assert_true(SSL_version(c.ssl) >= TLS1_2_VERSION);
    assert_string_equal(tls_line(&c, line, sizeof(line)), "220 mx.test ESMTP SEMail\r\n");
    tls_str(&c, "EHLO client.test\r\n");
    assert_true(ehlo_offers_auth(next_tls, &c));
    /* base64("\0alice\0wrong"), then base64("\0alice\0secret") */
    tls_str(&c, "AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    assert_prefix(tls_line(&c, line, sizeof(line)), "535 5.7.8 ");
    tls_str(&c, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
    assert_prefix(tls_line(&c, line, sizeof(line)), "235 2.7.0 ");
    tls_str(&c, "MAIL FROM:<alice@a.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    assert_prefix(tls_line(&c, line, sizeof(line)), "250 2.1.0");
    assert_prefix(tls_line(&c, line, sizeof(line)), "250 2.1.5");
    assert_prefix(tls_line(&c, line, sizeof(line)), "354 ");
    tls_str(&c, "Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    assert_prefix(tls_line(&c, line, sizeof(line)), "250 2.0.0 Ok: queued as ");
    assert_prefix(tls_line(&c, line, sizeof(line)), "221 ");
    /* The server ends with close_notify: a clean TLS end of stream. */
    assert_int_equal(SSL_read(c.ssl, line, 1), 0);
    assert_int_equal(SSL_get_error(c.ssl, 0), SSL_ERROR_ZERO_RETURN);
    tls_close(&c);
    assert_logged(f, "tls=yes helo=client.test commands=7 messages=1 rejected=1");
    assert_logged(f, "end=quit user=alice");
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->last_tls, 1);
    assert_string_equal(f->last_user, "alice");
    pthread_mutex_unlock(&f->mu);
    SSL_CTX_free(ctx);
    finish(f);
    remove_pki(&p);
}

static void test_server__plain_listener_beside_tls_answers_auth_538(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    send_str(fd, "EHLO client.test\r\n");
    assert_false(ehlo_offers_auth(next_plain, &fd));
    send_str(fd, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
                 "DATA\r\nx\r\n.\r\nQUIT\r\n");
    assert_string_equal(
        read_line(fd, line, sizeof(line)),
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.0");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.1.5");
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.0.0");
    assert_prefix(read_line(fd, line, sizeof(line)), "221 ");
    close(fd);
    assert_logged(f, "tls=no helo=client.test");
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->last_tls, 0);
    assert_string_equal(f->last_user, "-");
    pthread_mutex_unlock(&f->mu);
    finish(f);
    remove_pki(&p);
}

static void test_server__auth_plaintext_offers_auth_on_plain_listeners(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.session.auth = auth_alice;
    o.auth_plaintext = 1;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO client.test\r\n");
    assert_true(ehlo_offers_auth(next_plain, &fd));
    send_str(fd, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nQUIT\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "235 2.7.0");
    assert_prefix(read_line(fd, line, sizeof(line)), "221 ");
    close(fd);
    assert_logged(f, "tls=no helo=client.test commands=3 messages=0 rejected=0");
    assert_logged(f, "end=quit user=alice");
    finish(f);
}

static void test_server__without_tls_listeners_auth_is_503(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.session.auth = auth_alice; /* but no TLS listener and no auth_plaintext */
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO client.test\r\n");
    assert_false(ehlo_offers_auth(next_plain, &fd));
    send_str(fd, "AUTH LOGIN\r\n");
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "503 5.5.1 Authentication not enabled\r\n");
    close(fd);
    finish(f);
}

static void test_server__tls_refuses_tls_1_1(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    SSL_CTX *ctx;
    SSL *ssl;
    int fd;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    start(&o);
    /* A client that could do TLS 1.0 and 1.1 only (level 0 allows them here). */
    ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_security_level(ctx, 0);
    assert_int_equal(SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0"), 1);
    assert_int_equal(SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(ctx, TLS1_1_VERSION), 1);
    fd = connect_port(semail_server_port(f->srv, 1));
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_not_equal(SSL_connect(ssl), 1);
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    assert_logged(f, "handshake failed: unsupported protocol\n");
    assert_logged(f, "tls=yes helo=- commands=0 messages=0 rejected=0");
    assert_logged(f, "end=tls");
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_client_that_never_handshakes_is_timed_out(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    struct timespec t0, t1;
    char buf[64];
    long ms;
    int fd;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.timeout_ms = 300;
    start(&o);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_port(semail_server_port(f->srv, 1));
    /* Nothing comes, not even a plain-text 421: then the connection ends. */
    assert_int_equal(recv(fd, buf, sizeof(buf), 0), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 250 && ms < 3000);
    close(fd);
    assert_logged(f, "tls=yes helo=- commands=0");
    assert_logged(f, "end=timeout");
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_client_that_stalls_mid_handshake_is_timed_out(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char buf[4096];
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rb, *wb;
    int fd, n;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.timeout_ms = 400;
    start(&o);
    /* Send a real ClientHello, then never answer the server's flight. */
    ctx = client_ctx(&p);
    ssl = SSL_new(ctx);
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    assert_int_equal(SSL_connect(ssl), -1);
    n = BIO_read(wb, buf, sizeof(buf));
    assert_true(n > 0);
    fd = connect_port(semail_server_port(f->srv, 1));
    assert_int_equal(send(fd, buf, (size_t)n, MSG_NOSIGNAL), n);
    /* The server's flight arrives, then, after the timeout, the end. */
    assert_true(recv(fd, buf, sizeof(buf), 0) > 0);
    while ((n = (int)recv(fd, buf, sizeof(buf), 0)) > 0)
        ;
    assert_int_equal(n, 0);
    close(fd);
    assert_logged(f, "end=timeout");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_client_that_stalls_mid_record_is_timed_out(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    struct timespec t0, t1;
    char line[512], rec[512];
    tls_client c;
    SSL_CTX *ctx;
    BIO *mem;
    int n;
    long ms;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.timeout_ms = 400;
    start(&o);
    ctx = client_ctx(&p);
    tls_open(&c, f, ctx);
    tls_line(&c, line, sizeof(line));
    /* One application-data record, sent but for its last byte. */
    mem = BIO_new(BIO_s_mem());
    assert_non_null(mem);
    SSL_set0_wbio(c.ssl, mem);
    assert_int_equal(SSL_write(c.ssl, "NOOP\r\n", 6), 6);
    n = BIO_read(mem, rec, sizeof(rec));
    assert_true(n > 6);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(send(c.fd, rec, (size_t)n - 1, MSG_NOSIGNAL), n - 1);
    /* The server waits on the socket (no busy loop) and times out. */
    while ((n = (int)recv(c.fd, rec, sizeof(rec), 0)) > 0)
        ;
    assert_int_equal(n, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 350 && ms < 3000);
    assert_logged(f, "end=timeout");
    tls_close(&c);
    SSL_CTX_free(ctx);
    finish(f);
    remove_pki(&p);
}

static void test_server__plain_text_on_the_tls_port_fails_the_handshake(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char buf[64];
    int fd;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    start(&o);
    fd = connect_port(semail_server_port(f->srv, 1));
    send_str(fd, "EHLO client.test\r\n");
    while (recv(fd, buf, sizeof(buf), 0) > 0)
        ; /* perhaps an alert, then the end */
    close(fd);
    assert_logged(f, "tls client=[127.0.0.1]:");
    assert_logged(f, ": handshake failed: wrong version number\n");
    assert_logged(f, "end=tls");
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_carries_pipelined_commands_and_a_large_message(void **state)
{
    static const char noop[] = "NOOP\r\n";
    const size_t nnoop = 5000, body = 400 * 1024;
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512], *big;
    size_t i;
    tls_client c;
    SSL_CTX *ctx;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.thread_stack = 1; /* the smallest stack a TLS session gets */
    o.session.max_junk_commands = nnoop + 1;
    start(&o);
    ctx = client_ctx(&p);
    tls_open(&c, f, ctx);
    tls_line(&c, line, sizeof(line));
    tls_str(&c, "EHLO c\r\n");
    while (strncmp(tls_line(&c, line, sizeof(line)), "250 ", 4) != 0)
        ;
    big = malloc(nnoop * 6 > body ? nnoop * 6 : body);
    assert_non_null(big);
    for (i = 0; i < nnoop; i++)
        memcpy(big + i * 6, noop, 6);
    tls_send(&c, big, nnoop * 6);
    for (i = 0; i < nnoop; i++)
        if (strcmp(tls_line(&c, line, sizeof(line)), "250 2.0.0 Ok\r\n") != 0)
            fail_msg("reply %zu: '%s'", i, line);
    tls_str(&c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    for (i = 0; i < 2; i++)
        tls_line(&c, line, sizeof(line));
    assert_prefix(tls_line(&c, line, sizeof(line)), "354 ");
    for (i = 0; i + 80 <= body; i += 80) {
        memset(big + i, 'x', 78);
        memcpy(big + i + 78, "\r\n", 2);
    }
    tls_send(&c, big, i);
    tls_str(&c, ".\r\nQUIT\r\n");
    assert_prefix(tls_line(&c, line, sizeof(line)), "250 2.0.0 ");
    assert_prefix(tls_line(&c, line, sizeof(line)), "221 ");
    tls_close(&c);
    free(big);
    assert_logged(f, "messages=1 rejected=0");
    assert_logged(f, "end=quit");
    assert_int_equal(delivered(f), 1);
    SSL_CTX_free(ctx);
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_session_is_closed_at_stop(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    tls_client c;
    SSL_CTX *ctx;
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.grace_ms = 5000;
    start(&o);
    ctx = client_ctx(&p);
    tls_open(&c, f, ctx);
    tls_line(&c, line, sizeof(line));
    semail_server_stop(f->srv);
    assert_string_equal(tls_line(&c, line, sizeof(line)),
                        "421 4.3.2 mx.test Service shutting down\r\n");
    tls_close(&c);
    SSL_CTX_free(ctx);
    assert_logged(f, "tls=yes helo=- commands=0 messages=0 rejected=0");
    assert_logged(f, "end=shutdown");
    finish(f);
    remove_pki(&p);
}

static void test_server__tls_listener_port_numbering(void **state)
{
    static const char *const two_tls[] = {"127.0.0.1:0", "127.0.0.1:0"};
    semail_server_options o;
    semail_server *srv;
    fixture *f = new_fixture();
    pki p;

    make_pki(&p);
    tls_options(&o, f, &p);
    o.tls_listen = two_tls;
    o.tls_listen_count = 2;
    assert_int_equal(semail_server_new(&srv, &o), 0);
    assert_int_equal(semail_server_listen(srv), 0);
    assert_true(semail_server_port(srv, 0) > 0);
    assert_true(semail_server_port(srv, 1) > 0);
    assert_true(semail_server_port(srv, 2) > 0);
    assert_int_equal(semail_server_port(srv, 3), 0);
    semail_server_free(srv);
    /* TLS listeners only. */
    o.listen_count = 0;
    assert_int_equal(semail_server_new(&srv, &o), 0);
    semail_server_free(srv);
    o.tls_listen_count = 0;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    pthread_mutex_destroy(&f->mu);
    free(f);
    remove_pki(&p);
}

static void test_server__bad_certificate_or_key_fails_new_naming_the_file(void **state)
{
    semail_server_options o;
    semail_server *srv = NULL;
    fixture *f = new_fixture();
    char missing[128];
    pki p;

    make_pki(&p);
    snprintf(missing, sizeof(missing), "%s/missing.pem", p.dir);
    tls_options(&o, f, &p);
    o.tls_cert = missing;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EIO);
    assert_null(srv);
    assert_non_null(strstr(semail_error_last(), missing));
    assert_non_null(strstr(semail_error_last(), "No such file"));
    o.tls_cert = p.garbage;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), p.garbage));
    o.tls_cert = p.cert;
    o.tls_key = p.garbage;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "not a usable PEM private key"));
    o.tls_key = p.other_key;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "does not match"));
    o.tls_key = p.cert; /* a certificate where the key should be */
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    o.tls_key = NULL;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "need a key"));
    o.tls_key = p.key;
    o.tls_cert = "";
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "need a certificate"));
    /* auth_plaintext without a callback */
    options(&o, f, loopback0);
    o.auth_plaintext = 1;
    assert_int_equal(semail_server_new(&srv, &o), SEMAIL_EINVAL);
    assert_null(srv);
    pthread_mutex_destroy(&f->mu);
    free(f);
    remove_pki(&p);
}

/* ---- abuse seen by the runtime ------------------------------------------- */

static long ms_between(const struct timespec *a, const struct timespec *b)
{
    return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

static void test_server__options_init_turns_the_abuse_limits_on(void **state)
{
    semail_server_options o;
    semail_server_options d = SEMAIL_SERVER_OPTIONS_INIT;

    assert_int_equal(semail_server_options_init(&o), 0);
    assert_int_equal(o.pregreet_ms, SEMAIL_SERVER_PREGREET_MS);
    assert_int_equal(o.min_data_rate, SEMAIL_SERVER_MIN_DATA_RATE);
    assert_int_equal(d.pregreet_ms, SEMAIL_SERVER_PREGREET_MS);
    assert_int_equal(d.min_data_rate, SEMAIL_SERVER_MIN_DATA_RATE);
    assert_true(SEMAIL_SERVER_PREGREET_MS > 0 && SEMAIL_SERVER_PREGREET_MS <= 1000);
}

static void test_server__talking_before_the_greeting_gets_554_and_close(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.pregreet_ms = 400;
    start(&o);
    fd = connect_to(f);
    send_str(fd, "EHLO spam.example\r\n");
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "554 5.5.1 Protocol error: talking before the greeting\r\n");
    assert_int_equal(recv(fd, line, 1, 0), 0); /* and no 220 ever */
    close(fd);
    assert_logged(f, "commands=0 messages=0 rejected=0");
    assert_logged(f, "end=pregreet");
    finish(f);
}

static void test_server__a_client_that_waits_is_greeted_after_the_pregreet_delay(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    struct timespec t0, t1;
    char line[512];
    int fd;

    options(&o, f, loopback0);
    o.pregreet_ms = 300;
    start(&o);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 mx.test ");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(ms_between(&t0, &t1) >= 280 && ms_between(&t0, &t1) < 3000);
    send_str(fd, "QUIT\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "221 ");
    close(fd);
    assert_logged(f, "end=quit");
    /* A client that leaves during the wait is just gone. */
    fd = connect_to(f);
    close(fd);
    assert_logged(f, "end=eof");
    finish(f);
}

static void test_server__pregreet_zero_greets_at_once(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    struct timespec t0, t1;
    char line[512];
    int fd;

    options(&o, f, loopback0); /* pregreet_ms = 0 */
    start(&o);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fd = connect_to(f);
    /* Talking first is then allowed: the greeting comes first anyway. */
    send_str(fd, "EHLO c\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(ms_between(&t0, &t1) < 250);
    skip_ehlo(fd);
    close(fd);
    finish(f);
}

static void test_server__data_slower_than_the_minimum_rate_gets_421(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    int fd, i;

    options(&o, f, loopback0);
    o.min_data_rate = 1000; /* bytes per second */
    o.min_data_rate_grace_ms = 300;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO c\r\n");
    skip_ehlo(fd);
    send_str(fd, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
    read_line(fd, line, sizeof(line));
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    /* 10 bytes every 100 ms: 100 bytes per second, well under 1000. */
    for (i = 0; i < 8; i++) {
        if (send(fd, "xxxxxxxx\r\n", 10, MSG_NOSIGNAL) != 10)
            break;
        usleep(100000);
    }
    assert_string_equal(read_line(fd, line, sizeof(line)),
                        "421 4.4.2 mx.test Minimum data rate not met, closing connection\r\n");
    close(fd);
    assert_logged(f, "end=slow");
    assert_int_equal(delivered(f), 0);
    finish(f);
}

static void test_server__data_at_a_fair_rate_is_delivered(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512], chunk[200];
    int fd, i;

    options(&o, f, loopback0);
    o.min_data_rate = 1000;
    o.min_data_rate_grace_ms = 300;
    start(&o);
    fd = connect_to(f);
    read_line(fd, line, sizeof(line));
    send_str(fd, "EHLO c\r\n");
    skip_ehlo(fd);
    send_str(fd, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
    read_line(fd, line, sizeof(line));
    assert_prefix(read_line(fd, line, sizeof(line)), "354 ");
    /* 200 bytes every 50 ms: 4000 bytes per second, for 0.6 s. */
    memset(chunk, 'y', sizeof(chunk));
    memcpy(chunk + sizeof(chunk) - 2, "\r\n", 2);
    for (i = 0; i < 12; i++) {
        assert_int_equal(send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL), (ssize_t)sizeof(chunk));
        usleep(50000);
    }
    send_str(fd, ".\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 2.0.0 Ok: queued as ");
    close(fd);
    assert_int_equal(delivered(f), 1);
    finish(f);
}

static void test_server__under_stress_the_command_timeout_is_cut(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    struct timespec t0, t1;
    char line[512];
    int fds[4], last, i;

    options(&o, f, loopback0);
    o.max_connections = 5; /* stress from 4 (80%) */
    o.timeout_ms = 20000;
    o.stress_timeout_ms = 300;
    start(&o);
    for (i = 0; i < 3; i++) {
        fds[i] = connect_to(f);
        assert_prefix(read_line(fds[i], line, sizeof(line)), "220 ");
    }
    /* 3 of 5: no stress; the 4th connection makes it. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    last = connect_to(f);
    assert_prefix(read_line(last, line, sizeof(line)), "220 ");
    assert_string_equal(read_line(last, line, sizeof(line)),
                        "421 4.4.2 mx.test Timeout, closing connection\r\n");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(ms_between(&t0, &t1) >= 250 && ms_between(&t0, &t1) < 5000);
    close(last);
    assert_logged(f, "stress: 4 of 5 connections in use: waits cut to 300 ms");
    /* The sessions that were waiting before keep their normal timeout. */
    usleep(100000);
    send_str(fds[0], "NOOP\r\n");
    assert_prefix(read_line(fds[0], line, sizeof(line)), "250 ");
    for (i = 0; i < 3; i++)
        close(fds[i]);
    finish(f);
}

static void test_server__without_stress_the_command_timeout_is_kept(void **state)
{
    semail_server_options o;
    fixture *f = new_fixture();
    char line[512];
    struct pollfd p;
    int fd;

    options(&o, f, loopback0);
    o.max_connections = 5;
    o.timeout_ms = 20000;
    o.stress_timeout_ms = 100;
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
    p.fd = fd;
    p.events = POLLIN;
    assert_int_equal(poll(&p, 1, 600), 0); /* 1 of 5: no 421 after 100 ms */
    send_str(fd, "NOOP\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 ");
    close(fd);
    finish(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server__rejects_malformed_listen_addresses),
        cmocka_unit_test(test_server__needs_callbacks_and_hostname),
        cmocka_unit_test(test_server__binds_ipv4_and_ipv6_on_one_port),
        cmocka_unit_test(test_server__serves_a_transaction_and_logs_the_session),
        cmocka_unit_test(test_server__answers_deeply_pipelined_input_to_the_end),
        cmocka_unit_test(test_server__refuses_over_max_per_client_with_421),
        cmocka_unit_test(test_server__refuses_over_max_connections_with_421),
        cmocka_unit_test(test_server__closes_an_idle_client_after_the_command_timeout),
        cmocka_unit_test(test_server__uses_the_data_timeout_inside_data),
        cmocka_unit_test(test_server__stop_closes_idle_sessions_at_once),
        cmocka_unit_test(test_server__stop_lets_a_message_in_data_finish),
        cmocka_unit_test(test_server__stop_closes_unfinished_sessions_after_the_grace_time),
        cmocka_unit_test(test_server__stop_before_run_returns_at_once),
        cmocka_unit_test(test_server__privileges_drop_without_a_user_does_nothing),
        cmocka_unit_test(test_server__privileges_drop_to_an_unknown_user_fails),
        cmocka_unit_test(test_server__tls_listener_serves_a_session_with_auth),
        cmocka_unit_test(test_server__plain_listener_beside_tls_answers_auth_538),
        cmocka_unit_test(test_server__auth_plaintext_offers_auth_on_plain_listeners),
        cmocka_unit_test(test_server__without_tls_listeners_auth_is_503),
        cmocka_unit_test(test_server__tls_refuses_tls_1_1),
        cmocka_unit_test(test_server__tls_client_that_never_handshakes_is_timed_out),
        cmocka_unit_test(test_server__tls_client_that_stalls_mid_handshake_is_timed_out),
        cmocka_unit_test(test_server__tls_client_that_stalls_mid_record_is_timed_out),
        cmocka_unit_test(test_server__plain_text_on_the_tls_port_fails_the_handshake),
        cmocka_unit_test(test_server__tls_carries_pipelined_commands_and_a_large_message),
        cmocka_unit_test(test_server__tls_session_is_closed_at_stop),
        cmocka_unit_test(test_server__tls_listener_port_numbering),
        cmocka_unit_test(test_server__bad_certificate_or_key_fails_new_naming_the_file),
        cmocka_unit_test(test_server__options_init_turns_the_abuse_limits_on),
        cmocka_unit_test(test_server__talking_before_the_greeting_gets_554_and_close),
        cmocka_unit_test(test_server__a_client_that_waits_is_greeted_after_the_pregreet_delay),
        cmocka_unit_test(test_server__pregreet_zero_greets_at_once),
        cmocka_unit_test(test_server__data_slower_than_the_minimum_rate_gets_421),
        cmocka_unit_test(test_server__data_at_a_fair_rate_is_delivered),
        cmocka_unit_test(test_server__under_stress_the_command_timeout_is_cut),
        cmocka_unit_test(test_server__without_stress_the_command_timeout_is_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
