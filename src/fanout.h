/*
 * fanout: a message the service itself writes into many inboxes (or a room
 * log) and pushes to them: the business API's sends (PT_ADMIN_SEND) and the
 * group notices (Command codes 2-6, group.h).
 *
 * A group copy is stored as a client's group send is: one message row, one
 * inbox entry and one group_copy row per member, each member under its own
 * next seq. A user copy is a message row of its own whose receiver is that
 * user (receiver_seq = the copy's seq; sender_seq 0: a system or business
 * sender has no inbox), so a list send is N one-to-one messages that
 * recall, retention and erasure treat like any other. A room copy is one
 * entry of the room's log.
 *
 * The fanout_* writers run inside the writer's transaction (a job's
 * savepoint undoes them on failure); fanout_push() runs after the commit on
 * the writer thread and touches no database.
 *
 * Ownership: the caller fills f->msg (fanout_init), whose content and
 * mentions it keeps alive until fanout_free(); the fanout owns f->to.
 */
#ifndef GIM_FANOUT_H
#define GIM_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "proto.h"
#include "wctx.h"

struct fanout_copy {
    int64_t user_id;
    int64_t seq; /* of this copy in the user's inbox */
};

struct fanout {
    Pb__Message msg; /* as stored and pushed; seq (and a user copy's receiver) set per copy */
    Pb__Sender sender;
    struct fanout_copy *to; /* every inbox written, in order (owned) */
    size_t n_to, cap_to;
    int64_t room_seq; /* a room copy: its seq in the room log */
};

/* Zeroes f and points f->msg.sender at f->sender; status MS_NORMAL. */
void fanout_init(struct fanout *f);

/* One message for group f->msg.receiver_id in the inbox of each of ids[0..n) (distinct). */
gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n);

/* One message of its own in user_id's inbox, receiver RT_USER/user_id. */
gim_err fanout_user(struct wctx *w, struct fanout *f, int64_t user_id);

/* One entry in the log of room f->msg.receiver_id; f->room_seq is its seq. */
gim_err fanout_room(struct wctx *w, struct fanout *f);

/*
 * After the commit: each copy to its user's online devices (a room entry: to
 * the room's subscribed devices) as Output{PT_MESSAGE, MessageSend}. Does
 * nothing when w->push or w->presence is NULL.
 */
void fanout_push(struct wctx *w, struct fanout *f);

/* Frees f->to and zeroes f. NULL is a no-op. */
void fanout_free(struct fanout *f);

#endif
