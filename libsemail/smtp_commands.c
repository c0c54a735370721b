/*
 * smtp_commands.c - the SMTP commands: one const table row per command
 * (verb, handler, states where it is valid, flags) and one handler per
 * command.
 *
 * Contract: semail__smtp_command() answers every command line with exactly
 * one reply (multi-line for EHLO). The table decides whether a command is in
 * sequence (503 otherwise) and whether it takes an argument (501); the
 * handler checks the rest of its preconditions, changes state only through
 * semail__smtp_enter_state(), and fills the reply.
 */
#include <string.h>

#include "smtp_internal.h"

typedef void (*smtp_handler)(semail_session *s, const char *arg, size_t len, semail_reply *r);

enum smtp_command_flags {
    CMD_ARG_REQUIRED = 1u << 0, /* no argument: 501 */
    CMD_ARG_NONE = 1u << 1,     /* an argument: 501 */
    CMD_STARTS_TXN = 1u << 2,   /* out of sequence inside a transaction: "nested" */
    CMD_NOT_IN_TXN = 1u << 3,   /* out of sequence inside a transaction: "not permitted" */
    CMD_JUNK = 1u << 4          /* counted towards max_junk_commands */
};

typedef struct smtp_command {
    const char *verb;
    smtp_handler handler;
    unsigned int states; /* mask of (1 << semail_session_state) */
    unsigned int flags;  /* enum smtp_command_flags */
    const char *usage;   /* for the 501 of a missing or unexpected argument */
} smtp_command;

#define ST(x)       (1u << SEMAIL_STATE_##x)
#define ST_DIALOGUE (ST(INIT) | ST(READY) | ST(MAIL) | ST(RCPT))

/* ---- handlers ------------------------------------------------------------ */

/* Common part of EHLO and HELO: a new greeting resets any transaction. */
static int greet(semail_session *s, const char *arg, size_t len, int esmtp, semail_reply *r)
{
    size_t i;

    if (len > SMTP_HELO_MAX) {
        semail_reply_set(r, 501, "5.5.4", "Hostname too long");
        return SEMAIL_ETOOBIG;
    }
    for (i = 0; i < len; i++) {
        if ((unsigned char)arg[i] < 0x20 || (unsigned char)arg[i] >= 0x7f) {
            semail_reply_set(r, 501, "5.5.4", "Invalid hostname");
            return SEMAIL_EINVAL;
        }
    }
    memcpy(s->helo, arg, len);
    s->helo[len] = '\0';
    s->esmtp = esmtp;
    semail__smtp_enter_state(s, SEMAIL_STATE_READY);
    return 0;
}

static void cmd_ehlo(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    char size[48];

    if (greet(s, arg, len, 1, r) < 0)
        return;
    /* RFC 2034 3: no enhanced status codes in the EHLO reply. */
    semail__smtp_send_continue(s, 250, s->hostname);
    semail__smtp_send_continue(s, 250, "PIPELINING");
    if (s->max_message_size > 0)
        (void)semail__fmt(size, sizeof(size), "SIZE %zu", s->max_message_size);
    else
        (void)semail__fmt(size, sizeof(size), "SIZE");
    semail__smtp_send_continue(s, 250, size);
    semail__smtp_send_continue(s, 250, "8BITMIME");
    semail__smtp_send_continue(s, 250, "ENHANCEDSTATUSCODES");
    if (s->auth_offered)
        semail__smtp_send_continue(s, 250, "AUTH PLAIN LOGIN");
    semail_reply_set(r, 250, NULL, "HELP");
}

static void cmd_helo(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    if (greet(s, arg, len, 0, r) == 0)
        semail_reply_set(r, 250, NULL, "%s", s->hostname);
}

/* The embedder's word on the sender; <0 when it is refused (R says why). */
static int ask_mail(semail_session *s, const semail_address *sender, semail_reply *r)
{
    semail_envelope env;
    int rc;

    semail__smtp_envelope(s, &env);
    memset(r, 0, sizeof(*r));
    rc = s->mail_cb(r, &env, sender, s->payload);
    if (rc < 0 || semail__smtp_reply_check(r) < 0) {
        semail_reply_set(r, 451, "4.3.0", "Local error in processing");
        return SEMAIL_ERROR;
    }
    return r->code / 100 == 2 ? 0 : SEMAIL_ERROR;
}

