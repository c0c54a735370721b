/*
 * smtp_client_io.c - the SMTP client's connection layer: non-blocking
 * connect with a timeout, line reads and full writes bounded by deadlines.
 *
 * Contract: no call blocks past its deadline (poll(2) on a non-blocking
 * socket, restarted on EINTR with the time left); no write raises SIGPIPE;
 * a line longer than SEMAIL_CLIENT_REPLY_LINE_MAX is an error, never a
 * bigger buffer. Bytes move only through the transport's function
 * pointers, so a TLS transport can replace the plain one.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "smtp_client_internal.h"

static ssize_t plain_recv(void *ctx, int fd, void *buf, size_t n, short *want)
{
    *want = POLLIN;
    return recv(fd, buf, n, 0);
}

static ssize_t plain_send(void *ctx, int fd, const void *buf, size_t n, short *want)
{
    *want = POLLOUT;
    return send(fd, buf, n, MSG_NOSIGNAL);
}

static void plain_close(void *ctx)
{
}

const semail__client_transport semail__client_plain = {plain_recv, plain_send, plain_close, NULL};

uint64_t semail__client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wait for EVENTS on FD until DEADLINE: 0 ready, SEMAIL_ETEMP timeout, SEMAIL_EIO. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd pfd;
    int r;

    for (;;) {
        uint64_t now = semail__client_now_ms();
        int left = now >= deadline ? 0 : (int)(deadline - now > 60000 ? 60000 : deadline - now);
        pfd.fd = fd;
        pfd.events = events;
        pfd.revents = 0;
        r = poll(&pfd, 1, left);
        if (r > 0)
            return 0; /* errors and hang-ups are reported by the next recv/send */
        if (r < 0 && errno != EINTR)
            return semail__errno(SEMAIL_EIO, errno, "poll");
        if (r == 0 && now >= deadline)
            return semail__err(SEMAIL_ETEMP, "timeout");
    }
}

static int connect_wait(int fd, unsigned int timeout_ms)
{
    int err, soerr = 0;
    socklen_t sl = sizeof(soerr);

    if ((err = wait_fd(fd, POLLOUT, semail__client_now_ms() + timeout_ms)) < 0)
        return err == SEMAIL_ETEMP ? semail__err(SEMAIL_ETEMP, "connection timed out") : err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        return semail__errno(SEMAIL_EIO, errno, "getsockopt");
    if (soerr != 0)
        return semail__errno(SEMAIL_EIO, soerr, "connect");
    return 0;
}

int semail__client_connect(int *fd, const struct sockaddr *addr, socklen_t addrlen,
                           const struct sockaddr *source, socklen_t source_len,
                           unsigned int timeout_ms)
{
    int s, err = 0;

    *fd = -1;
    s = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return semail__errno(SEMAIL_EIO, errno, "socket");
    if (source != NULL && bind(s, source, source_len) < 0) {
        err = semail__errno(SEMAIL_EIO, errno, "bind to the source address");
        goto done;
    }
    if (connect(s, addr, addrlen) < 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            err = semail__errno(SEMAIL_EIO, errno, "connect");
            goto done;
        }
        if ((err = connect_wait(s, timeout_ms)) < 0)
            goto done;
    }
    *fd = s;
    s = -1;
done:
    if (s >= 0)
        close(s);
    return err;
}

void semail__client_conn_init(semail__client_conn *c, int fd, const semail__client_transport *tr)
{
    c->fd = fd;
    c->tr = *tr;
    c->in_start = 0;
    c->in_end = 0;
}

void semail__client_conn_close(semail__client_conn *c)
{
    if (c->fd < 0)
        return;
    c->tr.close(c->tr.ctx);
    close(c->fd);
    c->fd = -1;
}

/* Read more input into the buffer (compacted first). */
static int fill(semail__client_conn *c, uint64_t deadline)
{
    short want = POLLIN;
    ssize_t n;
    int err;

    if (c->in_start > 0) {
        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
        c->in_end -= c->in_start;
        c->in_start = 0;
    }
    if (c->in_end == sizeof(c->in))
        return semail__err(SEMAIL_ETOOBIG, "reply line over %d octets",
                           SEMAIL_CLIENT_REPLY_LINE_MAX);
    for (;;) {
        n = c->tr.recv(c->tr.ctx, c->fd, c->in + c->in_end, sizeof(c->in) - c->in_end, &want);
        if (n > 0) {
            c->in_end += (size_t)n;
            return 0;
        }
        if (n == 0)
            return semail__err(SEMAIL_EIO, "connection closed by the server");
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return semail__errno(SEMAIL_EIO, errno, "read");
        if ((err = wait_fd(c->fd, want, deadline)) < 0)
            return err;
    }
}

int semail__client_conn_line(semail__client_conn *c, const char **line, size_t *len,
                             uint64_t deadline)
{
    size_t scanned = 0;
    int err;

    for (;;) {
        const char *p = c->in + c->in_start;
        size_t avail = c->in_end - c->in_start;
        const char *nl = avail > scanned ? memchr(p + scanned, '\n', avail - scanned) : NULL;
        if (nl != NULL) {
            size_t n = (size_t)(nl - p);
            *line = p;
            *len = (n > 0 && p[n - 1] == '\r') ? n - 1 : n;
            c->in_start += n + 1;
            return 0;
        }
        scanned = avail;
        if ((err = fill(c, deadline)) < 0)
            return err;
    }
}

int semail__client_conn_write(semail__client_conn *c, const void *p, size_t n, uint64_t deadline)
{
    const char *b = p;
    short want = POLLOUT;
    ssize_t w;
    int err;

    while (n > 0) {
        w = c->tr.send(c->tr.ctx, c->fd, b, n, &want);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return semail__errno(SEMAIL_EIO, errno, "write");
        if ((err = wait_fd(c->fd, want, deadline)) < 0)
            return err;
    }
    return 0;
}
