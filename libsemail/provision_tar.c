/*
 * provision_tar.c - a person's mail tree as a tar archive (libarchive):
 * `user export` and `user delete --archive`.
 *
 * Contract: the tree is walked from an open directory with *at() calls and
 * O_NOFOLLOW, so a symbolic link planted by the person (whose container
 * writes in the tree) is stored as a link and never followed; devices,
 * FIFOs and sockets are skipped; a file is read through the descriptor
 * whose type was checked. The archive goes to a temporary file beside the
 * target, is fsync'd and renamed over it: the target is complete or
 * untouched.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "provision_internal.h"

#define TAR_DEPTH_MAX 64
#define TAR_BLOCK     65536

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int arc_err(struct archive *a, const char *what)
{
    int e = archive_errno(a);
    return semail__err(e == ENOSPC || e == EDQUOT ? SEMAIL_EFULL : SEMAIL_EIO, "%s: %s", what,
                       archive_error_string(a) ? archive_error_string(a) : "libarchive error");
}

static int put_header(struct archive *a, const char *name, const struct stat *st, const char *link)
{
    struct archive_entry *e = archive_entry_new();
    int err = 0;

    if (e == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    archive_entry_copy_stat(e, st);
    archive_entry_set_pathname(e, name);
    if (link)
        archive_entry_set_symlink(e, link);
    if (!S_ISREG(st->st_mode))
        archive_entry_set_size(e, 0);
    if (archive_write_header(a, e) != ARCHIVE_OK)
        err = arc_err(a, name);
    archive_entry_free(e);
    return err;
}

/* The data of FD: exactly SIZE bytes (zeros when the file shrank meanwhile). */
static int put_data(struct archive *a, int fd, off_t size, const char *name)
{
    char *buf = malloc(TAR_BLOCK);
    off_t done = 0;
    int err = 0;

    if (buf == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    while (done < size && err == 0) {
        size_t want = (size_t)(size - done < TAR_BLOCK ? size - done : TAR_BLOCK);
        ssize_t r = read(fd, buf, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = semail__errno(SEMAIL_EIO, errno, "read %s", name);
            break;
        }
        if (r == 0) {
            memset(buf, 0, want);
            r = (ssize_t)want;
        }
        if (archive_write_data(a, buf, (size_t)r) != r)
            err = arc_err(a, name);
        done += r;
    }
    free(buf);
    return err;
}

static int walk(struct archive *a, int dirfd, const char *prefix, int depth);

static int put_entry(struct archive *a, int dirfd, const char *prefix, const char *base, int depth)
{
    char name[4096], link[4096];
    struct stat st, fst;
    ssize_t n;
    int fd, err;

    if (semail__fmt(name, sizeof(name), "%s/%s", prefix, base) < 0)
        return semail__err(SEMAIL_ETOOBIG, "%s/%s: path too long", prefix, base);
    if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : semail__errno(SEMAIL_EIO, errno, "stat %s", name);
    if (S_ISLNK(st.st_mode)) {
        if ((n = readlinkat(dirfd, base, link, sizeof(link) - 1)) < 0)
            return semail__errno(SEMAIL_EIO, errno, "readlink %s", name);
        link[n] = '\0';
        return put_header(a, name, &st, link);
    }
    if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
        return 0;
    fd = openat(dirfd, base,
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK |
                    (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
    if (fd < 0)
        return errno == ENOENT ? 0 : semail__errno(SEMAIL_EIO, errno, "open %s", name);
    if (fstat(fd, &fst) < 0 || fst.st_ino != st.st_ino || fst.st_dev != st.st_dev ||
        (fst.st_mode & S_IFMT) != (st.st_mode & S_IFMT))
        err = semail__err(SEMAIL_EIO, "%s changed while it was archived", name);
    else if ((err = put_header(a, name, &fst, NULL)) < 0)
        ;
    else if (S_ISDIR(fst.st_mode))
        err = walk(a, fd, name, depth + 1);
    else
        err = put_data(a, fd, fst.st_size, name);
    close(fd);
    return err;
}

/* Every entry of DIRFD (not closed here), named PREFIX/... in the archive. */
static int walk(struct archive *a, int dirfd, const char *prefix, int depth)
{
    struct dirent *de;
    DIR *d;
    int fd, err = 0;

    if (depth > TAR_DEPTH_MAX)
        return semail__err(SEMAIL_ETOOBIG, "%s: more than %d levels deep", prefix, TAR_DEPTH_MAX);
    if ((fd = dup(dirfd)) < 0 || (d = fdopendir(fd)) == NULL) {
        if (fd >= 0)
            close(fd);
        return semail__errno(SEMAIL_EIO, errno, "opendir %s", prefix);
    }
    while (err == 0 && (errno = 0, de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        err = put_entry(a, dirfd, prefix, de->d_name, depth);
    }
    if (err == 0 && errno != 0)
        err = semail__errno(SEMAIL_EIO, errno, "readdir %s", prefix);
    closedir(d);
    return err;
}

static int open_archive(struct archive **out, const char *path, int fd)
{
    struct archive *a = archive_write_new();
    int gz = ends_with(path, ".tar.gz") || ends_with(path, ".tgz");

    if (a == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        (gz && archive_write_add_filter_gzip(a) != ARCHIVE_OK) ||
        archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
        archive_write_open_fd(a, fd) != ARCHIVE_OK) {
        int err = arc_err(a, path);
        archive_write_free(a);
        return err;
    }
    *out = a;
    return 0;
}

static int write_all(int dirfd, const char *top, const char *path, int fd)
{
    struct archive *a = NULL;
    struct stat st;
    int err;

    if ((err = open_archive(&a, path, fd)) < 0)
        return err;
    if (fstat(dirfd, &st) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "stat %s", top);
    else if ((err = put_header(a, top, &st, NULL)) == 0)
        err = walk(a, dirfd, top, 0);
    if (archive_write_close(a) != ARCHIVE_OK && err == 0)
        err = arc_err(a, path);
    archive_write_free(a);
    if (err == 0 && fsync(fd) < 0)
        err = semail__errno(errno == ENOSPC || errno == EDQUOT ? SEMAIL_EFULL : SEMAIL_EIO, errno,
                            "fsync %s", path);
    return err;
}

int semail__provision_write_tar(int dirfd, const char *top, const char *path)
{
    char tmp[4096];
    int fd, err;

    if (!ends_with(path, ".tar") && !ends_with(path, ".tar.gz") && !ends_with(path, ".tgz"))
        return semail__err(SEMAIL_EINVAL,
                           "%s: the archive's name must end in .tar, .tar.gz or "
                           ".tgz",
                           path);
    if (semail__fmt(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) < 0)
        return semail__err(SEMAIL_EINVAL, "%s: path too long", path);
    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0)
        return semail__errno(semail__errno_code(errno), errno, "create %s", tmp);
    err = write_all(dirfd, top, path, fd);
    if (close(fd) < 0 && err == 0)
        err = semail__errno(SEMAIL_EIO, errno, "close %s", tmp);
    if (err == 0 && rename(tmp, path) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "rename %s to %s", tmp, path);
    if (err == 0)
        err = semail__fsync_parent(path);
    if (err < 0)
        (void)unlink(tmp);
    return err;
}
