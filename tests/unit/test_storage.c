/*
 * test_storage.c - the storage layer: the directory backend in full, the
 * image backend with real loop devices and ext4 (as root, where loop
 * devices work), the mount-table parser, the tool runner, and failures:
 * a taken mount point, a symbolic link as mount point, no free loop
 * device (a seam: a real shortage cannot be produced, the kernel makes new
 * loop devices on demand), mkfs missing (a real empty tool path), a grow
 * that fails (a resize2fs that refuses) and a file system held by another
 * mount namespace (a child with private copies of the mounts, as a
 * container's bind mount).
 * The LVM backend is tested only where device-mapper exists.
 *
 * Every fixture unmounts what is mounted under its directory and detaches
 * the loop devices bound to its images, even when a test fails.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "semail/registry.h"
#include "semail/storage.h"
#include "storage_internal.h"

#define MiB (1024ull * 1024)

/* Success, or the failure's message on stderr before the assertion fails. */
#define assert_ok(expr)                                                                            \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0)                                                                              \
            fprintf(stderr, "%s: %d: %s\n", #expr, rc_, semail_error_last());                      \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

struct fx {
    char dir[64];
    char mail_root[128];
    char images[128];
    char empty_tools[128];
    semail_storage *st;
};

/* ---- cleanup that survives a failed test ------------------------------------ */

static char cleanup_dir[64];

/* Unmount everything mounted below DIR (deepest first), detach loops bound to files below it. */
static void force_cleanup(const char *dir)
{
    size_t n = strlen(dir);
    int round;

    for (round = 0; round < 8; round++) {
        FILE *fp = fopen("/proc/self/mountinfo", "re");
        char line[8192], last[4096] = "";
        while (fp && fgets(line, sizeof(line), fp)) {
            semail__mount m;
            if (semail__mountinfo_parse(line, &m) == 0 && strncmp(m.point, dir, n) == 0)
                snprintf(last, sizeof(last), "%s", m.point);
        }
        if (fp)
            fclose(fp);
        if (last[0] == '\0')
            break;
        umount2(last, MNT_DETACH);
    }
    DIR *d = opendir("/sys/block");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char path[512], buf[4096];
        int fd;
        ssize_t r;
        if (strncmp(e->d_name, "loop", 4) != 0)
            continue;
        snprintf(path, sizeof(path), "/sys/block/%s/loop/backing_file", e->d_name);
        if ((fd = open(path, O_RDONLY)) < 0)
            continue;
        r = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (r <= 0 || strncmp(buf, dir, n) != 0)
            continue;
        snprintf(path, sizeof(path), "/dev/%s", e->d_name);
        if ((fd = open(path, O_RDONLY)) >= 0) {
            ioctl(fd, LOOP_CLR_FD, 0);
            close(fd);
        }
    }
    if (d)
        closedir(d);
}

static void rm_rf(const char *dir)
{
    int fd = open("/", O_RDONLY | O_DIRECTORY);
    semail__storage_rm_tree(fd, dir + 1);
    close(fd);
}

static void atexit_cleanup(void)
{
    if (cleanup_dir[0]) {
        force_cleanup(cleanup_dir);
        rm_rf(cleanup_dir);
    }
}

static int make_fx(void **state, const char *backend, const char *mail_user, const char *tools)
{
    struct fx *f = calloc(1, sizeof(*f));
    semail_storage_options o = SEMAIL_STORAGE_OPTIONS_INIT;

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/semail-test-storage-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(cleanup_dir, sizeof(cleanup_dir), "%s", f->dir);
    snprintf(f->mail_root, sizeof(f->mail_root), "%s/mail", f->dir);
    snprintf(f->images, sizeof(f->images), "%s/images", f->dir);
    snprintf(f->empty_tools, sizeof(f->empty_tools), "%s/no-tools", f->dir);
    assert_int_equal(mkdir(f->mail_root, 0755), 0);
    assert_int_equal(mkdir(f->empty_tools, 0755), 0);
    o.backend = backend;
    o.mail_root = f->mail_root;
    o.image_dir = f->images;
    o.default_size = 16 * MiB;
    o.mail_user = mail_user;
    o.tool_path = tools ? f->empty_tools : NULL;
    assert_int_equal(semail_storage_new(&f->st, &o), 0);
    *state = f;
    return 0;
}

