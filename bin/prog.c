/*
 * prog.c - the options, configuration loading, logging, error messages
 * and signal handling that SEMail programs share, so that they behave alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "prog.h"

static void print_version(const char *name)
{
    printf("%s (SEMail) %s\n", name, semail_version(NULL, NULL, NULL));
}

void prog_parse_common(prog_common *pc, int argc, char **argv, const char *usage)
{
    int i;
    const char *env = getenv("SEMAIL_CONFIG");

    pc->config_path = (env && *env) ? env : SEMAIL_CONFIG_DEFAULT_PATH;
    pc->check_config = 0;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a file\n%s", pc->name, a, usage);
                exit(2);
            }
            pc->config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            pc->config_path = a + 9;
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--check-config") == 0) {
            pc->check_config = 1;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            print_version(pc->name);
            exit(0);
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        } else if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (a[0] == '-' && a[1] != '\0') {
            /* Not a common option: the program's own parser decides. */
            break;
        } else {
            break;
        }
    }
    pc->argi = i;
}

semail_config *prog_load_config(const prog_common *pc)
{
    semail_config *cfg = NULL;
    int err = semail_config_load(&cfg, pc->config_path);

    if (pc->check_config) {
        if (err < 0) {
            fprintf(stderr, "%s: %s\n", pc->name, semail_error_last());
            exit(1);
        }
        printf("%s: configuration %s is valid\n", pc->name, pc->config_path);
        semail_config_free(cfg);
        exit(0);
    }
    if (err < 0) {
        fprintf(stderr, "%s: %s\n", pc->name, semail_error_last());
        return NULL;
    }
    return cfg;
}

void prog_vlog(const char *name, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    int n, m;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof(line),
                 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s[%d]: ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000), name,
                 (int)getpid());
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        return;
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    /* In size_t: M alone may be near INT_MAX (a huge argument), N + M would overflow. */
    n = (size_t)n + (size_t)m >= sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m;
    line[n++] = '\n';
    /* One write per line, so that concurrent threads never interleave lines. */
    (void)!write(STDERR_FILENO, line, (size_t)n);
}

void prog_log(const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    prog_vlog(name, fmt, ap);
    va_end(ap);
}

void prog_log_cb(const char *line, void *payload)
{
    prog_log(payload ? (const char *)payload : "semail", "%s", line);
}

int prog_fail(const char *name, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int prog_usage_error(const char *name, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

/* ---- daemons ------------------------------------------------------------ */

/* Set once in main before any thread starts, read-only afterwards. */
static const char *g_log_name = "semail";
static int g_syslog;

void prog_daemon_log_init(const char *name, int use_syslog)
{
    g_log_name = name;
    if (use_syslog && !g_syslog) {
        openlog(name, LOG_PID | LOG_NDELAY, LOG_MAIL);
        g_syslog = 1;
    }
}

void prog_daemon_log_close(void)
{
    if (g_syslog)
        closelog();
}

void prog_logf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_syslog)
        vsyslog(LOG_MAIL | LOG_INFO, fmt, ap);
    else
        prog_vlog(g_log_name, fmt, ap);
    va_end(ap);
}

void prog_server_log_cb(const char *line, void *payload)
{
    (void)payload;
    prog_logf("%s", line);
}

void prog_signals_block(prog_signals *ps)
{
    sigemptyset(&ps->set);
    sigaddset(&ps->set, SIGTERM);
    sigaddset(&ps->set, SIGINT);
    sigaddset(&ps->set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &ps->set, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);
}

static void *signal_main(void *arg)
{
    prog_signals *ps = arg;
    int sig;

    for (;;) {
        if (sigwait(&ps->set, &sig) != 0)
            continue;
        if (atomic_load(&ps->done))
            return NULL;
        if (sig == SIGHUP) {
            prog_logf("SIGHUP: nothing to do, the registry is re-read automatically when it "
                      "changes");
        } else {
            prog_logf("%s: stopping (%s)", sig == SIGTERM ? "SIGTERM" : "SIGINT", ps->stopping);
            ps->stop(ps->arg);
        }
    }
}

int prog_signals_start(prog_signals *ps, const char *name, void (*stop)(void *), void *arg,
                       const char *stopping)
{
    int r;

    ps->stop = stop;
    ps->arg = arg;
    ps->stopping = stopping;
    atomic_init(&ps->done, 0);
    if ((r = pthread_create(&ps->thread, NULL, signal_main, ps)) != 0) {
        fprintf(stderr, "%s: cannot start the signal thread: %s\n", name, strerror(r));
        return -1;
    }
    ps->started = 1;
    return 0;
}

void prog_signals_join(prog_signals *ps)
{
    if (!ps->started)
        return;
    /* The thread checks DONE after each signal: wake it with one. */
    atomic_store(&ps->done, 1);
    pthread_kill(ps->thread, SIGHUP);
    pthread_join(ps->thread, NULL);
    ps->started = 0;
}

int prog_cfg_number(const semail_config *cfg, const char *name, const char *section,
                    const char *key, char kind, uint64_t max, uint64_t *out)
{
    const char *v = semail_config_get(cfg, section, key);
    int err;

    *out = 0;
    if (v == NULL || v[0] == '\0')
        return 0;
    if (kind == 's')
        err = semail_config_get_size(cfg, section, key, out);
    else if (kind == 'd')
        err = semail_config_get_duration_ms(cfg, section, key, out);
    else
        err = semail_config_get_uint(cfg, section, key, out);
    if (err < 0) {
        fprintf(stderr, "%s: %s: [%s] %s: %s\n", name, semail_config_path(cfg), section, key,
                semail_error_last());
        return -1;
    }
    if (*out > max) {
        fprintf(stderr, "%s: %s: [%s] %s: at most %llu\n", name, semail_config_path(cfg), section,
                key, (unsigned long long)max);
        return -1;
    }
    return 0;
}
