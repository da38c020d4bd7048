#include "fanout.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "message.h"
#include "presence.h"
#include "push.h"
#include "room.h"
#include "seq.h"

#define PUSH_SESSIONS 32 /* sessions of one user looked up on the stack; more go to the heap */

static const char SQL_GROUP_COPY[] =
    "INSERT INTO group_copy (message_id, user_id, seq) VALUES (?1, ?2, ?3)";

void fanout_init(struct fanout *f)
{
    memset(f, 0, sizeof *f);
    pb__message__init(&f->msg);
    pb__sender__init(&f->sender);
    f->msg.sender = &f->sender;
    f->msg.status = PB__MESSAGE_STATUS__MS_NORMAL;
}

static struct message_new stored(const struct fanout *f)
{
    return (struct message_new){
        .sender_type = f->sender.sender_type,
        .sender_id = f->sender.sender_id,
        .sender_device_id = f->sender.device_id,
        .receiver_type = f->msg.receiver_type,
        .receiver_id = f->msg.receiver_id,
        .to_user_ids = f->msg.to_user_ids,
        .n_to_user_ids = f->msg.n_to_user_ids,
        .message_type = f->msg.message_type,
        .content = f->msg.message_content.data,
        .content_len = f->msg.message_content.len,
        .send_time = f->msg.send_time,
    };
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

static gim_err group_copy_add(struct store_conn *db, int64_t message_id, int64_t user_id,
                              int64_t seq)
{
    sqlite3_stmt *st = store_stmt(db, SQL_GROUP_COPY);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, message_id);
    sqlite3_bind_int64(st, 2, user_id);
    sqlite3_bind_int64(st, 3, seq);
    int rc = sqlite3_step(st);
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n)
{
    struct message_new m = stored(f);
    int64_t id = 0;
    size_t first = f->n_to;
    gim_err e = reserve(f, n);
    if (e != GIM_OK)
        return e;
    for (size_t i = 0; i < n; i++) {
        struct fanout_copy *c = &f->to[first + i];
        c->user_id = ids[i];
        if ((e = seq_next(w->seq, w->db, SEQ_USER, ids[i], &c->seq)) != GIM_OK)
            return e;
    }
    if ((e = message_insert(w->db, &m, &id)) != GIM_OK)
        return e;
    for (size_t i = 0; i < n; i++) {
        const struct fanout_copy *c = &f->to[first + i];
        if ((e = message_inbox_add(w->db, c->user_id, c->seq, id)) != GIM_OK ||
            (e = group_copy_add(w->db, id, c->user_id, c->seq)) != GIM_OK)
            return e;
    }
    f->n_to += n;
    return GIM_OK;
}

gim_err fanout_user(struct wctx *w, struct fanout *f, int64_t user_id)
{
    struct message_new m = stored(f);
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
    return GIM_OK;
}

gim_err fanout_room(struct wctx *w, struct fanout *f)
{
    struct message_new m = stored(f);
    return room_append(w, f->msg.receiver_id, &m, &f->room_seq);
}

/* Output{PT_MESSAGE, MessageSend{f->msg}} to sessions[0..n). */
static void deliver(struct wctx *w, struct fanout *f, const struct session *ss, size_t n,
                    uint8_t **buf, size_t *buf_cap)
{
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &f->msg;
    size_t len = pb__message_send__get_packed_size(&ms);
    if (len > *buf_cap) {
        uint8_t *grown = realloc(*buf, len);
        if (!grown) {
            log_warn("push dropped", "receiver=%" PRId64 " reason=\"out of memory\"",
                     f->msg.receiver_id);
            return;
        }
        *buf = grown;
        *buf_cap = len;
    }
    pb__message_send__pack(&ms, *buf);
    Pb__Output out = PB__OUTPUT__INIT;
    out.type = PB__PACKAGE_TYPE__PT_MESSAGE;
    out.data.data = *buf;
    out.data.len = len;
    push_deliver(w->push, ss, n, 0, &out);
}

/* The sessions of a user (room_id 0) or of a room, into *ss (grown on the heap past cap). */
static size_t sessions(struct wctx *w, int64_t user_id, int64_t room_id, struct session **ss,
                       size_t *cap, struct session *stackbuf)
{
    size_t n = room_id ? presence_room_sessions(w->presence, room_id, *ss, *cap)
                       : presence_user_sessions(w->presence, user_id, *ss, *cap);
    if (n <= *cap)
        return n;
    /* Only this (the writer) thread changes presence, so one retry fits. */
    struct session *grown = malloc(n * sizeof *grown);
    if (!grown)
        return *cap; /* push to those we have rather than to none */
    if (*ss != stackbuf)
        free(*ss);
    *ss = grown;
    *cap = n;
    n = room_id ? presence_room_sessions(w->presence, room_id, *ss, *cap)
                : presence_user_sessions(w->presence, user_id, *ss, *cap);
    return n < *cap ? n : *cap;
}

void fanout_push(struct wctx *w, struct fanout *f)
{
    struct session stackbuf[PUSH_SESSIONS];
    struct session *ss = stackbuf;
    size_t cap = PUSH_SESSIONS, n;
    uint8_t *buf = NULL;
    size_t buf_cap = 0;

    if (!w->push || !w->presence)
        return;
    if (f->room_seq) {
        f->msg.seq = f->room_seq;
        if ((n = sessions(w, 0, f->msg.receiver_id, &ss, &cap, stackbuf)) > 0)
            deliver(w, f, ss, n, &buf, &buf_cap);
        goto out;
    }
    int64_t receiver = f->msg.receiver_id;
    for (size_t i = 0; i < f->n_to; i++) {
        if ((n = sessions(w, f->to[i].user_id, 0, &ss, &cap, stackbuf)) == 0)
            continue;
        f->msg.seq = f->to[i].seq;
        if (f->msg.receiver_type == PB__RECEIVER_TYPE__RT_USER)
            f->msg.receiver_id = f->to[i].user_id;
        deliver(w, f, ss, n, &buf, &buf_cap);
    }
    f->msg.receiver_id = receiver;
out:
    if (ss != stackbuf)
        free(ss);
    free(buf);
}

void fanout_free(struct fanout *f)
{
    if (!f)
        return;
    free(f->to);
    memset(f, 0, sizeof *f);
}
