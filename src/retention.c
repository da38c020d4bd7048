#include "retention.h"

#include <stdlib.h>

#include "config.h"
#include "log.h"
#include "pgstore.h"
#include "proto.h"
#include "store.h"

#define DAY_MS (24LL * 60 * 60 * 1000)
/* How far into the head of the message table one call looks, in multiples of max_rows. */
#define HEAD_WINDOW 4

/* The oldest messages by id, of which those before the cutoff; see retention.h. */
static const char SQL_OLD_MESSAGES[] =
    "SELECT id, sender_id, sender_seq, sender_device_id, receiver_type, receiver_id, receiver_seq "
    "FROM (SELECT id, sender_id, sender_seq, sender_device_id, receiver_type, receiver_id, "
    "receiver_seq, send_time FROM message ORDER BY id LIMIT ?3) "
    "WHERE send_time < ?1 LIMIT ?2";
/* The message_id check keeps a copy that is not this message's (a bad row) untouched. */
static const char SQL_DEL_INBOX[] =
    "DELETE FROM inbox WHERE user_id = ?1 AND seq = ?2 AND message_id = ?3";
static const char SQL_DEL_GROUP_INBOX[] =
    "DELETE FROM inbox WHERE message_id = ?1 AND (user_id, seq) IN "
    "(SELECT user_id, seq FROM group_copy WHERE message_id = ?1)";
static const char SQL_DEL_GROUP_COPY[] = "DELETE FROM group_copy WHERE message_id = ?1";
/* Records are keyed by device: the sender's device narrows the search to its own records. */
static const char SQL_DEL_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = ?1 AND message_id = ?2";
static const char SQL_DEL_MESSAGE[] = "DELETE FROM message WHERE id = ?1";

/* Room logs are trimmed to rooms.retain_messages each, so this scan stays small. */
static const char SQL_OLD_ROOM[] =
    "SELECT room_id, seq, sender_device_id FROM room_message WHERE send_time < ?1 LIMIT ?2";
static const char SQL_DEL_ROOM[] = "DELETE FROM room_message WHERE room_id = ?1 AND seq = ?2";
/* A room send's record is a key row (message_id NULL) and its details. */
static const char SQL_DEL_ROOM_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = ?1 AND message_id IS NULL AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = ?1 AND room_id = ?2 "
    "AND room_seq = ?3)";
static const char SQL_DEL_ROOM_IDEM_DETAILS[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND room_id = ?2 AND room_seq = ?3";

/*
 * PostgreSQL: the same statements with $n parameters. Retention runs on the
 * instance that holds the maintenance lock (maint.c), one at a time; a
 * deleted row's old version stays in the table's file until VACUUM reuses
 * its space (docs/scale-out.md, "What erased means on PostgreSQL").
 */
static const char PG_OLD_MESSAGES[] =
    "SELECT id, sender_id, sender_seq, sender_device_id, receiver_type, receiver_id, receiver_seq "
    "FROM (SELECT id, sender_id, sender_seq, sender_device_id, receiver_type, receiver_id, "
    "receiver_seq, send_time FROM message ORDER BY id LIMIT $3) h "
    "WHERE send_time < $1 ORDER BY id LIMIT $2";
static const char PG_DEL_INBOX[] =
    "DELETE FROM inbox WHERE user_id = $1 AND seq = $2 AND message_id = $3";
static const char PG_DEL_GROUP_INBOX[] =
    "DELETE FROM inbox WHERE message_id = $1 AND (user_id, seq) IN "
    "(SELECT user_id, seq FROM group_copy WHERE message_id = $1)";
static const char PG_DEL_GROUP_COPY[] = "DELETE FROM group_copy WHERE message_id = $1";
static const char PG_DEL_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = $1 AND message_id = $2";
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

struct old_message {
    int64_t id, sender_id, sender_seq, device_id;
    int receiver_type;
    int64_t receiver_id, receiver_seq;
};

struct old_room {
    int64_t room_id, seq, device_id;
};

static gim_err find_messages_pg(struct store_conn *db, int64_t cutoff, int max,
                                struct old_message *out, int *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_OLD_MESSAGES, &res, NULL, STORE_INT(cutoff), STORE_INT(max),
                       STORE_INT((int64_t)max * HEAD_WINDOW));
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && *n < max; i++)
        out[(*n)++] = (struct old_message){.id = pgstore_int(res, i, 0),
                                           .sender_id = pgstore_int(res, i, 1),
                                           .sender_seq = pgstore_int(res, i, 2),
                                           .device_id = pgstore_int(res, i, 3),
                                           .receiver_type = (int)pgstore_int(res, i, 4),
                                           .receiver_id = pgstore_int(res, i, 5),
                                           .receiver_seq = pgstore_int(res, i, 6)};
    PQclear(res);
    return e;
}

