/*
 * registry.c - the user registry file STATE_DIR/registry: read it into an
 * immutable, indexed snapshot; change it under a lock by writing a new file
 * and renaming it over the old one.
 *
 * Contract: a reader never sees a partial file (writers rename a complete,
 * fsync'd file into place); writers in any number of threads and processes
 * never lose each other's changes (they re-read the file under the flock of
 * STATE_DIR/registry.lock). Fields a reader does not know are ignored, so
 * an older reader copes with a newer writer (docs/registry.md). A snapshot
 * holds the file it read open, so that its inode cannot be reused by a
 * later file and semail_registry_changed() is exact.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry_internal.h"
#include "semail/registry.h"

#define REG_HEADER      "# semail registry v1"
#define REG_FILE_MAX    (64u * 1024 * 1024)
#define REG_KEYS_MAX    (64u * 1024) /* ssh_keys of one record */
#define REG_STRING_MAX  (256u)       /* other strings */
#define REG_ADDRESS_MAX (32 + 1 + 253 + 1)
#define REG_UID_MAX     4294967294ull

struct addr_ent {
    char *key; /* "id@domain", lower case */
    size_t idx;
};

struct semail_registry {
    char *path;
    semail_user *users; /* sorted by login */
    size_t n, cap;
    struct addr_ent *addrs; /* sorted by key */
    size_t naddrs;
    const char **domains; /* sorted, unique; point into users */
    size_t ndomains;
    int fd; /* the file read, kept open; -1 when there was none */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
};

/* ---- records ---------------------------------------------------------- */

static void user_clear(semail_user *u)
{
    free((char *)u->login);
    free((char *)u->id);
    free((char *)u->domain);
    free((char *)u->storage);
    free((char *)u->container);
    free((char *)u->ssh_keys);
    memset(u, 0, sizeof(*u));
}

static int user_copy(semail_user *dst, const semail_user *src)
{
    memset(dst, 0, sizeof(*dst));
    *dst = *src;
    dst->version = SEMAIL_USER_VERSION;
    dst->login = dst->id = dst->domain = dst->storage = dst->container = dst->ssh_keys = NULL;
    if ((dst->login = semail__strdup(src->login)) == NULL ||
        (dst->id = semail__strdup(src->id)) == NULL ||
        (dst->domain = semail__strdup(src->domain)) == NULL ||
        (dst->storage = semail__strdup(src->storage)) == NULL ||
        (src->container && (dst->container = semail__strdup(src->container)) == NULL) ||
        (src->ssh_keys && (dst->ssh_keys = semail__strdup(src->ssh_keys)) == NULL)) {
        user_clear(dst);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    return 0;
}

/* Re-record the last error with PREFIX in front ("id '../x': ..."). */
static int prefixed(int code, const char *prefix)
{
    char msg[512];
    (void)semail__strlcpy(msg, semail_error_last(), sizeof(msg));
    return semail__err(code, "%s %s", prefix, msg);
}

static int check_string(const char *s, const char *what, size_t max)
{
    size_t i;
    if (strlen(s) > max)
        return semail__err(SEMAIL_EINVAL, "%s: longer than %zu bytes", what, max);
    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return semail__err(SEMAIL_EINVAL, "%s: control character at byte %zu", what, i);
    }
    return 0;
}

