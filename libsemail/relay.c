/*
 * relay.c - one delivery attempt of one locked queue entry
 * (include/semail/relay.h): recipients grouped by domain, MX hosts and
 * their addresses tried in order, each result recorded, then expiry, the
 * bounce, and the next attempt or the removal.
 *
 * Contract: every recipient that gets a definitive answer (2xx, 5xx, a
 * permanent DNS verdict, a loop) has it on disk before the next server or
 * domain is tried, or when the attempt ends with something still queued;
 * when it ends with the entry removed, the removal is the durable fact and
 * no state is written (docs/queue.md). A recipient that got none stays
 * pending with the last transient result. A bounce is marked notified
 * only after its hand-over succeeded, and an entry is removed only when
 * nothing is pending and nothing is left to report, so a crash at any
 * point repeats work, never loses it. The worker pool is in relay_pool.c.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "queue_internal.h"
#include "relay_internal.h"
#include "semail/client.h"
#include "semail/dsn.h"
#include "semail/relay.h"

/* "host[address]:port", as in Postfix's relay= field. */
#define RELAY_TEXT_MAX (SEMAIL_QUEUE_HOST_SIZE + INET6_ADDRSTRLEN + 16)

/* One attempt on one entry. */
typedef struct attempt {
    const semail_relay_options *opts;
    semail_queue *q;
    semail_queue_entry *e;
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int64_t arrival_ms;
    size_t n;                  /* recipients of the entry */
    unsigned char *grouped;    /* per recipient: taken into a domain group */
    size_t *group;             /* indexes of the current domain's recipients */
    size_t *undecided;         /* indexes without a definitive answer yet */
    const char **addrs;        /* their addresses, for the client */
    semail_queue_result *last; /* per recipient: the last transient result */
    char relay[RELAY_TEXT_MAX];
    char domain[SEMAIL_QUEUE_ADDR_MAX + 1];
} attempt;

int semail_relay_options_init(semail_relay_options *opts)
{
    if (opts == NULL)
        return semail__err(SEMAIL_EINVAL, "NULL options");
    memset(opts, 0, sizeof(*opts));
    opts->version = SEMAIL_RELAY_OPTIONS_VERSION;
    return 0;
}

void semail__relay_log(const semail_relay_options *opts, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (opts->log == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    opts->log(line, opts->log_payload);
}

static int cancelled(const attempt *a)
{
    return a->opts->cancel != NULL && a->opts->cancel(a->opts->cancel_payload);
}

static double delay_s(const attempt *a)
{
    int64_t d = semail_queue_now_ms() - a->arrival_ms;
    return d > 0 ? (double)d / 1000.0 : 0.0;
}

static const char *rcpt_address(const attempt *a, size_t i)
{
    return semail_queue_entry_info(a->e)->rcpts[i].address;
}

/* The domain of ADDRESS (after the last '@'), or "" without one. */
static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

/* One log line per recipient and attempt. RELAY NULL: "none". */
static void log_rcpt(const attempt *a, size_t i, const char *relay, const char *status,
                     const semail_queue_result *r)
{
    if (r->code != 0)
        semail__relay_log(a->opts, "%s: to=<%s>, relay=%s, delay=%.2f, status=%s (%d %s %s)",
                          a->qid, rcpt_address(a, i), relay ? relay : "none", delay_s(a), status,
                          r->code, r->enhanced, r->text);
    else
        semail__relay_log(a->opts, "%s: to=<%s>, relay=%s, delay=%.2f, status=%s (%s)", a->qid,
                          rcpt_address(a, i), relay ? relay : "none", delay_s(a), status, r->text);
}

static void fill_result(semail_queue_result *r, int code, const char *enhanced, const char *host,
                        const char *text)
{
    memset(r, 0, sizeof(*r));
    r->code = code;
    snprintf(r->enhanced, sizeof(r->enhanced), "%s", enhanced ? enhanced : "");
    snprintf(r->remote_host, sizeof(r->remote_host), "%s", host ? host : "");
    snprintf(r->text, sizeof(r->text), "%s", text ? text : "");
}

/* Record the outcome of recipient I and log it: in memory, written before
 * the next server or domain, by the schedule, or never (removed). */
static int decide(attempt *a, size_t i, semail_queue_rcpt_state state, const char *relay,
                  const semail_queue_result *r)
{
    static const char *const status[] = {"deferred", "sent", "bounced"};
    int err;

    if ((err = semail__queue_record_lazy(a->e, i, state, r)) < 0) {
        semail__relay_log(a->opts, "%s: to=<%s>: cannot record the result: %s", a->qid,
                          rcpt_address(a, i), semail_error_last());
        return err;
    }
    log_rcpt(a, i, relay, status[state], r);
    return 0;
}

/* The same verdict for every recipient of the group (DNS, loops, syntax). */
static int decide_group(attempt *a, size_t k, semail_queue_rcpt_state state, int code,
                        const char *enhanced, const char *text)
{
    semail_queue_result r;
    size_t j;
    int err;

    fill_result(&r, code, enhanced, NULL, text);
    for (j = 0; j < k; j++)
        if ((err = decide(a, a->group[j], state, NULL, &r)) < 0)
            return err;
    return 0;
}

static void relay_text(attempt *a, const char *host, const struct sockaddr_storage *ss,
                       unsigned int port)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, ip, sizeof(ip));
    snprintf(a->relay, sizeof(a->relay), "%s[%s]:%u", host, ip, port);
}

