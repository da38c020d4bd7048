/*
 * The recall operations on SQLite (storage.h): recall (recall.c) and the
 * erasure steps (erasure.c). The statements and their order are what those
 * modules ran before the storage seam; every statement goes through the
 * connection's statement cache (store_stmt).
 */
#include <stdio.h>
#include <stdlib.h>

#include "kick.h"
#include "presence.h"
#include "proto.h"
#include "storage.h"
#include "store.h"

/* ---- recall ------------------------------------------------------------ */

static const char SQL_FIND[] =
    "SELECT m.id, m.sender_type, m.sender_id, m.receiver_type, m.receiver_id, m.message_type, "
    "m.content, m.send_time, m.status, m.sender_seq, m.receiver_seq "
    "FROM inbox i JOIN message m ON m.id = i.message_id WHERE i.user_id = ?1 AND i.seq = ?2";
/* content = NULL, not '': with secure_delete the old bytes are zeroed, not kept. */
static const char SQL_ERASE[] = "UPDATE message SET status = 2, content = NULL WHERE id = ?1";
static const char SQL_HAS_COPY[] =
    "SELECT 1 FROM inbox WHERE user_id = ?1 AND seq = ?2 AND message_id = ?3";
/* Joined with inbox: copies pruned since (retention) need no notice. */
static const char SQL_GROUP_COPIES[] =
    "SELECT g.user_id, g.seq FROM group_copy g JOIN inbox i ON i.user_id = g.user_id "
    "AND i.seq = g.seq AND i.message_id = g.message_id WHERE g.message_id = ?1 "
    "ORDER BY g.user_id";

/* The IM's own notices (recall, group notices) carry codes 1..999; 0 for anything else. */
static int notice_code(const uint8_t *data, size_t len)
{
    Pb__Command *cmd = pb__command__unpack(NULL, len, data);
    int notice = cmd && cmd->code > 0 && cmd->code < 1000 ? cmd->code : 0;
    if (cmd)
        pb__command__free_unpacked(cmd, NULL);
    return notice;
}

static int is_notice(sqlite3_stmt *st, int col)
{
    return notice_code(sqlite3_column_blob(st, col), (size_t)sqlite3_column_bytes(st, col));
}

static gim_err find(struct wctx *w, int64_t user_id, int64_t seq, struct storage_recall_msg *t)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_FIND);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id), STORE_INT(seq));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        t->id = sqlite3_column_int64(st, 0);
        t->sender_type = sqlite3_column_int(st, 1);
        t->sender_id = sqlite3_column_int64(st, 2);
        t->receiver_type = sqlite3_column_int(st, 3);
        t->receiver_id = sqlite3_column_int64(st, 4);
        t->notice =
            sqlite3_column_int(st, 5) == PB__MESSAGE_TYPE__MT_COMMAND ? is_notice(st, 6) : 0;
        t->send_time = sqlite3_column_int64(st, 7);
        t->status = sqlite3_column_int(st, 8);
        t->sender_seq = sqlite3_column_int64(st, 9);
        t->receiver_seq = sqlite3_column_int64(st, 10);
    }
    store_done(st);
    if (rc == SQLITE_ROW)
        return GIM_OK;
    return rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
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
        gim_err e;
        if (i == 1 && cand[1].user_id == cand[0].user_id && cand[1].seq == cand[0].seq)
            break;
        e = STORE_EXISTS(db, SQL_HAS_COPY, &yes, STORE_INT(cand[i].user_id), STORE_INT(cand[i].seq),
                         STORE_INT(t->id));
        if (e != GIM_OK)
            return e;
        if (yes)
            out[(*n)++] = cand[i];
    }
    return GIM_OK;
}

static void copy_row(sqlite3_stmt *st, void *elem)
{
    struct storage_recall_copy *c = elem;
    c->user_id = sqlite3_column_int64(st, 0);
    c->seq = sqlite3_column_int64(st, 1);
}

