/*
 * smtp_client.c - one delivery attempt of one message to one SMTP server
 * (RFC 5321, with SIZE, 8BITMIME, PIPELINING and ENHANCEDSTATUSCODES).
 *
 * Contract: every recipient ends with exactly one outcome. A recipient is
 * PENDING until a reply (or a failure) decides it; ACCEPTED after a 2xx to
 * its RCPT, until the reply to the final dot decides it; DONE after that.
 * A failure of the session (connection, timeout, 421, malformed reply)
 * decides every recipient not DONE at once, and the dialogue stops. Lines
 * and bytes go through the connection layer only (smtp_client_io.c).
 *
 * A 5xx greeting or a 5xx to both EHLO and HELO defers (its enhanced code
 * is given class 4): it is the host that refuses, not the message, and the
 * next MX may take it (Postfix's smtp_skip_5xx_greeting).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_client_internal.h"

enum rcpt_state { RCPT_PENDING = 0, RCPT_ACCEPTED, RCPT_DONE };

struct semail_client_result {
    semail_client_status session;
    semail_client_status *rcpts;
    size_t rcpt_count;
    char *remote_name;
    char remote_addr[CLIENT_ADDR_TEXT_MAX];
    semail__client_ehlo ehlo;
};

/* The state of one dialogue: on the stack of semail_client_deliver(). */
typedef struct client {
    semail_client_options o; /* timeouts resolved to their defaults */
    semail__client_conn conn;
    int connected;
    int broken; /* the connection cannot carry QUIT (lost, timed out, 421) */
    semail__client_reply reply;
    semail_client_result *res;
    unsigned char *state; /* an enum rcpt_state per recipient */
    size_t accepted;
} client;

/* Outcome of one step: go on, or stop (the outcome is recorded); errors are < 0. */
enum { STEP_GO = 0, STEP_STOP = 1 };

static const char *const stage_names[] = {"connect", "greeting", "EHLO/HELO",  "MAIL FROM",
                                          "RCPT TO", "DATA",     "end of data"};

/* ---- results ------------------------------------------------------------- */

static int status_set(semail_client_status *st, semail_client_action action, int code,
                      const char *enhanced, const char *text, semail_client_stage stage)
{
    char *t = semail__strdup(text);
    if (t == NULL)
        return SEMAIL_ENOMEM;
    free((char *)st->text);
    st->text = t;
    st->action = action;
    st->permanent = action == SEMAIL_CLIENT_FAILED;
    st->code = code;
    (void)semail__strlcpy(st->enhanced, enhanced, sizeof(st->enhanced));
    st->stage = stage;
    return 0;
}

static semail_client_action action_of_class(int cls)
{
    return cls == 5 ? SEMAIL_CLIENT_FAILED : SEMAIL_CLIENT_DEFERRED;
}

/* Decide the session and every recipient in a state up to MAX_STATE. */
static int decide_all(client *c, enum rcpt_state max_state, semail_client_action action, int code,
                      const char *enhanced, const char *text, semail_client_stage stage)
{
    size_t i;
    int err;

    if ((err = status_set(&c->res->session, action, code, enhanced, text, stage)) < 0)
        return err;
    for (i = 0; i < c->res->rcpt_count; i++) {
        if (c->state[i] > max_state)
            continue;
        if ((err = status_set(&c->res->rcpts[i], action, code, enhanced, text, stage)) < 0)
            return err;
        c->state[i] = RCPT_DONE;
    }
    return 0;
}

/* A failure seen here, not replied by the server: code 0, our text. */
static int fail_local(client *c, semail_client_action action, const char *enhanced,
                      semail_client_stage stage, const char *fmt, ...) SEMAIL_PRINTF(5, 6);