static int setup_dir(void **state)
{
    return make_fx(state, "directory", NULL, NULL);
}

static int setup_dir_daemon(void **state)
{
    return make_fx(state, "directory", "nobody", NULL);
}

static int setup_image(void **state)
{
    return make_fx(state, "image", NULL, NULL);
}

static int setup_image_no_tools(void **state)
{
    return make_fx(state, "image", NULL, "none");
}

static int teardown(void **state)
{
    struct fx *f = *state;
    semail_storage_free(f->st);
    force_cleanup(f->dir);
    rm_rf(f->dir);
    cleanup_dir[0] = '\0';
    free(f);
    return 0;
}

static void path_of(char *out, size_t n, const struct fx *f, const char *login)
{
    snprintf(out, n, "%s/%s", f->mail_root, login);
}

static semail_storage_state state_of(struct fx *f, const char *login)
{
    semail_storage_state s = (semail_storage_state)-1;
    assert_int_equal(semail_storage_status(&s, f->st, login), 0);
    return s;
}

/* ---- options and validation ------------------------------------------------- */

static void test_storage__rejects_unknown_backend_and_relative_root(void **state)
{
    semail_storage_options o = SEMAIL_STORAGE_OPTIONS_INIT;
    semail_storage *st = NULL;

    o.mail_root = "/tmp";
    o.backend = "zfs";
    assert_int_equal(semail_storage_new(&st, &o), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "zfs"));
    o.backend = "directory";
    o.mail_root = "relative/mail";
    assert_int_equal(semail_storage_new(&st, &o), SEMAIL_EINVAL);
    o.mail_root = "/tmp";
    o.backend = "lvm";
    o.lvm_vg = "../vg";
    assert_int_equal(semail_storage_new(&st, &o), SEMAIL_EINVAL);
    assert_null(st);
}

static void test_storage__new_from_config_reads_storage_section(void **state)
{
    static const char text[] = "[global]\nmail_root = /srv/mail\nuser =\n"
                               "[storage]\nbackend = directory\ndefault_size = 64m\n";
    semail_config *cfg = NULL;
    semail_storage *st = NULL;

    assert_int_equal(semail_config_parse(&cfg, text, sizeof(text) - 1, "t.conf"), 0);
    assert_int_equal(semail_storage_new_from_config(&st, cfg), 0);
    assert_string_equal(semail_storage_backend_name(st), "directory");
    semail_storage_free(st);
    semail_config_free(cfg);
}

static void test_storage__bad_login_is_refused_before_any_path(void **state)
{
    struct fx *f = *state;
    struct stat st;

    assert_int_equal(semail_storage_create(f->st, "../escape", 1000, 1000, 0), SEMAIL_EINVAL);
    assert_int_equal(semail_storage_create(f->st, "a/b", 1000, 1000, 0), SEMAIL_EINVAL);
    assert_int_equal(semail_storage_destroy(f->st, ".."), SEMAIL_EINVAL);
    assert_int_equal(semail_storage_mount(f->st, ""), SEMAIL_EINVAL);
    assert_int_not_equal(stat("/tmp/escape", &st), 0);
}

/* The message quotes the validator's own, intact (not formatted over itself). */
static void test_storage__bad_login_message_quotes_the_reason(void **state)
{
    struct fx *f = *state;
    char want[600];

    assert_int_equal(semail_validate_name("../escape"), SEMAIL_EINVAL);
    snprintf(want, sizeof(want), "login %s", semail_error_last());
    assert_int_equal(semail_storage_create(f->st, "../escape", 1000, 1000, 0), SEMAIL_EINVAL);
    assert_string_equal(semail_error_last(), want);
}

/* ---- the mount table and the tool runner ---------------------------------- */

static void test_storage__mountinfo_parses_octal_escapes_and_optional_fields(void **state)
{
    char line[] = "36 35 7:3 / /srv/mail/with\\040space\\134x rw,nosuid shared:1 master:2 - "
                  "ext4 /dev/loop3 rw\n";
    char bad[] = "36 35 7:3 / /x rw\n";
    semail__mount m;

    assert_int_equal(semail__mountinfo_parse(line, &m), 0);
    assert_string_equal(m.point, "/srv/mail/with space\\x");
    assert_string_equal(m.fstype, "ext4");
    assert_string_equal(m.source, "/dev/loop3");
    assert_true(m.dev == makedev(7, 3));
    assert_int_equal(semail__mountinfo_parse(bad, &m), SEMAIL_EINVAL);
}

