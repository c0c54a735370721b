/*
 * net.c - lists of CIDR blocks (net.h): parsed once from configuration
 * text, then matched against client addresses from any thread.
 *
 * Contract: a list is immutable after semail_cidr_list_parse(); IPv4 and
 * IPv6 blocks never match each other's addresses, and an IPv4-mapped IPv6
 * address is its IPv4 address (in a block with a prefix of at least 96, and
 * as a client). Parsing is strict (numeric addresses only, no bits beyond
 * the prefix) so that a typo in trusted_networks is an error at start-up,
 * never a silently wider or narrower trust.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "semail/net.h"

/* Longest item accepted: an IPv6 address in full IPv4-mapped form plus "/128". */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4)

typedef struct cidr {
    int family; /* AF_INET (addr[0..3]) or AF_INET6 */
    unsigned int prefix;
    unsigned char addr[16];
} cidr;

struct semail_cidr_list {
    size_t n;
    cidr blocks[];
};

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* The text of an address into FAMILY/ADDR, an IPv4-mapped one as IPv4. */
static int parse_addr(const char *text, int *family, unsigned char addr[16])
{
    if (strchr(text, ':') == NULL) {
        *family = AF_INET;
        return inet_pton(AF_INET, text, addr) == 1 ? 0 : -1;
    }
    *family = AF_INET6;
    return inet_pton(AF_INET6, text, addr) == 1 ? 0 : -1;
}

/* 1 when the first PREFIX bits of A and B are equal. */
static int same_prefix(const unsigned char *a, const unsigned char *b, unsigned int prefix)
{
    unsigned int whole = prefix / 8, rest = prefix % 8;
    unsigned char mask;

    if (memcmp(a, b, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* 1 when no bit of ADDR (LEN octets) beyond PREFIX is set. */
static int host_bits_clear(const unsigned char *addr, size_t len, unsigned int prefix)
{
    size_t i;

    for (i = prefix / 8; i < len; i++) {
        unsigned char mask = i == prefix / 8 ? (unsigned char)(0xff >> (prefix % 8)) : 0xff;
        if (addr[i] & mask)
            return 0;
    }
    return 1;
}

/* "/PREFIX": 1 to 3 digits, at most MAX. */
static int parse_prefix(const char *p, unsigned int max, unsigned int *out)
{
    unsigned int v = 0;
    size_t i;

    for (i = 0; p[i] != '\0'; i++) {
        if (i >= 3 || p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (unsigned int)(p[i] - '0');
    }
    if (i == 0 || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_item(cidr *c, const char *item)
{
    char text[CIDR_TEXT_MAX + 1], addr[CIDR_TEXT_MAX + 1];
    size_t start = 0, end = strlen(item);
    char *slash;

    while (start < end && (item[start] == ' ' || item[start] == '\t'))
        start++;
    while (end > start && (item[end - 1] == ' ' || item[end - 1] == '\t'))
        end--;
    if (start == end)
        return semail__err(SEMAIL_EINVAL, "network list: empty item");
    if (end - start > CIDR_TEXT_MAX)
        return semail__err(SEMAIL_EINVAL, "network '%.*s...': too long", 16, item + start);
    memcpy(text, item + start, end - start);
    text[end - start] = '\0';
    memcpy(addr, text, end - start + 1);
    if ((slash = strchr(addr, '/')) != NULL)
        *slash = '\0';
    if (parse_addr(addr, &c->family, c->addr) < 0)
        return semail__err(SEMAIL_EINVAL, "network '%s': not a numeric IPv4 or IPv6 address", text);
    c->prefix = c->family == AF_INET ? 32 : 128;
    if (slash != NULL && parse_prefix(slash + 1, c->prefix, &c->prefix) < 0)
        return semail__err(SEMAIL_EINVAL, "network '%s': prefix must be 0-%u", text,
                           c->family == AF_INET ? 32u : 128u);
    if (c->family == AF_INET6 && c->prefix >= 96 && memcmp(c->addr, v4mapped, 12) == 0) {
        memmove(c->addr, c->addr + 12, 4);
        c->family = AF_INET;
        c->prefix -= 96;
    }
    if (!host_bits_clear(c->addr, c->family == AF_INET ? 4 : 16, c->prefix))
        return semail__err(SEMAIL_EINVAL,
                           "network '%s': address has bits set beyond the /%u prefix", text,
                           c->prefix);
    return 0;
}

int semail_cidr_list_parse(semail_cidr_list **out, const char *const *items, size_t n)
{
    semail_cidr_list *l;
    size_t i;
    int err;

    if (out == NULL || (n > 0 && items == NULL))
        return semail__err(SEMAIL_EINVAL, "semail_cidr_list_parse: NULL argument");
    *out = NULL;
    if (n > (SIZE_MAX - sizeof(*l)) / sizeof(cidr))
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if ((l = calloc(1, sizeof(*l) + n * sizeof(cidr))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (i = 0; i < n; i++) {
        if (items[i] == NULL) {
            err = semail__err(SEMAIL_EINVAL, "network list: item %zu is NULL", i);
            goto fail;
        }
        if ((err = parse_item(&l->blocks[i], items[i])) < 0)
            goto fail;
    }
    l->n = n;
    *out = l;
    return 0;
fail:
    free(l);
    return err;
}

int semail_cidr_list_match_addr(const semail_cidr_list *list, int family, const void *addr)
{
    unsigned char a[16];
    size_t i;

    if (addr == NULL || (family != AF_INET && family != AF_INET6))
        return semail__err(SEMAIL_EINVAL, "semail_cidr_list_match_addr: bad address");
    memcpy(a, addr, family == AF_INET ? 4 : 16);
    if (family == AF_INET6 && memcmp(a, v4mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        family = AF_INET;
    }
    if (list == NULL)
        return 0;
    for (i = 0; i < list->n; i++)
        if (list->blocks[i].family == family &&
            same_prefix(list->blocks[i].addr, a, list->blocks[i].prefix))
            return 1;
    return 0;
}

int semail_cidr_list_match(const semail_cidr_list *list, const char *ip_text)
{
    unsigned char a[16];
    int family;

    if (ip_text == NULL || parse_addr(ip_text, &family, a) < 0)
        return semail__err(SEMAIL_EINVAL, "'%s' is not a numeric IP address",
                           ip_text ? ip_text : "(null)");
    return semail_cidr_list_match_addr(list, family, a);
}

size_t semail_cidr_list_count(const semail_cidr_list *list)
{
    return list ? list->n : 0;
}

void semail_cidr_list_free(semail_cidr_list *list)
{
    free(list);
}
