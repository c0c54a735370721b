/**
 * @file container.h
 * @brief Each person's own container: sshd with their keys and uid, `~/mail` mounted.
 *
 * libsemail talks to a container engine over its Engine API socket (Docker,
 * or podman's Docker-compatible service: both speak the same API, so there
 * is one implementation and no backend interface). The container of LOGIN
 * is named `semail-LOGIN` and carries the label `semail.user=LOGIN`; it runs
 * the user image (semail_image_build()), whose entrypoint creates the user
 * with the given uid and gid and runs sshd, key-only, no root login.
 *
 * Host side, per person, under the handle's `keys_dir/LOGIN/`:
 * - `authorized/authorized_keys`: the person's public keys; the
 *   *directory* is bind-mounted read-only at `/etc/semail/authorized`, so
 *   that semail_container_set_keys(), which replaces the file by rename,
 *   reaches a running container at once;
 * - `host/ssh_host_ed25519_key`: the container's SSH host key, made once
 *   with `ssh-keygen` and mounted read-only at `/etc/semail/hostkeys`, so
 *   that `known_hosts` entries survive a re-created container.
 *
 * The container gets the resource limits of the handle (memory without
 * extra swap, pids, CPUs), restarts unless stopped (so after a reboot),
 * drops every capability but the few sshd needs, runs with
 * `no-new-privileges`, and is never privileged. Its SSH port is published
 * on `ssh_listen` at a port of `ssh_port_range`.
 *
 * Every operation is idempotent: create of an existing container of the
 * same person with the same settings finishes the job (starts it), delete of
 * an absent one succeeds. A create that fails removes the container it made.
 *
 * A handle may be used by several threads at once; two operations on the
 * same login must not run concurrently (callers hold a per-login lock, as
 * `semail-admin` does). Two creates that pick the same free port at once are
 * resolved: the engine refuses the second at start, which then takes
 * another port.
 */
#ifndef SEMAIL_CONTAINER_H
#define SEMAIL_CONTAINER_H

#include <sys/types.h>

#include "semail/common.h"
#include "semail/config.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** An opaque handle on a container engine and the settings of the containers. */
typedef struct semail_container_engine semail_container_engine;

/** Version of ::semail_container_options known to these headers. */
#define SEMAIL_CONTAINER_OPTIONS_VERSION 1

/** The Engine API socket used when none is configured. */
#define SEMAIL_CONTAINER_DEFAULT_ENGINE "/run/docker.sock"
/** The user image used when none is configured. */
#define SEMAIL_CONTAINER_DEFAULT_IMAGE "semail/user:latest"
/** Where the per-person key directories live when none is configured. */
#define SEMAIL_CONTAINER_DEFAULT_KEYS_DIR "/var/lib/semail/keys"
/** The largest authorized_keys text accepted: 64 KiB. */
#define SEMAIL_CONTAINER_KEYS_MAX (64u * 1024u)

/** Settings of an engine handle. Strings are copied by semail_container_engine_new(). */
typedef struct semail_container_options {
    unsigned int version; /**< SEMAIL_CONTAINER_OPTIONS_VERSION. */
    const char *engine;   /**< Absolute path of the Engine API socket; NULL: the default. */
    const char *image;    /**< Image of new containers; NULL: ::SEMAIL_CONTAINER_DEFAULT_IMAGE. */
    const char
        *ssh_listen;       /**< Numeric host address SSH ports are published on; NULL: "0.0.0.0". */
    unsigned int port_low; /**< First port of the range; 0 (with port_high 0): 22000. */
    unsigned int port_high;  /**< Last port of the range; 0: 22999. */
    uint64_t memory;         /**< Memory limit in bytes (swap included); 0: 256 MiB. */
    uint64_t pids;           /**< Most processes in a container; 0: 256. */
    uint64_t nano_cpus;      /**< CPU share in 10^-9 CPUs (500000000: half a CPU); 0: half a CPU. */
    unsigned int timeout_ms; /**< Bound on each Engine API request; 0: 60000. */
    const char *keys_dir;    /**< Absolute directory of the per-person key directories (made
                                when missing, its parent must exist); NULL: the default. */
} semail_container_options;

/** Static initializer: every setting at its default. */
#define SEMAIL_CONTAINER_OPTIONS_INIT                                                              \
    {                                                                                              \
        SEMAIL_CONTAINER_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, NULL                 \
    }

/**
 * Initialize @p opts as ::SEMAIL_CONTAINER_OPTIONS_INIT does.
 * @return 0 or ::SEMAIL_EINVAL (NULL @p opts). Thread-safe.
 */
SEMAIL_EXTERN int semail_container_options_init(semail_container_options *opts);

