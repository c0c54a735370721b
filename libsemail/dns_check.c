/*
 * dns_check.c - does a domain's MX point at the platform? (`semail-admin
 * dns check DOMAIN`, and the state page of a person with their own domain.)
 *
 * Contract: the domain's MX hosts come from semail_mx_resolve() (sorted,
 * each with its addresses); the platform's mx_host is looked up A and AAAA
 * through the same resolver, following CNAMEs inside each answer. An MX
 * host is ours by name or by a shared address. Only the most preferred MX
 * hosts decide: that is where mail goes first. DNS failures give
 * SEMAIL_DNS_MX_UNKNOWN, never a wrong "not here".
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "dns_update_internal.h"
#include "mx_internal.h"

#define OURS_MAX (2 * SEMAIL_MX_MAX_ADDRS_PER_FAMILY)

typedef struct addr_set {
    struct sockaddr_storage a[OURS_MAX];
    size_t n;
    bool temp_failure;
} addr_set;

/* Add the TYPE addresses of NAME from an answer, following its CNAMEs. */
static void collect(addr_set *set, const semail_dns_answer *ans, const semail_dns_name *name,
                    uint16_t type)
{
    semail_dns_name cur = *name, target;
    size_t off = ans->msg.an_off;
    semail_dns_rr rr;
    unsigned int i;

    for (i = 0; i < ans->msg.ancount; i++) {
        if (semail__dns_rr_read(&ans->msg, &off, &rr) < 0)
            return;
        if (!semail__dns_name_equal(&rr.owner, &cur))
            continue;
        if (rr.type == SEMAIL_DNS_T_CNAME && semail__dns_rr_cname(&ans->msg, &rr, &target) == 0)
            cur = target;
        else if (rr.type == type && set->n < OURS_MAX) {
            socklen_t sl;
            if (semail__dns_rr_addr(&ans->msg, &rr, &set->a[set->n], &sl) == 0)
                set->n++;
        }
    }
}

/* The addresses of HOST; a failed look-up sets temp_failure. */
static int host_addresses(semail_resolver *r, const semail_dns_name *host, addr_set *set)
{
    static const uint16_t types[] = {SEMAIL_DNS_T_AAAA, SEMAIL_DNS_T_A};
    semail_dns_answer ans;
    size_t i;
    int err;

    memset(set, 0, sizeof(*set));
    for (i = 0; i < SEMAIL_ARRAY_LEN(types); i++) {
        if ((err = semail__resolver_query(r, host, types[i], &ans)) == SEMAIL_ENOMEM)
            return err;
        if (err < 0) {
            set->temp_failure = true;
            continue;
        }
        collect(set, &ans, host, types[i]);
        semail__dns_answer_free(&ans);
    }
    return 0;
}

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
                      &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/* Is MX host I of RES ours, by name or by one of its addresses? */
static bool host_is_ours(const semail_mx_result *res, size_t i, const char *mx_text,
                         const addr_set *ours)
{
    size_t j, k, n = semail_mx_result_address_count(res, i);

    if (strcmp(semail_mx_result_host(res, i), mx_text) == 0)
        return true;
    for (j = 0; j < n; j++) {
        struct sockaddr_storage ss;
        if (semail_mx_result_address(&ss, NULL, res, i, j) < 0)
            continue;
        for (k = 0; k < ours->n; k++)
            if (same_address(&ss, &ours->a[k]))
                return true;
    }
    return false;
}

static void verdict(semail_dns_mx_check *out, semail_dns_mx_verdict v, const char *fmt, ...)
    SEMAIL_PRINTF(3, 4);

static void verdict(semail_dns_mx_check *out, semail_dns_mx_verdict v, const char *fmt, ...)
{
    va_list ap;
    out->verdict = v;
    va_start(ap, fmt);
    (void)vsnprintf(out->text, sizeof(out->text), fmt, ap); /* a display text may be cut */
    va_end(ap);
}

/* Judge the most preferred hosts of a resolved domain. */
static int judge_hosts(semail_dns_mx_check *out, semail_resolver *r, const semail_mx_result *res,
                       const char *domain, const semail_dns_name *mx)
{
    char mx_text[SEMAIL_DNS_TEXT_MAX];
    addr_set ours;
    size_t i, n = semail_mx_result_host_count(res);
    unsigned int best = semail_mx_result_preference(res, 0);
    int err;

    (void)semail__dns_name_to_text(mx_text, sizeof(mx_text), mx);
    if ((err = host_addresses(r, mx, &ours)) < 0)
        return err;
    for (i = 0; i < n && semail_mx_result_preference(res, i) == best; i++) {
        if (host_is_ours(res, i, mx_text, &ours))
            continue;
        if (ours.n == 0 && ours.temp_failure)
            verdict(out, SEMAIL_DNS_MX_UNKNOWN,
                    "%s: MX %s; the addresses of %s cannot be looked up now", domain,
                    semail_mx_result_host(res, i), mx_text);
        else
            verdict(out, SEMAIL_DNS_MX_ELSEWHERE, "%s: MX points at %s, not at %s", domain,
                    semail_mx_result_host(res, i), mx_text);
        return 0;
    }
    verdict(out, SEMAIL_DNS_MX_HERE, "%s: MX points here (%s)", domain,
            semail_mx_result_host(res, 0));
    return 0;
}

int semail_dns_check_mx(semail_dns_mx_check *out, semail_resolver *r, const char *domain,
                        const char *mx_host)
{
    semail_dns_name d, mx;
    char text[SEMAIL_DNS_TEXT_MAX];
    semail_mx_result *res = NULL;
    int err;

    if (out == NULL || r == NULL || domain == NULL || mx_host == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL argument");
    memset(out, 0, sizeof(*out));
    if ((err = semail__dns_check_host(&d, domain)) < 0 ||
        (err = semail__dns_check_host(&mx, mx_host)) < 0)
        return err;
    (void)semail__dns_name_to_text(text, sizeof(text), &d);
    if ((err = semail_mx_resolve(&res, r, text)) < 0)
        return err;
    switch (semail_mx_result_status(res)) {
    case SEMAIL_MX_TEMPORARY:
        verdict(out, SEMAIL_DNS_MX_UNKNOWN, "%s: the DNS look-up failed for now (%s): try again",
                text, semail_mx_result_text(res));
        break;
    case SEMAIL_MX_PERMANENT:
        verdict(out, SEMAIL_DNS_MX_NONE, "%s: no usable MX (%s)", text, semail_mx_result_text(res));
        break;
    default:
        if (semail_mx_result_implicit(res)) {
            char mx_text[SEMAIL_DNS_TEXT_MAX];
            (void)semail__dns_name_to_text(mx_text, sizeof(mx_text), &mx);
            verdict(out, SEMAIL_DNS_MX_NONE, "%s has no MX record: add \"%s. MX 10 %s.\"", text,
                    text, mx_text);
        } else {
            err = judge_hosts(out, r, res, text, &mx);
        }
    }
    semail_mx_result_free(res);
    return err;
}
