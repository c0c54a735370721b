/*
 * prog.h - what every SEMail program shares: the common options (-c,
 * --version, --help, -t), the configuration path rule, log lines, error
 * messages and exit statuses, and what the two daemons share (syslog or
 * stderr logging, the signal thread, numeric configuration values).
 */
#ifndef SEMAIL_PROG_H
#define SEMAIL_PROG_H

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

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

/* Print "NAME: MESSAGE" on stderr and return 1, the exit status of a failure. */
int prog_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "NAME: MESSAGE" then USAGE on stderr and return 2, the exit status of bad usage. */
int prog_usage_error(const char *name, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- daemons ------------------------------------------------------------ */

/*
 * Send prog_logf() lines to syslog (mail facility, opened as NAME) when
 * USE_SYSLOG, else to stderr as prog_log(NAME, ...). Call in main before
 * any thread starts: early, then again once the configuration says whether
 * to use syslog. prog_daemon_log_close() closes syslog if it was opened.
 */
void prog_daemon_log_init(const char *name, int use_syslog);
void prog_daemon_log_close(void);

/* One log line of the daemon, where prog_daemon_log_init() said. */
void prog_logf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A semail_log_cb that writes through prog_logf(); the payload is unused. */
void prog_server_log_cb(const char *line, void *payload);

/*
 * SIGTERM and SIGINT call STOP(ARG) (after the log line "SIGTERM: stopping
 * (STOPPING)"); SIGHUP only logs that nothing is needed. The signals are
 * blocked in every thread and taken by one thread with sigwait().
 */
typedef struct prog_signals {
    sigset_t set;
    void (*stop)(void *arg);
    void *arg;
    const char *stopping;
    atomic_int done;
    pthread_t thread;
    int started;
} prog_signals;

/*
 * Block SIGTERM, SIGINT and SIGHUP and ignore SIGPIPE and SIGXFSZ (past
 * RLIMIT_FSIZE a write must fail with EFBIG, not kill the daemon). Call in
 * main before any thread exists, so that every thread inherits the mask.
 */
void prog_signals_block(prog_signals *ps);

/* Start the signal thread; on failure print "NAME: ..." and return -1. */
int prog_signals_start(prog_signals *ps, const char *name, void (*stop)(void *), void *arg,
                       const char *stopping);

/* Stop and join the signal thread, if it was started. */
void prog_signals_join(prog_signals *ps);

/*
 * A number from SECTION KEY of CFG: KIND 's' a size, 'd' a duration in ms,
 * anything else an unsigned integer; at most MAX. A key that is absent or
 * empty gives 0. On error print "NAME: PATH: [SECTION] KEY: ..." and return -1.
 */
int prog_cfg_number(const semail_config *cfg, const char *name, const char *section,
                    const char *key, char kind, uint64_t max, uint64_t *out);

#endif
