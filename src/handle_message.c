/*
 * PT_MESSAGE: a client sends a message to a user, a group or a room.
 *
 * prepare() validates everything that needs no database and builds the
 * message as it will be stored: the sender comes from the session, never
 * from the client, so no one can send as someone else. write() runs in the
 * writer's transaction: it answers a retried request (same device and
 * request_id, within idempotency.window_seconds) from the stored message,
 * or takes one seq per inbox, stores the message row and its inbox entries
 * (group sends: also a group_copy row per member, which recall needs) and
 * remembers the request, all under the job's savepoint: all or nothing.
 * committed() pushes each online recipient its own copy after the commit,
 * from what write() kept in the scratch state: no query on the push path.
 * A room send (sender subscribed to the room) is one entry in the room's
 * log (room.h) instead, pushed to the room's subscribed devices.
 *
 * Every read and write of the database is a storage operation (storage.h,
 * the message area): the backends differ in how (PostgreSQL claims the
 * idempotency key first, takes seqs in ascending user id order and reads
 * the push targets in the transaction; SQLite reads the record first and
 * writes it last), this file keeps the rules and the replies.
 *
 * Ownership: r->scratch is a struct send_state allocated by prepare() and
 * freed by cleanup(); its message points into r->in, which the request owns
 * and frees after cleanup().
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fanout.h"
#include "group.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "presence.h"
#include "push.h"
#include "request.h"
#include "room.h"
#include "seq.h"
#include "storage.h"

struct send_state {
    Pb__Message msg; /* as stored; seq is set per copy when replying and pushing */
    Pb__Sender sender;
    struct fanout_copy *to; /* every inbox that got a copy; NULL for a retried send */
    size_t n_to;
    int64_t message_id;
    int64_t sender_seq;
    int64_t room_seq; /* RT_ROOM: the new entry's room seq; 0 for a retried send */
    /* The recipients' online devices when the backend reads them in the transaction
     * (PostgreSQL: several instances, so presence is not the truth); else pushes follow
     * presence. */
    struct session *targets;
    size_t n_targets;
    bool targets_known; /* targets holds them, none online included */
};

static gim_err send_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__message_send__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__Message *m = ((const Pb__MessageSend *)r->in)->message;
    const struct gim_config *cfg = r->cfg;

    if (!m)
        return request_fail(r, GIM_EBADREQ, "send: message is missing");
    if (m->message_type < PB__MESSAGE_TYPE__MT_TEXT ||
        m->message_type > PB__MESSAGE_TYPE__MT_CUSTOM)
        return request_fail(r, GIM_EBADREQ, "send: unknown message_type %d", (int)m->message_type);
    if (m->receiver_type != PB__RECEIVER_TYPE__RT_USER &&
        m->receiver_type != PB__RECEIVER_TYPE__RT_GROUP &&
        m->receiver_type != PB__RECEIVER_TYPE__RT_ROOM)
        return request_fail(r, GIM_EBADREQ, "send: unknown receiver_type %d",
                            (int)m->receiver_type);
    if (m->receiver_id <= 0)
        return request_fail(r, GIM_EBADREQ, "send: receiver_id must be > 0");
    char why[160] = "";
    if ((e = message_check(m, cfg, why, sizeof why)) != GIM_OK)
        return request_fail(r, e, "send: %s", why);

    struct send_state *s = calloc(1, sizeof *s);
    if (!s)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    pb__message__init(&s->msg);
    pb__sender__init(&s->sender);
    /* Whatever the client put in sender (nickname, avatar, extra) is dropped. */
    s->sender.sender_type = PB__SENDER_TYPE__ST_USER;
    s->sender.sender_id = r->sess.user_id;
    s->sender.device_id = r->sess.device_id;
    s->msg.sender = &s->sender;
    s->msg.receiver_type = m->receiver_type;
    s->msg.receiver_id = m->receiver_id;
    s->msg.to_user_ids = m->to_user_ids;
    s->msg.n_to_user_ids = m->n_to_user_ids;
    s->msg.message_type = m->message_type;
    s->msg.message_content = m->message_content;
    s->msg.status = PB__MESSAGE_STATUS__MS_NORMAL;
    r->scratch = s;
    return GIM_OK;
}

/* A send's reply: MessageSend{message = m}, the sender's copy as stored. */
static gim_err send_reply(struct request *r, Pb__Message *m)
{
    Pb__MessageSend reply = PB__MESSAGE_SEND__INIT;
    reply.message = m;
    return request_set_reply(r, &reply.base);
}

