/*
 * image_build.c - the user image: a minimal Debian with sshd and mail
 * readers, bootstrapped once, kept as a tar cache, and streamed into the
 * engine (POST /images/create?fromSrc=-, what `docker import` does).
 *
 * Contract: the bootstrap tool runs by argument vector (never a shell);
 * the tree is turned into the cache tar with libarchive, never crossing a
 * mount point; the upload is generated on demand from the cache (curl
 * pulls, one tar block at a time: nothing of image size is held in memory),
 * leaving out the package lists, downloaded packages and SSH host keys of
 * the build and adding the current entrypoint. A failed build leaves the
 * previous cache and image as they were.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "docker_api.h"
#include "storage_internal.h"

#define BOOTSTRAP_PATH "/usr/sbin:/usr/bin:/sbin:/bin"
#define PACKAGES       "openssh-server,mutt,neomutt,ca-certificates,apt,procps,less"
#define ENTRYPOINT     "/usr/local/sbin/semail-entrypoint"
#define IMPORT_MS      (10u * 60u * 1000u)
#define STREAM_MAX     (4u * 1024u * 1024u)
#define COPY_BLOCK     65536

/*
 * The entrypoint: make the person (USER, UID, GID set by container.c) with
 * a usable but password-less account ("*": sshd without PAM refuses a
 * locked "!" one), then sshd, key-only, keys and host key from the read-only
 * mounts. The home is given away once, chmod before chown: once it is the
 * person's, root without CAP_FOWNER may no longer change its mode (and a
 * restarted container must not try).
 */
static const char entrypoint[] =
    "#!/bin/sh\n"
    "# semail-entrypoint: make the person from USER, UID, GID and run sshd, keys only.\n"
    "set -eu\n"
    "case \"${USER:-}\" in\n"
    "'' | *[!a-z0-9._-]* | -*) echo 'semail-entrypoint: bad USER' >&2; exit 1 ;;\n"
    "esac\n"
    "case \"${UID:-}:${GID:-}\" in\n"
    "*[!0-9:]* | :* | *: | 0:* | *:0) echo 'semail-entrypoint: bad UID or GID' >&2; exit 1 ;;\n"
    "esac\n"
    "if ! getent group \"$GID\" >/dev/null; then\n"
    "    name=\"$USER\"\n"
    "    if getent group \"$name\" >/dev/null; then name=\"semail$GID\"; fi\n"
    "    groupadd -g \"$GID\" \"$name\"\n"
    "fi\n"
    "if getent passwd \"$USER\" >/dev/null; then\n"
    "    if [ \"$(id -u \"$USER\")\" != \"$UID\" ]; then\n"
    "        echo \"semail-entrypoint: $USER exists with another uid\" >&2; exit 1\n"
    "    fi\n"
    "else\n"
    "    useradd -M -N -o -d \"/home/$USER\" -s /bin/bash -u \"$UID\" -g \"$GID\" -p '*' "
    "\"$USER\"\n"
    "fi\n"
    "mkdir -p \"/home/$USER\" /run/sshd\n"
    "chmod 0755 /run/sshd\n"
    "if [ \"$(stat -c %u \"/home/$USER\")\" != \"$UID\" ]; then\n"
    "    chmod 0700 \"/home/$USER\"\n"
    "    chown \"$UID:$GID\" \"/home/$USER\"\n"
    "fi\n"
    "exec /usr/sbin/sshd -D -e \\\n"
    "    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \\\n"
    "    -o PermitRootLogin=no -o UsePAM=no -o \"AllowUsers=$USER\" \\\n"
    "    -o AuthorizedKeysFile=/etc/semail/authorized/authorized_keys \\\n"
    "    -o HostKey=/etc/semail/hostkeys/ssh_host_ed25519_key\n";

/* Login shells find the mail where it is mounted (mutt, neomutt read $MAIL). */
static const char profile[] = "# SEMail: the mail is in ~/mail (mboxrd).\n"
                              "MAIL=\"$HOME/mail/INBOX\"\n"
                              "export MAIL\n";

int semail_image_options_init(semail_image_options *opts)
{
    static const semail_image_options init = SEMAIL_IMAGE_OPTIONS_INIT;

    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "no options");
    *opts = init;
    return 0;
}

