/*
 * The message operations on SQLite (storage.h): seqs from the writer's
 * in-memory counters (seq.h), loaded and written back here; the message
 * and inbox rows; the idempotency records of sends (read first, written
 * last: the one writer serialises every send); the pages of sync. The
 * statements are cached per connection (store_stmt); the steps are those
 * the modules ran before they moved here, in the same order.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "seq.h"
#include "storage.h"
#include "storage/sqlite_int.h"

/*
 * A user's last seq (sqlite_int.h). The writer no longer writes user_seq back
 * (seq_save): every seq it hands out is in an inbox row of the same
 * transaction, and deleting one raises the user_seq floor.
 */
static const char SQL_LOAD_USER[] = SQL_USER_LAST_SEQ;
static const char SQL_LOAD_ROOM[] = "SELECT seq FROM room_seq WHERE room_id = ?1";
static const char SQL_SAVE_ROOM[] = "INSERT INTO room_seq (room_id, seq) VALUES (?1, ?2) "
                                    "ON CONFLICT (room_id) DO UPDATE SET seq = excluded.seq";

static const char SQL_INSERT[] =
    "INSERT INTO message (sender_type, sender_id, sender_device_id, receiver_type, receiver_id, "
    "to_user_ids, message_type, content, send_time, status, sender_seq, receiver_seq) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10, ?11)";
static const char SQL_INBOX_ADD[] =
    "INSERT INTO inbox (user_id, seq, message_id) VALUES (?1, ?2, ?3)";
static const char SQL_LOAD[] = "SELECT " MESSAGE_COLUMNS " FROM message m WHERE m.id = ?1";

/*
 * A user/group send's record names its message, whose send_time is when the
 * window started; a room send's (message_id NULL) has its details and time
 * in room_idempotency (migrations/0007_idempotency_small.sql). The key is
 * (request_id, device_id) (migrations/0009): request ids come from clients'
 * clocks, so each batch appends its records to the same last pages.
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
    "ON CONFLICT (request_id, device_id) DO UPDATE SET message_id = excluded.message_id";
/* A stale room record that a user/group send replaced is never read again: pruned by its time. */
static const char SQL_IDEM_PUT_ROOM[] =
    "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (device_id, request_id) DO UPDATE SET "
    "created_at = excluded.created_at, room_id = excluded.room_id, room_seq = excluded.room_seq";

static const char SQL_PAGE[] = "SELECT i.seq, " MESSAGE_COLUMNS " FROM inbox i "
                               "JOIN message m ON m.id = i.message_id "
                               "WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3";
static const char SQL_MAX_ACK[] = "SELECT max(ack_seq) FROM device WHERE user_id = ?1";

/* ---- seqs: the counters live in memory (seq.h); these read and write them back ---- */

static gim_err seq_read(struct store_conn *db, enum seq_kind kind, int64_t id, int64_t *out)
{
    sqlite3_stmt *st = store_stmt(db, kind == SEQ_USER ? SQL_LOAD_USER : SQL_LOAD_ROOM);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
    return GIM_OK;
}

/*
 * Writes a room's counter back. A user's needs no write (SQL_LOAD_USER reads
 * it from the inbox): that write was a sixth of each commit's pages.
 */
static gim_err seq_save(struct store_conn *db, enum seq_kind kind, int64_t id, int64_t last)
{
    if (kind == SEQ_USER)
        return GIM_OK;
    sqlite3_stmt *st = store_stmt(db, SQL_SAVE_ROOM);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(id), STORE_INT(last));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE) {
        log_warn("seq flush failed", "id=%lld rc=%d", (long long)id, rc);
        return store_err(rc);
    }
    return GIM_OK;
}

static gim_err next_seq(struct wctx *w, int kind, int64_t id, int64_t *out)
{
    return seq_cache_next(w->seq, w->db, (enum seq_kind)kind, id, seq_read, out);
}

