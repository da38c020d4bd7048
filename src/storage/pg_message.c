/*
 * The message operations on PostgreSQL (storage.h). Several instances write
 * at once: every seq is taken in the database under its counter row's lock
 * until the commit (N+1 never commits, or becomes visible, before N; a
 * rolled-back savepoint gives its seq back with the row), an idempotency key
 * is claimed before anything is stored (the same retry reaching two
 * instances at once waits for the first and is answered from it), and the
 * push targets are read from the device table in the transaction,
 * whichever instance the devices signed in at.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "pgstore.h"
#include "presence.h"
#include "room.h"
#include "seq.h"
#include "storage.h"
#include "storage/pg_int.h"

/*
 * The upsert takes the next seq and locks the user's row until the commit:
 * another instance's send to the same user waits for it, so seqs never
 * repeat or gap. Nothing is cached in w->seq, so flush_seqs has nothing to
 * do and the writer's seq marks and rollbacks are no-ops.
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

/*
 * The next seqs of many users in one statement (a group's fan-out): the
 * rows are upserted in ascending user id order, so the row locks are taken
 * in that order whatever the caller's, and the result comes back in it. $1
 * is the ids as an array literal ("{1,2,3}"), a parameter like any.
 */
static const char PG_NEXT_USERS[] =
    "WITH s AS (INSERT INTO user_seq (user_id, seq) "
    "SELECT u, 1 FROM unnest($1::text::bigint[]) AS u ORDER BY u "
    "ON CONFLICT (user_id) DO UPDATE SET seq = user_seq.seq + 1 RETURNING user_id, seq) "
    "SELECT user_id, seq FROM s ORDER BY user_id";

/*
 * A batch's seq rows locked before its jobs run (lock_seqs). One pass in
 * ascending id order (the ORDER BY feeds the insert in that order), in
 * which each key is either inserted (a missing row, seq 0: the next upsert
 * makes it 1) or, when it exists, locked by the DO UPDATE: "all rows will
 * be locked when the ON CONFLICT DO UPDATE action is taken", even those its
 * WHERE leaves unchanged (PostgreSQL's INSERT documentation), so no new row
 * version is written. The lock is FOR NO KEY UPDATE, the one the seq
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

/* The message rows as on SQLite; the id comes back from the insert itself. */
static const char PG_INSERT[] =
    "INSERT INTO message (sender_type, sender_id, sender_device_id, receiver_type, receiver_id, "
    "to_user_ids, message_type, content, send_time, status, sender_seq, receiver_seq) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11) RETURNING id";
static const char PG_INBOX_ADD[] =
    "INSERT INTO inbox (user_id, seq, message_id) VALUES ($1, $2, $3)";
static const char PG_LOAD[] = "SELECT " MESSAGE_COLUMNS " FROM message m WHERE m.id = $1";

/*
 * The idempotency key is claimed first: the insert of its row blocks on
 * another instance's uncommitted insert of the same key (the same retry,
 * sent to two instances at once) until that one commits, and then finds
 * the row, so the retry stores nothing and answers from the stored message.
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
 * A page in one statement (one snapshot). Seqs of a user are taken under
 * the row lock of user_seq, so N+1 commits after N and no snapshot holds
 * N+1 without N.
 */
static const char PG_PAGE[] = "SELECT i.seq, " MESSAGE_COLUMNS " FROM inbox i "
                              "JOIN message m ON m.id = i.message_id "
                              "WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3";
static const char PG_MAX_ACK[] = "SELECT coalesce(max(ack_seq), 0) FROM device WHERE user_id = $1";

/* ---- seqs ---- */

static gim_err pg_seq(struct store_conn *db, const char *sql, int64_t id, int64_t *out)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, sql, &res, NULL, STORE_INT(id));
    if (e == GIM_OK)
        *out = PQntuples(res) > 0 ? pgstore_int(res, 0, 0) : 0;
    PQclear(res);
    return e;
}

static gim_err next_seq(struct wctx *w, int kind, int64_t id, int64_t *out)
{
    return pg_seq(w->db, kind == SEQ_USER ? PG_NEXT_USER : PG_NEXT_ROOM, id, out);
}

static gim_err last_seq(struct wctx *w, int kind, int64_t id, int64_t *out)
{
    return pg_seq(w->db, kind == SEQ_USER ? PG_LAST_USER : PG_LAST_ROOM, id, out);
}

