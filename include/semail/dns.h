/**
 * @file dns.h
 * @brief The platform's DNS records: RFC 2136 dynamic updates signed with
 *        TSIG (RFC 8945), and checking where a domain's MX points.
 *
 * `semail-admin user create` for a subdomain adds an MX record (and an SPF
 * TXT record) for `SUB.<zone>` to the platform's name server (BIND9) with a
 * ::semail_dns_updater; `user delete` removes them again. Every update is
 * one message over TCP, signed with the key of a file written by
 * `tsig-keygen`, and the server's answer is accepted only when its own TSIG
 * verifies (RFC 8945 section 5.3): an update is never reported done on the
 * word of an unauthenticated answer.
 *
 * Names are checked before any packet is built: a name must be in lower
 * case, made of letter-digit-hyphen labels, and strictly inside the zone.
 *
 * semail_dns_check_mx() serves `semail-admin dns check DOMAIN`: does the
 * MX of a person's own domain point at the platform?
 */
#ifndef SEMAIL_DNS_H
#define SEMAIL_DNS_H

#include "semail/common.h"
#include "semail/errors.h"
#include "semail/mx.h"

SEMAIL_BEGIN_DECLS

/* ---- TSIG keys --------------------------------------------------------- */

/**
 * An opaque TSIG key: a name, an HMAC algorithm and a secret. Read-only
 * once made, so it may be shared between threads. The secret is wiped from
 * memory when the key is freed.
 */
typedef struct semail_tsig_key semail_tsig_key;

/** Largest key file semail_tsig_key_load() reads, in bytes. */
#define SEMAIL_TSIG_KEY_FILE_MAX 65536

/**
 * Parse the text of a key file as written by `tsig-keygen -a ALG NAME`:
 *
 *     key "NAME" { algorithm hmac-sha256; secret "BASE64"; };
 *
 * Comments (`#`, `//`, C-style) are allowed; the file must hold exactly one
 * key with both statements. Algorithms: `hmac-sha1`, `hmac-sha224`,
 * `hmac-sha256`, `hmac-sha384`, `hmac-sha512` (not `hmac-md5`).
 *
 * @param[out] out the key, to be freed with semail_tsig_key_free(); set only
 *                 when 0 is returned.
 * @param text     the file's contents; need not be NUL-terminated.
 * @param len      its length in bytes (at most ::SEMAIL_TSIG_KEY_FILE_MAX).
 * @return 0; ::SEMAIL_EINVAL (a syntax error, an unknown algorithm, a bad
 *         key name or secret: the message gives the line), ::SEMAIL_ETOOBIG,
 *         ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_tsig_key_parse(semail_tsig_key **out, const char *text, size_t len);

/**
 * Read and parse a key file (see semail_tsig_key_parse()).
 *
 * @param[out] out the key, to be freed with semail_tsig_key_free().
 * @param path     the file.
 * @return 0; ::SEMAIL_ENOTFOUND (no such file), ::SEMAIL_EIO (it cannot be
 *         read), or the errors of semail_tsig_key_parse(), whose message
 *         then names @p path. Thread-safe.
 */
SEMAIL_EXTERN int semail_tsig_key_load(semail_tsig_key **out, const char *path);

/** Free a key and wipe its secret (NULL is ignored). */
SEMAIL_EXTERN void semail_tsig_key_free(semail_tsig_key *key);

/**
 * The key's name in lower case without a final dot, e.g. "semail-update".
 * @return a string owned by @p key.
 */
SEMAIL_EXTERN const char *semail_tsig_key_name(const semail_tsig_key *key);

/**
 * The key's algorithm as written in key files, e.g. "hmac-sha256".
 * @return a static string.
 */
SEMAIL_EXTERN const char *semail_tsig_key_algorithm(const semail_tsig_key *key);

/* ---- Dynamic updates --------------------------------------------------- */

/**
 * An opaque client of one zone on one name server. Read-only after
 * semail_dns_updater_new(): every update opens its own connection, so one
 * updater may be used by several threads at once.
 */
typedef struct semail_dns_updater semail_dns_updater;

