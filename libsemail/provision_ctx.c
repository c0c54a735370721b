/*
 * provision_ctx.c - the provisioning context: made from a configuration,
 * holding the storage handle, the DNS updater, the directory options and
 * the container engine; the per-login lock; the SSH key check.
 *
 * Contract: semail_provision_new() touches nothing on disk and sends
 * nothing; the lock is a flock on STATE_DIR/locks/LOGIN.lock (released by
 * the kernel when the process dies, so a crash never leaves a box locked).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEMAIL__DEFINES_PROV_ERR /* see SEMAIL__RETURNS_CODE in internal.h */
#include "provision_ctx.h"

void semail__prov_log(const semail_provision *p, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (p->log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    p->log(line, p->log_payload);
}

int semail__prov_err(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return semail__err(code, "%s", msg);
}

/* ---- the context --------------------------------------------------------------- */

static int open_dns(semail_provision *p, const semail_config *cfg)
{
    semail_dns_updater_options o = SEMAIL_DNS_UPDATER_OPTIONS_INIT;
    int on = 0, err;

    if ((err = semail_config_get_bool(cfg, "dns", "enabled", &on)) < 0 || !on)
        return err < 0 ? err : 0;
    o.server = semail_config_get(cfg, "dns", "server");
    o.zone = semail_config_get(cfg, "dns", "zone");
    o.tsig_key = semail_config_get(cfg, "dns", "tsig_key");
    p->mx_host = semail_config_get(cfg, "dns", "mx_host");
    if ((err = semail_dns_updater_new(&p->dns, &o)) < 0)
        return semail__prov_err(err, "[dns]: %s", semail_error_last());
    return 0;
}

static int open_ldap(semail_provision *p, const semail_config *cfg)
{
    int err =
        semail_ldap_options_from_config(&p->ldap, p->ldap_password, sizeof(p->ldap_password), cfg);
    if (err == SEMAIL_ENOTFOUND)
        return 0;
    if (err < 0)
        return err;
    p->ldap_on = 1;
    return 0;
}

static int open_containers(semail_provision *p, const semail_config *cfg)
{
    semail_container_engine *e = NULL;
    semail__prov_containers ops;
    int on = 0, err;

    if ((err = semail_config_get_bool(cfg, "containers", "enabled", &on)) < 0 || !on)
        return err < 0 ? err : 0;
    if ((err = semail_container_engine_new_from_config(&e, cfg)) < 0)
        return semail__prov_err(err, "[containers]: %s", semail_error_last());
    semail__prov_containers_engine(&ops, e);
    semail__provision_set_containers(p, &ops);
    return 0;
}

static int open_all(semail_provision *p, const semail_config *cfg)
{
    uint64_t lo, hi;
    int err;

    p->cfg = cfg;
    p->state_dir = semail_config_get(cfg, "global", "state_dir");
    p->mail_root = semail_config_get(cfg, "global", "mail_root");
    p->domain = semail_config_get(cfg, "global", "domain");
    p->mx_host = semail_config_get(cfg, "dns", "mx_host");
    if (p->state_dir == NULL || p->mail_root == NULL || p->domain == NULL)
        return semail__err(SEMAIL_ECONFIG, "[global] state_dir, mail_root and domain are needed");
    if ((err = semail_config_get_range(cfg, "global", "uid_range", &lo, &hi)) < 0 ||
        (err = semail_config_get_size(cfg, "storage", "default_size", &p->default_size)) < 0)
        return err;
    p->uid_lo = (uid_t)lo;
    p->uid_hi = (uid_t)hi;
    if ((err = semail_storage_new_from_config(&p->st, cfg)) < 0 || (err = open_dns(p, cfg)) < 0 ||
        (err = open_ldap(p, cfg)) < 0 || (err = open_containers(p, cfg)) < 0)
        return err;
    return 0;
}

int semail_provision_new(semail_provision **out, const semail_config *cfg)
{
    semail_provision *p;
    int err;

    if (out == NULL || cfg == NULL)
        return semail__err(SEMAIL_EINVAL, "semail_provision_new: NULL argument");
    *out = NULL;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if ((err = open_all(p, cfg)) < 0) {
        semail_provision_free(p);
        return err;
    }
    *out = p;
    return 0;
}

void semail_provision_free(semail_provision *p)
{
    if (p == NULL)
        return;
    if (p->ct.close)
        p->ct.close(p->ct.self);
    semail_storage_free(p->st);
    semail_dns_updater_free(p->dns);
    explicit_bzero(p->ldap_password, sizeof(p->ldap_password));
    free(p);
}

void semail_provision_set_log(semail_provision *p, semail_provision_log_cb cb, void *payload)
{
    if (p == NULL)
        return;
    p->log = cb;
    p->log_payload = payload;
}

void semail__provision_set_containers(semail_provision *p, const semail__prov_containers *ops)
{
    if (p->ct.close)
        p->ct.close(p->ct.self);
    p->ct = *ops;
    p->containers_on = 1;
}

void semail__provision_set_crash_after(semail_provision *p, semail__prov_step step)
{
    p->crash_after = step;
}

semail_storage *semail__provision_storage(semail_provision *p)
{
    return p->st;
}

/* ---- the per-login lock ------------------------------------------------------------ */

static int make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        return semail__errno(semail__errno_code(errno), errno, "mkdir %s", path);
    return 0;
}

