/*
 * queue.c - the spool directory of semail-outbound (layout: docs/queue.md).
 *
 * Contract: a message is in the queue exactly when msg/QID exists; that
 * file is written once (tmp/, fsync, rename, fsync msg/) and never changed.
 * Its mutable state lives in state/QID, replaced by rename under the
 * message's flock() and never trusted unless its checksum holds; a missing
 * or damaged state file means "every recipient pending". Every file in
 * tmp/ is flock()ed by its writer, so a file there that can be locked was
 * left by a dead process and may be removed.
 *
 * Picking the next due message must not read every queue file each time (a
 * burst of n messages would cost O(n^2) reads): the due list of the last
 * scan is handed out one entry at a time, and the spool is scanned again
 * when the list is used up, older than DUE_CACHE_MS or a flush came.
 * Messages submitted through the handle are appended to the list at once;
 * others (another handle, a retry time reached) wait at most DUE_CACHE_MS.
 * The list is only a hint: the flock() and the state read under it decide.
 *
 * The relay's path (the semail__queue_*_lazy() functions) writes less: its
 * results stay in memory until something must stay queued (a state write),
 * and the directory fsync of its removals is shared (at most
 * REMOVE_SYNC_MAX removals or REMOVE_SYNC_MS old; any fsync of msg/, such
 * as a submission's, covers them). A crash can then only bring a message
 * back to be delivered again, never lose one (docs/queue.md).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "queue_file.h"
#include "queue_internal.h"

#define DEFAULT_MAX_MESSAGE ((uint64_t)1 << 30)
#define HEADER_PEEK         65536
#define LOCK_POLL_MS        10

#define DUE_CACHE_MS   250
#define DUE_APPEND_MAX 65536

#define REMOVE_SYNC_MAX 64
#define REMOVE_SYNC_MS  1000

static const char b32[] = "0123456789ABCDEFGHIJKLMNOPQRSTUV";

typedef struct candidate {
    int64_t next;
    char qid[SEMAIL_QUEUE_QID_SIZE];
} candidate;

/*
 * The due list of the last scan (see the top of the file). mu guards the
 * list and is held during a scan; add_mu guards what submissions and flushes
 * leave for the next pick, so that they never wait for a scan.
 */
typedef struct due_cache {
    pthread_mutex_t mu;
    candidate *c;
    size_t n, pos, cap;
    int valid;        /* 0: scan before the next pick */
    int64_t built_ms; /* the caller's "now" of the scan */
    int64_t flush_ms; /* the flush time the scan used */
    int64_t next_ms;  /* earliest next attempt of what was not due */
    unsigned long scans;
    pthread_mutex_t add_mu;
    candidate *add; /* submitted since the last pick */
    size_t nadd, addcap;
    int add_open;  /* a list exists to append to (else: stale) */
    int add_stale; /* a flush, or too much to append: scan again */
} due_cache;

struct semail_queue {
    char *dir;
    int dirfd, tmpfd, msgfd, statefd, corruptfd;
    semail_queue_options opts;
    due_cache due;
    pthread_mutex_t rm_mu; /* guards the four fields below */
    uint64_t rm_seq;       /* removals from msg/ made by this handle */
    uint64_t rm_synced;    /* how many of them an fsync of msg/ covers */
    int64_t rm_first_ms;   /* when the oldest removal not covered was made */
    unsigned long rm_syncs;
};

/* A message file's envelope with its state, as listed or locked. */
typedef struct loaded {
    semail__qf_msg msg;
    semail__qf_state st;
    semail_queue_info info;
    int state_file; /* state/QID existed when read, or was written since */
} loaded;

struct semail_queue_entry {
    semail_queue *q;
    int fd; /* the message file, flock()ed */
    int removed;
    int dirty; /* results in memory not yet written to state/ */
    loaded l;
    char *file; /* the whole message file */
    size_t file_len;
};

