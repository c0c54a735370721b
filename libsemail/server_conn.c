/*
 * server_conn.c - one connection, in a thread of its own: drive a
 * semail_session with the socket, the RFC 5321 timeouts and the stop.
 *
 * Contract: the socket is non-blocking and every wait is a poll() that also
 * watches the server's wake-up pipes, so that no client (one that never
 * sends, one that never reads) can keep the thread beyond a timeout or the
 * end of the grace time. At a stop, an idle session is closed with
 * `421 4.3.2` at once; one mid-transaction continues until it is idle or the
 * grace time is over. The thread writes one log line when the session ends
 * and gives its slot back last.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_internal.h"

/* Heap-allocated: the thread's stack is small. */
#define READ_BUF_SIZE (16 * 1024)
/* Time to flush the last reply when we close (timeout, stop). */
#define CLOSING_FLUSH_MS 2000
/* After our last reply, read what the client still sends for this long so
 * that closing does not reset the connection before the reply is read. */
#define LINGER_MS 200

/* How a wait ended. */
enum wake { WAKE_READY = 0, WAKE_TIMEOUT, WAKE_STOP, WAKE_FORCE, WAKE_ERROR };

/* Why a session ended, as logged ("end=..."). */
#define END_QUIT     "quit"
#define END_EOF      "eof"
#define END_TIMEOUT  "timeout"
#define END_SHUTDOWN "shutdown"
#define END_ERROR    "error"
#define END_LIMIT    "limit"

/* Wait for EVENTS on the socket, the stop pipe (when WATCH_STOP) and the
 * force pipe (when WATCH_FORCE), at most TIMEOUT_MS. */