static gim_err next_user_seqs(struct wctx *w, const int64_t *ids, size_t n, int64_t *out)
{
    for (size_t i = 0; i < n; i++) {
        gim_err e = seq_cache_next(w->seq, w->db, SEQ_USER, ids[i], seq_read, &out[i]);
        if (e != GIM_OK)
            return e;
    }
    return GIM_OK;
}

static gim_err last_seq(struct wctx *w, int kind, int64_t id, int64_t *out)
{
    return seq_cache_last(w->seq, w->db, (enum seq_kind)kind, id, seq_read, out);
}

/* The one writer needs no row locks. */
static gim_err lock_seqs(struct wctx *w, int kind, const int64_t *ids, size_t n)
{
    (void)w;
    (void)kind;
    (void)ids;
    (void)n;
    return GIM_OK;
}

static gim_err flush_seqs(struct wctx *w)
{
    return seq_cache_flush(w->seq, w->db, seq_save);
}

/* ---- messages and inbox entries ---- */

struct message_view *message_from_row(sqlite3_stmt *st, int col, int64_t seq, struct arena *a)
{
    struct message_view *v = arena_alloc(a, sizeof *v);
    if (!v)
        return NULL;
    pb__message__init(&v->msg);
    pb__sender__init(&v->sender);
    v->msg.sender = &v->sender;
    v->sender.sender_type = sqlite3_column_int(st, col + 0);
    v->sender.sender_id = sqlite3_column_int64(st, col + 1);
    v->sender.device_id = sqlite3_column_int64(st, col + 2);
    v->msg.receiver_type = sqlite3_column_int(st, col + 3);
    v->msg.receiver_id = sqlite3_column_int64(st, col + 4);
    const uint8_t *ids = sqlite3_column_blob(st, col + 5);
    size_t ids_len = (size_t)sqlite3_column_bytes(st, col + 5);
    v->msg.to_user_ids = message_ids_unpack(ids, ids_len, &v->msg.n_to_user_ids, a);
    if (ids_len >= 8 && !v->msg.to_user_ids)
        return NULL;
    v->msg.message_type = sqlite3_column_int(st, col + 6);
    const void *content = sqlite3_column_blob(st, col + 7);
    size_t clen = (size_t)sqlite3_column_bytes(st, col + 7);
    if (clen) {
        uint8_t *c = arena_alloc(a, clen);
        if (!c)
            return NULL;
        memcpy(c, content, clen);
        v->msg.message_content.data = c;
        v->msg.message_content.len = clen;
    }
    v->msg.send_time = sqlite3_column_int64(st, col + 8);
    v->msg.status = sqlite3_column_int(st, col + 9);
    v->msg.seq = seq;
    return v;
}

