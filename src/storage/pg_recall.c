/*
 * The recall operations on PostgreSQL (storage.h): recall (recall.c) and the
 * erasure steps (erasure.c), for several instances on one database.
 *
 * Recall: the message row is locked first (FOR UPDATE), so two instances
 * recalling the same message at once run one after the other and the
 * second finds it recalled (already, no second set of notices). The
 * notices' seqs are then taken in the database in ascending user id (the
 * copies come sorted), and the push targets are the notices' users' online
 * devices in the device table, read inside the transaction, whichever
 * instance they signed in at. The recall itself is the UPDATE that sets
 * content NULL: what that erases on PostgreSQL (old row versions, WAL,
 * replicas) is in docs/scale-out.md, "What erased means"; there is no WAL
 * scrub to ask for.
 *
 * Erasure: the statements of the SQLite steps with $n parameters (and
 * booleans read as integers). The erasure row is locked first (FOR UPDATE),
 * so two steps of the same erasure at two instances run one after the
 * other, each from where the other left off; the user's devices are locked
 * too. The deleted devices' sessions at other instances end within
 * PRESENCE_RECHECK_MS (presence_check_shared finds no row); their gateways
 * are told after the commit (kick_committed).
 */
#include <stdlib.h>
#include <string.h>

#include "kick.h"
#include "pgstore.h"
#include "presence.h"
#include "proto.h"
#include "storage.h"
#include "storage/pg_int.h"
#include "store.h"

/* ---- recall ------------------------------------------------------------ */

static const char PG_FIND[] =
    "SELECT m.id, m.sender_type, m.sender_id, m.receiver_type, m.receiver_id, m.message_type, "
    "m.content, m.send_time, m.status, m.sender_seq, m.receiver_seq "
    "FROM inbox i JOIN message m ON m.id = i.message_id WHERE i.user_id = $1 AND i.seq = $2 "
    "FOR UPDATE OF m";
static const char PG_ERASE[] = "UPDATE message SET status = 2, content = NULL WHERE id = $1";
static const char PG_HAS_COPY[] =
    "SELECT 1 FROM inbox WHERE user_id = $1 AND seq = $2 AND message_id = $3";
static const char PG_GROUP_COPIES[] =
    "SELECT g.user_id, g.seq FROM group_copy g JOIN inbox i ON i.user_id = g.user_id "
    "AND i.seq = g.seq AND i.message_id = g.message_id WHERE g.message_id = $1 "
    "ORDER BY g.user_id";
/* $1: the users as an array literal ("{1,2}"): one statement for any number of them. */
static const char PG_TARGETS[] = "SELECT device_id, user_id, gateway_id, room_id FROM device "
                                 "WHERE online = 1 AND user_id = ANY ($1::bigint[])";

/* The IM's own notices (recall, group notices) carry codes 1..999; 0 for anything else. */
static int notice_code(const uint8_t *data, size_t len)
{
    Pb__Command *cmd = pb__command__unpack(NULL, len, data);
    int notice = cmd && cmd->code > 0 && cmd->code < 1000 ? cmd->code : 0;
    if (cmd)
        pb__command__free_unpacked(cmd, NULL);
    return notice;
}

static gim_err find(struct wctx *w, int64_t user_id, int64_t seq, struct storage_recall_msg *t)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_FIND, &res, NULL, STORE_INT(user_id), STORE_INT(seq));
    if (e != GIM_OK)
        return e;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return GIM_ENOTFOUND;
    }
    size_t len = 0;
    const uint8_t *content = pgstore_blob(res, 0, 6, &len);
    t->id = pgstore_int(res, 0, 0);
    t->sender_type = (int)pgstore_int(res, 0, 1);
    t->sender_id = pgstore_int(res, 0, 2);
    t->receiver_type = (int)pgstore_int(res, 0, 3);
    t->receiver_id = pgstore_int(res, 0, 4);
    t->notice = pgstore_int(res, 0, 5) == PB__MESSAGE_TYPE__MT_COMMAND && content
                    ? notice_code(content, len)
                    : 0;
    t->send_time = pgstore_int(res, 0, 7);
    t->status = (int)pgstore_int(res, 0, 8);
    t->sender_seq = pgstore_int(res, 0, 9);
    t->receiver_seq = pgstore_int(res, 0, 10);
    PQclear(res);
    return GIM_OK;
}

