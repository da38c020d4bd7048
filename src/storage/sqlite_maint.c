/*
 * The maint operations on sqlite (storage.h): idempotency pruning,
 * retention and the WAL scrub (the sweep's sign-outs are the device area's
 * sign_out_any, its transactions the tx area's), with the statements and
 * steps maint.c and retention.c ran before the seam (same SQL, same
 * statement cache use, same order).
 */
#include <stdlib.h>

#include "log.h"
#include "proto.h"
#include "storage.h"

/* How far into the head of the message table one retention call looks, in multiples of max. */
#define HEAD_WINDOW 4

/*
 * An idempotency record outlives its window; the tables have no time index
 * (it would cost every send), so pruning scans, rarely and in slices. A
 * user/group send's record is as old as its message; a key row whose
 * message or room details are gone has no time left and goes too. ?3 is a
 * message id below which messages are old (idem_old_ids): the scan compares
 * it with each record's message_id, as it compared created_at before
 * migration 0007, and looks up only the messages that may be old.
 */
static const char SQL_PRUNE_IDEM[] =
    "DELETE FROM idempotency WHERE (request_id, device_id) IN "
    "(SELECT i.request_id, i.device_id FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "LEFT JOIN room_idempotency r ON i.message_id IS NULL AND r.device_id = i.device_id "
    "AND r.request_id = i.request_id "
    "WHERE (i.request_id, i.device_id) > (?4, ?5) AND (i.request_id, i.device_id) <= (?6, ?7) "
    "AND (i.message_id IS NULL OR i.message_id < ?3) "
    "AND coalesce(m.send_time, r.created_at, 0) < ?1 LIMIT ?2)";
/*
 * An erased user's devices are gone, and the records of their sends inside the window go with
 * the next sweep (erasure.c), over the same slices (?4..?7; ?1 and ?3 unused). Run
 * only while an erasure started inside the window (SQL_ERASED_IN_WINDOW): a device lookup per
 * record made a slice of 20,000 cost ~9 ms more (1M copy), and in SQL_PRUNE_IDEM, as an OR,
 * it also cost every record its message lookup.
 */
static const char SQL_PRUNE_IDEM_ERASED[] =
    "DELETE FROM idempotency WHERE (request_id, device_id) IN "
    "(SELECT i.request_id, i.device_id FROM idempotency i "
    "WHERE (i.request_id, i.device_id) > (?4, ?5) AND (i.request_id, i.device_id) <= (?6, ?7) "
    "AND NOT EXISTS (SELECT 1 FROM device d WHERE d.device_id = i.device_id) LIMIT ?2)";
static const char SQL_ERASED_IN_WINDOW[] = "SELECT 1 FROM erasure WHERE started_at >= ?1 LIMIT 1";
/* The last key of the slice that starts after (?1, ?2): the ?3-th record on. The key is
 * (request_id, device_id) (migrations/0009); struct idem_scan holds it in that order. */
static const char SQL_IDEM_SLICE_END[] =
    "SELECT request_id, device_id FROM idempotency WHERE (request_id, device_id) > (?1, ?2) "
    "ORDER BY request_id, device_id LIMIT 1 OFFSET ?3";
/* Two subqueries: SQLite reads min() or max() of the rowid from one end of the b-tree only when
 * it is a query's only aggregate; "SELECT min(id), max(id)" read every message (0.64 s at 10M). */
static const char SQL_MESSAGE_IDS[] =
    "SELECT (SELECT min(id) FROM message), (SELECT max(id) FROM message)";
static const char SQL_MESSAGE_AT[] =
    "SELECT id, send_time FROM message WHERE id >= ?1 ORDER BY id LIMIT 1";
/* Room details go with their window; a key row left without them is pruned above. ?3 is
 * unused: the parameters are those of SQL_PRUNE_IDEM (sweep_slice). */
