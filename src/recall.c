#include "recall.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "group.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "presence.h"
#include "proto.h"
#include "push.h"
#include "request.h"
#include "seq.h"
#include "storage.h"

/*
 * Each step that touches the database is an operation of the recall area
 * (storage.h), one implementation per backend (src/storage/sqlite_recall.c, pg_recall.c);
 * the notices are written with the message area's seq_next/message_insert/
 * message_inbox_add, as a send writes its copies.
 */

/* Whether the actor may recall t now; GIM_OK, GIM_EFORBIDDEN or GIM_ERECALLEXPIRED. */
static gim_err check_allowed(struct wctx *w, const struct storage_recall_msg *t, int64_t actor,
                             char *why, size_t whylen)
{
    enum group_role role = GROUP_NONE;
    if (t->receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
        gim_err e = storage(w->db)->group->role(w->db, t->receiver_id, actor, &role);
        if (e != GIM_OK) {
            gim_err_why(why, whylen, "cannot read the group's members");
            return e;
        }
    }
    /* Owners and admins moderate their group: no window for them. */
    if (role == GROUP_OWNER || role == GROUP_ADMIN)
        return GIM_OK;
    if (t->sender_type != PB__SENDER_TYPE__ST_USER || t->sender_id != actor) {
        gim_err_why(why, whylen,
                    "only the sender or an owner/admin of the group may recall this message");
        return GIM_EFORBIDDEN;
    }
    /* A retry of a recall that succeeded stays a success, however late it comes. */
    uint32_t window = w->cfg->recall.window_seconds;
    if (t->status != PB__MESSAGE_STATUS__MS_RECALL && window > 0 &&
        w->now_ms - t->send_time > (int64_t)window * 1000) {
        gim_err_why(why, whylen, "the recall window of %" PRIu32 " s has passed", window);
        return GIM_ERECALLEXPIRED;
    }
    return GIM_OK;
}

/* Command{RECALL_COMMAND_CODE, RecallInput{seq}} into a malloc'ed buffer. */
static gim_err notice_content(int64_t recalled_seq, uint8_t **buf, size_t *len)
{
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    uint8_t data[16]; /* a varint tag and an int64: at most 11 bytes */
    in.seq = recalled_seq;
    Pb__Command cmd = PB__COMMAND__INIT;
    cmd.code = RECALL_COMMAND_CODE;
    cmd.data.data = data;
    cmd.data.len = pb__recall_input__pack(&in, data);
    *len = pb__command__get_packed_size(&cmd);
    *buf = malloc(*len);
    if (!*buf)
        return GIM_ENOMEM;
    pb__command__pack(&cmd, *buf);
    return GIM_OK;
}

/* Writes the notice for one copy into that copy's inbox; fills *n. */
static gim_err write_notice(struct wctx *w, const struct recall_result *res,
                            struct storage_recall_copy c, struct recall_notice *n)
{
    gim_err e;
    int64_t id = 0;
    n->user_id = c.user_id;
    n->recalled = c.seq;
    if ((e = seq_next(w->seq, w->db, SEQ_USER, c.user_id, &n->seq)) != GIM_OK)
        return e;
    if ((e = notice_content(c.seq, &n->content, &n->content_len)) != GIM_OK)
        return e;
    struct message_new m = {
        .sender_type = res->sender_type,
        .sender_id = res->sender_id,
        .sender_device_id = res->sender_device_id,
        .receiver_type = res->receiver_type,
        .receiver_id = res->receiver_id,
        .message_type = PB__MESSAGE_TYPE__MT_COMMAND,
        .content = n->content,
        .content_len = n->content_len,
        .send_time = res->send_time,
        /* A notice is a single-copy message: both seqs name its one inbox entry. */
        .sender_seq = n->seq,
        .receiver_seq = n->seq,
    };
    if ((e = message_insert(w->db, &m, &id)) != GIM_OK)
        return e;
    return message_inbox_add(w->db, c.user_id, n->seq, id);
}

