/*
 * fuzz_session.c - libFuzzer target for the SMTP server session.
 *
 * Feeds arbitrary bytes into a session, once all at once and once in
 * pseudo-random pieces (with output sometimes left unread), and checks:
 * memory and output stay within their limits, every reply line is well
 * formed, a transaction exists exactly in MAIL/RCPT/DATA, a delivered
 * message never holds a bare CR or LF and never exceeds the size limit, and
 * the replies do not depend on how the input was cut. Half of the runs
 * offer AUTH (a callback that accepts one password) and check senders: the
 * callbacks see well-formed credentials only, an authenticated session never
 * authenticates again, and no AUTH is ever offered or accepted otherwise.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

typedef struct run {
    size_t max_size;
    unsigned int messages;
    int auth_offered;
    unsigned int auth_ok; /* successful AUTH exchanges */
} run;

/* Credentials: what RFC 4954 and the session's limits allow, nothing else. */
static int auth_cb(semail_reply *r, const semail_envelope *env, const char *user, const char *pass,
                   void *payload)
{
    run *ru = payload;
    size_t ul = strlen(user), pl = strlen(pass), i;

    CHECK(ru->auth_offered && env->auth_user == NULL && env->sender == NULL);
    CHECK(ul >= 1 && ul <= SMTP_AUTH_ID_MAX && pl >= 1 && pl <= SMTP_AUTH_PASSWORD_MAX);
    for (i = 0; i < ul; i++)
        CHECK((unsigned char)user[i] >= 0x20 && user[i] != 0x7f);
    if (pass[0] == 't')
        return SEMAIL_ETEMP;
    if (strcmp(pass, "pw") == 0) { /* base64("\0u\0pw") is AHUAcHc= */
        semail_reply_set(r, 235, "2.7.0", "Authentication successful");
        ru->auth_ok++;
    } else if (pass[0] == 'g') {
        r->code = 250; /* a careless embedder */
        ru->auth_ok++;
    } else {
        semail_reply_set(r, 535, "5.7.8", "Authentication credentials invalid");
    }
    return 0;
}

static int mail_cb(semail_reply *r, const semail_envelope *env, const semail_address *sender,
                   void *payload)
{
    CHECK(env->sender != NULL && env->txn_id != NULL);
    if (sender->local[0] == 'x')
        return SEMAIL_EIO;
    if (sender->local[0] == 'o' && env->auth_user == NULL)
        semail_reply_set(r, 553, "5.7.1", "Sender address rejected: not owned by user");
    else
        semail_reply_set(r, 250, "2.1.0", "Ok");
    return 0;
}

static int rcpt_cb(semail_reply *r, const semail_envelope *env, const semail_address *a,
                   void *payload)
{
    CHECK(env->sender != NULL && env->txn_id != NULL && strlen(env->txn_id) == SMTP_TXN_ID_LEN);
    CHECK(strlen(a->local) <= SEMAIL_LOCAL_MAX && strlen(a->domain) <= SEMAIL_DOMAIN_MAX);
    if (a->local[0] == 'x')
        return SEMAIL_ETEMP;
    if (a->local[0] == 'n')
        semail_reply_set(r, 550, "5.1.1", "No such user");
    else if (a->local[0] == 'q')
        r->code = 421; /* a careless embedder: no text, no enhanced code */
    else
        semail_reply_set(r, 250, "2.1.5", "Ok");
    return 0;
}

static int message_cb(semail_reply *r, const semail_envelope *env, const char *d, size_t len,
                      void *payload)
{
    run *ru = payload;
    size_t i;

    CHECK(env->rcpt_count > 0 && env->rcpts != NULL);
    CHECK(ru->max_size == 0 || len <= ru->max_size);
    CHECK(len == 0 || (len >= 2 && d[len - 2] == '\r' && d[len - 1] == '\n'));
    for (i = 0; i < len; i++) {
        if (d[i] == '\r')
            CHECK(i + 1 < len && d[i + 1] == '\n');
        if (d[i] == '\n')
            CHECK(i > 0 && d[i - 1] == '\r');
    }
    ru->messages++;
    if (len > 0 && d[0] == 'F')
        return SEMAIL_EIO;
    semail_reply_set(r, 250, "2.0.0", "Ok: queued");
    return 0;
}

static void check_invariants(const semail_session *s)
{
    semail_session_state st = semail_session_state_get(s);
    int in_txn = st == SEMAIL_STATE_MAIL || st == SEMAIL_STATE_RCPT || st == SEMAIL_STATE_DATA;

    CHECK(s->out.len <= SMTP_OUTPUT_MAX);
    CHECK(s->in.len <= SMTP_INPUT_MAX);
    CHECK((s->txn != NULL) == in_txn);
    CHECK(st != SEMAIL_STATE_AUTH || (s->auth_offered && s->auth_user == NULL));
    CHECK(st == SEMAIL_STATE_AUTH || s->sasl_user[0] == '\0'); /* wiped after the exchange */
    CHECK(s->auth_failures <= s->max_auth_failures);
    if (s->txn != NULL) {
        CHECK(s->txn->data.len <= s->data_max);
        CHECK(s->txn->rcpt_count <= s->max_recipients);
        CHECK((s->txn->rcpt_count > 0) == (st != SEMAIL_STATE_MAIL));
    }
    /* Not paused: only a partial line is ever kept. */
    if (s->out.len < SMTP_OUTPUT_SOFT_MAX)
        CHECK(s->in.len < (st == SEMAIL_STATE_AUTH ? SMTP_SASL_LINE_MAX : SEMAIL_TEXT_LINE_MAX));
    if (st == SEMAIL_STATE_CLOSED)
        CHECK(s->in.len == 0);
}

