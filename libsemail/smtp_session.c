/*
 * smtp_session.c - the SMTP server session (RFC 5321): its life cycle, its
 * state, its transaction, and the reading of its input into command lines
 * and DATA lines. Commands themselves are in smtp_commands.c.
 *
 * Contract: no socket I/O; every byte of input is either processed, kept
 * (bounded: a partial line, or SMTP_INPUT_MAX while paused) or dropped once
 * CLOSED. A line ends only at CRLF, in commands and in DATA alike; the end of
 * data is the line "." and nothing else, and a message with a bare CR or LF
 * is read to its real end and then refused whole. Memory is bounded by the
 * limits in smtp_internal.h whatever the client sends.
 *
 * Pipelining: input that follows a command line before its reply was given
 * (it arrived with it) is legal only once EHLO was accepted (RFC 2920 needs
 * PIPELINING advertised). Without ESMTP it closes the session with 554,
 * checked after the command, so that "EHLO x\r\nMAIL ..." (EHLO sets ESMTP)
 * is accepted and "HELO x\r\nMAIL ..." is not.
 *
 * Flow control: when the pending output passes SMTP_OUTPUT_SOFT_MAX (a
 * client pipelining without reading replies), processing pauses and input is
 * kept; consuming output resumes it (so does semail_session_feed(s, NULL,
 * 0)). Input kept beyond SMTP_INPUT_MAX while paused closes with 421.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "smtp_internal.h"

int semail_session_options_init(semail_session_options *opts)
{
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "semail_session_options_init: NULL options");
    memset(opts, 0, sizeof(*opts));
    opts->version = SEMAIL_SESSION_OPTIONS_VERSION;
    return 0;
}

/* 1 when S is non-empty printable ASCII of at most MAX bytes. */
static int printable(const char *s, size_t max)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++)
        if (i >= max || (unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return i > 0;
}

static int check_options(const semail_session_options *o)
{
    if (o == NULL || o->version != SEMAIL_SESSION_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "session options missing or of an unknown version");
    if (o->hostname == NULL || !printable(o->hostname, SMTP_HOSTNAME_MAX))
        return semail__err(SEMAIL_EINVAL, "session hostname missing or invalid");
    if (o->client_addr != NULL && !printable(o->client_addr, SMTP_CLIENT_ADDR_MAX))
        return semail__err(SEMAIL_EINVAL, "session client address invalid");
    if (o->rcpt == NULL || o->message == NULL)
        return semail__err(SEMAIL_EINVAL, "session callbacks rcpt and message are required");
    if (o->auth_offered && o->auth == NULL)
        return semail__err(SEMAIL_EINVAL, "session offers AUTH without an auth callback");
    return 0;
}

int semail_session_new(semail_session **out, const semail_session_options *opts)
{
    semail_session *s = NULL;
    semail_reply r;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "semail_session_new: NULL out");
    *out = NULL;
    if ((err = check_options(opts)) < 0)
        return err;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    semail__buf_init(&s->in, SMTP_INPUT_MAX);
    semail__buf_init(&s->out, SMTP_OUTPUT_MAX);
    s->hostname = semail__strdup(opts->hostname);
    s->client_addr = semail__strdup(opts->client_addr ? opts->client_addr : "unknown");
    if (s->hostname == NULL || s->client_addr == NULL) {
        err = SEMAIL_ENOMEM;
        goto done;
    }
    s->max_message_size = opts->max_message_size;
    s->data_max = opts->max_message_size ? opts->max_message_size : SMTP_MESSAGE_HARD_MAX;
    s->max_recipients = opts->max_recipients ? opts->max_recipients : SMTP_DEFAULT_MAX_RECIPIENTS;
    s->max_errors = opts->max_errors ? opts->max_errors : SMTP_DEFAULT_MAX_ERRORS;
    s->max_junk = opts->max_junk_commands ? opts->max_junk_commands : SMTP_DEFAULT_MAX_JUNK;
    s->rcpt_cb = opts->rcpt;
    s->message_cb = opts->message;
    s->payload = opts->payload;
    s->auth_offered = opts->auth_offered != 0;
    s->auth_cb = opts->auth;
    s->mail_cb = opts->mail;
    s->tls = opts->tls != 0;
    s->max_auth_failures =
        opts->max_auth_failures ? opts->max_auth_failures : SMTP_DEFAULT_AUTH_FAILURES;
    s->state = SEMAIL_STATE_INIT;
    /* RFC 2034 3: the greeting carries no enhanced status code. */
    semail_reply_set(&r, 220, NULL, "%s ESMTP SEMail", s->hostname);
    if ((err = semail__smtp_reply_format(&s->out, &r, 0)) < 0)
        goto done;
    *out = s;
    s = NULL;
done:
    semail_session_free(s);
    return err;
}

