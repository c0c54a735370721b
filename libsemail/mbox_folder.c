/*
 * mbox_folder.c - the "<recipient>,<sender>" folder name (SPEC.md section 4).
 *
 * Contract: both addresses lower-cased (ASCII only), every byte outside
 * [a-z0-9.!#$&'*+=?^_`{|}~@-] written %XX in upper-case hex, a leading '.'
 * of the name written %2E, an empty sender written MAILER-DAEMON (inserted
 * as is). Since '/' is escaped and the name cannot start with '.', the
 * result is never "", ".", ".." nor contains a '/': it is always one
 * harmless directory entry. A name that does not fit is an error, never
 * truncated.
 */
#include <string.h>

#include "mbox_internal.h"

static bool folder_byte_ok(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr(".!#$&'*+=?^_`{|}~@-", c) != NULL;
}

/* Append BYTE (already lower-cased) to OUT, escaped as needed. */
static int put_byte(char *out, size_t size, size_t *len, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    bool escape = !folder_byte_ok(c) || (c == '.' && *len == 0);
    size_t need = escape ? 3 : 1;

    if (size - *len <= need)
        return semail__err(SEMAIL_ETOOBIG, "folder name longer than %zu bytes", size - 1);
    if (escape) {
        out[(*len)++] = '%';
        out[(*len)++] = hex[c >> 4];
        out[(*len)++] = hex[c & 15];
    } else {
        out[(*len)++] = (char)c;
    }
    return 0;
}

/* Append S as is: the separator and MAILER-DAEMON are not escaped. */
static int put_literal(char *out, size_t size, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (size - *len <= n)
        return semail__err(SEMAIL_ETOOBIG, "folder name longer than %zu bytes", size - 1);
    memcpy(out + *len, s, n + 1); /* with its NUL: the check above left room */
    *len += n;
    return 0;
}

static int put_address(char *out, size_t size, size_t *len, const char *addr)
{
    int err;
    for (; *addr != '\0'; addr++) {
        unsigned char c = (unsigned char)semail__tolower((unsigned char)*addr);
        if ((err = put_byte(out, size, len, c)) < 0)
            return err;
    }
    return 0;
}

int semail_mbox_folder_name(char *out, size_t size, const char *recipient, const char *sender)
{
    size_t len = 0;
    int err;

    if (out == NULL || recipient == NULL || size == 0)
        return semail__err(SEMAIL_EINVAL, "folder name: no buffer or no recipient");
    out[0] = '\0';
    if ((err = put_address(out, size, &len, recipient)) < 0 ||
        (err = put_literal(out, size, &len, ",")) < 0)
        goto done;
    if (sender == NULL || sender[0] == '\0')
        err = put_literal(out, size, &len, "MAILER-DAEMON");
    else
        err = put_address(out, size, &len, sender);
    if (err < 0)
        goto done;
    out[len] = '\0';
    return 0;
done:
    out[0] = '\0';
    return err;
}
