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
} fx;

static int rcpt_cb(semail_reply *r, const semail_envelope *env, const semail_address *a,
                   void *payload)
{
    fx *f = payload;

    f->rcpt_calls++;
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
    assert_string_equal(talk(f, "HELO again.example\r\nDATA\r\n"), "250 " HOST "\r\n" NEEDMAIL);
    assert_null(f->s->txn);
    assert_string_equal(talk(f, "MAIL FROM:<s@a.example>\r\nRSET\r\nRCPT TO:<r@b.example>\r\n"),
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
    assert_string_equal(talk(f, "FOO\r\nNOOP\r\nMAIL FROM:<a@b>\r\nBAR\r\nNOOP\r\n"),
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
    "HELO c\r\nNOOP\nx\r\nMAIL FROM:<>\r\nRCPT TO:<unknown@b.example>\r\nDATA\r\nRSET\r\nQUIT\r\n",
    PRELUDE_DATA "a\n.\nMAIL FROM:<e@e.example>\r\n\r\n.\r\nNOOP\r\n",
    PRELUDE_DATA "a\r\n.\r\r\nb\r\n.\r\n",
    "FOO\r\nBAR\r\n\r\n\r\nEHLO x\r\nVRFY a\r\nEXPN b\r\nHELP\r\nRSET\r\n",
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
