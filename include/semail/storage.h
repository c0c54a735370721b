/**
 * @file storage.h
 * @brief A person's own filesystem, mounted at `mail_root/LOGIN`.
 *
 * One interface over three backends, chosen by `[storage] backend`:
 *
 * - `image`: an ext4 file system in the sparse file `image_dir/LOGIN.img`,
 *   attached to a free loop device (detached again by the kernel when it is
 *   unmounted) and mounted `nosuid,nodev,noexec` at `mail_root/LOGIN`;
 * - `lvm`: an ext4 file system on the logical volume `VG/semail-LOGIN`;
 * - `directory`: a plain directory `mail_root/LOGIN`, no separate file
 *   system, no size limit.
 *
 * With `image` and `lvm` the size of the file system is the person's quota:
 * when it is full, appends fail with ENOSPC and the inbound server answers
 * 452. The root of the mounted file system (or the directory) gets the
 * owner, mode and default ACL of `docs/decisions.md`, "Who owns the mail".
 *
 * Every operation is idempotent: create finishes a create interrupted
 * half-way, mount of a mounted box and unmount of an unmounted one succeed,
 * destroy of an absent box succeeds. A create that fails on a box that did
 * not exist before the call leaves nothing behind.
 *
 * Logins are checked with semail_validate_name() before any path is built;
 * no operation follows a symbolic link at `mail_root/LOGIN` or at the image.
 * All operations except semail_storage_usage() and semail_storage_status()
 * need root (CAP_SYS_ADMIN for mounts and loop devices, CAP_CHOWN).
 *
 * A ::semail_storage handle may be used by several threads at once, but two
 * operations on the same login must not run concurrently (callers hold a
 * per-login lock, as `semail-admin` does).
 */
#ifndef SEMAIL_STORAGE_H
#define SEMAIL_STORAGE_H

#include <sys/types.h>

#include "semail/common.h"
#include "semail/config.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** An opaque storage handle: a backend and its settings. */
typedef struct semail_storage semail_storage;

/** Version of ::semail_storage_options known to these headers. */
#define SEMAIL_STORAGE_OPTIONS_VERSION 1

/** Where the search for `mkfs.ext4`, `resize2fs`, `e2fsck` and the LVM tools looks by default. */
#define SEMAIL_STORAGE_TOOL_PATH "/usr/sbin:/sbin:/usr/bin:/bin"

/** The smallest size accepted for an `image` or `lvm` box: 8 MiB. */
#define SEMAIL_STORAGE_MIN_SIZE (8u * 1024u * 1024u)

/** Settings of a storage handle. Strings are copied by semail_storage_new(). */
typedef struct semail_storage_options {
    unsigned int version;  /**< SEMAIL_STORAGE_OPTIONS_VERSION. */
    const char *backend;   /**< "image", "lvm" or "directory"; NULL: "image". */
    const char *mail_root; /**< Directory holding the mount points; required, must exist. */
    const char *image_dir; /**< Where `LOGIN.img` files live; NULL: "/var/lib/semail/images". */
    const char *lvm_vg;    /**< The LVM volume group; NULL: "semail". */
    uint64_t default_size; /**< Size used when a create passes 0; 0: 1 GiB. */
    const char *mail_user; /**< The daemons' `[global] user`; NULL or "": they stay root. */
    const char *tool_path; /**< Colon-separated directories searched for the tools; NULL:
                              ::SEMAIL_STORAGE_TOOL_PATH. */
} semail_storage_options;

/** Static initializer: every setting at its default (mail_root still to set). */
#define SEMAIL_STORAGE_OPTIONS_INIT                                                                \
    {                                                                                              \
        SEMAIL_STORAGE_OPTIONS_VERSION, NULL, NULL, NULL, NULL, 0, NULL, NULL                      \
    }

/**
 * Initialize @p opts as ::SEMAIL_STORAGE_OPTIONS_INIT does.
 * @return 0 or ::SEMAIL_EINVAL (NULL @p opts). Thread-safe.
 */
SEMAIL_EXTERN int semail_storage_options_init(semail_storage_options *opts);

/**
 * Make a storage handle for the backend named in @p opts.
 *
 * Nothing on disk is touched; paths are checked when used.
 *
 * @param[out] out  the handle, freed with semail_storage_free().
 * @return 0; ::SEMAIL_EINVAL (unknown backend, no mail_root, a relative
 *         path, a bad volume group name, a version this library does not
 *         know), ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_storage_new(semail_storage **out, const semail_storage_options *opts);

/**
 * Make a storage handle from `[storage]` (backend, image_dir, lvm_vg,
 * default_size) and `[global]` (mail_root, user) of @p cfg.
 *
 * @return as semail_storage_new(). Thread-safe.
 */
SEMAIL_EXTERN int semail_storage_new_from_config(semail_storage **out, const semail_config *cfg);

/** Free a handle (nothing on disk changes). NULL is accepted. */
SEMAIL_EXTERN void semail_storage_free(semail_storage *st);

/**
 * The backend's name: "image", "lvm", "directory", or the name of a backend
 * given to semail_storage_new_backend(). Owned by @p st.
 */
SEMAIL_EXTERN const char *semail_storage_backend_name(const semail_storage *st);