static int validate_user(const semail_user *u)
{
    int err;
    if (u->login == NULL || u->id == NULL || u->domain == NULL || u->storage == NULL)
        return semail__err(SEMAIL_EINVAL, "login, id, domain and storage are required");
    if ((err = semail_validate_name(u->login)) < 0)
        return prefixed(err, "login");
    if ((err = semail_validate_name(u->id)) < 0)
        return prefixed(err, "id");
    if ((err = semail_validate_domain(u->domain)) < 0)
        return prefixed(err, "domain");
    if (u->kind != SEMAIL_DOMAIN_SUBDOMAIN && u->kind != SEMAIL_DOMAIN_OWN)
        return semail__err(SEMAIL_EINVAL, "kind: neither subdomain nor domain");
    if (u->state < SEMAIL_USER_CREATING || u->state > SEMAIL_USER_DELETING)
        return semail__err(SEMAIL_EINVAL, "state: not creating, active or deleting");
    if (u->uid == 0 || (uint64_t)u->uid > REG_UID_MAX || (uint64_t)u->gid > REG_UID_MAX)
        return semail__err(SEMAIL_EINVAL, "uid %lu: root and -1 are never a box's owner",
                           (unsigned long)u->uid);
    if (u->ssh_port < 0 || u->ssh_port > 65535)
        return semail__err(SEMAIL_EINVAL, "ssh_port %d: not a port", u->ssh_port);
    if (u->storage[0] == '\0' ||
        strspn(u->storage, "abcdefghijklmnopqrstuvwxyz") != strlen(u->storage) ||
        strlen(u->storage) > 32)
        return semail__err(SEMAIL_EINVAL, "storage: expected a backend name such as directory");
    if (u->container && (err = check_string(u->container, "container", REG_STRING_MAX)) < 0)
        return err;
    /* Keys may hold any byte but NUL (the file escapes them); semail-admin checks content. */
    if (u->ssh_keys && strlen(u->ssh_keys) > REG_KEYS_MAX)
        return semail__err(SEMAIL_EINVAL, "ssh_keys: longer than %u bytes", REG_KEYS_MAX);
    return 0;
}

/* ---- the snapshot ------------------------------------------------------- */

static int reg_alloc(semail_registry **out, const char *state_dir)
{
    semail_registry *reg = calloc(1, sizeof(*reg));
    semail_buf b;
    int err;

    *out = NULL;
    if (reg == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    reg->fd = -1;
    semail__buf_init(&b, 4096);
    if ((err = semail__buf_printf(&b, "%s/registry", state_dir)) < 0) {
        free(reg);
        return err;
    }
    reg->path = b.data;
    *out = reg;
    return 0;
}

void semail_registry_free(semail_registry *reg)
{
    size_t i;
    if (reg == NULL)
        return;
    for (i = 0; i < reg->n; i++)
        user_clear(&reg->users[i]);
    for (i = 0; i < reg->naddrs; i++)
        free(reg->addrs[i].key);
    free(reg->users);
    free(reg->addrs);
    free(reg->domains);
    if (reg->fd >= 0)
        close(reg->fd);
    free(reg->path);
    free(reg);
}

static int reg_append(semail_registry *reg, const semail_user *u)
{
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 16;
        semail_user *p = realloc(reg->users, cap * sizeof(*p));
        if (p == NULL)
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        reg->users = p;
        reg->cap = cap;
    }
    return user_copy(&reg->users[reg->n++], u);
}

static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const semail_user *)a)->login, ((const semail_user *)b)->login);
}

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(((const struct addr_ent *)a)->key, ((const struct addr_ent *)b)->key);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sort the records and build the address and domain indexes. */
static int reg_index(semail_registry *reg)
{
    size_t i, n = reg->n;

    if (n > 1)
        qsort(reg->users, n, sizeof(*reg->users), cmp_user);
    for (i = 1; i < n; i++)
        if (strcmp(reg->users[i - 1].login, reg->users[i].login) == 0)
            return semail__err(SEMAIL_EINVAL, "%s: login '%s' appears twice", reg->path,
                               reg->users[i].login);
    reg->addrs = calloc(n ? n : 1, sizeof(*reg->addrs));
    reg->domains = calloc(n ? n : 1, sizeof(*reg->domains));
    if (reg->addrs == NULL || reg->domains == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (i = 0; i < n; i++) {
        semail_buf b;
        semail__buf_init(&b, REG_ADDRESS_MAX);
        if (semail__buf_printf(&b, "%s@%s", reg->users[i].id, reg->users[i].domain) < 0)
            return SEMAIL_ENOMEM;
        reg->addrs[i].key = b.data;
        reg->addrs[i].idx = i;
        reg->naddrs = i + 1;
        reg->domains[i] = reg->users[i].domain;
    }
    if (n > 1)
        qsort(reg->addrs, n, sizeof(*reg->addrs), cmp_addr);
    for (i = 1; i < n; i++)
        if (strcmp(reg->addrs[i - 1].key, reg->addrs[i].key) == 0)
            return semail__err(SEMAIL_EINVAL, "%s: address '%s' appears twice", reg->path,
                               reg->addrs[i].key);
    if (n > 1)
        qsort(reg->domains, n, sizeof(*reg->domains), cmp_str);
    reg->ndomains = 0;
    for (i = 0; i < n; i++)
        if (reg->ndomains == 0 || strcmp(reg->domains[reg->ndomains - 1], reg->domains[i]) != 0)
            reg->domains[reg->ndomains++] = reg->domains[i];
    return 0;
}

/* ---- the file format ---------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode N bytes at S into a new string; NULL on a bad escape or a NUL. */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    size_t i;
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        if (i + 2 >= n) {
            free(out);
            return NULL;
        }
        int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

static int encode(semail_buf *b, const char *s)
{
    int err = 0;
    for (; *s && err == 0; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == '%' || c == '=')
            err = semail__buf_printf(b, "%%%02X", c);
        else
            err = semail__buf_add(b, s, 1);
    }
    return err;
}

