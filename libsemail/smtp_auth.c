/*
 * smtp_auth.c - AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN
 * mechanisms: the AUTH command, the SASL exchange that follows it (state
 * SEMAIL_STATE_AUTH, where lines are responses and never commands); the
 * responses are decoded by semail__base64_decode() (util.c).
 *
 * Contract: an exchange begins with AUTH in READY and ends back in READY
 * with exactly one final reply (235, 454, 500 5.5.6, 501, 535), or in CLOSED
 * with 421 after max_auth_failures; in between only 334 challenges are
 * sent. The embedder's callback sees only well-formed credentials: an
 * identity of 1..SMTP_AUTH_ID_MAX octets without control characters, a
 * password of 1..SMTP_AUTH_PASSWORD_MAX octets without NUL. Decoded
 * credentials live on the stack of the call that checks them (and the LOGIN
 * user name in sasl_user between the two steps) and are wiped after use.
 */
#include <stdlib.h>
#include <string.h>

#include "smtp_internal.h"

/* The longest decoded response: a PLAIN message at its limits. */
#define SASL_DECODED_MAX (SMTP_AUTH_ID_MAX + 1 + SMTP_AUTH_ID_MAX + 1 + SMTP_AUTH_PASSWORD_MAX)

/* RFC 4954 4: the LOGIN prompts "Username:" and "Password:", in base64. */
#define LOGIN_USER_PROMPT "VXNlcm5hbWU6"
#define LOGIN_PASS_PROMPT "UGFzc3dvcmQ6"

/* ---- checks ---------------------------------------------------------------- */