/* ---- the image in the engine ------------------------------------------------ */

/* GET /images/NAME/json: 1 and the image id in ID (may be NULL; "" unless 1), 0 when absent. */
static int image_inspect(semail_container_engine *e, const char *name, char *id, size_t n)
{
    semail__docker_resp r;
    char path[320];
    int err;

    if (id != NULL && n > 0)
        id[0] = '\0';
    semail__docker_resp_init(&r);
    if ((err = semail__fmt(path, sizeof(path), "/images/%s/json", name)) < 0 ||
        (err = semail__docker_request(e, "GET", path, NULL, &r)) < 0)
        goto done;
    if (r.status == 200)
        err = id ? semail__docker_parse_id(r.body.data, r.body.len, id, n) : 0;
    else if (r.status == 404)
        err = 0;
    else
        err = semail__docker_fail(&r, name);
    if (r.status == 200 && err == 0)
        err = 1;
done:
    semail__docker_resp_free(&r);
    return err;
}

int semail_image_exists(semail_container_engine *e)
{
    return image_inspect(e, e->image, NULL, 0);
}

/*
 * The image the name pointed at before an import is now nameless: remove
 * it, unless containers still use it (409: it goes with their re-creation,
 * or `docker image prune`). Best effort: the build has succeeded already.
 */
static void drop_old_image(semail_container_engine *e, const char *old_id)
{
    char new_id[96], path[160];
    semail__docker_resp r;

    if (old_id[0] == '\0' || image_inspect(e, e->image, new_id, sizeof(new_id)) != 1 ||
        strcmp(new_id, old_id) == 0 || semail__fmt(path, sizeof(path), "/images/%s", old_id) < 0)
        return;
    semail__docker_resp_init(&r);
    semail__docker_request(e, "DELETE", path, NULL, &r);
    semail__docker_resp_free(&r);
    semail_error_clear();
}

/* ---- the mirror ------------------------------------------------------------- */

/* A mirror URL: http(s) or file, no space or quote. */
static int check_mirror(const char *m)
{
    if ((strncmp(m, "http://", 7) != 0 && strncmp(m, "https://", 8) != 0 &&
         strncmp(m, "file:/", 6) != 0) ||
        strpbrk(m, " \t\"'\\") != NULL)
        return semail__err(SEMAIL_EINVAL, "mirror '%s': expected an http(s) or file URL", m);
    return 0;
}

/* The first URL of the first line starting with KEY in FILE (deb822 "URIs:" or "deb"). */
static int mirror_from(const char *file, const char *key, char *out, size_t n)
{
    char line[1024];
    FILE *f = fopen(file, "re");
    int found = 0;

    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof(line), f)) {
        char *p = line, *end;
        size_t k = strlen(key);
        if (strncmp(p, key, k) != 0 || (p[k] != ' ' && p[k] != '\t'))
            continue;
        p += k + strspn(p + k, " \t");
        if (*p == '[' && (p = strchr(p, ']')) != NULL)
            p += 1 + strspn(p + 1, " \t");
        if (p == NULL)
            continue;
        end = p + strcspn(p, " \t\r\n");
        *end = '\0';
        found = *p && semail__strlcpy(out, p, n) == 0;
    }
    fclose(f);
    return found;
}

static int find_mirror(char *out, size_t n, const char *given)
{
    if (given)
        return semail__strlcpy(out, given, n) < 0 ? semail__err(SEMAIL_EINVAL, "mirror too long")
                                                  : check_mirror(out);
    if (mirror_from("/etc/apt/sources.list.d/debian.sources", "URIs:", out, n) ||
        mirror_from("/etc/apt/sources.list", "deb", out, n))
        return check_mirror(out);
    return semail__err(SEMAIL_ENOTFOUND, "no Debian mirror in /etc/apt/sources.list.d/"
                                         "debian.sources or /etc/apt/sources.list");
}

/* ---- bootstrap into a tree, keep it as the tar cache ----------------------- */