static const char SQL_PRUNE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE (device_id, request_id) IN "
    "(SELECT device_id, request_id FROM room_idempotency "
    "WHERE (device_id, request_id) > (?4, ?5) AND (device_id, request_id) <= (?6, ?7) "
    "AND created_at < ?1 LIMIT ?2)";
static const char SQL_ROOM_SLICE_END[] =
    "SELECT device_id, request_id FROM room_idempotency WHERE (device_id, request_id) > (?1, ?2) "
    "ORDER BY device_id, request_id LIMIT 1 OFFSET ?3";

/* The business API's records (operator.h) keep the same window; they have a time index. */
static const char SQL_PRUNE_OP_IDEM[] =
    "DELETE FROM operator_idempotency WHERE idem_key IN "
    "(SELECT idem_key FROM operator_idempotency WHERE created_at < ?1 LIMIT ?2)";

/* The oldest messages by id, of which those before the cutoff; see retention.h. */
static const char SQL_OLD_MESSAGES[] =
    "SELECT id, sender_id, sender_seq, receiver_type, receiver_id, receiver_seq "
    "FROM (SELECT id, sender_id, sender_seq, receiver_type, receiver_id, "
    "receiver_seq, send_time FROM message ORDER BY id LIMIT ?3) "
    "WHERE send_time < ?1 LIMIT ?2";
/* The message_id check keeps a copy that is not this message's (a bad row) untouched. */
static const char SQL_DEL_INBOX[] =
    "DELETE FROM inbox WHERE user_id = ?1 AND seq = ?2 AND message_id = ?3";
static const char SQL_DEL_GROUP_INBOX[] =
    "DELETE FROM inbox WHERE message_id = ?1 AND (user_id, seq) IN "
    "(SELECT user_id, seq FROM group_copy WHERE message_id = ?1)";
static const char SQL_DEL_GROUP_COPY[] = "DELETE FROM group_copy WHERE message_id = ?1";
/* The message's idempotency record stays: keyed by request id first (migrations/0009), it
 * cannot be found by its message without a scan. Left naming no message, it answers nothing
 * (handle_message.c) and the sweep prunes it (SQL_PRUNE_IDEM). */
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

static gim_err ready(struct wctx *w)
{
    (void)w;
    return GIM_OK;
}

/* The single-writer file lock (dblock.h) already makes this process the only maintainer. */
static bool try_lock(struct wctx *w)
{
    (void)w;
    return true;
}

/* Recalled content must leave the WAL file too: truncate it once readers allow. */
static gim_err scrub_wal(struct wctx *w)
{
    int log_frames = -1, ckpt = -1;
    int rc =
        sqlite3_wal_checkpoint_v2(w->db->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &ckpt);
    if (rc == SQLITE_OK)
        return GIM_OK;
    log_debug("wal truncate postponed", "rc=%d", rc);
    return GIM_EUNAVAILABLE;
}

/*
 * The first message id whose send_time is not before cutoff, found by
 * bisecting the ids (send_time grows with the id: the writer stamps both in
 * order). If the clock ever stepped back the bound is only less complete;
 * the prune still checks each message's own send_time. 0 on failure (then
 * nothing is pruned by message).
 */
static int64_t idem_old_ids(struct wctx *w, int64_t cutoff)
{
    int64_t lo = INT64_MAX, hi = INT64_MAX; /* no messages: every record's is gone */
    sqlite3_stmt *st = store_stmt(w->db, SQL_MESSAGE_IDS);
    if (!st)
        return 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        lo = sqlite3_column_int64(st, 0);
        hi = sqlite3_column_int64(st, 1) + 1;
    }
    store_done(st);
    if (rc != SQLITE_ROW)
        return 0;
    if (!(st = store_stmt(w->db, SQL_MESSAGE_AT)))
        return 0;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (STORE_BIND(st, STORE_INT(mid)) != SQLITE_OK) {
            store_done(st);
            return 0;
        }
        if (sqlite3_step(st) != SQLITE_ROW) {
            hi = mid;
        } else if (sqlite3_column_int64(st, 1) < cutoff) {
            lo = sqlite3_column_int64(st, 0) + 1;
        } else {
            hi = mid;
        }
        store_done(st);
    }
    /* Ids between lo and the next message's are deleted messages': as old as their neighbours. */
    if (STORE_BIND(st, STORE_INT(lo)) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        lo = sqlite3_column_int64(st, 0);
    store_done(st);
    return lo;
}

