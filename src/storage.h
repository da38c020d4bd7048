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
 *     e = storage(ro)->message->inbox_page(...);
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
 *
 * The writer's batch (writer_run_batch) is one flow for both backends:
 * begin, [lock_batch], per job savepoint / exec / release or rollback_to,
 * commit, and on a failure rollback and, while retryable() says so, the
 * whole batch again. SQLite runs exactly its old steps (BEGIN IMMEDIATE,
 * cached SAVEPOINT/RELEASE statements, COMMIT) and is never retryable; the
 * lock waits, checkpoints and WAL scrub of the writer, the /healthz probe
 * and the schema version logged at start-up are here too. Connections are
 * the writer's unless said otherwise.
 */
struct busy_wait;
struct gim_config;

/* The batch's transaction hands this to checkpoint_hook's fn: the WAL's size in pages. */
typedef void (*storage_wal_fn)(void *arg, int frames);

struct storage_tx_ops {
    /* Opens the batch's transaction, or maintenance's own short one outside
     * any batch (SQLite: BEGIN IMMEDIATE; PostgreSQL: after pgstore_ready,
     * BEGIN, and clears retryable()). */
    gim_err (*begin)(struct store_conn *c);
    /* A job's savepoint, taken before it runs. alone: the job is the batch's
     * only one, and a backend may skip the savepoint (PostgreSQL: two round
     * trips saved; its failure then ends in commit(c, false)). */
    gim_err (*savepoint)(struct store_conn *c, bool alone);
    /* Keeps the job's work: releases its savepoint (alone: as savepoint). */
    gim_err (*release)(struct store_conn *c, bool alone);
    /* Undoes the job's work: rolls back to its savepoint and releases it
     * (alone: as savepoint). An error leaves the transaction unusable. */
    gim_err (*rollback_to)(struct store_conn *c, bool alone);
    /* Whether the transaction is gone (SQLite rolled it back by itself on a
     * full disk or I/O error; PostgreSQL lost it, or it must be retried):
     * the jobs after it must not run. */
    bool (*lost)(const struct store_conn *c);
    /* Ends the batch keeping its work; checked (PostgreSQL: GIM_OK only when
     * the server says COMMIT). keep false: the batch's only job failed and
     * nothing is to be kept, so a backend may roll back instead (PostgreSQL,
     * whose failed statement aborted the transaction); GIM_OK then. */
    gim_err (*commit)(struct store_conn *c, bool keep);
    /* After a failed batch: rolls back whatever transaction is still open,
     * if any; never fails. */
    void (*rollback)(struct store_conn *c);
    /* Whether a transaction (anyone's) is open on c. */
    bool (*in_transaction)(const struct store_conn *c);
    /* The last failure was a deadlock (40P01) or a serialization failure
     * (40001): running the whole batch again may succeed. Never on SQLite. */
    bool (*retryable)(const struct store_conn *c);
    /* The last failure's SQLSTATE for the log ("" when none); NULL: the
     * backend has none (SQLite). */
    const char *(*sqlstate)(const struct store_conn *c);
    /* Locks a batch's rows before its first job, each list sorted ascending
     * and without repeats (may be empty): groups' rows, then users' seq
     * rows, then rooms' (writer.h, struct write_job.locks). NULL: the
     * backend has one writer and nothing to order (SQLite); the writer then
     * does not even ask the jobs. */
    gim_err (*lock_batch)(struct store_conn *c, const int64_t *groups, size_t ngroups,
                          const int64_t *users, size_t nusers, const int64_t *rooms, size_t nrooms);

    /* Lock waits. With b, c waits for a lock another connection holds at
     * most b->timeout_ms and never after busy_wait_cancel(b) (b outlives
     * c's use); with b NULL, plainly timeout_ms again. PostgreSQL: nothing
     * (its waits end with stop_waiting). */
    void (*wait_locks)(struct store_conn *c, struct busy_wait *b, uint32_t timeout_ms);
    /* From any thread: the statement c's owner runs stops waiting for a
     * lock now, and later ones wait for none (PostgreSQL: cancel and
     * lock_timeout, pgstore_stop_waiting). SQLite: nothing (busy_wait_cancel
     * does it). */
    void (*stop_waiting)(struct store_conn *c);

