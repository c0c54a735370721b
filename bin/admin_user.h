/*
 * admin_user.h - the provisioning commands of semail-admin: `user ...`,
 * `mount-all`, `dns check` and `ldap add-person`, thin layers over
 * libsemail's provision.h.
 */
#ifndef SEMAIL_ADMIN_USER_H
#define SEMAIL_ADMIN_USER_H

#include "prog.h"

/* Usage lines of these commands, for semail-admin's usage text. */
#define ADMIN_USER_USAGE                                                                           \
    "       semail-admin [-c FILE] user create LOGIN --id ID (--subdomain SUB | --domain "         \
    "DOMAIN)\n"                                                                                    \
    "                      [--ssh-key FILE] [--size SIZE]\n"                                       \
    "       semail-admin [-c FILE] user delete LOGIN [--archive FILE.tar[.gz]]\n"                  \
    "       semail-admin [-c FILE] user list [--json]\n"                                           \
    "       semail-admin [-c FILE] user show LOGIN [--json]\n"                                     \
    "       semail-admin [-c FILE] user export LOGIN FILE.tar[.gz]\n"                              \
    "       semail-admin [-c FILE] user keys LOGIN (--ssh-key FILE | --none)\n"                    \
    "       semail-admin [-c FILE] user resize LOGIN --size SIZE\n"                                \
    "       semail-admin [-c FILE] mount-all\n"                                                    \
    "       semail-admin [-c FILE] dns check DOMAIN\n"                                             \
    "       semail-admin [-c FILE] ldap add-person LOGIN --password-file FILE [--name NAME]\n"

/*
 * Run `user COMMAND ARGS...`, `mount-all`, `dns ...` or `ldap ...`:
 * ARGV[I] is the word after the group ("create" for `user create`; for
 * mount-all, the first argument after it). Loads the configuration through
 * PC. Returns the exit status: 0 done, 1 failed (message on stderr), 2
 * usage error (USAGE printed); `dns check` returns 1 when the MX does not
 * point here.
 */
int admin_user_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);
int admin_mount_all_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);
int admin_dns_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);
int admin_ldap_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);

#endif
