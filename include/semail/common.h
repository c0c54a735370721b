/**
 * @file common.h
 * @brief Macros shared by every public header: visibility and C++ linkage.
 */
#ifndef SEMAIL_COMMON_H
#define SEMAIL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define SEMAIL_BEGIN_DECLS extern "C" {
#define SEMAIL_END_DECLS   }
#else
/** Opens a block of declarations with C linkage. */
#define SEMAIL_BEGIN_DECLS
/** Closes a block opened by SEMAIL_BEGIN_DECLS. */
#define SEMAIL_END_DECLS
#endif

/** Marks a symbol exported from libsemail; everything else is hidden. */
#if defined(__GNUC__)
#define SEMAIL_EXTERN __attribute__((visibility("default")))
#else
#define SEMAIL_EXTERN
#endif

#endif
