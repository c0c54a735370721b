/*
 * deliver_local.c - one message into the mboxes of the registry's boxes
 * (include/semail/deliver.h): INBOX and the `<recipient>,<sender>` folder of
 * every distinct box, Return-Path and Received prepended, all appends in one
 * all-or-nothing mbox transaction, errors mapped to the SMTP reply.
 *
 * Contract: semail-inbound (every message) and semail-outbound (bounces to
 * local senders) deliver through this one function, so that a message looks
 * the same in a box whichever way it came. Nothing here keeps state between
 * calls; the work area is on the heap (session threads have small stacks).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "semail/date.h"
#include "semail/deliver.h"
#include "semail/mbox.h"

/* One box of a transaction: its record and what is appended to it. */
typedef struct box {
    const semail_user *user;
    char address[SEMAIL_PATH_MAX + 3]; /* id@domain, as registered */
    char prepend[2048];                /* every part is bounded: see build_prepend() */
    semail_mbox_message msg;
} box;

/* A transaction being delivered. */
typedef struct delivery {
    const semail_deliver_local_options *opts;
    const semail_envelope *env;
    const semail_registry *reg;
    box *boxes;
    size_t nbox;
    char sender[SEMAIL_PATH_MAX + 3]; /* "" for <> */
    char date[64];                    /* RFC 5322 */
    char helo[SEMAIL_DOMAIN_MAX + 1]; /* printable ASCII only */
    char path[PATH_MAX];
    char folder[SEMAIL_MBOX_FOLDER_MAX];
    char reason[512]; /* why a delivery failed, for the log only */
    time_t now;
} delivery;

int semail_deliver_local_options_init(semail_deliver_local_options *opts)
{
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    memset(opts, 0, sizeof(*opts));
    opts->version = SEMAIL_DELIVER_LOCAL_OPTIONS_VERSION;
    return 0;
}

