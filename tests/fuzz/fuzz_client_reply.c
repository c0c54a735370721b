/*
 * fuzz_client_reply.c - libFuzzer target for the SMTP client's reply
 * parser and EHLO keyword table (libsemail/smtp_client_reply.c).
 *
 * The input is what a hostile server could send: it is cut into lines at
 * LF (a CR before it dropped, as the connection layer does) and fed line
 * by line; each complete reply goes through the EHLO parser too. Checked
 * on every complete reply: the code is 200-599, the enhanced code is
 * CLASS.D.D with the code's class, and the kept text is printable ASCII.
 *
 * Build and run (it compiles the files it exercises itself):
 *   clang -g -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Iinclude -Ilibsemail \
 *     tests/fuzz/fuzz_client_reply.c libsemail/smtp_client_reply.c libsemail/util.c \
 *     libsemail/error.c -o /tmp/fuzz_client_reply
 *   mkdir -p /tmp/c && /tmp/fuzz_client_reply -max_total_time=60 /tmp/c
 * tests/fuzz/corpus/client_reply
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_client_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const semail_buf *b)
{
    size_t i;
    for (i = 0; i < b->len; i++)
        if ((b->data[i] < 0x20 && b->data[i] != '\n') || b->data[i] > 0x7e)
            abort();
}

static void check_reply(const semail__client_reply *r)
{
    semail__client_ehlo e;
    const char *p = r->enhanced;

    if (r->code < 200 || r->code > 599 || p[0] != '0' + r->code / 100 || p[1] != '.')
        abort();
    check_text(&r->text);
    check_text(&r->lines);
    if (r->text.data != NULL && memchr(r->text.data, '\n', r->text.len) != NULL)
        abort();
    if (semail__client_ehlo_parse(&e, r) == 0) {
        if (e.count > CLIENT_EXT_MAX)
            abort();
        semail__client_ehlo_free(&e);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    semail__client_reply r;

    semail__client_reply_init(&r);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t len = (n > 0 && p[n - 1] == '\r') ? n - 1 : n;
        int ret = semail__client_reply_line(&r, p, len);

        if (ret == 1)
            check_reply(&r);
        if (ret != 0)
            semail__client_reply_reset(&r);
        p += nl ? n + 1 : n;
    }
    semail__client_reply_free(&r);
    return 0;
}
