/*
 * smtp_client_internal.h - what the files of the SMTP client share: its
 * limits and defaults (in one place), the reply parser, the EHLO keyword
 * table, and the connection layer through which every byte passes.
 *
 * Contract: the dialogue logic (smtp_client.c) never touches a socket; it
 * reads lines and writes bytes through a semail__client_conn, whose
 * transport is a pair of function pointers, so that TLS can be slotted in
 * later (and faults injected in tests) without changing the logic. The
 * reply parser holds no I/O either, so that it can be fuzzed alone.
 */
#ifndef SEMAIL_SMTP_CLIENT_INTERNAL_H
#define SEMAIL_SMTP_CLIENT_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#include "semail/client.h"
#include "internal.h"

/* ---- defaults of the options whose 0 means "default" (RFC 5321 4.5.3.2) -- */
#define CLIENT_DEFAULT_CONNECT_MS   30000u
#define CLIENT_DEFAULT_GREETING_MS  300000u
#define CLIENT_DEFAULT_COMMAND_MS   300000u
#define CLIENT_DEFAULT_DATA_INIT_MS 120000u
#define CLIENT_DEFAULT_DATA_MS      180000u
#define CLIENT_DEFAULT_DATA_DONE_MS 600000u
#define CLIENT_DEFAULT_QUIT_MS      30000u
#define CLIENT_DEFAULT_PIPELINE_MAX 100u

/* ---- limits ------------------------------------------------------------- */
/* Longest EHLO/HELO name we send (a domain, or an address literal). */
#define CLIENT_HELO_MAX 255
/* EHLO keywords kept in a result; more are ignored (never an error). */
#define CLIENT_EXT_MAX 64
/* Longest EHLO keyword kept (RFC 5321 has no limit; real ones are short). */
#define CLIENT_EXT_KEYWORD_MAX 64
/* Bytes of message sent per write deadline ("data block", 4.5.3.2.5). */
#define CLIENT_DATA_BLOCK 65536
/* "[" + INET6_ADDRSTRLEN + "]:" + port. */
#define CLIENT_ADDR_TEXT_MAX 72

/* ---- replies ------------------------------------------------------------ */

/*
 * One reply being parsed, line by line. TEXT holds the human-readable
 * text (lines joined by one space); LINES holds the text of each line,
 * each ended by '\n', for the EHLO keyword table. Both are sanitized to
 * printable ASCII and bounded by SEMAIL_CLIENT_REPLY_MAX.
 */
typedef struct semail__client_reply {
    int code;          /* 0 until the first line */
    int done;          /* 1 after the last line */
    int has_enhanced;  /* 1 when the first line carried an enhanced code */
    char enhanced[16]; /* the reply's own code, class fixed to CODE's; else "C.0.0" */
    size_t nlines;
    size_t total; /* bytes of all lines, for SEMAIL_CLIENT_REPLY_MAX */
    semail_buf text;
    semail_buf lines;
} semail__client_reply;

SEMAIL_HIDDEN void semail__client_reply_init(semail__client_reply *r);
/* Forget the reply parsed so far (buffers are kept for the next one). */
SEMAIL_HIDDEN void semail__client_reply_reset(semail__client_reply *r);
SEMAIL_HIDDEN void semail__client_reply_free(semail__client_reply *r);
/*
 * Parse one reply line given without its line end. Returns 1 when it
 * completed the reply, 0 when more lines follow, SEMAIL_EINVAL (malformed:
 * bad code, bad separator, a code that changes, too many lines, too long;
 * the message says which) or SEMAIL_ENOMEM. After a complete reply, reset
 * before the next.
 */
SEMAIL_HIDDEN int semail__client_reply_line(semail__client_reply *r, const char *line, size_t len);

/* EHLO keywords we act on. */
enum {
    CLIENT_EXT_SIZE = 1u << 0,
    CLIENT_EXT_8BITMIME = 1u << 1,
    CLIENT_EXT_PIPELINING = 1u << 2,
    CLIENT_EXT_ENHANCED = 1u << 3
};

