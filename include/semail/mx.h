/**
 * @file mx.h
 * @brief MX resolution for outbound delivery (RFC 5321 section 5.1, RFC 7505).
 *
 * A ::semail_resolver sends its own DNS queries (UDP with a random query id
 * from a kernel-chosen source port, answers checked against the query's id
 * and question, retries, TCP when an answer is truncated) to the configured
 * name server, which may listen on any port, or to the `nameserver` lines of
 * `/etc/resolv.conf`.
 *
 * semail_mx_resolve() turns a mail domain into the ordered list of hosts to
 * try, each with its addresses (IPv6 first, then IPv4), or into a verdict
 * that a delivery agent can act on: a temporary failure (try again later) or
 * a permanent one (bounce), each with an RFC 3463 enhanced status code and a
 * text for the bounce message.
 *
 * semail_mx_is_local_address() tells the delivery agent whether an address
 * would connect it back to itself.
 */
#ifndef SEMAIL_MX_H
#define SEMAIL_MX_H

#include <sys/socket.h>

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/**
 * Most MX hosts looked up and kept in a result: the first ones in preference
 * order. This bounds the DNS work (and the time) one resolution can cost.
 */
#define SEMAIL_MX_MAX_HOSTS 10

/** Most addresses kept per host and per address family. */
#define SEMAIL_MX_MAX_ADDRS_PER_FAMILY 16

/** Longest CNAME chain followed for one name. */
#define SEMAIL_MX_MAX_CNAME 8

/**
 * An opaque DNS resolver.
 *
 * After semail_resolver_new() it holds only read-only settings; every
 * query uses its own sockets and buffers. One resolver may therefore be
 * shared by any number of threads without locking.
 */
typedef struct semail_resolver semail_resolver;

/** Version of ::semail_resolver_options known to these headers. */
#define SEMAIL_RESOLVER_OPTIONS_VERSION 1

/** Options of a resolver. Strings are copied by semail_resolver_new(). */
typedef struct semail_resolver_options {
    unsigned int version; /**< SEMAIL_RESOLVER_OPTIONS_VERSION. */
    /**
     * The name server as `IPV4:PORT`, `[IPV6]:PORT`, `IPV4` or `[IPV6]`
     * (port 53). NULL or "": the `nameserver` lines of `/etc/resolv.conf`
     * (at most 3, port 53; none: 127.0.0.1). Host names are not accepted.
     */
    const char *server;
    unsigned int timeout_ms; /**< Wait for one answer from one server; 0: 5000. */
    unsigned int attempts;   /**< Rounds over all servers per query; 0: 2. */
} semail_resolver_options;

/** Static initializer: the defaults. */
#define SEMAIL_RESOLVER_OPTIONS_INIT                                                               \
    {                                                                                              \
        SEMAIL_RESOLVER_OPTIONS_VERSION, NULL, 0, 0                                                \
    }

/**
 * Initialize @p opts to the defaults.
 * @return 0, or ::SEMAIL_EINVAL when @p opts is NULL. Thread-safe.
 */
SEMAIL_EXTERN int semail_resolver_options_init(semail_resolver_options *opts);

/**
 * Create a resolver.
 *
 * @param[out] out the new resolver, to be freed with semail_resolver_free().
 * @param opts     options, or NULL for the defaults; copied.
 * @return 0; ::SEMAIL_EINVAL (an unknown options version, a server address
 *         that does not parse), ::SEMAIL_EIO (`/etc/resolv.conf` cannot be
 *         read for a reason other than its absence), ::SEMAIL_ENOMEM.
 *         Thread-safe.
 */
SEMAIL_EXTERN int semail_resolver_new(semail_resolver **out, const semail_resolver_options *opts);

/** Free a resolver (NULL is ignored). No query may be in progress on it. */
SEMAIL_EXTERN void semail_resolver_free(semail_resolver *r);

/** The verdict of an MX resolution. */
typedef enum semail_mx_status {
    SEMAIL_MX_OK = 0,        /**< At least one host with at least one address. */
    SEMAIL_MX_TEMPORARY = 1, /**< Try again later (e.g. 4.4.3: DNS server failure or timeout). */
    SEMAIL_MX_PERMANENT = 2  /**< Bounce (5.1.2 no such domain, 5.1.10 null MX, 5.4.4 no host). */
} semail_mx_status;

/** An opaque MX resolution result: a verdict and the ordered list of hosts. */
typedef struct semail_mx_result semail_mx_result;

/**
 * Resolve the mail exchangers of @p domain.
 *
 * The MX records are sorted by preference, in a random order among equal
 * preferences (a new order on every call); CNAMEs are followed up to
 * ::SEMAIL_MX_MAX_CNAME deep; each host is resolved to its AAAA then its A
 * addresses. A domain without MX records is its own mail exchanger with
 * preference 0 (the implicit MX). A null MX (a lone MX record whose host is
 * ".", whatever its preference, RFC 7505) is refused at once with 5.1.10;
 * a "." host among other MX records is ignored. MX hosts that do not
 * resolve are left out. A domain literal (`[192.0.2.1]`,
 * `[IPv6:2001:db8::1]`) gives one host with that address and no DNS query.
 *
 * Verdicts: NXDOMAIN, or a domain without MX and without address, or an
 * invalid domain name: permanent 5.1.2; MX hosts of which none resolved:
 * permanent 5.4.4, or temporary 4.4.3 when a look-up of any of them failed
 * temporarily; SERVFAIL, REFUSED, timeouts, unusable answers: temporary
 * 4.4.3; a CNAME chain that is too long: permanent 5.4.4.
 *
 * Addresses carry port 0: the caller sets the port it connects to.
 * Whether an address is this machine's own is not checked here: see
 * semail_mx_is_local_address().
 *
 * @param[out] out the result, whatever the verdict; free it with
 *                 semail_mx_result_free(). Set only when 0 is returned.
 * @param r        the resolver.
 * @param domain   the domain part of a mail address (ASCII; internationalized
 *                 names in their A-label form), with or without a final dot.
 * @return 0 when @p out holds a verdict (also a failure verdict: check
 *         semail_mx_result_status()); ::SEMAIL_EINVAL (a NULL argument),
 *         ::SEMAIL_ENOMEM. Thread-safe (see ::semail_resolver).
 */
