/*
 * tsig.c - TSIG (RFC 8945): sign a request, check the signed answer.
 *
 * Contract: the MAC of a request covers the message and the TSIG variables
 * (section 4.3.3); the MAC of an answer covers the request's MAC, the
 * answer without its TSIG record (ARCOUNT less one, the original id) and
 * the answer's TSIG variables (section 4.3.1). The answer is untrusted:
 * its TSIG must be the last record, of our key and algorithm, with a MAC
 * of the digest's full length (no truncation), compared in constant time,
 * and a time within the fudge. The HMAC is OpenSSL's.
 */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsig_internal.h"

/* The TSIG variables: owner, class, TTL, algorithm, time, fudge, error, other. */
#define VARS_MAX (2 * SEMAIL_DNS_NAME_MAX + 2 + 4 + 6 + 2 + 2 + 2)

typedef struct chunk {
    const uint8_t *p;
    size_t n;
} chunk;

/* The fields of a TSIG record's rdata. */
typedef struct tsig_rr {
    semail_dns_name owner, alg;
    uint64_t time;
    uint16_t fudge, orig_id, error, other_len;
    const uint8_t *mac, *other;
    size_t mac_len;
    size_t start; /* where the record begins in the message */
} tsig_rr;

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put48(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 5; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get48(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 6; i++)
        v = (v << 8) | p[i];
    return v;
}

static const char *digest_name(const semail_tsig_key *k)
{
    switch (k->mac_len) {
    case 20:
        return "SHA1";
    case 28:
        return "SHA224";
    case 32:
        return "SHA256";
    case 48:
        return "SHA384";
    default:
        return "SHA512";
    }
}

static void name_lower(semail_dns_name *n)
{
    size_t i;
    for (i = 0; i < n->len; i++)
        n->wire[i] = (uint8_t)semail__tolower(n->wire[i]);
}

/* HMAC of the concatenated chunks with the key's secret. */
static int hmac(const semail_tsig_key *k, const chunk *parts, size_t nparts, uint8_t *out,
                size_t *out_len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[2];
    size_t i;
    int err = SEMAIL_ERROR;

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest_name(k), 0);
    params[1] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_MAC_init(ctx, k->secret, k->secret_len, params) != 1)
        goto done;
    for (i = 0; i < nparts; i++)
        if (EVP_MAC_update(ctx, parts[i].p, parts[i].n) != 1)
            goto done;
    if (EVP_MAC_final(ctx, out, out_len, SEMAIL_TSIG_MAC_MAX) != 1 || *out_len != k->mac_len)
        goto done;
    err = 0;
done:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return err < 0 ? semail__err(err, "OpenSSL HMAC-%s failed", digest_name(k)) : 0;
}

/*
 * The TSIG variables (RFC 8945 4.3.3) in canonical form, up to the other
 * data's length (the other data itself is hashed from where it lies).
 */
static size_t tsig_vars(uint8_t *v, const semail_dns_name *owner, const semail_dns_name *alg,
                        uint64_t time, uint16_t fudge, uint16_t error, uint16_t other_len)
{
    size_t n = 0;
    memcpy(v, owner->wire, owner->len);
    n += owner->len;
    put16(v + n, SEMAIL_DNS_C_ANY);
    memset(v + n + 2, 0, 4); /* TTL */
    n += 6;
    memcpy(v + n, alg->wire, alg->len);
    n += alg->len;
    put48(v + n, time);
    put16(v + n + 6, fudge);
    put16(v + n + 8, error);
    put16(v + n + 10, other_len);
    return n + 12;
}

