/*
 * privileges.c - semail_privileges_drop(): become an unprivileged user
 * after binding the privileged ports.
 *
 * Contract: as root, switch the whole process (glibc applies set*id to
 * every thread) to the user's supplementary groups, gid and uid, in that
 * order, and prove it by checking that root cannot be regained. Not root:
 * nothing to drop when already running as that user, otherwise EPERM (a
 * daemon must not silently keep an identity the administrator did not ask
 * for). NULL or "" means stay as we are.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "semail/server.h"

#define PW_BUF_DEFAULT 16384

static int lookup_user(const char *user, uid_t *uid, gid_t *gid)
{
    struct passwd pw, *res = NULL;
    long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t len = sz > 0 ? (size_t)sz : PW_BUF_DEFAULT;
    char *buf = malloc(len);
    int r;

    if (buf == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    r = getpwnam_r(user, &pw, buf, len, &res);
    if (res != NULL) {
        *uid = pw.pw_uid;
        *gid = pw.pw_gid;
    }
    free(buf);
    if (r != 0)
        return semail__errno(SEMAIL_EIO, r, "cannot look up user '%s'", user);
    if (res == NULL)
        return semail__err(SEMAIL_ENOTFOUND, "no such user: '%s'", user);
    return 0;
}

int semail_privileges_drop(const char *user)
{
    uid_t uid = (uid_t)-1;
    gid_t gid = (gid_t)-1;
    int err;

    if (user == NULL || user[0] == '\0')
        return 0;
    if ((err = lookup_user(user, &uid, &gid)) < 0)
        return err;
    if (geteuid() != 0) {
        if (geteuid() == uid && getuid() == uid)
            return 0;
        return semail__err(SEMAIL_EPERM, "cannot switch to user '%s': not running as root", user);
    }
    if (initgroups(user, gid) < 0)
        return semail__errno(SEMAIL_EPERM, errno, "initgroups(%s)", user);
    if (setgid(gid) < 0)
        return semail__errno(SEMAIL_EPERM, errno, "setgid(%lu)", (unsigned long)gid);
    if (setuid(uid) < 0)
        return semail__errno(SEMAIL_EPERM, errno, "setuid(%lu)", (unsigned long)uid);
    if (uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
        return semail__err(SEMAIL_EPERM, "user '%s': root privileges could be regained", user);
    return 0;
}