/* Collects first, deletes after: no statement walks a table while it shrinks. */
static gim_err find_messages(struct store_conn *db, int64_t cutoff, int max,
                             struct old_message *out, int *n)
{
    *n = 0;
    if (store_is_pg(db))
        return find_messages_pg(db, cutoff, max, out, n);
    sqlite3_stmt *st = store_stmt(db, SQL_OLD_MESSAGES);
    *n = 0;
    if (!st)
        return GIM_EINTERNAL;
    int rc =
        STORE_BIND(st, STORE_INT(cutoff), STORE_INT(max), STORE_INT((int64_t)max * HEAD_WINDOW));
    if (rc == SQLITE_OK)
        while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            out[*n] = (struct old_message){.id = sqlite3_column_int64(st, 0),
                                           .sender_id = sqlite3_column_int64(st, 1),
                                           .sender_seq = sqlite3_column_int64(st, 2),
                                           .device_id = sqlite3_column_int64(st, 3),
                                           .receiver_type = sqlite3_column_int(st, 4),
                                           .receiver_id = sqlite3_column_int64(st, 5),
                                           .receiver_seq = sqlite3_column_int64(st, 6)};
            (*n)++;
        }
    store_done(st);
    return *n == max || rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err delete_message(struct store_conn *db, const struct old_message *m)
{
    gim_err e;
    if ((e = STORE_RUN2(db, SQL_DEL_INBOX, PG_DEL_INBOX, NULL, STORE_INT(m->sender_id),
                        STORE_INT(m->sender_seq), STORE_INT(m->id))) != GIM_OK)
        return e;
    /* RT_USER keeps the receiver's copy in the row itself (the same one for a self-send). */
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_USER && m->receiver_seq > 0 &&
        (e = STORE_RUN2(db, SQL_DEL_INBOX, PG_DEL_INBOX, NULL, STORE_INT(m->receiver_id),
                        STORE_INT(m->receiver_seq), STORE_INT(m->id))) != GIM_OK)
        return e;
    if ((e = STORE_RUN2(db, SQL_DEL_GROUP_INBOX, PG_DEL_GROUP_INBOX, NULL, STORE_INT(m->id))) !=
            GIM_OK ||
        (e = STORE_RUN2(db, SQL_DEL_GROUP_COPY, PG_DEL_GROUP_COPY, NULL, STORE_INT(m->id))) !=
            GIM_OK ||
        (e = STORE_RUN2(db, SQL_DEL_IDEM, PG_DEL_IDEM, NULL, STORE_INT(m->device_id),
                        STORE_INT(m->id))) != GIM_OK)
        return e;
    return STORE_RUN2(db, SQL_DEL_MESSAGE, PG_DEL_MESSAGE, NULL, STORE_INT(m->id));
}

static gim_err prune_messages(struct store_conn *db, int64_t cutoff, int max, int *deleted)
{
    struct old_message *old = malloc((size_t)max * sizeof *old);
    int n = 0;
    gim_err e = old ? find_messages(db, cutoff, max, old, &n) : GIM_ENOMEM;
    for (int i = 0; e == GIM_OK && i < n; i++)
        e = delete_message(db, &old[i]);
    if (e == GIM_OK)
        *deleted = n;
    free(old);
    return e;
}

static gim_err prune_rooms(struct store_conn *db, int64_t cutoff, int max, int *deleted)
{
    struct old_room *old = malloc((size_t)max * sizeof *old);
    sqlite3_stmt *st = NULL;
    gim_err e = GIM_OK;
    int n = 0, rc = SQLITE_DONE;
    if (!old) {
        e = GIM_ENOMEM;
        goto out;
    }
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        if ((e = PG_RUN(db, PG_OLD_ROOM, &res, NULL, STORE_INT(cutoff), STORE_INT(max))) != GIM_OK)
            goto out;
        for (int i = 0; i < PQntuples(res) && n < max; i++)
            old[n++] = (struct old_room){pgstore_int(res, i, 0), pgstore_int(res, i, 1),
                                         pgstore_int(res, i, 2)};
        PQclear(res);
        goto collected;
    }
    if (!(st = store_stmt(db, SQL_OLD_ROOM))) {
        e = GIM_EINTERNAL;
        goto out;
    }
    rc = STORE_BIND(st, STORE_INT(cutoff), STORE_INT(max));
    if (rc == SQLITE_OK)
        while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
            old[n++] = (struct old_room){sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                                         sqlite3_column_int64(st, 2)};
    store_done(st);
    if (n < max && rc != SQLITE_DONE) {
        e = store_err(rc);
        goto out;
    }
