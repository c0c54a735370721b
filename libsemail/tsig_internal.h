/*
 * tsig_internal.h - TSIG (RFC 8945) inside libsemail: the key object, and
 * signing a request and checking the signed answer to it.
 *
 * Contract: a key is immutable after parsing. Signing appends one TSIG
 * record to a complete message; checking never reads outside the answer
 * and compares MACs in constant time. Time is passed in (seconds since the
 * epoch) so that recorded packets can be checked in tests.
 */
#ifndef SEMAIL_TSIG_INTERNAL_H
#define SEMAIL_TSIG_INTERNAL_H

#include <stdint.h>

#include "dns_wire.h"
#include "semail/dns.h"

#define SEMAIL_DNS_T_TSIG      250
#define SEMAIL_DNS_C_NONE      254
#define SEMAIL_DNS_C_ANY       255
#define SEMAIL_DNS_T_ANY       255
#define SEMAIL_TSIG_FUDGE      300 /* seconds of clock difference allowed, as BIND */
#define SEMAIL_TSIG_MAC_MAX    64  /* SHA-512 */
#define SEMAIL_TSIG_SECRET_MAX 256

/* TSIG error codes (RFC 8945 section 3). */
enum {
    SEMAIL_TSIG_BADSIG = 16,
    SEMAIL_TSIG_BADKEY = 17,
    SEMAIL_TSIG_BADTIME = 18,
    SEMAIL_TSIG_BADTRUNC = 22
};

struct semail_tsig_key {
    semail_dns_name name; /* lower case, uncompressed: the canonical form */
    char name_text[SEMAIL_DNS_TEXT_MAX];
    const char *algorithm;    /* "hmac-sha256": static */
    semail_dns_name alg_name; /* hmac-sha256. in wire form */
    size_t mac_len;           /* the digest's full length */
    uint8_t secret[SEMAIL_TSIG_SECRET_MAX];
    size_t secret_len;
};

/* Length of algorithm NAME's digest, or 0 when NAME is not supported. */
SEMAIL_HIDDEN size_t semail__tsig_alg_mac_len(const char *name);

/*
 * Sign the message MSG[0..*LEN) (buffer of CAP bytes) as a request at time
 * NOW: append the TSIG record, add one to ARCOUNT, *LEN grows. The MAC is
 * copied to MAC (SEMAIL_TSIG_MAC_MAX bytes), its length to *MAC_LEN: the
 * answer is checked against it. SEMAIL_ETOOBIG when it does not fit.
 */
SEMAIL_HIDDEN int semail__tsig_sign(const semail_tsig_key *key, uint8_t *msg, size_t cap,
                                    size_t *len, uint64_t now, uint8_t *mac, size_t *mac_len);

/* What the TSIG of an answer says. */
typedef enum semail_tsig_verdict {
    SEMAIL_TSIG_VERIFIED,     /* our key, MAC right, time within the fudge, no error */
    SEMAIL_TSIG_UNSIGNED,     /* no TSIG record at all */
    SEMAIL_TSIG_SERVER_ERROR, /* the server reports a TSIG error (BADSIG...): *ERROR */
    SEMAIL_TSIG_INVALID       /* malformed, another key, MAC wrong, clock off */
} semail_tsig_verdict;

/*
 * Check the TSIG of ANSWER[0..LEN), the answer to a request whose MAC was
 * REQ_MAC, at time NOW. *ERROR receives the record's error field (0 when
 * there is no record). A failing verdict also records a message (read it
 * with semail_error_last()). Never fails otherwise, except ENOMEM, which
 * gives SEMAIL_TSIG_INVALID with that message.
 */
SEMAIL_HIDDEN semail_tsig_verdict semail__tsig_verify(const semail_tsig_key *key,
                                                      const uint8_t *req_mac, size_t req_mac_len,
                                                      const uint8_t *answer, size_t len,
                                                      uint64_t now, unsigned int *error);

/* "BADSIG", "BADKEY"... or "TSIG error N" into BUF. */
SEMAIL_HIDDEN const char *semail__tsig_error_name(unsigned int error, char *buf, size_t size);

#endif
