/*
 * prog.c - the options, configuration loading and logging that every
 * SEMail program shares, so that they behave alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