static int fail_local(client *c, semail_client_action action, const char *enhanced,
                      semail_client_stage stage, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    int err;

    va_start(ap, fmt);
    if (vsnprintf(text, sizeof(text), fmt, ap) < 0)
        text[0] = '\0';
    va_end(ap);
    err = decide_all(c, RCPT_ACCEPTED, action, 0, enhanced, text, stage);
    return err < 0 ? err : STEP_STOP;
}

/* The reply in c->reply decides every undecided recipient. */
static int fail_reply(client *c, semail_client_action action, semail_client_stage stage)
{
    char enhanced[sizeof(c->reply.enhanced)];
    int err;

    memcpy(enhanced, c->reply.enhanced, sizeof(enhanced));
    if (action == SEMAIL_CLIENT_DEFERRED)
        enhanced[0] = '4';
    err = decide_all(c, RCPT_ACCEPTED, action, c->reply.code, enhanced,
                     c->reply.text.data ? c->reply.text.data : "", stage);
    return err < 0 ? err : STEP_STOP;
}

/* ---- replies ------------------------------------------------------------- */

/* Read one complete reply into c->reply: 0, or an error code (nothing recorded). */
static int recv_reply(client *c, unsigned int timeout_ms)
{
    uint64_t deadline = semail__client_now_ms() + timeout_ms;
    const char *line;
    size_t len;
    int r;

    semail__client_reply_reset(&c->reply);
    do {
        if ((r = semail__client_conn_line(&c->conn, &line, &len, deadline)) < 0)
            return r == SEMAIL_ETOOBIG ? SEMAIL_EINVAL : r;
        r = semail__client_reply_line(&c->reply, line, len);
    } while (r == 0);
    return r < 0 ? r : 0;
}

/* Turn an I/O or parse failure while WHAT into the outcome of every undecided recipient. */
static int fail_io(client *c, int err, semail_client_stage stage, const char *what)
{
    c->broken = 1;
    if (err == SEMAIL_ENOMEM)
        return err;
    if (err == SEMAIL_ETEMP)
        return fail_local(c, SEMAIL_CLIENT_DEFERRED, "4.4.2", stage, "timeout %s with %s", what,
                          c->res->remote_addr);
    if (err == SEMAIL_EINVAL)
        return fail_local(c, SEMAIL_CLIENT_DEFERRED, "4.5.0", stage, "%s %s from %s",
                          semail_error_last(), what, c->res->remote_addr);
    return fail_local(c, SEMAIL_CLIENT_DEFERRED, "4.4.2", stage, "lost connection %s with %s (%s)",
                      what, c->res->remote_addr, semail_error_last());
}

/* Read the reply to a command of STAGE; a failure or a 421 stops the dialogue. */
static int await(client *c, unsigned int timeout_ms, semail_client_stage stage)
{
    char what[64];
    int err;

    (void)snprintf(what, sizeof(what), "waiting for the reply to %s", stage_names[stage]);
    if (stage == SEMAIL_CLIENT_STAGE_GREETING)
        (void)snprintf(what, sizeof(what), "waiting for the greeting");
    if ((err = recv_reply(c, timeout_ms)) < 0)
        return fail_io(c, err, stage, what);
    if (c->reply.code == 421) {
        c->broken = 1;
        return fail_reply(c, SEMAIL_CLIENT_DEFERRED, stage);
    }
    return STEP_GO;
}

static int send_text(client *c, const char *p, size_t n, unsigned int timeout_ms,
                     semail_client_stage stage)
{
    char what[64];
    int err;

    if ((err = semail__client_conn_write(&c->conn, p, n, semail__client_now_ms() + timeout_ms)) <
        0) {
        (void)snprintf(what, sizeof(what), "while sending %s", stage_names[stage]);
        return fail_io(c, err, stage, what);
    }
    return STEP_GO;
}

/* ---- the dialogue ---------------------------------------------------------- */

static int greet(client *c)
{
    int r;

    if ((r = await(c, c->o.greeting_timeout_ms, SEMAIL_CLIENT_STAGE_GREETING)) != STEP_GO)
        return r;
    if (c->reply.code / 100 != 2)
        return fail_reply(c, SEMAIL_CLIENT_DEFERRED, SEMAIL_CLIENT_STAGE_GREETING);
    return STEP_GO;
}

