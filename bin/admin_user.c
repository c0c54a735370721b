/*
 * admin_user.c - semail-admin's provisioning commands: user create,
 * delete, list, show, export, keys, resize; mount-all; dns check; ldap
 * add-person.
 *
 * Contract: the command line is checked here (options, files to read);
 * every change goes through libsemail's provision.h, whose transactions
 * check the values, hold the per-login lock and undo a failed create.
 * Exit 0: done; 1: failed (message on stderr); 2: usage error. The steps
 * done and undone are logged to stderr, the result goes to stdout.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin_user.h"

#define NAME      "semail-admin"
#define FILE_MAX  (16 * 1024)
#define PASSW_MAX 256

static void log_line(const char *line, void *payload)
{
    fprintf(stderr, NAME ": %s\n", line);
}

/* What a command works with. */
typedef struct ctx {
    semail_config *cfg;
    semail_provision *p; /* NULL for the read-only commands */
    const char *state_dir, *mail_root;
    const char *usage;
} ctx;

static int ctx_open(ctx *c, const prog_common *pc, const char *usage, int provision)
{
    memset(c, 0, sizeof(*c));
    c->usage = usage;
    signal(SIGPIPE, SIG_IGN); /* libldap may write to a closed connection */
    if ((c->cfg = prog_load_config(pc)) == NULL)
        return 1;
    c->state_dir = semail_config_get(c->cfg, "global", "state_dir");
    c->mail_root = semail_config_get(c->cfg, "global", "mail_root");
    if (provision && semail_provision_new(&c->p, c->cfg) < 0)
        return prog_fail(NAME, "%s", semail_error_last());
    if (c->p)
        semail_provision_set_log(c->p, log_line, NULL);
    return 0;
}

static void ctx_close(ctx *c)
{
    semail_provision_free(c->p);
    semail_config_free(c->cfg);
}

/* ---- command-line helpers -------------------------------------------------------- */

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

static int size_arg(const char *s, uint64_t *out)
{
    if (parse_size(s, out) < 0 || *out == 0)
        return prog_fail(
            NAME, "--size '%s': expected bytes or a number with k, m, g or t (such as 1G)", s);
    return 0;
}

