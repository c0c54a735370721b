/**
 * @file provision.h
 * @brief A person's box as one transaction: `user create`, `user delete`
 *        and the operations around them (export, keys, resize, mount-all,
 *        dns check).
 *
 * semail_provision_create() runs these steps, each checked and each
 * idempotent:
 *
 *  1. check the input (login, id, subdomain or domain, SSH keys);
 *  2. when `[ldap]` is configured: the login exists in the directory;
 *  3. the registry record, in state ::SEMAIL_USER_CREATING (refused when the
 *     login, the address, the subdomain or the own domain is taken);
 *  4. a subdomain with `[dns] enabled`: its MX (to `[dns] mx_host`) and SPF
 *     (`v=spf1 mx -all`) records; an own domain: where its MX points now
 *     (reported, never a failure);
 *  5. the person's filesystem, made and mounted (storage.h);
 *  6. with `[containers] enabled`: the container, with the person's keys;
 *     its name and SSH port go into the record;
 *  7. the record in state ::SEMAIL_USER_ACTIVE: mail is accepted from then on.
 *
 * When step N fails, steps N-1 to 1 are undone in reverse order, so that a
 * failed create leaves nothing behind (no image, no mount, no container, no
 * DNS records, no record). A create interrupted by a crash leaves the
 * record in state creating; the same create run again finishes the job
 * (every step finds its work done or completes it).
 *
 * semail_provision_delete() marks the record ::SEMAIL_USER_DELETING (mail is
 * refused from then on: only active boxes receive), optionally archives the
 * mail, then removes the container, the filesystem, the DNS records and the
 * record, in that order. Interrupted, it is finished by running it again.
 *
 * Concurrency: each operation on a login holds `STATE_DIR/locks/LOGIN.lock`
 * (flock) for its whole length, so two processes never work on the same box
 * at once; a second one waits up to ::SEMAIL_PROVISION_LOCK_WAIT_MS and
 * then fails with ::SEMAIL_ELOCKED. One ::semail_provision handle must not be
 * used by two threads at once. Everything here needs root (mounts, loop
 * devices, chown) except semail_provision_dns_check().
 */
#ifndef SEMAIL_PROVISION_H
#define SEMAIL_PROVISION_H

#include <sys/types.h>

#include "semail/common.h"
#include "semail/config.h"
#include "semail/dns.h"
#include "semail/errors.h"
#include "semail/registry.h"

SEMAIL_BEGIN_DECLS

/** An opaque provisioning context: the configuration and the handles made from it. */
typedef struct semail_provision semail_provision;

/** How long an operation waits for another one on the same login, in milliseconds. */
#define SEMAIL_PROVISION_LOCK_WAIT_MS 10000u

/** The SPF text given to a subdomain. */
#define SEMAIL_PROVISION_SPF "v=spf1 mx -all"

/** Largest set of SSH keys accepted for one person, in bytes. */
#define SEMAIL_PROVISION_KEYS_MAX (16u * 1024u)

/**
 * A log callback: one line, without an end of line, about a step done or
 * undone ("dns: added MX and SPF for alice.semail.test").
 */
typedef void (*semail_provision_log_cb)(const char *line, void *payload);

/**
 * Make a provisioning context from a loaded configuration: the storage
 * handle (`[storage]`), the DNS updater (`[dns]`, when enabled), the
 * directory options (`[ldap]`, when the section exists), the container
 * engine (`[containers]`, when enabled). Nothing is changed on disk and
 * nothing is sent.
 *
 * @param[out] out  the context, freed with semail_provision_free().
 * @param cfg       the configuration; it must outlive the context.
 * @return 0; ::SEMAIL_ECONFIG (a section that cannot be used: the message
 *         names the key, e.g. containers enabled in a libsemail built
 *         without a container engine); the errors of
 *         semail_storage_new_from_config(), semail_dns_updater_new() (the
 *         TSIG key file) and semail_ldap_options_from_config();
 *         ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_provision_new(semail_provision **out, const semail_config *cfg);

/** Free a context (nothing on disk changes). NULL is accepted. */
SEMAIL_EXTERN void semail_provision_free(semail_provision *p);

/**
 * Receive a line for every step done or undone (NULL: none, the default).
 * @p payload is passed back as is.
 */
SEMAIL_EXTERN void semail_provision_set_log(semail_provision *p, semail_provision_log_cb cb,
                                            void *payload);

