/*
 * storage_lvm.c - the `lvm` storage backend: an ext4 file system on the
 * logical volume VG/semail-LOGIN, mounted at mail_root/LOGIN.
 *
 * Contract: the LVM tools (lvs, lvcreate, lvchange, lvextend, lvremove)
 * and mkfs.ext4/resize2fs run by argument vector. Sizes are rounded up to
 * 4 MiB, LVM's default extent. A volume without an ext4 superblock is an
 * interrupted create: mkfs runs again; one with a superblock is never
 * formatted again. The volume's device is /dev/VG/semail-LOGIN; a mount
 * there is ours when its device number is the volume's.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_internal.h"

#define DEFAULT_VG "semail"
#define EXTENT     (4ull * 1024 * 1024)

struct lvm {
    char *vg;
    char *tool_path;
};

/* The names of one box's volume. */
struct lv {
    char name[64]; /* VG/semail-LOGIN */
    char dev[320]; /* /dev/VG/semail-LOGIN */
    char size[32]; /* "NNNb" for -L */
};

static int vg_name_ok(const char *vg)
{
    size_t i, n = strlen(vg);

    if (n == 0 || n > 127 || vg[0] == '-' || strcmp(vg, ".") == 0 || strcmp(vg, "..") == 0)
        return 0;
    for (i = 0; i < n; i++)
        if (!((vg[i] >= 'a' && vg[i] <= 'z') || (vg[i] >= 'A' && vg[i] <= 'Z') ||
              (vg[i] >= '0' && vg[i] <= '9') || strchr("+_.-", vg[i])))
            return 0;
    return 1;
}