static void logf_(const delivery *d, const char *fmt, ...) SEMAIL_PRINTF(2, 3);
static void logf_(const delivery *d, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (d->opts->log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    d->opts->log(line, d->opts->log_payload);
}

static void lower_copy(char *dst, size_t size, const char *src)
{
    size_t i;
    for (i = 0; src[i] && i + 1 < size; i++)
        dst[i] = (char)((src[i] >= 'A' && src[i] <= 'Z') ? src[i] + ('a' - 'A') : src[i]);
    dst[i] = '\0';
}

/* The lower-case domain a recipient is looked up under, or -1 when the
 * address cannot belong to a box (relay tricks, literals). */
static int rcpt_domain(char *out, size_t size, const delivery *d, const semail_address *rcpt)
{
    if (strpbrk(rcpt->local, "%!@") != NULL)
        return -1;
    if (rcpt->domain[0] == '\0') {
        if (d->opts->domain == NULL || semail__strcasecmp(rcpt->local, "postmaster") != 0)
            return -1;
        lower_copy(out, size, d->opts->domain);
        return 0;
    }
    if (rcpt->domain[0] == '[')
        return -1;
    lower_copy(out, size, rcpt->domain);
    return 0;
}

/* The box that receives RCPT, or NULL (deleted since RCPT was answered). */
static const semail_user *find_box(const delivery *d, const semail_address *rcpt)
{
    char domain[SEMAIL_DOMAIN_MAX + 1];
    const semail_user *u;

    if (rcpt_domain(domain, sizeof(domain), d, rcpt) < 0 ||
        semail_registry_find_address(&u, d->reg, rcpt->local, domain) < 0)
        return NULL;
    return u;
}

/* Collect the distinct boxes of the recipients. Returns 0 or -1 (REPLY set). */
static int collect_boxes(delivery *d, semail_reply *reply)
{
    size_t i, j;

    for (i = 0; i < d->env->rcpt_count; i++) {
        const semail_user *u = find_box(d, &d->env->rcpts[i]);
        if (u == NULL) {
            semail_reply_set(reply, 451, "4.3.0", "Local delivery failed, try again later");
            logf_(d, "%s: recipient %s@%s has no box any more", d->env->txn_id,
                  d->env->rcpts[i].local, d->env->rcpts[i].domain);
            return -1;
        }
        for (j = 0; j < d->nbox && strcmp(d->boxes[j].user->login, u->login) != 0; j++)
            ;
        if (j < d->nbox)
            continue; /* the same box twice: delivered once */
        d->boxes[d->nbox].user = u;
        snprintf(d->boxes[d->nbox].address, sizeof(d->boxes[0].address), "%s@%s", u->id, u->domain);
        d->nbox++;
    }
    return 0;
}

static int build_prepend(delivery *d, box *b)
{
    const semail_envelope *env = d->env;
    int n;

    /* Sender and address <= 258, helo and hostname <= 255, the rest short. */
    n = snprintf(b->prepend, sizeof(b->prepend),
                 "Return-Path: <%s>\nReceived: from %s (%s) by %s (SEMail) with %s id "
                 "%.64s\n\tfor <%s>; %s\n",
                 d->sender, d->helo, env->client_addr ? env->client_addr : "unknown",
                 d->opts->hostname, env->esmtp ? "ESMTP" : "SMTP", env->txn_id ? env->txn_id : "-",
                 b->address, d->date);
    if (n < 0 || (size_t)n >= sizeof(b->prepend))
        return -1;
    b->msg.sender = d->sender;
    b->msg.date = d->now;
    b->msg.prepend = b->prepend;
    b->msg.prepend_len = (size_t)n;
    return 0;
}

/* Create a missing mbox as the box's owner. One transaction holds the
 * appends of several boxes but has one owner option, so files are made
 * here with the right owner; the append itself never creates them then.
 * The new entry is made durable here, since the append will find the file
 * existing and fsync only its data. A rolled-back delivery leaves the
 * empty file behind: an empty mbox is a valid, empty folder. */
static void precreate(const delivery *d, const char *path, const semail_user *u)
{
    int fd, dfd;
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');

    if (geteuid() != 0)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return; /* exists, or the append reports the error */
    if (fchown(fd, u->uid, u->gid) < 0)
        logf_(d, "chown %s: %s", path, strerror(errno));
    close(fd);
    if (slash == NULL || (size_t)(slash - path) >= sizeof(dir))
        return;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        if (fsync(dfd) < 0 && errno != EINVAL)
            logf_(d, "fsync %s: %s", dir, strerror(errno));
        close(dfd);
    }
}