static gim_err store_failed(struct request *r, struct wctx *w, gim_err e, const char *what)
{
    log_warn("send failed", "device=%" PRId64 " step=%s code=%s error=\"%s\"", r->sess.device_id,
             what, gim_err_name(e), store_errmsg(w->db));
    return request_fail(r, e, "send: cannot store the message (%s)", what);
}

/*
 * One copy in the receiver's inbox and one in the sender's (the same one for
 * a self-send), the seqs, the message and the idempotency record in one
 * storage operation (send_user, storage.h), which also reads the push
 * targets where the backend must.
 */
static gim_err send_user(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t me = r->sess.user_id, to = s->msg.receiver_id;
    struct message_new m = message_new_of(&s->msg);
    struct message_stored st = {0};
    const char *what = "message";
    gim_err e;

    if (!(s->to = calloc(2, sizeof *s->to)))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    e = storage(w->db)->message->send_user(w, &m, r->request_id, &st, &what);
    s->targets = st.targets;
    s->n_targets = st.n_targets;
    s->targets_known = st.targets_known;
    if (e != GIM_OK)
        return store_failed(r, w, e, what);
    s->message_id = st.message_id;
    s->to[s->n_to++] = (struct fanout_copy){me, st.sender_seq};
    if (to != me)
        s->to[s->n_to++] = (struct fanout_copy){to, st.receiver_seq};
    s->sender_seq = st.sender_seq;
    return GIM_OK;
}

/*
 * A copy for every member, the sender's included, read fresh in this
 * transaction, written by fanout_group() (fanout.h: the same fan-out as the
 * business API's group sends and notices). The sender's role is read by the
 * group area's send_role (storage.h), which on PostgreSQL share-locks the group's
 * row first: a membership change on another instance waits for this send
 * (or this send for it), so the members read here are the members, and
 * fanout_group() takes their seqs in ascending id order.
 */
static gim_err send_group(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t me = r->sess.user_id, gid = s->msg.receiver_id;
    int64_t *ids = NULL;
    size_t n = 0;
    bool exists = true;
    enum group_role role = GROUP_NONE;
    const char *what = "membership";
    /* The fan-out writes s's message; its copies (and targets) become s's. */
    struct fanout f = {.msg = s->msg};
    gim_err e;

    if ((e = storage(w->db)->group->send_role(w->db, gid, me, &role, &exists, &what)) != GIM_OK) {
        store_failed(r, w, e, what);
        goto out;
    }
    if (role == GROUP_NONE) {
        e = exists ? request_fail(r, GIM_EFORBIDDEN, "not a member of group %" PRId64, gid)
                   : request_fail(r, GIM_ENOTFOUND, "no group %" PRId64, gid);
        goto out;
    }
    if ((e = group_members(w->db, gid, &ids, &n)) != GIM_OK) {
        store_failed(r, w, e, "members");
        goto out;
    }
    e = fanout_group(w, &f, ids, n);
    s->to = f.to;
    s->n_to = f.n_to;
    s->targets = f.targets;
    s->n_targets = f.n_targets;
    s->targets_known = f.targets_known;
    if (e != GIM_OK) {
        s->n_to = 0;
        store_failed(r, w, e, "group copies");
        goto out;
    }
    s->message_id = f.message_id;
    s->sender_seq = f.sender_seq;
out:
    free(ids);
    return e;
}

/*
 * A retried room send: the reply is rebuilt from the room log. An entry
 * pruned since (rooms.retain_messages) answers EC_NOT_FOUND, like a deleted
 * message; one sent by another user of the same device id does not count.
 */
static gim_err idem_replay_room(struct request *r, struct wctx *w, int64_t room_id,
                                int64_t room_seq, bool *replayed)
{
    struct arena a = {0};
    struct message_view *v = NULL;
    gim_err e = room_load(w->db, room_id, room_seq, &a, &v);
    if (e == GIM_ENOTFOUND) {
        *replayed = true;
        e = request_fail(r, GIM_ENOTFOUND,
                         "send: the room message of request %" PRId64 " is no longer kept",
                         r->request_id);
        goto out;
    }
    if (e != GIM_OK) {
        *replayed = true;
        store_failed(r, w, e, "idempotent reply");
        goto out;
    }
    if (v->sender.sender_id != r->sess.user_id)
        goto out;
    *replayed = true;
    e = send_reply(r, &v->msg);
out:
    arena_free(&a);
    return e;
}

/*
 * A retry of an answered send: *replayed = true and the reply is the stored
 * message as it is now (a recalled one shows MS_RECALL and no content).
 * Records outside the window, left by another user of the same device id,
 * or whose message is gone (retention, erasure, a damaged row), do not
 * count: such a record is taken over by this send. Nothing deletes a
 * device's records when its messages or its user go (keyed by request id
 * first, a device's are not in one place, migrations/0009); the sweep prunes
 * them (maint.h). *rec is the record as idem_claim read
 * it (storage.h: claimed first on PostgreSQL, where several instances may
 * see the same retry at once), for idem_put.
 */
