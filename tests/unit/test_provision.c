/*
 * test_provision.c - `user create` / `user delete` as transactions, against
 * the real parts that are cheap here: the directory and image storage
 * backends (loop devices and ext4, as root), a BIND9 with a dynamic zone
 * and a TSIG key, a slapd with a small directory. Both servers are started
 * by the group setup as nobody, on free loopback ports, and die with the
 * test (PR_SET_PDEATHSIG). The container engine is a fake behind the
 * container seam of provision_internal.h, so that its failures can be
 * injected (the real engine has its own tests).
 *
 * Skipped, with a message: the DNS and LDAP cases when named or slapd is
 * not installed, the image cases when not root or without loop devices.
 */
#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <linux/loop.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "named_testutil.h"

#include "provision_ctx.h"
#include "semail/config.h"
#include "semail/provision.h"
#include "semail/registry.h"
#include "semail/storage.h"
#include "storage_internal.h"

#define NAMED   "/usr/sbin/named"
#define SLAPD   "/usr/sbin/slapd"
#define SLAPADD "/usr/sbin/slapadd"
#define DIG     "/usr/bin/dig"
#define MiB     (1024u * 1024u)
#define KEY_ED                                                                                     \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1cHVzbG9yZW1pcHN1bWRvbG9yc2l0YW1ldGNv alice@x"
#define SECRET "nLGuBDoNZJqULfXSPXQlGJ7a82oGZ2i5/3+TrLqVVOg="

#define assert_ok(x) assert_int_equal((x), 0)

/* ---- the servers, shared by the whole group ----------------------------------- */

typedef struct servers {
    char dir[64];
    uint16_t dns_port, ldap_port, dead_port;
    pid_t named, slapd;
    int dns_ok, ldap_ok;
} servers;

static servers S;

/* In a child: become nobody (when root), die with the parent, output to LOG. */
static void child_setup(pid_t parent, const char *log)
{
    struct passwd *pw = getpwnam("nobody");
    int fd;
    if ((fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644)) >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (getuid() == 0 && (pw == NULL || setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 ||
                          setuid(pw->pw_uid) != 0))
        _exit(126);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(126);
}

