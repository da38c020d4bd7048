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
#include "group.h" /* enum group_role, enum group_lock, struct group_info, struct group_member */

struct fanout;
struct fanout_copy;
struct message_new;

/* What claiming an operator request's idempotency key found (op_idem_claim). */
enum storage_op_idem {
    STORAGE_OP_IDEM_NEW,    /* no live record: the request runs (PostgreSQL: the key is its now) */
    STORAGE_OP_IDEM_REPLAY, /* the same request (type and body) was answered: its reply */
    STORAGE_OP_IDEM_OTHER,  /* a different request holds the key */
};

struct storage_group_ops {
    /* --- reads (any connection; inside the writer's transaction when given w->db) --- */

    /* The role of user_id in group_id into *role (GROUP_NONE: not a member or no such group). */
    gim_err (*role)(struct store_conn *db, int64_t group_id, int64_t user_id,
                    enum group_role *role);
    /*
     * Whether group_id exists, into *exists. PostgreSQL locks the group's row until the commit
     * as lock says (GROUP_LOCK_SHARE: a send; GROUP_LOCK_UPDATE: a change; group.h); SQLite's one
     * writer ignores lock.
     */
    gim_err (*exists)(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists);
    /*
     * PostgreSQL: locks the rows of groups ids[0..n) (ascending and distinct, else
     * GIM_EINTERNAL) FOR UPDATE in ascending id order until the commit (the writer's lock of a
     * batch, writer.c). A no-op on SQLite.
     */
    gim_err (*lock_batch)(struct store_conn *db, const int64_t *ids, size_t n);
    /* The member ids of group_id ascending, into a malloc'ed *ids the caller frees (NULL: none). */
    gim_err (*members)(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n);
    /* The number of members of group_id. */
    gim_err (*member_count)(struct store_conn *db, int64_t group_id, int64_t *n);
    /* The role and join time of member user_id of group_id; GIM_ENOTFOUND when not a member. */
    gim_err (*member_get)(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role *role, int64_t *joined_at);
    /*
     * A page of members: up to max of those with user_id > after_user_id, ascending, into the
     * caller's rows[0..max); *n says how many.
     */
    gim_err (*member_page)(struct store_conn *db, int64_t group_id, int64_t after_user_id,
                           size_t max, struct group_member *rows, size_t *n);
    /*
     * group_id with its member count into *g (zeroed first; its strings are malloc'ed, freed by
     * group_info_free()); GIM_ENOTFOUND when there is none.
     */
    gim_err (*info_load)(struct store_conn *db, int64_t group_id, struct group_info *g);

    /* --- writes (the writer's connection, inside its transaction) --- */

    /*
     * A new group: an id never given out before (PostgreSQL: group_id_high's row lock orders
     * creates across instances), its row, owner_id as its GROUP_OWNER member; the id in *group_id.
     */
    gim_err (*create)(struct store_conn *db, const char *name, const char *avatar_url,
                      const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id);
    /* Sets the fields that are not NULL, and updated_at. */
    gim_err (*update)(struct store_conn *db, int64_t group_id, const char *name,
                      const char *avatar_url, const char *extra, int64_t now_ms);
    /* Sets updated_at (a change of members or roles). */
    gim_err (*touch)(struct store_conn *db, int64_t group_id, int64_t now_ms);
    /* Deletes the group and its memberships. */
    gim_err (*dissolve)(struct store_conn *db, int64_t group_id);
    /* Adds user_id with role unless already a member (*added says which). */
    gim_err (*member_add)(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role role, int64_t now_ms, bool *added);
    /* Removes user_id if a member (*removed says whether it was). */
    gim_err (*member_remove)(struct store_conn *db, int64_t group_id, int64_t user_id,
                             bool *removed);
    /* Sets a member's role; GROUP_OWNER also makes it the group's owner_id. */
    gim_err (*member_set_role)(struct store_conn *db, int64_t group_id, int64_t user_id,
                               enum group_role role);

    /* --- fan-out (fanout.h; in w's transaction) --- */

    /*
     * One message m for a group in the inbox of each of ids[0..n) (distinct, n > 0): a seq of
     * each user, the message row, an inbox entry and a group_copy row per user. When user me
     * (0: none) is among ids, m->sender_seq is its copy's seq before the row is written.
     * to[0..n) (the caller's) gets the copies in the order their seqs were taken: ids' order on
     * SQLite, ascending user ids on PostgreSQL (its seq row locks' one global order); the
     * message row's id goes to *message_id.
     */
    gim_err (*fanout_group)(struct wctx *w, struct message_new *m, const int64_t *ids, size_t n,
                            int64_t me, struct fanout_copy *to, int64_t *message_id);
    /*
     * The order in which a write that gives each of ids[0..n) a copy of its own takes their
     * seqs, as positions into ids: pos[0..n) (the caller's). SQLite: as listed; PostgreSQL:
     * ascending ids (row locks in one global order, so instances cannot deadlock).
     */
    void (*user_order)(const int64_t *ids, size_t n, size_t *pos);
    /*
     * The push targets of what f's writer just wrote, when sessions live in the database
     * (PostgreSQL: several instances): the online devices from the device table, as of this
     * transaction, appended to f->targets (grown as needed) with f->targets_known set. SQLite's
     * sessions are this process's presence (fanout_push reads them): these leave f unchanged.
     * targets_group: the users of message f->message_id's group copies, sorted by user.
     * targets_user: user_id's. targets_room: the subscribers of room f->msg.receiver_id (call it
     * after the room entry is written: the room's row lock keeps out a concurrent subscribe);
     * they replace f->targets.
     */
    gim_err (*targets_group)(struct wctx *w, struct fanout *f);
    gim_err (*targets_user)(struct wctx *w, struct fanout *f, int64_t user_id);
    gim_err (*targets_room)(struct wctx *w, struct fanout *f);

    /* --- operator idempotency (operator.h; in w's transaction) --- */

    /*
     * Claims key for an operator request of type with body[0..body_len): *found says what
     * there was. A record created before expired_before (ms) counts as none and is replaced.
     * STORAGE_OP_IDEM_REPLAY: *reply is a malloc'ed copy of the stored reply the caller frees
     * (NULL when the record has none), *reply_len its length. PostgreSQL claims first: a row
     * with no reply, so the same retry reaching another instance waits for this transaction and
     * then finds the record; a failed request's savepoint takes the claim back.
     */
    gim_err (*op_idem_claim)(struct wctx *w, const char *key, int type, const uint8_t *body,
                             size_t body_len, int64_t expired_before, enum storage_op_idem *found,
                             uint8_t **reply, size_t *reply_len);
    /*
     * Records reply[0..reply_len) (NULL: none) as key's answer, after the change, in the same
     * transaction (SQLite writes the whole record; PostgreSQL completes the claimed one).
     */
    gim_err (*op_idem_put)(struct wctx *w, const char *key, int type, const uint8_t *body,
                           size_t body_len, const uint8_t *reply, size_t reply_len);
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
