#include "erasure.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgstore.h"
#include "proto.h"
#include "seq.h"
#include "store.h"

/* Room rows are only read unless they are the user's: a step may scan this many per row it may
 * write. */
#define ROOM_SCAN_FACTOR 8

static const char SQL_STATE[] =
    "SELECT upto_seq, room_id, room_seq, finished_at FROM erasure WHERE user_id = ?1";
/* (Re)starts an erasure: a finished one asked again starts over from the user's current seq. */
static const char SQL_START[] =
    "INSERT INTO erasure (user_id, upto_seq, room_id, room_seq, started_at, finished_at) "
    "VALUES (?1, ?2, 0, 0, ?3, 0) ON CONFLICT (user_id) DO UPDATE SET "
    "upto_seq = excluded.upto_seq, room_id = 0, room_seq = 0, started_at = excluded.started_at, "
    "finished_at = 0";
static const char SQL_ROOM_CURSOR[] =
    "UPDATE erasure SET room_id = ?2, room_seq = ?3 WHERE user_id = ?1";
static const char SQL_FINISH[] = "UPDATE erasure SET finished_at = ?2 WHERE user_id = ?1";

static const char SQL_DEVICES[] =
    "SELECT device_id, online, gateway_id FROM device WHERE user_id = ?1 ORDER BY device_id "
    "LIMIT ?2";
static const char SQL_DEL_DEVICE_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = ?1 AND request_id IN "
    "(SELECT request_id FROM idempotency WHERE device_id = ?1 LIMIT ?2)";
/* A room send's record is two rows, deleted together: first the details of
 * the key rows SQL_DEL_DEVICE_IDEM takes next (the same first rows of the key). */
static const char SQL_DEL_DEVICE_ROOM_DETAILS[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND request_id IN "
    "(SELECT request_id FROM idempotency WHERE device_id = ?1 LIMIT ?2)";
/* Then details left without a key row (replaced by a later send's record): they name the device. */
static const char SQL_DEL_DEVICE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = ?1 LIMIT ?2)";
static const char SQL_DEL_DEVICE[] = "DELETE FROM device WHERE device_id = ?1 AND user_id = ?2";

static const char SQL_DEL_MEMBERS[] =
    "DELETE FROM group_member WHERE user_id = ?1 AND group_id IN "
    "(SELECT group_id FROM group_member WHERE user_id = ?1 LIMIT ?2)";

/* LEFT JOIN: an entry whose message is missing (a damaged row) is deleted too. */
static const char SQL_INBOX[] =
    "SELECT i.seq, i.message_id, m.id IS NOT NULL, m.sender_type, m.sender_id, "
    "m.sender_device_id, m.receiver_type, m.receiver_id, m.sender_seq, m.receiver_seq, "
    "m.content IS NOT NULL OR m.status <> 2 OR m.to_user_ids IS NOT NULL "
    "FROM inbox i LEFT JOIN message m ON m.id = i.message_id "
    "WHERE i.user_id = ?1 AND i.seq <= ?2 ORDER BY i.seq LIMIT ?3";
static const char SQL_DEL_INBOX[] = "DELETE FROM inbox WHERE user_id = ?1 AND seq = ?2";
static const char SQL_DEL_GROUP_COPY[] =
    "DELETE FROM group_copy WHERE message_id = ?1 AND user_id = ?2";
static const char SQL_HAS_COPY[] =
    "SELECT 1 FROM inbox WHERE user_id = ?1 AND seq = ?2 AND message_id = ?3";
static const char SQL_ANY_GROUP_COPY[] = "SELECT 1 FROM group_copy WHERE message_id = ?1 LIMIT 1";
/* As a recall erases; the @mentions are the user's content too. */
static const char SQL_ERASE_MESSAGE[] =
    "UPDATE message SET status = 2, content = NULL, to_user_ids = NULL WHERE id = ?1";
static const char SQL_DEL_MESSAGE_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = ?1 AND message_id = ?2";
static const char SQL_DEL_MESSAGE[] = "DELETE FROM message WHERE id = ?1";

