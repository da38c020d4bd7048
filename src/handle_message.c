/*
 * PT_MESSAGE: a client sends a message to a user, a group or a room.
 *
 * prepare() validates everything that needs no database and builds the
 * message as it will be stored: the sender comes from the session, never
 * from the client, so no one can send as someone else. write() runs in the
 * writer's transaction: it answers a retried request (same device and
 * request_id, within idempotency.window_seconds) from the stored message,
 * or takes one seq per inbox, stores the message row and its inbox entries
 * (group sends: also a group_copy row per member, which recall needs) and
 * remembers the request, all under the job's savepoint: all or nothing.
 * committed() pushes each online recipient its own copy after the commit,
 * from what write() kept in the scratch state: no query on the push path.
 * A room send (sender subscribed to the room) is one entry in the room's
 * log (room.h) instead, pushed to the room's subscribed devices.
 *
 * Ownership: r->scratch is a struct send_state allocated by prepare() and
 * freed by cleanup(); its message points into r->in, which the request owns
 * and frees after cleanup().
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fanout.h"
#include "group.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "pgstore.h"
#include "presence.h"
#include "push.h"
#include "request.h"
#include "room.h"
#include "seq.h"

/*
 * A user/group send's record names its message, whose send_time is when the
 * window started; a room send's (message_id NULL) has its details and time
 * in room_idempotency (migrations/0007_idempotency_small.sql).
 */
static const char SQL_IDEM_GET[] =
    "SELECT i.message_id, m.send_time, m.sender_id, m.sender_seq, length(m.content), "
    "length(m.to_user_ids), r.created_at, r.room_id, r.room_seq FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "LEFT JOIN room_idempotency r ON i.message_id IS NULL AND r.device_id = i.device_id "
    "AND r.request_id = i.request_id WHERE i.device_id = ?1 AND i.request_id = ?2";
/* A stale record (outside the window) is replaced by the new send's. */
static const char SQL_IDEM_PUT[] =
    "INSERT INTO idempotency (device_id, request_id, message_id) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (device_id, request_id) DO UPDATE SET message_id = excluded.message_id";
/* A stale room record that a user/group send replaced is never read again: pruned by its time. */
static const char SQL_IDEM_PUT_ROOM[] =
    "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_id, request_id) DO UPDATE SET "
    "created_at = excluded.created_at, room_id = excluded.room_id, room_seq = excluded.room_seq";

struct send_state {
    Pb__Message msg; /* as stored; seq is set per copy when replying and pushing */
    Pb__Sender sender;
    struct fanout_copy *to; /* every inbox that got a copy; NULL for a retried send */
    size_t n_to;
    int64_t message_id;
    int64_t sender_seq;
    int64_t room_seq; /* RT_ROOM: the new entry's room seq; 0 for a retried send */
    /* PostgreSQL: the recipients' online devices, read in the transaction (push targets). */
    struct session *targets;
    size_t n_targets;
    bool targets_known; /* targets holds them (PostgreSQL), none online included */
};

static gim_err send_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__message_send__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__Message *m = ((const Pb__MessageSend *)r->in)->message;
    const struct gim_config *cfg = r->cfg;

    if (!m)
        return request_fail(r, GIM_EBADREQ, "send: message is missing");
    if (m->message_type < PB__MESSAGE_TYPE__MT_TEXT ||
        m->message_type > PB__MESSAGE_TYPE__MT_CUSTOM)
        return request_fail(r, GIM_EBADREQ, "send: unknown message_type %d", (int)m->message_type);
    if (m->receiver_type != PB__RECEIVER_TYPE__RT_USER &&
        m->receiver_type != PB__RECEIVER_TYPE__RT_GROUP &&
        m->receiver_type != PB__RECEIVER_TYPE__RT_ROOM)
        return request_fail(r, GIM_EBADREQ, "send: unknown receiver_type %d",
                            (int)m->receiver_type);
    if (m->receiver_id <= 0)
        return request_fail(r, GIM_EBADREQ, "send: receiver_id must be > 0");
    char why[160] = "";
    if ((e = message_check(m, cfg, why, sizeof why)) != GIM_OK)
        return request_fail(r, e, "send: %s", why);

    struct send_state *s = calloc(1, sizeof *s);
    if (!s)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    pb__message__init(&s->msg);
    pb__sender__init(&s->sender);
    /* Whatever the client put in sender (nickname, avatar, extra) is dropped. */
    s->sender.sender_type = PB__SENDER_TYPE__ST_USER;
    s->sender.sender_id = r->sess.user_id;
    s->sender.device_id = r->sess.device_id;
    s->msg.sender = &s->sender;
    s->msg.receiver_type = m->receiver_type;
    s->msg.receiver_id = m->receiver_id;
    s->msg.to_user_ids = m->to_user_ids;
    s->msg.n_to_user_ids = m->n_to_user_ids;
    s->msg.message_type = m->message_type;
    s->msg.message_content = m->message_content;
    s->msg.status = PB__MESSAGE_STATUS__MS_NORMAL;
    r->scratch = s;
    return GIM_OK;
}

