/*
 * config.c - read the INI configuration file and check it against the
 * schema of config_schema.c.
 *
 * Contract: a configuration is either fully valid or not returned at all;
 * every error names the file, the line and the key ("FILE:LINE: key 'K' in
 * [S]: what is wrong"). After a successful parse every key of the schema
 * has a value (the file's, or its resolved default), so the getters never
 * fail for a key of the schema. A loaded configuration is never modified.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config_schema.h"
#include "semail/config.h"

#define CFG_LINE_MAX (4096)
#define CFG_FILE_MAX (1024 * 1024)
#define CFG_WHY_MAX  (256)

struct semail_config {
    char *path;
    char **values;          /* one per schema key, resolved; owned */
    unsigned int *lines;    /* line that set each key; 0: default */
    unsigned int *seclines; /* first line of each section; 0: absent */
};

/* ---- small text helpers ------------------------------------------------- */

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static char *trim(char *s)
{
    char *e;
    while (is_space((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && is_space((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Copy S into DST for a message: printable ASCII kept, the rest \xNN, cut at 64. */
static void quote(char *dst, size_t n, const char *s)
{
    size_t o = 0, i;
    for (i = 0; s[i] && o + 8 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 64) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f)
            dst[o++] = (char)c;
        else
            o += (size_t)snprintf(dst + o, n - o, "\\x%02X", c);
    }
    dst[o] = '\0';
}

/* ---- value parsers, shared by validation and the getters ---------------- */

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;
    if (n == 0 || n > 20)
        return -1;
    for (i = 0; i < n; i++) {
        unsigned d;
        if (!is_digit((unsigned char)s[i]))
            return -1;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    unsigned shift = 0;
    uint64_t v;

    if (n > 0) {
        switch (s[n - 1]) {
        case 'k':
        case 'K':
            shift = 10;
            break;
        case 'm':
        case 'M':
            shift = 20;
            break;
        case 'g':
        case 'G':
            shift = 30;
            break;
        case 't':
        case 'T':
            shift = 40;
            break;
        default:
            break;
        }
    }
    if (parse_u64(s, shift ? n - 1 : n, &v) < 0)
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = v << shift;
    return 0;
}

/* A duration in seconds. */
static int parse_duration(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    uint64_t mult = 1, v;

    if (n > 0) {
        switch (s[n - 1]) {
        case 's':
            mult = 1;
            break;
        case 'm':
            mult = 60;
            break;
        case 'h':
            mult = 3600;
            break;
        case 'd':
            mult = 86400;
            break;
        default:
            mult = 0;
            break;
        }
    }
    if (parse_u64(s, mult ? n - 1 : n, &v) < 0)
        return -1;
    if (mult == 0)
        mult = 1;
    /* Bounded so that milliseconds always fit. */
    if (v > UINT64_MAX / 1000 / mult)
        return -1;
    *out = v * mult;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    size_t i;
    for (i = 0; i < SEMAIL_ARRAY_LEN(yes); i++) {
        if (semail__strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (semail__strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int parse_range(const char *s, uint64_t *lo, uint64_t *hi)
{
    const char *dash = strchr(s, '-');
    if (dash == NULL || parse_u64(s, (size_t)(dash - s), lo) < 0 ||
        parse_u64(dash + 1, strlen(dash + 1), hi) < 0)
        return -1;
    return 0;
}

/* ---- checks: each returns 0, or -1 with WHY saying what is wrong -------- */

#define WHY(...) (snprintf(why, CFG_WHY_MAX, __VA_ARGS__), -1)

static int check_hostname(const char *v, char *why)
{
    size_t n = strlen(v), label = 0, i;
    if (n == 0 || n > 253)
        return WHY("a host name has 1 to 253 bytes");
    for (i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '.' || c == '\0') {
            if (label == 0)
                return WHY("empty label in host name");
            if (v[i - 1] == '-' || v[i - label] == '-')
                return WHY("a label of a host name neither starts nor ends with '-'");
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-'))
            return WHY("a host name has only letters, digits, '-' and '.'");
        if (++label > 63)
            return WHY("a label of a host name has at most 63 bytes");
    }
    return 0;
}

static int check_address(const char *v, char *why)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, v, buf) == 1 || inet_pton(AF_INET6, v, buf) == 1)
        return 0;
    return WHY("not an IPv4 or IPv6 address");
}

static int check_port(const char *p, char *why)
{
    uint64_t port;
    if (parse_u64(p, strlen(p), &port) < 0 || port > 65535)
        return WHY("the port is a number from 0 to 65535");
    return 0;
}

/* HOST:PORT, HOST an IP literal or a name, IPv6 in brackets. */
static int check_hostport(const char *item, char *why)
{
    char host[256];
    const char *colon;
    size_t hn;

    if (item[0] == '[') {
        const char *close = strchr(item, ']');
        unsigned char buf[16];
        if (close == NULL || close[1] != ':')
            return WHY("expected [IPV6]:PORT");
        hn = (size_t)(close - item - 1);
        if (hn >= sizeof(host))
            return WHY("address too long");
        memcpy(host, item + 1, hn);
        host[hn] = '\0';
        if (inet_pton(AF_INET6, host, buf) != 1)
            return WHY("'%.64s' is not an IPv6 address", host);
        return check_port(close + 2, why);
    }
    colon = strrchr(item, ':');
    if (colon == NULL)
        return WHY("expected HOST:PORT");
    hn = (size_t)(colon - item);
    if (hn == 0 || hn >= sizeof(host))
        return WHY("expected HOST:PORT");
    memcpy(host, item, hn);
    host[hn] = '\0';
    if (strchr(host, ':'))
        return WHY("an IPv6 address goes in brackets: [ADDRESS]:PORT");
    if (check_address(host, why) < 0 && check_hostname(host, why) < 0)
        return WHY("'%.64s' is neither an IP address nor a host name", host);
    return check_port(colon + 1, why);
}

static int check_cidr(const char *item, char *why)
{
    char addr[64];
    const char *slash = strchr(item, '/');
    size_t an = slash ? (size_t)(slash - item) : strlen(item);
    unsigned char buf[16];
    uint64_t prefix, max;

    if (an == 0 || an >= sizeof(addr))
        return WHY("expected ADDRESS/PREFIX");
    memcpy(addr, item, an);
    addr[an] = '\0';
    if (inet_pton(AF_INET, addr, buf) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, addr, buf) == 1)
        max = 128;
    else
        return WHY("'%.64s' is not an IPv4 or IPv6 address", addr);
    if (slash && (parse_u64(slash + 1, strlen(slash + 1), &prefix) < 0 || prefix > max))
        return WHY("the prefix length of '%.64s' is 0 to %u", addr, (unsigned)max);
    return 0;
}

/* Call CHECK on each comma-separated item; at least one item. */
static int check_list(const char *v, int (*check)(const char *, char *), char *why)
{
    char buf[CFG_LINE_MAX + 1];
    char *save = NULL, *tok;
    int items = 0;

    if (semail__strlcpy(buf, v, sizeof(buf)) < 0)
        return WHY("value too long");
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (*tok == '\0')
            continue;
        if (check(tok, why) < 0)
            return -1;
        items++;
    }
    if (items == 0)
        return WHY("the list is empty");
    return 0;
}

static int check_duration_item(const char *v, char *why)
{
    uint64_t s;
    if (parse_duration(v, &s) < 0 || s == 0)
        return WHY("'%.64s' is not a duration above zero (seconds, or with s, m, h, d)", v);
    return 0;
}

static int check_ldap_uri(const char *v, char *why)
{
    const char *rest;
    char hp[300];
    size_t n;

    if (strncmp(v, "ldap://", 7) == 0)
        rest = v + 7;
    else if (strncmp(v, "ldaps://", 8) == 0)
        rest = v + 8;
    else
        return WHY("an LDAP URI starts with ldap:// or ldaps://");
    n = strcspn(rest, "/");
    if (n == 0 || n >= sizeof(hp) || (rest[n] == '/' && rest[n + 1] != '\0'))
        return WHY("expected ldap://HOST[:PORT] or ldaps://HOST[:PORT]");
    memcpy(hp, rest, n);
    hp[n] = '\0';
    if (hp[0] == '[' || strchr(hp, ':'))
        return check_hostport(hp, why);
    return check_hostname(hp, why) < 0 && check_address(hp, why) < 0 ? -1 : 0;
}

static int check_printable(const char *v, char *why)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return WHY("control characters are not allowed");
    return 0;
}

static int check_ldap_template(const char *v, char *why)
{
    int depth = 0;
    const char *p;
    if (check_printable(v, why) < 0)
        return -1;
    if (strstr(v, "%u") == NULL)
        return WHY("must contain %%u (the login)");
    if (v[0] != '(')
        return 0; /* a DN template */
    for (p = v; *p; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && --depth < 0)
            break;
    }
    if (depth != 0)
        return WHY("unbalanced parentheses in the filter");
    return 0;
}

static int check_value(const struct semail__cfg_key *k, const char *v, char *why)
{
    uint64_t a, b;
    int flag;
    const char *p;

    if (*v == '\0')
        return (k->flags & CFG_EMPTY_OK) ? 0 : WHY("a value is required");
    switch (k->type) {
    case CFG_STRING:
        return check_printable(v, why);
    case CFG_NAME:
        if (strlen(v) > 64 || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789._-") != strlen(v))
            return WHY("expected 1-64 of A-Z, a-z, 0-9, '.', '_', '-'");
        return 0;
    case CFG_HOSTNAME:
        return check_hostname(v, why);
    case CFG_PATH:
        if (v[0] != '/')
            return WHY("expected an absolute path (starting with '/')");
        return check_printable(v, why);
    case CFG_SIZE:
        return parse_size(v, &a) < 0
                   ? WHY("expected a size: bytes, or a number with a k, m, g or t suffix")
                   : 0;
    case CFG_DURATION:
        return parse_duration(v, &a) < 0
                   ? WHY("expected a duration: seconds, or a number with an s, m, h or d suffix")
                   : 0;
    case CFG_DURATION_LIST:
        return check_list(v, check_duration_item, why);
    case CFG_BOOL:
        return parse_bool(v, &flag) < 0 ? WHY("expected yes/no, true/false, on/off or 1/0") : 0;
    case CFG_UINT:
        if (parse_u64(v, strlen(v), &a) < 0 || (k->max && a > k->max))
            return WHY("expected a whole number from 0 to %llu",
                       (unsigned long long)(k->max ? k->max : UINT64_MAX));
        return 0;
    case CFG_DECIMAL:
        p = v + strspn(v, "0123456789");
        if (p == v ||
            (*p == '.' && (p[1] == '\0' || strspn(p + 1, "0123456789") != strlen(p + 1))) ||
            (*p != '.' && *p != '\0') || strlen(v) > 20)
            return WHY("expected a number such as 2 or 0.5");
        return 0;
    case CFG_LISTEN:
        return check_list(v, check_hostport, why);
    case CFG_HOSTPORT:
        return check_hostport(v, why);
    case CFG_ADDRESS:
        return check_address(v, why);
    case CFG_CIDR_LIST:
        return check_list(v, check_cidr, why);
    case CFG_RANGE:
        if (parse_range(v, &a, &b) < 0)
            return WHY("expected a range LOW-HIGH");
        if (a > b)
            return WHY("the low end %llu is above the high end %llu", (unsigned long long)a,
                       (unsigned long long)b);
        if (k->max && b > k->max)
            return WHY("the high end is at most %llu", (unsigned long long)k->max);
        return 0;
    case CFG_ENUM: {
        size_t n = strlen(v);
        for (p = strchr(v, '|') ? NULL : k->choices; p;
             p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL)
            if (strncmp(p, v, n) == 0 && (p[n] == '|' || p[n] == '\0'))
                return 0;
        return WHY("expected one of %s", k->choices);
    }
    case CFG_LDAP_URI:
        return check_ldap_uri(v, why);
    case CFG_LDAP_TEMPLATE:
        return check_ldap_template(v, why);
    }
    return WHY("unknown type");
}

/* ---- the parser ---------------------------------------------------------- */

static int find_section(const char *name)
{
    size_t i;
    for (i = 0; i < semail__cfg_nsections; i++)
        if (strcmp(semail__cfg_sections[i], name) == 0)
            return (int)i;
    return -1;
}

static int find_key(const char *section, const char *key)
{
    size_t i;
    for (i = 0; i < semail__cfg_nkeys; i++)
        if (strcmp(semail__cfg_schema[i].section, section) == 0 &&
            strcmp(semail__cfg_schema[i].key, key) == 0)
            return (int)i;
    return -1;
}

/* "FILE:LINE: key 'KEY' in [SECTION]: WHY" */
static int key_error(const semail_config *cfg, unsigned line, const char *section, const char *key,
                     const char *why)
{
    char qk[300];
    quote(qk, sizeof(qk), key);
    if (section == NULL)
        return semail__err(SEMAIL_ECONFIG, "%s:%u: key '%s' outside a section: %s", cfg->path, line,
                           qk, why);
    return semail__err(SEMAIL_ECONFIG, "%s:%u: key '%s' in [%s]: %s", cfg->path, line, qk, section,
                       why);
}

/* Cut a comment: '#' at the start of the value or after white space. */
static void cut_comment(char *v)
{
    size_t i;
    for (i = 0; v[i]; i++) {
        if (v[i] == '#' && (i == 0 || is_space((unsigned char)v[i - 1]))) {
            v[i] = '\0';
            return;
        }
    }
}

static int parse_section(semail_config *cfg, char *s, unsigned line, int *sec)
{
    char *close = strchr(s, ']'), *rest, *name;
    char qn[300];

    if (close == NULL)
        return semail__err(SEMAIL_ECONFIG, "%s:%u: section header without ']'", cfg->path, line);
    *close = '\0';
    rest = trim(close + 1);
    if (*rest != '\0' && *rest != '#' && *rest != ';')
        return semail__err(SEMAIL_ECONFIG, "%s:%u: text after the section header", cfg->path, line);
    name = trim(s + 1);
    *sec = find_section(name);
    if (*sec < 0) {
        quote(qn, sizeof(qn), name);
        return semail__err(SEMAIL_ECONFIG, "%s:%u: unknown section [%s]", cfg->path, line, qn);
    }
    if (cfg->seclines[*sec] == 0)
        cfg->seclines[*sec] = line;
    return 0;
}

static int parse_key(semail_config *cfg, char *s, unsigned line, int sec)
{
    const char *section = sec >= 0 ? semail__cfg_sections[sec] : NULL;
    char why[CFG_WHY_MAX];
    char *eq = strchr(s, '='), *key, *value;
    int k;

    if (eq == NULL)
        return key_error(cfg, line, section, trim(s), "line without '=' (expected key = value)");
    *eq = '\0';
    key = trim(s);
    value = eq + 1;
    cut_comment(value);
    value = trim(value);
    if (*key == '\0')
        return semail__err(SEMAIL_ECONFIG, "%s:%u: line starts with '=': the key is missing",
                           cfg->path, line);
    if (section == NULL)
        return key_error(cfg, line, NULL, key, "put it under a [section] such as [global]");
    k = find_key(section, key);
    if (k < 0)
        return key_error(cfg, line, section, key, "unknown key");
    if (cfg->lines[k]) {
        snprintf(why, sizeof(why), "duplicated key (first set on line %u)", cfg->lines[k]);
        return key_error(cfg, line, section, key, why);
    }
    if (check_value(&semail__cfg_schema[k], value, why) < 0)
        return key_error(cfg, line, section, key, why);
    if ((cfg->values[k] = semail__strdup(value)) == NULL)
        return SEMAIL_ENOMEM;
    cfg->lines[k] = line;
    return 0;
}

static int parse_line(semail_config *cfg, char *raw, unsigned line, int *sec)
{
    char *s = trim(raw);
    if (*s == '\0' || *s == '#' || *s == ';')
        return 0;
    if (*s == '[')
        return parse_section(cfg, s, line, sec);
    return parse_key(cfg, s, line, *sec);
}

static int parse_text(semail_config *cfg, const char *text, size_t len)
{
    char buf[CFG_LINE_MAX + 2];
    size_t pos = 0;
    unsigned line = 0;
    int sec = -1, err;

    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
        line++;
        if (n > CFG_LINE_MAX)
            return semail__err(SEMAIL_ECONFIG, "%s:%u: line longer than %d bytes", cfg->path, line,
                               CFG_LINE_MAX);
        if (memchr(text + pos, '\0', n))
            return semail__err(SEMAIL_ECONFIG, "%s:%u: NUL byte in the line", cfg->path, line);
        memcpy(buf, text + pos, n);
        buf[n] = '\0';
        pos += n + (nl ? 1 : 0);
        if ((err = parse_line(cfg, buf, line, &sec)) < 0)
            return err;
    }
    return 0;
}

/* Fill defaults (derived ones after the others), then cross-check. */
static int resolve(semail_config *cfg)
{
    size_t i;
    char why[CFG_WHY_MAX];

    for (i = 0; i < semail__cfg_nkeys; i++) {
        const struct semail__cfg_key *k = &semail__cfg_schema[i];
        if (cfg->values[i] == NULL && k->def && (cfg->values[i] = semail__strdup(k->def)) == NULL)
            return SEMAIL_ENOMEM;
    }
    for (i = 0; i < semail__cfg_nkeys; i++) {
        const struct semail__cfg_key *k = &semail__cfg_schema[i];
        if (cfg->values[i] == NULL) {
            int from = find_key(k->from_section, k->from_key);
            if (from < 0 || (cfg->values[i] = semail__strdup(cfg->values[from])) == NULL)
                return from < 0 ? semail__err(SEMAIL_ERROR, "bad schema") : SEMAIL_ENOMEM;
        }
    }
    {
        uint64_t lo = 0, hi = 0;
        int k = find_key("global", "uid_range");
        (void)parse_range(cfg->values[k], &lo, &hi);
        if (lo == 0)
            return key_error(cfg, cfg->lines[k], "global", "uid_range",
                             "uid 0 (root) is never given to a box: start at 1 or above");
    }
    {
        int f = find_key("ldap", "filter"), d = find_key("ldap", "bind_dn");
        int sec = find_section("ldap");
        if (cfg->seclines[sec] && cfg->values[f][0] == '\0' && cfg->values[d][0] == '\0') {
            snprintf(why, sizeof(why), "set a search filter or a bind_dn template");
            return key_error(cfg, cfg->lines[f] ? cfg->lines[f] : cfg->seclines[sec], "ldap",
                             "filter", why);
        }
    }
    {
        uint64_t all = 0, per = 0;
        int a = find_key("inbound", "max_connections"),
            p = find_key("inbound", "max_connections_per_client");
        (void)parse_u64(cfg->values[a], strlen(cfg->values[a]), &all);
        (void)parse_u64(cfg->values[p], strlen(cfg->values[p]), &per);
        if (per > all) {
            snprintf(why, sizeof(why), "%llu is above max_connections (%llu)",
                     (unsigned long long)per, (unsigned long long)all);
            return key_error(cfg, cfg->lines[p], "inbound", "max_connections_per_client", why);
        }
    }
    return 0;
}

static semail_config *config_alloc(const char *name)
{
    semail_config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        goto oom;
    cfg->path = semail__strdup(name);
    cfg->values = calloc(semail__cfg_nkeys, sizeof(*cfg->values));
    cfg->lines = calloc(semail__cfg_nkeys, sizeof(*cfg->lines));
    cfg->seclines = calloc(semail__cfg_nsections, sizeof(*cfg->seclines));
    if (cfg->path && cfg->values && cfg->lines && cfg->seclines)
        return cfg;
    semail_config_free(cfg);
oom:
    semail__err(SEMAIL_ENOMEM, "out of memory");
    return NULL;
}

int semail_config_parse(semail_config **out, const char *text, size_t len, const char *name)
{
    semail_config *cfg;
    int err;

    *out = NULL;
    if (text == NULL && len > 0)
        return semail__err(SEMAIL_EINVAL, "no text");
    if ((cfg = config_alloc(name ? name : "(config)")) == NULL)
        return SEMAIL_ENOMEM;
    if ((err = parse_text(cfg, text, len)) < 0 || (err = resolve(cfg)) < 0) {
        semail_config_free(cfg);
        return err;
    }
    *out = cfg;
    return 0;
}

static int read_file(const char *path, semail_buf *b)
{
    char chunk[8192];
    struct stat st;
    int fd, err = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT)
            return semail__err(SEMAIL_ENOTFOUND, "%s: no such file", path);
        return semail__errno(semail__errno_code(errno), errno, "%s: cannot open", path);
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        err = semail__err(SEMAIL_ECONFIG, "%s: not a regular file", path);
        goto done;
    }
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = semail__errno(SEMAIL_EIO, errno, "%s: read", path);
            goto done;
        }
        if (r == 0)
            break;
        if (semail__buf_add(b, chunk, (size_t)r) < 0) {
            err = semail__err(SEMAIL_ECONFIG, "%s: larger than %d bytes", path, CFG_FILE_MAX);
            goto done;
        }
    }