/* A tool interrupted half-way may leave its mounts in the tree: drop them first. */
static void unmount_leftovers(const char *tree)
{
    static const char *const sub[] = {"proc", "sys", "dev/pts", "dev/shm", "dev"};
    char path[PATH_MAX];

    for (size_t i = 0; i < SEMAIL_ARRAY_LEN(sub); i++)
        if (semail__fmt(path, sizeof(path), "%s/%s", tree, sub[i]) == 0)
            umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW);
}

static int remove_tree(int work_fd, const char *work_dir, const char *name)
{
    char path[PATH_MAX];

    if (semail__fmt(path, sizeof(path), "%s/%s", work_dir, name) == 0)
        unmount_leftovers(path);
    if (semail__storage_rm_tree(work_fd, name) < 0)
        return semail__errno(SEMAIL_EIO, errno, "remove %s/%s", work_dir, name);
    return 0;
}

static int bootstrap(const char *tree, const char *suite, const char *mirror)
{
    static const char include[] = "--include=" PACKAGES;
    const char *tool = access("/usr/bin/mmdebstrap", X_OK) == 0 ? "mmdebstrap" : "debootstrap";
    const char *argv[] = {tool, "--variant=minbase", include, suite, tree, mirror, NULL};
    int err = semail__storage_run(BOOTSTRAP_PATH, argv, NULL);

    if (err == SEMAIL_ENOTFOUND)
        return semail__err(SEMAIL_ENOTFOUND, "neither mmdebstrap nor debootstrap is installed");
    return err;
}

/*
 * pax, with names written as the bytes they are: the tree has non-ASCII
 * file names, which the "C" locale cannot translate to UTF-8.
 */
static int tar_format(struct archive *a)
{
    if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
        archive_write_set_format_option(a, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK)
        return semail__err(SEMAIL_EIO, "tar: %s", archive_error_string(a));
    return 0;
}

/* Copy the data of the current entry of IN to OUT. */
static int copy_data(struct archive *in, struct archive *out, const char *what)
{
    char buf[COPY_BLOCK];
    la_ssize_t r;

    while ((r = archive_read_data(in, buf, sizeof(buf))) > 0)
        if (archive_write_data(out, buf, (size_t)r) != r)
            return semail__err(SEMAIL_EIO, "%s: %s", what, archive_error_string(out));
    if (r < 0)
        return semail__err(SEMAIL_EIO, "%s: %s", what, archive_error_string(in));
    return 0;
}

/* "/w/rootfs.tmp/etc/passwd" -> "./etc/passwd" (ROOT itself: "."). */
static int relative_name(struct archive_entry *entry, const char *root, size_t root_len)
{
    const char *p = archive_entry_pathname(entry);
    char rel[PATH_MAX];

    if (p == NULL || strncmp(p, root, root_len) != 0 || (p[root_len] != '/' && p[root_len]))
        return semail__err(SEMAIL_EIO, "tree walk left %s", root);
    if (semail__fmt(rel, sizeof(rel), ".%s", p + root_len) < 0)
        return semail__err(SEMAIL_EIO, "path too long under %s", root);
    archive_entry_copy_pathname(entry, rel);
    return 0;
}

static int skipped(const char *path);

