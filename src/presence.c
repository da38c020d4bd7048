#include "presence.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "storage.h"

/*
 * Sessions are individually allocated entries, found through three
 * open-addressing tables (linear probing, backward-shift deletion, so no
 * tombstones pile up under sign-in/sign-out churn):
 *
 *   dev          device_id -> entry
 *   groups[USER] user_id   -> head of a doubly linked list through the entries
 *   groups[ROOM] room_id   -> likewise, for devices subscribed to a room
 *
 * The lists are intrusive so moving a device between users or rooms is O(1)
 * and allocates nothing. Every table is kept at least twice as large as the
 * number of sessions (each session is in at most one user and one room
 * group), so only presence_put ever allocates and presence_set_room cannot
 * fail halfway.
 */

enum { BY_USER, BY_ROOM, NGROUPS };

/*
 * A gateway that sessions are signed in at, and its lease (PT_GATEWAY_LEASE).
 * Entries point at their gateway's record, so the sweeper reads a session's
 * lease in O(1) and a lease refreshes every session of its gateway by one
 * store. Records are few (one per gateway) and live in a small chained hash.
 * A record is freed when no session refers to it and it holds no live lease
 * (never leased, or its lease expired: presence_expired).
 */
#define GW_BUCKETS 64 /* a power of two */

struct gw {
    struct gw *next;
    size_t refs;              /* sessions at this gateway */
    bool leased;              /* boot_id holds the boot of the current lease */
    int64_t boot_id;          /* changed by the writer thread under the write lock */
    _Atomic int64_t lease_ms; /* last lease, 0 = none; refreshed under the read lock */
    char id[PRESENCE_GATEWAY_MAX + 1];
};

#define TABLE_MIN 64 /* slots; a power of two */

struct entry {
    int64_t device_id;
    int64_t key[NGROUPS]; /* user_id, room_id (0 = in no room) */
    /* Refreshed by presence_check under the read lock, hence atomic. */
    _Atomic int64_t last_seen_ms;
    /* PostgreSQL: when the device table last confirmed this session (presence_check_shared). */
    _Atomic int64_t checked_ms;
    struct gw *gw; /* the record of gateway_id */
    struct {
        struct entry *prev, *next;
    } link[NGROUPS];
    char gateway_id[PRESENCE_GATEWAY_MAX + 1];
};

/*
 * One slot type for all three tables keeps a single, tested probing
 * implementation. In dev, e is the session; in a group table, e is the list
 * head and n the list length. e == NULL marks an empty slot (a group is
 * deleted when its list empties), so any id, 0 included, is a valid key.
 */
struct slot {
    int64_t id;
    struct entry *e;
    size_t n;
};

struct table {
    struct slot *tab;
    size_t cap; /* power of two */
};

struct presence {
    pthread_rwlock_t lock;
    struct table dev;
    struct table groups[NGROUPS];
    size_t count;    /* sessions */
    size_t in_rooms; /* sessions with a room */
    struct gw *gws[GW_BUCKETS];
};

static size_t home(int64_t id, size_t cap)
{
    /* splitmix64 finalizer: device and user ids are often sequential. */
    uint64_t h = (uint64_t)id;
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 31;
    return (size_t)h & (cap - 1);
}

static struct slot *table_find(const struct table *t, int64_t id)
{
    size_t mask = t->cap - 1;
    for (size_t i = home(id, t->cap);; i = (i + 1) & mask) {
        struct slot *s = &t->tab[i];
        if (!s->e)
            return NULL;
        if (s->id == id)
            return s;
    }
}

/* id must be absent and the table must have room (see table_reserve). */
static struct slot *table_add(struct table *t, int64_t id)
{
    size_t mask = t->cap - 1;
    size_t i = home(id, t->cap);
    while (t->tab[i].e)
        i = (i + 1) & mask;
    t->tab[i].id = id;
    t->tab[i].n = 0;
    return &t->tab[i];
}

/*
 * Backward-shift deletion: pull later members of the probe run into the hole
 * unless that would move them before their home slot.
 */
static void table_del(struct table *t, struct slot *s)
{
    size_t mask = t->cap - 1;
    size_t hole = (size_t)(s - t->tab);
    for (size_t j = (hole + 1) & mask; t->tab[j].e; j = (j + 1) & mask) {
        size_t h = home(t->tab[j].id, t->cap);
        bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
        if (stays)
            continue;
        t->tab[hole] = t->tab[j];
        hole = j;
    }
    t->tab[hole] = (struct slot){0};
}