static gim_err insert(struct wctx *w, const struct message_new *m, int64_t *id)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_INSERT);
    struct message_ids ids;
    if (!st)
        return GIM_EINTERNAL;
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return GIM_ENOMEM;
    /* Never NULL content: NULL means "erased" (recall), an empty message is not that. */
    int rc = STORE_BIND(
        st, STORE_INT(m->sender_type), STORE_INT(m->sender_id), STORE_INT(m->sender_device_id),
        STORE_INT(m->receiver_type), STORE_INT(m->receiver_id), STORE_BLOB(ids.blob, ids.len),
        STORE_INT(m->message_type),
        STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
        STORE_INT(m->send_time), STORE_INT(m->sender_seq), STORE_INT(m->receiver_seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    store_done(st);
    message_ids_free(&ids);
    if (rc != SQLITE_DONE)
        return store_err(rc);
    *id = sqlite3_last_insert_rowid(w->db->db);
    return GIM_OK;
}

static gim_err inbox_add(struct wctx *w, int64_t user_id, int64_t seq, int64_t message_id)
{
    return STORE_RUN(w->db, SQL_INBOX_ADD, NULL, STORE_INT(user_id), STORE_INT(seq),
                     STORE_INT(message_id));
}

static gim_err load(struct store_conn *db, int64_t message_id, int64_t seq, struct arena *a,
                    struct message_view **out)
{
    sqlite3_stmt *st = store_stmt(db, SQL_LOAD);
    gim_err e = GIM_OK;
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(message_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        e = (*out = message_from_row(st, 0, seq, a)) ? GIM_OK : GIM_ENOMEM;
    else
        e = rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
    store_done(st);
    return e;
}

/* ---- sends ---- */

/* Points the key's record at message_id (0: none, a room send's). A stale record is replaced. */
static gim_err idem_point(struct wctx *w, int64_t device_id, int64_t request_id, int64_t message_id)
{
    return STORE_RUN(w->db, SQL_IDEM_PUT, NULL, STORE_INT(device_id), STORE_INT(request_id),
                     message_id ? STORE_INT(message_id) : STORE_NULL);
}

/* One copy in the receiver's inbox and one in the sender's (the same one for a self-send). */
static gim_err send_user(struct wctx *w, struct message_new *m, int64_t request_id,
                         struct message_stored *out, const char **what)
{
    int64_t me = m->sender_id, to = m->receiver_id;
    gim_err e;

    out->targets = NULL;
    out->n_targets = 0;
    out->targets_known = false; /* pushes follow presence */
    if ((e = seq_cache_next(w->seq, w->db, SEQ_USER, me, seq_read, &m->sender_seq)) != GIM_OK) {
        *what = "sender seq";
        return e;
    }
    m->receiver_seq = m->sender_seq;
    if (to != me &&
        (e = seq_cache_next(w->seq, w->db, SEQ_USER, to, seq_read, &m->receiver_seq)) != GIM_OK) {
        *what = "receiver seq";
        return e;
    }
    if ((e = insert(w, m, &out->message_id)) != GIM_OK) {
        *what = "message";
        return e;
    }
    if ((e = inbox_add(w, me, m->sender_seq, out->message_id)) != GIM_OK) {
        *what = "sender inbox";
        return e;
    }
    if (to != me && (e = inbox_add(w, to, m->receiver_seq, out->message_id)) != GIM_OK) {
        *what = "receiver inbox";
        return e;
    }
    if (request_id != 0 &&
        (e = idem_point(w, m->sender_device_id, request_id, out->message_id)) != GIM_OK) {
        *what = "idempotency";
        return e;
    }
    out->sender_seq = m->sender_seq;
    out->receiver_seq = m->receiver_seq;
    return GIM_OK;
}

static gim_err send_room_targets(struct wctx *w, int64_t room_id, struct session **targets,
                                 size_t *n, bool *known)
{
    (void)w;
    (void)room_id;
    *targets = NULL;
    *n = 0;
    *known = false; /* pushes follow presence */
    return GIM_OK;
}

static gim_err idem_claim(struct wctx *w, int64_t device_id, int64_t request_id,
                          struct message_idem *out)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_IDEM_GET);
    out->fresh = true; /* the other fields are set when a record is found */
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(device_id), STORE_INT(request_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        store_done(st);
        return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
    }
    out->fresh = false;
    out->has_message = sqlite3_column_type(st, 0) != SQLITE_NULL;
    out->message_id = sqlite3_column_int64(st, 0);
    out->message_gone = out->has_message && sqlite3_column_type(st, 2) == SQLITE_NULL;
    out->sender_id = sqlite3_column_int64(st, 2);
    out->sender_seq = sqlite3_column_int64(st, 3);
    out->size = (size_t)sqlite3_column_int64(st, 4) + (size_t)sqlite3_column_int64(st, 5);
    out->has_room = !out->has_message && sqlite3_column_type(st, 7) != SQLITE_NULL;
    out->created = out->has_message ? sqlite3_column_int64(st, 1) : sqlite3_column_int64(st, 6);
    out->room_id = sqlite3_column_int64(st, 7);
    out->room_seq = sqlite3_column_int64(st, 8);
    store_done(st);
    return GIM_OK;
}

