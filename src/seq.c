#include "seq.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgstore.h"

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

static const char SQL_LOAD_USER[] = "SELECT seq FROM user_seq WHERE user_id = ?1";
static const char SQL_LOAD_ROOM[] = "SELECT seq FROM room_seq WHERE room_id = ?1";
static const char SQL_SAVE_USER[] = "INSERT INTO user_seq (user_id, seq) VALUES (?1, ?2) "
                                    "ON CONFLICT (user_id) DO UPDATE SET seq = excluded.seq";
static const char SQL_SAVE_ROOM[] = "INSERT INTO room_seq (room_id, seq) VALUES (?1, ?2) "
                                    "ON CONFLICT (room_id) DO UPDATE SET seq = excluded.seq";

/*
 * PostgreSQL: several instances take seqs of the same user, so the counter
 * lives in the database, not here. The upsert takes the next seq and locks
 * the user's row until the commit: another instance's send to the same
 * user waits for it, so seqs never repeat or gap and N+1 cannot commit (or
 * become visible) before N. A rolled-back savepoint gives its seq back with
 * the row. Nothing is cached, so seq_mark/rollback/flush have nothing to do.
 */
static const char PG_NEXT_USER[] =
    "INSERT INTO user_seq (user_id, seq) VALUES ($1, 1) "
    "ON CONFLICT (user_id) DO UPDATE SET seq = user_seq.seq + 1 RETURNING seq";
static const char PG_LAST_USER[] = "SELECT seq FROM user_seq WHERE user_id = $1";
/* A room's log: the same, on room_seq (room.c's subscribe takes the same row lock). */
static const char PG_NEXT_ROOM[] =
    "INSERT INTO room_seq (room_id, seq) VALUES ($1, 1) "
    "ON CONFLICT (room_id) DO UPDATE SET seq = room_seq.seq + 1 RETURNING seq";
static const char PG_LAST_ROOM[] = "SELECT seq FROM room_seq WHERE room_id = $1";

static gim_err pg_seq(struct store_conn *db, const char *sql, int64_t id, int64_t *out)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, sql, &res, NULL, STORE_INT(id));
    if (e == GIM_OK)
        *out = PQntuples(res) > 0 ? pgstore_int(res, 0, 0) : 0;
    PQclear(res);
    return e;
}

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
                    size_t *slot)
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
    sqlite3_stmt *st = store_stmt(db, kind == SEQ_USER ? SQL_LOAD_USER : SQL_LOAD_ROOM);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int64_t last = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
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

gim_err seq_next(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id, int64_t *out)
{
    if (store_is_pg(db))
        return pg_seq(db, kind == SEQ_USER ? PG_NEXT_USER : PG_NEXT_ROOM, id, out);
    size_t slot;
    gim_err e = load(s, db, kind, id, &slot);
    if (e != GIM_OK)
        return e;
    if ((e = push_undo(s, slot)) != GIM_OK)
        return e;
    s->tab[slot].last++;
    s->tab[slot].dirty = true;
    *out = s->tab[slot].last;
    return GIM_OK;
}

gim_err seq_last(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id, int64_t *out)
{
    if (store_is_pg(db))
        return pg_seq(db, kind == SEQ_USER ? PG_LAST_USER : PG_LAST_ROOM, id, out);
    size_t slot;
    gim_err e = load(s, db, kind, id, &slot);
    if (e == GIM_OK)
        *out = s->tab[slot].last;
    return e;
}

/*
 * PostgreSQL: the next seqs of many users in one statement (a group's fan-out):
 * the rows are upserted in ascending user id order, so the row locks are
 * taken in that order whatever the caller's, and the result comes back in
 * it. $1 is the ids as an array literal ("{1,2,3}"), a parameter like any.
 */
static const char PG_NEXT_USERS[] =
    "WITH s AS (INSERT INTO user_seq (user_id, seq) "
    "SELECT u, 1 FROM unnest($1::text::bigint[]) AS u ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET seq = user_seq.seq + 1 RETURNING user_id, seq) "
    "SELECT user_id, seq FROM s ORDER BY user_id";

