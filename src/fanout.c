#include "fanout.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "presence.h"
#include "push.h"
#include "room.h"
#include "seq.h"

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

gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n)
{
    struct message_new m = message_new_of(&f->msg);
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
            (e = STORE_RUN(w->db, SQL_GROUP_COPY, NULL, STORE_INT(id), STORE_INT(c->user_id),
                           STORE_INT(c->seq))) != GIM_OK)
            return e;
    }
    f->n_to += n;
    return GIM_OK;
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
    return GIM_OK;
}

gim_err fanout_room(struct wctx *w, struct fanout *f)
{
    struct message_new m = message_new_of(&f->msg);
    return room_append(w, f->msg.receiver_id, &m, &f->room_seq);
}

void fanout_push(struct wctx *w, struct fanout *f)
{
    if (!w->push || !w->presence)
        return;
    struct push_msg pm;
    push_msg_init(&pm);
    if (f->room_seq) {
        f->msg.seq = f->room_seq;
        push_msg_room(&pm, w->presence, f->msg.receiver_id);
        push_msg_send(w->push, &pm, 0, &f->msg);
        push_msg_free(&pm);
        return;
    }
    int64_t receiver = f->msg.receiver_id;
    for (size_t i = 0; i < f->n_to; i++) {
        push_msg_user(&pm, w->presence, f->to[i].user_id);
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
    memset(f, 0, sizeof *f);
}
