/*
 * docker_api.h - the Engine API as libsemail uses it: HTTP/1.1 over the
 * engine's UNIX socket (docker_api.c, libcurl) and the reading of its JSON
 * answers (docker_json.c, json-c), plus the engine handle's layout that
 * container.c and image_build.c share.
 *
 * Contract: requests are bounded in time and their answers in size; the
 * JSON readers accept any bytes (they are fuzzed) and fill fixed-size
 * fields, leaving a field empty (never truncated) when its value does not
 * fit or has the wrong type.
 */
#ifndef SEMAIL_DOCKER_API_H
#define SEMAIL_DOCKER_API_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "semail/container.h"

/* Engine API version spoken (Docker 20.10 and podman 4 both serve it). */
#define SEMAIL__DOCKER_API "v1.41"
/* Largest answer body kept (a list of a thousand containers fits). */
#define SEMAIL__DOCKER_BODY_MAX (16u * 1024u * 1024u)

/* Seam for tests: may PORT be bound on ADDR now? 1 yes, 0 no. */
typedef int (*semail__port_probe_fn)(const char *addr, unsigned int port, void *payload);

struct semail_container_engine {
    char *engine;
    char *image;
    char *ssh_listen;
    unsigned int port_low, port_high;
    uint64_t memory, pids, nano_cpus;
    unsigned int timeout_ms;
    char *keys_dir;
    semail__port_probe_fn probe; /* NULL: bind a socket */
    void *probe_payload;
};

/* Replace the "is this port free" check (tests that make start-time collisions). */
SEMAIL_HIDDEN void semail__container_set_port_probe(semail_container_engine *e,
                                                    semail__port_probe_fn fn, void *payload);

/* ---- HTTP (docker_api.c) ---------------------------------------------- */

typedef struct semail__docker_resp {
    long status; /* HTTP status; 0 before an answer */
    semail_buf body;
} semail__docker_resp;

/* Upload source: fill up to N bytes of P; return the count, 0 at the end, -1 to abort. */
typedef long (*semail__docker_read_fn)(char *p, size_t n, void *payload);

SEMAIL_HIDDEN void semail__docker_resp_init(semail__docker_resp *r);
SEMAIL_HIDDEN void semail__docker_resp_free(semail__docker_resp *r);

/*
 * METHOD PATH (relative to the API version, e.g. "/containers/json"), with
 * the JSON BODY (NULL: none). Any HTTP answer is 0 with OUT filled; no
 * engine on the socket or a timeout is SEMAIL_ETEMP; SEMAIL_EIO otherwise.
 */
SEMAIL_HIDDEN int semail__docker_request(const semail_container_engine *e, const char *method,
                                         const char *path, const char *body,
                                         semail__docker_resp *out);
/* POST PATH with a chunked body pulled from READ, bounded by TIMEOUT_MS. */
SEMAIL_HIDDEN int semail__docker_upload(const semail_container_engine *e, const char *path,
                                        semail__docker_read_fn read, void *payload,
                                        unsigned int timeout_ms, semail__docker_resp *out);
/* Percent-encode S for a query string into OUT (freed with free()). */
SEMAIL_HIDDEN int semail__docker_escape(char **out, const char *s);
/*
 * Record an error for an answer that was not expected: the code derives
 * from the status (404 SEMAIL_ENOTFOUND, 409 SEMAIL_EEXISTS, 400
 * SEMAIL_EINVAL, else SEMAIL_EIO) and the message carries WHAT and the
 * engine's "message".
 */
SEMAIL_HIDDEN int semail__docker_fail(const semail__docker_resp *r, const char *what);

/* ---- JSON answers (docker_json.c) --------------------------------------- */

/* What libsemail reads of one container (inspect or list entry). */
typedef struct semail__docker_container {
    char name[80];     /* without the leading '/' */
    char user[33];     /* label semail.user; "" when missing */
    char spec[40];     /* label semail.spec */
    unsigned int port; /* label semail.ssh_port; 0 when missing or not a port */
    char state[16];    /* "running", "exited", "created"... */
} semail__docker_container;

/* The "message" of an error answer into MSG ("" when there is none). */
SEMAIL_HIDDEN void semail__docker_parse_message(const char *json, size_t len, char *msg, size_t n);
/* GET /containers/NAME/json. 0, or SEMAIL_EINVAL for an answer that is not an object. */
SEMAIL_HIDDEN int semail__docker_parse_inspect(const char *json, size_t len,
                                               semail__docker_container *out);
/* The "Id" of an object answer (image inspect) into OUT; SEMAIL_EINVAL when none. */
SEMAIL_HIDDEN int semail__docker_parse_id(const char *json, size_t len, char *out, size_t n);
/*
 * GET /containers/json: an array; entries without an object shape are
 * skipped. *OUT is freed with free() (NULL when *COUNT is 0).
 */
SEMAIL_HIDDEN int semail__docker_parse_list(const char *json, size_t len,
                                            semail__docker_container **out, size_t *count);
/*
 * The progress stream of POST /images/create: JSON objects one after the
 * other. 0 when no object carries "error"; SEMAIL_EIO with the error in
 * MSG otherwise, SEMAIL_EINVAL when the stream is not JSON objects.
 */
SEMAIL_HIDDEN int semail__docker_parse_progress(const char *json, size_t len, char *msg, size_t n);

#endif
