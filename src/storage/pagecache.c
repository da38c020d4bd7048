/*
 * pagecache: SQLite's page cache without the walk at every commit (pagecache.h).
 */
#include "storage/pagecache.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Pages noted at or above the limit between two truncates. A commit of a
 * batch of sends appends a handful (the message table's last page, a split's
 * new page); a bigger transaction overflows this and its truncate goes
 * through, as without the wrapper. */
#define NOTED_MAX 32

struct noted {
    sqlite3_pcache_page *page;
    unsigned key;
};

/* One connection's cache: the wrapped one, and what the proof needs. */
struct wcache {
    sqlite3_pcache *base;
    bool limited;     /* a truncate reached base: it holds no page numbered >= limit */
    bool overflow;    /* more than NOTED_MAX pages entered >= limit since: prove nothing */
    unsigned limit;   /* valid when limited */
    unsigned n_noted; /* entries of noted[] in use */
    struct noted noted[NOTED_MAX];
};

static sqlite3_pcache_methods2 base_methods;
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
/* Only the first call configures SQLite: sqlite3_config must not run while other threads use
 * SQLite, as they may by the second store_open. */
static bool tried;
static gim_err first_result = GIM_EINTERNAL;
static atomic_uint_fast64_t n_truncates, n_skipped;

static void note(struct wcache *c, sqlite3_pcache_page *page, unsigned key)
{
    if (!c->limited || key < c->limit || c->overflow)
        return;
    for (unsigned i = 0; i < c->n_noted; i++)
        if (c->noted[i].page == page) {
            c->noted[i].key = key;
            return;
        }
    if (c->n_noted == NOTED_MAX) {
        c->overflow = true;
        return;
    }
    c->noted[c->n_noted++] = (struct noted){page, key};
}

static void forget(struct wcache *c, sqlite3_pcache_page *page)
{
    for (unsigned i = 0; i < c->n_noted; i++)
        if (c->noted[i].page == page) {
            c->noted[i] = c->noted[--c->n_noted];
            return;
        }
}

static int pc_init(void *arg)
{
    (void)arg;
    return base_methods.xInit ? base_methods.xInit(base_methods.pArg) : SQLITE_OK;
}

static void pc_shutdown(void *arg)
{
    (void)arg;
    if (base_methods.xShutdown)
        base_methods.xShutdown(base_methods.pArg);
}

static sqlite3_pcache *pc_create(int page_size, int extra_size, int purgeable)
{
    struct wcache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base = base_methods.xCreate(page_size, extra_size, purgeable);
    if (!c->base) {
        free(c);
        return NULL;
    }
    return (sqlite3_pcache *)c;
}

static void pc_cachesize(sqlite3_pcache *p, int n)
{
    base_methods.xCachesize(((struct wcache *)p)->base, n);
}

static int pc_pagecount(sqlite3_pcache *p)
{
    return base_methods.xPagecount(((struct wcache *)p)->base);
}

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *p, unsigned key, int create)
{
    struct wcache *c = (struct wcache *)p;
    sqlite3_pcache_page *page = base_methods.xFetch(c->base, key, create);
    if (page)
        note(c, page, key);
    return page;
}

static void pc_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard)
{
    struct wcache *c = (struct wcache *)p;
    /* A page unpinned without discard stays in the cache under its number: still noted. */
    if (discard)
        forget(c, page);
    base_methods.xUnpin(c->base, page, discard);
}

static void pc_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned old_key,
                     unsigned new_key)
{
    struct wcache *c = (struct wcache *)p;
    forget(c, page);
    note(c, page, new_key);
    base_methods.xRekey(c->base, page, old_key, new_key);
}

static void pc_truncate(sqlite3_pcache *p, unsigned limit)
{
    struct wcache *c = (struct wcache *)p;
    atomic_fetch_add_explicit(&n_truncates, 1, memory_order_relaxed);
    bool empty = c->limited && limit >= c->limit && !c->overflow;
    for (unsigned i = 0; empty && i < c->n_noted; i++)
        if (c->noted[i].key >= limit)
            empty = false;
    if (empty)
        atomic_fetch_add_explicit(&n_skipped, 1, memory_order_relaxed);
    else
        base_methods.xTruncate(c->base, limit);
    /* Either way base now holds no page numbered >= limit; what was noted lies below it. */
    c->limited = true;
    c->limit = limit;
    c->overflow = false;
    c->n_noted = 0;
}

static void pc_destroy(sqlite3_pcache *p)
{
    struct wcache *c = (struct wcache *)p;
    base_methods.xDestroy(c->base);
    free(c);
}

static void pc_shrink(sqlite3_pcache *p)
{
    if (base_methods.xShrink)
        base_methods.xShrink(((struct wcache *)p)->base);
}

static const sqlite3_pcache_methods2 wrapper = {
    .iVersion = 1,
    .pArg = NULL,
    .xInit = pc_init,
    .xShutdown = pc_shutdown,
    .xCreate = pc_create,
    .xCachesize = pc_cachesize,
    .xPagecount = pc_pagecount,
    .xFetch = pc_fetch,
    .xUnpin = pc_unpin,
    .xRekey = pc_rekey,
    .xTruncate = pc_truncate,
    .xDestroy = pc_destroy,
    .xShrink = pc_shrink,
};

gim_err pagecache_install(void)
{
    gim_err e = GIM_OK;
    pthread_mutex_lock(&install_lock);
    if (tried) {
        e = first_result;
        goto out;
    }
    tried = true;
    sqlite3_pcache_methods2 current;
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &current) != SQLITE_OK || !current.xCreate) {
        e = GIM_EINTERNAL;
        goto out;
    }
    base_methods = current;
    if (sqlite3_config(SQLITE_CONFIG_PCACHE2, &wrapper) != SQLITE_OK) {
        /* SQLite is initialised already: it keeps the cache it has. */
        e = GIM_EINTERNAL;
        goto out;
    }
    first_result = GIM_OK;
out:
    pthread_mutex_unlock(&install_lock);
    return e;
}

void pagecache_stats(struct pagecache_stats *out)
{
    out->truncates = atomic_load(&n_truncates);
    out->skipped = atomic_load(&n_skipped);
}
