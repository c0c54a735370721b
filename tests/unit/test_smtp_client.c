/*
 * test_smtp_client.c - semail_client_deliver() against scripted servers.
 *
 * Each test runs a server thread on a loopback socket (127.0.0.1 or ::1)
 * that plays a script, as chasquid's and curl's test servers do: a line
 * the client must send (exactly, CRLF-terminated), then the bytes to
 * answer. A server that answers only after DATA proves pipelining; one
 * that checks the client stays silent before each reply proves lockstep.
 * The reply parser and the connection layer are also tested directly.
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
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "semail/client.h"
#include "smtp_client_internal.h"

/* ---- the scripted server ------------------------------------------------- */

enum {
    QUIET = 1, /* before replying, check the client sends nothing more (lockstep) */
    CLOSE = 2, /* close the connection after the reply */
    HANG = 4   /* after the reply, say nothing and wait for the client to close */
};

typedef struct step {
    const char *expect; /* the line the client must send, without CRLF; NULL: none */
    const char *reply;  /* bytes sent after it; NULL: nothing */
    unsigned int flags;
} step;

#define END                                                                                        \
    {                                                                                              \
        NULL, NULL, 0                                                                              \
    }

typedef struct server {
    int lfd, fd, port, family;
    const step *script;
    pthread_t thread;
    char error[1024];
    char in[8192];
    size_t in_len;
    char rx[65536]; /* everything the client sent */
    size_t rx_len;
} server;

static void srv_fail(server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void srv_fail(server *s, const char *fmt, ...)
{
    va_list ap;
    if (s->error[0] != '\0')
        return;
    va_start(ap, fmt);
    (void)vsnprintf(s->error, sizeof(s->error), fmt, ap);
    va_end(ap);
}

/* Read more bytes within MS; 1 read, 0 end of stream, -1 timeout or error. */
static int srv_fill(server *s, int ms)
{
    struct pollfd p = {s->fd, POLLIN, 0};
    ssize_t n;

    if (poll(&p, 1, ms) <= 0)
        return -1;
    n = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, 0);
    if (n <= 0)
        return n == 0 ? 0 : -1;
    if (s->rx_len + (size_t)n <= sizeof(s->rx)) {
        memcpy(s->rx + s->rx_len, s->in + s->in_len, (size_t)n);
        s->rx_len += (size_t)n;
    }
    s->in_len += (size_t)n;
    return 1;
}

/* Read one CRLF line into LINE; a bare CR or LF is an error. */
static int srv_line(server *s, char *line, size_t size)
{
    for (;;) {
        char *nl = memchr(s->in, '\n', s->in_len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - s->in);
            if (n == 0 || s->in[n - 1] != '\r' || memchr(s->in, '\r', n - 1) != NULL ||
                n - 1 >= size) {
                srv_fail(s, "not a CRLF line: %.*s", (int)n, s->in);
                return -1;
            }
            memcpy(line, s->in, n - 1);
            line[n - 1] = '\0';
            memmove(s->in, nl + 1, s->in_len - n - 1);
            s->in_len -= n + 1;
            return 0;
        }
        if (srv_fill(s, 3000) <= 0) {
            srv_fail(s, "no line from the client");
            return -1;
        }
    }
}

static int srv_step(server *s, const step *st)
{
    char line[2048];
    struct pollfd p = {s->fd, POLLIN, 0};

    if (st->expect != NULL) {
        if (srv_line(s, line, sizeof(line)) < 0)
            return -1;
        if (strcmp(line, st->expect) != 0) {
            srv_fail(s, "expected \"%s\", got \"%s\"", st->expect, line);
            return -1;
        }
    }
    if ((st->flags & QUIET) && (s->in_len > 0 || poll(&p, 1, 150) != 0)) {
        srv_fail(s, "the client did not wait for the reply to \"%s\"", st->expect);
        return -1;
    }
    if (st->reply != NULL && send(s->fd, st->reply, strlen(st->reply), MSG_NOSIGNAL) < 0) {
        srv_fail(s, "send: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void *srv_main(void *arg)
{
    server *s = arg;
    struct pollfd p = {s->lfd, POLLIN, 0};
    const step *st;

    if (poll(&p, 1, 5000) <= 0 || (s->fd = accept(s->lfd, NULL, NULL)) < 0) {
        srv_fail(s, "no connection");
        return NULL;
    }
    for (st = s->script; st->expect != NULL || st->reply != NULL || st->flags != 0; st++) {
        if (srv_step(s, st) < 0 || (st->flags & CLOSE))
            goto done;
        if (st->flags & HANG)
            break;
    }
    /* The script is over: the client must close without sending more. */
    while (srv_fill(s, 3000) > 0)
        ;
    if (s->in_len > 0)
        srv_fail(s, "unexpected bytes after the script: %.*s", (int)s->in_len, s->in);
done:
    close(s->fd);
    return NULL;
}

static void srv_start(server *s, int family, const step *script)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int one = 1;

    memset(s, 0, sizeof(*s));
    memset(&ss, 0, sizeof(ss));
    s->family = family;
    s->script = script;
    s->lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    (void)setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*a);
    }
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&ss, sl), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&ss, &sl), 0);
    s->port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                       : ((struct sockaddr_in *)&ss)->sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_join(server *s)
{
    assert_int_equal(pthread_join(s->thread, NULL), 0);
    close(s->lfd);
    if (s->error[0] != '\0')
        fail_msg("scripted server: %s", s->error);
}

