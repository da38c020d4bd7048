#include "fanout.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"
#include "pgstore.h"
#include "presence.h"
#include "push.h"
#include "room.h"
#include "seq.h"

static const char SQL_GROUP_COPY[] =
    "INSERT INTO group_copy (message_id, user_id, seq) VALUES (?1, ?2, ?3)";
/*
 * PostgreSQL: the push targets are the online devices in the device table,
 * whichever instance they signed in at, read in the writing transaction: a
 * group copy's from the group_copy rows just written (one query for the
 * whole group), a user copy's by its user. Sorted by user for
 * fanout_targets_of().
 */
static const char PG_GROUP_TARGETS[] =
    "SELECT d.device_id, d.user_id, d.gateway_id, d.room_id FROM group_copy c "
    "JOIN device d ON d.user_id = c.user_id WHERE c.message_id = $1 AND d.online = 1 "
    "ORDER BY d.user_id";
static const char PG_USER_TARGETS[] = "SELECT device_id, user_id, gateway_id, room_id FROM device "
                                      "WHERE online = 1 AND user_id = $1";

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

/* Appends the sessions of res (device_id, user_id, gateway_id, room_id) to f->targets. */
static gim_err targets_add(struct fanout *f, const PGresult *res)
{
    size_t n = (size_t)PQntuples(res);
    f->targets_known = true;
    if (f->n_targets + n > f->cap_targets) {
        size_t cap = f->cap_targets ? f->cap_targets : 16;
        while (cap < f->n_targets + n)
            cap *= 2;
        struct session *grown = realloc(f->targets, cap * sizeof *grown);
        if (!grown)
            return GIM_ENOMEM;
        f->targets = grown;
        f->cap_targets = cap;
    }
    for (size_t i = 0; i < n; i++) {
        struct session *t = &f->targets[f->n_targets++];
        size_t len = 0;
        const uint8_t *gw = pgstore_blob(res, (int)i, 2, &len);
        memset(t, 0, sizeof *t);
        t->device_id = pgstore_int(res, (int)i, 0);
        t->user_id = pgstore_int(res, (int)i, 1);
        t->room_id = pgstore_int(res, (int)i, 3);
        len = len > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : len;
        if (len)
            memcpy(t->gateway_id, gw, len);
    }
    return GIM_OK;
}

static gim_err targets_pg(struct wctx *w, struct fanout *f, const char *sql, int64_t id)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, sql, &res, NULL, STORE_INT(id));
    if (e == GIM_OK)
        e = targets_add(f, res);
    PQclear(res);
    return e;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/*
 * PostgreSQL: a group's copies in a constant number of statements whatever
 * its size (a round trip per member and row would be thousands): the seqs
 * in one (seq_next_users: row locks in ascending id order), the message
 * row, then every inbox and group_copy row in one, the ids and seqs sent as
 * two array parameters.
 */
static const char PG_GROUP_COPIES[] =
    "WITH c AS (SELECT u, s FROM unnest($2::text::bigint[], $3::text::bigint[]) AS t (u, s)), "
    "i AS (INSERT INTO inbox (user_id, seq, message_id) SELECT u, s, $1 FROM c) "
    "INSERT INTO group_copy (message_id, user_id, seq) SELECT $1, u, s FROM c";

static gim_err group_pg(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n,
                        struct message_new *m, int64_t me, int64_t *id)
{
    struct fanout_copy *to = &f->to[f->n_to];
    int64_t *seqs = malloc(n * sizeof *seqs);
    char *arr_ids = NULL, *arr_seqs = NULL;
    int changes = 0;
    gim_err e = seqs ? seq_next_users(w->seq, w->db, ids, n, seqs) : GIM_ENOMEM;
    if (e != GIM_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        to[i] = (struct fanout_copy){ids[i], seqs[i]};
        if (ids[i] == me)
            m->sender_seq = seqs[i];
    }
    if ((e = message_insert(w->db, m, id)) != GIM_OK ||
        (e = seq_array_literal(ids, n, &arr_ids)) != GIM_OK ||
        (e = seq_array_literal(seqs, n, &arr_seqs)) != GIM_OK)
        goto out;
    e = PG_RUN(w->db, PG_GROUP_COPIES, NULL, &changes, STORE_INT(*id), STORE_TEXT(arr_ids),
               STORE_TEXT(arr_seqs));
    if (e == GIM_OK && (size_t)changes != n)
        e = GIM_EINTERNAL;
out:
    free(seqs);
    free(arr_ids);
    free(arr_seqs);
    return e;
}

