/*
 * The maint operations on postgres (storage.h): seen times, the sweep in
 * the database, idempotency pruning and retention, for several instances on
 * one database. The sweep, pruning and retention run on the instance whose
 * writer connection holds the maintenance advisory lock (maint.c says how
 * the sweep's bound follows; docs/scale-out.md, "Maintenance on
 * PostgreSQL"). A deleted row's old version stays in the table's file until
 * VACUUM reuses its space (docs/scale-out.md, "What erased means on
 * PostgreSQL"); there is no WAL scrub here.
 */
#include <stdlib.h>

#include "log.h"
#include "pgstore.h"
#include "proto.h"
#include "storage.h"
#include "storage/pg_int.h"

/* How far into the head of the message table one retention call looks, in multiples of max. */
#define HEAD_WINDOW 4

static const char PG_PRUNE_IDEM[] =
    "DELETE FROM idempotency WHERE ctid IN (SELECT i.ctid FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "LEFT JOIN room_idempotency r ON i.message_id IS NULL AND r.device_id = i.device_id "
    "AND r.request_id = i.request_id "
    "WHERE coalesce(m.send_time, r.created_at, 0) < $1 "
    /* An erased user's devices are gone: their records go too (sqlite_maint.c). */
    "OR (EXISTS (SELECT 1 FROM erasure WHERE started_at >= $1) "
    "AND NOT EXISTS (SELECT 1 FROM device d WHERE d.device_id = i.device_id)) LIMIT $2)";
/* Room sends' details go with their window, after the key rows that needed them (above). */
static const char PG_PRUNE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE ctid IN "
    "(SELECT ctid FROM room_idempotency WHERE created_at < $1 LIMIT $2)";

/* $1, $2: device ids and their last requests as array literals ("{1,2}"). */
static const char PG_SEEN[] = "UPDATE device d SET updated_at = v.seen "
                              "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seen) "
                              "WHERE d.device_id = v.id AND d.online = 1 AND d.updated_at < v.seen";
static const char PG_SEEN_GATEWAY[] =
    "UPDATE device SET updated_at = $2 WHERE gateway_id = $1 AND online = 1 AND updated_at < $2";
/* The outer conditions are checked again on a row another instance changed meanwhile. */
static const char PG_SWEEP[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = $1 "
    "WHERE online = 1 AND updated_at < $2 AND device_id IN (SELECT device_id FROM device "
    "WHERE online = 1 AND updated_at < $2 ORDER BY device_id LIMIT $3) RETURNING device_id";

/* The statements of retention (sqlite_maint.c has them with ?n parameters). */
static const char PG_OLD_MESSAGES[] =
    "SELECT id, sender_id, sender_seq, receiver_type, receiver_id, receiver_seq "
    "FROM (SELECT id, sender_id, sender_seq, receiver_type, receiver_id, "
    "receiver_seq, send_time FROM message ORDER BY id LIMIT $3) h "
    "WHERE send_time < $1 ORDER BY id LIMIT $2";
static const char PG_DEL_INBOX[] =
    "DELETE FROM inbox WHERE user_id = $1 AND seq = $2 AND message_id = $3";
static const char PG_DEL_GROUP_INBOX[] =
    "DELETE FROM inbox WHERE message_id = $1 AND (user_id, seq) IN "
    "(SELECT user_id, seq FROM group_copy WHERE message_id = $1)";
static const char PG_DEL_GROUP_COPY[] = "DELETE FROM group_copy WHERE message_id = $1";
/* The message's idempotency record is left to the sweep, as on SQLite (sqlite_maint.c). */
static const char PG_DEL_MESSAGE[] = "DELETE FROM message WHERE id = $1";
static const char PG_OLD_ROOM[] =
    "SELECT room_id, seq, sender_device_id FROM room_message WHERE send_time < $1 LIMIT $2";
static const char PG_DEL_ROOM[] = "DELETE FROM room_message WHERE room_id = $1 AND seq = $2";
static const char PG_DEL_ROOM_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = $1 AND message_id IS NULL AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = $1 AND room_id = $2 "
    "AND room_seq = $3)";
static const char PG_DEL_ROOM_IDEM_DETAILS[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND room_id = $2 AND room_seq = $3";

static gim_err ready(struct wctx *w)
{
    return pgstore_ready(w->db);
}

static bool try_lock(struct wctx *w)
{
    return pgstore_try_lock(w->db, PGSTORE_LOCK_MAINT);
}

static gim_err seen(struct wctx *w, const int64_t *ids, const int64_t *at, size_t n)
{
    char *a = NULL, *b = NULL;
    gim_err e = pg_array_literal(ids, n, &a);
    if (e == GIM_OK)
        e = pg_array_literal(at, n, &b);
    if (e == GIM_OK)
        e = PG_RUN(w->db, PG_SEEN, NULL, NULL, STORE_TEXT(a), STORE_TEXT(b));
    free(a);
    free(b);
    return e;
}

static gim_err seen_gateway(struct wctx *w, const char *gateway, int64_t at)
{
    return PG_RUN(w->db, PG_SEEN_GATEWAY, NULL, NULL, STORE_TEXT(gateway), STORE_INT(at));
}

static gim_err sweep(struct wctx *w, int64_t cutoff, int64_t *ids, size_t max, size_t *n)
{
    PGresult *res = NULL;
    *n = 0;
    gim_err e = PG_RUN(w->db, PG_SWEEP, &res, NULL, STORE_INT(w->now_ms), STORE_INT(cutoff),
                       STORE_INT((int64_t)max));
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && *n < max; i++)
        ids[(*n)++] = pgstore_int(res, i, 0);
    PQclear(res);
    return e;
}

/* No WAL file of gim-logic's own: what "erased" means here is in docs/scale-out.md. */
static gim_err scrub_wal(struct wctx *w)
{
    (void)w;
    return GIM_OK;
}

/* One statement looks for expired records anywhere (no sweep position): more while it came full. */
static gim_err prune_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n, bool *more)
{
    *n = 0;
    gim_err e = PG_RUN(w->db, PG_PRUNE_IDEM, NULL, n, STORE_INT(cutoff), STORE_INT(max_rows));
    *more = e == GIM_OK && *n == max_rows;
    return e;
}

