/*
 * config_schema.h - the schema of the configuration file, shared by
 * config.c (which checks values against it) and config_schema.c (which
 * holds it). Internal to libsemail.
 */
#ifndef SEMAIL_CONFIG_SCHEMA_H
#define SEMAIL_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

enum semail__cfg_type {
    CFG_STRING,        /* printable text */
    CFG_NAME,          /* a system name: [A-Za-z0-9._-], 1-64 bytes */
    CFG_HOSTNAME,      /* a DNS name */
    CFG_PATH,          /* an absolute path */
    CFG_SIZE,          /* bytes, or with a k/m/g/t suffix (powers of 1024) */
    CFG_DURATION,      /* seconds, or with an s/m/h/d suffix */
    CFG_DURATION_LIST, /* comma-separated durations, each > 0 */
    CFG_BOOL,          /* yes/no, true/false, on/off, 1/0 */
    CFG_UINT,          /* a non-negative integer <= max */
    CFG_DECIMAL,       /* a non-negative decimal number such as 0.5 */
    CFG_LISTEN,        /* comma-separated HOST:PORT, IPv6 in brackets */
    CFG_HOSTPORT,      /* one HOST:PORT */
    CFG_ADDRESS,       /* an IPv4 or IPv6 literal */
    CFG_CIDR_LIST,     /* comma-separated ADDRESS[/PREFIX] */
    CFG_RANGE,         /* LOW-HIGH, LOW <= HIGH <= max */
    CFG_ENUM,          /* one of choices ("a|b|c") */
    CFG_LDAP_URI,      /* ldap://HOST[:PORT] or ldaps://... */
    CFG_LDAP_TEMPLATE  /* a filter or DN containing %u */
};

#define CFG_EMPTY_OK 1u /* the empty value is allowed (it means "none") */

struct semail__cfg_key {
    const char *section;
    const char *key;
    enum semail__cfg_type type;
    unsigned int flags;
    const char *def;          /* default value; NULL when derived */
    const char *from_section; /* derived default: the value of this key */
    const char *from_key;
    uint64_t max;        /* CFG_UINT and CFG_RANGE upper bound; 0: none */
    const char *choices; /* CFG_ENUM */
};

SEMAIL_HIDDEN extern const char *const semail__cfg_sections[];
SEMAIL_HIDDEN extern const size_t semail__cfg_nsections;
SEMAIL_HIDDEN extern const struct semail__cfg_key semail__cfg_schema[];
SEMAIL_HIDDEN extern const size_t semail__cfg_nkeys;

#endif
