/**
 * @file smtp.h
 * @brief The SMTP server session: an I/O-free state machine (RFC 5321).
 *
 * A ::semail_session turns the bytes a client sent into replies and into
 * decisions asked of the embedder (may this recipient receive mail? here is
 * a complete message: deliver it). It never reads or writes a socket, so it
 * can be embedded in any event loop, unit-tested with strings and fuzzed.
 *
 * Typical use:
 * @code
 *   semail_session *s;
 *   semail_session_new(&s, &opts);            // greeting is now pending output
 *   for (;;) {
 *       send(fd, semail_session_output(s, &len), len); semail_session_output_consume(s, len);
 *       if (semail_session_state_get(s) == SEMAIL_STATE_CLOSED) break;
 *       n = recv(fd, buf, sizeof buf);
 *       semail_session_feed(s, buf, n);      // calls opts.rcpt / opts.message
 *   }
 *   semail_session_free(s);
 * @endcode
 *
 * The end of data is `<CRLF>.<CRLF>` and nothing else. A message that
 * carries a bare CR or a bare LF is refused as a whole (never split, never
 * ended early), so that no second message can be smuggled after it.
 *
 * AUTH (RFC 4954), mechanisms PLAIN and LOGIN, when the options offer it:
 * - accepted after EHLO/HELO and outside a transaction only (`503 5.5.1`
 *   before the greeting, inside a transaction, and once authenticated);
 *   `504 5.5.4` for another mechanism;
 * - an initial response is accepted with both mechanisms (`=` is the empty
 *   one); otherwise PLAIN sends the empty challenge `334 ` and LOGIN sends
 *   `334 VXNlcm5hbWU6` then `334 UGFzc3dvcmQ6`;
 * - a response `*` cancels (`501 5.0.0`); one that is not strict base64
 *   (RFC 4648: no blanks, padding only at the end) answers `501 5.5.2`, and
 *   so does one that decodes to something malformed (NUL outside the two
 *   PLAIN separators, an empty or over-long field); the exchange then ends
 *   and only the error is counted (max_errors), not a failure;
 * - lengths: the AUTH line is a command line (512 octets with CRLF, so an
 *   initial response has room for about 360 decoded octets: longer
 *   credentials go after the challenge); a response line may have 2048
 *   octets with CRLF, over that `500 5.5.6` ends the exchange; identities
 *   have at most 255 octets, passwords 1000;
 * - a PLAIN authorization identity must be empty or equal to the
 *   authentication identity (`535 5.7.8` otherwise, a failure);
 * - after `max_auth_failures` failed exchanges the session answers
 *   `421 4.7.0 Too many authentication failures` (instead of the last 535)
 *   and closes.
 *
 * Protocol abuse (the answers of Postfix's smtpd; docs/security.md lists
 * them all with the tests that show them):
 * - a client that pipelines without ESMTP, i.e. sends more input after a
 *   command before its reply while no EHLO has been accepted (after HELO,
 *   or before any greeting; the one exception is an EHLO line itself,
 *   which a client may send ahead of the replies it then reads), gets
 *   `554 5.5.1 Error: improper use of SMTP command pipelining` and the
 *   session closes. After EHLO, which advertises PIPELINING, any grouping
 *   is accepted (RFC 2920), so no correct client is ever cut off;
 * - an HTTP request line (GET, POST, HEAD, PUT, DELETE, CONNECT, OPTIONS,
 *   TRACE, PATCH) or a message header sent as a command (`Subject: x`,
 *   `From:<a@b>`: a word that is not a verb, does not begin with one
 *   (`MAILFROM:<a@b>` is a typo, answered 500) and contains a colon) is
 *   answered `221 2.7.0 Error: I can break rules, too. Goodbye.` and the
 *   session closes (Postfix's smtpd_forbid_cmds);
 * - NUL, bare CR or bare LF in a command: `501 5.5.2`, counted as an error;
 * - junk commands (NOOP, RSET, HELP, VRFY, EXPN): beyond
 *   `max_junk_commands` since the last message accepted, `421 4.7.0 Too
 *   many junk commands` and close;
 * - `max_errors` replies 4xx/5xx: `421 4.7.0 Too many errors` and close.
 */
#ifndef SEMAIL_SMTP_H
#define SEMAIL_SMTP_H

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Longest local part (RFC 5321 4.5.3.1.1), unquoted. */
#define SEMAIL_LOCAL_MAX 64
/** Longest domain (RFC 5321 4.5.3.1.2). */
#define SEMAIL_DOMAIN_MAX 255
/** Longest path, `<` and `>` included (RFC 5321 4.5.3.1.3). */
#define SEMAIL_PATH_MAX 256
/** Longest command line, CRLF included (RFC 5321 4.5.3.1.4). */
#define SEMAIL_COMMAND_LINE_MAX 512
/** Longest text line in DATA, CRLF included (RFC 5321 4.5.3.1.6). */
#define SEMAIL_TEXT_LINE_MAX 1000
/** Longest reply text this library builds, CRLF included. */
#define SEMAIL_REPLY_MAX 512

