/*
 * test_ldap.c - directory authentication end to end against a real slapd
 * that the test starts itself: a slapd.conf in a temporary directory,
 * ldap:// and ldaps:// on free loopback ports, a self-signed certificate
 * made with the openssl CLI, people loaded with slapadd. Helpers and slapd
 * run as nobody when the test runs as root. slapd gets SIGKILL if the test
 * process dies (PR_SET_PDEATHSIG), SIGTERM at the end of the group, and an
 * atexit() handler as a last resort. Skipped, with a message, when
 * /usr/sbin/slapd is missing (Debian packages slapd, ldap-utils).
 *
 * The directory: ou=people (anyone may read) holds alice, bob, "a*" and
 * "c,d"; ou=staff holds carol, whom only the service account cn=search may
 * see.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ldap_internal.h"
#include "semail/config.h"
#include "semail/ldap.h"

#define SLAPD      "/usr/sbin/slapd"
#define SLAPADD    "/usr/sbin/slapadd"
#define SLAPPASSWD "/usr/sbin/slappasswd"
#define OPENSSL    "/usr/bin/openssl"
#define PEOPLE     "ou=people,dc=semail,dc=test"
#define TEMPLATE   "uid=%u," PEOPLE
#define SEARCH_DN  "cn=search,dc=semail,dc=test"

typedef struct slapd {
    char dir[64];
    char uri[64];     /* ldap://127.0.0.1:PORT */
    char uris[64];    /* ldaps://127.0.0.1:PORT */
    char ca[128];     /* the self-signed certificate */
    char closed[64];  /* ldap:// on a port nobody listens on */
    char silent[64];  /* ldap:// on a socket that never answers */
    char silents[64]; /* ldaps:// on the same */
    int silent_fd;
} slapd;

static pid_t slapd_pid = -1; /* for the atexit() handler only */

/* ---- helpers ---------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int listen_socket(uint16_t *port, int backlog)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &sl) != 0 ||
        (backlog > 0 && listen(fd, backlog) != 0)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

/* A port that was free a moment ago (nothing listens on it after this). */
static uint16_t free_port(void)
{
    uint16_t port = 0;
    int fd = listen_socket(&port, 0);
    assert_true(fd >= 0);
    close(fd);
    return port;
}

/* In a child: become nobody when root; die with the parent. */
static void child_setup(pid_t parent)
{
    if (getuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (pw == NULL || setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
            setuid(pw->pw_uid) != 0)
            _exit(126);
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126);
}