static void test_storage__mountinfo_find_takes_the_topmost_mount(void **state)
{
    char file[] = "/tmp/semail-test-mountinfo-XXXXXX";
    int fd = mkstemp(file);
    static const char text[] = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                               "2 1 7:1 / /m/a rw - ext4 /dev/loop1 rw\n"
                               "3 2 0:40 / /m/a rw - tmpfs tmpfs rw\n"
                               "4 1 7:2 / /m/ab rw - ext4 /dev/loop2 rw\n";
    semail__mount m;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof(text) - 1), (int)sizeof(text) - 1);
    close(fd);
    assert_int_equal(semail__mountinfo_find(file, "/m/a", &m), 1);
    assert_string_equal(m.fstype, "tmpfs");
    assert_int_equal(semail__mountinfo_find(file, "/m", NULL), 0);
    unlink(file);
}

static void test_storage__run_reports_missing_tool_and_failure_output(void **state)
{
    const char *missing[] = {"no-such-tool-semail", NULL};
    const char *failing[] = {"sh", "-c", "echo first; echo 'the reason' >&2; exit 3", NULL};
    const char *ok[] = {"true", NULL};
    int status = -1;

    assert_int_equal(semail__storage_run(NULL, missing, NULL), SEMAIL_ENOTFOUND);
    assert_int_equal(semail__storage_run(NULL, failing, NULL), SEMAIL_EIO);
    assert_non_null(strstr(semail_error_last(), "exit 3"));
    assert_non_null(strstr(semail_error_last(), "the reason"));
    assert_int_equal(semail__storage_run(NULL, failing, &status), 0);
    assert_int_equal(status, 3);
    assert_int_equal(semail__storage_run(NULL, ok, NULL), 0);
}

/* ---- the directory backend ------------------------------------------------- */

static void test_storage__dir_create_makes_owned_private_dir(void **state)
{
    struct fx *f = *state;
    char path[256];
    struct stat st;

    assert_int_equal(state_of(f, "alice"), SEMAIL_STORAGE_ABSENT);
    assert_ok(semail_storage_create(f->st, "alice", 4242, 4343, 0));
    path_of(path, sizeof(path), f, "alice");
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    if (geteuid() == 0) {
        assert_int_equal(st.st_uid, 4242);
        assert_int_equal(st.st_gid, 4343);
    }
    assert_int_equal(state_of(f, "alice"), SEMAIL_STORAGE_MOUNTED);
    /* idempotent: again, and mount/unmount are no-ops that succeed */
    assert_ok(semail_storage_create(f->st, "alice", 4242, 4343, 0));
    assert_ok(semail_storage_mount(f->st, "alice"));
    assert_ok(semail_storage_unmount(f->st, "alice"));
    assert_ok(semail_storage_resize(f->st, "alice", 64 * MiB));
}

static void test_storage__dir_with_daemon_user_is_2770_with_default_acl(void **state)
{
    struct fx *f = *state;
    char path[256], acl[128];
    struct stat st;
    ssize_t n;

    if (geteuid() != 0)
        skip();
    assert_ok(semail_storage_create(f->st, "bob", 4242, 4242, 0));
    path_of(path, sizeof(path), f, "bob");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 02770);
    assert_int_equal(st.st_uid, 4242);
    assert_int_not_equal(st.st_gid, 4242); /* the daemon's group */
    n = getxattr(path, "system.posix_acl_default", acl, sizeof(acl));
    if (n < 0 && errno == ENOTSUP)
        skip();
    assert_int_equal(n, 44);
    /* the named-user entry carries the box's uid */
    assert_int_equal(acl[12], 0x02);
    assert_int_equal((unsigned char)acl[16] | (unsigned char)acl[17] << 8, 4242);
}