SEMAIL_EXTERN int semail_mx_resolve(semail_mx_result **out, semail_resolver *r, const char *domain);

/** Free a result (NULL is ignored). */
SEMAIL_EXTERN void semail_mx_result_free(semail_mx_result *res);

/** The verdict of @p res. */
SEMAIL_EXTERN semail_mx_status semail_mx_result_status(const semail_mx_result *res);

/**
 * The RFC 3463 enhanced status code of the verdict: "2.0.0" for
 * ::SEMAIL_MX_OK, e.g. "4.4.3", "5.1.2", "5.1.10" otherwise.
 * @return a string owned by @p res; never NULL.
 */
SEMAIL_EXTERN const char *semail_mx_result_enhanced(const semail_mx_result *res);

/**
 * A one-line human text for a failure verdict, for logs and bounces, e.g.
 * "Host or domain name not found. Name service error for name=example.test
 * type=MX: Host not found". "" for ::SEMAIL_MX_OK.
 * @return a string owned by @p res; never NULL.
 */
SEMAIL_EXTERN const char *semail_mx_result_text(const semail_mx_result *res);

/**
 * Whether the hosts come from the implicit MX (the domain had no MX record).
 * @return 1 or 0.
 */
SEMAIL_EXTERN int semail_mx_result_implicit(const semail_mx_result *res);

/**
 * The number of hosts to try, in order; each has at least one address.
 * 0 unless the status is ::SEMAIL_MX_OK.
 */
SEMAIL_EXTERN size_t semail_mx_result_host_count(const semail_mx_result *res);

/**
 * The name of host @p i, in lower case without a final dot (bytes outside
 * letters, digits, `-` and `_` written `\DDD`), or the domain literal.
 * @return a string owned by @p res, or NULL when @p i is out of range.
 */
SEMAIL_EXTERN const char *semail_mx_result_host(const semail_mx_result *res, size_t i);

/** The MX preference of host @p i (0 for the implicit MX or out of range). */
SEMAIL_EXTERN unsigned int semail_mx_result_preference(const semail_mx_result *res, size_t i);

/** The number of addresses of host @p i (IPv6 ones first); 0 when out of range. */
SEMAIL_EXTERN size_t semail_mx_result_address_count(const semail_mx_result *res, size_t i);

/**
 * Address @p j of host @p i (an AF_INET6 or AF_INET address, port 0).
 *
 * @param[out] out     receives a copy of the address.
 * @param[out] out_len receives its length; may be NULL.
 * @param res          the result.
 * @param i            the host, from 0 to semail_mx_result_host_count() - 1.
 * @param j            the address, from 0 to semail_mx_result_address_count() - 1.
 * @return 0, or ::SEMAIL_ENOTFOUND when @p i or @p j is out of range.
 */
SEMAIL_EXTERN int semail_mx_result_address(struct sockaddr_storage *out, socklen_t *out_len,
                                           const semail_mx_result *res, size_t i, size_t j);

/**
 * Tell whether connecting to @p addr would reach this machine's own
 * listener, so that a delivery agent can refuse to loop mail to itself.
 *
 * The addresses of this machine are those of its interfaces (getifaddrs),
 * the whole of 127.0.0.0/8, `::1`, and the unspecified addresses; an IPv4
 * address mapped into IPv6 counts as the IPv4 address.
 *
 * With @p ours_count 0, @p addr is local when its address is one of this
 * machine's, whatever its port. Otherwise @p ours lists the caller's own
 * listen addresses (`HOST:PORT`, `[V6]:PORT`, or `HOST`, `[V6]` for every
 * port; HOST an IP address, `0.0.0.0` and `::` standing for every address of
 * this machine in that family), and @p addr is local when it matches one of
 * them: same port (or no port on either side: port 0 in @p addr) and same
 * address, or a wildcard of the same family and one of this machine's
 * addresses. This is how `semail-outbound` tells its own submission
 * listener (a loop) from the platform's inbound MX (a normal delivery).
 *
 * @param addr       an AF_INET or AF_INET6 address.
 * @param addr_len   its length.
 * @param ours       the caller's listen addresses; may be NULL when
 *                   @p ours_count is 0.
 * @param ours_count the number of entries in @p ours.
 * @return 1 (local), 0 (not local); ::SEMAIL_EINVAL (an unsupported family,
 *         an entry of @p ours that does not parse), ::SEMAIL_EIO
 *         (getifaddrs failed). Thread-safe.
 */
SEMAIL_EXTERN int semail_mx_is_local_address(const struct sockaddr *addr, socklen_t addr_len,
                                             const char *const *ours, size_t ours_count);

SEMAIL_END_DECLS

#endif
