/*
 * The business API's group requests (docs/protocol.md, "The business API"):
 *   PT_ADMIN_GROUP_CREATE, _UPDATE, _DISSOLVE, _ADD_MEMBERS,
 *   _REMOVE_MEMBERS, _SET_ROLE (writes) and _GET, _MEMBERS (reads).
 *
 * Every one is an operator request (operator.h): the token is checked in
 * prepare(), before anything is written, and so is everything that needs no
 * database (sizes, ids, roles), so bad input is refused without a write.
 * The writes run in the writer's transaction under the job's savepoint: the
 * change, the group notice in every member's inbox (group.h, fanout.h) and
 * the idempotency record (operator_idem_*) land together or not at all, and
 * the reply leaves after the commit, with the notice pushes (committed()).
 * A retry with the same key is answered from the record and pushes
 * nothing. The reads run on the worker's read-only connection.
 *
 * Ownership: r->scratch is a struct group_job (writes) freed by cleanup();
 * its notice's content is owned by the job.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fanout.h"
#include "group.h"
#include "handlers.h"
#include "log.h"
#include "operator.h"
#include "request.h"
#include "storage.h"

/* Bounds of the group's own fields, in bytes. */
#define NAME_MAX_BYTES   256
#define AVATAR_MAX_BYTES 2048
#define EXTRA_MAX_BYTES  4096
/* PT_ADMIN_GROUP_MEMBERS page sizes. */
#define PAGE_DEFAULT 100
#define PAGE_MAX     1000

struct group_job {
    struct operator_idem idem;
    int64_t *ids; /* the input's user ids, sorted and distinct (owned) */
    size_t n_ids;
    struct fanout notice; /* written by write(), pushed by committed() */
    uint8_t *content;     /* the notice's encoded Command (owned) */
    bool notify;
};

static struct group_job *job_new(struct request *r)
{
    struct group_job *j = calloc(1, sizeof *j);
    if (!j) {
        request_fail(r, GIM_ENOMEM, "out of memory");
        return NULL;
    }
    fanout_init(&j->notice);
    r->scratch = j;
    return j;
}

static void job_cleanup(struct request *r)
{
    struct group_job *j = r->scratch;
    if (!j)
        return;
    operator_idem_free(&j->idem);
    fanout_free(&j->notice);
    free(j->content);
    free(j->ids);
    free(j);
    r->scratch = NULL;
}

/*
 * At the start of every write: a retried batch (PostgreSQL: a deadlock or a
 * serialization failure rolls the whole batch back) runs it again from here.
 */
static void job_restart(struct group_job *j)
{
    fanout_restart(&j->notice);
    free(j->content);
    j->content = NULL;
    j->notify = false;
}

static void job_committed(struct request *r, struct wctx *w)
{
    struct group_job *j = r->scratch;
    if (j && j->notify && !j->idem.replayed)
        fanout_push(w, &j->notice);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Copies ids[0..n) sorted and without repeats into j; each must be > 0. */
static gim_err take_ids(struct request *r, struct group_job *j, const int64_t *ids, size_t n,
                        const char *what, const char *field)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] <= 0)
            return request_fail(r, GIM_EBADREQ, "%s: %s[%zu] must be > 0, got %" PRId64, what,
                                field, i, ids[i]);
    if (n == 0)
        return GIM_OK;
    if (!(j->ids = malloc(n * sizeof *j->ids)))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    memcpy(j->ids, ids, n * sizeof *j->ids);
    qsort(j->ids, n, sizeof *j->ids, cmp_id);
    size_t out = 0;
    for (size_t i = 0; i < n; i++)
        if (out == 0 || j->ids[out - 1] != j->ids[i])
            j->ids[out++] = j->ids[i];
    j->n_ids = out;
    return GIM_OK;
}

static gim_err check_len(struct request *r, const char *what, const char *field, const char *s,
                         size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return request_fail(r, GIM_ETOOLARGE, "%s: %s is %zu bytes, the limit is %zu", what, field,
                            n, max);
    return GIM_OK;
}

static gim_err check_fields(struct request *r, const char *what, const char *name,
                            const char *avatar_url, const char *extra)
{
    gim_err e;
    if ((e = check_len(r, what, "name", name, NAME_MAX_BYTES)) != GIM_OK ||
        (e = check_len(r, what, "avatar_url", avatar_url, AVATAR_MAX_BYTES)) != GIM_OK ||
        (e = check_len(r, what, "extra", extra, EXTRA_MAX_BYTES)) != GIM_OK)
        return e;
    return GIM_OK;
}

