/**
 * @file net.h
 * @brief Network address lists: CIDR blocks such as `trusted_networks`.
 *
 * A ::semail_cidr_list is parsed once from text (`127.0.0.0/8`, `::1/128`,
 * `192.0.2.7`) and then asked whether a client address belongs to it.
 * IPv4 and IPv6 blocks are kept apart: `::/0` matches every IPv6 address
 * and no IPv4 one. An IPv4-mapped IPv6 address (\c \::ffff:192.0.2.1, in a
 * block or as a client) stands for its IPv4 address, so that a dual-stack
 * socket's clients match IPv4 blocks.
 */
#ifndef SEMAIL_NET_H
#define SEMAIL_NET_H

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** An opaque, immutable list of CIDR blocks. */
typedef struct semail_cidr_list semail_cidr_list;

/**
 * Parse @p n blocks. Each item is an IPv4 or IPv6 address in numeric form,
 * optionally followed by `/PREFIX` (0-32 for IPv4, 0-128 for IPv6; without
 * it, the single address). Blanks around an item are ignored. An address
 * with bits set beyond its prefix (`10.0.0.1/8`) is refused as a likely
 * typo, as are names, zone indexes (`fe80::1%eth0`) and empty items.
 * @p n may be 0: the list then matches nothing.
 *
 * @param[out] out  the new list, to be freed with semail_cidr_list_free().
 * @param items     @p n NUL-terminated strings (not kept).
 * @return 0, ::SEMAIL_EINVAL (the message quotes the item and says what is
 *         wrong), ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_cidr_list_parse(semail_cidr_list **out, const char *const *items,
                                         size_t n);

/**
 * Whether @p ip_text, a numeric IPv4 or IPv6 address without brackets or
 * port (as in ::semail_envelope.client_addr), is in one of the blocks.
 *
 * @return 1 (inside), 0 (outside, or @p list is NULL), or ::SEMAIL_EINVAL
 *         when @p ip_text is not a numeric address (it matches nothing).
 *         Thread-safe: a list may be shared by any number of threads.
 */
SEMAIL_EXTERN int semail_cidr_list_match(const semail_cidr_list *list, const char *ip_text);

/**
 * Same as semail_cidr_list_match() with the address in binary form:
 * @p family is `AF_INET` with 4 octets or `AF_INET6` with 16 octets at
 * @p addr, in network order (`sin_addr`, `sin6_addr`).
 * @return 1, 0, or ::SEMAIL_EINVAL (another family, NULL @p addr).
 */
SEMAIL_EXTERN int semail_cidr_list_match_addr(const semail_cidr_list *list, int family,
                                              const void *addr);

/** The number of blocks in @p list (0 for NULL). */
SEMAIL_EXTERN size_t semail_cidr_list_count(const semail_cidr_list *list);

/** Free a list. NULL is accepted. */
SEMAIL_EXTERN void semail_cidr_list_free(semail_cidr_list *list);

SEMAIL_END_DECLS

#endif
