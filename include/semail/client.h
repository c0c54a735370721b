/**
 * @file client.h
 * @brief The SMTP client: one delivery attempt to one server address.
 *
 * semail_client_deliver() connects to one address (IPv6 or IPv4, the port
 * set by the caller), speaks RFC 5321 with the ESMTP extensions SIZE,
 * 8BITMIME, PIPELINING (RFC 2920) and ENHANCEDSTATUSCODES, sends one
 * message to a list of recipients and says what became of each of them.
 * It never resolves names and never retries: trying the next MX address and
 * retrying later are the caller's (the queue's) decisions, made from the
 * ::semail_client_result.
 *
 * Typical use:
 * @code
 *   semail_client_options o = SEMAIL_CLIENT_OPTIONS_INIT;
 *   semail_client_result *res;
 *   o.helo_name = "mx.semail.test";
 *   o.remote_name = "mx1.example.org";
 *   if (semail_client_deliver(&res, &o, sa, salen, "bob@semail.test", rcpts, n, msg, len) < 0)
 *       ...;                                  // bad arguments or no memory: nothing was tried
 *   for (i = 0; i < semail_client_result_rcpt_count(res); i++) {
 *       const semail_client_status *st = semail_client_result_rcpt(res, i);
 *       // st->action: delivered, deferred (retry) or failed (bounce)
 *   }
 *   semail_client_result_free(res);
 * @endcode
 *
 * Failures are classified as a sending MTA must (RFC 5321 4.2.5, 6.1):
 * a failed connection, a refused greeting or EHLO/HELO, a timeout, a lost
 * connection, a malformed reply and a `421` defer every recipient not yet
 * decided; a 5xx to MAIL fails them all; each RCPT reply decides its own
 * recipient; a 5xx after DATA fails every accepted recipient, a 4xx defers
 * them.
 *
 * The message is sent with CRLF line ends whatever it was given with (LF,
 * CRLF, or a lone CR, each of which ends a line), dot-stuffed, and ended
 * with `<CRLF>.<CRLF>`: no bare CR or LF ever reaches the wire. Lines are
 * not folded: a message is sent with the line lengths it has. A message
 * with 8-bit bytes goes with `BODY=8BITMIME` when the server offers it, and
 * unchanged (no MIME downgrade) when it does not.
 */
#ifndef SEMAIL_CLIENT_H
#define SEMAIL_CLIENT_H

#include <sys/types.h>
#include <sys/socket.h>

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Longest reply line accepted from a server, CRLF included; longer: malformed. */
#define SEMAIL_CLIENT_REPLY_LINE_MAX 4096
/** Largest reply (all lines together) accepted from a server; larger: malformed. */
#define SEMAIL_CLIENT_REPLY_MAX 65536
/** Most lines in one reply; more: malformed. */
#define SEMAIL_CLIENT_REPLY_LINES_MAX 256

/** What became of a recipient (or of the session): the RFC 3464 `Action`. */
typedef enum semail_client_action {
    SEMAIL_CLIENT_DELIVERED = 0, /**< The server took responsibility (2xx after the data). */
    SEMAIL_CLIENT_DEFERRED = 1,  /**< A transient failure: try the next address, retry later. */
    SEMAIL_CLIENT_FAILED = 2     /**< A permanent failure: bounce, do not retry. */
} semail_client_action;

/** The step of the dialogue at which a status was decided (for bounce texts). */
typedef enum semail_client_stage {
    SEMAIL_CLIENT_STAGE_CONNECT = 0, /**< Connecting (refused, unreachable, timed out). */
    SEMAIL_CLIENT_STAGE_GREETING,    /**< Waiting for the `220` greeting. */
    SEMAIL_CLIENT_STAGE_HELO,        /**< EHLO, then HELO. */
    SEMAIL_CLIENT_STAGE_MAIL,        /**< MAIL FROM (or a local refusal before it, e.g. SIZE). */
    SEMAIL_CLIENT_STAGE_RCPT,        /**< RCPT TO. */
    SEMAIL_CLIENT_STAGE_DATA,        /**< The DATA command, before `354`. */
    SEMAIL_CLIENT_STAGE_DOT          /**< Sending the message and the reply to the final dot. */
} semail_client_stage;

