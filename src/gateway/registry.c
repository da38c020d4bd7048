#include "registry.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct entry {
    struct entry *next; /* hash chain */
    int64_t device_id;
    struct conn *cur; /* holds a reference */
    bool busy;        /* a devop is running */
    struct devop *wait_head, *wait_tail;
};

struct registry {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets, nentries, ncurrent;
    struct registry_hooks h;
};

static size_t slot(const struct registry *r, int64_t id)
{
    uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (r->nbuckets - 1);
}

static struct entry **find(struct registry *r, int64_t id)
{
    struct entry **p = &r->buckets[slot(r, id)];
    while (*p && (*p)->device_id != id)
        p = &(*p)->next;
    return p;
}

static void grow(struct registry *r)
{
    size_t n = r->nbuckets * 2;
    struct entry **b = calloc(n, sizeof *b);
    if (!b)
        return; /* longer chains, still correct */
    struct entry **old = r->buckets;
    size_t oldn = r->nbuckets;
    r->buckets = b;
    r->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (struct entry *e = old[i], *next; e; e = next) {
            next = e->next;
            size_t s = slot(r, e->device_id);
            e->next = b[s];
            b[s] = e;
        }
    }
    free(old);
}

/* The entry of id, created if missing; NULL only when out of memory. */
static struct entry *get(struct registry *r, int64_t id)
{
    struct entry **p = find(r, id);
    if (*p)
        return *p;
    struct entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->device_id = id;
    *p = e;
    if (++r->nentries > r->nbuckets * 2)
        grow(r);
    return e;
}

/* Frees the entry when nothing refers to it any more. */
static void maybe_drop(struct registry *r, int64_t id)
{
    struct entry **p = find(r, id), *e = *p;
    if (e && !e->cur && !e->busy && !e->wait_head) {
        *p = e->next;
        free(e);
        r->nentries--;
    }
}

gim_err registry_open(struct registry **out, const struct registry_hooks *hooks)
{
    struct registry *r = calloc(1, sizeof *r);
    if (!r || !(r->buckets = calloc(1024, sizeof *r->buckets))) {
        free(r);
        return GIM_ENOMEM;
    }
    r->nbuckets = 1024;
    r->h = *hooks;
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return GIM_OK;
}

void registry_close(struct registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct entry *e = r->buckets[i], *next; e; e = next) {
            next = e->next;
            if (e->cur)
                r->h.unref(e->cur);
            free(e);
        }
    }
    pthread_mutex_destroy(&r->mu);
    free(r->buckets);
    free(r);
}

void registry_run(struct registry *r, int64_t device_id, struct devop *op)
{
    pthread_mutex_lock(&r->mu);
    struct entry *e = get(r, device_id);
    if (e && e->busy) {
        op->next = NULL;
        if (e->wait_tail)
            e->wait_tail->next = op;
        else
            e->wait_head = op;
        e->wait_tail = op;
        pthread_mutex_unlock(&r->mu);
        return;
    }
    if (e)
        e->busy = true;
    /* Out of memory: run unserialized rather than never (registry_done tolerates it). */
    pthread_mutex_unlock(&r->mu);
    op->start(op);
}

void registry_done(struct registry *r, int64_t device_id)
{
    pthread_mutex_lock(&r->mu);
    struct entry *e = *find(r, device_id);
    struct devop *next = NULL;
    if (e) {
        next = e->wait_head;
        if (next) {
            e->wait_head = next->next;
            if (!e->wait_head)
                e->wait_tail = NULL;
        } else {
            e->busy = false;
            maybe_drop(r, device_id);
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (next)
        next->start(next);
}

struct conn *registry_set_current(struct registry *r, int64_t device_id, struct conn *c)
{
    struct conn *old = NULL;
    pthread_mutex_lock(&r->mu);
    struct entry *e = get(r, device_id);
    if (e) {
        old = e->cur;
        r->h.ref(c);
        e->cur = c;
        if (!old)
            r->ncurrent++;
    }
    pthread_mutex_unlock(&r->mu);
    if (old == c) {
        r->h.unref(old); /* the same connection signed in again */
        old = NULL;
    }
    return old;
}

struct conn *registry_take_if(struct registry *r, int64_t device_id, uint64_t conn_id)
{
    struct conn *c = NULL;
    pthread_mutex_lock(&r->mu);
    struct entry *e = *find(r, device_id);
    if (e && e->cur && r->h.id(e->cur) == conn_id) {
        c = e->cur;
        e->cur = NULL;
        r->ncurrent--;
        maybe_drop(r, device_id);
    }
    pthread_mutex_unlock(&r->mu);
    return c;
}

struct conn *registry_get(struct registry *r, int64_t device_id)
{
    struct conn *c = NULL;
    pthread_mutex_lock(&r->mu);
    struct entry *e = *find(r, device_id);
    if (e && e->cur) {
        c = e->cur;
        r->h.ref(c);
    }
    pthread_mutex_unlock(&r->mu);
    return c;
}

size_t registry_count(struct registry *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->ncurrent;
    pthread_mutex_unlock(&r->mu);
    return n;
}