/**
 * Make an engine handle. Nothing is sent to the engine yet.
 *
 * @param[out] out  the handle, freed with semail_container_engine_free().
 * @param opts      the settings; NULL: all defaults.
 * @return 0; ::SEMAIL_EINVAL (a relative path, a port range outside
 *         1-65535 or upside down, a listen address that is not numeric, an
 *         unknown options version); ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_engine_new(semail_container_engine **out,
                                              const semail_container_options *opts);

/**
 * Make an engine handle from `[containers]` (engine, image, ssh_listen,
 * ssh_port_range, memory, pids, cpus) of @p cfg; the key directories go to
 * `[global] state_dir` + `/keys`.
 *
 * @return as semail_container_engine_new(); ::SEMAIL_ECONFIG for a value
 *         out of range. `[containers] enabled` is not looked at: that is the
 *         caller's decision. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_engine_new_from_config(semail_container_engine **out,
                                                          const semail_config *cfg);

/** Free a handle (containers are not touched). NULL is accepted. */
SEMAIL_EXTERN void semail_container_engine_free(semail_container_engine *e);

/**
 * Ask the engine whether it answers (`GET /_ping`).
 * @return 0; ::SEMAIL_ETEMP (no engine on the socket, or no answer in time);
 *         ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_engine_ping(semail_container_engine *e);

/** What a person's container is made of. Strings are read during the call only. */
typedef struct semail_container_spec {
    const char *login;    /**< The person; must pass semail_validate_name(). */
    uid_t uid;            /**< Their uid in the container (not 0). */
    gid_t gid;            /**< Their primary gid in the container (not 0). */
    const char *mail_dir; /**< Absolute host directory (their mounted file system), bind-mounted
                             read-write at `/home/LOGIN/mail`; it must exist. */
    const char *ssh_keys; /**< authorized_keys text (printable ASCII, tabs, line feeds; at most
                             ::SEMAIL_CONTAINER_KEYS_MAX bytes); NULL or "": no key (nobody can log
                             in until semail_container_set_keys()). */
    const char *host_keys_dir; /**< Absolute host directory of the SSH host key, made and filled
                                  when missing; NULL: `keys_dir/LOGIN/host`. */
    unsigned int ssh_port;     /**< Host port to publish SSH on; 0: a free one of the range. */
} semail_container_spec;

/**
 * Make and start the container of `spec->login`.
 *
 * Writes the keys (see the file comment), makes the host key when missing,
 * creates `semail-LOGIN` and starts it. With `ssh_port` 0 the port is one of
 * the range that no semail container uses and that can be bound now; when
 * the engine still finds it taken at start (another program or a concurrent
 * create took it), the container is removed and another port is tried, a
 * bounded number of times.
 *
 * When the container exists already, is ours (label `semail.user`) and
 * was made with the same uid, gid, mail_dir, image, limits and (when given)
 * port, the call only starts it if it is not running: running it again
 * finishes an interrupted create.
 *
 * @param[out] port_out  the host port SSH is published on; may be NULL.
 * @return 0; ::SEMAIL_EINVAL (a bad spec, or the engine refused the
 *         request: the message carries its reason); ::SEMAIL_EEXISTS (a
 *         container of that name that is not ours, or ours with other
 *         settings: delete it first; or the requested `ssh_port` is taken);
 *         ::SEMAIL_EFULL (no free port in the range); ::SEMAIL_ENOTFOUND (the
 *         image is missing: semail_image_build(); or `ssh-keygen` is
 *         missing); ::SEMAIL_ETEMP (the engine does not answer);
 *         ::SEMAIL_EIO. Thread-safe (see the file comment).
 */
SEMAIL_EXTERN int semail_container_create(semail_container_engine *e,
                                          const semail_container_spec *spec, int *port_out);

/**
 * Stop and remove the container of @p login (force). No container: success.
 * The key directory stays (see semail_container_remove_keys()).
 *
 * @return 0; ::SEMAIL_EINVAL (bad login); ::SEMAIL_EPERM (a container of
 *         that name exists that semail did not make: left alone);
 *         ::SEMAIL_ETEMP; ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_delete(semail_container_engine *e, const char *login);

/**
 * Remove `keys_dir/LOGIN` (authorized keys and host key) when the person
 * is gone for good. Absent: success. Does not talk to the engine.
 *
 * @return 0; ::SEMAIL_EINVAL; ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_remove_keys(semail_container_engine *e, const char *login);

/**
 * Replace the authorized keys of @p login. The file is written beside the
 * old one and renamed over it, so that the running container (which mounts
 * its directory) sees the new keys at its next login, and never a half
 * file.
 *
 * @param keys  authorized_keys text as in ::semail_container_spec; NULL or
 *              "": no key.
 * @return 0; ::SEMAIL_EINVAL (bad login or keys); ::SEMAIL_ENOTFOUND (no key
 *         directory: the container was never created); ::SEMAIL_EIO.
 *         Does not talk to the engine. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_set_keys(semail_container_engine *e, const char *login,
                                            const char *keys);

/** What a container is doing. */
typedef enum semail_container_state {
    SEMAIL_CONTAINER_ABSENT = 0,  /**< No container. */
    SEMAIL_CONTAINER_STOPPED = 1, /**< Created, exited, paused or dead. */
    SEMAIL_CONTAINER_RUNNING = 2  /**< Running (or restarting). */
} semail_container_state;

