/*
 * mx.c - from a mail domain to the ordered hosts and addresses to deliver
 * to (RFC 5321 5.1, RFC 7505), or to a verdict a delivery agent acts on.
 *
 * Contract: MX records sorted by preference, random among equals (a random
 * key per record, fresh on every call); CNAMEs followed at most
 * SEMAIL_MX_MAX_CNAME deep per name; the domain itself as implicit MX when
 * it has none; a lone "." MX refused at once (5.1.10); each host looked up
 * AAAA then A, hosts without address left out. DNS failures that may pass
 * (SERVFAIL, timeouts...) are temporary (4.4.3), answers that will not
 * change (NXDOMAIN, no address) permanent. Addresses in the additional
 * section are never trusted: every host is asked for separately.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx_internal.h"

#define MX_TEXT_MAX   2048
#define MX_DETAIL_MAX 512
#define MX_ADDRS_MAX  (2 * SEMAIL_MX_MAX_ADDRS_PER_FAMILY)

typedef struct mx_host {
    char name[SEMAIL_DNS_TEXT_MAX];
    unsigned int pref;
    size_t naddr;
    struct sockaddr_storage addr[MX_ADDRS_MAX];
    socklen_t addr_len[MX_ADDRS_MAX];
} mx_host;

struct semail_mx_result {
    semail_mx_status status;
    char enhanced[16];
    char text[MX_TEXT_MAX];
    bool implicit;
    size_t nhosts;
    mx_host host[SEMAIL_MX_MAX_HOSTS];
};

typedef enum lookup_status {
    LOOKUP_FOUND,    /* records of the type asked for, owned by canon */
    LOOKUP_NODATA,   /* the name exists, without such records */
    LOOKUP_NXDOMAIN, /* the name does not exist */
    LOOKUP_TEMP,     /* no usable answer now: detail says why */
    LOOKUP_LOOP      /* CNAME chain too long */
} lookup_status;

typedef struct lookup {
    lookup_status status;
    semail_dns_answer ans;
    semail_dns_name canon;
    char detail[MX_DETAIL_MAX];
} lookup;

/* Walks the answer section for records of one owner and type. */
typedef struct rr_iter {
    const semail_dns_msg *m;
    size_t off;
    unsigned int left;
} rr_iter;

static void iter_init(rr_iter *it, const semail_dns_msg *m)
{
    it->m = m;
    it->off = m->an_off;
    it->left = m->ancount;
}

static bool iter_next(rr_iter *it, const semail_dns_name *owner, uint16_t type, semail_dns_rr *rr)
{
    while (it->left > 0) {
        it->left--;
        if (semail__dns_rr_read(it->m, &it->off, rr) < 0) {
            it->left = 0; /* cannot happen after semail__dns_msg_parse; stop anyway */
            return false;
        }
        if (rr->rclass == SEMAIL_DNS_C_IN && rr->type == type &&
            semail__dns_name_equal(&rr->owner, owner))
            return true;
    }
    return false;
}

/* Follow the CNAMEs of lk->canon inside the answer; false when too deep. */
static bool follow_cnames(lookup *lk, uint16_t type, unsigned int *depth, bool *moved)
{
    for (;;) {
        rr_iter it;
        semail_dns_rr rr;
        semail_dns_name target;
        bool found = false;

        iter_init(&it, &lk->ans.msg);
        if (iter_next(&it, &lk->canon, type, &rr))
            return true;
        iter_init(&it, &lk->ans.msg);
        while (!found && iter_next(&it, &lk->canon, SEMAIL_DNS_T_CNAME, &rr))
            found = semail__dns_rr_cname(&lk->ans.msg, &rr, &target) == 0;
        if (!found)
            return true;
        if (++*depth > SEMAIL_MX_MAX_CNAME)
            return false;
        lk->canon = target;
        *moved = true;
    }
}

/*
 * Look NAME/TYPE up, following CNAMEs within an answer and, when a chain
 * leaves the answer, with a new query. Only ENOMEM is an error: every DNS
 * outcome is in lk->status.
 */
