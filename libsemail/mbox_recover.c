/*
 * mbox_recover.c - undo the append of a process that died mid-write, through
 * its dot-lock (SPEC.md section 4: a crash leaves every mbox as it was).
 *
 * Contract: the dot-lock FILE.lock holds
 *
 *     <pid>\n
 *     semail <boot-id> <pid-ns> <dev>:<ino> <size>\n
 *
 * The first line is what procmail and mutt expect (they test existence, some
 * read a pid). The second is our undo record: the boot id
 * (/proc/sys/kernel/random/boot_id) and the pid namespace (the inode of
 * /proc/self/ns/pid) say whether kill(pid, 0) means anything here; dev:ino
 * and size name the mbox and its size before the append. Before the mbox is
 * measured the record is "- -" (nothing to undo). It is written with one
 * pwrite() at 0 after the kernel lock is taken and before the first data
 * byte. A lock whose record carries our boot id and pid namespace and whose
 * pid is dead (ESRCH) is stale at once: it is taken over in place, under an
 * open-file-description lock on the lock file, after the content was read
 * again under that lock, so exactly one process takes it; the taker writes
 * its own pid above the same record, so a crash of the recoverer is
 * recovered too. Then, holding the mbox's kernel lock, the taker cuts the
 * mbox back to the recorded size if it is still the same inode and larger,
 * and fdatasyncs it. Every other lock keeps the old rules (mbox_lock.c).
 *
 * No fsync of the lock file. A killed process (kill -9, a crash) leaves the
 * page cache intact: the next reader sees the record without it. After a
 * machine crash the boot id differs, and a record from another boot is
 * never trusted (it may be another host's on a shared filesystem), so a
 * synced record would never be read; the fsync would only cost one more
 * journal commit per mbox per delivery. A machine crash mid-append can
 * therefore still leave part of a message (docs/decisions.md).
 *
 * The lock directory is writable by the mailbox owner: the content is
 * hostile input, parsed strictly and within a fixed buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbox_internal.h"

/* A dot-lock is at most this long; longer content is not ours. */
#define LOCK_MAX 256

/* Read a short /proc file into BUF (NUL-terminated); its length, or -1. */
static ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

void semail__mbox_owner(char *out, size_t size)
{
    char boot[64], ns[64], *end;
    ssize_t n;

    out[0] = '\0';
    /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n" */
    if (read_small("/proc/sys/kernel/random/boot_id", boot, sizeof(boot)) != 37 ||
        boot[36] != '\n' || strspn(boot, "0123456789abcdef-") != 36)
        return;
    boot[36] = '\0';
    /* "pid:[4026531836]" */
    if ((n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1)) < 0)
        return;
    ns[n] = '\0';
    if (strncmp(ns, "pid:[", 5) != 0 || (end = strchr(ns + 5, ']')) == NULL || end == ns + 5 ||
        end[1] != '\0' || strspn(ns + 5, "0123456789") != (size_t)(end - ns - 5))
        return;
    *end = '\0';
    if (semail__fmt(out, size, "semail %s %s", boot, ns + 5) < 0)
        out[0] = '\0';
}

/* Decimal digits up to the byte END; false on none, overflow or another byte. */
static bool parse_num(const char **p, unsigned long long max, char end, unsigned long long *out)
{
    const char *s = *p;
    unsigned long long v = 0;

    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (*s != end)
        return false;
    *p = s + 1;
    *out = v;
    return true;
}

