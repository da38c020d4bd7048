/*
 * retention: deletes what is older than retention.days, a little at a time.
 *
 * A message past the window goes with every inbox entry that points at it,
 * its group_copy rows (its idempotency record, keyed by request id first,
 * answers nothing once its message is gone and the sweep prunes it, maint.h);
 * room logs lose their old entries the same way. secure_delete is
 * on for the writer's connection, so the content is overwritten in the file,
 * not just unlinked, and the WAL is scheduled for truncation (w->scrub_wal).
 * Remaining entries keep their seqs and the counters are never lowered (a
 * deleted inbox row raises the user_seq floor, migrations/0008_seq_floor.sql):
 * a seq is never reused, so a device that synced before the pruning sees no
 * duplicate and sync simply starts at the first entry that remains.
 *
 * Oldest first by message id: ids grow with the writer's clock, so the head
 * of the table is the oldest part and finding it costs max_rows, not a scan.
 * (A message whose send_time is out of step with its id — the clock went
 * back — is pruned once the head reaches it.)
 *
 * Runs on the writer thread with the writer's connection, never inside a
 * batch: each call is one short transaction of its own. The steps are the
 * same on both backends, each with its own SQL (storage.h, maint:
 * src/storage/sqlite_maint.c, pg_maint.c); on PostgreSQL they run on the
 * instance holding the maintenance lock (maint.c), and deleted rows stay
 * in the table's files until VACUUM (docs/scale-out.md).
 */
#ifndef GIM_RETENTION_H
#define GIM_RETENTION_H

#include <stdint.h>

#include "err.h"
#include "wctx.h"

/*
 * Deletes up to max_rows messages whose send_time is before now_ms minus
 * w->cfg->retention.days (with their inbox entries and group copies), then, with what is left of
 * max_rows, room messages older than the same cutoff. *deleted is the number of messages plus room
 * messages deleted: max_rows means more may remain. With retention.days = 0
 * it deletes nothing. On error nothing of this call is kept.
 */
gim_err retention_run(struct wctx *w, int64_t now_ms, int max_rows, int *deleted);

#endif
