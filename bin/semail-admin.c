/*
 * semail-admin.c - the administrator's tool: user create/delete/list/show
 * and config check, for the `directory` storage backend.
 *
 * Contract: every input is checked before anything is changed; a failure
 * half-way is undone in reverse order; running the same command again after
 * a crash finishes the job (a record in state creating or deleting is
 * resumed). Exit 0: done; 1: failed (message on stderr); 2: usage error.
 * Backends and services not implemented yet (image, lvm, containers, DNS,
 * LDAP) are refused, never pretended. Order of `user delete`: mark the
 * record deleting (mail stops: only active boxes receive), remove the
 * files, then remove the record — so a crash leaves a record that a second
 * `user delete` finishes.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "prog.h"

#define NAME           "semail-admin"
#define SSH_KEYS_MAX   (16 * 1024)
#define RM_DEPTH_MAX   256
#define OP_LOCK_WAIT_S 10

static const char usage[] =
    "usage: semail-admin [-c FILE] user create LOGIN --id ID (--subdomain SUB | --domain DOMAIN)\n"
    "                      [--ssh-key FILE] [--size SIZE]\n"
    "       semail-admin [-c FILE] user delete LOGIN [--archive FILE]\n"
    "       semail-admin [-c FILE] user list [--json]\n"
    "       semail-admin [-c FILE] user show LOGIN [--json]\n"
    "       semail-admin [-c FILE] config check\n"
    "       semail-admin -t | --version | --help\n";

/* What a command works with, from the configuration. */
struct ctx {
    semail_config *cfg;
    const char *state_dir;
    const char *mail_root;
    const char *domain; /* the platform's domain */
};

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    fputs(NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(NAME ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

/* ---- checks of the command line --------------------------------------- */

static int check_name(const char *what, const char *v)
{
    if (semail_validate_name(v) < 0)
        return fail("%s %s", what, semail_error_last());
    return 0;
}

/* A size such as 1073741824, 512m, 1G (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    size_t n = strlen(s), i;
    unsigned shift = 0;
    uint64_t v = 0;

    if (n > 0 && strchr("kKmMgGtT", s[n - 1]) && s[n - 1]) {
        const char *u = "kmgt";
        shift = 10 * (unsigned)(strchr(u, tolower((unsigned char)s[n - 1])) - u + 1);
        n--;
    }
    if (n == 0 || n > 20)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

static int key_type_ok(const char *t, size_t n)
{
    return (n == 11 && strncmp(t, "ssh-ed25519", n) == 0) ||
           (n == 7 && strncmp(t, "ssh-rsa", n) == 0) ||
           (n > 11 && strncmp(t, "ecdsa-sha2-", 11) == 0) || (n > 3 && strncmp(t, "sk-", 3) == 0);
}

/* Check one line of an authorized_keys file: TYPE BASE64 [COMMENT]. */
static int check_key_line(const char *l, size_t n)
{
    size_t t = 0, b;
    for (b = 0; b < n; b++)
        if ((unsigned char)l[b] < 0x20 || (unsigned char)l[b] > 0x7e)
            return -1;
    while (t < n && l[t] != ' ')
        t++;
    if (!key_type_ok(l, t))
        return -1;
    for (b = t + 1; b < n && l[b] != ' '; b++)
        if (!isalnum((unsigned char)l[b]) && l[b] != '+' && l[b] != '/' && l[b] != '=')
            return -1;
    return b > t + 1 ? 0 : -1;
}

/* Read FILE of SSH public keys into *OUT (lines joined by LF). */
static int read_ssh_keys(const char *file, char **out)
{
    char buf[SSH_KEYS_MAX + 1], *keys;
    size_t len = 0, o = 0, pos, line = 0;
    struct stat st;
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return fail("--ssh-key %s: %s", file, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SSH_KEYS_MAX) {
        close(fd);
        return fail("--ssh-key %s: not a regular file of at most %d bytes", file, SSH_KEYS_MAX);
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if ((keys = malloc(len + 1)) == NULL)
        return fail("out of memory");
    for (pos = 0; pos < len;) {
        const char *l = buf + pos, *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n > 0 && l[n - 1] == '\r')
            n--;
        if (n == 0 || l[0] == '#')
            continue;
        if (check_key_line(l, n) < 0) {
            free(keys);
            /* The content is not echoed: the file may be anything the caller points at. */
            return fail("--ssh-key %s: line %zu is not an SSH public key (expected "
                        "ssh-ed25519, ssh-rsa, ecdsa-sha2-* or sk-* followed by the key)",
                        file, line);
        }
        if (o)
            keys[o++] = '\n';
        memcpy(keys + o, l, n);
        o += n;
    }
    keys[o] = '\0';
    if (o == 0) {
        free(keys);
        return fail("--ssh-key %s: no key in the file", file);
    }
    *out = keys;
    return 0;
}

/* ---- configuration ------------------------------------------------------ */

static int load_ctx(struct ctx *c, const prog_common *pc)
{
    memset(c, 0, sizeof(*c));
    if ((c->cfg = prog_load_config(pc)) == NULL)
        return 1;
    c->state_dir = semail_config_get(c->cfg, "global", "state_dir");
    c->mail_root = semail_config_get(c->cfg, "global", "mail_root");
    c->domain = semail_config_get(c->cfg, "global", "domain");
    return 0;
}

/* Refuse what this version cannot do rather than pretend to do it. */
static int check_supported(const struct ctx *c)
{
    const char *backend = semail_config_get(c->cfg, "storage", "backend");
    int on = 0;

    if (strcmp(backend, "directory") != 0)
        return fail("storage backend '%s' is not implemented yet; use backend = directory "
                    "in [storage]",
                    backend);
    if (semail_config_get_bool(c->cfg, "containers", "enabled", &on) == 0 && on)
        return fail("containers are not implemented yet; set enabled = no in [containers]");
    if (semail_config_get_bool(c->cfg, "dns", "enabled", &on) == 0 && on)
        return fail("DNS updates are not implemented yet; set enabled = no in [dns]");
    if (semail_config_has_section(c->cfg, "ldap"))
        return fail("LDAP accounts are not implemented yet; remove the [ldap] section");
    return 0;
}

/* mkdir -p PATH with MODE for the directories it makes. */
static int make_dirs(const char *path, mode_t mode)
{
    char buf[4096];
    size_t i;
    if (strlen(path) >= sizeof(buf))
        return fail("%s: path too long", path);
    memcpy(buf, path, strlen(path) + 1);
    for (i = 1; buf[i - 1]; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return fail("mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return 0;
}

/* One semail-admin at a time per login: STATE_DIR/locks/LOGIN.lock. */
static int op_lock(const struct ctx *c, const char *login, int *fd)
{
    char path[4096];
    int waited;

    snprintf(path, sizeof(path), "%s/locks", c->state_dir);
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return fail("mkdir %s: %s", path, strerror(errno));
    if (snprintf(path, sizeof(path), "%s/locks/%s.lock", c->state_dir, login) >= (int)sizeof(path))
        return fail("state_dir too long");
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0)
        return fail("open %s: %s", path, strerror(errno));
    for (waited = 0; flock(*fd, LOCK_EX | LOCK_NB) < 0; waited++) {
        if (waited >= OP_LOCK_WAIT_S * 10) {
            close(*fd);
            return fail("another semail-admin is working on '%s'; try again later", login);
        }
        usleep(100 * 1000);
    }
    return 0;
}

/* ---- the mail directory ------------------------------------------------- */

static int open_root(const struct ctx *c)
{
    int fd = open(c->mail_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fail("open %s: %s", c->mail_root, strerror(errno));
    return fd;
}

/* fsync a directory; EINVAL means the filesystem has nothing to flush. */
static int fsync_dir(int fd)
{
    return fsync(fd) < 0 && errno != EINVAL ? -1 : 0;
}

/*
 * The group of the daemons' [global] user: the mail directory belongs to the
 * box's uid and to this group, so that semail-inbound, once it has dropped
 * to that user, can still take dot-locks and append. (gid_t)-1 when the
 * daemons stay root (user empty) or the user does not exist here yet.
 */
static gid_t daemon_gid(const struct ctx *c)
{
    const char *name = semail_config_get(c->cfg, "global", "user");
    struct passwd pw, *res = NULL;
    char buf[4096];

    if (name == NULL || *name == '\0' || getpwnam_r(name, &pw, buf, sizeof(buf), &res) != 0 ||
        res == NULL)
        return (gid_t)-1;
    return pw.pw_gid;
}

/* One entry of the Linux POSIX ACL xattr (little-endian, as the kernel wants). */
static void acl_entry(unsigned char *p, unsigned tag, unsigned perm, uint32_t id)
{
    p[0] = (unsigned char)tag;
    p[1] = (unsigned char)(tag >> 8);
    p[2] = (unsigned char)perm;
    p[3] = (unsigned char)(perm >> 8);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (unsigned char)(id >> (8 * i));
}

/*
 * A default ACL that gives the box's uid read and write on every file the
 * daemon creates in its directory: mbox files made by the `semail` user then
 * stay readable by the person (mutt, Dovecot in their container).
 */
static int set_default_acl(int fd, uid_t uid)
{
    enum { USER_OBJ = 0x01, USER = 0x02, GROUP_OBJ = 0x04, MASK = 0x10, OTHER = 0x20 };
    const uint32_t undef = 0xffffffffu;
    unsigned char acl[4 + 5 * 8] = {2, 0, 0, 0}; /* POSIX_ACL_XATTR_VERSION */

    acl_entry(acl + 4, USER_OBJ, 7, undef);
    acl_entry(acl + 12, USER, 7, (uint32_t)uid);
    acl_entry(acl + 20, GROUP_OBJ, 7, undef);
    acl_entry(acl + 28, MASK, 7, undef);
    acl_entry(acl + 36, OTHER, 0, undef);
    return fsetxattr(fd, "system.posix_acl_default", acl, sizeof(acl), 0);
}

/*
 * Make mail_root/LOGIN. Daemons that stay root: 0700, owned by the box's
 * uid. Daemons that drop to [global] user: 2770, owned by the box's uid and
 * the daemon's group (inherited by new files), plus a default ACL for the
 * box's uid. See docs/decisions.md, "Who owns the mail".
 */
static int make_mail_dir(const struct ctx *c, const semail_user *u, int resume)
{
    int root, fd, rc = 0;
    gid_t dgid = daemon_gid(c);
    mode_t mode = dgid == (gid_t)-1 ? 0700 : 02770;

    if ((root = open_root(c)) < 0)
        return 1;
    if (mkdirat(root, u->login, 0700) < 0 && !(errno == EEXIST && resume)) {
        rc = fail("mkdir %s/%s: %s", c->mail_root, u->login, strerror(errno));
        goto done;
    }
    fd = openat(root, u->login, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        rc = fail("open %s/%s: %s", c->mail_root, u->login, strerror(errno));
        goto done;
    }
    if (geteuid() == 0 && fchown(fd, u->uid, dgid == (gid_t)-1 ? u->gid : dgid) < 0)
        rc = fail("chown %s/%s: %s", c->mail_root, u->login, strerror(errno));
    else if (fchmod(fd, mode) < 0)
        rc = fail("chmod %s/%s: %s", c->mail_root, u->login, strerror(errno));
    else if (dgid != (gid_t)-1 && set_default_acl(fd, u->uid) < 0 && errno != ENOTSUP)
        rc = fail("default ACL on %s/%s: %s", c->mail_root, u->login, strerror(errno));
    close(fd);
    if (rc == 0 && fsync_dir(root) < 0)
        rc = fail("fsync %s: %s", c->mail_root, strerror(errno));
done:
    close(root);
    return rc;
}

/* Remove DIRFD/NAME and all below it, never following a symbolic link. */
static int rm_tree(int dirfd, const char *name, int depth)
{
    int fd, err = 0, pass;
    DIR *d;
    struct dirent *e;

    if (depth > RM_DEPTH_MAX) {
        errno = ELOOP;
        return -1;
    }
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ENOTDIR || errno == ELOOP)
            return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
        return -1;
    }
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return -1;
    }
    for (pass = 0; pass < 3 && err == 0; pass++) {
        rewinddir(d);
        while (err == 0 && (e = readdir(d)) != NULL) {
            struct stat st;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                err = errno == ENOENT ? 0 : -1;
            else if (S_ISDIR(st.st_mode))
                err = rm_tree(fd, e->d_name, depth + 1);
            else if (unlinkat(fd, e->d_name, 0) < 0 && errno != ENOENT)
                err = -1;
        }
        if (err == 0 && unlinkat(dirfd, name, AT_REMOVEDIR) == 0)
            break;
        if (err == 0 && errno != ENOTEMPTY)
            err = errno == ENOENT ? 0 : -1;
    }
    closedir(d);
    return err;
}

static int remove_mail_dir(const struct ctx *c, const char *login)
{
    int root = open_root(c), rc = 0;
    if (root < 0)
        return errno == ENOENT ? 0 : 1;
    if (rm_tree(root, login, 0) < 0)
        rc = fail("remove %s/%s: %s", c->mail_root, login, strerror(errno));
    else if (fsync_dir(root) < 0)
        rc = fail("fsync %s: %s", c->mail_root, strerror(errno));
    close(root);
    return rc;
}

/* ---- JSON and text output ----------------------------------------------- */

static void json_str(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static const char *kind_name(semail_domain_kind k)
{
    return k == SEMAIL_DOMAIN_OWN ? "domain" : "subdomain";
}

static const char *state_name(semail_user_state s)
{
    return s == SEMAIL_USER_ACTIVE ? "active" : s == SEMAIL_USER_CREATING ? "creating" : "deleting";
}

static void print_json(const struct ctx *c, const semail_user *u)
{
    char addr[300], dir[4400];
    snprintf(addr, sizeof(addr), "%s@%s", u->id, u->domain);
    snprintf(dir, sizeof(dir), "%s/%s", c->mail_root, u->login);
    fputs("{\"login\":", stdout);
    json_str(u->login);
    fputs(",\"address\":", stdout);
    json_str(addr);
    fputs(",\"id\":", stdout);
    json_str(u->id);
    fputs(",\"domain\":", stdout);
    json_str(u->domain);
    printf(",\"kind\":\"%s\",\"uid\":%lu,\"gid\":%lu,\"storage\":", kind_name(u->kind),
           (unsigned long)u->uid, (unsigned long)u->gid);
    json_str(u->storage);
    printf(",\"size\":%llu,\"container\":", (unsigned long long)u->size);
    json_str(u->container);
    if (u->ssh_port)
        printf(",\"ssh_port\":%d", u->ssh_port);
    else
        fputs(",\"ssh_port\":null", stdout);
    fputs(",\"ssh_keys\":", stdout);
    json_str(u->ssh_keys);
    printf(",\"state\":\"%s\",\"created\":%lld,\"mail_dir\":", state_name(u->state),
           (long long)u->created);
    json_str(dir);
    putchar('}');
}

static void print_text(const struct ctx *c, const semail_user *u)
{
    char when[64] = "?";
    time_t t = (time_t)u->created;
    struct tm tm;
    if (gmtime_r(&t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("login:     %s\naddress:   %s@%s\nkind:      %s\nuid:       %lu\ngid:       %lu\n"
           "storage:   %s\nsize:      %llu\nmail_dir:  %s/%s\n",
           u->login, u->id, u->domain, kind_name(u->kind), (unsigned long)u->uid,
           (unsigned long)u->gid, u->storage, (unsigned long long)u->size, c->mail_root, u->login);
    printf("container: %s\nssh_port:  ", u->container ? u->container : "-");
    if (u->ssh_port)
        printf("%d\n", u->ssh_port);
    else
        puts("-");
    printf("state:     %s\ncreated:   %s\n", state_name(u->state), when);
    if (u->ssh_keys)
        printf("ssh_keys:\n  %s\n", u->ssh_keys);
}

/* ---- user create -------------------------------------------------------- */

struct create_args {
    const char *login, *id, *sub, *domain, *keyfile, *size;
};

/* --opt VALUE or --opt=VALUE; returns the value or NULL, advancing *I. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0' || *i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static int parse_create(struct create_args *a, int argc, char **argv, int i)
{
    memset(a, 0, sizeof(*a));
    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--id")))
            a->id = v;
        else if ((v = opt_value(argc, argv, &i, "--subdomain")))
            a->sub = v;
        else if ((v = opt_value(argc, argv, &i, "--domain")))
            a->domain = v;
        else if ((v = opt_value(argc, argv, &i, "--ssh-key")))
            a->keyfile = v;
        else if ((v = opt_value(argc, argv, &i, "--size")))
            a->size = v;
        else if (argv[i][0] == '-')
            return usage_error("user create: unknown option or missing value: %s", argv[i]);
        else if (a->login == NULL)
            a->login = argv[i];
        else
            return usage_error("user create: unexpected argument '%s'", argv[i]);
    }
    if (a->login == NULL || a->id == NULL)
        return usage_error("user create needs LOGIN and --id ID");
    if ((a->sub == NULL) == (a->domain == NULL))
        return usage_error("user create needs exactly one of --subdomain SUB and --domain DOMAIN");
    return 0;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Fill U (strings in DOMAIN and the args) from the command line. */
static int build_user(semail_user *u, char *domain, size_t dn, const struct create_args *a,
                      const struct ctx *c)
{
    size_t pn = strlen(c->domain), n;

    memset(u, 0, sizeof(*u));
    u->version = SEMAIL_USER_VERSION;
    if (check_name("login", a->login) || check_name("id", a->id))
        return 1;
    if (snprintf(domain, dn, "%s", a->sub ? a->sub : a->domain) >= (int)dn)
        return fail("%s: too long", a->sub ? "subdomain" : "domain");
    lower(domain);
    if (a->sub) {
        if (semail_validate_label(domain) < 0)
            return fail("subdomain %s", semail_error_last());
        n = strlen(domain);
        if (snprintf(domain + n, dn - n, ".%s", c->domain) >= (int)(dn - n))
            return fail("subdomain too long");
        u->kind = SEMAIL_DOMAIN_SUBDOMAIN;
    } else {
        n = strlen(domain);
        if (strcmp(domain, c->domain) == 0 ||
            (n > pn && domain[n - pn - 1] == '.' && strcmp(domain + n - pn, c->domain) == 0))
            return fail("domain '%s' belongs to the platform: use --subdomain for a name "
                        "under %s",
                        domain, c->domain);
        u->kind = SEMAIL_DOMAIN_OWN;
    }
    if (semail_validate_domain(domain) < 0)
        return fail("domain %s", semail_error_last());
    u->login = a->login;
    u->id = a->id;
    u->domain = domain;
    u->storage = "directory";
    u->state = SEMAIL_USER_CREATING;
    u->created = (int64_t)time(NULL);
    if (a->size ? parse_size(a->size, &u->size) < 0
                : semail_config_get_size(c->cfg, "storage", "default_size", &u->size) < 0)
        return fail("--size '%s': expected bytes or a number with k, m, g or t (such as 1G)",
                    a->size ? a->size : "");
    return 0;
}

/* Register U (state creating) with a free uid; retried when a racing writer takes it. */
static int register_new(const struct ctx *c, semail_user *u)
{
    uint64_t lo, hi;
    int tries, err = 0;

    if (semail_config_get_range(c->cfg, "global", "uid_range", &lo, &hi) < 0)
        return fail("%s", semail_error_last());
    for (tries = 0; tries < 10; tries++) {
        semail_registry *reg = NULL;
        if ((err = semail_registry_load(&reg, c->state_dir)) < 0)
            return fail("%s", semail_error_last());
        err = semail_registry_free_uid(&u->uid, reg, (uid_t)lo, (uid_t)hi);
        semail_registry_free(reg);
        if (err < 0)
            return fail("no free uid in uid_range %llu-%llu", (unsigned long long)lo,
                        (unsigned long long)hi);
        u->gid = (gid_t)u->uid;
        err = semail_registry_add(c->state_dir, u);
        if (err == 0)
            return 0;
        if (err != SEMAIL_EEXISTS || strncmp(semail_error_last(), "uid ", 4) != 0)
            break;
    }
    return fail("%s", semail_error_last());
}

/* Whether an existing record may be resumed by this create: same address. */
static int same_box(const semail_user *old, const semail_user *u)
{
    return old->state == SEMAIL_USER_CREATING && strcmp(old->id, u->id) == 0 &&
           strcmp(old->domain, u->domain) == 0 && old->kind == u->kind &&
           strcmp(old->storage, u->storage) == 0;
}

/* Look at what exists for the login: 0 new, 1 resume (U gets uid), or an exit code + 10. */
static int examine(const struct ctx *c, semail_user *u)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    struct stat st;
    char path[4400];
    int rc = 0;

    if (semail_registry_load(&reg, c->state_dir) < 0)
        return 10 + fail("%s", semail_error_last());
    if (semail_registry_find_login(&old, reg, u->login) == 0) {
        if (same_box(old, u)) {
            u->uid = old->uid;
            u->gid = old->gid;
            u->created = old->created;
            rc = 1;
        } else if (old->state == SEMAIL_USER_DELETING) {
            rc = 10 + fail("the box of '%s' is being deleted; run 'semail-admin user delete %s' "
                           "to finish",
                           u->login, u->login);
        } else {
            rc = 10 + fail("login '%s' already has a box (%s@%s, %s)", u->login, old->id,
                           old->domain, state_name(old->state));
        }
    }
    semail_registry_free(reg);
    snprintf(path, sizeof(path), "%s/%s", c->mail_root, u->login);
    if (rc == 0 && lstat(path, &st) == 0)
        rc = 10 + fail("%s exists but is not in the registry: move it away first", path);
    return rc;
}

static int cmd_create(const struct ctx *c, int argc, char **argv, int i)
{
    struct create_args a;
    semail_user u;
    char domain[300], *keys = NULL;
    int rc, resume, lock = -1, registered = 0;

    if ((rc = parse_create(&a, argc, argv, i)) != 0)
        return rc;
    if ((rc = build_user(&u, domain, sizeof(domain), &a, c)) != 0)
        return rc;
    if ((rc = check_supported(c)) != 0)
        return rc;
    if (a.keyfile && (rc = read_ssh_keys(a.keyfile, &keys)) != 0)
        return rc;
    u.ssh_keys = keys;
    if ((rc = make_dirs(c->state_dir, 0755)) != 0 || (rc = make_dirs(c->mail_root, 0755)) != 0 ||
        (rc = op_lock(c, u.login, &lock)) != 0)
        goto done;
    if ((resume = examine(c, &u)) >= 10) {
        rc = resume - 10;
        goto done;
    }
    if (resume ? semail_registry_update(c->state_dir, &u) < 0 && fail("%s", semail_error_last())
               : register_new(c, &u) != 0) {
        rc = 1;
        goto done;
    }
    registered = 1;
    if ((rc = make_mail_dir(c, &u, resume)) != 0)
        goto done;
    u.state = SEMAIL_USER_ACTIVE;
    if (semail_registry_update(c->state_dir, &u) < 0) {
        rc = fail("%s", semail_error_last());
        goto done;
    }
    printf("created %s: %s@%s (uid %lu, %s/%s)\n", u.login, u.id, u.domain, (unsigned long)u.uid,
           c->mail_root, u.login);
done:
    if (rc != 0 && registered) {
        /* Undo in reverse order; what cannot be undone is finished by a rerun. */
        if (remove_mail_dir(c, u.login) == 0 && semail_registry_remove(c->state_dir, u.login) < 0)
            fail("undo: %s", semail_error_last());
    }
    if (lock >= 0)
        close(lock);
    free(keys);
    return rc;
}

/* ---- user delete, list, show -------------------------------------------- */

static int cmd_delete(const struct ctx *c, int argc, char **argv, int i)
{
    const char *login = NULL, *archive = NULL;
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_user u;
    int rc = 0, lock = -1;

    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--archive")))
            archive = v;
        else if (argv[i][0] == '-' || login)
            return usage_error("user delete: unexpected argument '%s'", argv[i]);
        else
            login = argv[i];
    }
    if (login == NULL)
        return usage_error("user delete needs LOGIN");
    if (archive)
        return fail("--archive is not implemented yet (mail export comes with libarchive); "
                    "copy %s/%s yourself, then delete without --archive",
                    c->mail_root, login);
    if ((rc = check_name("login", login)) != 0 || (rc = check_supported(c)) != 0 ||
        (rc = op_lock(c, login, &lock)) != 0)
        goto done;
    if (semail_registry_load(&reg, c->state_dir) < 0) {
        rc = fail("%s", semail_error_last());
        goto done;
    }
    if (semail_registry_find_login(&old, reg, login) < 0) {
        rc = fail("no box for login '%s'", login);
        goto done;
    }
    if (strcmp(old->storage, "directory") != 0) {
        rc = fail("the box of '%s' uses storage '%s', which this version cannot remove", login,
                  old->storage);
        goto done;
    }
    u = *old;
    u.state = SEMAIL_USER_DELETING;
    if ((old->state != SEMAIL_USER_DELETING && semail_registry_update(c->state_dir, &u) < 0) ||
        (rc = remove_mail_dir(c, login)) != 0 || semail_registry_remove(c->state_dir, login) < 0) {
        rc = rc ? rc : fail("%s", semail_error_last());
        goto done;
    }
    printf("deleted %s (%s@%s)\n", login, old->id, old->domain);
done:
    semail_registry_free(reg);
    if (lock >= 0)
        close(lock);
    return rc;
}

static int parse_json_flag(int argc, char **argv, int i, const char **login, int want_login,
                           int *json)
{
    *json = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            *json = 1;
        else if (want_login && argv[i][0] != '-' && *login == NULL)
            *login = argv[i];
        else
            return usage_error("unexpected argument '%s'", argv[i]);
    }
    if (want_login && *login == NULL)
        return usage_error("user show needs LOGIN");
    return 0;
}

static int cmd_list(const struct ctx *c, int argc, char **argv, int i)
{
    semail_registry *reg = NULL;
    const char *unused = NULL;
    size_t k, n, wl = 5, wa = 7;
    int json, rc;

    if ((rc = parse_json_flag(argc, argv, i, &unused, 0, &json)) != 0)
        return rc;
    if (semail_registry_load(&reg, c->state_dir) < 0)
        return fail("%s", semail_error_last());
    n = semail_registry_count(reg);
    for (k = 0; k < n; k++) {
        const semail_user *u = semail_registry_get(reg, k);
        size_t la = strlen(u->id) + 1 + strlen(u->domain);
        wl = strlen(u->login) > wl ? strlen(u->login) : wl;
        wa = la > wa ? la : wa;
    }
    if (json)
        putchar('[');
    else
        printf("%-*s  %-*s  %-10s  %s\n", (int)wl, "LOGIN", (int)wa, "ADDRESS", "UID", "STATE");
    for (k = 0; k < n; k++) {
        const semail_user *u = semail_registry_get(reg, k);
        char addr[300];
        if (json) {
            if (k)
                putchar(',');
            print_json(c, u);
            continue;
        }
        snprintf(addr, sizeof(addr), "%s@%s", u->id, u->domain);
        printf("%-*s  %-*s  %-10lu  %s\n", (int)wl, u->login, (int)wa, addr, (unsigned long)u->uid,
               state_name(u->state));
    }
    if (json)
        puts("]");
    semail_registry_free(reg);
    return 0;
}

static int cmd_show(const struct ctx *c, int argc, char **argv, int i)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    const char *login = NULL;
    int json, rc;

    if ((rc = parse_json_flag(argc, argv, i, &login, 1, &json)) != 0)
        return rc;
    if ((rc = check_name("login", login)) != 0)
        return rc;
    if (semail_registry_load(&reg, c->state_dir) < 0)
        return fail("%s", semail_error_last());
    if (semail_registry_find_login(&u, reg, login) < 0) {
        semail_registry_free(reg);
        return fail("no box for login '%s'", login);
    }
    if (json) {
        print_json(c, u);
        putchar('\n');
    } else {
        print_text(c, u);
    }
    semail_registry_free(reg);
    return 0;
}

