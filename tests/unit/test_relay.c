/*
 * test_relay.c - the delivery engine (relay.c, relay_pool.c) against a
 * queue in a temporary directory, a small SMTP server thread on 127.0.0.1
 * whose answers depend on the recipient's local part ("ok..." 250,
 * "bad..." 550, "later..." 450), and a DNS responder on loopback for the
 * verdicts that need one (NXDOMAIN, SERVFAIL, null MX). Domain literals
 * (`[127.0.0.1]`) reach the SMTP server without DNS.
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

#include "semail/dsn.h"
#include "semail/queue.h"
#include "semail/relay.h"

/* ---- an SMTP server answering by local part ----------------------------- */

typedef struct smtp_server {
    int lfd, stop[2];
    unsigned int port;
    pthread_t thread;
    pthread_mutex_t mu;
    unsigned int connections, messages; /* under mu */
    char last_data[8192];               /* under mu */
} smtp_server;

static int read_line(int fd, char *buf, size_t size)
{
    size_t n = 0;
    struct pollfd p = {fd, POLLIN, 0};

    while (n + 1 < size) {
        if (poll(&p, 1, 3000) <= 0 || recv(fd, buf + n, 1, 0) != 1)
            return -1;
        if (buf[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    return (int)n;
}

static void say(int fd, const char *s)
{
    (void)!send(fd, s, strlen(s), MSG_NOSIGNAL);
}

static void serve_data(smtp_server *s, int fd)
{
    char line[1100], data[8192];
    size_t n = 0;

    say(fd, "354 go ahead\r\n");
    while (read_line(fd, line, sizeof(line)) > 0 && strcmp(line, ".\r\n") != 0) {
        size_t l = strlen(line);
        if (n + l < sizeof(data)) {
            memcpy(data + n, line, l);
            n += l;
        }
    }
    data[n] = '\0';
    pthread_mutex_lock(&s->mu);
    s->messages++;
    memcpy(s->last_data, data, n + 1);
    pthread_mutex_unlock(&s->mu);
    say(fd, "250 2.0.0 Ok: queued\r\n");
}

static void serve(smtp_server *s, int fd)
{
    char line[1100];
    int accepted = 0;

    say(fd, "220 test ESMTP\r\n");
    while (read_line(fd, line, sizeof(line)) > 0) {
        if (strncmp(line, "EHLO", 4) == 0)
            say(fd, "250-test\r\n250 ENHANCEDSTATUSCODES\r\n");
        else if (strncmp(line, "MAIL", 4) == 0)
            say(fd, "250 2.1.0 Ok\r\n");
        else if (strncmp(line, "RCPT TO:<ok", 11) == 0 && ++accepted)
            say(fd, "250 2.1.5 Ok\r\n");
        else if (strncmp(line, "RCPT TO:<bad", 12) == 0)
            say(fd, "550 5.1.1 No such user\r\n");
        else if (strncmp(line, "RCPT", 4) == 0)
            say(fd, "450 4.2.1 Try later\r\n");
        else if (strncmp(line, "DATA", 4) == 0 && accepted)
            serve_data(s, fd);
        else if (strncmp(line, "QUIT", 4) == 0) {
            say(fd, "221 2.0.0 Bye\r\n");
            break;
        } else
            say(fd, "503 5.5.1 Bad sequence\r\n");
    }
}

static void *smtp_main(void *arg)
{
    smtp_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{s->lfd, POLLIN, 0}, {s->stop[0], POLLIN, 0}};
        int fd;
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents)
            return NULL;
        if ((fd = accept(s->lfd, NULL, NULL)) < 0)
            continue;
        pthread_mutex_lock(&s->mu);
        s->connections++;
        pthread_mutex_unlock(&s->mu);
        serve(s, fd);
        close(fd);
    }
}

static void smtp_start(smtp_server *s)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);

    memset(s, 0, sizeof(*s));
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->lfd >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(s->lfd, 8), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
    assert_int_equal(pipe(s->stop), 0);
    pthread_mutex_init(&s->mu, NULL);
    assert_int_equal(pthread_create(&s->thread, NULL, smtp_main, s), 0);
}

static void smtp_stop(smtp_server *s)
{
    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    pthread_mutex_destroy(&s->mu);
}

