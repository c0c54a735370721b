/*
 * test_server.c - the server runtime (server.h) over real loopback sockets:
 * listen addresses, caps, timeouts, the graceful stop, privileges.
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

#include "semail/semail.h"

/* A running server, its thread, and what its callbacks saw. */
typedef struct fixture {
    semail_server *srv;
    pthread_t thread;
    int run_result;
    pthread_mutex_t mu;
    char log[8192];
    int delivered;
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
    send_str(fd, "HELO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    assert_prefix(read_line(fd, line, sizeof(line)), "250 ");
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
    start(&o);
    fd = connect_to(f);
    assert_prefix(read_line(fd, line, sizeof(line)), "220 ");
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
    assert_logged(f, "commands=20001 messages=0 rejected=0");
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
    send_str(fd, "HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
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
    send_str(fd, "HELO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    read_line(fd, line, sizeof(line));
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
    send_str(fd, "HELO c\r\nMAIL FROM:<a@b.test>\r\n");
    read_line(fd, line, sizeof(line));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
