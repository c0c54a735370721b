/*
 * util.c - bounded strings, bounded buffers, careful writes and a strict
 * base64 decoder.
 *
 * Contract: nothing here truncates silently; a result that does not fit is
 * an error (SEMAIL_ETOOBIG), and every buffer has a maximum size.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

int semail__strlcpy(char *dst, const char *src, size_t n)
{
    size_t len = strlen(src);
    if (n == 0)
        return semail__err(SEMAIL_ETOOBIG, "string does not fit");
    if (len >= n) {
        dst[0] = '\0';
        return semail__err(SEMAIL_ETOOBIG, "string of %zu bytes does not fit in %zu", len, n);
    }
    memcpy(dst, src, len + 1);
    return 0;
}

int semail__fmt(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    int r;
    va_start(ap, fmt);
    r = vsnprintf(dst, n, fmt, ap);
    va_end(ap);
    if (r < 0 || (size_t)r >= n) {
        if (n > 0)
            dst[0] = '\0';
        return semail__err(SEMAIL_ETOOBIG, "formatted string does not fit in %zu bytes", n);
    }
    return 0;
}

char *semail__strndup(const char *s, size_t n)
{
    char *p;
    if (s == NULL)
        return NULL;
    p = malloc(n + 1);
    if (p == NULL) {
        semail__err(SEMAIL_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *semail__strdup(const char *s)
{
    return s == NULL ? NULL : semail__strndup(s, strlen(s));
}

void semail__buf_init(semail_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

static int buf_reserve(semail_buf *b, size_t extra)
{
    size_t need, cap;
    char *p;

    if (extra > b->max || b->len > b->max - extra)
        return semail__err(SEMAIL_ETOOBIG, "buffer limit of %zu bytes reached", b->max);
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    p = realloc(b->data, cap);
    if (p == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    b->data = p;
    b->cap = cap;
    return 0;
}

int semail__buf_add(semail_buf *b, const void *p, size_t n)
{
    int err;
    if ((err = buf_reserve(b, n)) < 0)
        return err;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int semail__buf_addstr(semail_buf *b, const char *s)
{
    return semail__buf_add(b, s, strlen(s));
}

int semail__buf_printf(semail_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n, err;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return semail__err(SEMAIL_ERROR, "format error");
    if ((err = buf_reserve(b, (size_t)n)) < 0)
        return err;
    va_start(ap, fmt);
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void semail__buf_reset(semail_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void semail__buf_consume(semail_buf *b, size_t n)
{
    if (n >= b->len) {
        semail__buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void semail__buf_free(semail_buf *b)
{
    free(b->data);
    semail__buf_init(b, b->max);
}

int semail__write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int semail__fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd, err = 0;

    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else if (slash == path) {
        dir[0] = '/';
        dir[1] = '\0';
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof(dir))
            return semail__err(SEMAIL_ETOOBIG, "path too long: %s", path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return semail__errno(semail__errno_code(errno), errno, "open %s", dir);
    if (fsync(fd) < 0)
        err = semail__errno(semail__errno_code(errno), errno, "fsync %s", dir);
    close(fd);
    return err;
}

int semail__tolower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int semail__strncasecmp(const char *a, const char *b, size_t n)
{
    for (; n > 0; a++, b++, n--) {
        int ca = semail__tolower((unsigned char)*a), cb = semail__tolower((unsigned char)*b);
        if (ca != cb || ca == 0)
            return ca - cb;
    }
    return 0;
}

int semail__strcasecmp(const char *a, const char *b)
{
    return semail__strncasecmp(a, b, SIZE_MAX);
}

/* ---- base64 ------------------------------------------------------------- */

/* Shared by SMTP AUTH and TSIG key files, which both want the strict form. */
static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decode one quantum Q (4 characters, the last of the input when LAST). */
static int b64_quantum(unsigned char *out, size_t *n, size_t size, const char *q, int last)
{
    int v[4], pad = 0, j;

    for (j = 0; j < 4; j++) {
        if (q[j] == '=') {
            if (!last || j < 2)
                return -1;
            pad++;
            v[j] = 0;
            continue;
        }
        if (pad > 0 || (v[j] = b64_value(q[j])) < 0)
            return -1; /* data after padding, or not in the alphabet */
    }
    /* Canonical only: the bits that padding drops must be zero (RFC 4648 3.5). */
    if ((pad == 2 && (v[1] & 0xf) != 0) || (pad == 1 && (v[2] & 0x3) != 0))
        return -1;
    if (*n + (size_t)(3 - pad) > size)
        return -1;
    out[(*n)++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
    if (pad < 2)
        out[(*n)++] = (unsigned char)((v[1] & 0xf) << 4 | v[2] >> 2);
    if (pad < 1)
        out[(*n)++] = (unsigned char)((v[2] & 0x3) << 6 | v[3]);
    return 0;
}

long semail__base64_decode(unsigned char *out, size_t size, const char *in, size_t len)
{
    size_t i, n = 0;

    if (len % 4 != 0)
        return -1;
    for (i = 0; i < len; i += 4)
        if (b64_quantum(out, &n, size, in + i, i + 4 == len) < 0)
            return -1;
    return (long)n;
}
