/**
 * @file ldap.h
 * @brief Directory accounts: authenticate a person against an LDAP server.
 *
 * A person logs in with their directory account (SPEC.md section 6). The
 * entry is found either by a search filter ("search-then-bind": search
 * `base` with `filter`, exactly one entry, then a simple bind with its DN and
 * the password) or by a DN template (a direct simple bind, no search).
 *
 * Logins are checked with semail_validate_name() before anything is sent,
 * and escaped anyway (RFC 4515 in filters, RFC 4514 in DNs): defence in
 * depth. An empty password is refused before any bind: with LDAP an empty
 * password makes an "unauthenticated bind" that many servers accept
 * (RFC 4513 section 5.1.2).
 *
 * Every call opens its own connection and closes it before returning, so
 * the functions here are thread-safe (libldap 2.5 is). Writes to a closed
 * connection may raise SIGPIPE inside libldap: programs ignore SIGPIPE, as
 * SEMail's do.
 */
#ifndef SEMAIL_LDAP_H
#define SEMAIL_LDAP_H

#include "semail/common.h"
#include "semail/config.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Version of ::semail_ldap_options known to these headers. */
#define SEMAIL_LDAP_OPTIONS_VERSION 1

/** Network and operation timeout used when semail_ldap_options::timeout_ms is 0. */
#define SEMAIL_LDAP_DEFAULT_TIMEOUT_MS 5000u

/**
 * Size of a buffer that holds any escaped form of a value of @p n bytes,
 * NUL included: every byte becomes at most three (`\2a`).
 */
#define SEMAIL_LDAP_ESCAPED_MAX(n) (3 * (n) + 1)

/** A buffer for a person's DN that no sane directory exceeds. */
#define SEMAIL_LDAP_DN_MAX 1024

/**
 * Where the directory is and how a person is found in it.
 *
 * The strings are borrowed: they must stay valid during each call that
 * receives the options (nothing is kept after the call returns).
 */
typedef struct semail_ldap_options {
    unsigned int version; /**< ::SEMAIL_LDAP_OPTIONS_VERSION. */
    /**
     * The server: `ldap://HOST[:PORT]` or `ldaps://HOST[:PORT]`; several
     * URIs separated by spaces are tried in order. Required.
     */
    const char *uri;
    /** The search base (search-then-bind and semail_ldap_person_exists()). */
    const char *base;
    /**
     * The search filter with `%u` standing for the login, e.g. `(uid=%u)`.
     * Used when semail_ldap_options::bind_dn is NULL or "". Every `%u` is replaced by the
     * login escaped per RFC 4515; nothing else is interpreted.
     */
    const char *filter;
    /**
     * A DN template with `%u`, e.g. `uid=%u,ou=people,dc=semail,dc=test`:
     * when set (not NULL, not ""), the person binds directly with it, the
     * login escaped per RFC 4514, and no search is made.
     */
    const char *bind_dn;
    /**
     * The service account that searches (and looks people up). NULL or "":
     * anonymous. When set, semail_ldap_options::search_password must be set too.
     */
    const char *search_dn;
    /** The service account's password; NULL or "" when semail_ldap_options::search_dn is unset. */
    const char *search_password;
    /**
     * PEM file of the CA certificates that sign an `ldaps://` server's
     * certificate. NULL or "": the system's (libldap's `TLS_CACERT`). The
     * server's certificate is always verified, its name included.
     */
    const char *ca_file;
    /**
     * Bound on connecting (per server) and on each operation, in
     * milliseconds; 0: ::SEMAIL_LDAP_DEFAULT_TIMEOUT_MS.
     */
    unsigned int timeout_ms;
} semail_ldap_options;

/** Static initializer: the version set, everything else NULL or 0. */
#define SEMAIL_LDAP_OPTIONS_INIT                                                                   \
    {                                                                                              \
        .version = SEMAIL_LDAP_OPTIONS_VERSION                                                     \
    }

/**
 * Initialize @p opts as ::SEMAIL_LDAP_OPTIONS_INIT does.
 * @return 0, or ::SEMAIL_EINVAL when @p opts is NULL. Thread-safe.
 */
SEMAIL_EXTERN int semail_ldap_options_init(semail_ldap_options *opts);

/**
 * Fill @p out from the `[ldap]` section of a configuration.
 *
 * The strings of @p out point into @p cfg and into @p password_buf: both
 * must outlive every use of @p out. The service account's password is the
 * first line of the file named by `[ldap] search_password_file` (its end of
 * line removed); it is copied into @p password_buf, which the caller should
 * wipe when done.
 *
 * @param[out] out       the options.
 * @param password_buf   room for the service account's password (set to ""
 *                       when there is none); may be NULL when @p password_size
 *                       is 0 and no password file is configured.
 * @param password_size  its size in bytes.
 * @param cfg            a loaded configuration.
 * @return 0; ::SEMAIL_ENOTFOUND (no `[ldap]` section: directory accounts are
 *         off); ::SEMAIL_ECONFIG (`search_dn` without a password file or the
 *         other way round, a password file that cannot be read, is empty or
 *         does not fit; the message names the configuration file and key);
 *         ::SEMAIL_EINVAL (NULL arguments). Thread-safe.
 */