done:
    close(fd);
    return err;
}

int semail_config_load(semail_config **out, const char *path)
{
    semail_buf b;
    int err;

    *out = NULL;
    if (path == NULL) {
        const char *env = getenv("SEMAIL_CONFIG");
        path = (env && *env) ? env : SEMAIL_CONFIG_DEFAULT_PATH;
    }
    semail__buf_init(&b, CFG_FILE_MAX);
    if ((err = read_file(path, &b)) == 0)
        err = semail_config_parse(out, b.data ? b.data : "", b.len, path);
    semail__buf_free(&b);
    return err;
}

void semail_config_free(semail_config *cfg)
{
    size_t i;
    if (cfg == NULL)
        return;
    if (cfg->values)
        for (i = 0; i < semail__cfg_nkeys; i++)
            free(cfg->values[i]);
    free(cfg->values);
    free(cfg->lines);
    free(cfg->seclines);
    free(cfg->path);
    free(cfg);
}

const char *semail_config_path(const semail_config *cfg)
{
    return cfg->path;
}

int semail_config_has_section(const semail_config *cfg, const char *section)
{
    int s = find_section(section);
    return s >= 0 && cfg->seclines[s] != 0;
}

const char *semail_config_get(const semail_config *cfg, const char *section, const char *key)
{
    int k = find_key(section, key);
    return k < 0 ? NULL : cfg->values[k];
}