static size_t gw_bucket(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)id; *c; c++)
        h = (h ^ *c) * 0x100000001b3ull;
    return (size_t)h & (GW_BUCKETS - 1);
}

static struct gw *gw_find(const struct presence *p, const char *id)
{
    for (struct gw *g = p->gws[gw_bucket(id)]; g; g = g->next)
        if (strcmp(g->id, id) == 0)
            return g;
    return NULL;
}

/* Finds or creates (refs 0, no lease) the record of id, which fits PRESENCE_GATEWAY_MAX. NULL:
 * out of memory. Write lock. */
static struct gw *gw_get(struct presence *p, const char *id)
{
    struct gw *g = gw_find(p, id);
    if (g)
        return g;
    if (!(g = calloc(1, sizeof *g)))
        return NULL;
    strcpy(g->id, id);
    size_t b = gw_bucket(id);
    g->next = p->gws[b];
    p->gws[b] = g;
    return g;
}

static void gw_free(struct presence *p, struct gw *g)
{
    struct gw **pp = &p->gws[gw_bucket(g->id)];
    while (*pp != g)
        pp = &(*pp)->next;
    *pp = g->next;
    free(g);
}

/* Frees g if nothing keeps it: no session, no lease. Write lock. */
static void gw_drop_unused(struct presence *p, struct gw *g)
{
    if (g && g->refs == 0 && !g->leased)
        gw_free(p, g);
}

static void gw_release(struct presence *p, struct gw *g)
{
    if (!g)
        return;
    g->refs--;
    gw_drop_unused(p, g);
}

static gim_err table_resize(struct table *t, size_t cap)
{
    struct slot *tab = calloc(cap, sizeof *tab);
    if (!tab)
        return GIM_ENOMEM;
    struct table nt = {tab, cap};
    for (size_t i = 0; i < t->cap; i++) {
        if (t->tab[i].e)
            *table_add(&nt, t->tab[i].id) = t->tab[i];
    }
    free(t->tab);
    *t = nt;
    return GIM_OK;
}

/* Keeps the load factor at or below 1/2 for want members. */
static gim_err table_reserve(struct table *t, size_t want)
{
    if (want > SIZE_MAX / 4 / sizeof(struct slot))
        return GIM_ENOMEM;
    size_t cap = t->cap;
    while (cap < want * 2)
        cap *= 2;
    return cap == t->cap ? GIM_OK : table_resize(t, cap);
}

/* Gives memory back after a mass sign-out; the 1/8 threshold avoids thrashing at the boundary. */
static void table_fit(struct table *t, size_t members)
{
    if (t->cap > TABLE_MIN && members < t->cap / 8)
        (void)table_resize(t, t->cap / 2); /* failing to shrink is harmless */
}

static gim_err reserve_all(struct presence *p, size_t sessions)
{
    gim_err e = table_reserve(&p->dev, sessions);
    for (int g = 0; g < NGROUPS && e == GIM_OK; g++)
        e = table_reserve(&p->groups[g], sessions);
    return e;
}

static void group_link(struct presence *p, int g, struct entry *e)
{
    struct slot *s = table_find(&p->groups[g], e->key[g]);
    if (!s)
        s = table_add(&p->groups[g], e->key[g]);
    e->link[g].prev = NULL;
    e->link[g].next = s->e;
    if (s->e)
        s->e->link[g].prev = e;
    s->e = e;
    s->n++;
}

static void group_unlink(struct presence *p, int g, struct entry *e)
{
    struct slot *s = table_find(&p->groups[g], e->key[g]);
    if (e->link[g].prev)
        e->link[g].prev->link[g].next = e->link[g].next;
    else
        s->e = e->link[g].next;
    if (e->link[g].next)
        e->link[g].next->link[g].prev = e->link[g].prev;
    e->link[g].prev = e->link[g].next = NULL;
    if (--s->n == 0)
        table_del(&p->groups[g], s);
}

static void set_user(struct presence *p, struct entry *e, int64_t user_id)
{
    group_unlink(p, BY_USER, e);
    e->key[BY_USER] = user_id;
    group_link(p, BY_USER, e);
}

