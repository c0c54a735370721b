/*
 * admin_image.h - `semail-admin image build`: make the user container
 * image without any registry and import it into the configured engine.
 */
#ifndef SEMAIL_ADMIN_IMAGE_H
#define SEMAIL_ADMIN_IMAGE_H

#include "prog.h"

/* Usage line of the image command, for semail-admin's usage text. */
#define ADMIN_IMAGE_USAGE "       semail-admin [-c FILE] image build [--no-cache]\n"

/*
 * Run `image build [--no-cache]`: ARGV[I] is the command. Returns the exit
 * status: 0 done, 1 failed (message on stderr), 2 usage error.
 */
int admin_image_main(const prog_common *pc, int argc, char **argv, int i, const char *usage);

#endif