/** Version of ::semail_dns_updater_options known to these headers. */
#define SEMAIL_DNS_UPDATER_OPTIONS_VERSION 1

/** Wait for one update's answer when semail_dns_updater_options::timeout_ms is 0. */
#define SEMAIL_DNS_DEFAULT_TIMEOUT_MS 5000u

/** TTL of the records added when 0 is passed to semail_dns_add_mail_records(). */
#define SEMAIL_DNS_DEFAULT_TTL 300u

/** Preference of the MX record that semail_dns_add_mail_records() adds. */
#define SEMAIL_DNS_MX_PREFERENCE 10u

/** Longest SPF text semail_dns_add_mail_records() accepts, in bytes. */
#define SEMAIL_DNS_SPF_MAX 450u

/** Options of an updater (the `[dns]` section). Strings are copied. */
typedef struct semail_dns_updater_options {
    unsigned int version; /**< ::SEMAIL_DNS_UPDATER_OPTIONS_VERSION. */
    /**
     * The name server: `HOST:PORT`, `[IPV6]:PORT`, or without the port (53).
     * HOST is an IP address or a name, looked up once, here. NULL or "":
     * `127.0.0.1:53`.
     */
    const char *server;
    /** The zone to update, e.g. `semail.test`. Required. */
    const char *zone;
    /** Path of the TSIG key file (see semail_tsig_key_load()). Required. */
    const char *tsig_key;
    /**
     * Bound on one update, from connecting to the verified answer, in
     * milliseconds; 0: ::SEMAIL_DNS_DEFAULT_TIMEOUT_MS.
     */
    unsigned int timeout_ms;
} semail_dns_updater_options;

/** Static initializer: the defaults (zone and key still to be set). */
#define SEMAIL_DNS_UPDATER_OPTIONS_INIT                                                            \
    {                                                                                              \
        SEMAIL_DNS_UPDATER_OPTIONS_VERSION, NULL, NULL, NULL, 0                                    \
    }

/**
 * Initialize @p opts to the defaults.
 * @return 0, or ::SEMAIL_EINVAL when @p opts is NULL. Thread-safe.
 */
SEMAIL_EXTERN int semail_dns_updater_options_init(semail_dns_updater_options *opts);

/**
 * Create an updater: check the zone, read the key, find the server's
 * address. Nothing is sent.
 *
 * @param[out] out the updater, to be freed with semail_dns_updater_free().
 * @param opts     the options; copied. Not NULL: a zone and a key are required.
 * @return 0; ::SEMAIL_EINVAL (NULL @p opts, unknown options version, no zone
 *         or key file, an invalid zone or server), ::SEMAIL_ENOTFOUND (the server's name or the key
 *         file does not exist), the errors of semail_tsig_key_load(),
 *         ::SEMAIL_ENOMEM. Thread-safe.
 */
SEMAIL_EXTERN int semail_dns_updater_new(semail_dns_updater **out,
                                         const semail_dns_updater_options *opts);

/** Free an updater (NULL is ignored). No update may be in progress on it. */
SEMAIL_EXTERN void semail_dns_updater_free(semail_dns_updater *u);

/**
 * Give @p name its mail records, if and only if the name is not in use.
 *
 * One update, with the RFC 2136 prerequisite "name is not in use" (class
 * NONE, type ANY): it adds `NAME TTL IN MX 10 MX_HOST` and, when
 * @p spf_text is not NULL, `NAME TTL IN TXT "SPF_TEXT"`. Either both are
 * added or nothing is.
 *
 * @param u        the updater.
 * @param name     the subdomain, e.g. `alice.semail.test`: lower case,
 *                 letter-digit-hyphen labels, strictly inside the zone; a
 *                 final dot is allowed.
 * @param mx_host  the host the MX points at, e.g. `mx.semail.test` (any
 *                 case; a final dot is allowed).
 * @param spf_text e.g. `v=spf1 mx -all`: printable ASCII, at most
 *                 ::SEMAIL_DNS_SPF_MAX bytes; NULL: no TXT record.
 * @param ttl      the records' TTL in seconds (at most 2^31 - 1);
 *                 0: ::SEMAIL_DNS_DEFAULT_TTL.
 * @return 0 (the records are there); ::SEMAIL_EEXISTS (the name already has
 *         records: YXDOMAIN); ::SEMAIL_EPERM (the server refused: REFUSED,
 *         NOTAUTH, or a TSIG error BADSIG, BADKEY, BADTIME; the message says
 *         which); ::SEMAIL_ETEMP (unreachable, timeout, SERVFAIL, or an
 *         answer that does not verify: the update may or may not have been
 *         made); ::SEMAIL_EINVAL (a name or text that does not pass the
 *         checks; nothing was sent); ::SEMAIL_ERROR (any other answer);
 *         ::SEMAIL_ENOMEM. Thread-safe (see ::semail_dns_updater).
 */
