/*
 * The group operations on SQLite (storage.h, "group"): groups and their
 * members, the group fan-out's rows, operator idempotency. The code that was
 * in group.c, fanout.c, operator.c and handle_admin_group.c, moved as it
 * was: the same statements through the statement cache, the same steps in
 * the same order. One writer: no row locks (lock arguments are ignored) and
 * the push targets come from this process's presence (fanout_push).
 */
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "message.h"
#include "seq.h"
#include "storage.h"

static const char SQL_ROLE[] = "SELECT role FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBERS[] =
    "SELECT user_id FROM group_member WHERE group_id = ?1 ORDER BY user_id";
static const char SQL_EXISTS[] = "SELECT 1 FROM chat_group WHERE group_id = ?1";
static const char SQL_INFO[] =
    "SELECT name, avatar_url, extra, owner_id, created_at, updated_at, "
    "(SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) "
    "FROM chat_group g WHERE group_id = ?1";
/* max() also covers groups made before group_id_high existed, or by hand. */
static const char SQL_NEXT_ID[] =
    "UPDATE group_id_high SET last_id = max(last_id, "
    "(SELECT coalesce(max(group_id), 0) FROM chat_group)) + 1 RETURNING last_id";
static const char SQL_INSERT[] =
    "INSERT INTO chat_group (group_id, name, avatar_url, extra, owner_id, created_at, updated_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)";
static const char SQL_UPDATE[] =
    "UPDATE chat_group SET name = coalesce(?2, name), avatar_url = coalesce(?3, avatar_url), "
    "extra = coalesce(?4, extra), updated_at = ?5 WHERE group_id = ?1";
static const char SQL_TOUCH[] = "UPDATE chat_group SET updated_at = ?2 WHERE group_id = ?1";
static const char SQL_SET_OWNER[] = "UPDATE chat_group SET owner_id = ?2 WHERE group_id = ?1";
static const char SQL_DELETE[] = "DELETE FROM chat_group WHERE group_id = ?1";
static const char SQL_MEMBER_ADD[] =
    "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4) "
    "ON CONFLICT (group_id, user_id) DO NOTHING";
static const char SQL_MEMBER_REMOVE[] =
    "DELETE FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBER_ROLE[] =
    "UPDATE group_member SET role = ?3 WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBER_COUNT[] = "SELECT count(*) FROM group_member WHERE group_id = ?1";
static const char SQL_MEMBER[] =
    "SELECT role, joined_at FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_PAGE[] =
    "SELECT user_id, role, joined_at FROM group_member WHERE group_id = ?1 AND user_id > ?2 "
    "ORDER BY user_id LIMIT ?3";
static const char SQL_GROUP_COPY[] =
    "INSERT INTO group_copy (message_id, user_id, seq) VALUES (?1, ?2, ?3)";
static const char SQL_IDEM_GET[] =
    "SELECT type, request, reply, created_at FROM operator_idempotency WHERE idem_key = ?1";
/* A record older than the window may still be there (pruning is lazy): it is replaced. */
static const char SQL_IDEM_PUT[] =
    "INSERT INTO operator_idempotency (idem_key, type, request, reply, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (idem_key) DO UPDATE SET type = excluded.type, "
    "request = excluded.request, reply = excluded.reply, created_at = excluded.created_at";

/* --- reads --------------------------------------------------------------- */