/* The value of a key for a typed getter, or an error naming the key. */
static int get_value(const semail_config *cfg, const char *section, const char *key,
                     const char **out)
{
    *out = semail_config_get(cfg, section, key);
    if (*out == NULL)
        return semail__err(SEMAIL_ENOTFOUND, "no key '%s' in [%s]", key, section);
    return 0;
}

static int bad_value(const char *section, const char *key, const char *what)
{
    return semail__err(SEMAIL_EINVAL, "key '%s' in [%s] is not %s", key, section, what);
}

int semail_config_get_size(const semail_config *cfg, const char *section, const char *key,
                           uint64_t *out)
{
    const char *v;
    int err;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    return parse_size(v, out) < 0 ? bad_value(section, key, "a size") : 0;
}

int semail_config_get_duration_ms(const semail_config *cfg, const char *section, const char *key,
                                  uint64_t *out)
{
    const char *v;
    uint64_t s;
    int err;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    if (parse_duration(v, &s) < 0)
        return bad_value(section, key, "a duration");
    *out = s * 1000;
    return 0;
}

int semail_config_get_bool(const semail_config *cfg, const char *section, const char *key, int *out)
{
    const char *v;
    int err;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    return parse_bool(v, out) < 0 ? bad_value(section, key, "a boolean") : 0;
}