static void set_port(struct sockaddr_storage *ss, unsigned int port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
}

static void client_options(const attempt *a, semail_client_options *co, const char *host)
{
    unsigned int t = a->opts->command_timeout_ms;

    semail_client_options_init(co);
    co->helo_name = a->opts->hostname;
    co->remote_name = host;
    co->connect_timeout_ms = a->opts->connect_timeout_ms;
    co->greeting_timeout_ms = t;
    co->command_timeout_ms = t;
    co->data_init_timeout_ms = t;
    co->data_timeout_ms = t;
    co->quit_timeout_ms = t;
    co->data_done_timeout_ms = t > UINT_MAX / 2 ? UINT_MAX : 2 * t;
}

/* Apply one server's answers; the undecided list shrinks to the deferred. */
static int apply_result(attempt *a, const semail_client_result *res, size_t *nund)
{
    const char *host = semail_client_result_remote_name(res);
    size_t j, keep = 0;
    int err;

    for (j = 0; j < *nund; j++) {
        const semail_client_status *st = semail_client_result_rcpt(res, j);
        size_t i = a->undecided[j];
        semail_queue_result r;

        if (st == NULL)
            st = semail_client_result_session(res);
        fill_result(&r, st->code, st->enhanced, host, st->text);
        if (st->action == SEMAIL_CLIENT_DEFERRED) {
            a->last[i] = r;
            a->undecided[keep++] = i;
            continue;
        }
        err = decide(a, i,
                     st->action == SEMAIL_CLIENT_DELIVERED ? SEMAIL_QUEUE_DELIVERED
                                                           : SEMAIL_QUEUE_FAILED,
                     a->relay, &r);
        if (err < 0)
            return err;
    }
    *nund = keep;
    return 0;
}

/* The client's "connect to ADDR: REASON" without what our log line says already. */
static const char *connect_reason(const char *text)
{
    const char *colon;

    if (strncmp(text, "connect to ", 11) == 0 && (colon = strstr(text, ": ")) != NULL)
        return colon + 2;
    return text;
}

/* Try one address with the undecided recipients. */
static int try_address(attempt *a, const struct sockaddr_storage *ss, socklen_t sl,
                       const char *host, size_t *nund)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    semail_client_options co;
    semail_client_result *res = NULL;
    const semail_client_status *session;
    const char *data;
    size_t len, j;
    int err;

    for (j = 0; j < *nund; j++)
        a->addrs[j] = info->rcpts[a->undecided[j]].address;
    data = semail_queue_entry_data(a->e, &len);
    client_options(a, &co, host);
    if ((err = semail_client_deliver(&res, &co, (const struct sockaddr *)ss, sl, info->sender,
                                     a->addrs, *nund, data, len)) < 0)
        return err;
    session = semail_client_result_session(res);
    if (session->code == 0 && session->stage == SEMAIL_CLIENT_STAGE_CONNECT)
        semail__relay_log(a->opts, "%s: connect to %s: %s", a->qid, a->relay,
                          connect_reason(session->text));
    err = apply_result(a, res, nund);
    semail_client_result_free(res);
    return err;
}

/* 1 when SS is one of our own listeners (a loop), else 0. */
static int is_ours(const attempt *a, const struct sockaddr_storage *ss, socklen_t sl)
{
    int r = semail_mx_is_local_address((const struct sockaddr *)ss, sl, a->opts->listen,
                                       a->opts->listen_count);
    if (r < 0) {
        semail__relay_log(a->opts, "%s: loop check of %s failed: %s", a->qid, a->relay,
                          semail_error_last());
        return 0;
    }
    return r;
}

/* Every address of every host, until each recipient is decided. *TRIED
 * tells whether any address was tried (not skipped as ours). */