static int lookup_run(semail_resolver *r, const semail_dns_name *name, uint16_t type, lookup *lk)
{
    unsigned int depth = 0;
    int err;

    memset(lk, 0, sizeof(*lk));
    lk->canon = *name;
    for (;;) {
        bool moved = false;
        rr_iter it;
        semail_dns_rr rr;

        if ((err = semail__resolver_query(r, &lk->canon, type, &lk->ans)) < 0) {
            if (err == SEMAIL_ENOMEM)
                return err;
            lk->status = LOOKUP_TEMP;
            (void)snprintf(lk->detail, sizeof(lk->detail), "%s", semail_error_last());
            return 0;
        }
        if (!follow_cnames(lk, type, &depth, &moved)) {
            lk->status = LOOKUP_LOOP;
            return 0;
        }
        iter_init(&it, &lk->ans.msg);
        if (iter_next(&it, &lk->canon, type, &rr)) {
            lk->status = LOOKUP_FOUND;
            return 0;
        }
        if (lk->ans.msg.rcode == SEMAIL_DNS_R_NXDOMAIN || !moved) {
            lk->status =
                lk->ans.msg.rcode == SEMAIL_DNS_R_NXDOMAIN ? LOOKUP_NXDOMAIN : LOOKUP_NODATA;
            return 0;
        }
        semail__dns_answer_free(&lk->ans); /* the chain goes on outside this answer */
    }
}

static void lookup_free(lookup *lk)
{
    semail__dns_answer_free(&lk->ans);
}

static void name_text(char *out, const semail_dns_name *n)
{
    if (semail__dns_name_to_text(out, SEMAIL_DNS_TEXT_MAX, n) < 0)
        (void)snprintf(out, SEMAIL_DNS_TEXT_MAX, "?");
}

static void set_verdict(semail_mx_result *res, semail_mx_status status, const char *enhanced,
                        const char *fmt, ...) SEMAIL_PRINTF(4, 5);

static void set_verdict(semail_mx_result *res, semail_mx_status status, const char *enhanced,
                        const char *fmt, ...)
{
    va_list ap;
    res->status = status;
    (void)snprintf(res->enhanced, sizeof(res->enhanced), "%s", enhanced);
    va_start(ap, fmt);
    (void)vsnprintf(res->text, sizeof(res->text), fmt, ap);
    va_end(ap);
    if (status != SEMAIL_MX_OK)
        res->nhosts = 0;
}

/* A failed look-up of one name, as a delivery agent words it. */
typedef struct failure {
    bool temp;
    char name[SEMAIL_DNS_TEXT_MAX];
    const char *type;
    char detail[MX_DETAIL_MAX];
} failure;

static void note_temp(failure *f, const semail_dns_name *name, const char *type, const lookup *lk)
{
    f->temp = true;
    name_text(f->name, name);
    f->type = type;
    (void)snprintf(f->detail, sizeof(f->detail), "%s", lk->detail);
}

/* Add the AAAA then the A addresses of NAME to H; temporary failures noted in F. */
static int host_addresses(semail_resolver *r, const semail_dns_name *name, mx_host *h, failure *f)
{
    static const uint16_t types[] = {SEMAIL_DNS_T_AAAA, SEMAIL_DNS_T_A};
    size_t t;
    int err;

    for (t = 0; t < SEMAIL_ARRAY_LEN(types); t++) {
        lookup lk;
        rr_iter it;
        semail_dns_rr rr;
        size_t kept = 0;

        if ((err = lookup_run(r, name, types[t], &lk)) < 0)
            return err;
        if (lk.status == LOOKUP_TEMP)
            note_temp(f, name, types[t] == SEMAIL_DNS_T_A ? "A" : "AAAA", &lk);
        iter_init(&it, &lk.ans.msg);
        while (lk.status == LOOKUP_FOUND && kept < SEMAIL_MX_MAX_ADDRS_PER_FAMILY &&
               iter_next(&it, &lk.canon, types[t], &rr)) {
            if (semail__dns_rr_addr(&lk.ans.msg, &rr, &h->addr[h->naddr], &h->addr_len[h->naddr]) <
                0)
                continue;
            h->naddr++;
            kept++;
        }
        lookup_free(&lk);
    }
    return 0;
}

typedef struct mx_entry {
    uint16_t pref;
    uint32_t key; /* random: orders records of equal preference */
    semail_dns_rr rr;
} mx_entry;