static gim_err failed(struct request *r, struct wctx *w, gim_err e, const char *what,
                      const char *step)
{
    if (e == GIM_ENOMEM)
        return request_fail(r, e, "out of memory");
    log_warn("operator request failed", "request=%s step=%s code=%s error=\"%s\"", what, step,
             gim_err_name(e), store_errmsg(w->db));
    return request_fail(
        r, e == GIM_EUNAVAILABLE ? e : GIM_EINTERNAL, "%s: %s (%s)", what,
        e == GIM_EUNAVAILABLE ? "database unavailable, retry later" : "storage error", step);
}

/*
 * GIM_OK when group_id exists; GIM_ENOTFOUND (r failed) when not. In the
 * writer (w set) the group's row stays locked until the commit on
 * PostgreSQL (group.h, GROUP_LOCK_UPDATE): the change and its notice are
 * made against the members as they are, whatever another instance does.
 */
static gim_err must_exist(struct request *r, struct store_conn *db, struct wctx *w,
                          int64_t group_id, const char *what)
{
    bool exists = false;
    enum group_lock lock = GROUP_LOCK_NONE;
    if (w)
        lock = GROUP_LOCK_UPDATE;
    gim_err e = group_exists(db, group_id, lock, &exists);
    if (e == GIM_OK && exists)
        return GIM_OK;
    if (e == GIM_OK)
        return request_fail(r, GIM_ENOTFOUND, "%s: no group %" PRId64, what, group_id);
    return w ? failed(r, w, e, what, "group") : request_fail(r, e, "%s: storage error", what);
}

/*
 * Every write starts here: forgets what an earlier run of the job wrote (a
 * retried batch runs it again), asks the idempotency record (GIM_OK with
 * j->idem.replayed set: answered from it, nothing else runs) and, for a
 * group_id other than 0, checks and locks the group (must_exist).
 */
static gim_err write_begin(struct request *r, struct wctx *w, struct group_job *j, int64_t group_id,
                           const char *what)
{
    job_restart(j);
    gim_err e = operator_idem_replay(r, w, &j->idem, what);
    if (e != GIM_OK || j->idem.replayed || group_id == 0)
        return e;
    return must_exist(r, w->db, w, group_id, what);
}

/*
 * Writes the notice (code, about user_ids) into the inbox of every member
 * of group_id now, and of extra[0..n_extra) (removed members, or the members
 * of a group about to be dissolved), all distinct. g: the group after the
 * change (NULL for a dissolve).
 */
static gim_err notify(struct request *r, struct wctx *w, struct group_job *j, const char *what,
                      enum group_notice_code code, int64_t group_id, const int64_t *user_ids,
                      size_t n_user_ids, const Pb__GroupInfo *g, enum group_role role,
                      const int64_t *extra, size_t n_extra)
{
    int64_t *members = NULL;
    size_t n = 0, len = 0;
    gim_err e = group_members(w->db, group_id, &members, &n);
    if (e != GIM_OK)
        return failed(r, w, e, what, "members");
    if ((e = group_notice_content(code, group_id, user_ids, n_user_ids, g, role, &j->content,
                                  &len)) != GIM_OK) {
        e = failed(r, w, e, what, "notice");
        goto out;
    }
    j->notice.sender.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
    j->notice.msg.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
    j->notice.msg.receiver_id = group_id;
    j->notice.msg.message_type = PB__MESSAGE_TYPE__MT_COMMAND;
    j->notice.msg.message_content.data = j->content;
    j->notice.msg.message_content.len = len;
    j->notice.msg.send_time = w->now_ms;
    if (n_extra > 0) {
        int64_t *all = realloc(members, (n + n_extra) * sizeof *all);
        if (!all) {
            e = failed(r, w, GIM_ENOMEM, what, "notice");
            goto out;
        }
        members = all;
        memcpy(members + n, extra, n_extra * sizeof *extra);
        n += n_extra;
        /* Ascending, as fanout_group() wants it (PostgreSQL locks the seqs in this order). */
        qsort(members, n, sizeof *members, cmp_id);
    }
    if (n > 0 && (e = fanout_group(w, &j->notice, members, n)) != GIM_OK) {
        e = failed(r, w, e, what, "notice");
        goto out;
    }
    j->notify = n > 0;
out:
    free(members);
    return e;
}