/* ---- main --------------------------------------------------------------- */

static int run_user(const prog_common *pc, int argc, char **argv, int i)
{
    static const struct {
        const char *name;
        int (*fn)(const struct ctx *, int, char **, int);
    } cmds[] = {
        {"create", cmd_create}, {"delete", cmd_delete}, {"list", cmd_list}, {"show", cmd_show}};
    struct ctx c;
    size_t k;
    int rc;

    if (i >= argc)
        return usage_error("user needs a command: create, delete, list or show");
    for (k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
        if (strcmp(argv[i], cmds[k].name) != 0)
            continue;
        if (load_ctx(&c, pc) != 0)
            return 1;
        rc = cmds[k].fn(&c, argc, argv, i + 1);
        semail_config_free(c.cfg);
        return rc;
    }
    return usage_error("unknown user command '%s'", argv[i]);
}

int main(int argc, char **argv)
{
    prog_common pc = {.name = NAME};
    int i;

    prog_parse_common(&pc, argc, argv, usage);
    i = pc.argi;
    if (pc.check_config)
        (void)prog_load_config(&pc); /* exits 0 or 1 */
    if (i >= argc)
        return usage_error("a command is needed");
    if (strcmp(argv[i], "user") == 0)
        return run_user(&pc, argc, argv, i + 1);
    if (strcmp(argv[i], "config") == 0) {
        if (i + 1 >= argc || strcmp(argv[i + 1], "check") != 0 || i + 2 != argc)
            return usage_error("config takes one command: check");
        pc.check_config = 1;
        (void)prog_load_config(&pc); /* exits 0 or 1 */
        return 1;
    }
    return usage_error("unknown command '%s'", argv[i]);
}