collected:
    for (int i = 0; e == GIM_OK && i < n; i++) {
        e = STORE_RUN2(db, SQL_DEL_ROOM_IDEM, PG_DEL_ROOM_IDEM, NULL, STORE_INT(old[i].device_id),
                       STORE_INT(old[i].room_id), STORE_INT(old[i].seq));
        if (e == GIM_OK)
            e = STORE_RUN2(db, SQL_DEL_ROOM_IDEM_DETAILS, PG_DEL_ROOM_IDEM_DETAILS, NULL,
                           STORE_INT(old[i].device_id), STORE_INT(old[i].room_id),
                           STORE_INT(old[i].seq));
        if (e == GIM_OK)
            e = STORE_RUN2(db, SQL_DEL_ROOM, PG_DEL_ROOM, NULL, STORE_INT(old[i].room_id),
                           STORE_INT(old[i].seq));
    }
    if (e == GIM_OK)
        *deleted = n;
out:
    free(old);
    return e;
}

/* PostgreSQL: the same steps in one transaction of the writer's connection. */
static gim_err run_pg(struct wctx *w, int64_t cutoff, int max_rows, int *deleted)
{
    int messages = 0, rooms = 0;
    gim_err e;
    if (pgstore_in_transaction(w->db)) {
        log_error("retention called inside a transaction", "%s", "skipped");
        return GIM_EINTERNAL;
    }
    if ((e = pgstore_begin(w->db)) != GIM_OK)
        goto fail;
    if ((e = prune_messages(w->db, cutoff, max_rows, &messages)) != GIM_OK)
        goto fail;
    if (messages < max_rows &&
        (e = prune_rooms(w->db, cutoff, max_rows - messages, &rooms)) != GIM_OK)
        goto fail;
    if ((e = pgstore_exec(w->db, "COMMIT")) != GIM_OK)
        goto fail;
    *deleted = messages + rooms;
    if (*deleted > 0)
        log_info("retention pruned", "messages=%d room_messages=%d cutoff_ms=%lld backend=postgres",
                 messages, rooms, (long long)cutoff);
    return GIM_OK;
fail:
    log_warn("retention failed", "code=%s sqlstate=%s", gim_err_name(e), pgstore_sqlstate(w->db));
    if (pgstore_in_transaction(w->db))
        pgstore_exec(w->db, "ROLLBACK");
    return e;
}

gim_err retention_run(struct wctx *w, int64_t now_ms, int max_rows, int *deleted)
{
    int messages = 0, rooms = 0;
    gim_err e;
    *deleted = 0;
    if (w->cfg->retention.days == 0 || max_rows <= 0)
        return GIM_OK;
    if (store_is_pg(w->db))
        return run_pg(w, now_ms - (int64_t)w->cfg->retention.days * DAY_MS, max_rows, deleted);
    if (!sqlite3_get_autocommit(w->db->db)) {
        log_error("retention called inside a transaction", "%s", "skipped");
        return GIM_EINTERNAL;
    }
    int64_t cutoff = now_ms - (int64_t)w->cfg->retention.days * DAY_MS;
    if ((e = store_exec(w->db, "BEGIN IMMEDIATE")) != GIM_OK)
        goto fail;
    if ((e = prune_messages(w->db, cutoff, max_rows, &messages)) != GIM_OK)
        goto fail;
    if (messages < max_rows &&
        (e = prune_rooms(w->db, cutoff, max_rows - messages, &rooms)) != GIM_OK)
        goto fail;
    if ((e = store_exec(w->db, "COMMIT")) != GIM_OK)
        goto fail;
    *deleted = messages + rooms;
    if (*deleted > 0) {
        w->scrub_wal = true; /* the deleted content is still in WAL frames */
        log_info("retention pruned", "messages=%d room_messages=%d cutoff_ms=%lld", messages, rooms,
                 (long long)cutoff);
    }
    return GIM_OK;
fail:
    log_warn("retention failed", "code=%s error=\"%s\"", gim_err_name(e),
             sqlite3_errmsg(w->db->db));
    if (!sqlite3_get_autocommit(w->db->db))
        sqlite3_exec(w->db->db, "ROLLBACK", NULL, NULL, NULL);
    return e;
}
