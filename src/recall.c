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
#include "pgstore.h"
#include "presence.h"
#include "proto.h"
#include "push.h"
#include "request.h"
#include "seq.h"

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

/*
 * PostgreSQL (several instances on one database): the same operation with
 * its own SQL. The message row is locked first (FOR UPDATE), so two
 * instances recalling the same message at once run one after the other
 * and the second finds it recalled (already, no second set of notices).
 * Then the notices' seqs are taken in the database in ascending user id
 * (the copies come sorted), and the push targets are the notices' users'
 * online devices in the device table, read inside the transaction,
 * whichever instance they signed in at. The recall itself is the UPDATE
 * that sets content NULL: what that erases on PostgreSQL (old row versions,
 * WAL, replicas) is in docs/scale-out.md, "What erased means".
 */
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
/* The actor's role in the message's group (group_role's query, for this backend). */
static const char PG_ROLE[] = "SELECT role FROM group_member WHERE group_id = $1 AND user_id = $2";
/* $1: the users as an array literal ("{1,2}"): one statement for any number of them. */
static const char PG_TARGETS[] = "SELECT device_id, user_id, gateway_id, room_id FROM device "
                                 "WHERE online = 1 AND user_id = ANY ($1::bigint[])";

/* The message an inbox entry points at, as far as a recall needs it. */
struct target {
    int64_t id;
    int sender_type;
    int64_t sender_id;
    int receiver_type;
    int64_t receiver_id;
    int64_t send_time;
    int status;
    int64_t sender_seq, receiver_seq;
    int notice; /* 0, or the Command code of an IM notice (MT_COMMAND, code below 1000) */
};

struct copy {
    int64_t user_id, seq;
};

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

static gim_err find_pg(struct store_conn *db, int64_t user_id, int64_t seq, struct target *t)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_FIND, &res, NULL, STORE_INT(user_id), STORE_INT(seq));
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

