/*
 * storage_image.c - the `image` storage backend: an ext4 file system in the
 * sparse file image_dir/LOGIN.img, on a loop device, mounted at
 * mail_root/LOGIN.
 *
 * Contract: the image is made as LOGIN.img.tmp (sparse, ftruncate), given
 * its file system by mkfs.ext4, fsync'd and only then renamed to LOGIN.img:
 * a LOGIN.img always holds a complete file system, a crash leaves at most a
 * .tmp that the next create starts again. The loop device is taken with
 * LOOP_CTL_GET_FREE and configured in one step (LOOP_CONFIGURE, falling
 * back to LOOP_SET_FD + LOOP_SET_STATUS64) with LO_FLAGS_AUTOCLEAR, so the
 * kernel frees it when the file system is unmounted or the mount fails. A
 * loop device that already backs the image is reused, never a second one
 * (two devices over one ext4 image would corrupt it). Which loop devices
 * back an image: /sys/block/loop* /loop/backing_file, confirmed by device
 * and inode with LOOP_GET_STATUS64.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "storage_internal.h"

#define DEFAULT_IMAGE_DIR "/var/lib/semail/images"
#define LOOP_CONTROL      "/dev/loop-control"
#define ATTACH_TRIES      8
#define LOOPS_MAX         8
#define DETACH_WAIT_MS    2000
#define HELD_WAIT_MS      50

struct image {
    char *dir;       /* image_dir as configured */
    char *tool_path; /* NULL: the default */
    semail__loop_get_free_fn get_free;
};

/* The names and paths of one box's image. */
struct img {
    int dirfd;              /* image_dir */
    char name[64], tmp[64]; /* LOGIN.img, LOGIN.img.tmp */
    char path[PATH_MAX];    /* image_dir (resolved)/LOGIN.img */
    char tmp_path[PATH_MAX];
};

static int default_get_free(int control_fd)
{
    int n = ioctl(control_fd, LOOP_CTL_GET_FREE);
    return n < 0 ? -errno : n;
}

void semail__storage_image_set_get_free(void *image_state, semail__loop_get_free_fn fn)
{
    ((struct image *)image_state)->get_free = fn ? fn : default_get_free;
}