/**
 * The outcome for one recipient, or for the session as a whole.
 *
 * When @p code is 0 no reply from the server decided it (the connection
 * failed, a timeout, a malformed reply, a local refusal): @p text is then
 * ours and @p enhanced is chosen locally (4.4.1 connection failed, 4.4.2
 * timeout or lost connection, 4.5.0 protocol error, 5.3.4 message too big
 * for the server, 5.1.3 / 5.1.7 bad address). Otherwise @p code and @p text
 * are the server's reply and fit a DSN `Diagnostic-Code: smtp; CODE TEXT`.
 */
typedef struct semail_client_status {
    semail_client_action action; /**< Delivered, deferred or failed. */
    int permanent;               /**< 1 exactly when @p action is ::SEMAIL_CLIENT_FAILED. */
    int code;                    /**< The server's 3-digit reply code, or 0 (see above). */
    char enhanced[16];           /**< RFC 3463 status, e.g. "5.1.1": the reply's own when it
                                      carried one, else derived from its class ("5.0.0"). */
    const char *text;            /**< Reply text: lines joined by one space, code and enhanced
                                      code removed, printable ASCII only. Owned by the result. */
    semail_client_stage stage;   /**< Where it was decided. */
    const char *rcpt;            /**< The recipient as given; NULL for the session status. */
} semail_client_status;

/** An opaque result of semail_client_deliver(). */
typedef struct semail_client_result semail_client_result;

/** Version of ::semail_client_options known to these headers. */
#define SEMAIL_CLIENT_OPTIONS_VERSION 1

/**
 * Options of a delivery attempt. A timeout of 0 takes its default: the
 * minimum of RFC 5321 section 4.5.3.2. Strings are copied by
 * semail_client_deliver() (nothing is kept after it returns).
 */
typedef struct semail_client_options {
    unsigned int version;              /**< SEMAIL_CLIENT_OPTIONS_VERSION. */
    const char *helo_name;             /**< Our name in EHLO/HELO; NULL: "localhost". */
    const char *remote_name;           /**< The server's host name (the MX name), for the result's
                                            `Remote-MTA`; NULL: the address. */
    const struct sockaddr *source;     /**< Local address to bind before connecting; NULL: any. */
    socklen_t source_len;              /**< Length of @p source. */
    unsigned int connect_timeout_ms;   /**< Connection set-up; 0: 30000. */
    unsigned int greeting_timeout_ms;  /**< The `220` greeting (4.5.3.2.1); 0: 300000. */
    unsigned int command_timeout_ms;   /**< Replies to EHLO/HELO, MAIL, RCPT (4.5.3.2.2-3);
                                            0: 300000. */
    unsigned int data_init_timeout_ms; /**< Reply to DATA (4.5.3.2.4); 0: 120000. */
    unsigned int data_timeout_ms;      /**< Each block of data sent (4.5.3.2.5); 0: 180000. */
    unsigned int data_done_timeout_ms; /**< Reply to the final dot (4.5.3.2.6); 0: 600000. */
    unsigned int quit_timeout_ms;      /**< Reply to QUIT, which decides nothing; 0: 30000. */
    unsigned int pipeline_max;         /**< Most commands sent in one PIPELINING group; 0: 100. */
} semail_client_options;

/** Static initializer with the version set and every default. */
#define SEMAIL_CLIENT_OPTIONS_INIT                                                                 \
    {                                                                                              \
        SEMAIL_CLIENT_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0                 \
    }

/**
 * Initialize @p opts to the defaults.
 * @return 0, or ::SEMAIL_EINVAL when @p opts is NULL. Thread-safe.
 */
SEMAIL_EXTERN int semail_client_options_init(semail_client_options *opts);