static gim_err erase(struct wctx *w, const struct storage_recall_msg *t,
                     struct storage_recall_copy **copies, size_t *n)
{
    *copies = NULL;
    *n = 0;
    gim_err e = STORE_RUN(w->db, SQL_ERASE, NULL, STORE_INT(t->id));
    if (e != GIM_OK)
        return e;
    if (t->receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
        void *rows = NULL;
        e = STORE_ROWS(w->db, SQL_GROUP_COPIES, sizeof **copies, copy_row, &rows, n,
                       STORE_INT(t->id));
        *copies = rows;
        return e;
    }
    if (!(*copies = malloc(2 * sizeof **copies)))
        return GIM_ENOMEM;
    return user_copies(w->db, t, *copies, n);
}

/* Sessions live in this process only: presence has every push target. */
static gim_err targets(struct wctx *w, const struct storage_recall_copy *copies, size_t n,
                       struct session **out, size_t *n_out, bool *known)
{
    (void)w;
    (void)copies;
    (void)n;
    *out = NULL;
    *n_out = 0;
    *known = false;
    return GIM_OK;
}

/* The content is gone from the b-tree; its old frames are still in the WAL. */
static void erased(struct wctx *w)
{
    w->scrub_wal = true;
}

/* ---- erasure steps ------------------------------------------------------ */

static const char SQL_STATE[] =
    "SELECT upto_seq, room_id, room_seq, finished_at FROM erasure WHERE user_id = ?1";
/* (Re)starts an erasure: a finished one asked again starts over from the user's current seq. */
static const char SQL_START[] =
    "INSERT INTO erasure (user_id, upto_seq, room_id, room_seq, started_at, finished_at) "
    "VALUES (?1, ?2, 0, 0, ?3, 0) ON CONFLICT (user_id) DO UPDATE SET "
    "upto_seq = excluded.upto_seq, room_id = 0, room_seq = 0, started_at = excluded.started_at, "
    "finished_at = 0";
static const char SQL_ROOM_CURSOR[] =
    "UPDATE erasure SET room_id = ?2, room_seq = ?3 WHERE user_id = ?1";
static const char SQL_FINISH[] = "UPDATE erasure SET finished_at = ?2 WHERE user_id = ?1";

static const char SQL_DEVICES[] =
    "SELECT device_id, online, gateway_id FROM device WHERE user_id = ?1 ORDER BY device_id "
    "LIMIT ?2";
/* A room send's details name the device (room_idempotency keeps the device first). */
static const char SQL_DEL_DEVICE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND request_id IN "
    "(SELECT request_id FROM room_idempotency WHERE device_id = ?1 LIMIT ?2)";
static const char SQL_DEL_DEVICE[] = "DELETE FROM device WHERE device_id = ?1 AND user_id = ?2";

static const char SQL_DEL_MEMBERS[] =
    "DELETE FROM group_member WHERE user_id = ?1 AND group_id IN "
    "(SELECT group_id FROM group_member WHERE user_id = ?1 LIMIT ?2)";

/* LEFT JOIN: an entry whose message is missing (a damaged row) is deleted too. */
static const char SQL_INBOX[] =
    "SELECT i.seq, i.message_id, m.id IS NOT NULL, m.sender_type, m.sender_id, "
    "m.sender_device_id, m.receiver_type, m.receiver_id, m.sender_seq, m.receiver_seq, "
    "m.content IS NOT NULL OR m.status <> 2 OR m.to_user_ids IS NOT NULL "
    "FROM inbox i LEFT JOIN message m ON m.id = i.message_id "
    "WHERE i.user_id = ?1 AND i.seq <= ?2 ORDER BY i.seq LIMIT ?3";
static const char SQL_DEL_INBOX[] = "DELETE FROM inbox WHERE user_id = ?1 AND seq = ?2";
static const char SQL_DEL_GROUP_COPY[] =
    "DELETE FROM group_copy WHERE message_id = ?1 AND user_id = ?2";
static const char SQL_ANY_GROUP_COPY[] = "SELECT 1 FROM group_copy WHERE message_id = ?1 LIMIT 1";
/* As a recall erases; the @mentions are the user's content too. */
static const char SQL_ERASE_MESSAGE[] =
    "UPDATE message SET status = 2, content = NULL, to_user_ids = NULL WHERE id = ?1";
static const char SQL_DEL_MESSAGE[] = "DELETE FROM message WHERE id = ?1";

