/*
 * mx_internal.h - what mx.c, mx_local.c and resolver.c share: one DNS
 * exchange with the configured servers, and parsing of "HOST:PORT".
 *
 * Contract: a resolver is read-only after semail_resolver_new(); a query
 * keeps all of its state in its own stack frame and semail_dns_answer.
 */
#ifndef SEMAIL_MX_INTERNAL_H
#define SEMAIL_MX_INTERNAL_H

#include <stdbool.h>
#include <sys/socket.h>

#include "dns_wire.h"
#include "semail/mx.h"

/* A checked answer; DATA is owned (freed by semail__dns_answer_free). */
typedef struct semail_dns_answer {
    uint8_t *data;
    size_t len;
    semail_dns_msg msg;
} semail_dns_answer;

/*
 * Ask the resolver's servers for QNAME/QTYPE until one gives an answer
 * with NOERROR or NXDOMAIN, matching the query's id and question.
 * Returns 0 with *OUT filled; SEMAIL_ETEMP (timeouts, SERVFAIL, REFUSED,
 * unusable answers: the message says which) or SEMAIL_ENOMEM.
 */
SEMAIL_HIDDEN int semail__resolver_query(semail_resolver *r, const semail_dns_name *qname,
                                         uint16_t qtype, semail_dns_answer *out);
SEMAIL_HIDDEN void semail__dns_answer_free(semail_dns_answer *a);

/*
 * One exchange over TCP (RFC 7766): connect to SA, send MSG with its
 * two-byte length, read one answer into *OUT (malloc'd, *OUT_LEN bytes),
 * all within TIMEOUT_MS. Nothing is checked in the answer. SEMAIL_ETEMP
 * ("DNS server WHO over TCP: why") on any network failure or timeout;
 * SEMAIL_ETOOBIG, SEMAIL_ENOMEM. Also used for dynamic updates.
 */
SEMAIL_HIDDEN int semail__dns_tcp_exchange(const struct sockaddr *sa, socklen_t salen,
                                           const char *who, const uint8_t *msg, size_t len,
                                           unsigned int timeout_ms, uint8_t **out, size_t *out_len);

/*
 * Parse an IP address with an optional port: "1.2.3.4", "1.2.3.4:53",
 * "::1" (no port then), "[::1]", "[::1]:53". *HAS_PORT says whether a port
 * was written; the port of *SS is DEFAULT_PORT otherwise.
 */
SEMAIL_HIDDEN int semail__sockaddr_parse(struct sockaddr_storage *ss, socklen_t *sslen,
                                         bool *has_port, const char *text, uint16_t default_port);

#endif
