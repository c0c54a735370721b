/*
 * admin_image.c - `semail-admin image build`: bootstrap the user image
 * (Debian, sshd, mutt, neomutt) and import it into the Docker engine of
 * [containers] engine, under [containers] image. The bootstrapped tree is
 * kept as a tar under STATE_DIR/image-build, so that a rebuild (a new
 * entrypoint, say) takes seconds; --no-cache bootstraps again.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "admin_image.h"

#define NAME "semail-admin"

static int build(const semail_config *cfg, int reuse_cache)
{
    semail_container_engine *e = NULL;
    semail_image_options opts;
    char work[4096];
    const char *state_dir = semail_config_get(cfg, "global", "state_dir");
    int n, rc = 1;

    n = snprintf(work, sizeof(work), "%s/image-build", state_dir);
    if (n < 0 || (size_t)n >= sizeof(work))
        return prog_fail(NAME, "state_dir too long");
    if (mkdir(state_dir, 0755) < 0 && errno != EEXIST)
        return prog_fail(NAME, "mkdir %s: %s", state_dir, strerror(errno));
    if (semail_container_engine_new_from_config(&e, cfg) < 0)
        return prog_fail(NAME, "%s", semail_error_last());
    semail_image_options_init(&opts);
    opts.work_dir = work;
    opts.reuse_cache = reuse_cache;
    printf("building %s (this takes a minute or two without a cache)\n",
           semail_config_get(cfg, "containers", "image"));
    fflush(stdout);
    if (semail_image_build(e, &opts) < 0)
        (void)prog_fail(NAME, "image build: %s", semail_error_last());
    else {
        printf("image %s imported\n", semail_config_get(cfg, "containers", "image"));
        rc = 0;
    }
    semail_container_engine_free(e);
    return rc;
}

int admin_image_main(const prog_common *pc, int argc, char **argv, int i, const char *usage)
{
    semail_config *cfg;
    int reuse_cache = 1, rc;

    if (i >= argc || strcmp(argv[i], "build") != 0)
        return prog_usage_error(NAME, usage, "image takes one command: build");
    for (i++; i < argc; i++) {
        if (strcmp(argv[i], "--no-cache") == 0)
            reuse_cache = 0;
        else
            return prog_usage_error(NAME, usage, "image build: unknown argument '%s'", argv[i]);
    }
    if ((cfg = prog_load_config(pc)) == NULL)
        return 1;
    rc = build(cfg, reuse_cache);
    semail_config_free(cfg);
    return rc;
}