/**
 * A mailbox address as found in MAIL FROM or RCPT TO, after parsing.
 *
 * The local part is stored unquoted (`"a b"@x` gives `a b`); the domain is
 * stored as written (a name, or an address literal with its brackets).
 * Source routes (`@a,@b:`) are stripped, as RFC 5321 section 3.3 allows.
 */
typedef struct semail_address {
    int is_null;                        /**< 1 for the null path `<>`. */
    int local_quoted;                   /**< 1 when the local part was a quoted-string. */
    char local[SEMAIL_LOCAL_MAX + 1];   /**< Local part, unquoted, NUL-terminated. */
    char domain[SEMAIL_DOMAIN_MAX + 1]; /**< Domain or `[literal]`, NUL-terminated. */
} semail_address;

/** Flags for semail_address_parse(). */
typedef enum semail_address_flags {
    SEMAIL_ADDRESS_ALLOW_NULL = 1u << 0,      /**< Accept `<>` (MAIL FROM). */
    SEMAIL_ADDRESS_ALLOW_POSTMASTER = 1u << 1 /**< Accept `<Postmaster>` without a domain. */
} semail_address_flags;

/**
 * Parse a path (`<local@domain>`, angle brackets required) per RFC 5321 4.1.2.
 *
 * @param[out] out   the parsed address; zeroed on failure.
 * @param s          the text of the path, not NUL-terminated necessarily.
 * @param len        its length in bytes.
 * @param flags      a mask of ::semail_address_flags.
 * @param[out] consumed  when not NULL, the number of bytes of @p s that the
 *                   path used (parameters may follow).
 * @return 0, or ::SEMAIL_EINVAL (syntax) / ::SEMAIL_ETOOBIG (over a limit)
 *         with a message. Thread-safe.
 */
SEMAIL_EXTERN int semail_address_parse(semail_address *out, const char *s, size_t len,
                                       unsigned int flags, size_t *consumed);

/**
 * Write an address as `local@domain`, quoting the local part when it needs it;
 * the null path is written as the empty string.
 *
 * @param[out] out   buffer of @p size bytes (SEMAIL_PATH_MAX + 3 always fits).
 * @return 0, or ::SEMAIL_ETOOBIG. Thread-safe.
 */
SEMAIL_EXTERN int semail_address_format(char *out, size_t size, const semail_address *addr);

/** A reply: code, enhanced status code and text, as the session sends it. */
typedef struct semail_reply {
    int code;                    /**< 3-digit reply code, e.g. 250. */
    char enhanced[16];           /**< Enhanced status code, e.g. "2.1.5" (RFC 3463). */
    char text[SEMAIL_REPLY_MAX]; /**< Text without code or CRLF; one line. */
} semail_reply;

/**
 * Fill a reply. The text is formatted with printf rules and cut at the
 * buffer's end; CR and LF in it are replaced by spaces.
 */
