/*
 * The group operations on PostgreSQL (storage.h, "group"): several
 * instances on one database. The code that was in group.c, fanout.c,
 * operator.c and handle_admin_group.c, moved as it was.
 *
 * The same rows as SQLite's, $n parameters. Text columns come back in
 * binary form, which is the bytes without a NUL (pg_text copies them). The
 * next group id is taken from group_id_high's one row, whose row lock
 * serializes creates across instances until the commit, so ids never
 * repeat. A group's row is locked FOR SHARE by sends and FOR UPDATE by
 * changes (group.h); seqs are row locks taken in ascending user id order;
 * the push targets are read from the device table in the writing
 * transaction, since devices may be signed in at any instance; operator
 * idempotency claims the key first.
 */
#include <stdlib.h>
#include <string.h>

#include "fanout.h"
#include "message.h"
#include "pgstore.h"
#include "room.h"
#include "seq.h"
#include "storage.h"
#include "storage/pg_int.h"

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
static const char PG_MEMBER[] =
    "SELECT role, joined_at FROM group_member WHERE group_id = $1 AND user_id = $2";
static const char PG_PAGE[] =
    "SELECT user_id, role, joined_at FROM group_member WHERE group_id = $1 AND user_id > $2 "
    "ORDER BY user_id LIMIT $3";
static const char PG_EXISTS[] = "SELECT 1 FROM chat_group WHERE group_id = $1";
/* The group's row, locked: FOR SHARE by sends, FOR UPDATE by membership changes. */
static const char PG_LOCK_SHARE[] = "SELECT 1 FROM chat_group WHERE group_id = $1 FOR SHARE";
static const char PG_LOCK_UPDATE[] = "SELECT 1 FROM chat_group WHERE group_id = $1 FOR UPDATE";
/*
 * A batch's groups, locked in ascending id order: the ORDER BY is applied
 * before the locking clause (PostgreSQL's SELECT reference, "The Locking
 * Clause"), so the rows are locked as they come out of the sort.
 */
static const char PG_LOCK_MANY[] =
    "SELECT 1 FROM chat_group WHERE group_id = ANY($1::text::bigint[]) ORDER BY group_id "
    "FOR UPDATE";
/*
 * A group's copies in a constant number of statements whatever its size (a
 * round trip per member and row would be thousands): the seqs in one
 * (seq_next_users: row locks in ascending id order), the message row, then
 * every inbox and group_copy row in one, the ids and seqs sent as two array
 * parameters.
 */
static const char PG_GROUP_COPIES[] =
    "WITH c AS (SELECT u, s FROM unnest($2::text::bigint[], $3::text::bigint[]) AS t (u, s)), "
    "i AS (INSERT INTO inbox (user_id, seq, message_id) SELECT u, s, $1 FROM c) "
    "INSERT INTO group_copy (message_id, user_id, seq) SELECT $1, u, s FROM c";
/*
 * The push targets: the online devices in the device table, whichever
 * instance they signed in at, read in the writing transaction: a group
 * copy's from the group_copy rows just written (one query for the whole
 * group), a user copy's by its user. Sorted by user for fanout_targets_of().
 */
static const char PG_GROUP_TARGETS[] =
    "SELECT d.device_id, d.user_id, d.gateway_id, d.room_id FROM group_copy c "
    "JOIN device d ON d.user_id = c.user_id WHERE c.message_id = $1 AND d.online = 1 "
    "ORDER BY d.user_id";
static const char PG_USER_TARGETS[] = "SELECT device_id, user_id, gateway_id, room_id FROM device "
                                      "WHERE online = 1 AND user_id = $1";
/*
 * Operator idempotency, the key claimed first, with a row of this request
 * and no reply. The same retry reaching two instances at once inserts the
 * same key twice: the second insert waits on the first's uncommitted row
 * until it commits, then finds it (claimed 0) and reads it, so the retry
 * applies once and answers from the record; had the first rolled back, the
 * second claims the key itself. A failed request's savepoint takes its
 * claim back with its change.
 */
static const char PG_IDEM_CLAIM[] =
    "INSERT INTO operator_idempotency (idem_key, type, request, reply, created_at) "
    "VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (idem_key) DO NOTHING";
static const char PG_IDEM_GET[] = "SELECT type, request, reply, created_at FROM "
                                  "operator_idempotency WHERE idem_key = $1 FOR UPDATE";
/* An expired record is taken over by the request running again. */
static const char PG_IDEM_TAKE[] =
    "UPDATE operator_idempotency SET type = $2, request = $3, reply = NULL, created_at = $4 "
    "WHERE idem_key = $1";
