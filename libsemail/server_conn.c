/*
 * server_conn.c - one connection, in a thread of its own: drive a
 * semail_session with the socket (plain, or TLS from the first byte), the
 * RFC 5321 timeouts and the stop.
 *
 * Contract: the socket is non-blocking and every wait is a poll() that also
 * watches the server's wake-up pipes, so that no client (one that never
 * sends, one that never reads, one that never finishes its TLS handshake)
 * can keep the thread beyond a timeout or the end of the grace time. A TLS
 * handshake has the command timeout in all; reads and writes go through
 * conn_recv()/conn_send(), which say what they wait for (a TLS read may
 * need the socket writable and the reverse), and data already inside the
 * SSL object is read without waiting. At a stop, an idle session is closed
 * with `421 4.3.2` at once; one mid-transaction continues until it is idle
 * or the grace time is over. The thread writes one log line when the
 * session ends and gives its slot back last.
 *
 * Abuse seen only here: on a plain listener nothing is sent for
 * pregreet_ms, and a client that talks in that time gets 554 and is
 * closed; in DATA, a client under min_data_rate (after its grace) gets 421;
 * every wait is cut to stress_timeout_ms while the server is under stress.
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
#define END_TLS      "tls"
#define END_PROTOCOL "protocol"
#define END_PREGREET "pregreet"
#define END_SLOW     "slow"
/* Longest user name written in a log line. */
#define LOG_USER_MAX 64

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

/* ---- I/O: plain or TLS ------------------------------------------------------ */

static ssize_t conn_recv(server_conn *c, char *buf, size_t n)
{
    ssize_t r;

    if (c->ssl != NULL)
        return server_tls_read(c, buf, n);
    do
        r = recv(c->fd, buf, n, 0);
    while (r < 0 && errno == EINTR);
    if (r >= 0)
        return r; /* 0 is SERVER_IO_EOF */
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? SERVER_IO_WANT_READ : SERVER_IO_ERROR;
}

static ssize_t conn_send(server_conn *c, const char *p, size_t n)
{
    ssize_t w;

    if (c->ssl != NULL)
        return server_tls_write(c, p, n);
    do
        w = send(c->fd, p, n, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w > 0)
        return w;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return SERVER_IO_WANT_WRITE;
    return SERVER_IO_ERROR;
}

