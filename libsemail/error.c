/*
 * error.c - the thread-local "last error" behind semail_error_last().
 *
 * Contract: each thread has its own code and message; recording an error
 * never allocates, so it works when memory is exhausted.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SEMAIL__DEFINES_ERR /* see SEMAIL__RETURNS_CODE in internal.h */
#include "internal.h"

#define ERROR_MSG_MAX 512

static _Thread_local int last_code;
static _Thread_local char last_msg[ERROR_MSG_MAX];

__attribute__((format(printf, 2, 0))) static void record(int code, const char *fmt, va_list ap)
{
    last_code = code;
    if (vsnprintf(last_msg, sizeof(last_msg), fmt, ap) < 0)
        last_msg[0] = '\0';
}

int semail__err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    record(code, fmt, ap);
    va_end(ap);
    return code;
}

int semail__errno(int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    size_t used;
    char ebuf[128];

    va_start(ap, fmt);
    record(code, fmt, ap);
    va_end(ap);
    used = strlen(last_msg);
    /* strerror_r is the GNU variant here: it returns the string to use. */
    const char *es = strerror_r(errnum, ebuf, sizeof(ebuf));
    if (used < sizeof(last_msg))
        (void)snprintf(last_msg + used, sizeof(last_msg) - used, ": %s", es);
    return code;
}

int semail__errno_code(int errnum)
{
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return SEMAIL_EFULL;
    case ENOMEM:
        return SEMAIL_ENOMEM;
    case EAGAIN:
    case EINTR:
    case ETIMEDOUT:
        return SEMAIL_ETEMP;
    case ENOENT:
        return SEMAIL_ENOTFOUND;
    case EEXIST:
        return SEMAIL_EEXISTS;
    case EACCES:
    case EPERM:
        return SEMAIL_EPERM;
    default:
        return SEMAIL_EIO;
    }
}

const char *semail_error_last(void)
{
    return last_msg;
}

int semail_error_last_code(void)
{
    return last_code;
}

void semail_error_clear(void)
{
    last_code = 0;
    last_msg[0] = '\0';
}

const char *semail_strerror(int code)
{
    switch (code) {
    case SEMAIL_OK:
        return "success";
    case SEMAIL_ENOTFOUND:
        return "not found";
    case SEMAIL_EEXISTS:
        return "already exists";
    case SEMAIL_ELOCKED:
        return "locked";
    case SEMAIL_ETEMP:
        return "temporary failure";
    case SEMAIL_EFULL:
        return "no space left";
    case SEMAIL_EINVAL:
        return "invalid input";
    case SEMAIL_ENOMEM:
        return "out of memory";
    case SEMAIL_EIO:
        return "I/O error";
    case SEMAIL_ECONFIG:
        return "configuration error";
    case SEMAIL_ETOOBIG:
        return "limit exceeded";
    case SEMAIL_EPERM:
        return "not permitted";
    default:
        return "error";
    }
}