/* Every reply line: 3 digits, ' ' or '-', printable text, CRLF, at most 512 octets. */
static void check_replies(const char *o, size_t len, int auth_offered)
{
    size_t start = 0, i;

    while (start < len) {
        const char *eol = memchr(o + start, '\n', len - start);
        size_t n;
        CHECK(eol != NULL);
        n = (size_t)(eol - (o + start)) + 1;
        CHECK(n <= SEMAIL_REPLY_MAX && n >= 5);
        CHECK(o[start + n - 2] == '\r');
        for (i = 0; i < 3; i++)
            CHECK(o[start + i] >= '0' && o[start + i] <= '9');
        CHECK(o[start + 3] == ' ' || o[start + 3] == '-' || n == 5);
        for (i = 4; i < n - 2; i++)
            CHECK((unsigned char)o[start + i] >= 0x20 && (unsigned char)o[start + i] < 0x7f);
        if (o[start] == '4' || o[start] == '5') /* errors carry an enhanced code */
            CHECK(o[start + 4] == o[start] && o[start + 5] == '.');
        if (memcmp(o + start, "334", 3) == 0) /* a SASL challenge: only when offered */
            CHECK(auth_offered);
        if (memcmp(o + start, "235", 3) == 0)
            CHECK(auth_offered && memcmp(o + start + 4, "2.", 2) == 0);
        start += n;
    }
}

/* Take all pending output into ACC (and check it); resume paused input. */
static void drain(semail_session *s, semail_buf *acc)
{
    size_t len, guard;
    const char *o;

    for (guard = 0; guard < 1000; guard++) {
        o = semail_session_output(s, &len);
        if (len == 0)
            return;
        check_replies(o, len, s->auth_offered);
        CHECK(semail__buf_add(acc, o, len) == 0);
        semail_session_output_consume(s, len);
        CHECK(semail_session_feed(s, NULL, 0) == 0);
        check_invariants(s);
    }
    abort(); /* output that never ends */
}

#define PIPELINING_ABUSE "improper use of SMTP command pipelining"

/* Whether the replies in B contain TEXT. */
static int mentions(const semail_buf *b, const char *text)
{
    return b->len > 0 && memmem(b->data, b->len, text, strlen(text)) != NULL;
}

static semail_session *open_session(const uint8_t cfg, run *ru)
{
    static const size_t sizes[] = {0, 1, 100, 2000};
    semail_session_options o;
    semail_session *s;

    CHECK(semail_session_options_init(&o) == 0);
    o.hostname = "fuzz.example";
    o.client_addr = "192.0.2.1";
    o.max_message_size = sizes[cfg & 3];
    o.max_recipients = (cfg >> 2) & 3;
    o.max_errors = (cfg >> 4) & 7;
    o.rcpt = rcpt_cb;
    o.message = message_cb;
    o.payload = ru;
    /* The top bit: AUTH offered (and the MAIL callback); else a callback
     * that must never be called (AUTH answers 538). */
    o.auth = auth_cb;
    o.auth_offered = (cfg >> 7) & 1;
    o.mail = o.auth_offered ? mail_cb : NULL;
    o.max_auth_failures = (cfg >> 4) & 3;
    ru->max_size = o.max_message_size;
    ru->messages = 0;
    ru->auth_offered = o.auth_offered;
    ru->auth_ok = 0;
    CHECK(semail_session_new(&s, &o) == 0);
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    semail_buf whole, cut;
    semail_session *s;
    run ru1, ru2;
    uint32_t rng;
    size_t pos, n;

    if (size < 3)
        return 0;
    rng = (uint32_t)data[1] * 2654435761u + data[2];
    semail__buf_init(&whole, (size_t)64 << 20);
    semail__buf_init(&cut, (size_t)64 << 20);

    /* All at once. */
    s = open_session(data[0], &ru1);
    CHECK(semail_session_feed(s, (const char *)data + 3, size - 3) == 0);
    check_invariants(s);
    drain(s, &whole);
    semail_session_free(s);

    /* In pieces of 1..64 bytes, output sometimes left unread for a while. */
    s = open_session(data[0], &ru2);
    for (pos = 3; pos < size; pos += n) {
        rng = rng * 1103515245u + 12345u;
        n = 1 + (rng >> 16) % 64;
        if (n > size - pos)
            n = size - pos;
        CHECK(semail_session_feed(s, (const char *)data + pos, n) == 0);
        check_invariants(s);
        if ((rng >> 8) & 1)
            drain(s, &cut);
    }
    drain(s, &cut);
    semail_session_free(s);

    /* Pipelining without PIPELINING is judged by what arrived together, so
     * a session that met that rule may legitimately differ between the two
     * feeds; every other session must not. */
    if (!mentions(&whole, PIPELINING_ABUSE) && !mentions(&cut, PIPELINING_ABUSE)) {
        CHECK(ru1.messages == ru2.messages);
        CHECK(ru1.auth_ok == ru2.auth_ok);
        CHECK(whole.len == cut.len &&
              (whole.len == 0 || memcmp(whole.data, cut.data, whole.len) == 0));
    }
    CHECK(ru1.auth_ok <= 1 && ru2.auth_ok <= 1);
    semail__buf_free(&whole);
    semail__buf_free(&cut);
    return 0;
}
