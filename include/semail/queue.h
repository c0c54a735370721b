/**
 * @file queue.h
 * @brief The durable delivery queue of `semail-outbound`.
 *
 * A queue is a spool directory. Every accepted message is written there
 * (fsync'd, renamed into place, directory fsync'd) by semail_queue_submit()
 * before the SMTP server answers 250, and stays there until every recipient
 * is delivered or has failed for good, across crashes and restarts.
 *
 * Each message has an identifier (QID): 18 characters `[0-9A-V]`, the
 * arrival time first, so that QIDs sort by arrival. Per recipient the queue
 * keeps a state (pending, delivered, failed), whether the sender has been
 * told of a failure (a bounce was queued), and the last result (reply code,
 * enhanced status code, text, remote host). Updates of that state are
 * written to a new file renamed over the old one: after a crash the
 * recorded state is the old one or the new one, never a mixture, and a
 * damaged state file is ignored (the recipients count as pending), so a
 * restart delivers again at most the recipients whose success was not
 * recorded. The on-disk format is described in `docs/queue.md`.
 *
 * Concurrency: a message is worked on through a locked ::semail_queue_entry.
 * The lock is a `flock()` on the message file, so it excludes other
 * threads of the same process as well as other processes (the daemon's
 * delivery threads and `semail-admin queue delete`). Listing takes no lock.
 * Descriptors are close-on-exec, but a child forked while an entry is held
 * shares its lock until it closes the descriptor or execs.
 *
 * A ::semail_queue handle may be shared by threads; an entry belongs to the
 * thread that locked it until semail_queue_release().
 *
 * Times are milliseconds since the Unix epoch (`int64_t`).
 */
#ifndef SEMAIL_QUEUE_H
#define SEMAIL_QUEUE_H

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Size of a buffer that holds any QID, NUL included. */
#define SEMAIL_QUEUE_QID_SIZE 32
/** Length of the QIDs semail_queue_submit() makes. */
#define SEMAIL_QUEUE_QID_LEN 18
/** Size of the text of a recorded result, NUL included (longer text is cut). */
#define SEMAIL_QUEUE_TEXT_SIZE 512
/** Size of the remote host name of a recorded result, NUL included. */
#define SEMAIL_QUEUE_HOST_SIZE 256
/** Longest envelope address the queue stores, in bytes. */
#define SEMAIL_QUEUE_ADDR_MAX 512
/** Most recipients one queued message may have. */
#define SEMAIL_QUEUE_RCPT_MAX 10000

/** An opaque queue (a spool directory opened by this process). */
typedef struct semail_queue semail_queue;

/** An opaque locked, loaded message of a queue. */
typedef struct semail_queue_entry semail_queue_entry;

/** Delivery state of one recipient. */
typedef enum semail_queue_rcpt_state {
    SEMAIL_QUEUE_PENDING = 0,   /**< Not delivered yet: to be tried (again). */
    SEMAIL_QUEUE_DELIVERED = 1, /**< Accepted by the remote server (final). */
    SEMAIL_QUEUE_FAILED = 2     /**< Failed for good: 5xx or expired (final). */
} semail_queue_rcpt_state;

/** The result of the last attempt for one recipient (Postfix's DSN_BUF). */
typedef struct semail_queue_result {
    int code;          /**< SMTP reply code; 0: no reply (e.g. no connection). */
    char enhanced[16]; /**< Enhanced status code "x.y.z" (RFC 3463), or "". */
    char remote_host[SEMAIL_QUEUE_HOST_SIZE]; /**< The server that answered, or "". */
    char text[SEMAIL_QUEUE_TEXT_SIZE];        /**< The answer's text or our reason, one line. */
    int64_t time_ms; /**< When the attempt ended; 0 for "now" when recording. */
} semail_queue_result;

/** One recipient of a queued message. */
typedef struct semail_queue_rcpt {
    const char *address;           /**< The recipient, `local@domain`. */
    semail_queue_rcpt_state state; /**< Where its delivery stands. */
    int notified;                  /**< 1 once a bounce for this failure has been queued. */
    semail_queue_result result;    /**< Last result; code 0 and text "" before any attempt. */
} semail_queue_rcpt;

/**
 * What the queue knows of one message. The strings and the recipient array
 * belong to the queue (or the entry) and are valid only as documented by the
 * function that hands the structure out.
 */