static int try_hosts(attempt *a, const semail_mx_result *mx, size_t *nund, int *tried)
{
    unsigned int port = a->opts->remote_port ? a->opts->remote_port : 25;
    size_t h, j;
    int err;

    for (h = 0; h < semail_mx_result_host_count(mx) && *nund > 0; h++) {
        const char *host = semail_mx_result_host(mx, h);
        for (j = 0; j < semail_mx_result_address_count(mx, h) && *nund > 0; j++) {
            struct sockaddr_storage ss;
            socklen_t sl = 0;

            if (cancelled(a))
                return 0;
            if (semail_mx_result_address(&ss, &sl, mx, h, j) < 0)
                continue;
            set_port(&ss, port);
            relay_text(a, host, &ss, port);
            if (is_ours(a, &ss, sl))
                continue;
            /* What the last server decided is on disk before the next one. */
            if (*tried && (err = semail__queue_save(a->e)) < 0)
                return err;
            *tried = 1;
            if ((err = try_address(a, &ss, sl, host, nund)) < 0)
                return err;
        }
    }
    return 0;
}

static int deliver_domain(attempt *a, size_t k)
{
    semail_mx_result *mx = NULL;
    size_t nund = k, j;
    int tried = 0, err;
    char text[SEMAIL_QUEUE_TEXT_SIZE];

    if (a->domain[0] == '\0')
        return decide_group(a, k, SEMAIL_QUEUE_FAILED, 0, "5.1.3", "bad recipient address syntax");
    if ((err = semail_mx_resolve(&mx, a->opts->resolver, a->domain)) < 0)
        return err;
    if (semail_mx_result_status(mx) != SEMAIL_MX_OK) {
        err =
            decide_group(a, k,
                         semail_mx_result_status(mx) == SEMAIL_MX_PERMANENT ? SEMAIL_QUEUE_FAILED
                                                                            : SEMAIL_QUEUE_PENDING,
                         0, semail_mx_result_enhanced(mx), semail_mx_result_text(mx));
        goto done;
    }
    memcpy(a->undecided, a->group, k * sizeof(*a->group));
    for (j = 0; j < k; j++)
        fill_result(&a->last[a->group[j]], 0, "4.4.1", NULL, "no server was tried");
    if ((err = try_hosts(a, mx, &nund, &tried)) < 0)
        goto done;
    if (!tried && !cancelled(a)) {
        snprintf(text, sizeof(text), "mail for %.255s loops back to myself", a->domain);
        err = decide_group(a, k, SEMAIL_QUEUE_FAILED, 0, "5.4.6", text);
        goto done;
    }
    for (j = 0; j < nund && tried; j++)
        if ((err = decide(a, a->undecided[j], SEMAIL_QUEUE_PENDING, a->relay,
                          &a->last[a->undecided[j]])) < 0)
            goto done;
done:
    semail_mx_result_free(mx);
    return err;
}

/* Collect into a->group the pending recipients of the domain of recipient
 * FIRST; returns their number. */
static size_t take_group(attempt *a, size_t first)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    const char *dom = domain_of(info->rcpts[first].address);
    size_t i, k = 0;

    snprintf(a->domain, sizeof(a->domain), "%s", dom);
    for (i = first; i < a->n; i++) {
        if (a->grouped[i] || info->rcpts[i].state != SEMAIL_QUEUE_PENDING ||
            semail__strcasecmp(domain_of(info->rcpts[i].address), dom) != 0)
            continue;
        a->grouped[i] = 1;
        a->group[k++] = i;
    }
    return k;
}

static int deliver_all(attempt *a)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    size_t i;
    int err, started = 0;

    for (i = 0; i < a->n; i++) {
        if (a->grouped[i] || info->rcpts[i].state != SEMAIL_QUEUE_PENDING)
            continue;
        if (cancelled(a))
            return 0;
        /* What a domain got is on disk before the next one is tried: a
         * crash then repeats at most the last domain's deliveries. */
        if (started && (err = semail__queue_save(a->e)) < 0)
            return err;
        started = 1;
        if ((err = deliver_domain(a, take_group(a, i))) < 0)
            return err;
    }
    return 0;
}

/* Fail what has expired; log each recipient failed that way. */
static int expire(attempt *a, int64_t now)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    size_t i;
    int n;

    for (i = 0; i < a->n; i++)
        a->grouped[i] = info->rcpts[i].state == SEMAIL_QUEUE_PENDING;
    if ((n = semail_queue_expire(a->e, a->opts->retry, now)) <= 0)
        return n;
    for (i = 0; i < a->n; i++)
        if (a->grouped[i] && info->rcpts[i].state == SEMAIL_QUEUE_FAILED)
            log_rcpt(a, i, NULL, "bounced", &info->rcpts[i].result);
    return n;
}