/*
 * One slice of a sweep over records keyed by two integers (idempotency: (request_id, device_id),
 * room_idempotency: (device_id, request_id); storage.h): the IDEM_SCAN
 * records after *pos, of which prune_sql deletes the expired ones, at most max_rows. A full
 * slice may hold more: the next call looks at it again; else the next call starts after it, or
 * at the first record once the sweep has reached the end. Measured on the 10M copy (warm
 * cache): finding the slice's end takes 3 ms; looking at every record took 0.3 s.
 */
#define IDEM_SCAN 20000

static gim_err sweep_slice(struct wctx *w, struct idem_scan *pos, const char *end_sql,
                           const char *prune_sql, const char *prune2_sql, int64_t cutoff,
                           int64_t below, int max_rows, int *n, bool *more)
{
    int64_t from_1 = pos->mid ? pos->key[0] : INT64_MIN;
    int64_t from_2 = pos->mid ? pos->key[1] : INT64_MIN;
    int64_t to_1 = INT64_MAX, to_2 = INT64_MAX; /* no IDEM_SCAN-th record: to the end */
    sqlite3_stmt *st = store_stmt(w->db, end_sql);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(from_1), STORE_INT(from_2), STORE_INT(IDEM_SCAN - 1));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    bool last = rc != SQLITE_ROW;
    if (!last) {
        to_1 = sqlite3_column_int64(st, 0);
        to_2 = sqlite3_column_int64(st, 1);
    }
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
    gim_err e =
        STORE_RUN(w->db, prune_sql, n, STORE_INT(cutoff), STORE_INT(max_rows), STORE_INT(below),
                  STORE_INT(from_1), STORE_INT(from_2), STORE_INT(to_1), STORE_INT(to_2));
    if (e == GIM_OK && prune2_sql && *n < max_rows) {
        int n2 = 0;
        e = STORE_RUN(w->db, prune2_sql, &n2, STORE_INT(cutoff), STORE_INT(max_rows - *n),
                      STORE_INT(below), STORE_INT(from_1), STORE_INT(from_2), STORE_INT(to_1),
                      STORE_INT(to_2));
        *n += n2;
    }
    if (e != GIM_OK)
        return e;
    if (*n == max_rows) {
        *more = true; /* this slice again: it may hold more */
    } else if (last) {
        pos->mid = false;
    } else {
        *pos = (struct idem_scan){.mid = true, .key = {to_1, to_2}};
        *more = true;
    }
    return GIM_OK;
}

static gim_err prune_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n, bool *more)
{
    *n = 0;
    *more = false;
    int64_t below = idem_old_ids(w, cutoff);
    if (!below)
        return GIM_OK; /* the bisection failed: this sweep ends, the next one retries */
    bool erased = false;
    gim_err e = STORE_EXISTS(w->db, SQL_ERASED_IN_WINDOW, &erased, STORE_INT(cutoff));
    if (e != GIM_OK)
        return e;
    return sweep_slice(w, &w->idem_scan, SQL_IDEM_SLICE_END, SQL_PRUNE_IDEM,
                       erased ? SQL_PRUNE_IDEM_ERASED : NULL, cutoff, below, max_rows, n, more);
}

static gim_err prune_room_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                      bool *more)
{
    *n = 0;
    *more = false;
    return sweep_slice(w, &w->room_scan, SQL_ROOM_SLICE_END, SQL_PRUNE_ROOM_IDEM, NULL, cutoff, 0,
                       max_rows, n, more);
}

static gim_err prune_operator_idempotency(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                          bool *more)
{
    *n = 0;
    gim_err e = STORE_RUN(w->db, SQL_PRUNE_OP_IDEM, n, STORE_INT(cutoff), STORE_INT(max_rows));
    *more = e == GIM_OK && *n == max_rows;
    return e;
}