typedef struct semail_queue_info {
    char qid[SEMAIL_QUEUE_QID_SIZE]; /**< The message's QID. */
    const char *sender;              /**< Envelope sender; "" for the null sender `<>`. */
    const semail_queue_rcpt *rcpts;  /**< The recipients, in submission order. */
    size_t rcpt_count;               /**< Number of @p rcpts (at least 1). */
    unsigned int attempts;           /**< Delivery attempts ended so far. */
    int64_t arrival_ms;              /**< When the message was queued. */
    int64_t next_attempt_ms;         /**< When it is due next (arrival before any attempt). */
    int64_t last_attempt_ms;         /**< When the last attempt ended; 0 before any. */
    uint64_t size;                   /**< Size of the message data in bytes. */
} semail_queue_info;

/** Version of ::semail_queue_options known to these headers. */
#define SEMAIL_QUEUE_OPTIONS_VERSION 1

/** Options of a queue handle. */
typedef struct semail_queue_options {
    unsigned int version;         /**< SEMAIL_QUEUE_OPTIONS_VERSION. */
    unsigned int lock_timeout_ms; /**< semail_queue_lock()/semail_queue_delete() wait this long for
                                       a message locked elsewhere; 0: fail at once. */
    int dir_mode;                 /**< Mode of directories created by open; 0: 0700. */
    uint64_t max_message_size;    /**< Largest message data accepted and read back; 0: 1 GiB. */
} semail_queue_options;