/* Whether (user_id, seq) of the inbox still points at message_id. */
static gim_err has_copy(struct store_conn *db, int64_t user_id, int64_t seq, int64_t message_id,
                        bool *yes)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_HAS_COPY, &res, NULL, STORE_INT(user_id), STORE_INT(seq),
                       STORE_INT(message_id));
    *yes = e == GIM_OK && PQntuples(res) > 0;
    PQclear(res);
    return e;
}

/*
 * The 1:1 copies: (sender, sender_seq) and (receiver, receiver_seq), one copy
 * when both are the same, each only if the inbox still points at the message
 * (a system sender has no copy of its own).
 */
static gim_err user_copies(struct store_conn *db, const struct storage_recall_msg *t,
                           struct storage_recall_copy *out, size_t *n)
{
    struct storage_recall_copy cand[2] = {{t->sender_id, t->sender_seq},
                                          {t->receiver_id, t->receiver_seq}};
    if (cand[1].user_id < cand[0].user_id) {
        struct storage_recall_copy tmp = cand[0];
        cand[0] = cand[1];
        cand[1] = tmp;
    }
    *n = 0;
    for (int i = 0; i < 2; i++) {
        bool yes = false;
        if (i == 1 && cand[1].user_id == cand[0].user_id && cand[1].seq == cand[0].seq)
            break;
        gim_err e = has_copy(db, cand[i].user_id, cand[i].seq, t->id, &yes);
        if (e != GIM_OK)
            return e;
        if (yes)
            out[(*n)++] = cand[i];
    }
    return GIM_OK;
}

/* Every member copy of a group message, into a malloc'ed array the caller frees. */
static gim_err group_copies(struct store_conn *db, int64_t message_id,
                            struct storage_recall_copy **out, size_t *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_GROUP_COPIES, &res, NULL, STORE_INT(message_id));
    if (e != GIM_OK)
        return e;
    size_t rows = (size_t)PQntuples(res);
    if (rows && !(*out = calloc(rows, sizeof **out))) {
        PQclear(res);
        return GIM_ENOMEM;
    }
    for (size_t i = 0; i < rows; i++)
        (*out)[i] =
            (struct storage_recall_copy){pgstore_int(res, (int)i, 0), pgstore_int(res, (int)i, 1)};
    *n = rows;
    PQclear(res);
    return GIM_OK;
}

static gim_err erase(struct wctx *w, const struct storage_recall_msg *t,
                     struct storage_recall_copy **copies, size_t *n)
{
    *copies = NULL;
    *n = 0;
    gim_err e = PG_RUN(w->db, PG_ERASE, NULL, NULL, STORE_INT(t->id));
    if (e != GIM_OK)
        return e;
    if (t->receiver_type == PB__RECEIVER_TYPE__RT_GROUP)
        return group_copies(w->db, t->id, copies, n);
    if (!(*copies = malloc(2 * sizeof **copies)))
        return GIM_ENOMEM;
    return user_copies(w->db, t, *copies, n);
}