SEMAIL_EXTERN int semail_ldap_options_from_config(semail_ldap_options *out, char *password_buf,
                                                  size_t password_size, const semail_config *cfg);

/**
 * Check a person's password against the directory.
 *
 * With semail_ldap_options::bind_dn set, a simple bind with the DN
 * template filled in. Otherwise a subtree search of `base` with `filter`
 * (anonymously or as the service account) that must find exactly one entry,
 * then a simple bind with that entry's DN and @p password on the same
 * connection.
 *
 * @param opts      where and how to look; see ::semail_ldap_options.
 * @param login     the login; it must pass semail_validate_name().
 * @param password  the password, sent as is; never empty.
 * @param[out] dn_out the person's DN on success ("" on failure); may be
 *                  NULL when @p dn_size is 0. ::SEMAIL_LDAP_DN_MAX is enough.
 * @param dn_size   size of @p dn_out.
 * @return 0 when the directory accepted the password;
 *         ::SEMAIL_EPERM (wrong password, empty password, or the server
 *         refused the bind; in DN-template mode an unknown person is
 *         indistinguishable from a wrong password and gives this code too);
 *         ::SEMAIL_ENOTFOUND (search mode: no entry for @p login);
 *         ::SEMAIL_ETEMP (server unreachable, TLS failure, timeout, busy);
 *         ::SEMAIL_EINVAL (a login that is not a valid name, NULL arguments);
 *         ::SEMAIL_ECONFIG (bad options, the service account's bind
 *         refused, the search base missing);
 *         ::SEMAIL_ETOOBIG (the DN does not fit @p dn_out);
 *         ::SEMAIL_ERROR (several entries match the login, other failures).
 *         The message says what happened and which server
 *         ("LDAP server ldap://127.0.0.1:3389 unreachable: Can't contact
 *         LDAP server"); it never contains the password.
 *         Thread-safe: one connection per call.
 */
SEMAIL_EXTERN int semail_ldap_authenticate(const semail_ldap_options *opts, const char *login,
                                           const char *password, char *dn_out, size_t dn_size);

/**
 * Whether the directory has an entry for @p login (`semail-admin user
 * create` checks it before making a box).
 *
 * With a filter (no semail_ldap_options::bind_dn), a subtree search of
 * `base`; with a DN template, a base-scope search of the filled-in DN. Both
 * anonymously or as the service account, so the directory's access rules
 * must let that identity see people's entries.
 *
 * @return 0 when exactly one entry exists; ::SEMAIL_ENOTFOUND;
 *         ::SEMAIL_ETEMP, ::SEMAIL_EINVAL, ::SEMAIL_ECONFIG, ::SEMAIL_EPERM
 *         (the directory refused the search), ::SEMAIL_ERROR (several
 *         entries) as semail_ldap_authenticate(). Thread-safe.
 */
SEMAIL_EXTERN int semail_ldap_person_exists(const semail_ldap_options *opts, const char *login);

/**
 * Escape a value for use inside an LDAP search filter (RFC 4515 section 3).
 *
 * `*`, `(`, `)` and `\` become `\2a`, `\28`, `\29`, `\5c`; control bytes
 * and bytes 0x80-0xff become `\XX` too (lower-case hex), so the result is
 * printable ASCII; every other byte is copied.
 *
 * @param[out] out  the escaped value, NUL-terminated ("" on failure).
 * @param size      size of @p out; `SEMAIL_LDAP_ESCAPED_MAX(strlen(value))`
 *                  always suffices.
 * @param value     a NUL-terminated value.
 * @return the length of the escaped value (>= 0); ::SEMAIL_ETOOBIG when it
 *         does not fit; ::SEMAIL_EINVAL for NULL arguments. Thread-safe.
 */
SEMAIL_EXTERN int semail_ldap_escape_filter(char *out, size_t size, const char *value);

/**
 * Escape a value for use as an attribute value in a DN (RFC 4514 section 2.4).
 *
 * `"`, `+`, `,`, `;`, `<`, `=`, `>` and `\` are preceded by `\`; so are a
 * leading space or `#` and a trailing space; control bytes and bytes
 * 0x80-0xff become `\XX` (lower-case hex); every other byte is copied.
 *
 * @return as semail_ldap_escape_filter(). Thread-safe.
 */
SEMAIL_EXTERN int semail_ldap_escape_dn(char *out, size_t size, const char *value);

SEMAIL_END_DECLS

#endif
