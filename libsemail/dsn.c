/*
 * dsn.c - build RFC 3464 bounces (multipart/report; report-type=delivery-status).
 *
 * Contract: the output is CRLF-terminated lines of at most 998 octets;
 * every outside string goes through clean() (control bytes to spaces,
 * non-ASCII to '?') and fold(), so nothing can inject a header line or a
 * MIME boundary. The original header is copied as is, with its line ends
 * normalized and overlong lines cut; the boundary is chosen so that it
 * occurs in no part. The null sender is never bounced to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue_internal.h"
#include "semail/date.h"
#include "semail/dsn.h"

#define LINE_MAX_OCTETS 998
#define FOLD_AT         78
#define DSN_MAX         (8u << 20)
#define ERR_TEXT_SIZE   1024

/* ---- text helpers --------------------------------------------------------- */

/* S sanitized into DST (SIZE bytes): controls to ' ', non-ASCII to '?'. */
static void clean(char *dst, size_t size, const char *s)
{
    size_t i = 0;
    for (; s != NULL && s[i] && i + 1 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = (c < 0x20 || c == 0x7f) ? ' ' : c >= 0x80 ? '?' : (char)c;
    }
    dst[i] = '\0';
}

/*
 * Append NAME and VALUE as one logical line, folded before a space when a
 * line would pass 78 columns; a word that cannot fit in 998 octets is cut.
 * VALUE must be clean (no control bytes).
 */
static int fold(semail_buf *b, const char *name, const char *value)
{
    size_t col = strlen(name);
    const char *p = value;
    int err;

    if ((err = semail__buf_addstr(b, name)) < 0)
        return err;
    while (*p) {
        /* A word: leading spaces, then non-spaces. */
        size_t sp = strspn(p, " "), n = sp + strcspn(p + sp, " ");
        /* Fold only before a space that has a word after it (RFC 5322 3.2.2). */
        if (col + n > FOLD_AT && sp > 0 && p[sp] != '\0' && col > 1) {
            if ((err = semail__buf_addstr(b, "\r\n")) < 0)
                return err;
            col = 0;
        }
        size_t take = n;
        if (col + take > LINE_MAX_OCTETS)
            take = LINE_MAX_OCTETS - col;
        if ((err = semail__buf_add(b, p, take)) < 0)
            return err;
        col += take;
        p += n;
    }
    return semail__buf_addstr(b, "\r\n");
}

static int add_line(semail_buf *b, const char *name, const char *raw)
{
    char v[ERR_TEXT_SIZE * 2];
    clean(v, sizeof(v), raw);
    return fold(b, name, v);
}

static int fmt_date(char *out, size_t size, int64_t ms)
{
    return semail_date_rfc5322(out, size, (time_t)(ms / 1000));
}

/*
 * Addresses and host names go into fields as they are: printable ASCII only;
 * a space only where SPACE_OK (a quoted local part may hold one).
 */
static int check_token(const char *s, size_t max, int space_ok, const char *what)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > max)
        return semail__err(SEMAIL_EINVAL, "dsn: missing or overlong %s", what);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || (c == ' ' && !space_ok))
            return semail__err(SEMAIL_EINVAL, "dsn: %s holds a control byte or space", what);
    }
    return 0;
}

static int valid_status(const char *s)
{
    /* class "." subject "." detail: 1 digit, 1-3 digits, 1-3 digits (RFC 3463). */
    size_t parts[3] = {0, 0, 0}, k = 0;
    if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5'))
        return 0;
    for (; *s; s++) {
        if (*s == '.') {
            if (++k > 2)
                return 0;
        } else if (*s >= '0' && *s <= '9') {
            parts[k]++;
        } else {
            return 0;
        }
    }
    return k == 2 && parts[0] == 1 && parts[1] >= 1 && parts[1] <= 3 && parts[2] >= 1 &&
           parts[2] <= 3;
}

static const char *status_of(const semail_dsn_rcpt *r)
{
    if (valid_status(r->enhanced))
        return r->enhanced;
    return r->action == SEMAIL_DSN_DELAYED ? "4.0.0" : "5.0.0";
}

/* ---- the parts ------------------------------------------------------------ */

/* "CODE ENH TEXT" as the remote said it (or our own reason when no reply). */
static void diagnostic(char *out, size_t size, const semail_dsn_rcpt *r)
{
    char text[ERR_TEXT_SIZE];
    clean(text, sizeof(text), r->text);
    if (r->code > 0 && r->code < 1000 && valid_status(r->enhanced))
        (void)snprintf(out, size, "%d %s %s", r->code, r->enhanced, text);
    else if (r->code > 0 && r->code < 1000)
        (void)snprintf(out, size, "%d %s", r->code, text);
    else
        (void)snprintf(out, size, "%s", text[0] ? text : "no answer from the remote server");
}

