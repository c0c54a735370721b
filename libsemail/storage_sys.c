/*
 * storage_sys.c - the system work the file-system backends share: tools run
 * by argument vector (never a shell), the mount table, mount points, mount
 * and unmount, ext4 creation and growth, removal of a tree.
 *
 * Contract: tools are looked up only in the configured directories and run
 * with a fixed environment, stdin from /dev/null, no inherited descriptor;
 * a failure's message names the step and carries the tool's last output
 * line. A box's mount point is reached through mail_root's descriptor with
 * O_NOFOLLOW, and mounting goes through the opened descriptor, so a symbolic
 * link swapped in is never followed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage_internal.h"

#define TOOL_OUTPUT_MAX 2048
#define RM_DEPTH_MAX    256
#define UMOUNT_MAX      16
#define EXT4_MAGIC      0xEF53

/* ---- running tools ---------------------------------------------------- */

static int find_tool(char *out, size_t n, const char *tool_path, const char *name)
{
    const char *p = tool_path ? tool_path : SEMAIL_STORAGE_TOOL_PATH;

    while (*p) {
        size_t len = strcspn(p, ":");
        if (len > 0 && p[0] == '/' && semail__fmt(out, n, "%.*s/%s", (int)len, p, name) == 0 &&
            access(out, X_OK) == 0)
            return 0;
        p += len + (p[len] == ':');
    }
    return semail__err(SEMAIL_ENOTFOUND, "%s: not found in %s (install e2fsprogs / lvm2?)", name,
                       tool_path ? tool_path : SEMAIL_STORAGE_TOOL_PATH);
}

/* Read the tool's output (bounded: the rest is drained) into BUF. */
static void read_output(int fd, char *buf, size_t n)
{
    size_t len = 0;
    char sink[512];

    for (;;) {
        ssize_t r = len + 1 < n ? read(fd, buf + len, n - 1 - len) : read(fd, sink, sizeof(sink));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (len + 1 < n)
            len += (size_t)r;
    }
    buf[len] = '\0';
}