static void test_storage__dir_usage_counts_files_and_destroy_removes_all(void **state)
{
    struct fx *f = *state;
    semail_storage_usage u;
    char path[256], buf[65536];
    int fd;

    assert_ok(semail_storage_create(f->st, "carol", 4242, 4242, 0));
    snprintf(path, sizeof(path), "%s/carol/INBOX", f->mail_root);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(write(fd, buf, sizeof(buf)), (int)sizeof(buf));
    fsync(fd);
    close(fd);
    snprintf(path, sizeof(path), "%s/carol/sub", f->mail_root);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_ok(semail_storage_usage_get(&u, f->st, "carol"));
    assert_true(u.used >= sizeof(buf));
    assert_int_equal(u.total, 0);

    assert_ok(semail_storage_destroy(f->st, "carol"));
    assert_int_equal(state_of(f, "carol"), SEMAIL_STORAGE_ABSENT);
    assert_ok(semail_storage_destroy(f->st, "carol")); /* idempotent */
    assert_int_equal(semail_storage_mount(f->st, "carol"), SEMAIL_ENOTFOUND);
    assert_int_equal(semail_storage_usage_get(&u, f->st, "carol"), SEMAIL_ENOTFOUND);
}

static void test_storage__dir_refuses_symlink_and_destroy_never_follows(void **state)
{
    struct fx *f = *state;
    char path[256], target[200], victim[256];
    struct stat st;
    int fd;

    snprintf(target, sizeof(target), "%s/elsewhere", f->dir);
    assert_int_equal(mkdir(target, 0755), 0);
    snprintf(victim, sizeof(victim), "%s/keep", target);
    fd = open(victim, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    path_of(path, sizeof(path), f, "dave");
    assert_int_equal(symlink(target, path), 0);

    assert_int_equal(semail_storage_create(f->st, "dave", 4242, 4242, 0), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "symbolic link"));
    assert_int_equal(state_of(f, "dave"), SEMAIL_STORAGE_INCOMPLETE);
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755); /* untouched */

    /* a link planted inside a box is removed, its target kept */
    unlink(path);
    assert_ok(semail_storage_create(f->st, "dave", 4242, 4242, 0));
    snprintf(path, sizeof(path), "%s/dave/link", f->mail_root);
    assert_int_equal(symlink(target, path), 0);
    assert_ok(semail_storage_destroy(f->st, "dave"));
    assert_int_equal(stat(victim, &st), 0);
}

/* ---- the image backend --------------------------------------------------------- */

static int loop_devices_usable(void)
{
    static int usable = -1;
    int fd;

    if (usable >= 0)
        return usable;
    usable = 0;
    if (geteuid() != 0) {
        fprintf(stderr, "[  SKIP    ] image backend: needs root (loop devices, mount)\n");
        return 0;
    }
    if ((fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC)) < 0) {
        fprintf(stderr, "[  SKIP    ] image backend: /dev/loop-control: %s\n", strerror(errno));
        return 0;
    }
    close(fd);
    if (access("/usr/sbin/mkfs.ext4", X_OK) != 0 && access("/sbin/mkfs.ext4", X_OK) != 0) {
        fprintf(stderr, "[  SKIP    ] image backend: mkfs.ext4 missing (e2fsprogs)\n");
        return 0;
    }
    usable = 1;
    return 1;
}

/* The loop devices bound to PATH (by /sys backing_file). */
static int loops_backing(const char *path)
{
    DIR *d = opendir("/sys/block");
    struct dirent *e;
    int count = 0;

    while (d && (e = readdir(d)) != NULL) {
        char p[512], buf[4096];
        ssize_t r;
        int fd;
        if (strncmp(e->d_name, "loop", 4) != 0)
            continue;
        snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", e->d_name);
        if ((fd = open(p, O_RDONLY)) < 0)
            continue;
        r = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (r > 0 && strncmp(buf, path, strlen(path)) == 0)
            count++;
    }
    if (d)
        closedir(d);
    return count;
}

/*
 * The loop devices still backing PATH once the kernel has had up to 3 s to
 * act: an auto-clear loop device is detached asynchronously after its last
 * user goes away, later under load.
 */
static int loops_backing_settled(const char *path)
{
    int n = loops_backing(path);
    for (int i = 0; i < 60 && n > 0; i++) {
        usleep(50 * 1000);
        n = loops_backing(path);
    }
    return n;
}

static int is_mounted_at(const char *path)
{
    return semail__mountinfo_find(NULL, path, NULL) == 1;
}

/* Write 1 MiB chunks to PATH until it fails; returns the errno of the failure. */
static int fill(const char *path, uint64_t *written)
{
    static char chunk[1 << 20];
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600), e = 0;

    assert_true(fd >= 0);
    memset(chunk, 'm', sizeof(chunk));
    *written = 0;
    for (int i = 0; i < 256 && e == 0; i++) {
        ssize_t w = write(fd, chunk, sizeof(chunk));
        if (w < 0)
            e = errno;
        else
            *written += (uint64_t)w;
        if (e == 0 && fsync(fd) < 0)
            e = errno;
    }
    close(fd);
    return e;
}