/**
 * Make one delivery attempt of one message to one server address.
 *
 * Connects (non-blocking, bounded by the connect timeout) to @p addr,
 * optionally from @p opts->source, reads the greeting, sends EHLO (HELO
 * when EHLO is answered 5xx), MAIL FROM with `SIZE=` when the server offers
 * SIZE and `BODY=8BITMIME` when the message has 8-bit bytes and the server
 * offers 8BITMIME, one RCPT TO per recipient, DATA when at least one
 * recipient was accepted, the message, and QUIT. With PIPELINING, MAIL, the
 * RCPTs and DATA go in one group (RFC 2920); without, one at a time. A
 * message larger than the server's SIZE is not sent: every recipient fails
 * with 5.3.4. A hanging server defers every undecided recipient (4.4.2)
 * after the RFC 5321 timeouts in @p opts.
 *
 * A 5xx greeting, or a 5xx to both EHLO and HELO, defers every recipient
 * (with the enhanced code's class turned into 4): the host refuses, not
 * the message, and another MX may take it.
 *
 * A recipient that is not a valid path body (no CR, LF, other control
 * characters, 8-bit bytes, `<` or `>`; at most 254 octets) fails with 5.1.3
 * without being sent.
 *
 * @param[out] out    the result, to be freed with semail_client_result_free();
 *                    NULL on failure.
 * @param opts        options; NULL for defaults.
 * @param addr        the server's address (AF_INET6 or AF_INET, port set).
 * @param addrlen     length of @p addr.
 * @param sender      the envelope sender as `local@domain`; "" for the null
 *                    sender `<>`.
 * @param rcpts       the recipients as `local@domain`.
 * @param rcpt_count  number of @p rcpts (at least 1).
 * @param data        the message (header and body), LF or CRLF line ends;
 *                    not dot-stuffed, no final dot.
 * @param len         length of @p data.
 * @return 0 whenever a result was made, whatever became of the message (the
 *         result says); ::SEMAIL_EINVAL for bad arguments (NULL pointers, no
 *         recipient, an invalid sender, an address family other than IPv6
 *         or IPv4), ::SEMAIL_ENOMEM. On failure nothing was sent.
 *
 * Thread-safe: any number of threads may deliver at once; the call holds
 * no shared state. It blocks for at most the sum of the timeouts involved.
 * Writes use MSG_NOSIGNAL: a closed connection never raises SIGPIPE.
 */
SEMAIL_EXTERN int semail_client_deliver(semail_client_result **out,
                                        const semail_client_options *opts,
                                        const struct sockaddr *addr, socklen_t addrlen,
                                        const char *sender, const char *const *rcpts,
                                        size_t rcpt_count, const char *data, size_t len);

/** Free a result and every string it holds. NULL is accepted. */
SEMAIL_EXTERN void semail_client_result_free(semail_client_result *res);

/**
 * The outcome of the session as a whole: for a message the server took,
 * the reply to the final dot; otherwise the failure that ended the
 * transaction (connection, greeting, EHLO/HELO, MAIL, DATA, a timeout; or
 * "no recipient accepted", code 0, deferred when any recipient was
 * deferred and failed otherwise).
 *
 * @return a status owned by @p res (its @p rcpt is NULL). Thread-safe for
 *         concurrent readers of the same result.
 */
SEMAIL_EXTERN const semail_client_status *
semail_client_result_session(const semail_client_result *res);

/** Number of recipients in @p res: the @p rcpt_count given to the delivery. */
SEMAIL_EXTERN size_t semail_client_result_rcpt_count(const semail_client_result *res);

/**
 * The outcome for recipient @p i, in the order given to semail_client_deliver().
 * @return a status owned by @p res, or NULL when @p i is out of range.
 */
SEMAIL_EXTERN const semail_client_status *semail_client_result_rcpt(const semail_client_result *res,
                                                                    size_t i);

/**
 * The server's name for a DSN `Remote-MTA`: the options' remote_name when
 * one was given, else the address as text (e.g. "2001:db8::25").
 * @return a string owned by @p res; never NULL.
 */
SEMAIL_EXTERN const char *semail_client_result_remote_name(const semail_client_result *res);

/**
 * The server's address and port as text, `[2001:db8::25]:25` or
 * `192.0.2.25:25`, for logs.
 * @return a string owned by @p res; never NULL.
 */
SEMAIL_EXTERN const char *semail_client_result_remote_addr(const semail_client_result *res);

/**
 * Whether the server advertised the EHLO keyword @p keyword (ASCII, any
 * case), e.g. "PIPELINING", "SIZE", "AUTH", and with which parameters.
 *
 * @return NULL when it was not advertised (or the session never reached
 *         EHLO, or fell back to HELO); else its parameters as sent ("" when
 *         none, "52428800" for `SIZE 52428800`). Owned by @p res.
 */
SEMAIL_EXTERN const char *semail_client_result_extension(const semail_client_result *res,
                                                         const char *keyword);

/**
 * The RFC 3464 `Action` word of an action: "delivered", "delayed" (for
 * ::SEMAIL_CLIENT_DEFERRED) or "failed".
 * @return a static string; never NULL ("failed" for an unknown value). Thread-safe.
 */
SEMAIL_EXTERN const char *semail_client_action_name(semail_client_action action);

SEMAIL_END_DECLS

#endif
