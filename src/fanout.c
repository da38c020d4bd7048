#include "fanout.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "presence.h"
#include "push.h"
#include "room.h"
#include "seq.h"
#include "storage.h"

void fanout_init(struct fanout *f)
{
    memset(f, 0, sizeof *f);
    pb__message__init(&f->msg);
    pb__sender__init(&f->sender);
    f->msg.sender = &f->sender;
    f->msg.status = PB__MESSAGE_STATUS__MS_NORMAL;
}

static gim_err reserve(struct fanout *f, size_t more)
{
    if (f->n_to + more <= f->cap_to)
        return GIM_OK;
    size_t cap = f->cap_to ? f->cap_to : 16;
    while (cap < f->n_to + more)
        cap *= 2;
    struct fanout_copy *grown = realloc(f->to, cap * sizeof *grown);
    if (!grown)
        return GIM_ENOMEM;
    f->to = grown;
    f->cap_to = cap;
    return GIM_OK;
}

void fanout_restart(struct fanout *f)
{
    f->n_to = 0;
    f->room_seq = 0;
    f->sender_seq = 0;
    f->n_targets = 0;
    f->targets_known = false;
}

/*
 * The copies' rows and seqs are the backend's (storage.h: SQLite takes the
 * seqs in ids' order, PostgreSQL sorts them and writes the rows in a
 * constant number of statements), then the push targets where sessions are
 * in the database.
 */
gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n)
{
    const struct storage_group_ops *g = storage(w->db)->group;
    struct message_new m = message_new_of(&f->msg);
    int64_t id = 0;
    /* A user's send stores its own copy's seq in the message row (recall, idempotent replies). */
    int64_t me =
        f->msg.sender->sender_type == PB__SENDER_TYPE__ST_USER ? f->msg.sender->sender_id : 0;
    gim_err e = reserve(f, n);
    if (e != GIM_OK)
        return e;
    if ((e = g->fanout_group(w, &m, ids, n, me, &f->to[f->n_to], &id)) != GIM_OK)
        return e;
    f->n_to += n;
    f->sender_seq = m.sender_seq;
    f->message_id = id;
    return g->targets_group(w, f);
}

gim_err fanout_user(struct wctx *w, struct fanout *f, int64_t user_id)
{
    struct message_new m = message_new_of(&f->msg);
    int64_t id = 0, seq = 0;
    gim_err e = reserve(f, 1);
    if (e != GIM_OK)
        return e;
    if ((e = seq_next(w->seq, w->db, SEQ_USER, user_id, &seq)) != GIM_OK)
        return e;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = user_id;
    m.receiver_seq = seq;
    if ((e = message_insert(w->db, &m, &id)) != GIM_OK ||
        (e = message_inbox_add(w->db, user_id, seq, id)) != GIM_OK)
        return e;
    f->to[f->n_to++] = (struct fanout_copy){user_id, seq};
    f->message_id = id;
    return storage(w->db)->group->targets_user(w, f, user_id);
}

gim_err fanout_users(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n)
{
    size_t *pos = malloc((n ? n : 1) * sizeof *pos);
    struct fanout_copy *copies = malloc((n ? n : 1) * sizeof *copies);
    size_t first = f->n_to;
    gim_err e = pos && copies ? GIM_OK : GIM_ENOMEM;
    if (e == GIM_OK)
        storage(w->db)->group->user_order(ids, n, pos);
    for (size_t i = 0; i < n && e == GIM_OK; i++)
        e = fanout_user(w, f, ids[pos[i]]);
    if (e == GIM_OK) { /* back in the list's order */
        for (size_t i = 0; i < n; i++)
            copies[pos[i]] = f->to[first + i];
        memcpy(&f->to[first], copies, n * sizeof *copies);
    }
    free(pos);
    free(copies);
    return e;
}

/*
 * The room's entry, then (PostgreSQL) its subscribers from the device
 * table, read after room_append() so the room's row lock keeps a concurrent
 * subscribe from slipping in before the commit, as a client's room send
 * does.
 */
gim_err fanout_room(struct wctx *w, struct fanout *f)
{
    struct message_new m = message_new_of(&f->msg);
    gim_err e = room_append(w, f->msg.receiver_id, &m, &f->room_seq);
    if (e != GIM_OK)
        return e;
    return storage(w->db)->group->targets_room(w, f);
}

static int cmp_session_user(const void *a, const void *b)
{
    int64_t x = ((const struct session *)a)->user_id, y = ((const struct session *)b)->user_id;
    return (x > y) - (x < y);
}

const struct session *fanout_targets_of(const struct session *ss, size_t n, int64_t user_id,
                                        size_t *count)
{
    size_t lo = 0, hi = n;
    while (lo < hi) { /* the first session of user_id or above */
        size_t mid = lo + (hi - lo) / 2;
        if (ss[mid].user_id < user_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < n && ss[end].user_id == user_id)
        end++;
    *count = end - lo;
    return ss + lo;
}

void fanout_push(struct wctx *w, struct fanout *f)
{
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    if (f->room_seq) {
        f->msg.seq = f->room_seq;
        if (f->targets_known) /* PostgreSQL: from the device table */
            push_msg_room_of(&pm, f->targets, f->n_targets, f->msg.receiver_id);
        else
            push_msg_room(&pm, w->presence, f->msg.receiver_id);
        push_msg_send(w->push, &pm, 0, &f->msg);
        push_msg_free(&pm);
        return;
    }
    int64_t receiver = f->msg.receiver_id;
    /* A list send gathers its targets user by user, in the list's order. */
    if (f->targets_known && f->n_targets > 1)
        qsort(f->targets, f->n_targets, sizeof *f->targets, cmp_session_user);
    for (size_t i = 0; i < f->n_to; i++) {
        if (f->targets_known) { /* PostgreSQL: from the device table */
            size_t k = 0;
            const struct session *t =
                fanout_targets_of(f->targets, f->n_targets, f->to[i].user_id, &k);
            push_msg_user_of(&pm, t, k, f->to[i].user_id);
        } else {
            push_msg_user(&pm, w->presence, f->to[i].user_id);
        }
        f->msg.seq = f->to[i].seq;
        if (f->msg.receiver_type == PB__RECEIVER_TYPE__RT_USER)
            f->msg.receiver_id = f->to[i].user_id;
        push_msg_send(w->push, &pm, 0, &f->msg);
    }
    f->msg.receiver_id = receiver;
    push_msg_free(&pm);
}

void fanout_free(struct fanout *f)
{
    if (!f)
        return;
    free(f->to);
    free(f->targets);
    memset(f, 0, sizeof *f);
}
