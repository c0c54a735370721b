/*
 * semail-admin.c - the administrator's tool: dispatches to the provisioning
 * commands (admin_user.c: user, mount-all, dns, ldap), the queue commands
 * (admin_queue.c), image build (admin_image.c) and config check.
 *
 * Contract: every input is checked before anything is changed. Exit 0:
 * done; 1: failed (message on stderr); 2: usage error. The transactions
 * themselves (undo in reverse order, resume after a crash) are libsemail's
 * provision.h.
 */
#include <stdio.h>
#include <string.h>

#include "admin_image.h"
#include "admin_queue.h"
#include "admin_user.h"
#include "prog.h"

#define NAME "semail-admin"

static const char usage[] = "usage:\n" ADMIN_USER_USAGE ADMIN_QUEUE_USAGE ADMIN_IMAGE_USAGE
                            "       semail-admin [-c FILE] config check\n"
                            "       semail-admin -t | --version | --help\n";

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    prog_common pc = {.name = NAME};
    int i;

    prog_parse_common(&pc, argc, argv, usage);
    i = pc.argi;
    if (pc.check_config)
        (void)prog_load_config(&pc); /* exits 0 or 1 */
    if (i >= argc)
        return prog_usage_error(NAME, usage, "a command is needed");
    if (strcmp(argv[i], "user") == 0)
        return admin_user_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "mount-all") == 0)
        return admin_mount_all_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "dns") == 0)
        return admin_dns_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "ldap") == 0)
        return admin_ldap_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "queue") == 0)
        return admin_queue_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "image") == 0)
        return admin_image_main(&pc, argc, argv, i + 1, usage);
    if (strcmp(argv[i], "config") == 0) {
        if (i + 1 >= argc || strcmp(argv[i + 1], "check") != 0 || i + 2 != argc)
            return prog_usage_error(NAME, usage, "config takes one command: check");
        pc.check_config = 1;
        (void)prog_load_config(&pc); /* exits 0 or 1 */
        return 1;
    }
    return prog_usage_error(NAME, usage, "unknown command '%s'", argv[i]);
}
