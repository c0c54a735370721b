/*
 * storage.c - semail_storage_*: options, the choice of backend, and the
 * dispatch that every backend shares.
 *
 * Contract: before a backend runs, the login has passed
 * semail_validate_name() and mail_root is open as an O_DIRECTORY descriptor
 * (symbolic links in mail_root itself are resolved once, for the mount
 * table; the login component is never followed). After a create, the root
 * of the box gets the ownership model of docs/decisions.md, "Who owns the
 * mail": owned by the box's uid; when the daemons drop to [global] user,
 * group = that user's group, mode 2770 and a default ACL giving the uid rw
 * on every new file; when they stay root, mode 0700 and the box's gid. A
 * create on a box that was absent before it is rolled back on failure; a
 * resumed create never is (it may hold mail).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "semail/registry.h"
#include "storage_internal.h"

#define DEFAULT_SIZE (1024ull * 1024 * 1024)
#define PW_BUF_SIZE  16384

struct semail_storage {
    const semail_storage_backend *backend;
    void *state;
    char *mail_root;
    char *mail_user; /* NULL: the daemons stay root */
    uint64_t default_size;
};

static const semail_storage_backend *const builtin[] = {&semail__storage_image,
                                                        &semail__storage_lvm, &semail__storage_dir};

int semail_storage_options_init(semail_storage_options *opts)
{
    semail_storage_options d = SEMAIL_STORAGE_OPTIONS_INIT;

    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "no options");
    *opts = d;
    return 0;
}

static int check_backend(const semail_storage_backend *b)
{
    if (b == NULL || b->version != SEMAIL_STORAGE_BACKEND_VERSION || b->name == NULL || !b->open ||
        !b->close || !b->create || !b->mount || !b->unmount || !b->destroy || !b->resize ||
        !b->usage || !b->status)
        return semail__err(SEMAIL_EINVAL, "storage backend: version %u unknown or member missing",
                           b ? b->version : 0);
    return 0;
}

int semail_storage_new_backend(semail_storage **out, const semail_storage_backend *backend,
                               const semail_storage_options *opts)
{
    semail_storage *st;
    int err;

    if (out == NULL || opts == NULL || opts->version != SEMAIL_STORAGE_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "storage options: missing or unknown version");
    if ((err = check_backend(backend)) < 0)
        return err;
    if (opts->mail_root == NULL || opts->mail_root[0] != '/')
        return semail__err(SEMAIL_EINVAL, "storage: mail_root must be an absolute path");
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    st->backend = backend;
    st->default_size = opts->default_size ? opts->default_size : DEFAULT_SIZE;
    if ((st->mail_root = semail__strdup(opts->mail_root)) == NULL ||
        (opts->mail_user && *opts->mail_user &&
         (st->mail_user = semail__strdup(opts->mail_user)) == NULL)) {
        err = SEMAIL_ENOMEM;
        goto fail;
    }
    if ((err = backend->open(&st->state, opts)) < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    free(st->mail_root);
    free(st->mail_user);
    free(st);
    return err;
}

int semail_storage_new(semail_storage **out, const semail_storage_options *opts)
{
    const char *name = opts && opts->backend ? opts->backend : "image";
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(builtin); i++)
        if (strcmp(builtin[i]->name, name) == 0)
            return semail_storage_new_backend(out, builtin[i], opts);
    return semail__err(SEMAIL_EINVAL, "storage backend '%s': expected image, lvm or directory",
                       name);
}

int semail_storage_new_from_config(semail_storage **out, const semail_config *cfg)
{
    semail_storage_options o = SEMAIL_STORAGE_OPTIONS_INIT;
    int err;

    if (cfg == NULL)
        return semail__err(SEMAIL_EINVAL, "no configuration");
    o.backend = semail_config_get(cfg, "storage", "backend");
    o.image_dir = semail_config_get(cfg, "storage", "image_dir");
    o.lvm_vg = semail_config_get(cfg, "storage", "lvm_vg");
    o.mail_root = semail_config_get(cfg, "global", "mail_root");
    o.mail_user = semail_config_get(cfg, "global", "user");
    if ((err = semail_config_get_size(cfg, "storage", "default_size", &o.default_size)) < 0)
        return err;
    return semail_storage_new(out, &o);
}

void semail_storage_free(semail_storage *st)
{
    if (st == NULL)
        return;
    st->backend->close(st->state);
    free(st->mail_root);
    free(st->mail_user);
    free(st);
}

const char *semail_storage_backend_name(const semail_storage *st)
{
    return st ? st->backend->name : "";
}

