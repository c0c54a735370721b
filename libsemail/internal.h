/*
 * internal.h - helpers shared by the files of libsemail and never exported.
 *
 * Contract: every function here is thread-safe as long as its arguments are
 * not shared; error helpers record the message in the calling thread only.
 */
#ifndef SEMAIL_INTERNAL_H
#define SEMAIL_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "semail/errors.h"

#define SEMAIL_HIDDEN       __attribute__((visibility("hidden")))
#define SEMAIL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define SEMAIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Record CODE with a formatted message for the calling thread; returns CODE. */
SEMAIL_HIDDEN int semail__err(int code, const char *fmt, ...) SEMAIL_PRINTF(2, 3);
/* Same, appending ": strerror(errno)" from ERRNUM. */
SEMAIL_HIDDEN int semail__errno(int code, int errnum, const char *fmt, ...) SEMAIL_PRINTF(3, 4);
/* Map an errno value from a failed write/fsync to the code a caller acts on. */
SEMAIL_HIDDEN int semail__errno_code(int errnum);
#ifdef __clang_analyzer__
/*
 * The static analyzer (clang-tidy) reads one file at a time, so it cannot see
 * that semail__err(), semail__errno() (and wrappers like them) return CODE,
 * which callers always pass negative: without this it follows "error
 * recorded, yet success returned" paths that cannot happen. The value is the
 * same; only the analyzer compiles this. The file defining FN defines
 * SEMAIL__DEFINES_<FN> to keep its own definition unexpanded.
 */
#define SEMAIL__RETURNS_CODE(fn, code, ...)                                                        \
    __extension__({                                                                                \
        int semail__code_ = (code);                                                                \
        (void)fn(semail__code_, __VA_ARGS__);                                                      \
        __builtin_assume(semail__code_ < 0);                                                       \
        semail__code_;                                                                             \
    })
#ifndef SEMAIL__DEFINES_ERR
#define semail__err(...)   SEMAIL__RETURNS_CODE(semail__err, __VA_ARGS__)
#define semail__errno(...) SEMAIL__RETURNS_CODE(semail__errno, __VA_ARGS__)
/*
 * Strict base64 (RFC 4648 4: padding required, canonical, no blanks): decode IN into
 * OUT (SIZE bytes). Returns the decoded length, or -1 when IN is not base64
 * or does not fit (nothing is written past OUT + SIZE). An empty IN
 * decodes to 0 bytes.
 */
SEMAIL_HIDDEN long semail__base64_decode(unsigned char *out, size_t size, const char *in,
                                         size_t len);

#endif
#endif

/* Copy SRC into DST of size N; fails (and leaves DST "" ) when it does not fit. */
SEMAIL_HIDDEN int semail__strlcpy(char *dst, const char *src, size_t n);
/* snprintf that fails with SEMAIL_ETOOBIG instead of truncating. */
SEMAIL_HIDDEN int semail__fmt(char *dst, size_t n, const char *fmt, ...) SEMAIL_PRINTF(3, 4);
/* strdup that records ENOMEM; NULL in gives NULL out without an error. */
SEMAIL_HIDDEN char *semail__strdup(const char *s);
SEMAIL_HIDDEN char *semail__strndup(const char *s, size_t n);

/*
 * A growable byte buffer with a hard maximum (curl's dynbuf): every append
 * is checked against MAX, so no input can make it grow without bound.
 * Always NUL-terminated after a successful append.
 */
typedef struct semail_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
} semail_buf;

SEMAIL_HIDDEN void semail__buf_init(semail_buf *b, size_t max);
SEMAIL_HIDDEN int semail__buf_add(semail_buf *b, const void *p, size_t n);
SEMAIL_HIDDEN int semail__buf_addstr(semail_buf *b, const char *s);
SEMAIL_HIDDEN int semail__buf_printf(semail_buf *b, const char *fmt, ...) SEMAIL_PRINTF(2, 3);
SEMAIL_HIDDEN void semail__buf_reset(semail_buf *b);
SEMAIL_HIDDEN void semail__buf_free(semail_buf *b);
/* Drop the first N bytes. */
SEMAIL_HIDDEN void semail__buf_consume(semail_buf *b, size_t n);

/* Write all of P, retrying on EINTR and short writes; errno kept on failure. */
SEMAIL_HIDDEN int semail__write_all(int fd, const void *p, size_t n);
/* fsync the directory that contains PATH (a new or renamed entry is durable). */
SEMAIL_HIDDEN int semail__fsync_parent(const char *path);

/* ASCII-only case helpers that do not depend on the locale. */
SEMAIL_HIDDEN int semail__tolower(int c);
SEMAIL_HIDDEN int semail__strcasecmp(const char *a, const char *b);
SEMAIL_HIDDEN int semail__strncasecmp(const char *a, const char *b, size_t n);

/*
 * Strict base64 (RFC 4648 4: padding required, canonical, no blanks): decode IN into
 * OUT (SIZE bytes). Returns the decoded length, or -1 when IN is not base64
 * or does not fit (nothing is written past OUT + SIZE). An empty IN
 * decodes to 0 bytes.
 */
SEMAIL_HIDDEN long semail__base64_decode(unsigned char *out, size_t size, const char *in,
                                         size_t len);

#endif