/* Row values walk the primary key from the cursor on. */
static const char SQL_ROOM_SCAN[] =
    "SELECT room_id, seq, sender_type = 2 AND sender_id = ?3 AND "
    "(content IS NOT NULL OR status <> 2 OR to_user_ids IS NOT NULL) "
    "FROM room_message WHERE (room_id, seq) > (?1, ?2) ORDER BY room_id, seq LIMIT ?4";
static const char SQL_ROOM_ERASE[] =
    "UPDATE room_message SET status = 2, content = NULL, to_user_ids = NULL "
    "WHERE room_id = ?1 AND seq = ?2";

/*
 * PostgreSQL: the same statements with $n parameters (and booleans read as
 * integers). The erasure row is locked first (FOR UPDATE), so two steps of
 * the same erasure at two instances run one after the other, each from
 * where the other left off. The deleted devices' sessions at other
 * instances end within PRESENCE_RECHECK_MS (presence_check_shared finds no
 * row); their gateways are told after the commit (kick_committed).
 */
static const char PG_STATE[] = "SELECT upto_seq, room_id, room_seq, finished_at FROM erasure "
                               "WHERE user_id = $1 FOR UPDATE";
static const char PG_START[] =
    "INSERT INTO erasure (user_id, upto_seq, room_id, room_seq, started_at, finished_at) "
    "VALUES ($1, $2, 0, 0, $3, 0) ON CONFLICT (user_id) DO UPDATE SET "
    "upto_seq = excluded.upto_seq, room_id = 0, room_seq = 0, started_at = excluded.started_at, "
    "finished_at = 0";
static const char PG_ROOM_CURSOR[] =
    "UPDATE erasure SET room_id = $2, room_seq = $3 WHERE user_id = $1";
static const char PG_FINISH[] = "UPDATE erasure SET finished_at = $2 WHERE user_id = $1";
static const char PG_DEVICES[] =
    "SELECT device_id, online, gateway_id FROM device WHERE user_id = $1 ORDER BY device_id "
    "LIMIT $2 FOR UPDATE";
static const char PG_DEL_DEVICE_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = $1 AND request_id IN "
    "(SELECT request_id FROM idempotency WHERE device_id = $1 LIMIT $2)";
static const char PG_DEL_DEVICE_ROOM_DETAILS[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND request_id IN "
    "(SELECT request_id FROM idempotency WHERE device_id = $1 LIMIT $2)";
static const char PG_DEL_DEVICE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = $1 LIMIT $2)";
static const char PG_DEL_DEVICE[] = "DELETE FROM device WHERE device_id = $1 AND user_id = $2";
static const char PG_DEL_MEMBERS[] =
    "DELETE FROM group_member WHERE user_id = $1 AND group_id IN "
    "(SELECT group_id FROM group_member WHERE user_id = $1 LIMIT $2)";
static const char PG_INBOX[] =
    "SELECT i.seq, i.message_id, (m.id IS NOT NULL)::int, m.sender_type, m.sender_id, "
    "m.sender_device_id, m.receiver_type, m.receiver_id, m.sender_seq, m.receiver_seq, "
    "(m.content IS NOT NULL OR m.status <> 2 OR m.to_user_ids IS NOT NULL)::int "
    "FROM inbox i LEFT JOIN message m ON m.id = i.message_id "
    "WHERE i.user_id = $1 AND i.seq <= $2 ORDER BY i.seq LIMIT $3";
static const char PG_DEL_INBOX[] = "DELETE FROM inbox WHERE user_id = $1 AND seq = $2";
static const char PG_DEL_GROUP_COPY[] =
    "DELETE FROM group_copy WHERE message_id = $1 AND user_id = $2";
static const char PG_HAS_COPY[] =
    "SELECT 1 FROM inbox WHERE user_id = $1 AND seq = $2 AND message_id = $3";
static const char PG_ANY_GROUP_COPY[] = "SELECT 1 FROM group_copy WHERE message_id = $1 LIMIT 1";
static const char PG_ERASE_MESSAGE[] =
    "UPDATE message SET status = 2, content = NULL, to_user_ids = NULL WHERE id = $1";