int semail__tsig_sign(const semail_tsig_key *key, uint8_t *msg, size_t cap, size_t *len,
                      uint64_t now, uint8_t *mac, size_t *mac_len)
{
    uint8_t vars[VARS_MAX];
    size_t vlen, n = *len, rdlen;
    chunk parts[2];
    int err;

    if (n < SEMAIL_DNS_HEADER_LEN || get16(msg + 10) == 0xFFFF)
        return semail__err(SEMAIL_EINVAL, "cannot sign a message without a header");
    vlen = tsig_vars(vars, &key->name, &key->alg_name, now, SEMAIL_TSIG_FUDGE, 0, 0);
    parts[0] = (chunk){msg, n};
    parts[1] = (chunk){vars, vlen};
    if ((err = hmac(key, parts, 2, mac, mac_len)) < 0)
        return err;
    rdlen = key->alg_name.len + 10 + *mac_len + 6;
    if (cap - n < key->name.len + 10 + rdlen)
        return semail__err(SEMAIL_ETOOBIG, "DNS message too large to sign");
    memcpy(msg + n, key->name.wire, key->name.len); /* never compressed (RFC 8945 4.2) */
    n += key->name.len;
    put16(msg + n, SEMAIL_DNS_T_TSIG);
    put16(msg + n + 2, SEMAIL_DNS_C_ANY);
    memset(msg + n + 4, 0, 4);
    put16(msg + n + 8, (uint16_t)rdlen);
    n += 10;
    memcpy(msg + n, key->alg_name.wire, key->alg_name.len);
    n += key->alg_name.len;
    put48(msg + n, now);
    put16(msg + n + 6, SEMAIL_TSIG_FUDGE);
    put16(msg + n + 8, (uint16_t)*mac_len);
    n += 10;
    memcpy(msg + n, mac, *mac_len);
    n += *mac_len;
    memcpy(msg + n, msg, 2);   /* original id */
    memset(msg + n + 2, 0, 4); /* error, other length */
    n += 6;
    put16(msg + 10, (uint16_t)(get16(msg + 10) + 1));
    *len = n;
    return 0;
}

/* Decode the rdata of the TSIG record RR of M into T. */
static int tsig_rdata(const semail_dns_msg *m, const semail_dns_rr *rr, tsig_rr *t)
{
    size_t off = rr->rdoff, end = rr->rdoff + rr->rdlen;
    const uint8_t *d = m->data;

    if (semail__dns_name_unpack(&t->alg, d, m->len, &off) < 0 || off > end || end - off < 10)
        return -1;
    t->time = get48(d + off);
    t->fudge = get16(d + off + 6);
    t->mac_len = get16(d + off + 8);
    off += 10;
    if (end - off < t->mac_len + 6)
        return -1;
    t->mac = d + off;
    off += t->mac_len;
    t->orig_id = get16(d + off);
    t->error = get16(d + off + 2);
    t->other_len = get16(d + off + 4);
    off += 6;
    if (end - off != t->other_len)
        return -1;
    t->other = d + off;
    t->owner = rr->owner;
    name_lower(&t->owner);
    name_lower(&t->alg);
    return 0;
}

/* Find the answer's TSIG record: 1 found, 0 none, -1 malformed or misplaced. */
static int find_tsig(const uint8_t *a, size_t len, tsig_rr *t)
{
    semail_dns_msg m;
    semail_dns_rr rr;
    semail_dns_name qn;
    size_t off = SEMAIL_DNS_HEADER_LEN, start = 0;
    unsigned long i, total;
    unsigned int qd;
    bool last_is_tsig = false;

    memset(&m, 0, sizeof(m));
    m.data = a;
    m.len = len;
    for (qd = get16(a + 4); qd > 0; qd--) {
        if (semail__dns_name_unpack(&qn, a, len, &off) < 0 || len - off < 4)
            return -1;
        off += 4;
    }
    total = (unsigned long)get16(a + 6) + get16(a + 8) + get16(a + 10);
    for (i = 0; i < total; i++) {
        start = off;
        if (semail__dns_rr_read(&m, &off, &rr) < 0)
            return -1;
        if (rr.type == SEMAIL_DNS_T_TSIG && i + 1 != total)
            return -1; /* a TSIG anywhere but last */
        last_is_tsig = rr.type == SEMAIL_DNS_T_TSIG;
    }
    if (off != len)
        return -1; /* bytes after the last record */
    if (!last_is_tsig || get16(a + 10) == 0)
        return 0;
    t->start = start;
    if (rr.rclass != SEMAIL_DNS_C_ANY || tsig_rdata(&m, &rr, t) < 0)
        return -1;
    return 1;
}

