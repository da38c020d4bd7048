/*
 * writer: the one thread that writes to the database, in group commits.
 *
 * Every request that writes (sign-in, sign-out, send, ack, recall, room send)
 * becomes a write_job queued here. The writer takes everything waiting (up to
 * writer.max_batch), opens one transaction, runs each job under its own
 * savepoint (a failing job is rolled back alone and its neighbours keep their
 * work), writes the seq counters, commits, and only then calls each job's
 * done(): replies and pushes never precede the commit. If the commit itself
 * fails, every job in the batch gets the error and the counters reload.
 *
 * Between batches (and at least once a second) the writer runs maintenance:
 * the presence sweeper, pruning of idempotency records and retention. WAL
 * checkpoints run on a thread of the writer's own, with its own connection,
 * so that they stay out of COMMIT; so does the WAL scrub that takes erased
 * content (recall, retention) out of the WAL file, retried with backoff
 * while a reader holds an older snapshot, and run once at every start-up
 * (writer.c). Without that thread (an in-memory database; gimctl and tests
 * calling maint_run) maintenance scrubs on the writer's connection.
 *
 * The transaction's steps are the tx operations of the connection's
 * backend (storage(c)->tx, storage.h): the batch is one flow, and SQLite's
 * steps are the statements they always were.
 *
 * On PostgreSQL (database.backend: postgres) the batch is the same, one
 * transaction with a savepoint per job, per instance: several instances
 * commit side by side, and seqs are taken in the database (seq.h). A
 * deadlock (40P01) or serialization failure (40001) anywhere in the batch
 * rolls the whole batch back and runs it again (each job's reset() first),
 * up to WRITER_PG_TRIES times; then every job fails with GIM_EUNAVAILABLE.
 * Nothing was answered yet (replies follow the commit), so a retried batch
 * is invisible to clients, and a failed one changed nothing.
 *
 * Deadlocks between instances are avoided rather than retried where the
 * writer can: a job locks its own seq rows in ascending id order, but a
 * batch runs many jobs, so two batches could still lock the same users in
 * opposite orders across their jobs (and each deadlock costs the batch
 * PostgreSQL's deadlock_timeout, 1 s). So before a batch of several jobs
 * runs, the writer asks each job which seq rows it will lock (locks()),
 * and locks them all, group rows (as a group's send or change does) then
 * user then room seq rows, each in ascending id order (the tx area's
 * lock_batch, storage.h); the jobs then lock rows their transaction
 * already holds.
 *
 * What maintenance does is not the writer's business: main hands it in
 * (maint_run, maint.h) as a writer_maint_fn, so the writer needs no
 * maintenance header and maintenance none of the writer's.
 */
#ifndef GIM_WRITER_H
#define GIM_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "wctx.h"

/*
 * PostgreSQL: the seq rows a batch locks before its first job (writer.c).
 * Jobs declare theirs with writer_lock_user()/writer_lock_room(); the writer
 * owns the set.
 */
struct writer_locks;

/* Adds user_id's (room_id's) seq row to the batch's locks. GIM_ENOMEM at worst. */
gim_err writer_lock_user(struct writer_locks *l, int64_t user_id);
gim_err writer_lock_room(struct writer_locks *l, int64_t room_id);
/* Adds group_id's row, locked before the seq rows as a group's send or change does (group.h). */
gim_err writer_lock_group(struct writer_locks *l, int64_t group_id);

struct write_job {
    struct write_job *next;
    /* Runs inside the transaction, under a savepoint. GIM_OK keeps its work. */
    gim_err (*exec)(struct write_job *job, struct wctx *w);
    /* After the commit (err = the job's result) or the failed commit (err =
     * that failure). Runs on the writer thread: must not block. */
    void (*done)(struct write_job *job, struct wctx *w, gim_err err);
    /* Before exec() runs again (PostgreSQL: the batch is retried after a
     * deadlock or a serialization failure): undoes whatever exec() changed
     * outside the database (reply, error, handler state). NULL: nothing to undo. */
    void (*reset)(struct write_job *job);
    /* PostgreSQL, before any job of a batch of several runs (and again before
     * each retry), inside the transaction: declares the rows exec() will
     * lock (writer_lock_*), read without locks. The writer locks every job's
     * rows at once in one global order, so two instances' batches cannot
     * deadlock on seq rows. Only a hint: exec() must still be right when it
     * locks rows it did not declare (a group that grew meanwhile), it just
     * may deadlock then, and the batch is retried. Any error fails the batch
     * (a failed statement aborts the transaction). NULL: declares nothing. */
    gim_err (*locks)(struct write_job *job, struct wctx *w, struct writer_locks *l);
};

struct writer;

/*
 * One maintenance pass on w between batches (maint_run). True when a step
 * stopped at its time budget with work left (a mass presence timeout): the
 * writer then runs the next pass right after the next batch instead of a
 * second later.
 */
typedef bool (*writer_maint_fn)(struct wctx *w);

/*
 * Starts the writer thread on w (whose fields the writer borrows; they must
 * outlive it); maintain (NULL = none) runs between batches and at least
 * once a second. On success *out is owned by the caller: stop it with
 * writer_stop().
 */
gim_err writer_start(struct writer **out, struct wctx *w, writer_maint_fn maintain);

/* Queues job; never blocks. After writer_stop() began, done() is called at once with
 * GIM_EUNAVAILABLE. */
void writer_submit(struct writer *wr, struct write_job *job);

/*
 * Jobs submitted and not finished yet: queued, or in the batch running now
 * (a batch waiting for a lock counts here). The /metrics gauge that tells an
 * operator the writer is behind; safe from any thread.
 */
uint64_t writer_pending(struct writer *wr);

/*
 * The writer's own checkpoints since the start: each time the WAL reached its
 * bound (CKPT_WRITER_FRAMES, writer.c) the writer copied the rest of it back
 * itself, holding up the batch that crossed it, so that the WAL could start
 * over (retried every 100 ms while a reader pins it). The /metrics counter
 * that lets an operator match a slow commit to it; safe from any thread.
 */
uint64_t writer_checkpoints(struct writer *wr);

/*
 * The first step of a stop: from now on the writer waits for no lock. A
 * batch that finds the database locked by another process fails at once with
 * GIM_EUNAVAILABLE (a wait in progress ends now), instead of after
 * database.busy_timeout_ms (up to 10 minutes); queued jobs still run, so
 * with the database free they get their real result. This is what bounds a
 * stop (docs/reliability.md, scenario 1). Safe from any thread.
 */
void writer_stop_waiting(struct writer *wr);

/* Finishes every queued job, stops the thread, frees the writer. */
void writer_stop(struct writer *wr);

/*
 * Runs jobs[0..n) as one batch on the calling thread, exactly as the writer
 * thread does (savepoints, seq flush, commit, then done()). For tests and
 * gimctl, which need the same semantics without a thread.
 */
void writer_run_batch(struct wctx *w, struct write_job **jobs, int n);

#endif
