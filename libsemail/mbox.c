/*
 * mbox.c - all-or-nothing appends of messages to several mboxes.
 *
 * Contract (Postfix's mail_copy.c, for several files at once): lock every
 * distinct path in strcmp() order (two transactions never deadlock), note
 * each size (in the dot-lock too, so that the append of a process killed
 * mid-write is cut away by the next one: mbox_recover.c), append every
 * message in the order added, fdatasync every file (and the directory of a
 * new one). Any failed write or sync: every file is truncated back to its
 * size and synced, a file that did not exist is unlinked, all while still
 * locked; ENOSPC/EDQUOT/EFBIG give SEMAIL_EFULL, other failures SEMAIL_EIO.
 * Then the locks are dropped. The output goes through one 64 KiB buffer
 * per commit: a message is never copied whole. Writes and syncs go through
 * a per-transaction seam (semail__mbox_txn_set_io) so that tests can fail
 * any of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mbox_internal.h"

#define OUT_BUF_SIZE            (64 * 1024)
#define DEFAULT_LOCK_TIMEOUT_MS 30000
#define DEFAULT_STALE_LOCK_S    300
#define DEFAULT_FILE_MODE       0600

typedef struct append {
    char *path;
    semail_mbox_message msg;
    size_t target; /* index into the commit's sorted targets */
} append;

struct semail_mbox_txn {
    semail_mbox_options opts;
    semail__mbox_io io;
    append *appends;
    size_t n, cap;
    bool committed;
    unsigned int recovered; /* mboxes cut back after another process crashed */
};

/* One distinct mbox of a commit. */
typedef struct target {
    const char *path; /* owned by an append */
    semail__mbox_locked lk;
    bool locked;
} target;

/* The buffered writer behind the quoting sink. */
typedef struct out {
    const semail__mbox_io *io;
    const char *path;
    int fd;
    char *buf;
    size_t len;
} out;

static ssize_t real_write(void *payload, int fd, const void *p, size_t n)
{
    return write(fd, p, n);
}

static int real_fsync(void *payload, int fd, bool is_dir)
{
    return is_dir ? fsync(fd) : fdatasync(fd);
}

static const semail__mbox_io real_io = {real_write, real_fsync, NULL};

/* A failed write or sync: a full disk is the one thing a client acts on. */
static int io_error(int errnum, const char *what, const char *path)
{
    bool full = errnum == ENOSPC || errnum == EDQUOT || errnum == EFBIG;
    return semail__errno(full ? SEMAIL_EFULL : SEMAIL_EIO, errnum, "%s %s", what, path);
}

int semail_mbox_options_init(semail_mbox_options *opts)
{
    static const semail_mbox_options init = SEMAIL_MBOX_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "no options");
    *opts = init;
    return 0;
}

static int normalize_options(semail_mbox_options *dst, const semail_mbox_options *src)
{
    if (src == NULL)
        return semail_mbox_options_init(dst);
    if (src->version != SEMAIL_MBOX_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "mbox options version %u, expected %u", src->version,
                           SEMAIL_MBOX_OPTIONS_VERSION);
    if (src->file_mode < 0 || src->file_mode > 07777)
        return semail__err(SEMAIL_EINVAL, "bad mbox file mode %o", (unsigned)src->file_mode);
    *dst = *src;
    return 0;
}

static void fill_defaults(semail_mbox_options *o)
{
    if (o->lock_timeout_ms == 0)
        o->lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS;
    if (o->stale_lock_s == 0)
        o->stale_lock_s = DEFAULT_STALE_LOCK_S;
    if (o->file_mode == 0)
        o->file_mode = DEFAULT_FILE_MODE;
}

