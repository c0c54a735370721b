/*
 * mbox_lock.c - lock one mbox as mutt, Dovecot and procmail do.
 *
 * Contract: PATH.lock appears with our PID (procmail) already in it: it is
 * written to a unique temporary file that is then link()ed into place
 * (EEXIST as with O_EXCL; liblockfile's way), so a crash can never leave an
 * empty lock that nobody can judge. Once the mbox is locked and measured,
 * the undo record
 * of mbox_recover.c, written before any data byte. A dot-lock with such a
 * record from a dead process of this boot is taken over at once and the
 * mbox cut back (mbox_recover.c); any other dot-lock whose mtime is older
 * than stale_lock_s is removed. The mbox is opened without following a
 * symlink, created with opts.file_mode (and chowned to opts.uid/gid when
 * root) when missing; an existing one must be a regular file with one link
 * and the inode lstat() saw. Then a whole-file write lock with an open-file-description lock
 * (F_OFD_SETLK): it conflicts with the fcntl() locks of mutt and Dovecot
 * and, unlike those, with other threads of this process. Both waits are
 * polled until the caller's deadline, then SEMAIL_ELOCKED.
 *
 * Known race (shared with procmail): two lockers that both find the same
 * stale dot-lock (by age) may both remove it, the second removing the
 * first's fresh lock; the kernel lock still keeps their writes apart. The
 * take-over of a crashed holder's lock has no such race.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mbox_internal.h"

/* A file that keeps turning up and vanishing between lstat and open. */
#define OPEN_RETRIES 10

void semail__mbox_deadline(struct timespec *deadline, unsigned int ms)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += ms / 1000;
    deadline->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

/* Sleep a little (growing up to 100 ms, never past DEADLINE); false: time is up. */
static bool wait_a_bit(const struct timespec *deadline, long *delay_ms)
{
    struct timespec now, nap;
    long left_ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    left_ms = (long)(deadline->tv_sec - now.tv_sec) * 1000L +
              (deadline->tv_nsec - now.tv_nsec) / 1000000L;
    if (left_ms <= 0)
        return false;
    if (*delay_ms > left_ms)
        *delay_ms = left_ms;
    nap.tv_sec = *delay_ms / 1000;
    nap.tv_nsec = (*delay_ms % 1000) * 1000000L;
    nanosleep(&nap, NULL);
    *delay_ms = *delay_ms * 2 > 100 ? 100 : *delay_ms * 2;
    return true;
}

static void remove_if_stale(const char *lockpath, unsigned int stale_s)
{
    struct stat st;
    time_t now = time(NULL);

    if (lstat(lockpath, &st) == 0 && S_ISREG(st.st_mode) && now - st.st_mtime > (time_t)stale_s)
        (void)unlink(lockpath);
}

/*
 * Create PATH.lock holding our PID from the first moment it exists: write a
 * temporary file in the same directory, link() it to PATH.lock, unlink the
 * temporary name. Returns the descriptor, -1 with errno EEXIST when the lock
 * is held, or -1 with another errno.
 */
static int create_lock(semail__mbox_locked *lk)
{
    char tmp[PATH_MAX];
    const char *slash = strrchr(lk->lockpath, '/');
    int fd, n, saved;

    /* Hidden, and unique per thread: ".NAME.lock.PID.TID". */
    n = slash ? snprintf(tmp, sizeof(tmp), "%.*s/.%s.%ld.%ld", (int)(slash - lk->lockpath),
                         lk->lockpath, slash + 1, (long)getpid(), (long)syscall(SYS_gettid))
              : snprintf(tmp, sizeof(tmp), ".%s.%ld.%ld", lk->lockpath, (long)getpid(),
                         (long)syscall(SYS_gettid));
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    lk->lockfd = fd;
    lk->lock_len = 0;
    /* Nothing to undo yet: a failure here is not fatal, the record later is. */
    (void)semail__mbox_write_lock(lk, (long)getpid(), NULL);
    lk->lockfd = -1;
    if (link(tmp, lk->lockpath) < 0) {
        saved = errno;
        close(fd);
        (void)unlink(tmp);
        errno = saved;
        return -1;
    }
    (void)unlink(tmp);
    return fd;
}

