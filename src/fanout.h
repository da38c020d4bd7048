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
 * the writer thread and touches no database. A client's own group send
 * (PT_MESSAGE, handle_message.c) is written by fanout_group() as well, so
 * group fan-out exists once for both backends.
 *
 * The rows, seqs and push targets are the storage interface's group area
 * (storage.h: fanout_group, user_order, targets_*); fanout.c keeps what
 * both backends share (the copies' bookkeeping and the pushes).
 *
 * PostgreSQL: the seqs are taken in the database in
 * ascending user id order (the backend sorts when it has to), so two
 * instances fanning out to overlapping groups lock the members' user_seq
 * rows in the same order and cannot deadlock on each other; across the
 * jobs of a batch, the writer locks every job's declared rows first in the
 * same global order (writer.h; the callers declare the members), and a
 * deadlock it could not foresee retries the whole batch. The push targets
 * are read from the device table in the same transaction (f->targets),
 * since the devices may be signed in at any instance; SQLite pushes from
 * presence as before.
 *
 * Ownership: the caller fills f->msg (fanout_init), whose content and
 * mentions it keeps alive until fanout_free(); the fanout owns f->to.
 */
#ifndef GIM_FANOUT_H
#define GIM_FANOUT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
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
    int64_t room_seq;   /* a room copy: its seq in the room log */
    int64_t sender_seq; /* a user's group send: its own copy's seq (the row's sender_seq); else 0 */
    int64_t message_id; /* the last message row written */
    /* PostgreSQL: the copies' users' (or the room's) online devices, from the device table (owned).
     */
    struct session *targets;
    size_t n_targets, cap_targets;
    bool targets_known; /* targets holds them (none online included): push from there */
};

/* Zeroes f and points f->msg.sender at f->sender; status MS_NORMAL. */
void fanout_init(struct fanout *f);

/* Forgets what the writers wrote (f->msg stays): a retried batch runs the write again. */
void fanout_restart(struct fanout *f);

/*
 * One message for group f->msg.receiver_id in the inbox of each of ids[0..n)
 * (distinct; ascending saves PostgreSQL a sort). When f->msg's sender is a
 * user (ST_USER) among ids, its copy's seq is the row's sender_seq and
 * f->sender_seq.
 */
gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n);

/* One message of its own in user_id's inbox, receiver RT_USER/user_id. */
gim_err fanout_user(struct wctx *w, struct fanout *f, int64_t user_id);

/*
 * fanout_user() for each of ids[0..n) (distinct), their seqs taken in the
 * backend's order (storage.h, user_order: PostgreSQL's ascending ids), the
 * copies then appended to f->to in ids' order.
 */
gim_err fanout_users(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n);

/*
 * One entry in the log of room f->msg.receiver_id; f->room_seq is its seq.
 * On PostgreSQL f->targets are then the room's subscribed devices.
 */
gim_err fanout_room(struct wctx *w, struct fanout *f);

/*
 * After the commit: each copy to its user's online devices (a room entry: to
 * the room's subscribed devices) as Output{PT_MESSAGE, MessageSend}. Does
 * nothing when w->push or w->presence is NULL.
 */
void fanout_push(struct wctx *w, struct fanout *f);

/*
 * The sessions of user_id among ss[0..n) (sorted by user_id): a pointer to
 * the first and their number in *count (0: none).
 */
const struct session *fanout_targets_of(const struct session *ss, size_t n, int64_t user_id,
                                        size_t *count);

/* Frees f->to and zeroes f. NULL is a no-op. */
void fanout_free(struct fanout *f);

#endif