static void test_storage__image_full_life_cycle(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], file[300];
    semail_storage_usage u, u2;
    uint64_t w1, w2;
    struct stat st;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "erin");
    snprintf(img, sizeof(img), "%s/erin.img", f->images);

    assert_ok(semail_storage_create(f->st, "erin", 4242, 4243, 16 * MiB));
    assert_int_equal(state_of(f, "erin"), SEMAIL_STORAGE_MOUNTED);
    assert_true(is_mounted_at(point));
    assert_int_equal(loops_backing(img), 1);
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, 16 * MiB);
    assert_true((uint64_t)st.st_blocks * 512 < 16 * MiB); /* sparse */
    assert_int_equal(stat(point, &st), 0);
    assert_int_equal(st.st_uid, 4242);
    assert_int_equal(st.st_gid, 4243);
    assert_int_equal(st.st_mode & 07777, 0700);

    /* the size is the quota: ENOSPC when full */
    snprintf(file, sizeof(file), "%s/INBOX", point);
    assert_int_equal(fill(file, &w1), ENOSPC);
    assert_true(w1 > 8 * MiB && w1 < 16 * MiB);
    assert_ok(semail_storage_usage_get(&u, f->st, "erin"));
    assert_true(u.total > 12 * MiB && u.total <= 16 * MiB);
    assert_true(u.used > 8 * MiB);

    /* grow on line: more space; shrinking refused; the same size again is fine */
    assert_ok(semail_storage_resize(f->st, "erin", 32 * MiB));
    assert_ok(semail_storage_usage_get(&u2, f->st, "erin"));
    assert_true(u2.total > u.total + 14 * MiB);
    assert_int_equal(fill(file, &w2), ENOSPC);
    assert_true(w2 >= 14 * MiB);
    assert_int_equal(semail_storage_resize(f->st, "erin", 16 * MiB), SEMAIL_EINVAL);
    assert_non_null(strstr(semail_error_last(), "shrinking"));
    assert_ok(semail_storage_resize(f->st, "erin", 32 * MiB));

    /* unmount frees the loop device; twice is fine */
    assert_ok(semail_storage_unmount(f->st, "erin"));
    assert_false(is_mounted_at(point));
    assert_int_equal(loops_backing_settled(img), 0);
    assert_int_equal(state_of(f, "erin"), SEMAIL_STORAGE_UNMOUNTED);
    assert_ok(semail_storage_unmount(f->st, "erin"));
    assert_int_equal(semail_storage_usage_get(&u, f->st, "erin"), SEMAIL_ENOTFOUND);
    assert_int_not_equal(stat(file, &st), 0); /* the mail is on the image, not under it */

    /* offline growth, then mount (twice: idempotent); the mail is back */
    assert_ok(semail_storage_resize(f->st, "erin", 40 * MiB));
    assert_ok(semail_storage_mount(f->st, "erin"));
    assert_ok(semail_storage_mount(f->st, "erin"));
    assert_int_equal(loops_backing(img), 1);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal((uint64_t)st.st_size, w1 + w2);
    assert_ok(semail_storage_usage_get(&u, f->st, "erin"));
    assert_true(u.total > 36 * MiB);

    /* destroy: nothing left */
    assert_ok(semail_storage_destroy(f->st, "erin"));
    assert_false(is_mounted_at(point));
    assert_int_equal(loops_backing_settled(img), 0);
    assert_int_not_equal(lstat(img, &st), 0);
    assert_int_not_equal(lstat(point, &st), 0);
    assert_int_equal(state_of(f, "erin"), SEMAIL_STORAGE_ABSENT);
    assert_ok(semail_storage_destroy(f->st, "erin"));
}