/* A send's reply: MessageSend{message = m}, the sender's copy as stored. */
static gim_err send_reply(struct request *r, Pb__Message *m)
{
    Pb__MessageSend reply = PB__MESSAGE_SEND__INIT;
    reply.message = m;
    return request_set_reply(r, &reply.base);
}

static gim_err store_failed(struct request *r, struct wctx *w, gim_err e, const char *what)
{
    log_warn("send failed", "device=%" PRId64 " step=%s code=%s error=\"%s\"", r->sess.device_id,
             what, gim_err_name(e), store_errmsg(w->db));
    return request_fail(r, e, "send: cannot store the message (%s)", what);
}

/* One copy in the receiver's inbox and one in the sender's (the same one for a self-send). */
static gim_err send_user(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t me = r->sess.user_id, to = s->msg.receiver_id;
    struct message_new m = message_new_of(&s->msg);
    gim_err e;

    s->to = calloc(2, sizeof *s->to);
    if (!s->to)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    if ((e = seq_next(w->seq, w->db, SEQ_USER, me, &m.sender_seq)) != GIM_OK)
        return store_failed(r, w, e, "sender seq");
    m.receiver_seq = m.sender_seq;
    if (to != me && (e = seq_next(w->seq, w->db, SEQ_USER, to, &m.receiver_seq)) != GIM_OK)
        return store_failed(r, w, e, "receiver seq");
    if ((e = message_insert(w->db, &m, &s->message_id)) != GIM_OK)
        return store_failed(r, w, e, "message");
    s->to[s->n_to++] = (struct fanout_copy){me, m.sender_seq};
    if ((e = message_inbox_add(w->db, me, m.sender_seq, s->message_id)) != GIM_OK)
        return store_failed(r, w, e, "sender inbox");
    if (to != me) {
        s->to[s->n_to++] = (struct fanout_copy){to, m.receiver_seq};
        if ((e = message_inbox_add(w->db, to, m.receiver_seq, s->message_id)) != GIM_OK)
            return store_failed(r, w, e, "receiver inbox");
    }
    s->sender_seq = m.sender_seq;
    return GIM_OK;
}

/*
 * A copy for every member, the sender's included, read fresh in this
 * transaction, written by fanout_group() (fanout.h: the same fan-out as the
 * business API's group sends and notices). On PostgreSQL the group's row is
 * share-locked first: a membership change on another instance waits for
 * this send (or this send for it), so the members read here are the
 * members, and fanout_group() takes their seqs in ascending id order.
 */
