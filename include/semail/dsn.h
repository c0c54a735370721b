/**
 * @file dsn.h
 * @brief Delivery status notifications (bounces, RFC 3464).
 *
 * A bounce is a message from `MAILER-DAEMON@<hostname>` to the original
 * envelope sender, `Content-Type: multipart/report;
 * report-type=delivery-status`, with three parts: a text explaining which
 * recipients failed and why (the remote server's answer), a
 * `message/delivery-status` part (RFC 3464 fields), and the original
 * message's header as `text/rfc822-headers`. It carries `Date`,
 * `Message-ID`, `MIME-Version` and `Auto-Submitted: auto-replied`
 * (RFC 3834).
 *
 * The output has CRLF line ends and no line over 998 octets: long fields are
 * folded at spaces, overlong words cut. Every string from outside (the
 * remote server's text, addresses, the original header) is sanitized: CR,
 * LF and other control bytes become spaces, bytes outside ASCII become `?`
 * (except in the original header, kept as it was with line ends
 * normalized), so no input can add a header field or a MIME part.
 *
 * A bounce is never sent to the null sender (`<>`): building one for it
 * fails with ::SEMAIL_EINVAL, so that two mail systems can never bounce
 * bounces at each other (RFC 5321 section 6.1). The bounce itself is
 * queued with the null sender.
 */
#ifndef SEMAIL_DSN_H
#define SEMAIL_DSN_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/queue.h"

SEMAIL_BEGIN_DECLS

/** Largest part of the original message's header copied into a bounce. */
#define SEMAIL_DSN_HEADERS_MAX 65536

/** What happened to a recipient (the `Action:` field). */
typedef enum semail_dsn_action {
    SEMAIL_DSN_FAILED = 0, /**< Given up: `Action: failed`. */
    SEMAIL_DSN_DELAYED = 1 /**< Still being retried (a warning): `Action: delayed`. */
} semail_dsn_action;

/** One recipient reported on. Strings are the caller's and only read. */
typedef struct semail_dsn_rcpt {
    const char *address;      /**< The recipient (`Final-Recipient: rfc822; ...`); required. */
    semail_dsn_action action; /**< Failed or delayed. */
    int code;                 /**< The remote reply code (e.g. 550); 0: no reply was received. */
    const char *enhanced;     /**< Status "x.y.z"; NULL, "" or malformed: 5.0.0 (failed) or
                                   4.0.0 (delayed). */
    const char *text;         /**< The remote answer's text, or our reason; may be NULL. */
    const char *remote_host;  /**< The server that answered (`Remote-MTA`); NULL or "": none. */
    int64_t last_attempt_ms;  /**< `Last-Attempt-Date` (ms since the epoch); 0: omitted. */
} semail_dsn_rcpt;

/** Version of ::semail_dsn_report known to these headers. */
#define SEMAIL_DSN_REPORT_VERSION 1

/** Everything a bounce reports on. Strings are the caller's and only read. */
typedef struct semail_dsn_report {
    unsigned int version;         /**< SEMAIL_DSN_REPORT_VERSION. */
    const char *hostname;         /**< Our name: `Reporting-MTA`, `MAILER-DAEMON@hostname`. */
    const char *sender;           /**< The original envelope sender: the bounce goes to it.
                                       NULL or "" (the null sender) is refused. */
    const char *qid;              /**< The original message's queue id, or NULL. */
    int64_t arrival_ms;           /**< `Arrival-Date`; 0: omitted. */
    int64_t now_ms;               /**< The bounce's `Date`; 0: now. */
    const semail_dsn_rcpt *rcpts; /**< The recipients reported on (at least one). */
    size_t rcpt_count;            /**< Number of @p rcpts. */
    const char *message;          /**< The original message (its header is copied); may be NULL. */
    size_t message_len;           /**< Length of @p message. */
} semail_dsn_report;

/** Static initializer: everything empty. */
#define SEMAIL_DSN_REPORT_INIT                                                                     \
    {                                                                                              \
        SEMAIL_DSN_REPORT_VERSION, NULL, NULL, NULL, 0, 0, NULL, 0, NULL, 0                        \
    }

/** Initialize @p report to empty. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_dsn_report_init(semail_dsn_report *report);

/**
 * Build the bounce message for @p report.
 *
 * @param[out] out      the message (CRLF lines, NUL-terminated), freed with
 *                      semail_dsn_free().
 * @param[out] out_len  its length without the NUL; may be NULL.
 * @param report        what to report.
 * @return 0; ::SEMAIL_EINVAL (null sender, no recipient, a hostname or
 *         address with a control byte or non-ASCII, a hostname with a
 *         space, unknown version),
 *         ::SEMAIL_ENOMEM, ::SEMAIL_EIO (no random numbers). Thread-safe.
 */
SEMAIL_EXTERN int semail_dsn_build(char **out, size_t *out_len, const semail_dsn_report *report);

/**
 * Build the bounce for a locked queue entry: it reports every recipient
 * that has failed and whose sender has not been notified yet (see
 * semail_queue_mark_notified(), to call once the bounce is queued).
 *
 * @param[out] out      as for semail_dsn_build().
 * @param[out] out_len  as for semail_dsn_build().
 * @param e             a locked entry.
 * @param hostname      our name.
 * @param now_ms        the bounce's date; 0: now.
 * @return 0; ::SEMAIL_ENOTFOUND (no failure to report), ::SEMAIL_EINVAL (the
 *         message's sender is the null sender: never bounce it), and the
 *         errors of semail_dsn_build(). Thread-safe for the entry's owner.
 */
SEMAIL_EXTERN int semail_dsn_build_for_entry(char **out, size_t *out_len,
                                             const semail_queue_entry *e, const char *hostname,
                                             int64_t now_ms);

/** Free a message built by this module. NULL is accepted. */
SEMAIL_EXTERN void semail_dsn_free(char *dsn);

SEMAIL_END_DECLS

#endif