static socklen_t make_addr(struct sockaddr_storage *ss, int family, int port)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons((uint16_t)port);
        return sizeof(*a);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons((uint16_t)port);
    return sizeof(*a);
}

static void test_options(semail_client_options *o)
{
    assert_int_equal(semail_client_options_init(o), 0);
    o->helo_name = "client.test";
    o->connect_timeout_ms = 1000;
    o->greeting_timeout_ms = 2000;
    o->command_timeout_ms = 2000;
    o->data_init_timeout_ms = 2000;
    o->data_timeout_ms = 2000;
    o->data_done_timeout_ms = 2000;
    o->quit_timeout_ms = 1000;
}

/* Run SCRIPT on FAMILY and deliver DATA to RCPTS with options O (NULL: test_options). */
static semail_client_result *run(server *s, int family, const step *script,
                                 const semail_client_options *o, const char *const *rcpts, size_t n,
                                 const char *data)
{
    struct sockaddr_storage ss;
    semail_client_options def;
    semail_client_result *res = NULL;
    socklen_t sl;

    test_options(&def);
    srv_start(s, family, script);
    sl = make_addr(&ss, family, s->port);
    assert_int_equal(semail_client_deliver(&res, o ? o : &def, (struct sockaddr *)&ss, sl,
                                           "a@x.test", rcpts, n, data, strlen(data)),
                     0);
    srv_join(s);
    assert_non_null(res);
    return res;
}

static void assert_status(const semail_client_status *st, semail_client_action action, int code,
                          const char *enhanced, const char *text)
{
    assert_non_null(st);
    assert_int_equal(st->action, action);
    assert_int_equal(st->permanent, action == SEMAIL_CLIENT_FAILED);
    assert_int_equal(st->code, code);
    assert_string_equal(st->enhanced, enhanced);
    if (text != NULL)
        assert_string_equal(st->text, text);
}

#define GREETING                                                                                   \
    {                                                                                              \
        NULL, "220 mx.test ESMTP\r\n", 0                                                           \
    }
#define EHLO_PLAIN                                                                                 \
    {                                                                                              \
        "EHLO client.test", "250-mx.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n", 0        \
    }
#define EHLO_PIPE                                                                                  \
    {                                                                                              \
        "EHLO client.test",                                                                        \
            "250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n", 0      \
    }
#define QUIT                                                                                       \
    {                                                                                              \
        "QUIT", "221 2.0.0 Bye\r\n", 0                                                             \
    }

static const char *const one_rcpt[] = {"b@y.test"};
static const char *const two_rcpts[] = {"b@y.test", "c@y.test"};
static const char *const three_rcpts[] = {"b@y.test", "c@y.test", "d@y.test"};

/* ---- the dialogue -------------------------------------------------------- */

static void test_client__lockstep_without_pipelining(void **state)
{
    static const step script[] = {
        GREETING,
        {"EHLO client.test",
         "250-mx.test greets client.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250-AUTH PLAIN "
         "LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n",
         QUIET},
        {"MAIL FROM:<a@x.test> SIZE=22", "250 2.1.0 Ok\r\n", QUIET},
        {"RCPT TO:<b@y.test>", "250 2.1.5 Ok\r\n", QUIET},
        {"RCPT TO:<c@y.test>", "250 2.1.5 Ok\r\n", QUIET},
        {"DATA", "354 End data with <CR><LF>.<CR><LF>\r\n", QUIET},
        {"Subject: hi", NULL, 0},
        {"", NULL, 0},
        {"hello", NULL, 0},
        {".", "250 2.0.0 Ok: queued as ABC\r\n", QUIET},
        QUIT,
        END};
    semail_client_options o;
    server s;
    semail_client_result *res;

    test_options(&o);
    o.remote_name = "mx1.example.test";
    res = run(&s, AF_INET, script, &o, two_rcpts, 2, "Subject: hi\n\nhello\n");
    assert_int_equal(semail_client_result_rcpt_count(res), 2);
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0",
                  "Ok: queued as ABC");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", NULL);
    assert_string_equal(semail_client_result_rcpt(res, 1)->rcpt, "c@y.test");
    assert_int_equal(semail_client_result_rcpt(res, 0)->stage, SEMAIL_CLIENT_STAGE_DOT);
    assert_null(semail_client_result_rcpt(res, 2));
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", NULL);
    assert_string_equal(semail_client_result_extension(res, "size"), "1000000");
    assert_string_equal(semail_client_result_extension(res, "AUTH"), "PLAIN LOGIN");
    assert_string_equal(semail_client_result_extension(res, "8BITMIME"), "");
    assert_null(semail_client_result_extension(res, "PIPELINING"));
    assert_string_equal(semail_client_result_remote_name(res), "mx1.example.test");
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", s.port);
    assert_string_equal(semail_client_result_remote_addr(res), addr);
    semail_client_result_free(res);
}