static int join_path(char *out, size_t size, const char *a, const char *b, const char *c)
{
    int n = snprintf(out, size, "%s/%s/%s", a, b, c);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static int path_too_long(delivery *d)
{
    snprintf(d->reason, sizeof(d->reason), "mbox path too long under %s", d->opts->mail_root);
    return SEMAIL_ETOOBIG;
}

static int add_appends(delivery *d, semail_mbox_txn *txn, box *b, const char *data, size_t len)
{
    const char *root = d->opts->mail_root;
    int err;

    b->msg.data = data;
    b->msg.data_len = len;
    if (join_path(d->path, sizeof(d->path), root, b->user->login, "INBOX") < 0)
        return path_too_long(d);
    precreate(d, d->path, b->user);
    if ((err = semail_mbox_txn_add(txn, d->path, &b->msg)) < 0)
        return err;
    if ((err = semail_mbox_folder_name(d->folder, sizeof(d->folder), b->address, d->sender)) < 0)
        return err;
    if (join_path(d->path, sizeof(d->path), root, b->user->login, d->folder) < 0)
        return path_too_long(d);
    precreate(d, d->path, b->user);
    return semail_mbox_txn_add(txn, d->path, &b->msg);
}

static int deliver(delivery *d, const char *data, size_t len)
{
    semail_mbox_txn *txn = NULL;
    semail_mbox_options mopts;
    size_t i;
    int err;

    /* Not root ([global] user set): new mboxes are group-readable and
     * -writable, the mail directory's group and default ACL do the rest. */
    semail_mbox_options_init(&mopts);
    if (geteuid() != 0)
        mopts.file_mode = 0660;
    if ((err = semail_mbox_txn_new(&txn, &mopts)) < 0)
        return err;
    for (i = 0; i < d->nbox && err == 0; i++) {
        if (build_prepend(d, &d->boxes[i]) < 0) {
            snprintf(d->reason, sizeof(d->reason), "headers too long");
            err = SEMAIL_ETOOBIG;
        } else
            err = add_appends(d, txn, &d->boxes[i], data, len);
    }
    if (err == 0)
        err = semail_mbox_txn_commit(txn);
    if (err < 0 && d->reason[0] == '\0')
        snprintf(d->reason, sizeof(d->reason), "%s", semail_error_last());
    semail_mbox_txn_free(txn);
    return err;
}

static void map_result(semail_reply *reply, int err, const char *txn_id)
{
    if (err == 0)
        semail_reply_set(reply, 250, "2.0.0", "Ok: queued as %s", txn_id ? txn_id : "-");
    else if (err == SEMAIL_EFULL)
        semail_reply_set(reply, 452, "4.2.2", "Mailbox full");
    else if (err == SEMAIL_ELOCKED)
        semail_reply_set(reply, 451, "4.2.0", "Mailbox locked, try again later");
    else
        semail_reply_set(reply, 451, "4.3.0", "Local delivery failed, try again later");
}

static void log_delivery(const delivery *d, const semail_reply *reply, size_t len,
                         const char *reason)
{
    char to[1024];
    size_t i, n = 0;

    to[0] = '\0';
    for (i = 0; i < d->nbox && n < sizeof(to); i++) {
        int w = snprintf(to + n, sizeof(to) - n, "%s<%s>", i ? "," : "", d->boxes[i].address);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    logf_(d, "%s: client=%s from=<%s> to=%s size=%zu result=%d %s%s%s",
          d->env->txn_id ? d->env->txn_id : "-",
          d->env->client_addr ? d->env->client_addr : "unknown", d->sender, to, len, reply->code,
          reply->enhanced, reason ? " reason=" : "", reason ? reason : "");
}

static void clean_helo(char *out, size_t size, const char *helo)
{
    size_t i;
    for (i = 0; helo && helo[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)helo[i];
        out[i] = (c > 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[i] = '\0';
}

int semail_deliver_local(semail_reply *reply, const semail_deliver_local_options *opts,
                         const semail_registry *reg, const semail_envelope *env, const char *data,
                         size_t len)
{
    delivery *d;
    int err;

    if (reply == NULL || opts == NULL || opts->mail_root == NULL || opts->hostname == NULL ||
        reg == NULL || env == NULL || env->sender == NULL || env->rcpts == NULL ||
        env->rcpt_count == 0 || (data == NULL && len > 0))
        return semail__err(SEMAIL_EINVAL, "local delivery: missing argument");
    if ((d = calloc(1, sizeof(*d))) == NULL ||
        (d->boxes = calloc(env->rcpt_count, sizeof(box))) == NULL) {
        free(d);
        return semail__err(SEMAIL_ENOMEM, "local delivery: out of memory");
    }
    d->opts = opts;
    d->env = env;
    d->reg = reg;
    d->now = time(NULL);
    (void)semail_date_rfc5322(d->date, sizeof(d->date), d->now);
    clean_helo(d->helo, sizeof(d->helo), env->helo);
    if (env->sender->is_null ||
        semail_address_format(d->sender, sizeof(d->sender), env->sender) < 0)
        d->sender[0] = '\0';
    if (collect_boxes(d, reply) < 0) {
        log_delivery(d, reply, len, "a recipient has no box any more");
    } else {
        err = deliver(d, data ? data : "", len);
        map_result(reply, err, env->txn_id);
        log_delivery(d, reply, len, err < 0 ? d->reason : NULL);
    }
    free(d->boxes);
    free(d);
    return 0;
}
