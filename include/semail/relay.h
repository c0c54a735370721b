/**
 * @file relay.h
 * @brief The delivery engine of `semail-outbound`: queued mail to the Internet.
 *
 * semail_relay_deliver() makes one delivery attempt of one locked queue
 * entry: the pending recipients are grouped by domain, each domain's mail
 * exchangers are resolved (semail_mx_resolve()), and every address of every
 * MX host is tried in order with semail_client_deliver() until each
 * recipient has a definitive answer (2xx or 5xx) or no address is left.
 * Each recipient's result is recorded: delivered on 2xx; failed on 5xx and
 * on a permanent DNS verdict (null MX 5.1.10, no such domain 5.1.2, ...);
 * pending on 4xx, a failed connection or a temporary DNS verdict. Results
 * are written to the queue before the next server is tried and whenever
 * something stays queued; an entry removed at the end of the attempt needs
 * no state write, the removal being the durable fact (docs/queue.md,
 * "Durability and crashes": a crash re-delivers, never loses). Then the entry expires when it is
 * too old (semail_queue_expire()), a bounce is built for the newly failed recipients (never for the
 * null sender) and handed over, and the entry is either scheduled for its next attempt
 * (semail_queue_retry_next()) or, when nothing is pending and every failure has been reported,
 * removed.
 *
 * Loop prevention: an MX address that semail_mx_is_local_address() says is
 * one of our own listen addresses is not tried; when that leaves a domain
 * without any address, its recipients fail with 5.4.6 ("mail for DOMAIN
 * loops back to myself"), as Postfix does.
 *
 * A ::semail_relay_pool runs N threads that take due entries
 * (semail_queue_lock_due()) and deliver them, sleeping until the next due
 * time, a wake-up (a new submission) or the next poll (every second, so
 * that `semail-admin queue flush` is noticed).
 *
 * Log lines (through the options' log callback), one per recipient and
 * attempt, Postfix-like:
 * `QID: to=<R>, relay=HOST[ADDR]:PORT, delay=S, status=sent (250 2.0.0 Ok)`,
 * with status `sent`, `deferred` or `bounced` and `relay=none` when no
 * server answered (DNS verdicts, loops); plus `QID: connect to
 * HOST[ADDR]:PORT: REASON` for each address that failed before a session,
 * `QID: sender non-delivery notification: TEXT` for each bounce handed
 * over, and `QID: removed` when an entry leaves the queue.
 */
#ifndef SEMAIL_RELAY_H
#define SEMAIL_RELAY_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/mx.h"
#include "semail/queue.h"
#include "semail/server.h"

SEMAIL_BEGIN_DECLS

/**
 * Hand over a bounce (a complete RFC 3464 message, CRLF lines) for the
 * envelope sender @p rcpt of queue entry @p qid. The bounce is to be sent
 * with the null sender. Return 0 once it is durably in someone's hands
 * (delivered to a local mbox, or queued); the failures it reports are then
 * marked as notified. Return a negative ::semail_err otherwise: the bounce
 * is built and offered again at the entry's next attempt. Write into
 * @p note (size @p note_size, may be left empty) a few words for the log,
 * e.g. "queued as QID" or "delivered to local mailbox".
 *
 * Called from the delivering thread (a pool thread): it must be thread-safe.
 */
typedef int (*semail_relay_bounce_cb)(const char *rcpt, const char *dsn, size_t len,
                                      const char *qid, char *note, size_t note_size, void *payload);

/**
 * Asked between two servers and between two domains: return non-zero to
 * end the attempt early (shutdown). Recipients not tried stay pending.
 * Thread-safe, cheap.
 */
typedef int (*semail_relay_cancel_cb)(void *payload);

/** Version of ::semail_relay_options known to these headers. */
#define SEMAIL_RELAY_OPTIONS_VERSION 1

/**
 * Options of the delivery engine. Strings, arrays and objects are borrowed:
 * they must outlive every call (and the pool) that uses the options.
 */
