/*
 * provision_ops.c - the operations on an existing box: export, SSH keys,
 * resize, mount-all after a reboot, and the MX check of an own domain.
 *
 * Contract (provision.h): each works on one box under its login lock
 * (mount-all takes each box's lock in turn) and changes the registry only
 * after the step it records succeeded.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "provision_ctx.h"

/* ---- export ---------------------------------------------------------------------- */

int semail__prov_export(semail_provision *p, const char *login, const char *path)
{
    semail_storage_state state;
    char dir[4096];
    int err, fd;

    if ((err = semail_storage_status(&state, p->st, login)) < 0)
        return err;
    if (state != SEMAIL_STORAGE_MOUNTED)
        return semail__err(SEMAIL_ENOTFOUND, "the mail of '%s' is not mounted (%s)", login,
                           semail_storage_state_name(state));
    if (semail__fmt(dir, sizeof(dir), "%s/%s", p->mail_root, login) < 0)
        return semail__err(SEMAIL_EINVAL, "mail_root too long");
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", dir);
    err = semail__provision_write_tar(fd, login, path);
    close(fd);
    return err;
}

int semail_provision_export(semail_provision *p, const char *login, const char *path)
{
    semail_registry *reg = NULL;
    const semail_user *u;
    int err, lock = -1;

    if (p == NULL || login == NULL || path == NULL)
        return semail__err(SEMAIL_EINVAL, "user export: NULL argument");
    if (semail_validate_name(login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if ((err = semail__prov_lock(p, login, &lock)) < 0 ||
        (err = semail__prov_find(&reg, &u, p, login)) < 0 ||
        (err = semail__prov_export(p, login, path)) < 0)
        goto done;
    semail__prov_log(p, "export: mail of %s written to %s", login, path);
done:
    semail_registry_free(reg);
    semail__prov_unlock(lock);
    return err;
}

/* ---- keys and size -------------------------------------------------------------------- */

int semail_provision_set_keys(semail_provision *p, const char *login, const char *keys)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_user u;
    int err, lock = -1;

    if (p == NULL || login == NULL)
        return semail__err(SEMAIL_EINVAL, "user keys: NULL argument");
    if (semail_validate_name(login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if ((err = semail_provision_check_keys(keys)) < 0 ||
        (err = semail__prov_lock(p, login, &lock)) < 0 ||
        (err = semail__prov_find(&reg, &old, p, login)) < 0)
        goto done;
    u = *old;
    u.ssh_keys = keys && *keys ? keys : NULL;
    /* The container first: when it fails, the record still says what the container has. */
    if (old->container && p->containers_on &&
        (err = p->ct.set_keys(p->ct.self, login, keys ? keys : "")) < 0)
        goto done;
    if ((err = semail_registry_update(p->state_dir, &u)) < 0)
        goto done;
    semail__prov_log(p, "keys: %s updated%s", login, old->container ? " in the container" : "");
done:
    semail_registry_free(reg);
    semail__prov_unlock(lock);
    return err;
}

int semail_provision_resize(semail_provision *p, const char *login, uint64_t size)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_user u;
    int err, lock = -1;

    if (p == NULL || login == NULL)
        return semail__err(SEMAIL_EINVAL, "user resize: NULL argument");
    if (semail_validate_name(login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if ((err = semail__prov_lock(p, login, &lock)) < 0 ||
        (err = semail__prov_find(&reg, &old, p, login)) < 0)
        goto done;
    if (old->state != SEMAIL_USER_ACTIVE) {
        err = semail__err(SEMAIL_EINVAL, "the box of '%s' is not active", login);
        goto done;
    }
    if ((err = semail_storage_resize(p->st, login, size)) < 0)
        goto done;
    u = *old;
    u.size = size;
    if ((err = semail_registry_update(p->state_dir, &u)) < 0)
        goto done;
    semail__prov_log(p, "resize: %s now %llu bytes", login, (unsigned long long)size);
done:
    semail_registry_free(reg);
    semail__prov_unlock(lock);
    return err;
}

/* ---- mount-all ------------------------------------------------------------------------- */

static int bring_up(semail_provision *p, const semail_user *u)
{
    char mount[4096];
    int err, lock = -1, port = 0;

    if (semail__fmt(mount, sizeof(mount), "%s/%s", p->mail_root, u->login) < 0)
        return semail__err(SEMAIL_EINVAL, "mail_root too long");
    if ((err = semail__prov_lock(p, u->login, &lock)) < 0)
        return err;
    if (strcmp(u->storage, semail_storage_backend_name(p->st)) != 0)
        err = semail__err(SEMAIL_ECONFIG, "uses storage '%s', but [storage] backend is '%s'",
                          u->storage, semail_storage_backend_name(p->st));
    else if ((err = semail_storage_mount(p->st, u->login)) < 0)
        ;
    else if (u->container && !p->containers_on)
        err = semail__err(SEMAIL_ECONFIG, "has the container %s, but [containers] is not enabled",
                          u->container);
    else if (u->container && (err = p->ct.start(p->ct.self, u, mount, &port)) == 0 &&
             port != u->ssh_port) {
        semail_user moved = *u;
        moved.ssh_port = port;
        if ((err = semail_registry_update(p->state_dir, &moved)) == 0)
            semail__prov_log(p, "mount-all: %s: container made again, ssh port %d", u->login, port);
    }
    semail__prov_unlock(lock);
    return err;
}

int semail_provision_mount_all(semail_provision *p, size_t *failed)
{
    semail_registry *reg = NULL;
    size_t i, n, bad = 0;
    int err, last = 0;

    if (failed)
        *failed = 0;
    if (p == NULL)
        return semail__err(SEMAIL_EINVAL, "mount-all: no context");
    if ((err = semail_registry_load(&reg, p->state_dir)) < 0)
        return err;
    n = semail_registry_count(reg);
    for (i = 0; i < n; i++) {
        const semail_user *u = semail_registry_get(reg, i);
        if (u->state != SEMAIL_USER_ACTIVE)
            continue;
        if ((err = bring_up(p, u)) < 0) {
            semail__prov_log(p, "mount-all: %s: %s", u->login, semail_error_last());
            last = err;
            bad++;
        } else {
            semail__prov_log(p, "mount-all: %s up", u->login);
        }
    }
    semail_registry_free(reg);
    if (failed)
        *failed = bad;
    if (bad)
        return semail__err(last, "mount-all: %zu of the boxes failed (see the log)", bad);
    return 0;
}

/* ---- dns check ------------------------------------------------------------------------- */

int semail_provision_dns_check(semail_dns_mx_check *out, semail_provision *p, const char *domain)
{
    semail_resolver_options o = SEMAIL_RESOLVER_OPTIONS_INIT;
    semail_resolver *r = NULL;
    int err;

    if (out == NULL || p == NULL || domain == NULL)
        return semail__err(SEMAIL_EINVAL, "dns check: NULL argument");
    o.server = semail_config_get(p->cfg, "outbound", "resolver");
    o.timeout_ms = 2000;
    if ((err = semail_resolver_new(&r, &o)) < 0)
        return err;
    err = semail_dns_check_mx(out, r, domain, p->mx_host);
    semail_resolver_free(r);
    return err;
}
