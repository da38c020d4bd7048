#include "group.h"

#include <stdlib.h>
#include <string.h>

static const char SQL_ROLE[] = "SELECT role FROM group_member WHERE group_id = ?1 AND user_id = ?2";
static const char SQL_MEMBERS[] =
    "SELECT user_id FROM group_member WHERE group_id = ?1 ORDER BY user_id";

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
    void *rows = NULL;
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(db, SQL_MEMBERS);
    if (!st)
        return GIM_EINTERNAL;
    gim_err e =
        store_rows(st, STORE_BIND(st, STORE_INT(group_id)), sizeof **ids, member_row, &rows, n);
    *ids = rows;
    return e;
}
