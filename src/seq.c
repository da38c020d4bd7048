#include "seq.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

/*
 * An open-addressing table keyed by (kind, id). Entries are never deleted
 * one by one (only seq_reset empties the table), so linear probing needs no
 * tombstones.
 */
struct counter {
    int64_t id;
    int64_t last;
    uint8_t kind;
    bool used;
    bool dirty; /* changed since the last commit */
};

struct undo {
    size_t slot;
    int64_t last;
    bool dirty;
};

struct seq {
    struct counter *tab;
    size_t cap, count;
    struct undo *undo; /* every change since the last commit, oldest first */
    size_t undo_len, undo_cap;
    size_t *dirty; /* slots to flush */
    size_t dirty_len, dirty_cap;
};

gim_err seq_open(struct seq **out)
{
    struct seq *s = calloc(1, sizeof *s);
    if (!s)
        return GIM_ENOMEM;
    s->cap = 1024;
    s->tab = calloc(s->cap, sizeof *s->tab);
    if (!s->tab) {
        free(s);
        return GIM_ENOMEM;
    }
    *out = s;
    return GIM_OK;
}

void seq_close(struct seq *s)
{
    if (!s)
        return;
    free(s->tab);
    free(s->undo);
    free(s->dirty);
    free(s);
}

static size_t hash(int kind, int64_t id, size_t cap)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull + (uint64_t)kind;
    h ^= h >> 29;
    return (size_t)(h & (cap - 1));
}

static size_t probe(const struct seq *s, int kind, int64_t id)
{
    size_t i = hash(kind, id, s->cap);
    while (s->tab[i].used && !(s->tab[i].id == id && s->tab[i].kind == kind))
        i = (i + 1) & (s->cap - 1);
    return i;
}

/* Doubles the table and rehashes every counter. It may run in the middle of a
 * transaction (load() calls it), and the undo log and the dirty list hold slot
 * numbers, so they are remapped to the new slots as well. */
static gim_err grow(struct seq *s)
{
    size_t old_cap = s->cap;
    struct counter *old = s->tab;
    s->cap *= 2;
    s->tab = calloc(s->cap, sizeof *s->tab);
    if (!s->tab) {
        s->tab = old;
        s->cap = old_cap;
        return GIM_ENOMEM;
    }
    size_t *map = malloc(old_cap * sizeof *map);
    if (!map) {
        free(s->tab);
        s->tab = old;
        s->cap = old_cap;
        return GIM_ENOMEM;
    }
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i].used)
            continue;
        size_t j = probe(s, old[i].kind, old[i].id);
        s->tab[j] = old[i];
        map[i] = j;
    }
    for (size_t i = 0; i < s->undo_len; i++)
        s->undo[i].slot = map[s->undo[i].slot];
    for (size_t i = 0; i < s->dirty_len; i++)
        s->dirty[i] = map[s->dirty[i]];
    free(map);
    free(old);
    return GIM_OK;
}

static gim_err load(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                    seq_load_fn read, size_t *slot)
{
    size_t i = probe(s, kind, id);
    if (s->tab[i].used) {
        *slot = i;
        return GIM_OK;
    }
    if ((s->count + 1) * 4 > s->cap * 3) {
        gim_err e = grow(s);
        if (e != GIM_OK)
            return e;
        i = probe(s, kind, id);
    }
    int64_t last = 0;
    gim_err e = read(db, kind, id, &last);
    if (e != GIM_OK)
        return e;
    s->tab[i] = (struct counter){.id = id, .last = last, .kind = (uint8_t)kind, .used = true};
    s->count++;
    *slot = i;
    return GIM_OK;
}

