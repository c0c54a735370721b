/*
 * dns_wire.h - the DNS message format (RFC 1035 section 4): building a
 * query, and parsing an answer that came from the network.
 *
 * Contract: parsing never reads outside the message it is given, follows
 * at most DNS_MAX_POINTERS compression pointers per name (so pointer loops
 * end in an error), and never produces a name longer than 255 octets. A
 * message that semail__dns_msg_parse() accepted can be walked record by
 * record without further failure. Nothing here keeps state.
 */
#ifndef SEMAIL_DNS_WIRE_H
#define SEMAIL_DNS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"

#define SEMAIL_DNS_NAME_MAX     255  /* wire form, RFC 1035 2.3.4 */
#define SEMAIL_DNS_TEXT_MAX     1025 /* presentation form, every octet as \DDD at worst */
#define SEMAIL_DNS_HEADER_LEN   12
#define SEMAIL_DNS_UDP_MAX      512 /* no EDNS: bigger answers come over TCP */
#define SEMAIL_DNS_MAX_POINTERS 64

enum {
    SEMAIL_DNS_T_A = 1,
    SEMAIL_DNS_T_NS = 2,
    SEMAIL_DNS_T_CNAME = 5,
    SEMAIL_DNS_T_SOA = 6,
    SEMAIL_DNS_T_MX = 15,
    SEMAIL_DNS_T_AAAA = 28,
    SEMAIL_DNS_C_IN = 1
};

enum {
    SEMAIL_DNS_R_NOERROR = 0,
    SEMAIL_DNS_R_FORMERR = 1,
    SEMAIL_DNS_R_SERVFAIL = 2,
    SEMAIL_DNS_R_NXDOMAIN = 3,
    SEMAIL_DNS_R_NOTIMP = 4,
    SEMAIL_DNS_R_REFUSED = 5
};

/* A name in uncompressed wire form, root label included. */
typedef struct semail_dns_name {
    size_t len;
    uint8_t wire[SEMAIL_DNS_NAME_MAX];
} semail_dns_name;

/* One resource record; its rdata stays in the message. */
typedef struct semail_dns_rr {
    semail_dns_name owner;
    uint16_t type;
    uint16_t rclass;
    uint32_t ttl;
    size_t rdoff;
    size_t rdlen;
} semail_dns_rr;

/* A parsed message: header, the one question, where the answers start. */
typedef struct semail_dns_msg {
    const uint8_t *data;
    size_t len;
    uint16_t id;
    bool qr, tc;
    unsigned int opcode;
    unsigned int rcode;
    uint16_t qdcount, ancount, nscount, arcount;
    semail_dns_name qname;
    uint16_t qtype, qclass;
    size_t an_off;
} semail_dns_msg;

/* Text (LDH labels, optional final dot) to wire form; SEMAIL_EINVAL otherwise. */
SEMAIL_HIDDEN int semail__dns_name_from_text(semail_dns_name *out, const char *text);
/* Wire form to lower-case text without final dot ("." for the root). */
SEMAIL_HIDDEN int semail__dns_name_to_text(char *out, size_t size, const semail_dns_name *n);
/* ASCII case-insensitive comparison (RFC 4343). */
SEMAIL_HIDDEN bool semail__dns_name_equal(const semail_dns_name *a, const semail_dns_name *b);
/* True for the root name ".". */
SEMAIL_HIDDEN bool semail__dns_name_is_root(const semail_dns_name *n);
/*
 * Read the possibly compressed name at *OFF of MSG; *OFF moves past the
 * name as it is stored at that place (after the first pointer, if any).
 */
SEMAIL_HIDDEN int semail__dns_name_unpack(semail_dns_name *out, const uint8_t *msg, size_t len,
                                          size_t *off);

/* A recursion-desired query for QNAME/QTYPE class IN; *OUTLEN set. */
SEMAIL_HIDDEN int semail__dns_query_build(uint8_t *buf, size_t cap, size_t *outlen, uint16_t id,
                                          const semail_dns_name *qname, uint16_t qtype);

/*
 * Parse the header and the question and check that every record of every
 * section is well formed and inside the message. A message without exactly
 * one question is refused (it cannot be matched to a query). With
 * HEADER_ONLY, only the header and the question are checked (a truncated
 * UDP answer, which only tells us to retry over TCP).
 */
SEMAIL_HIDDEN int semail__dns_msg_parse(semail_dns_msg *m, const uint8_t *data, size_t len,
                                        bool header_only);
/* Read the record at *OFF (of a parsed message) and move *OFF past it. */
SEMAIL_HIDDEN int semail__dns_rr_read(const semail_dns_msg *m, size_t *off, semail_dns_rr *rr);

/* Decode rdata; each checks the record's type and that rdata is consumed exactly. */
SEMAIL_HIDDEN int semail__dns_rr_mx(const semail_dns_msg *m, const semail_dns_rr *rr,
                                    uint16_t *pref, semail_dns_name *host);
SEMAIL_HIDDEN int semail__dns_rr_cname(const semail_dns_msg *m, const semail_dns_rr *rr,
                                       semail_dns_name *target);
/* A or AAAA to a socket address with port 0. */
SEMAIL_HIDDEN int semail__dns_rr_addr(const semail_dns_msg *m, const semail_dns_rr *rr,
                                      struct sockaddr_storage *ss, socklen_t *sslen);

#endif