static const char PG_IDEM_SET[] = "UPDATE operator_idempotency SET reply = $2 WHERE idem_key = $1";

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

/* --- reads --------------------------------------------------------------- */

static gim_err role(struct store_conn *db, int64_t group_id, int64_t user_id, enum group_role *role)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_ROLE, &res, NULL, STORE_INT(group_id), STORE_INT(user_id));
    *role = e == GIM_OK && PQntuples(res) > 0 ? pg_role(res, 0, 0) : GROUP_NONE;
    PQclear(res);
    return e;
}

static gim_err exists(struct store_conn *db, int64_t group_id, enum group_lock lock, bool *exists)
{
    *exists = false;
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
 * The group's row share-locked first: a membership change on another
 * instance waits for this send (or this send for it), so the members the
 * send reads next are the members.
 */
static gim_err send_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                         enum group_role *r, bool *ok, const char **what)
{
    gim_err e = exists(db, group_id, GROUP_LOCK_SHARE, ok);
    *r = GROUP_NONE;
    if (e != GIM_OK) {
        *what = "group";
        return e;
    }
    if (!*ok)
        return GIM_OK;
    if ((e = role(db, group_id, user_id, r)) != GIM_OK) {
        *what = "membership";
        *r = GROUP_NONE;
    }
    return e;
}

static gim_err lock_batch(struct store_conn *db, const int64_t *ids, size_t n)
{
    if (n == 0)
        return GIM_OK;
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i])
            return GIM_EINTERNAL; /* the contract: ascending, distinct */
    char *arr = NULL;
    gim_err e = pg_array_literal(ids, n, &arr);
    if (e == GIM_OK)
        e = PG_RUN(db, PG_LOCK_MANY, NULL, NULL, STORE_TEXT(arr));
    free(arr);
    return e;
}

static gim_err members(struct store_conn *db, int64_t group_id, int64_t **ids, size_t *n)
{
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

static gim_err member_count(struct store_conn *db, int64_t group_id, int64_t *n)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_MEMBER_COUNT, &res, NULL, STORE_INT(group_id));
    *n = e == GIM_OK && PQntuples(res) > 0 ? pgstore_int(res, 0, 0) : 0;
    PQclear(res);
    return e;
}

static gim_err member_get(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role *role, int64_t *joined_at)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(db, PG_MEMBER, &res, NULL, STORE_INT(group_id), STORE_INT(user_id));
    if (e == GIM_OK && PQntuples(res) == 0)
        e = GIM_ENOTFOUND;
    if (e == GIM_OK) {
        *role = pg_role(res, 0, 0);
        *joined_at = pgstore_int(res, 0, 1);
    }
    PQclear(res);
    return e;
}

static gim_err member_page(struct store_conn *db, int64_t group_id, int64_t after_user_id,
                           size_t max, struct group_member *rows, size_t *n)
{
    PGresult *res = NULL;
    *n = 0;
    gim_err e = PG_RUN(db, PG_PAGE, &res, NULL, STORE_INT(group_id), STORE_INT(after_user_id),
                       STORE_INT((int64_t)max));
    for (int i = 0; e == GIM_OK && i < PQntuples(res) && *n < max; i++, (*n)++) {
        rows[*n].user_id = pgstore_int(res, i, 0);
        rows[*n].role = pg_role(res, i, 1);
        rows[*n].joined_at = pgstore_int(res, i, 2);
    }
    PQclear(res);
    return e;
}

static gim_err info_load(struct store_conn *db, int64_t group_id, struct group_info *g)
{
    memset(g, 0, sizeof *g);
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

/* --- writes -------------------------------------------------------------- */

static gim_err member_add(struct store_conn *db, int64_t group_id, int64_t user_id,
                          enum group_role role, int64_t now_ms, bool *added)
{
    int changes = 0;
    gim_err e = PG_RUN(db, PG_MEMBER_ADD, NULL, &changes, STORE_INT(group_id), STORE_INT(user_id),
                       STORE_TEXT(group_role_name(role)), STORE_INT(now_ms));
    *added = e == GIM_OK && changes > 0;
    return e;
}

static gim_err next_id(struct store_conn *db, int64_t *out)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN0(db, PG_NEXT_ID, &res, NULL);
    if (e == GIM_OK)
        *out = PQntuples(res) == 1 ? pgstore_int(res, 0, 0) : 0;
    PQclear(res);
    return e != GIM_OK ? e : *out > 0 ? GIM_OK : GIM_EINTERNAL;
}

