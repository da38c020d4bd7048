#include "group.h"

#include <stdlib.h>
#include <string.h>

#include "pgstore.h"
#include "seq.h"

static const char SQL_ROLE[] = "SELECT role FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBERS[] =
    "SELECT user_id FROM group_member WHERE group_id = ?1 ORDER BY user_id";

/*
 * PostgreSQL (several instances on one database): the same rows, $n
 * parameters. Text columns come back in binary form, which is the bytes
 * without a NUL (pg_text copies them). The next group id is taken from
 * group_id_high's one row, whose row lock serializes creates across
 * instances until the commit, so ids never repeat.
 */
static const char PG_ROLE[] = "SELECT role FROM group_member WHERE group_id = $1 AND user_id = $2";
static const char PG_MEMBERS[] =
    "SELECT user_id FROM group_member WHERE group_id = $1 ORDER BY user_id";
static const char PG_INFO[] = "SELECT name, avatar_url, extra, owner_id, created_at, updated_at, "
                              "(SELECT count(*) FROM group_member m WHERE m.group_id = g.group_id) "
                              "FROM chat_group g WHERE group_id = $1";
static const char PG_NEXT_ID[] =
    "UPDATE group_id_high SET last_id = greatest(last_id, "
    "(SELECT coalesce(max(group_id), 0) FROM chat_group)) + 1 RETURNING last_id";
static const char PG_INSERT[] =
    "INSERT INTO chat_group (group_id, name, avatar_url, extra, owner_id, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $6)";
static const char PG_UPDATE[] =
    "UPDATE chat_group SET name = coalesce($2, name), avatar_url = coalesce($3, avatar_url), "
    "extra = coalesce($4, extra), updated_at = $5 WHERE group_id = $1";
static const char PG_TOUCH[] = "UPDATE chat_group SET updated_at = $2 WHERE group_id = $1";
static const char PG_SET_OWNER[] = "UPDATE chat_group SET owner_id = $2 WHERE group_id = $1";
static const char PG_DELETE[] = "DELETE FROM chat_group WHERE group_id = $1";
static const char PG_MEMBER_ADD[] =
    "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (group_id, user_id) DO NOTHING";
static const char PG_MEMBER_REMOVE[] =
    "DELETE FROM group_member WHERE group_id = $1 AND user_id = $2";
static const char PG_MEMBER_ROLE[] =
    "UPDATE group_member SET role = $3 WHERE group_id = $1 AND user_id = $2";
static const char PG_MEMBER_COUNT[] = "SELECT count(*) FROM group_member WHERE group_id = $1";
static const char PG_EXISTS[] = "SELECT 1 FROM chat_group WHERE group_id = $1";
/* The group's row, locked: FOR SHARE by sends, FOR UPDATE by membership changes. */
static const char PG_LOCK_SHARE[] = "SELECT 1 FROM chat_group WHERE group_id = $1 FOR SHARE";
static const char PG_LOCK_UPDATE[] = "SELECT 1 FROM chat_group WHERE group_id = $1 FOR UPDATE";
static const char SQL_EXISTS[] = "SELECT 1 FROM chat_group WHERE group_id = ?1";

/* A malloc'ed copy of the text at (row, col) of a binary result ("" for NULL). */
static char *pg_text(const PGresult *res, int row, int col)
{
    size_t len = 0;
    const uint8_t *b = pgstore_blob(res, row, col, &len);
    char *s = malloc(len + 1);
    if (s) {
        if (len)
            memcpy(s, b, len);
        s[len] = 0;
    }
    return s;
}

/* The role named by the text at (row, col) of a binary result. */
static enum group_role pg_role(const PGresult *res, int row, int col)
{
    size_t len = 0;
    const uint8_t *b = pgstore_blob(res, row, col, &len);
    char buf[16];
    if (!b || len >= sizeof buf)
        return GROUP_NONE;
    memcpy(buf, b, len);
    buf[len] = 0;
    return group_role_parse(buf);
}

enum group_role group_role_of_pgrow(const PGresult *res, int row, int col)
{
    return pg_role(res, row, col);
}

gim_err group_exists(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists)
{
    *exists = false;
    if (!store_is_pg(db))
        return STORE_EXISTS(db, SQL_EXISTS, exists, STORE_INT(group_id));
    PGresult *res = NULL;
    const char *sql = lock == GROUP_LOCK_SHARE    ? PG_LOCK_SHARE
                      : lock == GROUP_LOCK_UPDATE ? PG_LOCK_UPDATE
                                                  : PG_EXISTS;
    gim_err e = PG_RUN(db, sql, &res, NULL, STORE_INT(group_id));
    if (e == GIM_OK)
        *exists = PQntuples(res) > 0;
    PQclear(res);
    return e;
}

