/*
 * fuzz_dns_update_answer.c - libFuzzer target for the answer to a dynamic
 * update: any bytes, as if the name server (or someone on the path) sent
 * them, go through the TSIG check and the RCODE mapping. Nothing may read
 * out of bounds, and nothing but a correctly signed NOERROR may count as
 * success (the fuzzer cannot forge an HMAC-SHA256). Seeds: the answers
 * recorded from named in tests/unit/test_dns_update.c
 * (tests/fuzz/corpus/dns_update_answer).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dns_update_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char KEY[] = "key \"semail-update\" { algorithm hmac-sha256; "
                          "secret \"nLGuBDoNZJqULfXSPXQlGJ7a82oGZ2i5/3+TrLqVVOg=\"; };";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static semail_tsig_key *key;
    uint8_t req[SEMAIL_DNS_HEADER_LEN] = {0};
    uint8_t mac[32];
    unsigned int error = 0;

    if (key == NULL && semail_tsig_key_parse(&key, KEY, sizeof(KEY) - 1) < 0)
        __builtin_trap();
    /* The request's id follows the answer's so that the checks go deeper. */
    if (size >= 2)
        memcpy(req, data, 2);
    memset(mac, 0xA5, sizeof(mac));
    (void)semail__tsig_verify(key, mac, sizeof(mac), data, size, 1795929915u, &error);
    if (semail__dns_update_result(key, req, mac, sizeof(mac), data, size, 1795929915u, "fuzz",
                                  "alice.semail.test") == 0)
        __builtin_trap();
    return 0;
}
