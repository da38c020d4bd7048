#include "group.h"

#include <stdlib.h>
#include <string.h>

#include "storage.h"

/* The database work is the storage interface's (storage.h, "group"); these are its entry points. */

gim_err group_role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role)
{
    return storage(db)->group->role(db, group_id, user_id, role);
}

gim_err group_exists(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists)
{
    return storage(db)->group->exists(db, group_id, lock, exists);
}

gim_err group_lock_batch(struct store_conn *db, const int64_t *ids, size_t n)
{
    return storage(db)->group->lock_batch(db, ids, n);
}

gim_err group_members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n)
{
    return storage(db)->group->members(db, group_id, ids, n);
}

gim_err group_info_load(struct store_conn *db, int64_t group_id, struct group_info *g)
{
    return storage(db)->group->info_load(db, group_id, g);
}

gim_err group_create(struct store_conn *db, const char *name, const char *avatar_url,
                     const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id)
{
    return storage(db)->group->create(db, name, avatar_url, extra, owner_id, now_ms, group_id);
}

gim_err group_update(struct store_conn *db, int64_t group_id, const char *name,
                     const char *avatar_url, const char *extra, int64_t now_ms)
{
    return storage(db)->group->update(db, group_id, name, avatar_url, extra, now_ms);
}

gim_err group_touch(struct store_conn *db, int64_t group_id, int64_t now_ms)
{
    return storage(db)->group->touch(db, group_id, now_ms);
}

gim_err group_delete(struct store_conn *db, int64_t group_id)
{
    return storage(db)->group->dissolve(db, group_id);
}

gim_err group_member_add(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role role, int64_t now_ms, bool *added)
{
    return storage(db)->group->member_add(db, group_id, user_id, role, now_ms, added);
}

gim_err group_member_remove(struct store_conn *db, int64_t group_id, int64_t user_id, bool *removed)
{
    return storage(db)->group->member_remove(db, group_id, user_id, removed);
}

gim_err group_member_set_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                              enum group_role role)
{
    return storage(db)->group->member_set_role(db, group_id, user_id, role);
}

gim_err group_member_count(struct store_conn *db, int64_t group_id, int64_t *n)
{
    return storage(db)->group->member_count(db, group_id, n);
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
