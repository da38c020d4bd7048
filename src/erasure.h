/*
 * erasure: deleting a user on a right-to-erasure request (PT_ADMIN_ERASE,
 * `gimctl erase`), in bounded steps.
 *
 * One step, erasure_step(), runs inside one writer transaction and touches
 * at most about max_rows rows, so a user with a large inbox never holds the
 * writer for long; the caller repeats steps until one reports done. Where
 * the erasure stands lives in the database (the `erasure` row and what is
 * left of the user), so a step after an interruption, a crash or a lost reply
 * simply continues, and a step after the end finds nothing and is done again.
 *
 * What goes, in this order (a step goes on to the next part only when the
 * previous one is empty):
 *   1. devices: each device row, its room sends' idempotency records (its
 *      other records go with the next idempotency sweep, maint.h) and, after
 *      the commit, its session; its gateway is told to drop the connection, as
 *      with a kick (kick.h);
 *   2. group memberships (group_member rows; the groups stay);
 *   3. the inbox, entries up to the user's last seq when the erasure began:
 *      each entry is deleted; a message the user sent has its content erased
 *      everywhere (status MS_RECALL, content and @mentions NULL, as a recall
 *      does, but without notices); a message no other inbox holds any more is
 *      deleted with its idempotency record;
 *   4. the user's room messages: content erased the same way (room logs keep
 *      their seqs), scanning every room log in (room, seq) order.
 * The seq counter stays (SQLite: deleting the inbox rows raised the user_seq
 * floor, migrations/0008_seq_floor.sql): should the user id come back, its
 * seqs go on from where they were, so no device ever sees a seq reused. Content that left the
 * b-tree is still in old WAL frames: a step that erased any asks for the
 * WAL scrub (storage.h, recall->erased: w->scrub_wal on SQLite), like a
 * recall.
 *
 * The database steps are the erasure operations of the recall area of
 * storage.h, one implementation per backend (src/storage/sqlite_recall.c,
 * pg_recall.c); this module keeps the order of the parts and the budget.
 * PostgreSQL: the erasure row is locked first so two instances never step
 * the same erasure at once; the deleted devices' sessions cached at other
 * instances end within PRESENCE_RECHECK_MS; there is no WAL to scrub (what
 * erased means there: docs/scale-out.md).
 *
 * Runs on the writer thread only. Ownership: an erasure_result owns its
 * kicked array; release it with erasure_result_free().
 */
#ifndef GIM_ERASURE_H
#define GIM_ERASURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "kick.h"
#include "wctx.h"

#define ERASURE_DEFAULT_ROWS 500
#define ERASURE_MAX_ROWS     10000

struct erasure_result {
    bool done; /* nothing of the user is left: the erasure is complete */
    int64_t devices, memberships, inbox_entries;
    int64_t messages_erased;  /* the user's messages erased in place (other inboxes hold them) */
    int64_t messages_deleted; /* messages deleted: no inbox held them any more */
    int64_t room_messages_erased;
    struct kick_target *kicked; /* devices deleted by this step (owned) */
    size_t n_kicked;
};

/*
 * One step of erasing user_id, touching at most about max_rows rows (1..
 * ERASURE_MAX_ROWS). Must run inside the writer's transaction (a job of
 * writer_run_batch: on error its savepoint undoes everything the step did).
 * Fills *res (zeroed by the call). GIM_OK, or a storage error.
 */
gim_err erasure_step(struct wctx *w, int64_t user_id, int max_rows, struct erasure_result *res);

/* After the commit: ends the sessions of the deleted devices (kick_committed). */
void erasure_committed(struct wctx *w, const struct erasure_result *res);

/* Frees what res owns and zeroes it. NULL is a no-op. */
void erasure_result_free(struct erasure_result *res);

#endif