static int parse_num(const char *v, uint64_t max, uint64_t *out)
{
    uint64_t x = 0;
    if (*v == '\0' || strlen(v) > 20)
        return -1;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        if (x > (UINT64_MAX - (uint64_t)(*v - '0')) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*v - '0');
    }
    if (x > max)
        return -1;
    *out = x;
    return 0;
}

enum { F_LOGIN = 1, F_ID = 2, F_DOMAIN = 4, F_KIND = 8, F_UID = 16, F_STATE = 32 };

/* Set one field of U from NAME=VALUE; unknown names are ignored. */
static int set_field(semail_user *u, unsigned *seen, const char *name, char *value)
{
    static const char *const strs[] = {"login", "id", "domain", "storage", "container", "ssh_keys"};
    const char **dst[] = {&u->login, &u->id, &u->domain, &u->storage, &u->container, &u->ssh_keys};
    uint64_t x;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(strs); i++) {
        if (strcmp(name, strs[i]) == 0) {
            if (*dst[i])
                return semail__err(SEMAIL_EINVAL, "field '%s' appears twice", name);
            *dst[i] = value;
            *seen |= i == 0 ? F_LOGIN : i == 1 ? F_ID : i == 2 ? F_DOMAIN : 0;
            return 1; /* VALUE is now owned by U */
        }
    }
    if (strcmp(name, "kind") == 0) {
        u->kind = strcmp(value, "subdomain") == 0 ? SEMAIL_DOMAIN_SUBDOMAIN
                  : strcmp(value, "domain") == 0  ? SEMAIL_DOMAIN_OWN
                                                  : 0;
        *seen |= F_KIND;
    } else if (strcmp(name, "state") == 0) {
        u->state = strcmp(value, "creating") == 0   ? SEMAIL_USER_CREATING
                   : strcmp(value, "active") == 0   ? SEMAIL_USER_ACTIVE
                   : strcmp(value, "deleting") == 0 ? SEMAIL_USER_DELETING
                                                    : 0;
        *seen |= F_STATE;
    } else if (strcmp(name, "uid") == 0 || strcmp(name, "gid") == 0) {
        if (parse_num(value, REG_UID_MAX, &x) < 0)
            return semail__err(SEMAIL_EINVAL, "field '%s': not a number", name);
        if (name[0] == 'u') {
            u->uid = (uid_t)x;
            *seen |= F_UID;
        } else {
            u->gid = (gid_t)x;
        }
    } else if (strcmp(name, "size") == 0 || strcmp(name, "ssh_port") == 0 ||
               strcmp(name, "created") == 0) {
        uint64_t max = name[1] == 'i' ? UINT64_MAX : name[1] == 's' ? 65535 : INT64_MAX;
        if (parse_num(value, max, &x) < 0)
            return semail__err(SEMAIL_EINVAL, "field '%s': not a number", name);
        if (name[1] == 'i')
            u->size = x;
        else if (name[1] == 's')
            u->ssh_port = (int)x;
        else
            u->created = (int64_t)x;
    }
    free(value);
    return 0;
}

