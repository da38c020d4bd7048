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
 * the presence sweeper, WAL truncation after recalls, pruning of idempotency
 * records and retention. WAL checkpoints run on a thread of the writer's
 * own, with its own connection, so that they stay out of COMMIT (writer.c).
 */
#ifndef GIM_WRITER_H
#define GIM_WRITER_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

struct gim_config;
struct seq;
struct presence;
struct push;
struct metrics;

/* A clock that tests can replace. */
struct gim_clock {
    int64_t (*now_ms)(void *arg);
    void *arg;
};
int64_t gim_clock_real_ms(void *arg);
int64_t gim_clock_now(const struct gim_clock *c);

/* What a job sees while it runs inside the writer's transaction. */
struct wctx {
    struct store_conn *db;
    struct seq *seq;
    const struct gim_config *cfg;
    struct presence *presence;
    struct push *push;       /* NULL when nothing publishes (tests, gimctl) */
    struct metrics *metrics; /* may be NULL */
    struct gim_clock clock;
    int64_t now_ms;        /* the clock read once per batch: one commit, one time */
    bool scrub_wal;        /* set by a job that erased content: truncate the WAL soon */
    int64_t last_prune_ms; /* maintenance bookkeeping */
};

struct write_job {
    struct write_job *next;
    /* Runs inside the transaction, under a savepoint. GIM_OK keeps its work. */
    gim_err (*exec)(struct write_job *job, struct wctx *w);
    /* After the commit (err = the job's result) or the failed commit (err =
     * that failure). Runs on the writer thread: must not block. */
    void (*done)(struct write_job *job, struct wctx *w, gim_err err);
};

struct writer;

/*
 * Starts the writer thread on w (whose fields the writer borrows; they must
 * outlive it). On success *out is owned by the caller: stop it with
 * writer_stop().
 */
gim_err writer_start(struct writer **out, struct wctx *w);

/* Queues job; never blocks. After writer_stop() began, done() is called at once with
 * GIM_EUNAVAILABLE. */
void writer_submit(struct writer *wr, struct write_job *job);

/* Finishes every queued job, stops the thread, frees the writer. */
void writer_stop(struct writer *wr);

/*
 * Runs jobs[0..n) as one batch on the calling thread, exactly as the writer
 * thread does (savepoints, seq flush, commit, then done()). For tests and
 * gimctl, which need the same semantics without a thread.
 */
void writer_run_batch(struct wctx *w, struct write_job **jobs, int n);

/*
 * One maintenance pass (sweeper, WAL scrub, pruning); the writer calls it
 * itself. True when a step stopped at its time budget with work left (a mass
 * presence timeout): the writer then runs the next pass right after the next
 * batch instead of a second later.
 */
bool writer_maintain(struct wctx *w);

#endif