/* Run ARGV, its stdout into OUT (first line, NUL-terminated) when OUT is set. */
static int run(char *const argv[], char *out, size_t size, const char *log)
{
    int p[2], status = -1, fd;
    pid_t parent = getpid(), pid;
    size_t len = 0;
    ssize_t r;

    assert_int_equal(pipe(p), 0);
    assert_true((pid = fork()) >= 0);
    if (pid == 0) {
        child_setup(parent);
        dup2(p[1], 1);
        if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0)
            dup2(fd, 2);
        close(p[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    while (out != NULL && len + 1 < size && (r = read(p[0], out + len, size - 1 - len)) > 0)
        len += (size_t)r;
    if (out != NULL) {
        out[len] = '\0';
        out[strcspn(out, "\n")] = '\0';
    }
    close(p[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void hash_password(const slapd *s, const char *pw, char *out, size_t size)
{
    char log[128];
    char *argv[] = {SLAPPASSWD, "-s", (char *)pw, NULL};
    snprintf(log, sizeof(log), "%s/tools.log", s->dir);
    assert_int_equal(run(argv, out, size, log), 0);
    assert_true(strncmp(out, "{SSHA}", 6) == 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void add_person(const slapd *s, FILE *f, const char *rdn, const char *uid, const char *ou,
                       const char *pw)
{
    char hash[128];
    hash_password(s, pw, hash, sizeof(hash));
    fprintf(f,
            "dn: uid=%s,ou=%s,dc=semail,dc=test\nobjectClass: inetOrgPerson\nuid: %s\n"
            "cn: %s\nsn: %s\nuserPassword: %s\n\n",
            rdn, ou, uid, uid, uid, hash);
}

static void write_people(const slapd *s, const char *path)
{
    char hash[128];
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("dn: dc=semail,dc=test\nobjectClass: dcObject\nobjectClass: organization\n"
          "dc: semail\no: semail\n\n"
          "dn: ou=people,dc=semail,dc=test\nobjectClass: organizationalUnit\nou: people\n\n"
          "dn: ou=staff,dc=semail,dc=test\nobjectClass: organizationalUnit\nou: staff\n\n",
          f);
    hash_password(s, "svcsecret", hash, sizeof(hash));
    fprintf(f,
            "dn: " SEARCH_DN "\nobjectClass: organizationalRole\n"
            "objectClass: simpleSecurityObject\ncn: search\nuserPassword: %s\n\n",
            hash);
    add_person(s, f, "alice", "alice", "people", "secret");
    add_person(s, f, "bob", "bob", "people", "bobsecret");
    add_person(s, f, "a*", "a*", "people", "starsecret");
    add_person(s, f, "c\\,d", "c,d", "people", "commasecret");
    add_person(s, f, "carol", "carol", "staff", "carolsecret");
    assert_int_equal(fclose(f), 0);
}

static void write_conf(const slapd *s, const char *path)
{
    char conf[4096];
    snprintf(conf, sizeof(conf),
             "include /etc/ldap/schema/core.schema\n"
             "include /etc/ldap/schema/cosine.schema\n"
             "include /etc/ldap/schema/nis.schema\n"
             "include /etc/ldap/schema/inetorgperson.schema\n"
             "TLSCertificateFile %s/tls.crt\n"
             "TLSCertificateKeyFile %s/tls.key\n"
             "modulepath /usr/lib/ldap\n"
             "moduleload back_mdb\n"
             "pidfile %s/slapd.pid\n"
             "argsfile %s/slapd.args\n"
             "database mdb\n"
             "maxsize 10485760\n"
             "suffix \"dc=semail,dc=test\"\n"
             "rootdn \"cn=admin,dc=semail,dc=test\"\n"
             "directory %s/data\n"
             "index objectClass,uid eq\n"
             "access to attrs=userPassword by self write by anonymous auth by * none\n"
             "access to dn.children=\"ou=staff,dc=semail,dc=test\"\n"
             "  by dn.exact=\"" SEARCH_DN "\" read by self read by anonymous auth by * none\n"
             "access to * by * read\n",
             s->dir, s->dir, s->dir, s->dir, s->dir);
    write_file(path, conf);
}

static void make_cert(const slapd *s)
{
    char key[128], log[128];
    char *argv[] = {OPENSSL,
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout",
                    key,
                    "-out",
                    (char *)s->ca,
                    NULL};
    snprintf(key, sizeof(key), "%s/tls.key", s->dir);
    snprintf(log, sizeof(log), "%s/tools.log", s->dir);
    assert_int_equal(run(argv, NULL, 0, log), 0);
}

static int connects(uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
    close(fd);
    return ok;
}

static void stop_slapd(void)
{
    if (slapd_pid > 0) {
        kill(slapd_pid, SIGTERM);
        waitpid(slapd_pid, NULL, 0);
        slapd_pid = -1;
    }
}

static void start_slapd(slapd *s, uint16_t port, uint16_t tls_port)
{
    char conf[128], urls[128], log[128];
    pid_t parent = getpid();
    int i, fd;

    snprintf(conf, sizeof(conf), "%s/slapd.conf", s->dir);
    snprintf(log, sizeof(log), "%s/slapd.log", s->dir);
    snprintf(urls, sizeof(urls), "ldap://127.0.0.1:%u/ ldaps://127.0.0.1:%u/", port, tls_port);
    assert_true((slapd_pid = fork()) >= 0);
    if (slapd_pid == 0) {
        child_setup(parent);
        if ((fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644)) >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(SLAPD, "slapd", "-d", "0", "-f", conf, "-h", urls, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 200 && !(connects(port) && connects(tls_port)); i++) {
        struct timespec ts = {0, 25 * 1000 * 1000};
        assert_int_equal(waitpid(slapd_pid, NULL, WNOHANG), 0); /* died: see slapd.log */
        nanosleep(&ts, NULL);
    }
    assert_true(i < 200);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    static slapd s;
    char path[128], log[128];
    uint16_t port, tls_port, silent_port;

    memset(&s, 0, sizeof(s));
    s.silent_fd = -1;
    *state = NULL;
    if (access(SLAPD, X_OK) != 0 || access(SLAPADD, X_OK) != 0 || access(OPENSSL, X_OK) != 0) {
        print_message("SKIP: %s not installed (Debian packages slapd, ldap-utils)\n", SLAPD);
        return 0;
    }
    atexit(stop_slapd);
    snprintf(s.dir, sizeof(s.dir), "/tmp/semail-slapd-XXXXXX");
    assert_non_null(mkdtemp(s.dir));
    snprintf(path, sizeof(path), "%s/data", s.dir);
    assert_int_equal(mkdir(path, 0700), 0);
    if (getuid() == 0) {
        struct passwd *pw = getpwnam("nobody");
        assert_non_null(pw);
        assert_int_equal(chown(s.dir, pw->pw_uid, pw->pw_gid), 0);
        assert_int_equal(chown(path, pw->pw_uid, pw->pw_gid), 0);
    }
    snprintf(s.ca, sizeof(s.ca), "%s/tls.crt", s.dir);
    make_cert(&s);
    snprintf(path, sizeof(path), "%s/slapd.conf", s.dir);
    write_conf(&s, path);
    snprintf(path, sizeof(path), "%s/people.ldif", s.dir);
    write_people(&s, path);
    {
        char conf[128];
        char *argv[] = {SLAPADD, "-q", "-f", conf, "-l", path, NULL};
        snprintf(conf, sizeof(conf), "%s/slapd.conf", s.dir);
        snprintf(log, sizeof(log), "%s/tools.log", s.dir);
        assert_int_equal(run(argv, NULL, 0, log), 0);
    }
    port = free_port();
    tls_port = free_port();
    start_slapd(&s, port, tls_port);
    snprintf(s.uri, sizeof(s.uri), "ldap://127.0.0.1:%u", port);
    snprintf(s.uris, sizeof(s.uris), "ldaps://127.0.0.1:%u", tls_port);
    snprintf(s.closed, sizeof(s.closed), "ldap://127.0.0.1:%u", free_port());
    assert_true((s.silent_fd = listen_socket(&silent_port, 16)) >= 0);
    snprintf(s.silent, sizeof(s.silent), "ldap://127.0.0.1:%u", silent_port);
    snprintf(s.silents, sizeof(s.silents), "ldaps://127.0.0.1:%u", silent_port);
    *state = &s;
    return 0;
}

static int teardown(void **state)
{
    slapd *s = *state;
    stop_slapd();
    if (s == NULL)
        return 0;
    if (s->silent_fd >= 0)
        close(s->silent_fd);
    nftw(s->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

#define SLAPD_OR_SKIP()                                                                            \
    slapd *s = *state;                                                                             \
    do {                                                                                           \
        if (s == NULL)                                                                             \
            skip();                                                                                \
    } while (0)

/* Options for search-then-bind against S, anonymous search. */
static semail_ldap_options search_opts(const slapd *s)
{
    semail_ldap_options o = SEMAIL_LDAP_OPTIONS_INIT;
    o.uri = s->uri;
    o.base = PEOPLE;
    o.filter = "(uid=%u)";
    o.timeout_ms = 2000;
    return o;
}

static semail_ldap_options template_opts(const slapd *s)
{
    semail_ldap_options o = SEMAIL_LDAP_OPTIONS_INIT;
    o.uri = s->uri;
    o.bind_dn = TEMPLATE;
    o.timeout_ms = 2000;
    return o;
}

/* ---- tests -------------------------------------------------------------------- */

static void test_ldap__search_then_bind_accepts_the_right_password(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", dn, sizeof(dn)), 0);
    assert_string_equal(dn, "uid=alice," PEOPLE);
    assert_int_equal(semail_ldap_authenticate(&o, "bob", "bobsecret", NULL, 0), 0);
}

static void test_ldap__dn_template_accepts_the_right_password(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = template_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", dn, sizeof(dn)), 0);
    assert_string_equal(dn, "uid=alice," PEOPLE);
}

static void test_ldap__wrong_password_is_eperm(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    assert_int_equal(semail_ldap_authenticate(&o, "alice", "bobsecret", dn, sizeof(dn)),
                     SEMAIL_EPERM);
    assert_string_equal(dn, "");
    assert_non_null(strstr(semail_error_last(), "Invalid credentials"));
    assert_null(strstr(semail_error_last(), "bobsecret"));
    assert_int_equal(semail_ldap_authenticate(&t, "alice", "Secret", NULL, 0), SEMAIL_EPERM);
}

static void test_ldap__unknown_person_is_enotfound_when_searching(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);

    assert_int_equal(semail_ldap_authenticate(&o, "mallory", "secret", NULL, 0), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(semail_error_last(), "(uid=mallory)"));
    /* A direct bind cannot tell an unknown DN from a wrong password. */
    assert_int_equal(semail_ldap_authenticate(&t, "mallory", "secret", NULL, 0), SEMAIL_EPERM);
}

static void test_ldap__empty_password_is_refused_before_any_bind(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);

    assert_int_equal(semail_ldap_authenticate(&o, "alice", "", NULL, 0), SEMAIL_EPERM);
    assert_non_null(strstr(semail_error_last(), "empty password"));
    assert_int_equal(semail_ldap_authenticate(&t, "alice", "", NULL, 0), SEMAIL_EPERM);
    /* Not even a connection: a dead server still gives EPERM, not ETEMP. */
    o.uri = s->closed;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "", NULL, 0), SEMAIL_EPERM);
    assert_int_equal(semail_ldap_authenticate(&o, "alice", NULL, NULL, 0), SEMAIL_EINVAL);
}

static void test_ldap__logins_that_are_not_names_are_refused(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);
    const char *bad[] = {"*)(uid=*", "*", "a*", "c,d", "Alice", "", "alice)", "a\\b"};
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(semail_ldap_authenticate(&o, bad[i], "secret", NULL, 0), SEMAIL_EINVAL);
        assert_int_equal(semail_ldap_authenticate(&t, bad[i], "secret", NULL, 0), SEMAIL_EINVAL);
        assert_int_equal(semail_ldap_person_exists(&o, bad[i]), SEMAIL_EINVAL);
    }
    assert_int_equal(semail_ldap_authenticate(&o, NULL, "secret", NULL, 0), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "login"));
}

/* Below the name check, the escaping alone keeps hostile logins literal. */
static void test_ldap__filter_escaping_keeps_hostile_logins_literal(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    /* Unescaped, (uid=*)(uid=*) would match alice and bind with her password. */
    assert_int_equal(semail__ldap_run(&o, "*)(uid=*", "secret", dn, sizeof(dn)), SEMAIL_ENOTFOUND);
    assert_int_equal(semail__ldap_run(&o, "*", "secret", NULL, 0), SEMAIL_ENOTFOUND);
    assert_int_equal(semail__ldap_run(&o, "*", NULL, NULL, 0), SEMAIL_ENOTFOUND);
    /* Unescaped, (uid=a*) would match alice as well: escaped, only "a*". */
    assert_int_equal(semail__ldap_run(&o, "a*", "starsecret", dn, sizeof(dn)), 0);
    assert_string_equal(dn, "uid=a*," PEOPLE);
    assert_int_equal(semail__ldap_run(&o, "a*", "secret", NULL, 0), SEMAIL_EPERM);
    assert_int_equal(semail__ldap_run(&o, "c,d", "commasecret", dn, sizeof(dn)), 0);
}

static void test_ldap__dn_escaping_keeps_hostile_logins_in_one_rdn(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options t = template_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    assert_int_equal(semail__ldap_run(&t, "c,d", "commasecret", dn, sizeof(dn)), 0);
    assert_string_equal(dn, "uid=c\\,d," PEOPLE);
    assert_int_equal(semail__ldap_run(&t, "c,d", NULL, NULL, 0), 0);
    /* "bob,ou=people,dc=semail,dc=test" stays one uid value: no such entry. */
    assert_int_equal(semail__ldap_run(&t, "bob," PEOPLE, "bobsecret", NULL, 0), SEMAIL_EPERM);
}

static void test_ldap__ldaps_with_the_ca_file_works(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);

    o.uri = t.uri = s->uris;
    o.ca_file = t.ca_file = s->ca;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), 0);
    assert_int_equal(semail_ldap_authenticate(&t, "bob", "bobsecret", NULL, 0), 0);
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "nope", NULL, 0), SEMAIL_EPERM);
    assert_int_equal(semail_ldap_person_exists(&o, "alice"), 0);
}