static bool ascending(const int64_t *ids, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i])
            return false;
    return true;
}

static gim_err next_user_seqs(struct wctx *w, const int64_t *ids, size_t n, int64_t *out)
{
    if (n == 0)
        return GIM_OK;
    if (!ascending(ids, n))
        return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    PGresult *res = NULL;
    gim_err e = pg_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(w->db, PG_NEXT_USERS, &res, NULL, STORE_TEXT(arr));
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

static gim_err lock_seqs(struct wctx *w, int kind, const int64_t *ids, size_t n)
{
    if (n == 0)
        return GIM_OK;
    if (!ascending(ids, n))
        return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    gim_err e = pg_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(w->db, kind == SEQ_USER ? PG_LOCK_USERS : PG_LOCK_ROOMS, NULL, NULL,
                   STORE_TEXT(arr));
    free(arr);
    return e;
}

/* The seqs are the database's: nothing is cached to write back. */
static gim_err flush_seqs(struct wctx *w)
{
    (void)w;
    return GIM_OK;
}

/* ---- messages and inbox entries ---- */

struct message_view *message_from_pgrow(const PGresult *res, int row, int col, int64_t seq,
                                        struct arena *a)
{
    struct message_view *v = arena_alloc(a, sizeof *v);
    size_t ids_len = 0, clen = 0;
    if (!v)
        return NULL;
    pb__message__init(&v->msg);
    pb__sender__init(&v->sender);
    v->msg.sender = &v->sender;
    v->sender.sender_type = (int)pgstore_int(res, row, col + 0);
    v->sender.sender_id = pgstore_int(res, row, col + 1);
    v->sender.device_id = pgstore_int(res, row, col + 2);
    v->msg.receiver_type = (int)pgstore_int(res, row, col + 3);
    v->msg.receiver_id = pgstore_int(res, row, col + 4);
    const uint8_t *ids = pgstore_blob(res, row, col + 5, &ids_len);
    v->msg.to_user_ids = message_ids_unpack(ids, ids_len, &v->msg.n_to_user_ids, a);
    if (ids_len >= 8 && !v->msg.to_user_ids)
        return NULL;
    v->msg.message_type = (int)pgstore_int(res, row, col + 6);
    const uint8_t *content = pgstore_blob(res, row, col + 7, &clen);
    if (clen) {
        uint8_t *c = arena_alloc(a, clen);
        if (!c)
            return NULL;
        memcpy(c, content, clen);
        v->msg.message_content.data = c;
        v->msg.message_content.len = clen;
    }
    v->msg.send_time = pgstore_int(res, row, col + 8);
    v->msg.status = (int)pgstore_int(res, row, col + 9);
    v->msg.seq = seq;
    return v;
}

static gim_err insert(struct wctx *w, const struct message_new *m, int64_t *id)
{
    struct message_ids ids;
    PGresult *res = NULL;
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return GIM_ENOMEM;
    gim_err e =
        PG_RUN(w->db, PG_INSERT, &res, NULL, STORE_INT(m->sender_type), STORE_INT(m->sender_id),
               STORE_INT(m->sender_device_id), STORE_INT(m->receiver_type),
               STORE_INT(m->receiver_id), STORE_BLOB(ids.blob, ids.len), STORE_INT(m->message_type),
               STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
               STORE_INT(m->send_time), STORE_INT(m->sender_seq), STORE_INT(m->receiver_seq));
    message_ids_free(&ids);
    if (e == GIM_OK)
        *id = pgstore_int(res, 0, 0);
    PQclear(res);
    return e;
}

static gim_err inbox_add(struct wctx *w, int64_t user_id, int64_t seq, int64_t message_id)
{
    return PG_RUN(w->db, PG_INBOX_ADD, NULL, NULL, STORE_INT(user_id), STORE_INT(seq),
                  STORE_INT(message_id));
}

static gim_err load(struct store_conn *db, int64_t message_id, int64_t seq, struct arena *a,
                    struct message_view **out)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_LOAD, &res, NULL, STORE_INT(message_id));
    if (e == GIM_OK && PQntuples(res) == 0)
        e = GIM_ENOTFOUND;
    else if (e == GIM_OK)
        e = (*out = message_from_pgrow(res, 0, 0, seq, a)) ? GIM_OK : GIM_ENOMEM;
    PQclear(res);
    return e;
}

/* ---- sends ---- */