static gim_err send_group(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t me = r->sess.user_id, gid = s->msg.receiver_id;
    int64_t *ids = NULL;
    size_t n = 0;
    enum group_role role;
    bool exists = true;
    /* The fan-out writes s's message; its copies (and targets) become s's. */
    struct fanout f = {.msg = s->msg};
    gim_err e;

    if (store_is_pg(w->db) &&
        ((e = group_exists(w->db, gid, GROUP_LOCK_SHARE, &exists)) != GIM_OK || !exists)) {
        e = e != GIM_OK ? store_failed(r, w, e, "group")
                        : request_fail(r, GIM_ENOTFOUND, "no group %" PRId64, gid);
        goto out;
    }
    if ((e = group_role(w->db, gid, me, &role)) != GIM_OK) {
        store_failed(r, w, e, "membership");
        goto out;
    }
    if (role == GROUP_NONE) {
        if (!store_is_pg(w->db) &&
            (e = group_exists(w->db, gid, GROUP_LOCK_NONE, &exists)) != GIM_OK) {
            store_failed(r, w, e, "group");
            goto out;
        }
        e = exists ? request_fail(r, GIM_EFORBIDDEN, "not a member of group %" PRId64, gid)
                   : request_fail(r, GIM_ENOTFOUND, "no group %" PRId64, gid);
        goto out;
    }
    if ((e = group_members(w->db, gid, &ids, &n)) != GIM_OK) {
        store_failed(r, w, e, "members");
        goto out;
    }
    e = fanout_group(w, &f, ids, n);
    s->to = f.to;
    s->n_to = f.n_to;
    s->targets = f.targets;
    s->n_targets = f.n_targets;
    s->targets_known = f.targets_known;
    if (e != GIM_OK) {
        s->n_to = 0;
        store_failed(r, w, e, "group copies");
        goto out;
    }
    s->message_id = f.message_id;
    s->sender_seq = f.sender_seq;
out:
    free(ids);
    return e;
}

static gim_err idem_remember(struct request *r, struct wctx *w, int64_t message_id, int64_t room_id,
                             int64_t room_seq)
{
    gim_err e =
        STORE_RUN(w->db, SQL_IDEM_PUT, NULL, STORE_INT(r->sess.device_id), STORE_INT(r->request_id),
                  message_id ? STORE_INT(message_id) : STORE_NULL);
    if (e == GIM_OK && room_id)
        e = STORE_RUN(w->db, SQL_IDEM_PUT_ROOM, NULL, STORE_INT(r->sess.device_id),
                      STORE_INT(r->request_id), STORE_INT(w->now_ms), STORE_INT(room_id),
                      STORE_INT(room_seq));
    return e == GIM_OK ? GIM_OK : store_failed(r, w, e, "idempotency");
}

/*
 * A retried room send: the reply is rebuilt from the room log. An entry
 * pruned since (rooms.retain_messages) answers EC_NOT_FOUND, like a deleted
 * message; one sent by another user of the same device id does not count.
 */
static gim_err idem_replay_room(struct request *r, struct wctx *w, int64_t room_id,
                                int64_t room_seq, bool *replayed)
{
    struct arena a = {0};
    struct message_view *v = NULL;
    gim_err e = room_load(w->db, room_id, room_seq, &a, &v);
    if (e == GIM_ENOTFOUND) {
        *replayed = true;
        e = request_fail(r, GIM_ENOTFOUND,
                         "send: the room message of request %" PRId64 " is no longer kept",
                         r->request_id);
        goto out;
    }
    if (e != GIM_OK) {
        *replayed = true;
        store_failed(r, w, e, "idempotent reply");
        goto out;
    }
    if (v->sender.sender_id != r->sess.user_id)
        goto out;
    *replayed = true;
    e = send_reply(r, &v->msg);
out:
    arena_free(&a);
    return e;
}

/*
 * A retry of an answered send: *replayed = true and the reply is the stored
 * message as it is now (a recalled one shows MS_RECALL and no content).
 * Records outside the window, or left by another user of the same device
 * id, do not count: the sender checks below catch those whose message is
 * still there, and a sign-in as another user drops the device's records
 * (handle_signin.c), since a pruned one no longer says whose it was.
 */