static int text_part(semail_buf *b, const semail_dsn_report *rep, int delayed_only)
{
    char line[ERR_TEXT_SIZE * 2], diag[ERR_TEXT_SIZE + 32], host[300];
    int err;

    (void)snprintf(line, sizeof(line), "This is the mail system at host %s.", rep->hostname);
    if ((err = add_line(b, "", line)) < 0 || (err = semail__buf_addstr(b, "\r\n")) < 0)
        return err;
    err = semail__buf_addstr(
        b, delayed_only ? "Your message could not be delivered yet to the recipients below.\r\n"
                          "The mail system will keep trying; you need not send it again.\r\n\r\n"
                        : "I'm sorry to have to inform you that your message could not\r\n"
                          "be delivered to one or more recipients. The reasons are below.\r\n\r\n");
    for (size_t i = 0; err == 0 && i < rep->rcpt_count; i++) {
        const semail_dsn_rcpt *r = &rep->rcpts[i];
        diagnostic(diag, sizeof(diag), r);
        clean(host, sizeof(host), r->remote_host);
        if (host[0] && r->code > 0)
            (void)snprintf(line, sizeof(line), "<%s>: host %s said: %s", r->address, host, diag);
        else
            (void)snprintf(line, sizeof(line), "<%s>: %s", r->address, diag);
        if ((err = add_line(b, "", line)) == 0)
            err = semail__buf_addstr(b, "\r\n");
    }
    return err;
}

static int rcpt_fields(semail_buf *b, const semail_dsn_rcpt *r)
{
    char v[ERR_TEXT_SIZE + 64], diag[ERR_TEXT_SIZE + 32];
    int err;

    if ((err = semail__buf_addstr(b, "\r\n")) < 0 ||
        (err = add_line(b, "Final-Recipient: rfc822; ", r->address)) < 0 ||
        (err = add_line(b, "Action: ", r->action == SEMAIL_DSN_DELAYED ? "delayed" : "failed")) <
            0 ||
        (err = add_line(b, "Status: ", status_of(r))) < 0)
        return err;
    if (r->remote_host && r->remote_host[0] &&
        (err = add_line(b, "Remote-MTA: dns; ", r->remote_host)) < 0)
        return err;
    diagnostic(diag, sizeof(diag), r);
    (void)snprintf(v, sizeof(v), "%s%s", r->code > 0 ? "smtp; " : "X-SEMail; ", diag);
    if ((err = add_line(b, "Diagnostic-Code: ", v)) < 0)
        return err;
    if (r->last_attempt_ms > 0) {
        if ((err = fmt_date(v, sizeof(v), r->last_attempt_ms)) < 0 ||
            (err = add_line(b, "Last-Attempt-Date: ", v)) < 0)
            return err;
    }
    return 0;
}

static int status_part(semail_buf *b, const semail_dsn_report *rep)
{
    char date[64];
    int err;

    if ((err = add_line(b, "Reporting-MTA: dns; ", rep->hostname)) < 0)
        return err;
    if (rep->qid && rep->qid[0] && (err = add_line(b, "X-SEMail-Queue-ID: ", rep->qid)) < 0)
        return err;
    if (rep->arrival_ms > 0) {
        if ((err = fmt_date(date, sizeof(date), rep->arrival_ms)) < 0 ||
            (err = add_line(b, "Arrival-Date: ", date)) < 0)
            return err;
    }
    for (size_t i = 0; i < rep->rcpt_count; i++) {
        if ((err = rcpt_fields(b, &rep->rcpts[i])) < 0)
            return err;
    }
    return 0;
}

/*
 * The original header (up to the first empty line), CRLF line ends, each
 * line cut at 998 octets, at most SEMAIL_DSN_HEADERS_MAX octets in whole
 * lines. Sets *EIGHTBIT when a byte is outside ASCII.
 */