static int mx_entry_cmp(const void *a, const void *b)
{
    const mx_entry *x = a, *y = b;
    if (x->pref != y->pref)
        return x->pref < y->pref ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* The well-formed MX records of lk->canon, in delivery order. */
static int mx_collect(const lookup *lk, mx_entry **out, size_t *count)
{
    const semail_dns_msg *m = &lk->ans.msg;
    mx_entry *e;
    size_t n = 0;
    rr_iter it;
    semail_dns_rr rr;

    *out = NULL;
    *count = 0;
    if ((e = calloc(m->ancount ? m->ancount : 1, sizeof(*e))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    iter_init(&it, m);
    while (iter_next(&it, &lk->canon, SEMAIL_DNS_T_MX, &rr)) {
        semail_dns_name host;
        if (semail__dns_rr_mx(m, &rr, &e[n].pref, &host) < 0)
            continue;
        e[n].key = arc4random();
        e[n].rr = rr;
        n++;
    }
    qsort(e, n, sizeof(*e), mx_entry_cmp);
    *out = e;
    *count = n;
    return 0;
}

static bool seen_host(const semail_dns_name *seen, size_t nseen, const semail_dns_name *host)
{
    size_t i;
    for (i = 0; i < nseen; i++)
        if (semail__dns_name_equal(&seen[i], host))
            return true;
    return false;
}

/* Look up the hosts of the sorted MX list E; the verdict goes into RES. */
static int resolve_mx_hosts(semail_mx_result *res, semail_resolver *r, const lookup *lk,
                            const mx_entry *e, size_t n, const char *domain)
{
    semail_dns_name seen[SEMAIL_MX_MAX_HOSTS];
    size_t i, nseen = 0;
    failure f;
    int err;

    memset(&f, 0, sizeof(f));
    for (i = 0; i < n && nseen < SEMAIL_MX_MAX_HOSTS; i++) {
        semail_dns_name host;
        uint16_t pref;
        mx_host *h = &res->host[res->nhosts];

        if (semail__dns_rr_mx(&lk->ans.msg, &e[i].rr, &pref, &host) < 0 ||
            semail__dns_name_is_root(&host) || seen_host(seen, nseen, &host))
            continue;
        seen[nseen++] = host;
        memset(h, 0, sizeof(*h));
        if ((err = host_addresses(r, &host, h, &f)) < 0)
            return err;
        if (h->naddr == 0)
            continue;
        name_text(h->name, &host);
        h->pref = pref;
        res->nhosts++;
    }
    if (res->nhosts > 0)
        set_verdict(res, SEMAIL_MX_OK, "2.0.0", "%s", "");
    else if (f.temp)
        set_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3",
                    "Host or domain name not found. Name service error for name=%s type=%s: "
                    "Host not found, try again (%s)",
                    f.name, f.type, f.detail);
    else
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.4.4",
                    "Host or domain name not found. No address found for any mail exchanger "
                    "of %s",
                    domain);
    return 0;
}

/* No MX records: the domain (its canonical name) is its own mail exchanger. */
static int resolve_implicit(semail_mx_result *res, semail_resolver *r, const lookup *lk)
{
    mx_host *h = &res->host[0];
    failure f;
    int err;

    memset(&f, 0, sizeof(f));
    memset(h, 0, sizeof(*h));
    res->implicit = true;
    if ((err = host_addresses(r, &lk->canon, h, &f)) < 0)
        return err;
    name_text(h->name, &lk->canon);
    if (h->naddr > 0) {
        res->nhosts = 1;
        set_verdict(res, SEMAIL_MX_OK, "2.0.0", "%s", "");
    } else if (f.temp) {
        set_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3",
                    "Host or domain name not found. Name service error for name=%s type=%s: "
                    "Host not found, try again (%s)",
                    f.name, f.type, f.detail);
    } else {
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2",
                    "Host or domain name not found. Name service error for name=%s type=A: "
                    "Host found but no data record of requested type",
                    h->name);
    }
    return 0;
}

/* "[192.0.2.1]" or "[IPv6:2001:db8::1]": one host, no DNS. 1 if DOMAIN is one. */
static int resolve_literal(semail_mx_result *res, const char *domain)
{
    size_t len = strlen(domain);
    char inner[INET6_ADDRSTRLEN + 8];
    mx_host *h = &res->host[0];
    int ok = 0;

    if (domain[0] != '[')
        return 0;
    memset(h, 0, sizeof(*h));
    if (domain[len - 1] == ']' && len - 2 < sizeof(inner)) {
        memcpy(inner, domain + 1, len - 2);
        inner[len - 2] = '\0';
        if (semail__strncasecmp(inner, "IPv6:", 5) == 0) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&h->addr[0];
            in6->sin6_family = AF_INET6;
            h->addr_len[0] = sizeof(*in6);
            ok = inet_pton(AF_INET6, inner + 5, &in6->sin6_addr) == 1;
        } else {
            struct sockaddr_in *in = (struct sockaddr_in *)&h->addr[0];
            in->sin_family = AF_INET;
            h->addr_len[0] = sizeof(*in);
            ok = inet_pton(AF_INET, inner, &in->sin_addr) == 1;
        }
    }
    if (!ok) {
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2", "Invalid address literal");
        return 1;
    }
    (void)snprintf(h->name, sizeof(h->name), "%s", domain);
    h->naddr = 1;
    res->nhosts = 1;
    set_verdict(res, SEMAIL_MX_OK, "2.0.0", "%s", "");
    return 1;
}