static gim_err idem_replay(struct request *r, struct wctx *w, bool *replayed)
{
    struct arena a = {0};
    struct message_view *v = NULL;
    gim_err e = GIM_OK;
    *replayed = false;

    sqlite3_stmt *st = store_stmt(w->db, SQL_IDEM_GET);
    if (!st)
        return store_failed(r, w, GIM_EINTERNAL, "idempotency");
    int rc = STORE_BIND(st, STORE_INT(r->sess.device_id), STORE_INT(r->request_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        store_done(st);
        return rc == SQLITE_DONE ? GIM_OK : store_failed(r, w, store_err(rc), "idempotency");
    }
    bool has_message = sqlite3_column_type(st, 0) != SQLITE_NULL;
    int64_t message_id = sqlite3_column_int64(st, 0);
    bool message_gone = has_message && sqlite3_column_type(st, 2) == SQLITE_NULL;
    int64_t sender_id = sqlite3_column_int64(st, 2);
    int64_t sender_seq = sqlite3_column_int64(st, 3);
    size_t size = (size_t)sqlite3_column_int64(st, 4) + (size_t)sqlite3_column_int64(st, 5);
    bool has_room = !has_message && sqlite3_column_type(st, 7) != SQLITE_NULL;
    int64_t created = has_message ? sqlite3_column_int64(st, 1) : sqlite3_column_int64(st, 6);
    int64_t room_id = sqlite3_column_int64(st, 7);
    int64_t room_seq = sqlite3_column_int64(st, 8);
    store_done(st);

    /* A record whose message is gone has no time left; it answers EC_NOT_FOUND until pruned. */
    if (!message_gone && created < w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000)
        return GIM_OK;
    if (has_message && !message_gone && sender_id != r->sess.user_id)
        return GIM_OK;
    if (!has_message && !has_room)
        return GIM_OK;
    if (!has_message)
        return idem_replay_room(r, w, room_id, room_seq, replayed);
    *replayed = true;
    if (message_gone)
        return request_fail(r, GIM_ENOTFOUND,
                            "send: the message of request %" PRId64 " no longer exists",
                            r->request_id);
    if ((e = arena_init(&a, MESSAGE_VIEW_OVERHEAD + size)) != GIM_OK) {
        e = request_fail(r, e, "out of memory");
        goto out;
    }
    if ((e = message_load(w->db, message_id, sender_seq, &a, &v)) != GIM_OK) {
        store_failed(r, w, e, "idempotent reply");
        goto out;
    }
    e = send_reply(r, &v->msg);
out:
    arena_free(&a);
    return e;
}

/*
 * One entry in the room's log, under the room's next seq. The sender must be
 * subscribed to the room as the device row says in this transaction: a
 * subscribe or sign-out earlier in the same batch has changed the row
 * already, while presence only follows after the commit.
 */
static gim_err send_room(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t room = s->msg.receiver_id, subscribed = 0;
    struct message_new m = message_new_of(&s->msg);
    gim_err e = room_subscribed(w->db, &r->sess, &subscribed);
    if (e == GIM_EUNAUTH)
        return request_fail(r, e, "send: the session of device %" PRId64 " has ended",
                            r->sess.device_id);
    if (e != GIM_OK)
        return store_failed(r, w, e, "subscription");
    if (subscribed != room)
        return request_fail(r, GIM_EFORBIDDEN,
                            "send: not subscribed to room %" PRId64 " (PT_SUBSCRIBE_ROOM first)",
                            room);
    if ((e = room_append(w, room, &m, &s->room_seq)) != GIM_OK)
        return store_failed(r, w, e, "room message");
    return GIM_OK;
}

/*
 * PostgreSQL (several instances on one database). The idempotency key is
 * claimed first: the insert of its row blocks on another instance's
 * uncommitted insert of the same key (the same retry, sent to two instances
 * at once) until that one commits, and then finds the row, so the retry
 * stores nothing and answers from the stored message. Seqs are taken in
 * ascending user id order (row locks: two sends A->B and B->A lock in the
 * same order). The push targets are the recipients' online devices in the
 * device table, whichever instance they signed in at, read by the statement
 * that stores the message. A room send claims its key the same way, then
 * takes the room's seq (its row lock) and reads the room's subscribers from
 * the device table (send_room_pg, room.h).
 */
static const char PG_IDEM_CLAIM[] =
    "INSERT INTO idempotency (device_id, request_id, message_id) VALUES ($1, $2, NULL) "
    "ON CONFLICT (device_id, request_id) DO NOTHING";
static const char PG_IDEM_GET[] =
    "SELECT i.message_id, m.send_time, m.sender_id, m.sender_seq, "
    "coalesce(length(m.content), 0) + coalesce(length(m.to_user_ids), 0) FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "WHERE i.device_id = $1 AND i.request_id = $2 FOR UPDATE OF i";
/* A group send's record (a user send's is set by PG_STORE). */
static const char PG_IDEM_SET[] =
    "UPDATE idempotency SET message_id = $3 WHERE device_id = $1 AND request_id = $2";
/* A user send's stale record that a room send takes over: it names no message now. */
static const char PG_IDEM_CLEAR[] =
    "UPDATE idempotency SET message_id = NULL WHERE device_id = $1 AND request_id = $2";
/*
 * A room send's record: the key's row names no message, the details are in
 * room_idempotency (as on SQLite). Dropped when another send takes the
 * record over, so a stale room entry never answers a later send.
 */
static const char PG_IDEM_GET_ROOM[] = "SELECT created_at, room_id, room_seq FROM room_idempotency "
                                       "WHERE device_id = $1 AND request_id = $2";
static const char PG_IDEM_PUT_ROOM[] =
    "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, request_id) DO UPDATE SET "
    "created_at = excluded.created_at, room_id = excluded.room_id, room_seq = excluded.room_seq";
/* A room send's details, dropped when another send takes the record over. */
static const char PG_IDEM_DROP_ROOM[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND request_id = $2";
/*
 * The message, its inbox entries (the receiver's unless it is a self-send),
 * the idempotency record pointed at it, and the push targets (the two users'
 * online devices, whichever instance they signed in at), in one statement:
 * a statement is a round trip, and these four depend on nothing but the
 * seqs taken before. One row at least (device NULL when none is online).
 */
static const char PG_STORE[] =
    "WITH m AS (INSERT INTO message (sender_type, sender_id, sender_device_id, receiver_type, "
    "receiver_id, to_user_ids, message_type, content, send_time, status, sender_seq, "
    "receiver_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11) RETURNING id), "
    "i AS (INSERT INTO inbox (user_id, seq, message_id) SELECT $2, $10, id FROM m "
    "UNION ALL SELECT $5, $11, id FROM m WHERE $5 <> $2), "
    "k AS (UPDATE idempotency SET message_id = (SELECT id FROM m) "
    "WHERE device_id = $3 AND request_id = $12) "
    "SELECT m.id, d.device_id, d.user_id, d.gateway_id, d.room_id FROM m "
    "LEFT JOIN device d ON d.online = 1 AND d.user_id IN ($2, $5) ORDER BY d.user_id";

/*
 * The key's row names no message: a room send's record. Replayed from the
 * room log when it is this user's send within the window (as
 * idem_replay_room); else (stale, pruned, another user's) its details go
 * and this send takes the record over.
 */
static gim_err idem_replay_room_pg(struct request *r, struct wctx *w, bool *replayed)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_IDEM_GET_ROOM, &res, NULL, STORE_INT(r->sess.device_id),
                       STORE_INT(r->request_id));
    if (e != GIM_OK)
        return store_failed(r, w, e, "idempotency");
    bool found = PQntuples(res) == 1;
    int64_t created = found ? pgstore_int(res, 0, 0) : 0;
    int64_t room_id = found ? pgstore_int(res, 0, 1) : 0;
    int64_t room_seq = found ? pgstore_int(res, 0, 2) : 0;
    PQclear(res);
    if (found && created >= w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000 &&
        ((e = idem_replay_room(r, w, room_id, room_seq, replayed)) != GIM_OK || *replayed))
        return e;
    if ((e = PG_RUN(w->db, PG_IDEM_DROP_ROOM, NULL, NULL, STORE_INT(r->sess.device_id),
                    STORE_INT(r->request_id))) != GIM_OK)
        return store_failed(r, w, e, "idempotency");
    return GIM_OK;
}