/** Version of ::semail_provision_request known to these headers. */
#define SEMAIL_PROVISION_REQUEST_VERSION 1

/** What `user create` asks for. The strings are borrowed for the call. */
typedef struct semail_provision_request {
    unsigned int version; /**< ::SEMAIL_PROVISION_REQUEST_VERSION. */
    const char *login;    /**< The directory account (semail_validate_name()). */
    const char *id;       /**< The local part of the address (semail_validate_name()). */
    /** A label under the platform's domain (`[global] domain`): `ID@SUB.DOMAIN`. */
    const char *subdomain;
    /** Or a domain the person owns: `ID@DOMAIN`. Exactly one of the two is set. */
    const char *domain;
    /**
     * `authorized_keys` lines separated by LF (ssh-ed25519, ssh-rsa,
     * ecdsa-sha2-*, sk-*), at most ::SEMAIL_PROVISION_KEYS_MAX bytes; NULL: none.
     */
    const char *ssh_keys;
    uint64_t size; /**< Filesystem size in bytes; 0: `[storage] default_size`. */
} semail_provision_request;

/** Static initializer of ::semail_provision_request. */
#define SEMAIL_PROVISION_REQUEST_INIT                                                              \
    {                                                                                              \
        .version = SEMAIL_PROVISION_REQUEST_VERSION                                                \
    }

/** Size of semail_provision_result::address. */
#define SEMAIL_PROVISION_ADDRESS_MAX 320

/** What a create made. */
typedef struct semail_provision_result {
    char address[SEMAIL_PROVISION_ADDRESS_MAX]; /**< `id@domain`. */
    uid_t uid;                                  /**< The person's uid. */
    int ssh_port; /**< The published SSH port; 0 without a container. */
    int resumed;  /**< 1 when an interrupted create was finished. */
    /**
     * 1 when @ref semail_provision_result::dns "dns" holds where an own
     * domain's MX points (own domain and `[dns] enabled`); 0 otherwise.
     */
    int dns_checked;
    semail_dns_mx_check dns; /**< The verdict for an own domain. */
} semail_provision_result;

/**
 * Create the box of a person, or finish an interrupted creation (see the
 * file comment for the steps).
 *
 * @param[out] out  what was made (may be NULL); set when 0 is returned.
 * @param p         the context.
 * @param req       the request.
 * @return 0 (the box is active);
 *         ::SEMAIL_EINVAL (bad input: the message names the field and the
 *         rule, e.g. "subdomain 'a.b': ...");
 *         ::SEMAIL_EEXISTS (the login has a box, or the address, subdomain
 *         or own domain is taken, or the DNS name already has records, or
 *         the box's filesystem exists without a record: the message says
 *         which);
 *         ::SEMAIL_ENOTFOUND (`[ldap]`: no such person in the directory);
 *         ::SEMAIL_ELOCKED (another operation on the login runs);
 *         ::SEMAIL_EFULL (no free uid, port, or space);
 *         ::SEMAIL_ETEMP (DNS server, directory or engine unreachable, no
 *         free loop device);
 *         or another step's error. On failure everything this call and the
 *         interrupted one made is undone; when an undo step itself fails,
 *         the record stays in state creating (the message says so) and a
 *         later create or delete finishes.
 */
SEMAIL_EXTERN int semail_provision_create(semail_provision_result *out, semail_provision *p,
                                          const semail_provision_request *req);

/**
 * Delete the box of @p login (or finish an interrupted delete): mark it
 * deleting, archive the mail to @p archive when not NULL (see
 * semail_provision_export()), remove the container, the filesystem, the
 * DNS records of a subdomain, and the record.
 *
 * @return 0; ::SEMAIL_ENOTFOUND (no box); ::SEMAIL_EINVAL; ::SEMAIL_ELOCKED;
 *         ::SEMAIL_ETEMP (busy filesystem, DNS or engine unreachable); the
 *         errors of each step. A failure leaves the record in state deleting
 *         (mail stays refused) and the mail in place when the archive failed.
 */
SEMAIL_EXTERN int semail_provision_delete(semail_provision *p, const char *login,
                                          const char *archive);