static int dotlock(semail__mbox_locked *lk, const semail_mbox_options *opts,
                   const struct timespec *deadline)
{
    long delay_ms = 5;
    int fd, held;

    for (;;) {
        fd = create_lock(lk);
        if (fd >= 0)
            break;
        if (errno != EEXIST)
            return semail__errno(semail__errno_code(errno), errno, "dot-lock %s", lk->lockpath);
        /* Checked at every turn: a crashed holder is noticed as soon as it is reaped. */
        if ((held = semail__mbox_take_over(lk)) == SEMAIL__MBOX_TAKEN)
            return 0;
        if (held == SEMAIL__MBOX_PLAIN)
            remove_if_stale(lk->lockpath, opts->stale_lock_s);
        if (!wait_a_bit(deadline, &delay_ms))
            return semail__err(SEMAIL_ELOCKED, "%s is locked (dot-lock)", lk->path);
    }
    lk->dotlocked = true;
    lk->lockfd = fd;
    return 0;
}

/* The checks that make a descriptor safe to append to. */
static int check_file(semail__mbox_locked *lk, const struct stat *st, const struct stat *seen)
{
    if (S_ISLNK(st->st_mode))
        return semail__err(SEMAIL_EPERM, "%s is a symbolic link", lk->path);
    if (!S_ISREG(st->st_mode))
        return semail__err(SEMAIL_EPERM, "%s is not a regular file", lk->path);
    if (st->st_nlink != 1)
        return semail__err(SEMAIL_EPERM, "%s has %lu links", lk->path, (unsigned long)st->st_nlink);
    if (seen != NULL && (st->st_dev != seen->st_dev || st->st_ino != seen->st_ino))
        return semail__err(SEMAIL_EPERM, "%s was replaced while opened", lk->path);
    return 0;
}

static int create_file(semail__mbox_locked *lk, const semail_mbox_options *opts)
{
    mode_t mode = opts->file_mode ? (mode_t)opts->file_mode : 0600;
    int flags = O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;

    lk->fd = open(lk->path, flags, mode);
    if (lk->fd < 0)
        return errno == EEXIST
                   ? 1
                   : semail__errno(semail__errno_code(errno), errno, "create %s", lk->path);
    lk->created = true;
    /* The umask must not take away what the mail reader needs. */
    if (fchmod(lk->fd, mode) < 0)
        return semail__errno(SEMAIL_EIO, errno, "chmod %s", lk->path);
    if (geteuid() == 0 && (opts->uid != (uid_t)-1 || opts->gid != (gid_t)-1) &&
        fchown(lk->fd, opts->uid, opts->gid) < 0)
        return semail__errno(SEMAIL_EPERM, errno, "chown %s", lk->path);
    return 0;
}

/* Open an existing mbox; 1: it vanished, try again. */
static int open_existing(semail__mbox_locked *lk, const struct stat *seen)
{
    int flags = O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    int err;

    if ((err = check_file(lk, seen, NULL)) < 0)
        return err;
    lk->fd = open(lk->path, flags);
    if (lk->fd < 0) {
        if (errno == ENOENT)
            return 1;
        if (errno == ELOOP)
            return semail__err(SEMAIL_EPERM, "%s is a symbolic link", lk->path);
        return semail__errno(semail__errno_code(errno), errno, "open %s", lk->path);
    }
    return 0;
}

static int open_mbox(semail__mbox_locked *lk, const semail_mbox_options *opts)
{
    struct stat seen, st;
    int err = 1;

    for (int i = 0; i < OPEN_RETRIES && err == 1; i++) {
        if (lstat(lk->path, &seen) == 0)
            err = open_existing(lk, &seen);
        else if (errno == ENOENT)
            err = create_file(lk, opts);
        else
            err = semail__errno(semail__errno_code(errno), errno, "lstat %s", lk->path);
    }
    if (err == 1)
        return semail__err(SEMAIL_EIO, "%s keeps changing", lk->path);
    if (err < 0)
        return err;
    if (fstat(lk->fd, &st) < 0)
        return semail__errno(SEMAIL_EIO, errno, "fstat %s", lk->path);
    return check_file(lk, &st, lk->created ? NULL : &seen);
}

