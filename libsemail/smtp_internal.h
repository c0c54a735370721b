/*
 * smtp_internal.h - what the files of the SMTP server session share: the
 * limits (all of them, in one place), the session and transaction structs,
 * and the hidden functions that cross file boundaries.
 *
 * Contract: the session state is changed only by semail__smtp_enter_state();
 * a transaction exists exactly while the state is MAIL, RCPT or DATA.
 * Nothing here does socket I/O.
 */
#ifndef SEMAIL_SMTP_INTERNAL_H
#define SEMAIL_SMTP_INTERNAL_H

#include "semail/smtp.h"
#include "internal.h"

/* ---- limits (Postfix's mail_params.h: every limit named, here) ----------- */

/* Longest EHLO/HELO argument kept; longer ones are refused (501). */
#define SMTP_HELO_MAX 255
/* Longest hostname and client address accepted in the options. */
#define SMTP_HOSTNAME_MAX    255
#define SMTP_CLIENT_ADDR_MAX 255
/* Length of a transaction id: upper-case hex from getrandom(2). */
#define SMTP_TXN_ID_LEN 12
/* Defaults of the options whose 0 means "default". */
#define SMTP_DEFAULT_MAX_RECIPIENTS 100u
#define SMTP_DEFAULT_MAX_ERRORS     20u
#define SMTP_DEFAULT_MAX_JUNK       100u
/*
 * Memory bound on a message when max_message_size is 0 ("no limit
 * advertised"): a session never holds more than this, whatever the client.
 */
#define SMTP_MESSAGE_HARD_MAX ((size_t)64 << 20)
/*
 * Output: past the soft maximum the session stops processing input until
 * the embedder consumes output (a client pipelining without reading). The
 * hard maximum leaves room for the replies of the line being processed.
 */
#define SMTP_OUTPUT_SOFT_MAX ((size_t)64 << 10)
#define SMTP_OUTPUT_MAX      (SMTP_OUTPUT_SOFT_MAX + ((size_t)16 << 10))
/*
 * Input kept while processing is paused; beyond it the session answers 421
 * and closes. While processing runs, at most one partial line is kept.
 */
#define SMTP_INPUT_MAX ((size_t)256 << 10)
/* Digits accepted in a SIZE= value (fits in 64 bits). */
#define SMTP_SIZE_DIGITS_MAX 19
/*
 * AUTH (RFC 4954). A SASL response line may be longer than a command line
 * (RFC 4954 4 allows 12288 octets); 2048 with CRLF holds the base64 of the
 * longest PLAIN message: 255 + 1 + 255 + 1 + 1000 octets.
 */
#define SMTP_SASL_LINE_MAX         2048
#define SMTP_AUTH_ID_MAX           255
#define SMTP_AUTH_PASSWORD_MAX     1000
#define SMTP_DEFAULT_AUTH_FAILURES 3u

/* ---- the transaction: created at MAIL, freed at the end of DATA or RSET -- */

/* Why a message being read will be refused at its end. */
enum smtp_data_flags {
    SMTP_DATA_BARE = 1u << 0,      /* bare CR or LF seen: refuse, never split */
    SMTP_DATA_LONG_LINE = 1u << 1, /* a text line over SEMAIL_TEXT_LINE_MAX */
    SMTP_DATA_TOO_BIG = 1u << 2,   /* over the size limit: storing stopped */
    SMTP_DATA_NOMEM = 1u << 3      /* allocation failed: storing stopped */
};

typedef struct smtp_txn {
    char id[SMTP_TXN_ID_LEN + 1];
    semail_address sender;
    semail_address *rcpts; /* accepted recipients, grown up to max_recipients */
    size_t rcpt_count;
    size_t rcpt_cap;
    size_t declared_size;
    int body_8bit;
    semail_buf data;         /* the unstuffed message, bounded by the size limit */
    unsigned int data_flags; /* enum smtp_data_flags */
    int in_long_line;        /* the text line being read is already too long */
} smtp_txn;

/* Where a SASL exchange stands (meaningful in SEMAIL_STATE_AUTH only). */
enum smtp_sasl_step {
    SASL_PLAIN = 1,      /* waiting for the PLAIN message */
    SASL_LOGIN_USER = 2, /* waiting for the LOGIN user name */
    SASL_LOGIN_PASS = 3  /* waiting for the LOGIN password (user name in sasl_user) */
};

