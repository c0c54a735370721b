/*
 * smtp_address.c - RFC 5321 paths (section 4.1.2) and the arguments of MAIL
 * and RCPT (section 4.1.1.2-3, SIZE of RFC 1870, BODY of RFC 6152).
 *
 * Contract: the parser reads at most LEN bytes, never needs a terminating
 * NUL, refuses 8-bit and control bytes, and enforces the RFC 5321 size
 * limits (SEMAIL_ETOOBIG). It decides syntax only: a local part such as
 * "a%b", "a!b" or a quoted "a@b" is returned as written (unquoted) so that
 * the embedder can refuse it; it never rewrites an address into another.
 */
#include <arpa/inet.h>
#include <string.h>

#include "smtp_internal.h"

/* A cursor over the bytes of a path. */
typedef struct cursor {
    const char *p;
    size_t len;
    size_t pos;
} cursor;

static int peek(const cursor *c)
{
    return c->pos < c->len ? (unsigned char)c->p[c->pos] : -1;
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* atext of RFC 5322 3.2.3. */
static int is_atext(int c)
{
    return is_alpha(c) || is_digit(c) || (c > 0 && c < 0x7f && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* qtextSMTP and the second octet of quoted-pairSMTP: %d32-126 (minus " and \). */
static int is_qtext(int c)
{
    return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

/* dcontent of RFC 5321 4.1.3. */
static int is_dcontent(int c)
{
    return c >= 33 && c <= 126 && c != '[' && c != '\\' && c != ']';
}

/* Dot-string: Atom *("." Atom), copied into OUT. */
static int parse_dot_string(cursor *c, char *out, size_t *n)
{
    int atom_len = 0;

    for (;;) {
        int ch = peek(c);
        if (ch >= 0 && is_atext(ch)) {
            atom_len++;
        } else if (ch == '.' && atom_len > 0) {
            atom_len = 0;
        } else {
            break;
        }
        if (*n >= SEMAIL_LOCAL_MAX)
            return semail__err(SEMAIL_ETOOBIG, "local part longer than %d octets",
                               SEMAIL_LOCAL_MAX);
        out[(*n)++] = (char)ch;
        c->pos++;
    }
    if (atom_len == 0)
        return semail__err(SEMAIL_EINVAL, "invalid local part");
    return 0;
}

/* Quoted-string, unescaped into OUT. */
static int parse_quoted_string(cursor *c, char *out, size_t *n)
{
    c->pos++; /* DQUOTE */
    for (;;) {
        int ch = peek(c);
        if (ch == '"') {
            c->pos++;
            return 0;
        }
        if (ch == '\\') {
            c->pos++;
            ch = peek(c);
            if (ch < 32 || ch > 126)
                return semail__err(SEMAIL_EINVAL, "invalid quoted pair in local part");
        } else if (!is_qtext(ch)) {
            return semail__err(SEMAIL_EINVAL, "invalid character in quoted local part");
        }
        if (*n >= SEMAIL_LOCAL_MAX)
            return semail__err(SEMAIL_ETOOBIG, "local part longer than %d octets",
                               SEMAIL_LOCAL_MAX);
        out[(*n)++] = (char)ch;
        c->pos++;
    }
}

/* Domain: sub-domain *("." sub-domain), labels of letters, digits, inner hyphens. */
static int parse_domain(cursor *c, char *out, size_t *n)
{
    size_t label = 0;

    for (;;) {
        int ch = peek(c);
        if (ch >= 0 && (is_alpha(ch) || is_digit(ch) || (ch == '-' && label > 0))) {
            label++;
        } else if (ch == '.' && label > 0 && out[*n - 1] != '-') {
            label = 0;
        } else {
            break;
        }
        if (label > 63)
            return semail__err(SEMAIL_EINVAL, "domain label longer than 63 octets");
        if (*n >= SEMAIL_DOMAIN_MAX)
            return semail__err(SEMAIL_ETOOBIG, "domain longer than %d octets", SEMAIL_DOMAIN_MAX);
        out[(*n)++] = (char)ch;
        c->pos++;
    }
    if (label == 0 || out[*n - 1] == '-')
        return semail__err(SEMAIL_EINVAL, "invalid domain");
    return 0;
}

/* 1 when S (N bytes) is a dotted quad of decimal numbers up to 255. */
static int ipv4_valid(const char *s, size_t n)
{
    size_t i = 0;
    int part;

    for (part = 0; part < 4; part++) {
        unsigned int v = 0, digits = 0;
        if (part > 0 && (i >= n || s[i++] != '.'))
            return 0;
        while (i < n && is_digit((unsigned char)s[i]) && digits < 4) {
            v = v * 10 + (unsigned int)(s[i++] - '0');
            digits++;
        }
        if (digits == 0 || digits > 3 || v > 255)
            return 0;
    }
    return i == n;
}

/* The inside of an address literal "[...]": IPv4, or "IPv6:" and an IPv6 address. */
static int literal_valid(const char *s, size_t n)
{
    char buf[64];
    unsigned char addr[16];

    if (n > 5 && semail__strncasecmp(s, "IPv6:", 5) == 0) {
        if (n - 5 >= sizeof(buf))
            return 0;
        memcpy(buf, s + 5, n - 5);
        buf[n - 5] = '\0';
        return inet_pton(AF_INET6, buf, addr) == 1;
    }
    return ipv4_valid(s, n);
}

/* address-literal "[" ... "]", stored with its brackets. */
static int parse_literal(cursor *c, char *out, size_t *n)
{
    size_t start = *n;

    for (;;) {
        int ch = peek(c);
        if (ch != '[' && ch != ']' && *n > start && !is_dcontent(ch))
            return semail__err(SEMAIL_EINVAL, "invalid character in address literal");
        if (*n >= SEMAIL_DOMAIN_MAX)
            return semail__err(SEMAIL_ETOOBIG, "domain longer than %d octets", SEMAIL_DOMAIN_MAX);
        out[(*n)++] = (char)ch;
        c->pos++;
        if (ch == ']')
            break;
        if (ch == '[' && *n > start + 1)
            return semail__err(SEMAIL_EINVAL, "invalid address literal");
    }
    if (!literal_valid(out + start + 1, *n - start - 2))
        return semail__err(SEMAIL_EINVAL, "invalid address literal");
    return 0;
}

/* A-d-l ":" — the source route, checked and then forgotten (RFC 5321 3.3). */
static int skip_source_route(cursor *c)
{
    char scratch[SEMAIL_DOMAIN_MAX + 1];
    int err;

    for (;;) {
        size_t n = 0;
        if (peek(c) != '@')
            return semail__err(SEMAIL_EINVAL, "invalid source route");
        c->pos++;
        if ((err = parse_domain(c, scratch, &n)) < 0)
            return err;
        if (peek(c) == ':') {
            c->pos++;
            return 0;
        }
        if (peek(c) != ',')
            return semail__err(SEMAIL_EINVAL, "invalid source route");
        c->pos++;
    }
}

static int parse_mailbox(cursor *c, semail_address *a, unsigned int flags)
{
    size_t ln = 0, dn = 0;
    int err;

    if (peek(c) == '"') {
        a->local_quoted = 1;
        err = parse_quoted_string(c, a->local, &ln);
    } else {
        err = parse_dot_string(c, a->local, &ln);
    }
    a->local[ln] = '\0';
    if (err < 0)
        return err;
    if (peek(c) == '>' && (flags & SEMAIL_ADDRESS_ALLOW_POSTMASTER) && !a->local_quoted &&
        semail__strcasecmp(a->local, "postmaster") == 0)
        return 0; /* RFC 5321 4.1.1.3: <Postmaster> without a domain */
    if (peek(c) != '@')
        return semail__err(SEMAIL_EINVAL, "missing @domain in address");
    c->pos++;
    err = peek(c) == '[' ? parse_literal(c, a->domain, &dn) : parse_domain(c, a->domain, &dn);
    a->domain[dn] = '\0';
    return err;
}

static int parse_path(cursor *c, semail_address *a, unsigned int flags)
{
    int err;

    if (peek(c) != '<')
        return semail__err(SEMAIL_EINVAL, "address must be enclosed in <>");
    c->pos++;
    if (peek(c) == '>') {
        c->pos++;
        if (!(flags & SEMAIL_ADDRESS_ALLOW_NULL))
            return semail__err(SEMAIL_EINVAL, "null address not allowed here");
        a->is_null = 1;
        return 0;
    }
    if (peek(c) == '@' && (err = skip_source_route(c)) < 0)
        return err;
    if ((err = parse_mailbox(c, a, flags)) < 0)
        return err;
    if (peek(c) != '>')
        return semail__err(SEMAIL_EINVAL, "invalid character in address");
    c->pos++;
    return 0;
}

int semail_address_parse(semail_address *out, const char *s, size_t len, unsigned int flags,
                         size_t *consumed)
{
    cursor c;
    int err;

    if (out == NULL || (s == NULL && len > 0))
        return semail__err(SEMAIL_EINVAL, "semail_address_parse: NULL argument");
    memset(out, 0, sizeof(*out));
    if (consumed)
        *consumed = 0;
    /* The path limit counts the text as written, brackets included. */
    c.p = s;
    c.len = len > SEMAIL_PATH_MAX ? SEMAIL_PATH_MAX : len;
    c.pos = 0;
    err = parse_path(&c, out, flags);
    if (err == SEMAIL_EINVAL && c.pos >= c.len && len > c.len)
        err = semail__err(SEMAIL_ETOOBIG, "path longer than %d octets", SEMAIL_PATH_MAX);
    if (err < 0) {
        memset(out, 0, sizeof(*out));
        return err;
    }
    if (consumed)
        *consumed = c.pos;
    return 0;
}

/* 1 when LOCAL can be written as a Dot-string (no quoting needed). */
static int local_is_dot_string(const char *local)
{
    size_t i, n = strlen(local);

    if (n == 0 || local[0] == '.' || local[n - 1] == '.')
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)local[i];
        if (ch == '.' ? local[i + 1] == '.' : !is_atext(ch))
            return 0;
    }
    return 1;
}

int semail_address_format(char *out, size_t size, const semail_address *addr)
{
    semail_buf b;
    const char *p;
    int err = 0;

    if (out == NULL || size == 0 || addr == NULL)
        return semail__err(SEMAIL_EINVAL, "semail_address_format: NULL argument");
    out[0] = '\0';
    if (addr->is_null)
        return 0;
    semail__buf_init(&b, size - 1);
    if (local_is_dot_string(addr->local)) {
        err = semail__buf_addstr(&b, addr->local);
    } else {
        err = semail__buf_add(&b, "\"", 1);
        for (p = addr->local; err == 0 && *p != '\0'; p++) {
            if ((*p == '"' || *p == '\\') && (err = semail__buf_add(&b, "\\", 1)) < 0)
                break;
            err = semail__buf_add(&b, p, 1);
        }
        if (err == 0)
            err = semail__buf_add(&b, "\"", 1);
    }
    if (err == 0 && addr->domain[0] != '\0' && (err = semail__buf_add(&b, "@", 1)) == 0)
        err = semail__buf_addstr(&b, addr->domain);
    if (err == 0)
        memcpy(out, b.data, b.len + 1);
    semail__buf_free(&b);
    return err;
}

/* ---- MAIL and RCPT arguments --------------------------------------------- */

/* Skip "FROM:" / "TO:" and the spaces some clients put after the colon. */
static int skip_keyword(const char *arg, size_t len, const char *kw, size_t *pos)
{
    size_t n = strlen(kw);

    if (len < n || semail__strncasecmp(arg, kw, n) != 0)
        return -1;
    for (*pos = n; *pos < len && arg[*pos] == ' '; (*pos)++)
        ;
    return 0;
}

static int parse_size_value(const char *v, size_t n, size_t *out)
{
    size_t i, value = 0;

    if (n == 0 || n > SMTP_SIZE_DIGITS_MAX)
        return -1;
    for (i = 0; i < n; i++) {
        if (!is_digit((unsigned char)v[i]))
            return -1;
        if (value > (SIZE_MAX - 9) / 10)
            return -1;
        value = value * 10 + (size_t)(v[i] - '0');
    }
    *out = value;
    return 0;
}

/* One esmtp-param "KEY[=VALUE]" of MAIL; SEEN remembers which were given. */
static int parse_mail_param(const char *s, size_t n, smtp_mail_params *p, unsigned int *seen,
                            semail_reply *r)
{
    const char *eq = memchr(s, '=', n);
    size_t klen = eq ? (size_t)(eq - s) : n;
    const char *v = eq ? eq + 1 : s + n;
    size_t vlen = eq ? n - klen - 1 : 0;

    if (klen == 4 && semail__strncasecmp(s, "SIZE", 4) == 0) {
        if ((*seen & 1u) || parse_size_value(v, vlen, &p->size) < 0)
            goto bad;
        *seen |= 1u;
        return 0;
    }
    if (klen == 4 && semail__strncasecmp(s, "BODY", 4) == 0 && !(*seen & 2u)) {
        *seen |= 2u;
        if (vlen == 4 && semail__strncasecmp(v, "7BIT", 4) == 0)
            return 0;
        if (vlen == 8 && semail__strncasecmp(v, "8BITMIME", 8) == 0) {
            p->body_8bit = 1;
            return 0;
        }
    }
bad:
    semail_reply_set(r, 555, "5.5.4", "Unsupported or malformed parameter %.*s",
                     (int)(klen > 64 ? 64 : klen), s);
    return semail__err(SEMAIL_EINVAL, "bad MAIL parameter");
}

/* Reply for an address the path parser refused (ERR), with the role's enhanced code. */
static int address_error(semail_reply *r, int err, const char *enhanced, const char *who)
{
    if (err == SEMAIL_ETOOBIG)
        semail_reply_set(r, 501, enhanced, "%s address too long", who);
    else
        semail_reply_set(r, 501, enhanced, "Bad %s address syntax", who);
    return err;
}

int semail__smtp_parse_mail(semail_address *addr, smtp_mail_params *p, const char *arg, size_t len,
                            semail_reply *r)
{
    size_t pos, used = 0; /* set by semail_address_parse() on success */
    unsigned int seen = 0;
    int err;

    memset(p, 0, sizeof(*p));
    if (skip_keyword(arg, len, "FROM:", &pos) < 0) {
        semail_reply_set(r, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
        return semail__err(SEMAIL_EINVAL, "MAIL without FROM:");
    }
    err = semail_address_parse(addr, arg + pos, len - pos, SEMAIL_ADDRESS_ALLOW_NULL, &used);
    if (err < 0)
        return address_error(r, err, "5.1.7", "sender");
    pos += used;
    if (pos < len && arg[pos] != ' ') {
        semail_reply_set(r, 501, "5.1.7", "Bad sender address syntax");
        return semail__err(SEMAIL_EINVAL, "garbage after the path");
    }
    while (pos < len) {
        size_t start;
        while (pos < len && arg[pos] == ' ')
            pos++;
        for (start = pos; pos < len && arg[pos] != ' '; pos++)
            ;
        if (pos > start && (err = parse_mail_param(arg + start, pos - start, p, &seen, r)) < 0)
            return err;
    }
    return 0;
}

int semail__smtp_parse_rcpt(semail_address *addr, const char *arg, size_t len, semail_reply *r)
{
    size_t pos, used = 0; /* set by semail_address_parse() on success */
    int err;

    if (skip_keyword(arg, len, "TO:", &pos) < 0) {
        semail_reply_set(r, 501, "5.5.4", "Syntax: RCPT TO:<address>");
        return semail__err(SEMAIL_EINVAL, "RCPT without TO:");
    }
    err = semail_address_parse(addr, arg + pos, len - pos, SEMAIL_ADDRESS_ALLOW_POSTMASTER, &used);
    if (err < 0)
        return address_error(r, err, "5.1.3", "recipient");
    pos += used;
    if (pos < len && arg[pos] != ' ') {
        semail_reply_set(r, 501, "5.1.3", "Bad recipient address syntax");
        return semail__err(SEMAIL_EINVAL, "garbage after the path");
    }
    while (pos < len && arg[pos] == ' ')
        pos++;
    if (pos < len) {
        semail_reply_set(r, 555, "5.5.4", "RCPT parameters are not supported");
        return semail__err(SEMAIL_EINVAL, "RCPT parameter");
    }
    return 0;
}