static void test_client__falls_back_to_helo_on_ehlo_5xx(void **state)
{
    static const step script[] = {GREETING,
                                  {"EHLO client.test", "502 5.5.1 Command not implemented\r\n", 0},
                                  {"HELO client.test", "250 mx.test\r\n", 0},
                                  {"MAIL FROM:<a@x.test>", "250 Ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 Ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {"x", NULL, 0},
                                  {".", "250 Ok\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    /* No enhanced code in the reply: derived from the class. */
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", "Ok");
    assert_null(semail_client_result_extension(res, "8BITMIME"));
    semail_client_result_free(res);
}

static void test_client__ehlo_4xx_defers_without_helo(void **state)
{
    static const step script[] = {
        GREETING, {"EHLO client.test", "451 4.3.0 busy\r\n", 0}, QUIT, END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 451, "4.3.0", "busy");
    assert_int_equal(semail_client_result_rcpt(res, 0)->stage, SEMAIL_CLIENT_STAGE_HELO);
    semail_client_result_free(res);
}

static void test_client__greeting_5xx_defers_as_class_4(void **state)
{
    static const step script[] = {{NULL, "554 5.7.1 go away\r\n", 0}, QUIT, END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 554, "4.7.1",
                  "go away");
    assert_int_equal(semail_client_result_session(res)->stage, SEMAIL_CLIENT_STAGE_GREETING);
    semail_client_result_free(res);
}

static void test_client__pipelines_mail_rcpts_and_data(void **state)
{
    /* Nothing is answered before DATA: a client waiting for MAIL's reply would time out. */
    static const step script[] = {
        GREETING,
        EHLO_PIPE,
        {"MAIL FROM:<a@x.test>", NULL, 0},
        {"RCPT TO:<b@y.test>", NULL, 0},
        {"RCPT TO:<c@y.test>", NULL, 0},
        {"DATA", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", 0},
        {"body", NULL, 0},
        {".", "250 2.0.0 queued\r\n", 0},
        QUIT,
        END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, two_rcpts, 2, "body\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0",
                  "queued");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0",
                  "queued");
    assert_string_equal(semail_client_result_extension(res, "PIPELINING"), "");
    semail_client_result_free(res);
}

static void test_client__pipeline_groups_respect_pipeline_max(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PIPE,
                                  {"MAIL FROM:<a@x.test>", NULL, 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n250 ok\r\n", QUIET},
                                  {"RCPT TO:<c@y.test>", NULL, 0},
                                  {"RCPT TO:<d@y.test>", "250 ok\r\n550 5.1.1 no\r\n", QUIET},
                                  {"DATA", "354 go\r\n", QUIET},
                                  {".", "250 ok\r\n", 0},
                                  QUIT,
                                  END};
    semail_client_options o;
    server s;
    semail_client_result *res;

    test_options(&o);
    o.pipeline_max = 2;
    res = run(&s, AF_INET, script, &o, three_rcpts, 3, "");
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", "ok");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", "ok");
    assert_status(semail_client_result_rcpt(res, 2), SEMAIL_CLIENT_FAILED, 550, "5.1.1", "no");
    semail_client_result_free(res);
}

static void test_client__reports_each_recipient(void **state)
{
    static const step script[] = {
        GREETING,
        EHLO_PIPE,
        {"MAIL FROM:<a@x.test>", NULL, 0},
        {"RCPT TO:<b@y.test>", NULL, 0},
        {"RCPT TO:<c@y.test>", NULL, 0},
        {"RCPT TO:<d@y.test>", NULL, 0},
        {"DATA",
         "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@y.test>: no such user\r\n"
         "451 4.3.0 try later\r\n354 go\r\n",
         0},
        {"hi", NULL, 0},
        {".", "250 2.0.0 queued as Q1\r\n", 0},
        QUIT,
        END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, three_rcpts, 3, "hi");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0",
                  "queued as Q1");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_FAILED, 550, "5.1.1",
                  "<c@y.test>: no such user");
    assert_int_equal(semail_client_result_rcpt(res, 1)->stage, SEMAIL_CLIENT_STAGE_RCPT);
    assert_status(semail_client_result_rcpt(res, 2), SEMAIL_CLIENT_DEFERRED, 451, "4.3.0",
                  "try later");
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_DELIVERED, 250, "2.0.0", NULL);
    semail_client_result_free(res);
}

static void test_client__no_accepted_recipient_sends_no_data(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "550 5.1.1 no\r\n", 0},
                                  {"RCPT TO:<c@y.test>", "550 5.1.1 no\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, two_rcpts, 2, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 550, "5.1.1", "no");
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_FAILED, 0, "5.0.0",
                  "no recipient accepted");
    semail_client_result_free(res);
}