static gim_err push_undo(struct seq *s, size_t slot)
{
    if (s->undo_len == s->undo_cap) {
        size_t cap = s->undo_cap ? s->undo_cap * 2 : 256;
        struct undo *u = realloc(s->undo, cap * sizeof *u);
        if (!u)
            return GIM_ENOMEM;
        s->undo = u;
        s->undo_cap = cap;
    }
    if (!s->tab[slot].dirty) {
        if (s->dirty_len == s->dirty_cap) {
            size_t cap = s->dirty_cap ? s->dirty_cap * 2 : 256;
            size_t *d = realloc(s->dirty, cap * sizeof *d);
            if (!d)
                return GIM_ENOMEM;
            s->dirty = d;
            s->dirty_cap = cap;
        }
        s->dirty[s->dirty_len++] = slot;
    }
    s->undo[s->undo_len++] =
        (struct undo){.slot = slot, .last = s->tab[slot].last, .dirty = s->tab[slot].dirty};
    return GIM_OK;
}

gim_err seq_cache_next(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                       seq_load_fn read, int64_t *out)
{
    size_t slot;
    gim_err e = load(s, db, kind, id, read, &slot);
    if (e != GIM_OK)
        return e;
    if ((e = push_undo(s, slot)) != GIM_OK)
        return e;
    s->tab[slot].last++;
    s->tab[slot].dirty = true;
    *out = s->tab[slot].last;
    return GIM_OK;
}

gim_err seq_cache_last(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                       seq_load_fn read, int64_t *out)
{
    size_t slot;
    gim_err e = load(s, db, kind, id, read, &slot);
    if (e == GIM_OK)
        *out = s->tab[slot].last;
    return e;
}

gim_err seq_cache_flush(struct seq *s, struct store_conn *db, seq_save_fn save)
{
    for (size_t i = 0; i < s->dirty_len; i++) {
        struct counter *c = &s->tab[s->dirty[i]];
        if (!c->dirty)
            continue;
        gim_err e = save(db, (enum seq_kind)c->kind, c->id, c->last);
        if (e != GIM_OK)
            return e;
    }
    return GIM_OK;
}

/*
 * The seq operations by the names the writer and the other modules call:
 * the message area's storage operations (storage.h) on db's backend.
 */
gim_err seq_next(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id, int64_t *out)
{
    struct wctx w = {.db = db, .seq = s};
    return storage(db)->message->next_seq(&w, kind, id, out);
}

gim_err seq_last(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id, int64_t *out)
{
    struct wctx w = {.db = db, .seq = s};
    return storage(db)->message->last_seq(&w, kind, id, out);
}

gim_err seq_next_users(struct seq *s, struct store_conn *db, const int64_t *ids, size_t n,
                       int64_t *out)
{
    struct wctx w = {.db = db, .seq = s};
    return storage(db)->message->next_user_seqs(&w, ids, n, out);
}

gim_err seq_lock(struct store_conn *db, enum seq_kind kind, const int64_t *ids, size_t n)
{
    struct wctx w = {.db = db};
    return storage(db)->message->lock_seqs(&w, kind, ids, n);
}

gim_err seq_flush(struct seq *s, struct store_conn *db)
{
    struct wctx w = {.db = db, .seq = s};
    return storage(db)->message->flush_seqs(&w);
}

size_t seq_mark(struct seq *s)
{
    return s->undo_len;
}

void seq_rollback(struct seq *s, size_t mark)
{
    while (s->undo_len > mark) {
        struct undo *u = &s->undo[--s->undo_len];
        s->tab[u->slot].last = u->last;
        s->tab[u->slot].dirty = u->dirty;
    }
    /* A slot whose dirty flag went back to false stays listed; flush skips it. */
}

void seq_committed(struct seq *s)
{
    for (size_t i = 0; i < s->dirty_len; i++)
        s->tab[s->dirty[i]].dirty = false;
    s->dirty_len = 0;
    s->undo_len = 0;
}

void seq_reset(struct seq *s)
{
    memset(s->tab, 0, s->cap * sizeof *s->tab);
    s->count = 0;
    s->dirty_len = 0;
    s->undo_len = 0;
}
