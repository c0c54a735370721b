/*
 * docker_api.c - HTTP/1.1 requests to the container engine over its UNIX
 * socket, with libcurl (CURLOPT_UNIX_SOCKET_PATH).
 *
 * Contract: one curl easy handle per request, so any number of threads may
 * call at once; every request is bounded in time (the handle's timeout) and
 * its answer in size (SEMAIL__DOCKER_BODY_MAX); nothing is sent anywhere but
 * the socket (the URL's host is a placeholder curl never resolves; proxies
 * from the environment are switched off).
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "docker_api.h"

#define URL_MAX 4096

void semail__docker_resp_init(semail__docker_resp *r)
{
    r->status = 0;
    semail__buf_init(&r->body, SEMAIL__DOCKER_BODY_MAX);
}

void semail__docker_resp_free(semail__docker_resp *r)
{
    semail__buf_free(&r->body);
    r->status = 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *payload)
{
    semail_buf *b = payload;

    /* Returning less than given makes curl fail with CURLE_WRITE_ERROR. */
    return semail__buf_add(b, p, size * n) < 0 ? 0 : size * n;
}

struct upload {
    semail__docker_read_fn read;
    void *payload;
};

static size_t on_read(char *p, size_t size, size_t n, void *payload)
{
    struct upload *u = payload;
    long r = u->read(p, size * n, u->payload);

    return r < 0 ? CURL_READFUNC_ABORT : (size_t)r;
}

/* Map a transport failure: an engine that is not there is worth retrying later. */
static int curl_fail(CURLcode rc, const char *errbuf, const semail_container_engine *e,
                     const char *method, const char *path)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);

    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING ||
        rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR)
        return semail__err(SEMAIL_ETEMP, "engine %s: %s %s: %s", e->engine, method, path, why);
    if (rc == CURLE_WRITE_ERROR)
        return semail__err(SEMAIL_ETOOBIG, "engine %s: %s %s: answer over %u bytes", e->engine,
                           method, path, SEMAIL__DOCKER_BODY_MAX);
    return semail__err(SEMAIL_EIO, "engine %s: %s %s: %s", e->engine, method, path, why);
}

/* JSON bodies, or a chunked tar upload (no "Expect: 100-continue" round trip). */
static int add_headers(struct curl_slist **hdrs, int upload)
{
    static const char *const json[] = {"Content-Type: application/json", NULL};
    static const char *const tar[] = {"Content-Type: application/x-tar",
                                      "Transfer-Encoding: chunked", "Expect:", NULL};
    const char *const *v = upload ? tar : json;

    for (; *v; v++) {
        struct curl_slist *h = curl_slist_append(*hdrs, *v);
        if (h == NULL) {
            curl_slist_free_all(*hdrs);
            *hdrs = NULL;
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        }
        *hdrs = h;
    }
    return 0;
}

static int perform(const semail_container_engine *e, const char *method, const char *path,
                   const char *body, const struct upload *up, unsigned int timeout_ms,
                   semail__docker_resp *out)
{
    char url[URL_MAX], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    CURL *c;
    CURLcode rc = CURLE_OK;
    int err = 0;

    out->status = 0;
    semail__buf_reset(&out->body);
    if ((err = semail__fmt(url, sizeof(url), "http://localhost/%s%s", SEMAIL__DOCKER_API, path)) <
        0)
        return semail__err(err, "engine request path too long: %.80s...", path);
    if ((c = curl_easy_init()) == NULL)
        return semail__err(SEMAIL_ENOMEM, "curl_easy_init failed");
    if ((err = add_headers(&hdrs, up != NULL)) < 0) {
        curl_easy_cleanup(c);
        return err;
    }
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, e->engine);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 5000 ? timeout_ms : 5000));
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (up) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, (void *)up);
    } else if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        err = curl_fail(rc, errbuf, e, method, path);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    return err;
}

int semail__docker_request(const semail_container_engine *e, const char *method, const char *path,
                           const char *body, semail__docker_resp *out)
{
    return perform(e, method, path, body, NULL, e->timeout_ms, out);
}

int semail__docker_upload(const semail_container_engine *e, const char *path,
                          semail__docker_read_fn read, void *payload, unsigned int timeout_ms,
                          semail__docker_resp *out)
{
    struct upload up = {read, payload};

    return perform(e, "POST", path, NULL, &up, timeout_ms, out);
}

int semail__docker_escape(char **out, const char *s)
{
    char *esc = curl_easy_escape(NULL, s, 0), *copy;

    *out = NULL;
    if (esc == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    copy = semail__strdup(esc);
    curl_free(esc);
    if (copy == NULL)
        return SEMAIL_ENOMEM;
    *out = copy;
    return 0;
}

int semail__docker_fail(const semail__docker_resp *r, const char *what)
{
    char msg[256];
    int code;

    semail__docker_parse_message(r->body.data, r->body.len, msg, sizeof(msg));
    switch (r->status) {
    case 400:
        code = SEMAIL_EINVAL;
        break;
    case 404:
        code = SEMAIL_ENOTFOUND;
        break;
    case 409:
        code = SEMAIL_EEXISTS;
        break;
    default:
        code = SEMAIL_EIO;
        break;
    }
    return semail__err(code, "%s: engine answered %ld%s%s", what, r->status, msg[0] ? ": " : "",
                       msg);
}