    /* Checkpoints (SQLite's WAL; PostgreSQL checkpoints by itself). Opens
     * the checkpointer's own connection beside the writer's c into *out
     * (the caller closes it with store_close), waiting at most tries x 1 ms
     * for a lock; *out NULL and GIM_OK when there is none to run (PostgreSQL,
     * an in-memory database). On failure errbuf says why. */
    gim_err (*checkpointer_open)(const struct gim_config *cfg, struct store_conn *c, int tries,
                                 struct store_conn **out, char *errbuf, size_t errlen);
    /* fn(arg, frames) runs after each commit on c, in place of SQLite's own
     * automatic checkpoints (GIM_ENOMEM: not installed, SQLite's stay); fn
     * NULL, only after a hook was installed, gives those back. */
    gim_err (*checkpoint_hook)(struct store_conn *c, storage_wal_fn fn, void *arg);
    /* A PASSIVE checkpoint: copies back what no reader needs, blocking no
     * one; *log_frames and *copied (either may be NULL) get the WAL's pages and those
     * copied. Logs a failure other than a busy database. */
    void (*checkpoint)(struct store_conn *c, int *log_frames, int *copied);
    /* One attempt at the WAL scrub (writer.c): true when the WAL was copied
     * back whole and truncated to 0 bytes; false while a reader holds an
     * older snapshot or the database is busy (logs other failures). */
    bool (*scrub)(struct store_conn *c);

    /* /healthz: a connection of its own that can try a write, for cfg's
     * database (store_close frees it). errbuf says why on failure. */
    gim_err (*health_open)(const struct gim_config *cfg, struct store_conn **out, char *errbuf,
                           size_t errlen);
    /* Whether the database takes writes now (SQLite: the write lock taken
     * and dropped within 100 ms; PostgreSQL: reachable and a primary); if
     * not, reason says why. */
    bool (*health_writable)(struct store_conn *c, char *reason, size_t len);

    /* The highest schema version this binary applies, and the database's
     * path for the start-up log (NULL: not logged; never a URL, it may hold
     * a password). */
    int (*schema_version)(void);
    const char *(*location)(const struct gim_config *cfg);
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
struct session; /* presence.h */

struct storage_device_ops {
    /*
     * Sign-in of s->device_id as s->user_id at s->gateway_id (writer's tx):
     * when the row names another user, drops the device's idempotency
     * room send records (the new user's request_ids must not meet them; a
     * user send's record names its message, whose sender handle_message.c
     * checks, migrations/0009) and adds how many to *dropped; then upserts the row online,
     * room 0, with client_addr (not NULL) and w->now_ms, keeping its acks
     * for the same user and zeroing them for another. With shared_sessions,
     * first reads into *old the session the row held (device_id, user_id,
     * gateway_id; device_id 0 when it was offline or had no row) and locks
     * the row until the commit, so a sign-in of the same device at another
     * instance waits; without, *old is zeroed (presence knows). Nothing
     * written on failure beyond the job's savepoint.
     */
    gim_err (*sign_in)(struct wctx *w, const struct session *s, const char *client_addr,
                       struct session *old, int *dropped);

    /*
     * Sign-out of a connection (writer's tx): marks device_id offline, room 0,
     * only while its row still names user_id and gateway_id (a late sign-out
     * of an old connection leaves a newer sign-in alone). No row matching is
     * GIM_OK.
     */
    gim_err (*sign_out)(struct wctx *w, int64_t device_id, int64_t user_id, const char *gateway_id);

    /*
     * Sign-out of a device whatever its session (writer's tx; the presence
     * sweeper's, maint_signout): marks device_id offline (online = 0, room_id
     * = 0, updated_at = w->now_ms), whatever user or gateway it is on. A
     * device without a row is GIM_OK. kick runs the same statement.
     */
    gim_err (*sign_out_any)(struct wctx *w, int64_t device_id);