static void set_room(struct presence *p, struct entry *e, int64_t room_id)
{
    if (e->key[BY_ROOM]) {
        group_unlink(p, BY_ROOM, e);
        p->in_rooms--;
    }
    e->key[BY_ROOM] = room_id;
    if (room_id) {
        group_link(p, BY_ROOM, e);
        p->in_rooms++;
    }
}

static void copy_gateway(char *dst, const char *src, size_t len)
{
    if (len > PRESENCE_GATEWAY_MAX)
        len = PRESENCE_GATEWAY_MAX;
    memcpy(dst, src, len);
    dst[len] = 0;
}

static void copy_out(const struct entry *e, struct session *out)
{
    out->device_id = e->device_id;
    out->user_id = e->key[BY_USER];
    out->room_id = e->key[BY_ROOM];
    out->last_seen_ms = atomic_load_explicit(&e->last_seen_ms, memory_order_relaxed);
    memcpy(out->gateway_id, e->gateway_id, sizeof out->gateway_id);
}

gim_err presence_open(struct presence **out)
{
    gim_err e = GIM_ENOMEM;
    pthread_rwlockattr_t attr;
    bool attr_ok = false;
    struct presence *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        goto fail;
    p->dev.cap = TABLE_MIN;
    if (!(p->dev.tab = calloc(TABLE_MIN, sizeof(struct slot))))
        goto fail;
    for (int g = 0; g < NGROUPS; g++) {
        p->groups[g].cap = TABLE_MIN;
        if (!(p->groups[g].tab = calloc(TABLE_MIN, sizeof(struct slot))))
            goto fail;
    }
    if (pthread_rwlockattr_init(&attr) != 0)
        goto fail;
    attr_ok = true;
#ifdef __GLIBC__
    /*
     * Every request takes the read lock; under glibc's default reader
     * preference a steady stream of them would starve the one writer thread.
     * No function here takes the read lock twice, so non-recursive is safe.
     */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    if (pthread_rwlock_init(&p->lock, &attr) != 0) {
        e = GIM_EINTERNAL;
        goto fail;
    }
    pthread_rwlockattr_destroy(&attr);
    *out = p;
    return GIM_OK;
fail:
    if (attr_ok)
        pthread_rwlockattr_destroy(&attr);
    if (p) {
        free(p->dev.tab);
        for (int g = 0; g < NGROUPS; g++)
            free(p->groups[g].tab);
        free(p);
    }
    return e;
}

void presence_close(struct presence *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->dev.cap; i++)
        free(p->dev.tab[i].e);
    free(p->dev.tab);
    for (int g = 0; g < NGROUPS; g++)
        free(p->groups[g].tab);
    for (size_t b = 0; b < GW_BUCKETS; b++) {
        for (struct gw *g = p->gws[b], *next; g; g = next) {
            next = g->next;
            free(g);
        }
    }
    pthread_rwlock_destroy(&p->lock);
    free(p);
}

struct load_ctx {
    struct presence *p;
    bool put_failed; /* the failure was ours, logged here, not the database's */
};

/* presence_load's put: one session at a time, so no lock is held across disk reads. */
static gim_err load_put(void *arg, const struct session *s)
{
    struct load_ctx *ctx = arg;
    gim_err e = presence_put(ctx->p, s);
    if (e != GIM_OK) {
        ctx->put_failed = true;
        log_error("presence load failed", "device_id=%lld error=%s", (long long)s->device_id,
                  gim_err_name(e));
    }
    return e;
}

gim_err presence_load(struct presence *p, struct store_conn *db, int64_t now_ms)
{
    struct load_ctx ctx = {.p = p};
    size_t n = 0;
    gim_err e = storage(db)->device->load_sessions(db, now_ms, load_put, &ctx, &n);
    if (e == GIM_OK)
        log_info("presence loaded", "sessions=%zu backend=%s", n, storage(db)->name);
    else if (!ctx.put_failed)
        log_error("presence load failed", "code=%s error=\"%s\"", gim_err_name(e),
                  store_errmsg(db));
    return e;
}

