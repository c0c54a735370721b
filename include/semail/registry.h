/**
 * @file registry.h
 * @brief The user registry: who has a box, at which address, with what.
 *
 * The registry is one text file, `STATE_DIR/registry`, written by
 * `semail-admin` and read by the servers. Writers hold `STATE_DIR/registry.lock`
 * (flock) across read-modify-write, write a temporary file, fsync it,
 * rename it over the registry and fsync the directory: a reader always sees
 * a complete old or a complete new registry, and a crash loses nothing that
 * was reported done. A loaded ::semail_registry is an immutable snapshot that
 * any number of threads may read; semail_registry_changed() tells a server
 * cheaply when to load a new one.
 *
 * The file format (one record per line, `key=value` fields separated by
 * tabs, values percent-encoded) is described in `docs/registry.md`.
 */
#ifndef SEMAIL_REGISTRY_H
#define SEMAIL_REGISTRY_H

#include <sys/types.h>

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** How a person's address is hosted. */
typedef enum semail_domain_kind {
    SEMAIL_DOMAIN_SUBDOMAIN = 1, /**< `ID@SUB.<platform domain>`. */
    SEMAIL_DOMAIN_OWN = 2        /**< `ID@DOMAIN`, a domain the person owns. */
} semail_domain_kind;

/** Where a box is in its life. */
typedef enum semail_user_state {
    SEMAIL_USER_CREATING = 1, /**< `user create` started and has not finished. */
    SEMAIL_USER_ACTIVE = 2,   /**< Mail is accepted. */
    SEMAIL_USER_DELETING = 3  /**< `user delete` started and has not finished. */
} semail_user_state;

/** Version of ::semail_user known to these headers. */
#define SEMAIL_USER_VERSION 1

/**
 * One box. In a record returned by the registry every string is owned by the
 * registry snapshot; in a record passed in, by the caller (it is copied).
 * Optional strings are NULL when absent.
 */
typedef struct semail_user {
    unsigned int version;    /**< SEMAIL_USER_VERSION. */
    const char *login;       /**< Directory account, `[a-z0-9._-]`, 1-32 bytes, unique. */
    const char *id;          /**< Local part of the address, same rules as login. */
    const char *domain;      /**< Domain of the address, lower case. */
    semail_domain_kind kind; /**< Subdomain of the platform, or own domain. */
    uid_t uid;               /**< Owner of the person's files. */
    gid_t gid;               /**< Group of the person's files. */
    const char *storage;     /**< Storage backend: "image", "lvm" or "directory". */
    uint64_t size;           /**< Filesystem size in bytes (0: none). */
    const char *container;   /**< Container name, NULL without a container. */
    int ssh_port;            /**< Published SSH port, 0 without a container. */
    const char *ssh_keys;    /**< authorized_keys lines separated by LF, or NULL. */
    semail_user_state state; /**< Life-cycle state. */
    int64_t created;         /**< Creation time, seconds since the epoch. */
} semail_user;

/** An opaque, immutable snapshot of the registry. */
typedef struct semail_registry semail_registry;

/**
 * Load the registry of @p state_dir. A missing file is an empty registry.
 *
 * @param[out] out  the snapshot, freed with semail_registry_free().
 * @return 0; ::SEMAIL_EINVAL (a malformed record: the message names the
 *         line), ::SEMAIL_EIO, ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_registry_load(semail_registry **out, const char *state_dir);

/** Free a snapshot. NULL is accepted. */
SEMAIL_EXTERN void semail_registry_free(semail_registry *reg);

/**
 * Whether the file changed since @p reg was loaded (a cheap stat()).
 * @return 1 (changed or unreadable), 0 (same). Thread-safe.
 */
SEMAIL_EXTERN int semail_registry_changed(const semail_registry *reg);

/** Number of records. */
SEMAIL_EXTERN size_t semail_registry_count(const semail_registry *reg);

/** Record @p i (0-based, in login order), or NULL when out of range. */
SEMAIL_EXTERN const semail_user *semail_registry_get(const semail_registry *reg, size_t i);

/**
 * Find by login.
 * @return 0 and @p out set, or ::SEMAIL_ENOTFOUND.
 */