/*
 * The key's row exists (claimed by an earlier, committed send): a replay
 * when it is this user's send within the window (*replayed = true), else
 * the record is taken over by this send.
 */
static gim_err idem_replay_pg(struct request *r, struct wctx *w, bool *replayed)
{
    PGresult *res = NULL;
    struct arena a = {0};
    struct message_view *v = NULL;
    gim_err e = PG_RUN(w->db, PG_IDEM_GET, &res, NULL, STORE_INT(r->sess.device_id),
                       STORE_INT(r->request_id));
    *replayed = false;
    if (e != GIM_OK)
        return store_failed(r, w, e, "idempotency");
    if (PQntuples(res) != 1) {
        PQclear(res);
        return store_failed(r, w, GIM_EINTERNAL, "idempotency");
    }
    bool has_message = !pgstore_null(res, 0, 0);
    int64_t message_id = pgstore_int(res, 0, 0);
    bool message_gone = has_message && pgstore_null(res, 0, 2);
    int64_t created = pgstore_int(res, 0, 1);
    int64_t sender_id = pgstore_int(res, 0, 2);
    int64_t sender_seq = pgstore_int(res, 0, 3);
    size_t size = (size_t)pgstore_int(res, 0, 4);
    PQclear(res);
    if (!has_message)
        return idem_replay_room_pg(r, w, replayed);
    if (!message_gone && created < w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000)
        return GIM_OK;
    if (!message_gone && sender_id != r->sess.user_id)
        return GIM_OK;
    *replayed = true;
    if (message_gone)
        return request_fail(r, GIM_ENOTFOUND,
                            "send: the message of request %" PRId64 " no longer exists",
                            r->request_id);
    if ((e = arena_init(&a, MESSAGE_VIEW_OVERHEAD + size)) != GIM_OK) {
        e = request_fail(r, e, "out of memory");
        goto out;
    }
    if ((e = message_load(w->db, message_id, sender_seq, &a, &v)) != GIM_OK) {
        store_failed(r, w, e, "idempotent reply");
        goto out;
    }
    e = send_reply(r, &v->msg);
out:
    arena_free(&a);
    return e;
}