SEMAIL_EXTERN void semail_reply_set(semail_reply *r, int code, const char *enhanced,
                                    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/** States of a session. A command is valid only in the states its table row names. */
typedef enum semail_session_state {
    SEMAIL_STATE_INIT = 0, /**< Greeting sent, no EHLO/HELO yet. */
    SEMAIL_STATE_READY,    /**< After EHLO/HELO, no transaction. */
    SEMAIL_STATE_MAIL,     /**< MAIL accepted, no recipient yet. */
    SEMAIL_STATE_RCPT,     /**< At least one recipient accepted. */
    SEMAIL_STATE_DATA,     /**< Reading the message after `354`. */
    SEMAIL_STATE_CLOSED,   /**< QUIT or a fatal error: send the output, then close. */
    SEMAIL_STATE_AUTH      /**< In a SASL exchange after AUTH (RFC 4954): the lines that
                                arrive are responses to `334` challenges, not commands. */
} semail_session_state;

/** An opaque SMTP session. */
typedef struct semail_session semail_session;

/** The envelope of the transaction in progress, valid during callbacks only. */
typedef struct semail_envelope {
    const char *helo;             /**< The EHLO/HELO argument. */
    int esmtp;                    /**< 1 after EHLO, 0 after HELO. */
    const semail_address *sender; /**< MAIL FROM (is_null for `<>`). */
    const semail_address *rcpts;  /**< Accepted recipients, in order. */
    size_t rcpt_count;            /**< Number of @p rcpts. */
    size_t declared_size;         /**< SIZE= parameter, 0 when absent. */
    int body_8bit;                /**< 1 when BODY=8BITMIME was given. */
    const char *client_addr;      /**< Client address text given in the options. */
    const char *txn_id;           /**< A unique id for this transaction (the queue id). */
    const char *auth_user;        /**< The identity accepted by AUTH; NULL without AUTH. */
    int tls;                      /**< 1 on a TLS connection (the option `tls`). */
} semail_envelope;

/**
 * Decide on one recipient. Fill @p reply (2xx accepts it, anything else
 * refuses it; the session sends the reply as is). Return 0, or a negative
 * ::semail_err when the decision could not be made (the session then
 * answers 451 4.3.0).
 */
typedef int (*semail_rcpt_cb)(semail_reply *reply, const semail_envelope *env,
                              const semail_address *rcpt, void *payload);

/**
 * Deliver a complete message. @p data holds the message as received after
 * dot-unstuffing: lines end in CRLF. Fill @p reply with the answer for the
 * whole transaction (250 only when the message is durably stored). Return
 * 0, or a negative code (the session then answers 451 4.3.0).
 */
typedef int (*semail_message_cb)(semail_reply *reply, const semail_envelope *env, const char *data,
                                 size_t len, void *payload);

/**
 * Decide on the sender given in MAIL FROM (optional callback). @p sender is
 * also in @p env (with the new transaction's id); `env->auth_user` and
 * `env->client_addr` say who is sending. Fill @p reply: 2xx accepts the
 * sender (the reply is sent as is), anything else refuses it and ends the
 * transaction, e.g. `553 5.7.1 Sender address rejected: not owned by user`.
 * Return 0, or a negative ::semail_err when the decision could not be made
 * (the session then answers 451 4.3.0).
 */
typedef int (*semail_mail_cb)(semail_reply *reply, const semail_envelope *env,
                              const semail_address *sender, void *payload);

/**
 * Check credentials received with AUTH PLAIN or LOGIN (RFC 4954).
 *
 * @p authcid is the authentication identity (1 to 255 octets, no control
 * characters), @p password the password (1 to 1000 octets, no NUL; any
 * other octet, UTF-8 included). Both are NUL-terminated and valid during the
 * call only; the session wipes its decoded copies afterwards. A PLAIN
 * authorization identity other than empty or @p authcid is refused (535)
 * before this is called. Fill @p reply:
 * - any 2xx: authenticated (answer `235 2.7.0`; another 2xx code is sent
 *   as `235 2.7.0` with its text), and `env->auth_user` is @p authcid from
 *   then on;
 * - `535 5.7.8` (bad credentials), or any other 5xx: a failure, counted
 *   towards `max_auth_failures`;
 * - a 4xx (e.g. `454 4.7.0`, the directory is unreachable): not counted.
 * Return 0, or a negative ::semail_err when the check could not be made (the
 * session answers `454 4.7.0 Temporary authentication failure`). The
 * callback may sleep to slow down password guessing: it runs in the
 * connection's thread.
 */
typedef int (*semail_auth_cb)(semail_reply *reply, const semail_envelope *env, const char *authcid,
                              const char *password, void *payload);

/** Version of ::semail_session_options known to these headers. */
#define SEMAIL_SESSION_OPTIONS_VERSION 1

/** Options of a session. Strings are copied by semail_session_new(). */
typedef struct semail_session_options {
    unsigned int version;        /**< SEMAIL_SESSION_OPTIONS_VERSION. */
    const char *hostname;        /**< Our name, in the greeting and EHLO reply. */
    const char *client_addr;     /**< The client's address, for the envelope and logs. */
    size_t max_message_size;     /**< 0: no limit is advertised ("SIZE"); a session
                                      still never holds more than 64 MiB of message. */
    unsigned int max_recipients; /**< RCPT over this answer 452 4.5.3; 0: 100. */
    unsigned int max_errors;     /**< Errors before 421 and close; 0: 20. */
    semail_rcpt_cb rcpt;         /**< Required: recipient decision. */
    semail_message_cb message;   /**< Required: delivery. */
    void *payload;               /**< Passed to the callbacks. */
    /** 1: EHLO advertises `AUTH PLAIN LOGIN` and AUTH is accepted (needs @p auth).
     *  0: AUTH is answered `538 5.7.11 Encryption required for requested
     *  authentication mechanism` when @p auth is set and @p tls is 0 (AUTH
     *  exists, but only over TLS), `503 5.5.1` otherwise. */
    int auth_offered;
    semail_auth_cb auth; /**< Credential check; required when @p auth_offered. */
    /** Failed AUTH exchanges (5xx) before `421 4.7.0 Too many authentication
     *  failures` and close; 0: 3. */
    unsigned int max_auth_failures;
    semail_mail_cb mail; /**< Optional sender decision at MAIL; NULL accepts. */
    int tls;             /**< 1 when the connection is TLS (for the envelope). */
    /** Junk commands (NOOP, RSET, HELP, VRFY, EXPN) allowed between two accepted
     *  messages before `421 4.7.0 Too many junk commands`; 0: 100 (Postfix's
     *  smtpd_junk_command_limit). Appended: version 1 callers that zero the
     *  struct get the default. */
    unsigned int max_junk_commands;
} semail_session_options;

/** Static initializer with the version set and everything else default. */
#define SEMAIL_SESSION_OPTIONS_INIT                                                                \
    {                                                                                              \
        .version = SEMAIL_SESSION_OPTIONS_VERSION                                                  \
    }

/** Initialize @p opts to defaults. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_session_options_init(semail_session_options *opts);

/**
 * Create a session; the `220` greeting is queued as output at once.
 *
 * @param[out] out  the new session, to be freed with semail_session_free().
 * @param opts      options (required: hostname, rcpt, message).
 * @return 0, ::SEMAIL_EINVAL, ::SEMAIL_ENOMEM. Thread-safe; the session
 *         itself must be used by one thread at a time.
 */
SEMAIL_EXTERN int semail_session_new(semail_session **out, const semail_session_options *opts);

/** Free a session and everything it holds. NULL is accepted. */
SEMAIL_EXTERN void semail_session_free(semail_session *s);

/**
 * Feed bytes received from the client. Every complete command line (or
 * DATA line) is processed at once, callbacks included; replies accumulate
 * in the output, so a pipelined group of commands gets its replies in one
 * piece. Incomplete trailing input is kept for the next call.
 *
 * Flow control: once the pending output passes 64 KiB (a client pipelining
 * without reading the replies), processing pauses and the input is kept;
 * semail_session_output_consume() resumes it. Over 256 KiB of input kept
 * that way, the session answers `421 4.7.0` and closes. Feeding NULL, 0 is
 * allowed and also resumes processing.
 *
 * @return 0, ::SEMAIL_EINVAL (NULL data with a length) or ::SEMAIL_ENOMEM.
 *         Protocol errors are not failures: they are answered in the output.
 */
SEMAIL_EXTERN int semail_session_feed(semail_session *s, const char *data, size_t len);

/**
 * The pending output (replies not yet sent).
 *
 * @param[out] len  number of bytes pending.
 * @return a pointer into the session, valid until the next call on it.
 */
SEMAIL_EXTERN const char *semail_session_output(const semail_session *s, size_t *len);

/**
 * Mark @p n bytes of the output as sent. When processing had paused on a
 * full output, it resumes here: the callbacks may be called from this
 * function and more output may be queued.
 */
SEMAIL_EXTERN void semail_session_output_consume(semail_session *s, size_t n);

/** The current state. */
SEMAIL_EXTERN semail_session_state semail_session_state_get(const semail_session *s);

/**
 * Whether the session is between commands with no partial input (not in
 * DATA, not in an AUTH exchange): the only moment at which a server may
 * close it gracefully (e.g. at shutdown).
 */
SEMAIL_EXTERN int semail_session_idle(const semail_session *s);

/**
 * Queue a `421 4.x.x` reply and move to ::SEMAIL_STATE_CLOSED (idle timeout,
 * shutdown, too many connections). @p text may be NULL for a default text.
 */
SEMAIL_EXTERN void semail_session_shutdown(semail_session *s, const char *enhanced,
                                           const char *text);

/**
 * The argument of the last EHLO or HELO accepted, "" before any (a name is
 * never empty). Valid until the next call that feeds the session. NULL for a
 * NULL session. Not thread-safe against a concurrent feed.
 */
SEMAIL_EXTERN const char *semail_session_helo(const semail_session *s);

/**
 * The identity accepted by AUTH, or NULL when the client has not
 * authenticated (it lasts as long as the session: RSET and EHLO keep it).
 * Valid until the session is freed.
 */
SEMAIL_EXTERN const char *semail_session_auth_user(const semail_session *s);

/** Statistics of a session, for the log line written at its end. */
typedef struct semail_session_stats {
    unsigned int messages; /**< Messages accepted (2xx after DATA). */
    unsigned int rejected; /**< Commands answered 4xx/5xx. */
    unsigned int commands; /**< Commands processed. */
} semail_session_stats;

/** Copy the session's statistics into @p out. */
SEMAIL_EXTERN void semail_session_stats_get(const semail_session *s, semail_session_stats *out);

SEMAIL_END_DECLS

#endif