static int image_open(void **out, const semail_storage_options *opts)
{
    const char *dir = opts->image_dir ? opts->image_dir : DEFAULT_IMAGE_DIR;
    struct image *im;

    if (dir[0] != '/')
        return semail__err(SEMAIL_EINVAL, "image_dir '%s': must be an absolute path", dir);
    if ((im = calloc(1, sizeof(*im))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    im->get_free = default_get_free;
    if ((im->dir = semail__strdup(dir)) == NULL ||
        (opts->tool_path && (im->tool_path = semail__strdup(opts->tool_path)) == NULL)) {
        free(im->dir);
        free(im);
        return SEMAIL_ENOMEM;
    }
    *out = im;
    return 0;
}

static void image_close(void *self)
{
    struct image *im = self;
    free(im->dir);
    free(im->tool_path);
    free(im);
}

/* Open image_dir (made 0700 when MAKE and missing) and name the box's files. */
static int img_open(struct img *g, const struct image *im, const char *login, int make)
{
    char real[PATH_MAX];

    g->dirfd = -1;
    if (make && mkdir(im->dir, 0700) < 0 && errno != EEXIST)
        return semail__errno(semail__errno_code(errno), errno, "mkdir image_dir %s", im->dir);
    if (realpath(im->dir, real) == NULL)
        return semail__errno(semail__errno_code(errno), errno, "image_dir %s", im->dir);
    if (semail__fmt(g->name, sizeof(g->name), "%s.img", login) < 0 ||
        semail__fmt(g->tmp, sizeof(g->tmp), "%s.img.tmp", login) < 0 ||
        semail__fmt(g->path, sizeof(g->path), "%s/%s", real, g->name) < 0 ||
        semail__fmt(g->tmp_path, sizeof(g->tmp_path), "%s/%s", real, g->tmp) < 0)
        return semail__err(SEMAIL_ETOOBIG, "image_dir %s: path too long", real);
    g->dirfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g->dirfd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open image_dir %s", real);
    return 0;
}

static void img_close(struct img *g)
{
    if (g->dirfd >= 0)
        close(g->dirfd);
    g->dirfd = -1;
}

/* Open LOGIN.img (a regular file, not a link). ENOTFOUND when missing. */
static int img_file(const struct img *g, struct stat *st)
{
    int fd = openat(g->dirfd, g->name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return errno == ENOENT
                   ? semail__err(SEMAIL_ENOTFOUND, "%s: no such image", g->path)
                   : semail__errno(semail__errno_code(errno), errno, "open %s", g->path);
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        return semail__err(SEMAIL_EIO, "%s: not a regular file", g->path);
    }
    return fd;
}

/* ---- loop devices --------------------------------------------------------- */

static int read_small(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t r;

    if (fd < 0)
        return -1;
    r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0)
        return -1;
    while (r > 0 && buf[r - 1] == '\n')
        r--;
    buf[r] = '\0';
    return 0;
}

/* Whether loop device NAME (e.g. "loop3") is bound to the file IMG. */
static int loop_backs(const char *name, const struct img *g, const struct stat *img, dev_t *dev)
{
    char path[PATH_MAX], buf[PATH_MAX + 16];
    struct loop_info64 info;
    size_t n = strlen(g->path);
    unsigned maj, min;
    int fd, ok;

    if (semail__fmt(path, sizeof(path), "/sys/block/%s/loop/backing_file", name) < 0 ||
        read_small(path, buf, sizeof(buf)) < 0 || strncmp(buf, g->path, n) != 0 ||
        (buf[n] != '\0' && strcmp(buf + n, " (deleted)") != 0))
        return 0;
    if (semail__fmt(path, sizeof(path), "/sys/block/%s/dev", name) < 0 ||
        read_small(path, buf, sizeof(buf)) < 0 || sscanf(buf, "%u:%u", &maj, &min) != 2)
        return 0;
    *dev = makedev(maj, min);
    if (semail__fmt(path, sizeof(path), "/dev/%s", name) < 0 ||
        (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 1; /* no node to ask: the path matched */
    ok = ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == img->st_dev &&
         info.lo_inode == img->st_ino;
    close(fd);
    return ok;
}

/* The loop devices bound to the image: numbers into NUMS, devices into DEVS; returns the count. */
static int find_loops(const struct img *g, const struct stat *img, int *nums, dev_t *devs)
{
    DIR *d = opendir("/sys/block");
    struct dirent *e;
    int count = 0;

    if (d == NULL)
        return semail__errno(SEMAIL_EIO, errno, "open /sys/block");
    while ((e = readdir(d)) != NULL && count < LOOPS_MAX) {
        char *end;
        long n;
        if (strncmp(e->d_name, "loop", 4) != 0)
            continue;
        n = strtol(e->d_name + 4, &end, 10);
        if (end == e->d_name + 4 || *end != '\0' || n < 0 || n > INT_MAX)
            continue;
        if (loop_backs(e->d_name, g, img, &devs[count]))
            nums[count++] = (int)n;
    }
    closedir(d);
    return count;
}

/* Bind IMG_FD to LOOP_FD, auto-clearing, in one step where the kernel can. */
static int loop_bind(int loop_fd, int img_fd, const char *path)
{
    struct loop_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.fd = (uint32_t)img_fd;
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    (void)semail__strlcpy((char *)cfg.info.lo_file_name, path, sizeof(cfg.info.lo_file_name));
    if (ioctl(loop_fd, LOOP_CONFIGURE, &cfg) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOTTY)
        return -1;
    /* Kernels before 5.8: two steps. */
    if (ioctl(loop_fd, LOOP_SET_FD, img_fd) < 0)
        return -1;
    if (ioctl(loop_fd, LOOP_SET_STATUS64, &cfg.info) < 0) {
        int e = errno;
        (void)ioctl(loop_fd, LOOP_CLR_FD, 0);
        errno = e;
        return -1;
    }
    return 0;
}

/* Attach the image to a free loop device; returns its open descriptor, *NUM its number. */
static int loop_attach(const struct image *im, const struct img *g, int img_fd, int *num)
{
    int ctl, tries, n = -1, fd = -1;
    char dev[32];

    if ((ctl = open(LOOP_CONTROL, O_RDWR | O_CLOEXEC)) < 0)
        return semail__errno(SEMAIL_ETEMP, errno, "no free loop device: %s", LOOP_CONTROL);
    for (tries = 0; tries < ATTACH_TRIES; tries++) {
        if ((n = im->get_free(ctl)) < 0) {
            fd = semail__errno(SEMAIL_ETEMP, -n, "no free loop device (LOOP_CTL_GET_FREE)");
            break;
        }
        (void)semail__fmt(dev, sizeof(dev), "/dev/loop%d", n);
        if ((fd = open(dev, O_RDWR | O_CLOEXEC)) < 0) {
            fd = semail__errno(SEMAIL_ETEMP, errno, "no free loop device: %s", dev);
            break;
        }
        if (loop_bind(fd, img_fd, g->path) == 0)
            break;
        /* EBUSY: another process took it between GET_FREE and the bind; take the next. */
        int e = errno;
        close(fd);
        fd = semail__errno(e == EBUSY ? SEMAIL_ETEMP : SEMAIL_EIO, e, "attach %s to %s", g->path,
                           dev);
        if (e != EBUSY)
            break;
    }
    close(ctl);
    *num = n;
    return fd;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Detach every loop device still bound to the image (after the unmount). */
static int loop_detach_all(const struct img *g, const struct stat *img)
{
    int nums[LOOPS_MAX], count, i, waited;
    dev_t devs[LOOPS_MAX];
    char dev[32];

    for (waited = 0; waited <= DETACH_WAIT_MS; waited += 50) {
        if ((count = find_loops(g, img, nums, devs)) <= 0)
            return count;
        for (i = 0; i < count; i++) {
            int fd;
            (void)semail__fmt(dev, sizeof(dev), "/dev/loop%d", nums[i]);
            if ((fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0)
                continue;
            (void)ioctl(fd, LOOP_CLR_FD, 0); /* busy: auto-clear is set and it goes when free */
            close(fd);
        }
        sleep_ms(50);
    }
    return semail__err(SEMAIL_ETEMP, "%s: still in use by /dev/loop%d (mounted elsewhere?)",
                       g->path, nums[0]);
}

/* ---- mounting ------------------------------------------------------------ */

/* 1 when the mount MNT is of the image's file system. */
static int mounted_ours(const struct img *g, const struct stat *img, const semail__mount *mnt)
{
    int nums[LOOPS_MAX], count, i;
    dev_t devs[LOOPS_MAX];

    if ((count = find_loops(g, img, nums, devs)) < 0)
        return count;
    for (i = 0; i < count; i++)
        if (devs[i] == mnt->dev)
            return 1;
    return 0;
}

static int taken(const semail_storage_box *box, const semail__mount *mnt)
{
    return semail__err(SEMAIL_EEXISTS, "%s: another file system (%s, %s) is mounted there",
                       box->path, mnt->fstype, mnt->source);
}

/* Mount the existing image of BOX (making the mount point when MAKE). */
static int do_mount(const struct image *im, const struct img *g, const semail_storage_box *box,
                    int make)
{
    int nums[LOOPS_MAX], count, img_fd, loop_fd = -1, num = -1, err;
    dev_t devs[LOOPS_MAX];
    semail__mount mnt;
    struct stat st;
    char dev[32];

    if ((img_fd = img_file(g, &st)) < 0)
        return img_fd;
    if ((err = semail__storage_mountpoint(box, make, &mnt)) != 0) {
        if (err == 1)
            err = (err = mounted_ours(g, &st, &mnt)) == 1 ? 0 : err < 0 ? err : taken(box, &mnt);
        goto done;
    }
    if ((count = find_loops(g, &st, nums, devs)) < 0) {
        err = count;
        goto done;
    }
    if (count > 0) {
        num = nums[0]; /* already bound (mounted elsewhere, or losetup): share it */
    } else if ((loop_fd = loop_attach(im, g, img_fd, &num)) < 0) {
        err = loop_fd;
        goto done;
    }
    (void)semail__fmt(dev, sizeof(dev), "/dev/loop%d", num);
    err = semail__storage_mount_ext4(box, dev);
done:
    if (loop_fd >= 0)
        close(loop_fd); /* auto-clear: a failed mount frees the device here */
    close(img_fd);
    return err;
}

/* ---- operations --------------------------------------------------------- */

/* Make LOGIN.img: .tmp, sparse, mkfs, fsync, rename. */
static int make_image(const struct image *im, const struct img *g, const semail_storage_box *box,
                      uint64_t size)
{
    int fd, err = 0;

    if (size > (uint64_t)INT64_MAX)
        return semail__err(SEMAIL_EINVAL, "size %llu: too big", (unsigned long long)size);
    fd = openat(g->dirfd, g->tmp, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "create %s", g->tmp_path);
    if (ftruncate(fd, (off_t)size) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "truncate %s to %llu bytes",
                            g->tmp_path, (unsigned long long)size);
    else if ((err = semail__storage_mkfs(im->tool_path, g->tmp_path, box->uid, box->gid)) < 0)
        ;
    else if (fsync(fd) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "fsync %s", g->tmp_path);
    else if (renameat(g->dirfd, g->tmp, g->dirfd, g->name) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "rename %s", g->tmp_path);
    else if (fsync(g->dirfd) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "fsync image_dir");
    close(fd);
    if (err < 0)
        (void)unlinkat(g->dirfd, g->tmp, 0);
    return err;
}

static int image_create(void *self, const semail_storage_box *box, uint64_t size)
{
    struct image *im = self;
    semail__mount mnt;
    struct img g;
    int err;

    if ((err = img_open(&g, im, box->login, 1)) < 0)
        goto done;
    /* The mount point first: a taken one must stop us before an image exists. */
    if ((err = semail__storage_mountpoint(box, 1, &mnt)) == 1) {
        struct stat st;
        int fd = img_file(&g, &st);
        err = fd < 0 ? taken(box, &mnt) : mounted_ours(&g, &st, &mnt);
        if (fd >= 0)
            close(fd);
        err = err == 1 ? 0 : err == 0 ? taken(box, &mnt) : err;
        goto done;
    }
    if (err < 0)
        goto done;
    if (faccessat(g.dirfd, g.name, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
        (err = make_image(im, &g, box, size)) < 0)
        goto done;
    err = do_mount(im, &g, box, 0);
done:
    img_close(&g);
    return err;
}

static int image_mount(void *self, const semail_storage_box *box)
{
    struct img g;
    int err;

    if ((err = img_open(&g, self, box->login, 0)) == 0)
        err = do_mount(self, &g, box, 1);
    img_close(&g);
    return err;
}

static int image_unmount(void *self, const semail_storage_box *box)
{
    return semail__storage_umount(box);
}

static int image_destroy(void *self, const semail_storage_box *box)
{
    struct stat st;
    struct img g;
    int err, fd;

    if ((err = semail__storage_umount(box)) < 0)
        return err;
    if ((err = img_open(&g, self, box->login, 0)) < 0) {
        img_close(&g);
        if (err != SEMAIL_ENOTFOUND)
            return err;
    } else {
        if ((fd = img_file(&g, &st)) >= 0) {
            close(fd);
            err = loop_detach_all(&g, &st);
        } else if (fd != SEMAIL_ENOTFOUND) {
            err = fd;
        }
        if (err == 0 && ((unlinkat(g.dirfd, g.name, 0) < 0 && errno != ENOENT) ||
                         (unlinkat(g.dirfd, g.tmp, 0) < 0 && errno != ENOENT)))
            err = semail__errno(semail__errno_code(errno), errno, "remove %s", g.path);
        if (err == 0 && fsync(g.dirfd) < 0)
            err = semail__errno(SEMAIL_EIO, errno, "fsync image_dir");
        img_close(&g);
        if (err < 0)
            return err;
    }
    /* Unmounted now: what is left under the mount point was never on the image. */
    if (semail__storage_rm_tree(box->mail_root_fd, box->login) < 0)
        return semail__errno(semail__errno_code(errno), errno, "remove %s", box->path);
    return semail__storage_rmdir(box);
}

/* ---- growing -------------------------------------------------------------- */

static uint32_t le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/*
 * Bytes the ext4 file system read through FD spans, from its superblock;
 * UINT64_MAX when it cannot be read (then nothing may be cut off). Read
 * through the loop device, a mounted file system's superblock is the
 * kernel's current one (it lives in the device's page cache).
 */
static uint64_t fs_bytes(int fd)
{
    unsigned char sb[1024];
    uint64_t blocks;
    uint32_t log;

    if (pread(fd, sb, sizeof(sb), 1024) != (ssize_t)sizeof(sb) || sb[56] != 0x53 || sb[57] != 0xEF)
        return UINT64_MAX;
    blocks = le32(sb + 4);
    if (le32(sb + 0x60) & 0x80) /* INCOMPAT_64BIT: the high half of the block count */
        blocks |= (uint64_t)le32(sb + 0x150) << 32;
    if ((log = le32(sb + 24)) > 6 || blocks > (UINT64_MAX >> (10 + log)))
        return UINT64_MAX;
    return blocks << (10 + log);
}

/* LOOP_SET_CAPACITY on DEV: the device takes the image's new size. errno set on -1. */
static int loop_capacity(const char *dev)
{
    int fd = open(dev, O_RDWR | O_CLOEXEC), r = -1, e;

    if (fd < 0)
        return -1;
    r = ioctl(fd, LOOP_SET_CAPACITY, 0);
    e = errno;
    close(fd);
    errno = e;
    return r;
}

/*
 * After a failed grow: the image back to OLD bytes, unless its file system
 * already spans more (then the bigger file is what it needs). DEV: the loop
 * device bound to it ("" when none). Records no error: the grow's stands.
 */
static void undo_grow(int fd, uint64_t old, const char *dev)
{
    struct stat now;
    int src = fd, dev_fd = -1;

    if (fstat(fd, &now) < 0 || (uint64_t)now.st_size <= old)
        return;
    if (dev[0] && (src = dev_fd = open(dev, O_RDONLY | O_CLOEXEC)) < 0)
        return; /* cannot read what the kernel has: keep the file */
    if (fs_bytes(src) <= old && ftruncate(fd, (off_t)old) == 0) {
        (void)fsync(fd);
        if (dev[0])
            (void)loop_capacity(dev);
    }
    if (dev_fd >= 0)
        close(dev_fd);
}

static int set_size(const struct img *g, int fd, const struct stat *st, uint64_t size)
{
    if (size > (uint64_t)st->st_size && ftruncate(fd, (off_t)size) < 0)
        return semail__errno(semail__errno_code(errno), errno, "grow %s", g->path);
    if (fsync(fd) < 0)
        return semail__errno(semail__errno_code(errno), errno, "fsync %s", g->path);
    return 0;
}

/*
 * Make the image SIZE bytes and grow its file system to fill it: on line
 * through the loop device when one is bound (DEV names it), off line on
 * the file when none is (DEV "").
 */
static int grow(const struct image *im, const struct img *g, int fd, const struct stat *st,
                uint64_t size, char *dev, size_t dev_size)
{
    int nums[LOOPS_MAX], count, err;
    dev_t devs[LOOPS_MAX];

    dev[0] = '\0';
    if ((err = set_size(g, fd, st, size)) < 0)
        return err;
    if ((count = find_loops(g, st, nums, devs)) < 0)
        return count;
    if (count == 0)
        return semail__storage_grow_fs(im->tool_path, g->path, 1);
    (void)semail__fmt(dev, dev_size, "/dev/loop%d", nums[0]);
    if (loop_capacity(dev) < 0)
        return semail__errno(SEMAIL_EIO, errno, "%s: LOOP_SET_CAPACITY", dev);
    /* Bound means mounted here or elsewhere: resize2fs grows it on line. */
    return semail__storage_grow_fs(im->tool_path, dev, 0);
}

/*
 * 1 when a loop device of the image is still held once our mount is gone:
 * another mount namespace mounts the file system (a container's bind
 * mount), so unmounting ours does not free it. The kernel claims a mounted
 * device exclusively, so an O_EXCL open tells. A holder that is letting go
 * (a container just stopped) gets HELD_WAIT_MS.
 */
static int held_elsewhere(const struct img *g, const struct stat *img)
{
    int nums[LOOPS_MAX], count, i, waited, busy = 0;
    dev_t devs[LOOPS_MAX];
    char dev[32];

    for (waited = 0; waited <= HELD_WAIT_MS; waited += 50) {
        if ((count = find_loops(g, img, nums, devs)) < 0)
            return count;
        for (i = 0, busy = 0; i < count && !busy; i++) {
            int fd;
            (void)semail__fmt(dev, sizeof(dev), "/dev/loop%d", nums[i]);
            if ((fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC)) >= 0)
                close(fd);
            else
                busy = errno == EBUSY;
        }
        if (!busy)
            return 0;
        sleep_ms(50);
    }
    return 1;
}

/*
 * The kernel refused the on-line grow (without CAP_SYS_RESOURCE, as in
 * some sandboxes, EXT4_IOC_RESIZE_FS fails): unmount, grow off line, mount
 * again. When the file system is still held elsewhere once unmounted here,
 * it is mounted back at once and nothing is grown (SEMAIL_ETEMP): the
 * holder must let go first. FIRST: why the on-line grow failed.
 */
static int regrow_offline(struct image *im, const struct img *g, const semail_storage_box *box,
                          int fd, const struct stat *st, uint64_t size, const char *first)
{
    char why[512];
    int err, held;

    if (semail__storage_umount(box) < 0)
        return semail__err(SEMAIL_ETEMP,
                           "on-line resize failed (%s) and the file system is busy: "
                           "stop what uses %s and retry",
                           first, box->path);
    if ((held = held_elsewhere(g, st)) != 0) {
        err = held < 0 ? held
                       : semail__err(SEMAIL_ETEMP,
                                     "on-line resize failed (%s) and the file system is still "
                                     "mounted elsewhere (a container?): stop it and retry",
                                     first);
        (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
    } else if ((err = loop_detach_all(g, st)) == 0 && (err = set_size(g, fd, st, size)) == 0 &&
               (err = semail__storage_grow_fs(im->tool_path, g->path, 1)) == 0) {
        return do_mount(im, g, box, 0);
    } else {
        (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
        undo_grow(fd, (uint64_t)st->st_size, "");
    }
    if (do_mount(im, g, box, 0) < 0) {
        char again[256];
        (void)semail__strlcpy(again, semail_error_last(), sizeof(again));
        return semail__err(err, "%s; and mounting it again failed: %s (semail-admin mount-all)",
                           why, again);
    }
    return semail__err(err, "%s", why);
}

/* Grow on line; where the kernel refuses, off line (regrow_offline). */
static int grow_or_remount(struct image *im, const struct img *g, const semail_storage_box *box,
                           int fd, const struct stat *st, uint64_t size)
{
    char first[256], dev[32];
    semail__mount mnt;
    int err;

    if ((err = grow(im, g, fd, st, size, dev, sizeof(dev))) == 0)
        return 0;
    (void)semail__strlcpy(first, semail_error_last(), sizeof(first));
    undo_grow(fd, (uint64_t)st->st_size, dev);
    /* Off line was tried already (not bound), or it is bound but not mounted here. */
    if (!dev[0] || semail__mountinfo_find(NULL, box->path, &mnt) != 1 ||
        mounted_ours(g, st, &mnt) != 1)
        return semail__err(err, "%s", first);
    return regrow_offline(im, g, box, fd, st, size, first);
}

static int image_resize(void *self, const semail_storage_box *box, uint64_t size)
{
    struct stat st;
    struct img g;
    int err, fd = -1;

    if ((err = img_open(&g, self, box->login, 0)) < 0 || (err = fd = img_file(&g, &st)) < 0)
        goto done;
    if (size > (uint64_t)INT64_MAX)
        err = semail__err(SEMAIL_EINVAL, "size %llu: too big", (unsigned long long)size);
    else if (size < (uint64_t)st.st_size)
        err = semail__err(SEMAIL_EINVAL,
                          "%s: %llu bytes is smaller than the current %llu: shrinking is refused",
                          g.path, (unsigned long long)size, (unsigned long long)st.st_size);
    else
        err = grow_or_remount(self, &g, box, fd, &st, size);
done:
    if (fd >= 0)
        close(fd);
    img_close(&g);
    return err;
}

#define NO_IMAGE 2

/* 1 mounted (ours), 0 not, NO_IMAGE; or a negative code. */
static int is_mounted(const struct img *g, const semail_storage_box *box)
{
    semail__mount mnt;
    struct stat st;
    int fd, r;

    if ((fd = img_file(g, &st)) < 0)
        return fd == SEMAIL_ENOTFOUND ? NO_IMAGE : fd;
    if ((r = semail__mountinfo_find(NULL, box->path, &mnt)) == 1)
        r = mounted_ours(g, &st, &mnt);
    close(fd);
    return r;
}

static int image_usage(void *self, const semail_storage_box *box, semail_storage_usage *out)
{
    struct img g;
    int err;

    if ((err = img_open(&g, self, box->login, 0)) == 0 && (err = is_mounted(&g, box)) == 1)
        err = semail__storage_statvfs(box, out);
    else if (err >= 0)
        err = semail__err(SEMAIL_ENOTFOUND, "%s: %s", box->path,
                          err == NO_IMAGE ? "no such box" : "not mounted");
    img_close(&g);
    return err;
}

static int image_status(void *self, const semail_storage_box *box, semail_storage_state *out)
{
    struct stat st;
    struct img g;
    int err, point, tmp = 0;

    point = fstatat(box->mail_root_fd, box->login, &st, AT_SYMLINK_NOFOLLOW) == 0;
    err = img_open(&g, self, box->login, 0);
    if (err == SEMAIL_ENOTFOUND) {
        err = NO_IMAGE; /* no image_dir: no image */
    } else if (err == 0) {
        tmp = faccessat(g.dirfd, g.tmp, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
        err = is_mounted(&g, box);
    }
    img_close(&g);
    if (err < 0)
        return err;
    if (err == 1)
        *out = SEMAIL_STORAGE_MOUNTED;
    else if (err == 0)
        *out = SEMAIL_STORAGE_UNMOUNTED;
    else
        *out = point || tmp ? SEMAIL_STORAGE_INCOMPLETE : SEMAIL_STORAGE_ABSENT;
    return 0;
}

const semail_storage_backend semail__storage_image = {
    .version = SEMAIL_STORAGE_BACKEND_VERSION,
    .name = "image",
    .open = image_open,
    .close = image_close,
    .create = image_create,
    .mount = image_mount,
    .unmount = image_unmount,
    .destroy = image_destroy,
    .resize = image_resize,
    .usage = image_usage,
    .status = image_status,
};