/* Run ARGV as nobody; its first output line into OUT (when set); returns the exit status. */
static int run(char *const argv[], char *out, size_t size)
{
    char log[128];
    int p[2], status = -1;
    pid_t parent = getpid(), pid;
    size_t len = 0;
    ssize_t r;

    snprintf(log, sizeof(log), "%s/tools.log", S.dir);
    assert_int_equal(pipe(p), 0);
    assert_true((pid = fork()) >= 0);
    if (pid == 0) {
        child_setup(parent, log);
        dup2(p[1], 1);
        close(p[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    while (out != NULL && len + 1 < size && (r = read(p[0], out + len, size - 1 - len)) > 0)
        len += (size_t)r;
    if (out != NULL)
        out[len] = '\0';
    close(p[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int chown_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    struct passwd *pw = getpwnam("nobody");
    return pw != NULL ? chown(path, pw->pw_uid, pw->pw_gid) : -1;
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

/* `dig +short TYPE NAME` against our named: the answer text ("" for none). */
static void dig(char *out, size_t size, const char *type, const char *name)
{
    char port[8];
    char *argv[] = {DIG,       "@127.0.0.1", "-p",         port,         "+short",
                    "+time=1", "+tries=2",   (char *)type, (char *)name, NULL};
    snprintf(port, sizeof(port), "%u", S.dns_port);
    assert_int_equal(run(argv, out, size), 0);
}

/* A server did not start: show its log, then fail the group. */
static void dump_log(const char *name)
{
    char path[128], line[512];
    FILE *fp;
    snprintf(path, sizeof(path), "%s/%s", S.dir, name);
    if ((fp = fopen(path, "r")) != NULL) {
        while (fgets(line, sizeof(line), fp))
            print_message("%s: %s", name, line);
        fclose(fp);
    }
    fail_msg("%s did not start (port dns %u, ldap %u)", name, S.dns_port, S.ldap_port);
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t parent = getpid(), pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_setup(parent, log);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void start_named(void)
{
    char conf[2048], path[128], log[128], key[128], out[256];
    int i;

    snprintf(key, sizeof(key), "%s/tsig.key", S.dir);
    snprintf(conf, sizeof(conf),
             "key \"semail-update\" { algorithm hmac-sha256; secret \"" SECRET "\"; };\n");
    tu_write_file(key, conf);
    snprintf(conf, sizeof(conf),
             "include \"%s\";\n"
             "options { directory \"%s\"; pid-file \"%s/named.pid\";\n"
             "  session-keyfile \"%s/session.key\"; managed-keys-directory \"%s\";\n"
             "  listen-on port %u { 127.0.0.1; }; listen-on-v6 { none; };\n"
             "  recursion no; dnssec-validation no; notify no; allow-query { any; }; };\n"
             "controls { };\n"
             "zone \"semail.test\" { type primary; file \"%s/semail.test.zone\";\n"
             "  update-policy { grant semail-update zonesub ANY; }; };\n",
             key, S.dir, S.dir, S.dir, S.dir, S.dns_port, S.dir);
    snprintf(path, sizeof(path), "%s/named.conf", S.dir);
    tu_write_file(path, conf);
    snprintf(log, sizeof(log), "%s/semail.test.zone", S.dir);
    tu_write_file(log, "$TTL 300\n@ IN SOA ns.semail.test. hostmaster.semail.test. 1 3600 600 "
                       "86400 300\n@ IN NS ns.semail.test.\nns IN A 127.0.0.1\nmx IN A 127.0.0.1\n"
                       "taken IN A 192.0.2.7\n");
    snprintf(log, sizeof(log), "%s/named.log", S.dir);
    {
        char *argv[] = {NAMED, "-g", "-c", path, NULL};
        S.named = spawn(argv, log);
    }
    for (i = 0; i < 100; i++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        char port[8];
        char *argv[] = {DIG,       "@127.0.0.1", "-p",  port,          "+short",
                        "+time=1", "+tries=1",   "SOA", "semail.test", NULL};
        snprintf(port, sizeof(port), "%u", S.dns_port);
        if (run(argv, out, sizeof(out)) == 0 && strstr(out, "hostmaster"))
            break;
        if (waitpid(S.named, NULL, WNOHANG) != 0)
            dump_log("named.log"); /* named died */
        nanosleep(&ts, NULL);
    }
    if (i >= 100)
        dump_log("named.log");
    S.dns_ok = 1;
}

static void start_slapd(void)
{
    char conf[2048], path[128], ldif[128], log[128], urls[64], data[128];
    int i;

    snprintf(data, sizeof(data), "%s/ldap", S.dir);
    assert_ok(mkdir(data, 0755));
    snprintf(conf, sizeof(conf),
             "include /etc/ldap/schema/core.schema\n"
             "include /etc/ldap/schema/cosine.schema\n"
             "include /etc/ldap/schema/nis.schema\n"
             "include /etc/ldap/schema/inetorgperson.schema\n"
             "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
             "pidfile %s/slapd.pid\nargsfile %s/slapd.args\n"
             "database mdb\nmaxsize 10485760\nsuffix \"dc=semail,dc=test\"\n"
             "rootdn \"cn=admin,dc=semail,dc=test\"\nrootpw adminpw\n"
             "directory %s\nindex objectClass,uid eq\n"
             "access to attrs=userPassword by self write by anonymous auth by * none\n"
             "access to * by * read\n",
             S.dir, S.dir, data);
    snprintf(path, sizeof(path), "%s/slapd.conf", S.dir);
    tu_write_file(path, conf);
    snprintf(ldif, sizeof(ldif), "%s/init.ldif", S.dir);
    tu_write_file(ldif, "dn: dc=semail,dc=test\nobjectClass: dcObject\nobjectClass: organization\n"
                        "dc: semail\no: semail\n\n"
                        "dn: ou=people,dc=semail,dc=test\nobjectClass: organizationalUnit\n"
                        "ou: people\n\n"
                        "dn: uid=alice,ou=people,dc=semail,dc=test\nobjectClass: inetOrgPerson\n"
                        "uid: alice\ncn: alice\nsn: alice\nuserPassword: secret\n\n");
    if (getuid() == 0)
        assert_ok(nftw(S.dir, chown_entry, 8, FTW_PHYS));
    {
        char *argv[] = {SLAPADD, "-q", "-f", path, "-l", ldif, NULL};
        assert_int_equal(run(argv, NULL, 0), 0);
    }
    snprintf(log, sizeof(log), "%s/slapd.log", S.dir);
    snprintf(urls, sizeof(urls), "ldap://127.0.0.1:%u/", S.ldap_port);
    {
        char *argv[] = {SLAPD, "-d", "0", "-f", path, "-h", urls, NULL};
        S.slapd = spawn(argv, log);
    }
    for (i = 0; i < 200 && !connects(S.ldap_port); i++) {
        struct timespec ts = {0, 25 * 1000 * 1000};
        if (waitpid(S.slapd, NULL, WNOHANG) != 0)
            dump_log("slapd.log"); /* slapd died */
        nanosleep(&ts, NULL);
    }
    if (i >= 200)
        dump_log("slapd.log");
    S.ldap_ok = 1;
}

static int group_setup(void **state)
{
    snprintf(S.dir, sizeof(S.dir), "/tmp/semail-prov-srv-XXXXXX");
    assert_non_null(mkdtemp(S.dir));
    assert_ok(chmod(S.dir, 0755));
    do {
        S.dns_port = tu_free_port();
        S.ldap_port = tu_free_port();
        S.dead_port = tu_free_port();
    } while (S.dns_port == 0 || S.ldap_port == 0 || S.dead_port == 0 || S.dns_port == S.ldap_port ||
             S.dns_port == S.dead_port || S.ldap_port == S.dead_port);
    if (getuid() == 0)
        assert_ok(nftw(S.dir, chown_entry, 8, FTW_PHYS));
    if (access(NAMED, X_OK) == 0 && access(DIG, X_OK) == 0)
        start_named();
    else
        print_message("SKIP: DNS cases: %s or %s missing (bind9, bind9-dnsutils)\n", NAMED, DIG);
    if (access(SLAPD, X_OK) == 0 && access(SLAPADD, X_OK) == 0)
        start_slapd();
    else
        print_message("SKIP: LDAP cases: %s missing (slapd)\n", SLAPD);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void stop(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

static int group_teardown(void **state)
{
    stop(&S.named);
    stop(&S.slapd);
    nftw(S.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- a fake container engine ------------------------------------------------------ */

typedef struct fake_engine {
    int creates, removes, forgets, starts, stops, set_keys;
    int fail_create; /* a code to return from create */
    int port;
    char keys[1024];
} fake_engine;

static int fake_create(void *self, const semail_user *u, const char *mount, char *name,
                       size_t name_size, int *port)
{
    fake_engine *e = self;
    struct stat st;
    e->creates++;
    assert_ok(stat(mount, &st)); /* the filesystem is made before the container */
    if (e->fail_create)
        return semail__err(e->fail_create, "fake engine: create refused");
    snprintf(name, name_size, "semail-%s", u->login);
    *port = e->port++;
    return 0;
}

static int fake_remove(void *self, const char *login)
{
    ((fake_engine *)self)->removes++;
    return 0;
}

static int fake_forget(void *self, const char *login)
{
    ((fake_engine *)self)->forgets++;
    return 0;
}

static int fake_start(void *self, const semail_user *u, const char *mount, int *port)
{
    ((fake_engine *)self)->starts++;
    *port = u->ssh_port;
    return 0;
}

static int fake_stop(void *self, const char *login)
{
    ((fake_engine *)self)->stops++;
    return 0;
}

static int fake_set_keys(void *self, const char *login, const char *keys)
{
    fake_engine *e = self;
    e->set_keys++;
    snprintf(e->keys, sizeof(e->keys), "%s", keys);
    return 0;
}

static void use_fake(semail_provision *p, fake_engine *e)
{
    semail__prov_containers ops = {.create = fake_create,
                                   .remove = fake_remove,
                                   .forget = fake_forget,
                                   .start = fake_start,
                                   .stop = fake_stop,
                                   .set_keys = fake_set_keys,
                                   .self = e};
    memset(e, 0, sizeof(*e));
    e->port = 22042;
    semail__provision_set_containers(p, &ops);
}

/* ---- a platform per test ----------------------------------------------------------- */

enum { DNS_OFF, DNS_ON, DNS_DEAD };

typedef struct fx {
    char root[64], state[96], mail[96], images[96], pwfile[96];
    semail_config *cfg;
    semail_provision *p;
    fake_engine engine;
} fx;

static fx *F;

static void open_prov(fx *f, const char *backend, int dns, int ldap)
{
    char text[4096];
    int n;

    semail_provision_free(f->p);
    semail_config_free(f->cfg);
    f->p = NULL;
    n = snprintf(text, sizeof(text),
                 "[global]\nhostname = mx.semail.test\ndomain = semail.test\nstate_dir = %s\n"
                 "mail_root = %s\nuser =\nuid_range = 30000-30009\n"
                 "[outbound]\nresolver = 127.0.0.1:%u\n"
                 "[storage]\nbackend = %s\nimage_dir = %s\ndefault_size = 16m\n"
                 "[containers]\nenabled = no\n"
                 "[dns]\nenabled = %s\nserver = 127.0.0.1:%u\ntsig_key = %s/tsig.key\n"
                 "mx_host = mx.semail.test\n",
                 f->state, f->mail, S.dns_port, backend, f->images, dns == DNS_OFF ? "no" : "yes",
                 dns == DNS_DEAD ? S.dead_port : S.dns_port, S.dir);
    if (ldap)
        snprintf(text + n, sizeof(text) - (size_t)n,
                 "[ldap]\nuri = ldap://127.0.0.1:%u\nbase = ou=people,dc=semail,dc=test\n"
                 "filter = (uid=%%u)\nsearch_dn = cn=admin,dc=semail,dc=test\n"
                 "search_password_file = %s\ntimeout = 2s\n",
                 S.ldap_port, f->pwfile);
    assert_ok(semail_config_parse(&f->cfg, text, strlen(text), "test.conf"));
    assert_ok(semail_provision_new(&f->p, f->cfg));
}

static int setup(void **state)
{
    static fx f;
    memset(&f, 0, sizeof(f));
    snprintf(f.root, sizeof(f.root), "/tmp/semail-prov-XXXXXX");
    assert_non_null(mkdtemp(f.root));
    snprintf(f.state, sizeof(f.state), "%s/state", f.root);
    snprintf(f.mail, sizeof(f.mail), "%s/mail", f.root);
    snprintf(f.images, sizeof(f.images), "%s/images", f.root);
    snprintf(f.pwfile, sizeof(f.pwfile), "%s/ldap.pw", f.root);
    assert_ok(mkdir(f.mail, 0755));
    assert_ok(mkdir(f.images, 0700));
    tu_write_file(f.pwfile, "adminpw\n");
    F = &f;
    *state = &f;
    return 0;
}

/* Unmount what is mounted below the root and detach the loop devices of its images. */
static void force_cleanup(const char *dir)
{
    size_t n = strlen(dir);
    int round;
    for (round = 0; round < 8; round++) {
        FILE *fp = fopen("/proc/self/mountinfo", "re");
        char line[8192], last[4096] = "";
        while (fp && fgets(line, sizeof(line), fp)) {
            semail__mount m;
            if (semail__mountinfo_parse(line, &m) == 0 && strncmp(m.point, dir, n) == 0)
                snprintf(last, sizeof(last), "%s", m.point);
        }
        if (fp)
            fclose(fp);
        if (last[0] == '\0')
            break;
        umount2(last, MNT_DETACH);
    }
}

static int teardown(void **state)
{
    fx *f = *state;
    semail_provision_free(f->p);
    semail_config_free(f->cfg);
    force_cleanup(f->root);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    F = NULL;
    return 0;
}

static int loop_devices_usable(void)
{
    static int usable = -1;
    int fd;
    if (usable >= 0)
        return usable;
    usable = 0;
    if (getuid() != 0)
        fprintf(stderr, "[  SKIP    ] image backend: needs root\n");
    else if ((fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC)) < 0)
        fprintf(stderr, "[  SKIP    ] image backend: /dev/loop-control: %s\n", strerror(errno));
    else {
        close(fd);
        usable = access("/usr/sbin/mkfs.ext4", X_OK) == 0 || access("/sbin/mkfs.ext4", X_OK) == 0;
    }
    return usable;
}

static semail_provision_request req_sub(const char *login, const char *id, const char *sub)
{
    semail_provision_request r = SEMAIL_PROVISION_REQUEST_INIT;
    r.login = login;
    r.id = id;
    r.subdomain = sub;
    return r;
}

/* The record of LOGIN in a fresh snapshot (state), or 0 when there is none. */
static int state_of(const fx *f, const char *login)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    int st = 0;
    assert_ok(semail_registry_load(&reg, f->state));
    if (semail_registry_find_login(&u, reg, login) == 0)
        st = (int)u->state;
    semail_registry_free(reg);
    return st;
}

static size_t record_count(const fx *f)
{
    semail_registry *reg = NULL;
    size_t n;
    assert_ok(semail_registry_load(&reg, f->state));
    n = semail_registry_count(reg);
    semail_registry_free(reg);
    return n;
}

static semail_storage_state storage_of(fx *f, const char *login)
{
    semail_storage_state st;
    assert_ok(semail_storage_status(&st, semail__provision_storage(f->p), login));
    return st;
}

static int image_exists(const fx *f, const char *login)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s.img", f->images, login);
    return lstat(path, &st) == 0;
}

/* Nothing of LOGIN anywhere: no record, no storage, no image, no mount, no DNS records. */
static void assert_nothing_left(fx *f, const char *login, const char *name)
{
    char out[256];
    assert_int_equal(state_of(f, login), 0);
    assert_int_equal(storage_of(f, login), SEMAIL_STORAGE_ABSENT);
    assert_false(image_exists(f, login));
    if (name && S.dns_ok) {
        dig(out, sizeof(out), "MX", name);
        assert_string_equal(out, "");
    }
}

/* ---- create and delete ------------------------------------------------------------------ */

static void test_provision__directory_box_is_created_and_deleted(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "Alice");
    semail_provision_result res;
    struct stat st;
    char path[256];

    open_prov(f, "directory", DNS_OFF, 0);
    r.ssh_keys = KEY_ED;
    assert_ok(semail_provision_create(&res, f->p, &r));
    assert_string_equal(res.address, "alice@alice.semail.test");
    assert_int_equal(res.uid, 30000);
    assert_int_equal(res.ssh_port, 0);
    assert_int_equal(res.resumed, 0);
    assert_int_equal(state_of(f, "alice"), SEMAIL_USER_ACTIVE);
    snprintf(path, sizeof(path), "%s/alice", f->mail);
    assert_ok(stat(path, &st));
    assert_int_equal(st.st_uid, 30000);

    /* a second create of the same login is refused and changes nothing */
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "already has a box"));

    assert_ok(semail_provision_delete(f->p, "alice", NULL));
    assert_nothing_left(f, "alice", NULL);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(semail_provision_delete(f->p, "alice", NULL), SEMAIL_ENOTFOUND);
}

static void expect_refused(fx *f, const char *login, const char *id, const char *sub,
                           const char *domain, const char *what)
{
    semail_provision_request r = req_sub(login, id, sub);
    r.domain = domain;
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), what));
}

static void test_provision__bad_input_is_refused_with_a_clear_message(void **state)
{
    fx *f = *state;
    char sub64[65];

    open_prov(f, "directory", DNS_OFF, 0);
    memset(sub64, 's', 64);
    sub64[64] = '\0';
    expect_refused(f, "x", "x", "a.b", NULL, "subdomain 'a.b'");
    expect_refused(f, "x", "x", sub64, NULL, "subdomain 'ssss");
    expect_refused(f, "x", "x", "../b", NULL, "subdomain '../b'");
    expect_refused(f, "x", "../x", "x", NULL, "id '../x'");
    expect_refused(f, "*)(uid=*", "x", "x", NULL, "login '*)(uid=*'");
    expect_refused(f, "x", "x", NULL, "semail.test", "belongs to the platform");
    expect_refused(f, "x", "x", NULL, "a.semail.test", "belongs to the platform");
    expect_refused(f, "x", "x", NULL, "evil..test", "domain 'evil..test'");
    expect_refused(f, "x", "x", "x", "x.test", "exactly one");
    {
        semail_provision_request r = req_sub("x", "x", "x");
        r.ssh_keys = "ssh-ed25519 AAAA ok\nrm -rf /";
        assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EINVAL);
        assert_non_null(strstr(semail_error_last(), "line 2"));
    }
    assert_int_equal(record_count(f), 0);
}

static void test_provision__taken_names_are_refused_and_leave_nothing(void **state)
{
    fx *f = *state;
    semail_provision_request a = req_sub("alice", "alice", "alice");
    semail_provision_request own = req_sub("carol", "c", NULL);

    open_prov(f, "directory", DNS_OFF, 0);
    own.domain = "Carol.Example";
    assert_ok(semail_provision_create(NULL, f->p, &a));
    assert_ok(semail_provision_create(NULL, f->p, &own));
    {
        semail_provision_request r = req_sub("bob", "other", "alice"); /* subdomain taken */
        assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
        assert_non_null(strstr(semail_error_last(), "alice.semail.test"));
        assert_nothing_left(f, "bob", NULL);
    }
    {
        semail_provision_request r = req_sub("bob", "x", NULL); /* own domain taken */
        r.domain = "carol.example";
        assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
        assert_non_null(strstr(semail_error_last(), "carol.example"));
        assert_nothing_left(f, "bob", NULL);
    }
    {
        semail_provision_request r = req_sub("alice", "bob", "bob"); /* login taken */
        assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
        assert_non_null(strstr(semail_error_last(), "login 'alice'"));
    }
    {
        /* a box on disk without a record is never adopted */
        char path[256];
        semail_provision_request r = req_sub("dave", "dave", "dave");
        snprintf(path, sizeof(path), "%s/dave", f->mail);
        assert_ok(mkdir(path, 0700));
        assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
        assert_non_null(strstr(semail_error_last(), "not in the registry"));
        assert_int_equal(state_of(f, "dave"), 0);
        assert_ok(rmdir(path));
    }
    assert_int_equal(record_count(f), 2);
}

/* ---- DNS ---------------------------------------------------------------------------------- */

static void test_provision__subdomain_gets_mx_and_spf_and_delete_removes_them(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "alice");
    semail_dns_mx_check chk;
    char out[256];

    if (!S.dns_ok)
        skip();
    open_prov(f, "directory", DNS_ON, 0);
    assert_ok(semail_provision_create(NULL, f->p, &r));
    dig(out, sizeof(out), "MX", "alice.semail.test");
    assert_string_equal(out, "10 mx.semail.test.\n");
    dig(out, sizeof(out), "TXT", "alice.semail.test");
    assert_string_equal(out, "\"v=spf1 mx -all\"\n");
    assert_ok(semail_provision_dns_check(&chk, f->p, "alice.semail.test"));
    assert_int_equal(chk.verdict, SEMAIL_DNS_MX_HERE);

    assert_ok(semail_provision_delete(f->p, "alice", NULL));
    assert_nothing_left(f, "alice", "alice.semail.test");
    dig(out, sizeof(out), "TXT", "alice.semail.test");
    assert_string_equal(out, "");
}