int semail__prov_lock(semail_provision *p, const char *login, int *fd)
{
    char path[4096];
    unsigned int waited;
    int err;

    *fd = -1;
    if ((err = make_dir(p->state_dir, 0755)) < 0)
        return err;
    if (semail__fmt(path, sizeof(path), "%s/locks", p->state_dir) < 0)
        return semail__err(SEMAIL_EINVAL, "state_dir too long");
    if ((err = make_dir(path, 0700)) < 0)
        return err;
    if (semail__fmt(path, sizeof(path), "%s/locks/%s.lock", p->state_dir, login) < 0)
        return semail__err(SEMAIL_EINVAL, "state_dir too long");
    if ((*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
        return semail__errno(SEMAIL_EIO, errno, "open %s", path);
    for (waited = 0; flock(*fd, LOCK_EX | LOCK_NB) < 0; waited += 100) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        if (errno != EWOULDBLOCK && errno != EINTR) {
            err = semail__errno(SEMAIL_EIO, errno, "flock %s", path);
            goto fail;
        }
        if (waited >= SEMAIL_PROVISION_LOCK_WAIT_MS) {
            err = semail__err(SEMAIL_ELOCKED,
                              "another operation on '%s' is running; try again "
                              "later",
                              login);
            goto fail;
        }
        nanosleep(&ts, NULL);
    }
    return 0;
fail:
    close(*fd);
    *fd = -1;
    return err;
}

void semail__prov_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

int semail__prov_find(semail_registry **reg, const semail_user **out, semail_provision *p,
                      const char *login)
{
    const char *backend = semail_storage_backend_name(p->st);
    int err;

    *reg = NULL;
    if ((err = semail_registry_load(reg, p->state_dir)) < 0)
        return err;
    if (semail_registry_find_login(out, *reg, login) < 0)
        return semail__err(SEMAIL_ENOTFOUND, "no box for login '%s'", login);
    if (strcmp((*out)->storage, backend) != 0)
        return semail__err(SEMAIL_ECONFIG,
                           "the box of '%s' uses storage '%s', but [storage] backend is '%s'",
                           login, (*out)->storage, backend);
    return 0;
}

/* ---- SSH keys ------------------------------------------------------------------------ */

static int key_type_ok(const char *t, size_t n)
{
    return (n == 11 && strncmp(t, "ssh-ed25519", n) == 0) ||
           (n == 7 && strncmp(t, "ssh-rsa", n) == 0) ||
           (n > 11 && strncmp(t, "ecdsa-sha2-", 11) == 0) || (n > 3 && strncmp(t, "sk-", 3) == 0);
}

/* One line: TYPE BASE64 [COMMENT], printable ASCII. */
static int key_line_ok(const char *l, size_t n)
{
    size_t t = 0, b;

    for (b = 0; b < n; b++)
        if ((unsigned char)l[b] < 0x20 || (unsigned char)l[b] > 0x7e)
            return 0;
    while (t < n && l[t] != ' ')
        t++;
    if (!key_type_ok(l, t))
        return 0;
    for (b = t + 1; b < n && l[b] != ' '; b++)
        if (!isalnum((unsigned char)l[b]) && l[b] != '+' && l[b] != '/' && l[b] != '=')
            return 0;
    return b > t + 1;
}

int semail_provision_check_keys(const char *keys)
{
    size_t len, pos, line = 0;

    if (keys == NULL)
        return 0;
    if ((len = strlen(keys)) > SEMAIL_PROVISION_KEYS_MAX)
        return semail__err(SEMAIL_EINVAL, "ssh keys: more than %u bytes",
                           SEMAIL_PROVISION_KEYS_MAX);
    for (pos = 0; pos < len;) {
        const char *l = keys + pos, *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n == 0 || l[0] == '#')
            continue;
        if (!key_line_ok(l, n))
            return semail__err(SEMAIL_EINVAL,
                               "ssh keys: line %zu is not an SSH public key (expected "
                               "ssh-ed25519, ssh-rsa, ecdsa-sha2-* or sk-* followed by the key)",
                               line);
    }
    return 0;
}
