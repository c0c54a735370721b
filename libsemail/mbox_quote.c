/*
 * mbox_quote.c - the mboxrd writer: the From_ line and the quoted message.
 *
 * Contract: CRLF becomes LF, a bare CR is kept; a line start is the start
 * of a part and the byte after every LF; a line matching ^>*From  gets one
 * more '>' (added just before "From ", which is the same as at the start);
 * a part that does not end in LF gets one; a message ends with an empty
 * line. Streaming: at most 4 bytes ("From") and one CR are held back
 * between calls, so any split of the input gives the same output, and
 * runs of ordinary bytes go to the sink in one call.
 */
#include <string.h>
#include <time.h>

#include "mbox_internal.h"

static const char from_[] = "From ";

static int emit(semail__mbox_quote *q, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    q->last = (unsigned char)p[n - 1];
    return q->sink(q->payload, p, n);
}

void semail__mbox_quote_init(semail__mbox_quote *q, semail__mbox_sink sink, void *payload)
{
    q->bol = true;
    q->cr = false;
    q->fmatch = 0;
    q->last = '\n';
    q->sink = sink;
    q->payload = payload;
}

/* At a line start: pass '>' through, hold back a prefix of "From ". */
static int feed_bol(semail__mbox_quote *q, char c, bool *consumed)
{
    int err;

    *consumed = true;
    if (q->fmatch == 0 && c == '>')
        return emit(q, ">", 1);
    if (c == from_[q->fmatch]) {
        if (++q->fmatch < 5)
            return 0;
        q->fmatch = 0;
        q->bol = false;
        return emit(q, ">From ", 6);
    }
    /* Not a From_ line: give back what was held, then C as an ordinary byte. */
    *consumed = false;
    err = emit(q, from_, (size_t)q->fmatch);
    q->fmatch = 0;
    q->bol = false;
    return err;
}

/* Mid-line: one run up to (not including) the next CR or LF. */
static size_t run_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] != '\r' && p[i] != '\n')
        i++;
    return i;
}

int semail__mbox_quote_feed(semail__mbox_quote *q, const char *p, size_t n)
{
    size_t i = 0;
    int err = 0;

    while (i < n && err == 0) {
        if (q->cr) {
            q->cr = false;
            if (p[i] == '\n') {
                i++;
                q->bol = true;
                err = emit(q, "\n", 1);
                continue;
            }
            /* A bare CR: kept, and not a line end. */
            if ((err = emit(q, "\r", 1)) < 0)
                break;
        }
        if (q->bol) {
            bool consumed;
            err = feed_bol(q, p[i], &consumed);
            i += consumed;
            continue;
        }
        size_t r = run_len(p + i, n - i);
        if ((err = emit(q, p + i, r)) < 0)
            break;
        i += r;
        if (i < n) {
            if (p[i] == '\r') {
                q->cr = true;
            } else {
                q->bol = true;
                err = emit(q, "\n", 1);
            }
            i++;
        }
    }
    return err;
}

int semail__mbox_quote_end_part(semail__mbox_quote *q)
{
    int err = 0;

    if (q->cr) {
        q->cr = false;
        err = emit(q, "\r", 1);
    }
    if (err == 0 && q->fmatch > 0)
        err = emit(q, from_, (size_t)q->fmatch);
    q->fmatch = 0;
    if (err == 0 && q->last != '\n')
        err = emit(q, "\n", 1);
    q->bol = true;
    return err;
}

int semail__mbox_quote_finish(semail__mbox_quote *q)
{
    int err;
    if ((err = semail__mbox_quote_end_part(q)) < 0)
        return err;
    return emit(q, "\n", 1);
}

/* asctime() without its locale, its static buffer and its local time. */
static int format_date(char *out, size_t size, time_t date)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    if (gmtime_r(&date, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11)
        return semail__err(SEMAIL_EINVAL, "date out of range");
    return semail__fmt(out, size, "%s %s %2d %02d:%02d:%02d %d", days[tm.tm_wday],
                       months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                       tm.tm_year + 1900);
}

/* The sender with every byte that would split the line or end it made '_'. */
static int emit_sender(semail__mbox_sink sink, void *payload, const char *s)
{
    char chunk[256];
    size_t n = 0;
    int err;

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        chunk[n++] = (c <= 0x20 || c == 0x7f) ? '_' : (char)c;
        if (n == sizeof(chunk)) {
            if ((err = sink(payload, chunk, n)) < 0)
                return err;
            n = 0;
        }
    }
    return n ? sink(payload, chunk, n) : 0;
}

int semail__mbox_from_line(semail__mbox_sink sink, void *payload, const char *sender, time_t date)
{
    char line[64];
    int err;

    if (date == 0)
        date = time(NULL);
    if (sender == NULL || sender[0] == '\0')
        sender = "MAILER-DAEMON";
    if ((err = sink(payload, "From ", 5)) < 0 || (err = emit_sender(sink, payload, sender)) < 0)
        return err;
    line[0] = ' ';
    if ((err = format_date(line + 1, sizeof(line) - 2, date)) < 0)
        return err;
    size_t len = strlen(line);
    line[len++] = '\n';
    return sink(payload, line, len);
}
