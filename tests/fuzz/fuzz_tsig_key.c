/*
 * fuzz_tsig_key.c - libFuzzer target for the TSIG key file parser: any
 * bytes, as if an administrator had edited tsig.key by hand, must parse or
 * be refused without reading out of bounds (the text has no NUL) or
 * leaking. A key that parses has a name, an algorithm and a secret. Seeds:
 * tests/fuzz/corpus/tsig_key.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tsig_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semail_tsig_key *k = NULL;

    if (semail_tsig_key_parse(&k, (const char *)data, size) < 0) {
        if (k != NULL)
            __builtin_trap(); /* a failure leaves no key behind */
        return 0;
    }
    if (k->secret_len == 0 || k->mac_len == 0 || k->name.len == 0 ||
        strlen(semail_tsig_key_name(k)) == 0 || strlen(semail_tsig_key_algorithm(k)) == 0)
        __builtin_trap();
    semail_tsig_key_free(k);
    return 0;
}