static void test_ldap__ldaps_without_the_ca_fails_cleanly(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char missing[160];
    double t0;

    o.uri = s->uris;
    t0 = now_ms();
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), SEMAIL_ETEMP);
    assert_true(now_ms() - t0 < 2000);
    assert_non_null(strstr(semail_error_last(), s->uris));
    print_message("without the CA: %s\n", semail_error_last());
    snprintf(missing, sizeof(missing), "%s/no-such-ca.crt", s->dir);
    o.ca_file = missing;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "no-such-ca.crt"));
    print_message("missing CA file: %s\n", semail_error_last());
}

static void assert_etemp_within(semail_ldap_options *o, const char *uri, double max_ms)
{
    double t0 = now_ms(), took;
    o->uri = uri;
    assert_int_equal(semail_ldap_authenticate(o, "alice", "secret", NULL, 0), SEMAIL_ETEMP);
    took = now_ms() - t0;
    print_message("%s: %.0f ms: %s\n", uri, took, semail_error_last());
    assert_true(took < max_ms);
    assert_non_null(strstr(semail_error_last(), uri));
    t0 = now_ms();
    assert_int_equal(semail_ldap_person_exists(o, "alice"), SEMAIL_ETEMP);
    assert_true(now_ms() - t0 < max_ms);
}

