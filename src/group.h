/*
 * group: group membership as the request path needs it.
 *
 * Membership is read from the database on every request (inside the
 * writer's transaction for sends and recalls), never cached, so changes made
 * with gimctl or the sqlite3 CLI take effect on the next request.
 */
#ifndef GIM_GROUP_H
#define GIM_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

enum group_role { GROUP_NONE = 0, GROUP_MEMBER = 1, GROUP_ADMIN = 2, GROUP_OWNER = 3 };

/* The role of user_id in group_id (GROUP_NONE when not a member or no such group). */
gim_err group_role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role);

/*
 * The member ids of group_id in ascending order, into a malloc'ed array the
 * caller frees (*ids is NULL when there are none).
 */
gim_err group_members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n);

/* Parses 'owner'/'admin'/'member'; GROUP_NONE for anything else. */
enum group_role group_role_parse(const char *s);

#endif