static unsigned int smtp_count(smtp_server *s, unsigned int *messages)
{
    unsigned int c;
    pthread_mutex_lock(&s->mu);
    c = s->connections;
    if (messages)
        *messages = s->messages;
    pthread_mutex_unlock(&s->mu);
    return c;
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static unsigned int dead_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- a DNS responder: one verdict for every question ---------------------- */

typedef enum dns_mode { DNS_NXDOMAIN, DNS_SERVFAIL, DNS_NULL_MX } dns_mode;

typedef struct dns_server {
    int fd, stop[2];
    unsigned int port;
    dns_mode mode;
    pthread_t thread;
} dns_server;

static void dns_answer(dns_server *d)
{
    uint8_t q[512], a[600];
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    ssize_t ql = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
    size_t qe = 12, n;
    static const uint8_t null_mx[] = {0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 1, 44, 0, 3, 0, 0, 0};

    if (ql < 17)
        return;
    while (qe < (size_t)ql && q[qe] != 0)
        qe += (size_t)q[qe] + 1;
    qe += 5;
    if (qe > (size_t)ql)
        return;
    memcpy(a, q, qe);
    n = qe;
    a[2] = 0x81;
    a[3] = 0x80;
    a[6] = a[7] = a[8] = a[9] = a[10] = a[11] = 0;
    if (d->mode == DNS_NXDOMAIN)
        a[3] |= 3;
    else if (d->mode == DNS_SERVFAIL)
        a[3] |= 2;
    else if (q[qe - 3] == 15) { /* MX: the null MX */
        memcpy(a + n, null_mx, sizeof(null_mx));
        n += sizeof(null_mx);
        a[7] = 1;
    }
    sendto(d->fd, a, n, 0, (struct sockaddr *)&from, fl);
}

static void *dns_main(void *arg)
{
    dns_server *d = arg;
    for (;;) {
        struct pollfd p[2] = {{d->fd, POLLIN, 0}, {d->stop[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[1].revents)
            return NULL;
        dns_answer(d);
    }
}

static void dns_start(dns_server *d, dns_mode mode)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);

    memset(d, 0, sizeof(*d));
    d->mode = mode;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(d->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sin, &sl), 0);
    d->port = ntohs(sin.sin_port);
    assert_int_equal(pipe(d->stop), 0);
    assert_int_equal(pthread_create(&d->thread, NULL, dns_main, d), 0);
}

static void dns_stop(dns_server *d)
{
    assert_int_equal(write(d->stop[1], "x", 1), 1);
    pthread_join(d->thread, NULL);
    close(d->fd);
    close(d->stop[0]);
    close(d->stop[1]);
}

/* ---- the fixture: a queue, a resolver, the options ------------------------ */

typedef struct fixture {
    char dir[64];
    semail_queue *q;
    semail_resolver *resolver;
    semail_relay_options o;
    semail_queue_retry retry;
    const char *listen[1];
    char listen_buf[32];
    pthread_mutex_t mu;
    char log[16384];       /* every log line, LF-separated (under mu) */
    unsigned int bounces;  /* bounces handed over */
    char bounce_rcpt[256]; /* the last one's recipient */
    char *bounce_dsn;      /* and its text */
} fixture;

static void log_line(const char *line, void *payload)
{
    fixture *f = payload;
    size_t n;

    pthread_mutex_lock(&f->mu);
    n = strlen(f->log);
    snprintf(f->log + n, sizeof(f->log) - n, "%s\n", line);
    pthread_mutex_unlock(&f->mu);
}

static int capture_bounce(const char *rcpt, const char *dsn, size_t len, const char *qid,
                          char *note, size_t note_size, void *payload)
{
    fixture *f = payload;

    (void)qid;
    f->bounces++;
    snprintf(f->bounce_rcpt, sizeof(f->bounce_rcpt), "%s", rcpt);
    free(f->bounce_dsn);
    f->bounce_dsn = strndup(dsn, len);
    snprintf(note, note_size, "captured");
    return 0;
}

static fixture *fixture_new(unsigned int dns_port, unsigned int remote_port)
{
    fixture *f = calloc(1, sizeof(*f));
    semail_resolver_options ro = SEMAIL_RESOLVER_OPTIONS_INIT;
    char server[32];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/semail-relay-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(semail_queue_open(&f->q, f->dir, NULL), 0);
    snprintf(server, sizeof(server), "127.0.0.1:%u", dns_port ? dns_port : 9);
    ro.server = server;
    ro.timeout_ms = 500;
    ro.attempts = 1;
    assert_int_equal(semail_resolver_new(&f->resolver, &ro), 0);
    pthread_mutex_init(&f->mu, NULL);
    semail_queue_retry_init(&f->retry);
    f->retry.jitter_percent = 0;
    /* Our own listener is elsewhere: port 1 of loopback. */
    snprintf(f->listen_buf, sizeof(f->listen_buf), "127.0.0.1:1");
    f->listen[0] = f->listen_buf;
    semail_relay_options_init(&f->o);
    f->o.hostname = "mx.semail.test";
    f->o.resolver = f->resolver;
    f->o.remote_port = remote_port;
    f->o.listen = f->listen;
    f->o.listen_count = 1;
    f->o.retry = &f->retry;
    f->o.connect_timeout_ms = 2000;
    f->o.command_timeout_ms = 2000;
    f->o.bounce = capture_bounce;
    f->o.bounce_payload = f;
    f->o.log = log_line;
    f->o.log_payload = f;
    return f;
}