static const char PG_DEL_MESSAGE_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = $1 AND message_id = $2";
static const char PG_DEL_MESSAGE[] = "DELETE FROM message WHERE id = $1";
static const char PG_ROOM_SCAN[] =
    "SELECT room_id, seq, (sender_type = 2 AND sender_id = $3 AND "
    "(content IS NOT NULL OR status <> 2 OR to_user_ids IS NOT NULL))::int "
    "FROM room_message WHERE (room_id, seq) > ($1, $2) ORDER BY room_id, seq LIMIT $4";
static const char PG_ROOM_ERASE[] =
    "UPDATE room_message SET status = 2, content = NULL, to_user_ids = NULL "
    "WHERE room_id = $1 AND seq = $2";

/* Whether sql (SQLite) or pg_sql (PostgreSQL) finds a row. */
static gim_err exists2(struct store_conn *db, const char *sql, const char *pg_sql, bool *yes,
                       const struct store_val *v, size_t n)
{
    if (!store_is_pg(db))
        return store_run(db, sql, NULL, yes, v, n);
    PGresult *res = NULL;
    gim_err e = pgstore_run(db, pg_sql, &res, NULL, v, n);
    *yes = e == GIM_OK && PQntuples(res) > 0;
    PQclear(res);
    return e;
}
#define EXISTS2(db, sql, pg_sql, yes, ...)                                                         \
    exists2((db), (sql), (pg_sql), (yes), STORE_VALS(__VA_ARGS__))

struct entry {
    int64_t seq, message_id;
    bool has_message;
    int sender_type;
    int64_t sender_id, sender_device_id;
    int receiver_type;
    int64_t receiver_id, sender_seq, receiver_seq;
    bool has_content; /* anything left to erase */
};

struct state {
    int64_t upto_seq, room_id, room_seq;
};

/* Loads the erasure's position, starting (or restarting a finished) one. */
/* The erasure row, locked (PostgreSQL); *running when it is in progress. */
static gim_err state_pg(struct wctx *w, int64_t user_id, struct state *s, bool *running)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_STATE, &res, NULL, STORE_INT(user_id));
    *running = e == GIM_OK && PQntuples(res) == 1 && pgstore_int(res, 0, 3) == 0;
    if (*running) {
        s->upto_seq = pgstore_int(res, 0, 0);
        s->room_id = pgstore_int(res, 0, 1);
        s->room_seq = pgstore_int(res, 0, 2);
    }
    PQclear(res);
    return e;
}

