/*
 * registry_internal.h - the pieces of registry.c that its unit tests and
 * registry_cache.c reach without going through the public API.
 */
#ifndef SEMAIL_REGISTRY_INTERNAL_H
#define SEMAIL_REGISTRY_INTERNAL_H

#include "internal.h"

/* How long a writer waits for STATE_DIR/registry.lock before SEMAIL_ELOCKED. */
#define SEMAIL__REGISTRY_LOCK_TIMEOUT_MS 10000

/*
 * Take the writers' lock of STATE_DIR (flock on STATE_DIR/registry.lock),
 * waiting at most TIMEOUT_MS. *FD is the lock; give it back with
 * semail__registry_unlock(). Returns 0, SEMAIL_ELOCKED or SEMAIL_EIO.
 */
SEMAIL_HIDDEN int semail__registry_lock(int *fd, const char *state_dir, unsigned timeout_ms);
SEMAIL_HIDDEN void semail__registry_unlock(int fd);

#endif
