/*
 * validate.c - the names that become paths, addresses and DNS records:
 * logins, ids, domains and subdomain labels.
 *
 * Contract: a name that passes is safe as one path component (no '/', no
 * "..", no leading '.'), as the local part or the domain of an address, and
 * as an LDAP filter value needing no escape. A failure records
 * SEMAIL_EINVAL with the message "'VALUE': what is wrong" (the value quoted
 * with unprintable bytes as \xNN), which callers prefix with what the value
 * is ("id '../x': ...").
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "semail/registry.h"

#define NAME_MAX_LEN   32
#define LABEL_MAX_LEN  63
#define DOMAIN_MAX_LEN 253

static int is_lower_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* Quote S for a message: printable ASCII kept, the rest \xNN, cut at 64. */
static void quote(char *dst, size_t n, const char *s)
{
    size_t o = 0, i;
    for (i = 0; s[i] && o + 8 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 64) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\'')
            dst[o++] = (char)c;
        else
            o += (size_t)snprintf(dst + o, n - o, "\\x%02X", c);
    }
    dst[o] = '\0';
}

static int invalid(const char *value, const char *why)
{
    char q[300];
    quote(q, sizeof(q), value);
    return semail__err(SEMAIL_EINVAL, "'%s': %s", q, why);
}

int semail_validate_name(const char *name)
{
    size_t n, i;

    if (name == NULL || *name == '\0')
        return semail__err(SEMAIL_EINVAL, "'': must not be empty");
    n = strlen(name);
    for (i = 0; i < n; i++) {
        int c = (unsigned char)name[i];
        if (!is_lower_alnum(c) && c != '.' && c != '_' && c != '-')
            return invalid(name, "only a-z, 0-9, '.', '_' and '-' are allowed");
    }
    if (n > NAME_MAX_LEN)
        return invalid(name, "at most 32 characters");
    if (!is_lower_alnum((unsigned char)name[0]))
        return invalid(name, "must start with a letter or a digit");
    if (strstr(name, "..") != NULL)
        return invalid(name, "'..' is not allowed");
    if (name[n - 1] == '.')
        return invalid(name, "must not end with '.'");
    return 0;
}

/* Check one label of N bytes at S; WHAT is "label" or "subdomain". */
static int check_label(const char *whole, const char *s, size_t n)
{
    size_t i;
    if (n == 0)
        return invalid(whole, "empty label (two dots in a row, or a dot at an end)");
    if (n > LABEL_MAX_LEN)
        return invalid(whole, "a label has at most 63 characters");
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            return invalid(whole, "upper-case letters are not allowed: write it in lower case");
        if (!is_lower_alnum(c) && c != '-')
            return invalid(whole, "only a-z, 0-9 and '-' are allowed in a label");
    }
    if (s[0] == '-' || s[n - 1] == '-')
        return invalid(whole, "a label must not start or end with '-'");
    return 0;
}

int semail_validate_label(const char *label)
{
    if (label == NULL || *label == '\0')
        return semail__err(SEMAIL_EINVAL, "'': must not be empty");
    if (strchr(label, '.') != NULL)
        return invalid(label, "one label only: '.' is not allowed");
    return check_label(label, label, strlen(label));
}

int semail_validate_domain(const char *domain)
{
    const char *p, *dot;
    size_t n, labels = 0;
    int err;

    if (domain == NULL || *domain == '\0')
        return semail__err(SEMAIL_EINVAL, "'': must not be empty");
    n = strlen(domain);
    if (n > DOMAIN_MAX_LEN)
        return invalid(domain, "a domain has at most 253 characters");
    if (domain[n - 1] == '.')
        return invalid(domain, "no trailing '.'");
    for (p = domain;; p = dot + 1) {
        dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if ((err = check_label(domain, p, len)) < 0)
            return err;
        labels++;
        if (dot == NULL)
            break;
    }
    if (labels < 2)
        return invalid(domain, "a domain has at least two labels (such as example.org)");
    return 0;
}