static void test_provision__name_taken_in_the_dns_is_refused_and_left_alone(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("tom", "tom", "taken");
    char out[256];

    if (!S.dns_ok)
        skip();
    open_prov(f, "directory", DNS_ON, 0);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "taken.semail.test already has records"));
    assert_nothing_left(f, "tom", "taken.semail.test");
    dig(out, sizeof(out), "A", "taken.semail.test");
    assert_string_equal(out, "192.0.2.7\n"); /* someone else's record stays */
}

static void test_provision__own_domain_is_recorded_and_its_mx_checked(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("carol", "carol", NULL);
    semail_provision_result res;

    if (!S.dns_ok)
        skip();
    open_prov(f, "directory", DNS_ON, 0);
    r.domain = "carol.example";
    assert_ok(semail_provision_create(&res, f->p, &r));
    assert_string_equal(res.address, "carol@carol.example");
    assert_int_equal(res.dns_checked, 1);
    assert_int_not_equal(res.dns.verdict, SEMAIL_DNS_MX_HERE);
    assert_non_null(strstr(res.dns.text, "carol.example"));
    assert_int_equal(state_of(f, "carol"), SEMAIL_USER_ACTIVE);
}

static void test_provision__dns_server_down_leaves_nothing(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("erin", "erin", "erin");

    if (!S.dns_ok || !loop_devices_usable())
        skip();
    open_prov(f, "image", DNS_DEAD, 0);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "dns"));
    assert_nothing_left(f, "erin", "erin.semail.test");
}