/* Row values walk the primary key from the cursor on. */
static const char SQL_ROOM_SCAN[] =
    "SELECT room_id, seq, sender_type = 2 AND sender_id = ?3 AND "
    "(content IS NOT NULL OR status <> 2 OR to_user_ids IS NOT NULL) "
    "FROM room_message WHERE (room_id, seq) > (?1, ?2) ORDER BY room_id, seq LIMIT ?4";
static const char SQL_ROOM_ERASE[] =
    "UPDATE room_message SET status = 2, content = NULL, to_user_ids = NULL "
    "WHERE room_id = ?1 AND seq = ?2";

static gim_err erasure_state(struct wctx *w, int64_t user_id, struct storage_erasure_state *s,
                             bool *running)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_STATE);
    *running = false;
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *running = rc == SQLITE_ROW && sqlite3_column_int64(st, 3) == 0;
    if (*running) {
        s->upto_seq = sqlite3_column_int64(st, 0);
        s->room_id = sqlite3_column_int64(st, 1);
        s->room_seq = sqlite3_column_int64(st, 2);
    }
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
    return GIM_OK;
}

static gim_err erasure_start(struct wctx *w, int64_t user_id, int64_t upto_seq)
{
    return STORE_RUN(w->db, SQL_START, NULL, STORE_INT(user_id), STORE_INT(upto_seq),
                     STORE_INT(w->now_ms));
}

static gim_err erasure_cursor(struct wctx *w, int64_t user_id, int64_t room_id, int64_t room_seq)
{
    return STORE_RUN(w->db, SQL_ROOM_CURSOR, NULL, STORE_INT(user_id), STORE_INT(room_id),
                     STORE_INT(room_seq));
}

static gim_err erasure_finish(struct wctx *w, int64_t user_id)
{
    return STORE_RUN(w->db, SQL_FINISH, NULL, STORE_INT(user_id), STORE_INT(w->now_ms));
}

static gim_err erasure_devices(struct wctx *w, int64_t user_id, int limit, struct kick_target *out,
                               size_t *n)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_DEVICES);
    *n = 0;
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id), STORE_INT(limit));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct kick_target *t = &out[(*n)++];
            const unsigned char *gw = sqlite3_column_text(st, 2);
            t->device_id = sqlite3_column_int64(st, 0);
            t->user_id = user_id;
            t->was_online = sqlite3_column_int(st, 1) != 0;
            snprintf(t->gateway_id, sizeof t->gateway_id, "%s", gw ? (const char *)gw : "");
        }
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err erasure_device_room_idem(struct wctx *w, int64_t device_id, int limit, int *deleted)
{
    *deleted = 0;
    return STORE_RUN(w->db, SQL_DEL_DEVICE_ROOM_IDEM, deleted, STORE_INT(device_id),
                     STORE_INT(limit));
}

static gim_err erasure_device_delete(struct wctx *w, int64_t user_id, int64_t device_id)
{
    return STORE_RUN(w->db, SQL_DEL_DEVICE, NULL, STORE_INT(device_id), STORE_INT(user_id));
}

static gim_err erasure_memberships(struct wctx *w, int64_t user_id, int limit, int *deleted)
{
    *deleted = 0;
    return STORE_RUN(w->db, SQL_DEL_MEMBERS, deleted, STORE_INT(user_id), STORE_INT(limit));
}

static gim_err erasure_inbox(struct wctx *w, int64_t user_id, int64_t upto_seq, int limit,
                             struct storage_erasure_entry *list, int *n)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_INBOX);
    *n = 0;
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(user_id), STORE_INT(upto_seq), STORE_INT(limit));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            list[(*n)++] =
                (struct storage_erasure_entry){.seq = sqlite3_column_int64(st, 0),
                                               .message_id = sqlite3_column_int64(st, 1),
                                               .has_message = sqlite3_column_int(st, 2) != 0,
                                               .sender_type = sqlite3_column_int(st, 3),
                                               .sender_id = sqlite3_column_int64(st, 4),
                                               .sender_device_id = sqlite3_column_int64(st, 5),
                                               .receiver_type = sqlite3_column_int(st, 6),
                                               .receiver_id = sqlite3_column_int64(st, 7),
                                               .sender_seq = sqlite3_column_int64(st, 8),
                                               .receiver_seq = sqlite3_column_int64(st, 9),
                                               .has_content = sqlite3_column_int(st, 10) != 0};
    store_done(st);
    return rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

