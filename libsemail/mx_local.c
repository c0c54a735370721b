/*
 * mx_local.c - is this address one of ours? A delivery agent asks before
 * connecting, so that mail never loops back into the server sending it.
 *
 * Contract: the machine's addresses are read afresh on each call
 * (getifaddrs: interfaces come and go), plus 127.0.0.0/8, ::1 and the
 * unspecified addresses; an IPv4-mapped IPv6 address is its IPv4 address.
 * With a list of the caller's listen addresses, the port counts too.
 */
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <string.h>

#include "mx_internal.h"

/* An address reduced to what is compared: family, bytes, port. */
typedef struct ipaddr {
    int family;
    uint8_t ip[16];
    uint16_t port;
} ipaddr;

static bool ipaddr_from(ipaddr *a, const struct sockaddr *sa, socklen_t len)
{
    memset(a, 0, sizeof(*a));
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a->family = AF_INET;
        memcpy(a->ip, &in->sin_addr, 4);
        a->port = ntohs(in->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        a->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            a->family = AF_INET;
            memcpy(a->ip, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            a->family = AF_INET6;
            memcpy(a->ip, &in6->sin6_addr, 16);
        }
        return true;
    }
    return false;
}

static size_t ip_len(int family)
{
    return family == AF_INET ? 4 : 16;
}

static bool ip_equal(const ipaddr *a, const ipaddr *b)
{
    return a->family == b->family && memcmp(a->ip, b->ip, ip_len(a->family)) == 0;
}

static bool ip_unspecified(const ipaddr *a)
{
    static const uint8_t zero[16];
    return memcmp(a->ip, zero, ip_len(a->family)) == 0;
}

static bool ip_loopback(const ipaddr *a)
{
    static const uint8_t one[16] = {[15] = 1};
    if (a->family == AF_INET)
        return a->ip[0] == 127;
    return memcmp(a->ip, one, 16) == 0;
}

static bool machine_address(const ipaddr *a, const struct ifaddrs *ifs)
{
    const struct ifaddrs *i;
    if (ip_loopback(a) || ip_unspecified(a))
        return true;
    for (i = ifs; i != NULL; i = i->ifa_next) {
        ipaddr b;
        socklen_t len = sizeof(struct sockaddr_in6); /* getifaddrs gives full structures */
        if (i->ifa_addr == NULL)
            continue;
        if (i->ifa_addr->sa_family == AF_INET)
            len = sizeof(struct sockaddr_in);
        if (ipaddr_from(&b, i->ifa_addr, len) && ip_equal(a, &b))
            return true;
    }
    return false;
}

/* Does A reach the listener written as ENTRY? 1, 0, or SEMAIL_EINVAL. */
static int matches_entry(const ipaddr *a, const char *entry, const struct ifaddrs *ifs)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    bool has_port;
    ipaddr e;
    int err;

    if ((err = semail__sockaddr_parse(&ss, &sslen, &has_port, entry, 0)) < 0)
        return err;
    if (!ipaddr_from(&e, (const struct sockaddr *)&ss, sslen))
        return semail__err(SEMAIL_EINVAL, "bad address: %s", entry);
    if (has_port && a->port != 0 && e.port != a->port)
        return 0;
    if (e.family != a->family)
        return 0;
    if (ip_unspecified(&e))
        return machine_address(a, ifs);
    return ip_equal(a, &e);
}

int semail_mx_is_local_address(const struct sockaddr *addr, socklen_t addr_len,
                               const char *const *ours, size_t ours_count)
{
    struct ifaddrs *ifs = NULL;
    ipaddr a;
    size_t i;
    int rc = 0;

    if (!ipaddr_from(&a, addr, addr_len))
        return semail__err(SEMAIL_EINVAL, "not an IPv4 or IPv6 address");
    if (ours_count > 0 && ours == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL list of addresses");
    if (getifaddrs(&ifs) < 0)
        return semail__errno(SEMAIL_EIO, errno, "getifaddrs");
    if (ours_count == 0)
        rc = machine_address(&a, ifs);
    for (i = 0; i < ours_count && rc == 0; i++) {
        if (ours[i] == NULL) {
            rc = semail__err(SEMAIL_EINVAL, "NULL address in the list");
            break;
        }
        rc = matches_entry(&a, ours[i], ifs);
    }
    freeifaddrs(ifs);
    return rc;
}