int semail_mbox_txn_new(semail_mbox_txn **out_txn, const semail_mbox_options *opts)
{
    semail_mbox_txn *txn;
    int err;

    if (out_txn == NULL)
        return semail__err(SEMAIL_EINVAL, "no transaction pointer");
    *out_txn = NULL;
    if ((txn = calloc(1, sizeof(*txn))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if ((err = normalize_options(&txn->opts, opts)) < 0) {
        free(txn);
        return err;
    }
    fill_defaults(&txn->opts);
    txn->io = real_io;
    *out_txn = txn;
    return 0;
}

void semail__mbox_txn_set_io(semail_mbox_txn *txn, const semail__mbox_io *io)
{
    txn->io = io ? *io : real_io;
}

unsigned int semail__mbox_txn_recovered(const semail_mbox_txn *txn)
{
    return txn->recovered;
}

int semail_mbox_txn_add(semail_mbox_txn *txn, const char *path, const semail_mbox_message *msg)
{
    append *a;

    if (txn == NULL || path == NULL || path[0] == '\0' || msg == NULL)
        return semail__err(SEMAIL_EINVAL, "mbox append: missing transaction, path or message");
    if (txn->committed)
        return semail__err(SEMAIL_EINVAL, "mbox transaction already committed");
    if ((msg->data == NULL && msg->data_len > 0) || (msg->prepend == NULL && msg->prepend_len > 0))
        return semail__err(SEMAIL_EINVAL, "mbox append: length without a buffer");
    if (strlen(path) > PATH_MAX - sizeof(".lock"))
        return semail__err(SEMAIL_EINVAL, "mbox path too long");
    if (txn->n == txn->cap) {
        size_t cap = txn->cap ? txn->cap * 2 : 4;
        append *p = realloc(txn->appends, cap * sizeof(*p));
        if (p == NULL)
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        txn->appends = p;
        txn->cap = cap;
    }
    a = &txn->appends[txn->n];
    if ((a->path = semail__strdup(path)) == NULL)
        return SEMAIL_ENOMEM;
    a->msg = *msg;
    a->target = 0;
    txn->n++;
    return 0;
}

static int cmp_append_path(const void *a, const void *b)
{
    return strcmp((*(append *const *)a)->path, (*(append *const *)b)->path);
}

/* Sort the distinct paths into TARGETS; point each append at its target. */
static int build_targets(semail_mbox_txn *txn, target *targets, size_t *n_targets)
{
    append **order = malloc(txn->n * sizeof(append *)); /* pointers, sorted in place */
    size_t n = 0;

    if (order == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (size_t i = 0; i < txn->n; i++)
        order[i] = &txn->appends[i];
    qsort(order, txn->n, sizeof(append *), cmp_append_path);
    for (size_t i = 0; i < txn->n; i++) {
        if (n == 0 || strcmp(targets[n - 1].path, order[i]->path) != 0) {
            memset(&targets[n], 0, sizeof(targets[n]));
            targets[n].path = order[i]->path;
            targets[n].lk.fd = -1;
            n++;
        }
        order[i]->target = n - 1;
    }
    free(order);
    *n_targets = n;
    return 0;
}

static int out_flush(out *o)
{
    size_t done = 0;

    while (done < o->len) {
        ssize_t w = o->io->write(o->io->payload, o->fd, o->buf + done, o->len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return io_error(w < 0 ? errno : EIO, "write", o->path);
        done += (size_t)w;
    }
    o->len = 0;
    return 0;
}

static int out_sink(void *payload, const char *p, size_t n)
{
    out *o = payload;
    int err;

    while (n > 0) {
        size_t k = OUT_BUF_SIZE - o->len < n ? OUT_BUF_SIZE - o->len : n;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p += k;
        n -= k;
        if (o->len == OUT_BUF_SIZE && (err = out_flush(o)) < 0)
            return err;
    }
    return 0;
}

/* From_ line, prepend, quoted data, empty line: produced once per target. */
static int write_message(out *o, target *t, const semail_mbox_message *msg)
{
    semail__mbox_quote q;
    int err;

    o->fd = t->lk.fd;
    o->path = t->path;
    o->len = 0;
    /* A damaged mbox without a final newline must not swallow our From_ line. */
    if (t->lk.needs_nl && (err = out_sink(o, "\n", 1)) < 0)
        return err;
    t->lk.needs_nl = false;
    if ((err = semail__mbox_from_line(out_sink, o, msg->sender, msg->date)) < 0)
        return err;
    semail__mbox_quote_init(&q, out_sink, o);
    if ((err = semail__mbox_quote_feed(&q, msg->prepend, msg->prepend_len)) < 0 ||
        (err = semail__mbox_quote_end_part(&q)) < 0 ||
        (err = semail__mbox_quote_feed(&q, msg->data, msg->data_len)) < 0 ||
        (err = semail__mbox_quote_finish(&q)) < 0)
        return err;
    return out_flush(o);
}

/* Open the directory that holds PATH; -1 with errno on failure. */
static int open_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    size_t n;

    if (slash == NULL)
        return open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= sizeof(dir)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(dir, path, n);
    dir[n] = '\0';
    return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

static int sync_dir(const semail__mbox_io *io, const char *path)
{
    int fd = open_parent(path), err = 0;

    if (fd < 0)
        return io_error(errno, "open the directory of", path);
    if (io->fsync(io->payload, fd, true) < 0)
        err = io_error(errno, "fsync the directory of", path);
    close(fd);
    return err;
}

static int sync_target(const semail__mbox_io *io, target *t)
{
    if (io->fsync(io->payload, t->lk.fd, false) < 0)
        return io_error(errno, "fsync", t->path);
    return t->lk.created ? sync_dir(io, t->path) : 0;
}

/*
 * Put every locked file back as it was. Best effort with the real calls
 * (not the seam): the error that caused the rollback is what is reported,
 * unless the rollback itself fails, which is said in the message.
 */
static void rollback(target *targets, size_t n, int err)
{
    char first[512];

    (void)snprintf(first, sizeof(first), "%s", semail_error_last());
    for (size_t i = 0; i < n; i++) {
        target *t = &targets[i];
        bool ok;
        if (!t->locked)
            continue;
        ok = ftruncate(t->lk.fd, t->lk.size) == 0 && fdatasync(t->lk.fd) == 0;
        if (ok && t->lk.created) {
            int fd;
            ok = unlink(t->path) == 0;
            if (ok && (fd = open_parent(t->path)) >= 0) {
                (void)fsync(fd);
                close(fd);
            }
        }
        if (!ok)
            semail__errno(err, errno, "%s; rolling back %s also failed", first, t->path);
    }
}

static void unlock_all(target *targets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (targets[i].locked)
            semail__mbox_unlock(&targets[i].lk);
        targets[i].locked = false;
    }
}

static int lock_all(semail_mbox_txn *txn, target *targets, size_t n)
{
    struct timespec deadline;
    int err;

    semail__mbox_deadline(&deadline, txn->opts.lock_timeout_ms);
    for (size_t i = 0; i < n; i++) {
        if ((err = semail__mbox_lock(&targets[i].lk, targets[i].path, &txn->opts, &deadline)) < 0)
            return err;
        targets[i].locked = true;
        txn->recovered += targets[i].lk.recovered;
    }
    return 0;
}

static int write_and_sync(semail_mbox_txn *txn, target *targets, size_t n)
{
    out o = {.io = &txn->io, .fd = -1};
    int err = 0;

    if ((o.buf = malloc(OUT_BUF_SIZE)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (size_t i = 0; i < txn->n && err == 0; i++)
        err = write_message(&o, &targets[txn->appends[i].target], &txn->appends[i].msg);
    for (size_t i = 0; i < n && err == 0; i++)
        err = sync_target(&txn->io, &targets[i]);
    free(o.buf);
    return err;
}

int semail_mbox_txn_commit(semail_mbox_txn *txn)
{
    target *targets = NULL;
    size_t n = 0;
    int err;

    if (txn == NULL)
        return semail__err(SEMAIL_EINVAL, "no transaction");
    if (txn->committed)
        return semail__err(SEMAIL_EINVAL, "mbox transaction already committed");
    txn->committed = true;
    if (txn->n == 0)
        return 0;
    if ((targets = calloc(txn->n, sizeof(*targets))) == NULL) {
        err = semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    if ((err = build_targets(txn, targets, &n)) < 0)
        goto done;
    if ((err = lock_all(txn, targets, n)) < 0 || (err = write_and_sync(txn, targets, n)) < 0)
        rollback(targets, n, err);
done:
    if (targets != NULL)
        unlock_all(targets, n);
    free(targets);
    return err;
}

void semail_mbox_txn_free(semail_mbox_txn *txn)
{
    if (txn == NULL)
        return;
    for (size_t i = 0; i < txn->n; i++)
        free(txn->appends[i].path);
    free(txn->appends);
    free(txn);
}

int semail_mbox_append(const char *path, const semail_mbox_message *msg,
                       const semail_mbox_options *opts)
{
    semail_mbox_txn *txn = NULL;
    int err;

    if ((err = semail_mbox_txn_new(&txn, opts)) < 0)
        return err;
    if ((err = semail_mbox_txn_add(txn, path, msg)) == 0)
        err = semail_mbox_txn_commit(txn);
    semail_mbox_txn_free(txn);
    return err;
}
