/*
 * group: group membership as the request path needs it.
 *
 * Membership is read from the database on every request (inside the
 * writer's transaction for sends and recalls), never cached, so changes made
 * by the business API (or the database's own client) take effect on the next request.
 *
 * The business API's group operations (handle_admin_group.c) change groups here,
 * inside the writer's transaction: the rows of chat_group and group_member,
 * and the content of the group notices that tell members about a change
 * (MT_COMMAND, Command{code, GroupNotice}; docs/protocol.md).
 *
 * The database work is the storage interface's group area (storage.h,
 * storage(db)->group, implemented in src/storage/sqlite_group.c and
 * pg_group.c); the functions below are its entry points for other modules
 * and keep no SQL of their own.
 */
#ifndef GIM_GROUP_H
#define GIM_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "proto.h"
#include "store.h"

enum group_role { GROUP_NONE = 0, GROUP_MEMBER = 1, GROUP_ADMIN = 2, GROUP_OWNER = 3 };

/* The role of user_id in group_id (GROUP_NONE when not a member or no such group). */
gim_err group_role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role);

/*
 * Whether group_id exists, into *exists. On PostgreSQL the row can be locked
 * until the commit as well: GROUP_LOCK_SHARE by a send (which reads the
 * members), and by a change of the members or of the group GROUP_LOCK_UPDATE,
 * so that a send on another instance sees the membership either before
 * the change or after it, never half of it. SQLite has one writer and
 * ignores lock.
 */
enum group_lock {
    GROUP_LOCK_NONE = 0,
    GROUP_LOCK_SHARE,
    GROUP_LOCK_UPDATE,
};
gim_err group_exists(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists);

/*
 * PostgreSQL: locks the rows of groups ids[0..n) (ascending, distinct) until
 * the commit, in ascending id order, as group_exists(GROUP_LOCK_UPDATE) would
 * one by one: the writer's lock of a batch's groups before their seq rows
 * (writer.c). FOR UPDATE: the strongest lock a group's send (shared) or
 * change takes, so a job that takes its own later never has to upgrade a
 * lock another instance shares. It costs sends nothing: two sends to one
 * group wait for each other anyway, on the members' seq rows. A missing
 * group locks nothing. No-op on SQLite.
 */
gim_err group_lock_batch(struct store_conn *db, const int64_t *ids, size_t n);

/*
 * The member ids of group_id in ascending order, into a malloc'ed array the
 * caller frees (*ids is NULL when there are none).
 */
gim_err group_members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n);

/* Parses 'owner'/'admin'/'member'; GROUP_NONE for anything else. */
enum group_role group_role_parse(const char *s);

/* The stored name of a role ('owner', 'admin', 'member'); NULL for GROUP_NONE. */
const char *group_role_name(enum group_role role);

/* Command.code of the group notices; data = encoded pb.GroupNotice. */
enum group_notice_code {
    GROUP_NOTICE_ADDED = 2,
    GROUP_NOTICE_REMOVED = 3,
    GROUP_NOTICE_UPDATED = 4,
    GROUP_NOTICE_DISSOLVED = 5,
    GROUP_NOTICE_ROLE = 6,
};

/* A group as stored; the strings are malloc'ed, freed by group_info_free(). */
struct group_info {
    int64_t group_id;
    char *name, *avatar_url, *extra;
    int64_t owner_id, member_count, created_at, updated_at;
};

/* Loads group_id (its member count too) into *g; GIM_ENOTFOUND when there is none. */
gim_err group_info_load(struct store_conn *db, int64_t group_id, struct group_info *g);

/* Points out's fields at g's (g must outlive out). */
void group_info_pb(const struct group_info *g, Pb__GroupInfo *out);

void group_info_free(struct group_info *g);

/* One member as a page of members lists it (storage(db)->group->member_page). */
struct group_member {
    int64_t user_id;
    enum group_role role;
    int64_t joined_at;
};

/*
 * Creates a group with owner_id as its owner (a member with GROUP_OWNER) and
 * a new id, never one given out before, into *group_id.
 */
gim_err group_create(struct store_conn *db, const char *name, const char *avatar_url,
                     const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id);

/* Sets the fields that are not NULL, and updated_at. */
gim_err group_update(struct store_conn *db, int64_t group_id, const char *name,
                     const char *avatar_url, const char *extra, int64_t now_ms);

/* Sets updated_at (a change of members or roles). */
gim_err group_touch(struct store_conn *db, int64_t group_id, int64_t now_ms);

/* Deletes the group and its memberships. */
gim_err group_delete(struct store_conn *db, int64_t group_id);

/* Adds user_id with role unless already a member (*added says which). */
gim_err group_member_add(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role role, int64_t now_ms, bool *added);

/* Removes user_id if a member (*removed says whether it was). */
gim_err group_member_remove(struct store_conn *db, int64_t group_id, int64_t user_id,
                            bool *removed);

/* Sets a member's role; GROUP_OWNER also makes it chat_group.owner_id. */
gim_err group_member_set_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                              enum group_role role);

/* The number of members of group_id. */
gim_err group_member_count(struct store_conn *db, int64_t group_id, int64_t *n);

/*
 * Command{code, GroupNotice{group_id, user_ids, group, role}} encoded into a
 * malloc'ed *buf the caller frees. g may be NULL (a dissolve).
 */
gim_err group_notice_content(enum group_notice_code code, int64_t group_id, const int64_t *user_ids,
                             size_t n, const Pb__GroupInfo *g, enum group_role role, uint8_t **buf,
                             size_t *len);

#endif