void *semail__storage_state(semail_storage *st)
{
    return st->state;
}

const char *semail_storage_state_name(semail_storage_state state)
{
    switch (state) {
    case SEMAIL_STORAGE_ABSENT:
        return "absent";
    case SEMAIL_STORAGE_INCOMPLETE:
        return "incomplete";
    case SEMAIL_STORAGE_UNMOUNTED:
        return "unmounted";
    case SEMAIL_STORAGE_MOUNTED:
        return "mounted";
    }
    return "unknown";
}

/* ---- the box a call is about --------------------------------------------- */

struct box {
    semail_storage_box pub;
    char root[PATH_MAX];
    char path[PATH_MAX];
};

static int box_open(struct box *b, const semail_storage *st, const char *login)
{
    int err;

    memset(b, 0, sizeof(*b));
    b->pub.mail_root_fd = -1;
    b->pub.uid = (uid_t)-1;
    b->pub.gid = (gid_t)-1;
    if (st == NULL)
        return semail__err(SEMAIL_EINVAL, "no storage handle");
    if ((err = semail_validate_name(login)) < 0) {
        char why[512]; /* a copy: the message is about to be overwritten */
        (void)semail__strlcpy(why, semail_error_last(), sizeof(why));
        return semail__err(err, "login %s", why);
    }
    if (realpath(st->mail_root, b->root) == NULL)
        return semail__errno(semail__errno_code(errno), errno, "mail_root %s", st->mail_root);
    if (semail__fmt(b->path, sizeof(b->path), "%s/%s", strcmp(b->root, "/") ? b->root : "", login) <
        0)
        return semail__err(SEMAIL_ETOOBIG, "mail_root %s: path too long", b->root);
    b->pub.mail_root_fd = open(b->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b->pub.mail_root_fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open mail_root %s", b->root);
    b->pub.login = login;
    b->pub.mail_root = b->root;
    b->pub.path = b->path;
    return 0;
}

static void box_close(struct box *b)
{
    if (b->pub.mail_root_fd >= 0)
        close(b->pub.mail_root_fd);
    b->pub.mail_root_fd = -1;
}

/* ---- ownership of the box's root ----------------------------------------- */

/* The group of the daemons' user, or (gid_t)-1 when they stay root or it does not exist here. */
static gid_t daemon_gid(const semail_storage *st)
{
    struct passwd pw, *res = NULL;
    char *buf;
    gid_t gid = (gid_t)-1;

    if (st->mail_user == NULL || (buf = malloc(PW_BUF_SIZE)) == NULL)
        return gid;
    if (getpwnam_r(st->mail_user, &pw, buf, PW_BUF_SIZE, &res) == 0 && res != NULL)
        gid = pw.pw_gid;
    free(buf);
    return gid;
}

/* One entry of the Linux POSIX ACL xattr (little-endian, as the kernel wants). */
static void acl_entry(unsigned char *p, unsigned tag, unsigned perm, uint32_t id)
{
    p[0] = (unsigned char)tag;
    p[1] = (unsigned char)(tag >> 8);
    p[2] = (unsigned char)perm;
    p[3] = (unsigned char)(perm >> 8);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (unsigned char)(id >> (8 * i));
}

/* The default ACL: the box's uid gets rw on every file the daemon creates in the box. */
static int set_default_acl(int fd, uid_t uid)
{
    enum { USER_OBJ = 0x01, USER = 0x02, GROUP_OBJ = 0x04, MASK = 0x10, OTHER = 0x20 };
    const uint32_t undef = 0xffffffffu;
    unsigned char acl[4 + 5 * 8] = {2, 0, 0, 0}; /* POSIX_ACL_XATTR_VERSION */

    acl_entry(acl + 4, USER_OBJ, 7, undef);
    acl_entry(acl + 12, USER, 7, (uint32_t)uid);
    acl_entry(acl + 20, GROUP_OBJ, 7, undef);
    acl_entry(acl + 28, MASK, 7, undef);
    acl_entry(acl + 36, OTHER, 0, undef);
    return fsetxattr(fd, "system.posix_acl_default", acl, sizeof(acl), 0);
}

static int apply_ownership(const semail_storage *st, const semail_storage_box *box)
{
    gid_t dgid = daemon_gid(st);
    mode_t mode = dgid == (gid_t)-1 ? 0700 : 02770;
    int fd, err = 0;

    fd = openat(box->mail_root_fd, box->login, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", box->path);
    if (geteuid() == 0 && fchown(fd, box->uid, dgid == (gid_t)-1 ? box->gid : dgid) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "chown %s", box->path);
    else if (fchmod(fd, mode) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "chmod %s", box->path);
    else if (dgid != (gid_t)-1 && set_default_acl(fd, box->uid) < 0 && errno != ENOTSUP)
        err = semail__errno(semail__errno_code(errno), errno, "default ACL on %s", box->path);
    else if (fsync(fd) < 0 && errno != EINVAL)
        err = semail__errno(SEMAIL_EIO, errno, "fsync %s", box->path);
    close(fd);
    if (err == 0 && fsync(box->mail_root_fd) < 0 && errno != EINVAL)
        err = semail__errno(SEMAIL_EIO, errno, "fsync %s", box->mail_root);
    return err;
}

/* ---- operations --------------------------------------------------------- */

static int check_size(const semail_storage *st, uint64_t size)
{
    if (strcmp(st->backend->name, "directory") == 0 || size >= SEMAIL_STORAGE_MIN_SIZE)
        return 0;
    return semail__err(SEMAIL_EINVAL, "size %llu bytes: at least %u bytes (8M) are needed",
                       (unsigned long long)size, (unsigned)SEMAIL_STORAGE_MIN_SIZE);
}

int semail_storage_create(semail_storage *st, const char *login, uid_t uid, gid_t gid,
                          uint64_t size)
{
    semail_storage_state before = SEMAIL_STORAGE_ABSENT;
    struct box b;
    int err;

    if ((err = box_open(&b, st, login)) < 0)
        goto done;
    b.pub.uid = uid;
    b.pub.gid = gid;
    if (uid == (uid_t)-1 || gid == (gid_t)-1) {
        err = semail__err(SEMAIL_EINVAL, "create %s: no uid or gid", login);
        goto done;
    }
    if (size == 0)
        size = st->default_size;
    if ((err = check_size(st, size)) < 0 ||
        (err = st->backend->status(st->state, &b.pub, &before)) < 0)
        goto done;
    if ((err = st->backend->create(st->state, &b.pub, size)) < 0 ||
        (err = apply_ownership(st, &b.pub)) < 0) {
        if (before == SEMAIL_STORAGE_ABSENT) {
            /* Keep the first failure's message: that is what the caller must see. */
            char msg[512];
            (void)semail__strlcpy(msg, semail_error_last(), sizeof(msg));
            (void)st->backend->destroy(st->state, &b.pub);
            semail__err(err, "%s", msg);
        }
    }
done:
    box_close(&b);
    return err;
}

int semail_storage_mount(semail_storage *st, const char *login)
{
    struct box b;
    int err;

    if ((err = box_open(&b, st, login)) == 0)
        err = st->backend->mount(st->state, &b.pub);
    box_close(&b);
    return err;
}

int semail_storage_unmount(semail_storage *st, const char *login)
{
    struct box b;
    int err;

    if ((err = box_open(&b, st, login)) == 0)
        err = st->backend->unmount(st->state, &b.pub);
    box_close(&b);
    return err;
}

int semail_storage_destroy(semail_storage *st, const char *login)
{
    struct box b;
    int err;

    /* A missing mail_root holds no box: nothing to destroy. */
    if ((err = box_open(&b, st, login)) == 0)
        err = st->backend->destroy(st->state, &b.pub);
    else if (err == SEMAIL_ENOTFOUND && semail_validate_name(login) == 0)
        err = 0;
    box_close(&b);
    return err;
}

int semail_storage_resize(semail_storage *st, const char *login, uint64_t size)
{
    struct box b;
    int err;

    if ((err = box_open(&b, st, login)) == 0 && (err = check_size(st, size)) == 0)
        err = st->backend->resize(st->state, &b.pub, size);
    box_close(&b);
    return err;
}

int semail_storage_usage_get(semail_storage_usage *out, semail_storage *st, const char *login)
{
    struct box b;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "no output");
    memset(out, 0, sizeof(*out));
    if ((err = box_open(&b, st, login)) == 0)
        err = st->backend->usage(st->state, &b.pub, out);
    box_close(&b);
    return err;
}

int semail_storage_status(semail_storage_state *out, semail_storage *st, const char *login)
{
    struct box b;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "no output");
    *out = SEMAIL_STORAGE_ABSENT;
    if ((err = box_open(&b, st, login)) == 0)
        err = st->backend->status(st->state, &b.pub, out);
    else if (err == SEMAIL_ENOTFOUND && semail_validate_name(login) == 0)
        err = 0; /* no mail_root: no box */
    box_close(&b);
    return err;
}