static void test_client__pipelined_data_refused_without_recipient(void **state)
{
    static const step script[] = {
        GREETING,
        EHLO_PIPE,
        {"MAIL FROM:<a@x.test>", NULL, 0},
        {"RCPT TO:<b@y.test>", NULL, 0},
        {"DATA", "250 ok\r\n450 4.2.1 later\r\n554 5.5.1 no valid recipients\r\n", 0},
        QUIT,
        END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 450, "4.2.1", "later");
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_DEFERRED, 0, "4.0.0", NULL);
    semail_client_result_free(res);
}

static void test_client__mail_5xx_fails_every_recipient(void **state)
{
    /* Pipelined: the RCPT and DATA replies after the refused MAIL are read but decide nothing. */
    static const step script[] = {GREETING,
                                  EHLO_PIPE,
                                  {"MAIL FROM:<a@x.test>", NULL, 0},
                                  {"RCPT TO:<b@y.test>", NULL, 0},
                                  {"RCPT TO:<c@y.test>", NULL, 0},
                                  {"DATA",
                                   "553 5.7.1 sender refused\r\n503 5.5.1 no MAIL\r\n"
                                   "503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n",
                                   0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, two_rcpts, 2, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 553, "5.7.1",
                  "sender refused");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_FAILED, 553, "5.7.1",
                  "sender refused");
    assert_int_equal(semail_client_result_rcpt(res, 1)->stage, SEMAIL_CLIENT_STAGE_MAIL);
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_FAILED, 553, "5.7.1", NULL);
    semail_client_result_free(res);
}

static void test_client__mail_4xx_defers_every_recipient(void **state)
{
    static const step script[] = {
        GREETING, EHLO_PLAIN, {"MAIL FROM:<a@x.test>", "452 4.3.1 disk full\r\n", 0}, QUIT, END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, two_rcpts, 2, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 452, "4.3.1",
                  "disk full");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DEFERRED, 452, "4.3.1", NULL);
    semail_client_result_free(res);
}

static void test_client__refuses_message_over_server_size(void **state)
{
    static const step script[] = {
        GREETING,
        {"EHLO client.test", "250-mx.test\r\n250-SIZE 10\r\n250 PIPELINING\r\n", 0},
        QUIT,
        END};
    server s;
    semail_client_result *res =
        run(&s, AF_INET, script, NULL, two_rcpts, 2, "0123456789\n"); /* 12 octets with CRLF */

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 0, "5.3.4", NULL);
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_FAILED, 0, "5.3.4", NULL);
    assert_non_null(strstr(semail_client_result_rcpt(res, 0)->text, "exceeds the size limit 10"));
    semail_client_result_free(res);
}

static void test_client__sends_size_and_body_8bitmime(void **state)
{
    static const step script[] = {
        GREETING,
        {"EHLO client.test", "250-mx.test\r\n250-SIZE 0\r\n250 8BITMIME\r\n", 0},
        {"MAIL FROM:<a@x.test> SIZE=7 BODY=8BITMIME", "250 ok\r\n", 0},
        {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
        {"DATA", "354 go\r\n", 0},
        {"caf\xc3\xa9", NULL, 0},
        {".", "250 ok\r\n", 0},
        QUIT,
        END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "caf\xc3\xa9\n");

    assert_int_equal(semail_client_result_rcpt(res, 0)->action, SEMAIL_CLIENT_DELIVERED);
    semail_client_result_free(res);
}

static void test_client__dot_stuffs_and_sends_crlf(void **state)
{
    /* LF-only input, a lone ".", "..x", a line of only "." and no final line end. */
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {"..", NULL, 0},
                                  {"...x", NULL, 0},
                                  {"a.b", NULL, 0},
                                  {"..", NULL, 0},
                                  {"last", NULL, 0},
                                  {".", "250 ok\r\n", 0},
                                  QUIT,
                                  END};
    static const char sent[] = "..\r\n...x\r\na.b\r\n..\r\nlast\r\n.\r\n";
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, ".\n..x\na.b\n.\nlast");

    assert_int_equal(semail_client_result_rcpt(res, 0)->action, SEMAIL_CLIENT_DELIVERED);
    assert_non_null(memmem(s.rx, s.rx_len,
                           "DATA\r\n"
                           "..\r\n",
                           10));
    assert_non_null(memmem(s.rx, s.rx_len, sent, sizeof(sent) - 1));
    semail_client_result_free(res);
}