/* Read a small regular FILE into *OUT (NUL-terminated, CRs before LFs dropped). */
static int read_small(const char *what, const char *file, char **out)
{
    struct stat st;
    size_t len = 0, o = 0, k;
    char *buf;
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    /* prog_fail() then an explicit 1: the analyzer does not follow variadic calls. */
    if (fd < 0) {
        prog_fail(NAME, "%s %s: %s", what, file, strerror(errno));
        return 1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > FILE_MAX ||
        (buf = malloc((size_t)st.st_size + 1)) == NULL) {
        close(fd);
        prog_fail(NAME, "%s %s: not a regular file of at most %d bytes", what, file, FILE_MAX);
        return 1;
    }
    while (len < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + len, (size_t)st.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    for (k = 0; k < len; k++)
        if (!(buf[k] == '\r' && k + 1 < len && buf[k + 1] == '\n'))
            buf[o++] = buf[k];
    while (o > 0 && buf[o - 1] == '\n')
        o--;
    buf[o] = '\0';
    *out = buf;
    return 0;
}

/* The SSH keys of FILE, checked; the content is never echoed. */
static int read_keys(const char *file, char **out)
{
    if (read_small("--ssh-key", file, out) != 0)
        return 1;
    if (semail_provision_check_keys(*out) < 0 || **out == '\0') {
        int rc = prog_fail(NAME, "--ssh-key %s: %s", file,
                           **out == '\0' ? "no key in the file" : semail_error_last());
        free(*out);
        *out = NULL;
        return rc;
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------ */

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

static void print_json(const ctx *c, const semail_user *u)
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

static void print_text(const ctx *c, const semail_user *u)
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

/* ---- user create / delete ------------------------------------------------------------ */

static int cmd_create(ctx *c, int argc, char **argv, int i)
{
    semail_provision_request req = SEMAIL_PROVISION_REQUEST_INIT;
    semail_provision_result res;
    const char *keyfile = NULL, *size = NULL;
    char *keys = NULL;
    int rc = 0;

    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--id")))
            req.id = v;
        else if ((v = opt_value(argc, argv, &i, "--subdomain")))
            req.subdomain = v;
        else if ((v = opt_value(argc, argv, &i, "--domain")))
            req.domain = v;
        else if ((v = opt_value(argc, argv, &i, "--ssh-key")))
            keyfile = v;
        else if ((v = opt_value(argc, argv, &i, "--size")))
            size = v;
        else if (argv[i][0] == '-')
            return prog_usage_error(NAME, c->usage,
                                    "user create: unknown option or missing value: %s", argv[i]);
        else if (req.login == NULL)
            req.login = argv[i];
        else
            return prog_usage_error(NAME, c->usage, "user create: unexpected argument '%s'",
                                    argv[i]);
    }
    if (req.login == NULL || req.id == NULL)
        return prog_usage_error(NAME, c->usage, "user create needs LOGIN and --id ID");
    if ((req.subdomain == NULL) == (req.domain == NULL))
        return prog_usage_error(
            NAME, c->usage, "user create needs exactly one of --subdomain SUB and --domain DOMAIN");
    if ((size && size_arg(size, &req.size) != 0) || (keyfile && read_keys(keyfile, &keys) != 0))
        return 1;
    req.ssh_keys = keys;
    if (semail_provision_create(&res, c->p, &req) < 0) {
        rc = prog_fail(NAME, "user create %s: %s", req.login, semail_error_last());
    } else {
        printf("created %s: %s (uid %lu, %s/%s", req.login, res.address, (unsigned long)res.uid,
               c->mail_root, req.login);
        if (res.ssh_port)
            printf(", ssh port %d", res.ssh_port);
        printf(")%s\n", res.resumed ? ", an interrupted create finished" : "");
        if (res.dns_checked)
            printf("MX check: %s\n", res.dns.text);
    }
    free(keys);
    return rc;
}

static int cmd_delete(ctx *c, int argc, char **argv, int i)
{
    const char *login = NULL, *archive = NULL;

    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--archive")))
            archive = v;
        else if (argv[i][0] == '-' || login)
            return prog_usage_error(NAME, c->usage, "user delete: unexpected argument '%s'",
                                    argv[i]);
        else
            login = argv[i];
    }
    if (login == NULL)
        return prog_usage_error(NAME, c->usage, "user delete needs LOGIN");
    if (semail_provision_delete(c->p, login, archive) < 0)
        return prog_fail(NAME, "user delete %s: %s", login, semail_error_last());
    printf("deleted %s%s%s\n", login, archive ? ", mail archived to " : "", archive ? archive : "");
    return 0;
}

/* ---- user export / keys / resize ---------------------------------------------------- */

static int cmd_export(ctx *c, int argc, char **argv, int i)
{
    if (argc - i != 2 || argv[i][0] == '-' || argv[i + 1][0] == '-')
        return prog_usage_error(NAME, c->usage, "user export needs LOGIN and FILE");
    if (semail_provision_export(c->p, argv[i], argv[i + 1]) < 0)
        return prog_fail(NAME, "user export %s: %s", argv[i], semail_error_last());
    printf("exported %s to %s\n", argv[i], argv[i + 1]);
    return 0;
}

static int cmd_keys(ctx *c, int argc, char **argv, int i)
{
    const char *login = NULL, *file = NULL;
    char *keys = NULL;
    int none = 0, rc = 0;

    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--ssh-key")))
            file = v;
        else if (strcmp(argv[i], "--none") == 0)
            none = 1;
        else if (argv[i][0] == '-' || login)
            return prog_usage_error(NAME, c->usage, "user keys: unexpected argument '%s'", argv[i]);
        else
            login = argv[i];
    }
    if (login == NULL || (file == NULL) == !none)
        return prog_usage_error(NAME, c->usage,
                                "user keys needs LOGIN and one of --ssh-key FILE, --none");
    if (file && read_keys(file, &keys) != 0)
        return 1;
    if (semail_provision_set_keys(c->p, login, keys) < 0)
        rc = prog_fail(NAME, "user keys %s: %s", login, semail_error_last());
    else
        printf("keys of %s replaced\n", login);
    free(keys);
    return rc;
}

