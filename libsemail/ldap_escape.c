/*
 * ldap_escape.c - values made safe for LDAP filters (RFC 4515) and DNs
 * (RFC 4514), and templates ("(uid=%u)") filled in with them.
 *
 * Contract: the escaped forms are printable ASCII, decode back to exactly
 * the input, and can neither end the value nor add a filter component or
 * an RDN. Nothing is truncated: a value that does not fit is an error.
 * Pure functions, no allocation except the caller's semail_buf.
 */
#include <string.h>

#include "ldap_internal.h"

static const char hex[] = "0123456789abcdef";

static int needs_hex(unsigned char c)
{
    return c < 0x20 || c >= 0x7f;
}

/* Append the escape of C (hex when HEX, else "\C") at OUT+*O, if it fits. */
static int put(char *out, size_t size, size_t *o, unsigned char c, int escape, int as_hex)
{
    size_t need = !escape ? 1 : as_hex ? 3 : 2;
    if (*o + need >= size)
        return SEMAIL_ETOOBIG;
    if (escape)
        out[(*o)++] = '\\';
    if (escape && as_hex) {
        out[(*o)++] = hex[c >> 4];
        out[(*o)++] = hex[c & 0xf];
    } else {
        out[(*o)++] = (char)c;
    }
    return 0;
}

static int escape_start(char *out, size_t size, const char *value)
{
    if (out == NULL || value == NULL || size == 0)
        return semail__err(SEMAIL_EINVAL, "LDAP escape: NULL or empty output");
    out[0] = '\0';
    return 0;
}

static int too_big(char *out, size_t size)
{
    out[0] = '\0';
    return semail__err(SEMAIL_ETOOBIG, "LDAP escape: the escaped value does not fit %zu bytes",
                       size);
}

int semail_ldap_escape_filter(char *out, size_t size, const char *value)
{
    size_t o = 0, i;
    int err;

    if ((err = escape_start(out, size, value)) < 0)
        return err;
    for (i = 0; value[i] != '\0'; i++) {
        unsigned char c = (unsigned char)value[i];
        int special = c == '*' || c == '(' || c == ')' || c == '\\' || needs_hex(c);
        if (put(out, size, &o, c, special, 1) < 0)
            return too_big(out, size);
    }
    out[o] = '\0';
    return (int)o;
}

/* RFC 4514 2.4: the characters escaped with a backslash wherever they are. */
static int dn_special(unsigned char c)
{
    return c != '\0' && strchr("\"+,;<=>\\", c) != NULL;
}

int semail_ldap_escape_dn(char *out, size_t size, const char *value)
{
    size_t o = 0, i, n;
    int err;

    if ((err = escape_start(out, size, value)) < 0)
        return err;
    n = strlen(value);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        int edge = (i == 0 && (c == ' ' || c == '#')) || (i == n - 1 && c == ' ');
        int as_hex = needs_hex(c);
        if (put(out, size, &o, c, as_hex || edge || dn_special(c), as_hex) < 0)
            return too_big(out, size);
    }
    out[o] = '\0';
    return (int)o;
}

int semail__ldap_expand(semail_buf *out, const char *tmpl, const char *value,
                        semail__ldap_escaper escape)
{
    char esc[SEMAIL_LDAP_TEXT_MAX];
    const char *p, *u;
    int n;

    if ((n = escape(esc, sizeof(esc), value)) < 0)
        return n;
    semail__buf_reset(out);
    for (p = tmpl; (u = strstr(p, "%u")) != NULL; p = u + 2) {
        if ((n = semail__buf_add(out, p, (size_t)(u - p))) < 0 ||
            (n = semail__buf_addstr(out, esc)) < 0)
            return n;
    }
    return semail__buf_addstr(out, p); /* always allocates: data is never NULL after */
}
