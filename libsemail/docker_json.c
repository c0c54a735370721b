/*
 * docker_json.c - read the Engine API's JSON answers (json-c).
 *
 * Contract: any bytes are accepted (the answers come from a socket; the
 * fuzz target fuzz_docker_json feeds these functions). Only the few
 * members libsemail acts on are read; a member of the wrong type, or a
 * string that does not fit its field, reads as missing. Nothing here
 * allocates beyond json-c's tree and the list array.
 */
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "docker_api.h"

#define JSON_DEPTH_MAX 32
#define LIST_MAX       100000

/* Parse exactly one JSON value from JSON/LEN; NULL when it is not one. */
static json_object *parse(const char *json, size_t len)
{
    json_tokener *tok;
    json_object *o;

    if (json == NULL || len == 0 || len > SEMAIL__DOCKER_BODY_MAX)
        return NULL;
    if ((tok = json_tokener_new_ex(JSON_DEPTH_MAX)) == NULL)
        return NULL;
    o = json_tokener_parse_ex(tok, json, (int)len);
    if (o != NULL && json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* The string member KEY of OBJ, or NULL. */
static const char *get_str(json_object *obj, const char *key)
{
    json_object *v;

    if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    /* A NUL inside the value would cut it short unnoticed: treat it as missing. */
    if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v))
        return NULL;
    return json_object_get_string(v);
}

static json_object *get_obj(json_object *obj, const char *key, json_type type)
{
    json_object *v;

    if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v) ||
        !json_object_is_type(v, type))
        return NULL;
    return v;
}

/* Copy S (NULL or too long: "") into DST. Strings with NUL bytes read as missing. */
static void copy_field(char *dst, size_t n, const char *s)
{
    if (s == NULL || semail__strlcpy(dst, s, n) < 0)
        dst[0] = '\0';
}

/* "22000" -> 22000; anything but 1-65535 in plain digits -> 0. */
static unsigned int parse_port(const char *s)
{
    unsigned int v = 0;

    if (s == NULL || *s == '\0' || strlen(s) > 5)
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        v = v * 10 + (unsigned int)(*s - '0');
    }
    return v <= 65535 ? v : 0;
}

static void read_labels(json_object *labels, semail__docker_container *c)
{
    copy_field(c->user, sizeof(c->user), get_str(labels, "semail.user"));
    copy_field(c->spec, sizeof(c->spec), get_str(labels, "semail.spec"));
    c->port = parse_port(get_str(labels, "semail.ssh_port"));
}

void semail__docker_parse_message(const char *json, size_t len, char *msg, size_t n)
{
    json_object *o = parse(json, len);

    if (n == 0)
        return;
    copy_field(msg, n, get_str(o, "message"));
    /* The message goes into log lines: no control bytes. */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = ' ';
    json_object_put(o);
}

int semail__docker_parse_inspect(const char *json, size_t len, semail__docker_container *out)
{
    json_object *o = parse(json, len);
    const char *name;

    memset(out, 0, sizeof(*out));
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return semail__err(SEMAIL_EINVAL, "engine: container answer is not a JSON object");
    }
    name = get_str(o, "Name");
    copy_field(out->name, sizeof(out->name), name && name[0] == '/' ? name + 1 : name);
    copy_field(out->state, sizeof(out->state),
               get_str(get_obj(o, "State", json_type_object), "Status"));
    read_labels(get_obj(get_obj(o, "Config", json_type_object), "Labels", json_type_object), out);
    json_object_put(o);
    return 0;
}

int semail__docker_parse_id(const char *json, size_t len, char *out, size_t n)
{
    json_object *o = parse(json, len);
    const char *id = get_str(o, "Id");

    out[0] = '\0';
    /* "sha256:" and 64 hex digits, or a bare hex id: nothing else goes into a path. */
    if (id && strspn(id, "sha256:0123456789abcdef") == strlen(id) && *id)
        copy_field(out, n, id);
    json_object_put(o);
    return out[0] ? 0 : semail__err(SEMAIL_EINVAL, "engine: answer without an id");
}

static void read_list_entry(json_object *e, semail__docker_container *c)
{
    json_object *names = get_obj(e, "Names", json_type_array);
    json_object *first = names ? json_object_array_get_idx(names, 0) : NULL;
    const char *name =
        json_object_is_type(first, json_type_string) ? json_object_get_string(first) : NULL;

    memset(c, 0, sizeof(*c));
    copy_field(c->name, sizeof(c->name), name && name[0] == '/' ? name + 1 : name);
    copy_field(c->state, sizeof(c->state), get_str(e, "State"));
    read_labels(get_obj(e, "Labels", json_type_object), c);
}

int semail__docker_parse_list(const char *json, size_t len, semail__docker_container **out,
                              size_t *count)
{
    json_object *o = parse(json, len);
    semail__docker_container *v = NULL;
    size_t n, i, k = 0;

    *out = NULL;
    *count = 0;
    if (!json_object_is_type(o, json_type_array)) {
        json_object_put(o);
        return semail__err(SEMAIL_EINVAL, "engine: container list is not a JSON array");
    }
    n = json_object_array_length(o);
    if (n > LIST_MAX) {
        json_object_put(o);
        return semail__err(SEMAIL_ETOOBIG, "engine: container list of %zu entries", n);
    }
    if (n > 0 && (v = calloc(n, sizeof(*v))) == NULL) {
        json_object_put(o);
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(o, i);
        if (json_object_is_type(e, json_type_object))
            read_list_entry(e, &v[k++]);
    }
    json_object_put(o);
    if (k == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    *count = k;
    return 0;
}

/* One progress object: its "error" (or errorDetail.message) into MSG; 1 if any. */
static int progress_error(json_object *o, char *msg, size_t n)
{
    const char *e = get_str(o, "error");

    if (e == NULL)
        e = get_str(get_obj(o, "errorDetail", json_type_object), "message");
    if (e == NULL)
        return 0;
    copy_field(msg, n, e);
    return 1;
}

int semail__docker_parse_progress(const char *json, size_t len, char *msg, size_t n)
{
    json_tokener *tok;
    size_t off = 0;
    int err = 0;

    msg[0] = '\0';
    if (len > SEMAIL__DOCKER_BODY_MAX)
        return semail__err(SEMAIL_EINVAL, "engine: progress stream too long");
    if ((tok = json_tokener_new_ex(JSON_DEPTH_MAX)) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    while (err == 0) {
        json_object *o;
        size_t used;

        while (off < len && strchr(" \t\r\n", json[off]) != NULL && json[off] != '\0')
            off++;
        if (off >= len)
            break;
        json_tokener_reset(tok);
        o = json_tokener_parse_ex(tok, json + off, (int)(len - off));
        used = json_tokener_get_parse_end(tok);
        if (o == NULL || !json_object_is_type(o, json_type_object) || used == 0) {
            json_object_put(o);
            err = semail__err(SEMAIL_EINVAL, "engine: progress stream is not JSON objects");
            break;
        }
        if (progress_error(o, msg, n))
            err = semail__err(SEMAIL_EIO, "engine: %s", msg);
        json_object_put(o);
        off += used;
    }
    json_tokener_free(tok);
    return err;
}
