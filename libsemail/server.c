/*
 * server.c - the SMTP server runtime: listeners, the accept loop, the
 * connection caps and the graceful stop (the session threads themselves
 * live in server_conn.c).
 *
 * Contract: semail_server_run() accepts until semail_server_stop() (which
 * only write()s to a pipe, so a signal handler may call it), then closes
 * the listeners, lets the sessions finish for at most grace_ms, tells the
 * remaining ones to close, and returns only when every session thread has
 * given its slot back: the server can then be freed. A connection over a
 * cap gets one `421 4.7.0` line (none on a TLS listener: a TLS client
 * cannot read it) and is closed without a thread. The TLS context is built
 * in semail_server_new(), before any privilege drop, from the files named.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_internal.h"

#define DEFAULT_MAX_CONNECTIONS 1000
#define DEFAULT_MAX_PER_CLIENT  20
#define DEFAULT_TIMEOUT_MS      300000
#define DEFAULT_DATA_TIMEOUT_MS 180000
#define DEFAULT_GRACE_MS        10000
#define DEFAULT_RATE_GRACE_MS   30000
#define DEFAULT_STRESS_MS       30000
/* Stress mode (Postfix's): from this share of max_connections in use. */
#define STRESS_PERCENT       80
#define DEFAULT_THREAD_STACK (128 * 1024)
#define MIN_THREAD_STACK     (32 * 1024)
/* A TLS handshake needs more stack than a plain session. */
#define MIN_TLS_THREAD_STACK (64 * 1024)
/* Out of descriptors: stop accepting this long, so that the loop does not spin. */
#define ACCEPT_BACKOFF_MS 100
#define SHORTAGE_LOG_S    10

/* Results of accept_one() besides 0 and negative error codes. */
#define ACCEPT_BACKOFF 1

int semail_server_options_init(semail_server_options *opts)
{
    semail_server_options d = SEMAIL_SERVER_OPTIONS_INIT;

    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "no options");
    *opts = d;
    return 0;
}

void server_log(const semail_server *srv, const char *fmt, ...)
{
    char line[SERVER_LOG_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (srv->opts.log != NULL) {
        srv->opts.log(line, srv->opts.log_payload);
        return;
    }
    {
        char out[SERVER_LOG_MAX + 64];
        int m = snprintf(out, sizeof(out), "%s: %s\n", srv->name, line);
        if (m > 0)
            (void)!write(STDERR_FILENO, out, (size_t)m < sizeof(out) ? (size_t)m : sizeof(out));
    }
}

/* ---- listen addresses ------------------------------------------------------ */

/* Split "HOST:PORT" or "[V6]:PORT" into HOST and PORT (digits, <= 65535). */
static int split_address(const char *text, char *host, size_t hostsz, char *port, size_t portsz)
{
    const char *colon, *p;
    size_t hlen;
    unsigned long v = 0;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return semail__err(SEMAIL_EINVAL, "listen address '%s': expected [IPv6]:PORT", text);
        hlen = (size_t)(close - text - 1);
        colon = close + 1;
        if (hlen == 0 || hlen >= hostsz)
            return semail__err(SEMAIL_EINVAL, "listen address '%s': bad IPv6 address", text);
        memcpy(host, text + 1, hlen);
        host[hlen] = '\0';
        {
            struct in6_addr a6;
            if (inet_pton(AF_INET6, host, &a6) != 1)
                return semail__err(SEMAIL_EINVAL, "listen address '%s': bad IPv6 address", text);
        }
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || colon == text || memchr(text, ':', (size_t)(colon - text)) != NULL)
            return semail__err(SEMAIL_EINVAL,
                               "listen address '%s': expected HOST:PORT or [IPv6]:PORT", text);
        hlen = (size_t)(colon - text);
        if (hlen >= hostsz)
            return semail__err(SEMAIL_EINVAL, "listen address '%s': host too long", text);
        memcpy(host, text, hlen);
        host[hlen] = '\0';
    }
    p = colon + 1;
    if (*p == '\0' || strlen(p) > 5 || strlen(p) >= portsz)
        return semail__err(SEMAIL_EINVAL, "listen address '%s': bad port", text);
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return semail__err(SEMAIL_EINVAL, "listen address '%s': bad port", text);
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return semail__err(SEMAIL_EINVAL, "listen address '%s': port over 65535", text);
    memcpy(port, colon + 1, strlen(colon + 1) + 1);
    return 0;
}