static gim_err create(struct store_conn *db, const char *name, const char *avatar_url,
                      const char *extra, int64_t owner_id, int64_t now_ms, int64_t *group_id)
{
    int64_t id = 0;
    gim_err e = next_id(db, &id);
    if (e != GIM_OK)
        return e;
    e = PG_RUN(db, PG_INSERT, NULL, NULL, STORE_INT(id), STORE_TEXT(name), STORE_TEXT(avatar_url),
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
    return PG_RUN(db, PG_UPDATE, NULL, NULL, STORE_INT(group_id), STORE_TEXT(name),
                  STORE_TEXT(avatar_url), STORE_TEXT(extra), STORE_INT(now_ms));
}

static gim_err touch(struct store_conn *db, int64_t group_id, int64_t now_ms)
{
    return PG_RUN(db, PG_TOUCH, NULL, NULL, STORE_INT(group_id), STORE_INT(now_ms));
}

static gim_err dissolve(struct store_conn *db, int64_t group_id)
{
    return PG_RUN(db, PG_DELETE, NULL, NULL, STORE_INT(group_id));
}

static gim_err member_remove(struct store_conn *db, int64_t group_id, int64_t user_id,
                             bool *removed)
{
    int changes = 0;
    gim_err e =
        PG_RUN(db, PG_MEMBER_REMOVE, NULL, &changes, STORE_INT(group_id), STORE_INT(user_id));
    *removed = e == GIM_OK && changes > 0;
    return e;
}

static gim_err member_set_role(struct store_conn *db, int64_t group_id, int64_t user_id,
                               enum group_role role)
{
    gim_err e = PG_RUN(db, PG_MEMBER_ROLE, NULL, NULL, STORE_INT(group_id), STORE_INT(user_id),
                       STORE_TEXT(group_role_name(role)));
    if (e != GIM_OK || role != GROUP_OWNER)
        return e;
    return PG_RUN(db, PG_SET_OWNER, NULL, NULL, STORE_INT(group_id), STORE_INT(user_id));
}

/* --- fan-out ------------------------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static gim_err copy_rows(struct wctx *w, struct message_new *m, const int64_t *ids, size_t n,
                         int64_t me, struct fanout_copy *to, int64_t *id)
{
    int64_t *seqs = malloc(n * sizeof *seqs);
    char *arr_ids = NULL, *arr_seqs = NULL;
    int changes = 0;
    gim_err e = seqs ? seq_next_users(w->seq, w->db, ids, n, seqs) : GIM_ENOMEM;
    if (e != GIM_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        to[i] = (struct fanout_copy){ids[i], seqs[i]};
        if (ids[i] == me)
            m->sender_seq = seqs[i];
    }
    if ((e = message_insert(w->db, m, id)) != GIM_OK ||
        (e = pg_array_literal(ids, n, &arr_ids)) != GIM_OK ||
        (e = pg_array_literal(seqs, n, &arr_seqs)) != GIM_OK)
        goto out;
    e = PG_RUN(w->db, PG_GROUP_COPIES, NULL, &changes, STORE_INT(*id), STORE_TEXT(arr_ids),
               STORE_TEXT(arr_seqs));
    if (e == GIM_OK && (size_t)changes != n)
        e = GIM_EINTERNAL;
out:
    free(seqs);
    free(arr_ids);
    free(arr_seqs);
    return e;
}

/* Each member's seq row is locked: always in ascending id order (no deadlock). */
static gim_err copy_group(struct wctx *w, struct message_new *m, const int64_t *ids, size_t n,
                          int64_t me, struct fanout_copy *to, int64_t *id)
{
    int64_t *sorted = NULL;
    for (size_t i = 1; i < n; i++)
        if (ids[i - 1] >= ids[i]) {
            if (!(sorted = malloc(n * sizeof *sorted)))
                return GIM_ENOMEM;
            memcpy(sorted, ids, n * sizeof *sorted);
            qsort(sorted, n, sizeof *sorted, cmp_id);
            ids = sorted;
            break;
        }
    gim_err e = copy_rows(w, m, ids, n, me, to, id);
    free(sorted);
    return e;
}

static int cmp_pos(const void *a, const void *b, void *ids)
{
    int64_t x = ((const int64_t *)ids)[*(const size_t *)a];
    int64_t y = ((const int64_t *)ids)[*(const size_t *)b];
    return (x > y) - (x < y);
}

/* Ascending user ids, like every multi-user write here. */
static void user_order(const int64_t *ids, size_t n, size_t *pos)
{
    for (size_t i = 0; i < n; i++)
        pos[i] = i;
    qsort_r(pos, n, sizeof *pos, cmp_pos, (void *)ids);
}

/* Appends the sessions of res (device_id, user_id, gateway_id, room_id) to f->targets. */
static gim_err targets_add(struct fanout *f, const PGresult *res)
{
    size_t n = (size_t)PQntuples(res);
    f->targets_known = true;
    if (f->n_targets + n > f->cap_targets) {
        size_t cap = f->cap_targets ? f->cap_targets : 16;
        while (cap < f->n_targets + n)
            cap *= 2;
        struct session *grown = realloc(f->targets, cap * sizeof *grown);
        if (!grown)
            return GIM_ENOMEM;
        f->targets = grown;
        f->cap_targets = cap;
    }
    for (size_t i = 0; i < n; i++)
        pg_session(&f->targets[f->n_targets++], res, (int)i, 0);
    return GIM_OK;
}

static gim_err targets_of(struct wctx *w, struct fanout *f, const char *sql, int64_t id)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, sql, &res, NULL, STORE_INT(id));
    if (e == GIM_OK)
        e = targets_add(f, res);
    PQclear(res);
    return e;
}