static void txn_free(smtp_txn *t)
{
    if (t == NULL)
        return;
    semail__buf_free(&t->data);
    free(t->rcpts);
    free(t);
}

void semail_session_free(semail_session *s)
{
    if (s == NULL)
        return;
    txn_free(s->txn);
    semail__buf_free(&s->in);
    semail__buf_free(&s->out);
    free(s->hostname);
    free(s->client_addr);
    free(s->auth_user);
    explicit_bzero(s->sasl_user, sizeof(s->sasl_user));
    free(s);
}

void semail__smtp_enter_state_step(semail_session *s, semail_session_state st,
                                   enum smtp_sasl_step step)
{
    if (s->state == SEMAIL_STATE_CLOSED)
        return; /* final: input is ignored, only the pending output remains */
    if (st == SEMAIL_STATE_AUTH) {
        s->sasl_step = step;
    } else if (s->state == SEMAIL_STATE_AUTH) {
        s->sasl_step = 0;
        explicit_bzero(s->sasl_user, sizeof(s->sasl_user));
    }
    if (st != SEMAIL_STATE_MAIL && st != SEMAIL_STATE_RCPT && st != SEMAIL_STATE_DATA) {
        txn_free(s->txn);
        s->txn = NULL;
    }
    if (st == SEMAIL_STATE_DATA && s->txn != NULL) {
        s->txn->data_flags = 0;
        s->txn->in_long_line = 0;
        semail__buf_reset(&s->txn->data);
    }
    s->state = st;
}

void semail__smtp_enter_state(semail_session *s, semail_session_state st)
{
    semail__smtp_enter_state_step(s, st, 0);
}

int semail__smtp_txn_begin(semail_session *s, semail_reply *r)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char rnd[SMTP_TXN_ID_LEN / 2];
    smtp_txn *t;
    ssize_t got;
    size_t i;

    do
        got = getrandom(rnd, sizeof(rnd), 0);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)sizeof(rnd)) {
        semail__errno(SEMAIL_EIO, errno, "getrandom");
        semail_reply_set(r, 451, "4.3.0", "Local error in processing");
        return SEMAIL_EIO;
    }
    if ((t = calloc(1, sizeof(*t))) == NULL) {
        semail_reply_set(r, 452, "4.3.1", "Insufficient system storage");
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    }
    for (i = 0; i < sizeof(rnd); i++) {
        t->id[2 * i] = hex[rnd[i] >> 4];
        t->id[2 * i + 1] = hex[rnd[i] & 0xf];
    }
    semail__buf_init(&t->data, s->data_max);
    txn_free(s->txn);
    s->txn = t;
    return 0;
}

