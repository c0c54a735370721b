/*
 * relay_pool.c - N threads delivering the due entries of one queue
 * (include/semail/relay.h).
 *
 * Contract: each thread takes the entry due longest (semail_queue_lock_due()
 * gives different threads different entries), delivers it, releases it,
 * and otherwise sleeps until the next due time, a wake-up or the next poll
 * (at most POLL_MS, so that a flush by another process is noticed). A stop
 * lets the attempts in progress end at their next server (the cancel
 * callback) and joins the threads within the grace time. All state hangs
 * off the pool; the mutex guards the wake-up counter and the thread count.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay_internal.h"

#define POLL_MS        1000
#define ERROR_PAUSE_MS 1000
#define WORKERS_MAX    256
/* Threads mostly wait for the network and for fsync: on a 2-CPU machine 16
 * delivered ~1.5x as fast as 4 (docs/benchmarks.md, outbound); 32 did no better. */
#define WORKERS_DEFAULT 16

struct semail_relay_pool {
    semail_relay_options opts; /* the caller's, with our cancel callback */
    semail_queue *q;
    pthread_t *threads;
    unsigned int nthreads;
    pthread_mutex_t mu;
    pthread_cond_t wake;     /* wake-ups and stop */
    pthread_cond_t finished; /* a thread ended */
    unsigned long generation;
    unsigned int running;
    atomic_int stopping;
};

static int pool_cancelled(void *payload)
{
    semail_relay_pool *p = payload;
    return atomic_load(&p->stopping);
}

static struct timespec deadline_in(unsigned int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Sleep up to MS unless a wake-up came after SEEN or the pool stops. */
static void pool_wait(semail_relay_pool *p, unsigned long seen, unsigned int ms)
{
    struct timespec until = deadline_in(ms);

    pthread_mutex_lock(&p->mu);
    while (p->generation == seen && !atomic_load(&p->stopping))
        if (pthread_cond_timedwait(&p->wake, &p->mu, &until) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&p->mu);
}

static unsigned long generation(semail_relay_pool *p)
{
    unsigned long g;

    pthread_mutex_lock(&p->mu);
    g = p->generation;
    pthread_mutex_unlock(&p->mu);
    return g;
}

/* One round: deliver one due entry, or say how long to sleep (ms). */
static unsigned int pool_round(semail_relay_pool *p)
{
    semail_queue_entry *e = NULL;
    int64_t now = semail_queue_now_ms(), next = INT64_MAX;
    int err;

    err = semail_queue_lock_due(&e, p->q, now, &next);
    if (err == SEMAIL_ENOTFOUND)
        return next - now >= POLL_MS ? POLL_MS : next > now ? (unsigned int)(next - now) : 1;
    if (err < 0) {
        semail__relay_log(&p->opts, "queue: %s", semail_error_last());
        return ERROR_PAUSE_MS;
    }
    err = semail_relay_deliver(&p->opts, p->q, e);
    semail_queue_release(e);
    if (err < 0) {
        /* The entry keeps its recorded due time: pause rather than spin on it. */
        semail__relay_log(&p->opts, "delivery attempt failed: %s", semail_error_last());
        return ERROR_PAUSE_MS;
    }
    return 0;
}

static void *pool_main(void *arg)
{
    semail_relay_pool *p = arg;

    while (!atomic_load(&p->stopping)) {
        unsigned long seen = generation(p);
        unsigned int sleep_ms = pool_round(p);
        if (sleep_ms > 0)
            pool_wait(p, seen, sleep_ms);
    }
    pthread_mutex_lock(&p->mu);
    p->running--;
    pthread_cond_broadcast(&p->finished);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int pool_init_sync(semail_relay_pool *p)
{
    pthread_condattr_t ca;
    int ok;

    if (pthread_condattr_init(&ca) != 0)
        return -1;
    ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&p->wake, &ca) == 0;
    if (ok && pthread_cond_init(&p->finished, &ca) != 0) {
        pthread_cond_destroy(&p->wake);
        ok = 0;
    }
    pthread_condattr_destroy(&ca);
    if (ok && pthread_mutex_init(&p->mu, NULL) != 0) {
        pthread_cond_destroy(&p->wake);
        pthread_cond_destroy(&p->finished);
        ok = 0;
    }
    return ok ? 0 : -1;
}

int semail_relay_pool_start(semail_relay_pool **out, const semail_relay_options *opts,
                            semail_queue *q, unsigned int workers)
{
    semail_relay_pool *p;
    unsigned int i;

    if (out)
        *out = NULL;
    if (out == NULL || opts == NULL || opts->version != SEMAIL_RELAY_OPTIONS_VERSION ||
        opts->hostname == NULL || opts->resolver == NULL || q == NULL || workers > WORKERS_MAX)
        return semail__err(SEMAIL_EINVAL, "relay pool: bad arguments");
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "relay pool: out of memory");
    p->opts = *opts;
    p->opts.cancel = pool_cancelled;
    p->opts.cancel_payload = p;
    p->q = q;
    p->nthreads = workers ? workers : WORKERS_DEFAULT;
    atomic_init(&p->stopping, 0);
    if ((p->threads = calloc(p->nthreads, sizeof(*p->threads))) == NULL) {
        free(p);
        return semail__err(SEMAIL_ENOMEM, "relay pool: out of memory");
    }
    if (pool_init_sync(p) < 0) {
        free(p->threads);
        free(p);
        return semail__err(SEMAIL_ERROR, "relay pool: cannot create its locks");
    }
    p->running = p->nthreads;
    for (i = 0; i < p->nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0) {
            p->running -= p->nthreads - i;
            p->nthreads = i;
            semail_relay_pool_stop(p, UINT32_MAX);
            semail_relay_pool_free(p);
            return semail__err(SEMAIL_ERROR, "relay pool: cannot start a delivery thread");
        }
    }
    *out = p;
    return 0;
}

void semail_relay_pool_wakeup(semail_relay_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
}

int semail_relay_pool_stop(semail_relay_pool *p, unsigned int grace_ms)
{
    struct timespec until = deadline_in(grace_ms);
    unsigned int i, left;

    if (p == NULL)
        return semail__err(SEMAIL_EINVAL, "relay pool: NULL");
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, 1);
    pthread_cond_broadcast(&p->wake);
    while (p->running > 0)
        if (pthread_cond_timedwait(&p->finished, &p->mu, &until) == ETIMEDOUT)
            break;
    left = p->running;
    pthread_mutex_unlock(&p->mu);
    if (left > 0)
        return semail__err(SEMAIL_ETEMP, "relay pool: %u delivery thread(s) still busy", left);
    for (i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->nthreads = 0;
    return 0;
}

void semail_relay_pool_free(semail_relay_pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->finished);
    free(p->threads);
    free(p);
}