static int parse_record(semail_user *u, char *line)
{
    unsigned seen = 0;
    char *save = NULL, *field;
    int err;

    memset(u, 0, sizeof(*u));
    u->version = SEMAIL_USER_VERSION;
    for (field = strtok_r(line, "\t", &save); field; field = strtok_r(NULL, "\t", &save)) {
        char *eq = strchr(field, '='), *value;
        if (eq == NULL)
            return semail__err(SEMAIL_EINVAL, "a field without '='");
        *eq = '\0';
        if ((value = decode(eq + 1, strlen(eq + 1))) == NULL)
            return semail__err(SEMAIL_EINVAL, "field '%.32s': bad %%-escape", field);
        if ((err = set_field(u, &seen, field, value)) < 0) {
            free(value);
            return err;
        }
    }
    if ((seen & (F_LOGIN | F_ID | F_DOMAIN | F_KIND | F_UID | F_STATE)) !=
        (F_LOGIN | F_ID | F_DOMAIN | F_KIND | F_UID | F_STATE))
        return semail__err(SEMAIL_EINVAL, "login, id, domain, kind, uid and state are required");
    if (u->storage == NULL && (u->storage = semail__strdup("directory")) == NULL)
        return SEMAIL_ENOMEM;
    return validate_user(u);
}

/* Re-record the last error as "PATH:LINE: message". */
static int at_line(int code, const char *path, unsigned line)
{
    char msg[512];
    (void)semail__strlcpy(msg, semail_error_last(), sizeof(msg));
    return semail__err(code, "%s:%u: %s", path, line, msg);
}

static int parse_file(semail_registry *reg, char *text, size_t len)
{
    size_t pos = 0;
    unsigned line = 0;
    int err;

    while (pos < len) {
        char *l = text + pos, *nl = memchr(l, '\n', len - pos);
        semail_user u;
        if (nl == NULL)
            return semail__err(SEMAIL_EINVAL, "%s:%u: the last line has no end", reg->path,
                               line + 1);
        *nl = '\0';
        pos = (size_t)(nl - text) + 1;
        if (++line == 1) {
            if (strcmp(l, REG_HEADER) != 0)
                return semail__err(SEMAIL_EINVAL, "%s:1: not a registry (expected '%s')", reg->path,
                                   REG_HEADER);
            continue;
        }
        if (l[0] == '\0' || l[0] == '#')
            continue;
        if (memchr(l, '\0', (size_t)(nl - l)) != NULL) {
            return semail__err(SEMAIL_EINVAL, "%s:%u: NUL byte", reg->path, line);
        }
        err = parse_record(&u, l);
        if (err == 0) {
            err = reg_append(reg, &u);
        }
        user_clear(&u);
        if (err < 0)
            return at_line(err, reg->path, line);
    }
    return 0;
}

static int read_all(int fd, semail_buf *b, const char *path)
{
    char chunk[65536];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return semail__errno(SEMAIL_EIO, errno, "read %s", path);
        if (r == 0)
            return 0;
        if (semail__buf_add(b, chunk, (size_t)r) < 0)
            return semail__err(SEMAIL_ETOOBIG, "%s: larger than %u bytes", path, REG_FILE_MAX);
    }
}