static long ms_since(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The TLS handshake, within the command timeout. Returns NULL when done,
 * or an end reason. A stop ends it at once: there is no session to finish. */
static const char *tls_handshake(server_conn *c)
{
    unsigned int limit = server_wait_limit(c->srv, c->srv->opts.timeout_ms);
    struct timespec t0;
    char why[256];
    long spent;
    int r;

    if (server_tls_start(c, c->srv->tls_ctx) < 0) {
        server_log(c->srv, "session client=%s: %s", c->peer, semail_error_last());
        return END_ERROR;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((r = server_tls_handshake(c, why, sizeof(why))) != 0) {
        if (r == SERVER_IO_ERROR) {
            server_log(c->srv, "tls client=%s: handshake failed: %s", c->peer, why);
            return END_TLS;
        }
        if ((spent = ms_since(&t0)) >= (long)limit)
            return END_TIMEOUT;
        switch (wait_for(c, r == SERVER_IO_WANT_READ ? POLLIN : POLLOUT,
                         (unsigned int)(limit - (unsigned long)spent), 1, 1)) {
        case WAKE_READY:
            break;
        case WAKE_TIMEOUT:
            return END_TIMEOUT;
        case WAKE_STOP:
        case WAKE_FORCE:
            return END_SHUTDOWN;
        case WAKE_ERROR:
            return END_ERROR;
        }
    }
    return NULL;
}

/* ---- the session ----------------------------------------------------------- */

/* The session closed itself: QUIT (221 2.0.0), a protocol violation (554,
 * or 221 2.7.0 to an HTTP or header line) or a limit (421). */
static const char *closed_reason(const semail_session *s)
{
    size_t len, i;
    const char *out = semail_session_output(s, &len);

    /* The last reply line is the one that closed the session. */
    i = len >= 2 ? len - 2 : 0;
    while (i > 0 && out[i - 1] != '\n')
        i--;
    if (len - i >= 9 && memcmp(out + i, "221 2.7.0", 9) == 0)
        return END_PROTOCOL;
    if (len - i >= 3 && memcmp(out + i, "554", 3) == 0)
        return END_PROTOCOL;
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
        w = conn_send(c, out, len);
        if (w > 0) {
            semail_session_output_consume(s, (size_t)w);
            note_closed(c, s);
            continue;
        }
        if (w != SERVER_IO_WANT_READ && w != SERVER_IO_WANT_WRITE)
            return WAKE_ERROR;
        /* A client that does not read gets the command timeout, no more. */
        wk = wait_for(c, w == SERVER_IO_WANT_READ ? POLLIN : POLLOUT, timeout_ms, 0, watch_force);
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
    return server_wait_limit(c->srv, semail_session_state_get(s) == SEMAIL_STATE_DATA
                                         ? c->srv->opts.data_timeout_ms
                                         : c->srv->opts.timeout_ms);
}

/* N bytes arrived: 1 when, in DATA and past the grace time, the client
 * averages fewer than min_data_rate bytes per second since the 354. */
static int too_slow(server_conn *c, size_t n)
{
    const semail_server_options *o = &c->srv->opts;
    long ms;

    if (!c->in_data || o->min_data_rate == 0)
        return 0;
    c->data_bytes += n;
    ms = ms_since(&c->data_start);
    return ms > (long)o->min_data_rate_grace_ms &&
           c->data_bytes * 1000ULL < (unsigned long long)o->min_data_rate * (unsigned long long)ms;
}

/* Start or stop the data rate clock as the session enters or leaves DATA. */
static void track_data(server_conn *c, const semail_session *s)
{
    int in_data = semail_session_state_get(s) == SEMAIL_STATE_DATA;

    if (in_data && !c->in_data) {
        clock_gettime(CLOCK_MONOTONIC, &c->data_start);
        c->data_bytes = 0;
    }
    c->in_data = in_data;
}

/* Read once and feed the session. Returns NULL to go on, or an end reason. */
static const char *read_and_feed(server_conn *c, semail_session *s, char *buf)
{
    ssize_t n = conn_recv(c, buf, READ_BUF_SIZE);

    c->rd_wait = n == SERVER_IO_WANT_WRITE ? POLLOUT : POLLIN;
    if (n == SERVER_IO_EOF)
        return END_EOF;
    if (n == SERVER_IO_WANT_READ || n == SERVER_IO_WANT_WRITE)
        return NULL;
    if (n < 0)
        return END_ERROR;
    if (too_slow(c, (size_t)n))
        return close_with(c, s, "4.4.2", "Minimum data rate not met, closing connection", END_SLOW);
    if (semail_session_feed(s, buf, (size_t)n) < 0) {
        server_log(c->srv, "session client=%s: %s", c->peer, semail_error_last());
        return close_with(c, s, "4.3.0", "Internal error, closing connection", END_ERROR);
    }
    note_closed(c, s);
    track_data(c, s);
    return NULL;
}

static const char *conn_loop(server_conn *c, semail_session *s, char *buf)
{
    int stopping = 0, pending;
    const char *end;

    for (;;) {
        enum wake wk = flush_output(c, s, server_wait_limit(c->srv, c->srv->opts.timeout_ms), 1);
        if (wk == WAKE_FORCE)
            return close_with(c, s, "4.3.2", "Service shutting down", END_SHUTDOWN);
        if (wk != WAKE_READY)
            return wk == WAKE_TIMEOUT ? END_TIMEOUT : END_ERROR;
        if (c->end != NULL)
            return c->end; /* closed by the session, its last reply sent */
        if (stopping && between_transactions(s))
            return close_with(c, s, "4.3.2", "Service shutting down", END_SHUTDOWN);
        /* Once the stop is seen, its pipe stays readable: stop watching it.
         * Data already inside the SSL object: only a look at the pipes. */
        pending = server_tls_pending(c);
        wk = wait_for(c, c->rd_wait, pending ? 0 : input_timeout(c, s), !stopping, 1);
        if (pending && wk == WAKE_TIMEOUT)
            wk = WAKE_READY;
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

/* Half-close and read what is left for a moment, so that the client gets
 * our last reply rather than a reset. */
static void close_gently(server_conn *c, char *buf, const char *end)
{
    struct timespec t0, t;
    long waited = 0;
    int gentle = buf != NULL && strcmp(end, END_EOF) != 0 && strcmp(end, END_ERROR) != 0 &&
                 strcmp(end, END_TLS) != 0;

    server_tls_end(c, gentle);
    if (gentle && shutdown(c->fd, SHUT_WR) == 0) {
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

/* A client's word for a log line: printable ASCII without blanks, bounded;
 * "-" when there is none. */
static const char *log_word(char *out, size_t size, const char *in)
{
    size_t i;

    if (in == NULL || in[0] == '\0')
        return "-";
    for (i = 0; in[i] != '\0' && i + 1 < size; i++) {
        unsigned char ch = (unsigned char)in[i];
        out[i] = (ch > 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    out[i] = '\0';
    return out;
}

static void log_end(server_conn *c, semail_session *s, const char *end)
{
    semail_session_stats st = {0, 0, 0};
    char helo[SERVER_HELO_LOG_MAX + 1], user[LOG_USER_MAX + 1];
    const char *auth = NULL;

    if (s != NULL) {
        semail_session_stats_get(s, &st);
        auth = semail_session_auth_user(s);
    }
    server_log(c->srv,
               "session client=%s tls=%s helo=%s commands=%u messages=%u rejected=%u "
               "duration_ms=%ld end=%s%s%s",
               c->peer, c->tls ? "yes" : "no",
               log_word(helo, sizeof(helo), s ? semail_session_helo(s) : NULL), st.commands,
               st.messages, st.rejected, ms_since(&c->start), end, auth ? " user=" : "",
               auth ? log_word(user, sizeof(user), auth) : "");
}

/* The session's options for this connection, from the server's template. */
static void session_options(const server_conn *c, semail_session_options *so)
{
    const semail_server *srv = c->srv;

    *so = srv->opts.session;
    so->client_addr = c->ip;
    so->tls = c->tls;
    so->auth_offered = so->auth != NULL && (c->tls || srv->opts.auth_plaintext);
    if (!so->auth_offered && srv->tls_ctx == NULL)
        so->auth = NULL; /* no TLS listener to send the client to: 503, not 538 */
}

/* Send one line without a session (the socket is fresh: it fits). */
static void send_line(server_conn *c, const char *line)
{
    size_t len = strlen(line), off = 0;

    while (off < len) {
        ssize_t w = conn_send(c, line + off, len - off);
        if (w <= 0)
            return; /* best effort: the connection closes anyway */
        off += (size_t)w;
    }
}

/*
 * Postfix's postscreen "pregreet" test: say nothing for pregreet_ms; a
 * client that talks first is no mail client. Returns NULL to go on (the
 * greeting), or an end reason. A stop during the wait goes on: the session
 * loop closes it with 421 at once.
 */
static const char *pregreet(server_conn *c, char *buf)
{
    unsigned int limit = c->srv->opts.pregreet_ms;
    struct timespec t0;
    ssize_t n;
    long spent;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((spent = ms_since(&t0)) < (long)limit) {
        switch (wait_for(c, POLLIN, (unsigned int)(limit - (unsigned long)spent), 1, 1)) {
        case WAKE_TIMEOUT:
        case WAKE_STOP:
            return NULL;
        case WAKE_FORCE:
            return END_SHUTDOWN;
        case WAKE_ERROR:
            return END_ERROR;
        case WAKE_READY:
            break;
        }
        n = conn_recv(c, buf, READ_BUF_SIZE);
        if (n == SERVER_IO_EOF)
            return END_EOF;
        if (n > 0) {
            send_line(c, "554 5.5.1 Protocol error: talking before the greeting\r\n");
            return END_PREGREET;
        }
        if (n != SERVER_IO_WANT_READ)
            return END_ERROR;
    }
    return NULL;
}

/* Handshake (TLS), then the session. Returns the end reason. */
static const char *conn_run(server_conn *c, semail_session **s, char *buf)
{
    semail_session_options so;
    const char *end;

    if (buf == NULL) {
        server_log(c->srv, "session client=%s: out of memory", c->peer);
        return END_ERROR;
    }
    if (c->tls && (end = tls_handshake(c)) != NULL)
        return end;
    if (!c->tls && c->srv->opts.pregreet_ms > 0 && (end = pregreet(c, buf)) != NULL)
        return end;
    session_options(c, &so);
    if (semail_session_new(s, &so) < 0) {
        server_log(c->srv, "session client=%s: %s", c->peer, semail_error_last());
        return END_ERROR;
    }
    return conn_loop(c, *s, buf);
}

void *server_conn_main(void *arg)
{
    server_conn *c = arg;
    semail_server *srv = c->srv;
    semail_session *s = NULL;
    char *buf = malloc(READ_BUF_SIZE);
    const char *end;
    unsigned char key[16];

    c->rd_wait = POLLIN;
    end = conn_run(c, &s, buf);
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
