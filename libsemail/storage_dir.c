/*
 * storage_dir.c - the `directory` storage backend: mail_root/LOGIN is a
 * plain directory on mail_root's file system.
 *
 * Contract: no separate file system, so no mount, no size and no quota:
 * mount and unmount only check, resize does nothing, usage walks the tree
 * (bytes allocated, never following a link) and reports no total. Destroy
 * removes the tree without following links.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_internal.h"

#define WALK_DEPTH_MAX 64

static int dir_open(void **out, const semail_storage_options *opts)
{
    static int token;
    *out = &token; /* no state */
    return 0;
}

static void dir_close(void *self)
{
}

/* 1: a directory; 0: missing; error for anything else at the path. */
static int dir_exists(const semail_storage_box *box)
{
    struct stat st;

    if (fstatat(box->mail_root_fd, box->login, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT
                   ? 0
                   : semail__errno(semail__errno_code(errno), errno, "stat %s", box->path);
    if (!S_ISDIR(st.st_mode))
        return semail__err(SEMAIL_EEXISTS, "%s exists and is not a directory%s", box->path,
                           S_ISLNK(st.st_mode) ? " (a symbolic link: refused)" : "");
    return 1;
}

static int dir_create(void *self, const semail_storage_box *box, uint64_t size)
{
    int err;

    if (mkdirat(box->mail_root_fd, box->login, 0700) < 0 && errno != EEXIST)
        return semail__errno(semail__errno_code(errno), errno, "mkdir %s", box->path);
    return (err = dir_exists(box)) < 0 ? err : 0;
}

static int dir_mount(void *self, const semail_storage_box *box)
{
    int err = dir_exists(box);
    if (err == 0)
        return semail__err(SEMAIL_ENOTFOUND, "%s: no such box", box->path);
    return err < 0 ? err : 0;
}

static int dir_unmount(void *self, const semail_storage_box *box)
{
    return 0;
}

static int dir_destroy(void *self, const semail_storage_box *box)
{
    if (semail__storage_rm_tree(box->mail_root_fd, box->login) < 0)
        return semail__errno(semail__errno_code(errno), errno, "remove %s", box->path);
    if (fsync(box->mail_root_fd) < 0 && errno != EINVAL)
        return semail__errno(SEMAIL_EIO, errno, "fsync %s", box->mail_root);
    return 0;
}

static int dir_resize(void *self, const semail_storage_box *box, uint64_t size)
{
    int err = dir_mount(self, box);
    return err; /* a directory has no size: nothing to grow */
}

/* Add the blocks under FD to *USED; links are counted, never followed. */
static int walk(int fd, int depth, uint64_t *used)
{
    DIR *d = fdopendir(fd);
    struct dirent *e;
    struct stat st;
    int err = 0;

    if (d == NULL) {
        close(fd);
        return -1;
    }
    while (err == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            err = errno == ENOENT ? 0 : -1; /* removed while we walk */
            continue;
        }
        *used += (uint64_t)st.st_blocks * 512;
        if (S_ISDIR(st.st_mode) && depth < WALK_DEPTH_MAX) {
            int sub = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                err = walk(sub, depth + 1, used);
            else if (errno != ENOENT)
                err = -1;
        }
    }
    closedir(d);
    return err;
}

static int dir_usage(void *self, const semail_storage_box *box, semail_storage_usage *out)
{
    int fd = openat(box->mail_root_fd, box->login, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    uint64_t used = 0;

    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", box->path);
    if (walk(fd, 0, &used) < 0)
        return semail__errno(SEMAIL_EIO, errno, "usage of %s", box->path);
    out->used = used;
    out->total = 0;
    return 0;
}

static int dir_status(void *self, const semail_storage_box *box, semail_storage_state *out)
{
    int err = dir_exists(box);

    if (err < 0)
        return err == SEMAIL_EEXISTS ? (*out = SEMAIL_STORAGE_INCOMPLETE, 0) : err;
    *out = err ? SEMAIL_STORAGE_MOUNTED : SEMAIL_STORAGE_ABSENT;
    return 0;
}

const semail_storage_backend semail__storage_dir = {
    .version = SEMAIL_STORAGE_BACKEND_VERSION,
    .name = "directory",
    .open = dir_open,
    .close = dir_close,
    .create = dir_create,
    .mount = dir_mount,
    .unmount = dir_unmount,
    .destroy = dir_destroy,
    .resize = dir_resize,
    .usage = dir_usage,
    .status = dir_status,
};