static void test_client__normalizes_crlf_lf_and_lone_cr(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {"a", NULL, 0},
                                  {"b", NULL, 0},
                                  {"c", NULL, 0},
                                  {"", NULL, 0},
                                  {"..d", NULL, 0},
                                  {".", "250 ok\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    /* The server refuses any bare CR or LF: every line must arrive CRLF-terminated. */
    semail_client_result *res =
        run(&s, AF_INET, script, NULL, one_rcpt, 1, "a\r\nb\nc\r\r\n.d\r\n");

    assert_int_equal(semail_client_result_rcpt(res, 0)->action, SEMAIL_CLIENT_DELIVERED);
    semail_client_result_free(res);
}

static void test_client__empty_message_is_just_the_dot(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {".", "250 ok\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "");

    assert_int_equal(semail_client_result_rcpt(res, 0)->action, SEMAIL_CLIENT_DELIVERED);
    semail_client_result_free(res);
}

static void test_client__joins_multiline_replies(void **state)
{
    static const step script[] = {{NULL, "220-mx.test\r\n220-no UCE\r\n220 ready\r\n", 0},
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>",
                                   "550-5.1.1 The account does not exist.\r\n"
                                   "550-5.1.1 Please check\r\n550 5.1.1 the address.\r\n",
                                   0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 550, "5.1.1",
                  "The account does not exist. Please check the address.");
    semail_client_result_free(res);
}

static void test_client__malformed_replies_defer(void **state)
{
    static const char *const bad[] = {
        "25O ok\r\n",           /* not a digit */
        "250-ok\r\n251 ok\r\n", /* the code changes */
        "250_ok\r\n",           /* bad separator */
        "190 ok\r\n",           /* not a 2-5 class */
        "ok\r\n",               /* no code */
        "260 ok\r\n",           /* second digit over 5 */
    };
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        step script[] = {GREETING, EHLO_PLAIN, {"MAIL FROM:<a@x.test>", bad[i], 0}, END};
        server s;
        semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");
        const semail_client_status *st = semail_client_result_rcpt(res, 0);

        assert_status(st, SEMAIL_CLIENT_DEFERRED, 0, "4.5.0", NULL);
        assert_non_null(strstr(st->text, "malformed reply"));
        assert_int_equal(st->stage, SEMAIL_CLIENT_STAGE_MAIL);
        semail_client_result_free(res);
    }
}

static void test_client__overlong_reply_line_defers(void **state)
{
    static char reply[SEMAIL_CLIENT_REPLY_LINE_MAX + 64];
    step script[] = {GREETING, EHLO_PLAIN, {"MAIL FROM:<a@x.test>", reply, 0}, END};
    server s;
    semail_client_result *res;

    memset(reply, 'x', sizeof(reply) - 3);
    memcpy(reply, "250 ", 4);
    memcpy(reply + sizeof(reply) - 3, "\r\n", 3);
    res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 0, "4.5.0", NULL);
    semail_client_result_free(res);
}

static void test_client__421_mid_session_defers_the_undecided(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "550 5.1.1 no\r\n", 0},
                                  {"RCPT TO:<c@y.test>", "421 4.3.2 shutting down\r\n", CLOSE},
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, three_rcpts, 3, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 550, "5.1.1", "no");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DEFERRED, 421, "4.3.2",
                  "shutting down");
    assert_status(semail_client_result_rcpt(res, 2), SEMAIL_CLIENT_DEFERRED, 421, "4.3.2",
                  "shutting down");
    assert_status(semail_client_result_session(res), SEMAIL_CLIENT_DEFERRED, 421, "4.3.2", NULL);
    semail_client_result_free(res);
}

static void test_client__421_in_pipelined_group_defers_all(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PIPE,
                                  {"MAIL FROM:<a@x.test>", NULL, 0},
                                  {"RCPT TO:<b@y.test>", NULL, 0},
                                  {"RCPT TO:<c@y.test>", NULL, 0},
                                  {"DATA", "250 ok\r\n421 4.4.5 too busy\r\n", CLOSE},
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, two_rcpts, 2, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 421, "4.4.5", NULL);
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DEFERRED, 421, "4.4.5", NULL);
    semail_client_result_free(res);
}

static void test_client__silent_server_times_out_as_temporary(void **state)
{
    static const step script[] = {{NULL, NULL, HANG}, END};
    semail_client_options o;
    server s;
    semail_client_result *res;
    uint64_t t0 = semail__client_now_ms();

    test_options(&o);
    o.greeting_timeout_ms = 300;
    res = run(&s, AF_INET, script, &o, two_rcpts, 2, "x\n");
    assert_true(semail__client_now_ms() - t0 < 2500);
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 0, "4.4.2", NULL);
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_DEFERRED, 0, "4.4.2", NULL);
    assert_non_null(strstr(semail_client_result_rcpt(res, 0)->text, "timeout"));
    assert_int_equal(semail_client_result_session(res)->stage, SEMAIL_CLIENT_STAGE_GREETING);
    semail_client_result_free(res);
}

static void test_client__timeout_after_the_dot_defers(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {"x", NULL, 0},
                                  {".", NULL, HANG},
                                  END};
    semail_client_options o;
    server s;
    semail_client_result *res;

    test_options(&o);
    o.data_done_timeout_ms = 300;
    res = run(&s, AF_INET, script, &o, one_rcpt, 1, "x\n");
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 0, "4.4.2", NULL);
    assert_int_equal(semail_client_result_rcpt(res, 0)->stage, SEMAIL_CLIENT_STAGE_DOT);
    semail_client_result_free(res);
}

static void test_client__lost_connection_defers(void **state)
{
    static const step script[] = {GREETING, {"EHLO client.test", NULL, CLOSE}, END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 0, "4.4.2", NULL);
    assert_non_null(strstr(semail_client_result_rcpt(res, 0)->text, "lost connection"));
    semail_client_result_free(res);
}