struct old_message {
    int64_t id, sender_id, sender_seq;
    int receiver_type;
    int64_t receiver_id, receiver_seq;
};

struct old_room {
    int64_t room_id, seq, device_id;
};

/* Collects first, deletes after: no statement walks a table while it shrinks. */
static gim_err find_messages(struct store_conn *db, int64_t cutoff, int max,
                             struct old_message *out, int *n)
{
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
                                           .receiver_type = sqlite3_column_int(st, 3),
                                           .receiver_id = sqlite3_column_int64(st, 4),
                                           .receiver_seq = sqlite3_column_int64(st, 5)};
            (*n)++;
        }
    store_done(st);
    return *n == max || rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err delete_message(struct store_conn *db, const struct old_message *m)
{
    gim_err e;
    if ((e = STORE_RUN(db, SQL_DEL_INBOX, NULL, STORE_INT(m->sender_id), STORE_INT(m->sender_seq),
                       STORE_INT(m->id))) != GIM_OK)
        return e;
    /* RT_USER keeps the receiver's copy in the row itself (the same one for a self-send). */
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_USER && m->receiver_seq > 0 &&
        (e = STORE_RUN(db, SQL_DEL_INBOX, NULL, STORE_INT(m->receiver_id),
                       STORE_INT(m->receiver_seq), STORE_INT(m->id))) != GIM_OK)
        return e;
    if ((e = STORE_RUN(db, SQL_DEL_GROUP_INBOX, NULL, STORE_INT(m->id))) != GIM_OK ||
        (e = STORE_RUN(db, SQL_DEL_GROUP_COPY, NULL, STORE_INT(m->id))) != GIM_OK)
        return e;
    return STORE_RUN(db, SQL_DEL_MESSAGE, NULL, STORE_INT(m->id));
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
    if (e == GIM_OK && n > 0)
        w->scrub_wal = true; /* the deleted content is still in WAL frames */
    free(old);
    return e;
}

static gim_err retention_rooms(struct wctx *w, int64_t cutoff, int max, int *deleted)
{
    struct old_room *old = malloc((size_t)max * sizeof *old);
    struct store_conn *db = w->db;
    sqlite3_stmt *st = NULL;
    gim_err e = GIM_OK;
    int n = 0, rc = SQLITE_DONE;
    *deleted = 0;
    if (!old) {
        e = GIM_ENOMEM;
        goto out;
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
    for (int i = 0; e == GIM_OK && i < n; i++) {
        e = STORE_RUN(db, SQL_DEL_ROOM_IDEM, NULL, STORE_INT(old[i].device_id),
                      STORE_INT(old[i].room_id), STORE_INT(old[i].seq));
        if (e == GIM_OK)
            e = STORE_RUN(db, SQL_DEL_ROOM_IDEM_DETAILS, NULL, STORE_INT(old[i].device_id),
                          STORE_INT(old[i].room_id), STORE_INT(old[i].seq));
        if (e == GIM_OK)
            e = STORE_RUN(db, SQL_DEL_ROOM, NULL, STORE_INT(old[i].room_id), STORE_INT(old[i].seq));
    }
    if (e == GIM_OK)
        *deleted = n;
    if (e == GIM_OK && n > 0)
        w->scrub_wal = true; /* the deleted content is still in WAL frames */
out:
    free(old);
    return e;
}

const struct storage_maint_ops storage_sqlite_maint = {
    .ready = ready,
    .try_lock = try_lock,
    .seen = NULL,
    .seen_gateway = NULL,
    .sweep = NULL,
    .scrub_wal = scrub_wal,
    .prune_idempotency = prune_idempotency,
    .prune_room_idempotency = prune_room_idempotency,
    .prune_operator_idempotency = prune_operator_idempotency,
    .retention_messages = retention_messages,
    .retention_rooms = retention_rooms,
};
