/*
 * fuzz_dns_answer.c - libFuzzer target for the DNS answer parser: any
 * bytes, as if they came from a name server, must be parsed or refused
 * without reading out of bounds or looping (compression pointers).
 * Needs libsemail/ on the include path (internal functions). Seeds: the
 * answers recorded in tests/unit/data/dns/recorded.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "dns_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode(const semail_dns_msg *m, const semail_dns_rr *rr)
{
    char text[SEMAIL_DNS_TEXT_MAX];
    semail_dns_name name;
    struct sockaddr_storage ss;
    socklen_t sslen;
    uint16_t pref;

    (void)semail__dns_name_to_text(text, sizeof(text), &rr->owner);
    if (semail__dns_rr_mx(m, rr, &pref, &name) == 0)
        (void)semail__dns_name_to_text(text, sizeof(text), &name);
    if (semail__dns_rr_cname(m, rr, &name) == 0)
        (void)semail__dns_name_equal(&name, &m->qname);
    (void)semail__dns_rr_addr(m, rr, &ss, &sslen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semail_dns_msg m;
    semail_dns_rr rr;
    size_t off;
    unsigned long i, total;

    if (semail__dns_msg_parse(&m, data, size, true) < 0)
        return 0;
    if (semail__dns_msg_parse(&m, data, size, false) < 0)
        return 0;
    total = (unsigned long)m.ancount + m.nscount + m.arcount;
    off = m.an_off;
    for (i = 0; i < total; i++) {
        if (semail__dns_rr_read(&m, &off, &rr) < 0)
            __builtin_trap(); /* a parsed message must walk without failure */
        decode(&m, &rr);
    }
    return 0;
}