int64_t semail_queue_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int semail__queue_random(void *p, size_t n)
{
    unsigned char *c = p;
    while (n > 0) {
        ssize_t r = getrandom(c, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return semail__errno(SEMAIL_EIO, errno, "getrandom");
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* N random characters of [0-9A-V], NUL-terminated (OUT holds N + 1). */
static int random_b32(char *out, size_t n)
{
    unsigned char r[32];
    int err;
    if (n >= sizeof(r))
        return semail__err(SEMAIL_ERROR, "random name too long");
    if ((err = semail__queue_random(r, n)) < 0)
        return err;
    for (size_t i = 0; i < n; i++)
        out[i] = b32[r[i] & 31];
    out[n] = '\0';
    return 0;
}

/* The arrival time in 10 base-32 digits (50 bits: sortable until year 37000), then 8 random. */
static int make_qid(char *out, int64_t now)
{
    uint64_t t = (uint64_t)now;
    for (int i = 9; i >= 0; i--, t >>= 5)
        out[i] = b32[t & 31];
    return random_b32(out + 10, SEMAIL_QUEUE_QID_LEN - 10);
}

static int sys_err(int errnum, const char *what, const char *name)
{
    return semail__errno(semail__errno_code(errnum), errnum, "queue: %s %s", what, name);
}

/* ---- files ---------------------------------------------------------------- */

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/*
 * Create tmp/PREFIX.RANDOM, locked, so that a recovering process never
 * removes it while we live. A sweeper may have taken it between open and
 * flock and removed it: then it has no link left and we start again.
 */
static int tmp_create(semail_queue *q, const char *prefix, char *name, size_t size, int *fd_out)
{
    for (int tries = 0; tries < 8; tries++) {
        char rnd[17];
        struct stat st;
        int err, fd;

        if ((err = random_b32(rnd, 16)) < 0 ||
            (err = semail__fmt(name, size, "%s.%s", prefix, rnd)) < 0)
            return err;
        fd = openat(q->tmpfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            if (errno == EEXIST)
                continue;
            return sys_err(errno, "create tmp/", name);
        }
        if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0) {
            err = sys_err(errno, "lock tmp/", name);
            close(fd);
            unlinkat(q->tmpfd, name, 0);
            return err;
        }
        if (st.st_nlink == 0) {
            close(fd);
            continue;
        }
        *fd_out = fd;
        return 0;
    }
    return semail__err(SEMAIL_EIO, "queue: cannot create a temporary file");
}

static int write_sync(int fd, const void *p, size_t n, const char *name)
{
    if (semail__write_all(fd, p, n) < 0)
        return sys_err(errno, "write tmp/", name);
    return 0;
}

static int fsync_dir(int dfd, const char *name)
{
    if (fsync(dfd) < 0)
        return sys_err(errno, "fsync", name);
    return 0;
}

/* fsync msg/; the removals made before it are durable after it. */
static int msg_dir_sync(semail_queue *q)
{
    uint64_t seq;
    int err;

    pthread_mutex_lock(&q->rm_mu);
    seq = q->rm_seq;
    pthread_mutex_unlock(&q->rm_mu);
    if ((err = fsync_dir(q->msgfd, "msg/")) < 0)
        return err;
    pthread_mutex_lock(&q->rm_mu);
    if (seq > q->rm_synced) {
        q->rm_synced = seq;
        q->rm_syncs++;
    }
    pthread_mutex_unlock(&q->rm_mu);
    return 0;
}

/* Sync msg/ when the oldest unsynced removal is REMOVE_SYNC_MS old, or
 * always (ALWAYS) when there is one. */
static int removals_sync(semail_queue *q, int64_t now, int always)
{
    int due;

    pthread_mutex_lock(&q->rm_mu);
    due = q->rm_seq > q->rm_synced &&
          (always || q->rm_seq - q->rm_synced >= REMOVE_SYNC_MAX || now < q->rm_first_ms ||
           now - q->rm_first_ms >= REMOVE_SYNC_MS);
    pthread_mutex_unlock(&q->rm_mu);
    return due ? msg_dir_sync(q) : 0;
}

/* Read all of FD (at most MAX bytes) into a new buffer. */
static int read_fd(char **out, size_t *len, int fd, uint64_t max, const char *name)
{
    struct stat st;
    char *buf = NULL;
    size_t have = 0, size;

    if (fstat(fd, &st) < 0)
        return sys_err(errno, "stat", name);
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max)
        return semail__err(SEMAIL_EINVAL, "queue: %s is not a plausible queue file", name);
    size = (size_t)st.st_size;
    if ((buf = malloc(size + 1)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    while (have < size) {
        ssize_t r = pread(fd, buf + have, size - have, (off_t)have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            break; /* shrunk under us: the parser sees the short file */
        if (r < 0) {
            int err = sys_err(errno, "read", name);
            free(buf);
            return err;
        }
        have += (size_t)r;
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return 0;
}

/* ---- loading -------------------------------------------------------------- */

static void loaded_clear(loaded *l)
{
    semail__qf_msg_clear(&l->msg);
    semail__qf_state_clear(&l->st);
    memset(l, 0, sizeof(*l));
}

static void loaded_fill_info(loaded *l)
{
    semail_queue_info *i = &l->info;
    memcpy(i->qid, l->msg.qid, sizeof(i->qid));
    i->sender = l->msg.sender;
    for (size_t k = 0; k < l->st.rcpt_count; k++)
        l->st.rcpts[k].address = l->msg.rcpts[k];
    i->rcpts = l->st.rcpts;
    i->rcpt_count = l->st.rcpt_count;
    i->attempts = l->st.attempts;
    i->arrival_ms = l->msg.arrival_ms;
    i->next_attempt_ms = l->st.next_ms;
    i->last_attempt_ms = l->st.last_ms;
    i->size = l->msg.size;
}

static int initial_state(loaded *l)
{
    semail__qf_state *s = &l->st;
    semail__qf_state_clear(s);
    memcpy(s->qid, l->msg.qid, sizeof(s->qid));
    s->next_ms = l->msg.arrival_ms;
    s->rcpt_count = l->msg.rcpt_count;
    if ((s->rcpts = calloc(s->rcpt_count, sizeof(*s->rcpts))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    return 0;
}

/* The recorded state of L's message; missing or damaged: the initial one. */
static int load_state(semail_queue *q, loaded *l)
{
    char *buf = NULL;
    size_t len = 0;
    int fd, err;

    fd = openat(q->statefd, l->msg.qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    l->state_file = fd >= 0 || errno != ENOENT;
    if (fd < 0)
        return initial_state(l);
    err = read_fd(&buf, &len, fd, SEMAIL__QF_STATE_MAX, l->msg.qid);
    close(fd);
    if (err == SEMAIL_ENOMEM)
        return err;
    if (err < 0 || semail__qf_state_parse(&l->st, buf, len) < 0 ||
        strcmp(l->st.qid, l->msg.qid) != 0 || l->st.rcpt_count != l->msg.rcpt_count)
        err = initial_state(l);
    free(buf);
    return err;
}

/*
 * Parse the header of the message file open on FD and check its size (not
 * its data checksum: that needs the whole file). SEMAIL_EINVAL: damaged.
 */
static int peek_header(semail__qf_msg *m, int fd, const char *qid)
{
    struct stat st;
    char *buf;
    size_t want;
    ssize_t r;
    int err = SEMAIL_EINVAL;

    if (fstat(fd, &st) < 0)
        return sys_err(errno, "stat msg/", qid);
    if (!S_ISREG(st.st_mode))
        return semail__err(SEMAIL_EINVAL, "queue: msg/%s is not a file", qid);
    for (want = HEADER_PEEK;; want = SEMAIL__QF_HEADER_MAX) {
        if (want > (uint64_t)st.st_size)
            want = (size_t)st.st_size;
        if ((buf = malloc(want + 1)) == NULL)
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        do
            r = pread(fd, buf, want, 0);
        while (r < 0 && errno == EINTR);
        if (r >= 0 && semail__qf_msg_parse_header(m, buf, (size_t)r) == 0)
            err = 0;
        free(buf);
        if (err == 0 || r < 0 || want >= (uint64_t)st.st_size || want == SEMAIL__QF_HEADER_MAX)
            break;
    }
    if (err < 0)
        return semail__err(SEMAIL_EINVAL, "queue: msg/%s has a damaged header", qid);
    if (strcmp(m->qid, qid) != 0 || (uint64_t)st.st_size - m->header_len < SEMAIL__QF_TRAILER_LEN ||
        (uint64_t)st.st_size - m->header_len - SEMAIL__QF_TRAILER_LEN != m->size) {
        semail__qf_msg_clear(m);
        return semail__err(SEMAIL_EINVAL, "queue: msg/%s is damaged (name or size)", qid);
    }
    return 0;
}

/* Move a damaged message (and its state) aside, where no worker looks. */
static void quarantine(semail_queue *q, const char *qid)
{
    char sname[SEMAIL_QUEUE_QID_SIZE + 8];
    renameat(q->msgfd, qid, q->corruptfd, qid);
    if (semail__fmt(sname, sizeof(sname), "%s.state", qid) == 0)
        renameat(q->statefd, qid, q->corruptfd, sname);
    fsync(q->msgfd);
}

/* ---- directory scans ------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* The names in directory DFD, sorted; only QIDs when QIDS_ONLY. */
static int list_names(char ***out, size_t *count, int dfd, int qids_only)
{
    DIR *d;
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int fd, err = 0;

    if ((fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return sys_err(errno, "open", "spool directory");
    if ((d = fdopendir(fd)) == NULL) {
        err = sys_err(errno, "open", "spool directory");
        close(fd);
        return err;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || (qids_only && !semail__qf_valid_qid(de->d_name)))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **p = realloc(names, ncap * sizeof(*names));
            if (p == NULL) {
                err = semail__err(SEMAIL_ENOMEM, "out of memory");
                break;
            }
            names = p;
            cap = ncap;
        }
        if ((names[n] = semail__strdup(de->d_name)) == NULL) {
            err = SEMAIL_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (err < 0) {
        names_free(names, n);
        return err;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    *out = names;
    *count = n;
    return 0;
}

/* ---- open / close --------------------------------------------------------- */

int semail_queue_options_init(semail_queue_options *opts)
{
    semail_queue_options def = SEMAIL_QUEUE_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL options");
    *opts = def;
    return 0;
}

static int open_subdir(int *out, int dfd, const char *name, int mode)
{
    if (mkdirat(dfd, name, (mode_t)mode) < 0 && errno != EEXIST)
        return sys_err(errno, "mkdir", name);
    if ((*out = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return sys_err(errno, "open", name);
    return 0;
}

/* Remove what dead writers left in tmp/ (files nobody holds a lock on). */
static void sweep_tmp(semail_queue *q)
{
    char **names;
    size_t n;
    if (list_names(&names, &n, q->tmpfd, 0) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        int fd = openat(q->tmpfd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(q->tmpfd, names[i], 0);
        close(fd);
    }
    names_free(names, n);
}

/* Quarantine damaged messages; drop state files whose message is gone. */
static void sweep_spool(semail_queue *q)
{
    char **names;
    size_t n;
    struct stat st;

    if (list_names(&names, &n, q->msgfd, 1) == 0) {
        for (size_t i = 0; i < n; i++) {
            semail__qf_msg m;
            int fd = openat(q->msgfd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            if (fd < 0)
                continue;
            if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
                int err = peek_header(&m, fd, names[i]);
                if (err == SEMAIL_EINVAL)
                    quarantine(q, names[i]);
                else if (err == 0)
                    semail__qf_msg_clear(&m);
            }
            close(fd);
        }
        names_free(names, n);
    }
    if (list_names(&names, &n, q->statefd, 0) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (fstatat(q->msgfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
                unlinkat(q->statefd, names[i], 0);
        }
        names_free(names, n);
    }
}

int semail_queue_open(semail_queue **out, const char *dir, const semail_queue_options *opts)
{
    semail_queue *q;
    int mode, err;

    if (out == NULL || dir == NULL || dir[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "queue: no directory given");
    if (opts != NULL && opts->version != SEMAIL_QUEUE_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "queue: unknown options version %u", opts->version);
    *out = NULL;
    if ((q = calloc(1, sizeof(*q))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    q->dirfd = q->tmpfd = q->msgfd = q->statefd = q->corruptfd = -1;
    if (pthread_mutex_init(&q->due.mu, NULL) != 0) {
        free(q);
        return semail__err(SEMAIL_ERROR, "queue: cannot create a mutex");
    }
    if (pthread_mutex_init(&q->due.add_mu, NULL) != 0) {
        pthread_mutex_destroy(&q->due.mu);
        free(q);
        return semail__err(SEMAIL_ERROR, "queue: cannot create a mutex");
    }
    if (pthread_mutex_init(&q->rm_mu, NULL) != 0) {
        pthread_mutex_destroy(&q->due.add_mu);
        pthread_mutex_destroy(&q->due.mu);
        free(q);
        return semail__err(SEMAIL_ERROR, "queue: cannot create a mutex");
    }
    if (opts)
        q->opts = *opts;
    else
        semail_queue_options_init(&q->opts);
    if (q->opts.max_message_size == 0)
        q->opts.max_message_size = DEFAULT_MAX_MESSAGE;
    mode = q->opts.dir_mode ? q->opts.dir_mode : 0700;
    if ((q->dir = semail__strdup(dir)) == NULL) {
        err = SEMAIL_ENOMEM;
        goto done;
    }
    if (mkdir(dir, (mode_t)mode) < 0 && errno != EEXIST) {
        err = sys_err(errno, "mkdir", dir);
        goto done;
    }
    if ((q->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        err = sys_err(errno, "open", dir);
        goto done;
    }
    if ((err = open_subdir(&q->tmpfd, q->dirfd, "tmp", mode)) < 0 ||
        (err = open_subdir(&q->msgfd, q->dirfd, "msg", mode)) < 0 ||
        (err = open_subdir(&q->statefd, q->dirfd, "state", mode)) < 0 ||
        (err = open_subdir(&q->corruptfd, q->dirfd, "corrupt", mode)) < 0)
        goto done;
    sweep_tmp(q);
    sweep_spool(q);
    *out = q;
    q = NULL;
    err = 0;
done:
    semail_queue_free(q);
    return err;
}

void semail_queue_free(semail_queue *q)
{
    if (q == NULL)
        return;
    if (q->msgfd >= 0 && q->rm_seq > q->rm_synced)
        fsync(q->msgfd); /* best effort: at worst a removed message comes back */
    close_fd(&q->dirfd);
    close_fd(&q->tmpfd);
    close_fd(&q->msgfd);
    close_fd(&q->statefd);
    close_fd(&q->corruptfd);
    free(q->due.c);
    free(q->due.add);
    pthread_mutex_destroy(&q->due.mu);
    pthread_mutex_destroy(&q->due.add_mu);
    pthread_mutex_destroy(&q->rm_mu);
    free(q->dir);
    free(q);
}

/* ---- submit --------------------------------------------------------------- */

static int check_addr(const char *a, int allow_empty)
{
    size_t n = strlen(a);
    if ((!allow_empty && n == 0) || n > SEMAIL_QUEUE_ADDR_MAX)
        return semail__err(SEMAIL_EINVAL, "queue: bad address length %zu", n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c < 0x20 || c == 0x7f)
            return semail__err(SEMAIL_EINVAL, "queue: control byte in address");
    }
    return 0;
}

static int check_envelope(semail_queue *q, const char *sender, const char *const *rcpts, size_t n,
                          const void *data, size_t len)
{
    int err;
    if (rcpts == NULL || n == 0 || n > SEMAIL_QUEUE_RCPT_MAX || (data == NULL && len > 0))
        return semail__err(SEMAIL_EINVAL, "queue: bad envelope (%zu recipients)", n);
    if ((uint64_t)len > q->opts.max_message_size)
        return semail__err(SEMAIL_ETOOBIG, "queue: message of %zu bytes is too big", len);
    if ((err = check_addr(sender, 1)) < 0)
        return err;
    for (size_t i = 0; i < n; i++) {
        if (rcpts[i] == NULL || (err = check_addr(rcpts[i], 0)) < 0)
            return rcpts[i] == NULL ? semail__err(SEMAIL_EINVAL, "queue: NULL recipient") : err;
    }
    return 0;
}

/* Move tmp/NAME to msg/QID unless a message of that QID exists (EEXIST). */
static int publish(semail_queue *q, const char *name, const char *qid)
{
    if (renameat2(q->tmpfd, name, q->msgfd, qid, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* A filesystem without RENAME_NOREPLACE: link() does not replace either. */
    if (linkat(q->tmpfd, name, q->msgfd, qid, 0) < 0)
        return -1;
    unlinkat(q->tmpfd, name, 0);
    return 0;
}

static int submit_once(char *qid, semail_queue *q, const char *sender, const char *const *rcpts,
                       size_t n, const void *data, size_t len)
{
    semail_buf hdr, trl;
    char name[64];
    int64_t now = semail_queue_now_ms();
    int fd = -1, err;

    semail__buf_init(&hdr, SEMAIL__QF_HEADER_MAX);
    semail__buf_init(&trl, 64);
    if ((err = make_qid(qid, now)) < 0 ||
        (err = semail__qf_msg_encode_header(&hdr, qid, now, sender, rcpts, n, len)) < 0 ||
        (err = semail__qf_msg_encode_trailer(&trl, data, len)) < 0 ||
        (err = tmp_create(q, qid, name, sizeof(name), &fd)) < 0)
        goto done;
    if ((err = write_sync(fd, hdr.data, hdr.len, name)) < 0 ||
        (err = write_sync(fd, data, len, name)) < 0 ||
        (err = write_sync(fd, trl.data, trl.len, name)) < 0)
        goto fail;
    if (fsync(fd) < 0) {
        err = sys_err(errno, "fsync tmp/", name);
        goto fail;
    }
    if (publish(q, name, qid) < 0) {
        err = errno == EEXIST ? SEMAIL_EEXISTS : sys_err(errno, "rename to msg/", qid);
        goto fail;
    }
    if ((err = msg_dir_sync(q)) < 0) {
        /* Not known to be durable: take it back, the client will retry. */
        unlinkat(q->msgfd, qid, 0);
        goto done;
    }
    err = 0;
    goto done;
fail:
    unlinkat(q->tmpfd, name, 0);
done:
    if (fd >= 0)
        close(fd);
    semail__buf_free(&hdr);
    semail__buf_free(&trl);
    return err;
}

/* Append C to *ARR (N of CAP, growing up to MAX); 0, or -1 when full or out of memory. */
static int candidate_push(candidate **arr, size_t *n, size_t *cap, size_t max, const candidate *c)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        candidate *p;
        if (*n >= max)
            return -1;
        if (ncap > max)
            ncap = max;
        if ((p = realloc(*arr, ncap * sizeof(*p))) == NULL)
            return -1;
        *arr = p;
        *cap = ncap;
    }
    (*arr)[(*n)++] = *c;
    return 0;
}

/*
 * A message just submitted is due at once: leave it for the next pick to
 * append to the due list, so that it does not wait for a scan. Without a
 * list (a handle that only submits) or with too many waiting, the next pick
 * scans instead, which also bounds what is kept here.
 */
static void due_add(semail_queue *q, const char *qid)
{
    due_cache *d = &q->due;
    candidate c;

    c.next = semail_queue_now_ms();
    memcpy(c.qid, qid, sizeof(c.qid));
    pthread_mutex_lock(&d->add_mu);
    if (!d->add_open || d->add_stale ||
        candidate_push(&d->add, &d->nadd, &d->addcap, DUE_APPEND_MAX, &c) < 0) {
        d->add_stale = 1;
        d->add_open = 0;
        d->nadd = 0;
    }
    pthread_mutex_unlock(&d->add_mu);
}

int semail_queue_submit(char *qid_out, semail_queue *q, const char *sender,
                        const char *const *rcpts, size_t rcpt_count, const void *data, size_t len)
{
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int err;

    if (qid_out == NULL || q == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL argument");
    qid_out[0] = '\0';
    if (sender == NULL)
        sender = "";
    if ((err = check_envelope(q, sender, rcpts, rcpt_count, data, len)) < 0)
        return err;
    /* A QID collision needs the same millisecond and 40 random bits: retry. */
    for (int tries = 0; tries < 4; tries++) {
        err = submit_once(qid, q, sender, rcpts, rcpt_count, data, len);
        if (err != SEMAIL_EEXISTS)
            break;
    }
    if (err == 0) {
        memcpy(qid_out, qid, sizeof(qid));
        due_add(q, qid);
    }
    return err == SEMAIL_EEXISTS ? semail__err(SEMAIL_EIO, "queue: no free QID") : err;
}

/* ---- listing -------------------------------------------------------------- */

/* Envelope and state of message QID without locking it. */
static int load_unlocked(loaded *l, semail_queue *q, const char *qid)
{
    int fd, err;

    memset(l, 0, sizeof(*l));
    fd = openat(q->msgfd, qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? SEMAIL_ENOTFOUND : sys_err(errno, "open msg/", qid);
    err = peek_header(&l->msg, fd, qid);
    close(fd);
    if (err < 0 || (err = load_state(q, l)) < 0) {
        loaded_clear(l);
        return err;
    }
    loaded_fill_info(l);
    return 0;
}

int semail_queue_list(semail_queue *q, semail_queue_list_cb cb, void *payload)
{
    char **names = NULL;
    size_t n = 0;
    int err;

    if (q == NULL || cb == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL argument");
    if ((err = list_names(&names, &n, q->msgfd, 1)) < 0)
        return err;
    for (size_t i = 0; i < n; i++) {
        loaded l;
        err = load_unlocked(&l, q, names[i]);
        if (err == SEMAIL_ENOTFOUND || err == SEMAIL_EINVAL || err == SEMAIL_EIO) {
            err = 0; /* gone, or damaged: lock and open deal with those */
            continue;
        }
        if (err < 0)
            break;
        err = cb(&l.info, payload);
        loaded_clear(&l);
        if (err != 0)
            break;
    }
    names_free(names, n);
    return err;
}

/* ---- locking -------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* flock FD, waiting up to TIMEOUT_MS. */
static int lock_fd(int fd, unsigned timeout_ms, const char *qid)
{
    unsigned waited = 0;
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return sys_err(errno, "lock msg/", qid);
        if (waited >= timeout_ms)
            return semail__err(SEMAIL_ELOCKED, "queue: message %s is locked", qid);
        sleep_ms(LOCK_POLL_MS);
        waited += LOCK_POLL_MS;
    }
}

/* Read and verify the whole message file of a locked entry. */
static int entry_load(semail_queue_entry *e, const char *qid)
{
    semail_queue *q = e->q;
    uint64_t max = SEMAIL__QF_HEADER_MAX + q->opts.max_message_size + SEMAIL__QF_TRAILER_LEN;
    int err;

    if ((err = read_fd(&e->file, &e->file_len, e->fd, max, qid)) < 0)
        return err;
    if (semail__qf_msg_parse_header(&e->l.msg, e->file, e->file_len) < 0 ||
        strcmp(e->l.msg.qid, qid) != 0 ||
        semail__qf_msg_check_data(&e->l.msg, e->file, e->file_len) < 0)
        return semail__err(SEMAIL_EINVAL, "queue: msg/%s is damaged", qid);
    if ((err = load_state(q, &e->l)) < 0)
        return err;
    loaded_fill_info(&e->l);
    return 0;
}

static int lock_entry(semail_queue_entry **out, semail_queue *q, const char *qid,
                      unsigned timeout_ms)
{
    semail_queue_entry *e;
    struct stat a, b;
    int err;

    *out = NULL;
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    e->q = q;
    e->fd = openat(q->msgfd, qid, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (e->fd < 0) {
        err = errno == ENOENT ? semail__err(SEMAIL_ENOTFOUND, "queue: no message %s", qid)
                              : sys_err(errno, "open msg/", qid);
        goto done;
    }
    if ((err = lock_fd(e->fd, timeout_ms, qid)) < 0)
        goto done;
    /* Removed (or replaced) while we waited for the lock? */
    if (fstat(e->fd, &a) < 0 || fstatat(q->msgfd, qid, &b, AT_SYMLINK_NOFOLLOW) < 0 ||
        a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
        err = semail__err(SEMAIL_ENOTFOUND, "queue: no message %s", qid);
        goto done;
    }
    if ((err = entry_load(e, qid)) == SEMAIL_EINVAL) {
        quarantine(q, qid);
        err = semail__err(SEMAIL_EIO, "queue: message %s is damaged; moved to corrupt/", qid);
    }
    if (err < 0)
        goto done;
    *out = e;
    e = NULL;
done:
    semail_queue_release(e);
    return err;
}

int semail_queue_lock(semail_queue_entry **out, semail_queue *q, const char *qid)
{
    if (out == NULL || q == NULL || qid == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL argument");
    *out = NULL;
    if (!semail__qf_valid_qid(qid))
        return semail__err(SEMAIL_EINVAL, "queue: not a queue id");
    return lock_entry(out, q, qid, q->opts.lock_timeout_ms);
}

/* The time of the last flush request, 0 when none. */
static int64_t flush_time(semail_queue *q)
{
    char buf[64];
    ssize_t r;
    uint64_t v = 0;
    int fd = openat(q->dirfd, "flush", O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0)
        return 0;
    r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (r <= 0)
        return 0;
    buf[r] = '\0';
    for (ssize_t i = 0; i < r && buf[i] >= '0' && buf[i] <= '9' && v < INT64_MAX / 10; i++)
        v = v * 10 + (uint64_t)(buf[i] - '0');
    return (int64_t)v;
}

static int is_due(const semail_queue_info *i, int64_t now, int64_t flush)
{
    return i->next_attempt_ms <= now || (flush > 0 && i->last_attempt_ms <= flush);
}

static int cmp_candidate(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->next != y->next)
        return x->next < y->next ? -1 : 1;
    return strcmp(x->qid, y->qid);
}

/* Messages due at NOW, the longest due first; the earliest later time in NEXT. */
static int due_candidates(candidate **out, size_t *count, semail_queue *q, int64_t now,
                          int64_t flush, int64_t *next)
{
    char **names = NULL;
    size_t n = 0, k = 0;
    candidate *c = NULL;
    int err;

    *next = INT64_MAX;
    if ((err = list_names(&names, &n, q->msgfd, 1)) < 0)
        return err;
    if (n > 0 && (c = calloc(n, sizeof(*c))) == NULL) {
        names_free(names, n);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        loaded l;
        if (load_unlocked(&l, q, names[i]) < 0)
            continue;
        if (is_due(&l.info, now, flush)) {
            c[k].next = l.info.next_attempt_ms;
            memcpy(c[k++].qid, l.info.qid, sizeof(c->qid));
        } else if (l.info.next_attempt_ms < *next) {
            *next = l.info.next_attempt_ms;
        }
        loaded_clear(&l);
    }
    names_free(names, n);
    if (k > 1)
        qsort(c, k, sizeof(*c), cmp_candidate);
    *out = c;
    *count = k;
    return 0;
}

/*
 * Take what submissions and flushes left (d->mu held): new messages go to
 * the end of the list (they are due latest); a flush or an overflow makes
 * the list stale. Left unmerged on failure: the next pick scans.
 */
static void due_merge(due_cache *d)
{
    pthread_mutex_lock(&d->add_mu);
    if (d->add_stale) {
        d->valid = 0;
    } else {
        for (size_t i = 0; i < d->nadd && d->valid; i++)
            if (candidate_push(&d->c, &d->n, &d->cap, SIZE_MAX / sizeof(*d->c), &d->add[i]) < 0)
                d->valid = 0;
    }
    d->nadd = 0;
    pthread_mutex_unlock(&d->add_mu);
}

/* Must the due list be scanned again before handing out its next entry? */
static int due_stale(const due_cache *d, int64_t now, int64_t flush)
{
    return !d->valid || d->pos >= d->n || flush != d->flush_ms || now < d->built_ms ||
           (uint64_t)now - (uint64_t)d->built_ms > DUE_CACHE_MS;
}

/*
 * Replace the due list by a new scan (d->mu held). Submissions during the
 * scan are left for the next merge: one listed twice costs a failed lock.
 */
static int due_rescan(semail_queue *q, int64_t now, int64_t flush)
{
    due_cache *d = &q->due;
    candidate *c = NULL;
    size_t n = 0;
    int64_t next;
    int err;

    d->valid = 0;
    d->scans++;
    pthread_mutex_lock(&d->add_mu);
    d->nadd = 0;
    d->add_stale = 0;
    d->add_open = 1;
    pthread_mutex_unlock(&d->add_mu);
    if ((err = due_candidates(&c, &n, q, now, flush, &next)) < 0)
        return err;
    free(d->c);
    d->c = c;
    d->n = d->cap = n;
    d->pos = 0;
    d->valid = 1;
    d->built_ms = now;
    d->flush_ms = flush;
    d->next_ms = next;
    return 0;
}

/*
 * The next candidate QID, scanning again when the list is stale; at most one
 * scan per *SCANNED (a list of messages all held elsewhere must not make the
 * caller scan forever). SEMAIL_ENOTFOUND when the list is used up.
 */
static int due_pop(char *qid, int64_t *next, semail_queue *q, int64_t now, int64_t flush,
                   int *scanned)
{
    due_cache *d = &q->due;
    int err = 0;

    pthread_mutex_lock(&d->mu);
    due_merge(d);
    if (!*scanned && due_stale(d, now, flush)) {
        *scanned = 1;
        err = due_rescan(q, now, flush);
    }
    if (err == 0 && (!d->valid || d->pos >= d->n))
        err = SEMAIL_ENOTFOUND;
    if (err == 0)
        memcpy(qid, d->c[d->pos++].qid, SEMAIL_QUEUE_QID_SIZE);
    *next = d->next_ms;
    pthread_mutex_unlock(&d->mu);
    return err;
}

int semail_queue_lock_due(semail_queue_entry **out, semail_queue *q, int64_t now_ms,
                          int64_t *next_ms)
{
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int64_t flush, next = INT64_MAX;
    int err, scanned = 0;

    if (out == NULL || q == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL argument");
    *out = NULL;
    flush = flush_time(q);
    for (;;) {
        semail_queue_entry *e;
        /* The file work happens outside the list's mutex: workers lock in parallel. */
        if ((err = due_pop(qid, &next, q, now_ms, flush, &scanned)) < 0) {
            if (err == SEMAIL_ENOTFOUND) {
                /* Idle: the removals need not wait for the next one. */
                removals_sync(q, semail_queue_now_ms(), 0);
                err = semail__err(SEMAIL_ENOTFOUND, "queue: nothing due");
            }
            break;
        }
        err = lock_entry(&e, q, qid, 0);
        if (err == SEMAIL_ENOMEM)
            break;
        if (err < 0)
            continue; /* held by another worker, gone, or damaged */
        /* The list is as old as its scan: the state read under the lock decides. */
        if (!is_due(&e->l.info, now_ms, flush)) {
            semail_queue_release(e);
            continue;
        }
        *out = e;
        err = 0;
        break;
    }
    if (next_ms)
        *next_ms = next;
    return err;
}

unsigned long semail__queue_due_scans(semail_queue *q)
{
    unsigned long n;

    pthread_mutex_lock(&q->due.mu);
    n = q->due.scans;
    pthread_mutex_unlock(&q->due.mu);
    return n;
}

const semail_queue_info *semail_queue_entry_info(const semail_queue_entry *e)
{
    return e ? &e->l.info : NULL;
}

const char *semail_queue_entry_data(const semail_queue_entry *e, size_t *len)
{
    if (e == NULL) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = (size_t)e->l.msg.size;
    return e->file + e->l.msg.header_len;
}

void semail_queue_release(semail_queue_entry *e)
{
    if (e == NULL)
        return;
    close_fd(&e->fd);
    loaded_clear(&e->l);
    free(e->file);
    free(e);
}

/* ---- state updates -------------------------------------------------------- */

/* Write the entry's in-memory state to state/QID durably (new file + rename). */
static int entry_save(semail_queue_entry *e)
{
    semail_queue *q = e->q;
    const char *qid = e->l.msg.qid;
    semail_buf buf;
    char name[64];
    int fd = -1, err;

    semail__buf_init(&buf, SEMAIL__QF_STATE_MAX);
    if ((err = semail__qf_state_encode(&buf, &e->l.st)) < 0 ||
        (err = tmp_create(q, qid, name, sizeof(name), &fd)) < 0)
        goto done;
    if ((err = write_sync(fd, buf.data, buf.len, name)) < 0)
        goto fail;
    if (fsync(fd) < 0) {
        err = sys_err(errno, "fsync tmp/", name);
        goto fail;
    }
    if (renameat(q->tmpfd, name, q->statefd, qid) < 0) {
        err = sys_err(errno, "rename to state/", qid);
        goto fail;
    }
    e->l.state_file = 1;
    if ((err = fsync_dir(q->statefd, "state/")) == 0)
        e->dirty = 0;
    goto done;
fail:
    unlinkat(q->tmpfd, name, 0);
done:
    if (fd >= 0)
        close(fd);
    semail__buf_free(&buf);
    loaded_fill_info(&e->l);
    return err;
}

static int check_live(const semail_queue_entry *e)
{
    if (e == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL entry");
    if (e->removed)
        return semail__err(SEMAIL_EINVAL, "queue: message %s was removed", e->l.msg.qid);
    return 0;
}

/* Set recipient INDEX's result in memory; *OLD gets what it was. */
static int record_mem(semail_queue_entry *e, size_t index, semail_queue_rcpt_state state,
                      const semail_queue_result *result, semail_queue_rcpt *old)
{
    semail_queue_rcpt *r;
    int err;

    if ((err = check_live(e)) < 0)
        return err;
    if (index >= e->l.st.rcpt_count || (unsigned)state > SEMAIL_QUEUE_FAILED)
        return semail__err(SEMAIL_EINVAL, "queue: bad recipient index or state");
    r = &e->l.st.rcpts[index];
    if (r->state != SEMAIL_QUEUE_PENDING)
        return semail__err(SEMAIL_EINVAL, "queue: recipient %zu already has a final state", index);
    if (result && (result->code < 0 || result->code > 999))
        return semail__err(SEMAIL_EINVAL, "queue: bad reply code %d", result->code);
    *old = *r;
    r->state = state;
    memset(&r->result, 0, sizeof(r->result));
    if (result) {
        r->result.code = result->code;
        semail__qf_sanitize(r->result.enhanced, sizeof(r->result.enhanced), result->enhanced);
        semail__qf_sanitize(r->result.remote_host, sizeof(r->result.remote_host),
                            result->remote_host);
        semail__qf_sanitize(r->result.text, sizeof(r->result.text), result->text);
        r->result.time_ms = result->time_ms;
    }
    if (r->result.time_ms <= 0)
        r->result.time_ms = semail_queue_now_ms();
    loaded_fill_info(&e->l);
    return 0;
}

int semail_queue_record(semail_queue_entry *e, size_t index, semail_queue_rcpt_state state,
                        const semail_queue_result *result)
{
    semail_queue_rcpt old;
    int err;

    if ((err = record_mem(e, index, state, result, &old)) < 0)
        return err;
    if ((err = entry_save(e)) < 0) {
        e->l.st.rcpts[index] = old;
        loaded_fill_info(&e->l);
    }
    return err;
}

int semail__queue_record_lazy(semail_queue_entry *e, size_t index, semail_queue_rcpt_state state,
                              const semail_queue_result *result)
{
    semail_queue_rcpt old;
    int err;

    if ((err = record_mem(e, index, state, result, &old)) < 0)
        return err;
    e->dirty = 1;
    return 0;
}

int semail__queue_save(semail_queue_entry *e)
{
    int err;

    if ((err = check_live(e)) < 0)
        return err;
    return e->dirty ? entry_save(e) : 0;
}

/* Mark the failures notified; written now unless LAZY (then at the next save). */
static int mark_notified(semail_queue_entry *e, int lazy)
{
    semail__qf_state *s;
    int err = 0, marked = 0;

    if ((err = check_live(e)) < 0)
        return err;
    s = &e->l.st;
    for (size_t i = 0; i < s->rcpt_count; i++) {
        if (s->rcpts[i].state == SEMAIL_QUEUE_FAILED && !s->rcpts[i].notified) {
            s->rcpts[i].notified = 2; /* "marked now", to undo on failure */
            marked++;
        }
    }
    if (marked == 0)
        return 0;
    if (!lazy)
        err = entry_save(e);
    for (size_t i = 0; i < s->rcpt_count; i++) {
        if (s->rcpts[i].notified == 2)
            s->rcpts[i].notified = err < 0 ? 0 : 1;
    }
    if (lazy)
        e->dirty = 1;
    return err < 0 ? err : marked;
}

int semail_queue_mark_notified(semail_queue_entry *e)
{
    return mark_notified(e, 0);
}

int semail__queue_mark_notified_lazy(semail_queue_entry *e)
{
    return mark_notified(e, 1);
}

int semail_queue_schedule(semail_queue_entry *e, int64_t next_attempt_ms)
{
    semail__qf_state *s, old;
    int err;

    if ((err = check_live(e)) < 0)
        return err;
    if (next_attempt_ms < 0)
        return semail__err(SEMAIL_EINVAL, "queue: negative time");
    s = &e->l.st;
    old = *s;
    if (s->attempts < UINT32_MAX)
        s->attempts++;
    s->last_ms = semail_queue_now_ms();
    s->next_ms = next_attempt_ms;
    if ((err = entry_save(e)) < 0) {
        s->attempts = old.attempts;
        s->last_ms = old.last_ms;
        s->next_ms = old.next_ms;
        loaded_fill_info(&e->l);
    }
    return err;
}

/* "REASON (last error: CODE ENH TEXT)", cut to fit; just REASON before any attempt. */
static void last_error(char *out, size_t size, const char *reason, const semail_queue_result *r)
{
    int n;
    if (r->text[0] == '\0' && r->code == 0)
        n = snprintf(out, size, "%s", reason);
    else if (r->code > 0)
        n = snprintf(out, size, "%s (last error: %d%s%s %s)", reason, r->code,
                     r->enhanced[0] ? " " : "", r->enhanced, r->text);
    else
        n = snprintf(out, size, "%s (last error: %s)", reason, r->text);
    if (n < 0)
        semail__qf_sanitize(out, size, reason);
}

int semail__queue_fail_pending(semail_queue_entry *e, const char *enhanced, const char *reason)
{
    semail__qf_state *s;
    int err, failed = 0;

    if ((err = check_live(e)) < 0)
        return err;
    if (e->dirty && (err = entry_save(e)) < 0)
        return err;
    s = &e->l.st;
    for (size_t i = 0; i < s->rcpt_count; i++) {
        semail_queue_result *res = &s->rcpts[i].result;
        char text[SEMAIL_QUEUE_TEXT_SIZE];
        if (s->rcpts[i].state != SEMAIL_QUEUE_PENDING)
            continue;
        last_error(text, sizeof(text), reason, res);
        memcpy(res->text, text, sizeof(text));
        res->code = 0; /* the final word is ours, not a server's reply */
        semail__qf_sanitize(res->enhanced, sizeof(res->enhanced), enhanced);
        res->time_ms = semail_queue_now_ms();
        s->rcpts[i].state = SEMAIL_QUEUE_FAILED;
        failed++;
    }
    if (failed == 0)
        return 0;
    if ((err = entry_save(e)) < 0) {
        /* What a lazy record left in memory would be lost by the reload. */
        /* The disk has the old state; so must memory: reload it. */
        semail__qf_state_clear(&e->l.st);
        if (load_state(e->q, &e->l) < 0)
            initial_state(&e->l);
        loaded_fill_info(&e->l);
        return err;
    }
    return failed;
}

/*
 * Unlink msg/QID; sync msg/ now unless LAZY and no state file holds a
 * result (then a crash can only bring the message back with every
 * recipient pending, as it was submitted). The state goes after the
 * message: alone, it would be garbage (swept at open).
 */
static int remove_entry(semail_queue_entry *e, int lazy)
{
    semail_queue *q;
    int64_t now = semail_queue_now_ms();
    int err;

    if ((err = check_live(e)) < 0)
        return err;
    q = e->q;
    if (unlinkat(q->msgfd, e->l.msg.qid, 0) < 0)
        return sys_err(errno, "unlink msg/", e->l.msg.qid);
    e->removed = 1;
    pthread_mutex_lock(&q->rm_mu);
    if (q->rm_seq == q->rm_synced)
        q->rm_first_ms = now;
    q->rm_seq++;
    pthread_mutex_unlock(&q->rm_mu);
    err = removals_sync(q, now, !lazy || e->l.state_file);
    if (e->l.state_file && unlinkat(q->statefd, e->l.msg.qid, 0) < 0 && errno != ENOENT && err == 0)
        err = sys_err(errno, "unlink state/", e->l.msg.qid);
    return err;
}

int semail_queue_remove(semail_queue_entry *e)
{
    return remove_entry(e, 0);
}

int semail__queue_remove_lazy(semail_queue_entry *e)
{
    return remove_entry(e, 1);
}

int semail__queue_sync_removals(semail_queue *q)
{
    return removals_sync(q, semail_queue_now_ms(), 1);
}

unsigned long semail__queue_removal_syncs(semail_queue *q)
{
    unsigned long n;

    pthread_mutex_lock(&q->rm_mu);
    n = q->rm_syncs;
    pthread_mutex_unlock(&q->rm_mu);
    return n;
}

int semail_queue_delete(semail_queue *q, const char *qid)
{
    semail_queue_entry *e = NULL;
    int err;

    if ((err = semail_queue_lock(&e, q, qid)) < 0)
        return err;
    err = semail_queue_remove(e);
    semail_queue_release(e);
    return err;
}

int semail_queue_flush(semail_queue *q)
{
    char buf[32], name[64];
    int fd = -1, err;

    if (q == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL argument");
    if ((err = semail__fmt(buf, sizeof(buf), "%lld\n", (long long)semail_queue_now_ms())) < 0 ||
        (err = tmp_create(q, "flush", name, sizeof(name), &fd)) < 0)
        return err;
    if ((err = write_sync(fd, buf, strlen(buf), name)) < 0)
        goto fail;
    if (fsync(fd) < 0) {
        err = sys_err(errno, "fsync tmp/", name);
        goto fail;
    }
    if (renameat(q->tmpfd, name, q->dirfd, "flush") < 0) {
        err = sys_err(errno, "rename to", "flush");
        goto fail;
    }
    close(fd);
    pthread_mutex_lock(&q->due.add_mu);
    q->due.add_stale = 1;
    pthread_mutex_unlock(&q->due.add_mu);
    return fsync_dir(q->dirfd, q->dir);
fail:
    unlinkat(q->tmpfd, name, 0);
    close(fd);
    return err;
}