static void test_client__connection_refused_defers(void **state)
{
    struct sockaddr_storage ss;
    semail_client_options o;
    semail_client_result *res = NULL;
    socklen_t sl;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    /* A port that was just free: bind, read it back, close. */
    sl = make_addr(&ss, AF_INET, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, sl), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    close(fd);
    test_options(&o);
    sl = make_addr(&ss, AF_INET, port);
    assert_int_equal(
        semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, "", one_rcpt, 1, "x", 1), 0);
    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 0, "4.4.1", NULL);
    assert_int_equal(semail_client_result_rcpt(res, 0)->stage, SEMAIL_CLIENT_STAGE_CONNECT);
    assert_non_null(strstr(semail_client_result_rcpt(res, 0)->text, "refused"));
    semail_client_result_free(res);
}

static void test_client__data_554_fails_every_accepted_recipient(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<c@y.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<d@y.test>", "451 4.7.1 greylisted\r\n", 0},
                                  {"DATA", "554 5.7.1 policy\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, three_rcpts, 3, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 554, "5.7.1", "policy");
    assert_status(semail_client_result_rcpt(res, 1), SEMAIL_CLIENT_FAILED, 554, "5.7.1", "policy");
    assert_int_equal(semail_client_result_rcpt(res, 1)->stage, SEMAIL_CLIENT_STAGE_DATA);
    assert_status(semail_client_result_rcpt(res, 2), SEMAIL_CLIENT_DEFERRED, 451, "4.7.1", NULL);
    semail_client_result_free(res);
}

static void test_client__final_dot_4xx_defers(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {"x", NULL, 0},
                                  {".", "452 4.2.2 mailbox full\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, one_rcpt, 1, "x\n");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_DEFERRED, 452, "4.2.2",
                  "mailbox full");
    semail_client_result_free(res);
}

static void test_client__delivers_over_ipv6(void **state)
{
    static const step script[] = {GREETING,
                                  EHLO_PIPE,
                                  {"MAIL FROM:<a@x.test>", NULL, 0},
                                  {"RCPT TO:<b@y.test>", NULL, 0},
                                  {"DATA", "250 ok\r\n250 ok\r\n354 go\r\n", 0},
                                  {"x", NULL, 0},
                                  {".", "250 2.0.0 ok\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    char addr[64];
    semail_client_result *res = run(&s, AF_INET6, script, NULL, one_rcpt, 1, "x\n");

    assert_int_equal(semail_client_result_rcpt(res, 0)->action, SEMAIL_CLIENT_DELIVERED);
    snprintf(addr, sizeof(addr), "[::1]:%d", s.port);
    assert_string_equal(semail_client_result_remote_addr(res), addr);
    assert_string_equal(semail_client_result_remote_name(res), "::1");
    semail_client_result_free(res);
}

static void test_client__bad_recipient_is_never_sent(void **state)
{
    static const char *const rcpts[] = {"bad\r\nRCPT TO:<evil@z.test>", "b@y.test", "<x@y>", ""};
    static const step script[] = {GREETING,
                                  EHLO_PLAIN,
                                  {"MAIL FROM:<a@x.test>", "250 ok\r\n", 0},
                                  {"RCPT TO:<b@y.test>", "250 ok\r\n", 0},
                                  {"DATA", "354 go\r\n", 0},
                                  {".", "250 ok\r\n", 0},
                                  QUIT,
                                  END};
    server s;
    semail_client_result *res = run(&s, AF_INET, script, NULL, rcpts, 4, "");

    assert_status(semail_client_result_rcpt(res, 0), SEMAIL_CLIENT_FAILED, 0, "5.1.3", NULL);
    assert_int_equal(semail_client_result_rcpt(res, 1)->action, SEMAIL_CLIENT_DELIVERED);
    assert_status(semail_client_result_rcpt(res, 2), SEMAIL_CLIENT_FAILED, 0, "5.1.3", NULL);
    assert_status(semail_client_result_rcpt(res, 3), SEMAIL_CLIENT_FAILED, 0, "5.1.3", NULL);
    semail_client_result_free(res);
}

static void test_client__refuses_invalid_arguments(void **state)
{
    struct sockaddr_storage ss;
    semail_client_options o;
    semail_client_result *res = (semail_client_result *)&ss;
    socklen_t sl = make_addr(&ss, AF_INET, 25);
    struct sockaddr_un un = {AF_UNIX, "/tmp/x"};

    test_options(&o);
    assert_int_equal(semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, "a@x\r\nRSET",
                                           one_rcpt, 1, "x", 1),
                     SEMAIL_EINVAL);
    assert_null(res);
    assert_int_equal(
        semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, "a@x", one_rcpt, 0, "x", 1),
        SEMAIL_EINVAL);
    assert_int_equal(
        semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, NULL, one_rcpt, 1, "x", 1),
        SEMAIL_EINVAL);
    assert_int_equal(semail_client_deliver(&res, &o, (struct sockaddr *)&un, sizeof(un), "a@x",
                                           one_rcpt, 1, "x", 1),
                     SEMAIL_EINVAL);
    o.helo_name = "bad name";
    assert_int_equal(
        semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, "a@x", one_rcpt, 1, "x", 1),
        SEMAIL_EINVAL);
    o.version = 99;
    o.helo_name = "ok.test";
    assert_int_equal(
        semail_client_deliver(&res, &o, (struct sockaddr *)&ss, sl, "a@x", one_rcpt, 1, "x", 1),
        SEMAIL_EINVAL);
    assert_null(res);
}

