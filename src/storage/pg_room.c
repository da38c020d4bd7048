/*
 * The room operations on postgres (storage.h): the statements SQLite runs
 * ($n), and what SQLite's one writer gave for free (several instances on one
 * database).
 *
 * A room's row in room_seq is its lock: a send takes it with the room's next
 * seq (seq.c), a subscribe with PG_LOCK_ROOM (an upsert that changes
 * nothing), both until the commit. So the sends and subscriptions of one room
 * follow one another whichever instance runs them, and the page and the
 * pushes meet as on SQLite: a subscribe that commits first is among the
 * subscribers the later send reads (PG_SUBSCRIBERS, in its transaction,
 * after its seq), a send that commits first is in the later subscribe's page.
 * Locks go in one order: the device row (PG_CURRENT, FOR UPDATE), then the
 * rooms it leaves and joins by ascending id; a send locks its idempotency key
 * and then its room, and no device row.
 */
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "pgstore.h"
#include "presence.h"
#include "storage.h"
#include "storage/pg_int.h"

/*
 * room_message has no receiver columns (the room is the key), so the select
 * list supplies them to keep MESSAGE_COLUMNS' order for message_from_pgrow():
 * receiver_type 3 = RT_ROOM.
 */
#define ROOM_COLUMNS                                                                               \
    "r.sender_type, r.sender_id, r.sender_device_id, 3, r.room_id, r.to_user_ids, "                \
    "r.message_type, r.content, r.send_time, r.status"

static const char PG_INSERT[] =
    "INSERT INTO room_message (room_id, seq, sender_type, sender_id, sender_device_id, "
    "to_user_ids, message_type, content, send_time, status) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)";
static const char PG_PRUNE[] = "DELETE FROM room_message WHERE room_id = $1 AND seq <= $2";
static const char PG_LOAD[] =
    "SELECT " ROOM_COLUMNS " FROM room_message r WHERE r.room_id = $1 AND r.seq = $2";
/* One statement, one snapshot: room seq N+1 commits after N (the room's row lock). */
static const char PG_PAGE[] = "SELECT r.seq, " ROOM_COLUMNS " FROM room_message r "
                              "WHERE r.room_id = $1 AND r.seq > $2 ORDER BY r.seq LIMIT $3";
static const char PG_CURRENT[] = "SELECT room_id FROM device WHERE device_id = $1 AND "
                                 "user_id = $2 AND gateway_id = $3 AND online = 1 FOR UPDATE";
static const char PG_LOCK_ROOM[] = "INSERT INTO room_seq (room_id, seq) VALUES ($1, 0) "
                                   "ON CONFLICT (room_id) DO UPDATE SET seq = room_seq.seq";
static const char PG_SUBSCRIBE[] =
    "UPDATE device SET room_id = $1, updated_at = $2 WHERE device_id = $3 AND user_id = $4 "
    "AND gateway_id = $5 AND online = 1";
static const char PG_SUBSCRIBED[] = "SELECT room_id FROM device WHERE device_id = $1 AND "
                                    "user_id = $2 AND gateway_id = $3 AND online = 1";
/* room_id <> 0 lets a generic plan use the partial index device_room (migration 0003). */
static const char PG_SUBSCRIBERS[] = "SELECT device_id, user_id, gateway_id, room_id FROM device "
                                     "WHERE room_id = $1 AND room_id <> 0 AND online = 1";

static gim_err insert(struct store_conn *db, int64_t room_id, int64_t seq,
                      const struct message_new *m)
{
    struct message_ids ids;
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return GIM_ENOMEM;
    /* Never NULL content: NULL means "erased" (recall), an empty message is not that. */
    gim_err e =
        PG_RUN(db, PG_INSERT, NULL, NULL, STORE_INT(room_id), STORE_INT(seq),
               STORE_INT(m->sender_type), STORE_INT(m->sender_id), STORE_INT(m->sender_device_id),
               STORE_BLOB(ids.blob, ids.len), STORE_INT(m->message_type),
               STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
               STORE_INT(m->send_time));
    message_ids_free(&ids);
    return e;
}

static gim_err append(struct wctx *w, int64_t room_id, int64_t seq, const struct message_new *m,
                      int64_t retain)
{
    gim_err e = insert(w->db, room_id, seq, m);
    if (e != GIM_OK)
        return e;
    /*
     * As on SQLite, this deletes exactly the oldest entry (or the oldest few):
     * the room's row lock, taken with the seq, orders the sends of every
     * instance the same way.
     */
    if (seq > retain)
        e = PG_RUN(w->db, PG_PRUNE, NULL, NULL, STORE_INT(room_id), STORE_INT(seq - retain));
    return e;
}