static void test_storage__image_create_resumes_and_refuses_nonempty_point(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], tmp[256], stray[300];
    struct stat st;
    int fd;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "fay");
    snprintf(img, sizeof(img), "%s/fay.img", f->images);
    snprintf(tmp, sizeof(tmp), "%s/fay.img.tmp", f->images);
    /* a crash left a half-made .tmp and the mount point */
    assert_int_equal(mkdir(f->images, 0700), 0);
    fd = open(tmp, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mkdir(point, 0), 0);
    assert_int_equal(state_of(f, "fay"), SEMAIL_STORAGE_INCOMPLETE);
    assert_ok(semail_storage_create(f->st, "fay", 4242, 4242, 16 * MiB));
    assert_int_not_equal(lstat(tmp, &st), 0);
    assert_int_equal(state_of(f, "fay"), SEMAIL_STORAGE_MOUNTED);
    assert_ok(semail_storage_create(f->st, "fay", 4242, 4242, 16 * MiB));
    assert_int_equal(loops_backing(img), 1);

    /* mail delivered into the bare mount point would be hidden: mount refuses */
    assert_ok(semail_storage_unmount(f->st, "fay"));
    snprintf(stray, sizeof(stray), "%s/INBOX", point);
    fd = open(stray, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(semail_storage_mount(f->st, "fay"), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "hide"));
    assert_int_equal(loops_backing_settled(img), 0);
    unlink(stray);
    assert_ok(semail_storage_mount(f->st, "fay"));
    assert_ok(semail_storage_destroy(f->st, "fay"));
    assert_int_equal(state_of(f, "fay"), SEMAIL_STORAGE_ABSENT);
}

static void test_storage__image_taken_mount_point_is_refused_and_nothing_made(void **state)
{
    struct fx *f = *state;
    char point[256], img[256];
    struct stat st;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "gus");
    snprintf(img, sizeof(img), "%s/gus.img", f->images);
    assert_int_equal(mkdir(point, 0755), 0);
    assert_int_equal(mount("tmpfs", point, "tmpfs", 0, "size=1m"), 0);
    assert_int_equal(semail_storage_create(f->st, "gus", 4242, 4242, 16 * MiB), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "tmpfs"));
    assert_int_not_equal(lstat(img, &st), 0);
    assert_int_equal(semail_storage_mount(f->st, "gus"), SEMAIL_ENOTFOUND);
    assert_int_equal(umount(point), 0);
}

static void test_storage__image_symlink_mount_point_is_refused(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], target[256];
    struct stat st;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "hal");
    snprintf(img, sizeof(img), "%s/hal.img", f->images);
    snprintf(target, sizeof(target), "%s/target", f->dir);
    assert_int_equal(mkdir(target, 0755), 0);
    assert_int_equal(symlink(target, point), 0);
    assert_int_equal(semail_storage_create(f->st, "hal", 4242, 4242, 16 * MiB), SEMAIL_EEXISTS);
    assert_non_null(strstr(semail_error_last(), "symbolic link"));
    assert_false(is_mounted_at(target));
    assert_int_not_equal(lstat(img, &st), 0);
}

static int no_free_loop(int control_fd)
{
    return -ENOSPC;
}

static void test_storage__image_no_free_loop_device_is_temporary_and_rolled_back(void **state)
{
    struct fx *f = *state;
    char point[256], img[256];
    struct stat st;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "ida");
    snprintf(img, sizeof(img), "%s/ida.img", f->images);
    semail__storage_image_set_get_free(semail__storage_state(f->st), no_free_loop);
    assert_int_equal(semail_storage_create(f->st, "ida", 4242, 4242, 16 * MiB), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "no free loop device"));
    assert_int_not_equal(lstat(img, &st), 0);
    assert_int_not_equal(lstat(point, &st), 0);
    assert_int_equal(state_of(f, "ida"), SEMAIL_STORAGE_ABSENT);
    semail__storage_image_set_get_free(semail__storage_state(f->st), NULL);
    assert_ok(semail_storage_create(f->st, "ida", 4242, 4242, 16 * MiB));
    assert_ok(semail_storage_destroy(f->st, "ida"));
}

static void test_storage__image_without_mkfs_fails_cleanly(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], tmp[256];
    struct stat st;

    if (!loop_devices_usable())
        skip();
    path_of(point, sizeof(point), f, "jo");
    snprintf(img, sizeof(img), "%s/jo.img", f->images);
    snprintf(tmp, sizeof(tmp), "%s/jo.img.tmp", f->images);
    assert_int_equal(semail_storage_create(f->st, "jo", 4242, 4242, 16 * MiB), SEMAIL_ENOTFOUND);
    assert_non_null(strstr(semail_error_last(), "mkfs.ext4"));
    assert_int_not_equal(lstat(img, &st), 0);
    assert_int_not_equal(lstat(tmp, &st), 0);
    assert_int_not_equal(lstat(point, &st), 0);
}