/* The keywords of an EHLO reply; KEYWORDS[i] and PARAMS[i] are malloc'd. */
typedef struct semail__client_ehlo {
    unsigned int flags;
    uint64_t size_max; /* SIZE's parameter; 0 when absent or 0 (no limit) */
    size_t count;
    char *keywords[CLIENT_EXT_MAX];
    char *params[CLIENT_EXT_MAX];
} semail__client_ehlo;

/*
 * Fill EHLO from a complete 2xx reply to EHLO: the first line is the
 * server's name, each other line `keyword [params]` (RFC 5321 4.1.1.1).
 * Lines that are not keywords are ignored. Returns 0 or SEMAIL_ENOMEM.
 */
SEMAIL_HIDDEN int semail__client_ehlo_parse(semail__client_ehlo *ehlo,
                                            const semail__client_reply *r);
SEMAIL_HIDDEN void semail__client_ehlo_free(semail__client_ehlo *ehlo);

/* ---- the connection layer ------------------------------------------------ */

/*
 * A transport moves bytes. recv/send return the count (> 0), 0 for end of
 * stream (recv only), or -1 with errno; with errno EAGAIN, *WANT says what
 * to poll the descriptor for before calling again (a TLS read may need to
 * write). close releases CTX (not the descriptor).
 */
typedef struct semail__client_transport {
    ssize_t (*recv)(void *ctx, int fd, void *buf, size_t n, short *want);
    ssize_t (*send)(void *ctx, int fd, const void *buf, size_t n, short *want);
    void (*close)(void *ctx);
    void *ctx;
} semail__client_transport;

/* Plain TCP: recv(2) and send(2) with MSG_NOSIGNAL on a non-blocking socket. */
SEMAIL_HIDDEN extern const semail__client_transport semail__client_plain;

typedef struct semail__client_conn {
    int fd;
    semail__client_transport tr;
    char in[SEMAIL_CLIENT_REPLY_LINE_MAX];
    size_t in_start, in_end;
} semail__client_conn;

/* Milliseconds of CLOCK_MONOTONIC; deadline = now + timeout. */
SEMAIL_HIDDEN uint64_t semail__client_now_ms(void);

/*
 * Connect a non-blocking stream socket to ADDR within TIMEOUT_MS, bound
 * first to SOURCE when not NULL. Fills *FD. Returns 0, SEMAIL_ETEMP
 * (timed out), SEMAIL_EIO (refused, unreachable...: the message says).
 */
SEMAIL_HIDDEN int semail__client_connect(int *fd, const struct sockaddr *addr, socklen_t addrlen,
                                         const struct sockaddr *source, socklen_t source_len,
                                         unsigned int timeout_ms);

/* Wrap a connected non-blocking FD (taken over: closed by conn_close). */
SEMAIL_HIDDEN void semail__client_conn_init(semail__client_conn *c, int fd,
                                            const semail__client_transport *tr);
SEMAIL_HIDDEN void semail__client_conn_close(semail__client_conn *c);

/*
 * Read one line, ended by LF (a CR before it is dropped), before DEADLINE.
 * *LINE points into the connection, valid until the next call. Returns 0,
 * SEMAIL_ETEMP (timeout), SEMAIL_EIO (connection closed or failed),
 * SEMAIL_ETOOBIG (no line end within SEMAIL_CLIENT_REPLY_LINE_MAX).
 */
SEMAIL_HIDDEN int semail__client_conn_line(semail__client_conn *c, const char **line, size_t *len,
                                           uint64_t deadline);

/* Write all of P before DEADLINE. Returns 0, SEMAIL_ETEMP, SEMAIL_EIO. */
SEMAIL_HIDDEN int semail__client_conn_write(semail__client_conn *c, const void *p, size_t n,
                                            uint64_t deadline);

#endif