static int hello(client *c)
{
    char cmd[CLIENT_HELO_MAX + 16];
    int r, err;

    (void)snprintf(cmd, sizeof(cmd), "EHLO %s\r\n", c->o.helo_name);
    if ((r = send_text(c, cmd, strlen(cmd), c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_HELO)) ||
        (r = await(c, c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_HELO)))
        return r;
    if (c->reply.code / 100 == 2) {
        if ((err = semail__client_ehlo_parse(&c->res->ehlo, &c->reply)) < 0)
            return err;
        return STEP_GO;
    }
    if (c->reply.code / 100 != 5)
        return fail_reply(c, SEMAIL_CLIENT_DEFERRED, SEMAIL_CLIENT_STAGE_HELO);
    (void)snprintf(cmd, sizeof(cmd), "HELO %s\r\n", c->o.helo_name);
    if ((r = send_text(c, cmd, strlen(cmd), c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_HELO)) ||
        (r = await(c, c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_HELO)))
        return r;
    if (c->reply.code / 100 != 2)
        return fail_reply(c, SEMAIL_CLIENT_DEFERRED, SEMAIL_CLIENT_STAGE_HELO);
    return STEP_GO;
}

/* Octets of DATA once every line ends in CRLF (RFC 1870's message size). */
static uint64_t wire_size(const char *data, size_t len, int *eightbit)
{
    uint64_t n = len;
    size_t i;

    *eightbit = 0;
    for (i = 0; i < len; i++) {
        if ((unsigned char)data[i] >= 0x80)
            *eightbit = 1;
        else if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
            n++;
        else if (data[i] == '\r' && (i + 1 == len || data[i + 1] != '\n'))
            n++;
    }
    if (len > 0 && data[len - 1] != '\n' && data[len - 1] != '\r')
        n += 2;
    return n;
}

/* The commands of the transaction: MAIL, one RCPT per valid recipient, DATA. */
typedef struct txn {
    const char *sender;
    const char *const *rcpts;
    uint64_t size;
    int eightbit;
    size_t next_rcpt;  /* next recipient whose RCPT is to be sent */
    size_t reply_rcpt; /* next recipient whose RCPT reply is to be read (in sending order) */
    int mail_failed;
} txn;

static size_t skip_done(const client *c, size_t i)
{
    while (i < c->res->rcpt_count && c->state[i] == RCPT_DONE)
        i++;
    return i;
}

static int add_mail(client *c, semail_buf *b, const txn *t)
{
    int err = semail__buf_printf(b, "MAIL FROM:<%s>", t->sender);
    if (err == 0 && (c->res->ehlo.flags & CLIENT_EXT_SIZE))
        err = semail__buf_printf(b, " SIZE=%llu", (unsigned long long)t->size);
    if (err == 0 && t->eightbit && (c->res->ehlo.flags & CLIENT_EXT_8BITMIME))
        err = semail__buf_addstr(b, " BODY=8BITMIME");
    return err == 0 ? semail__buf_addstr(b, "\r\n") : err;
}

/* Handle the reply to MAIL in c->reply. */
static int on_mail(client *c, txn *t)
{
    int cls = c->reply.code / 100;
    if (cls == 2)
        return STEP_GO;
    t->mail_failed = 1;
    return fail_reply(c, action_of_class(cls), SEMAIL_CLIENT_STAGE_MAIL);
}

