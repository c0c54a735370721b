/*
 * server_internal.h - what server.c (listeners, accept loop, caps, stop)
 * and server_conn.c (one thread per connection) share.
 *
 * Contract: a session thread reads only the immutable part of the server
 * (options, the two wake-up pipes, the TLS context) and touches the
 * counters under mu; the
 * last thing it does is server_conn_release(), after which it never
 * touches the server again (semail_server_run() may return and the
 * server be freed as soon as the count reaches zero).
 */
#ifndef SEMAIL_SERVER_INTERNAL_H
#define SEMAIL_SERVER_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#include "internal.h"
#include "semail/server.h"

#define SERVER_CLIENT_BUCKETS 256
#define SERVER_LOG_MAX        1024
#define SERVER_HELO_LOG_MAX   64

/* Concurrent sessions of one client address. */
typedef struct server_client {
    struct server_client *next;
    unsigned char addr[16]; /* IPv4 as IPv4-mapped IPv6 */
    unsigned int count;
} server_client;

typedef struct server_listener {
    char *text; /* as configured, for messages */
    int fd;     /* -1 when not bound */
    int port;
    int tls; /* TLS from the first byte */
} server_listener;

struct semail_server {
    semail_server_options opts; /* defaults resolved; strings point into this struct */
    char *name;
    char *hostname;
    char **listen_copy;
    server_listener *ls; /* the plain listeners, then the TLS ones */
    size_t nls;
    SSL_CTX *tls_ctx; /* NULL without TLS listeners; read-only once built */
    /* Written once by semail_server_stop() and never drained: readable
     * from then on, for the accept loop and every session thread. */
    int stop_rd, stop_wr;
    /* Written when the grace time is over: sessions close at once. */
    int force_rd, force_wr;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a session ends */
    unsigned int active;
    server_client *clients[SERVER_CLIENT_BUCKETS];
    /* Accept-loop only: rate limit of the "out of descriptors" line. */
    time_t shortage_logged;
    unsigned int shortage_quiet;
    int stress_logged; /* accept-loop only: the "stress:" line was written */
};

/* One accepted connection, owned by its thread. */
typedef struct server_conn {
    semail_server *srv;
    int fd;
    int tls;        /* accepted on a TLS listener */
    SSL *ssl;       /* TLS connections only */
    int tls_broken; /* a fatal TLS error: no close_notify */
    short rd_wait;  /* what the next read waits for: POLLIN, or POLLOUT (TLS) */
    unsigned char key[16];
    char ip[INET6_ADDRSTRLEN];       /* the session's client_addr */
    char peer[INET6_ADDRSTRLEN + 9]; /* "[ip]:port" for log lines */
    struct timespec start;
    const char *end; /* set when the session closed itself: "quit", "limit", "protocol" */
    /* The minimum data rate: since the 354, how long and how much. */
    int in_data;
    struct timespec data_start;
    unsigned long long data_bytes;
} server_conn;

/* One I/O step: a byte count (> 0), or one of these. */
#define SERVER_IO_EOF        0
#define SERVER_IO_WANT_READ  (-1)
#define SERVER_IO_WANT_WRITE (-2)
#define SERVER_IO_ERROR      (-3)

/* Send a log line through opts.log (or to stderr). Thread-safe. */
SEMAIL_HIDDEN void server_log(const semail_server *srv, const char *fmt, ...) SEMAIL_PRINTF(2, 3);

/* The thread body of one connection (server_conn.c); takes ownership of ARG. */
SEMAIL_HIDDEN void *server_conn_main(void *arg);

/* The longest a session may wait now: BASE_MS, or less under stress (80%
 * of max_connections in use). Thread-safe. */
SEMAIL_HIDDEN unsigned int server_wait_limit(semail_server *srv, unsigned int base_ms);

/* Give back the connection's slots and wake semail_server_run(). */
SEMAIL_HIDDEN void server_conn_release(semail_server *srv, const unsigned char key[16]);

/* ---- server_tls.c ------------------------------------------------------- */

/* Build the TLS context from PEM files; the error message names the file. */
SEMAIL_HIDDEN int server_tls_ctx_new(SSL_CTX **out, const char *cert, const char *key);
SEMAIL_HIDDEN void server_tls_ctx_free(SSL_CTX *ctx);
/* Give C (a connection from a TLS listener) its SSL object. */
SEMAIL_HIDDEN int server_tls_start(server_conn *c, SSL_CTX *ctx);
/* One handshake step: 0 when done, SERVER_IO_WANT_*, or SERVER_IO_ERROR
 * with the reason in WHY. */
SEMAIL_HIDDEN int server_tls_handshake(server_conn *c, char *why, size_t size);
/* SSL_read/SSL_write as one I/O step (see SERVER_IO_*). */
SEMAIL_HIDDEN ssize_t server_tls_read(server_conn *c, void *buf, size_t n);
SEMAIL_HIDDEN ssize_t server_tls_write(server_conn *c, const void *p, size_t n);
/* 1 when decrypted data waits inside the SSL object (poll would not see it). */
SEMAIL_HIDDEN int server_tls_pending(const server_conn *c);
/* Free the SSL object; with NOTIFY, first try once to send close_notify. */
SEMAIL_HIDDEN void server_tls_end(server_conn *c, int notify);

#endif
