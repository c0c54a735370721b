/**
 * @file deliver.h
 * @brief Local delivery: one message into the mboxes of the registry's boxes.
 *
 * This is what `semail-inbound` does with every accepted message, and what
 * `semail-outbound` does with a bounce whose sender has a box here: for each
 * distinct box among the recipients, the message goes to `INBOX` and to the
 * folder `<recipient>,<sender>` (see semail_mbox_folder_name()), each copy
 * preceded by `Return-Path:` and `Received:` headers, every append of every
 * box in one all-or-nothing ::semail_mbox_txn, fsync'd before the call
 * returns (SPEC.md section 4).
 *
 * Files: a missing mbox is created with the box owner's uid and gid when the
 * process runs as root (mode 0600), and mode 0660 otherwise (the mail
 * directory's group and default ACL give the person access).
 *
 * The outcome is an SMTP reply a server can send as is: `250 2.0.0 Ok:
 * queued as TXN`, `452 4.2.2 Mailbox full` (the person's filesystem is
 * full), `451 4.2.0 Mailbox locked, try again later`, or `451 4.3.0 Local
 * delivery failed, try again later` (anything else, also a recipient whose
 * box was deleted since it was accepted).
 */
#ifndef SEMAIL_DELIVER_H
#define SEMAIL_DELIVER_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/registry.h"
#include "semail/server.h"
#include "semail/smtp.h"

SEMAIL_BEGIN_DECLS

/** Version of ::semail_deliver_local_options known to these headers. */
#define SEMAIL_DELIVER_LOCAL_OPTIONS_VERSION 1

/** Options of a local delivery. The strings are borrowed for the call. */
typedef struct semail_deliver_local_options {
    unsigned int version;  /**< SEMAIL_DELIVER_LOCAL_OPTIONS_VERSION. */
    const char *mail_root; /**< The mail of LOGIN lives in `mail_root/LOGIN/`; required. */
    const char *hostname;  /**< Our name, in the `Received:` header; required. */
    /** The platform's domain, lower case: `<Postmaster>` (no domain) is
     *  postmaster at this domain. NULL: such a recipient has no box. */
    const char *domain;
    /** Receives the log lines (no trailing newline): one per delivery,
     *  `TXN: client=IP from=<S> to=<R>,... size=N result=CODE X.Y.Z[ reason=...]`,
     *  and one for each problem met (a recipient without a box, a chown
     *  that failed). NULL: nothing is logged. Called in the caller's thread. */
    semail_log_cb log;
    void *log_payload; /**< Passed to @p log. */
} semail_deliver_local_options;

/** Static initializer: the version set, everything else NULL. */
#define SEMAIL_DELIVER_LOCAL_OPTIONS_INIT                                                          \
    {                                                                                              \
        .version = SEMAIL_DELIVER_LOCAL_OPTIONS_VERSION                                            \
    }

/** Initialize @p opts to the defaults. Returns 0 or ::SEMAIL_EINVAL (NULL). */
SEMAIL_EXTERN int semail_deliver_local_options_init(semail_deliver_local_options *opts);

/**
 * Deliver one message to the boxes of its recipients, all or nothing.
 *
 * A recipient is found with semail_registry_find_address() (only active
 * boxes); local parts with `%`, `!` or `@` and domain literals never match.
 * Two recipients of the same box get one copy (addressed to the box's
 * registered address). The `Received:` header names `env->helo` (bytes
 * outside printable ASCII written `?`), `env->client_addr`, our hostname,
 * `ESMTP` or `SMTP` after `env->esmtp`, `env->txn_id` and the box's address.
 *
 * @param[out] reply  the answer for the transaction (see the file comment);
 *                    filled whenever 0 is returned.
 * @param opts        options (mail_root and hostname required).
 * @param reg         the registry snapshot to look the recipients up in.
 * @param env         the envelope: sender, recipients (at least one),
 *                    helo, esmtp, client_addr (NULL: "unknown"), txn_id.
 * @param data        the message (CRLF or LF lines), @p len bytes.
 * @param len         its length.
 * @return 0 when @p reply holds the outcome (delivered or not);
 *         ::SEMAIL_EINVAL (NULL arguments, no recipient), ::SEMAIL_ENOMEM
 *         (nothing was written). Thread-safe: concurrent deliveries to the
 *         same mboxes serialize on the mbox locks.
 */
SEMAIL_EXTERN int semail_deliver_local(semail_reply *reply,
                                       const semail_deliver_local_options *opts,
                                       const semail_registry *reg, const semail_envelope *env,
                                       const char *data, size_t len);

SEMAIL_END_DECLS

#endif
