/*
 * dns_wire.c - building DNS queries and parsing DNS answers (RFC 1035 4).
 *
 * Contract: every read is checked against the message length; compression
 * pointers are followed at most SEMAIL_DNS_MAX_POINTERS times per name and
 * may not point into the header, so a pointer loop is an error, not a hang;
 * a name never grows past 255 octets. Answers are untrusted input: any
 * malformation gives SEMAIL_EINVAL with a message, never a crash.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "dns_wire.h"

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static bool ldh_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

int semail__dns_name_from_text(semail_dns_name *out, const char *text)
{
    size_t n = 0;
    const char *p = text;

    out->len = 0;
    if (*p == '\0' || strcmp(p, ".") == 0)
        return semail__err(SEMAIL_EINVAL, "empty domain name");
    while (*p != '\0') {
        size_t label = 0;
        while (p[label] != '\0' && p[label] != '.') {
            if (!ldh_char((unsigned char)p[label]))
                return semail__err(SEMAIL_EINVAL, "invalid character in domain name");
            label++;
        }
        if (label == 0)
            return semail__err(SEMAIL_EINVAL, "empty label in domain name");
        if (label > 63)
            return semail__err(SEMAIL_EINVAL, "label longer than 63 octets in domain name");
        if (n + 1 + label + 1 > SEMAIL_DNS_NAME_MAX)
            return semail__err(SEMAIL_EINVAL, "domain name longer than 255 octets");
        out->wire[n++] = (uint8_t)label;
        memcpy(out->wire + n, p, label);
        n += label;
        p += label;
        if (*p == '.')
            p++;
    }
    out->wire[n++] = 0;
    out->len = n;
    return 0;
}

int semail__dns_name_to_text(char *out, size_t size, const semail_dns_name *n)
{
    size_t i = 0, o = 0;

    if (size < 2)
        return semail__err(SEMAIL_ETOOBIG, "buffer too small for a domain name");
    if (semail__dns_name_is_root(n)) {
        out[0] = '.';
        out[1] = '\0';
        return 0;
    }
    while (i < n->len && n->wire[i] != 0) {
        size_t label = n->wire[i++];
        if (o > 0)
            out[o++] = '.';
        for (; label > 0 && i < n->len; label--, i++) {
            int c = n->wire[i];
            if (o + 5 >= size)
                return semail__err(SEMAIL_ETOOBIG, "buffer too small for a domain name");
            if (ldh_char(c))
                out[o++] = (char)semail__tolower(c);
            else
                o += (size_t)snprintf(out + o, size - o, "\\%03d", c);
        }
        if (o + 2 >= size)
            return semail__err(SEMAIL_ETOOBIG, "buffer too small for a domain name");
    }
    out[o] = '\0';
    return 0;
}

bool semail__dns_name_equal(const semail_dns_name *a, const semail_dns_name *b)
{
    size_t i;
    if (a->len != b->len)
        return false;
    /* Length octets are below 64 and so never change under tolower. */
    for (i = 0; i < a->len; i++)
        if (semail__tolower(a->wire[i]) != semail__tolower(b->wire[i]))
            return false;
    return true;
}

bool semail__dns_name_is_root(const semail_dns_name *n)
{
    return n->len == 1 && n->wire[0] == 0;
}

int semail__dns_name_unpack(semail_dns_name *out, const uint8_t *msg, size_t len, size_t *off)
{
    size_t pos = *off, end = 0, n = 0;
    unsigned int pointers = 0;
    bool jumped = false;

    out->len = 0;
    for (;;) {
        uint8_t c;
        if (pos >= len)
            return semail__err(SEMAIL_EINVAL, "DNS name runs past the message");
        c = msg[pos];
        if ((c & 0xC0) == 0xC0) {
            size_t target;
            if (pos + 1 >= len)
                return semail__err(SEMAIL_EINVAL, "DNS compression pointer cut short");
            target = ((size_t)(c & 0x3F) << 8) | msg[pos + 1];
            if (!jumped)
                end = pos + 2;
            jumped = true;
            if (++pointers > SEMAIL_DNS_MAX_POINTERS)
                return semail__err(SEMAIL_EINVAL, "DNS compression pointer loop");
            if (target < SEMAIL_DNS_HEADER_LEN || target >= len)
                return semail__err(SEMAIL_EINVAL, "DNS compression pointer out of bounds");
            pos = target;
            continue;
        }
        if (c & 0xC0)
            return semail__err(SEMAIL_EINVAL, "unsupported DNS label type 0x%02x", c);
        if (c == 0)
            break;
        if (c > len - pos - 1)
            return semail__err(SEMAIL_EINVAL, "DNS label runs past the message");
        if (n + 1 + c + 1 > SEMAIL_DNS_NAME_MAX)
            return semail__err(SEMAIL_EINVAL, "DNS name longer than 255 octets");
        memcpy(out->wire + n, msg + pos, (size_t)c + 1);
        n += (size_t)c + 1;
        pos += (size_t)c + 1;
    }
    out->wire[n++] = 0;
    out->len = n;
    *off = jumped ? end : pos + 1;
    return 0;
}