static void test_ldap__unreachable_or_silent_server_is_etemp_within_the_timeout(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);

    o.timeout_ms = t.timeout_ms = 300;
    o.ca_file = t.ca_file = s->ca;
    assert_etemp_within(&o, s->closed, 300);
    assert_non_null(strstr(semail_error_last(), "unreachable"));
    assert_etemp_within(&o, s->silent, 1000);
    assert_etemp_within(&t, s->silent, 1000);
    assert_etemp_within(&o, s->silents, 1000);
}

static void test_ldap__next_uri_is_tried_when_the_first_is_down(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char uris[160];

    snprintf(uris, sizeof(uris), "%s %s", s->closed, s->uri);
    o.uri = uris;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), 0);
    /* ldaps:// connects asynchronously (see ldap.c): the fall-over still works. */
    snprintf(uris, sizeof(uris), "ldaps://127.0.0.1:%s %s", strrchr(s->closed, ':') + 1, s->uris);
    o.ca_file = s->ca;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), 0);
}

static void test_ldap__service_account_searches_where_anonymous_cannot(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char dn[SEMAIL_LDAP_DN_MAX];

    o.base = "dc=semail,dc=test";
    assert_int_equal(semail_ldap_authenticate(&o, "carol", "carolsecret", NULL, 0),
                     SEMAIL_ENOTFOUND);
    assert_int_equal(semail_ldap_person_exists(&o, "carol"), SEMAIL_ENOTFOUND);
    o.search_dn = SEARCH_DN;
    o.search_password = "svcsecret";
    assert_int_equal(semail_ldap_authenticate(&o, "carol", "carolsecret", dn, sizeof(dn)), 0);
    assert_string_equal(dn, "uid=carol,ou=staff,dc=semail,dc=test");
    assert_int_equal(semail_ldap_person_exists(&o, "carol"), 0);
    assert_int_equal(semail_ldap_authenticate(&o, "carol", "svcsecret", NULL, 0), SEMAIL_EPERM);
    o.search_password = "wrong";
    assert_int_equal(semail_ldap_authenticate(&o, "carol", "carolsecret", NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), SEARCH_DN));
}