gim_err presence_put(struct presence *p, const struct session *s)
{
    gim_err e = GIM_OK;
    char gw_id[PRESENCE_GATEWAY_MAX + 1];
    copy_gateway(gw_id, s->gateway_id, strnlen(s->gateway_id, PRESENCE_GATEWAY_MAX));
    pthread_rwlock_wrlock(&p->lock);
    struct slot *d = table_find(&p->dev, s->device_id);
    struct entry *en = d ? d->e : NULL;
    /* Allocate everything before touching the indexes so a failure leaves them intact. */
    struct gw *g = gw_get(p, gw_id);
    if (!g) {
        e = GIM_ENOMEM;
        goto out;
    }
    if (!en) {
        if ((e = reserve_all(p, p->count + 1)) != GIM_OK) {
            gw_drop_unused(p, g);
            goto out;
        }
        if (!(en = calloc(1, sizeof *en))) {
            gw_drop_unused(p, g);
            e = GIM_ENOMEM;
            goto out;
        }
        en->device_id = s->device_id;
        en->key[BY_USER] = s->user_id;
        table_add(&p->dev, s->device_id)->e = en;
        group_link(p, BY_USER, en);
        p->count++;
    } else if (en->key[BY_USER] != s->user_id) {
        set_user(p, en, s->user_id);
    }
    if (en->key[BY_ROOM] != s->room_id)
        set_room(p, en, s->room_id);
    if (en->gw != g) {
        g->refs++;
        gw_release(p, en->gw);
        en->gw = g;
    }
    memcpy(en->gateway_id, gw_id, sizeof gw_id);
    atomic_store_explicit(&en->last_seen_ms, s->last_seen_ms, memory_order_relaxed);
    /* Every put comes from what the database says now (a commit, a load, a check). */
    atomic_store_explicit(&en->checked_ms, s->last_seen_ms, memory_order_relaxed);
out:
    pthread_rwlock_unlock(&p->lock);
    return e;
}

bool presence_remove(struct presence *p, int64_t device_id, struct session *old)
{
    pthread_rwlock_wrlock(&p->lock);
    struct slot *d = table_find(&p->dev, device_id);
    struct entry *en = d ? d->e : NULL;
    if (en) {
        if (old)
            copy_out(en, old);
        set_room(p, en, 0);
        group_unlink(p, BY_USER, en);
        gw_release(p, en->gw);
        table_del(&p->dev, d);
        free(en);
        p->count--;
        table_fit(&p->dev, p->count);
        for (int g = 0; g < NGROUPS; g++)
            table_fit(&p->groups[g], p->count);
    }
    pthread_rwlock_unlock(&p->lock);
    return en != NULL;
}

gim_err presence_check(struct presence *p, int64_t user_id, int64_t device_id,
                       const char *gateway_id, int64_t now_ms, struct session *out)
{
    gim_err e = GIM_EUNAUTH;
    pthread_rwlock_rdlock(&p->lock);
    struct slot *d = table_find(&p->dev, device_id);
    struct entry *en = d ? d->e : NULL;
    if (en && en->key[BY_USER] == user_id && gateway_id &&
        strcmp(en->gateway_id, gateway_id) == 0) {
        atomic_store_explicit(&en->last_seen_ms, now_ms, memory_order_relaxed);
        if (out)
            copy_out(en, out);
        e = GIM_OK;
    }
    pthread_rwlock_unlock(&p->lock);
    return e;
}

gim_err presence_check_shared(struct presence *p, struct store_conn *db, int64_t user_id,
                              int64_t device_id, const char *gateway_id, int64_t now_ms,
                              struct session *out)
{
    bool cached = false, fresh = false;
    pthread_rwlock_rdlock(&p->lock);
    struct slot *d = table_find(&p->dev, device_id);
    struct entry *en = d ? d->e : NULL;
    if (en && en->key[BY_USER] == user_id && gateway_id &&
        strcmp(en->gateway_id, gateway_id) == 0) {
        cached = true;
        fresh = now_ms - atomic_load_explicit(&en->checked_ms, memory_order_relaxed) <
                PRESENCE_RECHECK_MS;
        atomic_store_explicit(&en->last_seen_ms, now_ms, memory_order_relaxed);
        if (out)
            copy_out(en, out);
    }
    pthread_rwlock_unlock(&p->lock);
    if (fresh)
        return GIM_OK;
    if (!gateway_id)
        return GIM_EUNAUTH;