static void test_storage__image_size_below_minimum_is_refused(void **state)
{
    struct fx *f = *state;

    assert_int_equal(semail_storage_create(f->st, "kim", 4242, 4242, 1 * MiB), SEMAIL_EINVAL);
    assert_int_equal(state_of(f, "kim"), SEMAIL_STORAGE_ABSENT);
}

/*
 * A tool path in F->empty_tools with the real mkfs.ext4 and e2fsck, and a
 * resize2fs that refuses the on-line grow (a device argument: the kernel
 * here may allow it, this one never does) or, with ALWAYS, every grow.
 */
static void tools_refusing_resize(struct fx *f, int always)
{
    static const char *const real[] = {"mkfs.ext4", "e2fsck", "resize2fs"};
    char path[256], target[256], script[512];
    FILE *fp;

    for (size_t i = 0; i < 2; i++) {
        snprintf(target, sizeof(target), "/usr/sbin/%s", real[i]);
        if (access(target, X_OK) != 0)
            snprintf(target, sizeof(target), "/sbin/%s", real[i]);
        snprintf(path, sizeof(path), "%s/%s", f->empty_tools, real[i]);
        assert_int_equal(symlink(target, path), 0);
    }
    snprintf(target, sizeof(target), "/usr/sbin/resize2fs");
    if (access(target, X_OK) != 0)
        snprintf(target, sizeof(target), "/sbin/resize2fs");
    snprintf(script, sizeof(script),
             "#!/bin/sh\n%scase \"$1\" in /dev/*) echo 'resize2fs: on-line refused by the test' "
             ">&2; exit 1;; esac\nexec %s \"$@\"\n",
             always ? "echo 'resize2fs: refused by the test' >&2; exit 1\n" : "", target);
    snprintf(path, sizeof(path), "%s/resize2fs", f->empty_tools);
    assert_non_null(fp = fopen(path, "w"));
    assert_int_equal(fputs(script, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, 0755), 0);
}

static off_t size_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_storage__image_failed_grow_keeps_the_old_size_and_the_mount(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], file[300];
    semail_storage_usage before, after;
    struct stat st;
    FILE *fp;

    if (!loop_devices_usable())
        skip();
    tools_refusing_resize(f, 1);
    path_of(point, sizeof(point), f, "lee");
    snprintf(img, sizeof(img), "%s/lee.img", f->images);
    snprintf(file, sizeof(file), "%s/INBOX", point);
    assert_ok(semail_storage_create(f->st, "lee", 4242, 4242, 16 * MiB));
    assert_non_null(fp = fopen(file, "w"));
    assert_int_equal(fputs("kept\n", fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    assert_ok(semail_storage_usage_get(&before, f->st, "lee"));

    /* on line refused, off line refused: nothing is left half-done */
    assert_int_equal(semail_storage_resize(f->st, "lee", 32 * MiB), SEMAIL_EIO);
    assert_non_null(strstr(semail_error_last(), "refused by the test"));
    assert_int_equal(size_of(img), 16 * MiB);
    assert_true(is_mounted_at(point));
    assert_int_equal(loops_backing(img), 1);
    assert_int_equal(stat(file, &st), 0);
    assert_ok(semail_storage_usage_get(&after, f->st, "lee"));
    assert_int_equal(after.total, before.total);
    assert_ok(semail_storage_destroy(f->st, "lee"));
}

/* A child in a mount namespace of its own, holding a private copy of every mount until *FD closes.
 */
static pid_t hold_mounts(int *fd)
{
    int ready[2], release[2];
    pid_t pid;
    char c;

    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(release), 0);
    if ((pid = fork()) == 0) {
        close(ready[0]);
        close(release[1]);
        /* private: the parent's unmount does not reach the copies, as with a container */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            _exit(1);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        _exit(read(release[0], &c, 1) == 0 ? 0 : 1); /* 0: the parent closed it */
    }
    assert_true(pid > 0);
    close(ready[1]);
    close(release[0]);
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    *fd = release[1];
    return pid;
}