/* The copies' users' online devices, from the device table (sessions are shared). */
static gim_err targets(struct wctx *w, const struct storage_recall_copy *copies, size_t n_copies,
                       struct session **out, size_t *n_out, bool *known)
{
    *out = NULL;
    *n_out = 0;
    *known = false;
    if (n_copies == 0)
        return GIM_OK;
    int64_t *users = malloc(n_copies * sizeof *users);
    char *ids = NULL;
    PGresult *pr = NULL;
    gim_err e = GIM_ENOMEM;
    if (!users)
        return e;
    for (size_t i = 0; i < n_copies; i++)
        users[i] = copies[i].user_id;
    e = pg_array_literal(users, n_copies, &ids);
    free(users);
    if (e != GIM_OK)
        return e;
    if ((e = PG_RUN(w->db, PG_TARGETS, &pr, NULL, STORE_TEXT(ids))) != GIM_OK)
        goto out;
    size_t n = (size_t)PQntuples(pr);
    if (n && !(*out = calloc(n, sizeof **out))) {
        e = GIM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        pg_session(&(*out)[i], pr, (int)i, 0);
    *n_out = n;
    *known = true;
out:
    PQclear(pr);
    free(ids);
    return e;
}

/* No WAL scrub here: what erased means on PostgreSQL is in docs/scale-out.md. */
static void erased(struct wctx *w)
{
    (void)w;
}

/* ---- erasure steps ------------------------------------------------------ */

static const char PG_STATE[] = "SELECT upto_seq, room_id, room_seq, finished_at FROM erasure "
                               "WHERE user_id = $1 FOR UPDATE";
static const char PG_START[] =
    "INSERT INTO erasure (user_id, upto_seq, room_id, room_seq, started_at, finished_at) "
    "VALUES ($1, $2, 0, 0, $3, 0) ON CONFLICT (user_id) DO UPDATE SET "
    "upto_seq = excluded.upto_seq, room_id = 0, room_seq = 0, started_at = excluded.started_at, "
    "finished_at = 0";
static const char PG_ROOM_CURSOR[] =
    "UPDATE erasure SET room_id = $2, room_seq = $3 WHERE user_id = $1";
static const char PG_FINISH[] = "UPDATE erasure SET finished_at = $2 WHERE user_id = $1";
static const char PG_DEVICES[] =
    "SELECT device_id, online, gateway_id FROM device WHERE user_id = $1 ORDER BY device_id "
    "LIMIT $2 FOR UPDATE";
static const char PG_DEL_DEVICE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = $1 LIMIT $2)";
static const char PG_DEL_DEVICE[] = "DELETE FROM device WHERE device_id = $1 AND user_id = $2";
static const char PG_DEL_MEMBERS[] =
    "DELETE FROM group_member WHERE user_id = $1 AND group_id IN "
    "(SELECT group_id FROM group_member WHERE user_id = $1 LIMIT $2)";
static const char PG_INBOX[] =
    "SELECT i.seq, i.message_id, (m.id IS NOT NULL)::int, m.sender_type, m.sender_id, "
    "m.sender_device_id, m.receiver_type, m.receiver_id, m.sender_seq, m.receiver_seq, "
    "(m.content IS NOT NULL OR m.status <> 2 OR m.to_user_ids IS NOT NULL)::int "
    "FROM inbox i LEFT JOIN message m ON m.id = i.message_id "
    "WHERE i.user_id = $1 AND i.seq <= $2 ORDER BY i.seq LIMIT $3";
static const char PG_DEL_INBOX[] = "DELETE FROM inbox WHERE user_id = $1 AND seq = $2";
static const char PG_DEL_GROUP_COPY[] =
    "DELETE FROM group_copy WHERE message_id = $1 AND user_id = $2";
static const char PG_ANY_GROUP_COPY[] = "SELECT 1 FROM group_copy WHERE message_id = $1 LIMIT 1";
static const char PG_ERASE_MESSAGE[] =
    "UPDATE message SET status = 2, content = NULL, to_user_ids = NULL WHERE id = $1";
static const char PG_DEL_MESSAGE[] = "DELETE FROM message WHERE id = $1";
static const char PG_ROOM_SCAN[] =
    "SELECT room_id, seq, (sender_type = 2 AND sender_id = $3 AND "
    "(content IS NOT NULL OR status <> 2 OR to_user_ids IS NOT NULL))::int "
    "FROM room_message WHERE (room_id, seq) > ($1, $2) ORDER BY room_id, seq LIMIT $4";
static const char PG_ROOM_ERASE[] =
    "UPDATE room_message SET status = 2, content = NULL, to_user_ids = NULL "
    "WHERE room_id = $1 AND seq = $2";

static gim_err erasure_state(struct wctx *w, int64_t user_id, struct storage_erasure_state *s,
                             bool *running)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_STATE, &res, NULL, STORE_INT(user_id));
    *running = e == GIM_OK && PQntuples(res) == 1 && pgstore_int(res, 0, 3) == 0;
    if (*running) {
        s->upto_seq = pgstore_int(res, 0, 0);
        s->room_id = pgstore_int(res, 0, 1);
        s->room_seq = pgstore_int(res, 0, 2);
    }
    PQclear(res);
    return e;
}