int semail_config_get_uint(const semail_config *cfg, const char *section, const char *key,
                           uint64_t *out)
{
    const char *v;
    int err;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    if (strspn(v, "0123456789") != strlen(v) || *v == '\0')
        return bad_value(section, key, "a whole number");
    if (parse_u64(v, strlen(v), out) < 0)
        return semail__err(SEMAIL_ETOOBIG, "key '%s' in [%s] is too big", key, section);
    return 0;
}

int semail_config_get_range(const semail_config *cfg, const char *section, const char *key,
                            uint64_t *low, uint64_t *high)
{
    const char *v;
    int err;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    if (parse_range(v, low, high) < 0 || *low > *high)
        return bad_value(section, key, "a range LOW-HIGH");
    return 0;
}

void semail_config_list_free(char **list)
{
    char **p;
    if (list == NULL)
        return;
    for (p = list; *p; p++)
        free(*p);
    free(list);
}

int semail_config_get_list(const semail_config *cfg, const char *section, const char *key,
                           char ***out, size_t *count)
{
    const char *v, *p;
    char **list;
    size_t n = 0, cap = 1;
    int err;

    *out = NULL;
    if (count)
        *count = 0;
    if ((err = get_value(cfg, section, key, &v)) < 0)
        return err;
    for (p = v; *p; p++)
        cap += *p == ',';
    if ((list = calloc(cap + 1, sizeof(*list))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (p = v; *p;) {
        size_t len = strcspn(p, ",");
        const char *s = p, *e = p + len;
        while (s < e && is_space((unsigned char)*s))
            s++;
        while (e > s && is_space((unsigned char)e[-1]))
            e--;
        if (e > s && (list[n++] = semail__strndup(s, (size_t)(e - s))) == NULL) {
            semail_config_list_free(list);
            return SEMAIL_ENOMEM;
        }
        p += len + (p[len] == ',');
    }
    *out = list;
    if (count)
        *count = n;
    return 0;
}