static int default_bounce(attempt *a, const char *rcpt, const char *dsn, size_t len, char *note,
                          size_t note_size)
{
    char qid[SEMAIL_QUEUE_QID_SIZE];
    int err;

    if ((err = semail_queue_submit(qid, a->q, "", &rcpt, 1, dsn, len)) < 0)
        return err;
    snprintf(note, note_size, "queued as %s", qid);
    return 0;
}

/* Build and hand over the bounce of the failures not reported yet.
 * Returns 1 when one is still to be handed over, 0 otherwise, or < 0. */
static int bounce(attempt *a, int64_t now)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    char *dsn = NULL, note[256] = "";
    size_t len = 0;
    int err;

    if (info->sender[0] == '\0')
        return 0; /* never bounce a bounce */
    err = semail_dsn_build_for_entry(&dsn, &len, a->e, a->opts->hostname, now);
    if (err == SEMAIL_ENOTFOUND)
        return 0;
    if (err < 0) {
        semail__relay_log(a->opts, "%s: cannot build the bounce: %s", a->qid, semail_error_last());
        return 1;
    }
    if (a->opts->bounce)
        err = a->opts->bounce(info->sender, dsn, len, a->qid, note, sizeof(note),
                              a->opts->bounce_payload);
    else
        err = default_bounce(a, info->sender, dsn, len, note, sizeof(note));
    semail_dsn_free(dsn);
    if (err < 0) {
        semail__relay_log(a->opts, "%s: sender non-delivery notification to <%s> not sent: %s",
                          a->qid, info->sender, semail_error_last());
        return 1;
    }
    semail__relay_log(a->opts, "%s: sender non-delivery notification to <%s>: %s", a->qid,
                      info->sender, note[0] ? note : "handed over");
    return (err = semail__queue_mark_notified_lazy(a->e)) < 0 ? err : 0;
}

static int any_pending(const attempt *a)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    size_t i;

    for (i = 0; i < a->n; i++)
        if (info->rcpts[i].state == SEMAIL_QUEUE_PENDING)
            return 1;
    return 0;
}

/* Schedule the next attempt (writing the results), or remove the entry
 * when all is done: the removal, not a state write, is then the durable fact. */
static int finish(attempt *a, int bounce_left, int64_t now)
{
    const semail_queue_info *info = semail_queue_entry_info(a->e);
    int64_t next;
    int err;

    if (!bounce_left && !any_pending(a)) {
        if ((err = semail__queue_remove_lazy(a->e)) < 0)
            return err;
        semail__relay_log(a->opts, "%s: removed", a->qid);
        return 1;
    }
    if ((err = semail_queue_retry_next(&next, a->opts->retry, a->arrival_ms, info->attempts + 1,
                                       now)) < 0)
        return err;
    return semail_queue_schedule(a->e, next);
}

static int attempt_alloc(attempt *a)
{
    size_t n = a->n;

    a->grouped = calloc(n, 1);
    a->group = calloc(n, sizeof(*a->group));
    a->undecided = calloc(n, sizeof(*a->undecided));
    a->addrs = calloc(n, sizeof(*a->addrs));
    a->last = calloc(n, sizeof(*a->last));
    if (!a->grouped || !a->group || !a->undecided || !a->addrs || !a->last)
        return semail__err(SEMAIL_ENOMEM, "relay: out of memory");
    return 0;
}

static void attempt_free(attempt *a)
{
    free(a->grouped);
    free(a->group);
    free(a->undecided);
    free(a->addrs);
    free(a->last);
}

int semail_relay_deliver(const semail_relay_options *opts, semail_queue *q, semail_queue_entry *e)
{
    const semail_queue_info *info;
    attempt a;
    int64_t now;
    int err, left;

    if (opts == NULL || opts->version != SEMAIL_RELAY_OPTIONS_VERSION || opts->hostname == NULL ||
        opts->resolver == NULL || q == NULL || e == NULL)
        return semail__err(SEMAIL_EINVAL, "relay: missing argument or unknown options version");
    memset(&a, 0, sizeof(a));
    info = semail_queue_entry_info(e);
    a.opts = opts;
    a.q = q;
    a.e = e;
    a.n = info->rcpt_count;
    a.arrival_ms = info->arrival_ms;
    snprintf(a.qid, sizeof(a.qid), "%s", info->qid);
    if ((err = attempt_alloc(&a)) < 0)
        goto done;
    if ((err = deliver_all(&a)) < 0)
        goto done;
    now = semail_queue_now_ms();
    if ((err = expire(&a, now)) < 0)
        goto done;
    if ((left = bounce(&a, now)) < 0) {
        err = left;
        goto done;
    }
    err = finish(&a, left, now);
done:
    if (err < 0)
        semail__queue_save(e); /* best effort: keep what was delivered */
    attempt_free(&a);
    return err;
}