bool semail__mbox_parse_lock(const char *buf, size_t len, const char *owner, semail__mbox_undo *out)
{
    char text[LOCK_MAX];
    const char *p = text;
    size_t olen = strlen(owner);
    unsigned long long pid, size;

    /* A NUL inside would end the parse early: not ours. */
    if (olen == 0 || len >= sizeof(text) || memchr(buf, '\0', len) != NULL)
        return false;
    memcpy(text, buf, len);
    text[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (!parse_num(&p, INT_MAX, '\n', &pid) || pid < 1)
        return false;
    out->pid = (long)pid;
    if (strncmp(p, owner, olen) != 0 || p[olen] != ' ')
        return false;
    p += olen + 1;
    if (strncmp(p, "- -\n", 4) == 0)
        return true;
    if (!parse_num(&p, ULLONG_MAX, ':', &out->dev) || !parse_num(&p, ULLONG_MAX, ' ', &out->ino) ||
        !parse_num(&p, LLONG_MAX, '\n', &size))
        return false;
    out->size = (off_t)size;
    out->has_file = true;
    return true;
}

/* The content for PID and UNDO (NULL: "- -"); its length, or 0 when LK has no owner line. */
static size_t format_lock(char *buf, size_t size, const semail__mbox_locked *lk, long pid,
                          const semail__mbox_undo *undo)
{
    int n;

    if (lk->owner[0] == '\0')
        n = snprintf(buf, size, "%ld\n", pid);
    else if (undo == NULL || !undo->has_file)
        n = snprintf(buf, size, "%ld\n%s - -\n", pid, lk->owner);
    else
        n = snprintf(buf, size, "%ld\n%s %llu:%llu %lld\n", pid, lk->owner, undo->dev, undo->ino,
                     (long long)undo->size);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

int semail__mbox_write_lock(semail__mbox_locked *lk, long pid, const semail__mbox_undo *undo)
{
    char buf[LOCK_MAX];
    size_t len = format_lock(buf, sizeof(buf), lk, pid, undo);
    ssize_t w;

    if (len == 0)
        return semail__err(SEMAIL_EIO, "dot-lock content for %s does not fit", lk->path);
    w = pwrite(lk->lockfd, buf, len, 0);
    if (w < 0)
        return semail__errno(semail__errno_code(errno), errno, "write %s", lk->lockpath);
    if ((size_t)w != len)
        return semail__err(SEMAIL_EIO, "short write to %s", lk->lockpath);
    /* A shorter record after a longer one: readers stop at the second line anyway. */
    if (len < lk->lock_len && ftruncate(lk->lockfd, (off_t)len) < 0)
        len = lk->lock_len;
    lk->lock_len = len;
    return 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static bool is_dead(long pid)
{
    return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

/* A non-blocking write lock on the lock file itself: it serializes recoverers. */
static int lock_the_lock(int fd)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return SEMAIL__MBOX_TAKEN;
    /* No OFD locks (kernel < 3.15): threads could not be told apart, recover nothing. */
    return errno == EINVAL ? SEMAIL__MBOX_PLAIN : SEMAIL__MBOX_BUSY;
}

/* Under the lock-file lock: is FD still LK's lock, and a dead holder's record? */
static int judge(semail__mbox_locked *lk, int fd, semail__mbox_undo *undo)
{
    struct stat st, now;
    char buf[LOCK_MAX];
    ssize_t n;

    if (fstat(fd, &st) < 0 || lstat(lk->lockpath, &now) < 0 || !same_file(&st, &now))
        return SEMAIL__MBOX_BUSY; /* replaced meanwhile: look again */
    if ((n = pread(fd, buf, sizeof(buf), 0)) < 0 || (size_t)n >= sizeof(buf))
        return SEMAIL__MBOX_PLAIN;
    if (!semail__mbox_parse_lock(buf, (size_t)n, lk->owner, undo) || !is_dead(undo->pid))
        return SEMAIL__MBOX_PLAIN;
    return SEMAIL__MBOX_TAKEN;
}

int semail__mbox_take_over(semail__mbox_locked *lk)
{
    struct stat seen;
    semail__mbox_undo undo;
    int fd, res;

    if (lk->owner[0] == '\0')
        return SEMAIL__MBOX_PLAIN;
    /* lstat first: opening a device or FIFO planted there could block or have effects. */
    if (lstat(lk->lockpath, &seen) < 0 || !S_ISREG(seen.st_mode))
        return SEMAIL__MBOX_PLAIN;
    fd = open(lk->lockpath, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return SEMAIL__MBOX_PLAIN;
    if ((res = lock_the_lock(fd)) == SEMAIL__MBOX_TAKEN &&
        (res = judge(lk, fd, &undo)) == SEMAIL__MBOX_TAKEN) {
        lk->lockfd = fd;
        lk->lock_len = LOCK_MAX; /* unknown: cut whatever follows our content */
        if (semail__mbox_write_lock(lk, (long)getpid(), &undo) == 0) {
            /* Ours now; the lock-file lock goes with the descriptor at unlock. */
            lk->dotlocked = true;
            lk->undo = undo;
            lk->undo_pending = undo.has_file;
            return SEMAIL__MBOX_TAKEN;
        }
        lk->lockfd = -1;
        res = SEMAIL__MBOX_BUSY;
    }
    close(fd);
    return res;
}

int semail__mbox_recover(semail__mbox_locked *lk)
{
    struct stat st;

    if (!lk->undo_pending)
        return 0;
    if (fstat(lk->fd, &st) < 0)
        return semail__errno(SEMAIL_EIO, errno, "fstat %s", lk->path);
    /* Another inode, or smaller: someone else changed it since; leave it. */
    if ((unsigned long long)st.st_dev == lk->undo.dev &&
        (unsigned long long)st.st_ino == lk->undo.ino && st.st_size > lk->undo.size) {
        if (ftruncate(lk->fd, lk->undo.size) < 0 || fdatasync(lk->fd) < 0)
            return semail__errno(SEMAIL_EIO, errno, "cut %s back after a crashed append", lk->path);
        lk->recovered = true;
    }
    lk->undo_pending = false;
    return 0;
}

void semail__mbox_give_back(semail__mbox_locked *lk)
{
    if (!lk->undo_pending || lk->lockfd < 0)
        return;
    /*
     * Left in place either way: if the dead pid cannot be written back, the
     * lock names us and is recovered once we are gone (or removed as stale
     * by its age); unlinking it would lose the record for good.
     */
    (void)semail__mbox_write_lock(lk, lk->undo.pid, &lk->undo);
    lk->dotlocked = false;
    lk->undo_pending = false;
}