static gim_err idem_replay(struct request *r, struct wctx *w, struct message_idem *rec,
                           bool *replayed)
{
    const struct storage_message_ops *ops = storage(w->db)->message;
    struct arena a = {0};
    struct message_view *v = NULL;
    gim_err e;
    *replayed = false;

    if ((e = ops->idem_claim(w, r->sess.device_id, r->request_id, rec)) != GIM_OK)
        return store_failed(r, w, e, "idempotency");
    if (rec->fresh)
        return GIM_OK;
    bool in_window = rec->created >= w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000;
    if (!rec->has_message) {
        /* A room send's record: replayed from the room log when it is this user's, in time. */
        if (rec->has_room && in_window &&
            ((e = idem_replay_room(r, w, rec->room_id, rec->room_seq, replayed)) != GIM_OK ||
             *replayed))
            return e;
        if ((e = ops->idem_take_over(w, r->sess.device_id, r->request_id, rec)) != GIM_OK)
            return store_failed(r, w, e, "idempotency");
        return GIM_OK;
    }
    /* A record whose message is gone no longer says whose it was, nor what to answer. */
    if (rec->message_gone || !in_window || rec->sender_id != r->sess.user_id)
        return GIM_OK; /* idem_put points the record at this send */
    *replayed = true;
    if ((e = arena_init(&a, MESSAGE_VIEW_OVERHEAD + rec->size)) != GIM_OK) {
        e = request_fail(r, e, "out of memory");
        goto out;
    }
    if ((e = ops->load(w->db, rec->message_id, rec->sender_seq, &a, &v)) != GIM_OK) {
        store_failed(r, w, e, "idempotent reply");
        goto out;
    }
    e = send_reply(r, &v->msg);
out:
    arena_free(&a);
    return e;
}

/*
 * One entry in the room's log, under the room's next seq. The sender must be
 * subscribed to the room as the device row says in this transaction: a
 * subscribe or sign-out earlier in the same batch has changed the row
 * already, while presence only follows after the commit.
 */
static gim_err send_room(struct request *r, struct wctx *w, struct send_state *s)
{
    int64_t room = s->msg.receiver_id, subscribed = 0;
    struct message_new m = message_new_of(&s->msg);
    gim_err e = room_subscribed(w->db, &r->sess, &subscribed);
    if (e == GIM_EUNAUTH)
        return request_fail(r, e, "send: the session of device %" PRId64 " has ended",
                            r->sess.device_id);
    if (e != GIM_OK)
        return store_failed(r, w, e, "subscription");
    if (subscribed != room)
        return request_fail(r, GIM_EFORBIDDEN,
                            "send: not subscribed to room %" PRId64 " (PT_SUBSCRIBE_ROOM first)",
                            room);
    if ((e = room_append(w, room, &m, &s->room_seq)) != GIM_OK)
        return store_failed(r, w, e, "room message");
    return GIM_OK;
}

/*
 * PostgreSQL: the seq rows this send will lock, for the writer's lock of
 * the whole batch (write_job.locks): the sender's and the receiver's for a
 * user send, the room's for a room send, the group's row (send_group
 * locks it) and the members' for a group send (read now without
 * a lock; one who joins before send_group reads them again is locked by the
 * fan-out itself). A replayed retry locks them for nothing, which costs it
 * nothing.
 */
static gim_err send_locks(struct request *r, struct wctx *w, struct writer_locks *l)
{
    struct send_state *s = r->scratch;
    int64_t *ids = NULL;
    size_t n = 0;
    gim_err e = GIM_OK;
    switch (s->msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_ROOM:
        return writer_lock_room(l, s->msg.receiver_id);
    case PB__RECEIVER_TYPE__RT_GROUP:
        if ((e = writer_lock_group(l, s->msg.receiver_id)) != GIM_OK ||
            (e = group_members(w->db, s->msg.receiver_id, &ids, &n)) != GIM_OK)
            return e;
        for (size_t i = 0; e == GIM_OK && i < n; i++)
            e = writer_lock_user(l, ids[i]);
        free(ids);
        return e;
    default:
        if ((e = writer_lock_user(l, r->sess.user_id)) != GIM_OK)
            return e;
        return writer_lock_user(l, s->msg.receiver_id);
    }
}

/*
 * A room send's idempotency record names the room log entry (it has no
 * message row), and its push targets are the room's subscribers where the
 * backend reads them in the transaction (after the append: the room's row
 * lock keeps a concurrent subscribe from slipping in before the commit).
 */