/*
 * The filesystem was made (by a create that crashed after the storage
 * step), then the DNS fails on the re-run: the image and the mount are
 * undone; the record stays (creating), as the only memory of the DNS
 * records that could not be removed; a delete with the server back
 * removes everything.
 */
static void test_provision__dns_failure_after_the_filesystem_undoes_it(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("erin", "erin", "erin");
    char out[256];

    if (!S.dns_ok || !loop_devices_usable())
        skip();
    open_prov(f, "image", DNS_ON, 0);
    semail__provision_set_crash_after(f->p, SEMAIL__PROV_STEP_STORAGE);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ERROR);
    assert_int_equal(storage_of(f, "erin"), SEMAIL_STORAGE_MOUNTED);
    assert_true(image_exists(f, "erin"));

    open_prov(f, "image", DNS_DEAD, 0);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "stays in state creating"));
    assert_int_equal(storage_of(f, "erin"), SEMAIL_STORAGE_ABSENT);
    assert_false(image_exists(f, "erin"));
    assert_int_equal(state_of(f, "erin"), SEMAIL_USER_CREATING);
    dig(out, sizeof(out), "MX", "erin.semail.test");
    assert_string_equal(out, "10 mx.semail.test.\n");

    open_prov(f, "image", DNS_ON, 0);
    assert_ok(semail_provision_delete(f->p, "erin", NULL));
    assert_nothing_left(f, "erin", "erin.semail.test");
}

