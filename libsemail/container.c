/*
 * container.c - each person's container `semail-LOGIN` over the Engine API:
 * create (with a free SSH port, retried when the engine finds it taken),
 * delete, status, list, and the host-side key directories.
 *
 * Contract: see include/semail/container.h. A container is only touched
 * when its label semail.user names the login; its label semail.spec is a
 * fingerprint of what it was made of, so that a re-run can tell "finish
 * the job" from "this is another container". Key files are reached through
 * directory descriptors opened with O_NOFOLLOW and replaced by rename.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "container_internal.h"
#include "docker_api.h"
#include "semail/registry.h"
#include "storage_internal.h"

#define NAME_PREFIX      "semail-"
#define START_TRIES      8
#define STOP_GRACE_S     3
#define AUTH_DIR         "authorized"
#define AUTH_FILE        "authorized_keys"
#define HOST_DIR         "host"
#define HOST_KEY         "ssh_host_ed25519_key"
#define KEYGEN_PATH      "/usr/bin:/bin"
#define MOUNT_AUTHORIZED "/etc/semail/authorized"
#define MOUNT_HOSTKEYS   "/etc/semail/hostkeys"

/* What sshd needs and nothing more (tried one by one: docs/decisions.md). */
static const char *const cap_add[] = {"CHOWN", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE"};

/* ---- the handle ----------------------------------------------------------- */

int semail_container_options_init(semail_container_options *opts)
{
    static const semail_container_options init = SEMAIL_CONTAINER_OPTIONS_INIT;

    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "no options");
    *opts = init;
    return 0;
}

static int check_listen(const char *addr)
{
    struct addrinfo hints = {0}, *ai = NULL;

    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(addr, NULL, &hints, &ai) != 0)
        return semail__err(SEMAIL_EINVAL, "ssh_listen '%s': not a numeric address", addr);
    freeaddrinfo(ai);
    return 0;
}

static int check_options(const semail_container_options *o)
{
    if (o->version != SEMAIL_CONTAINER_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "container options version %u unknown", o->version);
    if ((o->engine && o->engine[0] != '/') || (o->keys_dir && o->keys_dir[0] != '/'))
        return semail__err(SEMAIL_EINVAL, "engine socket and keys_dir must be absolute paths");
    if (o->image && (o->image[0] == '\0' || strlen(o->image) > 255))
        return semail__err(SEMAIL_EINVAL, "image name empty or too long");
    if (o->port_high > 65535 || o->port_low > o->port_high || (o->port_low == 0 && o->port_high))
        return semail__err(SEMAIL_EINVAL, "ssh port range %u-%u is not within 1-65535", o->port_low,
                           o->port_high);
    return o->ssh_listen ? check_listen(o->ssh_listen) : 0;
}

