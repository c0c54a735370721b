/*
 * named_testutil.h - what the unit tests that run a real BIND9 (or another
 * loopback server) share: a free loopback port, a file written whole, and
 * named exec'd in a test directory.
 *
 * Contract: helpers fail the running test (cmocka) rather than return an
 * error; tu_exec_named() runs in a forked child and never returns.
 */
#ifndef SEMAIL_NAMED_TESTUTIL_H
#define SEMAIL_NAMED_TESTUTIL_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#define TU_NAMED "/usr/sbin/named"

/* A loopback port free for both UDP and TCP a moment ago; 0 if none found. */
static inline uint16_t tu_free_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t sl = sizeof(sin);
        int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
        uint16_t port = 0;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(u, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
            getsockname(u, (struct sockaddr *)&sin, &sl) == 0 &&
            bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0)
            port = ntohs(sin.sin_port);
        close(u);
        close(t);
        if (port != 0)
            return port;
    }
    return 0;
}

/* Write TEXT to PATH, replacing it. */
static inline void tu_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* In a forked child: run named in the foreground on DIR/named.conf, output
 * to DIR/named.log, as nobody when root. */
static inline void tu_exec_named(const char *dir)
{
    char conf[128], log[128];
    int fd;
    snprintf(conf, sizeof(conf), "%s/named.conf", dir);
    snprintf(log, sizeof(log), "%s/named.log", dir);
    if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (getuid() == 0)
        execl(TU_NAMED, "named", "-g", "-u", "nobody", "-c", conf, (char *)NULL);
    else
        execl(TU_NAMED, "named", "-g", "-c", conf, (char *)NULL);
    _exit(127);
}

#endif
