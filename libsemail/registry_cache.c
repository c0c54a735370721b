/*
 * registry_cache.c - the servers' shared view of the registry: the newest
 * snapshot, reloaded as soon as the file changes, with a reference count
 * so that a snapshot is freed only when its last reader gives it back.
 *
 * Contract: every acquire sees a registry at least as new as the file was
 * when acquire began (SPEC: a new box receives mail at once), at the cost
 * of one stat() made outside the mutex. One thread reloads at a time;
 * the others keep reading the snapshot they have. A registry that fails to
 * load leaves the previous snapshot in place; a file whose content is bad
 * is not parsed again until it changes (so a broken file costs one error,
 * not one parse per RCPT).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "semail/registry.h"

struct retired {
    semail_registry *reg;
    unsigned long refs;
};

struct semail_registry_cache {
    pthread_mutex_t mu;     /* guards everything below except path/state_dir */
    pthread_mutex_t reload; /* held by the one thread that reloads */
    char *state_dir;
    char *path;
    semail_registry *current;
    unsigned long current_refs;
    struct retired *retired; /* older snapshots still referenced */
    size_t nretired, capretired;
    int failed; /* the file with this identity failed to parse */
    struct stat failed_st;
};

int semail_registry_cache_new(semail_registry_cache **out, const char *state_dir)
{
    semail_registry_cache *c;
    semail_buf b;
    int err;

    *out = NULL;
    if ((c = calloc(1, sizeof(*c))) == NULL)
        return semail__err(SEMAIL_ENOMEM, "out of memory");
    semail__buf_init(&b, 4096);
    c->state_dir = semail__strdup(state_dir);
    if (c->state_dir == NULL)
        err = SEMAIL_ENOMEM;
    else
        err = semail__buf_printf(&b, "%s/registry", state_dir);
    if (err < 0) {
        free(c->state_dir);
        free(c);
        return err;
    }
    c->path = b.data;
    if ((err = semail_registry_load(&c->current, state_dir)) < 0) {
        free(c->path);
        free(c->state_dir);
        free(c);
        return err;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->reload, NULL);
    *out = c;
    return 0;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Drop one reference on REG; called with mu held. Returns a snapshot to free. */
static semail_registry *unref_locked(semail_registry_cache *c, const semail_registry *reg)
{
    size_t i;
    if (reg == c->current) {
        c->current_refs--;
        return NULL;
    }
    for (i = 0; i < c->nretired; i++) {
        if (c->retired[i].reg == reg) {
            semail_registry *dead = NULL;
            if (--c->retired[i].refs == 0) {
                dead = c->retired[i].reg;
                c->retired[i] = c->retired[--c->nretired];
            }
            return dead;
        }
    }
    return NULL; /* not ours: a caller bug, ignored rather than crashing a server */
}

/* Make FRESH current; the caller's reference moves from the old one to FRESH. */
static semail_registry *install_locked(semail_registry_cache *c, semail_registry *fresh)
{
    semail_registry *old = c->current;
    unsigned long refs = c->current_refs - 1; /* less the caller's */

    c->current = fresh;
    c->current_refs = 1;
    if (refs == 0)
        return old;
    if (c->nretired == c->capretired) {
        size_t cap = c->capretired ? c->capretired * 2 : 8;
        struct retired *p = realloc(c->retired, cap * sizeof(*p));
        if (p == NULL) {
            /* Cannot track the old snapshot: keep it current instead. */
            c->current = old;
            c->current_refs = refs + 1;
            return fresh;
        }
        c->retired = p;
        c->capretired = cap;
    }
    c->retired[c->nretired].reg = old;
    c->retired[c->nretired].refs = refs;
    c->nretired++;
    return NULL;
}

/* Called holding a reference on CUR, which changed on disk; returns the newest. */
static const semail_registry *refresh(semail_registry_cache *c, const semail_registry *cur)
{
    semail_registry *fresh = NULL, *dead = NULL;
    const semail_registry *result = cur;
    struct stat st;
    int have_st, err;

    pthread_mutex_lock(&c->reload);
    pthread_mutex_lock(&c->mu);
    if (c->current != cur) {
        /* Another thread reloaded while this one waited. */
        result = c->current;
        c->current_refs++;
        dead = unref_locked(c, cur);
        pthread_mutex_unlock(&c->mu);
        goto done;
    }
    have_st = stat(c->path, &st) == 0;
    if (have_st && c->failed && same_file(&st, &c->failed_st)) {
        pthread_mutex_unlock(&c->mu);
        goto done;
    }
    pthread_mutex_unlock(&c->mu);

    err = semail_registry_load(&fresh, c->state_dir);

    pthread_mutex_lock(&c->mu);
    if (err < 0) {
        c->failed = have_st && (err == SEMAIL_EINVAL || err == SEMAIL_ETOOBIG);
        if (c->failed)
            c->failed_st = st;
    } else {
        c->failed = 0;
        dead = install_locked(c, fresh);
        result = c->current;
    }
    pthread_mutex_unlock(&c->mu);
done:
    pthread_mutex_unlock(&c->reload);
    semail_registry_free(dead);
    return result;
}

int semail_registry_cache_acquire(const semail_registry **out, semail_registry_cache *cache)
{
    const semail_registry *cur;

    pthread_mutex_lock(&cache->mu);
    cur = cache->current;
    cache->current_refs++;
    pthread_mutex_unlock(&cache->mu);

    /* The snapshot is referenced, so the stat can run without the mutex. */
    if (semail_registry_changed(cur))
        cur = refresh(cache, cur);
    *out = cur;
    return 0;
}

void semail_registry_cache_release(semail_registry_cache *cache, const semail_registry *reg)
{
    semail_registry *dead;
    if (reg == NULL)
        return;
    pthread_mutex_lock(&cache->mu);
    dead = unref_locked(cache, reg);
    pthread_mutex_unlock(&cache->mu);
    semail_registry_free(dead);
}

void semail_registry_cache_free(semail_registry_cache *cache)
{
    size_t i;
    if (cache == NULL)
        return;
    for (i = 0; i < cache->nretired; i++)
        semail_registry_free(cache->retired[i].reg);
    semail_registry_free(cache->current);
    free(cache->retired);
    pthread_mutex_destroy(&cache->mu);
    pthread_mutex_destroy(&cache->reload);
    free(cache->path);
    free(cache->state_dir);
    free(cache);
}
