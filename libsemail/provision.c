/*
 * provision.c - `user create` and `user delete` as transactions over the
 * registry, the directory, the DNS, the storage and the container engine.
 *
 * Contract (provision.h): create runs check -> directory -> record
 * (creating) -> DNS -> storage -> container -> record (active); a failure
 * undoes the steps done, in reverse order, including those of an
 * interrupted create that this call resumed. Delete runs record (deleting)
 * -> archive -> container -> storage -> DNS -> record removed, and stops at
 * the first failure with the record still deleting, so that a second
 * delete finishes. Each operation holds the login's lock file throughout.
 * The context, the per-login lock and the helpers shared with
 * provision_ops.c live in provision_ctx.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "provision_ctx.h"

/* What a create has made so far, for the undo. */
typedef struct tx {
    int resumed;      /* the record existed in state creating */
    int record;       /* the record is ours (made or resumed) */
    int dns;          /* the DNS records are ours */
    int storage;      /* the storage step was reached */
    int container;    /* a container may exist: made here, or by the interrupted run */
    int keys;         /* the container step was reached: its key files may exist */
    char domain[256]; /* the address's domain, lower case */
    char container_name[SEMAIL__PROV_CONTAINER_NAME_MAX];
} tx;

/* ---- step 1: the input ------------------------------------------------------ */

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)semail__tolower((unsigned char)*s);
}

/* Whether DOMAIN is PLATFORM or below it. */
static int under_platform(const char *domain, const char *platform)
{
    size_t n = strlen(domain), pn = strlen(platform);
    return semail__strcasecmp(domain, platform) == 0 ||
           (n > pn && domain[n - pn - 1] == '.' &&
            semail__strcasecmp(domain + n - pn, platform) == 0);
}

static int check_domain(tx *t, const semail_provision *p, const semail_provision_request *req)
{
    const char *given = req->subdomain ? req->subdomain : req->domain;
    const char *what = req->subdomain ? "subdomain" : "domain";
    size_t n;

    if (semail__strlcpy(t->domain, given, sizeof(t->domain)) < 0)
        return semail__err(SEMAIL_EINVAL, "%s: longer than %zu bytes", what, sizeof(t->domain) - 1);
    lower(t->domain);
    if (req->subdomain) {
        if (semail_validate_label(t->domain) < 0)
            return semail__prov_err(SEMAIL_EINVAL, "subdomain %s", semail_error_last());
        n = strlen(t->domain);
        if (semail__fmt(t->domain + n, sizeof(t->domain) - n, ".%s", p->domain) < 0)
            return semail__err(SEMAIL_EINVAL, "subdomain '%s': the name is too long", given);
    } else if (under_platform(t->domain, p->domain)) {
        return semail__err(SEMAIL_EINVAL,
                           "domain '%s' belongs to the platform: use a subdomain for a name "
                           "under %s",
                           given, p->domain);
    }
    if (semail_validate_domain(t->domain) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "%s %s", what, semail_error_last());
    return 0;
}

