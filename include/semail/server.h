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
 *
 * TLS listeners (::semail_server_options.tls_listen) speak TLS from the first
 * byte (RFC 8314 implicit TLS, the port 465 style; STARTTLS is not offered):
 * TLS 1.2 or later, forward-secret cipher suites at OpenSSL security level
 * 2, no renegotiation, no compression. The handshake is done in the
 * connection's thread and must end within the command timeout (`timeout_ms`).
 * The certificate and key are read once, by semail_server_new() (so before a
 * privilege drop); reloading them means a new server.
 *
 * AUTH is offered per connection: on TLS connections when the session
 * template has an `auth` callback, on plain ones only when `auth_plaintext`
 * is also set. On a plain connection that does not offer it, AUTH is
 * answered `538 5.7.11 Encryption required` when a TLS listener exists (the
 * client can go there), `503 5.5.1` otherwise. The template's `auth_offered`
 * and `tls` are ignored: the server sets them for each connection.
 *
 * Abuse a session cannot see, answered here (docs/security.md):
 * - talking before the greeting (Postfix's postscreen "pregreet" test): on
 *   plain listeners the server waits `pregreet_ms` before sending `220`; a
 *   client that sends anything in that time gets `554 5.5.1 Protocol
 *   error: talking before the greeting` and is closed (end=pregreet). TLS
 *   listeners skip it: the client speaks first there, by design;
 * - slow clients: in DATA, once `min_data_rate_grace_ms` have passed since
 *   the `354`, a client that has sent fewer than `min_data_rate` bytes per
 *   second on average gets `421 4.4.2 Minimum data rate not met` (end=slow)
 *   (Postfix's smtpd_min_data_rate);
 * - load: while at least 80% of `max_connections` are in use, every wait
 *   (command, data, TLS handshake) lasts at most `stress_timeout_ms`
 *   (Postfix's stress mode); the tighter limit applies from each session's
 *   next wait on, and the server logs `stress: ...` when it begins and ends.
 *
 * Log lines (through ::semail_server_options.log):
 * - `session client=[IP]:PORT tls=yes|no helo=NAME commands=N messages=N
 *   rejected=N duration_ms=N end=END[ user=USER]` when a connection ends;
 *   END is `quit`, `eof`, `timeout`, `shutdown`, `limit` (the session closed
 *   itself with 421), `protocol` (it closed on a protocol violation: 554 for
 *   pipelining without ESMTP, 221 2.7.0 for an HTTP or header line),
 *   `pregreet` (talked before the greeting), `slow` (under the minimum data
 *   rate), `tls` (the TLS handshake failed) or `error`; NAME is
 *   the last EHLO/HELO name, `-` when none; USER, when the client
 *   authenticated, its identity. NAME and USER are cut at 64 octets, and
 *   octets other than printable ASCII are written `?`;
 * - `tls client=[IP]:PORT: handshake failed: REASON` (OpenSSL's reason);
 * - `refused client=[IP]:PORT reason=max_connections|max_per_client|...`;
 * - `stress: N of M connections in use: waits cut to N ms` when stress
 *   begins (seen at an accept), `stress over: N of M connections in use`
 *   at the first accept after it ended;
 * - at a stop: `stopping: N session(s) in progress, grace N ms`, then
 *   `grace time over: closing N session(s)` when some were still open.
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
    unsigned int version;         /**< SEMAIL_SERVER_OPTIONS_VERSION. */
    const char *const *listen;    /**< Plain addresses as `HOST:PORT`, `[V6]:PORT`. */
    size_t listen_count;          /**< Number of @p listen entries (with @p tls_listen_count,
                                       at least 1). */
    unsigned int max_connections; /**< Concurrent sessions; beyond: 421. 0: 1000. */
    unsigned int max_per_client;  /**< Concurrent sessions per client address; 0: 20. */
    unsigned int timeout_ms;      /**< Wait for a command (RFC 5321 4.5.3.2.7); 0: 300000. */
    unsigned int data_timeout_ms; /**< Wait for a data block; 0: 180000 (4.5.3.2.5 ff). */
    unsigned int grace_ms;        /**< At stop, time for sessions to finish; 0: 10000. */
    size_t thread_stack;          /**< Stack of a session thread; 0: 128 KiB. */
    const char *name;             /**< Program name for log lines, e.g. "semail-inbound". */
    /** Template for each session. Its client_addr is replaced, per connection, by the
     *  client's numeric IP address without brackets or port ("192.0.2.1", "2001:db8::1";
     *  an IPv4-mapped IPv6 address is written as IPv4); its callbacks are called from the
     *  connection's thread (with the small @p thread_stack). */
    semail_session_options session;
    semail_log_cb log;             /**< Log sink; NULL: a line on stderr. */
    void *log_payload;             /**< Passed to @p log. */
    const char *const *tls_listen; /**< TLS-from-the-first-byte addresses, as @p listen. */
    size_t tls_listen_count;       /**< Number of @p tls_listen entries; 0: no TLS. */
    const char *tls_cert;          /**< PEM file: the certificate, then its chain; required
                                        with @p tls_listen. */
    const char *tls_key;           /**< PEM file: the private key; required with
                                        @p tls_listen. */
    int auth_plaintext;            /**< 1: offer AUTH on plain listeners too (needs
                                        `session.auth`); 0: AUTH only over TLS. */
    /* Appended with the abuse limits (the version stays 1): semail_server_options_init()
     * and SEMAIL_SERVER_OPTIONS_INIT set their defaults; zeroed, they are off. */
    unsigned int pregreet_ms;            /**< Silence before the greeting on plain listeners;
                                              default SEMAIL_SERVER_PREGREET_MS, 0: none. */
    unsigned int min_data_rate;          /**< Bytes per second a client must average in DATA;
                                              default SEMAIL_SERVER_MIN_DATA_RATE, 0: none. */
    unsigned int min_data_rate_grace_ms; /**< Time after the `354` before @p min_data_rate
                                              applies; 0: 30000. */
    unsigned int stress_timeout_ms;      /**< Longest wait while 80% of @p max_connections are
                                              in use; 0: 30000 (never above the normal ones). */
} semail_server_options;

/** Default ::semail_server_options.pregreet_ms: short, as an MX greets at once. */
#define SEMAIL_SERVER_PREGREET_MS 300
/** Default ::semail_server_options.min_data_rate, in bytes per second (Postfix's). */
#define SEMAIL_SERVER_MIN_DATA_RATE 500

/**
 * Static initializer: version fields set, everything else default.
 * Designated, so that `-Wextra` (missing-field-initializers) stays quiet.
 */
#define SEMAIL_SERVER_OPTIONS_INIT                                                                 \
    {                                                                                              \
        .version = SEMAIL_SERVER_OPTIONS_VERSION, .session = SEMAIL_SESSION_OPTIONS_INIT,          \
        .pregreet_ms = SEMAIL_SERVER_PREGREET_MS, .min_data_rate = SEMAIL_SERVER_MIN_DATA_RATE     \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL. */
SEMAIL_EXTERN int semail_server_options_init(semail_server_options *opts);

/**
 * Create a server (nothing is bound yet). With TLS listeners, the
 * certificate and key are loaded here.
 * @return 0; ::SEMAIL_EINVAL (an address that does not parse, a missing
 *         callback, a certificate or key that is missing, not PEM, or a key
 *         that does not match the certificate: the message names the file),
 *         ::SEMAIL_EIO (a certificate or key file that cannot be read),
 *         ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_server_new(semail_server **out, const semail_server_options *opts);

/**
 * Bind and listen on every address. An IPv6 wildcard is bound IPv6-only so
 * that `[::]:25` and `0.0.0.0:25` can both be listed.
 * @return 0 or ::SEMAIL_EIO (the message names the address).
 */
SEMAIL_EXTERN int semail_server_listen(semail_server *srv);

/**
 * The port actually bound for listener @p i (useful with port 0). Listeners
 * are numbered in the order of @p listen, then of @p tls_listen.
 * @return the port, or 0 when @p i is out of range or not bound.
 */
SEMAIL_EXTERN int semail_server_port(const semail_server *srv, size_t i);

/**
 * Accept and serve connections until semail_server_stop(); then close the
 * listeners, close the sessions that have no transaction open (`421
 * 4.3.2`), let the others finish for at most the grace time (after which
 * they are closed with `421 4.3.2` too), and return once every session
 * thread has ended, so that the server may be freed. Call it once.
 * Descriptor exhaustion (EMFILE, ENFILE) pauses accepting for 100 ms at a
 * time instead of failing.
 * @return 0, or ::SEMAIL_EIO when accepting fails for good (the sessions
 *         are still waited for).
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
 * when running as root, and check that root cannot be regained; nothing
 * when @p user is NULL or "". Not running as root, succeeds only when the
 * process already runs as @p user. It changes every thread of the process
 * (glibc applies set*id calls to all threads).
 * @return 0; ::SEMAIL_ENOTFOUND (no such user), ::SEMAIL_EPERM (not root,
 *         or a set*id call failed), ::SEMAIL_EIO (the user database failed).
 */
SEMAIL_EXTERN int semail_privileges_drop(const char *user);

SEMAIL_END_DECLS

#endif