static gim_err send_room_finish(struct request *r, struct wctx *w, struct send_state *s,
                                const struct message_idem *rec)
{
    const struct storage_message_ops *ops = storage(w->db)->message;
    int64_t room = s->msg.receiver_id;
    gim_err e;
    if (r->request_id != 0 && (e = ops->idem_put(w, r->sess.device_id, r->request_id, rec, 0, room,
                                                 s->room_seq)) != GIM_OK)
        return store_failed(r, w, e, "idempotency");
    if ((e = ops->send_room_targets(w, room, &s->targets, &s->n_targets, &s->targets_known)) !=
        GIM_OK)
        return store_failed(r, w, e, "push targets");
    return GIM_OK;
}

static gim_err send_write(struct request *r, struct wctx *w)
{
    struct send_state *s = r->scratch;
    struct message_idem rec = {.fresh = true};
    gim_err e;
    s->msg.send_time = w->now_ms;

    /* A retried batch (PostgreSQL: a deadlock) runs this again: start from nothing. */
    free(s->to);
    free(s->targets);
    s->to = NULL;
    s->targets = NULL;
    s->n_to = s->n_targets = 0;
    s->targets_known = false;
    s->message_id = s->sender_seq = s->room_seq = 0;
    if (r->request_id != 0) {
        bool replayed = false;
        if ((e = idem_replay(r, w, &rec, &replayed)) != GIM_OK || replayed)
            return e;
    }
    switch (s->msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_USER:
        e = send_user(r, w, s); /* the idempotency record included */
        break;
    case PB__RECEIVER_TYPE__RT_GROUP:
        if ((e = send_group(r, w, s)) == GIM_OK && r->request_id != 0 &&
            (e = storage(w->db)->message->idem_put(w, r->sess.device_id, r->request_id, &rec,
                                                   s->message_id, 0, 0)) != GIM_OK)
            e = store_failed(r, w, e, "idempotency");
        break;
    case PB__RECEIVER_TYPE__RT_ROOM:
        if ((e = send_room(r, w, s)) == GIM_OK)
            e = send_room_finish(r, w, s, &rec);
        break;
    default: /* prepare() let no other type through */
        return request_fail(r, GIM_EBADREQ, "send: unknown receiver_type %d",
                            (int)s->msg.receiver_type);
    }
    if (e != GIM_OK)
        return e;
    s->msg.seq = s->room_seq ? s->room_seq : s->sender_seq;
    return send_reply(r, &s->msg);
}

/*
 * A room message goes to every device subscribed to the room but the
 * sending one, all with the same copy (the room seq).
 */
static void send_room_committed(struct request *r, struct wctx *w, struct send_state *s)
{
    metrics_stored(w->metrics, 1, 0);
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    if (s->targets_known) /* PostgreSQL: from the device table */
        push_msg_room_of(&pm, s->targets, s->n_targets, s->msg.receiver_id);
    else
        push_msg_room(&pm, w->presence, s->msg.receiver_id);
    push_msg_send(w->push, &pm, r->sess.device_id, &s->msg);
    push_msg_free(&pm);
}

/* Each online recipient gets its own copy (its own seq); the sending device gets none. */
static void send_committed(struct request *r, struct wctx *w)
{
    struct send_state *s = r->scratch;
    if (s && s->room_seq) {
        send_room_committed(r, w, s);
        return;
    }
    if (!s || s->n_to == 0) /* a retry: it was counted and pushed the first time */
        return;
    metrics_stored(w->metrics, 1, s->n_to);
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    for (size_t i = 0; i < s->n_to; i++) {
        if (s->targets_known) { /* PostgreSQL: from the device table, sorted by user */
            size_t k = 0;
            const struct session *t =
                fanout_targets_of(s->targets, s->n_targets, s->to[i].user_id, &k);
            push_msg_user_of(&pm, t, k, s->to[i].user_id);
        } else
            push_msg_user(&pm, w->presence, s->to[i].user_id);
        s->msg.seq = s->to[i].seq;
        push_msg_send(w->push, &pm, r->sess.device_id, &s->msg);
    }
    s->msg.seq = s->sender_seq;
    push_msg_free(&pm);
}

static void send_cleanup(struct request *r)
{
    struct send_state *s = r->scratch;
    if (!s)
        return;
    free(s->to);
    free(s->targets);
    free(s);
    r->scratch = NULL;
}

const struct handler handle_message = {
    .type = PB__PACKAGE_TYPE__PT_MESSAGE,
    .name = "message",
    .needs_session = true,
    .prepare = send_prepare,
    .write = send_write,
    .committed = send_committed,
    .locks = send_locks,
    .cleanup = send_cleanup,
};