/* Sets the reply to the group as it is now; *info keeps what the reply points at. */
static gim_err reply_group(struct request *r, struct wctx *w, int64_t group_id,
                           struct group_info *info, Pb__GroupInfo *pb, const char *what)
{
    gim_err e = group_info_load(w->db, group_id, info);
    if (e != GIM_OK)
        return failed(r, w, e, what, "group");
    group_info_pb(info, pb);
    return request_set_reply(r, &pb->base);
}

/*
 * The start of a prepare() whose input names a group: operator_decode()
 * of d (the token checked), then the input's group_id must be > 0.
 */
static gim_err decode_group(struct request *r, const ProtobufCMessageDescriptor *d,
                            const char *what)
{
    gim_err e = operator_decode(r, d, what);
    if (e != GIM_OK)
        return e;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, "group_id");
    if (!f || f->type != PROTOBUF_C_TYPE_INT64)
        return request_fail(r, GIM_EINTERNAL, "%s: the input has no group_id", what);
    if (*(const int64_t *)((const char *)r->in + f->offset) <= 0)
        return request_fail(r, GIM_EBADREQ, "%s: group_id must be > 0", what);
    return GIM_OK;
}

/* --- create -------------------------------------------------------------- */

static gim_err create_prepare(struct request *r)
{
    const char *what = "group create";
    gim_err e = operator_decode(r, &pb__admin_group_create_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminGroupCreateInput *in = (Pb__AdminGroupCreateInput *)r->in;
    if (in->owner_id <= 0)
        return request_fail(r, GIM_EBADREQ, "%s: owner_id must be > 0", what);
    if ((e = check_fields(r, what, in->name, in->avatar_url, in->extra)) != GIM_OK)
        return e;
    uint32_t max = r->cfg->limits.max_group_members;
    if (in->n_member_ids > max)
        return request_fail(r, GIM_ETOOLARGE,
                            "%s: %zu member_ids, over limits.max_group_members (%" PRIu32 ")", what,
                            in->n_member_ids, max);
    struct group_job *j = job_new(r);
    if (!j)
        return GIM_ENOMEM;
    if ((e = take_ids(r, j, in->member_ids, in->n_member_ids, what, "member_ids")) != GIM_OK)
        return e;
    bool owner_listed =
        j->n_ids > 0 && bsearch(&in->owner_id, j->ids, j->n_ids, sizeof *j->ids, cmp_id);
    size_t total = j->n_ids + (owner_listed ? 0 : 1);
    if (total > max)
        return request_fail(r, GIM_ETOOLARGE,
                            "%s: the group would have %zu members, over limits.max_group_members "
                            "(%" PRIu32 ")",
                            what, total, max);
    return operator_idem_init(r, &j->idem, r->in, &in->token, &in->idempotency_key, what);
}

static gim_err create_write(struct request *r, struct wctx *w)
{
    const char *what = "group create";
    const Pb__AdminGroupCreateInput *in = (const Pb__AdminGroupCreateInput *)r->in;
    struct group_job *j = r->scratch;
    struct group_info info = {0};
    Pb__GroupInfo pb;
    int64_t gid = 0;
    bool added;
    gim_err e = write_begin(r, w, j, 0, what);
    if (e != GIM_OK || j->idem.replayed)
        return e;
    if ((e = group_create(w->db, in->name, in->avatar_url, in->extra, in->owner_id, w->now_ms,
                          &gid)) != GIM_OK)
        return failed(r, w, e, what, "group");
    for (size_t i = 0; i < j->n_ids; i++)
        if ((e = group_member_add(w->db, gid, j->ids[i], GROUP_MEMBER, w->now_ms, &added)) !=
            GIM_OK)
            return failed(r, w, e, what, "member");
    if ((e = reply_group(r, w, gid, &info, &pb, what)) != GIM_OK)
        goto out;
    /* Everyone in it was added: the notice names them all, the owner included. */
    int64_t *all = NULL;
    size_t n_all = 0;
    if ((e = group_members(w->db, gid, &all, &n_all)) != GIM_OK) {
        e = failed(r, w, e, what, "members");
        goto out;
    }
    e = notify(r, w, j, what, GROUP_NOTICE_ADDED, gid, all, n_all, &pb, GROUP_NONE, NULL, 0);
    free(all);
    if (e == GIM_OK)
        e = operator_idem_remember(r, w, &j->idem, what);
    if (e == GIM_OK)
        log_info("group created", "group=%" PRId64 " owner=%" PRId64 " members=%" PRId64, gid,
                 in->owner_id, info.member_count);
out:
    group_info_free(&info);
    return e;
}

/* --- update -------------------------------------------------------------- */

static gim_err update_prepare(struct request *r)
{
    const char *what = "group update";
    gim_err e = decode_group(r, &pb__admin_group_update_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminGroupUpdateInput *in = (Pb__AdminGroupUpdateInput *)r->in;
    if (in->n_fields == 0)
        return request_fail(r, GIM_EBADREQ,
                            "%s: fields is empty: name what changes (name, avatar_url, extra)",
                            what);
    for (size_t i = 0; i < in->n_fields; i++)
        if (strcmp(in->fields[i], "name") != 0 && strcmp(in->fields[i], "avatar_url") != 0 &&
            strcmp(in->fields[i], "extra") != 0)
            return request_fail(r, GIM_EBADREQ,
                                "%s: unknown field '%.40s' (name, avatar_url, extra)", what,
                                in->fields[i]);
    if ((e = check_fields(r, what, in->name, in->avatar_url, in->extra)) != GIM_OK)
        return e;
    struct group_job *j = job_new(r);
    if (!j)
        return GIM_ENOMEM;
    return operator_idem_init(r, &j->idem, r->in, &in->token, &in->idempotency_key, what);
}

static bool has_field(const Pb__AdminGroupUpdateInput *in, const char *name)
{
    for (size_t i = 0; i < in->n_fields; i++)
        if (strcmp(in->fields[i], name) == 0)
            return true;
    return false;
}

static gim_err update_write(struct request *r, struct wctx *w)
{
    const char *what = "group update";
    const Pb__AdminGroupUpdateInput *in = (const Pb__AdminGroupUpdateInput *)r->in;
    struct group_job *j = r->scratch;
    struct group_info info = {0};
    Pb__GroupInfo pb;
    gim_err e = write_begin(r, w, j, in->group_id, what);
    if (e != GIM_OK || j->idem.replayed)
        return e;
    if ((e = group_update(w->db, in->group_id, has_field(in, "name") ? in->name : NULL,
                          has_field(in, "avatar_url") ? in->avatar_url : NULL,
                          has_field(in, "extra") ? in->extra : NULL, w->now_ms)) != GIM_OK)
        return failed(r, w, e, what, "group");
    if ((e = reply_group(r, w, in->group_id, &info, &pb, what)) == GIM_OK &&
        (e = notify(r, w, j, what, GROUP_NOTICE_UPDATED, in->group_id, NULL, 0, &pb, GROUP_NONE,
                    NULL, 0)) == GIM_OK)
        e = operator_idem_remember(r, w, &j->idem, what);
    group_info_free(&info);
    return e;
}

/* --- dissolve and get ---------------------------------------------------- */

static gim_err group_input_prepare(struct request *r, const char *what, bool write)
{
    gim_err e = decode_group(r, &pb__admin_group_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminGroupInput *in = (Pb__AdminGroupInput *)r->in;
    if (!write)
        return GIM_OK;
    struct group_job *j = job_new(r);
    if (!j)
        return GIM_ENOMEM;
    return operator_idem_init(r, &j->idem, r->in, &in->token, &in->idempotency_key, what);
}

static gim_err dissolve_prepare(struct request *r)
{
    return group_input_prepare(r, "group dissolve", true);
}

static gim_err dissolve_write(struct request *r, struct wctx *w)
{
    const char *what = "group dissolve";
    const Pb__AdminGroupInput *in = (const Pb__AdminGroupInput *)r->in;
    struct group_job *j = r->scratch;
    int64_t *members = NULL;
    size_t n = 0;
    gim_err e = write_begin(r, w, j, in->group_id, what);
    if (e != GIM_OK || j->idem.replayed)
        return e;
    /* The notice goes to the members the group had: read them before they go. */
    if ((e = group_members(w->db, in->group_id, &members, &n)) != GIM_OK)
        return failed(r, w, e, what, "members");
    if ((e = group_delete(w->db, in->group_id)) != GIM_OK) {
        e = failed(r, w, e, what, "group");
        goto out;
    }
    if ((e = notify(r, w, j, what, GROUP_NOTICE_DISSOLVED, in->group_id, NULL, 0, NULL, GROUP_NONE,
                    members, n)) == GIM_OK &&
        (e = operator_idem_remember(r, w, &j->idem, what)) == GIM_OK)
        log_info("group dissolved", "group=%" PRId64 " members=%zu", in->group_id, n);
out:
    free(members);
    return e;
}

static gim_err get_prepare(struct request *r)
{
    return group_input_prepare(r, "group get", false);
}

static gim_err get_read(struct request *r, struct store_conn *ro)
{
    const Pb__AdminGroupInput *in = (const Pb__AdminGroupInput *)r->in;
    struct group_info info = {0};
    Pb__GroupInfo pb;
    gim_err e = group_info_load(ro, in->group_id, &info);
    if (e == GIM_ENOTFOUND)
        return request_fail(r, e, "group get: no group %" PRId64, in->group_id);
    if (e != GIM_OK)
        return request_fail(r, e, "group get: %s",
                            e == GIM_ENOMEM ? "out of memory" : "storage error");
    group_info_pb(&info, &pb);
    e = request_set_reply(r, &pb.base);
    group_info_free(&info);
    return e;
}

/* --- add and remove members ---------------------------------------------- */

static gim_err members_prepare(struct request *r, const char *what, bool add)
{
    gim_err e = decode_group(r, &pb__admin_group_members_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminGroupMembersInput *in = (Pb__AdminGroupMembersInput *)r->in;
    if (in->n_user_ids == 0)
        return request_fail(r, GIM_EBADREQ, "%s: user_ids is empty", what);
    uint32_t max = r->cfg->limits.max_group_members;
    if (in->n_user_ids > max)
        return request_fail(r, GIM_ETOOLARGE,
                            "%s: %zu user_ids in one request, the limit is "
                            "limits.max_group_members (%" PRIu32 ")",
                            what, in->n_user_ids, max);
    if (add && in->role == PB__GROUP_ROLE__GR_OWNER)
        return request_fail(r, GIM_EBADREQ,
                            "%s: role GR_OWNER cannot be given on joining "
                            "(PT_ADMIN_GROUP_SET_ROLE transfers ownership)",
                            what);
    if (add && in->role != PB__GROUP_ROLE__GR_UNKNOWN && in->role != PB__GROUP_ROLE__GR_MEMBER &&
        in->role != PB__GROUP_ROLE__GR_ADMIN)
        return request_fail(r, GIM_EBADREQ, "%s: unknown role %d", what, (int)in->role);
    if (!add && in->role != PB__GROUP_ROLE__GR_UNKNOWN)
        return request_fail(r, GIM_EBADREQ, "%s: role means nothing here; leave it unset", what);
    struct group_job *j = job_new(r);
    if (!j)
        return GIM_ENOMEM;
    if ((e = take_ids(r, j, in->user_ids, in->n_user_ids, what, "user_ids")) != GIM_OK)
        return e;
    return operator_idem_init(r, &j->idem, r->in, &in->token, &in->idempotency_key, what);
}

static gim_err add_prepare(struct request *r)
{
    return members_prepare(r, "group add members", true);
}

static gim_err remove_prepare(struct request *r)
{
    return members_prepare(r, "group remove members", false);
}

/* Splits j->ids into changed/unchanged (both owned by the caller) as the write went. */
struct split {
    int64_t *changed, *unchanged;
    size_t n_changed, n_unchanged;
};

static gim_err members_write(struct request *r, struct wctx *w, bool add)
{
    const char *what = add ? "group add members" : "group remove members";
    const Pb__AdminGroupMembersInput *in = (const Pb__AdminGroupMembersInput *)r->in;
    struct group_job *j = r->scratch;
    struct split s = {0};
    struct group_info info = {0};
    Pb__GroupInfo pb;
    gim_err e = write_begin(r, w, j, in->group_id, what);
    if (e != GIM_OK || j->idem.replayed)
        return e;
    if (!(s.changed = malloc(j->n_ids * sizeof *s.changed)) ||
        !(s.unchanged = malloc(j->n_ids * sizeof *s.unchanged))) {
        e = failed(r, w, GIM_ENOMEM, what, "members");
        goto out;
    }
    enum group_role role =
        in->role == PB__GROUP_ROLE__GR_ADMIN ? GROUP_ADMIN : GROUP_MEMBER; /* prepare checked */
    for (size_t i = 0; i < j->n_ids; i++) {
        bool changed = false;
        if (!add) {
            enum group_role now = GROUP_NONE;
            if ((e = group_role(w->db, in->group_id, j->ids[i], &now)) != GIM_OK) {
                e = failed(r, w, e, what, "member");
                goto out;
            }
            if (now == GROUP_OWNER) {
                e = request_fail(r, GIM_EFORBIDDEN,
                                 "%s: user %" PRId64
                                 " is the owner and cannot be removed (give GR_OWNER to another "
                                 "member first, or dissolve the group); nothing changed",
                                 what, j->ids[i]);
                goto out;
            }
        }
        e = add ? group_member_add(w->db, in->group_id, j->ids[i], role, w->now_ms, &changed)
                : group_member_remove(w->db, in->group_id, j->ids[i], &changed);
        if (e != GIM_OK) {
            e = failed(r, w, e, what, "member");
            goto out;
        }
        if (changed)
            s.changed[s.n_changed++] = j->ids[i];
        else
            s.unchanged[s.n_unchanged++] = j->ids[i];
    }
    int64_t count = 0;
    if ((e = group_member_count(w->db, in->group_id, &count)) != GIM_OK) {
        e = failed(r, w, e, what, "members");
        goto out;
    }
    uint32_t max = w->cfg->limits.max_group_members;
    if (add && count > (int64_t)max) {
        e = request_fail(r, GIM_ETOOLARGE,
                         "%s: group %" PRId64 " would have %" PRId64
                         " members, over limits.max_group_members (%" PRIu32 "); nothing changed",
                         what, in->group_id, count, max);
        goto out;
    }
    if (s.n_changed > 0) {
        if ((e = group_touch(w->db, in->group_id, w->now_ms)) != GIM_OK) {
            e = failed(r, w, e, what, "group");
            goto out;
        }
        if ((e = group_info_load(w->db, in->group_id, &info)) != GIM_OK) {
            e = failed(r, w, e, what, "group");
            goto out;
        }
        group_info_pb(&info, &pb);
        /* The removed are no longer members: they get the notice as well. */
        if ((e = notify(r, w, j, what, add ? GROUP_NOTICE_ADDED : GROUP_NOTICE_REMOVED,
                        in->group_id, s.changed, s.n_changed, &pb, add ? role : GROUP_NONE,
                        add ? NULL : s.changed, add ? 0 : s.n_changed)) != GIM_OK)
            goto out;
    }
    Pb__AdminGroupMembersOutput out = PB__ADMIN_GROUP_MEMBERS_OUTPUT__INIT;
    out.changed = s.changed;
    out.n_changed = s.n_changed;
    out.unchanged = s.unchanged;
    out.n_unchanged = s.n_unchanged;
    out.member_count = count;
    if ((e = request_set_reply(r, &out.base)) == GIM_OK)
        e = operator_idem_remember(r, w, &j->idem, what);
out:
    group_info_free(&info);
    free(s.changed);
    free(s.unchanged);
    return e;
}

static gim_err add_write(struct request *r, struct wctx *w)
{
    return members_write(r, w, true);
}

static gim_err remove_write(struct request *r, struct wctx *w)
{
    return members_write(r, w, false);
}

/* --- set role ------------------------------------------------------------ */

static gim_err role_prepare(struct request *r)
{
    const char *what = "group set role";
    gim_err e = operator_decode(r, &pb__admin_group_role_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    Pb__AdminGroupRoleInput *in = (Pb__AdminGroupRoleInput *)r->in;
    if (in->group_id <= 0 || in->user_id <= 0)
        return request_fail(r, GIM_EBADREQ, "%s: group_id and user_id must be > 0", what);
    if (in->role != PB__GROUP_ROLE__GR_MEMBER && in->role != PB__GROUP_ROLE__GR_ADMIN &&
        in->role != PB__GROUP_ROLE__GR_OWNER)
        return request_fail(r, GIM_EBADREQ,
                            "%s: role must be GR_MEMBER, GR_ADMIN or GR_OWNER, got %d", what,
                            (int)in->role);
    struct group_job *j = job_new(r);
    if (!j)
        return GIM_ENOMEM;
    return operator_idem_init(r, &j->idem, r->in, &in->token, &in->idempotency_key, what);
}

static gim_err role_write(struct request *r, struct wctx *w)
{
    const char *what = "group set role";
    const Pb__AdminGroupRoleInput *in = (const Pb__AdminGroupRoleInput *)r->in;
    struct group_job *j = r->scratch;
    struct group_info info = {0};
    Pb__GroupInfo pb;
    enum group_role now = GROUP_NONE, want = (enum group_role)in->role;
    int64_t joined = 0;
    gim_err e = write_begin(r, w, j, in->group_id, what);
    if (e != GIM_OK || j->idem.replayed)
        return e;
    e = storage(w->db)->group->member_get(w->db, in->group_id, in->user_id, &now, &joined);
    if (e == GIM_ENOTFOUND)
        return request_fail(r, e, "%s: user %" PRId64 " is not a member of group %" PRId64, what,
                            in->user_id, in->group_id);
    if (e != GIM_OK)
        return failed(r, w, e, what, "member");
    if (now == GROUP_OWNER && want != GROUP_OWNER)
        return request_fail(r, GIM_EBADREQ,
                            "%s: user %" PRId64 " is the owner: give GR_OWNER to another member "
                            "instead (the owner then becomes GR_ADMIN)",
                            what, in->user_id);
    if (now != want) {
        int64_t old_owner = 0;
        if (want == GROUP_OWNER) {
            struct group_info before = {0};
            if ((e = group_info_load(w->db, in->group_id, &before)) != GIM_OK)
                return failed(r, w, e, what, "group");
            old_owner = before.owner_id;
            group_info_free(&before);
            if (old_owner != in->user_id &&
                (e = group_member_set_role(w->db, in->group_id, old_owner, GROUP_ADMIN)) != GIM_OK)
                return failed(r, w, e, what, "member");
        }
        if ((e = group_member_set_role(w->db, in->group_id, in->user_id, want)) != GIM_OK ||
            (e = group_touch(w->db, in->group_id, w->now_ms)) != GIM_OK)
            return failed(r, w, e, what, "member");
        if ((e = group_info_load(w->db, in->group_id, &info)) != GIM_OK)
            return failed(r, w, e, what, "group");
        group_info_pb(&info, &pb);
        int64_t who = in->user_id;
        e = notify(r, w, j, what, GROUP_NOTICE_ROLE, in->group_id, &who, 1, &pb, want, NULL, 0);
        group_info_free(&info);
        if (e != GIM_OK)
            return e;
    }
    Pb__GroupMember out = PB__GROUP_MEMBER__INIT;
    out.user_id = in->user_id;
    out.role = (Pb__GroupRole)want;
    out.joined_at = joined;
    if ((e = request_set_reply(r, &out.base)) != GIM_OK)
        return e;
    return operator_idem_remember(r, w, &j->idem, what);
}

/* --- members page -------------------------------------------------------- */

static gim_err list_prepare(struct request *r)
{
    const char *what = "group members";
    gim_err e = decode_group(r, &pb__admin_group_member_list_input__descriptor, what);
    if (e != GIM_OK)
        return e;
    const Pb__AdminGroupMemberListInput *in = (const Pb__AdminGroupMemberListInput *)r->in;
    if (in->after_user_id < 0)
        return request_fail(r, GIM_EBADREQ, "%s: after_user_id must be >= 0", what);
    if (in->limit < 0 || in->limit > PAGE_MAX)
        return request_fail(r, GIM_EBADREQ, "%s: limit must be 0 (the default, %d) to %d, got %d",
                            what, PAGE_DEFAULT, PAGE_MAX, (int)in->limit);
    return GIM_OK;
}

static gim_err list_read(struct request *r, struct store_conn *ro)
{
    const char *what = "group members";
    const Pb__AdminGroupMemberListInput *in = (const Pb__AdminGroupMemberListInput *)r->in;
    size_t limit = in->limit ? (size_t)in->limit : PAGE_DEFAULT, n = 0;
    struct group_member *rows = NULL;
    Pb__GroupMember *pbs = NULL, **ptrs = NULL;
    gim_err e = must_exist(r, ro, NULL, in->group_id, what);
    if (e != GIM_OK)
        return e;
    if (!(rows = calloc(limit + 1, sizeof *rows)) || !(pbs = calloc(limit + 1, sizeof *pbs)) ||
        !(ptrs = calloc(limit + 1, sizeof *ptrs))) {
        e = request_fail(r, GIM_ENOMEM, "out of memory");
        goto out;
    }
    /* limit + 1: the one more answers has_more. */
    e = storage(ro)->group->member_page(ro, in->group_id, in->after_user_id, limit + 1, rows, &n);
    if (e != GIM_OK) {
        e = request_fail(r, e, "%s: storage error", what);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        pb__group_member__init(&pbs[i]);
        pbs[i].user_id = rows[i].user_id;
        pbs[i].role = (Pb__GroupRole)rows[i].role;
        pbs[i].joined_at = rows[i].joined_at;
        ptrs[i] = &pbs[i];
    }
    Pb__AdminGroupMemberListOutput out = PB__ADMIN_GROUP_MEMBER_LIST_OUTPUT__INIT;
    out.has_more = n > limit;
    out.members = ptrs;
    out.n_members = n > limit ? limit : n;
    e = request_set_reply(r, &out.base);
out:
    free(rows);
    free(pbs);
    free(ptrs);
    return e;
}

/*
 * PostgreSQL: the rows a change of members will lock, for the writer's lock
 * of the whole batch (write_job.locks): the group's row, then the seq rows
 * of its notice's recipients, the members (read now without a lock) and the
 * users the request names (added, or removed).
 */
static gim_err members_locks(struct request *r, struct wctx *w, struct writer_locks *l)
{
    const Pb__AdminGroupMembersInput *in = (const Pb__AdminGroupMembersInput *)r->in;
    struct group_job *j = r->scratch;
    int64_t *ids = NULL;
    size_t n = 0;
    gim_err e = writer_lock_group(l, in->group_id);
    if (e == GIM_OK)
        e = group_members(w->db, in->group_id, &ids, &n);
    for (size_t i = 0; e == GIM_OK && i < n; i++)
        e = writer_lock_user(l, ids[i]);
    for (size_t i = 0; e == GIM_OK && i < j->n_ids; i++)
        e = writer_lock_user(l, j->ids[i]);
    free(ids);
    return e;
}

/* --- the handlers -------------------------------------------------------- */

#define GROUP_WRITE_LOCKS(var, t, n, p, wr, lk)                                                    \
    const struct handler var = {                                                                   \
        .type = t,                                                                                 \
        .name = n,                                                                                 \
        .needs_session = false,                                                                    \
        .prepare = p,                                                                              \
        .write = wr,                                                                               \
        .committed = job_committed,                                                                \
        .locks = lk,                                                                               \
        .cleanup = job_cleanup,                                                                    \
    }
#define GROUP_WRITE(var, t, n, p, wr) GROUP_WRITE_LOCKS(var, t, n, p, wr, NULL)

GROUP_WRITE(handle_admin_group_create, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE,
            "admin_group_create", create_prepare, create_write);
GROUP_WRITE(handle_admin_group_update, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE,
            "admin_group_update", update_prepare, update_write);
GROUP_WRITE(handle_admin_group_dissolve, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE,
            "admin_group_dissolve", dissolve_prepare, dissolve_write);
GROUP_WRITE_LOCKS(handle_admin_group_add, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS,
                  "admin_group_add_members", add_prepare, add_write, members_locks);
GROUP_WRITE_LOCKS(handle_admin_group_remove, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS,
                  "admin_group_remove_members", remove_prepare, remove_write, members_locks);
GROUP_WRITE(handle_admin_group_role, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE,
            "admin_group_set_role", role_prepare, role_write);

const struct handler handle_admin_group_get = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET,
    .name = "admin_group_get",
    .needs_session = false,
    .prepare = get_prepare,
    .read = get_read,
};

const struct handler handle_admin_group_members = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS,
    .name = "admin_group_members",
    .needs_session = false,
    .prepare = list_prepare,
    .read = list_read,
};