/** One container, as semail_container_status() and semail_container_list() see it. */
typedef struct semail_container_info {
    char login[33];               /**< The person (label `semail.user`). */
    semail_container_state state; /**< Its state. */
    int ssh_port;                 /**< The published SSH port; 0 when absent or unknown. */
    char engine_state[16]; /**< The engine's word ("running", "exited"...); "" when absent. */
} semail_container_info;

/**
 * The state and port of the container of @p login.
 *
 * @param[out] out  filled; `state` is ::SEMAIL_CONTAINER_ABSENT when there
 *                  is no container.
 * @return 0; ::SEMAIL_EINVAL (bad login); ::SEMAIL_EPERM (a container of
 *         that name that semail did not make); ::SEMAIL_ETEMP; ::SEMAIL_EIO.
 *         Thread-safe.
 */
SEMAIL_EXTERN int semail_container_status(semail_container_info *out, semail_container_engine *e,
                                          const char *login);

/**
 * Every semail container of the engine (those labelled `semail.user`).
 *
 * @param[out] out    an array freed with semail_container_list_free()
 *                    (NULL when @p count is 0).
 * @param[out] count  the number of entries.
 * @return 0; ::SEMAIL_ETEMP; ::SEMAIL_EIO; ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_container_list(semail_container_info **out, size_t *count,
                                        semail_container_engine *e);

/** Free an array from semail_container_list(). NULL is accepted. */
SEMAIL_EXTERN void semail_container_list_free(semail_container_info *list);

/** A short static name of a state: "absent", "stopped", "running". */
SEMAIL_EXTERN const char *semail_container_state_name(semail_container_state state);

/** Version of ::semail_image_options known to these headers. */
#define SEMAIL_IMAGE_OPTIONS_VERSION 1

/** Settings of semail_image_build(). Strings are read during the call only. */
typedef struct semail_image_options {
    unsigned int version; /**< SEMAIL_IMAGE_OPTIONS_VERSION. */
    const char *work_dir; /**< Absolute directory for the temporary root file system and the
                             cache (made when missing, its parent must exist); required. */
    const char *suite;    /**< Debian suite; NULL: "bookworm". */
    const char *mirror;   /**< Debian mirror URL; NULL: the `URIs:` line of
                             `/etc/apt/sources.list.d/debian.sources`, else the first `deb` line of
                             `/etc/apt/sources.list`. */
    int reuse_cache;      /**< Non-zero: use `work_dir/rootfs-SUITE.tar` when it exists instead of
                             bootstrapping again (the entrypoint is always the current one). */
    int reuse_image;      /**< Non-zero: do nothing when the engine already has the image. */
    unsigned int timeout_ms; /**< Bound on the import request; 0: 10 minutes. */
} semail_image_options;

/** Static initializer: suite and mirror by default, no cache (work_dir still to set). */
#define SEMAIL_IMAGE_OPTIONS_INIT                                                                  \
    {                                                                                              \
        SEMAIL_IMAGE_OPTIONS_VERSION, NULL, NULL, NULL, 0, 0, 0                                    \
    }

/**
 * Initialize @p opts as ::SEMAIL_IMAGE_OPTIONS_INIT does.
 * @return 0 or ::SEMAIL_EINVAL (NULL @p opts). Thread-safe.
 */
SEMAIL_EXTERN int semail_image_options_init(semail_image_options *opts);

/**
 * Build the user image and import it into the engine under the handle's
 * image name.
 *
 * Bootstraps a minimal Debian (mmdebstrap when installed, else
 * debootstrap; `openssh-server`, `mutt`, `neomutt`, `ca-certificates`,
 * `apt`, `procps`, `less`) into `work_dir`, keeps it as the tar cache
 * `work_dir/rootfs-SUITE.tar`, and streams it to the engine
 * (`POST /images/create?fromSrc=-`) without the package lists and SSH host
 * keys of the build, with the entrypoint `/usr/local/sbin/semail-entrypoint`
 * added. Takes a minute or two without a cache, seconds with one. Needs
 * root (the bootstrap).
 *
 * @return 0; ::SEMAIL_EINVAL (bad options); ::SEMAIL_ENOTFOUND (neither
 *         bootstrap tool is installed, or no mirror is configured);
 *         ::SEMAIL_ETEMP (the engine does not answer); ::SEMAIL_EIO (the
 *         bootstrap or the import failed: the message says which).
 *         Thread-safe; two builds must not share a work_dir.
 */
SEMAIL_EXTERN int semail_image_build(semail_container_engine *e, const semail_image_options *opts);

/**
 * Whether the engine has the handle's image.
 * @return 1, 0, or ::SEMAIL_ETEMP / ::SEMAIL_EIO. Thread-safe.
 */
SEMAIL_EXTERN int semail_image_exists(semail_container_engine *e);

SEMAIL_END_DECLS

#endif