struct semail_session {
    semail_session_state state; /* written only by semail__smtp_enter_state() */
    char *hostname;
    char *client_addr;
    size_t max_message_size; /* as configured: 0 means not advertised */
    size_t data_max;         /* what is enforced: the configured size or the hard cap */
    unsigned int max_recipients;
    unsigned int max_errors;
    semail_rcpt_cb rcpt_cb;
    semail_message_cb message_cb;
    void *payload;
    char helo[SMTP_HELO_MAX + 1];
    int esmtp;
    smtp_txn *txn;  /* non-NULL exactly in MAIL, RCPT and DATA */
    semail_buf in;  /* input not processed yet (a partial line, or paused input) */
    semail_buf out; /* replies not sent yet */
    int discarding; /* dropping an over-long command line up to its CRLF */
    int paused;     /* input waits until the output drains below the soft maximum */
    unsigned int errors;
    unsigned int max_junk;
    unsigned int junk; /* junk commands since the last message accepted */
    semail_session_stats stats;
    /* AUTH */
    int auth_offered;
    int tls;
    semail_auth_cb auth_cb;
    semail_mail_cb mail_cb;
    unsigned int max_auth_failures;
    unsigned int auth_failures;
    char *auth_user;                      /* set once, on success */
    enum smtp_sasl_step sasl_step;        /* set on entering SEMAIL_STATE_AUTH */
    char sasl_user[SMTP_AUTH_ID_MAX + 1]; /* LOGIN: the user name, between the steps */
};

/* ---- smtp_session.c ------------------------------------------------------ */

/*
 * The one place where the state changes; leaving the transaction states frees
 * it. Entering SEMAIL_STATE_AUTH takes the SASL step STEP (ignored otherwise);
 * leaving it wipes what the exchange kept.
 */
SEMAIL_HIDDEN void semail__smtp_enter_state_step(semail_session *s, semail_session_state st,
                                                 enum smtp_sasl_step step);
/* semail__smtp_enter_state_step() for every state but AUTH. */
SEMAIL_HIDDEN void semail__smtp_enter_state(semail_session *s, semail_session_state st);
/* Start a transaction (fresh id); fills R and returns <0 when it cannot. */
SEMAIL_HIDDEN int semail__smtp_txn_begin(semail_session *s, semail_reply *r);
/* Add an accepted recipient to the transaction. */
SEMAIL_HIDDEN int semail__smtp_txn_add_rcpt(semail_session *s, const semail_address *a);
/* The envelope of the current transaction (sender/rcpts NULL when none). */
SEMAIL_HIDDEN void semail__smtp_envelope(const semail_session *s, semail_envelope *env);
/* Queue a final reply line; counts errors and closes at max_errors or on 421. */
SEMAIL_HIDDEN void semail__smtp_send(semail_session *s, const semail_reply *r);
/* Queue R as the last reply and close (protocol violations: 554, 221 2.7.0). */
SEMAIL_HIDDEN void semail__smtp_send_close(semail_session *s, const semail_reply *r);
/* Queue a continuation line ("250-TEXT") of a multi-line reply. */
SEMAIL_HIDDEN void semail__smtp_send_continue(semail_session *s, int code, const char *text);

/* ---- smtp_commands.c ----------------------------------------------------- */

/* Process one complete command line, CRLF removed (LEN < SEMAIL_COMMAND_LINE_MAX - 1). */
SEMAIL_HIDDEN void semail__smtp_command(semail_session *s, const char *line, size_t len);

/* ---- smtp_auth.c: AUTH (RFC 4954) ------------------------------------------ */

/* The AUTH command (state READY, ARG is "MECH [initial-response]"); fills R,
 * with a 334 challenge when the exchange goes on. */
SEMAIL_HIDDEN void semail__smtp_auth(semail_session *s, const char *arg, size_t len,
                                     semail_reply *r);
/* One response line of the SASL exchange (state AUTH), CRLF removed. */
SEMAIL_HIDDEN void semail__smtp_sasl_line(semail_session *s, const char *line, size_t len);
/* A response line over SMTP_SASL_LINE_MAX: answer and end the exchange. */
SEMAIL_HIDDEN void semail__smtp_sasl_too_long(semail_session *s);

/* ---- smtp_reply.c -------------------------------------------------------- */

/*
 * Append R to OUT as one line, "CODE ENH TEXT\r\n" ("CODE-..." when MORE);
 * the enhanced code is left out when R->enhanced is "". The text is made
 * safe (no control or 8-bit bytes) and cut so the line fits SEMAIL_REPLY_MAX.
 */
SEMAIL_HIDDEN int semail__smtp_reply_format(semail_buf *out, const semail_reply *r, int more);
/*
 * Make a reply filled by an embedder's callback safe to send: NUL-terminated
 * text, an enhanced code of the right class. Returns <0 when the code is not
 * a 2xx, 4xx or 5xx reply (the caller then answers 451 4.3.0).
 */
SEMAIL_HIDDEN int semail__smtp_reply_check(semail_reply *r);

/* ---- smtp_address.c: MAIL and RCPT arguments ----------------------------- */

typedef struct smtp_mail_params {
    size_t size; /* SIZE=, 0 when absent */
    int body_8bit;
} smtp_mail_params;

/*
 * Parse the argument of MAIL ("FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME]").
 * On failure fill R with the reply (501/555) and return <0.
 */
SEMAIL_HIDDEN int semail__smtp_parse_mail(semail_address *addr, smtp_mail_params *p,
                                          const char *arg, size_t len, semail_reply *r);
/* Parse the argument of RCPT ("TO:<path>", no parameters); like the above. */
SEMAIL_HIDDEN int semail__smtp_parse_rcpt(semail_address *addr, const char *arg, size_t len,
                                          semail_reply *r);

#endif
