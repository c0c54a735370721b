/**
 * @file server.h
 * @brief The SMTP server runtime: listeners, one thread per connection.
 *
 * A ::semail_server binds every listen address (IPv6 and IPv4), accepts
 * connections, caps them overall and per client address (`421 4.7.0`
 * beyond), and runs each in a thread of its own with a small fixed stack,
 * driving a ::semail_session with the RFC 5321 timeouts. semail_server_stop()
 * (async-signal-safe) stops accepting and lets the sessions in progress
 * finish their current transaction, bounded by a grace time.
 *
 * Binding and running are separate so that a daemon binds privileged ports
 * as root, drops privileges with semail_privileges_drop(), then runs.
 */
#ifndef SEMAIL_SERVER_H
#define SEMAIL_SERVER_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/smtp.h"

SEMAIL_BEGIN_DECLS

/** An opaque server. */
typedef struct semail_server semail_server;

/**
 * Receives one log line (no trailing newline). Called from any server
 * thread, possibly concurrently: the function must be thread-safe.
 */
typedef void (*semail_log_cb)(const char *line, void *payload);

/** Version of ::semail_server_options known to these headers. */
#define SEMAIL_SERVER_OPTIONS_VERSION 1

/** Options of a server. Strings and arrays are copied by semail_server_new(). */
typedef struct semail_server_options {
    unsigned int version;             /**< SEMAIL_SERVER_OPTIONS_VERSION. */
    const char *const *listen;        /**< Addresses as `HOST:PORT`, `[V6]:PORT`; required. */
    size_t listen_count;              /**< Number of @p listen entries (at least 1). */
    unsigned int max_connections;     /**< Concurrent sessions; beyond: 421. 0: 1000. */
    unsigned int max_per_client;      /**< Concurrent sessions per client address; 0: 20. */
    unsigned int timeout_ms;          /**< Wait for a command (RFC 5321 4.5.3.2.7); 0: 300000. */
    unsigned int data_timeout_ms;     /**< Wait for a data block; 0: 180000 (4.5.3.2.5 ff). */
    unsigned int grace_ms;            /**< At stop, time for sessions to finish; 0: 10000. */
    size_t thread_stack;              /**< Stack of a session thread; 0: 128 KiB. */
    const char *name;                 /**< Program name for log lines, e.g. "semail-inbound". */
    semail_session_options session;   /**< Template for each session (client_addr is set per connection). */
    semail_log_cb log;                /**< Log sink; NULL: a line on stderr. */
    void *log_payload;                /**< Passed to @p log. */
} semail_server_options;

/** Static initializer: version fields set, everything else default. */
#define SEMAIL_SERVER_OPTIONS_INIT                                                                 \
    {                                                                                              \
        SEMAIL_SERVER_OPTIONS_VERSION, NULL, 0, 0, 0, 0, 0, 0, 0, NULL,                            \
            SEMAIL_SESSION_OPTIONS_INIT, NULL, NULL                                                \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL. */
SEMAIL_EXTERN int semail_server_options_init(semail_server_options *opts);

/**
 * Create a server (nothing is bound yet).
 * @return 0; ::SEMAIL_EINVAL (an address that does not parse, a missing
 *         callback), ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_server_new(semail_server **out, const semail_server_options *opts);

/**
 * Bind and listen on every address. An IPv6 wildcard is bound IPv6-only so
 * that `[::]:25` and `0.0.0.0:25` can both be listed.
 * @return 0 or ::SEMAIL_EIO (the message names the address).
 */
SEMAIL_EXTERN int semail_server_listen(semail_server *srv);

/**
 * The port actually bound for listener @p i (useful with port 0).
 * @return the port, or 0 when @p i is out of range or not bound.
 */
SEMAIL_EXTERN int semail_server_port(const semail_server *srv, size_t i);

/**
 * Accept and serve connections until semail_server_stop(); then wait for
 * the sessions in progress (at most the grace time, after which they are
 * closed with 421) and return.
 * @return 0, or ::SEMAIL_EIO when accepting fails for good.
 */
SEMAIL_EXTERN int semail_server_run(semail_server *srv);

/**
 * Ask a running server to stop. Async-signal-safe and thread-safe.
 */
SEMAIL_EXTERN void semail_server_stop(semail_server *srv);

/** Free a server that is not running. NULL is accepted. */
SEMAIL_EXTERN void semail_server_free(semail_server *srv);

/**
 * Switch the process to @p user (its uid, gid and supplementary groups)
 * when running as root; nothing when @p user is NULL or "".
 * @return 0; ::SEMAIL_ENOTFOUND (no such user), ::SEMAIL_EPERM.
 */
SEMAIL_EXTERN int semail_privileges_drop(const char *user);

SEMAIL_END_DECLS

#endif
