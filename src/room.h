/*
 * room: the logs of live chat rooms and the devices' subscriptions to them.
 *
 * Rooms use read diffusion: a room message is stored once, in room_message
 * under (room_id, seq), with a per-room seq taken from the seq module
 * (SEQ_ROOM: gap-free, never reused, rolled back with a failed job). Readers
 * page through the log after the seq they hold, exactly as PT_SYNC pages an
 * inbox (message_page). Each log keeps its last rooms.retain_messages
 * entries: the insert that makes one too many deletes the oldest, in the
 * same transaction, so the log never holds more and pruning never leaves a
 * hole.
 *
 * A device is subscribed to at most one room; the subscription is the
 * device row's room_id (written in the writer's transaction) mirrored in
 * presence (set after the commit by the caller). Sign-in, sign-out and the
 * presence sweeper reset it to 0.
 *
 * Storage: room_append takes the room's seq (seq.c) and the rest is the
 * room operations of storage.h, one implementation per backend
 * (src/storage/sqlite_room.c, src/storage/pg_room.c); this module holds no
 * SQL. PostgreSQL (several instances on one database): the room seq is
 * taken in the database (seq.c) and its row stays locked until the commit,
 * which orders a room's sends and subscriptions across instances; pushes
 * go to the subscribers the device table names in the sending transaction
 * (room_subscribers), not to this instance's presence, so a device
 * subscribed through another instance gets them too.
 *
 * Everything that writes runs on the writer connection inside the writer's
 * transaction. Loaded messages live in an arena the caller passes and frees
 * (arena_free), on failure too; a page comes back encoded, in a buffer the
 * caller frees.
 */
#ifndef GIM_ROOM_H
#define GIM_ROOM_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "message.h"
#include "presence.h"
#include "proto.h"
#include "store.h"
#include "wctx.h"

struct gim_config;

/*
 * Appends m (its sender, mentions, type, content and send_time; receiver and
 * seq fields are ignored) to room_id's log under the room's next seq, stored
 * in *seq, and prunes the log to w->cfg->rooms.retain_messages entries.
 */
gim_err room_append(struct wctx *w, int64_t room_id, const struct message_new *m, int64_t *seq);

/*
 * Loads entry seq of room_id's log as a pb.Message (receiver RT_ROOM/room_id,
 * seq = the room seq), built in *a, which this initialises to fit.
 * GIM_ENOTFOUND when the entry was pruned or never existed.
 */
gim_err room_load(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                  struct message_view **out);

/*
 * One page of room_id's log after room seq `after` (0 = from the oldest
 * retained entry), paged by cfg->sync.page_size and the SyncOutput byte
 * budget max_bytes (message_page_budget) with has_more, as message_page()
 * does for inboxes: *buf (malloc'ed, *len bytes, the caller's) is the encoded
 * pb.SyncOutput.
 */
gim_err room_page(struct store_conn *db, const struct gim_config *cfg, int64_t room_id,
                  int64_t after, size_t max_bytes, uint8_t **buf, size_t *len);

/*
 * Records that the device of session s is subscribed to room_id (0 = none),
 * with updated_at = now_ms. GIM_EUNAUTH when the device row no longer holds
 * that session (signed out, or signed in again elsewhere, earlier in the same
 * batch): the caller must not subscribe a session that is gone. On
 * PostgreSQL it also locks the rooms left and joined until the commit, so
 * a page read after it meets the pushes of the room's sends exactly.
 */
gim_err room_subscribe(struct store_conn *db, const struct session *s, int64_t room_id,
                       int64_t now_ms);

/*
 * The room the device of session s is subscribed to as of this transaction
 * (0 = none). GIM_EUNAUTH when the device row no longer holds that session.
 */
gim_err room_subscribed(struct store_conn *db, const struct session *s, int64_t *room_id);

/*
 * PostgreSQL: the online devices subscribed to room_id as of this
 * transaction (the push targets of a room send), whichever instance they
 * subscribed through. *out is a calloc'ed array of *n sessions (NULL when
 * none) the caller frees. Call it after room_append(): the room's row lock
 * then keeps a concurrent subscribe from slipping between this read and the
 * commit. GIM_EINTERNAL on SQLite, whose pushes follow presence (the one
 * writer keeps it exact).
 */
gim_err room_subscribers(struct store_conn *db, int64_t room_id, struct session **out, size_t *n);

#endif
