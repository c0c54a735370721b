/**
 * @file config.h
 * @brief The configuration file: one INI file, checked against a schema.
 *
 * Syntax: `[section]` lines, `key = value` lines, `#` or `;` comments (a
 * `#` after a value starts a comment too), blank lines. Every section and
 * key is checked against the schema built into the library (the keys of
 * SPEC.md section 3 and the few SEMail adds, documented in
 * `docs/configuration.md`): an unknown key, a value of the wrong form or a
 * duplicated key is an error whose message names the file, the line and
 * the key, as `semail-* -t` prints it.
 *
 * A loaded ::semail_config is immutable: any number of threads may read it.
 */
#ifndef SEMAIL_CONFIG_H
#define SEMAIL_CONFIG_H

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** Where programs look when neither `-c` nor `SEMAIL_CONFIG` says. */
#define SEMAIL_CONFIG_DEFAULT_PATH "/etc/semail/semail.conf"

/** An opaque, immutable, validated configuration. */
typedef struct semail_config semail_config;

/**
 * Read and validate a configuration file.
 *
 * @param[out] out  the configuration, freed with semail_config_free().
 * @param path      the file; NULL means `$SEMAIL_CONFIG`, else the default path.
 * @return 0; ::SEMAIL_ENOTFOUND (no file), ::SEMAIL_ECONFIG (the message is
 *         "FILE:LINE: key 'K': what is wrong"), ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_config_load(semail_config **out, const char *path);

/**
 * Parse and validate configuration text held in memory (tests, fuzzing).
 *
 * @param name  the name used in error messages in place of a file name.
 * @return as semail_config_load().
 */
SEMAIL_EXTERN int semail_config_parse(semail_config **out, const char *text, size_t len,
                                      const char *name);

/** Free a configuration. NULL is accepted. */
SEMAIL_EXTERN void semail_config_free(semail_config *cfg);

/** The file the configuration came from (or the name given to parse). */
SEMAIL_EXTERN const char *semail_config_path(const semail_config *cfg);

/**
 * Whether @p section appeared in the file (e.g. `[ldap]`: no section, no LDAP).
 * @return 1 or 0.
 */
SEMAIL_EXTERN int semail_config_has_section(const semail_config *cfg, const char *section);

/**
 * The value of a key as text: the file's value, or the schema's default.
 *
 * @return a string owned by @p cfg (possibly ""), or NULL when the schema
 *         has no such key. Defaults that derive from other keys (e.g. `[dns]
 *         zone` defaults to `[global] domain`) are resolved.
 */
SEMAIL_EXTERN const char *semail_config_get(const semail_config *cfg, const char *section,
                                            const char *key);

/**
 * A size such as `52428800`, `1G`, `256m`, `64k` (powers of 1024), in bytes.
 * @return 0, or ::SEMAIL_ENOTFOUND (not in the schema) / ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_config_get_size(const semail_config *cfg, const char *section,
                                         const char *key, uint64_t *out);

/**
 * A duration such as `30s`, `5m`, `1h`, `5d` (no unit: seconds), in milliseconds.
 * @return 0, or ::SEMAIL_ENOTFOUND / ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_config_get_duration_ms(const semail_config *cfg, const char *section,
                                                const char *key, uint64_t *out);

/**
 * A boolean: yes/no, true/false, on/off, 1/0.
 * @return 0, or ::SEMAIL_ENOTFOUND / ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_config_get_bool(const semail_config *cfg, const char *section,
                                         const char *key, int *out);

/**
 * A non-negative integer.
 * @return 0, or ::SEMAIL_ENOTFOUND / ::SEMAIL_EINVAL / ::SEMAIL_ETOOBIG.
 */
SEMAIL_EXTERN int semail_config_get_uint(const semail_config *cfg, const char *section,
                                         const char *key, uint64_t *out);

/**
 * A comma-separated list, items trimmed, empty items dropped.
 *
 * @param[out] out    a NULL-terminated array of strings, freed with
 *                    semail_config_list_free(); empty list: an array
 *                    holding only NULL.
 * @param[out] count  number of items; may be NULL.
 * @return 0, or ::SEMAIL_ENOTFOUND / ::SEMAIL_ENOMEM.
 */
SEMAIL_EXTERN int semail_config_get_list(const semail_config *cfg, const char *section,
                                         const char *key, char ***out, size_t *count);

/** Free a list from semail_config_get_list(). NULL is accepted. */
SEMAIL_EXTERN void semail_config_list_free(char **list);

/**
 * A range `LOW-HIGH` of integers (ports, uids).
 * @return 0, or ::SEMAIL_ENOTFOUND / ::SEMAIL_EINVAL.
 */
SEMAIL_EXTERN int semail_config_get_range(const semail_config *cfg, const char *section,
                                          const char *key, uint64_t *low, uint64_t *high);

SEMAIL_END_DECLS

#endif
