/*
 * maint: the writer's housekeeping between batches.
 *
 * Runs on the writer thread with its connection, outside any batch: signs
 * out devices whose presence timed out, truncates the WAL after a recall so
 * erased content leaves the WAL file, prunes expired idempotency records,
 * trims room logs and applies retention. Each step works in small
 * transactions so it never holds the write lock for long.
 */
#ifndef GIM_MAINT_H
#define GIM_MAINT_H

#include <stdbool.h>

#include "writer.h"

/* True when the sweeper left expired sessions for the next pass (see writer_maintain). */
bool maint_run(struct wctx *w);

#endif