/** Static initializer: the defaults. */
#define SEMAIL_QUEUE_OPTIONS_INIT                                                                  \
    {                                                                                              \
        SEMAIL_QUEUE_OPTIONS_VERSION, 0, 0, 0                                                      \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_queue_options_init(semail_queue_options *opts);

/**
 * Open (and create when missing) the spool directory @p dir with its
 * subdirectories `tmp/`, `msg/`, `state/` and `corrupt/`.
 *
 * Recovery happens here: temporary files left by a process that died
 * while writing are removed (a file is left alone while its writer lives:
 * writers hold a lock on it), state files without a message are removed,
 * and message files that are damaged (bad header or wrong size) are moved
 * to `corrupt/` and never delivered.
 *
 * @param[out] out   the queue, freed with semail_queue_free().
 * @param dir        the spool directory (e.g. `STATE_DIR/queue`); copied.
 * @param opts       options, copied; NULL for defaults.
 * @return 0, ::SEMAIL_EINVAL, ::SEMAIL_ENOMEM, ::SEMAIL_EPERM, ::SEMAIL_EIO.
 *         Thread-safe (different handles, or the same directory twice).
 */
SEMAIL_EXTERN int semail_queue_open(semail_queue **out, const char *dir,
                                    const semail_queue_options *opts);

/** Close a queue. Every entry locked through it must be released first. NULL is accepted. */
SEMAIL_EXTERN void semail_queue_free(semail_queue *q);

/**
 * Queue a message durably: when this returns 0 the message, its envelope
 * and its arrival time are on disk (file and directory fsync'd) and the
 * caller may answer 250. The message is due at once.
 *
 * @param[out] qid_out  buffer of ::SEMAIL_QUEUE_QID_SIZE bytes for the new QID.
 * @param q             the queue.
 * @param sender        envelope sender, "" or NULL for the null sender.
 * @param rcpts         @p rcpt_count recipients (1 to ::SEMAIL_QUEUE_RCPT_MAX),
 *                      each at most ::SEMAIL_QUEUE_ADDR_MAX bytes without CR, LF or NUL.
 * @param data          the message, @p len bytes (CRLF lines, as received).
 * @return 0; ::SEMAIL_EINVAL (bad envelope), ::SEMAIL_ETOOBIG (over
 *         max_message_size), ::SEMAIL_EFULL (no space: answer 452),
 *         ::SEMAIL_EIO. Nothing is left in the queue on failure. Thread-safe.
 */
SEMAIL_EXTERN int semail_queue_submit(char *qid_out, semail_queue *q, const char *sender,
                                      const char *const *rcpts, size_t rcpt_count, const void *data,
                                      size_t len);

/**
 * Called by semail_queue_list() for each message. @p info and what it
 * points to are valid during the call only. Return 0 to go on; any other
 * value stops the listing and is returned by semail_queue_list().
 */
typedef int (*semail_queue_list_cb)(const semail_queue_info *info, void *payload);

/**
 * Call @p cb for every message in the queue, in QID order (arrival order).
 * Takes no lock: a message being delivered is listed with the state last
 * written. Messages that vanish meanwhile are skipped, damaged ones too.
 *
 * @return 0, the callback's non-zero value, or ::SEMAIL_EIO / ::SEMAIL_ENOMEM.
 *         Thread-safe; works from another process while the daemon runs.
 */
SEMAIL_EXTERN int semail_queue_list(semail_queue *q, semail_queue_list_cb cb, void *payload);

/**
 * Lock and load one message by QID.
 *
 * @param[out] out  the entry, released with semail_queue_release().
 * @return 0; ::SEMAIL_EINVAL (not a QID), ::SEMAIL_ENOTFOUND (no such
 *         message), ::SEMAIL_ELOCKED (locked elsewhere for longer than the
 *         lock timeout), ::SEMAIL_EIO (damaged: the file is moved to
 *         `corrupt/`), ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_queue_lock(semail_queue_entry **out, semail_queue *q, const char *qid);

/**
 * Lock and load the message that has been due longest and that nobody else
 * holds: a message is due when its next attempt time is at or before
 * @p now_ms, or when semail_queue_flush() was called after (or in the same
 * millisecond as) its last attempt ended. Several threads or processes may
 * call this at once: each gets a different message. The handle serves the
 * due list of its last scan (docs/queue.md): a message submitted through
 * another handle, or whose next attempt time comes, may wait up to 250 ms.
 *
 * @param[out] out      the entry, released with semail_queue_release().
 * @param[out] next_ms  may be NULL. The earliest next attempt time of the
 *                      messages not due now, or INT64_MAX when there is
 *                      none: when nothing is free, sleep until then, but
 *                      poll every few seconds for flushes and new mail.
 * @return 0; ::SEMAIL_ENOTFOUND when no message is due and free;
 *         ::SEMAIL_EIO, ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_queue_lock_due(semail_queue_entry **out, semail_queue *q, int64_t now_ms,
                                        int64_t *next_ms);

/**
 * The message of a locked entry: envelope, recipients and their states.
 * Valid until the entry is released; it changes as results are recorded.
 * Thread-safe for the entry's owner.
 */
SEMAIL_EXTERN const semail_queue_info *semail_queue_entry_info(const semail_queue_entry *e);

/**
 * The message data of a locked entry (read into memory and verified
 * against its checksum when the entry was locked).
 *
 * @param[out] len  its length; may be NULL.
 * @return a buffer owned by the entry, valid until release.
 */
SEMAIL_EXTERN const char *semail_queue_entry_data(const semail_queue_entry *e, size_t *len);

/**
 * Record the result of an attempt for recipient @p index, durably: when
 * this returns 0 the new state is on disk. A final state (delivered,
 * failed) cannot be changed. CR, LF and other control bytes in the result's
 * strings are stored as spaces; overlong strings are cut.
 *
 * @param state  ::SEMAIL_QUEUE_DELIVERED (2xx), ::SEMAIL_QUEUE_FAILED (5xx) or
 *               ::SEMAIL_QUEUE_PENDING (4xx, no connection: try again).
 * @param result the result; may be NULL (nothing known); copied.
 * @return 0; ::SEMAIL_EINVAL (bad index, final state, removed entry),
 *         ::SEMAIL_EFULL, ::SEMAIL_EIO (the state on disk is unchanged).
 */
SEMAIL_EXTERN int semail_queue_record(semail_queue_entry *e, size_t index,
                                      semail_queue_rcpt_state state,
                                      const semail_queue_result *result);

/**
 * Mark every failed recipient not yet notified as notified, durably: call
 * this after the bounce for them has been queued. A crash between the two
 * sends the bounce twice, never zero times.
 *
 * @return the number of recipients marked (0: nothing written), or
 *         ::SEMAIL_EINVAL / ::SEMAIL_EFULL / ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_queue_mark_notified(semail_queue_entry *e);

/**
 * End an attempt durably: count it, remember now as its end and set when
 * the message is due next (see semail_queue_retry_next()).
 *
 * @return 0, ::SEMAIL_EINVAL, ::SEMAIL_EFULL, ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_queue_schedule(semail_queue_entry *e, int64_t next_attempt_ms);

/**
 * Remove the message of a locked entry from the queue, durably (its file
 * first, so that a crash half-way never brings it back with a lost state).
 * The entry's data stays readable; it must still be released.
 *
 * @return 0, ::SEMAIL_EINVAL (already removed), ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_queue_remove(semail_queue_entry *e);

/** Unlock and free an entry. NULL is accepted. */
SEMAIL_EXTERN void semail_queue_release(semail_queue_entry *e);

/**
 * Remove message @p qid (`semail-admin queue delete`): lock it (waiting up
 * to the lock timeout), remove it, release it. No bounce is sent.
 *
 * @return 0, ::SEMAIL_EINVAL, ::SEMAIL_ENOTFOUND, ::SEMAIL_ELOCKED (being
 *         delivered), ::SEMAIL_EIO. Thread-safe; works from another process.
 */
SEMAIL_EXTERN int semail_queue_delete(semail_queue *q, const char *qid);

/**
 * Make every message due now (`semail-admin queue flush`): writes the
 * current time to the file `flush` of the spool (atomically); a message
 * whose last attempt ended at or before that time is due for
 * semail_queue_lock_due() whatever its next attempt time. The daemon
 * notices at its next poll; no message file is touched, so this never waits
 * for a message being delivered.
 *
 * @return 0, ::SEMAIL_EFULL, ::SEMAIL_EIO. Thread-safe; works from another process.
 */
SEMAIL_EXTERN int semail_queue_flush(semail_queue *q);

/** A source of uniformly random 32-bit numbers (injected by tests). */
typedef uint32_t (*semail_queue_random_cb)(void *payload);

/** Version of ::semail_queue_retry known to these headers. */
#define SEMAIL_QUEUE_RETRY_VERSION 1

/** A retry policy: the `retry_schedule` and `max_queue_lifetime` settings. */
typedef struct semail_queue_retry {
    unsigned int version;          /**< SEMAIL_QUEUE_RETRY_VERSION. */
    const uint64_t *schedule_ms;   /**< Delays after attempts 1, 2, ...; after the last, the last
                                        again. NULL: 5m, 10m, 30m, 1h, 2h, 4h. Not copied. */
    size_t schedule_len;           /**< Number of @p schedule_ms. */
    uint64_t max_lifetime_ms;      /**< A message older than this expires; 0: 5 days. */
    unsigned int jitter_percent;   /**< Each delay is moved by up to +/- this percent (0 to 50). */
    semail_queue_random_cb random; /**< Random source for the jitter; NULL: getrandom(). */
    void *random_payload;          /**< Passed to @p random. */
} semail_queue_retry;

/** Static initializer: default schedule and lifetime, 10% jitter. */
#define SEMAIL_QUEUE_RETRY_INIT                                                                    \
    {                                                                                              \
        SEMAIL_QUEUE_RETRY_VERSION, NULL, 0, 0, 10, NULL, NULL                                     \
    }

/** Initialize @p policy to the defaults. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_queue_retry_init(semail_queue_retry *policy);

/**
 * When to try again after attempt number @p attempts (1 for the first)
 * ended at @p now_ms: now plus the schedule's delay for that attempt (the
 * last delay once the schedule is used up), moved by the jitter, at least
 * 1 s later, but never after the message's expiry time (arrival + max
 * lifetime; an expired message gets @p now_ms: it is due at once, to be
 * expired with semail_queue_expire()).
 *
 * @param[out] out  the next attempt time.
 * @param policy    the policy; NULL for the defaults.
 * @return 0, or ::SEMAIL_EINVAL (bad policy). Thread-safe if the random
 *         callback is.
 */
SEMAIL_EXTERN int semail_queue_retry_next(int64_t *out, const semail_queue_retry *policy,
                                          int64_t arrival_ms, unsigned int attempts,
                                          int64_t now_ms);

/**
 * Has a message that arrived at @p arrival_ms expired at @p now_ms
 * (arrival + max lifetime reached)? Returns 1 or 0. Thread-safe.
 */
SEMAIL_EXTERN int semail_queue_retry_expired(const semail_queue_retry *policy, int64_t arrival_ms,
                                             int64_t now_ms);

/**
 * If the entry's message has expired at @p now_ms, fail every pending
 * recipient durably with enhanced status 4.4.7, reply code 0 (the verdict
 * is ours, not a server's) and the text "delivery time expired (last error:
 * CODE X.Y.Z TEXT)" (or without the parenthesis before any attempt); the
 * remote host of the last attempt is kept.
 *
 * @return the number of recipients failed (0 when not expired), or
 *         ::SEMAIL_EINVAL / ::SEMAIL_EFULL / ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_queue_expire(semail_queue_entry *e, const semail_queue_retry *policy,
                                      int64_t now_ms);

/** The current time in milliseconds since the epoch (CLOCK_REALTIME). Thread-safe. */
SEMAIL_EXTERN int64_t semail_queue_now_ms(void);

SEMAIL_END_DECLS

#endif