static gim_err load_state(struct wctx *w, int64_t user_id, struct state *s)
{
    bool running = false;
    if (store_is_pg(w->db)) {
        gim_err e = state_pg(w, user_id, s, &running);
        if (e != GIM_OK)
            return e;
        goto loaded;
    }
    sqlite3_stmt *st = store_stmt(w->db, SQL_STATE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    running = rc == SQLITE_ROW && sqlite3_column_int64(st, 3) == 0;
    if (running) {
        s->upto_seq = sqlite3_column_int64(st, 0);
        s->room_id = sqlite3_column_int64(st, 1);
        s->room_seq = sqlite3_column_int64(st, 2);
    }
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
loaded:
    if (running)
        return GIM_OK;
    *s = (struct state){0};
    gim_err e = seq_last(w->seq, w->db, SEQ_USER, user_id, &s->upto_seq);
    if (e != GIM_OK)
        return e;
    log_info("erasure started", "user=%" PRId64 " upto_seq=%" PRId64, user_id, s->upto_seq);
    return STORE_RUN2(w->db, SQL_START, PG_START, NULL, STORE_INT(user_id), STORE_INT(s->upto_seq),
                      STORE_INT(w->now_ms));
}

/* Part 1. *budget counts down; false in *complete when it ran out first. */
/* PostgreSQL: the user's devices (locked) into res->kicked; *n of them. */
static gim_err devices_pg(struct wctx *w, int64_t user_id, int limit, struct erasure_result *res,
                          size_t *n)
{
    PGresult *pr = NULL;
    gim_err e = PG_RUN(w->db, PG_DEVICES, &pr, NULL, STORE_INT(user_id), STORE_INT(limit));
    *n = 0;
    for (int i = 0; e == GIM_OK && i < PQntuples(pr); i++) {
        struct kick_target *t = &res->kicked[(*n)++];
        size_t len = 0;
        const uint8_t *gw = pgstore_blob(pr, i, 2, &len);
        t->device_id = pgstore_int(pr, i, 0);
        t->user_id = user_id;
        t->was_online = pgstore_int(pr, i, 1) != 0;
        len = len > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : len;
        if (gw)
            memcpy(t->gateway_id, gw, len);
        t->gateway_id[len] = 0;
    }
    PQclear(pr);
    return e;
}

static gim_err erase_devices(struct wctx *w, int64_t user_id, int *budget, bool *complete,
                             struct erasure_result *res)
{
    gim_err e = GIM_OK;
    bool pg = store_is_pg(w->db);
    sqlite3_stmt *st = pg ? NULL : store_stmt(w->db, SQL_DEVICES);
    size_t n = 0;
    int rc;
    *complete = false;
    if (!st && !pg)
        return GIM_EINTERNAL;
    /* Collected first: no statement walks the table while it shrinks. */
    res->kicked = calloc((size_t)*budget + 1, sizeof *res->kicked);
    if (!res->kicked) {
        store_done(st);
        return GIM_ENOMEM;
    }
    if (pg) {
        if ((e = devices_pg(w, user_id, *budget + 1, res, &n)) != GIM_OK)
            return e;
        goto collected;
    }
    rc = STORE_BIND(st, STORE_INT(user_id), STORE_INT(*budget + 1));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct kick_target *t = &res->kicked[n++];
            const unsigned char *gw = sqlite3_column_text(st, 2);
            t->device_id = sqlite3_column_int64(st, 0);
            t->user_id = user_id;
            t->was_online = sqlite3_column_int(st, 1) != 0;
            snprintf(t->gateway_id, sizeof t->gateway_id, "%s", gw ? (const char *)gw : "");
        }
    store_done(st);
    if (rc != SQLITE_DONE)
        return store_err(rc);
collected:
    for (size_t i = 0; i<n && * budget> 0; i++) {
        int changed = 0;
        e = STORE_RUN2(w->db, SQL_DEL_DEVICE_ROOM_DETAILS, PG_DEL_DEVICE_ROOM_DETAILS, NULL,
                       STORE_INT(res->kicked[i].device_id), STORE_INT(*budget));
        if (e != GIM_OK)
            return e;
        e = STORE_RUN2(w->db, SQL_DEL_DEVICE_IDEM, PG_DEL_DEVICE_IDEM, &changed,
                       STORE_INT(res->kicked[i].device_id), STORE_INT(*budget));
        if (e != GIM_OK)
            return e;
        *budget -= changed;
        if (*budget <= 0)
            break; /* its records may go on: the device stays for the next step */
        e = STORE_RUN2(w->db, SQL_DEL_DEVICE_ROOM_IDEM, PG_DEL_DEVICE_ROOM_IDEM, &changed,
                       STORE_INT(res->kicked[i].device_id), STORE_INT(*budget));
        if (e != GIM_OK)
            return e;
        *budget -= changed;
        if (*budget <= 0)
            break;
        if ((e = STORE_RUN2(w->db, SQL_DEL_DEVICE, PG_DEL_DEVICE, NULL,
                            STORE_INT(res->kicked[i].device_id), STORE_INT(user_id))) != GIM_OK)
            return e;
        (*budget)--;
        res->n_kicked++;
    }
    res->devices = (int64_t)res->n_kicked;
    *complete = res->n_kicked == n;
    return GIM_OK;
}