int semail_registry_load(semail_registry **out, const char *state_dir)
{
    semail_registry *reg;
    semail_buf b;
    struct stat st;
    int err = 0;

    *out = NULL;
    if ((err = reg_alloc(&reg, state_dir)) < 0)
        return err;
    semail__buf_init(&b, REG_FILE_MAX);
    reg->fd = open(reg->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (reg->fd < 0 && errno != ENOENT) {
        err = semail__errno(SEMAIL_EIO, errno, "open %s", reg->path);
        goto done;
    }
    if (reg->fd >= 0) {
        if (fstat(reg->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            err = semail__err(SEMAIL_EIO, "%s: not a regular file", reg->path);
            goto done;
        }
        reg->dev = st.st_dev;
        reg->ino = st.st_ino;
        reg->size = st.st_size;
        reg->mtim = st.st_mtim;
        if ((err = read_all(reg->fd, &b, reg->path)) < 0 ||
            (err = parse_file(reg, b.data, b.len)) < 0)
            goto done;
    }
    if ((err = reg_index(reg)) < 0)
        goto done;
    *out = reg;
    reg = NULL;
done:
    semail__buf_free(&b);
    semail_registry_free(reg);
    return err;
}

int semail_registry_changed(const semail_registry *reg)
{
    struct stat st;
    if (stat(reg->path, &st) < 0)
        return !(errno == ENOENT && reg->fd < 0);
    if (reg->fd < 0)
        return 1;
    return st.st_dev != reg->dev || st.st_ino != reg->ino || st.st_size != reg->size ||
           st.st_mtim.tv_sec != reg->mtim.tv_sec || st.st_mtim.tv_nsec != reg->mtim.tv_nsec;
}

size_t semail_registry_count(const semail_registry *reg)
{
    return reg->n;
}

const semail_user *semail_registry_get(const semail_registry *reg, size_t i)
{
    return i < reg->n ? &reg->users[i] : NULL;
}

int semail_registry_find_login(const semail_user **out, const semail_registry *reg,
                               const char *login)
{
    semail_user key;
    memset(&key, 0, sizeof(key));
    key.login = login;
    *out = reg->n ? bsearch(&key, reg->users, reg->n, sizeof(*reg->users), cmp_user) : NULL;
    return *out ? 0 : semail__err(SEMAIL_ENOTFOUND, "no box for login '%.64s'", login);
}

int semail_registry_find_address(const semail_user **out, const semail_registry *reg,
                                 const char *local, const char *domain)
{
    char buf[REG_ADDRESS_MAX];
    struct addr_ent key, *hit;
    size_t ln = strlen(local), dn = strlen(domain), i;

    *out = NULL;
    if (ln > 32 || dn > 253 || ln + dn + 2 > sizeof(buf))
        return SEMAIL_ENOTFOUND;
    for (i = 0; i < ln; i++)
        buf[i] = (char)semail__tolower((unsigned char)local[i]);
    buf[ln] = '@';
    for (i = 0; i <= dn; i++)
        buf[ln + 1 + i] = (char)semail__tolower((unsigned char)domain[i]);
    key.key = buf;
    hit =
        reg->naddrs ? bsearch(&key, reg->addrs, reg->naddrs, sizeof(*reg->addrs), cmp_addr) : NULL;
    if (hit == NULL || reg->users[hit->idx].state != SEMAIL_USER_ACTIVE)
        return SEMAIL_ENOTFOUND;
    *out = &reg->users[hit->idx];
    return 0;
}

int semail_registry_has_domain(const semail_registry *reg, const char *domain)
{
    char buf[256];
    const char *key = buf;
    size_t n = strlen(domain), i;
    if (n >= sizeof(buf))
        return 0;
    for (i = 0; i <= n; i++)
        buf[i] = (char)semail__tolower((unsigned char)domain[i]);
    return reg->ndomains &&
           bsearch(&key, reg->domains, reg->ndomains, sizeof(*reg->domains), cmp_str) != NULL;
}

static int cmp_uid(const void *a, const void *b)
{
    uid_t x = *(const uid_t *)a, y = *(const uid_t *)b;
    return x < y ? -1 : x > y;
}

int semail_registry_free_uid(uid_t *out, const semail_registry *reg, uid_t low, uid_t high)
{
    uid_t *used = malloc((reg->n ? reg->n : 1) * sizeof(*used));
    uint64_t u;
    size_t i, j = 0;

    if (used == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (i = 0; i < reg->n; i++)
        used[i] = reg->users[i].uid;
    if (reg->n > 1)
        qsort(used, reg->n, sizeof(*used), cmp_uid);
    for (u = low; u <= high && low <= high; u++) {
        while (j < reg->n && used[j] < u)
            j++;
        if (j >= reg->n || used[j] != u) {
            free(used);
            *out = (uid_t)u;
            return 0;
        }
    }
    free(used);
    return semail__err(SEMAIL_EFULL, "every uid from %lu to %lu is taken", (unsigned long)low,
                       (unsigned long)high);
}

/* ---- writers ------------------------------------------------------------ */

int semail__registry_lock(int *fd, const char *state_dir, unsigned timeout_ms)
{
    char path[4096];
    unsigned waited = 0;
    int err;

    *fd = -1;
    if ((err = semail__fmt(path, sizeof(path), "%s/registry.lock", state_dir)) < 0)
        return err;
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (*fd < 0)
        return semail__errno(SEMAIL_EIO, errno, "open %s", path);
    while (flock(*fd, LOCK_EX | LOCK_NB) < 0) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        if (errno != EWOULDBLOCK && errno != EINTR) {
            err = semail__errno(SEMAIL_EIO, errno, "flock %s", path);
            break;
        }
        if (waited >= timeout_ms) {
            err = semail__err(SEMAIL_ELOCKED, "%s: held by another writer for %u ms", path,
                              timeout_ms);
            break;
        }
        nanosleep(&ts, NULL);
        waited += 10;
    }
    if (err < 0) {
        close(*fd);
        *fd = -1;
    }
    return err;
}

void semail__registry_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* closing the only descriptor releases the flock */
}

static int serialize(semail_buf *b, semail_registry *reg)
{
    static const char *const kinds[] = {"", "subdomain", "domain"};
    static const char *const states[] = {"", "creating", "active", "deleting"};
    size_t i;
    int err = semail__buf_addstr(b, REG_HEADER "\n");

    if (reg->n > 1)
        qsort(reg->users, reg->n, sizeof(*reg->users), cmp_user);
    for (i = 0; i < reg->n && err == 0; i++) {
        const semail_user *u = &reg->users[i];
        if ((err = semail__buf_addstr(b, "login=")) < 0 || (err = encode(b, u->login)) < 0 ||
            (err = semail__buf_addstr(b, "\tid=")) < 0 || (err = encode(b, u->id)) < 0 ||
            (err = semail__buf_addstr(b, "\tdomain=")) < 0 || (err = encode(b, u->domain)) < 0 ||
            (err = semail__buf_printf(b, "\tkind=%s\tuid=%lu\tgid=%lu\tstorage=", kinds[u->kind],
                                      (unsigned long)u->uid, (unsigned long)u->gid)) < 0 ||
            (err = encode(b, u->storage)) < 0 ||
            (err = semail__buf_printf(b, "\tsize=%llu", (unsigned long long)u->size)) < 0)
            break;
        if (u->container && ((err = semail__buf_addstr(b, "\tcontainer=")) < 0 ||
                             (err = encode(b, u->container)) < 0))
            break;
        if ((err = semail__buf_printf(b, "\tssh_port=%d", u->ssh_port)) < 0)
            break;
        if (u->ssh_keys && ((err = semail__buf_addstr(b, "\tssh_keys=")) < 0 ||
                            (err = encode(b, u->ssh_keys)) < 0))
            break;
        err = semail__buf_printf(b, "\tstate=%s\tcreated=%lld\n", states[u->state],
                                 (long long)u->created);
    }
    return err;
}

static int write_file(semail_registry *reg, const char *state_dir)
{
    char tmp[4096];
    semail_buf b;
    int fd = -1, err;

    semail__buf_init(&b, REG_FILE_MAX);
    if ((err = semail__fmt(tmp, sizeof(tmp), "%s/registry.tmp.%ld", state_dir, (long)getpid())) <
            0 ||
        (err = serialize(&b, reg)) < 0)
        goto done;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd < 0) {
        err = semail__errno(semail__errno_code(errno), errno, "open %s", tmp);
        goto done;
    }
    if (fchmod(fd, 0644) < 0 || semail__write_all(fd, b.data, b.len) < 0 || fsync(fd) < 0) {
        err = semail__errno(semail__errno_code(errno), errno, "write %s", tmp);
        goto done;
    }
    if (close(fd) < 0) {
        fd = -1;
        err = semail__errno(semail__errno_code(errno), errno, "close %s", tmp);
        goto done;
    }
    fd = -1;
    if (rename(tmp, reg->path) < 0) {
        err = semail__errno(semail__errno_code(errno), errno, "rename %s", tmp);
        goto done;
    }
    tmp[0] = '\0';
    err = semail__fsync_parent(reg->path);
done:
    if (fd >= 0)
        close(fd);
    if (err < 0 && tmp[0])
        unlink(tmp);
    semail__buf_free(&b);
    return err;
}