typedef struct semail_relay_options {
    unsigned int version;      /**< SEMAIL_RELAY_OPTIONS_VERSION. */
    const char *hostname;      /**< Our name: EHLO, `Reporting-MTA`; required. */
    semail_resolver *resolver; /**< MX look-ups; required (shared, thread-safe). */
    unsigned int remote_port;  /**< Port of the target servers; 0: 25. */
    /** Our own listen addresses (`HOST:PORT`, `[V6]:PORT`): MX addresses that match one
     *  are never tried (see semail_mx_is_local_address()). With @p listen_count 0, every
     *  address of this machine counts as ours, whatever the port. */
    const char *const *listen;
    size_t listen_count;             /**< Number of @p listen. */
    const semail_queue_retry *retry; /**< Retry schedule and lifetime; NULL: defaults. */
    unsigned int connect_timeout_ms; /**< Per address; 0: the client's default (30 s). */
    /** Wait for each reply (greeting, EHLO, MAIL, RCPT, DATA) and each block of data
     *  sent; the reply to the final dot gets twice this. 0: the client's RFC 5321
     *  defaults. */
    unsigned int command_timeout_ms;
    /** Hands bounces over; NULL: they are submitted to the entry's own queue with the
     *  null sender. */
    semail_relay_bounce_cb bounce;
    void *bounce_payload;          /**< Passed to @p bounce. */
    semail_relay_cancel_cb cancel; /**< May end an attempt early; NULL: never. */
    void *cancel_payload;          /**< Passed to @p cancel. */
    semail_log_cb log;             /**< Log lines; NULL: none. Must be thread-safe. */
    void *log_payload;             /**< Passed to @p log. */
} semail_relay_options;

/** Static initializer: the version set, everything else 0 or NULL. */
#define SEMAIL_RELAY_OPTIONS_INIT                                                                  \
    {                                                                                              \
        .version = SEMAIL_RELAY_OPTIONS_VERSION                                                    \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_relay_options_init(semail_relay_options *opts);

/**
 * Make one delivery attempt of a locked entry (see the file comment), then
 * expire, bounce, and schedule or remove it.
 *
 * The entry stays locked; the caller releases it with
 * semail_queue_release() in every case.
 *
 * @param opts    the engine's options (hostname and resolver required).
 * @param q       the queue the entry belongs to (bounces are submitted there
 *                when @p opts has no bounce callback).
 * @param e       a locked entry.
 * @return 0 when the attempt was made and its outcome recorded (including
 *         recipients that failed or stay pending); 1 when the entry was
 *         removed from the queue (nothing left to do); ::SEMAIL_EINVAL
 *         (bad arguments); ::SEMAIL_EFULL / ::SEMAIL_EIO when the queue
 *         could not record a result (the entry is left as the disk says;
 *         it is due again at its recorded time); ::SEMAIL_ENOMEM.
 *         Thread-safe for different entries.
 */
SEMAIL_EXTERN int semail_relay_deliver(const semail_relay_options *opts, semail_queue *q,
                                       semail_queue_entry *e);

/** An opaque pool of delivery threads working on one queue. */
typedef struct semail_relay_pool semail_relay_pool;

/**
 * Start @p workers threads that deliver the due entries of @p q.
 *
 * @param[out] out  the pool, stopped with semail_relay_pool_stop() and freed
 *                  with semail_relay_pool_free().
 * @param opts      the engine's options, copied (what they point to is
 *                  borrowed). The pool installs its own cancel callback
 *                  (the one in @p opts is ignored).
 * @param q         the queue, shared with the caller (submissions).
 * @param workers   the number of threads (1 to 256); 0: 16.
 * @return 0; ::SEMAIL_EINVAL, ::SEMAIL_ENOMEM, ::SEMAIL_ERROR (a thread
 *         could not be started; none is left running).
 */
SEMAIL_EXTERN int semail_relay_pool_start(semail_relay_pool **out, const semail_relay_options *opts,
                                          semail_queue *q, unsigned int workers);

/**
 * Tell the pool that new mail is due (a submission): an idle thread looks
 * at the queue at once instead of at its next poll. Thread-safe; cheap.
 */
SEMAIL_EXTERN void semail_relay_pool_wakeup(semail_relay_pool *pool);

/**
 * Stop the pool: no new attempt starts, attempts in progress end at their
 * next server or domain (a client call in progress runs to its end or its
 * timeouts), and the threads are joined, waiting at most @p grace_ms.
 *
 * @return 0 when every thread has ended (the pool may be freed);
 *         ::SEMAIL_ETEMP when some were still busy after the grace time:
 *         the pool must then not be freed (the process should exit
 *         without freeing what the threads use; the queue is crash-safe).
 *         Call it once. Thread-safe.
 */
SEMAIL_EXTERN int semail_relay_pool_stop(semail_relay_pool *pool, unsigned int grace_ms);

/** Free a stopped pool (NULL is accepted). */
SEMAIL_EXTERN void semail_relay_pool_free(semail_relay_pool *pool);

SEMAIL_END_DECLS

#endif
