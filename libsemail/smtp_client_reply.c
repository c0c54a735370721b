/*
 * smtp_client_reply.c - parsing the replies of an SMTP server, and the
 * keyword table of its EHLO reply.
 *
 * Contract: a reply is accepted only when every line is `DDD-text` or
 * `DDD text` (the last; a bare `DDD` too) with one code of 2xx-5xx
 * throughout, each line at most SEMAIL_CLIENT_REPLY_LINE_MAX octets, at
 * most SEMAIL_CLIENT_REPLY_LINES_MAX lines and SEMAIL_CLIENT_REPLY_MAX
 * octets in all; anything else is malformed. The text kept is printable
 * ASCII whatever the server sent, since it ends up in logs and bounces.
 * An enhanced status code (RFC 3463) is taken from the first line when it
 * matches the pattern, whether or not ENHANCEDSTATUSCODES was advertised;
 * its class is forced to the reply's (as Postfix does), and when there is
 * none one is derived from the class ("4.0.0").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_client_internal.h"

void semail__client_reply_init(semail__client_reply *r)
{
    memset(r, 0, sizeof(*r));
    semail__buf_init(&r->text, SEMAIL_CLIENT_REPLY_MAX);
    semail__buf_init(&r->lines, SEMAIL_CLIENT_REPLY_MAX);
}

void semail__client_reply_reset(semail__client_reply *r)
{
    r->code = 0;
    r->done = 0;
    r->has_enhanced = 0;
    r->enhanced[0] = '\0';
    r->nlines = 0;
    r->total = 0;
    semail__buf_reset(&r->text);
    semail__buf_reset(&r->lines);
}

void semail__client_reply_free(semail__client_reply *r)
{
    semail__buf_free(&r->text);
    semail__buf_free(&r->lines);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of an enhanced code `D.1*3D.1*3D` at S (followed by SP or the end), or 0. */
static size_t enhanced_len(const char *s, size_t len)
{
    size_t i = 0, digits;
    int part;

    if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
        return 0;
    i = 2;
    for (part = 0; part < 2; part++) {
        for (digits = 0; i < len && is_digit(s[i]); i++)
            digits++;
        if (digits < 1 || digits > 3)
            return 0;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    return (i == len || s[i] == ' ') ? i : 0;
}

/* Append S as printable ASCII: tabs become spaces, other bytes '?'. */
static int add_clean(semail_buf *b, const char *s, size_t n)
{
    char chunk[256];
    size_t i, k = 0;
    int err;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        chunk[k++] = c == '\t' ? ' ' : (c < 0x20 || c > 0x7e) ? '?' : (char)c;
        if (k == sizeof(chunk) || i + 1 == n) {
            if ((err = semail__buf_add(b, chunk, k)) < 0)
                return err;
            k = 0;
        }
    }
    return 0;
}

/* Parse the code and separator; returns 1 for the last line, 0 for more, or an error. */
static int line_head(semail__client_reply *r, const char *line, size_t len)
{
    int code;

    if (len < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]))
        return semail__err(SEMAIL_EINVAL, "malformed reply: no 3-digit code");
    code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (line[0] < '2' || line[0] > '5' || line[1] > '5')
        return semail__err(SEMAIL_EINVAL, "malformed reply: invalid code %d", code);
    if (r->code != 0 && code != r->code)
        return semail__err(SEMAIL_EINVAL, "malformed reply: code %d follows %d", code, r->code);
    r->code = code;
    if (len == 3 || line[3] == ' ')
        return 1;
    if (line[3] == '-')
        return 0;
    return semail__err(SEMAIL_EINVAL, "malformed reply: byte 0x%02x after the code",
                       (unsigned char)line[3]);
}

/* Keep the text of one line, without its enhanced code. */
static int line_text(semail__client_reply *r, const char *t, size_t n)
{
    size_t e = enhanced_len(t, n);
    int err;

    if (e > 0 && r->nlines == 0) {
        memcpy(r->enhanced, t, e);
        r->enhanced[e] = '\0';
        r->enhanced[0] = (char)('0' + r->code / 100);
        r->has_enhanced = 1;
    }
    if (e > 0) {
        t += e;
        n -= e;
        if (n > 0)
            t++, n--;
    }
    if (r->text.len > 0 && n > 0 && (err = semail__buf_add(&r->text, " ", 1)) < 0)
        return err;
    if ((err = add_clean(&r->text, t, n)) < 0 || (err = add_clean(&r->lines, t, n)) < 0)
        return err;
    return semail__buf_add(&r->lines, "\n", 1);
}

