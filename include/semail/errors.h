/**
 * @file errors.h
 * @brief The one error convention of libsemail.
 *
 * Every function that can fail returns an `int`: 0 (or a non-negative count)
 * on success, a negative ::semail_err code on failure. The code says what a
 * caller can act on; the human-readable message of the last failure of the
 * calling thread is returned by semail_error_last().
 *
 * Codes are part of the ABI: they are never renumbered, new ones are only
 * appended.
 */
#ifndef SEMAIL_ERRORS_H
#define SEMAIL_ERRORS_H

#include "semail/common.h"

SEMAIL_BEGIN_DECLS

/** Error codes returned (negated) by libsemail functions. */
typedef enum semail_err {
    SEMAIL_OK = 0,         /**< Success. */
    SEMAIL_ERROR = -1,     /**< A failure no caller is expected to act on. */
    SEMAIL_ENOTFOUND = -3, /**< The object asked for does not exist. */
    SEMAIL_EEXISTS = -4,   /**< The object to create already exists. */
    SEMAIL_ELOCKED = -5,   /**< A lock could not be taken in time: retry later. */
    SEMAIL_ETEMP = -6,     /**< A transient failure: the same call may succeed later. */
    SEMAIL_EFULL = -7,     /**< No space left (the person's filesystem or the spool). */
    SEMAIL_EINVAL = -8,    /**< An argument or an input is malformed. */
    SEMAIL_ENOMEM = -9,    /**< Out of memory. */
    SEMAIL_EIO = -10,      /**< A system call failed (see the message). */
    SEMAIL_ECONFIG = -11,  /**< The configuration is invalid (the message names file, line, key). */
    SEMAIL_ETOOBIG = -12,  /**< An input exceeds a configured limit. */
    SEMAIL_EPERM = -13     /**< The operation is not permitted. */
} semail_err;

/**
 * The message that describes the last failure in the calling thread.
 *
 * @return a NUL-terminated string owned by the library, valid until the next
 *         libsemail call in the same thread; never NULL ("" when no failure
 *         was recorded). Thread-safe: each thread has its own message.
 */
SEMAIL_EXTERN const char *semail_error_last(void);

/**
 * The code of the last failure recorded in the calling thread, or ::SEMAIL_OK.
 *
 * Thread-safe.
 */
SEMAIL_EXTERN int semail_error_last_code(void);

/**
 * A short, static description of an error code ("not found", "no space"...).
 *
 * @param code a ::semail_err value (negative) or 0.
 * @return a static string; never NULL. Thread-safe.
 */
SEMAIL_EXTERN const char *semail_strerror(int code);

/** Forget the calling thread's last error. Thread-safe. */
SEMAIL_EXTERN void semail_error_clear(void);

SEMAIL_END_DECLS

#endif
