/*
 * PT_ADMIN_SEND: the business API's send (docs/protocol.md, "The business
 * API"): a message from the system (ST_SYSTEM) or from the business
 * (ST_BUSINESS, sender_id = the business's own id) to a user, a list of
 * users, a group or a room, with any content type.
 *
 * An operator request (operator.h): token, message and receiver are checked
 * in prepare() as a client's send is (message_check), before any write. The
 * sender needs no membership or subscription: a group send copies the
 * message into every member's inbox as it is in this transaction, a room
 * send appends to the room's log. A list send (RT_USER, receiver_id 0,
 * user_ids) gives each listed user one copy, a one-to-one message of its own
 * (fanout.h). Idempotent by key like every business API write; the reply is
 * an AdminSendOutput, pushes follow the commit (committed()).
 *
 * Ownership: r->scratch is a struct admin_send freed by cleanup(); the
 * fanout's message points into r->in.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "group.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "operator.h"
#include "request.h"

/* Most users one list send may name. */
#define SEND_MAX_USERS 1000

struct admin_send {
    struct operator_idem idem;
    struct fanout f;
    int64_t *ids; /* a list send's users, in request order without repeats (owned) */
    size_t n_ids;
    bool list;
};

static gim_err send_prepare(struct request *r)
{
    const char *what = "admin send";
    gim_err e = operator_decode(r, &pb__admin_send_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminSendInput *in = (Pb__AdminSendInput *)r->in;
    const Pb__Message *m = in->message;
    if (!m)
        return request_fail(r, GIM_EBADREQ, "%s: message is missing", what);
    const Pb__Sender *snd = m->sender;
    if (!snd || (snd->sender_type != PB__SENDER_TYPE__ST_SYSTEM &&
                 snd->sender_type != PB__SENDER_TYPE__ST_BUSINESS))
        return request_fail(r, GIM_EBADREQ,
                            "%s: message.sender.sender_type must be ST_SYSTEM or ST_BUSINESS, "
                            "got %d",
                            what, snd ? (int)snd->sender_type : 0);
    if (snd->sender_type == PB__SENDER_TYPE__ST_BUSINESS && snd->sender_id <= 0)
        return request_fail(r, GIM_EBADREQ,
                            "%s: an ST_BUSINESS sender needs sender_id > 0 (the business's id)",
                            what);
    if (snd->sender_id < 0)
        return request_fail(r, GIM_EBADREQ, "%s: sender_id must be >= 0", what);
    bool list = false;
    switch (m->receiver_type) {
    case PB__RECEIVER_TYPE__RT_USER:
        list = m->receiver_id == 0 && in->n_user_ids > 0;
        if (!list && (m->receiver_id <= 0 || in->n_user_ids > 0))
            return request_fail(r, GIM_EBADREQ,
                                "%s: RT_USER needs either receiver_id > 0 (one user) or "
                                "receiver_id 0 and user_ids (a list), not both",
                                what);
        break;
    case PB__RECEIVER_TYPE__RT_GROUP:
    case PB__RECEIVER_TYPE__RT_ROOM:
        if (m->receiver_id <= 0)
            return request_fail(r, GIM_EBADREQ, "%s: receiver_id must be > 0", what);
        if (in->n_user_ids > 0)
            return request_fail(r, GIM_EBADREQ, "%s: user_ids only go with RT_USER", what);
        break;
    default:
        return request_fail(r, GIM_EBADREQ, "%s: unknown receiver_type %d", what,
                            (int)m->receiver_type);
    }
    if (in->n_user_ids > SEND_MAX_USERS)
        return request_fail(r, GIM_ETOOLARGE, "%s: %zu user_ids, the limit is %d", what,
                            in->n_user_ids, SEND_MAX_USERS);
    for (size_t i = 0; i < in->n_user_ids; i++)
        if (in->user_ids[i] <= 0)
            return request_fail(r, GIM_EBADREQ, "%s: user_ids[%zu] must be > 0", what, i);
    char why[160] = "";
    if ((e = message_check(m, r->cfg, why, sizeof why)) != GIM_OK)
        return request_fail(r, e, "%s: %s", what, why);

    struct admin_send *s = calloc(1, sizeof *s);
    if (!s)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    r->scratch = s;
    fanout_init(&s->f);
    s->list = list;
    /* Whatever else the sender says (device, nickname, avatar, extra) is not stored. */
    s->f.sender.sender_type = snd->sender_type;
    s->f.sender.sender_id = snd->sender_id;
    s->f.msg.receiver_type = m->receiver_type;
    s->f.msg.receiver_id = m->receiver_id;
    s->f.msg.to_user_ids = m->to_user_ids;
    s->f.msg.n_to_user_ids = m->n_to_user_ids;
    s->f.msg.message_type = m->message_type;
    s->f.msg.message_content = m->message_content;
    if (list) {
        if (!(s->ids = malloc(in->n_user_ids * sizeof *s->ids)))
            return request_fail(r, GIM_ENOMEM, "out of memory");
        /* Each listed user once, in the order given (lists are small: quadratic is fine). */
        for (size_t i = 0; i < in->n_user_ids; i++) {
            bool seen = false;
            for (size_t k = 0; k < s->n_ids && !seen; k++)
                seen = s->ids[k] == in->user_ids[i];
            if (!seen)
                s->ids[s->n_ids++] = in->user_ids[i];
        }
    }
    return operator_idem_init(r, &s->idem, r->in, &in->token, &in->idempotency_key, what);
}

static gim_err failed(struct request *r, struct wctx *w, gim_err e, const char *step)
{
    if (e == GIM_ENOMEM)
        return request_fail(r, e, "out of memory");
    log_warn("admin send failed", "step=%s code=%s error=\"%s\"", step, gim_err_name(e),
             store_errmsg(w->db));
    return request_fail(r, e == GIM_EUNAVAILABLE ? e : GIM_EINTERNAL, "admin send: %s (%s)",
                        e == GIM_EUNAVAILABLE ? "database unavailable, retry later"
                                              : "cannot store the message",
                        step);
}

/*
 * On PostgreSQL the group's row is share-locked (group.h) so that the
 * members read here stay the members until the commit, and fanout_group()
 * takes their seqs in ascending id order.
 */
static gim_err send_group(struct request *r, struct wctx *w, struct admin_send *s)
{
    int64_t gid = s->f.msg.receiver_id, *ids = NULL;
    size_t n = 0;
    bool exists = false;
    gim_err e = group_exists(w->db, gid, GROUP_LOCK_SHARE, &exists);
    if (e != GIM_OK)
        return failed(r, w, e, "group");
    if (!exists)
        return request_fail(r, GIM_ENOTFOUND, "admin send: no group %" PRId64, gid);
    /* The members as they are in this transaction: one removed a moment ago gets nothing. */
    e = group_members(w->db, gid, &ids, &n);
    if (e == GIM_OK && n > 0)
        e = fanout_group(w, &s->f, ids, n);
    free(ids);
    return e == GIM_OK ? GIM_OK : failed(r, w, e, "members");
}

static gim_err send_write(struct request *r, struct wctx *w)
{
    struct admin_send *s = r->scratch;
    fanout_restart(&s->f); /* a retried batch (PostgreSQL) runs this again */
    gim_err e = operator_idem_replay(r, w, &s->idem, "admin send");
    if (e != GIM_OK || s->idem.replayed)
        return e;
    s->f.msg.send_time = w->now_ms;
    switch (s->f.msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_USER:
        /* A list send: one copy each, reported in the list's order (fanout_users). */
        e = s->list ? fanout_users(w, &s->f, s->ids, s->n_ids)
                    : fanout_user(w, &s->f, s->f.msg.receiver_id);
        if (e != GIM_OK)
            return failed(r, w, e, "inbox");
        break;
    case PB__RECEIVER_TYPE__RT_GROUP:
        if ((e = send_group(r, w, s)) != GIM_OK)
            return e;
        break;
    default: /* RT_ROOM: prepare() let no other type through */
        if ((e = fanout_room(w, &s->f)) != GIM_OK)
            return failed(r, w, e, "room");
        break;
    }

    Pb__AdminSendOutput out = PB__ADMIN_SEND_OUTPUT__INIT;
    Pb__UserSeq *copies = NULL, **ptrs = NULL;
    bool user = s->f.msg.receiver_type == PB__RECEIVER_TYPE__RT_USER;
    if (user && s->f.n_to > 0) {
        copies = calloc(s->f.n_to, sizeof *copies);
        ptrs = calloc(s->f.n_to, sizeof *ptrs);
        if (!copies || !ptrs) {
            e = request_fail(r, GIM_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < s->f.n_to; i++) {
            pb__user_seq__init(&copies[i]);
            copies[i].user_id = s->f.to[i].user_id;
            copies[i].seq = s->f.to[i].seq;
            ptrs[i] = &copies[i];
        }
        out.copies = ptrs;
        out.n_copies = s->f.n_to;
    }
    out.recipients = (int64_t)s->f.n_to;
    out.room_seq = s->f.room_seq;
    out.send_time = s->f.msg.send_time;
    if ((e = request_set_reply(r, &out.base)) == GIM_OK)
        e = operator_idem_remember(r, w, &s->idem, "admin send");
out:
    free(copies);
    free(ptrs);
    return e;
}

/*
 * PostgreSQL: the seq rows this send will lock, for the writer's lock of the
 * whole batch (write_job.locks): the listed users or the one receiver, the
 * group's row (send_group locks it) and its members (read now
 * without a lock; send_group reads them again under the group's lock), or
 * the room.
 */
static gim_err send_locks(struct request *r, struct wctx *w, struct writer_locks *l)
{
    struct admin_send *s = r->scratch;
    int64_t *ids = NULL;
    size_t n = 0;
    gim_err e = GIM_OK;
    switch (s->f.msg.receiver_type) {
    case PB__RECEIVER_TYPE__RT_USER:
        if (!s->list)
            return writer_lock_user(l, s->f.msg.receiver_id);
        for (size_t i = 0; e == GIM_OK && i < s->n_ids; i++)
            e = writer_lock_user(l, s->ids[i]);
        return e;
    case PB__RECEIVER_TYPE__RT_GROUP:
        if ((e = writer_lock_group(l, s->f.msg.receiver_id)) != GIM_OK ||
            (e = group_members(w->db, s->f.msg.receiver_id, &ids, &n)) != GIM_OK)
            return e;
        for (size_t i = 0; e == GIM_OK && i < n; i++)
            e = writer_lock_user(l, ids[i]);
        free(ids);
        return e;
    default:
        return writer_lock_room(l, s->f.msg.receiver_id);
    }
}

static void send_committed(struct request *r, struct wctx *w)
{
    struct admin_send *s = r->scratch;
    if (!s || s->idem.replayed)
        return;
    bool user = s->f.msg.receiver_type == PB__RECEIVER_TYPE__RT_USER;
    /* A list send stored one message per user; a group send one for all. */
    metrics_stored(w->metrics, user ? s->f.n_to : 1, s->f.n_to);
    fanout_push(w, &s->f);
}

static void send_cleanup(struct request *r)
{
    struct admin_send *s = r->scratch;
    if (!s)
        return;
    operator_idem_free(&s->idem);
    fanout_free(&s->f);
    free(s->ids);
    free(s);
    r->scratch = NULL;
}

const struct handler handle_admin_send = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_SEND,
    .name = "admin_send",
    .needs_session = false,
    .prepare = send_prepare,
    .write = send_write,
    .committed = send_committed,
    .locks = send_locks,
    .cleanup = send_cleanup,
};