/* Handle the reply to the RCPT of recipient I in c->reply. */
static int on_rcpt(client *c, size_t i)
{
    int cls = c->reply.code / 100;
    semail_client_action action = action_of_class(cls);
    int err;

    if (cls == 2) {
        c->state[i] = RCPT_ACCEPTED;
        c->accepted++;
        return STEP_GO;
    }
    if ((err = status_set(&c->res->rcpts[i], action, c->reply.code, c->reply.enhanced,
                          c->reply.text.data ? c->reply.text.data : "", SEMAIL_CLIENT_STAGE_RCPT)) <
        0)
        return err;
    if (action == SEMAIL_CLIENT_DEFERRED)
        c->res->rcpts[i].enhanced[0] = '4';
    c->state[i] = RCPT_DONE;
    return STEP_GO;
}

/*
 * Read the replies to a group: MAIL when WITH_MAIL, NRCPT RCPTs, DATA when
 * WITH_DATA. After a refused MAIL the remaining replies are read (to stay
 * in step) but decide nothing.
 */
static int read_group(client *c, txn *t, int with_mail, size_t nrcpt, int with_data)
{
    size_t k;
    int r;

    if (with_mail) {
        if ((r = await(c, c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_MAIL)) != STEP_GO)
            return r;
        if ((r = on_mail(c, t)) < 0)
            return r;
    }
    for (k = 0; k < nrcpt; k++) {
        if ((r = await(c, c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_RCPT)) != STEP_GO)
            return r;
        if (t->mail_failed)
            continue;
        t->reply_rcpt = skip_done(c, t->reply_rcpt);
        if ((r = on_rcpt(c, t->reply_rcpt++)) < 0)
            return r;
    }
    if (with_data)
        return await(c, c->o.data_init_timeout_ms, SEMAIL_CLIENT_STAGE_DATA);
    return t->mail_failed ? STEP_STOP : STEP_GO;
}

/* Send a group of at most MAX commands (RFC 2920), then read its replies. */
static int send_group(client *c, txn *t, semail_buf *b, int with_mail, size_t max, int pipelining,
                      int *data_sent)
{
    size_t n = 0, nrcpt = 0;
    int err, r;

    semail__buf_reset(b);
    if (with_mail && (err = add_mail(c, b, t)) < 0)
        return err;
    n += with_mail ? 1u : 0u;
    while ((t->next_rcpt = skip_done(c, t->next_rcpt)) < c->res->rcpt_count && n < max) {
        if ((err = semail__buf_printf(b, "RCPT TO:<%s>\r\n", t->rcpts[t->next_rcpt])) < 0)
            return err;
        t->next_rcpt++;
        nrcpt++;
        n++;
    }
    *data_sent = pipelining && t->next_rcpt == c->res->rcpt_count && n < max;
    if (*data_sent && (err = semail__buf_addstr(b, "DATA\r\n")) < 0)
        return err;
    if ((r = send_text(c, b->data, b->len, c->o.command_timeout_ms,
                       with_mail ? SEMAIL_CLIENT_STAGE_MAIL : SEMAIL_CLIENT_STAGE_RCPT)) != STEP_GO)
        return r;
    return read_group(c, t, with_mail, nrcpt, *data_sent);
}

/* Handle the reply to DATA in c->reply. */
static int on_data(client *c, txn *t)
{
    int cls = c->reply.code / 100;
    int r;

    if (cls == 3 && c->accepted > 0 && !t->mail_failed)
        return STEP_GO;
    if (cls == 3) {
        /* DATA accepted with no recipient (RFC 2920 3.1): send an empty message, ignore its fate.
         */
        if ((r = send_text(c, ".\r\n", 3, c->o.data_timeout_ms, SEMAIL_CLIENT_STAGE_DATA)) ||
            (r = await(c, c->o.data_done_timeout_ms, SEMAIL_CLIENT_STAGE_DOT)))
            return r;
        return STEP_STOP;
    }
    if (c->accepted == 0 || t->mail_failed)
        return STEP_STOP;
    return fail_reply(c, action_of_class(cls), SEMAIL_CLIENT_STAGE_DATA);
}