/* SQLite: a seq per member from the writer's counters, then the rows one statement each. */
static gim_err group_sqlite(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n,
                            struct message_new *m, int64_t me, int64_t *id)
{
    struct fanout_copy *to = &f->to[f->n_to];
    gim_err e;
    for (size_t i = 0; i < n; i++) {
        to[i].user_id = ids[i];
        if ((e = seq_next(w->seq, w->db, SEQ_USER, ids[i], &to[i].seq)) != GIM_OK)
            return e;
        if (ids[i] == me)
            m->sender_seq = to[i].seq;
    }
    if ((e = message_insert(w->db, m, id)) != GIM_OK)
        return e;
    for (size_t i = 0; i < n; i++)
        if ((e = message_inbox_add(w->db, to[i].user_id, to[i].seq, *id)) != GIM_OK ||
            (e = STORE_RUN(w->db, SQL_GROUP_COPY, NULL, STORE_INT(*id), STORE_INT(to[i].user_id),
                           STORE_INT(to[i].seq))) != GIM_OK)
            return e;
    return GIM_OK;
}

gim_err fanout_group(struct wctx *w, struct fanout *f, const int64_t *ids, size_t n)
{
    struct message_new m = message_new_of(&f->msg);
    int64_t id = 0, *sorted = NULL;
    /* A user's send stores its own copy's seq in the message row (recall, idempotent replies). */
    int64_t me =
        f->msg.sender->sender_type == PB__SENDER_TYPE__ST_USER ? f->msg.sender->sender_id : 0;
    bool pg = store_is_pg(w->db);
    gim_err e = reserve(f, n);
    if (e != GIM_OK)
        return e;
    /* PostgreSQL row-locks each member's seq: always in ascending id order (no deadlock). */
    for (size_t i = 1; pg && i < n; i++)
        if (ids[i - 1] >= ids[i]) {
            if (!(sorted = malloc(n * sizeof *sorted)))
                return GIM_ENOMEM;
            memcpy(sorted, ids, n * sizeof *sorted);
            qsort(sorted, n, sizeof *sorted, cmp_id);
            ids = sorted;
            break;
        }
    e = pg ? group_pg(w, f, ids, n, &m, me, &id) : group_sqlite(w, f, ids, n, &m, me, &id);
    if (e == GIM_OK) {
        f->n_to += n;
        f->sender_seq = m.sender_seq;
        f->message_id = id;
        if (pg)
            e = targets_pg(w, f, PG_GROUP_TARGETS, id);
    }
    free(sorted);
    return e;
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
    return store_is_pg(w->db) ? targets_pg(w, f, PG_USER_TARGETS, user_id) : GIM_OK;
}

/*
 * PostgreSQL: the push targets are the room's subscribers in the device
 * table, read after room_append() so the room's row lock keeps a concurrent
 * subscribe from slipping in before the commit (room_subscribers), as a
 * client's room send does.
 */
gim_err fanout_room(struct wctx *w, struct fanout *f)
{
    struct message_new m = message_new_of(&f->msg);
    gim_err e = room_append(w, f->msg.receiver_id, &m, &f->room_seq);
    if (e != GIM_OK || !store_is_pg(w->db))
        return e;
    free(f->targets);
    f->targets = NULL;
    f->cap_targets = f->n_targets = 0;
    if ((e = room_subscribers(w->db, f->msg.receiver_id, &f->targets, &f->n_targets)) != GIM_OK)
        return e;
    f->cap_targets = f->n_targets;
    f->targets_known = true;
    return GIM_OK;
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