static int lvm_open(void **out, const semail_storage_options *opts)
{
    const char *vg = opts->lvm_vg ? opts->lvm_vg : DEFAULT_VG;
    struct lvm *l;

    if (!vg_name_ok(vg))
        return semail__err(SEMAIL_EINVAL, "lvm_vg '%s': not a volume group name", vg);
    if ((l = calloc(1, sizeof(*l))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    if ((l->vg = semail__strdup(vg)) == NULL ||
        (opts->tool_path && (l->tool_path = semail__strdup(opts->tool_path)) == NULL)) {
        free(l->vg);
        free(l);
        return SEMAIL_ENOMEM;
    }
    *out = l;
    return 0;
}

static void lvm_close(void *self)
{
    struct lvm *l = self;
    free(l->vg);
    free(l->tool_path);
    free(l);
}

static int lv_names(struct lv *v, const struct lvm *l, const char *login, uint64_t size)
{
    uint64_t rounded = size > UINT64_MAX - EXTENT ? size : (size + EXTENT - 1) / EXTENT * EXTENT;

    if (semail__fmt(v->name, sizeof(v->name), "%s/semail-%s", l->vg, login) < 0 ||
        semail__fmt(v->dev, sizeof(v->dev), "/dev/%s", v->name) < 0 ||
        semail__fmt(v->size, sizeof(v->size), "%llub", (unsigned long long)rounded) < 0)
        return semail__err(SEMAIL_ETOOBIG, "volume name too long");
    return 0;
}

/* 1 when the volume exists (lvs finds it), 0 when not. */
static int lv_exists(const struct lvm *l, const struct lv *v)
{
    const char *argv[] = {"lvs", "--quiet", v->name, NULL};
    int err, status;

    if ((err = semail__storage_run(l->tool_path, argv, &status)) < 0)
        return err;
    return status == 0;
}

/* Open the volume's block device, activating the volume when its node is missing. */
static int lv_device(const struct lvm *l, const struct lv *v, struct stat *st)
{
    const char *activate[] = {"lvchange", "--quiet", "-ay", v->name, NULL};
    int fd = open(v->dev, O_RDWR | O_CLOEXEC), err;

    if (fd < 0 && errno == ENOENT) {
        if ((err = lv_exists(l, v)) <= 0)
            return err < 0 ? err : semail__err(SEMAIL_ENOTFOUND, "%s: no such volume", v->name);
        if ((err = semail__storage_run(l->tool_path, activate, NULL)) < 0)
            return err;
        fd = open(v->dev, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", v->dev);
    if (fstat(fd, st) < 0 || !S_ISBLK(st->st_mode)) {
        close(fd);
        return semail__err(SEMAIL_EIO, "%s: not a block device", v->dev);
    }
    return fd;
}

static int taken(const semail_storage_box *box, const semail__mount *mnt)
{
    return semail__err(SEMAIL_EEXISTS, "%s: another file system (%s, %s) is mounted there",
                       box->path, mnt->fstype, mnt->source);
}

/* Mount the volume's file system (making the mount point when MAKE); mounted already: 0. */
static int do_mount(const struct lvm *l, const struct lv *v, const semail_storage_box *box,
                    int make)
{
    semail__mount mnt;
    struct stat st;
    int fd, err;

    if ((fd = lv_device(l, v, &st)) < 0)
        return fd;
    if ((err = semail__storage_mountpoint(box, make, &mnt)) == 1)
        err = mnt.dev == st.st_rdev ? 0 : taken(box, &mnt);
    else if (err == 0 && !semail__storage_has_ext4(fd))
        err = semail__err(SEMAIL_EIO, "%s: no ext4 file system on the volume", v->dev);
    else if (err == 0)
        err = semail__storage_mount_ext4(box, v->dev);
    close(fd);
    return err;
}

static int lvm_create(void *self, const semail_storage_box *box, uint64_t size)
{
    struct lvm *l = self;
    struct lv v;
    semail__mount mnt;
    struct stat st;
    int err, fd;

    if ((err = lv_names(&v, l, box->login, size)) < 0)
        return err;
    /* The mount point first: a taken one must stop us before a volume exists. */
    if ((err = semail__storage_mountpoint(box, 1, &mnt)) == 1) {
        fd = lv_device(l, &v, &st);
        err = fd >= 0 && mnt.dev == st.st_rdev ? 0 : taken(box, &mnt);
        if (fd >= 0)
            close(fd);
        return err;
    }
    if (err < 0 || (err = lv_exists(l, &v)) < 0)
        return err;
    if (err == 0) {
        const char *argv[] = {"lvcreate", "--quiet", "--yes", "--wipesignatures",         "y",
                              "-L",       v.size,    "-n",    v.name + strlen(l->vg) + 1, l->vg,
                              NULL};
        if ((err = semail__storage_run(l->tool_path, argv, NULL)) < 0)
            return err;
    }
    if ((fd = lv_device(l, &v, &st)) < 0)
        return fd;
    err = semail__storage_has_ext4(fd)
              ? 0
              : semail__storage_mkfs(l->tool_path, v.dev, box->uid, box->gid);
    close(fd);
    return err < 0 ? err : do_mount(l, &v, box, 0);
}

static int lvm_mount(void *self, const semail_storage_box *box)
{
    struct lv v;
    int err;

    if ((err = lv_names(&v, self, box->login, 0)) < 0)
        return err;
    return do_mount(self, &v, box, 1);
}

static int lvm_unmount(void *self, const semail_storage_box *box)
{
    return semail__storage_umount(box);
}

static int lvm_destroy(void *self, const semail_storage_box *box)
{
    struct lvm *l = self;
    struct lv v;
    int err;

    if ((err = lv_names(&v, l, box->login, 0)) < 0 || (err = semail__storage_umount(box)) < 0 ||
        (err = lv_exists(l, &v)) < 0)
        return err;
    if (err == 1) {
        const char *argv[] = {"lvremove", "--quiet", "-f", v.name, NULL};
        if ((err = semail__storage_run(l->tool_path, argv, NULL)) < 0)
            return err;
    }
    if (semail__storage_rm_tree(box->mail_root_fd, box->login) < 0)
        return semail__errno(semail__errno_code(errno), errno, "remove %s", box->path);
    return semail__storage_rmdir(box);
}

static int lvm_resize(void *self, const semail_storage_box *box, uint64_t size)
{
    struct lvm *l = self;
    semail__mount mnt;
    uint64_t cur = 0;
    struct stat st;
    struct lv v;
    int err, fd, mounted;

    if ((err = lv_names(&v, l, box->login, size)) < 0 || (fd = err = lv_device(l, &v, &st)) < 0)
        return err;
    if (ioctl(fd, BLKGETSIZE64, &cur) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "%s: size", v.dev);
    close(fd);
    if (err < 0)
        return err;
    size = strtoull(v.size, NULL, 10); /* rounded to the extent */
    if (size < cur)
        return semail__err(SEMAIL_EINVAL,
                           "%s: %llu bytes is smaller than the current %llu: shrinking is refused",
                           v.name, (unsigned long long)size, (unsigned long long)cur);
    if (size > cur) {
        const char *argv[] = {"lvextend", "--quiet", "-L", v.size, v.name, NULL};
        if ((err = semail__storage_run(l->tool_path, argv, NULL)) < 0)
            return err;
    }
    mounted = semail__mountinfo_find(NULL, box->path, &mnt);
    if (mounted < 0)
        return mounted;
    return semail__storage_grow_fs(l->tool_path, v.dev, !(mounted && mnt.dev == st.st_rdev));
}

/* 1 when the volume's file system is mounted at the box, 0 when not, 2 no volume. */
static int is_mounted(const struct lvm *l, const struct lv *v, const semail_storage_box *box)
{
    semail__mount mnt;
    struct stat st;
    int fd, r;

    if ((fd = lv_device(l, v, &st)) < 0)
        return fd == SEMAIL_ENOTFOUND ? 2 : fd;
    close(fd);
    if ((r = semail__mountinfo_find(NULL, box->path, &mnt)) == 1)
        r = mnt.dev == st.st_rdev;
    return r;
}

static int lvm_usage(void *self, const semail_storage_box *box, semail_storage_usage *out)
{
    struct lv v;
    int err;

    if ((err = lv_names(&v, self, box->login, 0)) < 0 || (err = is_mounted(self, &v, box)) < 0)
        return err;
    if (err != 1)
        return semail__err(SEMAIL_ENOTFOUND, "%s: %s", box->path,
                           err == 2 ? "no such box" : "not mounted");
    return semail__storage_statvfs(box, out);
}

static int lvm_status(void *self, const semail_storage_box *box, semail_storage_state *out)
{
    struct stat st;
    struct lv v;
    int err;

    if ((err = lv_names(&v, self, box->login, 0)) < 0 || (err = is_mounted(self, &v, box)) < 0)
        return err;
    if (err == 1)
        *out = SEMAIL_STORAGE_MOUNTED;
    else if (err == 0)
        *out = SEMAIL_STORAGE_UNMOUNTED;
    else
        *out = fstatat(box->mail_root_fd, box->login, &st, AT_SYMLINK_NOFOLLOW) == 0
                   ? SEMAIL_STORAGE_INCOMPLETE
                   : SEMAIL_STORAGE_ABSENT;
    return 0;
}

const semail_storage_backend semail__storage_lvm = {
    .version = SEMAIL_STORAGE_BACKEND_VERSION,
    .name = "lvm",
    .open = lvm_open,
    .close = lvm_close,
    .create = lvm_create,
    .mount = lvm_mount,
    .unmount = lvm_unmount,
    .destroy = lvm_destroy,
    .resize = lvm_resize,
    .usage = lvm_usage,
    .status = lvm_status,
};
