/*
 * queue_file.h - the on-disk format of queued messages and their state
 * (see docs/queue.md), separate from the spool logic so that it can be
 * fuzzed alone.
 *
 * Contract: the parsers accept any bytes and either fill their output or
 * return SEMAIL_EINVAL; they never read outside the buffer given. Encoders
 * and parsers are exact inverses.
 */
#ifndef SEMAIL_QUEUE_FILE_H
#define SEMAIL_QUEUE_FILE_H

#include "internal.h"
#include "semail/queue.h"

#define SEMAIL__QF_MSG_MAGIC   "SEMAIL-QUEUE-MSG 1\n"
#define SEMAIL__QF_STATE_MAGIC "SEMAIL-QUEUE-STATE 1\n"
/* "dsum XXXXXXXX\n": the trailer after the message data. */
#define SEMAIL__QF_TRAILER_LEN 14
/* The header of a message file never exceeds this (rcpts * encoded addresses). */
#define SEMAIL__QF_HEADER_MAX (SEMAIL_QUEUE_RCPT_MAX * (SEMAIL_QUEUE_ADDR_MAX * 3 + 8) + 4096)
/* A state file never exceeds this. */
#define SEMAIL__QF_STATE_MAX                                                                       \
    (SEMAIL_QUEUE_RCPT_MAX * (3 * (SEMAIL_QUEUE_TEXT_SIZE + SEMAIL_QUEUE_HOST_SIZE + 16) + 64) +   \
     4096)

/* The envelope part of a message file. */
typedef struct semail__qf_msg {
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int64_t arrival_ms;
    char *sender; /* owned; "" for <> */
    char **rcpts; /* owned */
    size_t rcpt_count;
    uint64_t size;     /* data bytes */
    size_t header_len; /* offset of the data in the file */
} semail__qf_msg;

/* The mutable part, kept in its own file. */
typedef struct semail__qf_state {
    char qid[SEMAIL_QUEUE_QID_SIZE];
    unsigned int attempts;
    int64_t next_ms;
    int64_t last_ms;
    size_t rcpt_count;
    semail_queue_rcpt *rcpts; /* owned array; .address is not set by the parser */
} semail__qf_state;

SEMAIL_HIDDEN uint32_t semail__crc32(uint32_t crc, const void *p, size_t n);

/* 1 when S is a syntactically valid QID ([0-9A-Z], 16 to 31 characters). */
SEMAIL_HIDDEN int semail__qf_valid_qid(const char *s);

/* Append the header of a message file (everything before the data). */
SEMAIL_HIDDEN int semail__qf_msg_encode_header(semail_buf *out, const char *qid, int64_t arrival_ms,
                                               const char *sender, const char *const *rcpts,
                                               size_t rcpt_count, uint64_t size);
/* Append the trailer that follows the data: its checksum. */
SEMAIL_HIDDEN int semail__qf_msg_encode_trailer(semail_buf *out, const void *data, size_t len);
/*
 * Parse the header at the start of BUF (LEN bytes, possibly more than the
 * header). Fills M (free with semail__qf_msg_clear) and sets header_len.
 */
SEMAIL_HIDDEN int semail__qf_msg_parse_header(semail__qf_msg *m, const char *buf, size_t len);
/*
 * Check a whole message file of FILE_LEN bytes whose header M was parsed:
 * the size matches and the data checksum is right.
 */
SEMAIL_HIDDEN int semail__qf_msg_check_data(const semail__qf_msg *m, const char *buf,
                                            size_t file_len);
SEMAIL_HIDDEN void semail__qf_msg_clear(semail__qf_msg *m);

SEMAIL_HIDDEN int semail__qf_state_encode(semail_buf *out, const semail__qf_state *s);
SEMAIL_HIDDEN int semail__qf_state_parse(semail__qf_state *s, const char *buf, size_t len);
SEMAIL_HIDDEN void semail__qf_state_clear(semail__qf_state *s);

/* Copy S into DST (SIZE bytes), control bytes as spaces, cut to fit. */
SEMAIL_HIDDEN void semail__qf_sanitize(char *dst, size_t size, const char *s);

#endif
