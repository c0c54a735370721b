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

/*
 * The relay's cheaper path (docs/queue.md, "Durability and crashes"). A
 * lazy record or mark changes E in memory only; semail__queue_save(), any
 * durable update (semail_queue_schedule()) or nothing (the entry is
 * removed) follows. Until then a crash delivers those recipients again,
 * never loses one. Released unsaved, the results are lost the same way.
 */
SEMAIL_HIDDEN int semail__queue_record_lazy(semail_queue_entry *e, size_t index,
                                            semail_queue_rcpt_state state,
                                            const semail_queue_result *result);
SEMAIL_HIDDEN int semail__queue_mark_notified_lazy(semail_queue_entry *e);
/* Write what lazy calls left in memory (0 when nothing). */
SEMAIL_HIDDEN int semail__queue_save(semail_queue_entry *e);

/*
 * semail_queue_remove() whose msg/ fsync may be shared with other removals
 * (at most 64 of them, 1 s old; any later fsync of msg/ covers it), unless
 * a state file holds results of an earlier attempt (then it syncs now).
 * A crash may bring the message back, every recipient pending.
 */
SEMAIL_HIDDEN int semail__queue_remove_lazy(semail_queue_entry *e);
/* fsync msg/ now if a lazy removal is not covered yet. */
SEMAIL_HIDDEN int semail__queue_sync_removals(semail_queue *q);
/* How many fsyncs of msg/ covered removals (for the tests). */
SEMAIL_HIDDEN unsigned long semail__queue_removal_syncs(semail_queue *q);

#endif