int semail__smtp_txn_add_rcpt(semail_session *s, const semail_address *a)
{
    smtp_txn *t = s->txn;

    if (t->rcpt_count >= s->max_recipients)
        return semail__err(SEMAIL_ETOOBIG, "too many recipients");
    if (t->rcpt_count == t->rcpt_cap) {
        size_t cap = t->rcpt_cap ? t->rcpt_cap * 2 : 8;
        semail_address *p;
        if (cap > s->max_recipients)
            cap = s->max_recipients;
        if ((p = realloc(t->rcpts, cap * sizeof(*p))) == NULL)
            return semail__err(SEMAIL_ENOMEM, "out of memory");
        t->rcpts = p;
        t->rcpt_cap = cap;
    }
    t->rcpts[t->rcpt_count++] = *a;
    return 0;
}

void semail__smtp_envelope(const semail_session *s, semail_envelope *env)
{
    memset(env, 0, sizeof(*env));
    env->helo = s->helo;
    env->esmtp = s->esmtp;
    env->client_addr = s->client_addr;
    env->auth_user = s->auth_user;
    env->tls = s->tls;
    if (s->txn == NULL)
        return;
    env->sender = &s->txn->sender;
    env->rcpts = s->txn->rcpts;
    env->rcpt_count = s->txn->rcpt_count;
    env->declared_size = s->txn->declared_size;
    env->body_8bit = s->txn->body_8bit;
    env->txn_id = s->txn->id;
}

/* Queue a 421 and close: the last words of a session. */
static void close_with(semail_session *s, const char *enhanced, const char *text)
{
    semail_reply r;

    semail_reply_set(&r, 421, enhanced, "%s %s", s->hostname, text);
    (void)semail__smtp_reply_format(&s->out, &r, 0);
    semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
}

void semail__smtp_send(semail_session *s, const semail_reply *r)
{
    if (semail__smtp_reply_format(&s->out, r, 0) < 0) {
        /* Cannot happen within SMTP_OUTPUT_MAX; never go on without the reply. */
        semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
        return;
    }
    if (r->code >= 400) {
        s->stats.rejected++;
        s->errors++;
    }
    if (r->code == 421)
        semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
    else if (r->code >= 400 && s->errors >= s->max_errors && s->state != SEMAIL_STATE_CLOSED)
        close_with(s, "4.7.0", "Too many errors, closing connection");
}

void semail__smtp_send_close(semail_session *s, const semail_reply *r)
{
    if (r->code >= 400)
        s->stats.rejected++;
    (void)semail__smtp_reply_format(&s->out, r, 0);
    semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
}

void semail__smtp_send_continue(semail_session *s, int code, const char *text)
{
    semail_reply r;

    semail_reply_set(&r, code, NULL, "%s", text);
    if (semail__smtp_reply_format(&s->out, &r, 1) < 0)
        semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
}

/* ---- DATA ---------------------------------------------------------------- */

static void deliver(semail_session *s, semail_reply *r)
{
    semail_envelope env;
    smtp_txn *t = s->txn;
    int rc;

    semail__smtp_envelope(s, &env);
    memset(r, 0, sizeof(*r));
    rc = s->message_cb(r, &env, t->data.data ? t->data.data : "", t->data.len, s->payload);
    if (rc < 0 || semail__smtp_reply_check(r) < 0)
        semail_reply_set(r, 451, "4.3.0", "Local error in processing");
}

/* The line "." arrived: answer for the whole message, end the transaction. */
static void data_end(semail_session *s)
{
    unsigned int f = s->txn->data_flags;
    semail_reply r;

    if (f & SMTP_DATA_BARE)
        semail_reply_set(&r, 550, "5.6.0", "Message refused: bare CR or LF (RFC 5321 2.3.8)");
    else if (f & SMTP_DATA_LONG_LINE)
        semail_reply_set(&r, 500, "5.5.2", "Line too long");
    else if (f & SMTP_DATA_TOO_BIG)
        semail_reply_set(&r, 552, "5.3.4", "Message too big");
    else if (f & SMTP_DATA_NOMEM)
        semail_reply_set(&r, 452, "4.3.1", "Insufficient system storage");
    else
        deliver(s, &r);
    if (r.code / 100 == 2) {
        s->stats.messages++;
        s->junk = 0; /* a client that delivers may RSET between its messages */
    }
    semail__smtp_enter_state(s, SEMAIL_STATE_READY);
    semail__smtp_send(s, &r);
}