int semail__dns_query_build(uint8_t *buf, size_t cap, size_t *outlen, uint16_t id,
                            const semail_dns_name *qname, uint16_t qtype)
{
    size_t need = SEMAIL_DNS_HEADER_LEN + qname->len + 4;

    if (qname->len == 0 || need > cap)
        return semail__err(SEMAIL_ETOOBIG, "DNS query does not fit");
    memset(buf, 0, SEMAIL_DNS_HEADER_LEN);
    put16(buf, id);
    buf[2] = 0x01; /* RD: ask a recursive server to do the work */
    put16(buf + 4, 1);
    memcpy(buf + SEMAIL_DNS_HEADER_LEN, qname->wire, qname->len);
    put16(buf + SEMAIL_DNS_HEADER_LEN + qname->len, qtype);
    put16(buf + SEMAIL_DNS_HEADER_LEN + qname->len + 2, SEMAIL_DNS_C_IN);
    *outlen = need;
    return 0;
}

/* Read a record's fixed part after its owner name; *OFF moves past rdata. */
static int rr_read(const uint8_t *data, size_t len, size_t *off, semail_dns_rr *rr)
{
    int err;
    size_t p;

    if ((err = semail__dns_name_unpack(&rr->owner, data, len, off)) < 0)
        return err;
    p = *off;
    if (len - p < 10)
        return semail__err(SEMAIL_EINVAL, "DNS record cut short");
    rr->type = get16(data + p);
    rr->rclass = get16(data + p + 2);
    rr->ttl = get32(data + p + 4);
    rr->rdlen = get16(data + p + 8);
    rr->rdoff = p + 10;
    if (rr->rdlen > len - rr->rdoff)
        return semail__err(SEMAIL_EINVAL, "DNS record data runs past the message");
    *off = rr->rdoff + rr->rdlen;
    return 0;
}

int semail__dns_msg_parse(semail_dns_msg *m, const uint8_t *data, size_t len, bool header_only)
{
    size_t off = SEMAIL_DNS_HEADER_LEN;
    unsigned long i, total;
    semail_dns_rr rr;
    int err;

    memset(m, 0, sizeof(*m));
    if (len < SEMAIL_DNS_HEADER_LEN)
        return semail__err(SEMAIL_EINVAL, "DNS message shorter than its header");
    m->data = data;
    m->len = len;
    m->id = get16(data);
    m->qr = (data[2] & 0x80) != 0;
    m->opcode = (data[2] >> 3) & 0x0F;
    m->tc = (data[2] & 0x02) != 0;
    m->rcode = data[3] & 0x0F;
    m->qdcount = get16(data + 4);
    m->ancount = get16(data + 6);
    m->nscount = get16(data + 8);
    m->arcount = get16(data + 10);
    if (m->qdcount != 1)
        return semail__err(SEMAIL_EINVAL, "DNS message with %u questions", m->qdcount);
    if ((err = semail__dns_name_unpack(&m->qname, data, len, &off)) < 0)
        return err;
    if (len - off < 4)
        return semail__err(SEMAIL_EINVAL, "DNS question cut short");
    m->qtype = get16(data + off);
    m->qclass = get16(data + off + 2);
    off += 4;
    m->an_off = off;
    if (header_only)
        return 0;
    total = (unsigned long)m->ancount + m->nscount + m->arcount;
    for (i = 0; i < total; i++)
        if ((err = rr_read(data, len, &off, &rr)) < 0)
            return err;
    return 0;
}

int semail__dns_rr_read(const semail_dns_msg *m, size_t *off, semail_dns_rr *rr)
{
    return rr_read(m->data, m->len, off, rr);
}

/* Unpack a name that must fill the rest of RR's rdata from *OFF. */
static int rdata_name(const semail_dns_msg *m, const semail_dns_rr *rr, size_t off,
                      semail_dns_name *out)
{
    int err;
    if ((err = semail__dns_name_unpack(out, m->data, m->len, &off)) < 0)
        return err;
    if (off != rr->rdoff + rr->rdlen)
        return semail__err(SEMAIL_EINVAL, "DNS record data of the wrong length");
    return 0;
}

int semail__dns_rr_mx(const semail_dns_msg *m, const semail_dns_rr *rr, uint16_t *pref,
                      semail_dns_name *host)
{
    if (rr->type != SEMAIL_DNS_T_MX || rr->rdlen < 3)
        return semail__err(SEMAIL_EINVAL, "malformed MX record");
    *pref = get16(m->data + rr->rdoff);
    return rdata_name(m, rr, rr->rdoff + 2, host);
}

int semail__dns_rr_cname(const semail_dns_msg *m, const semail_dns_rr *rr, semail_dns_name *target)
{
    if (rr->type != SEMAIL_DNS_T_CNAME || rr->rdlen < 1)
        return semail__err(SEMAIL_EINVAL, "malformed CNAME record");
    return rdata_name(m, rr, rr->rdoff, target);
}

int semail__dns_rr_addr(const semail_dns_msg *m, const semail_dns_rr *rr,
                        struct sockaddr_storage *ss, socklen_t *sslen)
{
    memset(ss, 0, sizeof(*ss));
    if (rr->type == SEMAIL_DNS_T_A && rr->rdlen == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, m->data + rr->rdoff, 4);
        *sslen = sizeof(*in);
        return 0;
    }
    if (rr->type == SEMAIL_DNS_T_AAAA && rr->rdlen == 16) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, m->data + rr->rdoff, 16);
        *sslen = sizeof(*in6);
        return 0;
    }
    return semail__err(SEMAIL_EINVAL, "malformed address record");
}