static void test_ldap__person_exists_by_filter_and_by_dn_template(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s), t = template_opts(s);

    assert_int_equal(semail_ldap_person_exists(&o, "alice"), 0);
    assert_int_equal(semail_ldap_person_exists(&t, "alice"), 0);
    assert_int_equal(semail_ldap_person_exists(&o, "mallory"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_ldap_person_exists(&t, "mallory"), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(semail_error_last(), "uid=mallory," PEOPLE));
}

static void test_ldap__several_matching_entries_are_refused(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);

    o.filter = "(|(uid=%u)(uid=bob))";
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), SEMAIL_ERROR);
    assert_non_null(strstr(semail_error_last(), "several"));
    assert_int_equal(semail_ldap_person_exists(&o, "alice"), SEMAIL_ERROR);
}

static void test_ldap__missing_search_base_is_econfig(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);

    o.base = "ou=nowhere,dc=semail,dc=test";
    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "ou=nowhere"));
}

static void test_ldap__dn_that_does_not_fit_is_etoobig(void **state)
{
    SLAPD_OR_SKIP();
    semail_ldap_options o = search_opts(s);
    char dn[8] = "x";

    assert_int_equal(semail_ldap_authenticate(&o, "alice", "secret", dn, sizeof(dn)),
                     SEMAIL_ETOOBIG);
    assert_string_equal(dn, "");
}