static int headers_part(semail_buf *b, const char *m, size_t len, int *eightbit)
{
    size_t i = 0, start = b->len;
    int err;

    *eightbit = 0;
    while (i < len) {
        size_t end = i, n;
        while (end < len && m[end] != '\n')
            end++;
        n = end - i;
        if (n > 0 && m[i + n - 1] == '\r')
            n--;
        if (n == 0)
            break; /* the empty line: end of the header */
        if (n > LINE_MAX_OCTETS)
            n = LINE_MAX_OCTETS;
        if (b->len - start + n + 2 > SEMAIL_DSN_HEADERS_MAX)
            break;
        for (size_t k = 0; k < n; k++) {
            char c = m[i + k];
            if (c == '\r' || c == '\0')
                c = ' '; /* a bare CR must not become a line end */
            if ((unsigned char)c >= 0x80)
                *eightbit = 1;
            if ((err = semail__buf_add(b, &c, 1)) < 0)
                return err;
        }
        if ((err = semail__buf_addstr(b, "\r\n")) < 0)
            return err;
        i = end + 1;
    }
    return 0;
}

/* ---- the message ---------------------------------------------------------- */

static int check_report(const semail_dsn_report *rep)
{
    int err;
    if (rep == NULL || rep->version != SEMAIL_DSN_REPORT_VERSION)
        return semail__err(SEMAIL_EINVAL, "dsn: missing report or unknown version");
    if (rep->sender == NULL || rep->sender[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "dsn: never bounce to the null sender");
    if ((err = check_token(rep->hostname, 255, 0, "hostname")) < 0 ||
        (err = check_token(rep->sender, SEMAIL_QUEUE_ADDR_MAX, 1, "sender")) < 0)
        return err;
    if (rep->rcpts == NULL || rep->rcpt_count == 0 || rep->rcpt_count > SEMAIL_QUEUE_RCPT_MAX)
        return semail__err(SEMAIL_EINVAL, "dsn: no recipient to report on");
    for (size_t i = 0; i < rep->rcpt_count; i++) {
        if ((err = check_token(rep->rcpts[i].address, SEMAIL_QUEUE_ADDR_MAX, 1, "recipient")) < 0)
            return err;
    }
    if (rep->message == NULL && rep->message_len > 0)
        return semail__err(SEMAIL_EINVAL, "dsn: NULL message");
    return 0;
}

static int pick_boundary(char *out, size_t size, const semail_buf *parts, size_t n)
{
    for (int tries = 0; tries < 8; tries++) {
        unsigned char r[12];
        int err, clash = 0;
        if ((err = semail__queue_random(r, sizeof(r))) < 0)
            return err;
        if ((err = semail__fmt(
                 out, size, "=_semail_%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1],
                 r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])) < 0)
            return err;
        for (size_t i = 0; i < n; i++)
            clash |= parts[i].len && memmem(parts[i].data, parts[i].len, out, strlen(out)) != NULL;
        if (!clash)
            return 0;
    }
    return semail__err(SEMAIL_ERROR, "dsn: no boundary found");
}