static gim_err role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role)
{
    sqlite3_stmt *st = store_stmt(db, SQL_ROLE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(group_id), STORE_INT(user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *role =
        rc == SQLITE_ROW ? group_role_parse((const char *)sqlite3_column_text(st, 0)) : GROUP_NONE;
    store_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

static gim_err exists(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists)
{
    (void)lock; /* one writer: nothing to lock */
    *exists = false;
    return STORE_EXISTS(db, SQL_EXISTS, exists, STORE_INT(group_id));
}

/* The role first: whether the group exists matters only to a non-member's error. */
static gim_err send_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role *r, bool *ok, const char **what)
{
    *r = GROUP_NONE;
    *ok = true;
    gim_err e = role(db, group_id, user_id, r);
    if (e != GIM_OK) {
        *what = "membership";
        return e;
    }
    if (*r == GROUP_NONE && (e = exists(db, group_id, GROUP_LOCK_NONE, ok)) != GIM_OK)
        *what = "group";
    return e;
}

static gim_err lock_batch(struct store_conn *db, const int64_t *ids, size_t n)
{
    (void)db;
    (void)ids;
    (void)n;
    return GIM_OK;
}

static void member_row(sqlite3_stmt *st, void *elem)
{
    *(int64_t *)elem = sqlite3_column_int64(st, 0);
}

static gim_err members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n)
{
    void *rows = NULL;
    gim_err e =
        STORE_ROWS(db, SQL_MEMBERS, sizeof **ids, member_row, &rows, n, STORE_INT(group_id));
    *ids = rows;
    return e;
}

static gim_err member_count(struct store_conn *db, int64_t group_id, int64_t *n)
{
    sqlite3_stmt *st = store_stmt(db, SQL_MEMBER_COUNT);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(group_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    store_done(st);
    return rc == SQLITE_ROW ? GIM_OK : store_err(rc);
}

static gim_err member_get(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role *role, int64_t *joined_at)
{
    sqlite3_stmt *st = store_stmt(db, SQL_MEMBER);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(group_id), STORE_INT(user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *role = group_role_parse((const char *)sqlite3_column_text(st, 0));
        *joined_at = sqlite3_column_int64(st, 1);
    }
    store_done(st);
    return rc == SQLITE_ROW ? GIM_OK : rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
}

static gim_err member_page(struct store_conn *db, int64_t group_id, int64_t after_user_id,
                           size_t max, struct group_member *rows, size_t *n)
{
    *n = 0;
    sqlite3_stmt *st = store_stmt(db, SQL_PAGE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(group_id), STORE_INT(after_user_id), STORE_INT((int64_t)max));
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < max) {
            rows[*n].user_id = sqlite3_column_int64(st, 0);
            rows[*n].role = group_role_parse((const char *)sqlite3_column_text(st, 1));
            rows[*n].joined_at = sqlite3_column_int64(st, 2);
            (*n)++;
        }
    store_done(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? GIM_OK : store_err(rc);
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    return strdup(s ? s : "");
}

static gim_err info_load(struct store_conn *db, int64_t group_id, struct group_info *g)
{
    memset(g, 0, sizeof *g);
    sqlite3_stmt *st = store_stmt(db, SQL_INFO);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(group_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    gim_err e = rc == SQLITE_ROW ? GIM_OK : rc == SQLITE_DONE ? GIM_ENOTFOUND : store_err(rc);
    if (rc == SQLITE_ROW) {
        g->group_id = group_id;
        g->name = column_dup(st, 0);
        g->avatar_url = column_dup(st, 1);
        g->extra = column_dup(st, 2);
        g->owner_id = sqlite3_column_int64(st, 3);
        g->created_at = sqlite3_column_int64(st, 4);
        g->updated_at = sqlite3_column_int64(st, 5);
        g->member_count = sqlite3_column_int64(st, 6);
        if (!g->name || !g->avatar_url || !g->extra) {
            e = GIM_ENOMEM;
            group_info_free(g);
        }
    }
    store_done(st);
    return e;
}

/* --- writes -------------------------------------------------------------- */

static gim_err member_add(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role role, int64_t now_ms, bool *added)
{
    int changes = 0;
    gim_err e = STORE_RUN(db, SQL_MEMBER_ADD, &changes, STORE_INT(group_id), STORE_INT(user_id),
                          STORE_TEXT(group_role_name(role)), STORE_INT(now_ms));
    *added = e == GIM_OK && changes > 0;
    return e;
}

static gim_err next_id(struct store_conn *db, int64_t *out)
{
    sqlite3_stmt *st = store_stmt(db, SQL_NEXT_ID);
    if (!st)
        return GIM_EINTERNAL;
    int rc = sqlite3_step(st);
    int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    /* Step to the end: RETURNING finishes its UPDATE only then. */
    if (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE || id <= 0)
        return rc == SQLITE_DONE ? GIM_EINTERNAL : store_err(rc);
    *out = id;
    return GIM_OK;
}

static gim_err create(struct store_conn *db, const char *name, const char *avatar_url,
                      const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id)
{
    int64_t id = 0;
    gim_err e = next_id(db, &id);
    if (e != GIM_OK)
        return e;
    e = STORE_RUN(db, SQL_INSERT, NULL, STORE_INT(id), STORE_TEXT(name), STORE_TEXT(avatar_url),
                  STORE_TEXT(extra), STORE_INT(owner_id), STORE_INT(now_ms));
    bool added = false;
    if (e == GIM_OK)
        e = member_add(db, id, owner_id, GROUP_OWNER, now_ms, &added);
    if (e == GIM_OK)
        *group_id = id;
    return e;
}

static gim_err update(struct store_conn *db, int64_t group_id, const char *name,
                      const char *avatar_url, const char *extra, int64_t now_ms)
{
    /* A NULL field binds NULL: the statement keeps the stored value. */
    return STORE_RUN(db, SQL_UPDATE, NULL, STORE_INT(group_id), STORE_TEXT(name),
                     STORE_TEXT(avatar_url), STORE_TEXT(extra), STORE_INT(now_ms));
}

static gim_err touch(struct store_conn *db, int64_t group_id, int64_t now_ms)
{
    return STORE_RUN(db, SQL_TOUCH, NULL, STORE_INT(group_id), STORE_INT(now_ms));
}

static gim_err dissolve(struct store_conn *db, int64_t group_id)
{
    return STORE_RUN(db, SQL_DELETE, NULL, STORE_INT(group_id));
}

static gim_err member_remove(struct store_conn *db, int64_t group_id, int64_t user_id,
                             bool *removed)
{
    int changes = 0;
    gim_err e = STORE_RUN(db, SQL_MEMBER_REMOVE, &changes, STORE_INT(group_id), STORE_INT(user_id));
    *removed = e == GIM_OK && changes > 0;
    return e;
}

static gim_err member_set_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                               enum group_role role)
{
    gim_err e = STORE_RUN(db, SQL_MEMBER_ROLE, NULL, STORE_INT(group_id), STORE_INT(user_id),
                          STORE_TEXT(group_role_name(role)));
    if (e != GIM_OK || role != GROUP_OWNER)
        return e;
    return STORE_RUN(db, SQL_SET_OWNER, NULL, STORE_INT(group_id), STORE_INT(user_id));
}

/* --- fan-out ------------------------------------------------------------- */

/* A seq per member from the writer's counters, then the rows one statement each. */
static gim_err copy_group(struct wctx *w, struct message_new *m, const int64_t *ids, size_t n,
                          int64_t me, struct fanout_copy *to, int64_t *id)
{
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

/* One writer takes the seqs in any order: the list's. */
static void user_order(const int64_t *ids, size_t n, size_t *pos)
{
    (void)ids;
    for (size_t i = 0; i < n; i++)
        pos[i] = i;
}

/* The sessions are in presence, which fanout_push() reads after the commit: f stays as it is. */
static gim_err targets_presence(struct wctx *w, struct fanout *f)
{
    (void)w;
    (void)f;
    return GIM_OK;
}

static gim_err targets_user(struct wctx *w, struct fanout *f, int64_t user_id)
{
    (void)user_id;
    return targets_presence(w, f);
}

/* --- operator idempotency ------------------------------------------------ */

static gim_err op_idem_claim(struct wctx *w, const char *key, int type, const uint8_t *body,
                             size_t body_len, int64_t expired_before, enum storage_op_idem *found,
                             uint8_t **reply, size_t *reply_len)
{
    gim_err e = GIM_OK;
    *found = STORAGE_OP_IDEM_NEW;
    *reply = NULL;
    *reply_len = 0;
    sqlite3_stmt *st = store_stmt(w->db, SQL_IDEM_GET);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_TEXT(key));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        goto out;
    if (rc != SQLITE_ROW) {
        e = store_err(rc);
        goto out;
    }
    if (sqlite3_column_int64(st, 3) < expired_before)
        goto out; /* expired: the request runs again, and its record replaces this one */
    const void *stored = sqlite3_column_blob(st, 1);
    size_t stored_len = (size_t)sqlite3_column_bytes(st, 1);
    if (sqlite3_column_int(st, 0) != type || stored_len != body_len ||
        (stored_len > 0 && memcmp(stored, body, stored_len) != 0)) {
        *found = STORAGE_OP_IDEM_OTHER;
        goto out;
    }
    *found = STORAGE_OP_IDEM_REPLAY;
    if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        const void *stored_reply = sqlite3_column_blob(st, 2);
        if (!(*reply = malloc(len ? len : 1))) {
            e = GIM_ENOMEM;
            goto out;
        }
        if (len)
            memcpy(*reply, stored_reply, len);
        *reply_len = len;
    }
out:
    store_done(st);
    return e;
}

static gim_err op_idem_put(struct wctx *w, const char *key, int type, const uint8_t *body,
                           size_t body_len, const uint8_t *reply, size_t reply_len)
{
    return STORE_RUN(w->db, SQL_IDEM_PUT, NULL, STORE_TEXT(key), STORE_INT(type),
                     STORE_BLOB(body_len ? (const void *)body : "", body_len),
                     reply ? STORE_BLOB(reply_len ? (const void *)reply : "", reply_len)
                           : STORE_NULL,
                     STORE_INT(w->now_ms));
}

const struct storage_group_ops storage_sqlite_group = {
    .role = role,
    .exists = exists,
    .send_role = send_role,
    .lock_batch = lock_batch,
    .members = members,
    .member_count = member_count,
    .member_get = member_get,
    .member_page = member_page,
    .info_load = info_load,
    .create = create,
    .update = update,
    .touch = touch,
    .dissolve = dissolve,
    .member_add = member_add,
    .member_remove = member_remove,
    .member_set_role = member_set_role,
    .fanout_group = copy_group,
    .user_order = user_order,
    .targets_group = targets_presence,
    .targets_user = targets_user,
    .targets_room = targets_presence,
    .op_idem_claim = op_idem_claim,
    .op_idem_put = op_idem_put,
};
