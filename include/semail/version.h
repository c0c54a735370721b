/**
 * @file version.h
 * @brief The library's version, at compile time and at run time.
 *
 * The ABI version (the SONAME's number) changes only when a released ABI
 * breaks; adding functions or error codes does not change it.
 */
#ifndef SEMAIL_VERSION_H
#define SEMAIL_VERSION_H

#include "semail/common.h"

SEMAIL_BEGIN_DECLS

/** Major version of the headers this program was compiled against. */
#define SEMAIL_VERSION_MAJOR 0
/** Minor version of the headers. */
#define SEMAIL_VERSION_MINOR 1
/** Patch level of the headers. */
#define SEMAIL_VERSION_PATCH 0
/** The version as a string. */
#define SEMAIL_VERSION "0.1.0"
/** The ABI version: the number in the SONAME (libsemail.so.N). */
#define SEMAIL_ABI_VERSION 0

/**
 * The version of the library loaded at run time.
 *
 * @param[out] major,minor,patch filled when not NULL.
 * @return the version as a static string such as "0.1.0". Thread-safe.
 */
SEMAIL_EXTERN const char *semail_version(int *major, int *minor, int *patch);

SEMAIL_END_DECLS

#endif