typedef struct worker {
    const slapd *s;
    int failures;
} worker;

static void *auth_loop(void *arg)
{
    worker *w = arg;
    semail_ldap_options o = search_opts(w->s);
    int i;

    o.uri = w->s->uris;
    o.ca_file = w->s->ca;
    for (i = 0; i < 3; i++) {
        if (semail_ldap_authenticate(&o, "alice", "secret", NULL, 0) != 0)
            w->failures++;
        if (semail_ldap_authenticate(&o, "bob", "wrong", NULL, 0) != SEMAIL_EPERM)
            w->failures++;
    }
    return NULL;
}

static void test_ldap__threads_authenticate_over_ldaps_at_once(void **state)
{
    SLAPD_OR_SKIP();
    pthread_t th[4];
    worker w[4];
    int i;

    for (i = 0; i < 4; i++) {
        w[i].s = s;
        w[i].failures = 0;
        assert_int_equal(pthread_create(&th[i], NULL, auth_loop, &w[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
}

/* ---- without a server ---------------------------------------------------------- */

static void test_ldap__bad_options_are_econfig(void **state)
{
    semail_ldap_options o = SEMAIL_LDAP_OPTIONS_INIT;
    const char *p = "secret";

    assert_int_equal(semail_ldap_authenticate(NULL, "alice", p, NULL, 0), SEMAIL_EINVAL);
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG); /* uri */
    o.uri = "http://127.0.0.1";
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "http://127.0.0.1"));
    o.uri = "ldap://127.0.0.1:1 ldapi://x";
    assert_int_equal(semail_ldap_person_exists(&o, "alice"), SEMAIL_ECONFIG);
    o.uri = "ldap://127.0.0.1:1";
    o.base = PEOPLE;
    o.filter = "(uid=alice)";
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "%u"));
    o.filter = NULL;
    o.bind_dn = "uid=alice," PEOPLE;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    o.bind_dn = NULL;
    o.filter = "(uid=%u)";
    o.base = "";
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    o.base = PEOPLE;
    o.search_dn = SEARCH_DN;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "search_password"));
    o.search_dn = NULL;
    o.version = 99;
    assert_int_equal(semail_ldap_authenticate(&o, "alice", p, NULL, 0), SEMAIL_ECONFIG);
    assert_int_equal(semail_ldap_options_init(&o), 0);
    assert_int_equal(o.version, SEMAIL_LDAP_OPTIONS_VERSION);
    assert_null(o.uri);
    assert_int_equal(semail_ldap_options_init(NULL), SEMAIL_EINVAL);
}

static semail_config *parse(const char *text)
{
    semail_config *cfg = NULL;
    int err = semail_config_parse(&cfg, text, strlen(text), "t.conf");
    if (err != 0)
        print_message("%s\n", semail_error_last());
    assert_int_equal(err, 0);
    return cfg;
}

