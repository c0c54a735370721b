/*
 * mbox_internal.h - the pieces of the mbox append shared by mbox*.c and
 * their unit tests; never exported.
 *
 * Contract: the mboxrd writer is a streaming state machine (any split of
 * the input gives the same output); the lock functions either take both
 * locks of one mbox or leave nothing behind (except a crashed append's
 * undo record they could not apply yet, left for the next locker); the
 * I/O seam is per transaction (no global hook), for fault-injection tests.
 */
#ifndef SEMAIL_MBOX_INTERNAL_H
#define SEMAIL_MBOX_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#include "internal.h"
#include "semail/mbox.h"

/* ---- mboxrd writer (mbox_quote.c) ------------------------------------- */

/* Receives the writer's output; returns 0 or a negative SEMAIL_E code. */
typedef int (*semail__mbox_sink)(void *payload, const char *p, size_t n);

/* State between two calls of semail__mbox_quote_feed(). */
typedef struct semail__mbox_quote {
    bool bol;   /* at a line start (or among its leading '>') */
    bool cr;    /* a CR was read and not yet written: CRLF or bare CR? */
    int fmatch; /* bytes of "From " matched (and held back) at a line start */
    int last;   /* last byte given to the sink */
    semail__mbox_sink sink;
    void *payload;
} semail__mbox_quote;

/* Start a message: the next byte is at a line start. */
SEMAIL_HIDDEN void semail__mbox_quote_init(semail__mbox_quote *q, semail__mbox_sink sink,
                                           void *payload);
/* Quote N bytes of a part (CRLF -> LF, ^>*From  gets one more '>'). */
SEMAIL_HIDDEN int semail__mbox_quote_feed(semail__mbox_quote *q, const char *p, size_t n);
/* End a part (prepend or data): flush held bytes, end the last line. */
SEMAIL_HIDDEN int semail__mbox_quote_end_part(semail__mbox_quote *q);
/* End the message: end the part, then the terminating empty line. */
SEMAIL_HIDDEN int semail__mbox_quote_finish(semail__mbox_quote *q);

/*
 * Write "From SENDER DATE\n" to SINK: SENDER NULL or "" gives MAILER-DAEMON,
 * every byte <= 0x20 or 0x7f in it is written '_' (the line is split on
 * spaces by readers); DATE 0 is now; the date is asctime() format in UTC.
 */
SEMAIL_HIDDEN int semail__mbox_from_line(semail__mbox_sink sink, void *payload, const char *sender,
                                         time_t date);

/* ---- locks (mbox_lock.c) ---------------------------------------------- */

/* The undo record of a dot-lock (mbox_recover.c): who held it, and the size to cut back to. */
typedef struct semail__mbox_undo {
    long pid;
    bool has_file; /* false: "- -", the holder had not measured the mbox yet */
    unsigned long long dev, ino;
    off_t size;
} semail__mbox_undo;

/* Room for "semail <boot-id> <pid-namespace>". */
#define SEMAIL__MBOX_OWNER_MAX 80

/* One locked mbox: a dot-lock, an open descriptor with a kernel write lock. */
typedef struct semail__mbox_locked {
    char *path;
    char *lockpath;
    int fd;                             /* -1 when not open */
    int lockfd;                         /* the dot-lock file while we hold it; -1 when not open */
    bool dotlocked;                     /* lockpath is ours */
    bool created;                       /* the mbox did not exist: a rollback unlinks it */
    bool needs_nl;                      /* the file does not end in '\n' (a damaged mbox) */
    off_t size;                         /* size when locked: a rollback truncates to it */
    unsigned long long dev, ino;        /* of the open mbox */
    char owner[SEMAIL__MBOX_OWNER_MAX]; /* "semail <boot-id> <pid-ns>"; "": no undo record */
    size_t lock_len;                    /* bytes of the dot-lock file as we last wrote it */
    semail__mbox_undo undo;             /* a dead holder's record we took over */
    bool undo_pending;                  /* ... and have not applied yet */
    bool recovered;                     /* this lock cut a crashed append away */
} semail__mbox_locked;