    /*
     * An ack (writer's tx): sets the device's ack_seq and ack_time (and
     * updated_at = w->now_ms) only while the row names user_id and its
     * ack_seq is below ack_seq: acks only move forward. Nothing matching is
     * GIM_OK.
     */
    gim_err (*ack)(struct wctx *w, int64_t device_id, int64_t user_id, int64_t ack_seq,
                   int64_t ack_time);

    /*
     * A gateway's lease with a boot_id presence does not hold (writer's tx):
     * *restarted = the gateway table holds another boot for gateway_id (the
     * gateway restarted: its connections are gone), and then every device
     * online at gateway_id is marked offline; then boot_id is stored (at
     * w->now_ms) unless it is the one stored.
     */
    gim_err (*lease)(struct wctx *w, const char *gateway_id, int64_t boot_id, bool *restarted);

    /*
     * A kick (writer's tx): reads device_id's row into *row (device_id,
     * user_id, gateway_id "" if it has none; room_id and last_seen_ms 0) and
     * *was_online, then marks it offline as sign_out_any does. With
     * shared_sessions the row is locked until the commit (a sign-in of the
     * device at another instance waits, then wins). GIM_ENOTFOUND when the
     * device has no row (nothing written).
     */
    gim_err (*kick)(struct wctx *w, int64_t device_id, struct session *row, bool *was_online);

    /*
     * Every session the device table holds online, at start-up, on c: calls
     * put(arg, s) once per session (s borrowed for the call; device_id,
     * user_id, room_id, gateway_id, last_seen_ms = now_ms) and stops at its
     * first error, which it returns; *n gets how many put() accepted. A
     * failed read is its storage error (store_errmsg(c) says more).
     */
    gim_err (*load_sessions)(struct store_conn *c, int64_t now_ms,
                             gim_err (*put)(void *arg, const struct session *s), void *arg,
                             size_t *n);

    /*
     * The session device_id has now in the device table, whichever instance
     * made it, on c (any thread's read connection; a broken PostgreSQL
     * connection is re-established first): *found = it is online there,
     * and then *out gets device_id, user_id, room_id, gateway_id
     * (last_seen_ms untouched). GIM_EUNAVAILABLE while the database is away.
     */
    gim_err (*session)(struct store_conn *c, int64_t device_id, struct session *out, bool *found);
};
/* ==== end of device ========================================================= */

/* ==== group ================================================================ */
/*
 * groups: rows, membership (locked by sends and changes), ids, fan-out of group sends, notices and
 * operator sends with their push targets, operator idempotency (group.c, fanout.c, operator.c,
 * handle_admin_group.c, handle_admin_send.c; the roles a group send and a recall check,
 * handle_message.c and recall.c)
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
     * A group send's sender: user_id's role in group_id into *role (GROUP_NONE when not a member)
     * and whether the group exists into *exists (read only when the role is GROUP_NONE on SQLite;
     * true otherwise). On PostgreSQL the group's row is share-locked first (exists,
     * GROUP_LOCK_SHARE), so a membership change on another instance waits for this send (or it
     * for the change). Writer's connection, in its transaction. On failure *what names the
     * failed step ("group", "membership") for the log.
     */
    gim_err (*send_role)(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role *role, bool *exists, const char **what);
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
    /* (The actor's role in a group message's group is the group area's role.) */
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
     * Deletes up to limit of device_id's room send details; *deleted of them.
     * Its key rows in idempotency stay (keyed by request id first,
     * migrations/0009): once the device row is gone they answer nothing and
     * the idempotency sweep prunes them (maint.h).
     */
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
    /*
     * With shared_sessions (struct storage_ops) each instance writes what it saw (seen,
     * seen_gateway) and the holder of the maintenance lock signs out, in the database, the
     * devices no instance saw for the timeout (sweep); without, the sweep signs out what this
     * process's presence expires (the device area's sign_out_any), and seen, seen_gateway and
     * sweep are NULL.
     */

