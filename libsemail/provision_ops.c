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

/*
 * The storage could not grow the file system while the container of U
 * holds it (the kernel refused the on-line grow and its bind mount keeps
 * the file system alive): stop the container, grow off line, and start it
 * again whatever happened. Returns the grow's outcome; a start that failed
 * after a good grow goes to *START_ERR, its message to WHY. U->ssh_port
 * follows the container.
 */
static int grow_stopped(semail_provision *p, semail_user *u, uint64_t size, int *start_err,
                        char *why, size_t why_size)
{
    char mount[4096], grow_msg[512];
    int err, port = 0;

    if (semail__fmt(mount, sizeof(mount), "%s/%s", p->mail_root, u->login) < 0)
        return semail__err(SEMAIL_EINVAL, "mail_root too long");
    semail__prov_log(p,
                     "resize: %s: its container holds the file system: stopping it to grow "
                     "the file system off line",
                     u->login);
    if ((err = p->ct.stop(p->ct.self, u->login)) < 0)
        return err;
    if ((err = semail_storage_resize(p->st, u->login, size)) < 0)
        (void)semail__strlcpy(grow_msg, semail_error_last(), sizeof(grow_msg));
    if ((*start_err = p->ct.start(p->ct.self, u, mount, &port)) < 0)
        (void)semail__strlcpy(why, semail_error_last(), why_size);
    else
        u->ssh_port = port;
    if (err < 0 && *start_err < 0)
        return semail__err(err, "%s; and its container did not start again: %s", grow_msg, why);
    return err < 0 ? semail__err(err, "%s", grow_msg) : 0;
}

int semail_provision_resize(semail_provision *p, const char *login, uint64_t size)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_user u;
    char why[512];
    int err, lock = -1, start_err = 0;

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
    u = *old;
    err = semail_storage_resize(p->st, login, size);
    if (err == SEMAIL_ETEMP && old->container && p->containers_on)
        err = grow_stopped(p, &u, size, &start_err, why, sizeof(why));
    /* The size only when grown; a port the restarted container moved to, always. */
    if (err < 0 && u.ssh_port != old->ssh_port) {
        (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
        (void)semail_registry_update(p->state_dir, &u);
        err = semail__err(err, "%s", why);
    }
    if (err < 0)
        goto done;
    u.size = size;
    if ((err = semail_registry_update(p->state_dir, &u)) < 0)
        goto done;
    semail__prov_log(p, "resize: %s now %llu bytes", login, (unsigned long long)size);
    if (start_err < 0)
        err = semail__err(start_err,
                          "%s: grown to %llu bytes, but the container did not start again: %s "
                          "(semail-admin mount-all starts it)",
                          login, (unsigned long long)size, why);
done:
    semail_registry_free(reg);
    semail__prov_unlock(lock);
    return err;
}

/* ---- mount-all ------------------------------------------------------------------------- */

/*
 * Start the container of U. RESTART (its file system was just mounted):
 * stop it first, since the engine may have started it on its own (restart
 * policy) before the mount, with the empty mount point bind-mounted at
 * ~/mail; started again, its bind mount takes the mounted file system.
 */
static int start_container(semail_provision *p, const semail_user *u, const char *mount,
                           int restart)
{
    semail_user moved;
    int err, port = 0;

    if (restart && (err = p->ct.stop(p->ct.self, u->login)) < 0)
        return err;
    if ((err = p->ct.start(p->ct.self, u, mount, &port)) < 0)
        return err;
    if (restart)
        semail__prov_log(p, "mount-all: %s: file system mounted, container restarted on it",
                         u->login);
    if (port == u->ssh_port)
        return 0;
    moved = *u;
    moved.ssh_port = port;
    if ((err = semail_registry_update(p->state_dir, &moved)) == 0)
        semail__prov_log(p, "mount-all: %s: container made again, ssh port %d", u->login, port);
    return err;
}

static int bring_up(semail_provision *p, const semail_user *u)
{
    semail_storage_state was = SEMAIL_STORAGE_ABSENT;
    char mount[4096];
    int err, lock = -1;

    if (semail__fmt(mount, sizeof(mount), "%s/%s", p->mail_root, u->login) < 0)
        return semail__err(SEMAIL_EINVAL, "mail_root too long");
    if ((err = semail__prov_lock(p, u->login, &lock)) < 0)
        return err;
    if (strcmp(u->storage, semail_storage_backend_name(p->st)) != 0)
        err = semail__err(SEMAIL_ECONFIG, "uses storage '%s', but [storage] backend is '%s'",
                          u->storage, semail_storage_backend_name(p->st));
    else if ((err = semail_storage_status(&was, p->st, u->login)) < 0 ||
             (err = semail_storage_mount(p->st, u->login)) < 0)
        ;
    else if (u->container && !p->containers_on)
        err = semail__err(SEMAIL_ECONFIG, "has the container %s, but [containers] is not enabled",
                          u->container);
    else if (u->container)
        err = start_container(p, u, mount, was != SEMAIL_STORAGE_MOUNTED);
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
