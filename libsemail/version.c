/*
 * version.c - the run-time version, so that a program can tell which
 * library it was loaded with (the headers give the compile-time one).
 */
#include "semail/version.h"

const char *semail_version(int *major, int *minor, int *patch)
{
    if (major)
        *major = SEMAIL_VERSION_MAJOR;
    if (minor)
        *minor = SEMAIL_VERSION_MINOR;
    if (patch)
        *patch = SEMAIL_VERSION_PATCH;
    return SEMAIL_VERSION;
}