static void test_ldap__options_from_config_read_the_section_and_password_file(void **state)
{
    char dir[] = "/tmp/semail-ldapcfg-XXXXXX", pwfile[64], text[512], pw[64];
    semail_ldap_options o;
    semail_config *cfg;

    assert_non_null(mkdtemp(dir));
    snprintf(pwfile, sizeof(pwfile), "%s/pw", dir);
    write_file(pwfile, "svcsecret\r\nsecond line\n");
    snprintf(text, sizeof(text),
             "[ldap]\nuri = ldaps://127.0.0.1:6636\nbase = dc=x\nfilter = (mail=%%u@x)\n"
             "ca_file = /etc/ca.pem\nsearch_dn = cn=search,dc=x\n"
             "search_password_file = %s\ntimeout = 2s\n",
             pwfile);
    cfg = parse(text);
    assert_int_equal(semail_ldap_options_from_config(&o, pw, sizeof(pw), cfg), 0);
    assert_string_equal(o.uri, "ldaps://127.0.0.1:6636");
    assert_string_equal(o.base, "dc=x");
    assert_string_equal(o.filter, "(mail=%u@x)");
    assert_string_equal(o.bind_dn, "");
    assert_string_equal(o.ca_file, "/etc/ca.pem");
    assert_string_equal(o.search_dn, "cn=search,dc=x");
    assert_string_equal(o.search_password, "svcsecret");
    assert_int_equal(o.timeout_ms, 2000);
    /* The password does not fit: refused, not truncated. */
    assert_int_equal(semail_ldap_options_from_config(&o, pw, 5, cfg), SEMAIL_ECONFIG);
    assert_string_equal(pw, "");
    semail_config_free(cfg);

    write_file(pwfile, "\n");
    cfg = parse(text);
    assert_int_equal(semail_ldap_options_from_config(&o, pw, sizeof(pw), cfg), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "empty"));
    semail_config_free(cfg);

    remove(pwfile);
    cfg = parse(text);
    assert_int_equal(semail_ldap_options_from_config(&o, pw, sizeof(pw), cfg), SEMAIL_ECONFIG);
    assert_non_null(strstr(semail_error_last(), "t.conf"));
    assert_non_null(strstr(semail_error_last(), pwfile));
    semail_config_free(cfg);
    rmdir(dir);

    cfg = parse("[ldap]\nsearch_dn = cn=search,dc=x\n");
    assert_int_equal(semail_ldap_options_from_config(&o, pw, sizeof(pw), cfg), SEMAIL_ECONFIG);
    semail_config_free(cfg);

    cfg = parse("[ldap]\nbind_dn = uid=%u,dc=x\n");
    assert_int_equal(semail_ldap_options_from_config(&o, NULL, 0, cfg), 0);
    assert_string_equal(o.uri, "ldap://127.0.0.1:389");
    assert_string_equal(o.bind_dn, "uid=%u,dc=x");
    assert_null(o.search_password);
    assert_int_equal(o.timeout_ms, 5000);
    semail_config_free(cfg);

    cfg = parse("");
    assert_int_equal(semail_ldap_options_from_config(&o, NULL, 0, cfg), SEMAIL_ENOTFOUND);
    semail_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ldap__search_then_bind_accepts_the_right_password),
        cmocka_unit_test(test_ldap__dn_template_accepts_the_right_password),
        cmocka_unit_test(test_ldap__wrong_password_is_eperm),
        cmocka_unit_test(test_ldap__unknown_person_is_enotfound_when_searching),
        cmocka_unit_test(test_ldap__empty_password_is_refused_before_any_bind),
        cmocka_unit_test(test_ldap__logins_that_are_not_names_are_refused),
        cmocka_unit_test(test_ldap__filter_escaping_keeps_hostile_logins_literal),
        cmocka_unit_test(test_ldap__dn_escaping_keeps_hostile_logins_in_one_rdn),
        cmocka_unit_test(test_ldap__ldaps_with_the_ca_file_works),
        cmocka_unit_test(test_ldap__ldaps_without_the_ca_fails_cleanly),
        cmocka_unit_test(test_ldap__unreachable_or_silent_server_is_etemp_within_the_timeout),
        cmocka_unit_test(test_ldap__next_uri_is_tried_when_the_first_is_down),
        cmocka_unit_test(test_ldap__service_account_searches_where_anonymous_cannot),
        cmocka_unit_test(test_ldap__person_exists_by_filter_and_by_dn_template),
        cmocka_unit_test(test_ldap__several_matching_entries_are_refused),
        cmocka_unit_test(test_ldap__missing_search_base_is_econfig),
        cmocka_unit_test(test_ldap__dn_that_does_not_fit_is_etoobig),
        cmocka_unit_test(test_ldap__threads_authenticate_over_ldaps_at_once),
        cmocka_unit_test(test_ldap__bad_options_are_econfig),
        cmocka_unit_test(test_ldap__options_from_config_read_the_section_and_password_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