static void fixture_free(fixture *f)
{
    char cmd[128];

    semail_queue_free(f->q);
    semail_resolver_free(f->resolver);
    pthread_mutex_destroy(&f->mu);
    free(f->bounce_dsn);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(strncmp(f->dir, "/tmp/semail-relay-", 18), 0);
    (void)!system(cmd);
    free(f);
}

static const char message[] = "From: a@example.org\r\nSubject: test\r\n\r\nHello.\r\n";

static void submit(fixture *f, char *qid, const char *sender, const char *const *rcpts, size_t n)
{
    assert_int_equal(semail_queue_submit(qid, f->q, sender, rcpts, n, message, strlen(message)), 0);
}

/* Deliver QID once; returns semail_relay_deliver()'s result. */
static int deliver_once(fixture *f, const char *qid)
{
    semail_queue_entry *e = NULL;
    int rc;

    assert_int_equal(semail_queue_lock(&e, f->q, qid), 0);
    rc = semail_relay_deliver(&f->o, f->q, e);
    semail_queue_release(e);
    return rc;
}

/* The recorded state of recipient I of QID (the entry must still be queued). */
static semail_queue_rcpt rcpt_state(fixture *f, const char *qid, size_t i, unsigned int *attempts)
{
    semail_queue_entry *e = NULL;
    semail_queue_rcpt r;

    assert_int_equal(semail_queue_lock(&e, f->q, qid), 0);
    r = semail_queue_entry_info(e)->rcpts[i];
    r.address = NULL;
    if (attempts)
        *attempts = semail_queue_entry_info(e)->attempts;
    semail_queue_release(e);
    return r;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_relay__delivers_and_removes_the_entry(void **state)
{
    smtp_server s;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok1@[127.0.0.1]", "ok2@[127.0.0.1]"};
    semail_queue_entry *e = NULL;
    unsigned int messages;

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    submit(f, qid, "alice@example.org", rcpts, 2);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(smtp_count(&s, &messages), 1);
    assert_int_equal(messages, 1);
    assert_non_null(strstr(s.last_data, "Subject: test"));
    assert_int_equal(semail_queue_lock(&e, f->q, qid), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(f->log, "to=<ok1@[127.0.0.1]>, relay=[127.0.0.1][127.0.0.1]:"));
    assert_non_null(strstr(f->log, "status=sent (250 2.0.0 Ok: queued)"));
    assert_non_null(strstr(f->log, ": removed"));
    assert_int_equal(f->bounces, 0);
    fixture_free(f);
    smtp_stop(&s);
}

static void test_relay__records_each_result_and_bounces_only_the_failures(void **state)
{
    smtp_server s;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok@[127.0.0.1]", "bad@[127.0.0.1]", "later@[127.0.0.1]"};
    semail_queue_rcpt r;
    unsigned int attempts;

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    submit(f, qid, "alice@example.org", rcpts, 3);
    assert_int_equal(deliver_once(f, qid), 0);
    r = rcpt_state(f, qid, 0, &attempts);
    assert_int_equal(r.state, SEMAIL_QUEUE_DELIVERED);
    assert_int_equal(attempts, 1);
    r = rcpt_state(f, qid, 1, NULL);
    assert_int_equal(r.state, SEMAIL_QUEUE_FAILED);
    assert_int_equal(r.notified, 1);
    assert_int_equal(r.result.code, 550);
    assert_string_equal(r.result.enhanced, "5.1.1");
    r = rcpt_state(f, qid, 2, NULL);
    assert_int_equal(r.state, SEMAIL_QUEUE_PENDING);
    assert_int_equal(r.result.code, 450);
    assert_int_equal(f->bounces, 1);
    assert_string_equal(f->bounce_rcpt, "alice@example.org");
    assert_non_null(strstr(f->bounce_dsn, "bad@[127.0.0.1]"));
    assert_null(strstr(f->bounce_dsn, "later@"));
    assert_non_null(strstr(f->log, "to=<bad@[127.0.0.1]>"));
    assert_non_null(strstr(f->log, "status=bounced (550 5.1.1 No such user)"));
    assert_non_null(strstr(f->log, "status=deferred (450 4.2.1 Try later)"));
    fixture_free(f);
    smtp_stop(&s);
}

static void test_relay__failed_connection_leaves_recipients_pending(void **state)
{
    fixture *f = fixture_new(0, dead_port());
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok@[127.0.0.1]"};
    semail_queue_rcpt r;
    semail_queue_entry *e = NULL;

    (void)state;
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 0);
    r = rcpt_state(f, qid, 0, NULL);
    assert_int_equal(r.state, SEMAIL_QUEUE_PENDING);
    assert_int_equal(r.result.code, 0);
    assert_int_equal(r.result.enhanced[0], '4');
    assert_non_null(strstr(f->log, ": connect to [127.0.0.1][127.0.0.1]:"));
    assert_non_null(strstr(f->log, "status=deferred"));
    assert_int_equal(f->bounces, 0);
    /* Not due again before the first retry delay (5 minutes by default). */
    assert_int_equal(semail_queue_lock_due(&e, f->q, semail_queue_now_ms(), NULL),
                     SEMAIL_ENOTFOUND);
    fixture_free(f);
}

