/*
 * provision_internal.h - what provision.c keeps to itself and its tests:
 * the container seam and the fault-injection hooks.
 *
 * Contract: the container steps of a transaction go through
 * semail__prov_containers only, so that the transaction logic does not
 * depend on how containers are made (the Docker Engine module plugs in
 * here) and tests can inject an engine that fails. Every operation is
 * idempotent and records its error (semail__err).
 */
#ifndef SEMAIL_PROVISION_INTERNAL_H
#define SEMAIL_PROVISION_INTERNAL_H

#include "internal.h"
#include "semail/container.h"
#include "semail/provision.h"
#include "semail/storage.h"

/* Size of a container name buffer. */
#define SEMAIL__PROV_CONTAINER_NAME_MAX 128

/* A container engine as the transactions see it. */
typedef struct semail__prov_containers {
    /*
     * Make and start the container of U (login, uid, gid, ssh_keys) with
     * MOUNT (its filesystem) at ~/mail; an existing one of the same name
     * is reused. NAME gets the container's name, *PORT its SSH port.
     */
    int (*create)(void *self, const semail_user *u, const char *mount, char *name, size_t name_size,
                  int *port);
    /* Stop and remove the container of LOGIN and its key files; none: 0. */
    int (*remove)(void *self, const char *login);
    /* Remove only the key files of LOGIN (no container was made; needs no engine). */
    int (*forget)(void *self, const char *login);
    /*
     * Start the container of U after a reboot, MOUNT as for create; running: 0.
     * *PORT gets its SSH port (another one when the container had to be made again).
     */
    int (*start)(void *self, const semail_user *u, const char *mount, int *port);
    /*
     * Stop the container of LOGIN and keep it (start runs it again, on the
     * same port), so that it lets go of its bind mount; none or stopped: 0.
     */
    int (*stop)(void *self, const char *login);
    /* Replace the authorized_keys of the running container of LOGIN. */
    int (*set_keys)(void *self, const char *login, const char *keys);
    /* Free SELF. */
    void (*close)(void *self);
    void *self;
} semail__prov_containers;

/*
 * semail__err() for a message that quotes semail_error_last(): the text is
 * made in a buffer of its own first (the last error is overwritten).
 */
SEMAIL_HIDDEN int semail__prov_err(int code, const char *fmt, ...) SEMAIL_PRINTF(2, 3);
#if defined(__clang_analyzer__) && !defined(SEMAIL__DEFINES_PROV_ERR)
#define semail__prov_err(...) SEMAIL__RETURNS_CODE(semail__prov_err, __VA_ARGS__)
#endif

/* The steps of a create, in order (for the crash hook). */
typedef enum semail__prov_step {
    SEMAIL__PROV_STEP_NONE = 0,
    SEMAIL__PROV_STEP_RECORD = 1,
    SEMAIL__PROV_STEP_DNS = 2,
    SEMAIL__PROV_STEP_STORAGE = 3,
    SEMAIL__PROV_STEP_CONTAINER = 4
} semail__prov_step;

/* Use OPS for the container steps (containers on), replacing any engine; OPS is copied. */
SEMAIL_HIDDEN void semail__provision_set_containers(semail_provision *p,
                                                    const semail__prov_containers *ops);

/*
 * Crash simulation: a create returns SEMAIL_ERROR right after STEP is done,
 * without undoing anything, as if the process had died there. NONE: off.
 */
SEMAIL_HIDDEN void semail__provision_set_crash_after(semail_provision *p, semail__prov_step step);

/* The storage handle of P (tests reach into the image backend with it). */
SEMAIL_HIDDEN semail_storage *semail__provision_storage(semail_provision *p);

/* The container seam over the Engine API module (provision_container.c); takes ENGINE. */
SEMAIL_HIDDEN void semail__prov_containers_engine(semail__prov_containers *out,
                                                  semail_container_engine *engine);

/* Write the tree DIRFD (named TOP inside the archive) as a tar archive to PATH. */
SEMAIL_HIDDEN int semail__provision_write_tar(int dirfd, const char *top, const char *path);

#endif