    /* w->db is up before a pass: a broken connection is re-established here. GIM_EUNAVAILABLE
     * while the server is away (SQLite: always GIM_OK). */
    gim_err (*ready)(struct wctx *w);
    /* Whether this instance runs the sweep, pruning and retention: true once w->db holds the
     * maintenance lock (PostgreSQL: an advisory lock kept for the connection's life; SQLite: the
     * one writer of the file, always true). */
    bool (*try_lock)(struct wctx *w);

    /* Maintenance's own short transactions on w->db, outside any batch, are the tx area's
     * (begin, commit(c, true), rollback; in_transaction). */

    /* shared_sessions only, autocommit. Raises device.updated_at of the online devices ids[i]
     * to seen[i] (never lowers it). */
    gim_err (*seen)(struct wctx *w, const int64_t *ids, const int64_t *seen, size_t n);
    /* Raises updated_at of every online device of gateway to at (never lowers it). */
    gim_err (*seen_gateway)(struct wctx *w, const char *gateway, int64_t at);
    /* Signs out (as the device area's sign_out_any) up to max online devices whose updated_at is
     * before cutoff, in one statement, and puts their ids in ids[0..*n): *n == max means more may
     * remain. */
    gim_err (*sweep)(struct wctx *w, int64_t cutoff, int64_t *ids, size_t max, size_t *n);

    /* SQLite: truncates the WAL so erased content leaves the file; GIM_EUNAVAILABLE while readers
     * still need it (try again later). PostgreSQL: nothing to do here (GIM_OK). */
    gim_err (*scrub_wal)(struct wctx *w);

    /* Autocommit, each deletes up to max_rows records created before cutoff and sets *n to how
     * many: send records (and key rows whose message or room details are gone), room send
     * details, operator records (PostgreSQL keeps those: *n = 0).
     * Send records and room details are keyed by device, not by time, so finding the expired
     * ones means looking at all of them. SQLite looks at one slice of the key order per call,
     * from where the last call stopped (w->idem_scan, w->room_scan), so a call costs
     * milliseconds at any table size; *more says whether the sweep has records left to look at
     * (call again, on a later pass) or has reached the end and starts over at the next call.
     * PostgreSQL, and operator records (a time index) on SQLite: *more = (*n == max_rows). */
    gim_err (*prune_idempotency)(struct wctx *w, int64_t cutoff, int max_rows, int *n, bool *more);
    gim_err (*prune_room_idempotency)(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                      bool *more);
    gim_err (*prune_operator_idempotency)(struct wctx *w, int64_t cutoff, int max_rows, int *n,
                                          bool *more);

    /* Inside the caller's transaction (tx->begin). Deletes up to max_rows of the oldest messages
     * (by id, within the head of the table) sent before cutoff, each with its inbox entries,
     * group copies and idempotency record; *n is how many. SQLite asks for the WAL scrub
     * (w->scrub_wal) when it deleted any. */
    gim_err (*retention_messages)(struct wctx *w, int64_t cutoff, int max_rows, int *n);
    /* The same for room log entries, with their room idempotency records. */
    gim_err (*retention_rooms)(struct wctx *w, int64_t cutoff, int max_rows, int *n);
};
/* ==== end of maint ========================================================= */

/* One backend: a table per area. */
struct storage_ops {
    const char *name; /* "sqlite", "postgres" */
    /*
     * Whether several instances share the sessions (PostgreSQL): the device table is then the
     * truth and each instance's presence a cache of it. A request's session is checked with
     * presence_check_shared (dispatch.c: one made by another instance is read on the worker's
     * connection), a sign-in reads the session it replaces (device area, sign_in), a kick tells
     * the row's gateway (kick.c), each instance writes the times it saw its devices and one
     * instance sweeps them in the database (maint area). false (SQLite, one instance): this
     * process's presence is the truth (presence_check) and the device table its copy for
     * restarts.
     */
    bool shared_sessions;
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