static int kernel_lock(semail__mbox_locked *lk, const struct timespec *deadline)
{
    struct flock fl;
    long delay_ms = 5;
    int cmd = F_OFD_SETLK;

    for (;;) {
        memset(&fl, 0, sizeof(fl));
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(lk->fd, cmd, &fl) == 0)
            return 0;
        if (errno == EINVAL && cmd == F_OFD_SETLK) {
            /* A kernel older than 3.15: POSIX locks (the dot-lock keeps threads apart). */
            cmd = F_SETLK;
            continue;
        }
        if (errno != EAGAIN && errno != EACCES && errno != EINTR)
            return semail__errno(SEMAIL_EIO, errno, "lock %s", lk->path);
        if (!wait_a_bit(deadline, &delay_ms))
            return semail__err(SEMAIL_ELOCKED, "%s is locked (fcntl)", lk->path);
    }
}

/* The size to roll back to, and whether the last message lacks its newline. */
static int measure(semail__mbox_locked *lk)
{
    struct stat st;
    char last;

    if (fstat(lk->fd, &st) < 0)
        return semail__errno(SEMAIL_EIO, errno, "fstat %s", lk->path);
    lk->size = st.st_size;
    lk->dev = (unsigned long long)st.st_dev;
    lk->ino = (unsigned long long)st.st_ino;
    lk->needs_nl = false;
    if (st.st_size > 0) {
        ssize_t r = pread(lk->fd, &last, 1, st.st_size - 1);
        if (r < 0)
            return semail__errno(SEMAIL_EIO, errno, "read %s", lk->path);
        lk->needs_nl = r == 1 && last != '\n';
    }
    return 0;
}

/* The undo record, before the first data byte (mbox_recover.c). */
static int record_undo(semail__mbox_locked *lk)
{
    semail__mbox_undo undo = {(long)getpid(), true, lk->dev, lk->ino, lk->size};

    if (lk->owner[0] == '\0')
        return 0; /* no /proc: a plain dot-lock, as procmail's */
    return semail__mbox_write_lock(lk, undo.pid, &undo);
}

int semail__mbox_lock(semail__mbox_locked *lk, const char *path, const semail_mbox_options *opts,
                      const struct timespec *deadline)
{
    size_t len = strlen(path);
    int err;

    memset(lk, 0, sizeof(*lk));
    lk->fd = -1;
    lk->lockfd = -1;
    semail__mbox_owner(lk->owner, sizeof(lk->owner));
    if ((lk->path = semail__strdup(path)) == NULL || (lk->lockpath = malloc(len + 6)) == NULL) {
        semail__mbox_unlock(lk); /* nothing is locked or created yet: only frees */
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    memcpy(lk->lockpath, path, len);
    memcpy(lk->lockpath + len, ".lock", 6);
    if ((err = dotlock(lk, opts, deadline)) < 0 || (err = open_mbox(lk, opts)) < 0 ||
        (err = kernel_lock(lk, deadline)) < 0 || (err = semail__mbox_recover(lk)) < 0 ||
        (err = measure(lk)) < 0 || (err = record_undo(lk)) < 0)
        goto done;
    return 0;
done:
    if (lk->created)
        (void)unlink(lk->path);
    /* A crashed append not undone yet is left to the next locker (unless the mbox is unusable). */
    if (err == SEMAIL_ELOCKED || err == SEMAIL_EIO)
        semail__mbox_give_back(lk);
    semail__mbox_unlock(lk);
    return err;
}

void semail__mbox_unlock(semail__mbox_locked *lk)
{
    if (lk->fd >= 0)
        close(lk->fd);
    lk->fd = -1;
    if (lk->lockfd >= 0)
        close(lk->lockfd);
    lk->lockfd = -1;
    if (lk->dotlocked && lk->lockpath != NULL)
        (void)unlink(lk->lockpath);
    lk->dotlocked = false;
    free(lk->path);
    free(lk->lockpath);
    lk->path = NULL;
    lk->lockpath = NULL;
}