/*
 * A batch's groups, locked in ascending id order: the ORDER BY is applied
 * before the locking clause (PostgreSQL's SELECT reference, "The Locking
 * Clause"), so the rows are locked as they come out of the sort.
 */
static const char PG_LOCK_MANY[] =
    "SELECT 1 FROM chat_group WHERE group_id = ANY($1::text::bigint[]) ORDER BY group_id "
    "FOR UPDATE";

gim_err group_lock_batch(struct store_conn *db, const int64_t *ids, size_t n)
{
    if (!store_is_pg(db) || n == 0)
        return GIM_OK;
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i])
            return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    gim_err e = seq_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(db, PG_LOCK_MANY, NULL, NULL, STORE_TEXT(arr));
    free(arr);
    return e;
}

enum group_role group_role_parse(const char *s)
{
    if (!s)
        return GROUP_NONE;
    if (strcmp(s, "owner") == 0)
        return GROUP_OWNER;
    if (strcmp(s, "admin") == 0)
        return GROUP_ADMIN;
    if (strcmp(s, "member") == 0)
        return GROUP_MEMBER;
    return GROUP_NONE;
}

gim_err group_role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role)
{
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        gim_err e = PG_RUN(db, PG_ROLE, &res, NULL, STORE_INT(group_id), STORE_INT(user_id));
        *role = e == GIM_OK && PQntuples(res) > 0 ? pg_role(res, 0, 0) : GROUP_NONE;
        PQclear(res);
        return e;
    }
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

static void member_row(sqlite3_stmt *st, void *elem)
{
    *(int64_t *)elem = sqlite3_column_int64(st, 0);
}

gim_err group_members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n)
{
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        gim_err e = PG_RUN(db, PG_MEMBERS, &res, NULL, STORE_INT(group_id));
        *ids = NULL;
        *n = 0;
        size_t rows = e == GIM_OK ? (size_t)PQntuples(res) : 0;
        if (rows && !(*ids = malloc(rows * sizeof **ids)))
            e = GIM_ENOMEM;
        for (size_t i = 0; e == GIM_OK && i < rows; i++)
            (*ids)[i] = pgstore_int(res, (int)i, 0);
        if (e == GIM_OK)
            *n = rows;
        PQclear(res);
        return e;
    }
    void *rows = NULL;
    gim_err e =
        STORE_ROWS(db, SQL_MEMBERS, sizeof **ids, member_row, &rows, n, STORE_INT(group_id));
    *ids = rows;
    return e;
}

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

const char *group_role_name(enum group_role role)
{
    switch (role) {
    case GROUP_OWNER:
        return "owner";
    case GROUP_ADMIN:
        return "admin";
    case GROUP_MEMBER:
        return "member";
    default:
        return NULL;
    }
}

static char *column_dup(sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    return strdup(s ? s : "");
}

static gim_err info_load_pg(struct store_conn *db, int64_t group_id, struct group_info *g)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_INFO, &res, NULL, STORE_INT(group_id));
    if (e == GIM_OK && PQntuples(res) == 0)
        e = GIM_ENOTFOUND;
    if (e == GIM_OK) {
        g->group_id = group_id;
        g->name = pg_text(res, 0, 0);
        g->avatar_url = pg_text(res, 0, 1);
        g->extra = pg_text(res, 0, 2);
        g->owner_id = pgstore_int(res, 0, 3);
        g->created_at = pgstore_int(res, 0, 4);
        g->updated_at = pgstore_int(res, 0, 5);
        g->member_count = pgstore_int(res, 0, 6);
        if (!g->name || !g->avatar_url || !g->extra) {
            e = GIM_ENOMEM;
            group_info_free(g);
        }
    }
    PQclear(res);
    return e;
}