/* Part 2. */
static gim_err erase_memberships(struct wctx *w, int64_t user_id, int *budget, bool *complete,
                                 struct erasure_result *res)
{
    int changed = 0, asked = *budget;
    *complete = false;
    if (asked <= 0)
        return GIM_OK;
    gim_err e = STORE_RUN2(w->db, SQL_DEL_MEMBERS, PG_DEL_MEMBERS, &changed, STORE_INT(user_id),
                           STORE_INT(asked));
    if (e != GIM_OK)
        return e;
    res->memberships = changed;
    *budget -= changed;
    *complete = changed < asked; /* fewer than asked: none left */
    return GIM_OK;
}

/* Whether an inbox other than (user_id, e->seq) still holds e's message. */
static gim_err held_elsewhere(struct wctx *w, int64_t user_id, const struct entry *m, bool *yes)
{
    *yes = false;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP)
        return EXISTS2(w->db, SQL_ANY_GROUP_COPY, PG_ANY_GROUP_COPY, yes, STORE_INT(m->message_id));
    /* 1:1 and notices: the copies are (sender, sender_seq) and (receiver, receiver_seq). */
    int64_t other_user = m->sender_id, other_seq = m->sender_seq;
    if (other_user == user_id && other_seq == m->seq) {
        other_user = m->receiver_id;
        other_seq = m->receiver_seq;
    }
    if (other_user == user_id && other_seq == m->seq)
        return GIM_OK; /* a note to self: one copy */
    return EXISTS2(w->db, SQL_HAS_COPY, PG_HAS_COPY, yes, STORE_INT(other_user),
                   STORE_INT(other_seq), STORE_INT(m->message_id));
}

static gim_err erase_entry(struct wctx *w, int64_t user_id, const struct entry *m,
                           struct erasure_result *res)
{
    gim_err e =
        STORE_RUN2(w->db, SQL_DEL_INBOX, PG_DEL_INBOX, NULL, STORE_INT(user_id), STORE_INT(m->seq));
    bool elsewhere = false;
    if (e != GIM_OK || !m->has_message)
        return e;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP &&
        (e = STORE_RUN2(w->db, SQL_DEL_GROUP_COPY, PG_DEL_GROUP_COPY, NULL,
                        STORE_INT(m->message_id), STORE_INT(user_id))) != GIM_OK)
        return e;
    if ((e = held_elsewhere(w, user_id, m, &elsewhere)) != GIM_OK)
        return e;
    if (!elsewhere) {
        if ((e = STORE_RUN2(w->db, SQL_DEL_MESSAGE_IDEM, PG_DEL_MESSAGE_IDEM, NULL,
                            STORE_INT(m->sender_device_id), STORE_INT(m->message_id))) != GIM_OK ||
            (e = STORE_RUN2(w->db, SQL_DEL_MESSAGE, PG_DEL_MESSAGE, NULL,
                            STORE_INT(m->message_id))) != GIM_OK)
            return e;
        res->messages_deleted++;
        return GIM_OK;
    }
    bool own = m->sender_type == PB__SENDER_TYPE__ST_USER && m->sender_id == user_id;
    if (own && m->has_content) {
        if ((e = STORE_RUN2(w->db, SQL_ERASE_MESSAGE, PG_ERASE_MESSAGE, NULL,
                            STORE_INT(m->message_id))) != GIM_OK)
            return e;
        res->messages_erased++;
    }
    return GIM_OK;
}

/* PostgreSQL: up to max of the user's inbox entries into list[*n]. */
static gim_err inbox_pg(struct wctx *w, int64_t user_id, const struct state *s, int max,
                        struct entry *list, int *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_INBOX, &res, NULL, STORE_INT(user_id), STORE_INT(s->upto_seq),
                       STORE_INT(max));
    *n = 0;
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && i < max; i++)
        list[(*n)++] = (struct entry){.seq = pgstore_int(res, i, 0),
                                      .message_id = pgstore_int(res, i, 1),
                                      .has_message = pgstore_int(res, i, 2) != 0,
                                      .sender_type = (int)pgstore_int(res, i, 3),
                                      .sender_id = pgstore_int(res, i, 4),
                                      .sender_device_id = pgstore_int(res, i, 5),
                                      .receiver_type = (int)pgstore_int(res, i, 6),
                                      .receiver_id = pgstore_int(res, i, 7),
                                      .sender_seq = pgstore_int(res, i, 8),
                                      .receiver_seq = pgstore_int(res, i, 9),
                                      .has_content = pgstore_int(res, i, 10) != 0};
    PQclear(res);
    return e;
}

