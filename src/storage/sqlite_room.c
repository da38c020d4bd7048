/*
 * The room operations on sqlite (storage.h): room_message rows and the
 * device row's room_id, on the one writer's connection (or a reader's, for
 * loads and pages). The one writer orders a room's sends and subscriptions,
 * so nothing here locks; pushes follow presence (room.h).
 */
#include "message.h"
#include "presence.h"
#include "storage.h"
#include "storage/sqlite_int.h"

/*
 * room_message has no receiver columns (the room is the key), so the select
 * list supplies them to keep MESSAGE_COLUMNS' order for message_from_row():
 * receiver_type 3 = RT_ROOM.
 */
#define ROOM_COLUMNS                                                                               \
    "r.sender_type, r.sender_id, r.sender_device_id, 3, r.room_id, r.to_user_ids, "                \
    "r.message_type, r.content, r.send_time, r.status"

static const char SQL_INSERT[] =
    "INSERT INTO room_message (room_id, seq, sender_type, sender_id, sender_device_id, "
    "to_user_ids, message_type, content, send_time, status) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)";
/* A range on the primary key's prefix: it touches only the entries it deletes. */
static const char SQL_PRUNE[] = "DELETE FROM room_message WHERE room_id = ?1 AND seq <= ?2";
static const char SQL_LOAD[] =
    "SELECT " ROOM_COLUMNS " FROM room_message r WHERE r.room_id = ?1 AND r.seq = ?2";
static const char SQL_PAGE[] = "SELECT r.seq, " ROOM_COLUMNS " FROM room_message r "
                               "WHERE r.room_id = ?1 AND r.seq > ?2 ORDER BY r.seq LIMIT ?3";
/* Guarded by the whole session so a subscription never lands on a session that ended. */
static const char SQL_SUBSCRIBE[] =
    "UPDATE device SET room_id = ?1, updated_at = ?2 WHERE device_id = ?3 AND user_id = ?4 "
    "AND gateway_id = ?5 AND online = 1";
static const char SQL_SUBSCRIBED[] = "SELECT room_id FROM device WHERE device_id = ?1 AND "
                                     "user_id = ?2 AND gateway_id = ?3 AND online = 1";

static gim_err insert(struct store_conn *db, int64_t room_id, int64_t seq,
                      const struct message_new *m)
{
    struct message_ids ids;
    sqlite3_stmt *st = store_stmt(db, SQL_INSERT);
    if (!st)
        return GIM_EINTERNAL;
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return GIM_ENOMEM;
    /* Never NULL content: NULL means "erased" (recall), an empty message is not that. */
    int rc = STORE_BIND(st, STORE_INT(room_id), STORE_INT(seq), STORE_INT(m->sender_type),
                        STORE_INT(m->sender_id), STORE_INT(m->sender_device_id),
                        STORE_BLOB(ids.blob, ids.len), STORE_INT(m->message_type),
                        STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
                        STORE_INT(m->send_time));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    store_done(st);
    message_ids_free(&ids);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err append(struct wctx *w, int64_t room_id, int64_t seq, const struct message_new *m,
                      int64_t retain)
{
    gim_err e = insert(w->db, room_id, seq, m);
    if (e != GIM_OK)
        return e;
    /*
     * Seqs are gap-free and every earlier entry below seq - retain went the
     * same way, so this deletes exactly the oldest entry (or, after
     * retain_messages was lowered, the oldest few).
     */
    if (seq > retain)
        e = STORE_RUN(w->db, SQL_PRUNE, NULL, STORE_INT(room_id), STORE_INT(seq - retain));
    return e;
}

static gim_err load(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                    struct message_view **out)
{
    gim_err e = GIM_OK;
    *a = (struct arena){0};
    sqlite3_stmt *st = store_stmt(db, SQL_LOAD);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(room_id), STORE_INT(seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
        goto out;
    }
    /* Sized from the row itself: the mentions blob (5) and the content (7). */
    size_t need = MESSAGE_VIEW_OVERHEAD + (size_t)sqlite3_column_bytes(st, 5) +
                  (size_t)sqlite3_column_bytes(st, 7);
    if ((e = arena_init(a, need)) != GIM_OK)
        goto out;
    if (!(*out = message_from_row(st, 0, seq, a)))
        e = GIM_EINTERNAL; /* sized to fit: a miss is a bug */
out:
    store_done(st);
    return e;
}

static gim_err page(struct store_conn *db, int64_t room_id, int64_t after, size_t page_size,
                    size_t max_bytes, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    sqlite3_stmt *st = store_stmt(db, SQL_PAGE);
    if (!st)
        return GIM_EINTERNAL;
    int rc =
        STORE_BIND(st, STORE_INT(room_id), STORE_INT(after), STORE_INT((int64_t)page_size + 1));
    gim_err e = rc == SQLITE_OK ? message_page(st, page_size, max_bytes, buf, len) : store_err(rc);
    store_done(st);
    return e;
}

static gim_err subscribe(struct store_conn *db, const struct session *s, int64_t room_id,
                         int64_t now_ms)
{
    sqlite3_stmt *st = store_stmt(db, SQL_SUBSCRIBE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(room_id), STORE_INT(now_ms), STORE_INT(s->device_id),
                        STORE_INT(s->user_id), STORE_TEXT(s->gateway_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int changed = sqlite3_changes(db->db);
    store_done(st);
    if (rc != SQLITE_DONE)
        return store_err(rc);
    return changed == 1 ? GIM_OK : GIM_EUNAUTH;
}

static gim_err subscribed(struct store_conn *db, const struct session *s, int64_t *room_id)
{
    sqlite3_stmt *st = store_stmt(db, SQL_SUBSCRIBED);
    *room_id = 0;
    if (!st)
        return GIM_EINTERNAL;
    int rc =
        STORE_BIND(st, STORE_INT(s->device_id), STORE_INT(s->user_id), STORE_TEXT(s->gateway_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *room_id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_done(st);
    if (rc == SQLITE_ROW)
        return GIM_OK;
    return rc == SQLITE_DONE ? GIM_EUNAUTH : store_err(rc);
}

/* SQLite's room pushes follow presence (the one writer keeps it exact): never asked. */
static gim_err subscribers(struct store_conn *db, int64_t room_id, struct session **out, size_t *n)
{
    (void)db;
    (void)room_id;
    *out = NULL;
    *n = 0;
    return GIM_EINTERNAL;
}

const struct storage_room_ops storage_sqlite_room = {
    .append = append,
    .load = load,
    .page = page,
    .subscribe = subscribe,
    .subscribed = subscribed,
    .subscribers = subscribers,
};
