/*
 * date.c - RFC 5322 dates for the headers SEMail writes (Received:, Date:,
 * Arrival-Date:). Locale-free on purpose: strftime's %a and %b follow the
 * locale, and a header must say "Sun", "Nov".
 */
#include "semail/date.h"

#include "internal.h"

int semail_date_rfc5322(char *out, size_t size, time_t t)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;

    if (out == NULL || size == 0)
        return semail__err(SEMAIL_EINVAL, "date: no buffer");
    out[0] = '\0';
    if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
        tm.tm_mon > 11)
        return semail__err(SEMAIL_EINVAL, "date: time out of range");
    return semail__fmt(out, size, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
                       tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                       tm.tm_sec);
}