static int check_address(const char *text)
{
    char host[NI_MAXHOST], port[8];
    return split_address(text, host, sizeof(host), port, sizeof(port));
}

/* ---- creating and freeing -------------------------------------------------- */

static int make_pipe(int *rd, int *wr)
{
    int fds[2];

    /* Non-blocking: a stop requested many times must never block a signal handler. */
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
        return semail__errno(SEMAIL_EIO, errno, "pipe");
    *rd = fds[0];
    *wr = fds[1];
    return 0;
}

static int check_addresses(const char *const *list, size_t n, const char *what)
{
    size_t i;
    int err;

    if (n > 0 && list == NULL)
        return semail__err(SEMAIL_EINVAL, "%s: NULL list", what);
    for (i = 0; i < n; i++) {
        if (list[i] == NULL)
            return semail__err(SEMAIL_EINVAL, "%s address %zu is NULL", what, i);
        if ((err = check_address(list[i])) < 0)
            return err;
    }
    return 0;
}

static int check_options(const semail_server_options *opts)
{
    int err;

    if (opts == NULL || opts->version != SEMAIL_SERVER_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "server options missing or of an unknown version");
    if (opts->listen_count + opts->tls_listen_count == 0)
        return semail__err(SEMAIL_EINVAL, "no listen address");
    if (opts->session.version != SEMAIL_SESSION_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "session options of an unknown version");
    if (opts->session.rcpt == NULL || opts->session.message == NULL)
        return semail__err(SEMAIL_EINVAL, "the session needs a rcpt and a message callback");
    if (opts->session.hostname == NULL || opts->session.hostname[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "the session needs a hostname");
    if ((err = check_addresses(opts->listen, opts->listen_count, "listen")) < 0 ||
        (err = check_addresses(opts->tls_listen, opts->tls_listen_count, "TLS listen")) < 0)
        return err;
    if (opts->auth_plaintext && opts->session.auth == NULL)
        return semail__err(SEMAIL_EINVAL, "auth_plaintext without an auth callback");
    return 0;
}

static void apply_defaults(semail_server_options *o)
{
    if (o->max_connections == 0)
        o->max_connections = DEFAULT_MAX_CONNECTIONS;
    if (o->max_per_client == 0)
        o->max_per_client = DEFAULT_MAX_PER_CLIENT;
    if (o->timeout_ms == 0)
        o->timeout_ms = DEFAULT_TIMEOUT_MS;
    if (o->data_timeout_ms == 0)
        o->data_timeout_ms = DEFAULT_DATA_TIMEOUT_MS;
    if (o->grace_ms == 0)
        o->grace_ms = DEFAULT_GRACE_MS;
    if (o->min_data_rate_grace_ms == 0)
        o->min_data_rate_grace_ms = DEFAULT_RATE_GRACE_MS;
    if (o->stress_timeout_ms == 0)
        o->stress_timeout_ms = DEFAULT_STRESS_MS;
    if (o->thread_stack == 0)
        o->thread_stack = DEFAULT_THREAD_STACK;
    if (o->thread_stack < MIN_THREAD_STACK)
        o->thread_stack = MIN_THREAD_STACK;
    if (o->tls_listen_count > 0 && o->thread_stack < MIN_TLS_THREAD_STACK)
        o->thread_stack = MIN_TLS_THREAD_STACK;
}

static int init_sync(semail_server *srv)
{
    pthread_condattr_t ca;
    int r;

    if ((r = pthread_mutex_init(&srv->mu, NULL)) != 0)
        return semail__errno(SEMAIL_ERROR, r, "pthread_mutex_init");
    /* The grace deadline is measured on the monotonic clock. */
    if ((r = pthread_condattr_init(&ca)) != 0)
        return semail__errno(SEMAIL_ERROR, r, "pthread_condattr_init");
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    r = pthread_cond_init(&srv->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (r != 0)
        return semail__errno(SEMAIL_ERROR, r, "pthread_cond_init");
    return 0;
}

/* The listeners: the plain ones, then the TLS ones (semail_server_port()'s order). */
static int copy_strings(semail_server *srv, const semail_server_options *opts)
{
    size_t i, n = opts->listen_count + opts->tls_listen_count;

    srv->name = semail__strdup(opts->name ? opts->name : "semail");
    srv->hostname = semail__strdup(opts->session.hostname);
    srv->listen_copy = calloc(n, sizeof(char *));
    srv->ls = calloc(n, sizeof(server_listener));
    if (!srv->name || !srv->hostname || !srv->listen_copy || !srv->ls)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    srv->nls = n;
    for (i = 0; i < n; i++) {
        int tls = i >= opts->listen_count;
        const char *text = tls ? opts->tls_listen[i - opts->listen_count] : opts->listen[i];
        srv->ls[i].fd = -1;
        srv->ls[i].tls = tls;
        if ((srv->listen_copy[i] = semail__strdup(text)) == NULL)
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        srv->ls[i].text = srv->listen_copy[i];
    }
    srv->opts.listen = (const char *const *)srv->listen_copy;
    srv->opts.tls_listen = (const char *const *)srv->listen_copy + opts->listen_count;
    /* Read once, into the TLS context: not kept. */
    srv->opts.tls_cert = NULL;
    srv->opts.tls_key = NULL;
    srv->opts.name = srv->name;
    srv->opts.session.hostname = srv->hostname;
    srv->opts.session.client_addr = NULL;
    return 0;
}

int semail_server_new(semail_server **out, const semail_server_options *opts)
{
    semail_server *srv;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "no output pointer");
    *out = NULL;
    if ((err = check_options(opts)) < 0)
        return err;
    if ((srv = calloc(1, sizeof(*srv))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    srv->stop_rd = srv->stop_wr = srv->force_rd = srv->force_wr = -1;
    srv->opts = *opts;
    apply_defaults(&srv->opts);
    if ((err = init_sync(srv)) < 0) {
        free(srv);
        return err;
    }
    if ((err = copy_strings(srv, opts)) < 0 ||
        (opts->tls_listen_count > 0 &&
         (err = server_tls_ctx_new(&srv->tls_ctx, opts->tls_cert, opts->tls_key)) < 0) ||
        (err = make_pipe(&srv->stop_rd, &srv->stop_wr)) < 0 ||
        (err = make_pipe(&srv->force_rd, &srv->force_wr)) < 0) {
        semail_server_free(srv);
        return err;
    }
    *out = srv;
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void semail_server_free(semail_server *srv)
{
    size_t i;

    if (srv == NULL)
        return;
    for (i = 0; i < srv->nls; i++)
        close_fd(&srv->ls[i].fd);
    if (srv->listen_copy)
        for (i = 0; i < srv->nls; i++)
            free(srv->listen_copy[i]);
    for (i = 0; i < SERVER_CLIENT_BUCKETS; i++) {
        while (srv->clients[i]) {
            server_client *next = srv->clients[i]->next;
            free(srv->clients[i]);
            srv->clients[i] = next;
        }
    }
    close_fd(&srv->stop_rd);
    close_fd(&srv->stop_wr);
    close_fd(&srv->force_rd);
    close_fd(&srv->force_wr);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    server_tls_ctx_free(srv->tls_ctx);
    free(srv->listen_copy);
    free(srv->ls);
    free(srv->name);
    free(srv->hostname);
    free(srv);
}

/* ---- binding ----------------------------------------------------------------- */

static int bind_one(server_listener *l)
{
    char host[NI_MAXHOST], port[8];
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = -1, one = 1, r, err;

    if ((err = split_address(l->text, host, sizeof(host), port, sizeof(port))) < 0)
        return err;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    memset(&ss, 0, sizeof(ss)); /* getsockname() fills it; zeroed for the analyzer */
    if ((r = getaddrinfo(host, port, &hints, &ai)) != 0)
        return semail__err(SEMAIL_EIO, "listen %s: %s", l->text, gai_strerror(r));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        err = semail__errno(SEMAIL_EIO, errno, "listen %s: socket", l->text);
        goto done;
    }
    /* IPv6-only, so that [::]:25 and 0.0.0.0:25 can be bound side by side. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (ai->ai_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)) {
        err = semail__errno(SEMAIL_EIO, errno, "listen %s: setsockopt", l->text);
        goto done;
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        err = semail__errno(SEMAIL_EIO, errno, "listen %s", l->text);
        goto done;
    }
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    l->fd = fd;
    fd = -1;
    err = 0;
done:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return err;
}

int semail_server_listen(semail_server *srv)
{
    size_t i;
    int err;

    if (srv == NULL)
        return semail__err(SEMAIL_EINVAL, "no server");
    for (i = 0; i < srv->nls; i++) {
        if (srv->ls[i].fd >= 0)
            continue;
        if ((err = bind_one(&srv->ls[i])) < 0)
            return err;
    }
    return 0;
}

int semail_server_port(const semail_server *srv, size_t i)
{
    if (srv == NULL || i >= srv->nls)
        return 0;
    return srv->ls[i].port;
}

/* ---- connection caps ----------------------------------------------------------- */

static unsigned int client_hash(const unsigned char key[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    int i;
    for (i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % SERVER_CLIENT_BUCKETS;
}

static server_client **client_find(semail_server *srv, const unsigned char key[16])
{
    server_client **pp = &srv->clients[client_hash(key)];
    while (*pp && memcmp((*pp)->addr, key, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

/* Under stress: 80% of max_connections in use. Called with mu held. */
static int stressed_locked(const semail_server *srv)
{
    return (unsigned long long)srv->active * 100 >=
           (unsigned long long)srv->opts.max_connections * STRESS_PERCENT;
}

unsigned int server_wait_limit(semail_server *srv, unsigned int base_ms)
{
    int stressed;

    pthread_mutex_lock(&srv->mu);
    stressed = stressed_locked(srv);
    pthread_mutex_unlock(&srv->mu);
    return stressed && srv->opts.stress_timeout_ms < base_ms ? srv->opts.stress_timeout_ms
                                                             : base_ms;
}

/* Say when stress mode begins and ends; from the accept loop only, which
 * owns stress_logged (a session thread may not log after its release). */
static void log_stress(semail_server *srv, unsigned int active, int stressed)
{
    if (stressed && !srv->stress_logged)
        server_log(srv, "stress: %u of %u connections in use: waits cut to %u ms", active,
                   srv->opts.max_connections, srv->opts.stress_timeout_ms);
    else if (!stressed && srv->stress_logged)
        server_log(srv, "stress over: %u of %u connections in use", active,
                   srv->opts.max_connections);
    srv->stress_logged = stressed;
}

/* Take a slot for KEY. Returns 0, or a static reason for refusing. */
static const char *conn_admit(semail_server *srv, const unsigned char key[16])
{
    server_client **pp;
    const char *why = NULL;
    unsigned int active;
    int stressed;

    pthread_mutex_lock(&srv->mu);
    pp = client_find(srv, key);
    if (srv->active >= srv->opts.max_connections) {
        why = "max_connections";
    } else if (*pp && (*pp)->count >= srv->opts.max_per_client) {
        why = "max_per_client";
    } else if (*pp == NULL && (*pp = calloc(1, sizeof(**pp))) == NULL) {
        why = "out of memory";
    } else {
        memcpy((*pp)->addr, key, 16);
        (*pp)->count++;
        srv->active++;
    }
    active = srv->active;
    stressed = stressed_locked(srv);
    pthread_mutex_unlock(&srv->mu);
    log_stress(srv, active, stressed);
    return why;
}

void server_conn_release(semail_server *srv, const unsigned char key[16])
{
    server_client **pp;

    pthread_mutex_lock(&srv->mu);
    pp = client_find(srv, key);
    if (*pp && --(*pp)->count == 0) {
        server_client *dead = *pp;
        *pp = dead->next;
        free(dead);
    }
    srv->active--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* ---- accepting ------------------------------------------------------------------- */

static void describe_peer(server_conn *c, const struct sockaddr_storage *ss)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned int port = 0;

    memset(c->key, 0, sizeof(c->key));
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        memcpy(c->key, &s6->sin6_addr, 16);
        port = ntohs(s6->sin6_port);
        if (memcmp(c->key, mapped, 12) == 0)
            inet_ntop(AF_INET, c->key + 12, c->ip, sizeof(c->ip));
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, c->ip, sizeof(c->ip));
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        memcpy(c->key, mapped, 12);
        memcpy(c->key + 12, &s4->sin_addr, 4);
        port = ntohs(s4->sin_port);
        inet_ntop(AF_INET, &s4->sin_addr, c->ip, sizeof(c->ip));
    }
    snprintf(c->peer, sizeof(c->peer), "[%s]:%u", c->ip, port);
}

/* Answer a connection we will not serve with one line, without blocking. A
 * TLS client would take the line for a broken handshake: it is just closed. */
static void refuse(semail_server *srv, int fd, int tls, const char *enhanced, const char *text)
{
    char line[SEMAIL_REPLY_MAX];
    int n = snprintf(line, sizeof(line), "421 %s %s %s\r\n", enhanced, srv->hostname, text);
    if (!tls && n > 0 && (size_t)n < sizeof(line))
        (void)!send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

static int start_thread(semail_server *srv, server_conn *c)
{
    pthread_attr_t attr;
    pthread_t t;
    int r;

    if ((r = pthread_attr_init(&attr)) != 0)
        return r;
    r = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (r == 0)
        r = pthread_attr_setstacksize(&attr, srv->opts.thread_stack);
    if (r == 0)
        r = pthread_create(&t, &attr, server_conn_main, c);
    pthread_attr_destroy(&attr);
    return r;
}

static void serve(semail_server *srv, int fd, int tls, const struct sockaddr_storage *ss)
{
    server_conn *c = calloc(1, sizeof(*c));
    const char *why;
    int r;

    if (c == NULL) {
        server_log(srv, "refused client=? reason=out of memory");
        refuse(srv, fd, tls, "4.3.0", "Temporary server error, try again later");
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->tls = tls;
    describe_peer(c, ss);
    if ((why = conn_admit(srv, c->key)) != NULL) {
        server_log(srv, "refused client=%s reason=%s", c->peer, why);
        refuse(srv, fd, tls, "4.7.0", "Too many connections, try again later");
        free(c);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &c->start);
    if ((r = start_thread(srv, c)) != 0) {
        server_log(srv, "refused client=%s reason=cannot start a thread: %s", c->peer, strerror(r));
        server_conn_release(srv, c->key);
        refuse(srv, fd, tls, "4.3.0", "Temporary server error, try again later");
        free(c);
    }
}

/* Out of descriptors or memory: say so at most every SHORTAGE_LOG_S seconds. */
static void log_shortage(semail_server *srv, const server_listener *l, int errnum)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (srv->shortage_quiet > 0 && now.tv_sec - srv->shortage_logged < SHORTAGE_LOG_S) {
        srv->shortage_quiet++;
        return;
    }
    server_log(srv, "accept on %s: %s; pausing %d ms each time (%u more since the last line)",
               l->text, strerror(errnum), ACCEPT_BACKOFF_MS,
               srv->shortage_quiet ? srv->shortage_quiet - 1 : 0);
    srv->shortage_logged = now.tv_sec;
    srv->shortage_quiet = 1;
}

/* Accept one connection from L. Returns 0, ACCEPT_BACKOFF, or an error. */
static int accept_one(semail_server *srv, server_listener *l)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd;

    memset(&ss, 0, sizeof(ss)); /* accept4() fills it; zeroed for the analyzer */
    fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        serve(srv, fd, l->tls, &ss);
        return 0;
    }
    switch (errno) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
        log_shortage(srv, l, errno);
        return ACCEPT_BACKOFF;
    case EBADF:
    case EFAULT:
    case EINVAL:
    case ENOTSOCK:
    case EOPNOTSUPP:
        return semail__errno(SEMAIL_EIO, errno, "accept on %s", l->text);
    default:
        /* EAGAIN, EINTR, ECONNABORTED and the network errors of the pending
         * connection (accept(2), "Error handling"): that connection is lost. */
        return 0;
    }
}

static int accept_loop(semail_server *srv, struct pollfd *pfds)
{
    size_t i, n = srv->nls + 1;
    int backoff = 0, r;

    pfds[0].fd = srv->stop_rd;
    pfds[0].events = POLLIN;
    for (i = 0; i < srv->nls; i++) {
        pfds[i + 1].fd = srv->ls[i].fd;
        pfds[i + 1].events = POLLIN;
    }
    for (;;) {
        r = poll(pfds, backoff ? 1 : n, backoff ? ACCEPT_BACKOFF_MS : -1);
        backoff = 0;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return semail__errno(SEMAIL_EIO, errno, "poll");
        }
        if (pfds[0].revents)
            return 0;
        for (i = 1; i < n; i++) {
            if (!pfds[i].revents)
                continue;
            if ((r = accept_one(srv, &srv->ls[i - 1])) < 0)
                return r;
            if (r == ACCEPT_BACKOFF)
                backoff = 1;
        }
    }
}

/* ---- stopping ---------------------------------------------------------------------- */

static void deadline_after(struct timespec *ts, unsigned int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Wait for the sessions: grace_ms for them to finish, then without limit
 * once they have been told to close (they only need to flush a line). */
static void drain(semail_server *srv)
{
    struct timespec deadline;
    unsigned int left;

    deadline_after(&deadline, srv->opts.grace_ms);
    pthread_mutex_lock(&srv->mu);
    if (srv->active > 0)
        server_log(srv, "stopping: %u session(s) in progress, grace %u ms", srv->active,
                   srv->opts.grace_ms);
    while (srv->active > 0)
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &deadline) == ETIMEDOUT)
            break;
    left = srv->active;
    if (left > 0) {
        server_log(srv, "grace time over: closing %u session(s)", left);
        (void)!write(srv->force_wr, "x", 1);
    }
    while (srv->active > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
}

int semail_server_run(semail_server *srv)
{
    struct pollfd *pfds;
    size_t i;
    int err;

    if (srv == NULL)
        return semail__err(SEMAIL_EINVAL, "no server");
    for (i = 0; i < srv->nls; i++)
        if (srv->ls[i].fd < 0)
            return semail__err(SEMAIL_EINVAL, "listen %s: not bound (call semail_server_listen)",
                               srv->ls[i].text);
    if ((pfds = calloc(srv->nls + 1, sizeof(*pfds))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    err = accept_loop(srv, pfds);
    free(pfds);
    /* New clients are refused from now on: they will try another MX or later. */
    for (i = 0; i < srv->nls; i++)
        close_fd(&srv->ls[i].fd);
    if (err < 0)
        server_log(srv, "%s", semail_error_last());
    drain(srv);
    return err;
}

void semail_server_stop(semail_server *srv)
{
    /* Only write(2): async-signal-safe. The byte is never read, so the
     * pipe stays readable for the accept loop and every session. */
    if (srv != NULL)
        (void)!write(srv->stop_wr, "x", 1);
}
