/*
 * storage_internal.h - what the storage backends share and never export:
 * the built-in backends, running a tool by argument vector, the mount
 * table, mount points, ext4 file systems, and removing a tree.
 *
 * Contract: every function records its error (semail__err) and returns a
 * negative SEMAIL_E* code; none follows a symbolic link at a box's mount
 * point; none keeps state between calls.
 */
#ifndef SEMAIL_STORAGE_INTERNAL_H
#define SEMAIL_STORAGE_INTERNAL_H

#include <sys/types.h>

#include "internal.h"
#include "semail/storage.h"
#include "semail/sys/storage.h"

/* The built-in backends (storage_dir.c, storage_image.c, storage_lvm.c). */
SEMAIL_HIDDEN extern const semail_storage_backend semail__storage_dir;
SEMAIL_HIDDEN extern const semail_storage_backend semail__storage_image;
SEMAIL_HIDDEN extern const semail_storage_backend semail__storage_lvm;

/* The backend state of a handle (tests reach into a backend with it). */
SEMAIL_HIDDEN void *semail__storage_state(semail_storage *st);

/*
 * Run ARGV[0], looked up in the colon-separated TOOL_PATH, with ARGV, a
 * minimal environment, stdin from /dev/null and no descriptor but the
 * output pipe. Exit 0: 0. Missing tool: SEMAIL_ENOTFOUND. Otherwise
 * SEMAIL_EIO with the tool's last output line in the message - unless
 * EXIT_STATUS is given: then any exit is 0 with its status stored there.
 */
SEMAIL_HIDDEN int semail__storage_run(const char *tool_path, const char *const argv[],
                                      int *exit_status);

/* mkfs.ext4 on TARGET (a file or a block device), root owned by UID:GID. */
SEMAIL_HIDDEN int semail__storage_mkfs(const char *tool_path, const char *target, uid_t uid,
                                       gid_t gid);
/* Grow the ext4 file system on TARGET to fill it (resize2fs; e2fsck -f first when OFFLINE). */
SEMAIL_HIDDEN int semail__storage_grow_fs(const char *tool_path, const char *target, int offline);
/* 1 when FD holds an ext4/ext2 superblock (magic 0xEF53 at byte 1080), 0 when not. */
SEMAIL_HIDDEN int semail__storage_has_ext4(int fd);

/* One line of /proc/self/mountinfo, decoded (octal escapes undone). */
typedef struct semail__mount {
    dev_t dev;         /* major:minor of the mounted file system */
    char point[4096];  /* mount point */
    char fstype[64];   /* file system type */
    char source[4096]; /* mount source ("/dev/loop3") */
} semail__mount;

/* Parse LINE (modified in place). 0, or SEMAIL_EINVAL for a malformed line. */
SEMAIL_HIDDEN int semail__mountinfo_parse(char *line, semail__mount *out);
/*
 * Find the topmost mount at PATH in FILE (NULL: /proc/self/mountinfo).
 * 1 and OUT filled (OUT may be NULL), 0 when nothing is mounted there.
 */
SEMAIL_HIDDEN int semail__mountinfo_find(const char *file, const char *path, semail__mount *out);

/*
 * The mount point BOX->path: made (mode 0000, so that no unprivileged
 * daemon writes into it while it is unmounted) when missing and MAKE is
 * set. A symbolic link or a non-directory is refused (SEMAIL_EEXISTS).
 * Returns 1 and *MNT filled when something is mounted there; 0 when not
 * (then it must be empty: files in it give SEMAIL_EEXISTS); SEMAIL_ENOTFOUND
 * when missing and not MAKE.
 */
SEMAIL_HIDDEN int semail__storage_mountpoint(const semail_storage_box *box, int make,
                                             semail__mount *mnt);
/* Mount the ext4 DEVICE at BOX->path, nosuid, nodev, noexec, without following links. */
SEMAIL_HIDDEN int semail__storage_mount_ext4(const semail_storage_box *box, const char *device);
/* Unmount everything stacked at BOX->path; nothing mounted: 0; busy: SEMAIL_ETEMP. */
SEMAIL_HIDDEN int semail__storage_umount(const semail_storage_box *box);
/* Remove the (empty, unmounted) mount point; missing: 0. */
SEMAIL_HIDDEN int semail__storage_rmdir(const semail_storage_box *box);
/* used/total of the file system mounted at BOX->path. */
SEMAIL_HIDDEN int semail__storage_statvfs(const semail_storage_box *box, semail_storage_usage *out);

/* Remove DIRFD/NAME and everything below it, never following a link; missing: 0. errno set on -1.
 */
SEMAIL_HIDDEN int semail__storage_rm_tree(int dirfd, const char *name);

/* Test seam of the image backend: replaces LOOP_CTL_GET_FREE (returns a loop number or -errno). */
typedef int (*semail__loop_get_free_fn)(int control_fd);
SEMAIL_HIDDEN void semail__storage_image_set_get_free(void *image_state,
                                                      semail__loop_get_free_fn fn);

#endif