/* ---- storage ------------------------------------------------------------------------------ */

static int no_free_loop(int control_fd)
{
    return -EBUSY;
}

static void test_provision__no_free_loop_device_leaves_nothing(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("ida", "ida", "ida");

    if (!loop_devices_usable())
        skip();
    open_prov(f, "image", S.dns_ok ? DNS_ON : DNS_OFF, 0);
    semail__storage_image_set_get_free(semail__storage_state(semail__provision_storage(f->p)),
                                       no_free_loop);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "no free loop device"));
    assert_nothing_left(f, "ida", "ida.semail.test");

    semail__storage_image_set_get_free(semail__storage_state(semail__provision_storage(f->p)),
                                       NULL);
    assert_ok(semail_provision_create(NULL, f->p, &r));
    assert_int_equal(storage_of(f, "ida"), SEMAIL_STORAGE_MOUNTED);
    assert_ok(semail_provision_delete(f->p, "ida", NULL));
    assert_nothing_left(f, "ida", "ida.semail.test");
}

/* ---- containers (fake engine) ---------------------------------------------------------------- */

static void test_provision__container_is_made_after_the_filesystem_and_recorded(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "alice");
    semail_provision_result res;
    semail_registry *reg = NULL;
    const semail_user *u;

    open_prov(f, "directory", DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    assert_ok(semail_provision_create(&res, f->p, &r));
    assert_int_equal(res.ssh_port, 22042);
    assert_int_equal(f->engine.port, 22043);
    assert_int_equal(f->engine.creates, 1);
    assert_ok(semail_registry_load(&reg, f->state));
    assert_ok(semail_registry_find_login(&u, reg, "alice"));
    assert_string_equal(u->container, "semail-alice");
    assert_int_equal(u->ssh_port, 22042);
    semail_registry_free(reg);

    assert_ok(semail_provision_delete(f->p, "alice", NULL));
    assert_int_equal(f->engine.removes, 1);
    assert_nothing_left(f, "alice", NULL);
}