/* Stores m (PG_STORE): out->message_id, and the push targets. */
static gim_err store(struct wctx *w, const struct message_new *m, int64_t request_id,
                     struct message_stored *out, const char **what)
{
    struct message_ids ids;
    PGresult *res = NULL;
    *what = "message";
    if (message_ids_pack(&ids, m->to_user_ids, m->n_to_user_ids) != GIM_OK)
        return GIM_ENOMEM;
    gim_err e =
        PG_RUN(w->db, PG_STORE, &res, NULL, STORE_INT(m->sender_type), STORE_INT(m->sender_id),
               STORE_INT(m->sender_device_id), STORE_INT(m->receiver_type),
               STORE_INT(m->receiver_id), STORE_BLOB(ids.blob, ids.len), STORE_INT(m->message_type),
               STORE_BLOB(m->content ? (const void *)m->content : "", m->content_len),
               STORE_INT(m->send_time), STORE_INT(m->sender_seq), STORE_INT(m->receiver_seq),
               STORE_INT(request_id));
    message_ids_free(&ids);
    if (e != GIM_OK)
        return e;
    size_t rows = (size_t)PQntuples(res), n = 0;
    if (rows == 0 || !(out->targets = calloc(rows, sizeof *out->targets))) {
        PQclear(res);
        return rows ? GIM_ENOMEM : GIM_EINTERNAL;
    }
    out->message_id = pgstore_int(res, 0, 0);
    for (size_t i = 0; i < rows; i++) {
        if (pgstore_null(res, (int)i, 1))
            continue; /* no device online */
        pg_session(&out->targets[n++], res, (int)i, 1);
    }
    out->n_targets = n;
    out->targets_known = true;
    PQclear(res);
    return GIM_OK;
}

/* The seqs in ascending user id order (row locks: sends A->B and B->A lock in one order). */
static gim_err send_user(struct wctx *w, struct message_new *m, int64_t request_id,
                         struct message_stored *out, const char **what)
{
    int64_t me = m->sender_id, to = m->receiver_id;
    int64_t first = to < me ? to : me, second = to < me ? me : to, seq1 = 0, seq2 = 0;
    gim_err e;

    out->targets = NULL;
    out->n_targets = 0;
    out->targets_known = false;
    *what = "seq";
    if ((e = pg_seq(w->db, PG_NEXT_USER, first, &seq1)) != GIM_OK)
        return e;
    if (second != first && (e = pg_seq(w->db, PG_NEXT_USER, second, &seq2)) != GIM_OK)
        return e;
    m->sender_seq = me == first ? seq1 : seq2;
    m->receiver_seq = to == me ? m->sender_seq : (to == first ? seq1 : seq2);
    if ((e = store(w, m, request_id, out, what)) != GIM_OK)
        return e;
    out->sender_seq = m->sender_seq;
    out->receiver_seq = m->receiver_seq;
    return GIM_OK;
}

/* The room's subscribers as the device table says in this transaction (room_subscribers). */
static gim_err send_room_targets(struct wctx *w, int64_t room_id, struct session **targets,
                                 size_t *n, bool *known)
{
    gim_err e = room_subscribers(w->db, room_id, targets, n);
    *known = e == GIM_OK;
    return e;
}

static gim_err idem_claim(struct wctx *w, int64_t device_id, int64_t request_id,
                          struct message_idem *out)
{
    PGresult *res = NULL;
    int claimed = 0;
    *out = (struct message_idem){.fresh = true};
    gim_err e =
        PG_RUN(w->db, PG_IDEM_CLAIM, NULL, &claimed, STORE_INT(device_id), STORE_INT(request_id));
    if (e != GIM_OK || claimed != 0)
        return e;
    /* The key's row exists: claimed by an earlier, committed send. */
    out->fresh = false;
    if ((e = PG_RUN(w->db, PG_IDEM_GET, &res, NULL, STORE_INT(device_id), STORE_INT(request_id))) !=
        GIM_OK)
        return e;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return GIM_EINTERNAL;
    }
    out->has_message = !pgstore_null(res, 0, 0);
    out->message_id = pgstore_int(res, 0, 0);
    out->message_gone = out->has_message && pgstore_null(res, 0, 2);
    out->created = pgstore_int(res, 0, 1);
    out->sender_id = pgstore_int(res, 0, 2);
    out->sender_seq = pgstore_int(res, 0, 3);
    out->size = (size_t)pgstore_int(res, 0, 4);
    PQclear(res);
    if (out->has_message)
        return GIM_OK;
    /* It names no message: a room send's record, its details in room_idempotency. */
    res = NULL;
    if ((e = PG_RUN(w->db, PG_IDEM_GET_ROOM, &res, NULL, STORE_INT(device_id),
                    STORE_INT(request_id))) != GIM_OK)
        return e;
    out->has_room = PQntuples(res) == 1;
    out->created = out->has_room ? pgstore_int(res, 0, 0) : 0;
    out->room_id = out->has_room ? pgstore_int(res, 0, 1) : 0;
    out->room_seq = out->has_room ? pgstore_int(res, 0, 2) : 0;
    PQclear(res);
    return GIM_OK;
}

