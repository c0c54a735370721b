/*
 * test_smtp_session.c - the SMTP server session as a state machine.
 *
 * Specifies, with strings in and replies out: every command in every state,
 * pipelining, DATA (dot-unstuffing, the only end of data, smuggling
 * attempts), the line and size limits, recipients and errors limits, flow
 * control of the output, and that the way input is cut into pieces never
 * changes the replies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp_internal.h"

#define HOST         "mx.example"
#define PRELUDE_RCPT "EHLO client.example\r\nMAIL FROM:<s@a.example>\r\nRCPT TO:<r@b.example>\r\n"
#define PRELUDE_DATA PRELUDE_RCPT "DATA\r\n"
#define REPLIES_DATA "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"

typedef struct fx {
    semail_session *s;
    char *out; /* output of the last talk(), owned */
    int rcpt_calls;
    int msg_calls;
    int plain_queue_reply; /* message reply without the transaction id */
    char *msg;             /* last message delivered, owned */
    size_t msg_len;
    char txn_id[32];
    char helo[300];
    char client[64];
    char rcpt_domain[300];
    size_t rcpt_count;
    size_t declared_size;
    int body_8bit;
    /* AUTH and MAIL callbacks: read by fx_open() */
    int auth_offered;
    int with_auth_cb;
    int with_mail_cb;
    int tls;
    unsigned int max_auth_failures;
    unsigned int max_junk;
    /* what they saw */
    int auth_calls;
    int mail_calls;
    char authcid[300];
    char password[1100];
    char env_auth_user[300]; /* envelope's auth_user at the last rcpt/message call; "-" for NULL */
    int env_tls;
} fx;

static void note_auth_user(fx *f, const semail_envelope *env)
{
    (void)semail__strlcpy(f->env_auth_user, env->auth_user ? env->auth_user : "-",
                          sizeof(f->env_auth_user));
    f->env_tls = env->tls;
}

static int rcpt_cb(semail_reply *r, const semail_envelope *env, const semail_address *a,
                   void *payload)
{
    fx *f = payload;

    f->rcpt_calls++;
    note_auth_user(f, env);
    (void)semail__strlcpy(f->rcpt_domain, a->domain, sizeof(f->rcpt_domain));
    if (strcmp(a->local, "fail") == 0)
        return SEMAIL_ETEMP;
    if (strcmp(a->local, "unknown") == 0) {
        semail_reply_set(r, 550, "5.1.1", "No such user");
        return 0;
    }
    if (strcmp(a->local, "bare") == 0) { /* an embedder that forgets the enhanced code */
        r->code = 250;
        (void)semail__strlcpy(r->text, "Fine", sizeof(r->text));
        return 0;
    }
    if (strcmp(a->local, "noreply") == 0)
        return 0;
    if (strcmp(a->local, "bye") == 0) {
        semail_reply_set(r, 421, "4.3.2", "Going down");
        return 0;
    }
    semail_reply_set(r, 250, "2.1.5", "Ok");
    return 0;
}

static int msg_cb(semail_reply *r, const semail_envelope *env, const char *data, size_t len,
                  void *payload)
{
    fx *f = payload;

    f->msg_calls++;
    note_auth_user(f, env);
    free(f->msg);
    f->msg = malloc(len + 1);
    assert_non_null(f->msg);
    memcpy(f->msg, data, len);
    f->msg[len] = '\0';
    f->msg_len = len;
    (void)semail__strlcpy(f->txn_id, env->txn_id, sizeof(f->txn_id));
    (void)semail__strlcpy(f->helo, env->helo, sizeof(f->helo));
    (void)semail__strlcpy(f->client, env->client_addr, sizeof(f->client));
    f->rcpt_count = env->rcpt_count;
    f->declared_size = env->declared_size;
    f->body_8bit = env->body_8bit;
    if (len >= 4 && memcmp(data, "FAIL", 4) == 0)
        return SEMAIL_EIO;
    if (f->plain_queue_reply)
        semail_reply_set(r, 250, "2.0.0", "Ok: queued");
    else
        semail_reply_set(r, 250, "2.0.0", "Ok: queued as %s", env->txn_id);
    return 0;
}

/* alice/secret is good; a 1000-octet password is good for "long"; "temp"
 * cannot be checked; "tempfail" gets a 454; "grant250" a sloppy 250. */
static int auth_cb(semail_reply *r, const semail_envelope *env, const char *authcid,
                   const char *password, void *payload)
{
    fx *f = payload;

    f->auth_calls++;
    assert_null(env->auth_user);
    assert_null(env->sender);
    (void)semail__strlcpy(f->authcid, authcid, sizeof(f->authcid));
    (void)semail__strlcpy(f->password, password, sizeof(f->password));
    if (strcmp(password, "temp") == 0)
        return SEMAIL_ETEMP;
    if (strcmp(password, "tempfail") == 0)
        semail_reply_set(r, 454, "4.7.0", "Directory unavailable");
    else if (strcmp(password, "grant250") == 0)
        semail_reply_set(r, 250, "2.0.0", "Fine");
    else if ((strcmp(authcid, "alice") == 0 && strcmp(password, "secret") == 0) ||
             (strcmp(authcid, "long") == 0 && strlen(password) == SMTP_AUTH_PASSWORD_MAX))
        semail_reply_set(r, 235, "2.7.0", "Authentication successful");
    else
        semail_reply_set(r, 535, "5.7.8", "Authentication credentials invalid");
    return 0;
}

/* The sender must be the authenticated user at a.example; "broken" fails. */
static int mail_cb(semail_reply *r, const semail_envelope *env, const semail_address *sender,
                   void *payload)
{
    fx *f = payload;

    f->mail_calls++;
    assert_non_null(env->sender);
    assert_memory_equal(env->sender, sender, sizeof(*sender));
    assert_non_null(env->txn_id);
    if (strcmp(sender->local, "broken") == 0)
        return SEMAIL_EIO;
    if (env->auth_user == NULL || strcmp(env->auth_user, sender->local) != 0)
        semail_reply_set(r, 553, "5.7.1", "Sender address rejected: not owned by user");
    else
        semail_reply_set(r, 250, "2.1.0", "Sender ok");
    return 0;
}

/* Open a session with the given limits, greeting consumed. */
static void fx_open(fx *f, size_t max_size, unsigned int max_rcpt, unsigned int max_err)
{
    semail_session_options o;
    size_t len;

    semail_session_free(f->s);
    assert_int_equal(semail_session_options_init(&o), 0);
    o.hostname = HOST;
    o.client_addr = "192.0.2.7";
    o.max_message_size = max_size;
    o.max_recipients = max_rcpt;
    o.max_errors = max_err;
    o.rcpt = rcpt_cb;
    o.message = msg_cb;
    o.payload = f;
    o.auth_offered = f->auth_offered;
    o.auth = f->with_auth_cb ? auth_cb : NULL;
    o.mail = f->with_mail_cb ? mail_cb : NULL;
    o.tls = f->tls;
    o.max_auth_failures = f->max_auth_failures;
    o.max_junk_commands = f->max_junk;
    assert_int_equal(semail_session_new(&f->s, &o), 0);
    (void)semail_session_output(f->s, &len);
    semail_session_output_consume(f->s, len);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    fx_open(f, 0, 0, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    semail_session_free(f->s);
    free(f->out);
    free(f->msg);
    free(f);
    return 0;
}

/* Feed LEN bytes at once; return the output they produced (owned by F). */
static const char *talkn(fx *f, const char *in, size_t len)
{
    const char *o;
    size_t n;

    assert_int_equal(semail_session_feed(f->s, in, len), 0);
    o = semail_session_output(f->s, &n);
    free(f->out);
    f->out = malloc(n + 1);
    assert_non_null(f->out);
    memcpy(f->out, o, n);
    f->out[n] = '\0';
    semail_session_output_consume(f->s, n);
    return f->out;
}

static const char *talk(fx *f, const char *in)
{
    return talkn(f, in, strlen(in));
}

/* Feed IN one line at a time, as a client that waits for every reply does
 * (no pipelining); return all the output (owned by F). */
static const char *talk_each(fx *f, const char *in)
{
    semail_buf all;
    const char *eol;

    semail__buf_init(&all, 1 << 20);
    while (*in != '\0') {
        size_t n = (eol = strstr(in, "\r\n")) != NULL ? (size_t)(eol - in) + 2 : strlen(in);
        const char *o = talkn(f, in, n);
        assert_int_equal(semail__buf_add(&all, o, strlen(o)), 0);
        in += n;
    }
    assert_int_equal(semail__buf_add(&all, "", 1), 0);
    free(f->out);
    f->out = all.data;
    return f->out;
}

/* ---- greeting, EHLO, HELO ------------------------------------------------ */

static void test_session__greeting_has_no_enhanced_code(void **state)
{
    semail_session_options o;
    semail_session *s;
    size_t len;
    const char *out;

    /* SEMAIL_SESSION_OPTIONS_INIT trips -Wmissing-field-initializers: use the function. */
    assert_int_equal(semail_session_options_init(&o), 0);
    o.hostname = HOST;
    o.rcpt = rcpt_cb;
    o.message = msg_cb;
    assert_int_equal(semail_session_new(&s, &o), 0);
    out = semail_session_output(s, &len);
    assert_int_equal(len, strlen("220 " HOST " ESMTP SEMail\r\n"));
    assert_memory_equal(out, "220 " HOST " ESMTP SEMail\r\n", len);
    assert_int_equal(semail_session_state_get(s), SEMAIL_STATE_INIT);
    assert_true(semail_session_idle(s));
    semail_session_free(s);
}

static void test_session__new_refuses_bad_options(void **state)
{
    semail_session_options o;
    semail_session *s = (semail_session *)1;

    assert_int_equal(semail_session_options_init(&o), 0);
    assert_int_equal(semail_session_new(&s, NULL), SEMAIL_EINVAL);
    assert_null(s);
    o.rcpt = rcpt_cb;
    o.message = msg_cb;
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL); /* no hostname */
    o.hostname = "mx\r\n250 injected";
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL);
    o.hostname = "";
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL);
    o.hostname = HOST;
    o.message = NULL;
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL);
    o.message = msg_cb;
    o.version = 99;
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL);
    assert_int_equal(semail_session_options_init(NULL), SEMAIL_EINVAL);
}