/* After the RCPTs: every recipient refused, or the session failed, or DATA to do. */
static int no_recipient(client *c)
{
    semail_client_action action = SEMAIL_CLIENT_FAILED;
    size_t i;
    int err;

    for (i = 0; i < c->res->rcpt_count; i++)
        if (c->res->rcpts[i].action == SEMAIL_CLIENT_DEFERRED)
            action = SEMAIL_CLIENT_DEFERRED;
    err =
        status_set(&c->res->session, action, 0, action == SEMAIL_CLIENT_FAILED ? "5.0.0" : "4.0.0",
                   "no recipient accepted", SEMAIL_CLIENT_STAGE_RCPT);
    return err < 0 ? err : STEP_STOP;
}

static int transaction(client *c, const char *sender, const char *const *rcpts, uint64_t size,
                       int eightbit)
{
    txn t = {sender, rcpts, size, eightbit, 0, 0, 0};
    int pipelining = (c->res->ehlo.flags & CLIENT_EXT_PIPELINING) != 0;
    size_t max = pipelining ? c->o.pipeline_max : 1;
    int with_mail = 1, data_sent = 0, r;
    semail_buf b;

    semail__buf_init(&b, (size_t)max * (SEMAIL_CLIENT_REPLY_LINE_MAX + 32));
    do {
        r = send_group(c, &t, &b, with_mail, max, pipelining, &data_sent);
        with_mail = 0;
    } while (r == STEP_GO && !data_sent && skip_done(c, t.next_rcpt) < c->res->rcpt_count);
    if (r == STEP_GO && !data_sent && c->accepted > 0) {
        if ((r = send_text(c, "DATA\r\n", 6, c->o.command_timeout_ms, SEMAIL_CLIENT_STAGE_DATA)) ==
            STEP_GO)
            r = await(c, c->o.data_init_timeout_ms, SEMAIL_CLIENT_STAGE_DATA);
        data_sent = 1;
    }
    semail__buf_free(&b);
    if (r == STEP_GO && data_sent)
        r = on_data(c, &t);
    if (r == STEP_GO && c->accepted == 0)
        r = STEP_STOP;
    if (r == STEP_STOP && c->accepted == 0 && !t.mail_failed && c->res->session.text == NULL)
        return no_recipient(c);
    return r;
}

