/*
 * provision_container.c - the container steps of the transactions on top
 * of the Engine API module (container.h).
 *
 * Contract: the seam of provision_internal.h, with the container of LOGIN
 * named `semail-LOGIN`; remove also removes the person's key directory
 * (the box is gone for good, or its create is undone); start re-runs the
 * idempotent create, which starts a stopped container (or makes it again,
 * on another port, when the engine lost it); stop keeps the container.
 */
#include <stdlib.h>
#include <string.h>

#include "container_internal.h"
#include "provision_internal.h"

static void fill_spec(semail_container_spec *s, const semail_user *u, const char *mount)
{
    memset(s, 0, sizeof(*s));
    s->login = u->login;
    s->uid = u->uid;
    s->gid = u->gid;
    s->mail_dir = mount;
    s->ssh_keys = u->ssh_keys;
    /* Never a fixed port: the container's fingerprint was made without one, at create. */
    s->ssh_port = 0;
}

static int ct_create(void *self, const semail_user *u, const char *mount, char *name,
                     size_t name_size, int *port)
{
    semail_container_spec spec;
    int err;

    fill_spec(&spec, u, mount);
    if (semail__fmt(name, name_size, "semail-%s", u->login) < 0)
        return semail__err(SEMAIL_EINVAL, "container name too long");
    if ((err = semail_container_create(self, &spec, port)) < 0)
        return semail__prov_err(err, "container: %s", semail_error_last());
    return 0;
}

static int ct_remove(void *self, const char *login)
{
    int err;

    if ((err = semail_container_delete(self, login)) < 0 ||
        (err = semail_container_remove_keys(self, login)) < 0)
        return semail__prov_err(err, "container: %s", semail_error_last());
    return 0;
}

static int ct_forget(void *self, const char *login)
{
    int err = semail_container_remove_keys(self, login);
    return err < 0 ? semail__prov_err(err, "container: %s", semail_error_last()) : 0;
}

static int ct_start(void *self, const semail_user *u, const char *mount, int *port)
{
    semail_container_spec spec;
    int err;

    fill_spec(&spec, u, mount);
    if ((err = semail_container_create(self, &spec, port)) < 0)
        return semail__prov_err(err, "container: %s", semail_error_last());
    return 0;
}

static int ct_stop(void *self, const char *login)
{
    int err = semail__container_stop(self, login);
    return err < 0 ? semail__prov_err(err, "container: %s", semail_error_last()) : 0;
}

static int ct_set_keys(void *self, const char *login, const char *keys)
{
    int err = semail_container_set_keys(self, login, keys);
    return err < 0 ? semail__prov_err(err, "container: %s", semail_error_last()) : 0;
}

static void ct_close(void *self)
{
    semail_container_engine_free(self);
}

void semail__prov_containers_engine(semail__prov_containers *out, semail_container_engine *engine)
{
    out->create = ct_create;
    out->remove = ct_remove;
    out->forget = ct_forget;
    out->start = ct_start;
    out->stop = ct_stop;
    out->set_keys = ct_set_keys;
    out->close = ct_close;
    out->self = engine;
}