/* Write every entry of the tree ROOT into OUT, staying on its file system. */
static int tree_to_tar(struct archive *out, const char *root)
{
    struct archive *disk = archive_read_disk_new();
    struct archive_entry *entry = archive_entry_new();
    size_t root_len = strlen(root);
    int err = 0, r;

    if (disk == NULL || entry == NULL) {
        err = semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    archive_read_disk_set_symlink_physical(disk);
    archive_read_disk_set_standard_lookup(disk);
    archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
    if (archive_read_disk_open(disk, root) != ARCHIVE_OK) {
        err = semail__err(SEMAIL_EIO, "%s: %s", root, archive_error_string(disk));
        goto done;
    }
    while ((r = archive_read_next_header2(disk, entry)) == ARCHIVE_OK) {
        archive_read_disk_descend(disk);
        if ((err = relative_name(entry, root, root_len)) < 0)
            goto done;
        if (skipped(archive_entry_pathname(entry)))
            continue;
        if (archive_write_header(out, entry) != ARCHIVE_OK) {
            err = semail__err(SEMAIL_EIO, "tar: %s", archive_error_string(out));
            goto done;
        }
        if (archive_entry_filetype(entry) == AE_IFREG && archive_entry_size(entry) > 0 &&
            (err = copy_data(disk, out, archive_entry_pathname(entry))) < 0)
            goto done;
    }
    if (r != ARCHIVE_EOF)
        err = semail__err(SEMAIL_EIO, "%s: %s", root, archive_error_string(disk));
done:
    archive_entry_free(entry);
    if (disk)
        archive_read_free(disk);
    return err;
}

/* Bootstrap into work_dir/rootfs-SUITE.tmp, tar it to rootfs-SUITE.tar (by rename). */
static int make_cache(int work_fd, const char *work_dir, const char *suite, const char *mirror,
                      const char *cache)
{
    char tree_name[64], tree[PATH_MAX], tmp[PATH_MAX];
    struct archive *out = NULL;
    int err;

    if (semail__fmt(tree_name, sizeof(tree_name), "rootfs-%s.tmp", suite) < 0 ||
        semail__fmt(tree, sizeof(tree), "%s/%s", work_dir, tree_name) < 0 ||
        semail__fmt(tmp, sizeof(tmp), "%s.part", cache) < 0)
        return semail__err(SEMAIL_EINVAL, "work_dir too long");
    if ((err = remove_tree(work_fd, work_dir, tree_name)) < 0 ||
        (err = bootstrap(tree, suite, mirror)) < 0)
        goto done;
    if ((out = archive_write_new()) == NULL) {
        err = semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    if ((err = tar_format(out)) < 0)
        goto done;
    if (archive_write_open_filename(out, tmp) != ARCHIVE_OK) {
        err = semail__err(SEMAIL_EIO, "%s: %s", tmp, archive_error_string(out));
        goto done;
    }
    if ((err = tree_to_tar(out, tree)) < 0)
        goto done;
    if (archive_write_close(out) != ARCHIVE_OK) {
        err = semail__err(SEMAIL_EIO, "%s: %s", tmp, archive_error_string(out));
        goto done;
    }
    if (rename(tmp, cache) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "rename %s", tmp);
done:
    if (out)
        archive_write_free(out);
    if (err < 0)
        unlink(tmp);
    if (remove_tree(work_fd, work_dir, tree_name) < 0 && err == 0)
        err = SEMAIL_EIO;
    return err;
}

/* ---- the upload: the cache, filtered, plus our files, generated on demand --- */

enum phase { PH_HEADER, PH_DATA, PH_EXTRA, PH_CLOSE, PH_DONE };

struct stream {
    struct archive *in, *out;
    semail_buf buf; /* produced, not yet handed to curl */
    size_t off;
    enum phase phase;
    int failed;
    char err[256];
};

static la_ssize_t on_tar_write(struct archive *a, void *payload, const void *p, size_t n)
{
    struct stream *s = payload;

    if (semail__buf_add(&s->buf, p, n) < 0) {
        archive_set_error(a, ENOMEM, "upload buffer full");
        return -1;
    }
    return (la_ssize_t)n;
}

/* Left out of the image: what only the build needed, and what must differ per container. */
static int skipped(const char *path)
{
    static const char *const prefix[] = {"var/lib/apt/lists/", "var/cache/apt/archives/",
                                         "etc/ssh/ssh_host_", "usr/local/sbin/semail-entrypoint",
                                         "etc/profile.d/semail.sh"};
    static const char *const keep[] = {"var/lib/apt/lists/partial", "var/lib/apt/lists/lock",
                                       "var/cache/apt/archives/partial",
                                       "var/cache/apt/archives/lock"};
    size_t i;

    path += strncmp(path, "./", 2) == 0 ? 2 : 0;
    for (i = 0; i < SEMAIL_ARRAY_LEN(keep); i++)
        if (strcmp(path, keep[i]) == 0)
            return 0;
    for (i = 0; i < SEMAIL_ARRAY_LEN(prefix); i++)
        if (strncmp(path, prefix[i], strlen(prefix[i])) == 0 && path[strlen(prefix[i])] != '\0')
            return 1;
    return strncmp(path, "var/cache/apt/", 14) == 0 && strstr(path, ".bin") != NULL;
}

static void fail(struct stream *s, struct archive *a, const char *what)
{
    s->failed = 1;
    snprintf(s->err, sizeof(s->err), "%s: %s", what,
             a && archive_error_string(a) ? archive_error_string(a) : "failed");
}

static void add_file(struct stream *s, const char *path, const char *data, mode_t mode)
{
    struct archive_entry *e = archive_entry_new();
    size_t n = strlen(data);

    if (e == NULL) {
        fail(s, NULL, "out of memory");
        return;
    }
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, mode);
    archive_entry_set_size(e, (la_int64_t)n);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, time(NULL), 0);
    if (archive_write_header(s->out, e) != ARCHIVE_OK ||
        archive_write_data(s->out, data, n) != (la_ssize_t)n)
        fail(s, s->out, path);
    archive_entry_free(e);
}

