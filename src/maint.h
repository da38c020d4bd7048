/*
 * maint: the writer's housekeeping between batches.
 *
 * Runs on the writer thread with its connection, outside any batch: signs
 * out devices whose presence timed out, truncates the WAL after a recall so
 * erased content leaves the WAL file (only when the writer has no
 * checkpointer thread, which otherwise takes the scrub over: writer.c),
 * prunes expired idempotency records (and those whose message or device row
 * is gone: retention and erasure leave them, migrations/0009),
 * trims room logs and applies retention. Each step works in small
 * transactions so it never holds the write lock for long.
 *
 * PostgreSQL (several instances on one database): every instance writes
 * the last requests and leases it saw into device.updated_at, coarsely,
 * and drops its own stale cached sessions; the sweep, idempotency pruning
 * and retention run on the one instance holding the maintenance advisory
 * lock (maint.c says how the sweep's bound follows; docs/scale-out.md).
 * There is no WAL scrub there.
 *
 * The steps are the same for both backends; what each asks of the database
 * is an operation of storage(c)->maint (storage.h), whose SQL is in
 * src/storage/sqlite_maint.c and pg_maint.c.
 */
#ifndef GIM_MAINT_H
#define GIM_MAINT_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "wctx.h"

/* True when the sweeper left expired sessions for the next pass (see writer_maint_fn in writer.h).
 */
bool maint_run(struct wctx *w);

/*
 * The sweeper's sign-out (storage.h, the device area's sign_out_any, whose
 * statement an operator kick runs too, kick.c): marks device_id offline
 * (online = 0, room_id = 0, updated_at = w->now_ms) whatever user or
 * gateway it is on; logs a failure. Runs inside a transaction the caller
 * opened on w->db; after the commit the caller removes the session with
 * presence_remove(), so a rolled-back sign-out leaves the device signed in
 * everywhere. A device without a row is not an error.
 */
gim_err maint_signout(struct wctx *w, int64_t device_id);

#endif