/* The domain as the caller gave it, safe to put in a bounce. */
static void printable(char *out, size_t size, const char *s)
{
    size_t i;
    for (i = 0; i + 1 < size && s[i] != '\0'; i++)
        out[i] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[i] = '\0';
}

static int resolve_domain(semail_mx_result *res, semail_resolver *r, const char *domain)
{
    semail_dns_name name;
    char shown[256];
    mx_entry *e = NULL;
    size_t n = 0;
    lookup lk;
    int err;

    printable(shown, sizeof(shown), domain);
    if (resolve_literal(res, domain))
        return 0;
    if (semail__dns_name_from_text(&name, domain) < 0) {
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2", "Invalid domain name %s", shown);
        return 0;
    }
    if ((err = lookup_run(r, &name, SEMAIL_DNS_T_MX, &lk)) < 0)
        return err;
    switch (lk.status) {
    case LOOKUP_TEMP:
        set_verdict(res, SEMAIL_MX_TEMPORARY, "4.4.3",
                    "Host or domain name not found. Name service error for name=%s type=MX: "
                    "Host not found, try again (%s)",
                    shown, lk.detail);
        break;
    case LOOKUP_NXDOMAIN:
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.1.2",
                    "Host or domain name not found. Name service error for name=%s type=MX: "
                    "Host not found",
                    shown);
        break;
    case LOOKUP_LOOP:
        set_verdict(res, SEMAIL_MX_PERMANENT, "5.4.4",
                    "Host or domain name not found. Name service error for name=%s type=MX: "
                    "CNAME chain too long",
                    shown);
        break;
    case LOOKUP_NODATA:
        err = resolve_implicit(res, r, &lk);
        break;
    case LOOKUP_FOUND:
        if ((err = mx_collect(&lk, &e, &n)) < 0)
            break;
        if (n == 0) /* only malformed MX records: as if there were none */
            err = resolve_implicit(res, r, &lk);
        else if (n == 1 && semail__dns_rr_mx(&lk.ans.msg, &e[0].rr, &e[0].pref, &name) == 0 &&
                 semail__dns_name_is_root(&name))
            set_verdict(res, SEMAIL_MX_PERMANENT, "5.1.10",
                        "Domain %s does not accept mail (null MX, RFC 7505)", shown);
        else
            err = resolve_mx_hosts(res, r, &lk, e, n, shown);
        break;
    }
    free(e);
    lookup_free(&lk);
    return err;
}

int semail_mx_resolve(semail_mx_result **out, semail_resolver *r, const char *domain)
{
    semail_mx_result *res;
    int err;

    if (out == NULL || r == NULL || domain == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL argument to semail_mx_resolve");
    *out = NULL;
    if ((res = calloc(1, sizeof(*res))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if ((err = resolve_domain(res, r, domain)) < 0) {
        free(res);
        return err;
    }
    *out = res;
    return 0;
}

void semail_mx_result_free(semail_mx_result *res)
{
    free(res);
}

semail_mx_status semail_mx_result_status(const semail_mx_result *res)
{
    return res->status;
}

const char *semail_mx_result_enhanced(const semail_mx_result *res)
{
    return res->enhanced;
}

const char *semail_mx_result_text(const semail_mx_result *res)
{
    return res->text;
}

int semail_mx_result_implicit(const semail_mx_result *res)
{
    return res->implicit ? 1 : 0;
}

size_t semail_mx_result_host_count(const semail_mx_result *res)
{
    return res->nhosts;
}

const char *semail_mx_result_host(const semail_mx_result *res, size_t i)
{
    return i < res->nhosts ? res->host[i].name : NULL;
}

unsigned int semail_mx_result_preference(const semail_mx_result *res, size_t i)
{
    return i < res->nhosts ? res->host[i].pref : 0;
}

size_t semail_mx_result_address_count(const semail_mx_result *res, size_t i)
{
    return i < res->nhosts ? res->host[i].naddr : 0;
}

int semail_mx_result_address(struct sockaddr_storage *out, socklen_t *out_len,
                             const semail_mx_result *res, size_t i, size_t j)
{
    if (out == NULL || i >= res->nhosts || j >= res->host[i].naddr)
        return semail__err(SEMAIL_ENOTFOUND, "no address %zu of MX host %zu", j, i);
    *out = res->host[i].addr[j];
    if (out_len != NULL)
        *out_len = res->host[i].addr_len[j];
    return 0;
}