static void note_bare(smtp_txn *t, const char *p, size_t n)
{
    if (memchr(p, '\r', n) != NULL || memchr(p, '\n', n) != NULL)
        t->data_flags |= SMTP_DATA_BARE;
}

/* Store one text line (CRLF removed), dot-unstuffed, within the size limit. */
static void store_line(semail_session *s, const char *p, size_t n)
{
    smtp_txn *t = s->txn;
    int err;

    if (n > 0 && p[0] == '.') {
        p++;
        n--;
    }
    if (n + 2 > s->data_max - t->data.len) {
        t->data_flags |= SMTP_DATA_TOO_BIG;
        semail__buf_free(&t->data); /* refused anyway: give the memory back now */
        return;
    }
    if ((err = semail__buf_add(&t->data, p, n)) == 0)
        err = semail__buf_add(&t->data, "\r\n", 2);
    if (err < 0) {
        t->data_flags |= err == SEMAIL_ETOOBIG ? SMTP_DATA_TOO_BIG : SMTP_DATA_NOMEM;
        semail__buf_free(&t->data);
    }
}

/* Consume one DATA line from P (AVAIL bytes); 0 when more input is needed. */
static size_t data_step(semail_session *s, const char *p, size_t avail)
{
    smtp_txn *t = s->txn;
    const char *eol = memmem(p, avail, "\r\n", 2);
    size_t n, keep;

    if (eol == NULL) {
        if (avail < SEMAIL_TEXT_LINE_MAX && !t->in_long_line)
            return 0;
        /* Too long already: drop it, but keep a CR that may begin the CRLF. */
        keep = p[avail - 1] == '\r';
        note_bare(t, p, avail - keep);
        t->data_flags |= SMTP_DATA_LONG_LINE;
        t->in_long_line = 1;
        return avail - keep;
    }
    n = (size_t)(eol - p);
    if (n == 1 && p[0] == '.' && !t->in_long_line) {
        data_end(s);
        return 3;
    }
    note_bare(t, p, n);
    if (t->in_long_line || n + 2 > SEMAIL_TEXT_LINE_MAX)
        t->data_flags |= SMTP_DATA_LONG_LINE;
    else if (t->data_flags == 0)
        store_line(s, p, n);
    t->in_long_line = 0;
    return n + 2;
}

/* ---- command lines ------------------------------------------------------- */

/*
 * Consume one command line, or one SASL response line in the AUTH state,
 * from P (AVAIL bytes); 0 when more input is needed.
 */
static size_t command_step(semail_session *s, const char *p, size_t avail)
{
    const char *eol = memmem(p, avail, "\r\n", 2);
    int sasl = s->state == SEMAIL_STATE_AUTH;
    size_t max = sasl ? SMTP_SASL_LINE_MAX : SEMAIL_COMMAND_LINE_MAX;
    semail_reply r;
    size_t n;

    if (eol == NULL) {
        if (avail < max && !s->discarding)
            return 0;
        /* Over the limit: drop it (bounded memory), keep a CR that may begin the CRLF. */
        s->discarding = 1;
        return avail - (p[avail - 1] == '\r');
    }
    n = (size_t)(eol - p);
    if (s->discarding || n + 2 > max) {
        s->discarding = 0;
        if (sasl) {
            semail__smtp_sasl_too_long(s);
        } else {
            s->stats.commands++;
            semail_reply_set(&r, 500, "5.5.2", "Line too long");
            semail__smtp_send(s, &r);
        }
    } else if (sasl) {
        semail__smtp_sasl_line(s, p, n);
    } else {
        semail__smtp_command(s, p, n);
        if (avail > n + 2 && !s->esmtp && s->state != SEMAIL_STATE_CLOSED) {
            /* More came with it: the client did not wait for the reply. */
            semail_reply_set(&r, 554, "5.5.1", "Error: improper use of SMTP command pipelining");
            semail__smtp_send_close(s, &r);
        }
    }
    return n + 2;
}

