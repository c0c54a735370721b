/*
 * queue_internal.h - what queue.c shares with queue_retry.c and dsn.c.
 *
 * Contract: hidden helpers; same thread-safety as the public queue API.
 */
#ifndef SEMAIL_QUEUE_INTERNAL_H
#define SEMAIL_QUEUE_INTERNAL_H

#include "internal.h"
#include "semail/queue.h"

/* Fill P with N bytes from getrandom(). */
SEMAIL_HIDDEN int semail__queue_random(void *p, size_t n);

/*
 * Fail every pending recipient of E durably with ENHANCED and REASON (the
 * last error appended). Returns how many were failed, or an error (the
 * state is then unchanged, on disk and in memory).
 */
SEMAIL_HIDDEN int semail__queue_fail_pending(semail_queue_entry *e, const char *enhanced,
                                             const char *reason);

/*
 * How many times Q scanned the spool for due messages (to check that picks
 * are served from the due list, not one scan each).
 */
SEMAIL_HIDDEN unsigned long semail__queue_due_scans(semail_queue *q);

#endif