/* idem_put replaces the record's details; a room's left behind is pruned by its time. */
static gim_err idem_take_over(struct wctx *w, int64_t device_id, int64_t request_id,
                              const struct message_idem *rec)
{
    (void)w;
    (void)device_id;
    (void)request_id;
    (void)rec;
    return GIM_OK;
}

static gim_err idem_put(struct wctx *w, int64_t device_id, int64_t request_id,
                        const struct message_idem *rec, int64_t message_id, int64_t room_id,
                        int64_t room_seq)
{
    (void)rec;
    gim_err e = idem_point(w, device_id, request_id, message_id);
    if (e == GIM_OK && room_id)
        e = STORE_RUN(w->db, SQL_IDEM_PUT_ROOM, NULL, STORE_INT(device_id), STORE_INT(request_id),
                      STORE_INT(w->now_ms), STORE_INT(room_id), STORE_INT(room_seq));
    return e;
}

/* ---- sync ---- */

static gim_err max_ack(struct store_conn *ro, int64_t user_id, int64_t *out)
{
    sqlite3_stmt *st = store_stmt(ro, SQL_MAX_ACK);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0; /* max() of nothing is NULL -> 0 */
    store_done(st);
    return rc == SQLITE_ROW ? GIM_OK : store_err(rc);
}

/* A page's rows: the statement's, stepped one by one (message_rows, message.h). */
static gim_err page_next(void *src, bool *row, size_t *need)
{
    sqlite3_stmt *st = src;
    int rc = sqlite3_step(st);
    *row = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        /* Sized from the row: the mentions blob (1 + 5) and the content (1 + 7). */
        *need = MESSAGE_VIEW_OVERHEAD + (size_t)sqlite3_column_bytes(st, 1 + 5) +
                (size_t)sqlite3_column_bytes(st, 1 + 7);
        return GIM_OK;
    }
    if (rc == SQLITE_DONE)
        return GIM_OK;
    gim_err e = store_err(rc);
    return e != GIM_OK ? e : GIM_EINTERNAL;
}

static struct message_view *page_view(void *src, struct arena *a)
{
    sqlite3_stmt *st = src;
    return message_from_row(st, 1, sqlite3_column_int64(st, 0), a);
}

gim_err message_page(sqlite3_stmt *st, size_t page_size, size_t max_bytes, uint8_t **buf,
                     size_t *len)
{
    const struct message_rows rows = {.src = st, .next = page_next, .view = page_view};
    return message_page_rows(&rows, page_size, max_bytes, buf, len);
}

static gim_err inbox_page(struct store_conn *ro, int64_t user_id, int64_t after, size_t page_size,
                          size_t max_bytes, uint8_t **buf, size_t *len)
{
    sqlite3_stmt *st = store_stmt(ro, SQL_PAGE);
    *buf = NULL;
    *len = 0;
    if (!st)
        return GIM_EINTERNAL;
    int rc =
        STORE_BIND(st, STORE_INT(user_id), STORE_INT(after), STORE_INT((int64_t)page_size + 1));
    gim_err e = rc == SQLITE_OK ? message_page(st, page_size, max_bytes, buf, len) : store_err(rc);
    store_done(st);
    return e;
}

const struct storage_message_ops storage_sqlite_message = {
    .next_seq = next_seq,
    .next_user_seqs = next_user_seqs,
    .last_seq = last_seq,
    .lock_seqs = lock_seqs,
    .flush_seqs = flush_seqs,
    .insert = insert,
    .inbox_add = inbox_add,
    .load = load,
    .send_user = send_user,
    .send_room_targets = send_room_targets,
    .idem_claim = idem_claim,
    .idem_take_over = idem_take_over,
    .idem_put = idem_put,
    .max_ack = max_ack,
    .inbox_page = inbox_page,
};