static void test_storage__image_held_elsewhere_is_not_grown_until_let_go(void **state)
{
    struct fx *f = *state;
    char point[256], img[256], file[300];
    semail_storage_usage before, after;
    int status, release;
    struct stat st;
    FILE *fp;
    pid_t pid;

    if (!loop_devices_usable())
        skip();
    tools_refusing_resize(f, 0);
    path_of(point, sizeof(point), f, "max");
    snprintf(img, sizeof(img), "%s/max.img", f->images);
    snprintf(file, sizeof(file), "%s/INBOX", point);
    assert_ok(semail_storage_create(f->st, "max", 4242, 4242, 16 * MiB));
    assert_non_null(fp = fopen(file, "w"));
    assert_int_equal(fclose(fp), 0);
    assert_ok(semail_storage_usage_get(&before, f->st, "max"));

    /* held by another mount namespace: mounted back at once, nothing grown */
    pid = hold_mounts(&release);
    assert_int_equal(semail_storage_resize(f->st, "max", 32 * MiB), SEMAIL_ETEMP);
    assert_non_null(strstr(semail_error_last(), "mounted elsewhere"));
    assert_int_equal(size_of(img), 16 * MiB);
    assert_true(is_mounted_at(point));
    assert_int_equal(stat(file, &st), 0);
    assert_ok(semail_storage_usage_get(&after, f->st, "max"));
    assert_int_equal(after.total, before.total);

    /* let go: grown off line, mounted again */
    close(release);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_ok(semail_storage_resize(f->st, "max", 32 * MiB));
    assert_int_equal(size_of(img), 32 * MiB);
    assert_true(is_mounted_at(point));
    assert_int_equal(loops_backing(img), 1);
    assert_int_equal(stat(file, &st), 0);
    assert_ok(semail_storage_usage_get(&after, f->st, "max"));
    assert_true(after.total > before.total + 14 * MiB);
    assert_ok(semail_storage_destroy(f->st, "max"));
}

/* ---- the LVM backend ---------------------------------------------------------- */

static void test_storage__lvm_needs_device_mapper(void **state)
{
    int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        fprintf(stderr,
                "[  SKIP    ] lvm backend: no device-mapper here (/dev/mapper/control: %s)\n",
                strerror(errno));
        skip();
    }
    close(fd);
    fprintf(stderr, "[  SKIP    ] lvm backend: device-mapper present, but no test volume "
                    "group is set up by this test yet\n");
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_storage__rejects_unknown_backend_and_relative_root),
        cmocka_unit_test(test_storage__new_from_config_reads_storage_section),
        cmocka_unit_test(test_storage__mountinfo_parses_octal_escapes_and_optional_fields),
        cmocka_unit_test(test_storage__mountinfo_find_takes_the_topmost_mount),
        cmocka_unit_test(test_storage__run_reports_missing_tool_and_failure_output),
        cmocka_unit_test_setup_teardown(test_storage__bad_login_is_refused_before_any_path,
                                        setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_storage__bad_login_message_quotes_the_reason,
                                        setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_storage__dir_create_makes_owned_private_dir, setup_dir,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_storage__dir_with_daemon_user_is_2770_with_default_acl,
                                        setup_dir_daemon, teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__dir_usage_counts_files_and_destroy_removes_all, setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_storage__dir_refuses_symlink_and_destroy_never_follows,
                                        setup_dir, teardown),
        cmocka_unit_test_setup_teardown(test_storage__image_full_life_cycle, setup_image, teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__image_create_resumes_and_refuses_nonempty_point, setup_image, teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__image_taken_mount_point_is_refused_and_nothing_made, setup_image,
            teardown),
        cmocka_unit_test_setup_teardown(test_storage__image_symlink_mount_point_is_refused,
                                        setup_image, teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__image_no_free_loop_device_is_temporary_and_rolled_back, setup_image,
            teardown),
        cmocka_unit_test_setup_teardown(test_storage__image_without_mkfs_fails_cleanly,
                                        setup_image_no_tools, teardown),
        cmocka_unit_test_setup_teardown(test_storage__image_size_below_minimum_is_refused,
                                        setup_image, teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__image_failed_grow_keeps_the_old_size_and_the_mount, setup_image_no_tools,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_storage__image_held_elsewhere_is_not_grown_until_let_go, setup_image_no_tools,
            teardown),
        cmocka_unit_test(test_storage__lvm_needs_device_mapper),
    };
    atexit(atexit_cleanup);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
