/*
 * resolver.c - a stub resolver of our own: queries over UDP (TCP when the
 * answer is truncated) to servers given as "host:port" or read from
 * /etc/resolv.conf.
 *
 * Contract: each query gets a fresh random id and a connected UDP socket
 * whose source port the kernel picks at random; an answer is used only if it
 * comes from the server asked (connected socket), carries the query's id and
 * repeats its question exactly; other datagrams are ignored and the wait goes
 * on until the deadline. SERVFAIL, REFUSED, timeouts and malformed answers
 * move on to the next server and then the next round; when every round fails
 * the result is SEMAIL_ETEMP. The resolver object is read-only after _new, so
 * it may be shared between threads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mx_internal.h"

#define RESOLVER_MAX_SERVERS 3
#define RESOLVER_TIMEOUT_MS  5000
#define RESOLVER_ATTEMPTS    2
#define RESOLVER_UDP_BUF     4096
#define RESOLV_CONF          "/etc/resolv.conf"

struct semail_resolver {
    struct sockaddr_storage server[RESOLVER_MAX_SERVERS];
    socklen_t server_len[RESOLVER_MAX_SERVERS];
    char server_text[RESOLVER_MAX_SERVERS][64];
    size_t nservers;
    unsigned int timeout_ms;
    unsigned int attempts;
};

int semail__sockaddr_parse(struct sockaddr_storage *ss, socklen_t *sslen, bool *has_port,
                           const char *text, uint16_t default_port)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL, *h = text;
    size_t hlen;
    unsigned long p = default_port;

    memset(ss, 0, sizeof(*ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return semail__err(SEMAIL_EINVAL, "bad address: %s", text);
        h = text + 1;
        hlen = (size_t)(close - h);
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        const char *colon = strchr(text, ':');
        bool one_colon = colon != NULL && strchr(colon + 1, ':') == NULL;
        hlen = one_colon ? (size_t)(colon - text) : strlen(text);
        port = one_colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= sizeof(host))
        return semail__err(SEMAIL_EINVAL, "bad address: %s", text);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (port != NULL) {
        char *end;
        if (*port < '0' || *port > '9')
            return semail__err(SEMAIL_EINVAL, "bad port in address: %s", text);
        errno = 0;
        p = strtoul(port, &end, 10);
        if (errno != 0 || *end != '\0' || p > 65535)
            return semail__err(SEMAIL_EINVAL, "bad port in address: %s", text);
    }
    if (has_port != NULL)
        *has_port = port != NULL;
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        *sslen = sizeof(*in);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        *sslen = sizeof(*in6);
        return 0;
    }
    return semail__err(SEMAIL_EINVAL, "not an IP address: %s", text);
}

static int add_server(semail_resolver *r, const char *text, uint16_t default_port)
{
    int err;
    size_t i = r->nservers;

    if (i >= RESOLVER_MAX_SERVERS)
        return 0;
    if ((err = semail__sockaddr_parse(&r->server[i], &r->server_len[i], NULL, text, default_port)) <
        0)
        return err;
    if ((err = semail__strlcpy(r->server_text[i], text, sizeof(r->server_text[i]))) < 0)
        return err;
    r->nservers++;
    return 0;
}

/* The nameserver lines of resolv.conf; a scoped or unparsable entry is skipped. */
static int read_resolv_conf(semail_resolver *r, const char *path)
{
    char line[512];
    FILE *f = fopen(path, "re");

    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        return semail__errno(SEMAIL_EIO, errno, "open %s", path);
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *save = NULL, *key = strtok_r(line, " \t\r\n", &save);
        char *value = key ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (key == NULL || value == NULL || strcmp(key, "nameserver") != 0)
            continue;
        if (strchr(value, ':') != NULL && strchr(value, '[') == NULL) {
            char v6[80];
            /* A bare IPv6 address: bracket it so that its colons are not a port. */
            if (semail__fmt(v6, sizeof(v6), "[%s]", value) < 0 || add_server(r, v6, 53) < 0)
                continue;
        } else if (add_server(r, value, 53) < 0) {
            continue;
        }
    }
    fclose(f);
    return 0;
}

int semail_resolver_options_init(semail_resolver_options *opts)
{
    semail_resolver_options def = SEMAIL_RESOLVER_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    *opts = def;
    return 0;
}