static void test_relay__never_connects_to_its_own_listener(void **state)
{
    smtp_server s;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok@[127.0.0.1]"};

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    snprintf(f->listen_buf, sizeof(f->listen_buf), "127.0.0.1:%u", s.port);
    submit(f, qid, "alice@example.org", rcpts, 1);
    /* Failed, bounced, removed: the entry is done. */
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(smtp_count(&s, NULL), 0);
    assert_int_equal(f->bounces, 1);
    assert_non_null(strstr(f->bounce_dsn, "5.4.6"));
    assert_non_null(strstr(f->log, "loops back to myself"));
    fixture_free(f);
    smtp_stop(&s);
}

static void test_relay__nxdomain_fails_at_once(void **state)
{
    dns_server d;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"bob@nowhere.test"};

    (void)state;
    dns_start(&d, DNS_NXDOMAIN);
    f = fixture_new(d.port, 25);
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_non_null(strstr(f->log, "to=<bob@nowhere.test>, relay=none"));
    assert_non_null(strstr(f->log, "status=bounced"));
    assert_int_equal(f->bounces, 1);
    assert_non_null(strstr(f->bounce_dsn, "5.1.2"));
    fixture_free(f);
    dns_stop(&d);
}

static void test_relay__null_mx_fails_with_5_1_10(void **state)
{
    dns_server d;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"bob@nullmx.test"};

    (void)state;
    dns_start(&d, DNS_NULL_MX);
    f = fixture_new(d.port, 25);
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_non_null(strstr(f->log, "status=bounced"));
    assert_int_equal(f->bounces, 1);
    assert_non_null(strstr(f->bounce_dsn, "5.1.10"));
    /* The null sender: the entry is removed too, and no bounce is made. */
    submit(f, qid, "", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(f->bounces, 1);
    fixture_free(f);
    dns_stop(&d);
}

static void test_relay__dns_server_failure_is_temporary(void **state)
{
    dns_server d;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"bob@broken.test"};
    semail_queue_rcpt r;

    (void)state;
    dns_start(&d, DNS_SERVFAIL);
    f = fixture_new(d.port, 25);
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 0);
    r = rcpt_state(f, qid, 0, NULL);
    assert_int_equal(r.state, SEMAIL_QUEUE_PENDING);
    assert_string_equal(r.result.enhanced, "4.4.3");
    assert_int_equal(f->bounces, 0);
    fixture_free(f);
    dns_stop(&d);
}

static void test_relay__expired_message_bounces_with_4_4_7_and_leaves(void **state)
{
    fixture *f = fixture_new(0, dead_port());
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok@[127.0.0.1]"};
    struct timespec ts = {0, 20 * 1000000L};

    (void)state;
    f->retry.max_lifetime_ms = 5;
    submit(f, qid, "alice@example.org", rcpts, 1);
    nanosleep(&ts, NULL);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(f->bounces, 1);
    assert_non_null(strstr(f->bounce_dsn, "4.4.7"));
    assert_non_null(strstr(f->log, "delivery time expired"));
    fixture_free(f);
}

static int failing_bounce(const char *rcpt, const char *dsn, size_t len, const char *qid,
                          char *note, size_t note_size, void *payload)
{
    (void)rcpt, (void)dsn, (void)len, (void)qid, (void)note, (void)note_size, (void)payload;
    return SEMAIL_ETEMP;
}

