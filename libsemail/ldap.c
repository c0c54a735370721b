/*
 * ldap.c - directory authentication: search-then-bind, or a direct bind
 * with a DN template, over one fresh libldap connection per call.
 *
 * Contract: nothing is sent before the options, the login and the password
 * are checked; an empty password never reaches a bind (RFC 4513 5.1.2);
 * every connection speaks LDAPv3, chases no referral, has a network and an
 * operation timeout, and for ldaps:// its own TLS context (the configured
 * CA file, certificate and name verified, TLS 1.2 or later). libldap's
 * result codes become SEMAIL_E* codes in one place (code_of). Messages name
 * the server and never contain a password; text that comes from the server
 * is reduced to printable ASCII before it is quoted.
 */
#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#include "ldap_internal.h"
#include "semail/registry.h"

#define URI_MAX    1024 /* the whole uri option, all servers */
#define DIAG_MAX   200  /* server text quoted in a message */
#define SEARCH_ONE 2    /* size limit: enough to tell "one" from "several" */

typedef struct conn {
    LDAP *ld;
    const semail_ldap_options *o;
    unsigned int timeout_ms;
    struct timeval tv;
} conn;

static int empty(const char *s)
{
    return s == NULL || *s == '\0';
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* Copy S into DST for a message: printable ASCII kept, the rest '?'. */
static void sanitize(char *dst, size_t n, const char *s)
{
    size_t o = 0;
    for (; s != NULL && *s && o + 1 < n; s++)
        dst[o++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    dst[o] = '\0';
}

/* ---- options --------------------------------------------------------------- */

static int bad_option(const char *key, const char *why)
{
    return semail__err(SEMAIL_ECONFIG, "LDAP options: %s %s", key, why);
}

static int check_uris(const char *uri)
{
    const char *p = uri;
    size_t n;

    if (empty(uri))
        return bad_option("uri", "is required");
    if (strlen(uri) > URI_MAX || !printable(uri))
        return bad_option("uri", "is too long or holds control characters");
    for (p += strspn(p, " "); *p; p += n, p += strspn(p, " ")) {
        n = strcspn(p, " ");
        if (!(n > 7 && strncasecmp(p, "ldap://", 7) == 0) &&
            !(n > 8 && strncasecmp(p, "ldaps://", 8) == 0))
            return semail__err(SEMAIL_ECONFIG,
                               "LDAP options: uri '%.*s' is not ldap://HOST[:PORT] or "
                               "ldaps://HOST[:PORT]",
                               (int)n, p);
    }
    return 0;
}

static int check_template(const char *key, const char *t)
{
    if (empty(t))
        return bad_option(key, "is required");
    if (!printable(t))
        return bad_option(key, "holds control characters");
    if (strstr(t, "%u") == NULL)
        return bad_option(key, "must contain %u (the login)");
    return 0;
}

static int check_options(const semail_ldap_options *o)
{
    int err;

    if (o == NULL)
        return semail__err(SEMAIL_EINVAL, "LDAP: NULL options");
    if (o->version != SEMAIL_LDAP_OPTIONS_VERSION)
        return semail__err(SEMAIL_ECONFIG, "LDAP options: unknown version %u", o->version);
    if ((err = check_uris(o->uri)) < 0)
        return err;
    if (!empty(o->bind_dn)) {
        if ((err = check_template("bind_dn", o->bind_dn)) < 0)
            return err;
    } else {
        if ((err = check_template("filter", o->filter)) < 0)
            return err;
        if (empty(o->base) || !printable(o->base))
            return bad_option("base", "is required with a search filter");
    }
    if (empty(o->search_dn) != empty(o->search_password))
        return bad_option("search_dn", "and search_password go together (an empty password "
                                       "would make an unauthenticated bind)");
    if (!empty(o->search_dn) && !printable(o->search_dn))
        return bad_option("search_dn", "holds control characters");
    if (!empty(o->ca_file) && !printable(o->ca_file))
        return bad_option("ca_file", "holds control characters");
    return 0;
}

int semail_ldap_options_init(semail_ldap_options *opts)
{
    semail_ldap_options def = SEMAIL_LDAP_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    *opts = def;
    return 0;
}

/* ---- results and messages ---------------------------------------------------- */

static int code_of(int rc)
{
    switch (rc) {
    case LDAP_SERVER_DOWN:
    case LDAP_CONNECT_ERROR:
    case LDAP_TIMEOUT:
    case LDAP_TIMELIMIT_EXCEEDED:
    case LDAP_BUSY:
    case LDAP_UNAVAILABLE:
        return SEMAIL_ETEMP;
    case LDAP_INVALID_CREDENTIALS:
    case LDAP_INAPPROPRIATE_AUTH:
    case LDAP_UNWILLING_TO_PERFORM:
    case LDAP_INSUFFICIENT_ACCESS:
        return SEMAIL_EPERM;
    case LDAP_NO_SUCH_OBJECT:
        return SEMAIL_ENOTFOUND;
    case LDAP_NO_MEMORY:
        return SEMAIL_ENOMEM;
    case LDAP_FILTER_ERROR:
    case LDAP_INVALID_DN_SYNTAX:
    case LDAP_PARAM_ERROR:
    case LDAP_CONFIDENTIALITY_REQUIRED:
    case LDAP_STRONG_AUTH_REQUIRED:
        return SEMAIL_ECONFIG;
    default:
        return SEMAIL_ERROR;
    }
}

static int uses_tls(const char *uri)
{
    const char *p;
    for (p = uri; (p = strcasestr(p, "ldaps://")) != NULL; p += 8)
        if (p == uri || p[-1] == ' ')
            return 1;
    return 0;
}

/* Record the failure RC of WHAT ("bind as DN"...) with libldap's diagnostic. */
static int fail(conn *c, int rc, const char *what)
{
    char *raw = NULL, diag[DIAG_MAX], text[DIAG_MAX + 8] = "";
    int code = code_of(rc);

    if (ldap_get_option(c->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &raw) == LDAP_OPT_SUCCESS && raw) {
        sanitize(diag, sizeof(diag), raw);
        if (diag[0] != '\0' && strcmp(diag, "(unknown error code)") != 0)
            snprintf(text, sizeof(text), " (%s)", diag);
    }
    ldap_memfree(raw);
    if (text[0] == '\0' && (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR) &&
        uses_tls(c->o->uri)) /* GnuTLS's reason is lost on the way: give the likely ones */
        snprintf(text, sizeof(text), " (or TLS failed: check ca_file and the certificate's name)");
    if (rc == LDAP_TIMEOUT)
        return semail__err(code, "LDAP server %s did not answer within %u ms (%s)", c->o->uri,
                           c->timeout_ms, what);
    if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR)
        return semail__err(code, "LDAP server %s unreachable: %s%s", c->o->uri, ldap_err2string(rc),
                           text);
    return semail__err(code, "LDAP server %s: %s: %s%s", c->o->uri, what, ldap_err2string(rc),
                       text);
}

/* ---- connection ---------------------------------------------------------------- */

static int set_opt(conn *c, int option, const void *value, const char *name)
{
    if (ldap_set_option(c->ld, option, value) != LDAP_OPT_SUCCESS)
        return semail__err(SEMAIL_ERROR, "LDAP: cannot set %s on the connection to %s", name,
                           c->o->uri);
    return 0;
}

/* This handle's own TLS context: the CA file applies to it alone (threads). */
static int tls_setup(conn *c)
{
    int demand = LDAP_OPT_X_TLS_DEMAND, min = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2, is_server = 0;
    int err;

    if ((err = set_opt(c, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand, "TLS_REQCERT")) < 0 ||
        (err = set_opt(c, LDAP_OPT_X_TLS_PROTOCOL_MIN, &min, "TLS_PROTOCOL_MIN")) < 0)
        return err;
    if (!empty(c->o->ca_file) &&
        (err = set_opt(c, LDAP_OPT_X_TLS_CACERTFILE, c->o->ca_file, "TLS_CACERT")) < 0)
        return err;
    /* libldap 2.5 spins without end on a TLS handshake that gets no answer
     * when it connects synchronously with a network timeout; connecting
     * asynchronously makes it poll, within the timeout. */
    if ((err = set_opt(c, LDAP_OPT_CONNECT_ASYNC, LDAP_OPT_ON, "asynchronous connect")) < 0)
        return err;
    if (ldap_set_option(c->ld, LDAP_OPT_X_TLS_NEWCTX, &is_server) != LDAP_OPT_SUCCESS)
        return semail__err(SEMAIL_ECONFIG, "LDAP: cannot set up TLS for %s with CA file '%s'",
                           c->o->uri, empty(c->o->ca_file) ? "(system)" : c->o->ca_file);
    return 0;
}

static int conn_open(conn *c, const semail_ldap_options *o)
{
    int v3 = LDAP_VERSION3, rc, err;

    c->o = o;
    c->timeout_ms = o->timeout_ms ? o->timeout_ms : SEMAIL_LDAP_DEFAULT_TIMEOUT_MS;
    c->tv.tv_sec = (time_t)(c->timeout_ms / 1000);
    c->tv.tv_usec = (suseconds_t)(c->timeout_ms % 1000) * 1000;
    if ((rc = ldap_initialize(&c->ld, o->uri)) != LDAP_SUCCESS) {
        c->ld = NULL;
        return semail__err(rc == LDAP_NO_MEMORY ? SEMAIL_ENOMEM : SEMAIL_ECONFIG,
                           "LDAP options: uri '%s' refused by libldap: %s", o->uri,
                           ldap_err2string(rc));
    }
    if ((err = set_opt(c, LDAP_OPT_PROTOCOL_VERSION, &v3, "the protocol version")) < 0 ||
        (err = set_opt(c, LDAP_OPT_REFERRALS, LDAP_OPT_OFF, "referrals off")) < 0 ||
        (err = set_opt(c, LDAP_OPT_NETWORK_TIMEOUT, &c->tv, "the network timeout")) < 0 ||
        (err = set_opt(c, LDAP_OPT_TIMEOUT, &c->tv, "the operation timeout")) < 0)
        return err;
    return uses_tls(o->uri) ? tls_setup(c) : 0;
}

static void conn_close(conn *c)
{
    if (c->ld != NULL)
        ldap_unbind_ext_s(c->ld, NULL, NULL);
    c->ld = NULL;
}

/* ---- operations ------------------------------------------------------------------ */

static int simple_bind(conn *c, const char *dn, const char *password)
{
    struct berval cred;
    cred.bv_val = (char *)password;
    cred.bv_len = strlen(password);
    return ldap_sasl_bind_s(c->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
}

/* Bind as the service account, if there is one (else the search is anonymous). */
static int service_bind(conn *c)
{
    char what[SEMAIL_LDAP_DN_MAX], msg[SEMAIL_LDAP_DN_MAX + 512];
    int rc, err;

    if (empty(c->o->search_dn))
        return 0;
    if ((rc = simple_bind(c, c->o->search_dn, c->o->search_password)) == LDAP_SUCCESS)
        return 0;
    sanitize(what, sizeof(what), c->o->search_dn);
    snprintf(msg, sizeof(msg), "bind as the search account %s", what);
    if ((err = fail(c, rc, msg)) != SEMAIL_EPERM)
        return err;
    /* The service account's password is configuration, not the person's. */
    semail__strlcpy(msg, semail_error_last(), sizeof(msg));
    return semail__err(SEMAIL_ECONFIG, "%s", msg);
}

/* Search BASE with FILTER in SCOPE: exactly one entry, its DN into DN. */
static int find_one(conn *c, const char *base, int scope, const char *filter, semail_buf *dn)
{
    char *attrs[] = {LDAP_NO_ATTRS, NULL};
    char shown[SEMAIL_LDAP_DN_MAX];
    LDAPMessage *res = NULL;
    struct timeval tv = c->tv;
    char *d = NULL;
    int rc, n, err;

    rc = ldap_search_ext_s(c->ld, base, scope, filter, attrs, 0, NULL, NULL, &tv, SEARCH_ONE, &res);
    sanitize(shown, sizeof(shown), scope == LDAP_SCOPE_BASE ? base : filter);
    if (rc == LDAP_NO_SUCH_OBJECT && scope != LDAP_SCOPE_BASE) {
        err = semail__err(SEMAIL_ECONFIG, "LDAP server %s: the search base '%s' does not exist",
                          c->o->uri, base);
        goto done;
    }
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED && rc != LDAP_NO_SUCH_OBJECT) {
        err = fail(c, rc, "search");
        goto done;
    }
    n = rc == LDAP_NO_SUCH_OBJECT ? 0 : ldap_count_entries(c->ld, res);
    if (n == 0) {
        err = semail__err(SEMAIL_ENOTFOUND, "LDAP server %s: no entry for %s%s%s", c->o->uri, shown,
                          scope == LDAP_SCOPE_BASE ? "" : " under ",
                          scope == LDAP_SCOPE_BASE ? "" : base);
        goto done;
    }
    if (n != 1 || rc == LDAP_SIZELIMIT_EXCEEDED) {
        err = semail__err(SEMAIL_ERROR, "LDAP server %s: %s matches several entries under %s",
                          c->o->uri, shown, base);
        goto done;
    }
    d = ldap_get_dn(c->ld, ldap_first_entry(c->ld, res));
    if (d == NULL || *d == '\0') { /* an empty DN would bind anonymously */
        err = semail__err(SEMAIL_ERROR, "LDAP server %s: an entry without a DN for %s", c->o->uri,
                          shown);
        goto done;
    }
    semail__buf_reset(dn);
    err = semail__buf_addstr(dn, d);
done:
    ldap_memfree(d);
    ldap_msgfree(res);
    return err;
}

/* The person's DN: the template filled in, or the one entry the filter finds. */
static int person_dn(conn *c, const char *login, int check_exists, semail_buf *dn)
{
    semail_buf filter;
    int err;

    if (!empty(c->o->bind_dn)) {
        if ((err = semail__ldap_expand(dn, c->o->bind_dn, login, semail_ldap_escape_dn)) < 0)
            return err;
        if (!check_exists)
            return 0;
        if ((err = service_bind(c)) < 0)
            return err;
        return find_one(c, dn->data, LDAP_SCOPE_BASE, "(objectClass=*)", dn);
    }
    semail__buf_init(&filter, SEMAIL_LDAP_TEXT_MAX);
    if ((err = semail__ldap_expand(&filter, c->o->filter, login, semail_ldap_escape_filter)) < 0 ||
        (err = service_bind(c)) < 0)
        goto done;
    err = find_one(c, c->o->base, LDAP_SCOPE_SUBTREE, filter.data, dn);
done:
    semail__buf_free(&filter);
    return err;
}

static int person_bind(conn *c, const char *dn, const char *password)
{
    char what[SEMAIL_LDAP_DN_MAX + 32], shown[SEMAIL_LDAP_DN_MAX], msg[SEMAIL_LDAP_DN_MAX + 512];
    int rc = simple_bind(c, dn, password);

    if (rc == LDAP_SUCCESS)
        return 0;
    sanitize(shown, sizeof(shown), dn);
    snprintf(what, sizeof(what), "password refused for %s", shown);
    if (code_of(rc) == SEMAIL_EPERM || rc == LDAP_NO_SUCH_OBJECT) {
        (void)fail(c, rc, what);
        semail__strlcpy(msg, semail_error_last(), sizeof(msg));
        return semail__err(SEMAIL_EPERM, "%s", msg);
    }
    snprintf(what, sizeof(what), "bind as %s", shown);
    return fail(c, rc, what);
}

static int check_call(const semail_ldap_options *opts, const char *login, const char *password,
                      char *dn_out, size_t dn_size)
{
    int err;

    if (dn_out != NULL && dn_size > 0)
        dn_out[0] = '\0';
    if ((err = check_options(opts)) < 0)
        return err;
    if (login == NULL || *login == '\0')
        return semail__err(SEMAIL_EINVAL, "LDAP: empty login");
    if (dn_out == NULL && dn_size > 0)
        return semail__err(SEMAIL_EINVAL, "LDAP: NULL DN buffer of %zu bytes", dn_size);
    if (password != NULL && *password == '\0')
        return semail__err(SEMAIL_EPERM,
                           "LDAP: empty password refused (it would make an unauthenticated "
                           "bind, RFC 4513 5.1.2)");
    return 0;
}

int semail__ldap_run(const semail_ldap_options *opts, const char *login, const char *password,
                     char *dn_out, size_t dn_size)
{
    conn c = {0};
    semail_buf dn;
    int err;

    if ((err = check_call(opts, login, password, dn_out, dn_size)) < 0)
        return err;
    semail__buf_init(&dn, SEMAIL_LDAP_TEXT_MAX);
    if ((err = conn_open(&c, opts)) < 0 || (err = person_dn(&c, login, password == NULL, &dn)) < 0)
        goto done;
    if (password != NULL && (err = person_bind(&c, dn.data, password)) < 0)
        goto done;
    if (dn_size > 0 && (err = semail__strlcpy(dn_out, dn.data, dn_size)) < 0)
        err = semail__err(SEMAIL_ETOOBIG, "LDAP: the DN of %s does not fit %zu bytes", login,
                          dn_size);
done:
    conn_close(&c);
    semail__buf_free(&dn);
    return err;
}

/* Refuse what is not a name before it reaches a filter or a DN. */
static int check_login(const char *login)
{
    char why[512];
    int err;

    if (login == NULL)
        return semail__err(SEMAIL_EINVAL, "LDAP: NULL login");
    if ((err = semail_validate_name(login)) < 0) {
        semail__strlcpy(why, semail_error_last(), sizeof(why));
        return semail__err(err, "login %s", why);
    }
    return 0;
}

int semail_ldap_authenticate(const semail_ldap_options *opts, const char *login,
                             const char *password, char *dn_out, size_t dn_size)
{
    int err;

    if (dn_out != NULL && dn_size > 0)
        dn_out[0] = '\0';
    if (password == NULL)
        return semail__err(SEMAIL_EINVAL, "LDAP: NULL password");
    if ((err = check_login(login)) < 0)
        return err;
    return semail__ldap_run(opts, login, password, dn_out, dn_size);
}

int semail_ldap_person_exists(const semail_ldap_options *opts, const char *login)
{
    int err;
    if ((err = check_login(login)) < 0)
        return err;
    return semail__ldap_run(opts, login, NULL, NULL, 0);
}

/* ---- configuration ------------------------------------------------------------------ */

/* The first line of FILE into BUF (its end of line removed), wiped on failure. */
static int read_password(const char *cfgpath, const char *file, char *buf, size_t size)
{
    size_t len = 0;
    ssize_t r = 0;
    char *nl;
    int fd;

    if (buf == NULL || size < 2)
        return semail__err(SEMAIL_ECONFIG, "%s: [ldap] search_password_file: no room for it",
                           cfgpath);
    if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
        return semail__errno(SEMAIL_ECONFIG, errno, "%s: [ldap] search_password_file %s", cfgpath,
                             file);
    while (len < size && (r = read(fd, buf + len, size - len)) != 0) {
        if (r < 0 && errno != EINTR)
            break;
        len += r > 0 ? (size_t)r : 0;
    }
    close(fd);
    if ((nl = memchr(buf, '\n', len)) != NULL)
        len = (size_t)(nl - buf);
    if (r < 0 || (nl == NULL && len == size)) {
        explicit_bzero(buf, size);
        return semail__err(SEMAIL_ECONFIG, "%s: [ldap] search_password_file %s: %s", cfgpath, file,
                           r < 0 ? "read error" : "the first line is too long");
    }
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (len == 0 || memchr(buf, '\0', len) != NULL) {
        explicit_bzero(buf, size);
        return semail__err(SEMAIL_ECONFIG, "%s: [ldap] search_password_file %s: %s", cfgpath, file,
                           len == 0 ? "the first line is empty" : "holds a NUL byte");
    }
    return 0;
}

int semail_ldap_options_from_config(semail_ldap_options *out, char *password_buf,
                                    size_t password_size, const semail_config *cfg)
{
    const char *path, *pwfile;
    uint64_t ms = 0;
    int err;

    if (out == NULL || cfg == NULL || (password_buf == NULL && password_size > 0))
        return semail__err(SEMAIL_EINVAL, "LDAP: NULL arguments");
    (void)semail_ldap_options_init(out);
    if (password_size > 0)
        password_buf[0] = '\0';
    path = semail_config_path(cfg);
    if (!semail_config_has_section(cfg, "ldap"))
        return semail__err(SEMAIL_ENOTFOUND, "%s: no [ldap] section: directory accounts are off",
                           path);
    out->uri = semail_config_get(cfg, "ldap", "uri");
    out->base = semail_config_get(cfg, "ldap", "base");
    out->filter = semail_config_get(cfg, "ldap", "filter");
    out->bind_dn = semail_config_get(cfg, "ldap", "bind_dn");
    out->ca_file = semail_config_get(cfg, "ldap", "ca_file");
    out->search_dn = semail_config_get(cfg, "ldap", "search_dn");
    pwfile = semail_config_get(cfg, "ldap", "search_password_file");
    if ((err = semail_config_get_duration_ms(cfg, "ldap", "timeout", &ms)) < 0)
        return err;
    out->timeout_ms = ms > UINT_MAX ? UINT_MAX : (unsigned int)ms;
    if (empty(out->search_dn) != empty(pwfile))
        return semail__err(SEMAIL_ECONFIG,
                           "%s: [ldap] search_dn and search_password_file go together", path);
    if (!empty(pwfile)) {
        if ((err = read_password(path, pwfile, password_buf, password_size)) < 0)
            return err;
        out->search_password = password_buf;
    }
    return 0;
}
