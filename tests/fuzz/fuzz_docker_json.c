/*
 * fuzz_docker_json.c - libFuzzer target for the readers of the Engine
 * API's JSON answers (docker_json.c): error messages, container inspect,
 * the container list, and the image import's progress stream.
 *
 * Checks, for any bytes: no reader crashes or leaks; every field read is
 * NUL-terminated within its size; a port read is 0 or 1-65535; the list's
 * count matches its array; an error message has no control byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "docker_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_container(const semail__docker_container *c)
{
    if (memchr(c->name, '\0', sizeof(c->name)) == NULL ||
        memchr(c->user, '\0', sizeof(c->user)) == NULL ||
        memchr(c->spec, '\0', sizeof(c->spec)) == NULL ||
        memchr(c->state, '\0', sizeof(c->state)) == NULL || c->port > 65535)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    semail__docker_container c, *list = NULL;
    char msg[64];
    size_t n = 0;

    semail__docker_parse_message(json, size, msg, sizeof(msg));
    for (const char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20)
            abort();
    if (semail__docker_parse_inspect(json, size, &c) == 0)
        check_container(&c);
    if (semail__docker_parse_list(json, size, &list, &n) == 0) {
        if ((n == 0) != (list == NULL))
            abort();
        for (size_t i = 0; i < n; i++)
            check_container(&list[i]);
    }
    free(list);
    semail__docker_parse_progress(json, size, msg, sizeof(msg));
    if (memchr(msg, '\0', sizeof(msg)) == NULL)
        abort();
    return 0;
}