    struct session s = {.device_id = device_id, .last_seen_ms = now_ms};
    bool valid = false;
    gim_err e = storage(db)->device->session(db, device_id, &s, &valid);
    if (e != GIM_OK) /* the database is away: nothing this request does could succeed */
        return cached ? GIM_OK : GIM_EUNAVAILABLE;
    valid = valid && s.user_id == user_id && strcmp(s.gateway_id, gateway_id) == 0;
    if (!valid) {
        /* Signed out, kicked or moved at another instance: forget what we cached. */
        if (cached)
            presence_remove(p, device_id, NULL);
        return GIM_EUNAUTH;
    }
    if ((e = presence_put(p, &s)) != GIM_OK)
        return e;
    if (out)
        *out = s;
    return GIM_OK;
}

bool presence_get(struct presence *p, int64_t device_id, struct session *out)
{
    pthread_rwlock_rdlock(&p->lock);
    struct slot *d = table_find(&p->dev, device_id);
    if (d)
        copy_out(d->e, out);
    pthread_rwlock_unlock(&p->lock);
    return d != NULL;
}

bool presence_set_room(struct presence *p, int64_t device_id, int64_t room_id)
{
    pthread_rwlock_wrlock(&p->lock);
    struct slot *d = table_find(&p->dev, device_id);
    struct entry *en = d ? d->e : NULL;
    if (en && en->key[BY_ROOM] != room_id)
        set_room(p, en, room_id);
    pthread_rwlock_unlock(&p->lock);
    return en != NULL;
}

static size_t group_sessions(struct presence *p, int g, int64_t id, struct session *out, size_t max)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&p->lock);
    struct slot *s = table_find(&p->groups[g], id);
    if (s) {
        n = s->n;
        size_t i = 0;
        for (struct entry *en = s->e; en && i < max; en = en->link[g].next)
            copy_out(en, &out[i++]);
    }
    pthread_rwlock_unlock(&p->lock);
    return n;
}

size_t presence_user_sessions(struct presence *p, int64_t user_id, struct session *out, size_t max)
{
    return group_sessions(p, BY_USER, user_id, out, max);
}

size_t presence_room_sessions(struct presence *p, int64_t room_id, struct session *out, size_t max)
{
    /* Room 0 means "no room", never a room of its own. */
    return room_id ? group_sessions(p, BY_ROOM, room_id, out, max) : 0;
}

/* A session counts as seen at its last request or its gateway's last lease, whichever is later. */
static int64_t seen_ms(const struct entry *en)
{
    int64_t seen = atomic_load_explicit(&en->last_seen_ms, memory_order_relaxed);
    int64_t lease = en->gw ? atomic_load_explicit(&en->gw->lease_ms, memory_order_relaxed) : 0;
    return lease > seen ? lease : seen;
}

static bool gw_lease_expired(const struct gw *g, int64_t cutoff_ms)
{
    return g->refs == 0 && g->leased &&
           atomic_load_explicit(&g->lease_ms, memory_order_relaxed) < cutoff_ms;
}

/* Forgets the leases of gateways that stopped leasing and hold no session. */
static void forget_dead_gateways(struct presence *p, int64_t cutoff_ms)
{
    bool any = false;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t b = 0; b < GW_BUCKETS && !any; b++)
        for (const struct gw *g = p->gws[b]; g && !any; g = g->next)
            any = gw_lease_expired(g, cutoff_ms);
    pthread_rwlock_unlock(&p->lock);
    if (!any)
        return;
    pthread_rwlock_wrlock(&p->lock);
    for (size_t b = 0; b < GW_BUCKETS; b++) {
        for (struct gw *g = p->gws[b], *next; g; g = next) {
            next = g->next;
            if (gw_lease_expired(g, cutoff_ms))
                gw_free(p, g);
        }
    }
    pthread_rwlock_unlock(&p->lock);
}

size_t presence_expired(struct presence *p, int64_t cutoff_ms, int64_t *device_ids, size_t max)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t i = 0; i < p->dev.cap && n < max; i++) {
        const struct entry *en = p->dev.tab[i].e;
        if (en && seen_ms(en) < cutoff_ms)
            device_ids[n++] = en->device_id;
    }
    pthread_rwlock_unlock(&p->lock);
    forget_dead_gateways(p, cutoff_ms);
    return n;
}

