/*
 * storage: the one interface between gim-logic and its database (issue 17).
 *
 * Everything gim-logic asks of its database is an operation in this header,
 * at the level of whole operations (take the seqs of a send, store a message
 * and its inbox entries, read an inbox page, sign a device in, ...). Each
 * backend implements every operation once, in src/storage/: SQLite in
 * sqlite_*.c (the embedded default: the statement cache, the in-memory seq
 * counters, group commit and the WAL scrub stay what they were), PostgreSQL
 * in pg_*.c (several instances on one database: seqs and row locks in the
 * database, claim-first idempotency). A connection carries its backend's
 * table (store_conn.ops, set by store_open()), so the request path calls
 *     e = storage(w->db)->message->page(...);
 * and never tests the backend; no file outside src/storage/, store.c and
 * pgstore.c contains SQL or calls SQLite or libpq (test_storage_seam checks).
 *
 * The operations are grouped by area, one table each; an area's SQL for
 * both backends sits in its pair of files (sqlite_<area>.c, pg_<area>.c).
 * Read operations take the connection they run on (a worker's read-only one
 * or the writer's); write operations take the writer's struct wctx and run
 * inside its transaction (tx). Unless an operation says otherwise, it
 * returns GIM_OK or the error of the failed statement, changes nothing the
 * caller must undo beyond the transaction's savepoint, and borrows its
 * arguments.
 */
#ifndef GIM_STORAGE_H
#define GIM_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"
#include "wctx.h"

/* ==== tx ================================================================ */
/*
 * transactions: begin, savepoint per job, release/rollback to, commit, rollback, whether a failure
 * is worth a retry (writer.c)
 */
struct storage_tx_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of tx ========================================================= */

/* ==== message ================================================================ */
/*
 * seqs of users (take N, last), messages, inbox entries, inbox pages and acks (sync), the
 * idempotency of sends and their push targets (seq.c, message.c, handle_message.c, handle_sync.c)
 */
struct storage_message_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of message ========================================================= */

/* ==== device ================================================================ */
/*
 * devices and sessions: sign-in, sign-out, acks, gateway leases, kicks, loading sessions, a session
 * another instance made, health gauges (presence.c, handle_signin.c, handle_signout.c,
 * handle_message_ack.c, handle_gateway_lease.c, kick.c, http.c, busy.c)
 */
struct storage_device_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of device ========================================================= */

/* ==== group ================================================================ */
/*
 * groups: rows, membership (locked by sends and changes), ids, fan-out of group sends, notices and
 * operator sends with their push targets, operator idempotency (group.c, fanout.c, operator.c,
 * handle_admin_group.c, handle_admin_send.c)
 */
struct storage_group_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of group ========================================================= */

/* ==== room ================================================================ */
/*
 * rooms: a room's log entries, pages, subscriptions, subscribers (room.c). A room's seq is taken
 * by the message area (seq_next, SEQ_ROOM; on PostgreSQL it locks the room's row until the
 * commit) and room idempotency is a send's (handle_message.c); room.c's functions call these.
 */
struct arena;
struct message_new;
struct message_view;
struct session;

struct storage_room_ops {
    /*
     * Stores m (its sender, mentions, type, content and send_time; receiver and seq fields are
     * ignored) as entry seq of room_id's log, seq being the room's next seq the caller took in
     * this transaction; then, when seq > retain, deletes the entries up to seq - retain, so the
     * log keeps its last retain entries (the oldest one, or a few after retain was lowered).
     * Writer, in its transaction. GIM_ENOMEM, or the failed statement's error.
     */
    gim_err (*append)(struct wctx *w, int64_t room_id, int64_t seq, const struct message_new *m,
                      int64_t retain);
    /*
     * Entry seq of room_id's log as a pb.Message (receiver RT_ROOM/room_id, seq = the room seq)
     * in *out, built in *a, which this initialises (zeroed first, then sized to fit the row);
     * the caller frees *a with arena_free(), on failure too. GIM_ENOTFOUND when the entry was
     * pruned or never existed.
     */
    gim_err (*load)(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                    struct message_view **out);
    /*
     * One page of room_id's log after room seq `after` (0 = from the oldest retained entry), in
     * seq order: at most page_size entries and the byte budget max_bytes, with has_more, as
     * message_page() builds it. *buf (malloc'ed, *len bytes; NULL on failure) is the encoded
     * pb.SyncOutput, the caller's to free. On PostgreSQL one statement (one snapshot): room
     * seq N+1 is never in a page without N.
     */
    gim_err (*page)(struct store_conn *db, int64_t room_id, int64_t after, size_t page_size,
                    size_t max_bytes, uint8_t **buf, size_t *len);
    /*
     * Records that the device of session s is subscribed to room_id (0 = none), updated_at =
     * now_ms, guarded by the whole session (device, user, gateway, online). GIM_EUNAUTH when
     * the device row no longer holds that session. On PostgreSQL it first locks the device row,
     * then the rooms left and joined by ascending id (the row lock a room send takes with its
     * seq), until the commit. Writer connection, in its transaction.
     */
    gim_err (*subscribe)(struct store_conn *db, const struct session *s, int64_t room_id,
                         int64_t now_ms);
    /*
     * The room the device of session s is subscribed to as of this transaction (0 = none) in
     * *room_id (0 on failure too). GIM_EUNAUTH when the device row no longer holds that
     * session.
     */
    gim_err (*subscribed)(struct store_conn *db, const struct session *s, int64_t *room_id);
    /*
     * PostgreSQL: the online devices subscribed to room_id as of this transaction, whichever
     * instance they subscribed through (the push targets of a room send; call it after the
     * send's seq so the room's row lock keeps a subscribe from slipping in before the commit).
     * *out is a calloc'ed array of *n sessions (NULL when none; NULL and 0 on failure) the
     * caller frees. SQLite: GIM_EINTERNAL, always: its pushes follow presence, which the one
     * writer keeps exact.
     */
    gim_err (*subscribers)(struct store_conn *db, int64_t room_id, struct session **out, size_t *n);
};
/* ==== end of room ========================================================= */

/* ==== recall ================================================================ */
/*
 * recall and erasure: lock a message, erase its content, notices, push targets; the erasure steps
 * (recall.c, erasure.c)
 */
struct storage_recall_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of recall ========================================================= */

/* ==== maint ================================================================ */
/*
 * maintenance: seen times, presence sweep, idempotency pruning, retention (maint.c, retention.c)
 */
struct storage_maint_ops {
    int placeholder_; /* until the area's operations move here */
};
/* ==== end of maint ========================================================= */

/* One backend: a table per area. */
struct storage_ops {
    const char *name; /* "sqlite", "postgres" */
    const struct storage_tx_ops *tx;
    const struct storage_message_ops *message;
    const struct storage_device_ops *device;
    const struct storage_group_ops *group;
    const struct storage_room_ops *room;
    const struct storage_recall_ops *recall;
    const struct storage_maint_ops *maint;
};

/* The two backends (src/storage/sqlite.c, src/storage/pg.c). */
extern const struct storage_ops storage_sqlite;
extern const struct storage_ops storage_pg;

/* c's backend (c must not be NULL). */
static inline const struct storage_ops *storage(const struct store_conn *c)
{
    return c->ops;
}

#endif