static void cmd_mail(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail_address sender;
    smtp_mail_params p;

    if (semail__smtp_parse_mail(&sender, &p, arg, len, r) < 0)
        return;
    if (p.size > s->data_max) {
        semail_reply_set(r, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        return;
    }
    if (semail__smtp_txn_begin(s, r) < 0)
        return;
    s->txn->sender = sender;
    s->txn->declared_size = p.size;
    s->txn->body_8bit = p.body_8bit;
    semail_reply_set(r, 250, "2.1.0", "Ok");
    if (s->mail_cb != NULL && ask_mail(s, &sender, r) < 0) {
        semail__smtp_enter_state(s, SEMAIL_STATE_READY); /* drops the transaction */
        return;
    }
    semail__smtp_enter_state(s, SEMAIL_STATE_MAIL);
}

static void cmd_rcpt(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail_address rcpt;
    semail_envelope env;
    int rc;

    if (semail__smtp_parse_rcpt(&rcpt, arg, len, r) < 0)
        return;
    if (s->txn->rcpt_count >= s->max_recipients) {
        semail_reply_set(r, 452, "4.5.3", "Too many recipients");
        return;
    }
    semail__smtp_envelope(s, &env);
    memset(r, 0, sizeof(*r));
    rc = s->rcpt_cb(r, &env, &rcpt, s->payload);
    if (rc < 0 || semail__smtp_reply_check(r) < 0) {
        semail_reply_set(r, 451, "4.3.0", "Local error in processing");
        return;
    }
    if (r->code / 100 != 2)
        return;
    if (semail__smtp_txn_add_rcpt(s, &rcpt) < 0) {
        semail_reply_set(r, 452, "4.3.1", "Insufficient system storage");
        return;
    }
    semail__smtp_enter_state(s, SEMAIL_STATE_RCPT);
}

static void cmd_data(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail__smtp_enter_state(s, SEMAIL_STATE_DATA);
    /* RFC 3463 has no class 3: the 354 carries no enhanced code. */
    semail_reply_set(r, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    if (s->state != SEMAIL_STATE_INIT)
        semail__smtp_enter_state(s, SEMAIL_STATE_READY);
    semail_reply_set(r, 250, "2.0.0", "Ok");
}

static void cmd_noop(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail_reply_set(r, 250, "2.0.0", "Ok");
}

static void cmd_quit(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail__smtp_enter_state(s, SEMAIL_STATE_CLOSED);
    semail_reply_set(r, 221, "2.0.0", "Bye");
}

static void cmd_help(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail_reply_set(r, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT HELP%s",
                     s->auth_offered ? " AUTH" : "");
}

static void cmd_auth(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail__smtp_auth(s, arg, len, r);
}

static void cmd_not_implemented(semail_session *s, const char *arg, size_t len, semail_reply *r)
{
    semail_reply_set(r, 502, "5.5.1", "Command not implemented");
}

/* ---- the table ----------------------------------------------------------- */

static const smtp_command commands[] = {
    {"EHLO", cmd_ehlo, ST_DIALOGUE, CMD_ARG_REQUIRED, "EHLO hostname"},
    {"HELO", cmd_helo, ST_DIALOGUE, CMD_ARG_REQUIRED, "HELO hostname"},
    {"MAIL", cmd_mail, ST(READY), CMD_ARG_REQUIRED | CMD_STARTS_TXN, "MAIL FROM:<address>"},
    {"RCPT", cmd_rcpt, ST(MAIL) | ST(RCPT), CMD_ARG_REQUIRED, "RCPT TO:<address>"},
    {"DATA", cmd_data, ST(RCPT), CMD_ARG_NONE, "DATA"},
    {"RSET", cmd_rset, ST_DIALOGUE, CMD_ARG_NONE | CMD_JUNK, "RSET"},
    {"NOOP", cmd_noop, ST_DIALOGUE, CMD_JUNK, "NOOP"},
    {"QUIT", cmd_quit, ST_DIALOGUE, CMD_ARG_NONE, "QUIT"},
    {"HELP", cmd_help, ST_DIALOGUE, CMD_JUNK, "HELP"},
    {"AUTH", cmd_auth, ST(READY), CMD_ARG_REQUIRED | CMD_NOT_IN_TXN,
     "AUTH mechanism [initial-response]"},
    {"VRFY", cmd_not_implemented, ST_DIALOGUE, CMD_JUNK, "VRFY"},
    {"EXPN", cmd_not_implemented, ST_DIALOGUE, CMD_JUNK, "EXPN"},
};

/* Request lines of another protocol (HTTP): never SMTP, from a browser or a
 * proxy abused to reach this port. */
static const char *const foreign_verbs[] = {
    "GET", "POST", "HEAD", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
};

static const smtp_command *lookup(const char *verb, size_t len)
{
    size_t i;

    for (i = 0; i < SEMAIL_ARRAY_LEN(commands); i++)
        if (strlen(commands[i].verb) == len &&
            semail__strncasecmp(commands[i].verb, verb, len) == 0)
            return &commands[i];
    return NULL;
}

/*
 * 1 when the unknown word VERB (LEN bytes) is an HTTP method, or a message
 * header name followed by its colon ("Subject:", "From:<a@b>"): a message
 * leaking into the dialogue, or another protocol (Postfix's is_header()).
 */
static int foreign_command(const char *verb, size_t len)
{
    const char *colon = memchr(verb, ':', len);
    size_t i;

    /* A verb glued to its argument ("MAILFROM:<a@b>") is a sloppy client's
     * typo, answered 500 like any unknown command. */
    for (i = 0; i < SEMAIL_ARRAY_LEN(commands); i++)
        if (len >= 4 && semail__strncasecmp(commands[i].verb, verb, 4) == 0)
            return 0;
    if (colon != NULL && colon > verb)
        return 1; /* the verb runs to the first blank, so the name has none */
    for (i = 0; i < SEMAIL_ARRAY_LEN(foreign_verbs); i++)
        if (strlen(foreign_verbs[i]) == len &&
            semail__strncasecmp(foreign_verbs[i], verb, len) == 0)
            return 1;
    return 0;
}

/* The 503 of a command the table does not allow in the current state. */
static void out_of_sequence(const semail_session *s, const smtp_command *c, semail_reply *r)
{
    const char *why = "Bad sequence of commands";

    if (s->state == SEMAIL_STATE_INIT)
        why = "Send HELO/EHLO first";
    else if (c->flags & CMD_STARTS_TXN)
        why = "Nested MAIL command";
    else if (c->flags & CMD_NOT_IN_TXN)
        why = "Not permitted during a mail transaction";
    else if (s->state == SEMAIL_STATE_READY)
        why = "Need MAIL command";
    else if (s->state == SEMAIL_STATE_MAIL)
        why = "No valid recipients";
    semail_reply_set(r, 503, "5.5.1", "%s", why);
}

void semail__smtp_command(semail_session *s, const char *line, size_t len)
{
    char buf[SEMAIL_COMMAND_LINE_MAX];
    const smtp_command *c;
    semail_reply r;
    size_t verb, arg, end;

    s->stats.commands++;
    if (len >= sizeof(buf)) {
        semail_reply_set(&r, 500, "5.5.2", "Line too long");
        goto reply;
    }
    if (memchr(line, '\r', len) || memchr(line, '\n', len) || memchr(line, '\0', len)) {
        semail_reply_set(&r, 501, "5.5.2", "Syntax error: bare CR, LF or NUL in command");
        goto reply;
    }
    memcpy(buf, line, len);
    buf[len] = '\0';
    for (verb = 0; verb < len && buf[verb] != ' '; verb++)
        ;
    for (arg = verb; arg < len && buf[arg] == ' '; arg++)
        ;
    for (end = len; end > arg && buf[end - 1] == ' '; end--)
        ;
    buf[end] = '\0';
    c = lookup(buf, verb);
    if (c == NULL && foreign_command(buf, verb)) {
        /* Postfix's answer: whatever is talking, it is not a mail client. */
        semail_reply_set(&r, 221, "2.7.0", "Error: I can break rules, too. Goodbye.");
        semail__smtp_send_close(s, &r);
        return;
    }
    if (c != NULL && (c->flags & CMD_JUNK) && (c->states & (1u << s->state)) &&
        ++s->junk > s->max_junk) {
        semail_reply_set(&r, 421, "4.7.0", "%s Too many junk commands, closing connection",
                         s->hostname);
        goto reply;
    }
    if (c == NULL)
        semail_reply_set(&r, 500, "5.5.2", "Command unrecognized");
    else if (!(c->states & (1u << s->state)))
        out_of_sequence(s, c, &r);
    else if (((c->flags & CMD_ARG_REQUIRED) && arg == end) ||
             ((c->flags & CMD_ARG_NONE) && arg != end))
        semail_reply_set(&r, 501, "5.5.4", "Syntax: %s", c->usage);
    else
        c->handler(s, buf + arg, end - arg, &r);
reply:
    semail__smtp_send(s, &r);
}