gim_err recall_apply(struct wctx *w, int64_t actor_user, int64_t actor_device, int64_t user_id,
                     int64_t seq, bool admin, struct recall_result *res, char *why, size_t whylen)
{
    const struct storage_recall_ops *ops = storage(w->db)->recall;
    struct storage_recall_msg t = {0};
    struct storage_recall_copy *copies = NULL;
    size_t n = 0;
    gim_err e;

    memset(res, 0, sizeof *res);
    if (seq <= 0) {
        gim_err_why(why, whylen, "seq must be > 0");
        return GIM_EBADREQ;
    }
    e = ops->find(w, user_id, seq, &t);
    if (e == GIM_ENOTFOUND) {
        gim_err_why(why, whylen, "no message at seq %" PRId64 " in the inbox of user %" PRId64, seq,
                    user_id);
        return e;
    }
    if (e != GIM_OK)
        goto storage;
    if (t.notice) {
        gim_err_why(why, whylen, "%s",
                    t.notice == RECALL_COMMAND_CODE ? "a recall notice cannot be recalled"
                                                    : "a group notice cannot be recalled");
        return GIM_EFORBIDDEN;
    }
    if (!admin && (e = check_allowed(w, &t, actor_user, why, whylen)) != GIM_OK)
        return e;
    res->message_id = t.id;
    if (t.status == PB__MESSAGE_STATUS__MS_RECALL) {
        res->already = true;
        return GIM_OK;
    }
    if (t.receiver_type != PB__RECEIVER_TYPE__RT_USER &&
        t.receiver_type != PB__RECEIVER_TYPE__RT_GROUP) {
        gim_err_why(why, whylen, "messages of receiver type %d cannot be recalled",
                    t.receiver_type);
        return GIM_EBADREQ;
    }

    bool system = admin && actor_user <= 0;
    res->sender_type = system ? PB__SENDER_TYPE__ST_SYSTEM : PB__SENDER_TYPE__ST_USER;
    res->sender_id = system ? 0 : actor_user;
    res->sender_device_id = system ? 0 : actor_device;
    res->receiver_type = t.receiver_type;
    res->receiver_id = t.receiver_id;
    res->send_time = w->now_ms;

    if ((e = ops->erase(w, &t, &copies, &n)) != GIM_OK)
        goto storage;
    if (n > 0 && !(res->notices = calloc(n, sizeof *res->notices))) {
        e = GIM_ENOMEM;
        goto storage;
    }
    for (size_t i = 0; i < n; i++) {
        res->n_notices = i + 1; /* so recall_result_free() sees a half-built notice */
        if ((e = write_notice(w, res, copies[i], &res->notices[i])) != GIM_OK)
            goto storage;
    }
    /* Where the notices go when sessions are shared (PostgreSQL); else presence knows. */
    if ((e = ops->targets(w, copies, n, &res->targets, &res->n_targets, &res->targets_known)) !=
        GIM_OK)
        goto storage;
    ops->erased(w);
    log_info("recalled", "message=%" PRId64 " actor=%" PRId64 " admin=%d notices=%zu", t.id,
             actor_user, (int)admin, n);
    free(copies);
    return GIM_OK;

storage:
    free(copies);
    recall_result_free(res);
    gim_err_why(why, whylen, "%s",
                e == GIM_EUNAVAILABLE ? "database unavailable, retry later"
                : e == GIM_ENOMEM     ? "out of memory"
                                      : "storage error");
    log_warn("recall failed", "user=%" PRId64 " seq=%" PRId64 " code=%s", user_id, seq,
             gim_err_name(e));
    return e == GIM_EUNAVAILABLE || e == GIM_ENOMEM ? e : GIM_EINTERNAL;
}

void recall_push(struct wctx *w, const struct recall_result *res, int64_t exclude_device)
{
    if (!w->push || !w->presence || !res)
        return;
    Pb__Sender sender = PB__SENDER__INIT;
    sender.sender_type = res->sender_type;
    sender.sender_id = res->sender_id;
    sender.device_id = res->sender_device_id;
    Pb__Message msg = PB__MESSAGE__INIT;
    msg.sender = &sender;
    msg.receiver_type = res->receiver_type;
    msg.receiver_id = res->receiver_id;
    msg.message_type = PB__MESSAGE_TYPE__MT_COMMAND;
    msg.send_time = res->send_time;
    msg.status = PB__MESSAGE_STATUS__MS_NORMAL;
    struct push_msg pm;
    push_msg_init(&pm);
    /* Each notice to every online device of its user but exclude_device. */
    for (size_t i = 0; i < res->n_notices; i++) {
        const struct recall_notice *n = &res->notices[i];
        msg.message_content.data = n->content;
        msg.message_content.len = n->content_len;
        msg.seq = n->seq;
        if (res->targets_known) /* PostgreSQL: from the device table */
            push_msg_user_of(&pm, res->targets, res->n_targets, n->user_id);
        else
            push_msg_user(&pm, w->presence, n->user_id);
        push_msg_send(w->push, &pm, exclude_device, &msg);
    }
    push_msg_free(&pm);
}

void recall_result_free(struct recall_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->n_notices; i++)
        free(res->notices[i].content);
    free(res->notices);
    free(res->targets);
    memset(res, 0, sizeof *res);
}

gim_err recall_request_write(struct request *r, struct wctx *w, int64_t actor_user,
                             int64_t actor_device, int64_t user_id, int64_t seq, bool admin,
                             const char *what)
{
    char why[160] = "";
    struct recall_result *res = r->scratch;
    if (!res && !(res = r->scratch = calloc(1, sizeof *res)))
        return request_fail(r, GIM_ENOMEM, "%s: out of memory", what);
    recall_result_free(res); /* a retried batch (PostgreSQL) runs this again */
    gim_err e =
        recall_apply(w, actor_user, actor_device, user_id, seq, admin, res, why, sizeof why);
    if (e != GIM_OK)
        return request_fail(r, e, "%s: %s", what, why);
    if (!res->already)
        return GIM_OK;
    Pb__RecallOutput out = PB__RECALL_OUTPUT__INIT;
    out.already_recalled = res->already;
    return request_set_reply(r, &out.base);
}

void recall_request_committed(struct request *r, struct wctx *w, int64_t exclude_device)
{
    const struct recall_result *res = r->scratch;
    if (!res || res->already)
        return;
    metrics_recall(w->metrics);
    recall_push(w, res, exclude_device);
}

void recall_request_cleanup(struct request *r)
{
    recall_result_free(r->scratch);
    free(r->scratch);
    r->scratch = NULL;
}