/* Whether U (which replaces record SKIP, or is new when SKIP == n) collides. */
static int check_unique(const semail_registry *reg, const semail_user *u, size_t skip)
{
    size_t i;
    for (i = 0; i < reg->n; i++) {
        const semail_user *o = &reg->users[i];
        if (i == skip)
            continue;
        if (strcmp(o->login, u->login) == 0)
            return semail__err(SEMAIL_EEXISTS, "login '%s' already has a box", u->login);
        if (semail__strcasecmp(o->domain, u->domain) == 0 && semail__strcasecmp(o->id, u->id) == 0)
            return semail__err(SEMAIL_EEXISTS, "address '%s@%s' is taken", u->id, u->domain);
        if (semail__strcasecmp(o->domain, u->domain) == 0)
            return semail__err(SEMAIL_EEXISTS, "domain '%s' is taken by another box", u->domain);
        if (o->uid == u->uid)
            return semail__err(SEMAIL_EEXISTS, "uid %lu is taken", (unsigned long)u->uid);
        if (u->ssh_port && o->ssh_port == u->ssh_port)
            return semail__err(SEMAIL_EEXISTS, "ssh_port %d is taken", u->ssh_port);
    }
    return 0;
}

static size_t index_of(const semail_registry *reg, const char *login)
{
    size_t i;
    for (i = 0; i < reg->n; i++)
        if (strcmp(reg->users[i].login, login) == 0)
            return i;
    return reg->n;
}

