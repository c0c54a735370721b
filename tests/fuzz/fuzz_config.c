/*
 * fuzz_config.c - libFuzzer target for semail_config_parse(): any bytes
 * give a valid configuration or SEMAIL_ECONFIG, never a crash, a leak or an
 * unbounded allocation; a configuration that parses answers every getter.
 */
#include <stddef.h>
#include <stdint.h>

#include "semail/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[][2] = {
        {"global", "hostname"},
        {"global", "uid_range"},
        {"inbound", "listen"},
        {"inbound", "max_message_size"},
        {"inbound", "command_timeout"},
        {"outbound", "retry_schedule"},
        {"outbound", "trusted_networks"},
        {"containers", "enabled"},
        {"containers", "pids"},
        {"dns", "zone"},
        {"ldap", "filter"},
    };
    semail_config *cfg = NULL;
    size_t i;

    if (semail_config_parse(&cfg, (const char *)data, size, "fuzz") < 0)
        return 0;
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        uint64_t v, lo, hi;
        int b;
        char **list = NULL;
        (void)semail_config_get(cfg, keys[i][0], keys[i][1]);
        (void)semail_config_get_size(cfg, keys[i][0], keys[i][1], &v);
        (void)semail_config_get_duration_ms(cfg, keys[i][0], keys[i][1], &v);
        (void)semail_config_get_uint(cfg, keys[i][0], keys[i][1], &v);
        (void)semail_config_get_bool(cfg, keys[i][0], keys[i][1], &b);
        (void)semail_config_get_range(cfg, keys[i][0], keys[i][1], &lo, &hi);
        if (semail_config_get_list(cfg, keys[i][0], keys[i][1], &list, NULL) == 0)
            semail_config_list_free(list);
    }
    (void)semail_config_has_section(cfg, "ldap");
    semail_config_free(cfg);
    return 0;
}