static gim_err targets_group(struct wctx *w, struct fanout *f)
{
    return targets_of(w, f, PG_GROUP_TARGETS, f->message_id);
}

static gim_err targets_user(struct wctx *w, struct fanout *f, int64_t user_id)
{
    return targets_of(w, f, PG_USER_TARGETS, user_id);
}

/* The room's subscribers, as a client's room send reads them (room_subscribers). */
static gim_err targets_room(struct wctx *w, struct fanout *f)
{
    free(f->targets);
    f->targets = NULL;
    f->cap_targets = f->n_targets = 0;
    gim_err e = room_subscribers(w->db, f->msg.receiver_id, &f->targets, &f->n_targets);
    if (e != GIM_OK)
        return e;
    f->cap_targets = f->n_targets;
    f->targets_known = true;
    return GIM_OK;
}

/* --- operator idempotency ------------------------------------------------ */

static gim_err op_idem_claim(struct wctx *w, const char *key, int type, const uint8_t *body,
                             size_t body_len, int64_t expired_before, enum storage_op_idem *found,
                             uint8_t **reply, size_t *reply_len)
{
    PGresult *res = NULL;
    int claimed = 0;
    const struct store_val b = STORE_BLOB(body_len ? (const void *)body : "", body_len);
    *found = STORAGE_OP_IDEM_NEW;
    *reply = NULL;
    *reply_len = 0;
    gim_err e = PG_RUN(w->db, PG_IDEM_CLAIM, NULL, &claimed, STORE_TEXT(key), STORE_INT(type), b,
                       STORE_INT(w->now_ms));
    if (e != GIM_OK || claimed)
        return e; /* claimed: new, the request runs */
    e = PG_RUN(w->db, PG_IDEM_GET, &res, NULL, STORE_TEXT(key));
    if (e == GIM_OK && PQntuples(res) != 1)
        e = GIM_EINTERNAL;
    if (e != GIM_OK)
        goto out;
    size_t stored_len = 0, len = 0;
    const uint8_t *stored = pgstore_blob(res, 0, 1, &stored_len);
    const uint8_t *stored_reply = pgstore_blob(res, 0, 2, &len);
    if (pgstore_int(res, 0, 3) < expired_before) {
        /* expired: the request runs again, its record replaces this one */
        e = PG_RUN(w->db, PG_IDEM_TAKE, NULL, NULL, STORE_TEXT(key), STORE_INT(type), b,
                   STORE_INT(w->now_ms));
        goto out;
    }
    if (pgstore_int(res, 0, 0) != type || stored_len != body_len ||
        (stored_len > 0 && memcmp(stored, body, stored_len) != 0)) {
        *found = STORAGE_OP_IDEM_OTHER;
        goto out;
    }
    *found = STORAGE_OP_IDEM_REPLAY;
    if (pgstore_null(res, 0, 2))
        goto out;
    if (!(*reply = malloc(len ? len : 1))) {
        e = GIM_ENOMEM;
        goto out;
    }
    if (len)
        memcpy(*reply, stored_reply, len);
    *reply_len = len;
out:
    PQclear(res);
    return e;
}

/* The claim made the row: the reply completes it. */
static gim_err op_idem_put(struct wctx *w, const char *key, int type, const uint8_t *body,
                           size_t body_len, const uint8_t *reply, size_t reply_len)
{
    (void)type;
    (void)body;
    (void)body_len;
    return PG_RUN(w->db, PG_IDEM_SET, NULL, NULL, STORE_TEXT(key),
                  reply ? STORE_BLOB(reply_len ? (const void *)reply : "", reply_len) : STORE_NULL);
}

const struct storage_group_ops storage_pg_group = {
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
    .targets_group = targets_group,
    .targets_user = targets_user,
    .targets_room = targets_room,
    .op_idem_claim = op_idem_claim,
    .op_idem_put = op_idem_put,
};