static gim_err find(struct store_conn *db, int64_t user_id, int64_t seq, struct target *t)
{
    if (store_is_pg(db))
        return find_pg(db, user_id, seq, t);
    sqlite3_stmt *st = store_stmt(db, SQL_FIND);
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

static gim_err role_pg(struct store_conn *db, int64_t group_id, int64_t user_id,
                       enum group_role *role)
{
    PGresult *res = NULL;
    char text[16] = "";
    gim_err e = PG_RUN(db, PG_ROLE, &res, NULL, STORE_INT(group_id), STORE_INT(user_id));
    if (e == GIM_OK && PQntuples(res) == 1) {
        size_t len = 0;
        const uint8_t *r = pgstore_blob(res, 0, 0, &len);
        if (r && len < sizeof text)
            memcpy(text, r, len);
    }
    PQclear(res);
    *role = group_role_parse(text);
    return e;
}

/* Whether the actor may recall t now; GIM_OK, GIM_EFORBIDDEN or GIM_ERECALLEXPIRED. */
static gim_err check_allowed(struct wctx *w, const struct target *t, int64_t actor, char *why,
                             size_t whylen)
{
    enum group_role role = GROUP_NONE;
    if (t->receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
        gim_err e = store_is_pg(w->db) ? role_pg(w->db, t->receiver_id, actor, &role)
                                       : group_role(w->db, t->receiver_id, actor, &role);
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

/*
 * The 1:1 copies: (sender, sender_seq) and (receiver, receiver_seq), one copy
 * when both are the same, each only if the inbox still points at the message
 * (a system sender has no copy of its own).
 */
static gim_err user_copies(struct store_conn *db, const struct target *t, struct copy *out,
                           size_t *n)
{
    struct copy cand[2] = {{t->sender_id, t->sender_seq}, {t->receiver_id, t->receiver_seq}};
    if (cand[1].user_id < cand[0].user_id) {
        struct copy tmp = cand[0];
        cand[0] = cand[1];
        cand[1] = tmp;
    }
    *n = 0;
    for (int i = 0; i < 2; i++) {
        bool yes = false;
        gim_err e;
        if (i == 1 && cand[1].user_id == cand[0].user_id && cand[1].seq == cand[0].seq)
            break;
        if (store_is_pg(db)) {
            PGresult *res = NULL;
            e = PG_RUN(db, PG_HAS_COPY, &res, NULL, STORE_INT(cand[i].user_id),
                       STORE_INT(cand[i].seq), STORE_INT(t->id));
            yes = e == GIM_OK && PQntuples(res) > 0;
            PQclear(res);
        } else {
            e = STORE_EXISTS(db, SQL_HAS_COPY, &yes, STORE_INT(cand[i].user_id),
                             STORE_INT(cand[i].seq), STORE_INT(t->id));
        }
        if (e != GIM_OK)
            return e;
        if (yes)
            out[(*n)++] = cand[i];
    }
    return GIM_OK;
}

static void copy_row(sqlite3_stmt *st, void *elem)
{
    struct copy *c = elem;
    c->user_id = sqlite3_column_int64(st, 0);
    c->seq = sqlite3_column_int64(st, 1);
}

/* Every member copy of a group message, into a malloc'ed array the caller frees. */
static gim_err group_copies(struct store_conn *db, int64_t message_id, struct copy **out, size_t *n)
{
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        gim_err e = PG_RUN(db, PG_GROUP_COPIES, &res, NULL, STORE_INT(message_id));
        *out = NULL;
        *n = 0;
        if (e != GIM_OK)
            return e;
        size_t rows = (size_t)PQntuples(res);
        if (rows && !(*out = calloc(rows, sizeof **out))) {
            PQclear(res);
            return GIM_ENOMEM;
        }
        for (size_t i = 0; i < rows; i++)
            (*out)[i] = (struct copy){pgstore_int(res, (int)i, 0), pgstore_int(res, (int)i, 1)};
        *n = rows;
        PQclear(res);
        return GIM_OK;
    }
    void *rows = NULL;
    gim_err e =
        STORE_ROWS(db, SQL_GROUP_COPIES, sizeof **out, copy_row, &rows, n, STORE_INT(message_id));
    *out = rows;
    return e;
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
static gim_err write_notice(struct wctx *w, const struct recall_result *res, struct copy c,
                            struct recall_notice *n)
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

/* PostgreSQL: the notices' users' online devices, from the device table, into res->targets. */
static gim_err targets_pg(struct store_conn *db, struct recall_result *res)
{
    /* "{" + up to 20 digits and a comma per user + "}" */
    size_t cap = 3 + res->n_notices * 21, len = 0;
    char *ids = malloc(cap);
    PGresult *pr = NULL;
    gim_err e = GIM_ENOMEM;
    if (!ids)
        return e;
    ids[len++] = '{';
    for (size_t i = 0; i < res->n_notices; i++)
        len += (size_t)snprintf(ids + len, cap - len, "%s%" PRId64, i ? "," : "",
                                res->notices[i].user_id);
    snprintf(ids + len, cap - len, "}");
    if ((e = PG_RUN(db, PG_TARGETS, &pr, NULL, STORE_TEXT(ids))) != GIM_OK)
        goto out;
    size_t n = (size_t)PQntuples(pr);
    if (n && !(res->targets = calloc(n, sizeof *res->targets))) {
        e = GIM_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct session *t = &res->targets[i];
        size_t gl = 0;
        const uint8_t *gw = pgstore_blob(pr, (int)i, 2, &gl);
        t->device_id = pgstore_int(pr, (int)i, 0);
        t->user_id = pgstore_int(pr, (int)i, 1);
        t->room_id = pgstore_int(pr, (int)i, 3);
        gl = gl > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : gl;
        if (gw)
            memcpy(t->gateway_id, gw, gl);
        t->gateway_id[gl] = 0;
    }
    res->n_targets = n;
    res->targets_known = true;
out:
    PQclear(pr);
    free(ids);
    return e;
}

gim_err recall_apply(struct wctx *w, int64_t actor_user, int64_t actor_device, int64_t user_id,
                     int64_t seq, bool admin, struct recall_result *res, char *why, size_t whylen)
{
    struct target t = {0};
    struct copy pair[2];
    struct copy *copies = NULL;
    size_t n = 0;
    gim_err e;

    memset(res, 0, sizeof *res);
    if (seq <= 0) {
        gim_err_why(why, whylen, "seq must be > 0");
        return GIM_EBADREQ;
    }
    e = find(w->db, user_id, seq, &t);
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

    if ((e = STORE_RUN2(w->db, SQL_ERASE, PG_ERASE, NULL, STORE_INT(t.id))) != GIM_OK)
        goto storage;
    if (t.receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
        e = group_copies(w->db, t.id, &copies, &n);
    } else {
        copies = pair;
        e = user_copies(w->db, &t, pair, &n);
    }
    if (e != GIM_OK)
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
    if (store_is_pg(w->db)) {
        if (n > 0 && (e = targets_pg(w->db, res)) != GIM_OK)
            goto storage;
    } else {
        /* The content is gone from the b-tree; its old frames are still in the WAL. */
        w->scrub_wal = true;
    }
    log_info("recalled", "message=%" PRId64 " actor=%" PRId64 " admin=%d notices=%zu", t.id,
             actor_user, (int)admin, n);
    if (copies != pair)
        free(copies);
    return GIM_OK;

storage:
    if (copies != pair)
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