/* The last non-empty line of S, control bytes made spaces, for a message. */
static const char *last_line(char *s)
{
    size_t n = strlen(s);
    char *start;

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
    start = strrchr(s, '\n');
    start = start ? start + 1 : s;
    for (char *c = start; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
            *c = ' ';
    return *start ? start : "(no output)";
}

static int spawn(pid_t *pid, const char *exe, const char *const argv[], int out_fd)
{
    static const char *const envp[] = {"PATH=" SEMAIL_STORAGE_TOOL_PATH, "LC_ALL=C", NULL};
    posix_spawn_file_actions_t fa;
    int err;

    if ((err = posix_spawn_file_actions_init(&fa)) != 0)
        return err;
    if ((err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) == 0 &&
        (err = posix_spawn_file_actions_adddup2(&fa, out_fd, 1)) == 0 &&
        (err = posix_spawn_file_actions_adddup2(&fa, out_fd, 2)) == 0 &&
        (err = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) == 0)
        err = posix_spawn(pid, exe, &fa, NULL, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

int semail__storage_run(const char *tool_path, const char *const argv[], int *exit_status)
{
    char exe[PATH_MAX], out[TOOL_OUTPUT_MAX];
    int p[2], err, status;
    pid_t pid;

    if ((err = find_tool(exe, sizeof(exe), tool_path, argv[0])) < 0)
        return err;
    if (pipe2(p, O_CLOEXEC) < 0)
        return semail__errno(SEMAIL_EIO, errno, "%s: pipe", argv[0]);
    err = spawn(&pid, exe, argv, p[1]);
    close(p[1]);
    if (err != 0) {
        close(p[0]);
        return semail__errno(SEMAIL_EIO, err, "%s: cannot run", exe);
    }
    read_output(p[0], out, sizeof(out));
    close(p[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return semail__errno(SEMAIL_EIO, errno, "%s: waitpid", argv[0]);
    if (WIFEXITED(status) && exit_status) {
        *exit_status = WEXITSTATUS(status);
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        return semail__err(SEMAIL_EIO, "%s failed (exit %d): %s", argv[0], WEXITSTATUS(status),
                           last_line(out));
    return semail__err(SEMAIL_EIO, "%s killed by signal %d", argv[0],
                       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* ---- ext4 --------------------------------------------------------------- */

int semail__storage_mkfs(const char *tool_path, const char *target, uid_t uid, gid_t gid)
{
    char ext[64];
    /* -m 0: no blocks kept for root, the size is the person's. The journal
     * stays: a crash during an append must not cost the file system. */
    const char *argv[] = {"mkfs.ext4", "-q", "-F", "-m", "0", "-E", ext, target, NULL};

    if (semail__fmt(ext, sizeof(ext), "root_owner=%lu:%lu", (unsigned long)uid,
                    (unsigned long)gid) < 0)
        return SEMAIL_EINVAL;
    return semail__storage_run(tool_path, argv, NULL);
}

int semail__storage_grow_fs(const char *tool_path, const char *target, int offline)
{
    /* resize2fs refuses an unmounted file system that was not just checked. */
    const char *fsck[] = {"e2fsck", "-f", "-p", target, NULL};
    const char *grow[] = {"resize2fs", target, NULL};
    int err, status;

    /* e2fsck: 0 clean, 1 errors corrected; anything else needs a human. */
    if (offline && (err = semail__storage_run(tool_path, fsck, &status)) < 0)
        return err;
    if (offline && status > 1)
        return semail__err(SEMAIL_EIO, "e2fsck -f -p %s: exit %d: the file system needs repair",
                           target, status);
    return semail__storage_run(tool_path, grow, NULL);
}

int semail__storage_has_ext4(int fd)
{
    unsigned char m[2];

    if (pread(fd, m, sizeof(m), 1024 + 56) != (ssize_t)sizeof(m))
        return 0;
    return (m[0] | (m[1] << 8)) == EXT4_MAGIC;
}

/* ---- the mount table ------------------------------------------------------ */

/* Undo the kernel's octal escapes (\040 space, \011 tab, \012 LF, \134 backslash). */
static int unescape(char *dst, size_t n, const char *src)
{
    size_t o = 0;

    for (; *src; src++) {
        char c = *src;
        if (c == '\\' && src[1] >= '0' && src[1] <= '3' && src[2] >= '0' && src[2] <= '7' &&
            src[3] >= '0' && src[3] <= '7') {
            c = (char)(((src[1] - '0') << 6) | ((src[2] - '0') << 3) | (src[3] - '0'));
            src += 3;
        }
        if (o + 1 >= n)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return 0;
}

/* Split LINE on spaces; -1 when it is not "ID PARENT MAJ:MIN ROOT POINT OPTS [OPT...] - TYPE SOURCE
 * ...". */
static int parse_fields(char *line, semail__mount *out)
{
    char *f[64], *save = NULL, *tok;
    unsigned maj, min;
    int n = 0, sep;

    for (tok = strtok_r(line, " \n", &save); tok && n < 64; tok = strtok_r(NULL, " \n", &save))
        f[n++] = tok;
    for (sep = 6; sep < n && strcmp(f[sep], "-") != 0; sep++)
        ;
    if (sep + 2 >= n || sscanf(f[2], "%u:%u", &maj, &min) != 2)
        return -1;
    out->dev = makedev(maj, min);
    if (unescape(out->point, sizeof(out->point), f[4]) < 0 ||
        unescape(out->fstype, sizeof(out->fstype), f[sep + 1]) < 0 ||
        unescape(out->source, sizeof(out->source), f[sep + 2]) < 0)
        return -1;
    return 0;
}

int semail__mountinfo_parse(char *line, semail__mount *out)
{
    if (parse_fields(line, out) < 0)
        return semail__err(SEMAIL_EINVAL, "mountinfo: malformed line");
    return 0;
}

int semail__mountinfo_find(const char *file, const char *path, semail__mount *out)
{
    FILE *fp = fopen(file ? file : "/proc/self/mountinfo", "re");
    semail__mount *m = malloc(sizeof(*m));
    char *line = NULL;
    size_t cap = 0;
    int found = 0;

    if (fp == NULL || m == NULL) {
        found = m ? semail__errno(SEMAIL_EIO, errno, "open mountinfo")
                  : semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    /* Later lines are mounted on top of earlier ones: the last match wins. */
    while (getline(&line, &cap, fp) > 0) {
        if (parse_fields(line, m) < 0 || strcmp(m->point, path) != 0)
            continue;
        found = 1;
        if (out)
            *out = *m;
    }
done:
    if (fp)
        fclose(fp);
    free(line);
    free(m);
    return found;
}

/* ---- mount points ------------------------------------------------------- */

static int dir_is_empty(int fd)
{
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0), empty = 1;
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    struct dirent *e;

    if (d == NULL) {
        if (dup_fd >= 0)
            close(dup_fd);
        return -1;
    }
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    return empty;
}

static int check_point(const semail_storage_box *box, int make)
{
    struct stat st;

    if (fstatat(box->mail_root_fd, box->login, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT)
            return semail__errno(semail__errno_code(errno), errno, "stat %s", box->path);
        if (!make)
            return semail__err(SEMAIL_ENOTFOUND, "%s: no mount point", box->path);
        if (mkdirat(box->mail_root_fd, box->login, 0) < 0 && errno != EEXIST)
            return semail__errno(semail__errno_code(errno), errno, "mkdir %s", box->path);
        if (fsync(box->mail_root_fd) < 0 && errno != EINVAL)
            return semail__errno(SEMAIL_EIO, errno, "fsync %s", box->mail_root);
        return 0;
    }
    if (S_ISLNK(st.st_mode))
        return semail__err(SEMAIL_EEXISTS, "%s is a symbolic link: refused", box->path);
    if (!S_ISDIR(st.st_mode))
        return semail__err(SEMAIL_EEXISTS, "%s exists and is not a directory", box->path);
    return 0;
}

int semail__storage_mountpoint(const semail_storage_box *box, int make, semail__mount *mnt)
{
    int err, fd, empty;

    if ((err = check_point(box, make)) < 0)
        return err;
    if ((err = semail__mountinfo_find(NULL, box->path, mnt)) != 0)
        return err;
    fd = openat(box->mail_root_fd, box->login, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", box->path);
    empty = dir_is_empty(fd);
    close(fd);
    if (empty < 0)
        return semail__errno(SEMAIL_EIO, errno, "read %s", box->path);
    if (!empty)
        return semail__err(SEMAIL_EEXISTS,
                           "%s is not mounted and holds files that a mount would hide "
                           "(mail delivered while it was unmounted?): move them away first",
                           box->path);
    return 0;
}

int semail__storage_mount_ext4(const semail_storage_box *box, const char *device)
{
    char target[64];
    int fd, err = 0;

    /* Mount on the opened directory: a link swapped in after the check is not followed. */
    fd = openat(box->mail_root_fd, box->login, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", box->path);
    if (semail__fmt(target, sizeof(target), "/proc/self/fd/%d", fd) < 0 ||
        mount(device, target, "ext4", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "mount %s on %s", device, box->path);
    close(fd);
    return err;
}

int semail__storage_umount(const semail_storage_box *box)
{
    int i, found;

    for (i = 0; i < UMOUNT_MAX; i++) {
        if ((found = semail__mountinfo_find(NULL, box->path, NULL)) <= 0)
            return found;
        if (umount2(box->path, UMOUNT_NOFOLLOW) < 0 && errno != EINVAL) {
            if (errno == EBUSY)
                return semail__err(SEMAIL_ETEMP,
                                   "unmount %s: busy (a process or a container still uses it)",
                                   box->path);
            return semail__errno(semail__errno_code(errno), errno, "unmount %s", box->path);
        }
    }
    return semail__err(SEMAIL_EIO, "unmount %s: still mounted after %d unmounts", box->path,
                       UMOUNT_MAX);
}

int semail__storage_rmdir(const semail_storage_box *box)
{
    if (unlinkat(box->mail_root_fd, box->login, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return semail__errno(semail__errno_code(errno), errno, "rmdir %s", box->path);
    if (fsync(box->mail_root_fd) < 0 && errno != EINVAL)
        return semail__errno(SEMAIL_EIO, errno, "fsync %s", box->mail_root);
    return 0;
}

int semail__storage_statvfs(const semail_storage_box *box, semail_storage_usage *out)
{
    struct statvfs sv;
    int fd = openat(box->mail_root_fd, box->login, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", box->path);
    if (fstatvfs(fd, &sv) < 0) {
        close(fd);
        return semail__errno(SEMAIL_EIO, errno, "statvfs %s", box->path);
    }
    close(fd);
    out->total = (uint64_t)sv.f_blocks * sv.f_frsize;
    out->used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    return 0;
}

/* ---- removing a tree ---------------------------------------------------- */

static int rm_entries(DIR *d, int fd, int depth, dev_t dev);

/* Remove DIRFD/NAME, staying on device DEV: another file system mounted below is never entered. */
static int rm_at(int dirfd, const char *name, int depth, dev_t dev)
{
    int fd, err = 0, pass;
    struct stat st;
    DIR *d;

    if (depth > RM_DEPTH_MAX) {
        errno = ELOOP;
        return -1;
    }
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno == ENOTDIR || errno == ELOOP)
            return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (depth > 0 && st.st_dev != dev) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    if ((d = fdopendir(fd)) == NULL) {
        close(fd);
        return -1;
    }
    /* A writer may add entries while we remove: a few passes, then give up. */
    for (pass = 0; pass < 3 && err == 0; pass++) {
        if ((err = rm_entries(d, fd, depth, st.st_dev)) == 0 &&
            unlinkat(dirfd, name, AT_REMOVEDIR) == 0)
            break;
        if (err == 0 && errno != ENOTEMPTY)
            err = errno == ENOENT ? 0 : -1;
    }
    closedir(d);
    return err;
}

static int rm_entries(DIR *d, int fd, int depth, dev_t dev)
{
    struct dirent *e;
    struct stat st;

    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                return -1;
        } else if (S_ISDIR(st.st_mode)) {
            if (rm_at(fd, e->d_name, depth + 1, dev) < 0)
                return -1;
        } else if (unlinkat(fd, e->d_name, 0) < 0 && errno != ENOENT) {
            return -1;
        }
    }
    return 0;
}

int semail__storage_rm_tree(int dirfd, const char *name)
{
    return rm_at(dirfd, name, 0, 0);
}