static gim_err load(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                    struct message_view **out)
{
    PGresult *res = NULL;
    *a = (struct arena){0};
    gim_err e = PG_RUN(db, PG_LOAD, &res, NULL, STORE_INT(room_id), STORE_INT(seq));
    if (e == GIM_OK && PQntuples(res) == 0)
        e = GIM_ENOTFOUND;
    /* Sized from the row itself: the mentions blob (5) and the content (7). */
    if (e == GIM_OK)
        e = arena_init(a, MESSAGE_VIEW_OVERHEAD + (size_t)PQgetlength(res, 0, 5) +
                              (size_t)PQgetlength(res, 0, 7));
    if (e == GIM_OK && !(*out = message_from_pgrow(res, 0, 0, seq, a)))
        e = GIM_EINTERNAL; /* sized to fit: a miss is a bug */
    PQclear(res);
    return e;
}

static gim_err page(struct store_conn *db, int64_t room_id, int64_t after, size_t page_size,
                    size_t max_bytes, uint8_t **buf, size_t *len)
{
    PGresult *res = NULL;
    *buf = NULL;
    gim_err e = PG_RUN(db, PG_PAGE, &res, NULL, STORE_INT(room_id), STORE_INT(after),
                       STORE_INT((int64_t)page_size + 1));
    if (e == GIM_OK)
        e = message_page_pg(res, page_size, max_bytes, buf, len);
    PQclear(res);
    return e;
}

/* The room's lock until the commit (see PG_LOCK_ROOM); room 0 is no room. */
static gim_err lock_room(struct store_conn *db, int64_t room_id)
{
    return room_id ? PG_RUN(db, PG_LOCK_ROOM, NULL, NULL, STORE_INT(room_id)) : GIM_OK;
}

static gim_err subscribe(struct store_conn *db, const struct session *s, int64_t room_id,
                         int64_t now_ms)
{
    PGresult *res = NULL;
    int changed = 0;
    gim_err e = PG_RUN(db, PG_CURRENT, &res, NULL, STORE_INT(s->device_id), STORE_INT(s->user_id),
                       STORE_TEXT(s->gateway_id));
    if (e != GIM_OK)
        return e;
    bool found = PQntuples(res) == 1;
    int64_t old = found ? pgstore_int(res, 0, 0) : 0;
    PQclear(res);
    if (!found)
        return GIM_EUNAUTH;
    /* The room left and the room joined, by ascending id (one lock when they are the same). */
    int64_t lo = old < room_id ? old : room_id, hi = old < room_id ? room_id : old;
    if ((e = lock_room(db, lo)) != GIM_OK || (hi != lo && (e = lock_room(db, hi)) != GIM_OK))
        return e;
    e = PG_RUN(db, PG_SUBSCRIBE, NULL, &changed, STORE_INT(room_id), STORE_INT(now_ms),
               STORE_INT(s->device_id), STORE_INT(s->user_id), STORE_TEXT(s->gateway_id));
    if (e != GIM_OK)
        return e;
    return changed == 1 ? GIM_OK : GIM_EUNAUTH; /* the row is locked: it is still there */
}

static gim_err subscribed(struct store_conn *db, const struct session *s, int64_t *room_id)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_SUBSCRIBED, &res, NULL, STORE_INT(s->device_id),
                       STORE_INT(s->user_id), STORE_TEXT(s->gateway_id));
    *room_id = 0;
    if (e == GIM_OK && PQntuples(res) == 1)
        *room_id = pgstore_int(res, 0, 0);
    else if (e == GIM_OK)
        e = GIM_EUNAUTH;
    PQclear(res);
    return e;
}

static gim_err subscribers(struct store_conn *db, int64_t room_id, struct session **out, size_t *n)
{
    PGresult *res = NULL;
    *out = NULL;
    *n = 0;
    gim_err e = PG_RUN(db, PG_SUBSCRIBERS, &res, NULL, STORE_INT(room_id));
    if (e != GIM_OK)
        return e;
    size_t rows = (size_t)PQntuples(res);
    if (rows && !(*out = calloc(rows, sizeof **out))) {
        PQclear(res);
        return GIM_ENOMEM;
    }
    for (size_t i = 0; i < rows; i++)
        pg_session(&(*out)[i], res, (int)i, 0);
    *n = rows;
    PQclear(res);
    return GIM_OK;
}

const struct storage_room_ops storage_pg_room = {
    .append = append,
    .load = load,
    .page = page,
    .subscribe = subscribe,
    .subscribed = subscribed,
    .subscribers = subscribers,
};
