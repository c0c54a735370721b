/*
 * dns_update_internal.h - the pieces of dns_update.c that tests check on
 * their own: name checks, building RFC 2136 UPDATE messages, and turning
 * a (signed) answer into a SEMail error code.
 *
 * Contract: builders take names that passed the checks and write at most
 * CAP bytes, compressing names as BIND does (against every name written
 * before), so that the bytes can be compared with nsupdate's.
 */
#ifndef SEMAIL_DNS_UPDATE_INTERNAL_H
#define SEMAIL_DNS_UPDATE_INTERNAL_H

#include "dns_wire.h"
#include "tsig_internal.h"

#define SEMAIL_DNS_T_TXT      16
#define SEMAIL_DNS_O_UPDATE   5
#define SEMAIL_DNS_UPDATE_MAX 4096 /* a signed update of ours is under 2 KiB */

/* The extra RCODEs of RFC 2136 and RFC 8945. */
enum {
    SEMAIL_DNS_R_YXDOMAIN = 6,
    SEMAIL_DNS_R_YXRRSET = 7,
    SEMAIL_DNS_R_NXRRSET = 8,
    SEMAIL_DNS_R_NOTAUTH = 9,
    SEMAIL_DNS_R_NOTZONE = 10
};

/*
 * NAME (lower case, LDH labels, optional final dot) strictly inside ZONE,
 * to wire form. SEMAIL_EINVAL with a message naming the fault otherwise.
 */
SEMAIL_HIDDEN int semail__dns_check_name_in_zone(semail_dns_name *out, const char *name,
                                                 const semail_dns_name *zone);
/* A host name in any case (LDH labels, optional final dot), to lower-case wire form. */
SEMAIL_HIDDEN int semail__dns_check_host(semail_dns_name *out, const char *host);

/*
 * The update "NAME must not be in use; add NAME TTL MX 10 MX and, when SPF
 * is not NULL, NAME TTL TXT SPF" for ZONE, with query id ID.
 */
SEMAIL_HIDDEN int semail__dns_update_build_add(uint8_t *buf, size_t cap, size_t *len, uint16_t id,
                                               const semail_dns_name *zone,
                                               const semail_dns_name *name,
                                               const semail_dns_name *mx, const char *spf,
                                               uint32_t ttl);
/* The update "delete the MX and the TXT RRsets of NAME" for ZONE. */
SEMAIL_HIDDEN int semail__dns_update_build_remove(uint8_t *buf, size_t cap, size_t *len,
                                                  uint16_t id, const semail_dns_name *zone,
                                                  const semail_dns_name *name);

/*
 * The result of the signed update REQ (whose MAC is REQ_MAC) from the
 * answer ANS at time NOW: 0, or a SEMail error code with a message that
 * starts with WHO (the server) and names NAME where it matters. See
 * semail_dns_add_mail_records() for the mapping.
 */
SEMAIL_HIDDEN int semail__dns_update_result(const semail_tsig_key *key, const uint8_t *req,
                                            const uint8_t *req_mac, size_t req_mac_len,
                                            const uint8_t *ans, size_t alen, uint64_t now,
                                            const char *who, const char *name);

#endif