/* Stores the message (PG_STORE): s->message_id, and the push targets into s->targets. */
static gim_err store_pg(struct request *r, struct wctx *w, struct send_state *s,
                        const struct message_new *m)
{
    struct message_ids ids;
    PGresult *res = NULL;
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    gim_err e =
        PG_RUN(w->db, PG_STORE, &res, NULL, STORE_INT(m->sender_type), STORE_INT(m->sender_id),
               STORE_INT(m->sender_device_id), STORE_INT(m->receiver_type),
               STORE_INT(m->receiver_id), STORE_BLOB(ids.blob, ids.len), STORE_INT(m->message_type),
               STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
               STORE_INT(m->send_time), STORE_INT(m->sender_seq), STORE_INT(m->receiver_seq),
               STORE_INT(r->request_id));
    message_ids_free(&ids);
    if (e != GIM_OK)
        return store_failed(r, w, e, "message");
    size_t rows = (size_t)PQntuples(res), n = 0;
    if (rows == 0 || !(s->targets = calloc(rows, sizeof *s->targets))) {
        PQclear(res);
        return rows ? request_fail(r, GIM_ENOMEM, "out of memory")
                    : store_failed(r, w, GIM_EINTERNAL, "message");
    }
    s->message_id = pgstore_int(res, 0, 0);
    for (size_t i = 0; i < rows; i++) {
        if (pgstore_null(res, (int)i, 1))
            continue; /* no device online */
        struct session *t = &s->targets[n++];
        size_t len = 0;
        const uint8_t *gw = pgstore_blob(res, (int)i, 3, &len);
        t->device_id = pgstore_int(res, (int)i, 1);
        t->user_id = pgstore_int(res, (int)i, 2);
        t->room_id = pgstore_int(res, (int)i, 4);
        len = len > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : len;
        if (len)
            memcpy(t->gateway_id, gw, len);
        t->gateway_id[len] = 0;
    }
    s->n_targets = n;
    s->targets_known = true;
    PQclear(res);
    return GIM_OK;
}

/*
 * A room send on PostgreSQL, after the key's claim: the entry under the
 * room's next seq (room_append: the room's row lock until the commit), the
 * key's record, and the push targets: the room's subscribers as the device
 * table says in this transaction, whichever instance they subscribed
 * through (room_subscribers).
 */
static gim_err send_room_pg(struct request *r, struct wctx *w, struct send_state *s, int claimed)
{
    int64_t room = s->msg.receiver_id;
    gim_err e = send_room(r, w, s);
    if (e != GIM_OK)
        return e;
    if (r->request_id != 0) {
        if (!claimed && (e = PG_RUN(w->db, PG_IDEM_CLEAR, NULL, NULL, STORE_INT(r->sess.device_id),
                                    STORE_INT(r->request_id))) != GIM_OK)
            return store_failed(r, w, e, "idempotency");
        if ((e = PG_RUN(w->db, PG_IDEM_PUT_ROOM, NULL, NULL, STORE_INT(r->sess.device_id),
                        STORE_INT(r->request_id), STORE_INT(w->now_ms), STORE_INT(room),
                        STORE_INT(s->room_seq))) != GIM_OK)
            return store_failed(r, w, e, "idempotency");
    }
    if ((e = room_subscribers(w->db, room, &s->targets, &s->n_targets)) != GIM_OK)
        return store_failed(r, w, e, "push targets");
    s->targets_known = true;
    s->msg.seq = s->room_seq;
    return send_reply(r, &s->msg);
}