static gim_err idem_take_over(struct wctx *w, int64_t device_id, int64_t request_id,
                              const struct message_idem *rec)
{
    (void)rec;
    return PG_RUN(w->db, PG_IDEM_DROP_ROOM, NULL, NULL, STORE_INT(device_id),
                  STORE_INT(request_id));
}

static gim_err idem_put(struct wctx *w, int64_t device_id, int64_t request_id,
                        const struct message_idem *rec, int64_t message_id, int64_t room_id,
                        int64_t room_seq)
{
    gim_err e;
    if (!room_id)
        return PG_RUN(w->db, PG_IDEM_SET, NULL, NULL, STORE_INT(device_id), STORE_INT(request_id),
                      STORE_INT(message_id));
    /* The key's row was this send's claim, or an older record that names no message now. */
    if (!rec->fresh && (e = PG_RUN(w->db, PG_IDEM_CLEAR, NULL, NULL, STORE_INT(device_id),
                                   STORE_INT(request_id))) != GIM_OK)
        return e;
    return PG_RUN(w->db, PG_IDEM_PUT_ROOM, NULL, NULL, STORE_INT(device_id), STORE_INT(request_id),
                  STORE_INT(w->now_ms), STORE_INT(room_id), STORE_INT(room_seq));
}

/* ---- sync ---- */

static gim_err max_ack(struct store_conn *ro, int64_t user_id, int64_t *out)
{
    PGresult *res = NULL;
    gim_err e = pgstore_ready(ro);
    if (e == GIM_OK)
        e = PG_RUN(ro, PG_MAX_ACK, &res, NULL, STORE_INT(user_id));
    if (e == GIM_OK)
        *out = pgstore_int(res, 0, 0);
    PQclear(res);
    return e;
}

/* A page's rows: those of a result (message_rows, message.h). */
struct pg_rows {
    const PGresult *res;
    int row, rows;
};

static gim_err page_next(void *src, bool *row, size_t *need)
{
    struct pg_rows *p = src;
    *row = ++p->row < p->rows;
    if (*row)
        *need = MESSAGE_VIEW_OVERHEAD + (size_t)PQgetlength(p->res, p->row, 1 + 5) +
                (size_t)PQgetlength(p->res, p->row, 1 + 7);
    return GIM_OK;
}

static struct message_view *page_view(void *src, struct arena *a)
{
    struct pg_rows *p = src;
    return message_from_pgrow(p->res, p->row, 1, pgstore_int(p->res, p->row, 0), a);
}

gim_err message_page_pg(const PGresult *res, size_t page_size, size_t max_bytes, uint8_t **buf,
                        size_t *len)
{
    struct pg_rows p = {.res = res, .row = -1, .rows = PQntuples(res)};
    const struct message_rows rows = {.src = &p, .next = page_next, .view = page_view};
    return message_page_rows(&rows, page_size, max_bytes, buf, len);
}

static gim_err inbox_page(struct store_conn *ro, int64_t user_id, int64_t after, size_t page_size,
                          size_t max_bytes, uint8_t **buf, size_t *len)
{
    PGresult *res = NULL;
    *buf = NULL;
    *len = 0;
    gim_err e = pgstore_ready(ro);
    if (e == GIM_OK)
        e = PG_RUN(ro, PG_PAGE, &res, NULL, STORE_INT(user_id), STORE_INT(after),
                   STORE_INT((int64_t)page_size + 1));
    if (e == GIM_OK)
        e = message_page_pg(res, page_size, max_bytes, buf, len);
    PQclear(res);
    return e;
}

const struct storage_message_ops storage_pg_message = {
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