static void step_header(struct stream *s)
{
    struct archive_entry *e;
    int r = archive_read_next_header(s->in, &e);

    if (r == ARCHIVE_EOF) {
        s->phase = PH_EXTRA;
        return;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        fail(s, s->in, "image cache");
        return;
    }
    if (skipped(archive_entry_pathname(e)))
        return;
    if (archive_write_header(s->out, e) != ARCHIVE_OK)
        fail(s, s->out, "tar");
    else if (archive_entry_size(e) > 0 && archive_entry_filetype(e) == AE_IFREG)
        s->phase = PH_DATA;
}

/* One step: a header, one data block, our files, or the end of the archive. */
static void step(struct stream *s)
{
    char block[COPY_BLOCK];
    la_ssize_t r;

    switch (s->phase) {
    case PH_HEADER:
        step_header(s);
        break;
    case PH_DATA:
        if ((r = archive_read_data(s->in, block, sizeof(block))) < 0)
            fail(s, s->in, "image cache");
        else if (r == 0)
            s->phase = PH_HEADER;
        else if (archive_write_data(s->out, block, (size_t)r) != r)
            fail(s, s->out, "tar");
        break;
    case PH_EXTRA:
        add_file(s, "." ENTRYPOINT, entrypoint, 0755);
        add_file(s, "./etc/profile.d/semail.sh", profile, 0644);
        s->phase = PH_CLOSE;
        break;
    case PH_CLOSE:
        if (archive_write_close(s->out) != ARCHIVE_OK)
            fail(s, s->out, "tar");
        s->phase = PH_DONE;
        break;
    case PH_DONE:
        break;
    }
}

static long on_upload_read(char *p, size_t n, void *payload)
{
    struct stream *s = payload;
    size_t avail;

    while (s->buf.len == s->off && s->phase != PH_DONE && !s->failed)
        step(s);
    if (s->failed)
        return -1;
    avail = s->buf.len - s->off;
    if (avail > n)
        avail = n;
    memcpy(p, s->buf.data + s->off, avail);
    s->off += avail;
    if (s->off == s->buf.len) {
        semail__buf_reset(&s->buf);
        s->off = 0;
    }
    return (long)avail;
}