SEMAIL_EXTERN int semail_dns_add_mail_records(semail_dns_updater *u, const char *name,
                                              const char *mx_host, const char *spf_text,
                                              unsigned int ttl);

/**
 * Remove the mail records of @p name: its MX and TXT record sets, whatever
 * they hold (class ANY). Records of other types at the name (added by
 * someone else) are left alone. Removing what is not there succeeds, so the
 * call may be repeated.
 *
 * @param u    the updater.
 * @param name as for semail_dns_add_mail_records().
 * @return 0, or the errors of semail_dns_add_mail_records() except
 *         ::SEMAIL_EEXISTS. Thread-safe.
 */
SEMAIL_EXTERN int semail_dns_remove_name_records(semail_dns_updater *u, const char *name);

/* ---- Where does a domain's MX point? ----------------------------------- */

/** The verdict of semail_dns_check_mx(). */
typedef enum semail_dns_mx_verdict {
    /** The most preferred MX hosts are all the platform's (by name or address). */
    SEMAIL_DNS_MX_HERE = 0,
    /** The domain has MX records, and a most preferred one is not the platform's. */
    SEMAIL_DNS_MX_ELSEWHERE = 1,
    /** No usable MX: no such domain, no MX record, a null MX, MX hosts without address. */
    SEMAIL_DNS_MX_NONE = 2,
    /** The DNS failed (timeout, SERVFAIL...): no verdict yet, ask again later. */
    SEMAIL_DNS_MX_UNKNOWN = 3
} semail_dns_mx_verdict;

/** Size of semail_dns_mx_check::text. */
#define SEMAIL_DNS_CHECK_TEXT_MAX 512

/** The result of semail_dns_check_mx(). */
typedef struct semail_dns_mx_check {
    semail_dns_mx_verdict verdict; /**< The verdict. */
    /** One line for a person, e.g. "example.org: MX mx.other.net, not mx.semail.test". */
    char text[SEMAIL_DNS_CHECK_TEXT_MAX];
} semail_dns_mx_check;

/**
 * Tell whether mail for @p domain comes to the platform.
 *
 * The MX hosts of @p domain are resolved with semail_mx_resolve(); an MX
 * host is the platform's when its name is @p mx_host (case-insensitive) or
 * when one of its addresses is one of @p mx_host's (looked up, A and AAAA,
 * with the same resolver). The verdict is ::SEMAIL_DNS_MX_HERE when every
 * host of the lowest preference is the platform's. A domain without MX
 * records (mail would go to its own address) is ::SEMAIL_DNS_MX_NONE: the
 * person has to add the record.
 *
 * @param[out] out the verdict and its text; set whenever 0 is returned.
 * @param r        the resolver (e.g. the one for outbound delivery).
 * @param domain   the domain, e.g. `example.org`.
 * @param mx_host  the platform's MX host (`[dns] mx_host`).
 * @return 0 (a verdict, also ::SEMAIL_DNS_MX_UNKNOWN); ::SEMAIL_EINVAL (a NULL
 *         argument, an invalid @p domain or @p mx_host), ::SEMAIL_ENOMEM.
 *         Thread-safe (see ::semail_resolver).
 */
SEMAIL_EXTERN int semail_dns_check_mx(semail_dns_mx_check *out, semail_resolver *r,
                                      const char *domain, const char *mx_host);

SEMAIL_END_DECLS

#endif