static void test_relay__keeps_the_entry_until_its_bounce_is_handed_over(void **state)
{
    smtp_server s;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"bad@[127.0.0.1]"};
    semail_queue_rcpt r;

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    f->o.bounce = failing_bounce;
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 0);
    r = rcpt_state(f, qid, 0, NULL);
    assert_int_equal(r.state, SEMAIL_QUEUE_FAILED);
    assert_int_equal(r.notified, 0);
    /* Next time the hand-over works: the entry leaves, the server is not asked again. */
    f->o.bounce = capture_bounce;
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(f->bounces, 1);
    assert_int_equal(smtp_count(&s, NULL), 1);
    fixture_free(f);
    smtp_stop(&s);
}

static void test_relay__default_bounce_is_queued_with_the_null_sender(void **state)
{
    smtp_server s;
    fixture *f;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"bad@[127.0.0.1]"};
    semail_queue_entry *e = NULL;

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    f->o.bounce = NULL;
    submit(f, qid, "alice@example.org", rcpts, 1);
    assert_int_equal(deliver_once(f, qid), 1);
    assert_int_equal(semail_queue_lock_due(&e, f->q, semail_queue_now_ms(), NULL), 0);
    assert_string_equal(semail_queue_entry_info(e)->sender, "");
    assert_string_equal(semail_queue_entry_info(e)->rcpts[0].address, "alice@example.org");
    semail_queue_release(e);
    fixture_free(f);
    smtp_stop(&s);
}

static int count_cb(const semail_queue_info *info, void *payload)
{
    (void)info;
    (*(unsigned int *)payload)++;
    return 0;
}

static void test_relay_pool__delivers_new_mail_and_stops(void **state)
{
    smtp_server s;
    fixture *f;
    semail_relay_pool *pool = NULL;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    const char *rcpts[] = {"ok@[127.0.0.1]"};
    unsigned int left = 1, i, messages = 0;
    struct timespec ts = {0, 20 * 1000000L};

    (void)state;
    smtp_start(&s);
    f = fixture_new(0, s.port);
    assert_int_equal(semail_relay_pool_start(&pool, &f->o, f->q, 2), 0);
    submit(f, qid, "alice@example.org", rcpts, 1);
    semail_relay_pool_wakeup(pool);
    for (i = 0; i < 250 && left > 0; i++) {
        nanosleep(&ts, NULL);
        left = 0;
        assert_int_equal(semail_queue_list(f->q, count_cb, &left), 0);
    }
    assert_int_equal(left, 0);
    smtp_count(&s, &messages);
    assert_int_equal(messages, 1);
    assert_int_equal(semail_relay_pool_stop(pool, 5000), 0);
    semail_relay_pool_free(pool);
    fixture_free(f);
    smtp_stop(&s);
}

static void test_relay__refuses_bad_arguments(void **state)
{
    fixture *f = fixture_new(0, 25);
    semail_relay_options o;
    semail_relay_pool *pool = (semail_relay_pool *)1;

    (void)state;
    semail_relay_options_init(&o);
    assert_int_equal(semail_relay_deliver(&o, f->q, NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_relay_pool_start(&pool, &o, f->q, 1), SEMAIL_EINVAL);
    assert_null(pool);
    assert_int_equal(semail_relay_pool_start(&pool, &f->o, f->q, 100000), SEMAIL_EINVAL);
    assert_int_equal(semail_relay_options_init(NULL), SEMAIL_EINVAL);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay__delivers_and_removes_the_entry),
        cmocka_unit_test(test_relay__records_each_result_and_bounces_only_the_failures),
        cmocka_unit_test(test_relay__failed_connection_leaves_recipients_pending),
        cmocka_unit_test(test_relay__never_connects_to_its_own_listener),
        cmocka_unit_test(test_relay__nxdomain_fails_at_once),
        cmocka_unit_test(test_relay__null_mx_fails_with_5_1_10),
        cmocka_unit_test(test_relay__dns_server_failure_is_temporary),
        cmocka_unit_test(test_relay__expired_message_bounces_with_4_4_7_and_leaves),
        cmocka_unit_test(test_relay__keeps_the_entry_until_its_bounce_is_handed_over),
        cmocka_unit_test(test_relay__default_bounce_is_queued_with_the_null_sender),
        cmocka_unit_test(test_relay_pool__delivers_new_mail_and_stops),
        cmocka_unit_test(test_relay__refuses_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