/*
 * Lock PATH: dot-lock, open (no symlink, one link, same inode as checked),
 * kernel write lock (OFD), remember the size. Gives up at DEADLINE
 * (CLOCK_MONOTONIC) with SEMAIL_ELOCKED. On failure nothing is left behind
 * (a file this call created is unlinked) and LK needs no unlock.
 */
SEMAIL_HIDDEN int semail__mbox_lock(semail__mbox_locked *lk, const char *path,
                                    const semail_mbox_options *opts,
                                    const struct timespec *deadline);
/* Close (drops the kernel lock), remove the dot-lock, free. Idempotent. */
SEMAIL_HIDDEN void semail__mbox_unlock(semail__mbox_locked *lk);
/* DEADLINE = now (CLOCK_MONOTONIC) + MS milliseconds. */
SEMAIL_HIDDEN void semail__mbox_deadline(struct timespec *deadline, unsigned int ms);

/* ---- crash recovery through the dot-lock (mbox_recover.c) ------------- */

/* OUT = "semail <boot-id> <pid-namespace>" of this process, or "" when /proc does not say. */
SEMAIL_HIDDEN void semail__mbox_owner(char *out, size_t size);
/*
 * Parse dot-lock content: "<pid>\n" then "<OWNER> <dev>:<ino> <size>\n" or
 * "<OWNER> - -\n"; bytes after the second line are ignored. False for any
 * other content (a plain lock, another boot, another pid namespace).
 */
SEMAIL_HIDDEN bool semail__mbox_parse_lock(const char *buf, size_t len, const char *owner,
                                           semail__mbox_undo *out);
/* Write PID and the undo record (UNDO NULL: "- -") into LK's dot-lock in one pwrite. */
SEMAIL_HIDDEN int semail__mbox_write_lock(semail__mbox_locked *lk, long pid,
                                          const semail__mbox_undo *undo);
/* Results of semail__mbox_take_over(). */
enum { SEMAIL__MBOX_PLAIN, SEMAIL__MBOX_BUSY, SEMAIL__MBOX_TAKEN };
/*
 * LK's dot-lock exists. When it carries our owner line and its pid is dead,
 * make it ours (one process wins), keep its record in LK->undo: TAKEN.
 * BUSY: another process is taking it over, wait. PLAIN: the old rules apply.
 */
SEMAIL_HIDDEN int semail__mbox_take_over(semail__mbox_locked *lk);
/* Under the kernel lock: cut the mbox back to a taken-over record, if it is still that file. */
SEMAIL_HIDDEN int semail__mbox_recover(semail__mbox_locked *lk);
/* A failed lock: put the dead holder's record back for the next locker. */
SEMAIL_HIDDEN void semail__mbox_give_back(semail__mbox_locked *lk);

/* ---- the I/O seam (mbox.c) -------------------------------------------- */

/*
 * The calls a commit makes to write and flush, replaceable per transaction
 * so that tests can fail the Nth write or fsync with any errno (chasquid's
 * safeio). write() may write less than asked; fsync() gets IS_DIR for the
 * directory of a new mbox. Both return -1 with errno set on failure.
 */
typedef struct semail__mbox_io {
    ssize_t (*write)(void *payload, int fd, const void *p, size_t n);
    int (*fsync)(void *payload, int fd, bool is_dir);
    void *payload;
} semail__mbox_io;

/* Use IO (copied; NULL: the real calls) for the commit of TXN. */
SEMAIL_HIDDEN void semail__mbox_txn_set_io(semail_mbox_txn *txn, const semail__mbox_io *io);
/* How many mboxes the commit of TXN cut back after another process crashed mid-append. */
SEMAIL_HIDDEN unsigned int semail__mbox_txn_recovered(const semail_mbox_txn *txn);

#endif