/* Send DATA's content: CRLF line ends, dot-stuffed, then the final dot. */
static int send_body(client *c, const char *data, size_t len)
{
    char *out = malloc(CLIENT_DATA_BLOCK + 8); /* room for the last line end and dot */
    size_t i, k = 0;
    int bol = 1, r = STEP_GO;

    if (out == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (i = 0; i < len; i++) {
        char ch = data[i];
        if (bol && ch == '.')
            out[k++] = '.';
        if (ch == '\r' || ch == '\n') {
            if (ch == '\r' && i + 1 < len && data[i + 1] == '\n')
                i++;
            out[k++] = '\r';
            out[k++] = '\n';
            bol = 1;
        } else {
            out[k++] = ch;
            bol = 0;
        }
        if (k >= CLIENT_DATA_BLOCK) {
            if ((r = send_text(c, out, k, c->o.data_timeout_ms, SEMAIL_CLIENT_STAGE_DOT)))
                goto done;
            k = 0;
        }
    }
    if (!bol) {
        out[k++] = '\r';
        out[k++] = '\n';
    }
    out[k++] = '.';
    out[k++] = '\r';
    out[k++] = '\n';
    r = send_text(c, out, k, c->o.data_timeout_ms, SEMAIL_CLIENT_STAGE_DOT);
done:
    free(out);
    return r;
}

static int finish_data(client *c)
{
    int r;

    if ((r = await(c, c->o.data_done_timeout_ms, SEMAIL_CLIENT_STAGE_DOT)) != STEP_GO)
        return r;
    if (c->reply.code / 100 != 2)
        return fail_reply(c, action_of_class(c->reply.code / 100), SEMAIL_CLIENT_STAGE_DOT);
    r = decide_all(c, RCPT_ACCEPTED, SEMAIL_CLIENT_DELIVERED, c->reply.code, c->reply.enhanced,
                   c->reply.text.data ? c->reply.text.data : "", SEMAIL_CLIENT_STAGE_DOT);
    return r < 0 ? r : STEP_GO;
}

/* QUIT decides nothing: its failures are ignored. */
static void quit(client *c)
{
    uint64_t deadline = semail__client_now_ms() + c->o.quit_timeout_ms;
    if (!c->connected || c->broken)
        return;
    if (semail__client_conn_write(&c->conn, "QUIT\r\n", 6, deadline) == 0)
        (void)recv_reply(c, c->o.quit_timeout_ms);
}

static int dialogue(client *c, const char *sender, const char *const *rcpts, const char *data,
                    size_t len)
{
    int eightbit, r;
    uint64_t size = wire_size(data, len, &eightbit);

    if ((r = greet(c)) != STEP_GO || (r = hello(c)) != STEP_GO)
        return r;
    if ((c->res->ehlo.flags & CLIENT_EXT_SIZE) && c->res->ehlo.size_max > 0 &&
        size > c->res->ehlo.size_max)
        return fail_local(c, SEMAIL_CLIENT_FAILED, "5.3.4", SEMAIL_CLIENT_STAGE_MAIL,
                          "message size %llu exceeds the size limit %llu of %s",
                          (unsigned long long)size, (unsigned long long)c->res->ehlo.size_max,
                          c->res->remote_addr);
    if ((r = transaction(c, sender, rcpts, size, eightbit)) != STEP_GO)
        return r;
    if ((r = send_body(c, data, len)) != STEP_GO)
        return r;
    return finish_data(c);
}

/* ---- set-up --------------------------------------------------------------- */

/* A path body we can put between < and >: printable ASCII but <>, fits SEMAIL_PATH_MAX. */
static int path_ok(const char *s)
{
    size_t i;
    for (i = 0; s[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch > 0x7e || ch == '<' || ch == '>' || i >= 254)
            return 0;
    }
    return 1;
}

static int helo_ok(const char *s)
{
    size_t i;
    for (i = 0; s[i] != '\0'; i++)
        if (s[i] <= 0x20 || s[i] > 0x7e || i >= CLIENT_HELO_MAX)
            return 0;
    return i > 0;
}

static int addr_text(char *out, const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host)) == NULL)
            return SEMAIL_EINVAL;
        return semail__fmt(out, CLIENT_ADDR_TEXT_MAX, "[%s]:%u", host, ntohs(s6->sin6_port));
    }
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host)) == NULL)
            return SEMAIL_EINVAL;
        return semail__fmt(out, CLIENT_ADDR_TEXT_MAX, "%s:%u", host, ntohs(s4->sin_port));
    }
    return semail__err(SEMAIL_EINVAL, "not an IPv6 or IPv4 socket address");
}

/* The name for Remote-MTA: the given one, else the address without brackets and port. */
static char *remote_name(const char *given, const char *addr)
{
    const char *p = addr;
    size_t n;

    if (given != NULL && given[0] != '\0')
        return semail__strdup(given);
    if (*p == '[') {
        p++;
        n = strcspn(p, "]");
    } else {
        n = strcspn(p, ":");
    }
    return semail__strndup(p, n);
}

static unsigned int dflt(unsigned int v, unsigned int d)
{
    return v ? v : d;
}