/* One copy in the receiver's inbox and one in the sender's, the seqs taken in user id order. */
static gim_err send_user_pg(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t me = r->sess.user_id, to = s->msg.receiver_id;
    struct message_new m = message_new_of(&s->msg);
    gim_err e;
    if (!(s->to = calloc(2, sizeof *s->to)))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    /* Row locks in ascending user id order. */
    int64_t first = to < me ? to : me, second = to < me ? me : to, seq1 = 0, seq2 = 0;
    if ((e = seq_next(w->seq, w->db, SEQ_USER, first, &seq1)) != GIM_OK)
        return store_failed(r, w, e, "seq");
    if (second != first && (e = seq_next(w->seq, w->db, SEQ_USER, second, &seq2)) != GIM_OK)
        return store_failed(r, w, e, "seq");
    m.sender_seq = me == first ? seq1 : seq2;
    m.receiver_seq = to == me ? m.sender_seq : (to == first ? seq1 : seq2);
    if ((e = store_pg(r, w, s, &m)) != GIM_OK)
        return e;
    s->to[s->n_to++] = (struct fanout_copy){me, m.sender_seq};
    if (to != me)
        s->to[s->n_to++] = (struct fanout_copy){to, m.receiver_seq};
    s->sender_seq = m.sender_seq;
    return GIM_OK;
}

static gim_err send_write_pg(struct request *r, struct wctx *w, struct send_state *s)
{
    gim_err e;
    int claimed = 1;

    /* A retried batch runs this again: start from nothing. */
    free(s->to);
    free(s->targets);
    s->to = NULL;
    s->targets = NULL;
    s->n_to = s->n_targets = 0;
    s->targets_known = false;
    s->message_id = s->sender_seq = s->room_seq = 0;
    if (r->request_id != 0) {
        if ((e = PG_RUN(w->db, PG_IDEM_CLAIM, NULL, &claimed, STORE_INT(r->sess.device_id),
                        STORE_INT(r->request_id))) != GIM_OK)
            return store_failed(r, w, e, "idempotency");
        bool replayed = false;
        if (claimed == 0 && ((e = idem_replay_pg(r, w, &replayed)) != GIM_OK || replayed))
            return e;
    }
    if (s->msg.receiver_type == PB__RECEIVER_TYPE__RT_ROOM)
        return send_room_pg(r, w, s, claimed);
    if (s->msg.receiver_type != PB__RECEIVER_TYPE__RT_GROUP)
        e = send_user_pg(r, w, s);
    else if ((e = send_group(r, w, s)) == GIM_OK && r->request_id != 0 &&
             (e = PG_RUN(w->db, PG_IDEM_SET, NULL, NULL, STORE_INT(r->sess.device_id),
                         STORE_INT(r->request_id), STORE_INT(s->message_id))) != GIM_OK)
        e = store_failed(r, w, e, "idempotency");
    if (e != GIM_OK)
        return e;
    s->msg.seq = s->sender_seq;
    return send_reply(r, &s->msg);
}

/*
 * PostgreSQL: the seq rows this send will lock, for the writer's lock of
 * the whole batch (write_job.locks): the sender's and the receiver's for a
 * user send, the room's for a room send, the group's row (send_group
 * locks it) and the members' for a group send (read now without
 * a lock; one who joins before send_group reads them again is locked by the
 * fan-out itself). A replayed retry locks them for nothing, which costs it
 * nothing.
 */