static int top_header(semail_buf *b, const semail_dsn_report *rep, const char *boundary,
                      int delayed_only, int eightbit)
{
    char date[64], id[96], v[SEMAIL_QUEUE_ADDR_MAX + 8];
    unsigned char r[8];
    int64_t now = rep->now_ms > 0 ? rep->now_ms : semail_queue_now_ms();
    int err;

    if ((err = fmt_date(date, sizeof(date), now)) < 0 ||
        (err = semail__queue_random(r, sizeof(r))) < 0 ||
        (err = semail__fmt(id, sizeof(id), "<%lld.%02x%02x%02x%02x%02x%02x%02x%02x@",
                           (long long)now, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])) < 0)
        return err;
    /* Both were checked by check_report(): no control byte, bounded length. */
    (void)snprintf(v, sizeof(v), "<%s>", rep->sender);
    if ((err = semail__buf_printf(b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
                                  rep->hostname)) < 0 ||
        (err = add_line(b, "To: ", v)) < 0 ||
        (err = add_line(b, "Subject: ",
                        delayed_only ? "Delayed Mail (still being retried)"
                                     : "Undelivered Mail Returned to Sender")) < 0 ||
        (err = add_line(b, "Date: ", date)) < 0 ||
        (err = semail__buf_printf(b, "Message-ID: %s%s>\r\n", id, rep->hostname)) < 0 ||
        (err = semail__buf_addstr(b, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n")) <
            0 ||
        (err = semail__buf_printf(b,
                                  "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                                  "\tboundary=\"%s\"\r\n"
                                  "Content-Transfer-Encoding: %s\r\n\r\n"
                                  "This is a MIME-encapsulated message.\r\n",
                                  boundary, eightbit ? "8bit" : "7bit")) < 0)
        return err;
    return 0;
}

static int assemble(semail_buf *out, const semail_dsn_report *rep, semail_buf parts[3],
                    int delayed_only, int eightbit)
{
    static const char *const heads[3] = {
        "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n",
        "Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n",
        /* One element, split only for the line length. */
        ("Content-Description: Undelivered Message Headers\r\n"
         "Content-Type: text/rfc822-headers\r\n"),
    };
    char boundary[64];
    size_t nparts = rep->message ? 3 : 2;
    int err;

    if ((err = pick_boundary(boundary, sizeof(boundary), parts, nparts)) < 0 ||
        (err = top_header(out, rep, boundary, delayed_only, eightbit)) < 0)
        return err;
    for (size_t i = 0; i < nparts; i++) {
        if ((err = semail__buf_printf(out, "\r\n--%s\r\n%s", boundary, heads[i])) < 0 ||
            (i == 2 && (err = semail__buf_printf(out, "Content-Transfer-Encoding: %s\r\n",
                                                 eightbit ? "8bit" : "7bit")) < 0) ||
            (err = semail__buf_addstr(out, "\r\n")) < 0 ||
            (err = semail__buf_add(out, parts[i].data ? parts[i].data : "", parts[i].len)) < 0)
            return err;
    }
    return semail__buf_printf(out, "\r\n--%s--\r\n", boundary);
}

int semail_dsn_report_init(semail_dsn_report *report)
{
    semail_dsn_report def = SEMAIL_DSN_REPORT_INIT;
    if (report == NULL)
        return semail__err(SEMAIL_EINVAL, "dsn: NULL report");
    *report = def;
    return 0;
}

int semail_dsn_build(char **out, size_t *out_len, const semail_dsn_report *report)
{
    semail_buf parts[3], msg;
    int err, eightbit = 0, delayed_only = 1;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "dsn: NULL output");
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if ((err = check_report(report)) < 0)
        return err;
    for (size_t i = 0; i < report->rcpt_count; i++)
        delayed_only &= report->rcpts[i].action == SEMAIL_DSN_DELAYED;
    for (int i = 0; i < 3; i++)
        semail__buf_init(&parts[i], DSN_MAX);
    semail__buf_init(&msg, DSN_MAX);
    if ((err = text_part(&parts[0], report, delayed_only)) < 0 ||
        (err = status_part(&parts[1], report)) < 0 ||
        (report->message &&
         (err = headers_part(&parts[2], report->message, report->message_len, &eightbit)) < 0) ||
        (err = assemble(&msg, report, parts, delayed_only, eightbit)) < 0)
        goto done;
    *out = msg.data;
    if (out_len)
        *out_len = msg.len;
    semail__buf_init(&msg, 0);
done:
    for (int i = 0; i < 3; i++)
        semail__buf_free(&parts[i]);
    semail__buf_free(&msg);
    return err;
}

int semail_dsn_build_for_entry(char **out, size_t *out_len, const semail_queue_entry *e,
                               const char *hostname, int64_t now_ms)
{
    const semail_queue_info *info = semail_queue_entry_info(e);
    semail_dsn_report rep = SEMAIL_DSN_REPORT_INIT;
    semail_dsn_rcpt *rcpts = NULL;
    size_t n = 0;
    int err;

    if (out == NULL || info == NULL)
        return semail__err(SEMAIL_EINVAL, "dsn: NULL argument");
    *out = NULL;
    if (info->sender[0] == '\0')
        return semail__err(SEMAIL_EINVAL, "dsn: never bounce to the null sender");
    if ((rcpts = calloc(info->rcpt_count, sizeof(*rcpts))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    for (size_t i = 0; i < info->rcpt_count; i++) {
        const semail_queue_rcpt *r = &info->rcpts[i];
        if (r->state != SEMAIL_QUEUE_FAILED || r->notified)
            continue;
        rcpts[n].address = r->address;
        rcpts[n].action = SEMAIL_DSN_FAILED;
        rcpts[n].code = r->result.code;
        rcpts[n].enhanced = r->result.enhanced;
        rcpts[n].text = r->result.text;
        rcpts[n].remote_host = r->result.remote_host;
        rcpts[n++].last_attempt_ms = r->result.time_ms;
    }
    if (n == 0) {
        free(rcpts);
        return semail__err(SEMAIL_ENOTFOUND, "dsn: no failed recipient to report");
    }
    rep.hostname = hostname;
    rep.sender = info->sender;
    rep.qid = info->qid;
    rep.arrival_ms = info->arrival_ms;
    rep.now_ms = now_ms;
    rep.rcpts = rcpts;
    rep.rcpt_count = n;
    rep.message = semail_queue_entry_data(e, &rep.message_len);
    err = semail_dsn_build(out, out_len, &rep);
    free(rcpts);
    return err;
}

void semail_dsn_free(char *dsn)
{
    free(dsn);
}
