/*
 * smtp-lat - an SMTP load generator that times every transaction.
 *
 * Contract: S threads share M messages of L bytes; each message goes to
 * one of R recipients uNNN@uNNN.DOMAIN in turn (NNN = message index mod R),
 * with the dialogue smtp-source uses (HELO, MAIL, RCPT, DATA, no
 * pipelining). Without -d a connection carries one message and the time is
 * from connect() to the 250 after the final dot; with -d a session keeps
 * its connection and the time is from MAIL to that 250. Prints one line:
 *   messages N seconds T rate R p50_ms A p99_ms B max_ms C
 * Exit 0 when every message got its 250, 1 otherwise (the first failure is
 * printed on stderr). Bench tool: not part of the product.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct opts {
    struct sockaddr_in addr;
    int sessions, messages, size, rcpts, reuse;
    const char *domain;
    char *body; /* the message, dot-stuffing free, ending in CRLF.CRLF */
    size_t body_len;
} opts;

typedef struct conn {
    int fd;
    char buf[4096];
    size_t len;
} conn;

static opts g;
static atomic_int next_msg;
static atomic_int failed;
static double *lat_ms; /* one per message */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *detail)
{
    if (atomic_fetch_add(&failed, 1) == 0)
        fprintf(stderr, "smtp-lat: %s: %s\n", what, detail);
    return -1;
}

static int send_all(conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return fail("write", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read one reply (all its lines); returns its code or -1. */
static int reply(conn *c)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t line = (size_t)(nl - c->buf) + 1;
            int last = line >= 4 && c->buf[3] == ' ';
            int code = atoi(c->buf);
            memmove(c->buf, c->buf + line, c->len - line);
            c->len -= line;
            if (last || line < 4)
                return code;
            continue;
        }
        if (c->len == sizeof(c->buf))
            return fail("reply", "line too long");
        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return fail("read", r == 0 ? "connection closed" : strerror(errno));
        c->len += (size_t)r;
    }
}

static int command(conn *c, const char *line, int want)
{
    char msg[600];
    int code;

    if (send_all(c, line, strlen(line)) < 0 || (code = reply(c)) < 0)
        return -1;
    if (code / 100 != want / 100) {
        snprintf(msg, sizeof(msg), "%.80s -> %d", line, code);
        return fail("reply", msg);
    }
    return 0;
}

static int open_conn(conn *c)
{
    int one = 1;

    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail("socket", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&g.addr, sizeof(g.addr)) < 0)
        return fail("connect", strerror(errno));
    if (reply(c) != 220)
        return fail("greeting", "not 220");
    return command(c, "HELO bench.example\r\n", 250);
}

static void close_conn(conn *c)
{
    if (c->fd >= 0) {
        (void)command(c, "QUIT\r\n", 221);
        close(c->fd);
    }
    c->fd = -1;
}

static int transaction(conn *c, int i)
{
    char rcpt[300];
    int n = i % g.rcpts;

    snprintf(rcpt, sizeof(rcpt), "RCPT TO:<u%03d@u%03d.%s>\r\n", n, n, g.domain);
    if (command(c, "MAIL FROM:<bench@bench.example>\r\n", 250) < 0 || command(c, rcpt, 250) < 0 ||
        command(c, "DATA\r\n", 354) < 0)
        return -1;
    if (send_all(c, g.body, g.body_len) < 0)
        return -1;
    int code = reply(c);
    if (code != 250)
        return code < 0 ? -1 : fail("end of data", "not 250");
    return 0;
}

static void *session(void *arg)
{
    conn c = {.fd = -1};
    int i;

    (void)arg;
    while (!atomic_load(&failed) && (i = atomic_fetch_add(&next_msg, 1)) < g.messages) {
        double t0 = now_s();
        if (c.fd < 0 && open_conn(&c) < 0)
            break;
        if (g.reuse)
            t0 = now_s();
        if (transaction(&c, i) < 0)
            break;
        lat_ms[i] = (now_s() - t0) * 1000.0;
        if (!g.reuse)
            close_conn(&c);
    }
    close_conn(&c);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void make_body(void)
{
    static const char head[] = "From: bench@bench.example\r\nSubject: bench\r\n\r\n";
    size_t n = (size_t)g.size, i, col = 0;

    g.body = malloc(n + sizeof(head) + 8);
    if (g.body == NULL)
        exit(1);
    memcpy(g.body, head, sizeof(head) - 1);
    g.body_len = sizeof(head) - 1;
    for (i = 0; i < n; i++) {
        if (col == 78) {
            g.body[g.body_len++] = '\r';
            g.body[g.body_len++] = '\n';
            col = 0;
            i++;
            continue;
        }
        g.body[g.body_len++] = (char)('a' + (i % 26));
        col++;
    }
    memcpy(g.body + g.body_len, "\r\n.\r\n", 5);
    g.body_len += 5;
}

static int parse_args(int argc, char **argv)
{
    int o;
    char *colon;

    g.sessions = 1, g.messages = 100, g.size = 1024, g.rcpts = 100, g.domain = "semail.test";
    while ((o = getopt(argc, argv, "s:m:l:r:D:d")) != -1) {
        if (o == 's')
            g.sessions = atoi(optarg);
        else if (o == 'm')
            g.messages = atoi(optarg);
        else if (o == 'l')
            g.size = atoi(optarg);
        else if (o == 'r')
            g.rcpts = atoi(optarg);
        else if (o == 'D')
            g.domain = optarg;
        else if (o == 'd')
            g.reuse = 1;
        else
            return -1;
    }
    if (optind + 1 != argc || g.sessions < 1 || g.messages < 1 || g.size < 0 || g.rcpts < 1 ||
        g.rcpts > 1000 || (colon = strrchr(argv[optind], ':')) == NULL)
        return -1;
    *colon = '\0';
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, argv[optind], &g.addr.sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    pthread_t *th;
    double t0, elapsed;
    int i;

    if (parse_args(argc, argv) < 0) {
        fprintf(stderr, "usage: smtp-lat [-d] -s SESSIONS -m MESSAGES -l BYTES [-r RCPTS] "
                        "[-D DOMAIN] IPV4:PORT\n");
        return 2;
    }
    make_body();
    lat_ms = calloc((size_t)g.messages, sizeof(double));
    th = calloc((size_t)g.sessions, sizeof(*th));
    if (lat_ms == NULL || th == NULL)
        return 1;
    t0 = now_s();
    for (i = 0; i < g.sessions; i++)
        if (pthread_create(&th[i], NULL, session, NULL) != 0)
            return 1;
    for (i = 0; i < g.sessions; i++)
        pthread_join(th[i], NULL);
    elapsed = now_s() - t0;
    if (atomic_load(&failed))
        return 1;
    qsort(lat_ms, (size_t)g.messages, sizeof(double), cmp_double);
    printf("messages %d seconds %.3f rate %.1f p50_ms %.2f p99_ms %.2f max_ms %.2f\n", g.messages,
           elapsed, g.messages / elapsed, lat_ms[g.messages / 2],
           lat_ms[(size_t)((g.messages - 1) * 0.99)], lat_ms[g.messages - 1]);
    return 0;
}
