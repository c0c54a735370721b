/**
 * @file date.h
 * @brief Dates as mail headers write them (RFC 5322 section 3.3).
 */
#ifndef SEMAIL_DATE_H
#define SEMAIL_DATE_H

#include <time.h>

#include "semail/common.h"
#include "semail/errors.h"

SEMAIL_BEGIN_DECLS

/** A buffer of this size always holds what semail_date_rfc5322() writes. */
#define SEMAIL_DATE_MAX 40

/**
 * Write @p t as an RFC 5322 date in UTC, e.g. "Sun, 29 Nov 2026 05:03:16 +0000"
 * (the form of `Date:` and `Received:` headers), with English day and month
 * names whatever the locale.
 *
 * @param[out] out  buffer of @p size bytes (::SEMAIL_DATE_MAX is enough).
 * @return 0; ::SEMAIL_EINVAL (a time the C library cannot break down);
 *         ::SEMAIL_ETOOBIG (@p size too small: @p out is then ""). Thread-safe.
 */
SEMAIL_EXTERN int semail_date_rfc5322(char *out, size_t size, time_t t);

SEMAIL_END_DECLS

#endif