static void test_provision__container_failure_undoes_every_step(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("gus", "gus", "gus");
    int image = loop_devices_usable();

    open_prov(f, image ? "image" : "directory", S.dns_ok ? DNS_ON : DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    f->engine.fail_create = SEMAIL_ETEMP; /* the engine is stopped */
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "fake engine"));
    /* the engine may be down: nothing made is not removed through it, only the key files */
    assert_int_equal(f->engine.removes, 0);
    assert_int_equal(f->engine.forgets, 1);
    assert_nothing_left(f, "gus", "gus.semail.test");
}

/* The container was made, then the record refused its port: the container goes too. */
static void test_provision__container_made_then_refused_is_removed(void **state)
{
    fx *f = *state;
    semail_provision_request a = req_sub("alice", "alice", "alice");
    semail_provision_request b = req_sub("bob", "bob", "bob");

    open_prov(f, "directory", DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    assert_ok(semail_provision_create(NULL, f->p, &a));
    f->engine.port = 22042; /* the engine hands out alice's port again */
    assert_int_equal(semail_provision_create(NULL, f->p, &b), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "ssh_port 22042"));
    assert_int_equal(f->engine.removes, 1);
    assert_nothing_left(f, "bob", NULL);
    assert_int_equal(state_of(f, "alice"), SEMAIL_USER_ACTIVE);
}

/* ---- crash and resume ---------------------------------------------------------------------- */

/* Whether semail-inbound would accept mail for LOGIN@NAME now. */
static int receives(const fx *f, const char *login, const char *name)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    int yes;
    assert_ok(semail_registry_load(&reg, f->state));
    yes = semail_registry_find_address(&u, reg, login, name) == 0;
    semail_registry_free(reg);
    return yes;
}

static void crash_then_finish(fx *f, semail__prov_step step, const char *login)
{
    semail_provision_request r = req_sub(login, login, login);
    semail_provision_result res;
    char name[64];

    snprintf(name, sizeof(name), "%s.semail.test", login);
    semail__provision_set_crash_after(f->p, step);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ERROR);
    assert_int_equal(state_of(f, login), SEMAIL_USER_CREATING);
    assert_false(receives(f, login, name)); /* no mail for a box in creation */
    semail__provision_set_crash_after(f->p, SEMAIL__PROV_STEP_NONE);
    assert_ok(semail_provision_create(&res, f->p, &r));
    assert_int_equal(res.resumed, 1);
    assert_int_equal(state_of(f, login), SEMAIL_USER_ACTIVE);
    assert_int_equal(storage_of(f, login), SEMAIL_STORAGE_MOUNTED);
    if (S.dns_ok) {
        char out[256];
        dig(out, sizeof(out), "MX", name);
        assert_string_equal(out, "10 mx.semail.test.\n");
    }
    assert_true(receives(f, login, name));
    assert_ok(semail_provision_delete(f->p, login, NULL));
    assert_nothing_left(f, login, name);
}

