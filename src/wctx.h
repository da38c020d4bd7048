/*
 * wctx: what a write sees while it runs inside the writer's transaction.
 *
 * The writer (writer.h) opens one transaction per batch and hands every job
 * the same struct wctx: the read-write connection, the seq counters, the
 * clock read once for the whole batch, and where the after-commit effects go
 * (presence, push, metrics). Modules that write (recall, room, kick,
 * retention, erasure, maint) take a struct wctx and need nothing else of the
 * writer; tests and gimctl build one by hand and run jobs through
 * writer_run_batch().
 *
 * Ownership: every pointer is borrowed; whoever builds the wctx keeps what
 * it points at alive for as long as the wctx is used.
 */
#ifndef GIM_WCTX_H
#define GIM_WCTX_H

#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "store.h"

struct gim_config;
struct seq;
struct presence;
struct push;
struct metrics;

/* Where a sweep over records keyed by two integers stopped (SQLite's prune): idempotency
 * (request_id, device_id), room_idempotency (device_id, request_id). */
struct idem_scan {
    bool mid;       /* false: the next slice starts at the first record */
    int64_t key[2]; /* else it starts after this primary key (its two columns, in order) */
};

struct wctx {
    struct store_conn *db;
    struct seq *seq;
    const struct gim_config *cfg;
    struct presence *presence;
    struct push *push;       /* NULL when nothing publishes (tests, gimctl) */
    struct metrics *metrics; /* may be NULL */
    struct gim_clock clock;
    int64_t now_ms; /* the clock read once per batch: one commit, one time */
    bool scrub_wal; /* set by a job that erased content: scrub the WAL after the commit */
    /* Idempotency pruning (maint.c): a sweep starts every PRUNE_EVERY_MS and prunes a slice on
     * each maintenance pass until nothing is left to look at. */
    int64_t last_prune_ms;                    /* when the last sweep started */
    bool prune_sends, prune_rooms, prune_ops; /* tables the current sweep has not finished */
    struct idem_scan idem_scan, room_scan;    /* SQLite: where the sweeps over the send records
                                               * and the room details stopped */
};

#endif