int semail_resolver_new(semail_resolver **out, const semail_resolver_options *opts)
{
    semail_resolver_options def = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL resolver pointer");
    *out = NULL;
    if (opts == NULL)
        opts = &def;
    if (opts->version != SEMAIL_RESOLVER_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "unknown resolver options version %u", opts->version);
    if ((r = calloc(1, sizeof(*r))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    r->timeout_ms = opts->timeout_ms ? opts->timeout_ms : RESOLVER_TIMEOUT_MS;
    r->attempts = opts->attempts ? opts->attempts : RESOLVER_ATTEMPTS;
    if (opts->server != NULL && opts->server[0] != '\0')
        err = add_server(r, opts->server, 53);
    else
        err = read_resolv_conf(r, RESOLV_CONF);
    if (err == 0 && r->nservers == 0)
        err = add_server(r, "127.0.0.1", 53); /* what glibc does without nameserver lines */
    if (err < 0) {
        free(r);
        return err;
    }
    *out = r;
    return 0;
}

void semail_resolver_free(semail_resolver *r)
{
    free(r);
}

void semail__dns_answer_free(semail_dns_answer *a)
{
    free(a->data);
    memset(a, 0, sizeof(*a));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for EVENTS on FD until DEADLINE: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {fd, events, 0};
        int64_t left = deadline - now_ms();
        int n;
        if (left <= 0)
            return 0;
        n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n;
        return 1;
    }
}

/* Does the datagram answer our query? Ignored if not (late, stray or spoofed). */
static bool answer_matches(const semail_dns_msg *m, uint16_t id, const semail_dns_name *qname,
                           uint16_t qtype)
{
    return m->id == id && m->qr && m->opcode == 0 && m->qtype == qtype &&
           m->qclass == SEMAIL_DNS_C_IN && semail__dns_name_equal(&m->qname, qname);
}

typedef struct query_ctx {
    const semail_resolver *r;
    size_t server;
    const semail_dns_name *qname;
    uint16_t qtype;
    uint16_t id;
    uint8_t query[SEMAIL_DNS_HEADER_LEN + SEMAIL_DNS_NAME_MAX + 4];
    size_t qlen;
} query_ctx;

/* Check a complete answer (from TCP, or an untruncated UDP one) and keep it. */
static int accept_answer(query_ctx *q, uint8_t *data, size_t len, semail_dns_answer *out)
{
    char why[256];
    if (semail__dns_msg_parse(&out->msg, data, len, false) < 0) {
        free(data);
        (void)snprintf(why, sizeof(why), "%s", semail_error_last());
        return semail__err(SEMAIL_ETEMP, "DNS server %s: malformed answer: %s",
                           q->r->server_text[q->server], why);
    }
    out->data = data;
    out->len = len;
    return 0;
}

/* Read or write exactly N bytes on a non-blocking stream before DEADLINE. */
static int stream_io(int fd, void *buf, size_t n, bool writing, int64_t deadline)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k;
        int w = wait_fd(fd, writing ? POLLOUT : POLLIN, deadline);
        if (w <= 0)
            return w == 0 ? -ETIMEDOUT : -errno;
        k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -ECONNRESET;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int semail__dns_tcp_exchange(const struct sockaddr *sa, socklen_t salen, const char *who,
                             const uint8_t *msg, size_t len, unsigned int timeout_ms, uint8_t **out,
                             size_t *out_len)
{
    int64_t deadline = now_ms() + timeout_ms;
    uint8_t lenbuf[2];
    uint8_t *data = NULL;
    size_t alen;
    int fd, rc, err = 0;
    socklen_t sl = sizeof(err);

    *out = NULL;
    if (len > 65535)
        return semail__err(SEMAIL_ETOOBIG, "DNS message over 65535 bytes");
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return semail__errno(SEMAIL_ETEMP, errno, "DNS over TCP: socket");
    rc = connect(fd, sa, salen);
    if (rc < 0 && errno != EINPROGRESS) {
        rc = -errno;
        goto done;
    }
    if ((rc = wait_fd(fd, POLLOUT, deadline)) <= 0) {
        rc = rc == 0 ? -ETIMEDOUT : -errno;
        goto done;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0 || err != 0) {
        rc = err ? -err : -errno;
        goto done;
    }
    lenbuf[0] = (uint8_t)(len >> 8);
    lenbuf[1] = (uint8_t)len;
    if ((rc = stream_io(fd, lenbuf, 2, true, deadline)) < 0 ||
        (rc = stream_io(fd, (void *)msg, len, true, deadline)) < 0 ||
        (rc = stream_io(fd, lenbuf, 2, false, deadline)) < 0)
        goto done;
    alen = ((size_t)lenbuf[0] << 8) | lenbuf[1];
    if ((data = malloc(alen ? alen : 1)) == NULL) {
        close(fd);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    if ((rc = stream_io(fd, data, alen, false, deadline)) < 0)
        goto done;
    close(fd);
    *out = data;
    *out_len = alen;
    return 0;
done:
    free(data);
    if (fd >= 0)
        close(fd);
    return semail__errno(SEMAIL_ETEMP, -rc, "DNS server %s over TCP", who);
}

static int tcp_exchange(query_ctx *q, semail_dns_answer *out)
{
    const semail_resolver *r = q->r;
    uint8_t *data = NULL;
    size_t alen = 0;
    int err;
    semail_dns_msg m;

    if ((err = semail__dns_tcp_exchange((const struct sockaddr *)&r->server[q->server],
                                        r->server_len[q->server], r->server_text[q->server],
                                        q->query, q->qlen, r->timeout_ms, &data, &alen)) < 0)
        return err;
    if (semail__dns_msg_parse(&m, data, alen, true) < 0 ||
        !answer_matches(&m, q->id, q->qname, q->qtype)) {
        free(data);
        return semail__err(SEMAIL_ETEMP, "DNS server %s: TCP answer does not match the query",
                           r->server_text[q->server]);
    }
    return accept_answer(q, data, alen, out);
}

/* Receive until a matching answer or the deadline; 1: truncated, go to TCP. */
static int udp_receive(query_ctx *q, int fd, int64_t deadline, semail_dns_answer *out)
{
    const char *srv = q->r->server_text[q->server];
    uint8_t *buf = malloc(RESOLVER_UDP_BUF);
    semail_dns_msg m;

    if (buf == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (;;) {
        ssize_t n;
        int w = wait_fd(fd, POLLIN, deadline);
        if (w <= 0) {
            free(buf);
            if (w == 0)
                return semail__err(SEMAIL_ETEMP, "DNS server %s: timeout", srv);
            return semail__errno(SEMAIL_ETEMP, errno, "DNS server %s: poll", srv);
        }
        n = recv(fd, buf, RESOLVER_UDP_BUF, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return semail__errno(SEMAIL_ETEMP, e, "DNS server %s", srv);
        }
        if (semail__dns_msg_parse(&m, buf, (size_t)n, true) < 0 ||
            !answer_matches(&m, q->id, q->qname, q->qtype))
            continue;
        if (m.tc) {
            free(buf);
            return 1;
        }
        return accept_answer(q, buf, (size_t)n, out);
    }
}

static int udp_exchange(query_ctx *q, semail_dns_answer *out)
{
    const semail_resolver *r = q->r;
    int fd, err;

    fd = socket(r->server[q->server].ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return semail__errno(SEMAIL_ETEMP, errno, "DNS: socket");
    if (connect(fd, (const struct sockaddr *)&r->server[q->server], r->server_len[q->server]) < 0 ||
        send(fd, q->query, q->qlen, 0) != (ssize_t)q->qlen) {
        err = semail__errno(SEMAIL_ETEMP, errno, "DNS server %s: send", r->server_text[q->server]);
        close(fd);
        return err;
    }
    err = udp_receive(q, fd, now_ms() + r->timeout_ms, out);
    close(fd);
    if (err == 1)
        err = tcp_exchange(q, out);
    return err;
}

static const char *rcode_name(unsigned int rcode)
{
    static const char *const names[] = {"NOERROR",  "FORMERR", "SERVFAIL",
                                        "NXDOMAIN", "NOTIMP",  "REFUSED"};
    return rcode < SEMAIL_ARRAY_LEN(names) ? names[rcode] : "an error code";
}

int semail__resolver_query(semail_resolver *r, const semail_dns_name *qname, uint16_t qtype,
                           semail_dns_answer *out)
{
    query_ctx q;
    unsigned int attempt;
    int err = semail__err(SEMAIL_ETEMP, "no DNS server");

    memset(out, 0, sizeof(*out));
    memset(&q, 0, sizeof(q));
    q.r = r;
    q.qname = qname;
    q.qtype = qtype;
    for (attempt = 0; attempt < r->attempts; attempt++) {
        for (q.server = 0; q.server < r->nservers; q.server++) {
            q.id = (uint16_t)arc4random_uniform(65536);
            if ((err = semail__dns_query_build(q.query, sizeof(q.query), &q.qlen, q.id, qname,
                                               qtype)) < 0)
                return err;
            err = udp_exchange(&q, out);
            if (err == SEMAIL_ENOMEM)
                return err;
            if (err < 0)
                continue;
            if (out->msg.rcode == SEMAIL_DNS_R_NOERROR || out->msg.rcode == SEMAIL_DNS_R_NXDOMAIN)
                return 0;
            err = semail__err(SEMAIL_ETEMP, "DNS server %s answered %s", r->server_text[q.server],
                              rcode_name(out->msg.rcode));
            semail__dns_answer_free(out);
        }
    }
    return err;
}
