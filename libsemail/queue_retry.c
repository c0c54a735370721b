/*
 * queue_retry.c - when to try a queued message again, and when to give up.
 *
 * Contract: pure functions of the policy, the message's times and a random
 * number (injectable), except semail_queue_expire() which records durably.
 * Delays come from `retry_schedule` (the last one repeats), are spread by
 * a jitter so that messages deferred together do not come back together,
 * and are cut at the expiry time (arrival + `max_queue_lifetime`).
 */
#include <string.h>

#include "queue_internal.h"

#define MIN_DELAY_MS     1000
#define MAX_DELAY_MS     ((uint64_t)10 * 366 * 24 * 3600 * 1000) /* ten years */
#define DEFAULT_LIFETIME ((uint64_t)5 * 24 * 3600 * 1000)

static const uint64_t default_schedule[] = {5 * 60000,  10 * 60000,  30 * 60000,
                                            60 * 60000, 120 * 60000, 240 * 60000};

int semail_queue_retry_init(semail_queue_retry *policy)
{
    semail_queue_retry def = SEMAIL_QUEUE_RETRY_INIT;
    if (policy == NULL)
        return semail__err(SEMAIL_EINVAL, "retry: NULL policy");
    *policy = def;
    return 0;
}

/* POLICY with its defaults filled in, or SEMAIL_EINVAL. */
static int resolve(semail_queue_retry *out, const semail_queue_retry *policy)
{
    if (policy == NULL) {
        semail_queue_retry_init(out);
    } else {
        if (policy->version != SEMAIL_QUEUE_RETRY_VERSION)
            return semail__err(SEMAIL_EINVAL, "retry: unknown policy version %u", policy->version);
        *out = *policy;
    }
    if (out->schedule_ms == NULL) {
        out->schedule_ms = default_schedule;
        out->schedule_len = SEMAIL_ARRAY_LEN(default_schedule);
    }
    if (out->schedule_len == 0)
        return semail__err(SEMAIL_EINVAL, "retry: empty schedule");
    for (size_t i = 0; i < out->schedule_len; i++) {
        if (out->schedule_ms[i] == 0)
            return semail__err(SEMAIL_EINVAL, "retry: a delay of 0 in the schedule");
    }
    if (out->jitter_percent > 50)
        return semail__err(SEMAIL_EINVAL, "retry: jitter over 50%%");
    if (out->max_lifetime_ms == 0)
        out->max_lifetime_ms = DEFAULT_LIFETIME;
    return 0;
}

static int64_t expiry_time(const semail_queue_retry *p, int64_t arrival_ms)
{
    uint64_t life = p->max_lifetime_ms > MAX_DELAY_MS ? MAX_DELAY_MS : p->max_lifetime_ms;
    if (arrival_ms > INT64_MAX - (int64_t)life)
        return INT64_MAX;
    return arrival_ms + (int64_t)life;
}

static int random32(uint32_t *out, const semail_queue_retry *p)
{
    if (p->random) {
        *out = p->random(p->random_payload);
        return 0;
    }
    return semail__queue_random(out, sizeof(*out));
}

int semail_queue_retry_next(int64_t *out, const semail_queue_retry *policy, int64_t arrival_ms,
                            unsigned int attempts, int64_t now_ms)
{
    semail_queue_retry p;
    uint64_t delay, span;
    uint32_t r = 0;
    int64_t next, expiry;
    int err;

    if (out == NULL)
        return semail__err(SEMAIL_EINVAL, "retry: NULL output");
    if ((err = resolve(&p, policy)) < 0)
        return err;
    if (attempts == 0)
        attempts = 1;
    delay = p.schedule_ms[attempts < p.schedule_len ? attempts - 1 : p.schedule_len - 1];
    if (delay > MAX_DELAY_MS)
        delay = MAX_DELAY_MS;
    span = delay * p.jitter_percent / 100;
    if (span > 0) {
        if ((err = random32(&r, &p)) < 0)
            return err;
        /* Scale r to [0, 2 * span] without the bias of a modulo. */
        delay = delay - span + (uint64_t)(((unsigned __int128)r * (2 * span + 1)) >> 32);
    }
    if (delay < MIN_DELAY_MS)
        delay = MIN_DELAY_MS;
    next = now_ms > INT64_MAX - (int64_t)delay ? INT64_MAX : now_ms + (int64_t)delay;
    expiry = expiry_time(&p, arrival_ms);
    if (next > expiry)
        next = expiry > now_ms ? expiry : now_ms;
    *out = next;
    return 0;
}

int semail_queue_retry_expired(const semail_queue_retry *policy, int64_t arrival_ms, int64_t now_ms)
{
    semail_queue_retry p;
    if (resolve(&p, policy) < 0)
        return 0;
    return now_ms >= expiry_time(&p, arrival_ms);
}

int semail_queue_expire(semail_queue_entry *e, const semail_queue_retry *policy, int64_t now_ms)
{
    semail_queue_retry p;
    const semail_queue_info *info = semail_queue_entry_info(e);
    int err;

    if (info == NULL)
        return semail__err(SEMAIL_EINVAL, "queue: NULL entry");
    if ((err = resolve(&p, policy)) < 0)
        return err;
    if (now_ms < expiry_time(&p, info->arrival_ms))
        return 0;
    return semail__queue_fail_pending(e, "4.4.7", "delivery time expired");
}