static void test_provision__rerun_after_a_crash_at_each_step_finishes(void **state)
{
    fx *f = *state;
    int image = loop_devices_usable();

    open_prov(f, image ? "image" : "directory", S.dns_ok ? DNS_ON : DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    crash_then_finish(f, SEMAIL__PROV_STEP_RECORD, "c1");
    crash_then_finish(f, SEMAIL__PROV_STEP_DNS, "c2");
    crash_then_finish(f, SEMAIL__PROV_STEP_STORAGE, "c3");
    crash_then_finish(f, SEMAIL__PROV_STEP_CONTAINER, "c4");
    assert_int_equal(f->engine.creates, 5); /* c4 twice: the rerun finds it and goes on */
}

static void test_provision__interrupted_create_with_other_arguments_is_refused(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("hal", "hal", "hal");

    open_prov(f, "directory", DNS_OFF, 0);
    semail__provision_set_crash_after(f->p, SEMAIL__PROV_STEP_RECORD);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ERROR);
    semail__provision_set_crash_after(f->p, SEMAIL__PROV_STEP_NONE);
    r.subdomain = "other";
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "unfinished creation"));
    assert_ok(semail_provision_delete(f->p, "hal", NULL));
    assert_nothing_left(f, "hal", NULL);
}

/* ---- LDAP -------------------------------------------------------------------------------------
 */

static void test_provision__login_must_exist_in_the_directory(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("zoe", "zoe", "zoe");

    if (!S.ldap_ok)
        skip();
    open_prov(f, "directory", DNS_OFF, 1);
    assert_int_equal(semail_provision_create(NULL, f->p, &r), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(semail_error_last(), "not in the directory"));
    assert_nothing_left(f, "zoe", NULL);

    r = req_sub("alice", "alice", "alice");
    assert_ok(semail_provision_create(NULL, f->p, &r));
}

static void test_provision__ldap_add_person_makes_a_login_that_create_accepts(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("dave", "dave", "dave");

    if (!S.ldap_ok)
        skip();
    open_prov(f, "directory", DNS_OFF, 1);
    assert_int_equal(semail_provision_ldap_add_person(f->p, "*)(uid=*", "pw", NULL), SEMAIL_EINVAL);
    assert_int_equal(semail_provision_ldap_add_person(f->p, "dave", "", NULL), SEMAIL_EINVAL);
    assert_ok(semail_provision_ldap_add_person(f->p, "dave", "davepw", "Dave D"));
    assert_int_equal(semail_provision_ldap_add_person(f->p, "dave", "davepw", NULL),
                     SEMAIL_EEXISTS);
    assert_ok(semail_ldap_authenticate(&F->p->ldap, "dave", "davepw", NULL, 0));
    assert_ok(semail_provision_create(NULL, f->p, &r));
}

/* ---- export, keys, resize, mount-all ------------------------------------------------------- */

static void put(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    tu_write_file(path, text);
}

/* Read ARCHIVE back: the text of NAME (or "<link>TARGET"), "" when absent. */
static void archived(const char *archive, const char *name, char *out, size_t size)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    out[0] = '\0';
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    assert_int_equal(archive_read_open_filename(a, archive, 4096), ARCHIVE_OK);
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        if (strcmp(archive_entry_pathname(e), name) != 0)
            continue;
        if (archive_entry_symlink(e))
            snprintf(out, size, "<link>%s", archive_entry_symlink(e));
        else
            out[archive_read_data(a, out, size - 1)] = '\0';
        break;
    }
    archive_read_free(a);
}

static void test_provision__export_writes_the_mail_and_never_follows_links(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "alice");
    char dir[256], file[512], sub[300], out[4096];
    struct stat st;

    open_prov(f, "directory", DNS_OFF, 0);
    assert_ok(semail_provision_create(NULL, f->p, &r));
    snprintf(dir, sizeof(dir), "%s/alice", f->mail);
    put(dir, "INBOX", "From a@b Thu Jan  1 00:00:00 2026\nSubject: hi\n\nhello\n\n");
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    assert_ok(mkdir(sub, 0700));
    put(sub, "folder", "deep\n");
    snprintf(file, sizeof(file), "%s/passwd", dir);
    assert_ok(symlink("/etc/passwd", file));
    snprintf(file, sizeof(file), "%s/fifo", dir);
    assert_ok(mkfifo(file, 0600));

    snprintf(file, sizeof(file), "%s/alice.tar.gz", f->root);
    assert_ok(semail_provision_export(f->p, "alice", file));
    archived(file, "alice/INBOX", out, sizeof(out));
    assert_non_null(strstr(out, "hello"));
    archived(file, "alice/sub/folder", out, sizeof(out));
    assert_string_equal(out, "deep\n");
    archived(file, "alice/passwd", out, sizeof(out));
    assert_string_equal(out, "<link>/etc/passwd");
    archived(file, "alice/fifo", out, sizeof(out));
    assert_string_equal(out, "");

    snprintf(file, sizeof(file), "%s/alice.zip", f->root);
    assert_int_equal(semail_provision_export(f->p, "alice", file), SEMAIL_EINVAL);
    assert_int_not_equal(stat(file, &st), 0);
    assert_int_equal(semail_provision_export(f->p, "nobody", file), SEMAIL_ENOTFOUND);

    /* delete --archive: the archive first, then everything goes */
    snprintf(file, sizeof(file), "%s/final.tar", f->root);
    assert_ok(semail_provision_delete(f->p, "alice", file));
    archived(file, "alice/INBOX", out, sizeof(out));
    assert_non_null(strstr(out, "hello"));
    assert_nothing_left(f, "alice", NULL);
}