size_t presence_active(struct presence *p, int64_t since_ms, int64_t *ids, int64_t *seen,
                       size_t max)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t i = 0; i < p->dev.cap; i++) {
        const struct entry *en = p->dev.tab[i].e;
        int64_t at = en ? atomic_load_explicit(&en->last_seen_ms, memory_order_relaxed) : 0;
        if (!en || at < since_ms)
            continue;
        if (n < max) {
            ids[n] = en->device_id;
            seen[n] = at;
        }
        n++;
    }
    pthread_rwlock_unlock(&p->lock);
    return n;
}

size_t presence_leased(struct presence *p, int64_t since_ms, char (*gw)[PRESENCE_GATEWAY_MAX + 1],
                       int64_t *at, size_t max)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&p->lock);
    for (size_t b = 0; b < GW_BUCKETS; b++)
        for (const struct gw *g = p->gws[b]; g; g = g->next) {
            int64_t lease = atomic_load_explicit(&g->lease_ms, memory_order_relaxed);
            if (!g->leased || lease < since_ms)
                continue;
            if (n < max) {
                memcpy(gw[n], g->id, sizeof gw[n]);
                at[n] = lease;
            }
            n++;
        }
    pthread_rwlock_unlock(&p->lock);
    return n;
}

bool presence_lease_refresh(struct presence *p, const char *gateway_id, int64_t boot_id,
                            int64_t now_ms)
{
    bool ok = false;
    pthread_rwlock_rdlock(&p->lock);
    struct gw *g = gw_find(p, gateway_id);
    if (g && g->leased && g->boot_id == boot_id) {
        atomic_store_explicit(&g->lease_ms, now_ms, memory_order_relaxed);
        ok = true;
    }
    pthread_rwlock_unlock(&p->lock);
    return ok;
}

gim_err presence_lease_set(struct presence *p, const char *gateway_id, int64_t boot_id,
                           int64_t now_ms)
{
    gim_err e = GIM_OK;
    pthread_rwlock_wrlock(&p->lock);
    struct gw *g = gw_get(p, gateway_id);
    if (g) {
        g->leased = true;
        g->boot_id = boot_id;
        atomic_store_explicit(&g->lease_ms, now_ms, memory_order_relaxed);
    } else {
        e = GIM_ENOMEM;
    }
    pthread_rwlock_unlock(&p->lock);
    return e;
}

size_t presence_gateway_remove(struct presence *p, const char *gateway_id)
{
    int64_t stackbuf[256];
    int64_t *ids = stackbuf;
    size_t cap = sizeof stackbuf / sizeof stackbuf[0], total = 0, n;
    pthread_rwlock_rdlock(&p->lock);
    const struct gw *g = gw_find(p, gateway_id);
    size_t refs = g ? g->refs : 0;
    pthread_rwlock_unlock(&p->lock);
    if (refs > cap && (ids = malloc(refs * sizeof *ids)) != NULL)
        cap = refs;
    else
        ids = stackbuf; /* out of memory: in slices, one walk each */
    /*
     * Collect, then remove: removal shifts table slots under a walk. Only the
     * writer thread changes presence, so nothing joins the gateway meanwhile;
     * the record stays alive while it has sessions or a lease, and a record
     * freed at the last removal ends the loop (no session refers to it).
     */
    do {
        n = 0;
        pthread_rwlock_rdlock(&p->lock);
        g = gw_find(p, gateway_id);
        for (size_t i = 0; g && i < p->dev.cap && n < cap; i++) {
            const struct entry *en = p->dev.tab[i].e;
            if (en && en->gw == g)
                ids[n++] = en->device_id;
        }
        pthread_rwlock_unlock(&p->lock);
        for (size_t i = 0; i < n; i++)
            presence_remove(p, ids[i], NULL);
        total += n;
    } while (n == cap);
    if (ids != stackbuf)
        free(ids);
    return total;
}

void presence_counts(struct presence *p, size_t *sessions, size_t *in_rooms)
{
    pthread_rwlock_rdlock(&p->lock);
    if (sessions)
        *sessions = p->count;
    if (in_rooms)
        *in_rooms = p->in_rooms;
    pthread_rwlock_unlock(&p->lock);
}