static int cmd_resize(ctx *c, int argc, char **argv, int i)
{
    const char *login = NULL, *size = NULL;
    uint64_t bytes = 0;

    for (; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--size")))
            size = v;
        else if (argv[i][0] == '-' || login)
            return prog_usage_error(NAME, c->usage, "user resize: unexpected argument '%s'",
                                    argv[i]);
        else
            login = argv[i];
    }
    if (login == NULL || size == NULL)
        return prog_usage_error(NAME, c->usage, "user resize needs LOGIN and --size SIZE");
    if (size_arg(size, &bytes) != 0)
        return 1;
    if (semail_provision_resize(c->p, login, bytes) < 0)
        return prog_fail(NAME, "user resize %s: %s", login, semail_error_last());
    printf("resized %s to %llu bytes\n", login, (unsigned long long)bytes);
    return 0;
}

/* ---- user list / show ----------------------------------------------------------------- */

static int parse_json_flag(const ctx *c, int argc, char **argv, int i, const char **login,
                           int want_login, int *json)
{
    *json = 0;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            *json = 1;
        else if (want_login && argv[i][0] != '-' && *login == NULL)
            *login = argv[i];
        else
            return prog_usage_error(NAME, c->usage, "unexpected argument '%s'", argv[i]);
    }
    if (want_login && *login == NULL)
        return prog_usage_error(NAME, c->usage, "user show needs LOGIN");
    return 0;
}

static int cmd_list(ctx *c, int argc, char **argv, int i)
{
    semail_registry *reg = NULL;
    const char *unused = NULL;
    size_t k, n, wl = 5, wa = 7;
    int json, rc;

    if ((rc = parse_json_flag(c, argc, argv, i, &unused, 0, &json)) != 0)
        return rc;
    if (semail_registry_load(&reg, c->state_dir) < 0)
        return prog_fail(NAME, "%s", semail_error_last());
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
        printf("%-*s  %-*s  %-10s  %-8s  %s\n", (int)wl, "LOGIN", (int)wa, "ADDRESS", "UID", "SSH",
               "STATE");
    for (k = 0; k < n; k++) {
        const semail_user *u = semail_registry_get(reg, k);
        char addr[300], port[16] = "-";
        if (json) {
            if (k)
                putchar(',');
            print_json(c, u);
            continue;
        }
        snprintf(addr, sizeof(addr), "%s@%s", u->id, u->domain);
        if (u->ssh_port)
            snprintf(port, sizeof(port), "%d", u->ssh_port);
        printf("%-*s  %-*s  %-10lu  %-8s  %s\n", (int)wl, u->login, (int)wa, addr,
               (unsigned long)u->uid, port, state_name(u->state));
    }
    if (json)
        puts("]");
    semail_registry_free(reg);
    return 0;
}