static int options_resolve(semail_client_options *o, const semail_client_options *in)
{
    semail_client_options d = SEMAIL_CLIENT_OPTIONS_INIT;

    if (in == NULL)
        in = &d;
    if (in->version < 1 || in->version > SEMAIL_CLIENT_OPTIONS_VERSION)
        return semail__err(SEMAIL_EINVAL, "unknown client options version %u", in->version);
    *o = *in;
    if (o->helo_name == NULL)
        o->helo_name = "localhost";
    if (!helo_ok(o->helo_name))
        return semail__err(SEMAIL_EINVAL, "invalid HELO name");
    o->connect_timeout_ms = dflt(o->connect_timeout_ms, CLIENT_DEFAULT_CONNECT_MS);
    o->greeting_timeout_ms = dflt(o->greeting_timeout_ms, CLIENT_DEFAULT_GREETING_MS);
    o->command_timeout_ms = dflt(o->command_timeout_ms, CLIENT_DEFAULT_COMMAND_MS);
    o->data_init_timeout_ms = dflt(o->data_init_timeout_ms, CLIENT_DEFAULT_DATA_INIT_MS);
    o->data_timeout_ms = dflt(o->data_timeout_ms, CLIENT_DEFAULT_DATA_MS);
    o->data_done_timeout_ms = dflt(o->data_done_timeout_ms, CLIENT_DEFAULT_DATA_DONE_MS);
    o->quit_timeout_ms = dflt(o->quit_timeout_ms, CLIENT_DEFAULT_QUIT_MS);
    o->pipeline_max = dflt(o->pipeline_max, CLIENT_DEFAULT_PIPELINE_MAX);
    if (o->pipeline_max < 2)
        o->pipeline_max = 2; /* MAIL and one RCPT, or one RCPT and DATA */
    return 0;
}

