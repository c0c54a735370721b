/**
 * @file sys/storage.h
 * @brief The storage backend interface: a struct of function pointers.
 *
 * This is the plug-in side of storage.h, with a weaker stability promise
 * than the rest of the API (libgit2's `sys/` headers): a new
 * ::SEMAIL_STORAGE_BACKEND_VERSION may add or change members, and a backend
 * built against an older version is refused, never misread.
 *
 * The dispatch layer (semail_storage_create() and the others) does what is
 * common to every backend before it calls one: it validates the login with
 * semail_validate_name(), opens `mail_root` as an `O_DIRECTORY` descriptor,
 * builds the mount point's path, checks a size against
 * ::SEMAIL_STORAGE_MIN_SIZE; after a successful create it applies the
 * ownership, mode and default ACL to the mount point's root. A backend only
 * makes, mounts, grows and removes its file system; every operation must be
 * idempotent (see storage.h). A backend records its errors with a message
 * (see errors.h) and returns a negative ::semail_err code.
 */
#ifndef SEMAIL_SYS_STORAGE_H
#define SEMAIL_SYS_STORAGE_H

#include <sys/types.h>

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/storage.h"

SEMAIL_BEGIN_DECLS

/** Version of ::semail_storage_backend known to these headers. */
#define SEMAIL_STORAGE_BACKEND_VERSION 1

/**
 * The box an operation is about, as the dispatch layer prepared it. Every
 * member is owned by the dispatch layer and valid only during the call.
 */
typedef struct semail_storage_box {
    const char *login; /**< Validated: one safe path component. */
    int mail_root_fd;  /**< `O_DIRECTORY` descriptor of mail_root; the mount point is `login` under
                          it. */
    const char
        *mail_root; /**< mail_root with symbolic links resolved (for messages and mount tables). */
    const char *path; /**< `mail_root/login`, the mount point (same resolution). */
    uid_t uid;        /**< Owner for a create; (uid_t)-1 in other operations. */
    gid_t gid;        /**< Group for a create; (gid_t)-1 in other operations. */
} semail_storage_box;

/**
 * A storage backend. Each operation gets the backend's own state (made by
 * @ref semail_storage_backend::open "open") and the box.
 */
typedef struct semail_storage_backend {
    unsigned int version; /**< SEMAIL_STORAGE_BACKEND_VERSION. */
    const char *name;     /**< Short name ("image"), as in the `[storage] backend` key. */

    /**
     * Make the backend's state from the options (copy what is kept).
     * @return 0 or a negative code; on failure *@p out is not set.
     */
    int (*open)(void **out, const semail_storage_options *opts);
    /** Free the state made by open. */
    void (*close)(void *self);

    /**
     * Make (or finish making) the file system of @p box, @p size bytes, and
     * mount it at `box->path`. The dispatch layer then sets the ownership.
     */
    int (*create)(void *self, const semail_storage_box *box, uint64_t size);
    /** Mount an existing file system; already mounted: 0; none: ::SEMAIL_ENOTFOUND. */
    int (*mount)(void *self, const semail_storage_box *box);
    /** Unmount; not mounted: 0. */
    int (*unmount)(void *self, const semail_storage_box *box);
    /** Unmount and remove everything of the box, the mount point included; none: 0. */
    int (*destroy)(void *self, const semail_storage_box *box);
    /** Grow to @p size bytes; smaller than now: ::SEMAIL_EINVAL. */
    int (*resize)(void *self, const semail_storage_box *box, uint64_t size);
    /** Fill @p out; not mounted or absent: ::SEMAIL_ENOTFOUND. */
    int (*usage)(void *self, const semail_storage_box *box, semail_storage_usage *out);
    /** Tell what exists of the box. */
    int (*status)(void *self, const semail_storage_box *box, semail_storage_state *out);
} semail_storage_backend;

/**
 * Make a storage handle over a backend of the caller's (tests, other
 * volume managers). @p backend must stay valid as long as the handle;
 * `opts->backend` is ignored.
 *
 * @param[out] out  the handle, freed with semail_storage_free().
 * @return 0; ::SEMAIL_EINVAL (a backend version or member missing, bad
 *         options); ::SEMAIL_ENOMEM; or what the backend's open returns.
 */
SEMAIL_EXTERN int semail_storage_new_backend(semail_storage **out,
                                             const semail_storage_backend *backend,
                                             const semail_storage_options *opts);

SEMAIL_END_DECLS

#endif
