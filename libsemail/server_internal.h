/*
 * server_internal.h - what server.c (listeners, accept loop, caps, stop)
 * and server_conn.c (one thread per connection) share.
 *
 * Contract: a session thread reads only the immutable part of the server
 * (options, the two wake-up pipes) and touches the counters under mu; the
 * last thing it does is server_conn_release(), after which it never
 * touches the server again (semail_server_run() may return and the
 * server be freed as soon as the count reaches zero).
 */
#ifndef SEMAIL_SERVER_INTERNAL_H
#define SEMAIL_SERVER_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <time.h>

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
} server_listener;

struct semail_server {
    semail_server_options opts; /* defaults resolved; strings point into this struct */
    char *name;
    char *hostname;
    char **listen_copy;
    server_listener *ls;
    size_t nls;
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
};

/* One accepted connection, owned by its thread. */
typedef struct server_conn {
    semail_server *srv;
    int fd;
    unsigned char key[16];
    char ip[INET6_ADDRSTRLEN];          /* the session's client_addr */
    char peer[INET6_ADDRSTRLEN + 9];    /* "[ip]:port" for log lines */
    char helo[SERVER_HELO_LOG_MAX + 1]; /* as seen by the callbacks, sanitized */
    struct timespec start;
    const char *end; /* set when the session closed itself: "quit" or "limit" */
} server_conn;

/* Send a log line through opts.log (or to stderr). Thread-safe. */
SEMAIL_HIDDEN void server_log(const semail_server *srv, const char *fmt, ...) SEMAIL_PRINTF(2, 3);

/* The thread body of one connection (server_conn.c); takes ownership of ARG. */
SEMAIL_HIDDEN void *server_conn_main(void *arg);

/* Give back the connection's slots and wake semail_server_run(). */
SEMAIL_HIDDEN void server_conn_release(semail_server *srv, const unsigned char key[16]);

#endif