static enum wake wait_for(const server_conn *c, short events, unsigned int timeout_ms,
                          int watch_stop, int watch_force)
{
    struct pollfd p[3];
    nfds_t n = 1;
    int r;

    p[0].fd = c->fd;
    p[0].events = events;
    p[1].fd = watch_force ? c->srv->force_rd : -1;
    p[1].events = POLLIN;
    p[2].fd = watch_stop ? c->srv->stop_rd : -1;
    p[2].events = POLLIN;
    n = 3;
    do {
        r = poll(p, n, (int)timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return WAKE_ERROR;
    if (r == 0)
        return WAKE_TIMEOUT;
    if (p[1].revents)
        return WAKE_FORCE;
    if (p[0].revents)
        return WAKE_READY; /* errors and hang-ups surface in recv/send */
    return WAKE_STOP;
}

/* The session closed itself: QUIT (221) or a limit (421). */
static const char *closed_reason(const semail_session *s)
{
    size_t len, i;
    const char *out = semail_session_output(s, &len);

    /* The last reply line is the one that closed the session. */
    i = len >= 2 ? len - 2 : 0;
    while (i > 0 && out[i - 1] != '\n')
        i--;
    return (len - i >= 3 && memcmp(out + i, "221", 3) == 0) ? END_QUIT : END_LIMIT;
}

/* Remember why the session closed while its last reply is still pending:
 * it may close in feed() or in output_consume() (pipelined input resumed). */
static void note_closed(server_conn *c, const semail_session *s)
{
    if (c->end == NULL && semail_session_state_get(s) == SEMAIL_STATE_CLOSED)
        c->end = closed_reason(s);
}

/* Send the session's pending output. Returns WAKE_READY when all is sent. */
static enum wake flush_output(server_conn *c, semail_session *s, unsigned int timeout_ms,
                              int watch_force)
{
    for (;;) {
        size_t len;
        const char *out = semail_session_output(s, &len);
        ssize_t w;
        enum wake wk;

        if (len == 0)
            return WAKE_READY;
        w = send(c->fd, out, len, MSG_NOSIGNAL);
        if (w > 0) {
            semail_session_output_consume(s, (size_t)w);
            note_closed(c, s);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return WAKE_ERROR;
        /* A client that does not read gets the command timeout, no more. */
        wk = wait_for(c, POLLOUT, timeout_ms, 0, watch_force);
        if (wk != WAKE_READY)
            return wk;
    }
}

/* Queue a 421, send it briefly, and report END. */
static const char *close_with(server_conn *c, semail_session *s, const char *enhanced,
                              const char *text, const char *end)
{
    semail_session_shutdown(s, enhanced, text);
    (void)flush_output(c, s, CLOSING_FLUSH_MS, 0);
    return end;
}

/* At a stop, only a session with no transaction open is closed at once: one
 * between MAIL and the end of DATA goes on until it finishes (or the grace
 * time is over), so that its message is not thrown away. */
static int between_transactions(const semail_session *s)
{
    semail_session_state st = semail_session_state_get(s);
    return semail_session_idle(s) && (st == SEMAIL_STATE_INIT || st == SEMAIL_STATE_READY);
}

static unsigned int input_timeout(const server_conn *c, const semail_session *s)
{
    return semail_session_state_get(s) == SEMAIL_STATE_DATA ? c->srv->opts.data_timeout_ms
                                                            : c->srv->opts.timeout_ms;
}

/* Read once and feed the session. Returns NULL to go on, or an end reason. */
static const char *read_and_feed(server_conn *c, semail_session *s, char *buf)
{
    ssize_t n = recv(c->fd, buf, READ_BUF_SIZE, 0);

    if (n == 0)
        return END_EOF;
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? NULL : END_ERROR;
    if (semail_session_feed(s, buf, (size_t)n) < 0) {
        server_log(c->srv, "session client=%s: %s", c->peer, semail_error_last());
        return close_with(c, s, "4.3.0", "Internal error, closing connection", END_ERROR);
    }
    note_closed(c, s);
    return NULL;
}

static const char *conn_loop(server_conn *c, semail_session *s, char *buf)
{
    int stopping = 0;
    const char *end;

    for (;;) {
        enum wake wk = flush_output(c, s, c->srv->opts.timeout_ms, 1);
        if (wk == WAKE_FORCE)
            return close_with(c, s, "4.3.2", "Service shutting down", END_SHUTDOWN);
        if (wk != WAKE_READY)
            return wk == WAKE_TIMEOUT ? END_TIMEOUT : END_ERROR;
        if (c->end != NULL)
            return c->end; /* closed by the session, its last reply sent */
        if (stopping && between_transactions(s))
            return close_with(c, s, "4.3.2", "Service shutting down", END_SHUTDOWN);
        /* Once the stop is seen, its pipe stays readable: stop watching it. */
        wk = wait_for(c, POLLIN, input_timeout(c, s), !stopping, 1);
        switch (wk) {
        case WAKE_STOP:
            stopping = 1;
            continue;
        case WAKE_FORCE:
            return close_with(c, s, "4.3.2", "Service shutting down", END_SHUTDOWN);
        case WAKE_TIMEOUT:
            return close_with(c, s, "4.4.2", "Timeout, closing connection", END_TIMEOUT);
        case WAKE_ERROR:
            return END_ERROR;
        case WAKE_READY:
            break;
        }
        if ((end = read_and_feed(c, s, buf)) != NULL)
            return end;
    }
}

/* Keep the helo for the log line: printable ASCII only, bounded. */
static void remember_helo(server_conn *c, const semail_envelope *env)
{
    size_t i;

    if (env->helo == NULL || c->helo[0] != '\0')
        return;
    for (i = 0; env->helo[i] && i < SERVER_HELO_LOG_MAX; i++) {
        unsigned char ch = (unsigned char)env->helo[i];
        c->helo[i] = (ch > 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    c->helo[i] = '\0';
}

static int rcpt_hook(semail_reply *reply, const semail_envelope *env, const semail_address *rcpt,
                     void *payload)
{
    server_conn *c = payload;
    const semail_session_options *so = &c->srv->opts.session;

    remember_helo(c, env);
    return so->rcpt(reply, env, rcpt, so->payload);
}

static int message_hook(semail_reply *reply, const semail_envelope *env, const char *data,
                        size_t len, void *payload)
{
    server_conn *c = payload;
    const semail_session_options *so = &c->srv->opts.session;

    remember_helo(c, env);
    return so->message(reply, env, data, len, so->payload);
}

/* Half-close and read what is left for a moment, so that the client gets
 * our last reply rather than a reset. */
static void close_gently(server_conn *c, char *buf, const char *end)
{
    struct timespec t0, t;
    long waited = 0;

    if (buf != NULL && strcmp(end, END_EOF) != 0 && strcmp(end, END_ERROR) != 0 &&
        shutdown(c->fd, SHUT_WR) == 0) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (waited < LINGER_MS &&
               wait_for(c, POLLIN, (unsigned int)(LINGER_MS - waited), 0, 0) == WAKE_READY &&
               recv(c->fd, buf, READ_BUF_SIZE, 0) > 0) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            waited = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        }
    }
    close(c->fd);
}

static void log_end(server_conn *c, semail_session *s, const char *end)
{
    semail_session_stats st = {0, 0, 0};
    struct timespec now;
    long long ms;

    if (s != NULL)
        semail_session_stats_get(s, &st);
    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (long long)(now.tv_sec - c->start.tv_sec) * 1000 +
         (now.tv_nsec - c->start.tv_nsec) / 1000000;
    server_log(c->srv,
               "session client=%s helo=%s commands=%u messages=%u rejected=%u duration_ms=%lld "
               "end=%s",
               c->peer, c->helo[0] ? c->helo : "-", st.commands, st.messages, st.rejected, ms, end);
}

void *server_conn_main(void *arg)
{
    server_conn *c = arg;
    semail_server *srv = c->srv;
    semail_session_options so = srv->opts.session;
    semail_session *s = NULL;
    char *buf = malloc(READ_BUF_SIZE);
    const char *end = END_ERROR;
    unsigned char key[16];

    so.client_addr = c->ip;
    so.rcpt = rcpt_hook;
    so.message = message_hook;
    so.payload = c;
    if (buf == NULL)
        server_log(srv, "session client=%s: out of memory", c->peer);
    else if (semail_session_new(&s, &so) < 0)
        server_log(srv, "session client=%s: %s", c->peer, semail_error_last());
    else
        end = conn_loop(c, s, buf);
    log_end(c, s, end);
    semail_session_free(s);
    close_gently(c, buf, end);
    free(buf);
    memcpy(key, c->key, sizeof(key));
    free(c);
    /* Last: once the count is zero the server may be freed. */
    server_conn_release(srv, key);
    return NULL;
}
