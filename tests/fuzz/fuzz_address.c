/*
 * fuzz_address.c - libFuzzer target for the RFC 5321 path parser and the
 * MAIL/RCPT argument parsers.
 *
 * Checks: the parser stays within LEN bytes, an accepted address respects
 * the limits and holds no control or 8-bit byte, formatting it always fits
 * SEMAIL_PATH_MAX + 3, and formatting then parsing again gives the same
 * address back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_clean(const char *s, size_t max)
{
    size_t i, n = strlen(s);

    CHECK(n <= max);
    for (i = 0; i < n; i++)
        CHECK((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f);
}

static void round_trip(const semail_address *a, unsigned int flags)
{
    char out[SEMAIL_PATH_MAX + 3], path[SEMAIL_PATH_MAX + 8];
    semail_address b;
    size_t used;

    CHECK(semail_address_format(out, sizeof(out), a) == 0);
    CHECK(semail__fmt(path, sizeof(path), "<%s>", out) == 0);
    CHECK(semail_address_parse(&b, path, strlen(path), flags, &used) == 0);
    CHECK(used == strlen(path));
    CHECK(a->is_null == b.is_null);
    CHECK(strcmp(a->local, b.local) == 0);
    CHECK(strcmp(a->domain, b.domain) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semail_address a;
    smtp_mail_params p;
    semail_reply r;
    unsigned int flags;
    size_t used = 0;
    const char *s;
    char *copy;
    int rc;

    if (size < 1)
        return 0;
    flags = data[0] & 3u;
    /* An exact-size copy, so that ASan sees any read past LEN. */
    copy = malloc(size - 1 ? size - 1 : 1);
    CHECK(copy != NULL);
    memcpy(copy, data + 1, size - 1);
    s = copy;

    rc = semail_address_parse(&a, s, size - 1, flags, &used);
    CHECK(rc == 0 || rc == SEMAIL_EINVAL || rc == SEMAIL_ETOOBIG);
    if (rc == 0) {
        CHECK(used >= 2 && used <= size - 1 && used <= SEMAIL_PATH_MAX);
        CHECK(s[0] == '<' && s[used - 1] == '>');
        check_clean(a.local, SEMAIL_LOCAL_MAX);
        check_clean(a.domain, SEMAIL_DOMAIN_MAX);
        CHECK(!a.is_null || (flags & SEMAIL_ADDRESS_ALLOW_NULL));
        CHECK(a.domain[0] != '\0' || a.is_null || (flags & SEMAIL_ADDRESS_ALLOW_POSTMASTER));
        round_trip(&a, flags);
    } else {
        CHECK(used == 0 && a.local[0] == '\0' && a.domain[0] == '\0' && !a.is_null);
    }

    if (semail__smtp_parse_mail(&a, &p, s, size - 1, &r) < 0)
        CHECK(r.code == 501 || r.code == 555);
    if (semail__smtp_parse_rcpt(&a, s, size - 1, &r) < 0)
        CHECK(r.code == 501 || r.code == 555);
    free(copy);
    return 0;
}