SEMAIL_EXTERN int semail_registry_find_login(const semail_user **out, const semail_registry *reg,
                                             const char *login);

/**
 * Find the box that receives mail for `local@domain` (both compared without
 * regard to ASCII case). Only boxes in state ::SEMAIL_USER_ACTIVE match.
 * @return 0 and @p out set, or ::SEMAIL_ENOTFOUND.
 */
SEMAIL_EXTERN int semail_registry_find_address(const semail_user **out, const semail_registry *reg,
                                               const char *local, const char *domain);

/**
 * Whether @p domain is served here: the domain of any record.
 * @return 1 or 0.
 */
SEMAIL_EXTERN int semail_registry_has_domain(const semail_registry *reg, const char *domain);

/**
 * Add a record. Fails when the login, the address or the uid is taken.
 * The record is validated (see semail_validate_name(), semail_validate_domain()).
 *
 * @return 0; ::SEMAIL_EEXISTS (names what is taken), ::SEMAIL_EINVAL,
 *         ::SEMAIL_ELOCKED, ::SEMAIL_EIO. Safe against concurrent writers in
 *         other threads and processes.
 */
SEMAIL_EXTERN int semail_registry_add(const char *state_dir, const semail_user *user);

/**
 * Replace the record with the same login (state changes, container, keys).
 * @return 0; ::SEMAIL_ENOTFOUND, ::SEMAIL_EEXISTS, ::SEMAIL_EINVAL,
 *         ::SEMAIL_ELOCKED, ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_registry_update(const char *state_dir, const semail_user *user);

/**
 * Remove the record of @p login.
 * @return 0; ::SEMAIL_ENOTFOUND, ::SEMAIL_ELOCKED, ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_registry_remove(const char *state_dir, const char *login);

/**
 * Pick a uid in [@p low, @p high] that no record uses.
 * @return 0 and @p out set, or ::SEMAIL_EFULL.
 */
SEMAIL_EXTERN int semail_registry_free_uid(uid_t *out, const semail_registry *reg, uid_t low,
                                           uid_t high);

/**
 * Check a login or an id: 1 to 32 bytes of `[a-z0-9._-]`, starting with a
 * letter or digit, no `..`.
 * @return 0 or ::SEMAIL_EINVAL with a message saying what is wrong.
 */
SEMAIL_EXTERN int semail_validate_name(const char *name);

/**
 * Check a DNS domain name: labels of 1-63 bytes of `[a-z0-9-]` (no leading
 * or trailing `-`), at least two labels, 253 bytes at most, lower case.
 * @return 0 or ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_validate_domain(const char *domain);

/**
 * Check a subdomain label: 1-63 bytes of `[a-z0-9-]`, no dot, no leading or
 * trailing `-`.
 * @return 0 or ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_validate_label(const char *label);

/**
 * A shared, self-refreshing view of the registry for servers: each
 * acquire returns the newest snapshot (reloading it when the file changed)
 * with a reference that release gives back, so that a snapshot in use is
 * never freed under a reader. All functions are thread-safe.
 */
typedef struct semail_registry_cache semail_registry_cache;

/**
 * Create a cache over @p state_dir and load the registry once.
 * @return 0 or the errors of semail_registry_load().
 */
SEMAIL_EXTERN int semail_registry_cache_new(semail_registry_cache **out, const char *state_dir);

/**
 * Take a reference on the current snapshot, reloading it first when the
 * file changed. When a reload fails the previous snapshot is kept (and the
 * error is left in semail_error_last() for the caller to log).
 *
 * @return 0 and @p out set, or a negative code when no snapshot exists.
 */
SEMAIL_EXTERN int semail_registry_cache_acquire(const semail_registry **out,
                                                semail_registry_cache *cache);

/** Give back a reference taken by semail_registry_cache_acquire(). */
SEMAIL_EXTERN void semail_registry_cache_release(semail_registry_cache *cache,
                                                 const semail_registry *reg);

/** Free the cache; every reference must have been released. NULL is accepted. */
SEMAIL_EXTERN void semail_registry_cache_free(semail_registry_cache *cache);

SEMAIL_END_DECLS

#endif
