/*
 * admin_queue.h - `semail-admin queue ...`: list, flush and delete the
 * messages of semail-outbound's live queue (STATE_DIR/queue).
 */
#ifndef SEMAIL_ADMIN_QUEUE_H
#define SEMAIL_ADMIN_QUEUE_H

#include "prog.h"

/* Usage lines of the queue commands, for semail-admin's usage text. */
#define ADMIN_QUEUE_USAGE                                                                          \
    "       semail-admin [-c FILE] queue list [--json]\n"                                          \
    "       semail-admin [-c FILE] queue flush\n"                                                  \
    "       semail-admin [-c FILE] queue delete QID\n"

/*
 * Run `queue COMMAND ARGS...`: ARGV[I] is the command. Loads the
 * configuration through PC. Returns the exit status: 0 done, 1 failed
 * (message on stderr), 2 usage error (USAGE printed).
 */
int admin_queue_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);

#endif