enum reg_op { OP_ADD, OP_UPDATE, OP_REMOVE };

static int edit(semail_registry *reg, enum reg_op op, const semail_user *u, const char *login)
{
    size_t i = index_of(reg, login);
    int err;

    if (op != OP_ADD && i == reg->n)
        return semail__err(SEMAIL_ENOTFOUND, "no box for login '%s'", login);
    if (op == OP_REMOVE) {
        user_clear(&reg->users[i]);
        memmove(&reg->users[i], &reg->users[i + 1], (reg->n - i - 1) * sizeof(*reg->users));
        reg->n--;
        return 0;
    }
    if ((err = check_unique(reg, u, op == OP_ADD ? reg->n : i)) < 0)
        return err;
    if (op == OP_ADD)
        return reg_append(reg, u);
    semail_user copy;
    if ((err = user_copy(&copy, u)) < 0)
        return err;
    user_clear(&reg->users[i]);
    reg->users[i] = copy;
    return 0;
}

static int modify(const char *state_dir, enum reg_op op, const semail_user *u, const char *login)
{
    semail_registry *reg = NULL;
    int lock = -1, err;

    if (u && (err = validate_user(u)) < 0)
        return err;
    if (u == NULL && (err = semail_validate_name(login)) < 0)
        return prefixed(err, "login");
    if ((err = semail__registry_lock(&lock, state_dir, SEMAIL__REGISTRY_LOCK_TIMEOUT_MS)) < 0)
        return err;
    if ((err = semail_registry_load(&reg, state_dir)) < 0 || (err = edit(reg, op, u, login)) < 0 ||
        (err = write_file(reg, state_dir)) < 0)
        goto done;
done:
    semail_registry_free(reg);
    semail__registry_unlock(lock);
    return err;
}

int semail_registry_add(const char *state_dir, const semail_user *user)
{
    return modify(state_dir, OP_ADD, user, user->login);
}

int semail_registry_update(const char *state_dir, const semail_user *user)
{
    return modify(state_dir, OP_UPDATE, user, user->login);
}

int semail_registry_remove(const char *state_dir, const char *login)
{
    return modify(state_dir, OP_REMOVE, NULL, login);
}
