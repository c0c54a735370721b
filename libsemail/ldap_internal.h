/*
 * ldap_internal.h - what ldap.c, ldap_escape.c and their tests share.
 * Internal to libsemail.
 */
#ifndef SEMAIL_LDAP_INTERNAL_H
#define SEMAIL_LDAP_INTERNAL_H

#include "internal.h"
#include "semail/ldap.h"

/* Longest filter or DN built from a template (the template plus escaped login). */
#define SEMAIL_LDAP_TEXT_MAX 4096

/* An escaper: semail_ldap_escape_filter or semail_ldap_escape_dn. */
typedef int (*semail__ldap_escaper)(char *out, size_t size, const char *value);

/*
 * Fill OUT (reset first; its max bounds the result) with TMPL where every "%u" is VALUE escaped by
 * ESCAPE; any other byte, '%' included, is copied. SEMAIL_ETOOBIG when the
 * escaped value exceeds SEMAIL_LDAP_TEXT_MAX or the result OUT's max.
 */
SEMAIL_HIDDEN int semail__ldap_expand(semail_buf *out, const char *tmpl, const char *value,
                                      semail__ldap_escaper escape);

/*
 * The work behind semail_ldap_authenticate() (PASSWORD set) and
 * semail_ldap_person_exists() (PASSWORD NULL) without the
 * semail_validate_name() check of LOGIN, so that tests can show that the
 * escaping alone keeps hostile logins harmless.
 */
SEMAIL_HIDDEN int semail__ldap_run(const semail_ldap_options *opts, const char *login,
                                   const char *password, char *dn_out, size_t dn_size);

#endif