static void test_provision__keys_reach_the_record_and_the_container(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "alice");
    semail_registry *reg = NULL;
    const semail_user *u;

    open_prov(f, "directory", DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    assert_ok(semail_provision_create(NULL, f->p, &r));
    assert_int_equal(semail_provision_set_keys(f->p, "alice", "not a key"), SEMAIL_EINVAL);
    assert_int_equal(f->engine.set_keys, 0);
    assert_ok(semail_provision_set_keys(f->p, "alice", KEY_ED));
    assert_int_equal(f->engine.set_keys, 1);
    assert_string_equal(f->engine.keys, KEY_ED);
    assert_ok(semail_registry_load(&reg, f->state));
    assert_ok(semail_registry_find_login(&u, reg, "alice"));
    assert_string_equal(u->ssh_keys, KEY_ED);
    semail_registry_free(reg);
    assert_int_equal(semail_provision_set_keys(f->p, "bob", KEY_ED), SEMAIL_ENOTFOUND);
}

static void test_provision__resize_grows_the_filesystem_and_the_record(void **state)
{
    fx *f = *state;
    semail_provision_request r = req_sub("alice", "alice", "alice");
    semail_storage_usage before, after;

    if (!loop_devices_usable())
        skip();
    open_prov(f, "image", DNS_OFF, 0);
    assert_ok(semail_provision_create(NULL, f->p, &r));
    assert_ok(semail_storage_usage_get(&before, semail__provision_storage(f->p), "alice"));
    assert_ok(semail_provision_resize(f->p, "alice", 32 * MiB));
    assert_ok(semail_storage_usage_get(&after, semail__provision_storage(f->p), "alice"));
    assert_true(after.total > before.total + 8 * MiB);
    assert_int_equal(semail_provision_resize(f->p, "alice", 16 * MiB), SEMAIL_EINVAL);
    assert_ok(semail_provision_delete(f->p, "alice", NULL));
}

static void test_provision__mount_all_brings_boxes_back_after_a_reboot(void **state)
{
    fx *f = *state;
    semail_provision_request a = req_sub("alice", "alice", "alice");
    semail_provision_request b = req_sub("bob", "bob", "bob");
    size_t failed = 99;

    if (!loop_devices_usable())
        skip();
    open_prov(f, "image", DNS_OFF, 0);
    use_fake(f->p, &f->engine);
    assert_ok(semail_provision_create(NULL, f->p, &a));
    assert_ok(semail_provision_create(NULL, f->p, &b));
    /* the reboot: every filesystem unmounted */
    assert_ok(semail_storage_unmount(semail__provision_storage(f->p), "alice"));
    assert_ok(semail_storage_unmount(semail__provision_storage(f->p), "bob"));
    assert_int_equal(storage_of(f, "alice"), SEMAIL_STORAGE_UNMOUNTED);
    assert_ok(semail_provision_mount_all(f->p, &failed));
    assert_int_equal(failed, 0);
    assert_int_equal(f->engine.starts, 2);
    /* the engine may have started them on the empty mount points: restarted */
    assert_int_equal(f->engine.stops, 2);
    assert_int_equal(storage_of(f, "alice"), SEMAIL_STORAGE_MOUNTED);
    assert_int_equal(storage_of(f, "bob"), SEMAIL_STORAGE_MOUNTED);
    /* mounted already: started if need be, never restarted */
    assert_ok(semail_provision_mount_all(f->p, &failed));
    assert_int_equal(f->engine.starts, 4);
    assert_int_equal(f->engine.stops, 2);
    assert_ok(semail_provision_delete(f->p, "alice", NULL));
    assert_ok(semail_provision_delete(f->p, "bob", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_provision__directory_box_is_created_and_deleted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_provision__bad_input_is_refused_with_a_clear_message,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__taken_names_are_refused_and_leave_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__subdomain_gets_mx_and_spf_and_delete_removes_them, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__name_taken_in_the_dns_is_refused_and_left_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__own_domain_is_recorded_and_its_mx_checked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__dns_server_down_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_provision__dns_failure_after_the_filesystem_undoes_it,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__no_free_loop_device_leaves_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__container_is_made_after_the_filesystem_and_recorded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__container_failure_undoes_every_step, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_provision__container_made_then_refused_is_removed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__rerun_after_a_crash_at_each_step_finishes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__interrupted_create_with_other_arguments_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__login_must_exist_in_the_directory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__ldap_add_person_makes_a_login_that_create_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_provision__export_writes_the_mail_and_never_follows_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__keys_reach_the_record_and_the_container,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__resize_grows_the_filesystem_and_the_record,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_provision__mount_all_brings_boxes_back_after_a_reboot,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