/* Part 3. */
static gim_err erase_inbox(struct wctx *w, int64_t user_id, const struct state *s, int *budget,
                           bool *complete, struct erasure_result *res)
{
    gim_err e = GIM_OK;
    int n = 0, rc;
    *complete = false;
    if (*budget <= 0)
        return GIM_OK;
    struct entry *list = malloc((size_t)*budget * sizeof *list);
    if (list && store_is_pg(w->db)) {
        e = inbox_pg(w, user_id, s, *budget, list, &n);
        goto collected;
    }
    sqlite3_stmt *st = list ? store_stmt(w->db, SQL_INBOX) : NULL;
    if (!st) {
        free(list);
        return list ? GIM_EINTERNAL : GIM_ENOMEM;
    }
    rc = STORE_BIND(st, STORE_INT(user_id), STORE_INT(s->upto_seq), STORE_INT(*budget));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            list[n++] = (struct entry){.seq = sqlite3_column_int64(st, 0),
                                       .message_id = sqlite3_column_int64(st, 1),
                                       .has_message = sqlite3_column_int(st, 2) != 0,
                                       .sender_type = sqlite3_column_int(st, 3),
                                       .sender_id = sqlite3_column_int64(st, 4),
                                       .sender_device_id = sqlite3_column_int64(st, 5),
                                       .receiver_type = sqlite3_column_int(st, 6),
                                       .receiver_id = sqlite3_column_int64(st, 7),
                                       .sender_seq = sqlite3_column_int64(st, 8),
                                       .receiver_seq = sqlite3_column_int64(st, 9),
                                       .has_content = sqlite3_column_int(st, 10) != 0};
    store_done(st);
    if (rc != SQLITE_DONE)
        e = store_err(rc);
collected:
    for (int i = 0; e == GIM_OK && i < n; i++)
        e = erase_entry(w, user_id, &list[i], res);
    free(list);
    if (e != GIM_OK)
        return e;
    res->inbox_entries = n;
    *complete = n < *budget;
    *budget -= n;
    return GIM_OK;
}

/*
 * PostgreSQL: the room scan of part 4, as the SQLite loop below does it
 * (*rc SQLITE_ROW when it stopped at the budget's last hit, else
 * SQLITE_DONE; *n the rows read).
 */
static gim_err rooms_pg(struct wctx *w, int64_t user_id, struct state *s, int limit, int budget,
                        int64_t (*hits)[2], int *nhits, int *n, int *rc)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_ROOM_SCAN, &res, NULL, STORE_INT(s->room_id),
                       STORE_INT(s->room_seq), STORE_INT(user_id), STORE_INT(limit));
    *rc = SQLITE_DONE;
    for (int i = 0; e == GIM_OK && i < PQntuples(res); i++) {
        (*n)++;
        s->room_id = pgstore_int(res, i, 0);
        s->room_seq = pgstore_int(res, i, 1);
        if (pgstore_int(res, i, 2)) {
            hits[*nhits][0] = s->room_id;
            hits[*nhits][1] = s->room_seq;
            if (++*nhits == budget) {
                *rc = SQLITE_ROW;
                break;
            }
        }
    }
    PQclear(res);
    return e;
}