static void test_session__ehlo_advertises_extensions(void **state)
{
    fx *f = *state;

    assert_string_equal(talk(f, "EHLO client.example\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n");
    fx_open(f, 10485760, 0, 0);
    assert_string_equal(talk(f, "ehlo client.example\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
}

static void test_session__helo_and_argument_checks(void **state)
{
    fx *f = *state;
    char line[400];

    assert_string_equal(talk(f, "HELO\r\n"), "501 5.5.4 Syntax: HELO hostname\r\n");
    assert_string_equal(talk(f, "EHLO   \r\n"), "501 5.5.4 Syntax: EHLO hostname\r\n");
    assert_string_equal(talk(f, "EHLO a\tb\r\n"), "501 5.5.4 Invalid hostname\r\n");
    memset(line, 'h', sizeof(line));
    memcpy(line, "HELO ", 5);
    memcpy(line + 5 + SMTP_HELO_MAX + 1, "\r\n", 3);
    assert_string_equal(talk(f, line), "501 5.5.4 Hostname too long\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_INIT);
    memcpy(line + 5 + SMTP_HELO_MAX, "\r\n", 3);
    assert_string_equal(talk(f, line), "250 " HOST "\r\n");
    assert_string_equal(talk(f, "HeLo client.example\r\n"), "250 " HOST "\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
}

/* ---- every command in every state ---------------------------------------- */

enum { S_INIT, S_READY, S_MAIL, S_RCPT, S_DATA, S_CLOSED, S_COUNT };

static const char *const preludes[S_COUNT] = {
    "",           "EHLO c.example\r\n", "EHLO c.example\r\nMAIL FROM:<s@a.example>\r\n",
    PRELUDE_RCPT, PRELUDE_DATA,         "QUIT\r\n",
};

static const semail_session_state state_of[S_COUNT] = {
    SEMAIL_STATE_INIT, SEMAIL_STATE_READY, SEMAIL_STATE_MAIL,
    SEMAIL_STATE_RCPT, SEMAIL_STATE_DATA,  SEMAIL_STATE_CLOSED,
};

typedef struct cell {
    const char *reply; /* expected start of the output; "" for no output */
    int next;          /* state after the command */
} cell;

typedef struct row {
    const char *command;
    cell in[S_COUNT];
} row;

#define NESTED   "503 5.5.1 Nested MAIL command\r\n"
#define FIRST    "503 5.5.1 Send HELO/EHLO first\r\n"
#define NEEDMAIL "503 5.5.1 Need MAIL command\r\n"
#define SILENT                                                                                     \
    {"", S_DATA},                                                                                  \
    {                                                                                              \
        "", S_CLOSED                                                                               \
    }

static const row table[] = {
    {"EHLO x.example",
     {{"250-" HOST, S_READY},
      {"250-" HOST, S_READY},
      {"250-" HOST, S_READY},
      {"250-" HOST, S_READY},
      SILENT}},
    {"HELO x.example",
     {{"250 " HOST, S_READY},
      {"250 " HOST, S_READY},
      {"250 " HOST, S_READY},
      {"250 " HOST, S_READY},
      SILENT}},
    {"MAIL FROM:<m@x.example>",
     {{FIRST, S_INIT}, {"250 2.1.0 Ok", S_MAIL}, {NESTED, S_MAIL}, {NESTED, S_RCPT}, SILENT}},
    {"RCPT TO:<t@x.example>",
     {{FIRST, S_INIT},
      {NEEDMAIL, S_READY},
      {"250 2.1.5 Ok", S_RCPT},
      {"250 2.1.5 Ok", S_RCPT},
      SILENT}},
    {"DATA",
     {{FIRST, S_INIT},
      {NEEDMAIL, S_READY},
      {"503 5.5.1 No valid recipients", S_MAIL},
      {"354 End data with <CR><LF>.<CR><LF>\r\n", S_DATA},
      SILENT}},
    {"RSET",
     {{"250 2.0.0 Ok\r\n", S_INIT},
      {"250 2.0.0 Ok\r\n", S_READY},
      {"250 2.0.0 Ok\r\n", S_READY},
      {"250 2.0.0 Ok\r\n", S_READY},
      SILENT}},
    {"NOOP",
     {{"250 2.0.0 Ok\r\n", S_INIT},
      {"250 2.0.0 Ok\r\n", S_READY},
      {"250 2.0.0 Ok\r\n", S_MAIL},
      {"250 2.0.0 Ok\r\n", S_RCPT},
      SILENT}},
    {"QUIT",
     {{"221 2.0.0 Bye\r\n", S_CLOSED},
      {"221 2.0.0 Bye\r\n", S_CLOSED},
      {"221 2.0.0 Bye\r\n", S_CLOSED},
      {"221 2.0.0 Bye\r\n", S_CLOSED},
      SILENT}},
    {"HELP",
     {{"214 2.0.0 ", S_INIT},
      {"214 2.0.0 ", S_READY},
      {"214 2.0.0 ", S_MAIL},
      {"214 2.0.0 ", S_RCPT},
      SILENT}},
    {"VRFY someone",
     {{"502 5.5.1 ", S_INIT},
      {"502 5.5.1 ", S_READY},
      {"502 5.5.1 ", S_MAIL},
      {"502 5.5.1 ", S_RCPT},
      SILENT}},
    {"EXPN list",
     {{"502 5.5.1 ", S_INIT},
      {"502 5.5.1 ", S_READY},
      {"502 5.5.1 ", S_MAIL},
      {"502 5.5.1 ", S_RCPT},
      SILENT}},
    {"AUTH PLAIN",
     {{FIRST, S_INIT},
      {"503 5.5.1 Authentication not enabled\r\n", S_READY},
      {"503 5.5.1 Not permitted during a mail transaction\r\n", S_MAIL},
      {"503 5.5.1 Not permitted during a mail transaction\r\n", S_RCPT},
      SILENT}},
    {"BDAT 10 LAST",
     {{"500 5.5.2 Command unrecognized\r\n", S_INIT},
      {"500 5.5.2 Command unrecognized\r\n", S_READY},
      {"500 5.5.2 Command unrecognized\r\n", S_MAIL},
      {"500 5.5.2 Command unrecognized\r\n", S_RCPT},
      SILENT}},
};

static void test_session__every_command_in_every_state(void **state)
{
    fx *f = *state;
    char line[128];
    size_t r, st;

    for (r = 0; r < SEMAIL_ARRAY_LEN(table); r++) {
        for (st = 0; st < S_COUNT; st++) {
            const cell *c = &table[r].in[st];
            const char *out;
            fx_open(f, 0, 0, 0);
            (void)talk(f, preludes[st]);
            assert_int_equal(semail_session_state_get(f->s), state_of[st]);
            assert_int_equal(semail__fmt(line, sizeof(line), "%s\r\n", table[r].command), 0);
            out = talk(f, line);
            if (strncmp(out, c->reply, strlen(c->reply)) != 0 || (*c->reply == '\0' && *out))
                fail_msg("%s in state %zu: got \"%s\", want \"%s\"", table[r].command, st, out,
                         c->reply);
            if (semail_session_state_get(f->s) != state_of[c->next])
                fail_msg("%s in state %zu: state %d, want %d", table[r].command, st,
                         (int)semail_session_state_get(f->s), (int)state_of[c->next]);
        }
    }
}

static void test_session__arguments_where_none_allowed(void **state)
{
    fx *f = *state;

    (void)talk(f, PRELUDE_RCPT);
    assert_string_equal(talk(f, "DATA now\r\n"), "501 5.5.4 Syntax: DATA\r\n");
    assert_string_equal(talk(f, "RSET all\r\n"), "501 5.5.4 Syntax: RSET\r\n");
    assert_string_equal(talk(f, "QUIT now\r\n"), "501 5.5.4 Syntax: QUIT\r\n");
    assert_string_equal(talk(f, "NOOP anything goes\r\n"), "250 2.0.0 Ok\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_RCPT);
}

static void test_session__greeting_again_resets_transaction(void **state)
{
    fx *f = *state;

    (void)talk(f, PRELUDE_RCPT);
    assert_non_null(f->s->txn);
    assert_string_equal(talk_each(f, "HELO again.example\r\nDATA\r\n"),
                        "250 " HOST "\r\n" NEEDMAIL);
    assert_null(f->s->txn);
    assert_string_equal(
        talk_each(f, "MAIL FROM:<s@a.example>\r\nRSET\r\nRCPT TO:<r@b.example>\r\n"),
        "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n" NEEDMAIL);
    assert_null(f->s->txn);
}

/* ---- pipelining and transactions ---------------------------------------- */

static void test_session__pipelined_group_replies_in_order(void **state)
{
    fx *f = *state;
    const char *out;
    char want[600];

    out = talk(f, "EHLO c.example\r\nMAIL FROM:<s@a.example> SIZE=10 BODY=8BITMIME"
                  "\r\nRCPT TO:<r@b.example>\r\nRCPT TO:<unknown@b.example>\r\n"
                  "RCPT TO:<fail@b.example>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_int_equal(semail__fmt(want, sizeof(want), "%s%s",
                                 "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                                 "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"
                                 "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n"
                                 "451 4.3.0 Local error in processing\r\n"
                                 "354 End data with <CR><LF>.<CR><LF>\r\n"
                                 "250 2.0.0 Ok: queued as ",
                                 f->txn_id),
                     0);
    assert_int_equal(
        semail__fmt(want + strlen(want), sizeof(want) - strlen(want), "\r\n221 2.0.0 Bye\r\n"), 0);
    assert_string_equal(out, want);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__delivers_message_with_envelope(void **state)
{
    fx *f = *state;
    char want[128];
    size_t i;

    (void)talk(f, "EHLO c.example\r\nMAIL FROM:<s@a.example> SIZE=10 BODY=8BITMIME\r\n"
                  "RCPT TO:<r@b.example>\r\nRCPT TO:<r2@b.example>\r\nDATA\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_DATA);
    assert_false(semail_session_idle(f->s));
    assert_string_equal(talk(f, "Subject: hi\r\n\r\nbody\r\n"), "");
    assert_int_equal(f->msg_calls, 0);
    (void)talk(f, ".\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(f->msg, "Subject: hi\r\n\r\nbody\r\n");
    assert_int_equal(semail__fmt(want, sizeof(want), "250 2.0.0 Ok: queued as %s\r\n", f->txn_id),
                     0);
    assert_string_equal(f->out, want);
    assert_int_equal(strlen(f->txn_id), SMTP_TXN_ID_LEN);
    for (i = 0; i < SMTP_TXN_ID_LEN; i++)
        assert_non_null(strchr("0123456789ABCDEF", f->txn_id[i]));
    assert_string_equal(f->helo, "c.example");
    assert_string_equal(f->client, "192.0.2.7");
    assert_int_equal(f->rcpt_count, 2);
    assert_int_equal(f->declared_size, 10);
    assert_int_equal(f->body_8bit, 1);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_null(f->s->txn);
    assert_true(semail_session_idle(f->s));
}

static void test_session__transaction_ids_differ(void **state)
{
    fx *f = *state;
    char first[32];

    (void)talk(f, PRELUDE_DATA "a\r\n.\r\n");
    assert_int_equal(semail__strlcpy(first, f->txn_id, sizeof(first)), 0);
    (void)talk(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\nb\r\n.\r\n");
    assert_int_equal(f->msg_calls, 2);
    assert_string_not_equal(first, f->txn_id);
}

static void test_session__dot_unstuffing(void **state)
{
    fx *f = *state;

    (void)talk(f, PRELUDE_DATA "..\r\n...\r\n..x\r\n.y\r\nz.\r\n . \r\n.\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(f->msg, ".\r\n..\r\n.x\r\ny\r\nz.\r\n . \r\n");
}

static void test_session__empty_message_and_nul_bytes(void **state)
{
    fx *f = *state;

    (void)talk(f, PRELUDE_DATA ".\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_int_equal(f->msg_len, 0);
    (void)talkn(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\na\0b\r\n.\r\n", 51);
    assert_int_equal(f->msg_calls, 2);
    assert_int_equal(f->msg_len, 5);
    assert_memory_equal(f->msg, "a\0b\r\n", 5);
}

static void test_session__message_callback_failure_answers_451(void **state)
{
    fx *f = *state;

    assert_string_equal(talk(f, PRELUDE_DATA "FAIL\r\n.\r\nNOOP\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n" REPLIES_DATA
                        "451 4.3.0 Local error in processing\r\n250 2.0.0 Ok\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
}

/* ---- the end of data, and smuggling -------------------------------------- */

static void test_session__end_of_data_only_at_crlf_dot_crlf(void **state)
{
    static const char *const patterns[] = {
        "\n.\n",   "\r.\r",       "\r\n.\n",
        "\n.\r\n", "\r.\r\n",     "\r\n.\r",
        "\n.\r",   "\r\n.\r\r\n", "\r\n. \r\n" /* not an end, but not bare either: see below */,
    };
    fx *f = *state;
    char in[512];
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(patterns); i++) {
        int bare = i < SEMAIL_ARRAY_LEN(patterns) - 1;
        fx_open(f, 0, 0, 0);
        f->rcpt_calls = 0;
        f->msg_calls = 0;
        (void)talk(f, PRELUDE_DATA);
        assert_int_equal(semail__fmt(in, sizeof(in),
                                     "Subject: x\r\n\r\nbody%sMAIL FROM:<evil@e.example>\r\n"
                                     "RCPT TO:<victim@b.example>\r\nDATA\r\nsmuggled\r\n.\r\n",
                                     patterns[i]),
                         0);
        if (bare) {
            assert_string_equal(talk(f, in), "550 5.6.0 Message refused: bare CR or LF (RFC 5321 "
                                             "2.3.8)\r\n");
            assert_int_equal(f->msg_calls, 0);
        } else {
            (void)talk(f, in);
            assert_int_equal(f->msg_calls, 1);
            assert_non_null(strstr(f->msg, "smuggled"));
        }
        /* Whatever followed the fake end was data, never commands. */
        assert_int_equal(f->rcpt_calls, 1);
        assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
        assert_null(f->s->txn);
    }
}

static void test_session__bare_cr_or_lf_refuses_whole_message(void **state)
{
    static const char *const bodies[] = {"a\rb\r\n", "a\nb\r\n",    "abc\r\r\n",
                                         "\n\r\n",   "x\r\n\r\r\n", "\r\r\n"};
    fx *f = *state;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(bodies); i++) {
        fx_open(f, 0, 0, 0);
        f->msg_calls = 0;
        (void)talk(f, PRELUDE_DATA);
        assert_string_equal(talk(f, bodies[i]), "");
        assert_string_equal(talk(f, ".\r\n"),
                            "550 5.6.0 Message refused: bare CR or LF (RFC 5321 2.3.8)\r\n");
        assert_int_equal(f->msg_calls, 0);
        /* The session goes on: the next transaction is fine. */
        (void)talk(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\nok\r\n.\r\n");
        assert_int_equal(f->msg_calls, 1);
        assert_string_equal(f->msg, "ok\r\n");
    }
}

/* ---- line limits --------------------------------------------------------- */

/* A command line "NOOP xxx...\r\n" of exactly TOTAL octets. */
static char *noop_line(size_t total)
{
    char *p = malloc(total + 1);
    assert_non_null(p);
    memset(p, 'x', total);
    memcpy(p, "NOOP ", 5);
    memcpy(p + total - 2, "\r\n", 3);
    return p;
}

static void test_session__command_line_limit_512(void **state)
{
    fx *f = *state;
    char *ok = noop_line(SEMAIL_COMMAND_LINE_MAX), *over = noop_line(SEMAIL_COMMAND_LINE_MAX + 1);

    assert_string_equal(talk(f, ok), "250 2.0.0 Ok\r\n");
    assert_string_equal(talk(f, over), "500 5.5.2 Line too long\r\n");
    assert_string_equal(talk(f, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
    free(ok);
    free(over);
}

static void test_session__huge_command_line_bounded_one_reply(void **state)
{
    fx *f = *state;
    size_t i, chunk = 4096;
    char *junk = malloc(chunk);

    assert_non_null(junk);
    memset(junk, 'A', chunk);
    for (i = 0; i < 100; i++) {
        assert_string_equal(talkn(f, junk, chunk), "");
        assert_true(f->s->in.len <= SEMAIL_COMMAND_LINE_MAX);
        assert_false(semail_session_idle(f->s));
    }
    /* CR at the end of one piece, LF at the start of the next: still the CRLF. */
    assert_string_equal(talk(f, "MAIL FROM:<x@y.example>\r"), "");
    assert_true(f->s->in.len <= 1);
    assert_string_equal(talk(f, "\nNOOP\r\n"), "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_INIT);
    assert_true(semail_session_idle(f->s));
    free(junk);
}

static void test_session__bare_cr_lf_nul_in_command(void **state)
{
    fx *f = *state;
    static const char reply[] = "501 5.5.2 Syntax error: bare CR, LF or NUL in command\r\n";

    assert_string_equal(talk(f, "NOOP\nQUIT\r\n"), reply);
    assert_string_equal(talk(f, "QUIT\rNOOP\r\n"), reply);
    assert_string_equal(talkn(f, "NO\0OP\r\n", 7), reply);
    assert_string_equal(talk(f, "EHLO a\n.example\r\n"), reply);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_INIT);
    assert_string_equal(talk(f, "\r\n"), "500 5.5.2 Command unrecognized\r\n");
}

/* DATA text line "yyy...\r\n" of exactly TOTAL octets. */
static char *text_line(size_t total)
{
    char *p = malloc(total + 1);
    assert_non_null(p);
    memset(p, 'y', total);
    memcpy(p + total - 2, "\r\n", 3);
    return p;
}

static void test_session__text_line_limit_1000(void **state)
{
    fx *f = *state;
    char *ok = text_line(SEMAIL_TEXT_LINE_MAX), *over = text_line(SEMAIL_TEXT_LINE_MAX + 1);

    f->plain_queue_reply = 1;
    (void)talk(f, PRELUDE_DATA);
    assert_string_equal(talk(f, ok), "");
    assert_string_equal(talk(f, ".\r\n"), "250 2.0.0 Ok: queued\r\n");
    assert_int_equal(f->msg_len, SEMAIL_TEXT_LINE_MAX);
    (void)talk(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\n");
    assert_string_equal(talk(f, over), "");
    assert_string_equal(talk(f, "after\r\n.\r\n"), "500 5.5.2 Line too long\r\n");
    assert_int_equal(f->msg_calls, 1);
    /* A stuffed dot counts: it is on the wire. */
    ok[0] = '.';
    (void)talk(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\n");
    (void)talk(f, ok);
    assert_string_equal(talk(f, ".\r\n"), "250 2.0.0 Ok: queued\r\n");
    assert_int_equal(f->msg_calls, 2);
    assert_int_equal(f->msg_len, SEMAIL_TEXT_LINE_MAX - 1);
    free(ok);
    free(over);
}

static void test_session__huge_text_line_bounded_then_refused(void **state)
{
    fx *f = *state;
    size_t i, chunk = 8192;
    char *junk = malloc(chunk);

    assert_non_null(junk);
    memset(junk, 'B', chunk);
    (void)talk(f, PRELUDE_DATA);
    for (i = 0; i < 64; i++) {
        assert_string_equal(talkn(f, junk, chunk), "");
        assert_true(f->s->in.len <= SEMAIL_TEXT_LINE_MAX);
    }
    /* A line that only looks like the end: the "." is the tail of the long line. */
    assert_string_equal(talk(f, ".\r\nMAIL FROM:<x@y.example>\r\n"), "");
    assert_string_equal(talk(f, ".\r\n"), "500 5.5.2 Line too long\r\n");
    assert_int_equal(f->msg_calls, 0);
    free(junk);
}

/* ---- size and recipients ------------------------------------------------- */

static void test_session__size_parameter_against_max(void **state)
{
    fx *f = *state;

    fx_open(f, 1000, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
    assert_string_equal(talk(f, "MAIL FROM:<s@a.example> SIZE=1001\r\n"),
                        "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_string_equal(talk(f, "MAIL FROM:<s@a.example> SIZE=1000\r\n"), "250 2.1.0 Ok\r\n");
    assert_string_equal(talk(f, "RSET\r\nMAIL FROM:<s@a.example> SIZE=1 FOO=2\r\n"),
                        "250 2.0.0 Ok\r\n555 5.5.4 Unsupported or malformed parameter FOO\r\n");
}

static void test_session__message_over_max_size_refused_bounded(void **state)
{
    fx *f = *state;
    char *line = text_line(100);
    int i;

    fx_open(f, 1000, 0, 0);
    f->plain_queue_reply = 1;
    /* Exactly 1000 octets stored: accepted. */
    (void)talk(f, PRELUDE_DATA);
    for (i = 0; i < 10; i++)
        (void)talk(f, line);
    assert_string_equal(talk(f, ".\r\n"), "250 2.0.0 Ok: queued\r\n");
    assert_int_equal(f->msg_len, 1000);
    /* One more octet: refused, and never more than the limit held. */
    (void)talk(f, "MAIL FROM:<>\r\nRCPT TO:<r@b.example>\r\nDATA\r\n");
    for (i = 0; i < 10; i++)
        (void)talk(f, line);
    (void)talk(f, "\r\n");
    for (i = 0; i < 100; i++) {
        assert_string_equal(talk(f, line), "");
        assert_true(f->s->txn->data.len <= 1000);
    }
    assert_string_equal(talk(f, ".\r\n"), "552 5.3.4 Message too big\r\n");
    assert_int_equal(f->msg_calls, 1);
    free(line);
}

static void test_session__max_recipients(void **state)
{
    fx *f = *state;

    fx_open(f, 0, 2, 0);
    assert_string_equal(talk(f, "EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<unknown@b.example>\r\n"
                                "RCPT TO:<a@b.example>\r\nRCPT TO:<b@b.example>\r\n"
                                "RCPT TO:<c@b.example>\r\n") +
                            strlen("250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                                   "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"),
                        "250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n"
                        "452 4.5.3 Too many recipients\r\n");
    assert_int_equal(f->rcpt_calls, 3);
    (void)talk(f, "DATA\r\nx\r\n.\r\n");
    assert_int_equal(f->rcpt_count, 2);
}

static void test_session__recipient_callback_replies(void **state)
{
    fx *f = *state;

    (void)talk(f, "EHLO c.example\r\nMAIL FROM:<>\r\n");
    assert_string_equal(talk(f, "RCPT TO:<bare@b.example>\r\n"), "250 2.0.0 Fine\r\n");
    assert_string_equal(talk(f, "RCPT TO:<noreply@b.example>\r\n"),
                        "451 4.3.0 Local error in processing\r\n");
    assert_string_equal(talk(f, "RCPT TO:<Postmaster>\r\n"), "250 2.1.5 Ok\r\n");
    assert_string_equal(f->rcpt_domain, "");
    assert_string_equal(talk(f, "RCPT TO:<a b@c>\r\n"),
                        "501 5.1.3 Bad recipient address syntax\r\n");
    assert_string_equal(talk(f, "RCPT TO:<a@b.example> NOTIFY=NEVER\r\n"),
                        "555 5.5.4 RCPT parameters are not supported\r\n");
    assert_string_equal(talk(f, "RCPT TO:<bye@b.example>\r\nNOOP\r\n"), "421 4.3.2 Going down\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

/* ---- errors, shutdown, stats --------------------------------------------- */

static void test_session__max_errors_closes_with_421(void **state)
{
    fx *f = *state;

    fx_open(f, 0, 0, 3);
    assert_string_equal(talk_each(f, "FOO\r\nNOOP\r\nMAIL FROM:<a@b>\r\nBAR\r\nNOOP\r\n"),
                        "500 5.5.2 Command unrecognized\r\n250 2.0.0 Ok\r\n" FIRST
                        "500 5.5.2 Command unrecognized\r\n"
                        "421 4.7.0 " HOST " Too many errors, closing connection\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    assert_string_equal(talk(f, "NOOP\r\n"), "");
    assert_true(semail_session_idle(f->s));
}

static void test_session__default_max_errors_is_20(void **state)
{
    fx *f = *state;
    int i;

    for (i = 0; i < 19; i++)
        assert_string_equal(talk(f, "X\r\n"), "500 5.5.2 Command unrecognized\r\n");
    assert_string_equal(talk(f, "X\r\n"),
                        "500 5.5.2 Command unrecognized\r\n"
                        "421 4.7.0 " HOST " Too many errors, closing connection\r\n");
}

static void test_session__quit_then_input_ignored(void **state)
{
    fx *f = *state;

    assert_string_equal(talk(f, "QUIT\r\nEHLO x.example\r\n"), "221 2.0.0 Bye\r\n");
    assert_string_equal(talk(f, "EHLO x.example\r\n"), "");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__shutdown_queues_421(void **state)
{
    fx *f = *state;

    (void)talk(f, "EHLO c.example\r\n");
    semail_session_shutdown(f->s, NULL, NULL);
    assert_string_equal(talk(f, "NOOP\r\n"),
                        "421 4.3.2 " HOST " Service shutting down, closing connection\r\n");
    semail_session_shutdown(f->s, "4.4.2", "again");
    assert_string_equal(talk(f, ""), "");

    fx_open(f, 0, 0, 0);
    (void)talk(f, PRELUDE_DATA "part");
    semail_session_shutdown(f->s, "4.4.2", "Idle timeout");
    assert_string_equal(talk(f, ""), "421 4.4.2 " HOST " Idle timeout\r\n");
    assert_null(f->s->txn);
    fx_open(f, 0, 0, 0);
    semail_session_shutdown(f->s, "5.0.0", "bad class");
    assert_string_equal(talk(f, ""), "421 4.3.2 " HOST " bad class\r\n");
}

static void test_session__idle(void **state)
{
    fx *f = *state;

    assert_true(semail_session_idle(f->s));
    (void)talk(f, "NOO");
    assert_false(semail_session_idle(f->s));
    (void)talk(f, "P\r\n");
    assert_true(semail_session_idle(f->s));
    (void)talk(f, PRELUDE_DATA);
    assert_false(semail_session_idle(f->s));
    (void)talk(f, ".\r\n");
    assert_true(semail_session_idle(f->s));
}

static void test_session__stats(void **state)
{
    fx *f = *state;
    semail_session_stats st;

    (void)talk(f, PRELUDE_DATA "x\r\n.\r\nFOO\r\nMAIL FROM:<>\r\nRCPT TO:<unknown@b.example>\r\n"
                               "RCPT TO:<r@b.example>\r\nDATA\r\nbad\rx\r\n.\r\n");
    semail_session_stats_get(f->s, &st);
    assert_int_equal(st.messages, 1);
    assert_int_equal(st.commands, 9);
    assert_int_equal(st.rejected, 3); /* FOO, unknown, the bare CR message */
}

/* ---- pieces and flow control --------------------------------------------- */

static const char *const scripts[] = {
    "EHLO c.example\r\nMAIL FROM:<s@a.example>\r\nRCPT TO:<r@b.example>\r\nDATA\r\nhi\r\n..x\r\n"
    ".\r\nQUIT\r\n",
    "EHLO c\r\nNOOP\nx\r\nMAIL FROM:<>\r\nRCPT TO:<unknown@b.example>\r\nDATA\r\nRSET\r\nQUIT\r\n",
    PRELUDE_DATA "a\n.\nMAIL FROM:<e@e.example>\r\n\r\n.\r\nNOOP\r\n",
    PRELUDE_DATA "a\r\n.\r\r\nb\r\n.\r\n",
    "EHLO x\r\nFOO\r\nBAR\r\n\r\n\r\nEHLO x\r\nVRFY a\r\nEXPN b\r\nHELP\r\nRSET\r\n",
};

static char *run_in_pieces(fx *f, const char *in, size_t piece)
{
    semail_buf all;
    size_t len = strlen(in), pos, n;
    const char *o;

    semail__buf_init(&all, 1 << 20);
    fx_open(f, 100, 0, 0);
    f->plain_queue_reply = 1;
    for (pos = 0; pos < len; pos += piece) {
        size_t out_len;
        n = len - pos < piece ? len - pos : piece;
        assert_int_equal(semail_session_feed(f->s, in + pos, n), 0);
        o = semail_session_output(f->s, &out_len);
        assert_int_equal(semail__buf_add(&all, o, out_len), 0);
        semail_session_output_consume(f->s, out_len);
    }
    return all.data;
}

static void test_session__byte_at_a_time_same_replies(void **state)
{
    fx *f = *state;
    size_t i, piece;

    for (i = 0; i < SEMAIL_ARRAY_LEN(scripts); i++) {
        char *whole = run_in_pieces(f, scripts[i], strlen(scripts[i]));
        for (piece = 1; piece <= 7; piece++) {
            char *cut = run_in_pieces(f, scripts[i], piece);
            if (strcmp(whole, cut) != 0)
                fail_msg("script %zu in pieces of %zu:\n%s\n--- vs whole ---\n%s", i, piece, cut,
                         whole);
            free(cut);
        }
        free(whole);
    }
}

static void test_session__output_bounded_when_client_does_not_read(void **state)
{
    fx *f = *state;
    size_t n = 30000, i, total = 0, len, guard;
    char *in = malloc(n * 6);
    const char *o;

    assert_non_null(in);
    f->max_junk = UINT32_MAX; /* about flow control, not the junk limit */
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
    for (i = 0; i < n; i++)
        memcpy(in + i * 6, "NOOP\r\n", 6);
    assert_int_equal(semail_session_feed(f->s, in, n * 6), 0);
    (void)semail_session_output(f->s, &len);
    assert_true(len <= SMTP_OUTPUT_MAX);
    assert_true(len >= SMTP_OUTPUT_SOFT_MAX);
    assert_false(semail_session_idle(f->s)); /* input is waiting */
    assert_int_not_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    for (guard = 0; guard < 100 && len > 0; guard++) {
        o = semail_session_output(f->s, &len);
        assert_int_equal(len % 14, 0); /* whole replies only */
        assert_memory_equal(o, "250 2.0.0 Ok\r\n", 14);
        total += len / 14;
        /* Consuming output is enough to resume the waiting input (a server that
         * only sends, and reads again once everything is sent, must not stall). */
        semail_session_output_consume(f->s, len);
        (void)semail_session_output(f->s, &len);
        assert_true(len <= SMTP_OUTPUT_MAX);
    }
    assert_int_equal(total, n);
    assert_true(semail_session_idle(f->s));
    assert_int_equal(semail_session_feed(f->s, NULL, 0), 0);
    assert_string_equal(talk(f, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
    free(in);
}

static void test_session__too_much_paused_input_closes(void **state)
{
    fx *f = *state;
    size_t chunk = 60000, i, len;
    char *in = malloc(chunk);
    const char *o;
    static const char last[] =
        "421 4.7.0 " HOST " Too much pipelined input, closing connection\r\n";

    assert_non_null(in);
    f->max_junk = UINT32_MAX;
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
    for (i = 0; i + 6 <= chunk; i += 6)
        memcpy(in + i, "NOOP\r\n", 6);
    for (i = 0; i < 10 && semail_session_state_get(f->s) != SEMAIL_STATE_CLOSED; i++) {
        assert_int_equal(semail_session_feed(f->s, in, chunk), 0);
        assert_true(f->s->in.len <= SMTP_INPUT_MAX);
    }
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    o = semail_session_output(f->s, &len);
    assert_true(len <= SMTP_OUTPUT_MAX);
    assert_true(len > strlen(last));
    assert_memory_equal(o + len - strlen(last), last, strlen(last));
    free(in);
}

/* ---- AUTH (RFC 4954) and the MAIL callback -------------------------------- */

/* Base64 of LEN octets at IN, into OUT (NUL-terminated). */
static const char *b64(char *out, const char *in, size_t len)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)in;
    size_t i, o = 0;

    for (i = 0; i + 2 < len; i += 3) {
        out[o++] = al[p[i] >> 2];
        out[o++] = al[(p[i] & 3) << 4 | p[i + 1] >> 4];
        out[o++] = al[(p[i + 1] & 15) << 2 | p[i + 2] >> 6];
        out[o++] = al[p[i + 2] & 63];
    }
    if (len - i == 1) {
        out[o++] = al[p[i] >> 2];
        out[o++] = al[(p[i] & 3) << 4];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        out[o++] = al[p[i] >> 2];
        out[o++] = al[(p[i] & 3) << 4 | p[i + 1] >> 4];
        out[o++] = al[(p[i + 1] & 15) << 2];
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

/* base64("\0alice\0secret"), base64("\0alice\0wrong"), base64("alice"), base64("secret") */
#define PLAIN_GOOD    "AGFsaWNlAHNlY3JldA=="
#define PLAIN_BAD     "AGFsaWNlAHdyb25n"
#define LOGIN_ALICE   "YWxpY2U="
#define LOGIN_SECRET  "c2VjcmV0"
#define LOGIN_WRONG   "d3Jvbmc="
#define AUTH_OK       "235 2.7.0 Authentication successful\r\n"
#define AUTH_BAD      "535 5.7.8 Authentication credentials invalid\r\n"
#define USER_PROMPT   "334 VXNlcm5hbWU6\r\n"
#define PASS_PROMPT   "334 UGFzc3dvcmQ6\r\n"
#define BAD_B64       "501 5.5.2 Cannot Base64-decode Client responses\r\n"
#define BAD_DATA      "501 5.5.2 Invalid authentication data\r\n"
#define CANCELLED     "501 5.0.0 Authentication cancelled\r\n"
#define TOO_MANY_AUTH "421 4.7.0 " HOST " Too many authentication failures\r\n"

/* A session that offers AUTH (and checks senders when MAIL_CB), after EHLO. */
static void open_auth(fx *f, int mail_cb_too)
{
    f->auth_offered = 1;
    f->with_auth_cb = 1;
    f->with_mail_cb = mail_cb_too;
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
}

/* PLAIN with initial response for the raw message MSG of LEN octets. */
static const char *auth_plain(fx *f, const char *msg, size_t len)
{
    char enc[4096], line[4200];

    assert_true(len < 3000);
    assert_int_equal(semail__fmt(line, sizeof(line), "AUTH PLAIN %s\r\n", b64(enc, msg, len)), 0);
    return talk(f, line);
}

static void test_session__ehlo_advertises_auth_only_when_offered(void **state)
{
    fx *f = *state;

    f->with_auth_cb = 1;
    fx_open(f, 0, 0, 0);
    assert_null(strstr(talk(f, "EHLO c.example\r\n"), "AUTH"));
    open_auth(f, 0);
    assert_string_equal(talk(f, "EHLO c.example\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n");
    assert_string_equal(
        talk(f, "HELP\r\n"),
        "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP AUTH\r\n");
}

static void test_session__offering_auth_needs_a_callback(void **state)
{
    semail_session_options o;
    semail_session *s = NULL;

    assert_int_equal(semail_session_options_init(&o), 0);
    o.hostname = HOST;
    o.rcpt = rcpt_cb;
    o.message = msg_cb;
    o.auth_offered = 1;
    assert_int_equal(semail_session_new(&s, &o), SEMAIL_EINVAL);
    assert_null(s);
}

static void test_session__auth_in_every_state(void **state)
{
    fx *f = *state;

    f->auth_offered = f->with_auth_cb = 1;
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"), FIRST);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_INIT);
    (void)talk(f, "EHLO c.example\r\nMAIL FROM:<s@a.example>\r\n");
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"),
                        "503 5.5.1 Not permitted during a mail transaction\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_MAIL);
    (void)talk(f, "RCPT TO:<r@b.example>\r\n");
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"),
                        "503 5.5.1 Not permitted during a mail transaction\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_RCPT);
    /* In DATA it is message text. */
    (void)talk(f, "DATA\r\n");
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"), "");
    (void)talk(f, ".\r\n");
    assert_int_equal(f->auth_calls, 0);
    assert_string_equal(f->msg, "AUTH PLAIN " PLAIN_GOOD "\r\n");
    /* READY, also after HELO. */
    assert_string_equal(talk_each(f, "HELO c.example\r\nAUTH PLAIN " PLAIN_GOOD "\r\n"),
                        "250 " HOST "\r\n" AUTH_OK);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"),
                        "503 5.5.1 Already authenticated\r\n");
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"), "503 5.5.1 Already authenticated\r\n");
    assert_int_equal(f->auth_calls, 1);
    assert_string_equal(talk(f, "AUTH\r\n"),
                        "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n");
}

static void test_session__auth_plain_with_initial_response(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_null(semail_session_auth_user(f->s));
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"), AUTH_OK);
    assert_int_equal(f->auth_calls, 1);
    assert_string_equal(f->authcid, "alice");
    assert_string_equal(f->password, "secret");
    assert_string_equal(semail_session_auth_user(f->s), "alice");
    /* The envelope carries the identity to every later callback. */
    (void)talk(f, PRELUDE_DATA "x\r\n.\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(f->env_auth_user, "alice");
    assert_int_equal(f->env_tls, 0);
}

static void test_session__envelope_without_auth_has_null_user_and_tls_flag(void **state)
{
    fx *f = *state;

    f->tls = 1;
    fx_open(f, 0, 0, 0);
    (void)talk(f, PRELUDE_DATA "x\r\n.\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(f->env_auth_user, "-");
    assert_int_equal(f->env_tls, 1);
}

static void test_session__auth_plain_after_empty_challenge(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH plain\r\n"), "334 \r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_AUTH);
    assert_false(semail_session_idle(f->s));
    assert_string_equal(talk(f, PLAIN_GOOD "\r\n"), AUTH_OK);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_true(semail_session_idle(f->s));
    assert_string_equal(semail_session_auth_user(f->s), "alice");
}

static void test_session__auth_plain_authzid_rules(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    /* Acting for someone else: refused before the callback, and counted. */
    assert_string_equal(auth_plain(f, "bob\0alice\0secret", 16), AUTH_BAD);
    assert_int_equal(f->auth_calls, 0);
    assert_int_equal(f->s->auth_failures, 1);
    assert_string_equal(auth_plain(f, "alic\0alice\0secret", 17), AUTH_BAD);
    assert_int_equal(f->auth_calls, 0);
    /* The same identity twice is fine. */
    assert_string_equal(auth_plain(f, "alice\0alice\0secret", 18), AUTH_OK);
    assert_int_equal(f->auth_calls, 1);
}

static void test_session__auth_plain_malformed_messages(void **state)
{
    static const struct {
        const char *msg;
        size_t len;
    } bad[] = {
        {"alicesecret", 11},         /* no NUL */
        {"\0alicesecret", 12},       /* one NUL */
        {"\0alice\0sec\0ret", 14},   /* a NUL in the password */
        {"\0\0secret", 8},           /* empty identity */
        {"\0alice\0", 7},            /* empty password */
        {"\0al\x01ice\0secret", 14}, /* control character in the identity */
        {"\0al\nice\0secret", 14},   /* even LF */
    };
    fx *f = *state;
    char big[SMTP_AUTH_ID_MAX + 20];
    size_t i;

    open_auth(f, 0);
    for (i = 0; i < SEMAIL_ARRAY_LEN(bad); i++) {
        const char *out = auth_plain(f, bad[i].msg, bad[i].len);
        if (strcmp(out, BAD_DATA) != 0)
            fail_msg("message %zu: got '%s'", i, out);
        assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    }
    /* "AUTH PLAIN =" is the empty response: malformed. */
    assert_string_equal(talk(f, "AUTH PLAIN =\r\n"), BAD_DATA);
    /* An identity of 256 octets: "\0" 256 x 'u' "\0" "pw". */
    big[0] = '\0';
    memset(big + 1, 'u', SMTP_AUTH_ID_MAX + 1);
    big[SMTP_AUTH_ID_MAX + 2] = '\0';
    memcpy(big + SMTP_AUTH_ID_MAX + 3, "pw", 2);
    assert_string_equal(auth_plain(f, big, SMTP_AUTH_ID_MAX + 5), BAD_DATA);
    assert_int_equal(f->auth_calls, 0);
    /* 255 octets reach the callback (which says no). */
    big[SMTP_AUTH_ID_MAX + 1] = '\0';
    memcpy(big + SMTP_AUTH_ID_MAX + 2, "pw", 2);
    assert_string_equal(auth_plain(f, big, SMTP_AUTH_ID_MAX + 4), AUTH_BAD);
    assert_int_equal(f->auth_calls, 1);
    assert_int_equal(strlen(f->authcid), SMTP_AUTH_ID_MAX);
    /* Malformed messages are errors, not failed logins. */
    assert_int_equal(f->s->auth_failures, 1);
    assert_int_not_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__auth_login_prompts_for_user_and_password(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"), USER_PROMPT);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_AUTH);
    assert_string_equal(talk(f, LOGIN_ALICE "\r\n"), PASS_PROMPT);
    assert_string_equal(f->s->sasl_user, "alice");
    assert_string_equal(talk(f, LOGIN_SECRET "\r\n"), AUTH_OK);
    assert_string_equal(f->authcid, "alice");
    assert_string_equal(semail_session_auth_user(f->s), "alice");
    /* The user name kept between the steps is wiped. */
    assert_string_equal(f->s->sasl_user, "");
}

static void test_session__auth_login_with_initial_response(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH LOGIN " LOGIN_ALICE "\r\n"), PASS_PROMPT);
    assert_string_equal(talk(f, LOGIN_WRONG "\r\n"), AUTH_BAD);
    assert_null(semail_session_auth_user(f->s));
    assert_string_equal(talk(f, "AUTH LOGIN " LOGIN_ALICE "\r\n" LOGIN_SECRET "\r\n"),
                        PASS_PROMPT AUTH_OK);
    assert_int_equal(f->auth_calls, 2);
}

static void test_session__auth_login_malformed_responses(void **state)
{
    fx *f = *state;
    char line[64];

    open_auth(f, 0);
    /* A user name with NUL or a control character; an empty password. */
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"), USER_PROMPT);
    assert_string_equal(talk(f, b64(line, "al\0ce", 5)), "");
    assert_string_equal(talk(f, "\r\n"), BAD_DATA);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n\r\n"), USER_PROMPT BAD_DATA);
    assert_string_equal(talk(f, "AUTH LOGIN " LOGIN_ALICE "\r\n\r\n"), PASS_PROMPT BAD_DATA);
    assert_int_equal(semail__fmt(line, sizeof(line), "AUTH LOGIN " LOGIN_ALICE "\r\n%s\r\n",
                                 "cGEAc3M="), /* "pa\0ss" */
                     0);
    assert_string_equal(talk(f, line), PASS_PROMPT BAD_DATA);
    assert_int_equal(f->auth_calls, 0);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
}

static void test_session__auth_star_cancels_at_every_step(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH PLAIN\r\n*\r\n"), "334 \r\n" CANCELLED);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n*\r\n"), USER_PROMPT CANCELLED);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n" LOGIN_ALICE "\r\n*\r\n"),
                        USER_PROMPT PASS_PROMPT CANCELLED);
    assert_string_equal(f->s->sasl_user, "");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_int_equal(f->auth_calls, 0);
    assert_int_equal(f->s->auth_failures, 0);
    /* Cancelling is not failing: three of them leave the session open. */
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n"), AUTH_OK);
}

static void test_session__auth_bad_base64_answers_501(void **state)
{
    static const char *const bad[] = {
        "abc",        /* not a multiple of 4 */
        "YWJj=",      /* idem */
        "====",       /* padding only */
        "YW Jj",      /* a blank */
        "YWJ=YWJj",   /* padding in the middle */
        "Zh==",       /* non-canonical: dropped bits set */
        "YWJ\x01",    /* not in the alphabet */
        "YWJj\tZGVm", /* tab */
        "YQ=a",       /* data after padding */
    };
    fx *f = *state;
    char line[64];
    size_t i;

    open_auth(f, 0);
    for (i = 0; i < SEMAIL_ARRAY_LEN(bad); i++) {
        assert_int_equal(semail__fmt(line, sizeof(line), "AUTH PLAIN\r\n%s\r\n", bad[i]), 0);
        if (strcmp(talk(f, line), "334 \r\n" BAD_B64) != 0)
            fail_msg("'%s': got '%s'", bad[i], f->out);
        assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    }
    assert_string_equal(talk(f, "AUTH LOGIN !!!!\r\n"), BAD_B64);
    assert_int_equal(f->auth_calls, 0);
}

static void test_session__base64_decoder_is_strict_and_bounded(void **state)
{
    unsigned char out[8];

    assert_int_equal(semail__base64_decode(out, sizeof(out), "", 0), 0);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Zg==", 4), 1);
    assert_memory_equal(out, "f", 1);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Zm8=", 4), 2);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Zm9v", 4), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "+/+/", 4), 3);
    assert_memory_equal(out, "\xfb\xff\xbf", 3);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Zm9vYmFy", 8), 6);
    assert_int_equal(semail__base64_decode(out, 5, "Zm9vYmFy", 8), -1); /* does not fit */
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Zm9=", 4), -1);
    assert_int_equal(semail__base64_decode(out, sizeof(out), "Z===", 4), -1);
}

static void test_session__auth_unknown_mechanism_504(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH CRAM-MD5\r\n"),
                        "504 5.5.4 Unrecognized authentication type\r\n");
    assert_string_equal(talk(f, "AUTH PLAINX " PLAIN_GOOD "\r\n"),
                        "504 5.5.4 Unrecognized authentication type\r\n");
    assert_string_equal(talk(f, "AUTH XOAUTH2 abc\r\n"),
                        "504 5.5.4 Unrecognized authentication type\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
}

static void test_session__auth_not_offered(void **state)
{
    fx *f = *state;

    /* No callback at all: AUTH does not exist here. */
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk(f, "EHLO c\r\nAUTH PLAIN " PLAIN_GOOD "\r\n" PLAIN_GOOD "\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"
                        "503 5.5.1 Authentication not enabled\r\n"
                        "500 5.5.2 Command unrecognized\r\n");
    /* A callback, but a plain connection that does not offer it: go to TLS. */
    f->with_auth_cb = 1;
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk_each(f, "HELO c\r\nAUTH LOGIN\r\n"),
                        "250 " HOST "\r\n538 5.7.11 Encryption required for requested "
                        "authentication mechanism\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    /* On TLS, not offered means not enabled. */
    f->tls = 1;
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk_each(f, "HELO c\r\nAUTH LOGIN\r\n"),
                        "250 " HOST "\r\n503 5.5.1 Authentication not enabled\r\n");
    assert_int_equal(f->auth_calls, 0);
}

static void test_session__auth_failures_close_with_421_at_the_limit(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_BAD "\r\n"), AUTH_BAD);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n" LOGIN_ALICE "\r\n" LOGIN_WRONG "\r\n"),
                        USER_PROMPT PASS_PROMPT AUTH_BAD);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_string_equal(talk(f, "AUTH PLAIN\r\n" PLAIN_BAD "\r\nNOOP\r\n"),
                        "334 \r\n" TOO_MANY_AUTH);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    assert_int_equal(f->auth_calls, 3);
    assert_null(semail_session_auth_user(f->s));
    /* A limit of one. */
    f->max_auth_failures = 1;
    open_auth(f, 0);
    assert_string_equal(talk(f, "AUTH PLAIN " PLAIN_BAD "\r\n"), TOO_MANY_AUTH);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__auth_temporary_failures_are_not_counted(void **state)
{
    fx *f = *state;
    char msg[32];
    int i;

    open_auth(f, 0);
    for (i = 0; i < 4; i++) {
        assert_string_equal(auth_plain(f, "\0alice\0temp", 11),
                            "454 4.7.0 Temporary authentication failure\r\n");
        assert_string_equal(auth_plain(f, "\0alice\0tempfail", 15),
                            "454 4.7.0 Directory unavailable\r\n");
    }
    assert_int_equal(f->s->auth_failures, 0);
    assert_null(semail_session_auth_user(f->s));
    /* A success given as a bare 250 is still sent as 235. */
    memcpy(msg, "\0alice\0grant250", 15);
    assert_string_equal(auth_plain(f, msg, 15), "235 2.7.0 Fine\r\n");
    assert_string_equal(semail_session_auth_user(f->s), "alice");
}

static void test_session__auth_response_line_limits(void **state)
{
    fx *f = *state;
    char msg[1 + 4 + 1 + SMTP_AUTH_PASSWORD_MAX + 1];
    char *line = malloc(SMTP_SASL_LINE_MAX + 10);

    assert_non_null(line);
    open_auth(f, 0);
    /* The longest password, after the challenge. */
    memcpy(msg, "\0long\0", 6);
    memset(msg + 6, 'p', SMTP_AUTH_PASSWORD_MAX + 1);
    (void)b64(line, msg, 6 + SMTP_AUTH_PASSWORD_MAX);
    memcpy(line + strlen(line), "\r\n", 3);
    assert_string_equal(talk(f, "AUTH PLAIN\r\n"), "334 \r\n");
    assert_string_equal(talk(f, line), AUTH_OK);
    assert_string_equal(semail_session_auth_user(f->s), "long");
    /* One more octet: malformed. */
    open_auth(f, 0);
    (void)b64(line, msg, 6 + SMTP_AUTH_PASSWORD_MAX + 1);
    memcpy(line + strlen(line), "\r\n", 3);
    assert_string_equal(talk(f, "AUTH PLAIN\r\n"), "334 \r\n");
    assert_string_equal(talk(f, line), BAD_DATA);
    /* A response line over SMTP_SASL_LINE_MAX: 500 5.5.6, dropped, bounded. */
    memset(line, 'A', SMTP_SASL_LINE_MAX + 4);
    memcpy(line + SMTP_SASL_LINE_MAX + 4, "\r\n", 3);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"), USER_PROMPT);
    assert_string_equal(talk(f, line), "500 5.5.6 Authentication Exchange line is too long\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_string_equal(talk(f, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
    /* Exactly at the limit (CRLF included): read as a response, which does
     * not decode into the largest message. */
    memset(line, 'A', SMTP_SASL_LINE_MAX - 2);
    memcpy(line + SMTP_SASL_LINE_MAX - 2, "\r\n", 3);
    assert_string_equal(talk(f, "AUTH LOGIN\r\n"), USER_PROMPT);
    assert_string_equal(talk(f, line), BAD_B64);
    /* The AUTH line itself is a command line. */
    memset(line, 'A', 600);
    memcpy(line, "AUTH PLAIN ", 11);
    memcpy(line + 600, "\r\n", 3);
    assert_string_equal(talk(f, line), "500 5.5.2 Line too long\r\n");
    free(line);
}

static void test_session__sasl_lines_are_never_commands(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    /* "QUIT" is base64 (of "AB\x13"), and a bad user name. */
    assert_string_equal(talk(f, "AUTH LOGIN\r\nQUIT\r\n"), USER_PROMPT BAD_DATA);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_string_equal(talk(f, "AUTH PLAIN\r\nRSET\r\n"),
                        "334 \r\n" BAD_DATA); /* "RSET" is base64 */
    /* Bare LF does not end a response either. */
    assert_string_equal(talk(f, "AUTH PLAIN\r\n" PLAIN_GOOD "\nNOOP\r\n"), "334 \r\n" BAD_B64);
    assert_null(semail_session_auth_user(f->s));
    /* A pipelined client: AUTH, the response, then the transaction. */
    assert_string_equal(talk(f, "AUTH PLAIN\r\n" PLAIN_GOOD "\r\nMAIL FROM:<alice@a.example>\r\n"),
                        "334 \r\n" AUTH_OK "250 2.1.0 Ok\r\n");
}

static void test_session__auth_survives_rset_and_ehlo(void **state)
{
    fx *f = *state;

    open_auth(f, 0);
    (void)talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n");
    (void)talk(f, "RSET\r\nEHLO again.example\r\n");
    assert_string_equal(semail_session_auth_user(f->s), "alice");
    assert_string_equal(semail_session_helo(f->s), "again.example");
}

static void test_session__helo_accessor(void **state)
{
    fx *f = *state;

    assert_string_equal(semail_session_helo(f->s), "");
    (void)talk(f, "HELO first.example\r\n");
    assert_string_equal(semail_session_helo(f->s), "first.example");
    assert_null(semail_session_helo(NULL));
    assert_null(semail_session_auth_user(NULL));
}

static void test_session__mail_callback_decides_the_sender(void **state)
{
    fx *f = *state;

    open_auth(f, 1);
    assert_string_equal(talk(f, "MAIL FROM:<alice@a.example>\r\n"),
                        "553 5.7.1 Sender address rejected: not owned by user\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_READY);
    assert_null(f->s->txn);
    (void)talk(f, "AUTH PLAIN " PLAIN_GOOD "\r\n");
    assert_string_equal(talk(f, "MAIL FROM:<mallory@a.example>\r\n"),
                        "553 5.7.1 Sender address rejected: not owned by user\r\n");
    assert_null(f->s->txn);
    assert_string_equal(talk(f, "RCPT TO:<r@b.example>\r\n"), NEEDMAIL);
    assert_string_equal(talk(f, "MAIL FROM:<broken@a.example>\r\n"),
                        "451 4.3.0 Local error in processing\r\n");
    assert_null(f->s->txn);
    assert_string_equal(talk(f, "MAIL FROM:<alice@a.example>\r\nRCPT TO:<r@b.example>\r\n"),
                        "250 2.1.0 Sender ok\r\n250 2.1.5 Ok\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_RCPT);
    assert_int_equal(f->mail_calls, 4);
    /* Not called for a MAIL refused before it (syntax, size). */
    (void)talk(f, "RSET\r\nMAIL FROM:<bad\r\n");
    assert_int_equal(f->mail_calls, 4);
}

static const char *const auth_scripts[] = {
    "EHLO c\r\nAUTH PLAIN\r\n" PLAIN_GOOD "\r\nMAIL FROM:<alice@a.example>\r\nQUIT\r\n",
    "EHLO c\r\nAUTH LOGIN\r\n" LOGIN_ALICE "\r\n*\r\nAUTH LOGIN " LOGIN_ALICE "\r\n" LOGIN_WRONG
    "\r\nAUTH PLAIN " PLAIN_BAD "\r\nAUTH PLAIN\r\nx\r\nAUTH PLAIN " PLAIN_BAD "\r\nNOOP\r\n",
    "EHLO c\r\nAUTH PLAIN\r\nQUIT\nRSET\r\nAUTH PLAIN =\r\nAUTH LOGIN\r\n\r\nNOOP\r\n",
};

static void test_session__auth_replies_do_not_depend_on_the_pieces(void **state)
{
    fx *f = *state;
    size_t i, piece;

    f->auth_offered = f->with_auth_cb = f->with_mail_cb = 1;
    for (i = 0; i < SEMAIL_ARRAY_LEN(auth_scripts); i++) {
        char *whole = run_in_pieces(f, auth_scripts[i], strlen(auth_scripts[i]));
        assert_non_null(strstr(whole, "334 "));
        for (piece = 1; piece <= 7; piece++) {
            char *cut = run_in_pieces(f, auth_scripts[i], piece);
            if (strcmp(whole, cut) != 0)
                fail_msg("auth script %zu in pieces of %zu:\n%s\n--- vs whole ---\n%s", i, piece,
                         cut, whole);
            free(cut);
        }
        free(whole);
    }
}

/* ---- protocol abuse ------------------------------------------------------ */

#define PIPELINING_554 "554 5.5.1 Error: improper use of SMTP command pipelining\r\n"
#define BREAK_RULES    "221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"

static void test_session__pipelining_after_helo_closes_with_554(void **state)
{
    fx *f = *state;

    /* HELO did not advertise PIPELINING: the client must wait for each reply. */
    assert_string_equal(talk(f, "HELO c.example\r\nMAIL FROM:<s@a.example>\r\n"),
                        "250 " HOST "\r\n" PIPELINING_554);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    assert_null(f->s->txn);
    /* Later in a HELO session too, and a partial line counts: it was sent early. */
    fx_open(f, 0, 0, 0);
    (void)talk_each(f, "HELO c.example\r\nMAIL FROM:<s@a.example>\r\n");
    assert_string_equal(talk(f, "RCPT TO:<r@b.example>\r\nDA"), "250 2.1.5 Ok\r\n" PIPELINING_554);
    assert_int_equal(f->rcpt_calls, 1);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__pipelining_before_any_greeting_closes_with_554(void **state)
{
    fx *f = *state;

    assert_string_equal(talk(f, "NOOP\r\nEHLO c.example\r\n"), "250 2.0.0 Ok\r\n" PIPELINING_554);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    /* A failed EHLO gives no ESMTP either. */
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk(f, "EHLO a\tb\r\nMAIL FROM:<s@a.example>\r\n"),
                        "501 5.5.4 Invalid hostname\r\n" PIPELINING_554);
}

static void test_session__helo_body_sent_with_data_closes_without_delivery(void **state)
{
    fx *f = *state;

    (void)talk_each(f, "HELO c.example\r\nMAIL FROM:<s@a.example>\r\nRCPT TO:<r@b.example>\r\n");
    assert_string_equal(talk(f, "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"),
                        "354 End data with <CR><LF>.<CR><LF>\r\n" PIPELINING_554);
    assert_int_equal(f->msg_calls, 0);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__helo_client_that_waits_is_served(void **state)
{
    fx *f = *state;

    assert_string_equal(talk_each(f, "HELO c.example\r\nMAIL FROM:<s@a.example>\r\n"
                                     "RCPT TO:<r@b.example>\r\nDATA\r\n"),
                        "250 " HOST "\r\n" REPLIES_DATA);
    /* The message itself is one block: DATA lines may come together. */
    (void)talk(f, "Subject: x\r\n\r\nline 1\r\nline 2\r\n.\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(f->msg, "Subject: x\r\n\r\nline 1\r\nline 2\r\n");
    assert_string_equal(talk(f, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
}

static void test_session__pipelining_after_ehlo_is_accepted(void **state)
{
    fx *f = *state;

    /* EHLO may be followed at once (the client reads the replies as a group). */
    f->plain_queue_reply = 1;
    assert_string_equal(talk(f, PRELUDE_DATA "hi\r\n.\r\nRSET\r\nQUIT\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n" REPLIES_DATA
                        "250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    /* HELO after EHLO ends ESMTP: pipelining is refused from then on. */
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk(f, "EHLO c\r\nHELO c\r\nNOOP\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n250 " HOST "\r\n" PIPELINING_554);
}

static void test_session__http_request_closes_at_once(void **state)
{
    static const char *const requests[] = {
        "GET / HTTP/1.1\r\nHost: mx\r\n\r\n",
        "POST /cgi HTTP/1.0\r\nContent-Length: 30\r\n\r\nMAIL FROM:<a@b>\r\n",
        "CONNECT mx:25 HTTP/1.1\r\n\r\n",
        "HEAD / HTTP/1.1\r\n",
        "PUT /x HTTP/1.1\r\n",
        "OPTIONS * HTTP/1.1\r\n",
        "get / HTTP/1.1\r\n",
    };
    fx *f = *state;
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(requests); i++) {
        fx_open(f, 0, 0, 0);
        assert_string_equal(talk(f, requests[i]), BREAK_RULES);
        assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    }
    /* Mid-session (after EHLO), too: no rcpt or message callback ever runs. */
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\nMAIL FROM:<s@a.example>\r\n");
    assert_string_equal(talk(f, "POST / HTTP/1.1\r\nRCPT TO:<r@b.example>\r\n"), BREAK_RULES);
    assert_int_equal(f->rcpt_calls, 0);
}

static void test_session__header_sent_as_a_command_closes(void **state)
{
    fx *f = *state;

    (void)talk(f, "EHLO c.example\r\n");
    assert_string_equal(talk(f, "Subject: hello\r\n"), BREAK_RULES);
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
    assert_string_equal(talk(f, "From:<a@b.example>\r\n"), BREAK_RULES);
    /* A verb with a bad argument is only a syntax error; a word without a colon, 500. */
    fx_open(f, 0, 0, 0);
    (void)talk(f, "EHLO c.example\r\n");
    assert_string_equal(talk(f, "MAIL FROM:x\r\n"), "501 5.1.7 Bad sender address syntax\r\n");
    assert_string_equal(talk(f, "SUBJECT hello\r\n"), "500 5.5.2 Command unrecognized\r\n");
    assert_string_equal(talk(f, ":x\r\n"), "500 5.5.2 Command unrecognized\r\n");
    assert_string_equal(talk(f, "MAILFROM:<a@b.example>\r\n"),
                        "500 5.5.2 Command unrecognized\r\n");
    assert_string_equal(talk(f, "rcptto:<a@b.example>\r\n"), "500 5.5.2 Command unrecognized\r\n");
    assert_int_not_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
}

static void test_session__junk_commands_over_the_limit_close_with_421(void **state)
{
    fx *f = *state;

    f->max_junk = 3;
    fx_open(f, 0, 0, 0);
    assert_string_equal(talk(f, "EHLO c.example\r\nNOOP\r\nRSET\r\nVRFY x\r\n"),
                        "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n"
                        "250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
                        "502 5.5.1 Command not implemented\r\n");
    /* An accepted message starts the count again. */
    (void)talk(f, "MAIL FROM:<s@a.example>\r\nRCPT TO:<r@b.example>\r\nDATA\r\nx\r\n.\r\n");
    assert_int_equal(f->msg_calls, 1);
    assert_string_equal(talk(f, "RSET\r\nHELP\r\nNOOP\r\n"),
                        "250 2.0.0 Ok\r\n214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP "
                        "QUIT HELP\r\n250 2.0.0 Ok\r\n");
    assert_string_equal(talk(f, "EXPN x\r\nQUIT\r\n"),
                        "421 4.7.0 " HOST " Too many junk commands, closing connection\r\n");
    assert_int_equal(semail_session_state_get(f->s), SEMAIL_STATE_CLOSED);
    /* The default is 100. */
    f->max_junk = 0;
    fx_open(f, 0, 0, 0);
    {
        int i;
        (void)talk(f, "EHLO c.example\r\n");
        for (i = 0; i < 100; i++)
            assert_string_equal(talk(f, "NOOP\r\n"), "250 2.0.0 Ok\r\n");
        assert_string_equal(talk(f, "NOOP\r\n"),
                            "421 4.7.0 " HOST " Too many junk commands, closing connection\r\n");
    }
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_session__greeting_has_no_enhanced_code),
        T(test_session__new_refuses_bad_options),
        T(test_session__ehlo_advertises_extensions),
        T(test_session__helo_and_argument_checks),
        T(test_session__every_command_in_every_state),
        T(test_session__arguments_where_none_allowed),
        T(test_session__greeting_again_resets_transaction),
        T(test_session__pipelined_group_replies_in_order),
        T(test_session__delivers_message_with_envelope),
        T(test_session__transaction_ids_differ),
        T(test_session__dot_unstuffing),
        T(test_session__empty_message_and_nul_bytes),
        T(test_session__message_callback_failure_answers_451),
        T(test_session__end_of_data_only_at_crlf_dot_crlf),
        T(test_session__bare_cr_or_lf_refuses_whole_message),
        T(test_session__command_line_limit_512),
        T(test_session__huge_command_line_bounded_one_reply),
        T(test_session__bare_cr_lf_nul_in_command),
        T(test_session__text_line_limit_1000),
        T(test_session__huge_text_line_bounded_then_refused),
        T(test_session__size_parameter_against_max),
        T(test_session__message_over_max_size_refused_bounded),
        T(test_session__max_recipients),
        T(test_session__recipient_callback_replies),
        T(test_session__max_errors_closes_with_421),
        T(test_session__default_max_errors_is_20),
        T(test_session__quit_then_input_ignored),
        T(test_session__shutdown_queues_421),
        T(test_session__idle),
        T(test_session__stats),
        T(test_session__byte_at_a_time_same_replies),
        T(test_session__output_bounded_when_client_does_not_read),
        T(test_session__too_much_paused_input_closes),
        T(test_session__ehlo_advertises_auth_only_when_offered),
        T(test_session__offering_auth_needs_a_callback),
        T(test_session__auth_in_every_state),
        T(test_session__auth_plain_with_initial_response),
        T(test_session__envelope_without_auth_has_null_user_and_tls_flag),
        T(test_session__auth_plain_after_empty_challenge),
        T(test_session__auth_plain_authzid_rules),
        T(test_session__auth_plain_malformed_messages),
        T(test_session__auth_login_prompts_for_user_and_password),
        T(test_session__auth_login_with_initial_response),
        T(test_session__auth_login_malformed_responses),
        T(test_session__auth_star_cancels_at_every_step),
        T(test_session__auth_bad_base64_answers_501),
        T(test_session__base64_decoder_is_strict_and_bounded),
        T(test_session__auth_unknown_mechanism_504),
        T(test_session__auth_not_offered),
        T(test_session__auth_failures_close_with_421_at_the_limit),
        T(test_session__auth_temporary_failures_are_not_counted),
        T(test_session__auth_response_line_limits),
        T(test_session__sasl_lines_are_never_commands),
        T(test_session__auth_survives_rset_and_ehlo),
        T(test_session__helo_accessor),
        T(test_session__mail_callback_decides_the_sender),
        T(test_session__auth_replies_do_not_depend_on_the_pieces),
        T(test_session__pipelining_after_helo_closes_with_554),
        T(test_session__pipelining_before_any_greeting_closes_with_554),
        T(test_session__helo_body_sent_with_data_closes_without_delivery),
        T(test_session__helo_client_that_waits_is_served),
        T(test_session__pipelining_after_ehlo_is_accepted),
        T(test_session__http_request_closes_at_once),
        T(test_session__header_sent_as_a_command_closes),
        T(test_session__junk_commands_over_the_limit_close_with_421),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
