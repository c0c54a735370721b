/*
 * provision_ctx.h - the provisioning context and the helpers that the
 * transactions (provision.c) and the other operations (provision_ops.c)
 * share: the per-login lock, finding a record, logging.
 *
 * Contract: every helper records its error (semail__err) and returns a
 * negative SEMAIL_E* code; none keeps state outside the context.
 */
#ifndef SEMAIL_PROVISION_CTX_H
#define SEMAIL_PROVISION_CTX_H

#include "provision_internal.h"
#include "semail/dns.h"
#include "semail/ldap.h"
#include "semail/registry.h"
#include "semail/storage.h"

struct semail_provision {
    const semail_config *cfg;
    const char *state_dir, *mail_root, *domain, *mx_host;
    uint64_t default_size;
    uid_t uid_lo, uid_hi;
    semail_storage *st;
    semail_dns_updater *dns; /* NULL: [dns] enabled = no */
    int ldap_on;
    semail_ldap_options ldap;
    char ldap_password[512];
    int containers_on;
    semail__prov_containers ct;
    semail_provision_log_cb log;
    void *log_payload;
    semail__prov_step crash_after;
};

/* Pass one line to the log callback, if any. */
SEMAIL_HIDDEN void semail__prov_log(const semail_provision *p, const char *fmt, ...)
    SEMAIL_PRINTF(2, 3);

/* Take STATE_DIR/locks/LOGIN.lock, waiting up to SEMAIL_PROVISION_LOCK_WAIT_MS. */
SEMAIL_HIDDEN int semail__prov_lock(semail_provision *p, const char *login, int *fd);
/* Release a lock taken by semail__prov_lock (-1: none). */
SEMAIL_HIDDEN void semail__prov_unlock(int fd);

/*
 * Load the registry and find LOGIN's record, which must use the configured
 * storage backend. *REG is to be freed by the caller (also on failure).
 */
SEMAIL_HIDDEN int semail__prov_find(semail_registry **reg, const semail_user **out,
                                    semail_provision *p, const char *login);

/* Archive the (mounted) mail of LOGIN to PATH; the caller holds the lock. */
SEMAIL_HIDDEN int semail__prov_export(semail_provision *p, const char *login, const char *path);

#endif
