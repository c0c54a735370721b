/*
 * relay_internal.h - what relay.c shares with relay_pool.c.
 */
#ifndef SEMAIL_RELAY_INTERNAL_H
#define SEMAIL_RELAY_INTERNAL_H

#include "internal.h"
#include "semail/relay.h"

/* Format one line and pass it to OPTS->log (nothing when it is NULL). */
SEMAIL_HIDDEN void semail__relay_log(const semail_relay_options *opts, const char *fmt, ...)
    SEMAIL_PRINTF(2, 3);

#endif