const char *semail__tsig_error_name(unsigned int error, char *buf, size_t size)
{
    switch (error) {
    case SEMAIL_TSIG_BADSIG:
        return "BADSIG";
    case SEMAIL_TSIG_BADKEY:
        return "BADKEY";
    case SEMAIL_TSIG_BADTIME:
        return "BADTIME";
    case SEMAIL_TSIG_BADTRUNC:
        return "BADTRUNC";
    default:
        (void)snprintf(buf, size, "TSIG error %u", error);
        return buf;
    }
}

/* MAC of the answer as the server should have computed it. */
static int answer_mac(const semail_tsig_key *key, const uint8_t *req_mac, size_t req_mac_len,
                      const uint8_t *a, const tsig_rr *t, uint8_t *mac, size_t *mac_len)
{
    uint8_t prefix[2], header[SEMAIL_DNS_HEADER_LEN], vars[VARS_MAX];
    chunk parts[6];
    size_t vlen;

    put16(prefix, (uint16_t)req_mac_len);
    memcpy(header, a, SEMAIL_DNS_HEADER_LEN);
    put16(header, t->orig_id);
    put16(header + 10, (uint16_t)(get16(a + 10) - 1));
    vlen = tsig_vars(vars, &t->owner, &t->alg, t->time, t->fudge, t->error, t->other_len);
    parts[0] = (chunk){prefix, 2};
    parts[1] = (chunk){req_mac, req_mac_len};
    parts[2] = (chunk){header, SEMAIL_DNS_HEADER_LEN};
    parts[3] = (chunk){a + SEMAIL_DNS_HEADER_LEN, t->start - SEMAIL_DNS_HEADER_LEN};
    parts[4] = (chunk){vars, vlen};
    parts[5] = (chunk){t->other, t->other_len};
    return hmac(key, parts, 6, mac, mac_len);
}

semail_tsig_verdict semail__tsig_verify(const semail_tsig_key *key, const uint8_t *req_mac,
                                        size_t req_mac_len, const uint8_t *answer, size_t len,
                                        uint64_t now, unsigned int *error)
{
    uint8_t mac[SEMAIL_TSIG_MAC_MAX];
    size_t mac_len = 0;
    tsig_rr t;
    int found;
    char buf[32];

    *error = 0;
    if (len < SEMAIL_DNS_HEADER_LEN || (found = find_tsig(answer, len, &t)) < 0) {
        semail__err(SEMAIL_EPERM, "malformed answer or TSIG record");
        return SEMAIL_TSIG_INVALID;
    }
    if (found == 0) {
        semail__err(SEMAIL_EPERM, "the answer is not signed (no TSIG record)");
        return SEMAIL_TSIG_UNSIGNED;
    }
    if (!semail__dns_name_equal(&t.owner, &key->name) ||
        !semail__dns_name_equal(&t.alg, &key->alg_name)) {
        semail__err(SEMAIL_EPERM, "the answer is signed with another key or algorithm");
        return SEMAIL_TSIG_INVALID;
    }
    *error = t.error;
    if (t.error != 0) {
        semail__err(SEMAIL_EPERM, "the server reports %s",
                    semail__tsig_error_name(t.error, buf, sizeof(buf)));
        return SEMAIL_TSIG_SERVER_ERROR;
    }
    if (t.mac_len != key->mac_len) {
        semail__err(SEMAIL_EPERM, "the answer's MAC has %zu bytes, not %zu", t.mac_len,
                    key->mac_len);
        return SEMAIL_TSIG_INVALID;
    }
    if (answer_mac(key, req_mac, req_mac_len, answer, &t, mac, &mac_len) < 0)
        return SEMAIL_TSIG_INVALID;
    if (CRYPTO_memcmp(mac, t.mac, mac_len) != 0) {
        semail__err(SEMAIL_EPERM, "the answer's MAC does not verify");
        return SEMAIL_TSIG_INVALID;
    }
    if ((now > t.time ? now - t.time : t.time - now) > t.fudge) {
        semail__err(SEMAIL_EPERM, "the answer was signed at %llu, now is %llu: clocks differ",
                    (unsigned long long)t.time, (unsigned long long)now);
        return SEMAIL_TSIG_INVALID;
    }
    return SEMAIL_TSIG_VERIFIED;
}