/* Part 4: from the cursor on, at most budget * ROOM_SCAN_FACTOR rows read. */
static gim_err erase_rooms(struct wctx *w, int64_t user_id, struct state *s, int *budget,
                           bool *complete, struct erasure_result *res)
{
    gim_err e = GIM_OK;
    int limit = *budget * ROOM_SCAN_FACTOR, n = 0, rc;
    *complete = false;
    if (*budget <= 0)
        return GIM_OK;
    bool pg = store_is_pg(w->db);
    sqlite3_stmt *st = pg ? NULL : store_stmt(w->db, SQL_ROOM_SCAN);
    int64_t(*hits)[2] = malloc((size_t)*budget * sizeof *hits);
    int nhits = 0;
    if ((!st && !pg) || !hits) {
        store_done(st);
        free(hits);
        return hits ? GIM_EINTERNAL : GIM_ENOMEM;
    }
    if (pg) {
        e = rooms_pg(w, user_id, s, limit, *budget, hits, &nhits, &n, &rc);
        goto collected;
    }
    rc = STORE_BIND(st, STORE_INT(s->room_id), STORE_INT(s->room_seq), STORE_INT(user_id),
                    STORE_INT(limit));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            n++;
            s->room_id = sqlite3_column_int64(st, 0);
            s->room_seq = sqlite3_column_int64(st, 1);
            if (sqlite3_column_int(st, 2)) {
                hits[nhits][0] = s->room_id;
                hits[nhits][1] = s->room_seq;
                /* The writes are what the budget bounds: stop the scan at the last one. */
                if (++nhits == *budget)
                    break;
            }
        }
    store_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        e = store_err(rc);
collected:
    for (int i = 0; e == GIM_OK && i < nhits; i++)
        e = STORE_RUN2(w->db, SQL_ROOM_ERASE, PG_ROOM_ERASE, NULL, STORE_INT(hits[i][0]),
                       STORE_INT(hits[i][1]));
    free(hits);
    if (e == GIM_OK)
        e = STORE_RUN2(w->db, SQL_ROOM_CURSOR, PG_ROOM_CURSOR, NULL, STORE_INT(user_id),
                       STORE_INT(s->room_id), STORE_INT(s->room_seq));
    if (e != GIM_OK)
        return e;
    res->room_messages_erased = nhits;
    *budget -= nhits;
    /* The scan ran to the end of the logs, not merely to its LIMIT. */
    *complete = rc == SQLITE_DONE && n < limit;
    return GIM_OK;
}

gim_err erasure_step(struct wctx *w, int64_t user_id, int max_rows, struct erasure_result *res)
{
    struct state s = {0};
    bool complete = false;
    int budget = max_rows < 1 ? 1 : max_rows > ERASURE_MAX_ROWS ? ERASURE_MAX_ROWS : max_rows;
    gim_err e;

    memset(res, 0, sizeof *res);
    if ((e = load_state(w, user_id, &s)) != GIM_OK)
        goto fail;
    if ((e = erase_devices(w, user_id, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_memberships(w, user_id, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_inbox(w, user_id, &s, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_rooms(w, user_id, &s, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = STORE_RUN2(w->db, SQL_FINISH, PG_FINISH, NULL, STORE_INT(user_id),
                        STORE_INT(w->now_ms))) != GIM_OK)
        goto out;
    res->done = true;
out:
    if (e != GIM_OK)
        goto fail;
    /* The content is gone from the b-tree; its old frames are still in the WAL (SQLite). */
    if (!store_is_pg(w->db) &&
        (res->messages_erased || res->messages_deleted || res->room_messages_erased))
        w->scrub_wal = true;
    log_info("erasure step",
             "user=%" PRId64 " done=%d devices=%" PRId64 " memberships=%" PRId64 " inbox=%" PRId64
             " erased=%" PRId64 " deleted=%" PRId64 " room=%" PRId64,
             user_id, (int)res->done, res->devices, res->memberships, res->inbox_entries,
             res->messages_erased, res->messages_deleted, res->room_messages_erased);
    return GIM_OK;
fail:
    log_warn("erasure step failed", "user=%" PRId64 " code=%s", user_id, gim_err_name(e));
    erasure_result_free(res);
    return e;
}

void erasure_committed(struct wctx *w, const struct erasure_result *res)
{
    for (size_t i = 0; res && i < res->n_kicked; i++)
        kick_committed(w, &res->kicked[i]);
}

void erasure_result_free(struct erasure_result *res)
{
    if (!res)
        return;
    free(res->kicked);
    memset(res, 0, sizeof *res);
}