/* Whether an inbox other than (user_id, m->seq) still holds m's message. */
static gim_err held_elsewhere(struct wctx *w, int64_t user_id,
                              const struct storage_erasure_entry *m, bool *yes)
{
    *yes = false;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP)
        return STORE_EXISTS(w->db, SQL_ANY_GROUP_COPY, yes, STORE_INT(m->message_id));
    /* 1:1 and notices: the copies are (sender, sender_seq) and (receiver, receiver_seq). */
    int64_t other_user = m->sender_id, other_seq = m->sender_seq;
    if (other_user == user_id && other_seq == m->seq) {
        other_user = m->receiver_id;
        other_seq = m->receiver_seq;
    }
    if (other_user == user_id && other_seq == m->seq)
        return GIM_OK; /* a note to self: one copy */
    return STORE_EXISTS(w->db, SQL_HAS_COPY, yes, STORE_INT(other_user), STORE_INT(other_seq),
                        STORE_INT(m->message_id));
}

static gim_err erasure_entry(struct wctx *w, int64_t user_id, const struct storage_erasure_entry *m,
                             enum storage_erasure_outcome *outcome)
{
    gim_err e = STORE_RUN(w->db, SQL_DEL_INBOX, NULL, STORE_INT(user_id), STORE_INT(m->seq));
    bool elsewhere = false;
    *outcome = STORAGE_ERASURE_KEPT;
    if (e != GIM_OK || !m->has_message)
        return e;
    if (m->receiver_type == PB__RECEIVER_TYPE__RT_GROUP &&
        (e = STORE_RUN(w->db, SQL_DEL_GROUP_COPY, NULL, STORE_INT(m->message_id),
                       STORE_INT(user_id))) != GIM_OK)
        return e;
    if ((e = held_elsewhere(w, user_id, m, &elsewhere)) != GIM_OK)
        return e;
    if (!elsewhere) {
        /* Its idempotency record is left to the sweep (maint.h). */
        if ((e = STORE_RUN(w->db, SQL_DEL_MESSAGE, NULL, STORE_INT(m->message_id))) != GIM_OK)
            return e;
        *outcome = STORAGE_ERASURE_DELETED;
        return GIM_OK;
    }
    bool own = m->sender_type == PB__SENDER_TYPE__ST_USER && m->sender_id == user_id;
    if (own && m->has_content) {
        if ((e = STORE_RUN(w->db, SQL_ERASE_MESSAGE, NULL, STORE_INT(m->message_id))) != GIM_OK)
            return e;
        *outcome = STORAGE_ERASURE_ERASED;
    }
    return GIM_OK;
}

static gim_err erasure_room_scan(struct wctx *w, int64_t user_id, int64_t *room_id,
                                 int64_t *room_seq, int limit, int max_hits, int64_t (*hits)[2],
                                 int *nhits, int *read, bool *stopped)
{
    sqlite3_stmt *st = store_stmt(w->db, SQL_ROOM_SCAN);
    *nhits = *read = 0;
    *stopped = false;
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(*room_id), STORE_INT(*room_seq), STORE_INT(user_id),
                        STORE_INT(limit));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            (*read)++;
            *room_id = sqlite3_column_int64(st, 0);
            *room_seq = sqlite3_column_int64(st, 1);
            if (sqlite3_column_int(st, 2)) {
                hits[*nhits][0] = *room_id;
                hits[*nhits][1] = *room_seq;
                /* The writes are what the budget bounds: stop the scan at the last one. */
                if (++*nhits == max_hits)
                    break;
            }
        }
    store_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return store_err(rc);
    *stopped = rc == SQLITE_ROW;
    return GIM_OK;
}

static gim_err erasure_room_erase(struct wctx *w, int64_t room_id, int64_t seq)
{
    return STORE_RUN(w->db, SQL_ROOM_ERASE, NULL, STORE_INT(room_id), STORE_INT(seq));
}

const struct storage_recall_ops storage_sqlite_recall = {
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