static gim_err send_locks(struct request *r, struct wctx *w, struct writer_locks *l)
{
    struct send_state *s = r->scratch;
    int64_t *ids = NULL;
    size_t n = 0;
    gim_err e = GIM_OK;
    switch (s->msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_ROOM:
        return writer_lock_room(l, s->msg.receiver_id);
    case PB__RECEIVER_TYPE__RT_GROUP:
        if ((e = writer_lock_group(l, s->msg.receiver_id)) != GIM_OK ||
            (e = group_members(w->db, s->msg.receiver_id, &ids, &n)) != GIM_OK)
            return e;
        for (size_t i = 0; e == GIM_OK && i < n; i++)
            e = writer_lock_user(l, ids[i]);
        free(ids);
        return e;
    default:
        if ((e = writer_lock_user(l, r->sess.user_id)) != GIM_OK)
            return e;
        return writer_lock_user(l, s->msg.receiver_id);
    }
}

static gim_err send_write(struct request *r, struct wctx *w)
{
    struct send_state *s = r->scratch;
    gim_err e;
    s->msg.send_time = w->now_ms;
    if (store_is_pg(w->db))
        return send_write_pg(r, w, s);

    if (r->request_id != 0) {
        bool replayed = false;
        if ((e = idem_replay(r, w, &replayed)) != GIM_OK || replayed)
            return e;
    }
    switch (s->msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_USER:
        e = send_user(r, w, s);
        break;
    case PB__RECEIVER_TYPE__RT_GROUP:
        e = send_group(r, w, s);
        break;
    case PB__RECEIVER_TYPE__RT_ROOM:
        e = send_room(r, w, s);
        break;
    default: /* prepare() let no other type through */
        return request_fail(r, GIM_EBADREQ, "send: unknown receiver_type %d",
                            (int)s->msg.receiver_type);
    }
    if (e != GIM_OK)
        return e;
    /* A room send has no message row: its record names the room log entry instead. */
    if (r->request_id != 0 &&
        (e = idem_remember(r, w, s->message_id, s->room_seq ? s->msg.receiver_id : 0,
                           s->room_seq)) != GIM_OK)
        return e;
    s->msg.seq = s->room_seq ? s->room_seq : s->sender_seq;
    return send_reply(r, &s->msg);
}

/*
 * A room message goes to every device subscribed to the room but the
 * sending one, all with the same copy (the room seq).
 */
static void send_room_committed(struct request *r, struct wctx *w, struct send_state *s)
{
    metrics_stored(w->metrics, 1, 0);
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    if (s->targets_known) /* PostgreSQL: from the device table */
        push_msg_room_of(&pm, s->targets, s->n_targets, s->msg.receiver_id);
    else
        push_msg_room(&pm, w->presence, s->msg.receiver_id);
    push_msg_send(w->push, &pm, r->sess.device_id, &s->msg);
    push_msg_free(&pm);
}

/* Each online recipient gets its own copy (its own seq); the sending device gets none. */
static void send_committed(struct request *r, struct wctx *w)
{
    struct send_state *s = r->scratch;
    if (s && s->room_seq) {
        send_room_committed(r, w, s);
        return;
    }
    if (!s || s->n_to == 0) /* a retry: it was counted and pushed the first time */
        return;
    metrics_stored(w->metrics, 1, s->n_to);
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    for (size_t i = 0; i < s->n_to; i++) {
        if (s->targets_known) { /* PostgreSQL: from the device table, sorted by user */
            size_t k = 0;
            const struct session *t =
                fanout_targets_of(s->targets, s->n_targets, s->to[i].user_id, &k);
            push_msg_user_of(&pm, t, k, s->to[i].user_id);
        } else
            push_msg_user(&pm, w->presence, s->to[i].user_id);
        s->msg.seq = s->to[i].seq;
        push_msg_send(w->push, &pm, r->sess.device_id, &s->msg);
    }
    s->msg.seq = s->sender_seq;
    push_msg_free(&pm);
}

static void send_cleanup(struct request *r)
{
    struct send_state *s = r->scratch;
    if (!s)
        return;
    free(s->to);
    free(s->targets);
    free(s);
    r->scratch = NULL;
}

const struct handler handle_message = {
    .type = PB__PACKAGE_TYPE__PT_MESSAGE,
    .name = "message",
    .needs_session = true,
    .prepare = send_prepare,
    .write = send_write,
    .committed = send_committed,
    .locks = send_locks,
    .cleanup = send_cleanup,
};
