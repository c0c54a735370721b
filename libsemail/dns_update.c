/*
 * dns_update.c - RFC 2136 dynamic updates of the platform's zone, signed
 * with TSIG (RFC 8945): give a subdomain its MX and SPF TXT records, take
 * them away again.
 *
 * Contract: names are checked before anything is built (lower case, LDH
 * labels, strictly inside the zone). Each update is one TCP exchange (no
 * UDP retransmission that could apply an update twice and then report the
 * second copy's YXDOMAIN) bounded by the updater's timeout. An answer
 * counts only when it matches the request (id, opcode) and its TSIG
 * verifies; a failure answer that is not signed still fails the call (it
 * can only deny). The updater is read-only after _new.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns_update_internal.h"
#include "mx_internal.h"

#define WRITER_NAMES 32
#define SERVER_TEXT  300

struct semail_dns_updater {
    struct sockaddr_storage server;
    socklen_t server_len;
    char server_text[SERVER_TEXT];
    semail_dns_name zone;
    semail_tsig_key *key;
    unsigned int timeout_ms;
};

/* A message being written; names are compressed against earlier ones. */
typedef struct writer {
    uint8_t *buf;
    size_t cap, len;
    size_t names[WRITER_NAMES]; /* offsets of names (and their suffixes) written */
    size_t nnames;
    bool overflow;
} writer;

/* ---- names -------------------------------------------------------------- */