/* Process the kept input as far as it goes, or until output must drain first. */
static void process(semail_session *s)
{
    size_t pos = 0, used;

    while (pos < s->in.len && s->state != SEMAIL_STATE_CLOSED &&
           s->out.len < SMTP_OUTPUT_SOFT_MAX) {
        const char *p = s->in.data + pos;
        size_t avail = s->in.len - pos;
        used = s->state == SEMAIL_STATE_DATA ? data_step(s, p, avail) : command_step(s, p, avail);
        if (used == 0)
            break;
        pos += used;
    }
    s->paused = pos < s->in.len && s->out.len >= SMTP_OUTPUT_SOFT_MAX;
    if (s->state == SEMAIL_STATE_CLOSED)
        pos = s->in.len;
    semail__buf_consume(&s->in, pos);
}

int semail_session_feed(semail_session *s, const char *data, size_t len)
{
    int err;

    if (s == NULL || (data == NULL && len > 0))
        return semail__err(SEMAIL_EINVAL, "semail_session_feed: NULL argument");
    for (;;) {
        size_t room, take;
        process(s);
        if (len == 0 || s->state == SEMAIL_STATE_CLOSED)
            break;
        room = SMTP_INPUT_MAX - s->in.len;
        if (room == 0) {
            semail__buf_free(&s->in);
            close_with(s, "4.7.0", "Too much pipelined input, closing connection");
            break;
        }
        take = len < room ? len : room;
        if ((err = semail__buf_add(&s->in, data, take)) < 0)
            return err;
        data += take;
        len -= take;
    }
    if (s->state == SEMAIL_STATE_CLOSED)
        semail__buf_free(&s->in);
    return 0;
}

const char *semail_session_output(const semail_session *s, size_t *len)
{
    if (s == NULL || s->out.data == NULL) {
        if (len)
            *len = 0;
        return "";
    }
    if (len)
        *len = s->out.len;
    return s->out.data;
}

void semail_session_output_consume(semail_session *s, size_t n)
{
    if (s == NULL)
        return;
    semail__buf_consume(&s->out, n);
    if (s->paused && s->out.len < SMTP_OUTPUT_SOFT_MAX) {
        process(s); /* the replies have room again: go on with the waiting input */
        if (s->state == SEMAIL_STATE_CLOSED)
            semail__buf_free(&s->in);
    }
}

semail_session_state semail_session_state_get(const semail_session *s)
{
    return s ? s->state : SEMAIL_STATE_CLOSED;
}

int semail_session_idle(const semail_session *s)
{
    return s != NULL && s->state != SEMAIL_STATE_DATA && s->state != SEMAIL_STATE_AUTH &&
           s->in.len == 0 && !s->discarding;
}

void semail_session_shutdown(semail_session *s, const char *enhanced, const char *text)
{
    semail_reply check;

    if (s == NULL || s->state == SEMAIL_STATE_CLOSED)
        return;
    semail_reply_set(&check, 421, enhanced, "x");
    if (enhanced == NULL || semail__smtp_reply_check(&check) < 0 ||
        strcmp(check.enhanced, enhanced) != 0)
        enhanced = "4.3.2"; /* RFC 3463: system not accepting network messages */
    close_with(s, enhanced, text ? text : "Service shutting down, closing connection");
}

const char *semail_session_helo(const semail_session *s)
{
    return s ? s->helo : NULL;
}

const char *semail_session_auth_user(const semail_session *s)
{
    return s ? s->auth_user : NULL;
}

void semail_session_stats_get(const semail_session *s, semail_session_stats *out)
{
    if (out == NULL)
        return;
    if (s == NULL)
        memset(out, 0, sizeof(*out));
    else
        *out = s->stats;
}