/**
 * Write the mail of @p login (the tree `mail_root/LOGIN`, entries named
 * `LOGIN/...`) as a tar archive (pax format) to @p path: gzip-compressed
 * when @p path ends in `.tar.gz` or `.tgz`, plain when it ends in `.tar`.
 * Symbolic links are stored as links, never followed; devices, FIFOs and
 * sockets are skipped. The archive is written to a temporary file beside
 * @p path, flushed and renamed over it, so @p path is a complete archive or
 * untouched.
 *
 * @return 0; ::SEMAIL_EINVAL (another extension); ::SEMAIL_ENOTFOUND (no box,
 *         or its filesystem is not mounted); ::SEMAIL_ELOCKED; ::SEMAIL_EIO;
 *         ::SEMAIL_EFULL; ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_provision_export(semail_provision *p, const char *login, const char *path);

/**
 * Replace the SSH keys of @p login: in the record, and in the running
 * container when the box has one.
 *
 * @param keys  as semail_provision_request::ssh_keys; NULL or "": no key.
 * @return 0; ::SEMAIL_EINVAL (a line that is not a public key);
 *         ::SEMAIL_ENOTFOUND; ::SEMAIL_ELOCKED; the container engine's errors.
 */
SEMAIL_EXTERN int semail_provision_set_keys(semail_provision *p, const char *login,
                                            const char *keys);

/**
 * Grow the filesystem of @p login to @p size bytes and record the size
 * (only once grown). When the storage cannot grow it while the box's
 * container holds it (::SEMAIL_ETEMP: the on-line grow was refused), the
 * container is stopped, the filesystem grown off line, and the container
 * started again (same SSH port), also when the grow failed.
 *
 * @return 0; the errors of semail_storage_resize(); ::SEMAIL_ENOTFOUND;
 *         ::SEMAIL_ELOCKED; the container engine's errors (a container
 *         that did not start again after a good grow: the size is
 *         recorded, semail_provision_mount_all() starts it).
 */
SEMAIL_EXTERN int semail_provision_resize(semail_provision *p, const char *login, uint64_t size);

/**
 * After a reboot: mount the filesystem of every active box and start its
 * container. A box whose filesystem had to be mounted gets its container
 * restarted (stopped, started: same SSH port), since the engine may have
 * started it (restart policy) on the empty mount point before the mount;
 * a box mounted already keeps its running container. A box that fails
 * does not stop the others; each is logged through the log callback.
 *
 * @param[out] failed  number of boxes that failed (may be NULL).
 * @return 0 when every box is up; the error of the last box that failed
 *         otherwise; ::SEMAIL_EIO when the registry cannot be read.
 */
SEMAIL_EXTERN int semail_provision_mount_all(semail_provision *p, size_t *failed);

/**
 * Where does the MX of @p domain point? With `[dns] mx_host` as the
 * platform's MX host and the resolver of `[outbound] resolver` (empty:
 * `/etc/resolv.conf`). See semail_dns_check_mx().
 *
 * @return as semail_dns_check_mx(); the errors of semail_resolver_new().
 */
SEMAIL_EXTERN int semail_provision_dns_check(semail_dns_mx_check *out, semail_provision *p,
                                             const char *domain);

/**
 * Check a set of SSH public keys (see semail_provision_request::ssh_keys):
 * each non-empty line that does not start with `#` is `TYPE BASE64
 * [COMMENT]` of printable ASCII.
 *
 * @return 0 or ::SEMAIL_EINVAL with the number of the first bad line.
 *         Thread-safe.
 */
SEMAIL_EXTERN int semail_provision_check_keys(const char *keys);

/**
 * Add a person to the platform's own directory (the demo's slapd): an
 * `inetOrgPerson` entry `uid=LOGIN,<[ldap] base>` with `cn` (@p name, or
 * the login), `sn`, and the password, written as the account of `[ldap]
 * search_dn` (which must have write access: the rootdn in the default
 * deployment). The password is sent as is, over the configured URI, and
 * the server stores it (slapd hashes it with `password-hash` when set).
 *
 * @return 0; ::SEMAIL_EEXISTS (the entry exists); ::SEMAIL_ENOTFOUND (no
 *         `[ldap]`); ::SEMAIL_EPERM (the directory refused the write);
 *         ::SEMAIL_EINVAL (a bad login, an empty password or a name with
 *         control characters); ::SEMAIL_ETEMP (unreachable). Thread-safe.
 */
SEMAIL_EXTERN int semail_provision_ldap_add_person(semail_provision *p, const char *login,
                                                   const char *password, const char *name);

SEMAIL_END_DECLS

#endif