int semail__client_reply_line(semail__client_reply *r, const char *line, size_t len)
{
    int last, err;

    if (r->done)
        return semail__err(SEMAIL_EINVAL, "reply already complete");
    if (len + 2 > SEMAIL_CLIENT_REPLY_LINE_MAX)
        return semail__err(SEMAIL_EINVAL, "malformed reply: line of %zu octets", len);
    if (r->nlines >= SEMAIL_CLIENT_REPLY_LINES_MAX)
        return semail__err(SEMAIL_EINVAL, "malformed reply: over %d lines",
                           SEMAIL_CLIENT_REPLY_LINES_MAX);
    if (len + 2 > SEMAIL_CLIENT_REPLY_MAX - r->total)
        return semail__err(SEMAIL_EINVAL, "malformed reply: over %d octets",
                           SEMAIL_CLIENT_REPLY_MAX);
    if ((last = line_head(r, line, len)) < 0)
        return last;
    if ((err = line_text(r, len > 4 ? line + 4 : "", len > 4 ? len - 4 : 0)) < 0) {
        /* The buffers share the reply's bound: over it is malformed, not out of memory. */
        return err == SEMAIL_ETOOBIG ? semail__err(SEMAIL_EINVAL, "malformed reply: too long")
                                     : err;
    }
    r->nlines++;
    r->total += len + 2;
    if (!last)
        return 0;
    if (!r->has_enhanced)
        (void)snprintf(r->enhanced, sizeof(r->enhanced), "%d.0.0", r->code / 100);
    r->done = 1;
    return 1;
}

/* ---- EHLO keywords ------------------------------------------------------- */

/* ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"), RFC 5321 4.1.1.1. */
static size_t keyword_len(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n && s[i] != ' '; i++) {
        char c = s[i];
        int alnum = is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && (c != '-' || i == 0))
            return 0;
    }
    return i <= CLIENT_EXT_KEYWORD_MAX ? i : 0;
}

/* SIZE's parameter: decimal, at most 19 digits; anything else means no limit known. */
static uint64_t size_param(const char *p)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; is_digit(p[i]); i++) {
        if (i == 19)
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    return p[i] == '\0' ? v : 0;
}

static void ehlo_flag(semail__client_ehlo *ehlo, const char *kw, const char *params)
{
    if (semail__strcasecmp(kw, "SIZE") == 0) {
        ehlo->flags |= CLIENT_EXT_SIZE;
        ehlo->size_max = size_param(params);
    } else if (semail__strcasecmp(kw, "8BITMIME") == 0) {
        ehlo->flags |= CLIENT_EXT_8BITMIME;
    } else if (semail__strcasecmp(kw, "PIPELINING") == 0) {
        ehlo->flags |= CLIENT_EXT_PIPELINING;
    } else if (semail__strcasecmp(kw, "ENHANCEDSTATUSCODES") == 0) {
        ehlo->flags |= CLIENT_EXT_ENHANCED;
    }
}

static int ehlo_add(semail__client_ehlo *ehlo, const char *s, size_t n)
{
    size_t k = keyword_len(s, n);
    char *kw, *params;

    if (k == 0 || ehlo->count >= CLIENT_EXT_MAX)
        return 0;
    kw = semail__strndup(s, k);
    params = semail__strndup(s + (k < n ? k + 1 : k), k < n ? n - k - 1 : 0);
    if (kw == NULL || params == NULL) {
        free(kw);
        free(params);
        return SEMAIL_ENOMEM;
    }
    ehlo->keywords[ehlo->count] = kw;
    ehlo->params[ehlo->count] = params;
    ehlo->count++;
    ehlo_flag(ehlo, kw, params);
    return 0;
}

int semail__client_ehlo_parse(semail__client_ehlo *ehlo, const semail__client_reply *r)
{
    const char *p = r->lines.data, *end = p ? p + r->lines.len : NULL, *nl;
    int err, first = 1;

    memset(ehlo, 0, sizeof(*ehlo));
    for (; p != NULL && p < end; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        if (!first && (err = ehlo_add(ehlo, p, (size_t)(nl - p))) < 0) {
            semail__client_ehlo_free(ehlo);
            return semail__err(err, "out of memory");
        }
        first = 0;
    }
    return 0;
}

void semail__client_ehlo_free(semail__client_ehlo *ehlo)
{
    size_t i;
    for (i = 0; i < ehlo->count; i++) {
        free(ehlo->keywords[i]);
        free(ehlo->params[i]);
    }
    memset(ehlo, 0, sizeof(*ehlo));
}
