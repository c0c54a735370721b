/*
 * container_internal.h - what container.c gives the rest of the library
 * (the provisioning seam) but not its users.
 *
 * Contract: as for container.h: a container is only touched when its label
 * semail.user names the login; every function records its error
 * (semail__err) and returns a negative SEMAIL_E* code.
 */
#ifndef SEMAIL_CONTAINER_INTERNAL_H
#define SEMAIL_CONTAINER_INTERNAL_H

#include "internal.h"
#include "semail/container.h"

/*
 * Stop the container of LOGIN and keep it: semail_container_create() with
 * the same spec starts it again, on the same port. No container, or one
 * not running: 0. Another's container of that name: SEMAIL_EPERM.
 */
SEMAIL_HIDDEN int semail__container_stop(semail_container_engine *e, const char *login);

#endif