/**
 * Make the box of @p login and mount it at `mail_root/LOGIN`: the image
 * file or volume of @p size bytes, its ext4 file system, the mount; then
 * give its root to @p uid (see the file comment for group, mode and ACL).
 *
 * Resumes a create interrupted half-way; on a complete box it only applies
 * the ownership again (an existing file system keeps its size: see
 * semail_storage_resize()). When the box did not exist before the call, a
 * failure removes everything the call made.
 *
 * @param size  bytes; 0: the default size. Ignored by `directory`.
 * @return 0; ::SEMAIL_EINVAL (bad login, size below ::SEMAIL_STORAGE_MIN_SIZE);
 *         ::SEMAIL_EEXISTS (another file system is mounted at the mount point,
 *         or it holds files, or it is not a directory);
 *         ::SEMAIL_ETEMP (no free loop device); ::SEMAIL_EFULL (no space for
 *         the image or volume); ::SEMAIL_ENOTFOUND (mail_root, or a tool such
 *         as `mkfs.ext4`, is missing); ::SEMAIL_EPERM (not root);
 *         ::SEMAIL_EIO. The message says which step failed.
 */
SEMAIL_EXTERN int semail_storage_create(semail_storage *st, const char *login, uid_t uid, gid_t gid,
                                        uint64_t size);

/**
 * Mount the existing box of @p login at `mail_root/LOGIN` (after a reboot:
 * `semail-admin mount-all`). Already mounted: success.
 *
 * @return 0; ::SEMAIL_ENOTFOUND (no such box); ::SEMAIL_EEXISTS (the mount
 *         point is taken by another file system, or holds files that the
 *         mount would hide); ::SEMAIL_ETEMP (no free loop device);
 *         ::SEMAIL_EPERM; ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_storage_mount(semail_storage *st, const char *login);

/**
 * Unmount the box of @p login; the image backend's loop device is freed.
 * Not mounted (or no box): success. `directory`: nothing to do.
 *
 * @return 0; ::SEMAIL_ETEMP (the file system is busy: a process or a
 *         container still uses it); ::SEMAIL_EPERM; ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_storage_unmount(semail_storage *st, const char *login);

/**
 * Unmount and remove the box of @p login: the image file or volume, the
 * mount point, and with it all the mail. No box: success.
 *
 * @return 0; ::SEMAIL_ETEMP (busy); ::SEMAIL_EPERM; ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_storage_destroy(semail_storage *st, const char *login);

/**
 * Grow the box of @p login to @p size bytes, mounted or not (the file
 * system is grown on line when mounted). The same size again: success.
 * `directory`: nothing to do (no size).
 *
 * `image`: where the kernel refuses the on-line grow (no CAP_SYS_RESOURCE),
 * the file system is unmounted, grown off line and mounted again. A
 * failure leaves the image at its old size (unless its file system did
 * grow) and the box mounted as it was.
 *
 * @return 0; ::SEMAIL_EINVAL (smaller than the current size: shrinking is
 *         refused); ::SEMAIL_ENOTFOUND (no such box); ::SEMAIL_ETEMP (the
 *         on-line grow was refused and the file system is busy, or still
 *         mounted elsewhere once unmounted here, as by a container's bind
 *         mount: nothing grown, stop the holder and retry); ::SEMAIL_EFULL;
 *         ::SEMAIL_EPERM; ::SEMAIL_EIO.
 */
SEMAIL_EXTERN int semail_storage_resize(semail_storage *st, const char *login, uint64_t size);

/** Space of one box, in bytes. */
typedef struct semail_storage_usage {
    uint64_t used;  /**< Bytes in use. */
    uint64_t total; /**< Bytes the person may use in all; 0: no limit (`directory`). */
} semail_storage_usage;

/**
 * How much of its space the box of @p login uses (for the web page). The
 * box must be mounted (`directory`: exist).
 *
 * @param[out] out  the usage.
 * @return 0; ::SEMAIL_ENOTFOUND (no box, or not mounted: the message says
 *         which); ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_storage_usage_get(semail_storage_usage *out, semail_storage *st,
                                           const char *login);

/** What exists of a box. */
typedef enum semail_storage_state {
    SEMAIL_STORAGE_ABSENT = 0,     /**< Nothing: no image or volume, no mount point. */
    SEMAIL_STORAGE_INCOMPLETE = 1, /**< Leftovers of an interrupted create or destroy. */
    SEMAIL_STORAGE_UNMOUNTED = 2,  /**< The file system exists and is not mounted. */
    SEMAIL_STORAGE_MOUNTED = 3     /**< Ready for mail (`directory`: the directory exists). */
} semail_storage_state;

/**
 * What exists of the box of @p login; `exists` is `state != ABSENT`.
 *
 * @param[out] out  the state.
 * @return 0; ::SEMAIL_EINVAL (bad login); ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_storage_status(semail_storage_state *out, semail_storage *st,
                                        const char *login);

/** A short static name of a state: "absent", "incomplete", "unmounted", "mounted". */
SEMAIL_EXTERN const char *semail_storage_state_name(semail_storage_state state);

SEMAIL_END_DECLS

#endif