/* Letter-digit-hyphen labels (RFC 1123 2.1); upper case only when ANY_CASE. */
static int check_labels(const char *text, bool any_case, size_t *len)
{
    size_t n = strlen(text), i, label = 0;

    if (n > 0 && text[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return semail__err(SEMAIL_EINVAL, "a domain name has 1 to 253 characters");
    for (i = 0; i <= n; i++) {
        char c = i < n ? text[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63)
                return semail__err(SEMAIL_EINVAL,
                                   "a label of a domain name has 1 to 63 characters");
            if (text[i - 1] == '-' || text[i - label] == '-')
                return semail__err(SEMAIL_EINVAL, "a label of a domain name may not start or "
                                                  "end with '-'");
            label = 0;
            continue;
        }
        if (c >= 'A' && c <= 'Z' && !any_case)
            return semail__err(SEMAIL_EINVAL, "a name must be in lower case");
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return semail__err(SEMAIL_EINVAL, "a domain name has only letters, digits, '-' and "
                                              "'.'");
        label++;
    }
    *len = n;
    return 0;
}

static int name_from_checked(semail_dns_name *out, const char *text, size_t n)
{
    char copy[256];
    size_t i;
    memcpy(copy, text, n);
    copy[n] = '\0';
    if (semail__dns_name_from_text(out, copy) < 0)
        return SEMAIL_EINVAL;
    for (i = 0; i < out->len; i++)
        out->wire[i] = (uint8_t)semail__tolower(out->wire[i]);
    return 0;
}

int semail__dns_check_host(semail_dns_name *out, const char *host)
{
    size_t n = 0;
    int err;
    out->len = 0;
    if (host == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL host name");
    if ((err = check_labels(host, true, &n)) < 0)
        return err;
    return name_from_checked(out, host, n);
}

int semail__dns_check_name_in_zone(semail_dns_name *out, const char *name,
                                   const semail_dns_name *zone)
{
    size_t n = 0, pos = 0;
    int err;

    out->len = 0;
    if (name == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL name");
    if ((err = check_labels(name, false, &n)) < 0 || (err = name_from_checked(out, name, n)) < 0)
        return err;
    /* Walk label by label until what is left is as long as the zone. */
    while (pos < out->len && out->len - pos > zone->len)
        pos += (size_t)out->wire[pos] + 1;
    if (pos == 0 || out->len - pos != zone->len ||
        memcmp(out->wire + pos, zone->wire, zone->len) != 0)
        return semail__err(SEMAIL_EINVAL, "the name is not a subdomain of the zone");
    return 0;
}

/* ---- writing messages ---------------------------------------------------- */

static void w_bytes(writer *w, const void *p, size_t n)
{
    if (w->overflow || w->cap - w->len < n) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void w_16(writer *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    w_bytes(w, b, 2);
}

static void w_32(writer *w, uint32_t v)
{
    w_16(w, (uint16_t)(v >> 16));
    w_16(w, (uint16_t)v);
}

/* Offset of a name written before that equals the suffix of N at POS, or 0. */
static size_t find_suffix(const writer *w, const semail_dns_name *n, size_t pos)
{
    semail_dns_name suffix, seen;
    size_t i;

    suffix.len = n->len - pos;
    memcpy(suffix.wire, n->wire + pos, suffix.len);
    for (i = 0; i < w->nnames; i++) {
        size_t off = w->names[i];
        if (semail__dns_name_unpack(&seen, w->buf, w->len, &off) == 0 &&
            semail__dns_name_equal(&seen, &suffix))
            return w->names[i];
    }
    return 0;
}

/* Write N, ending in a pointer to the longest suffix already in the message. */
static void w_name(writer *w, const semail_dns_name *n)
{
    size_t pos = 0, target = 0, start = w->len, i;

    while (pos < n->len && n->wire[pos] != 0 && (target = find_suffix(w, n, pos)) == 0)
        pos += (size_t)n->wire[pos] + 1;
    if (target != 0) {
        w_bytes(w, n->wire, pos);
        w_16(w, (uint16_t)(0xC000 | target));
    } else {
        w_bytes(w, n->wire, n->len);
    }
    for (i = 0; i < pos && !w->overflow; i += (size_t)n->wire[i] + 1)
        if (start + i < 0x4000 && w->nnames < WRITER_NAMES)
            w->names[w->nnames++] = start + i;
}

static void w_header(writer *w, uint16_t id, uint16_t prcount, uint16_t upcount,
                     const semail_dns_name *zone)
{
    w_16(w, id);
    w_16(w, SEMAIL_DNS_O_UPDATE << 11);
    w_16(w, 1); /* ZOCOUNT */
    w_16(w, prcount);
    w_16(w, upcount);
    w_16(w, 0); /* ADCOUNT: the TSIG is counted when it is added */
    w_name(w, zone);
    w_16(w, SEMAIL_DNS_T_SOA);
    w_16(w, SEMAIL_DNS_C_IN);
}

/* A record without rdata: a prerequisite or an RRset deletion. */
static void w_empty_rr(writer *w, const semail_dns_name *name, uint16_t type, uint16_t rclass)
{
    w_name(w, name);
    w_16(w, type);
    w_16(w, rclass);
    w_32(w, 0);
    w_16(w, 0);
}

static void w_mx(writer *w, const semail_dns_name *name, uint32_t ttl, const semail_dns_name *mx)
{
    size_t rdlen_at;
    w_name(w, name);
    w_16(w, SEMAIL_DNS_T_MX);
    w_16(w, SEMAIL_DNS_C_IN);
    w_32(w, ttl);
    rdlen_at = w->len;
    w_16(w, 0);
    w_16(w, SEMAIL_DNS_MX_PREFERENCE);
    w_name(w, mx); /* MX rdata may be compressed (RFC 3597 4) */
    if (!w->overflow) {
        size_t rdlen = w->len - rdlen_at - 2;
        w->buf[rdlen_at] = (uint8_t)(rdlen >> 8);
        w->buf[rdlen_at + 1] = (uint8_t)rdlen;
    }
}

/* TXT rdata: the text in character-strings of at most 255 bytes. */
static void w_txt(writer *w, const semail_dns_name *name, uint32_t ttl, const char *text)
{
    size_t n = strlen(text), chunks = (n + 254) / 255, i;
    w_name(w, name);
    w_16(w, SEMAIL_DNS_T_TXT);
    w_16(w, SEMAIL_DNS_C_IN);
    w_32(w, ttl);
    w_16(w, (uint16_t)(n + chunks));
    for (i = 0; i < n; i += 255) {
        uint8_t len = (uint8_t)(n - i > 255 ? 255 : n - i);
        w_bytes(w, &len, 1);
        w_bytes(w, text + i, len);
    }
}

static int w_finish(const writer *w, size_t *len)
{
    if (w->overflow)
        return semail__err(SEMAIL_ETOOBIG, "DNS update message does not fit");
    *len = w->len;
    return 0;
}

int semail__dns_update_build_add(uint8_t *buf, size_t cap, size_t *len, uint16_t id,
                                 const semail_dns_name *zone, const semail_dns_name *name,
                                 const semail_dns_name *mx, const char *spf, uint32_t ttl)
{
    writer w = {.buf = buf, .cap = cap};

    w_header(&w, id, 1, spf != NULL ? 2 : 1, zone);
    w_empty_rr(&w, name, SEMAIL_DNS_T_ANY, SEMAIL_DNS_C_NONE); /* name is not in use */
    w_mx(&w, name, ttl, mx);
    if (spf != NULL)
        w_txt(&w, name, ttl, spf);
    return w_finish(&w, len);
}

int semail__dns_update_build_remove(uint8_t *buf, size_t cap, size_t *len, uint16_t id,
                                    const semail_dns_name *zone, const semail_dns_name *name)
{
    writer w = {.buf = buf, .cap = cap};

    w_header(&w, id, 0, 2, zone);
    w_empty_rr(&w, name, SEMAIL_DNS_T_MX, SEMAIL_DNS_C_ANY); /* delete an RRset */
    w_empty_rr(&w, name, SEMAIL_DNS_T_TXT, SEMAIL_DNS_C_ANY);
    return w_finish(&w, len);
}

/* ---- answers ------------------------------------------------------------- */

static const char *rcode_name(unsigned int rcode)
{
    static const char *const names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",
                                        "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
                                        "NXRRSET", "NOTAUTH", "NOTZONE"};
    return rcode < SEMAIL_ARRAY_LEN(names) ? names[rcode] : "an unknown RCODE";
}

/* The code for a verified answer's RCODE. */
static int verified_result(unsigned int rcode, const semail_tsig_key *key, const char *who,
                           const char *name)
{
    switch (rcode) {
    case SEMAIL_DNS_R_NOERROR:
        return 0;
    case SEMAIL_DNS_R_YXDOMAIN:
        return semail__err(SEMAIL_EEXISTS, "%s is already in use in the DNS (%s answered YXDOMAIN)",
                           name, who);
    case SEMAIL_DNS_R_REFUSED:
        return semail__err(SEMAIL_EPERM,
                           "DNS server %s refused the update (REFUSED): does its "
                           "update-policy grant key %s?",
                           who, key->name_text);
    case SEMAIL_DNS_R_NOTAUTH:
        return semail__err(SEMAIL_EPERM,
                           "DNS server %s is not authoritative for the zone "
                           "(NOTAUTH)",
                           who);
    case SEMAIL_DNS_R_SERVFAIL:
        return semail__err(SEMAIL_ETEMP, "DNS server %s failed the update (SERVFAIL)", who);
    default:
        return semail__err(SEMAIL_ERROR, "DNS server %s answered the update with %s", who,
                           rcode_name(rcode));
    }
}

/* The code for an answer whose TSIG did not verify (WHY: the message). */
static int unverified_result(unsigned int rcode, const char *who, const char *why)
{
    switch (rcode) {
    case SEMAIL_DNS_R_NOERROR:
        return semail__err(SEMAIL_ETEMP,
                           "DNS server %s answered NOERROR, but %s: the update may "
                           "or may not have been made",
                           who, why);
    case SEMAIL_DNS_R_REFUSED:
    case SEMAIL_DNS_R_NOTAUTH:
        return semail__err(SEMAIL_EPERM, "DNS server %s refused the update (%s; %s)", who,
                           rcode_name(rcode), why);
    case SEMAIL_DNS_R_SERVFAIL:
        return semail__err(SEMAIL_ETEMP, "DNS server %s failed the update (SERVFAIL; %s)", who,
                           why);
    default:
        return semail__err(SEMAIL_ERROR, "DNS server %s answered the update with %s (%s)", who,
                           rcode_name(rcode), why);
    }
}

int semail__dns_update_result(const semail_tsig_key *key, const uint8_t *req,
                              const uint8_t *req_mac, size_t req_mac_len, const uint8_t *ans,
                              size_t alen, uint64_t now, const char *who, const char *name)
{
    semail_tsig_verdict v;
    unsigned int rcode, tsig_error;
    char why[256], buf[32];

    if (alen < SEMAIL_DNS_HEADER_LEN || ans[0] != req[0] || ans[1] != req[1] ||
        (ans[2] & 0x80) == 0 || ((ans[2] >> 3) & 0x0F) != SEMAIL_DNS_O_UPDATE)
        return semail__err(SEMAIL_ETEMP, "DNS server %s: the answer does not match the update",
                           who);
    rcode = ans[3] & 0x0F;
    v = semail__tsig_verify(key, req_mac, req_mac_len, ans, alen, now, &tsig_error);
    if (v == SEMAIL_TSIG_VERIFIED)
        return verified_result(rcode, key, who, name);
    if (v == SEMAIL_TSIG_SERVER_ERROR)
        return semail__err(SEMAIL_EPERM,
                           "DNS server %s rejected the signature of the update "
                           "(%s, %s): is %s the server's key, and are the clocks "
                           "right?",
                           who, rcode_name(rcode),
                           semail__tsig_error_name(tsig_error, buf, sizeof(buf)), key->name_text);
    (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
    return unverified_result(rcode, who, why);
}

/* ---- the updater ---------------------------------------------------------- */

/* "HOST:PORT" with HOST a name: look it up (the first address wins). */
static int server_by_name(semail_dns_updater *u, const char *text)
{
    char host[256];
    const char *colon = strrchr(text, ':'), *port = colon ? colon + 1 : "53";
    size_t hn = colon ? (size_t)(colon - text) : strlen(text);
    struct addrinfo hints, *res = NULL;
    int rc;

    if (hn == 0 || hn >= sizeof(host) || *port == '\0')
        return semail__err(SEMAIL_EINVAL, "bad DNS server address: %.300s", text);
    memcpy(host, text, hn);
    host[hn] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
        return semail__err(rc == EAI_NONAME  ? SEMAIL_ENOTFOUND
                           : rc == EAI_AGAIN ? SEMAIL_ETEMP
                                             : SEMAIL_EINVAL,
                           "DNS server %.300s: %s", text, gai_strerror(rc));
    memcpy(&u->server, res->ai_addr, res->ai_addrlen);
    u->server_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int set_server(semail_dns_updater *u, const char *text)
{
    if (text == NULL || text[0] == '\0')
        text = "127.0.0.1:53";
    if (semail__strlcpy(u->server_text, text, sizeof(u->server_text)) < 0)
        return semail__err(SEMAIL_EINVAL, "DNS server address too long");
    if (semail__sockaddr_parse(&u->server, &u->server_len, NULL, text, 53) == 0)
        return 0;
    return server_by_name(u, text);
}

int semail_dns_updater_options_init(semail_dns_updater_options *opts)
{
    semail_dns_updater_options def = SEMAIL_DNS_UPDATER_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    *opts = def;
    return 0;
}

int semail_dns_updater_new(semail_dns_updater **out, const semail_dns_updater_options *opts)
{
    semail_dns_updater *u = NULL;
    int err;

    if (out == NULL || opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL argument");
    *out = NULL;
    if (opts->version != SEMAIL_DNS_UPDATER_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "unknown DNS updater options version %u", opts->version);
    if (opts->zone == NULL || opts->zone[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "no zone to update");
    if (opts->tsig_key == NULL || opts->tsig_key[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "no TSIG key file: updates are always signed");
    if ((u = calloc(1, sizeof(*u))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    u->timeout_ms = opts->timeout_ms ? opts->timeout_ms : SEMAIL_DNS_DEFAULT_TIMEOUT_MS;
    if (semail__dns_check_host(&u->zone, opts->zone) < 0) {
        err = semail__err(SEMAIL_EINVAL, "zone %.300s: %s", opts->zone, "not a valid domain name");
        goto done;
    }
    if ((err = set_server(u, opts->server)) < 0 ||
        (err = semail_tsig_key_load(&u->key, opts->tsig_key)) < 0)
        goto done;
    *out = u;
    u = NULL;
done:
    semail_dns_updater_free(u);
    return err;
}

void semail_dns_updater_free(semail_dns_updater *u)
{
    if (u == NULL)
        return;
    semail_tsig_key_free(u->key);
    free(u);
}

/* Sign MSG, send it, and judge the answer. */
static int send_update(semail_dns_updater *u, uint8_t *msg, size_t len, const char *name)
{
    uint8_t mac[SEMAIL_TSIG_MAC_MAX], *ans = NULL;
    size_t mac_len = 0, alen = 0;
    int err;

    if ((err = semail__tsig_sign(u->key, msg, SEMAIL_DNS_UPDATE_MAX, &len, (uint64_t)time(NULL),
                                 mac, &mac_len)) < 0)
        return err;
    if ((err = semail__dns_tcp_exchange((const struct sockaddr *)&u->server, u->server_len,
                                        u->server_text, msg, len, u->timeout_ms, &ans, &alen)) < 0)
        return err;
    err = semail__dns_update_result(u->key, msg, mac, mac_len, ans, alen, (uint64_t)time(NULL),
                                    u->server_text, name);
    free(ans);
    return err;
}

static int check_spf(const char *spf)
{
    size_t n, i;
    if (spf == NULL)
        return 0;
    n = strlen(spf);
    if (n == 0 || n > SEMAIL_DNS_SPF_MAX)
        return semail__err(SEMAIL_EINVAL, "the SPF text has 1 to %u bytes", SEMAIL_DNS_SPF_MAX);
    for (i = 0; i < n; i++)
        if (spf[i] < 0x20 || spf[i] > 0x7E)
            return semail__err(SEMAIL_EINVAL, "the SPF text has only printable ASCII");
    return 0;
}

/* Check NAME against the zone, naming it (printably) in the message. */
static int check_name(const semail_dns_updater *u, semail_dns_name *out, const char *name)
{
    char why[256], shown[80];
    size_t i;
    int err;

    if ((err = semail__dns_check_name_in_zone(out, name, &u->zone)) == 0)
        return 0;
    (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
    for (i = 0; name != NULL && name[i] != '\0' && i + 1 < sizeof(shown); i++)
        shown[i] = name[i] > 0x20 && name[i] < 0x7F ? name[i] : '?';
    shown[i] = '\0';
    return semail__err(err, "invalid name '%s': %s", shown, why);
}

int semail_dns_add_mail_records(semail_dns_updater *u, const char *name, const char *mx_host,
                                const char *spf_text, unsigned int ttl)
{
    uint8_t *msg;
    size_t len = 0;
    semail_dns_name n, mx;
    char text[SEMAIL_DNS_TEXT_MAX];
    int err;

    if (u == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL updater");
    if ((err = check_name(u, &n, name)) < 0)
        return err;
    if ((err = semail__dns_check_host(&mx, mx_host)) < 0) {
        (void)semail__strlcpy(text, semail_error_last(), sizeof(text));
        return semail__err(err, "invalid MX host: %s", text);
    }
    if ((err = check_spf(spf_text)) < 0)
        return err;
    if (ttl > 0x7FFFFFFFu)
        return semail__err(SEMAIL_EINVAL, "TTL %u is over 2^31 - 1", ttl);
    if ((msg = malloc(SEMAIL_DNS_UPDATE_MAX)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    (void)semail__dns_name_to_text(text, sizeof(text), &n);
    if ((err = semail__dns_update_build_add(msg, SEMAIL_DNS_UPDATE_MAX, &len,
                                            (uint16_t)arc4random_uniform(65536), &u->zone, &n, &mx,
                                            spf_text, ttl ? ttl : SEMAIL_DNS_DEFAULT_TTL)) == 0)
        err = send_update(u, msg, len, text);
    free(msg);
    return err;
}

int semail_dns_remove_name_records(semail_dns_updater *u, const char *name)
{
    uint8_t *msg;
    size_t len = 0;
    semail_dns_name n;
    char text[SEMAIL_DNS_TEXT_MAX];
    int err;

    if (u == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL updater");
    if ((err = check_name(u, &n, name)) < 0)
        return err;
    if ((msg = malloc(SEMAIL_DNS_UPDATE_MAX)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    (void)semail__dns_name_to_text(text, sizeof(text), &n);
    if ((err = semail__dns_update_build_remove(msg, SEMAIL_DNS_UPDATE_MAX, &len,
                                               (uint16_t)arc4random_uniform(65536), &u->zone,
                                               &n)) == 0)
        err = send_update(u, msg, len, text);
    free(msg);
    return err;
}
