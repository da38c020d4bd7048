#include "room.h"

#include <stdlib.h>

#include "config.h"
#include "seq.h"

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

/* Arena room for a loaded view besides its blobs: the view and alignment padding. */
#define VIEW_OVERHEAD (sizeof(struct message_view) + 3 * 16)

static gim_err insert(struct store_conn *db, int64_t room_id, int64_t seq,
                      const struct message_new *m)
{
    uint8_t stackbuf[8 * 16];
    uint8_t *ids = NULL;
    sqlite3_stmt *st = store_stmt(db, SQL_INSERT);
    if (!st)
        return GIM_EINTERNAL;
    if (m->n_to_user_ids) {
        ids = m->n_to_user_ids <= 16 ? stackbuf : malloc(8 * m->n_to_user_ids);
        if (!ids) {
            store_done(st);
            return GIM_ENOMEM;
        }
        message_pack_ids(m->to_user_ids, m->n_to_user_ids, ids);
    }
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int(st, 3, m->sender_type);
    sqlite3_bind_int64(st, 4, m->sender_id);
    sqlite3_bind_int64(st, 5, m->sender_device_id);
    if (ids)
        sqlite3_bind_blob(st, 6, ids, (int)(8 * m->n_to_user_ids), SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 7, m->message_type);
    /* Never NULL: NULL content means "erased" (recall), an empty message is not that. */
    sqlite3_bind_blob(st, 8, m->content ? (const void *)m->content : "", (int)m->content_len,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, m->send_time);
    int rc = sqlite3_step(st);
    store_done(st);
    if (ids != stackbuf)
        free(ids);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err prune(struct store_conn *db, int64_t room_id, int64_t upto)
{
    sqlite3_stmt *st = store_stmt(db, SQL_PRUNE);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, upto);
    int rc = sqlite3_step(st);
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

gim_err room_append(struct wctx *w, int64_t room_id, const struct message_new *m, int64_t *seq)
{
    int64_t retain = (int64_t)w->cfg->rooms.retain_messages;
    gim_err e = seq_next(w->seq, w->db, SEQ_ROOM, room_id, seq);
    if (e != GIM_OK)
        return e;
    if ((e = insert(w->db, room_id, *seq, m)) != GIM_OK)
        return e;
    /*
     * Seqs are gap-free and every earlier entry below *seq - retain went the
     * same way, so this deletes exactly the oldest entry (or, after
     * retain_messages was lowered, the oldest few).
     */
    if (*seq > retain)
        e = prune(w->db, room_id, *seq - retain);
    return e;
}

gim_err room_load(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                  struct message_view **out)
{
    gim_err e = GIM_OK;
    *a = (struct arena){0};
    sqlite3_stmt *st = store_stmt(db, SQL_LOAD);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, seq);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        e = rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
        goto out;
    }
    /* Sized from the row itself: the mentions blob (5) and the content (7). */
    size_t need =
        VIEW_OVERHEAD + (size_t)sqlite3_column_bytes(st, 5) + (size_t)sqlite3_column_bytes(st, 7);
    if ((e = arena_init(a, need)) != GIM_OK)
        goto out;
    if (!(*out = message_from_row(st, 0, seq, a)))
        e = GIM_EINTERNAL; /* sized to fit: a miss is a bug */
out:
    store_done(st);
    return e;
}

gim_err room_page(struct store_conn *db, const struct gim_config *cfg, int64_t room_id,
                  int64_t after, size_t max_bytes, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    sqlite3_stmt *st = store_stmt(db, SQL_PAGE);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, (int64_t)cfg->sync.page_size + 1);
    gim_err e = message_page(st, cfg->sync.page_size, max_bytes, buf, len);
    store_done(st);
    return e;
}

gim_err room_subscribe(struct store_conn *db, const struct session *s, int64_t room_id,
                       int64_t now_ms)
{
    sqlite3_stmt *st = store_stmt(db, SQL_SUBSCRIBE);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, room_id);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int64(st, 3, s->device_id);
    sqlite3_bind_int64(st, 4, s->user_id);
    sqlite3_bind_text(st, 5, s->gateway_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db->db);
    store_done(st);
    if (rc != SQLITE_DONE)
        return store_err(rc);
    return changed == 1 ? GIM_OK : GIM_EUNAUTH;
}

gim_err room_subscribed(struct store_conn *db, const struct session *s, int64_t *room_id)
{
    sqlite3_stmt *st = store_stmt(db, SQL_SUBSCRIBED);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, s->device_id);
    sqlite3_bind_int64(st, 2, s->user_id);
    sqlite3_bind_text(st, 3, s->gateway_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *room_id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_done(st);
    if (rc == SQLITE_ROW)
        return GIM_OK;
    return rc == SQLITE_DONE ? GIM_EUNAUTH : store_err(rc);
}