static void test_client__action_names_are_rfc3464_words(void **state)
{
    assert_string_equal(semail_client_action_name(SEMAIL_CLIENT_DELIVERED), "delivered");
    assert_string_equal(semail_client_action_name(SEMAIL_CLIENT_DEFERRED), "delayed");
    assert_string_equal(semail_client_action_name(SEMAIL_CLIENT_FAILED), "failed");
}

/* ---- the reply parser ------------------------------------------------------ */

/* Feed the lines of TEXT (separated by '\n'); returns the last result. */
static int feed(semail__client_reply *r, const char *text)
{
    int ret = 0;
    while (*text != '\0') {
        const char *nl = strchr(text, '\n');
        size_t n = nl ? (size_t)(nl - text) : strlen(text);
        if ((ret = semail__client_reply_line(r, text, n)) != 0)
            return ret;
        text += nl ? n + 1 : n;
    }
    return ret;
}

static void test_client_reply__parses_enhanced_codes(void **state)
{
    semail__client_reply r;

    semail__client_reply_init(&r);
    assert_int_equal(feed(&r, "550 5.1.1 no"), 1);
    assert_string_equal(r.enhanced, "5.1.1");
    assert_string_equal(r.text.data, "no");
    semail__client_reply_reset(&r);
    /* A class that contradicts the code is fixed to the code's. */
    assert_int_equal(feed(&r, "550 4.7.12 odd"), 1);
    assert_string_equal(r.enhanced, "5.7.12");
    semail__client_reply_reset(&r);
    /* Not the pattern: kept as text, the code derived. */
    assert_int_equal(feed(&r, "250 2.0 is fine"), 1);
    assert_string_equal(r.enhanced, "2.0.0");
    assert_string_equal(r.text.data, "2.0 is fine");
    semail__client_reply_reset(&r);
    assert_int_equal(feed(&r, "451 4.1234.1 x"), 1);
    assert_string_equal(r.enhanced, "4.0.0");
    semail__client_reply_reset(&r);
    /* A bare code ends a reply. */
    assert_int_equal(feed(&r, "250-first\n250"), 1);
    assert_string_equal(r.text.data, "first");
    semail__client_reply_free(&r);
}

static void test_client_reply__sanitizes_text(void **state)
{
    semail__client_reply r;

    semail__client_reply_init(&r);
    assert_int_equal(feed(&r, "550 a\tb\x01"
                              "c\xff"),
                     1);
    assert_string_equal(r.text.data, "a b?c?");
    semail__client_reply_free(&r);
}

static void test_client_reply__bounds_lines_and_size(void **state)
{
    char line[SEMAIL_CLIENT_REPLY_LINE_MAX];
    semail__client_reply r;
    int i, ret = 0;

    semail__client_reply_init(&r);
    for (i = 0; i <= SEMAIL_CLIENT_REPLY_LINES_MAX && ret == 0; i++)
        ret = semail__client_reply_line(&r, "250-x", 5);
    assert_int_equal(ret, SEMAIL_EINVAL);
    semail__client_reply_reset(&r);
    memset(line, 'x', sizeof(line));
    memcpy(line, "250-", 4);
    assert_int_equal(semail__client_reply_line(&r, line, sizeof(line) - 1), SEMAIL_EINVAL);
    for (ret = 0, i = 0; i < 100 && ret == 0; i++)
        ret = semail__client_reply_line(&r, line, sizeof(line) - 2);
    assert_int_equal(ret, SEMAIL_EINVAL); /* 64 KiB in all */
    semail__client_reply_free(&r);
}

static void test_client_reply__parses_ehlo_keywords(void **state)
{
    semail__client_reply r;
    semail__client_ehlo e;

    semail__client_reply_init(&r);
    assert_int_equal(feed(&r, "250-mx.test PIPELINING\n250-size 52428800\n250-8BITMIME\n"
                              "250-bad_kw x\n250-pipelining\n250-X-EXT a b\n"
                              "250 ENHANCEDSTATUSCODES"),
                     1);
    assert_int_equal(semail__client_ehlo_parse(&e, &r), 0);
    assert_int_equal(e.flags, CLIENT_EXT_SIZE | CLIENT_EXT_8BITMIME | CLIENT_EXT_PIPELINING |
                                  CLIENT_EXT_ENHANCED);
    assert_int_equal(e.size_max, 52428800);
    assert_int_equal(e.count, 5);
    assert_string_equal(e.keywords[3], "X-EXT");
    assert_string_equal(e.params[3], "a b");
    semail__client_ehlo_free(&e);
    semail__client_reply_reset(&r);
    /* The first line is the server's name, whatever it says. */
    assert_int_equal(feed(&r, "250 mx.test PIPELINING"), 1);
    assert_int_equal(semail__client_ehlo_parse(&e, &r), 0);
    assert_int_equal(e.flags, 0);
    semail__client_ehlo_free(&e);
    semail__client_reply_free(&r);
}