static gim_err erasure_start(struct wctx *w, int64_t user_id, int64_t upto_seq)
{
    return PG_RUN(w->db, PG_START, NULL, NULL, STORE_INT(user_id), STORE_INT(upto_seq),
                  STORE_INT(w->now_ms));
}

static gim_err erasure_cursor(struct wctx *w, int64_t user_id, int64_t room_id, int64_t room_seq)
{
    return PG_RUN(w->db, PG_ROOM_CURSOR, NULL, NULL, STORE_INT(user_id), STORE_INT(room_id),
                  STORE_INT(room_seq));
}

static gim_err erasure_finish(struct wctx *w, int64_t user_id)
{
    return PG_RUN(w->db, PG_FINISH, NULL, NULL, STORE_INT(user_id), STORE_INT(w->now_ms));
}

static gim_err erasure_devices(struct wctx *w, int64_t user_id, int limit, struct kick_target *out,
                               size_t *n)
{
    PGresult *pr = NULL;
    gim_err e = PG_RUN(w->db, PG_DEVICES, &pr, NULL, STORE_INT(user_id), STORE_INT(limit));
    *n = 0;
    for (int i = 0; e == GIM_OK && i < PQntuples(pr); i++) {
        struct kick_target *t = &out[(*n)++];
        t->device_id = pgstore_int(pr, i, 0);
        t->user_id = user_id;
        t->was_online = pgstore_int(pr, i, 1) != 0;
        pg_gateway(t->gateway_id, pr, i, 2);
    }
    PQclear(pr);
    return e;
}

static gim_err erasure_device_room_idem(struct wctx *w, int64_t device_id, int limit, int *deleted)
{
    *deleted = 0;
    return PG_RUN(w->db, PG_DEL_DEVICE_ROOM_IDEM, NULL, deleted, STORE_INT(device_id),
                  STORE_INT(limit));
}

static gim_err erasure_device_delete(struct wctx *w, int64_t user_id, int64_t device_id)
{
    return PG_RUN(w->db, PG_DEL_DEVICE, NULL, NULL, STORE_INT(device_id), STORE_INT(user_id));
}

static gim_err erasure_memberships(struct wctx *w, int64_t user_id, int limit, int *deleted)
{
    *deleted = 0;
    return PG_RUN(w->db, PG_DEL_MEMBERS, NULL, deleted, STORE_INT(user_id), STORE_INT(limit));
}

static gim_err erasure_inbox(struct wctx *w, int64_t user_id, int64_t upto_seq, int limit,
                             struct storage_erasure_entry *list, int *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_INBOX, &res, NULL, STORE_INT(user_id), STORE_INT(upto_seq),
                       STORE_INT(limit));
    *n = 0;
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && i < limit; i++)
        list[(*n)++] = (struct storage_erasure_entry){.seq = pgstore_int(res, i, 0),
                                                      .message_id = pgstore_int(res, i, 1),
                                                      .has_message = pgstore_int(res, i, 2) != 0,
                                                      .sender_type = (int)pgstore_int(res, i, 3),
                                                      .sender_id = pgstore_int(res, i, 4),
                                                      .sender_device_id = pgstore_int(res, i, 5),
                                                      .receiver_type = (int)pgstore_int(res, i, 6),
                                                      .receiver_id = pgstore_int(res, i, 7),
                                                      .sender_seq = pgstore_int(res, i, 8),
                                                      .receiver_seq = pgstore_int(res, i, 9),
                                                      .has_content = pgstore_int(res, i, 10) != 0};
    PQclear(res);
    return e;
}

/* Whether a statement finds a row. */
static gim_err exists(struct store_conn *db, const char *sql, bool *yes, const struct store_val *v,
                      size_t n)
{
    PGresult *res = NULL;
    gim_err e = pgstore_run(db, sql, &res, NULL, v, n);
    *yes = e == GIM_OK && PQntuples(res) > 0;
    PQclear(res);
    return e;
}
#define EXISTS(db, sql, yes, ...) exists((db), (sql), (yes), STORE_VALS(__VA_ARGS__))

