/**
 * @file mbox.h
 * @brief Durable, all-or-nothing appends to mbox files (mboxrd).
 *
 * Each message is written as `From SENDER DATE`, the prepended headers, the
 * message with CRLF turned into LF and every line matching `^>*From `
 * given one more `>`, and an empty line. Appends lock as mutt, Dovecot and
 * procmail do: a `FILE.lock` dot-lock, then a kernel write lock taken with
 * open-file-description locks (which conflict with the fcntl locks of those
 * programs and, unlike them, with other threads of this process).
 *
 * A transaction (::semail_mbox_txn) appends one message to several mboxes
 * and is all-or-nothing: after semail_mbox_txn_commit() returns 0 every
 * append is on disk (fsync'd); after it fails every file has its old size.
 * A process killed in the middle of a commit leaves each mbox's size
 * before the append in the `FILE.lock` dot-lock (after the pid line that
 * procmail reads); the next append to that mbox on the same machine, in
 * the same boot, cuts the partial append away before writing its own.
 *
 * Folder names: semail_mbox_folder_name() builds the `<recipient>,<sender>`
 * name under which a copy of each message is kept beside `INBOX`.
 */
#ifndef SEMAIL_MBOX_H
#define SEMAIL_MBOX_H

#include <sys/types.h>
#include <time.h>

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Largest folder name semail_mbox_folder_name() writes, NUL included. */
#define SEMAIL_MBOX_FOLDER_MAX 1024

/**
 * Build the folder name for mail from @p sender to @p recipient: both in
 * lower case, joined by `,`, each byte outside
 * ``[a-z0-9.!#$&'*+=?^_`{|}~@-]`` written `%XX` (upper-case hex), a leading
 * `.` of the name written `%2E`, an empty sender written `MAILER-DAEMON`.
 *
 * @param[out] out  buffer of @p size bytes.
 * @param recipient the recipient as `local@domain`.
 * @param sender    the envelope sender as `local@domain`, or "" for `<>`.
 * @return 0, ::SEMAIL_ETOOBIG (nothing is truncated; @p out is then ""),
 *         or ::SEMAIL_EINVAL (NULL @p out or @p recipient, @p size 0). Thread-safe.
 */
SEMAIL_EXTERN int semail_mbox_folder_name(char *out, size_t size, const char *recipient,
                                          const char *sender);

/** One message to append. Buffers stay owned by the caller. */
typedef struct semail_mbox_message {
    const char *
        sender; /**< Envelope sender for the `From ` line; NULL or "" gives MAILER-DAEMON; each byte
                   <= 0x20 or 0x7f in it is written `_` (readers split that line on spaces). */
    time_t date;         /**< Arrival time for the `From ` line; 0: now. */
    const char *prepend; /**< Headers to put first (Return-Path:, Received:), LF or CRLF lines; may
                            be NULL. */
    size_t prepend_len;  /**< Length of @p prepend. */
    const char *data;    /**< The message (header and body), LF or CRLF lines. */
    size_t data_len;     /**< Length of @p data. */
} semail_mbox_message;

/** Version of ::semail_mbox_options known to these headers. */
#define SEMAIL_MBOX_OPTIONS_VERSION 1

/** Options for appends. */
typedef struct semail_mbox_options {
    unsigned int version; /**< SEMAIL_MBOX_OPTIONS_VERSION. */
    unsigned int
        lock_timeout_ms; /**< Give up on a lock after this long (::SEMAIL_ELOCKED); 0: 30000. */
    unsigned int stale_lock_s; /**< A dot-lock older than this is removed; 0: 300. */
    int file_mode;             /**< Mode of a new mbox; 0: 0600. */
    uid_t uid;                 /**< Owner of a new mbox when running as root; (uid_t)-1: keep. */
    gid_t gid;                 /**< Group of a new mbox when running as root; (gid_t)-1: keep. */
} semail_mbox_options;

/** Static initializer: defaults, and keep owner and group. */
#define SEMAIL_MBOX_OPTIONS_INIT                                                                   \
    {                                                                                              \
        .version = SEMAIL_MBOX_OPTIONS_VERSION, .uid = (uid_t)-1, .gid = (gid_t)-1                 \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL. */
SEMAIL_EXTERN int semail_mbox_options_init(semail_mbox_options *opts);

/** An opaque multi-mbox append transaction. */
typedef struct semail_mbox_txn semail_mbox_txn;

/**
 * Start a transaction. @p opts may be NULL for defaults; it is copied.
 * @return 0 or ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_mbox_txn_new(semail_mbox_txn **out, const semail_mbox_options *opts);

/**
 * Add an append of @p msg to the mbox at @p path (created when missing;
 * the directory must exist). Nothing is written before commit. The message
 * and its buffers must stay valid until commit returns; @p path is copied.
 * The same path added twice is appended twice.
 *
 * @return 0, ::SEMAIL_EINVAL, ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_mbox_txn_add(semail_mbox_txn *txn, const char *path,
                                      const semail_mbox_message *msg);

/**
 * Lock every mbox (in a fixed order, so that two transactions never
 * deadlock), append, fsync, unlock. All-or-nothing: on failure every file
 * is truncated back to the size it had, while still locked.
 *
 * @return 0; ::SEMAIL_ELOCKED (lock timeout), ::SEMAIL_EFULL (ENOSPC,
 *         EDQUOT, EFBIG), ::SEMAIL_EIO, ::SEMAIL_EPERM (a symlink, a file with
 *         several links, not a regular file). Thread-safe across different
 *         transactions, also on the same files.
 */
SEMAIL_EXTERN int semail_mbox_txn_commit(semail_mbox_txn *txn);

/** Free a transaction (committed or not). NULL is accepted. */
SEMAIL_EXTERN void semail_mbox_txn_free(semail_mbox_txn *txn);

/**
 * Append one message to one mbox: a transaction of one append.
 * Same errors as semail_mbox_txn_commit().
 */
SEMAIL_EXTERN int semail_mbox_append(const char *path, const semail_mbox_message *msg,
                                     const semail_mbox_options *opts);

SEMAIL_END_DECLS

#endif