/* ---- the connection layer -------------------------------------------------- */

/* A transport that moves one byte per call and says EAGAIN every other call. */
static ssize_t slow_recv(void *ctx, int fd, void *buf, size_t n, short *want)
{
    int *flip = ctx;
    *want = POLLIN;
    if ((*flip ^= 1) != 0) {
        errno = EAGAIN;
        return -1;
    }
    return recv(fd, buf, 1, 0);
}

static ssize_t slow_send(void *ctx, int fd, const void *buf, size_t n, short *want)
{
    int *flip = ctx;
    *want = POLLOUT;
    if ((*flip ^= 1) != 0) {
        errno = EAGAIN;
        return -1;
    }
    return send(fd, buf, 1, MSG_NOSIGNAL);
}

static void slow_close(void *ctx)
{
}

static void test_client_io__survives_short_transfers_and_eagain(void **state)
{
    int sv[2], flip = 0;
    semail__client_transport tr = {slow_recv, slow_send, slow_close, &flip};
    semail__client_conn c;
    const char *line;
    size_t len;
    char buf[64];
    uint64_t deadline = semail__client_now_ms() + 2000;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    semail__client_conn_init(&c, sv[0], &tr);
    assert_int_equal(semail__client_conn_write(&c, "EHLO a\r\n", 8, deadline), 0);
    assert_int_equal(recv(sv[1], buf, sizeof(buf), 0), 8);
    assert_int_equal(send(sv[1], "250-a\r\n250 b\n", 13, 0), 13);
    assert_int_equal(semail__client_conn_line(&c, &line, &len, deadline), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(line, "250-a", 5);
    assert_int_equal(semail__client_conn_line(&c, &line, &len, deadline), 0);
    assert_memory_equal(line, "250 b", 5); /* a bare LF ends a reply line too */
    assert_int_equal(semail__client_conn_line(&c, &line, &len, semail__client_now_ms() + 100),
                     SEMAIL_ETEMP);
    close(sv[1]);
    assert_int_equal(semail__client_conn_line(&c, &line, &len, deadline), SEMAIL_EIO);
    assert_int_equal(semail__client_conn_write(&c, "x", 1, deadline), SEMAIL_EIO);
    semail__client_conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client__lockstep_without_pipelining),
        cmocka_unit_test(test_client__falls_back_to_helo_on_ehlo_5xx),
        cmocka_unit_test(test_client__ehlo_4xx_defers_without_helo),
        cmocka_unit_test(test_client__greeting_5xx_defers_as_class_4),
        cmocka_unit_test(test_client__pipelines_mail_rcpts_and_data),
        cmocka_unit_test(test_client__pipeline_groups_respect_pipeline_max),
        cmocka_unit_test(test_client__reports_each_recipient),
        cmocka_unit_test(test_client__no_accepted_recipient_sends_no_data),
        cmocka_unit_test(test_client__pipelined_data_refused_without_recipient),
        cmocka_unit_test(test_client__mail_5xx_fails_every_recipient),
        cmocka_unit_test(test_client__mail_4xx_defers_every_recipient),
        cmocka_unit_test(test_client__refuses_message_over_server_size),
        cmocka_unit_test(test_client__sends_size_and_body_8bitmime),
        cmocka_unit_test(test_client__dot_stuffs_and_sends_crlf),
        cmocka_unit_test(test_client__normalizes_crlf_lf_and_lone_cr),
        cmocka_unit_test(test_client__empty_message_is_just_the_dot),
        cmocka_unit_test(test_client__joins_multiline_replies),
        cmocka_unit_test(test_client__malformed_replies_defer),
        cmocka_unit_test(test_client__overlong_reply_line_defers),
        cmocka_unit_test(test_client__421_mid_session_defers_the_undecided),
        cmocka_unit_test(test_client__421_in_pipelined_group_defers_all),
        cmocka_unit_test(test_client__silent_server_times_out_as_temporary),
        cmocka_unit_test(test_client__timeout_after_the_dot_defers),
        cmocka_unit_test(test_client__lost_connection_defers),
        cmocka_unit_test(test_client__connection_refused_defers),
        cmocka_unit_test(test_client__data_554_fails_every_accepted_recipient),
        cmocka_unit_test(test_client__final_dot_4xx_defers),
        cmocka_unit_test(test_client__delivers_over_ipv6),
        cmocka_unit_test(test_client__bad_recipient_is_never_sent),
        cmocka_unit_test(test_client__refuses_invalid_arguments),
        cmocka_unit_test(test_client__action_names_are_rfc3464_words),
        cmocka_unit_test(test_client_reply__parses_enhanced_codes),
        cmocka_unit_test(test_client_reply__sanitizes_text),
        cmocka_unit_test(test_client_reply__bounds_lines_and_size),
        cmocka_unit_test(test_client_reply__parses_ehlo_keywords),
        cmocka_unit_test(test_client_io__survives_short_transfers_and_eagain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
