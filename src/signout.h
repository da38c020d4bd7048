/*
 * signout: marking a device offline in the device table, shared by the
 * PT_SIGN_OUT handler (handle_signout.c), the writer's presence sweeper and
 * operator kicks (kick.c).
 *
 * The table and the in-memory presence are changed in two steps, in this
 * order: the row inside a write transaction, the session after its commit.
 * So a rolled-back sign-out leaves the device signed in everywhere.
 */
#ifndef GIM_SIGNOUT_H
#define GIM_SIGNOUT_H

#include <stdint.h>

#include "err.h"
#include "writer.h"

/*
 * For the sweeper and kicks: marks device_id offline (online = 0, room_id = 0,
 * updated_at = w->now_ms) whatever user or gateway it is on. Runs inside a
 * transaction the caller opened on w->db; after the commit the caller removes
 * the session with presence_remove(). A device without a row is not an error.
 */
gim_err signout_expired(struct wctx *w, int64_t device_id);

#endif
