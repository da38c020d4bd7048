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
struct session;     /* presence.h */
struct kick_target; /* kick.h */

/* The message an inbox entry points at, as far as a recall needs it. */
struct storage_recall_msg {
    int64_t id;
    int sender_type;
    int64_t sender_id;
    int receiver_type;
    int64_t receiver_id;
    int64_t send_time;
    int status;
    int64_t sender_seq, receiver_seq;
    int notice; /* 0, or the Command code of an IM notice (MT_COMMAND, code 1..999) */
};

/* One inbox copy of a message: (user_id, seq). */
struct storage_recall_copy {
    int64_t user_id, seq;
};

/* Where an erasure stands (its `erasure` row). */
struct storage_erasure_state {
    int64_t upto_seq, room_id, room_seq;
};

/* One inbox entry of a user being erased, with what its message is. */
struct storage_erasure_entry {
    int64_t seq, message_id;
    bool has_message; /* false: the entry points at a missing message (a damaged row) */
    int sender_type;
    int64_t sender_id, sender_device_id;
    int receiver_type;
    int64_t receiver_id, sender_seq, receiver_seq;
    bool has_content; /* anything left to erase */
};

/* What erasure_entry did to the entry's message besides deleting the entry. */
enum storage_erasure_outcome {
    STORAGE_ERASURE_KEPT = 0, /* held elsewhere and not the user's, or nothing left to erase */
    STORAGE_ERASURE_ERASED,   /* the user's message, held elsewhere: content erased in place */
    STORAGE_ERASURE_DELETED,  /* no inbox held it any more: deleted with its idempotency record */
};

struct storage_recall_ops {
    /* -- recall (recall.c); all inside the writer's transaction -- */

    /*
     * The message at (user_id, seq) of user_id's inbox into *m; on
     * PostgreSQL its row is locked (FOR UPDATE) so two instances recalling
     * it at once run one after the other. GIM_ENOTFOUND when there is no
     * such entry.
     */
    gim_err (*find)(struct wctx *w, int64_t user_id, int64_t seq, struct storage_recall_msg *m);
    /* user_id's role in group_id into *role (an enum group_role; GROUP_NONE when not a member). */
    gim_err (*role)(struct wctx *w, int64_t group_id, int64_t user_id, int *role);
    /*
     * Erases m's content (status MS_RECALL, content NULL) and lists the
     * copies that get a notice: a group message's member copies, a 1:1
     * message's sender and receiver copies (one for a note to self), each
     * only while its inbox entry still points at the message, in ascending
     * user id. *copies is malloc'ed (NULL when *n is 0); the caller frees it,
     * also on failure.
     */
    gim_err (*erase)(struct wctx *w, const struct storage_recall_msg *m,
                     struct storage_recall_copy **copies, size_t *n);
    /*
     * After the notices are written: the push targets of the users of
     * copies[0..n) when sessions live in the database (PostgreSQL: their
     * online devices from the device table, *targets malloc'ed, the caller
     * frees it, *known true); SQLite leaves *targets NULL and *known false
     * (in-memory presence is the whole truth).
     */
    gim_err (*targets)(struct wctx *w, const struct storage_recall_copy *copies, size_t n,
                       struct session **targets, size_t *n_targets, bool *known);
    /*
     * Content left the tables in this transaction (a recall, an erasure
     * step): SQLite asks for the WAL scrub after the commit (w->scrub_wal,
     * the old frames still hold it); PostgreSQL has nothing to do. Cannot fail.
     */
    void (*erased)(struct wctx *w);

    /* -- erasure steps (erasure.c); all inside the writer's transaction -- */

    /*
     * user_id's erasure row into *s, *running when it is in progress (not
     * finished); locked on PostgreSQL so two instances never step the same
     * erasure at once. *s is untouched when !*running.
     */
    gim_err (*erasure_state)(struct wctx *w, int64_t user_id, struct storage_erasure_state *s,
                             bool *running);
    /* (Re)starts user_id's erasure up to upto_seq, cursor at the start, started at w->now_ms. */
    gim_err (*erasure_start)(struct wctx *w, int64_t user_id, int64_t upto_seq);
    /* Moves the room cursor of user_id's erasure to (room_id, room_seq). */
    gim_err (*erasure_cursor)(struct wctx *w, int64_t user_id, int64_t room_id, int64_t room_seq);
    /* Marks user_id's erasure finished at w->now_ms. */
    gim_err (*erasure_finish)(struct wctx *w, int64_t user_id);
    /*
     * Up to limit of user_id's devices, ascending device id, into out[0..*n)
     * (caller's array of at least limit; device_id, user_id, was_online,
     * gateway_id); locked on PostgreSQL.
     */
    gim_err (*erasure_devices)(struct wctx *w, int64_t user_id, int limit, struct kick_target *out,
                               size_t *n);
    /*
     * Deletes up to limit of device_id's idempotency records (the key rows
     * and, first, the room details of the same keys); *deleted = key rows
     * deleted.
     */
    gim_err (*erasure_device_idem)(struct wctx *w, int64_t device_id, int limit, int *deleted);
    /* Deletes up to limit room details of device_id left without a key row; *deleted of them. */
    gim_err (*erasure_device_room_idem)(struct wctx *w, int64_t device_id, int limit, int *deleted);
    /* Deletes device_id's row (when it is user_id's). */
    gim_err (*erasure_device_delete)(struct wctx *w, int64_t user_id, int64_t device_id);
    /* Deletes up to limit of user_id's group memberships; *deleted of them. */
    gim_err (*erasure_memberships)(struct wctx *w, int64_t user_id, int limit, int *deleted);
    /*
     * Up to limit of user_id's inbox entries with seq <= upto_seq, ascending
     * seq, into list[0..*n) (caller's array of at least limit).
     */
    gim_err (*erasure_inbox)(struct wctx *w, int64_t user_id, int64_t upto_seq, int limit,
                             struct storage_erasure_entry *list, int *n);
    /*
     * Deletes the inbox entry e of user_id (and its group copy row); then
     * a message no inbox holds any more is deleted with its idempotency
     * record, and one the user sent that others still hold has its content
     * erased (status MS_RECALL, content and @mentions NULL). *outcome says
     * which.
     */
    gim_err (*erasure_entry)(struct wctx *w, int64_t user_id, const struct storage_erasure_entry *e,
                             enum storage_erasure_outcome *outcome);
    /*
     * Scans room logs in (room, seq) order after (*room_id, *room_seq), at
     * most limit rows, collecting user_id's messages with content left into
     * hits[0..*nhits) (room_id, seq), stopping at the max_hits-th. The cursor
     * moves to the last row read; *read = rows read, *stopped when it stopped
     * at max_hits rather than at the end or at limit.
     */
    gim_err (*erasure_room_scan)(struct wctx *w, int64_t user_id, int64_t *room_id,
                                 int64_t *room_seq, int limit, int max_hits, int64_t (*hits)[2],
                                 int *nhits, int *read, bool *stopped);
    /* Erases the content of room message (room_id, seq) (status MS_RECALL, content, @mentions). */
    gim_err (*erasure_room_erase)(struct wctx *w, int64_t room_id, int64_t seq);
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