/* Whether an inbox other than (user_id, m->seq) still holds m's message. */
static gim_err held_elsewhere(struct wctx *w, int64_t user_id,
                              const struct storage_erasure_entry *m, bool *yes)
{
    *yes = false;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP)
        return EXISTS(w->db, PG_ANY_GROUP_COPY, yes, STORE_INT(m->message_id));
    /* 1:1 and notices: the copies are (sender, sender_seq) and (receiver, receiver_seq). */
    int64_t other_user = m->sender_id, other_seq = m->sender_seq;
    if (other_user == user_id && other_seq == m->seq) {
        other_user = m->receiver_id;
        other_seq = m->receiver_seq;
    }
    if (other_user == user_id && other_seq == m->seq)
        return GIM_OK; /* a note to self: one copy */
    return EXISTS(w->db, PG_HAS_COPY, yes, STORE_INT(other_user), STORE_INT(other_seq),
                  STORE_INT(m->message_id));
}

static gim_err erasure_entry(struct wctx *w, int64_t user_id, const struct storage_erasure_entry *m,
                             enum storage_erasure_outcome *outcome)
{
    gim_err e = PG_RUN(w->db, PG_DEL_INBOX, NULL, NULL, STORE_INT(user_id), STORE_INT(m->seq));
    bool elsewhere = false;
    *outcome = STORAGE_ERASURE_KEPT;
    if (e != GIM_OK || !m->has_message)
        return e;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP &&
        (e = PG_RUN(w->db, PG_DEL_GROUP_COPY, NULL, NULL, STORE_INT(m->message_id),
                    STORE_INT(user_id))) != GIM_OK)
        return e;
    if ((e = held_elsewhere(w, user_id, m, &elsewhere)) != GIM_OK)
        return e;
    if (!elsewhere) {
        /* Its idempotency record is left to the sweep (maint.h). */
        if ((e = PG_RUN(w->db, PG_DEL_MESSAGE, NULL, NULL, STORE_INT(m->message_id))) != GIM_OK)
            return e;
        *outcome = STORAGE_ERASURE_DELETED;
        return GIM_OK;
    }
    bool own = m->sender_type == PB__SENDER_TYPE__ST_USER && m->sender_id == user_id;
    if (own && m->has_content) {
        if ((e = PG_RUN(w->db, PG_ERASE_MESSAGE, NULL, NULL, STORE_INT(m->message_id))) != GIM_OK)
            return e;
        *outcome = STORAGE_ERASURE_ERASED;
    }
    return GIM_OK;
}

static gim_err erasure_room_scan(struct wctx *w, int64_t user_id, int64_t *room_id,
                                 int64_t *room_seq, int limit, int max_hits, int64_t (*hits)[2],
                                 int *nhits, int *read, bool *stopped)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_ROOM_SCAN, &res, NULL, STORE_INT(*room_id), STORE_INT(*room_seq),
                       STORE_INT(user_id), STORE_INT(limit));
    *nhits = *read = 0;
    *stopped = false;
    for (int i = 0; e == GIM_OK && i < PQntuples(res); i++) {
        (*read)++;
        *room_id = pgstore_int(res, i, 0);
        *room_seq = pgstore_int(res, i, 1);
        if (pgstore_int(res, i, 2)) {
            hits[*nhits][0] = *room_id;
            hits[*nhits][1] = *room_seq;
            /* The writes are what the budget bounds: stop the scan at the last one. */
            if (++*nhits == max_hits) {
                *stopped = true;
                break;
            }
        }
    }
    PQclear(res);
    return e;
}

static gim_err erasure_room_erase(struct wctx *w, int64_t room_id, int64_t seq)
{
    return PG_RUN(w->db, PG_ROOM_ERASE, NULL, NULL, STORE_INT(room_id), STORE_INT(seq));
}

const struct storage_recall_ops storage_pg_recall = {
    .find = find,
    .erase = erase,
    .targets = targets,
    .erased = erased,
    .erasure_state = erasure_state,
    .erasure_start = erasure_start,
    .erasure_cursor = erasure_cursor,
    .erasure_finish = erasure_finish,
    .erasure_devices = erasure_devices,
    .erasure_device_room_idem = erasure_device_room_idem,
    .erasure_device_delete = erasure_device_delete,
    .erasure_memberships = erasure_memberships,
    .erasure_inbox = erasure_inbox,
    .erasure_entry = erasure_entry,
    .erasure_room_scan = erasure_room_scan,
    .erasure_room_erase = erasure_room_erase,
};
