/*
 * smtp_reply.c - SMTP replies: filling them and writing them on the wire.
 *
 * Contract: whatever a reply holds (an embedder may fill it by hand), the
 * line written is one line of printable ASCII, at most SEMAIL_REPLY_MAX
 * octets with its CRLF, and carries an enhanced status code of the reply's
 * class unless the reply deliberately has none (greeting, EHLO, 354).
 */
#include <stdio.h>
#include <string.h>

#include "smtp_internal.h"

void semail_reply_set(semail_reply *r, int code, const char *enhanced, const char *fmt, ...)
{
    va_list ap;
    size_t i;

    r->code = code;
    r->enhanced[0] = '\0';
    if (enhanced != NULL && strlen(enhanced) < sizeof(r->enhanced))
        memcpy(r->enhanced, enhanced, strlen(enhanced) + 1);
    va_start(ap, fmt);
    if (vsnprintf(r->text, sizeof(r->text), fmt, ap) < 0)
        r->text[0] = '\0';
    va_end(ap);
    for (i = 0; r->text[i] != '\0'; i++)
        if (r->text[i] == '\r' || r->text[i] == '\n')
            r->text[i] = ' ';
}

/* 1 when S is CLASS "." 1*3DIGIT "." 1*3DIGIT (RFC 3463). */
static int enhanced_valid(const char *s, int class)
{
    int part, digits;

    if (s[0] != '0' + class || s[1] != '.')
        return 0;
    s += 2;
    for (part = 0; part < 2; part++) {
        for (digits = 0; *s >= '0' && *s <= '9'; s++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
        if (part == 0 && *s++ != '.')
            return 0;
    }
    return *s == '\0';
}

int semail__smtp_reply_check(semail_reply *r)
{
    int class = r->code / 100;

    r->text[sizeof(r->text) - 1] = '\0';
    r->enhanced[sizeof(r->enhanced) - 1] = '\0';
    if (r->code < 200 || r->code > 599 || class == 3)
        return semail__err(SEMAIL_EINVAL, "invalid reply code %d", r->code);
    if (!enhanced_valid(r->enhanced, class))
        (void)snprintf(r->enhanced, sizeof(r->enhanced), "%d.0.0", class);
    return 0;
}

int semail__smtp_reply_format(semail_buf *out, const semail_reply *r, int more)
{
    char line[SEMAIL_REPLY_MAX];
    size_t n, i, room;
    int len;

    len = snprintf(line, sizeof(line), "%03d%c", r->code % 1000, more ? '-' : ' ');
    if (len < 0)
        return semail__err(SEMAIL_ERROR, "reply format error");
    n = (size_t)len;
    if (r->enhanced[0] != '\0') {
        for (i = 0; i < sizeof(r->enhanced) && r->enhanced[i] != '\0'; i++)
            line[n++] = r->enhanced[i];
        line[n++] = ' ';
    }
    room = sizeof(line) - 2; /* CRLF */
    for (i = 0; i < sizeof(r->text) && r->text[i] != '\0' && n < room; i++) {
        unsigned char c = (unsigned char)r->text[i];
        line[n++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    while (n > 4 && line[n - 1] == ' ')
        n--; /* "250 2.0.0 " with an empty text: no trailing space */
    line[n++] = '\r';
    line[n++] = '\n';
    return semail__buf_add(out, line, n);
}
