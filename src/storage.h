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
 *
 * The writer's batch (writer_run_batch) is one flow for both backends:
 * begin, [lock_batch], per job savepoint / exec / release or rollback_to,
 * commit, and on a failure rollback and, while retryable() says so, the
 * whole batch again. SQLite runs exactly its old steps (BEGIN IMMEDIATE,
 * cached SAVEPOINT/RELEASE statements, COMMIT) and is never retryable; the
 * lock waits, checkpoints and WAL scrub of the writer, the /healthz probe,
 * the schema version logged at start-up and how a request's session is
 * checked are here too. Connections are the writer's unless said otherwise.
 */
struct busy_wait;
struct presence;
struct session;
struct gim_config;

/* The batch's transaction hands this to checkpoint_hook's fn: the WAL's size in pages. */
typedef void (*storage_wal_fn)(void *arg, int frames);

struct storage_tx_ops {
    /* Opens the batch's transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL:
     * after pgstore_ready, BEGIN, and clears retryable()). */
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
    /* After a failed batch: rolls back whatever transaction is still open. */
    void (*rollback)(struct store_conn *c);
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

    /* Authenticates a request (presence.h, presence_check): SQLite's one
     * instance holds every session; on PostgreSQL a session another
     * instance made is looked up on ro, the caller's read connection
     * (presence_check_shared). */
    gim_err (*session_check)(struct presence *p, struct store_conn *ro, int64_t user_id,
                             int64_t device_id, const char *gateway_id, int64_t now_ms,
                             struct session *out);
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