static int result_new(semail_client_result **out, const semail_client_options *o,
                      const struct sockaddr *addr, socklen_t addrlen, const char *const *rcpts,
                      size_t n)
{
    semail_client_result *res = calloc(1, sizeof(*res));
    size_t i;
    int err;

    *out = res;
    if (res == NULL || (res->rcpts = calloc(n, sizeof(*res->rcpts))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    res->rcpt_count = n;
    for (i = 0; i < n; i++)
        if ((res->rcpts[i].rcpt = semail__strdup(rcpts[i])) == NULL)
            return SEMAIL_ENOMEM;
    if ((err = addr_text(res->remote_addr, addr, addrlen)) < 0)
        return err;
    if ((res->remote_name = remote_name(o->remote_name, res->remote_addr)) == NULL)
        return SEMAIL_ENOMEM;
    return 0;
}

/* Recipients we cannot write in a RCPT command fail here, before any connection. */
static int refuse_bad_rcpts(client *c, const char *const *rcpts)
{
    size_t i;
    int err;

    for (i = 0; i < c->res->rcpt_count; i++) {
        if (path_ok(rcpts[i]) && rcpts[i][0] != '\0')
            continue;
        if ((err = status_set(&c->res->rcpts[i], SEMAIL_CLIENT_FAILED, 0, "5.1.3",
                              "bad recipient address syntax", SEMAIL_CLIENT_STAGE_RCPT)) < 0)
            return err;
        c->state[i] = RCPT_DONE;
    }
    if (skip_done(c, 0) == c->res->rcpt_count)
        return no_recipient(c);
    return STEP_GO;
}

static int connect_server(client *c, const struct sockaddr *addr, socklen_t addrlen)
{
    int fd, err;

    err = semail__client_connect(&fd, addr, addrlen, c->o.source, c->o.source_len,
                                 c->o.connect_timeout_ms);
    if (err == SEMAIL_ETEMP || err == SEMAIL_EIO)
        return fail_local(c, SEMAIL_CLIENT_DEFERRED, "4.4.1", SEMAIL_CLIENT_STAGE_CONNECT,
                          "connect to %s: %s", c->res->remote_addr, semail_error_last());
    if (err < 0)
        return err;
    semail__client_conn_init(&c->conn, fd, &semail__client_plain);
    c->connected = 1;
    return STEP_GO;
}

int semail_client_options_init(semail_client_options *opts)
{
    semail_client_options d = SEMAIL_CLIENT_OPTIONS_INIT;
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    *opts = d;
    return 0;
}

static int check_args(semail_client_result **out, const struct sockaddr *addr, const char *sender,
                      const char *const *rcpts, size_t rcpt_count, const char *data)
{
    size_t i;

    if (out == NULL || addr == NULL || sender == NULL || rcpts == NULL || rcpt_count == 0 ||
        data == NULL)
        return semail__err(SEMAIL_EINVAL, "missing argument to semail_client_deliver");
    for (i = 0; i < rcpt_count; i++)
        if (rcpts[i] == NULL)
            return semail__err(SEMAIL_EINVAL, "NULL recipient");
    if (!path_ok(sender))
        return semail__err(SEMAIL_EINVAL, "invalid sender address");
    return 0;
}

int semail_client_deliver(semail_client_result **out, const semail_client_options *opts,
                          const struct sockaddr *addr, socklen_t addrlen, const char *sender,
                          const char *const *rcpts, size_t rcpt_count, const char *data, size_t len)
{
    client c;
    int r;

    if (out != NULL)
        *out = NULL;
    memset(&c, 0, sizeof(c));
    c.conn.fd = -1;
    semail__client_reply_init(&c.reply);
    if ((r = check_args(out, addr, sender, rcpts, rcpt_count, data)) < 0)
        return r;
    if ((r = options_resolve(&c.o, opts)) < 0 ||
        (r = result_new(&c.res, &c.o, addr, addrlen, rcpts, rcpt_count)) < 0)
        goto done;
    if ((c.state = calloc(rcpt_count, 1)) == NULL) {
        r = semail__err(SEMAIL_ENOMEM, "out of memory");
        goto done;
    }
    if ((r = refuse_bad_rcpts(&c, rcpts)) == STEP_GO &&
        (r = connect_server(&c, addr, addrlen)) == STEP_GO)
        r = dialogue(&c, sender, rcpts, data, len);
    quit(&c);
done:
    semail__client_conn_close(&c.conn);
    semail__client_reply_free(&c.reply);
    free(c.state);
    if (r < 0) {
        semail_client_result_free(c.res);
        return r;
    }
    *out = c.res;
    return 0;
}

/* ---- getters --------------------------------------------------------------- */

void semail_client_result_free(semail_client_result *res)
{
    size_t i;

    if (res == NULL)
        return;
    for (i = 0; res->rcpts != NULL && i < res->rcpt_count; i++) {
        free((char *)res->rcpts[i].text);
        free((char *)res->rcpts[i].rcpt);
    }
    free(res->rcpts);
    free((char *)res->session.text);
    free(res->remote_name);
    semail__client_ehlo_free(&res->ehlo);
    free(res);
}

const semail_client_status *semail_client_result_session(const semail_client_result *res)
{
    return res ? &res->session : NULL;
}

size_t semail_client_result_rcpt_count(const semail_client_result *res)
{
    return res ? res->rcpt_count : 0;
}

const semail_client_status *semail_client_result_rcpt(const semail_client_result *res, size_t i)
{
    return res && i < res->rcpt_count ? &res->rcpts[i] : NULL;
}

const char *semail_client_result_remote_name(const semail_client_result *res)
{
    return res && res->remote_name ? res->remote_name : "";
}

const char *semail_client_result_remote_addr(const semail_client_result *res)
{
    return res ? res->remote_addr : "";
}

const char *semail_client_result_extension(const semail_client_result *res, const char *keyword)
{
    size_t i;

    if (res == NULL || keyword == NULL)
        return NULL;
    for (i = 0; i < res->ehlo.count; i++)
        if (semail__strcasecmp(res->ehlo.keywords[i], keyword) == 0)
            return res->ehlo.params[i];
    return NULL;
}

const char *semail_client_action_name(semail_client_action action)
{
    switch (action) {
    case SEMAIL_CLIENT_DELIVERED:
        return "delivered";
    case SEMAIL_CLIENT_DEFERRED:
        return "delayed";
    default:
        return "failed";
    }
}