gim_err group_info_load(struct store_conn *db, int64_t group_id, struct group_info *g)
{
    memset(g, 0, sizeof *g);
    if (store_is_pg(db))
        return info_load_pg(db, group_id, g);
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

void group_info_pb(const struct group_info *g, Pb__GroupInfo *out)
{
    pb__group_info__init(out);
    out->group_id = g->group_id;
    out->name = g->name ? g->name : (char *)protobuf_c_empty_string;
    out->avatar_url = g->avatar_url ? g->avatar_url : (char *)protobuf_c_empty_string;
    out->extra = g->extra ? g->extra : (char *)protobuf_c_empty_string;
    out->owner_id = g->owner_id;
    out->member_count = g->member_count;
    out->created_at = g->created_at;
    out->updated_at = g->updated_at;
}

void group_info_free(struct group_info *g)
{
    if (!g)
        return;
    free(g->name);
    free(g->avatar_url);
    free(g->extra);
    memset(g, 0, sizeof *g);
}

static gim_err next_id(struct store_conn *db, int64_t *out)
{
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        gim_err e = PG_RUN0(db, PG_NEXT_ID, &res, NULL);
        if (e == GIM_OK)
            *out = PQntuples(res) == 1 ? pgstore_int(res, 0, 0) : 0;
        PQclear(res);
        return e != GIM_OK ? e : *out > 0 ? GIM_OK : GIM_EINTERNAL;
    }
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

gim_err group_create(struct store_conn *db, const char *name, const char *avatar_url,
                     const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id)
{
    int64_t id = 0;
    gim_err e = next_id(db, &id);
    if (e != GIM_OK)
        return e;
    e = STORE_RUN2(db, SQL_INSERT, PG_INSERT, NULL, STORE_INT(id), STORE_TEXT(name),
                   STORE_TEXT(avatar_url), STORE_TEXT(extra), STORE_INT(owner_id),
                   STORE_INT(now_ms));
    bool added = false;
    if (e == GIM_OK)
        e = group_member_add(db, id, owner_id, GROUP_OWNER, now_ms, &added);
    if (e == GIM_OK)
        *group_id = id;
    return e;
}

gim_err group_update(struct store_conn *db, int64_t group_id, const char *name,
                     const char *avatar_url, const char *extra, int64_t now_ms)
{
    /* A NULL field binds NULL: the statement keeps the stored value. */
    return STORE_RUN2(db, SQL_UPDATE, PG_UPDATE, NULL, STORE_INT(group_id), STORE_TEXT(name),
                      STORE_TEXT(avatar_url), STORE_TEXT(extra), STORE_INT(now_ms));
}

gim_err group_touch(struct store_conn *db, int64_t group_id, int64_t now_ms)
{
    return STORE_RUN2(db, SQL_TOUCH, PG_TOUCH, NULL, STORE_INT(group_id), STORE_INT(now_ms));
}

gim_err group_delete(struct store_conn *db, int64_t group_id)
{
    return STORE_RUN2(db, SQL_DELETE, PG_DELETE, NULL, STORE_INT(group_id));
}

gim_err group_member_add(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role role, int64_t now_ms, bool *added)
{
    int changes = 0;
    gim_err e =
        STORE_RUN2(db, SQL_MEMBER_ADD, PG_MEMBER_ADD, &changes, STORE_INT(group_id),
                   STORE_INT(user_id), STORE_TEXT(group_role_name(role)), STORE_INT(now_ms));
    *added = e == GIM_OK && changes > 0;
    return e;
}

gim_err group_member_remove(struct store_conn *db, int64_t group_id, int64_t user_id, bool *removed)
{
    int changes = 0;
    gim_err e = STORE_RUN2(db, SQL_MEMBER_REMOVE, PG_MEMBER_REMOVE, &changes, STORE_INT(group_id),
                           STORE_INT(user_id));
    *removed = e == GIM_OK && changes > 0;
    return e;
}

gim_err group_member_set_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                              enum group_role role)
{
    gim_err e = STORE_RUN2(db, SQL_MEMBER_ROLE, PG_MEMBER_ROLE, NULL, STORE_INT(group_id),
                           STORE_INT(user_id), STORE_TEXT(group_role_name(role)));
    if (e != GIM_OK || role != GROUP_OWNER)
        return e;
    return STORE_RUN2(db, SQL_SET_OWNER, PG_SET_OWNER, NULL, STORE_INT(group_id),
                      STORE_INT(user_id));
}

gim_err group_member_count(struct store_conn *db, int64_t group_id, int64_t *n)
{
    if (store_is_pg(db)) {
        PGresult *res = NULL;
        gim_err e = PG_RUN(db, PG_MEMBER_COUNT, &res, NULL, STORE_INT(group_id));
        *n = e == GIM_OK && PQntuples(res) > 0 ? pgstore_int(res, 0, 0) : 0;
        PQclear(res);
        return e;
    }
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

gim_err group_notice_content(enum group_notice_code code, int64_t group_id, const int64_t *user_ids,
                             size_t n, const Pb__GroupInfo *g, enum group_role role, uint8_t **buf,
                             size_t *len)
{
    Pb__GroupNotice gn = PB__GROUP_NOTICE__INIT;
    gn.group_id = group_id;
    gn.user_ids = (int64_t *)user_ids;
    gn.n_user_ids = n;
    gn.group = (Pb__GroupInfo *)g;
    gn.role = (Pb__GroupRole)role;
    size_t dlen = pb__group_notice__get_packed_size(&gn);
    uint8_t *data = malloc(dlen ? dlen : 1);
    if (!data)
        return GIM_ENOMEM;
    pb__group_notice__pack(&gn, data);
    Pb__Command cmd = PB__COMMAND__INIT;
    cmd.code = (int32_t)code;
    cmd.data.data = data;
    cmd.data.len = dlen;
    *len = pb__command__get_packed_size(&cmd);
    *buf = malloc(*len ? *len : 1);
    if (*buf)
        pb__command__pack(&cmd, *buf);
    free(data);
    return *buf ? GIM_OK : GIM_ENOMEM;
}