/* An authentication identity: 1..SMTP_AUTH_ID_MAX octets, no control characters. */
static int identity_ok(const unsigned char *p, size_t n)
{
    size_t i;

    if (n == 0 || n > SMTP_AUTH_ID_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return 1;
}

static int password_ok(const unsigned char *p, size_t n)
{
    return n > 0 && n <= SMTP_AUTH_PASSWORD_MAX && memchr(p, '\0', n) == NULL;
}

/*
 * Decode a response (an initial response may be "=", the empty one) into
 * BUF, NUL-terminated. Returns the length, or -1 with R filled.
 */
static long decode_response(unsigned char *buf, size_t size, const char *in, size_t len,
                            semail_reply *r)
{
    long n;

    if (len == 1 && in[0] == '=')
        len = 0;
    n = semail__base64_decode(buf, size - 1, in, len);
    if (n < 0) {
        semail_reply_set(r, 501, "5.5.2", "Cannot Base64-decode Client responses");
        return -1;
    }
    buf[n] = '\0';
    return n;
}

static void malformed(semail_reply *r)
{
    semail_reply_set(r, 501, "5.5.2", "Invalid authentication data");
}

/* ---- the verdict ------------------------------------------------------------- */

/* A failed exchange: 535, or 421 and close once there were too many. */
static void failed(semail_session *s, semail_reply *r)
{
    if (++s->auth_failures >= s->max_auth_failures)
        semail_reply_set(r, 421, "4.7.0", "%s Too many authentication failures", s->hostname);
}

/* Ask the embedder about USER and PASS; fills R with the final reply. */
static void verify(semail_session *s, const char *user, const char *pass, semail_reply *r)
{
    semail_envelope env;
    int rc;

    semail__smtp_envelope(s, &env);
    memset(r, 0, sizeof(*r));
    rc = s->auth_cb(r, &env, user, pass, s->payload);
    if (rc < 0 || semail__smtp_reply_check(r) < 0) {
        semail_reply_set(r, 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    if (r->code / 100 == 5) {
        failed(s, r);
        return;
    }
    if (r->code / 100 != 2)
        return;
    if ((s->auth_user = semail__strdup(user)) == NULL) {
        semail_reply_set(r, 454, "4.7.0", "Temporary authentication failure");
        return;
    }
    if (r->code != 235) { /* RFC 4954 6: success is 235, whatever the embedder wrote */
        r->code = 235;
        memcpy(r->enhanced, "2.7.0", sizeof("2.7.0"));
    }
}

/* A PLAIN message (RFC 4616 2): [authzid] NUL authcid NUL passwd. */
static void plain_message(semail_session *s, const char *in, size_t len, semail_reply *r)
{
    unsigned char buf[SASL_DECODED_MAX + 1];
    const unsigned char *authcid, *pass, *nul1, *nul2;
    size_t zlen, clen, plen;
    long n;

    if ((n = decode_response(buf, sizeof(buf), in, len, r)) < 0)
        return;
    nul1 = memchr(buf, '\0', (size_t)n);
    nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(buf + n - (nul1 + 1))) : NULL;
    if (nul2 == NULL) {
        malformed(r);
        goto done;
    }
    authcid = nul1 + 1;
    pass = nul2 + 1;
    zlen = (size_t)(nul1 - buf);
    clen = (size_t)(nul2 - authcid);
    plen = (size_t)(buf + n - pass);
    if (zlen > SMTP_AUTH_ID_MAX || !identity_ok(authcid, clen) || !password_ok(pass, plen))
        malformed(r);
    else if (zlen > 0 && (zlen != clen || memcmp(buf, authcid, clen) != 0)) {
        /* Acting for someone else is not offered. */
        semail_reply_set(r, 535, "5.7.8", "Authentication credentials invalid");
        failed(s, r);
    } else
        verify(s, (const char *)authcid, (const char *)pass, r);
done:
    explicit_bzero(buf, sizeof(buf));
}

/* The LOGIN user name: kept for the password step, which is asked for. */
static void login_user(semail_session *s, const char *in, size_t len, semail_reply *r)
{
    unsigned char buf[SASL_DECODED_MAX + 1];
    long n;

    if ((n = decode_response(buf, sizeof(buf), in, len, r)) < 0)
        return;
    if (!identity_ok(buf, (size_t)n)) {
        malformed(r);
    } else {
        memcpy(s->sasl_user, buf, (size_t)n + 1);
        semail__smtp_enter_state_step(s, SEMAIL_STATE_AUTH, SASL_LOGIN_PASS);
        semail_reply_set(r, 334, NULL, "%s", LOGIN_PASS_PROMPT);
    }
    explicit_bzero(buf, sizeof(buf));
}

static void login_password(semail_session *s, const char *in, size_t len, semail_reply *r)
{
    unsigned char buf[SASL_DECODED_MAX + 1];
    long n;

    if ((n = decode_response(buf, sizeof(buf), in, len, r)) < 0)
        return;
    if (!password_ok(buf, (size_t)n))
        malformed(r);
    else
        verify(s, s->sasl_user, (const char *)buf, r);
    explicit_bzero(buf, sizeof(buf));
}

/* ---- the command and the exchange --------------------------------------------- */

/* Send R; unless it is a challenge, the exchange is over (back to READY first,
 * so that a 421 still closes the session). */
static void answer(semail_session *s, semail_reply *r)
{
    if (r->code != 334)
        semail__smtp_enter_state(s, SEMAIL_STATE_READY);
    semail__smtp_send(s, r);
}

void semail__smtp_auth(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    size_t mlen, ir;

    if (s->auth_user != NULL) {
        semail_reply_set(r, 503, "5.5.1", "Already authenticated");
        return;
    }
    if (!s->auth_offered) {
        if (s->auth_cb != NULL && !s->tls)
            semail_reply_set(r, 538, "5.7.11",
                             "Encryption required for requested authentication mechanism");
        else
            semail_reply_set(r, 503, "5.5.1", "Authentication not enabled");
        return;
    }
    for (mlen = 0; mlen < len && arg[mlen] != ' '; mlen++)
        ;
    for (ir = mlen; ir < len && arg[ir] == ' '; ir++)
        ;
    if (mlen == 5 && semail__strncasecmp(arg, "PLAIN", 5) == 0) {
        if (ir < len) {
            plain_message(s, arg + ir, len - ir, r);
            return;
        }
        semail__smtp_enter_state_step(s, SEMAIL_STATE_AUTH, SASL_PLAIN);
        semail_reply_set(r, 334, NULL, "%s", ""); /* RFC 4954 4: the empty challenge */
    } else if (mlen == 5 && semail__strncasecmp(arg, "LOGIN", 5) == 0) {
        if (ir < len) {
            login_user(s, arg + ir, len - ir, r);
            return;
        }
        semail__smtp_enter_state_step(s, SEMAIL_STATE_AUTH, SASL_LOGIN_USER);
        semail_reply_set(r, 334, NULL, "%s", LOGIN_USER_PROMPT);
    } else {
        semail_reply_set(r, 504, "5.5.4", "Unrecognized authentication type");
    }
}

void semail__smtp_sasl_line(semail_session *s, const char *line, size_t len)
{
    semail_reply r;

    if (len == 1 && line[0] == '*') {
        semail_reply_set(&r, 501, "5.0.0", "Authentication cancelled");
    } else if (s->sasl_step == SASL_PLAIN) {
        plain_message(s, line, len, &r);
    } else if (s->sasl_step == SASL_LOGIN_USER) {
        login_user(s, line, len, &r);
    } else if (s->sasl_step == SASL_LOGIN_PASS) {
        login_password(s, line, len, &r);
    } else {
        semail_reply_set(&r, 451, "4.3.0", "Local error in processing"); /* cannot happen */
    }
    answer(s, &r);
}

void semail__smtp_sasl_too_long(semail_session *s)
{
    semail_reply r;

    semail_reply_set(&r, 500, "5.5.6", "Authentication Exchange line is too long");
    answer(s, &r);
}