/*
 * PostgreSQL: a batch's seq rows locked before its jobs run (seq_lock). One
 * pass in ascending id order (the ORDER BY feeds the insert in that order),
 * in which each key is either inserted (a missing row, seq 0: the next
 * upsert makes it 1) or, when it exists, locked by the DO UPDATE: "all rows
 * will be locked when the ON CONFLICT DO UPDATE action is taken", even those
 * its WHERE leaves unchanged (PostgreSQL's INSERT documentation), so no new
 * row version is written. The lock is FOR NO KEY UPDATE, the one the seq
 * upserts take. An insert that meets another transaction's uncommitted
 * insert of the same key waits for it at that key, in the same ascending
 * pass, so inserting cannot take the rows in another order either.
 */
static const char PG_LOCK_USERS[] =
    "INSERT INTO user_seq (user_id, seq) "
    "SELECT u, 0 FROM unnest($1::text::bigint[]) AS u ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET seq = user_seq.seq WHERE false";
static const char PG_LOCK_ROOMS[] =
    "INSERT INTO room_seq (room_id, seq) "
    "SELECT r, 0 FROM unnest($1::text::bigint[]) AS r ORDER BY r "
    "ON CONFLICT (room_id) DO UPDATE SET seq = room_seq.seq WHERE false";

gim_err seq_lock(struct store_conn *db, enum seq_kind kind, const int64_t *ids, size_t n)
{
    if (!store_is_pg(db) || n == 0)
        return GIM_OK;
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i])
            return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    gim_err e = seq_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(db, kind == SEQ_USER ? PG_LOCK_USERS : PG_LOCK_ROOMS, NULL, NULL,
                   STORE_TEXT(arr));
    free(arr);
    return e;
}

gim_err seq_array_literal(const int64_t *ids, size_t n, char **out)
{
    /* "{" + n ids of at most 20 characters and a comma + "}" */
    char *buf = malloc(n * 21 + 3), *p = buf;
    if (!buf)
        return GIM_ENOMEM;
    *p++ = '{';
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, i ? ",%lld" : "%lld", (long long)ids[i]);
    *p++ = '}';
    *p = 0;
    *out = buf;
    return GIM_OK;
}

gim_err seq_next_users(struct seq *s, struct store_conn *db, const int64_t *ids, size_t n,
                       int64_t *out)
{
    if (!store_is_pg(db)) {
        for (size_t i = 0; i < n; i++) {
            gim_err e = seq_next(s, db, SEQ_USER, ids[i], &out[i]);
            if (e != GIM_OK)
                return e;
        }
        return GIM_OK;
    }
    if (n == 0)
        return GIM_OK;
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i])
            return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    PGresult *res = NULL;
    gim_err e = seq_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(db, PG_NEXT_USERS, &res, NULL, STORE_TEXT(arr));
    if (e == GIM_OK && (size_t)PQntuples(res) != n)
        e = GIM_EINTERNAL;
    for (size_t i = 0; e == GIM_OK && i < n; i++) {
        if (pgstore_int(res, (int)i, 0) != ids[i])
            e = GIM_EINTERNAL;
        out[i] = pgstore_int(res, (int)i, 1);
    }
    PQclear(res);
    free(arr);
    return e;
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

gim_err seq_flush(struct seq *s, struct store_conn *db)
{
    for (size_t i = 0; i < s->dirty_len; i++) {
        struct counter *c = &s->tab[s->dirty[i]];
        if (!c->dirty)
            continue;
        sqlite3_stmt *st = store_stmt(db, c->kind == SEQ_USER ? SQL_SAVE_USER : SQL_SAVE_ROOM);
        if (!st)
            return GIM_EINTERNAL;
        int rc = STORE_BIND(st, STORE_INT(c->id), STORE_INT(c->last));
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        store_done(st);
        if (rc != SQLITE_DONE) {
            log_warn("seq flush failed", "id=%lld rc=%d", (long long)c->id, rc);
            return store_err(rc);
        }
    }
    return GIM_OK;
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
