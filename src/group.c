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
    sqlite3_bind_int64(st, 1, group_id);
    sqlite3_bind_int64(st, 2, user_id);
    int rc = sqlite3_step(st);
    *role =
        rc == SQLITE_ROW ? group_role_parse((const char *)sqlite3_column_text(st, 0)) : GROUP_NONE;
    store_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

gim_err group_members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n)
{
    gim_err e = GIM_OK;
    size_t cap = 0;
    int rc;
    *ids = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(db, SQL_MEMBERS);
    if (!st)
        return GIM_EINTERNAL;
    sqlite3_bind_int64(st, 1, group_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *grown = realloc(*ids, cap * sizeof *grown);
            if (!grown) {
                e = GIM_ENOMEM;
                goto fail;
            }
            *ids = grown;
        }
        (*ids)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE) {
        e = store_err(rc);
        goto fail;
    }
    store_done(st);
    return GIM_OK;
fail:
    store_done(st);
    free(*ids);
    *ids = NULL;
    *n = 0;
    return e;
}