int semail_container_engine_new(semail_container_engine **out, const semail_container_options *opts)
{
    semail_container_options d = SEMAIL_CONTAINER_OPTIONS_INIT;
    semail_container_engine *e;
    int err;

    *out = NULL;
    opts = opts ? opts : &d;
    if ((err = check_options(opts)) < 0)
        return err;
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    e->engine = semail__strdup(opts->engine ? opts->engine : SEMAIL_CONTAINER_DEFAULT_ENGINE);
    e->image = semail__strdup(opts->image ? opts->image : SEMAIL_CONTAINER_DEFAULT_IMAGE);
    e->ssh_listen = semail__strdup(opts->ssh_listen ? opts->ssh_listen : "0.0.0.0");
    e->keys_dir =
        semail__strdup(opts->keys_dir ? opts->keys_dir : SEMAIL_CONTAINER_DEFAULT_KEYS_DIR);
    e->port_low = opts->port_low ? opts->port_low : 22000;
    e->port_high = opts->port_low ? opts->port_high : 22999;
    e->memory = opts->memory ? opts->memory : 256u * 1024u * 1024u;
    e->pids = opts->pids ? opts->pids : 256;
    e->nano_cpus = opts->nano_cpus ? opts->nano_cpus : 500000000u;
    e->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 60000;
    if (!e->engine || !e->image || !e->ssh_listen || !e->keys_dir) {
        semail_container_engine_free(e);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    /* Thread-safe since curl 7.84 (Debian 12 has 7.88); counted, paired in _free. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        free(e->engine);
        free(e->image);
        free(e->ssh_listen);
        free(e->keys_dir);
        free(e);
        return semail__err(SEMAIL_ERROR, "curl_global_init failed");
    }
    *out = e;
    return 0;
}

/* "0.5" CPUs -> 500000000 nano-CPUs; plain decimal, at most 9 fraction digits, at most 1024. */
static int parse_cpus(const char *s, uint64_t *out)
{
    uint64_t whole = 0, frac = 0, scale = 1000000000u;
    const char *p = s;

    for (; *p >= '0' && *p <= '9' && whole <= 1024; p++)
        whole = whole * 10 + (uint64_t)(*p - '0');
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9' && scale > 1; p++)
            frac += (uint64_t)(*p - '0') * (scale /= 10);
    if (p == s || *p != '\0' || whole > 1024 || (whole == 0 && frac == 0))
        return semail__err(SEMAIL_ECONFIG, "[containers] cpus '%s': expected a number such as 0.5",
                           s);
    *out = whole * 1000000000u + frac;
    return 0;
}

int semail_container_engine_new_from_config(semail_container_engine **out, const semail_config *cfg)
{
    semail_container_options o = SEMAIL_CONTAINER_OPTIONS_INIT;
    char keys[PATH_MAX];
    uint64_t low, high;
    int err;

    *out = NULL;
    if (cfg == NULL)
        return semail__err(SEMAIL_EINVAL, "no configuration");
    o.engine = semail_config_get(cfg, "containers", "engine");
    o.image = semail_config_get(cfg, "containers", "image");
    o.ssh_listen = semail_config_get(cfg, "containers", "ssh_listen");
    if ((err = semail_config_get_range(cfg, "containers", "ssh_port_range", &low, &high)) < 0 ||
        (err = semail_config_get_size(cfg, "containers", "memory", &o.memory)) < 0 ||
        (err = semail_config_get_uint(cfg, "containers", "pids", &o.pids)) < 0 ||
        (err = parse_cpus(semail_config_get(cfg, "containers", "cpus"), &o.nano_cpus)) < 0)
        return err;
    if (low == 0 || high > 65535 || low > high)
        return semail__err(SEMAIL_ECONFIG, "[containers] ssh_port_range: not within 1-65535");
    o.port_low = (unsigned int)low;
    o.port_high = (unsigned int)high;
    const char *state_dir = semail_config_get(cfg, "global", "state_dir");
    if (semail__fmt(keys, sizeof(keys), "%s/keys", state_dir) < 0)
        return semail__err(SEMAIL_ECONFIG, "[global] state_dir too long");
    o.keys_dir = keys;
    return semail_container_engine_new(out, &o);
}

void semail_container_engine_free(semail_container_engine *e)
{
    if (e == NULL)
        return;
    free(e->engine);
    free(e->image);
    free(e->ssh_listen);
    free(e->keys_dir);
    free(e);
    curl_global_cleanup();
}

void semail__container_set_port_probe(semail_container_engine *e, semail__port_probe_fn fn,
                                      void *payload)
{
    e->probe = fn;
    e->probe_payload = payload;
}

int semail_container_engine_ping(semail_container_engine *e)
{
    semail__docker_resp r;
    int err;

    semail__docker_resp_init(&r);
    if ((err = semail__docker_request(e, "GET", "/_ping", NULL, &r)) == 0 && r.status != 200)
        err = semail__docker_fail(&r, "engine ping");
    semail__docker_resp_free(&r);
    return err;
}

const char *semail_container_state_name(semail_container_state state)
{
    switch (state) {
    case SEMAIL_CONTAINER_ABSENT:
        return "absent";
    case SEMAIL_CONTAINER_STOPPED:
        return "stopped";
    case SEMAIL_CONTAINER_RUNNING:
        return "running";
    }
    return "unknown";
}

/* ---- keys on the host ------------------------------------------------------ */

/* Authorized keys: printable ASCII, tabs and line feeds, bounded. */
static int check_keys(const char *keys)
{
    size_t n = keys ? strlen(keys) : 0;

    if (n > SEMAIL_CONTAINER_KEYS_MAX)
        return semail__err(SEMAIL_EINVAL, "SSH keys: %zu bytes, at most %u", n,
                           SEMAIL_CONTAINER_KEYS_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)keys[i];
        if (c != '\n' && c != '\t' && (c < 0x20 || c > 0x7e))
            return semail__err(SEMAIL_EINVAL, "SSH keys: byte 0x%02x at offset %zu", c, i);
    }
    return 0;
}

/* Open (making when MAKE) directory NAME under DIRFD without following a link. */
static int open_dir_at(int dirfd, const char *name, mode_t mode, int make, const char *what)
{
    int fd;

    if (make && mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
        return semail__errno(SEMAIL_EIO, errno, "%s: mkdir", what);
    if ((fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return semail__errno(errno == ENOENT ? SEMAIL_ENOTFOUND : SEMAIL_EIO, errno, "%s", what);
    return fd;
}

/* keys_dir/LOGIN as a descriptor (made with keys_dir itself when MAKE). */
static int open_person_dir(const semail_container_engine *e, const char *login, int make)
{
    int root, fd;

    if ((root = open_dir_at(AT_FDCWD, e->keys_dir, 0755, make, e->keys_dir)) < 0)
        return root;
    fd = open_dir_at(root, login, 0755, make, login);
    close(root);
    return fd;
}

/* Replace DIRFD/authorized_keys with KEYS: a file beside it, fsync'd, renamed over. */
static int write_keys_at(int dirfd, const char *keys, const char *login)
{
    const char *tmp = AUTH_FILE ".tmp";
    size_t n = keys ? strlen(keys) : 0;
    int fd, err = 0;

    if (unlinkat(dirfd, tmp, 0) < 0 && errno != ENOENT)
        return semail__errno(SEMAIL_EIO, errno, "%s: keys: unlink", login);
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return semail__errno(SEMAIL_EIO, errno, "%s: keys: create", login);
    if (fchmod(fd, 0644) < 0 || semail__write_all(fd, keys ? keys : "", n) < 0 ||
        (n > 0 && keys[n - 1] != '\n' && semail__write_all(fd, "\n", 1) < 0) || fsync(fd) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "%s: keys: write", login);
    close(fd);
    if (err == 0 && renameat(dirfd, tmp, dirfd, AUTH_FILE) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "%s: keys: rename", login);
    if (err == 0 && fsync(dirfd) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "%s: keys: fsync directory", login);
    if (err < 0)
        unlinkat(dirfd, tmp, 0);
    return err;
}

/* Write the keys of LOGIN into keys_dir/LOGIN/authorized/ (MAKE: make the directories). */
static int store_keys(const semail_container_engine *e, const char *login, const char *keys,
                      int make)
{
    int person, auth, err;

    if ((err = check_keys(keys)) < 0)
        return err;
    if ((person = open_person_dir(e, login, make)) < 0)
        return person == SEMAIL_ENOTFOUND
                   ? semail__err(SEMAIL_ENOTFOUND, "%s: no key directory (no container made)",
                                 login)
                   : person;
    auth = open_dir_at(person, AUTH_DIR, 0755, make, AUTH_DIR);
    close(person);
    if (auth < 0)
        return auth;
    err = write_keys_at(auth, keys, login);
    close(auth);
    return err;
}

/* The host key in DIR, made once by ssh-keygen (ed25519: fast under a CPU limit). */
static int ensure_host_key(const char *dir, const char *login)
{
    char key[PATH_MAX], comment[64];
    const char *argv[] = {"ssh-keygen", "-q",    "-t", "ed25519", "-N", "",
                          "-C",         comment, "-f", key,       NULL};
    int fd;

    if ((fd = open_dir_at(AT_FDCWD, dir, 0700, 1, dir)) < 0)
        return fd;
    if (faccessat(fd, HOST_KEY, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
        close(fd);
        return 0;
    }
    close(fd);
    if (semail__fmt(key, sizeof(key), "%s/%s", dir, HOST_KEY) < 0 ||
        semail__fmt(comment, sizeof(comment), "semail-%s", login) < 0)
        return semail__err(SEMAIL_EINVAL, "%s: host key path too long", login);
    return semail__storage_run(KEYGEN_PATH, argv, NULL);
}

int semail_container_set_keys(semail_container_engine *e, const char *login, const char *keys)
{
    int err;

    if (e == NULL || (err = semail_validate_name(login)) < 0)
        return e ? err : semail__err(SEMAIL_EINVAL, "no engine handle");
    return store_keys(e, login, keys, 0);
}

int semail_container_remove_keys(semail_container_engine *e, const char *login)
{
    int root, err;

    if (e == NULL || (err = semail_validate_name(login)) < 0)
        return e ? err : semail__err(SEMAIL_EINVAL, "no engine handle");
    if ((root = open_dir_at(AT_FDCWD, e->keys_dir, 0, 0, e->keys_dir)) < 0)
        return root == SEMAIL_ENOTFOUND ? 0 : root;
    if (semail__storage_rm_tree(root, login) < 0)
        err = semail__errno(SEMAIL_EIO, errno, "%s: remove %s/%s", login, e->keys_dir, login);
    close(root);
    return err;
}

/* ---- talking to the engine ------------------------------------------------- */

static int container_name(char *out, size_t n, const char *login)
{
    return semail__fmt(out, n, NAME_PREFIX "%s", login);
}

/*
 * Inspect NAME: 0 and C filled, SEMAIL_ENOTFOUND (no error recorded for it), or an error;
 * C is all zero unless filled.
 */
static int inspect(semail_container_engine *e, const char *name, semail__docker_container *c)
{
    semail__docker_resp r;
    char path[128];
    int err;

    memset(c, 0, sizeof(*c));
    semail__docker_resp_init(&r);
    if ((err = semail__fmt(path, sizeof(path), "/containers/%s/json", name)) < 0 ||
        (err = semail__docker_request(e, "GET", path, NULL, &r)) < 0)
        goto done;
    if (r.status == 404)
        err = SEMAIL_ENOTFOUND;
    else if (r.status != 200)
        err = semail__docker_fail(&r, name);
    else
        err = semail__docker_parse_inspect(r.body.data, r.body.len, c);
done:
    semail__docker_resp_free(&r);
    return err;
}

/* POST /containers/NAME/ACTION; the statuses in OK (and 404 when MISSING_OK) are success. */
static int post_action(semail_container_engine *e, const char *name, const char *action,
                       int missing_ok, long *status)
{
    semail__docker_resp r;
    char path[160];
    int err;

    semail__docker_resp_init(&r);
    if ((err = semail__fmt(path, sizeof(path), "/containers/%s/%s", name, action)) < 0 ||
        (err = semail__docker_request(e, "POST", path, NULL, &r)) < 0)
        goto done;
    *status = r.status;
    if (r.status != 204 && r.status != 304 && !(missing_ok && r.status == 404))
        err = semail__docker_fail(&r, name);
done:
    semail__docker_resp_free(&r);
    return err;
}

static int remove_container(semail_container_engine *e, const char *name)
{
    semail__docker_resp r;
    char path[160];
    int err;

    semail__docker_resp_init(&r);
    if ((err = semail__fmt(path, sizeof(path), "/containers/%s?force=1&v=1", name)) < 0 ||
        (err = semail__docker_request(e, "DELETE", path, NULL, &r)) < 0)
        goto done;
    if (r.status != 204 && r.status != 404)
        err = semail__docker_fail(&r, name);
done:
    semail__docker_resp_free(&r);
    return err;
}

/* GET every container labelled semail.user (running or not). */
static int list_ours(semail_container_engine *e, semail__docker_container **out, size_t *count)
{
    semail__docker_resp r;
    char *filter = NULL, path[256];
    int err;

    *out = NULL;
    *count = 0;
    semail__docker_resp_init(&r);
    if ((err = semail__docker_escape(&filter, "{\"label\":[\"semail.user\"]}")) < 0 ||
        (err = semail__fmt(path, sizeof(path), "/containers/json?all=1&filters=%s", filter)) < 0 ||
        (err = semail__docker_request(e, "GET", path, NULL, &r)) < 0)
        goto done;
    if (r.status != 200)
        err = semail__docker_fail(&r, "container list");
    else
        err = semail__docker_parse_list(r.body.data, r.body.len, out, count);
done:
    free(filter);
    semail__docker_resp_free(&r);
    return err;
}

static semail_container_state map_state(const char *s)
{
    if (strcmp(s, "running") == 0 || strcmp(s, "restarting") == 0)
        return SEMAIL_CONTAINER_RUNNING;
    return SEMAIL_CONTAINER_STOPPED;
}

static void fill_info(semail_container_info *out, const semail__docker_container *c)
{
    memset(out, 0, sizeof(*out));
    semail__strlcpy(out->login, c->user, sizeof(out->login));
    semail__strlcpy(out->engine_state, c->state, sizeof(out->engine_state));
    out->state = map_state(c->state);
    out->ssh_port = (int)c->port;
}

int semail_container_status(semail_container_info *out, semail_container_engine *e,
                            const char *login)
{
    semail__docker_container c;
    char name[64];
    int err;

    memset(out, 0, sizeof(*out));
    if ((err = semail_validate_name(login)) < 0)
        return err;
    if ((err = container_name(name, sizeof(name), login)) < 0)
        return err;
    if ((err = inspect(e, name, &c)) == SEMAIL_ENOTFOUND) {
        semail__strlcpy(out->login, login, sizeof(out->login));
        return 0;
    }
    if (err < 0)
        return err;
    if (strcmp(c.user, login) != 0)
        return semail__err(SEMAIL_EPERM, "%s: a container that semail did not make", name);
    fill_info(out, &c);
    return 0;
}

int semail_container_list(semail_container_info **out, size_t *count, semail_container_engine *e)
{
    semail__docker_container *v;
    semail_container_info *info = NULL;
    size_t n, i, k = 0;
    int err;

    *out = NULL;
    *count = 0;
    if ((err = list_ours(e, &v, &n)) < 0)
        return err;
    if (n > 0 && (info = calloc(n, sizeof(*info))) == NULL) {
        free(v);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        char name[64];
        /* Only semail-LOGIN with a valid LOGIN: a stray label is not a person. */
        if (semail_validate_name(v[i].user) < 0 ||
            container_name(name, sizeof(name), v[i].user) < 0 || strcmp(name, v[i].name) != 0)
            continue;
        fill_info(&info[k++], &v[i]);
    }
    free(v);
    if (k == 0) {
        free(info);
        info = NULL;
    }
    *out = info;
    *count = k;
    return 0;
}

void semail_container_list_free(semail_container_info *list)
{
    free(list);
}

/* The container of LOGIN, NAME filled: 0 and C filled; 1 when there is none; or an error. */
static int find_ours(semail_container_engine *e, const char *login, char *name, size_t n,
                     semail__docker_container *c)
{
    int err;

    if ((err = semail_validate_name(login)) < 0 || (err = container_name(name, n, login)) < 0)
        return err;
    if ((err = inspect(e, name, c)) == SEMAIL_ENOTFOUND)
        return 1;
    if (err < 0)
        return err;
    if (strcmp(c->user, login) != 0)
        return semail__err(SEMAIL_EPERM, "%s: a container that semail did not make: left alone",
                           name);
    return 0;
}

/* A clean stop (sshd ends its sessions); stopped or gone already: 0. */
static int stop(semail_container_engine *e, const char *name)
{
    char action[32];
    long status;
    int err;

    if ((err = semail__fmt(action, sizeof(action), "stop?t=%d", STOP_GRACE_S)) < 0)
        return err;
    return post_action(e, name, action, 1, &status);
}

int semail_container_delete(semail_container_engine *e, const char *login)
{
    semail__docker_container c;
    char name[64];
    int err;

    if ((err = find_ours(e, login, name, sizeof(name), &c)) != 0)
        return err < 0 ? err : 0;
    if ((err = stop(e, name)) < 0)
        return err;
    return remove_container(e, name);
}

int semail__container_stop(semail_container_engine *e, const char *login)
{
    semail__docker_container c;
    char name[64];
    int err;

    if ((err = find_ours(e, login, name, sizeof(name), &c)) != 0)
        return err < 0 ? err : 0;
    return stop(e, name); /* also a paused one: it holds its mounts too; stopped: 304, fine */
}

/* ---- create --------------------------------------------------------------- */

/* Paths of one create, resolved once. */
struct plan {
    const semail_container_spec *spec;
    char name[64];
    char auth_dir[PATH_MAX];
    char host_dir[PATH_MAX];
    char mail_target[PATH_MAX];
    char fingerprint[40];
};

static void fnv_add(uint64_t *h, const char *s)
{
    for (; *s; s++) {
        *h ^= (unsigned char)*s;
        *h *= 1099511628211u;
    }
    *h ^= 0xff; /* field separator */
    *h *= 1099511628211u;
}

/* A fingerprint of what the container is made of (the port only when fixed). */
static int make_fingerprint(struct plan *p, const semail_container_engine *e)
{
    char nums[160];
    uint64_t h = 14695981039346656037u;
    int err;

    if ((err = semail__fmt(nums, sizeof(nums), "%lu:%lu:%llu:%llu:%llu:%u",
                           (unsigned long)p->spec->uid, (unsigned long)p->spec->gid,
                           (unsigned long long)e->memory, (unsigned long long)e->pids,
                           (unsigned long long)e->nano_cpus, p->spec->ssh_port)) < 0)
        return err;
    fnv_add(&h, nums);
    fnv_add(&h, p->spec->mail_dir);
    fnv_add(&h, p->host_dir);
    fnv_add(&h, p->auth_dir);
    fnv_add(&h, e->image);
    fnv_add(&h, e->ssh_listen);
    return semail__fmt(p->fingerprint, sizeof(p->fingerprint), "v1-%016llx", (unsigned long long)h);
}

static int check_spec(const semail_container_engine *e, const semail_container_spec *s)
{
    struct stat st;
    int err;

    if (e == NULL || s == NULL)
        return semail__err(SEMAIL_EINVAL, "no engine handle or no spec");
    if ((err = semail_validate_name(s->login)) < 0)
        return err;
    if (s->uid == 0 || s->gid == 0 || s->uid == (uid_t)-1 || s->gid == (gid_t)-1)
        return semail__err(SEMAIL_EINVAL, "%s: uid and gid must not be 0", s->login);
    if (s->mail_dir == NULL || s->mail_dir[0] != '/')
        return semail__err(SEMAIL_EINVAL, "%s: mail_dir must be an absolute path", s->login);
    if (stat(s->mail_dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return semail__err(SEMAIL_ENOTFOUND, "%s: mail_dir %s is not a directory", s->login,
                           s->mail_dir);
    if (s->host_keys_dir && s->host_keys_dir[0] != '/')
        return semail__err(SEMAIL_EINVAL, "%s: host_keys_dir must be an absolute path", s->login);
    if (s->ssh_port > 65535)
        return semail__err(SEMAIL_EINVAL, "%s: ssh_port %u", s->login, s->ssh_port);
    return check_keys(s->ssh_keys);
}

static int make_plan(struct plan *p, const semail_container_engine *e,
                     const semail_container_spec *s)
{
    memset(p, 0, sizeof(*p));
    p->spec = s;
    if (container_name(p->name, sizeof(p->name), s->login) < 0 ||
        semail__fmt(p->auth_dir, sizeof(p->auth_dir), "%s/%s/" AUTH_DIR, e->keys_dir, s->login) <
            0 ||
        (s->host_keys_dir ? semail__strlcpy(p->host_dir, s->host_keys_dir, sizeof(p->host_dir))
                          : semail__fmt(p->host_dir, sizeof(p->host_dir), "%s/%s/" HOST_DIR,
                                        e->keys_dir, s->login)) < 0 ||
        semail__fmt(p->mail_target, sizeof(p->mail_target), "/home/%s/mail", s->login) < 0)
        return semail__err(SEMAIL_EINVAL, "%s: a path is too long", s->login);
    return make_fingerprint(p, e);
}

/* Could PORT be bound on the listen address right now? */
static int port_bindable(const char *addr, unsigned int port, void *payload)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char serv[8];
    int fd, ok = 0;

    (void)payload;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(serv, sizeof(serv), "%u", port);
    if (getaddrinfo(addr, serv, &hints, &ai) != 0)
        return 0;
    if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0) {
        ok = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(ai);
    return ok;
}

static int port_in(unsigned int port, const unsigned int *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == port)
            return 1;
    return 0;
}

/* A port of the range no semail container has and that is not in TRIED. */
static int pick_port(semail_container_engine *e, const unsigned int *tried, size_t ntried,
                     unsigned int *out)
{
    semail__docker_container *v;
    size_t n, i;
    unsigned int port;
    int err;

    if ((err = list_ours(e, &v, &n)) < 0)
        return err;
    for (port = e->port_low; port <= e->port_high; port++) {
        int used = port_in(port, tried, ntried);
        for (i = 0; i < n && !used; i++)
            used = v[i].port == port;
        if (!used && (e->probe ? e->probe : port_bindable)(e->ssh_listen, port, e->probe_payload)) {
            free(v);
            *out = port;
            return 0;
        }
    }
    free(v);
    return semail__err(SEMAIL_EFULL, "no free SSH port in %u-%u on %s", e->port_low, e->port_high,
                       e->ssh_listen);
}

/*
 * json-c reports a failed allocation only by a NULL object, and adding NULL
 * makes a JSON null (a null HostConfig would be a container without
 * limits): every add goes through put(), which remembers a failure in *OK.
 */
static void put(json_object *obj, const char *key, json_object *val, int *ok)
{
    if (obj == NULL || val == NULL || json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        *ok = 0;
    }
}

static void push(json_object *arr, json_object *val, int *ok)
{
    if (arr == NULL || val == NULL || json_object_array_add(arr, val) != 0) {
        json_object_put(val);
        *ok = 0;
    }
}

static json_object *strings(const char *const *v, size_t n, int *ok)
{
    json_object *a = json_object_new_array();

    for (size_t i = 0; i < n; i++)
        push(a, json_object_new_string(v[i]), ok);
    return a;
}

static json_object *json_mount(const char *src, const char *dst, int read_only, int *ok)
{
    json_object *m = json_object_new_object();

    put(m, "Type", json_object_new_string("bind"), ok);
    put(m, "Source", json_object_new_string(src), ok);
    put(m, "Target", json_object_new_string(dst), ok);
    put(m, "ReadOnly", json_object_new_boolean(read_only), ok);
    return m;
}

static json_object *port_bindings(const semail_container_engine *e, unsigned int port, int *ok)
{
    json_object *pb = json_object_new_object(), *binds = json_object_new_array();
    json_object *bind = json_object_new_object();
    char port_s[8];

    snprintf(port_s, sizeof(port_s), "%u", port);
    put(bind, "HostIp", json_object_new_string(e->ssh_listen), ok);
    put(bind, "HostPort", json_object_new_string(port_s), ok);
    push(binds, bind, ok);
    put(pb, "22/tcp", binds, ok);
    return pb;
}

static json_object *host_config(const semail_container_engine *e, const struct plan *p,
                                unsigned int port, int *ok)
{
    static const char *const cap_drop[] = {"ALL"};
    static const char *const secopt[] = {"no-new-privileges"};
    json_object *hc = json_object_new_object(), *mounts = json_object_new_array();
    json_object *restart = json_object_new_object();

    push(mounts, json_mount(p->spec->mail_dir, p->mail_target, 0, ok), ok);
    push(mounts, json_mount(p->auth_dir, MOUNT_AUTHORIZED, 1, ok), ok);
    push(mounts, json_mount(p->host_dir, MOUNT_HOSTKEYS, 1, ok), ok);
    put(hc, "Mounts", mounts, ok);
    put(hc, "PortBindings", port_bindings(e, port, ok), ok);
    /* MemorySwap equal to Memory: no swap on top of the limit. */
    put(hc, "Memory", json_object_new_int64((int64_t)e->memory), ok);
    put(hc, "MemorySwap", json_object_new_int64((int64_t)e->memory), ok);
    put(hc, "PidsLimit", json_object_new_int64((int64_t)e->pids), ok);
    put(hc, "NanoCpus", json_object_new_int64((int64_t)e->nano_cpus), ok);
    put(restart, "Name", json_object_new_string("unless-stopped"), ok);
    put(hc, "RestartPolicy", restart, ok);
    put(hc, "CapDrop", strings(cap_drop, SEMAIL_ARRAY_LEN(cap_drop), ok), ok);
    put(hc, "CapAdd", strings(cap_add, SEMAIL_ARRAY_LEN(cap_add), ok), ok);
    put(hc, "SecurityOpt", strings(secopt, SEMAIL_ARRAY_LEN(secopt), ok), ok);
    put(hc, "Privileged", json_object_new_boolean(0), ok);
    return hc;
}

/* The body of POST /containers/create, or NULL when out of memory. */
static char *create_body(const semail_container_engine *e, const struct plan *p, unsigned int port)
{
    json_object *o = json_object_new_object(), *labels = json_object_new_object();
    json_object *exposed = json_object_new_object();
    char user[64], uid[32], gid[32], port_s[8];
    const char *env[] = {user, uid, gid};
    char *out = NULL;
    int ok = 1;

    snprintf(user, sizeof(user), "USER=%s", p->spec->login);
    snprintf(uid, sizeof(uid), "UID=%lu", (unsigned long)p->spec->uid);
    snprintf(gid, sizeof(gid), "GID=%lu", (unsigned long)p->spec->gid);
    snprintf(port_s, sizeof(port_s), "%u", port);
    put(o, "Image", json_object_new_string(e->image), &ok);
    put(o, "Hostname", json_object_new_string(p->spec->login), &ok);
    put(o, "Env", strings(env, SEMAIL_ARRAY_LEN(env), &ok), &ok);
    put(exposed, "22/tcp", json_object_new_object(), &ok);
    put(o, "ExposedPorts", exposed, &ok);
    put(labels, "semail.user", json_object_new_string(p->spec->login), &ok);
    put(labels, "semail.spec", json_object_new_string(p->fingerprint), &ok);
    put(labels, "semail.ssh_port", json_object_new_string(port_s), &ok);
    put(o, "Labels", labels, &ok);
    put(o, "HostConfig", host_config(e, p, port, &ok), &ok);
    if (ok)
        out = semail__strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return out;
}

static int create_one(semail_container_engine *e, const struct plan *p, unsigned int port)
{
    semail__docker_resp r;
    char path[128], *body;
    int err;

    if ((body = create_body(e, p, port)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    semail__docker_resp_init(&r);
    if ((err = semail__fmt(path, sizeof(path), "/containers/create?name=%s", p->name)) < 0 ||
        (err = semail__docker_request(e, "POST", path, body, &r)) < 0)
        goto done;
    if (r.status == 404)
        err = semail__err(SEMAIL_ENOTFOUND, "%s: image %s not found (semail-admin image build)",
                          p->name, e->image);
    else if (r.status != 201)
        err = semail__docker_fail(&r, p->name);
done:
    semail__docker_resp_free(&r);
    free(body);
    return err;
}

/* Whether a failed start says the host port was taken. */
static int port_taken(const char *msg)
{
    return strstr(msg, "port is already allocated") != NULL ||
           strstr(msg, "address already in use") != NULL;
}

/* Start NAME: 0; 1 when the engine found the port taken; or an error. */
static int start(semail_container_engine *e, const char *name)
{
    long status = 0;
    int err = post_action(e, name, "start", 0, &status);

    if (err < 0 && status == 500 && port_taken(semail_error_last()))
        return 1;
    return err;
}

/*
 * An existing container of this name: 0 when it is ours with the same
 * fingerprint and now runs (*PORT set); 1 when it was ours but its port was
 * taken and it is removed (go on creating); or an error.
 */
static int finish_existing(semail_container_engine *e, const struct plan *p,
                           const semail__docker_container *c, unsigned int *port)
{
    int r;

    if (strcmp(c->user, p->spec->login) != 0)
        return semail__err(SEMAIL_EEXISTS, "%s: a container that semail did not make", p->name);
    if (strcmp(c->spec, p->fingerprint) != 0 || c->port == 0)
        return semail__err(SEMAIL_EEXISTS,
                           "%s exists with other settings: delete it first to re-create it",
                           p->name);
    *port = c->port;
    if (map_state(c->state) == SEMAIL_CONTAINER_RUNNING)
        return 0;
    if ((r = start(e, p->name)) != 1)
        return r;
    if (p->spec->ssh_port)
        return semail__err(SEMAIL_EEXISTS, "%s: port %u is taken", p->name, p->spec->ssh_port);
    return (r = remove_container(e, p->name)) < 0 ? r : 1;
}

/* Create and start with a port of the range (or the fixed one), retrying taken ports. */
static int create_new(semail_container_engine *e, const struct plan *p, unsigned int *port)
{
    unsigned int tried[START_TRIES];
    size_t n;
    int err, r;

    for (n = 0; n < START_TRIES; n++) {
        if (p->spec->ssh_port)
            *port = p->spec->ssh_port;
        else if ((err = pick_port(e, tried, n, port)) < 0)
            return err;
        tried[n] = *port;
        if ((err = create_one(e, p, *port)) < 0)
            return err;
        if ((r = start(e, p->name)) == 0)
            return 0;
        /* Created but not started: remove it, whatever went wrong. */
        if ((err = remove_container(e, p->name)) < 0)
            return err;
        if (r < 0)
            return r;
        if (p->spec->ssh_port)
            return semail__err(SEMAIL_EEXISTS, "%s: port %u is taken", p->name, *port);
    }
    return semail__err(SEMAIL_ETEMP, "%s: the engine found %d ports taken in a row", p->name,
                       START_TRIES);
}

int semail_container_create(semail_container_engine *e, const semail_container_spec *spec,
                            int *port_out)
{
    semail__docker_container c;
    struct plan p;
    unsigned int port = 0;
    int err, round;

    if (port_out)
        *port_out = 0;
    if ((err = check_spec(e, spec)) < 0 || (err = make_plan(&p, e, spec)) < 0)
        return err;
    if ((err = store_keys(e, spec->login, spec->ssh_keys, 1)) < 0 ||
        (err = ensure_host_key(p.host_dir, spec->login)) < 0)
        return err;
    /* Twice at most: a concurrent create may make the name between inspect and create. */
    for (round = 0; round < 2; round++) {
        err = inspect(e, p.name, &c);
        if (err == 0 && (err = finish_existing(e, &p, &c, &port)) != 1)
            break;
        if (err != SEMAIL_ENOTFOUND && err != 1)
            break;
        if ((err = create_new(e, &p, &port)) != SEMAIL_EEXISTS || spec->ssh_port)
            break;
    }
    if (err == 0 && port_out)
        *port_out = (int)port;
    return err;
}
