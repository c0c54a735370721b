/*
 * config_schema.c - every section and key of the configuration file, with
 * its type and default: the one place where a limit or a default is named
 * (Postfix's mail_params.h). docs/configuration.md and packaging/semail.conf
 * describe the same table; change the three together.
 *
 * Contract: the table is constant; config.c reads it and nothing writes it.
 */
#include "config_schema.h"

const char *const semail__cfg_sections[] = {
    "global", "inbound", "outbound", "storage", "containers", "dns", "ldap",
};
const size_t semail__cfg_nsections = SEMAIL_ARRAY_LEN(semail__cfg_sections);

#define KEY(s, k, t, f, d)                                                                         \
    {                                                                                              \
        .section = (s), .key = (k), .type = (t), .flags = (f), .def = (d)                          \
    }
#define KEYMAX(s, k, t, f, d, m)                                                                   \
    {                                                                                              \
        .section = (s), .key = (k), .type = (t), .flags = (f), .def = (d), .max = (m)              \
    }
#define DERIVED(s, k, t, fs, fk)                                                                   \
    {                                                                                              \
        .section = (s), .key = (k), .type = (t), .from_section = (fs), .from_key = (fk)            \
    }
#define ENUMKEY(s, k, d, c)                                                                        \
    {                                                                                              \
        .section = (s), .key = (k), .type = CFG_ENUM, .def = (d), .choices = (c)                   \
    }

#define UID_MAX_VALID 4294967294ull /* (uid_t)-1 means "no change" to chown */

const struct semail__cfg_key semail__cfg_schema[] = {
    /* [global] */
    KEY("global", "hostname", CFG_HOSTNAME, 0, "mx.semail.test"),
    KEY("global", "domain", CFG_HOSTNAME, 0, "semail.test"),
    KEY("global", "state_dir", CFG_PATH, 0, "/var/lib/semail"),
    KEY("global", "mail_root", CFG_PATH, 0, "/var/lib/semail/mail"),
    KEY("global", "user", CFG_NAME, CFG_EMPTY_OK, "semail"),
    ENUMKEY("global", "log", "stderr", "stderr|syslog"),
    KEYMAX("global", "uid_range", CFG_RANGE, 0, "20000-29999", UID_MAX_VALID),
    /* [inbound] */
    KEY("inbound", "listen", CFG_LISTEN, 0, "[::]:25, 0.0.0.0:25"),
    KEY("inbound", "max_message_size", CFG_SIZE, 0, "52428800"),
    KEYMAX("inbound", "max_recipients", CFG_UINT, 0, "100", 1000000),
    KEYMAX("inbound", "max_connections", CFG_UINT, 0, "1000", 1000000),
    KEYMAX("inbound", "max_connections_per_client", CFG_UINT, 0, "20", 1000000),
    KEY("inbound", "command_timeout", CFG_DURATION, 0, "5m"),
    KEY("inbound", "data_timeout", CFG_DURATION, 0, "10m"),
    KEYMAX("inbound", "max_errors", CFG_UINT, 0, "20", 1000000),
    KEYMAX("inbound", "greet_pause_ms", CFG_UINT, 0, "0", 10000),
    /* [outbound] */
    KEY("outbound", "listen", CFG_LISTEN, 0, "[::]:587"),
    KEY("outbound", "listen_tls", CFG_LISTEN, CFG_EMPTY_OK, "[::]:465"),
    KEY("outbound", "tls_cert", CFG_PATH, CFG_EMPTY_OK, "/etc/semail/tls.crt"),
    KEY("outbound", "tls_key", CFG_PATH, CFG_EMPTY_OK, "/etc/semail/tls.key"),
    KEY("outbound", "trusted_networks", CFG_CIDR_LIST, CFG_EMPTY_OK, "127.0.0.0/8, ::1/128"),
    KEY("outbound", "resolver", CFG_HOSTPORT, CFG_EMPTY_OK, ""),
    KEYMAX("outbound", "remote_port", CFG_UINT, 0, "25", 65535),
    KEY("outbound", "retry_schedule", CFG_DURATION_LIST, 0, "5m, 10m, 30m, 1h, 2h, 4h"),
    KEY("outbound", "max_queue_lifetime", CFG_DURATION, 0, "5d"),
    KEY("outbound", "allow_plaintext_auth", CFG_BOOL, 0, "no"),
    KEYMAX("outbound", "workers", CFG_UINT, 0, "16", 256),
    KEY("outbound", "connect_timeout", CFG_DURATION, 0, "30s"),
    KEY("outbound", "command_timeout", CFG_DURATION, 0, "5m"),
    /* [storage] */
    ENUMKEY("storage", "backend", "image", "image|lvm|directory"),
    KEY("storage", "image_dir", CFG_PATH, 0, "/var/lib/semail/images"),
    KEY("storage", "lvm_vg", CFG_NAME, 0, "semail"),
    KEY("storage", "default_size", CFG_SIZE, 0, "1G"),
    /* [containers] */
    KEY("containers", "enabled", CFG_BOOL, 0, "yes"),
    KEY("containers", "engine", CFG_PATH, 0, "/run/docker.sock"),
    KEY("containers", "image", CFG_STRING, 0, "semail/user:latest"),
    KEY("containers", "ssh_listen", CFG_ADDRESS, 0, "0.0.0.0"),
    KEYMAX("containers", "ssh_port_range", CFG_RANGE, 0, "22000-22999", 65535),
    KEY("containers", "memory", CFG_SIZE, 0, "256m"),
    KEYMAX("containers", "pids", CFG_UINT, 0, "256", 4194304),
    KEY("containers", "cpus", CFG_DECIMAL, 0, "0.5"),
    /* [dns] */
    KEY("dns", "enabled", CFG_BOOL, 0, "yes"),
    KEY("dns", "server", CFG_HOSTPORT, 0, "127.0.0.1:53"),
    DERIVED("dns", "zone", CFG_HOSTNAME, "global", "domain"),
    KEY("dns", "tsig_key", CFG_PATH, 0, "/etc/semail/tsig.key"),
    DERIVED("dns", "mx_host", CFG_HOSTNAME, "global", "hostname"),
    /* [ldap] */
    KEY("ldap", "uri", CFG_LDAP_URI, 0, "ldap://127.0.0.1:389"),
    KEY("ldap", "base", CFG_STRING, 0, "ou=people,dc=semail,dc=test"),
    KEY("ldap", "filter", CFG_LDAP_TEMPLATE, CFG_EMPTY_OK, "(uid=%u)"),
    KEY("ldap", "bind_dn", CFG_LDAP_TEMPLATE, CFG_EMPTY_OK, ""),
    KEY("ldap", "ca_file", CFG_PATH, CFG_EMPTY_OK, ""),
    KEY("ldap", "search_dn", CFG_STRING, CFG_EMPTY_OK, ""),
    KEY("ldap", "search_password_file", CFG_PATH, CFG_EMPTY_OK, ""),
    KEY("ldap", "timeout", CFG_DURATION, 0, "5s"),
};
const size_t semail__cfg_nkeys = SEMAIL_ARRAY_LEN(semail__cfg_schema);