static int stream_open(struct stream *s, const char *cache)
{
    memset(s, 0, sizeof(*s));
    semail__buf_init(&s->buf, STREAM_MAX);
    if ((s->in = archive_read_new()) == NULL || (s->out = archive_write_new()) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    archive_read_support_format_tar(s->in);
    if (archive_read_open_filename(s->in, cache, COPY_BLOCK) != ARCHIVE_OK)
        return semail__err(SEMAIL_EIO, "%s: %s", cache, archive_error_string(s->in));
    if (tar_format(s->out) < 0)
        return SEMAIL_EIO;
    if (archive_write_open2(s->out, s, NULL, on_tar_write, NULL, NULL) != ARCHIVE_OK)
        return semail__err(SEMAIL_EIO, "tar: %s", archive_error_string(s->out));
    return 0;
}

static void stream_close(struct stream *s)
{
    if (s->in)
        archive_read_free(s->in);
    if (s->out)
        archive_write_free(s->out);
    semail__buf_free(&s->buf);
}

/* "semail/user:latest" -> repo "semail/user", tag "latest" (escaped for a query). */
static int split_image(const char *image, char **repo, char **tag)
{
    const char *colon = strrchr(image, ':');
    char *name;
    int err;

    *repo = *tag = NULL;
    if (colon && strchr(colon, '/') == NULL) {
        if ((name = semail__strndup(image, (size_t)(colon - image))) == NULL)
            return SEMAIL_ENOMEM;
        err = semail__docker_escape(repo, name);
        free(name);
        return err < 0 ? err : semail__docker_escape(tag, colon + 1);
    }
    return (err = semail__docker_escape(repo, image)) < 0 ? err
                                                          : semail__docker_escape(tag, "latest");
}

static int import(semail_container_engine *e, const char *cache, unsigned int timeout_ms)
{
    char *repo = NULL, *tag = NULL, *cmd = NULL, *expose = NULL, msg[256];
    semail__docker_resp r;
    struct stream s;
    semail_buf path;
    int err;

    semail__docker_resp_init(&r);
    semail__buf_init(&path, 2048);
    if ((err = stream_open(&s, cache)) < 0 || (err = split_image(e->image, &repo, &tag)) < 0 ||
        (err = semail__docker_escape(&cmd, "CMD [\"" ENTRYPOINT "\"]")) < 0 ||
        (err = semail__docker_escape(&expose, "EXPOSE 22/tcp")) < 0 ||
        (err = semail__buf_printf(&path,
                                  "/images/create?fromSrc=-&repo=%s&tag=%s&changes=%s"
                                  "&changes=%s",
                                  repo, tag, cmd, expose)) < 0)
        goto done;
    err = semail__docker_upload(e, path.data, on_upload_read, &s, timeout_ms, &r);
    if (s.failed)
        err = semail__err(SEMAIL_EIO, "image upload: %s", s.err);
    else if (err == 0 && r.status != 200)
        err = semail__docker_fail(&r, "image import");
    else if (err == 0)
        err = semail__docker_parse_progress(r.body.data, r.body.len, msg, sizeof(msg));
done:
    stream_close(&s);
    semail__docker_resp_free(&r);
    semail__buf_free(&path);
    free(repo);
    free(tag);
    free(cmd);
    free(expose);
    return err;
}

int semail_image_build(semail_container_engine *e, const semail_image_options *opts)
{
    const char *suite = opts && opts->suite ? opts->suite : "bookworm";
    char mirror[512], cache[PATH_MAX], old_id[96];
    int work_fd = -1, err;

    if (e == NULL || opts == NULL || opts->version != SEMAIL_IMAGE_OPTIONS_VERSION ||
        opts->work_dir == NULL || opts->work_dir[0] != '/')
        return semail__err(SEMAIL_EINVAL, "image build: options with an absolute work_dir");
    if (strspn(suite, "abcdefghijklmnopqrstuvwxyz-") != strlen(suite) || !*suite ||
        strlen(suite) > 32)
        return semail__err(SEMAIL_EINVAL, "image build: suite '%s'", suite);
    if (opts->reuse_image && (err = semail_image_exists(e)) != 0)
        return err < 0 ? err : 0;
    if (semail__fmt(cache, sizeof(cache), "%s/rootfs-%s.tar", opts->work_dir, suite) < 0)
        return semail__err(SEMAIL_EINVAL, "work_dir too long");
    if (mkdir(opts->work_dir, 0700) < 0 && errno != EEXIST)
        return semail__errno(SEMAIL_EIO, errno, "mkdir %s", opts->work_dir);
    if ((work_fd = open(opts->work_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return semail__errno(SEMAIL_EIO, errno, "%s", opts->work_dir);
    if (!opts->reuse_cache || access(cache, R_OK) != 0) {
        if ((err = find_mirror(mirror, sizeof(mirror), opts->mirror)) < 0 ||
            (err = make_cache(work_fd, opts->work_dir, suite, mirror, cache)) < 0)
            goto done;
    }
    if ((err = image_inspect(e, e->image, old_id, sizeof(old_id))) < 0)
        goto done;
    if (err == 0)
        old_id[0] = '\0';
    if ((err = import(e, cache, opts->timeout_ms ? opts->timeout_ms : IMPORT_MS)) == 0)
        drop_old_image(e, old_id);
done:
    close(work_fd);
    return err;
}
