/*
 * fuzz_queue_file.c - libFuzzer target for the queue file reader
 * (queue_file.c: message headers and state files).
 *
 * Checks, for any input: the parsers never read outside the input, never
 * crash, never leak; whatever they accept re-encodes to the very same
 * bytes (so a damaged file can never parse as some other valid state);
 * and a state file accepted has only known recipient states.
 * The first byte picks the parser (bit 0: state, else message) and whether
 * to fix the checksum (bit 1); the rest is the file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_state(const char *p, size_t n)
{
    semail__qf_state s;
    semail_buf again;

    if (semail__qf_state_parse(&s, p, n) < 0)
        return;
    for (size_t i = 0; i < s.rcpt_count; i++) {
        if ((unsigned)s.rcpts[i].state > SEMAIL_QUEUE_FAILED)
            abort();
    }
    semail__buf_init(&again, SEMAIL__QF_STATE_MAX);
    if (semail__qf_state_encode(&again, &s) < 0 || again.len != n || memcmp(again.data, p, n) != 0)
        abort();
    semail__buf_free(&again);
    semail__qf_state_clear(&s);
}

static void check_msg(const char *p, size_t n)
{
    semail__qf_msg m;
    semail_buf again;

    if (semail__qf_msg_parse_header(&m, p, n) < 0)
        return;
    if (m.header_len > n || m.rcpt_count == 0)
        abort();
    semail__buf_init(&again, SEMAIL__QF_HEADER_MAX);
    if (semail__qf_msg_encode_header(&again, m.qid, m.arrival_ms, m.sender,
                                     (const char *const *)m.rcpts, m.rcpt_count, m.size) < 0 ||
        again.len != m.header_len || memcmp(again.data, p, m.header_len) != 0)
        abort();
    semail__buf_free(&again);
    (void)semail__qf_msg_check_data(&m, p, n);
    semail__qf_msg_clear(&m);
}

/*
 * Random bytes almost never carry a right CRC, and the parsers stop there.
 * With bit 1 of the selector set, the harness writes the right CRC into the
 * first "KEY XXXXXXXX\n" line so that the fuzzer also explores what lies
 * behind the checksum.
 */
static void fix_crc(char *p, size_t n, const char *key)
{
    static const char hex[] = "0123456789abcdef";
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 9 <= n; i++) {
        if ((i == 0 || p[i - 1] == '\n') && memcmp(p + i, key, klen) == 0 &&
            p[i + klen + 8] == '\n') {
            uint32_t crc = semail__crc32(0, p, i);
            for (int k = 7; k >= 0; k--, crc >>= 4)
                p[i + klen + (size_t)k] = hex[crc & 15];
            return;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy;

    if (size == 0)
        return 0;
    /* An exact-size copy, so that ASan sees any read past the end. */
    if ((copy = malloc(size - 1 ? size - 1 : 1)) == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    if (data[0] & 2)
        fix_crc(copy, size - 1, (data[0] & 1) ? "sum " : "hsum ");
    if (data[0] & 1)
        check_state(copy, size - 1);
    else
        check_msg(copy, size - 1);
    free(copy);
    return 0;
}