static int cmd_show(ctx *c, int argc, char **argv, int i)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    const char *login = NULL;
    int json, rc;

    if ((rc = parse_json_flag(c, argc, argv, i, &login, 1, &json)) != 0)
        return rc;
    if (semail_validate_name(login) < 0)
        return prog_fail(NAME, "login '%s': %s", login, semail_error_last());
    if (semail_registry_load(&reg, c->state_dir) < 0)
        return prog_fail(NAME, "%s", semail_error_last());
    if (semail_registry_find_login(&u, reg, login) < 0) {
        semail_registry_free(reg);
        return prog_fail(NAME, "no box for login '%s'", login);
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

/* ---- entry points ---------------------------------------------------------------------- */

int admin_user_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    static const struct {
        const char *name;
        int (*fn)(ctx *, int, char **, int);
        int provision; /* needs the provisioning context */
    } cmds[] = {{"create", cmd_create, 1}, {"delete", cmd_delete, 1}, {"list", cmd_list, 0},
                {"show", cmd_show, 0},     {"export", cmd_export, 1}, {"keys", cmd_keys, 1},
                {"resize", cmd_resize, 1}};
    ctx c;
    size_t k;
    int rc;

    if (i >= argc)
        return prog_usage_error(NAME, usage,
                                "user needs a command: create, delete, list, show, export, "
                                "keys or resize");
    for (k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
        if (strcmp(argv[i], cmds[k].name) != 0)
            continue;
        if ((rc = ctx_open(&c, pc, usage, cmds[k].provision)) == 0)
            rc = cmds[k].fn(&c, argc, argv, i + 1);
        ctx_close(&c);
        return rc;
    }
    return prog_usage_error(NAME, usage, "unknown user command '%s'", argv[i]);
}

int admin_mount_all_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    size_t failed = 0;
    ctx c;
    int rc;

    if (i != argc)
        return prog_usage_error(NAME, usage, "mount-all takes no argument");
    if ((rc = ctx_open(&c, pc, usage, 1)) == 0) {
        if (semail_provision_mount_all(c.p, &failed) < 0)
            rc = prog_fail(NAME, "%s", semail_error_last());
        else
            puts("every active box is mounted and running");
    }
    ctx_close(&c);
    return rc;
}

int admin_dns_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    semail_dns_mx_check chk;
    ctx c;
    int rc;

    if (i + 2 != argc || strcmp(argv[i], "check") != 0)
        return prog_usage_error(NAME, usage, "dns takes one command: check DOMAIN");
    if ((rc = ctx_open(&c, pc, usage, 1)) == 0) {
        if (semail_provision_dns_check(&chk, c.p, argv[i + 1]) < 0) {
            rc = prog_fail(NAME, "dns check %s: %s", argv[i + 1], semail_error_last());
        } else {
            printf("%s\n", chk.text);
            rc = chk.verdict == SEMAIL_DNS_MX_HERE ? 0 : 1;
        }
    }
    ctx_close(&c);
    return rc;
}

int admin_ldap_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    const char *login = NULL, *pwfile = NULL, *name = NULL;
    char *password = NULL;
    ctx c;
    int rc;

    if (i >= argc || strcmp(argv[i], "add-person") != 0)
        return prog_usage_error(NAME, usage, "ldap takes one command: add-person");
    for (i++; i < argc; i++) {
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--password-file")))
            pwfile = v;
        else if ((v = opt_value(argc, argv, &i, "--name")))
            name = v;
        else if (argv[i][0] == '-' || login)
            return prog_usage_error(NAME, usage, "ldap add-person: unexpected argument '%s'",
                                    argv[i]);
        else
            login = argv[i];
    }
    if (login == NULL || pwfile == NULL)
        return prog_usage_error(NAME, usage,
                                "ldap add-person needs LOGIN and --password-file FILE");
    if (read_small("--password-file", pwfile, &password) != 0)
        return 1;
    password[strcspn(password, "\n")] = '\0';
    if ((rc = ctx_open(&c, pc, usage, 1)) == 0) {
        if (semail_provision_ldap_add_person(c.p, login, password, name) < 0)
            rc = prog_fail(NAME, "ldap add-person %s: %s", login, semail_error_last());
        else
            printf("added %s to the directory\n", login);
    }
    ctx_close(&c);
    explicit_bzero(password, strlen(password));
    free(password);
    return rc;
}