static gim_err prune_room_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                      bool *more)
{
    *n = 0;
    gim_err e = PG_RUN(w->db, PG_PRUNE_ROOM_IDEM, NULL, n, STORE_INT(cutoff), STORE_INT(max_rows));
    *more = e == GIM_OK && *n == max_rows;
    return e;
}

/*
 * Operator records are not pruned on PostgreSQL (as before the seam): an
 * expired key is taken over in place by its next claim (operator.c).
 */
static gim_err prune_operator_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                          bool *more)
{
    (void)w;
    (void)cutoff;
    (void)max_rows;
    *n = 0;
    *more = false;
    return GIM_OK;
}

struct old_message {
    int64_t id, sender_id, sender_seq;
    int receiver_type;
    int64_t receiver_id, receiver_seq;
};

/* Collects first, deletes after: no statement walks a table while it shrinks. */
static gim_err find_messages(struct store_conn *db, int64_t cutoff, int max,
                             struct old_message *out, int *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_OLD_MESSAGES, &res, NULL, STORE_INT(cutoff), STORE_INT(max),
                       STORE_INT((int64_t)max * HEAD_WINDOW));
    *n = 0;
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && *n < max; i++)
        out[(*n)++] = (struct old_message){.id = pgstore_int(res, i, 0),
                                           .sender_id = pgstore_int(res, i, 1),
                                           .sender_seq = pgstore_int(res, i, 2),
                                           .receiver_type = (int)pgstore_int(res, i, 3),
                                           .receiver_id = pgstore_int(res, i, 4),
                                           .receiver_seq = pgstore_int(res, i, 5)};
    PQclear(res);
    return e;
}

static gim_err delete_message(struct store_conn *db, const struct old_message *m)
{
    gim_err e;
    if ((e = PG_RUN(db, PG_DEL_INBOX, NULL, NULL, STORE_INT(m->sender_id), STORE_INT(m->sender_seq),
                    STORE_INT(m->id))) != GIM_OK)
        return e;
    /* RT_USER keeps the receiver's copy in the row itself (the same one for a self-send). */
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_USER && m->receiver_seq > 0 &&
        (e = PG_RUN(db, PG_DEL_INBOX, NULL, NULL, STORE_INT(m->receiver_id),
                    STORE_INT(m->receiver_seq), STORE_INT(m->id))) != GIM_OK)
        return e;
    if ((e = PG_RUN(db, PG_DEL_GROUP_INBOX, NULL, NULL, STORE_INT(m->id))) != GIM_OK ||
        (e = PG_RUN(db, PG_DEL_GROUP_COPY, NULL, NULL, STORE_INT(m->id))) != GIM_OK)
        return e;
    return PG_RUN(db, PG_DEL_MESSAGE, NULL, NULL, STORE_INT(m->id));
}

static gim_err retention_messages(struct wctx *w, int64_t cutoff, int max, int *deleted)
{
    struct old_message *old = malloc((size_t)max * sizeof *old);
    int n = 0;
    gim_err e = old ? find_messages(w->db, cutoff, max, old, &n) : GIM_ENOMEM;
    *deleted = 0;
    for (int i = 0; e == GIM_OK && i < n; i++)
        e = delete_message(w->db, &old[i]);
    if (e == GIM_OK)
        *deleted = n;
    free(old);
    return e;
}

/* Room log entries with their room idempotency records: the key row, then its details. */
static gim_err retention_rooms(struct wctx *w, int64_t cutoff, int max, int *deleted)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_OLD_ROOM, &res, NULL, STORE_INT(cutoff), STORE_INT(max));
    int n = e == GIM_OK ? PQntuples(res) : 0;
    *deleted = 0;
    n = n < max ? n : max;
    for (int i = 0; e == GIM_OK && i < n; i++) {
        int64_t room_id = pgstore_int(res, i, 0), seq = pgstore_int(res, i, 1),
                device_id = pgstore_int(res, i, 2);
        e = PG_RUN(w->db, PG_DEL_ROOM_IDEM, NULL, NULL, STORE_INT(device_id), STORE_INT(room_id),
                   STORE_INT(seq));
        if (e == GIM_OK)
            e = PG_RUN(w->db, PG_DEL_ROOM_IDEM_DETAILS, NULL, NULL, STORE_INT(device_id),
                       STORE_INT(room_id), STORE_INT(seq));
        if (e == GIM_OK)
            e = PG_RUN(w->db, PG_DEL_ROOM, NULL, NULL, STORE_INT(room_id), STORE_INT(seq));
    }
    PQclear(res);
    if (e == GIM_OK)
        *deleted = n;
    return e;
}

const struct storage_maint_ops storage_pg_maint = {
    .ready = ready,
    .try_lock = try_lock,
    .seen = seen,
    .seen_gateway = seen_gateway,
    .sweep = sweep,
    .scrub_wal = scrub_wal,
    .prune_idempotency = prune_idempotency,
    .prune_room_idempotency = prune_room_idempotency,
    .prune_operator_idempotency = prune_operator_idempotency,
    .retention_messages = retention_messages,
    .retention_rooms = retention_rooms,
};