static int check_request(tx *t, semail_user *u, const semail_provision *p,
                         const semail_provision_request *req)
{
    int err;

    if (req == NULL || req->version != SEMAIL_PROVISION_REQUEST_VERSION)
        return semail__err(SEMAIL_EINVAL, "user create: no request or an unknown version");
    if (req->login == NULL || req->id == NULL)
        return semail__err(SEMAIL_EINVAL, "user create needs a login and an id");
    if (semail_validate_name(req->login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if (semail_validate_name(req->id) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "id %s", semail_error_last());
    if ((req->subdomain == NULL) == (req->domain == NULL))
        return semail__err(SEMAIL_EINVAL, "user create needs exactly one of a subdomain and "
                                          "a domain");
    if ((err = check_domain(t, p, req)) < 0)
        return err;
    if (req->ssh_keys && *req->ssh_keys && (err = semail_provision_check_keys(req->ssh_keys)) < 0)
        return err;
    memset(u, 0, sizeof(*u));
    u->version = SEMAIL_USER_VERSION;
    u->login = req->login;
    u->id = req->id;
    u->domain = t->domain;
    u->kind = req->subdomain ? SEMAIL_DOMAIN_SUBDOMAIN : SEMAIL_DOMAIN_OWN;
    u->storage = semail_storage_backend_name(p->st);
    u->size = req->size ? req->size : p->default_size;
    u->ssh_keys = req->ssh_keys && *req->ssh_keys ? req->ssh_keys : NULL;
    u->state = SEMAIL_USER_CREATING;
    u->created = (int64_t)time(NULL);
    return 0;
}

/* ---- what exists already ------------------------------------------------------- */

/* Whether OLD is an interrupted create of the same box as U. */
static int same_box(const semail_user *old, const semail_user *u)
{
    return old->state == SEMAIL_USER_CREATING && strcmp(old->id, u->id) == 0 &&
           strcmp(old->domain, u->domain) == 0 && old->kind == u->kind &&
           strcmp(old->storage, u->storage) == 0;
}

/* A new box (0), an interrupted one to finish (t->resumed), or a refusal. */
static int examine(tx *t, semail_user *u, semail_provision *p)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_storage_state state;
    int err;

    if ((err = semail_registry_load(&reg, p->state_dir)) < 0)
        return err;
    if (semail_registry_find_login(&old, reg, u->login) == 0) {
        if (same_box(old, u)) {
            t->resumed = 1;
            u->uid = old->uid;
            u->gid = old->gid;
            u->created = old->created;
        } else if (old->state == SEMAIL_USER_CREATING) {
            err = semail__err(SEMAIL_EEXISTS,
                              "an unfinished creation of '%s' for %s@%s exists: run it again "
                              "with the same arguments, or 'user delete %s'",
                              u->login, old->id, old->domain, u->login);
        } else if (old->state == SEMAIL_USER_DELETING) {
            err = semail__err(SEMAIL_EEXISTS,
                              "the box of '%s' is being deleted; run 'user delete %s' to finish",
                              u->login, u->login);
        } else {
            err = semail__err(SEMAIL_EEXISTS, "login '%s' already has a box (%s@%s)", u->login,
                              old->id, old->domain);
        }
    }
    semail_registry_free(reg);
    if (err < 0 || t->resumed)
        return err;
    if ((err = semail_storage_status(&state, p->st, u->login)) < 0)
        return err;
    if (state != SEMAIL_STORAGE_ABSENT)
        return semail__err(SEMAIL_EEXISTS,
                           "%s/%s exists (%s) but is not in the registry: move it away first",
                           p->mail_root, u->login, semail_storage_state_name(state));
    return 0;
}

/* ---- step 2: the directory ----------------------------------------------------- */

static int check_directory(semail_provision *p, const char *login)
{
    int err;

    if (!p->ldap_on)
        return 0;
    err = semail_ldap_person_exists(&p->ldap, login);
    if (err == SEMAIL_ENOTFOUND)
        return semail__err(SEMAIL_ENOTFOUND, "login '%s' is not in the directory (%s)", login,
                           p->ldap.uri);
    if (err < 0)
        return semail__prov_err(err, "directory check of '%s': %s", login, semail_error_last());
    semail__prov_log(p, "ldap: %s is in the directory", login);
    return 0;
}

/* ---- step 3: the record -------------------------------------------------------- */

/* Add U (state creating) with a free uid; retried when a racing writer takes it. */
static int add_record(semail_provision *p, semail_user *u)
{
    int tries, err = 0;

    for (tries = 0; tries < 10; tries++) {
        semail_registry *reg = NULL;
        if ((err = semail_registry_load(&reg, p->state_dir)) < 0)
            return err;
        err = semail_registry_free_uid(&u->uid, reg, p->uid_lo, p->uid_hi);
        semail_registry_free(reg);
        if (err < 0)
            return semail__err(SEMAIL_EFULL, "no free uid in [global] uid_range %lu-%lu",
                               (unsigned long)p->uid_lo, (unsigned long)p->uid_hi);
        u->gid = (gid_t)u->uid;
        err = semail_registry_add(p->state_dir, u);
        if (err != SEMAIL_EEXISTS || strncmp(semail_error_last(), "uid ", 4) != 0)
            return err;
    }
    return err;
}

static int step_record(tx *t, semail_provision *p, semail_user *u)
{
    int err = t->resumed ? semail_registry_update(p->state_dir, u) : add_record(p, u);

    if (err < 0)
        return err;
    t->record = 1;
    semail__prov_log(p, "registry: %s@%s for %s (uid %lu), state creating%s", u->id, u->domain,
                     u->login, (unsigned long)u->uid, t->resumed ? ", resumed" : "");
    return 0;
}

/* ---- step 4: DNS ----------------------------------------------------------------- */

static int step_dns(tx *t, semail_provision *p, const semail_user *u, semail_provision_result *res)
{
    int err;

    if (p->dns == NULL)
        return 0;
    if (u->kind == SEMAIL_DOMAIN_OWN) {
        if (semail_provision_dns_check(&res->dns, p, u->domain) == 0) {
            res->dns_checked = 1;
            semail__prov_log(p, "dns: %s", res->dns.text);
        }
        return 0;
    }
    /* A resumed create may have added the records before it was interrupted: undo removes them. */
    t->dns = t->resumed;
    err = semail_dns_add_mail_records(p->dns, u->domain, p->mx_host, SEMAIL_PROVISION_SPF, 0);
    if (err == SEMAIL_EEXISTS && t->resumed) {
        /* The record, in state creating, says this login owns the name: added by the crashed run.
         */
        t->dns = 1;
        semail__prov_log(p, "dns: records for %s were already added", u->domain);
        return 0;
    }
    if (err == SEMAIL_EEXISTS)
        return semail__err(SEMAIL_EEXISTS, "the name %s already has records in the DNS", u->domain);
    if (err < 0)
        return semail__prov_err(err, "dns: %s", semail_error_last());
    t->dns = 1;
    semail__prov_log(p, "dns: added MX %s and SPF for %s", p->mx_host, u->domain);
    return 0;
}

/* ---- steps 5 and 6: storage, container -------------------------------------------- */

static int step_storage(tx *t, semail_provision *p, const semail_user *u)
{
    int err;

    t->storage = 1;
    if ((err = semail_storage_create(p->st, u->login, u->uid, u->gid, u->size)) < 0)
        return err;
    semail__prov_log(p, "storage: %s/%s made and mounted (%s)", p->mail_root, u->login,
                     semail_storage_backend_name(p->st));
    return 0;
}

static int step_container(tx *t, semail_provision *p, semail_user *u)
{
    char mount[4096];
    int err, port = 0;

    if (!p->containers_on)
        return 0;
    t->keys = 1;
    t->container = t->resumed; /* a failed create removes what it made, but not the old run's */
    if (semail__fmt(mount, sizeof(mount), "%s/%s", p->mail_root, u->login) < 0)
        return semail__err(SEMAIL_EINVAL, "mail_root too long");
    if ((err = p->ct.create(p->ct.self, u, mount, t->container_name, sizeof(t->container_name),
                            &port)) < 0)
        return err;
    t->container = 1;
    u->container = t->container_name;
    u->ssh_port = port;
    if ((err = semail_registry_update(p->state_dir, u)) < 0)
        return err;
    semail__prov_log(p, "container: %s, ssh port %d", t->container_name, port);
    return 0;
}

/* ---- the undo ---------------------------------------------------------------------- */

/* Undo what T made, newest first; stop at the first failure, keeping the record. */
static int undo(tx *t, semail_provision *p, const semail_user *u)
{
    int err = 0;

    t->container = t->container || (t->resumed && p->containers_on);
    if (t->container && (err = p->ct.remove(p->ct.self, u->login)) < 0)
        return err;
    if (!t->container && t->keys && (err = p->ct.forget(p->ct.self, u->login)) < 0)
        return err;
    if (t->container)
        semail__prov_log(p, "undo: container of %s removed", u->login);
    if ((t->storage || t->resumed) && (err = semail_storage_destroy(p->st, u->login)) < 0)
        return err;
    if (t->storage || t->resumed)
        semail__prov_log(p, "undo: storage of %s removed", u->login);
    if (t->dns && (err = semail_dns_remove_name_records(p->dns, u->domain)) < 0)
        return err;
    if (t->dns)
        semail__prov_log(p, "undo: DNS records of %s removed", u->domain);
    if (t->record && (err = semail_registry_remove(p->state_dir, u->login)) < 0)
        return err;
    if (t->record)
        semail__prov_log(p, "undo: record of %s removed", u->login);
    return 0;
}

/* Undo after ERR, keeping ERR and its message (and the undo's, when it failed too). */
static int fail_and_undo(tx *t, semail_provision *p, const semail_user *u, int err)
{
    char msg[1024];

    snprintf(msg, sizeof(msg), "%s", semail_error_last());
    if (undo(t, p, u) < 0)
        return semail__prov_err(
            err,
            "%s; undoing it failed too (%s): the record stays in state creating, "
            "run the create again or 'user delete %s'",
            msg, semail_error_last(), u->login);
    return semail__err(err, "%s", msg);
}

/* The crash hook: stop right after STEP as if the process had died. */
static int crashed(const semail_provision *p, semail__prov_step step)
{
    return p->crash_after != SEMAIL__PROV_STEP_NONE && p->crash_after == step;
}

/* ---- create -------------------------------------------------------------------------- */

static int run_create(tx *t, semail_provision *p, semail_user *u, semail_provision_result *res)
{
    static const semail__prov_step steps[] = {SEMAIL__PROV_STEP_RECORD, SEMAIL__PROV_STEP_DNS,
                                              SEMAIL__PROV_STEP_STORAGE,
                                              SEMAIL__PROV_STEP_CONTAINER};
    size_t i;
    int err = 0;

    for (i = 0; i < SEMAIL_ARRAY_LEN(steps); i++) {
        switch (steps[i]) {
        case SEMAIL__PROV_STEP_RECORD:
            err = step_record(t, p, u);
            break;
        case SEMAIL__PROV_STEP_DNS:
            err = step_dns(t, p, u, res);
            break;
        case SEMAIL__PROV_STEP_STORAGE:
            err = step_storage(t, p, u);
            break;
        default:
            err = step_container(t, p, u);
            break;
        }
        if (err < 0)
            return fail_and_undo(t, p, u, err);
        if (crashed(p, steps[i]))
            return semail__err(SEMAIL_ERROR, "crash simulated after step %d", (int)steps[i]);
    }
    u->state = SEMAIL_USER_ACTIVE;
    if ((err = semail_registry_update(p->state_dir, u)) < 0)
        return fail_and_undo(t, p, u, err);
    semail__prov_log(p, "registry: %s is active", u->login);
    return 0;
}

int semail_provision_create(semail_provision_result *out, semail_provision *p,
                            const semail_provision_request *req)
{
    semail_provision_result res;
    semail_user u;
    tx t;
    int err, lock = -1;

    memset(&t, 0, sizeof(t));
    memset(&res, 0, sizeof(res));
    if (p == NULL)
        return semail__err(SEMAIL_EINVAL, "user create: no context");
    if ((err = check_request(&t, &u, p, req)) < 0 ||
        (err = semail__prov_lock(p, u.login, &lock)) < 0 || (err = examine(&t, &u, p)) < 0 ||
        (err = check_directory(p, u.login)) < 0 || (err = run_create(&t, p, &u, &res)) < 0)
        goto done;
    (void)semail__fmt(res.address, sizeof(res.address), "%s@%s", u.id, u.domain);
    res.uid = u.uid;
    res.ssh_port = u.ssh_port;
    res.resumed = t.resumed;
    if (out != NULL)
        *out = res;
done:
    semail__prov_unlock(lock);
    return err;
}

/* ---- delete ---------------------------------------------------------------------------- */

static int delete_archive(semail_provision *p, const semail_user *u, const char *archive)
{
    semail_storage_state state;
    int err;

    if ((err = semail_storage_status(&state, p->st, u->login)) < 0)
        return err;
    if (state == SEMAIL_STORAGE_ABSENT) {
        semail__prov_log(p, "archive: the mail of %s is already gone, nothing archived", u->login);
        return 0;
    }
    if (state != SEMAIL_STORAGE_MOUNTED && (err = semail_storage_mount(p->st, u->login)) < 0)
        return err;
    if ((err = semail__prov_export(p, u->login, archive)) < 0)
        return err;
    semail__prov_log(p, "archive: mail of %s written to %s", u->login, archive);
    return 0;
}

static int delete_steps(semail_provision *p, const semail_user *u, const char *archive)
{
    int err;

    if (archive && (err = delete_archive(p, u, archive)) < 0)
        return err;
    if (p->containers_on) {
        if ((err = p->ct.remove(p->ct.self, u->login)) < 0)
            return err;
        semail__prov_log(p, "container: %s removed", u->login);
    } else if (u->container) {
        return semail__err(SEMAIL_ECONFIG,
                           "the box of '%s' has the container %s, but [containers] is not enabled",
                           u->login, u->container);
    }
    if ((err = semail_storage_destroy(p->st, u->login)) < 0)
        return err;
    semail__prov_log(p, "storage: %s/%s removed", p->mail_root, u->login);
    if (u->kind == SEMAIL_DOMAIN_SUBDOMAIN && p->dns) {
        if ((err = semail_dns_remove_name_records(p->dns, u->domain)) < 0)
            return semail__prov_err(err, "dns: %s", semail_error_last());
        semail__prov_log(p, "dns: records of %s removed", u->domain);
    }
    if ((err = semail_registry_remove(p->state_dir, u->login)) < 0)
        return err;
    semail__prov_log(p, "registry: %s removed", u->login);
    return 0;
}

int semail_provision_delete(semail_provision *p, const char *login, const char *archive)
{
    semail_registry *reg = NULL;
    const semail_user *old;
    semail_user u;
    int err, lock = -1;

    if (p == NULL || login == NULL)
        return semail__err(SEMAIL_EINVAL, "user delete: no context or login");
    if (semail_validate_name(login) < 0)
        return semail__prov_err(SEMAIL_EINVAL, "login %s", semail_error_last());
    if ((err = semail__prov_lock(p, login, &lock)) < 0 ||
        (err = semail__prov_find(&reg, &old, p, login)) < 0)
        goto done;
    u = *old;
    if (u.state != SEMAIL_USER_DELETING) {
        u.state = SEMAIL_USER_DELETING;
        if ((err = semail_registry_update(p->state_dir, &u)) < 0)
            goto done;
        semail__prov_log(p, "registry: %s is deleting, mail to %s@%s refused", login, u.id,
                         u.domain);
    }
    err = delete_steps(p, &u, archive);
done:
    semail_registry_free(reg);
    semail__prov_unlock(lock);
    return err;
}
