/*
 * fuzz_ldap_escape.c - libFuzzer target for the LDAP filter and DN escapes
 * and the "%u" templates.
 *
 * Checks, for any value: both escapes succeed in SEMAIL_LDAP_ESCAPED_MAX
 * bytes, return the length they wrote, give printable ASCII, and decode
 * back to the value; the filter escape leaves no '*', '(' or ')' at all,
 * and the DN escape leaves no unescaped ',', '+', '"', '<', '>', ';', '='
 * and no leading '#' or space; one byte less of room is refused, never
 * truncated. A filter template filled in keeps exactly its own
 * parentheses and wildcards.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ldap_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode OUT (either escape) and compare with VALUE of N bytes. */
static void check_decodes(const char *out, const char *value, size_t n)
{
    size_t i = 0;
    for (; *out; out++, i++) {
        int c = (unsigned char)*out;
        if (c < 0x20 || c >= 0x7f || i >= n)
            abort();
        if (c == '\\') {
            if (hexval(out[1]) >= 0 && hexval(out[2]) >= 0) {
                c = hexval(out[1]) * 16 + hexval(out[2]);
                out += 2;
            } else if (out[1] != '\0') {
                c = (unsigned char)*++out;
            } else {
                abort();
            }
        }
        if (c != (unsigned char)value[i])
            abort();
    }
    if (i != n)
        abort();
}

static void check_dn_specials(const char *out)
{
    const char *p;
    if (out[0] == '#' || out[0] == ' ')
        abort();
    for (p = out; *p; p++) {
        if (*p == '\\') {
            p += hexval(p[1]) >= 0 && hexval(p[2]) >= 0 ? 2 : 1;
            continue;
        }
        if (strchr(",+\"<>;=", *p) != NULL)
            abort();
    }
}

static size_t count(const char *s, const char *set)
{
    size_t n = 0;
    for (; *s; s++)
        n += strchr(set, *s) != NULL;
    return n;
}

static void check(const char *value, size_t n, semail__ldap_escaper esc, int filter)
{
    size_t size = SEMAIL_LDAP_ESCAPED_MAX(n);
    char *out = malloc(size);
    int len;

    if (out == NULL)
        abort();
    len = esc(out, size, value);
    if (len < 0 || (size_t)len != strlen(out))
        abort();
    check_decodes(out, value, n);
    if (filter && strpbrk(out, "*()") != NULL)
        abort();
    if (!filter)
        check_dn_specials(out);
    if (len > 0 && (esc(out, (size_t)len, value) != SEMAIL_ETOOBIG || out[0] != '\0'))
        abort();
    free(out);
}

static void check_template(const char *value)
{
    const char *tmpl = "(&(objectClass=*)(|(uid=%u)(mail=%u@x)))";
    semail_buf b;

    semail__buf_init(&b, SEMAIL_LDAP_TEXT_MAX);
    if (semail__ldap_expand(&b, tmpl, value, semail_ldap_escape_filter) == 0 &&
        (count(b.data, "(") != count(tmpl, "(") || count(b.data, ")") != count(tmpl, ")") ||
         count(b.data, "*") != count(tmpl, "*")))
        abort();
    semail__buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value;
    size_t n;

    if (size > 4096)
        return 0;
    value = malloc(size + 1);
    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    n = strlen(value); /* a C string ends at the first NUL */
    check(value, n, semail_ldap_escape_filter, 1);
    check(value, n, semail_ldap_escape_dn, 0);
    check_template(value);
    free(value);
    return 0;
}
