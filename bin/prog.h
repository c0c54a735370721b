/*
 * prog.h - what every SEMail program shares: the common options (-c,
 * --version, --help, -t), the configuration path rule, and log lines.
 */
#ifndef SEMAIL_PROG_H
#define SEMAIL_PROG_H

#include <stdarg.h>

#include "semail/semail.h"

/* The result of parsing the options every program takes. */
typedef struct prog_common {
    const char *name;        /* program name, for messages */
    const char *config_path; /* -c FILE, else $SEMAIL_CONFIG, else the default */
    int check_config;        /* -t / --check-config */
    int argi;                /* index of the first argument not consumed */
} prog_common;

/*
 * Parse -c FILE, --config FILE, -t, --check-config, --version, --help from
 * ARGV, stopping at the first argument that is not one of them. --version
 * and --help print and exit 0; a bad option prints USAGE and exits 2.
 */
void prog_parse_common(prog_common *pc, int argc, char **argv, const char *usage);

/*
 * Load the configuration; on failure print "NAME: MESSAGE" and return NULL.
 * With pc->check_config, print the verdict and exit 0 or 1.
 */
semail_config *prog_load_config(const prog_common *pc);

/* Write one log line "TIMESTAMP NAME[PID]: TEXT" to stderr, atomically. */
void prog_log(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void prog_vlog(const char *name, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* A semail_log_cb that writes through prog_log; the payload is the name. */
void prog_log_cb(const char *line, void *payload);

#endif
