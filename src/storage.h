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
 *
 * Seqs: on SQLite the counters live in memory (w->seq, seq.h) and are written back by
 * flush_seqs inside the batch's transaction; on PostgreSQL each seq is taken in the database
 * under the counter row's lock until the commit (seq.h's contract). `kind` is an enum seq_kind.
 */
struct arena;
struct message_new;
struct message_view;
struct session;

/* A send's idempotency record (device_id, request_id), as idem_claim found it: the fields
 * after fresh are set only when a record was found (!fresh). */
struct message_idem {
    bool fresh;         /* no record: the key is new (on PostgreSQL now claimed, see idem_claim) */
    bool has_message;   /* the record names a message (a user or group send) */
    bool message_gone;  /* ... which no longer exists */
    int64_t message_id; /* has_message */
    int64_t sender_id, sender_seq; /* the message's sender and the sender's copy */
    int64_t created;               /* the message's send_time, or the room record's created_at */
    size_t size;   /* the message's content + mentions bytes (room for message_load) */
    bool has_room; /* no message: the record names a room log entry */
    int64_t room_id, room_seq;
};

/* What send_user stored. */
struct message_stored {
    int64_t message_id, sender_seq, receiver_seq;
    /*
     * PostgreSQL: the two users' online devices read in the transaction, sorted by user
     * (targets_known; targets calloc'ed, the caller frees it, NULL when none). SQLite:
     * targets_known false, pushes follow presence (the one writer keeps it exact).
     */
    struct session *targets;
    size_t n_targets;
    bool targets_known;
};

struct storage_message_ops {
    /* The next seq of (kind, id) into *out: last + 1 (seq_next). */
    gim_err (*next_seq)(struct wctx *w, int kind, int64_t id, int64_t *out);
    /*
     * The next seq of each user ids[0..n) (ascending, distinct) into out[0..n) (a group's
     * fan-out): next_seq of each on SQLite, one statement locking the rows in ascending id order
     * on PostgreSQL. GIM_EINTERNAL when ids break the contract (PostgreSQL).
     */
    gim_err (*next_user_seqs)(struct wctx *w, const int64_t *ids, size_t n, int64_t *out);
    /* The highest seq taken so far of (kind, id), 0 if none (seq_last). */
    gim_err (*last_seq)(struct wctx *w, int kind, int64_t id, int64_t *out);
    /*
     * PostgreSQL: row-locks the counters of ids[0..n) (ascending, distinct) of kind until the
     * commit, creating missing ones (the writer's lock of a batch, seq_lock). SQLite: nothing.
     */
    gim_err (*lock_seqs)(struct wctx *w, int kind, const int64_t *ids, size_t n);
    /* Writes the counters changed since the last commit (SQLite; nothing on PostgreSQL). */
    gim_err (*flush_seqs)(struct wctx *w);

    /* Inserts the message row m (seqs filled in); *id is its message id. */
    gim_err (*insert)(struct wctx *w, const struct message_new *m, int64_t *id);
    /* Adds the inbox entry (user_id, seq) -> message_id. */
    gim_err (*inbox_add)(struct wctx *w, int64_t user_id, int64_t seq, int64_t message_id);
    /*
     * Loads message message_id as the copy with seq `seq` into *out, built in a (the caller
     * sizes and frees it). GIM_ENOTFOUND when it is gone, GIM_ENOMEM when a is too small.
     */
    gim_err (*load)(struct store_conn *db, int64_t message_id, int64_t seq, struct arena *a,
                    struct message_view **out);

    /*
     * A 1:1 send, whole: takes the sender's seq and the receiver's (one seq for a self-send;
     * on PostgreSQL in ascending user id order), stores m with them, its inbox entries
     * (sender's, then receiver's unless a self-send) and, when request_id != 0, points the
     * record of (m->sender_device_id, request_id) at it. *out as above (out->targets the
     * caller's, on failure too). On failure *what names the failed step ("sender seq",
     * "message", "receiver inbox", "idempotency", ...) for the log.
     */
    gim_err (*send_user)(struct wctx *w, struct message_new *m, int64_t request_id,
                         struct message_stored *out, const char **what);
    /*
     * The sender's role (an enum group_role, GROUP_NONE when not a member) in group gid and
     * whether the group exists (read only when the role is GROUP_NONE on SQLite), for a group
     * send: on PostgreSQL the group's row is share-locked first, so a membership change on
     * another instance waits for this send (or it for the change). *what names the failed step.
     */
    gim_err (*send_group_role)(struct wctx *w, int64_t gid, int64_t user_id, int *role,
                               bool *exists, const char **what);
    /*
     * A room send's push targets, read in the transaction after the room's entry was appended:
     * PostgreSQL: the online devices subscribed to room_id (*targets calloc'ed, the caller's;
     * *known = true). SQLite: nothing read, *known = false (pushes follow presence).
     */
    gim_err (*send_room_targets)(struct wctx *w, int64_t room_id, struct session **targets,
                                 size_t *n, bool *known);

    /*
     * Reads the idempotency record of (device_id, request_id) into *out. PostgreSQL claims
     * the key first (a new record naming nothing, held until the commit): the same retry on
     * another instance waits for this transaction and then finds the record.
     */
    gim_err (*idem_claim)(struct wctx *w, int64_t device_id, int64_t request_id,
                          struct message_idem *out);
    /*
     * The record rec (found, not fresh, naming no message) is not replayed: this send takes it
     * over. PostgreSQL drops its room details; SQLite's idem_put replaces them (nothing here).
     */
    gim_err (*idem_take_over)(struct wctx *w, int64_t device_id, int64_t request_id,
                              const struct message_idem *rec);
    /*
     * Points the record of (device_id, request_id) (rec as idem_claim read it) at this send:
     * message_id (a group send), or with room_id != 0 the room log entry (room_id, room_seq)
     * created at w->now_ms (a room send; message_id 0).
     */
    gim_err (*idem_put)(struct wctx *w, int64_t device_id, int64_t request_id,
                        const struct message_idem *rec, int64_t message_id, int64_t room_id,
                        int64_t room_seq);

    /* Sync, on a reader's connection. The highest seq any device of user_id acked, 0 if none. */
    gim_err (*max_ack)(struct store_conn *ro, int64_t user_id, int64_t *out);
    /*
     * One page of user_id's inbox after seq `after` in one snapshot, encoded as message_page
     * does (message.h): *buf malloc'ed (*len bytes), the caller's. GIM_ENOMEM, or the failed
     * statement's error (GIM_EUNAVAILABLE for a PostgreSQL connection that is away).
     */
    gim_err (*inbox_page)(struct store_conn *ro, int64_t user_id, int64_t after, size_t page_size,
                          size_t max_bytes, uint8_t **buf, size_t *len);
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
 * rooms: a room's seq, log entries, pages, subscriptions, subscribers, room idempotency (room.c)
 */
struct storage_room_ops {
    int placeholder_; /* until the area's operations move here */
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
