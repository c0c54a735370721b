/*
 * fuzz_mbox_quote.c - libFuzzer target for the mboxrd writer.
 *
 * Checks, for any input: the output does not depend on how the input is
 * split; it ends with "\n\n"; no line of it starts with "From "; and
 * removing one '>' from every ^>+From  line (the mboxrd reader) gives back
 * the input with CRLF as LF and a final LF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mbox_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(void *payload, const char *p, size_t n)
{
    return semail__buf_add(payload, p, n);
}

static void quote(semail_buf *out, const char *p, size_t n, size_t step)
{
    semail__mbox_quote q;

    semail__buf_init(out, 4 * n + 16);
    if (semail__buf_add(out, "", 0) < 0)
        abort();
    semail__mbox_quote_init(&q, sink, out);
    for (size_t i = 0; i < n;) {
        size_t k = step == 0 || n - i < step ? n - i : step;
        if (semail__mbox_quote_feed(&q, p + i, k) < 0)
            abort();
        i += k;
    }
    if (semail__mbox_quote_finish(&q) < 0)
        abort();
}

/* What a reader should get back: CRLF as LF, and a last line ended. */
static void normalize(semail_buf *out, const char *p, size_t n)
{
    semail__buf_init(out, 2 * n + 16);
    if (semail__buf_add(out, "", 0) < 0)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            continue;
        if (semail__buf_add(out, p + i, 1) < 0)
            abort();
    }
    if (out->len > 0 && out->data[out->len - 1] != '\n' && semail__buf_add(out, "\n", 1) < 0)
        abort();
}

/* The mboxrd reader: drop the final empty line, unquote ^>+From . */
static void unquote(semail_buf *out, const char *p, size_t n)
{
    semail__buf_init(out, n + 16);
    if (semail__buf_add(out, "", 0) < 0 || n == 0 || p[n - 1] != '\n')
        abort();
    n--;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(p + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (p + i)) + 1 : n - i, g = 0;
        while (g < len && p[i + g] == '>')
            g++;
        if (len >= 5 && memcmp(p + i, "From ", 5) == 0)
            abort(); /* an unquoted From_ line inside a message */
        bool quoted = g > 0 && len - g >= 5 && memcmp(p + i + g, "From ", 5) == 0;
        if (semail__buf_add(out, p + i + quoted, len - quoted) < 0)
            abort();
        i += len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semail_buf whole, part, expect, back;
    size_t step;

    if (size == 0)
        return 0;
    step = data[0];
    const char *p = (const char *)data + 1;
    size_t n = size - 1;

    quote(&whole, p, n, 0);
    quote(&part, p, n, step);
    if (whole.len != part.len || memcmp(whole.data, part.data, whole.len) != 0)
        abort();
    if (whole.len < 1 || whole.data[whole.len - 1] != '\n' ||
        (whole.len >= 2 && whole.data[whole.len - 2] != '\n'))
        abort();
    normalize(&expect, p, n);
    unquote(&back, whole.data, whole.len);
    if (back.len != expect.len || memcmp(back.data, expect.data, back.len) != 0)
        abort();
    semail__buf_free(&whole);
    semail__buf_free(&part);
    semail__buf_free(&expect);
    semail__buf_free(&back);
    return 0;
}
