/*
 * The business API over nng end to end (PT_ADMIN_GROUP_* and PT_ADMIN_SEND,
 * docs/protocol.md "The business API"): the real binary over real nng
 * sockets on a real SQLite file. Every operation's success, its bad input
 * (the exact code, and the database read back to show nothing was written),
 * wrong and missing operator tokens, idempotent retries, and the group
 * notices members receive, both pushed (SUB sockets on the PUB socket, as
 * gateways subscribe) and in sync.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
static const struct client_conn ops = {.gateway_id = "ops", .client_addr = "test"};
static char *token;
static int64_t next_rid = 1000;

#define MAX_SUBS 4
static nng_socket subs[MAX_SUBS];
static int n_subs;

/* Pushes received while waiting for another device's, in arrival order. */
#define BACKLOG 64
static struct {
    int64_t device;
    Pb__MessageSend *ms;
} backlog[BACKLOG];
static int n_backlog;

static void start(const char *extra)
{
    tl_start(&srv, extra);
    cli = tl_client(&srv);
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &token), GIM_OK);
}

/* SUB sockets are closed only after the service stopped: see sub_close in test_admin_ops_it.c. */
static void teardown(void)
{
    client_close(cli);
    tl_stop(&srv);
    for (int i = 0; i < n_subs; i++)
        nng_close(subs[i]);
    n_subs = 0;
    for (int i = 0; i < n_backlog; i++)
        pb__message_send__free_unpacked(backlog[i].ms, NULL);
    n_backlog = 0;
    free(token);
    token = NULL;
    tl_cleanup(&srv);
}

static int64_t qi(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int64_t qi(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tl_query_int(srv.db, buf);
}

/* Everything a failed request must leave as it was. */
struct counts {
    int64_t groups, members, messages, inbox, idem, room, group_high;
};

static struct counts counts(void)
{
    return (struct counts){
        .groups = qi("SELECT count(*) FROM chat_group"),
        .members = qi("SELECT count(*) FROM group_member"),
        .messages = qi("SELECT count(*) FROM message"),
        .inbox = qi("SELECT count(*) FROM inbox"),
        .idem = qi("SELECT count(*) FROM operator_idempotency"),
        .room = qi("SELECT count(*) FROM room_message"),
        .group_high = qi("SELECT last_id FROM group_id_high"),
    };
}

static void assert_unchanged(const struct counts *a, const char *what)
{
    struct counts b = counts();
    cr_assert(memcmp(a, &b, sizeof b) == 0,
              "%s changed the database: groups %lld->%lld members %lld->%lld messages "
              "%lld->%lld inbox %lld->%lld records %lld->%lld rooms %lld->%lld",
              what, (long long)a->groups, (long long)b.groups, (long long)a->members,
              (long long)b.members, (long long)a->messages, (long long)b.messages,
              (long long)a->inbox, (long long)b.inbox, (long long)a->idem, (long long)b.idem,
              (long long)a->room, (long long)b.room);
}

/* One operator request with a fresh request_id. */
static Pb__Output *op(int type, const ProtobufCMessage *in)
{
    return tl_call(cli, &ops, type, next_rid++, in);
}

/* The same, expecting code; frees the reply. Checks the database did not change on failure. */
static void op_fails(int type, const ProtobufCMessage *in, int code, const char *what)
{
    struct counts before = counts();
    Pb__Output *out = op(type, in);
    cr_assert_eq(out->code, code, "%s: got %d (%s), want %d", what, out->code, out->message, code);
    cr_assert(out->message && *out->message, "%s: an error says why", what);
    cr_assert_eq(out->data.len, 0, "%s: a failure carries no data", what);
    pb__output__free_unpacked(out, NULL);
    assert_unchanged(&before, what);
}

static nng_socket sub_open(const char *gateway)
{
    nng_socket s;
    char topic[80];
    int n = snprintf(topic, sizeof topic, "%s\n", gateway);
    cr_assert_lt(n_subs, MAX_SUBS);
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, topic, (size_t)n), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000), 0);
    cr_assert_eq(nng_dial(s, srv.pub_url, NULL, 0), 0);
    subs[n_subs++] = s;
    return s;
}

/*
 * The next PT_MESSAGE pushed on s for device, NULL when none comes in time.
 * Pushes for other devices wait in the backlog for their own turn: each
 * user's push is a Delivery of its own, in no order across users.
 */
static Pb__MessageSend *await_push(nng_socket s, int64_t device, int timeout_ms)
{
    for (int i = 0; i < n_backlog; i++) {
        if (backlog[i].device != device)
            continue;
        Pb__MessageSend *ms = backlog[i].ms;
        memmove(&backlog[i], &backlog[i + 1], (size_t)(n_backlog - i - 1) * sizeof backlog[0]);
        n_backlog--;
        return ms;
    }
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms), 0);
    for (;;) {
        nng_msg *m = NULL;
        if (nng_recvmsg(s, &m, 0) != 0)
            return NULL;
        const uint8_t *body = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl);
        Pb__Delivery *d = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        nng_msg_free(m);
        cr_assert(d && d->output);
        Pb__MessageSend *ms = NULL;
        if (d->output->type == PB__PACKAGE_TYPE__PT_MESSAGE)
            ms = pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
        bool mine = false;
        for (size_t i = 0; ms && i < d->n_device_ids; i++) {
            if (d->device_ids[i] == device) {
                mine = true;
            } else {
                cr_assert_lt(n_backlog, BACKLOG, "too many pushes nobody waits for");
                backlog[n_backlog].device = d->device_ids[i];
                backlog[n_backlog++].ms =
                    pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
            }
        }
        pb__delivery__free_unpacked(d, NULL);
        cr_assert(!ms || ms->message, "a pushed PT_MESSAGE without a message");
        if (mine)
            return ms;
        if (ms)
            pb__message_send__free_unpacked(ms, NULL);
    }
}

/* The notice in m: checks its envelope (system sender, the group as receiver), returns its data. */
static Pb__GroupNotice *notice_of(const Pb__Message *m, int code, int64_t group_id)
{
    cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_COMMAND);
    cr_assert_not_null(m->sender);
    cr_assert_eq(m->sender->sender_type, PB__SENDER_TYPE__ST_SYSTEM);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_GROUP);
    cr_assert_eq(m->receiver_id, group_id);
    cr_assert_gt(m->seq, 0);
    Pb__Command *cmd = pb__command__unpack(NULL, m->message_content.len, m->message_content.data);
    cr_assert_not_null(cmd);
    cr_assert_eq(cmd->code, code, "notice code %d, want %d", cmd->code, code);
    Pb__GroupNotice *gn = pb__group_notice__unpack(NULL, cmd->data.len, cmd->data.data);
    pb__command__free_unpacked(cmd, NULL);
    cr_assert_not_null(gn);
    cr_assert_eq(gn->group_id, group_id);
    return gn;
}

/* The next pushed message for device must be notice code of group_id; returns its data. */
static Pb__GroupNotice *pushed_notice(nng_socket s, int64_t device, int code, int64_t group_id)
{
    Pb__MessageSend *ms = await_push(s, device, 3000);
    cr_assert_not_null(ms, "device %lld got no notice %d pushed", (long long)device, code);
    Pb__GroupNotice *gn = notice_of(ms->message, code, group_id);
    pb__message_send__free_unpacked(ms, NULL);
    return gn;
}

/* PT_SYNC from seq for conn; the caller frees the SyncOutput. */
static Pb__SyncOutput *sync_from(const struct client_conn *c, int64_t seq)
{
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    in.seq = seq;
    Pb__Output *out = tl_call(cli, c, PB__PACKAGE_TYPE__PT_SYNC, next_rid++, &in.base);
    cr_assert_eq(out->code, 0, "sync: %s", out->message);
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    pb__output__free_unpacked(out, NULL);
    cr_assert_not_null(so);
    return so;
}

/* The last message in conn's inbox (synced from seq) must be notice code; returns its data. */
static Pb__GroupNotice *synced_notice(const struct client_conn *c, int64_t seq, int code,
                                      int64_t group_id)
{
    Pb__SyncOutput *so = sync_from(c, seq);
    cr_assert_gt(so->n_messages, 0, "user %lld: nothing in sync after seq %lld",
                 (long long)c->user_id, (long long)seq);
    Pb__GroupNotice *gn = notice_of(so->messages[so->n_messages - 1], code, group_id);
    pb__sync_output__free_unpacked(so, NULL);
    return gn;
}

static bool has_id(const int64_t *ids, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static int64_t last_seq(int64_t user)
{
    return qi("SELECT coalesce(max(seq), 0) FROM inbox WHERE user_id = %lld", (long long)user);
}

/* --- request builders ------------------------------------------------------ */

static Pb__GroupInfo *create_group(const char *name, int64_t owner, int64_t *members, size_t n,
                                   const char *key)
{
    Pb__AdminGroupCreateInput in = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
    in.token = token;
    in.name = (char *)name;
    in.avatar_url = "https://example.com/a.png";
    in.extra = "{\"k\":1}";
    in.owner_id = owner;
    in.member_ids = members;
    in.n_member_ids = n;
    if (key)
        in.idempotency_key = (char *)key;
    Pb__Output *out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &in.base);
    cr_assert_eq(out->code, 0, "create: %s", out->message);
    Pb__GroupInfo *g = pb__group_info__unpack(NULL, out->data.len, out->data.data);
    pb__output__free_unpacked(out, NULL);
    cr_assert_not_null(g);
    return g;
}

static Pb__AdminGroupMembersOutput *members_op(int type, int64_t group, int64_t *ids, size_t n,
                                               Pb__GroupRole role)
{
    Pb__AdminGroupMembersInput in = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    in.token = token;
    in.group_id = group;
    in.user_ids = ids;
    in.n_user_ids = n;
    in.role = role;
    Pb__Output *out = op(type, &in.base);
    cr_assert_eq(out->code, 0, "members: %s", out->message);
    Pb__AdminGroupMembersOutput *mo =
        pb__admin_group_members_output__unpack(NULL, out->data.len, out->data.data);
    pb__output__free_unpacked(out, NULL);
    cr_assert_not_null(mo);
    return mo;
}

static Pb__AdminSendOutput *admin_send(Pb__AdminSendInput *in, int code)
{
    Pb__Output *out = op(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &in->base);
    cr_assert_eq(out->code, code, "admin send: %d %s", out->code, out->message);
    Pb__AdminSendOutput *so = NULL;
    if (code == 0) {
        so = pb__admin_send_output__unpack(NULL, out->data.len, out->data.data);
        cr_assert_not_null(so);
    }
    pb__output__free_unpacked(out, NULL);
    return so;
}

/* A Text content in buf; returns its length. */
static size_t text_content(const char *s, uint8_t *buf)
{
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)s;
    return pb__text__pack(&t, buf);
}

/* --- groups ---------------------------------------------------------------- */

Test(business_group, create_get_members_and_the_added_notice, .fini = teardown, .timeout = 60)
{
    struct client_conn a, b;
    start("");
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwA"), 0);
    nng_socket gw = sub_open("gwA");
    usleep(200 * 1000); /* PUB drops what it sends to a pipe not attached yet */

    int64_t members[] = {3, 2, 3, 4}; /* a repeat counts once; the owner joins as owner */
    Pb__GroupInfo *g = create_group("team", 1, members, 4, NULL);
    cr_assert_gt(g->group_id, 0);
    cr_assert_str_eq(g->name, "team");
    cr_assert_str_eq(g->avatar_url, "https://example.com/a.png");
    cr_assert_str_eq(g->extra, "{\"k\":1}");
    cr_assert_eq(g->owner_id, 1);
    cr_assert_eq(g->member_count, 4);
    cr_assert_gt(g->created_at, 0);
    cr_assert_eq(g->updated_at, g->created_at);
    int64_t gid = g->group_id;
    pb__group_info__free_unpacked(g, NULL);

    /* In the database as the reply says. */
    cr_assert_eq(qi("SELECT count(*) FROM chat_group WHERE group_id = %lld AND name = 'team' "
                    "AND avatar_url = 'https://example.com/a.png' AND owner_id = 1",
                    (long long)gid),
                 1);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld", (long long)gid), 4);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld AND user_id = 1 "
                    "AND role = 'owner'",
                    (long long)gid),
                 1);

    /* Every member got the "added" notice naming all four: pushed, and in sync. */
    for (int i = 0; i < 2; i++) {
        Pb__GroupNotice *gn = pushed_notice(gw, i ? 21 : 11, 2, gid);
        cr_assert_eq(gn->n_user_ids, 4);
        cr_assert(has_id(gn->user_ids, gn->n_user_ids, 1) &&
                  has_id(gn->user_ids, gn->n_user_ids, 4));
        cr_assert_not_null(gn->group);
        cr_assert_eq(gn->group->member_count, 4);
        cr_assert_str_eq(gn->group->name, "team");
        pb__group_notice__free_unpacked(gn, NULL);
    }
    Pb__GroupNotice *gn = synced_notice(&b, 0, 2, gid);
    cr_assert_eq(gn->n_user_ids, 4);
    pb__group_notice__free_unpacked(gn, NULL);
    /* Users 3 and 4 have no device: their copy waits in the inbox. */
    cr_assert_eq(qi("SELECT count(*) FROM inbox i JOIN message m ON m.id = i.message_id "
                    "WHERE i.user_id = 4 AND m.receiver_type = 2 AND m.receiver_id = %lld "
                    "AND m.message_type = 7 AND m.sender_type = 1",
                    (long long)gid),
                 1);

    /* GET answers the same group. */
    Pb__AdminGroupInput gi = PB__ADMIN_GROUP_INPUT__INIT;
    gi.token = token;
    gi.group_id = gid;
    Pb__Output *out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &gi.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    g = pb__group_info__unpack(NULL, out->data.len, out->data.data);
    cr_assert(g && g->group_id == gid && g->member_count == 4 && g->owner_id == 1);
    cr_assert_str_eq(g->extra, "{\"k\":1}");
    pb__group_info__free_unpacked(g, NULL);
    pb__output__free_unpacked(out, NULL);

    /* MEMBERS in pages of 3, in user id order. */
    Pb__AdminGroupMemberListInput li = PB__ADMIN_GROUP_MEMBER_LIST_INPUT__INIT;
    li.token = token;
    li.group_id = gid;
    li.limit = 3;
    out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &li.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__AdminGroupMemberListOutput *lo =
        pb__admin_group_member_list_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(lo && lo->n_members == 3 && lo->has_more);
    cr_assert_eq(lo->members[0]->user_id, 1);
    cr_assert_eq(lo->members[0]->role, PB__GROUP_ROLE__GR_OWNER);
    cr_assert_eq(lo->members[1]->role, PB__GROUP_ROLE__GR_MEMBER);
    cr_assert_gt(lo->members[1]->joined_at, 0);
    cr_assert_eq(lo->members[2]->user_id, 3);
    li.after_user_id = lo->members[2]->user_id;
    pb__admin_group_member_list_output__free_unpacked(lo, NULL);
    pb__output__free_unpacked(out, NULL);
    out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &li.base);
    lo = pb__admin_group_member_list_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(lo && lo->n_members == 1 && !lo->has_more && lo->members[0]->user_id == 4);
    pb__admin_group_member_list_output__free_unpacked(lo, NULL);
    pb__output__free_unpacked(out, NULL);

    /* Reads write nothing, not even an idempotency record. */
    cr_assert_eq(qi("SELECT count(*) FROM operator_idempotency WHERE type IN (110, 111)"), 0);
}

Test(business_group, update_role_remove_and_dissolve_notify_the_members, .fini = teardown,
     .timeout = 60)
{
    struct client_conn a, b, c;
    start("");
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &c, 3, 31, "gwA"), 0);
    nng_socket gw = sub_open("gwA");
    usleep(200 * 1000);
    int64_t members[] = {2};
    Pb__GroupInfo *g = create_group("g", 1, members, 1, NULL);
    int64_t gid = g->group_id;
    pb__group_info__free_unpacked(g, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 11, 2, gid), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 21, 2, gid), NULL);

    /* update: only the named fields change; members get code 4 with the group after. */
    Pb__AdminGroupUpdateInput up = PB__ADMIN_GROUP_UPDATE_INPUT__INIT;
    char *fields[] = {"name"};
    up.token = token;
    up.group_id = gid;
    up.fields = fields;
    up.n_fields = 1;
    up.name = "renamed";
    up.extra = "ignored: not in fields";
    Pb__Output *out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    g = pb__group_info__unpack(NULL, out->data.len, out->data.data);
    cr_assert(g && strcmp(g->name, "renamed") == 0 && strcmp(g->extra, "{\"k\":1}") == 0);
    pb__group_info__free_unpacked(g, NULL);
    pb__output__free_unpacked(out, NULL);
    Pb__GroupNotice *gn = pushed_notice(gw, 21, 4, gid);
    cr_assert(gn->group && strcmp(gn->group->name, "renamed") == 0);
    pb__group_notice__free_unpacked(gn, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 11, 4, gid), NULL);
    gn = synced_notice(&b, 0, 4, gid);
    pb__group_notice__free_unpacked(gn, NULL);

    /* add 3 as admin: code 2 naming 3, to the old members and to 3. */
    int64_t three[] = {3, 2};
    Pb__AdminGroupMembersOutput *mo = members_op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, gid,
                                                 three, 2, PB__GROUP_ROLE__GR_ADMIN);
    cr_assert(mo->n_changed == 1 && mo->changed[0] == 3);
    cr_assert(mo->n_unchanged == 1 && mo->unchanged[0] == 2);
    cr_assert_eq(mo->member_count, 3);
    pb__admin_group_members_output__free_unpacked(mo, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld AND user_id = 3 AND "
                    "role = 'admin'",
                    (long long)gid),
                 1);
    gn = pushed_notice(gw, 31, 2, gid);
    cr_assert(gn->n_user_ids == 1 && gn->user_ids[0] == 3);
    cr_assert_eq(gn->role, PB__GROUP_ROLE__GR_ADMIN);
    pb__group_notice__free_unpacked(gn, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 11, 2, gid), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 21, 2, gid), NULL);

    /* set role: 2 becomes owner; 1 (the old owner) becomes admin; code 6 to all. */
    Pb__AdminGroupRoleInput ri = PB__ADMIN_GROUP_ROLE_INPUT__INIT;
    ri.token = token;
    ri.group_id = gid;
    ri.user_id = 2;
    ri.role = PB__GROUP_ROLE__GR_OWNER;
    out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &ri.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__GroupMember *gm = pb__group_member__unpack(NULL, out->data.len, out->data.data);
    cr_assert(gm && gm->user_id == 2 && gm->role == PB__GROUP_ROLE__GR_OWNER && gm->joined_at > 0);
    pb__group_member__free_unpacked(gm, NULL);
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(qi("SELECT owner_id FROM chat_group WHERE group_id = %lld", (long long)gid), 2);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld AND "
                    "((user_id = 1 AND role = 'admin') OR (user_id = 2 AND role = 'owner'))",
                    (long long)gid),
                 2);
    for (int64_t d = 11; d <= 31; d += 10) {
        gn = pushed_notice(gw, d, 6, gid);
        cr_assert(gn->n_user_ids == 1 && gn->user_ids[0] == 2);
        cr_assert_eq(gn->role, PB__GROUP_ROLE__GR_OWNER);
        cr_assert(gn->group && gn->group->owner_id == 2);
        pb__group_notice__free_unpacked(gn, NULL);
    }

    /* remove 3: code 3, and 3 gets it too. */
    int64_t rm[] = {3, 99};
    mo = members_op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS, gid, rm, 2,
                    PB__GROUP_ROLE__GR_UNKNOWN);
    cr_assert(mo->n_changed == 1 && mo->changed[0] == 3 && mo->n_unchanged == 1 &&
              mo->unchanged[0] == 99 && mo->member_count == 2);
    pb__admin_group_members_output__free_unpacked(mo, NULL);
    int64_t before3 = last_seq(3);
    gn = pushed_notice(gw, 31, 3, gid);
    cr_assert(gn->n_user_ids == 1 && gn->user_ids[0] == 3);
    pb__group_notice__free_unpacked(gn, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 11, 3, gid), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 21, 3, gid), NULL);
    gn = synced_notice(&c, before3 - 1, 3, gid);
    pb__group_notice__free_unpacked(gn, NULL);

    /* dissolve: code 5 to the members it had; the group and memberships are gone. */
    Pb__AdminGroupInput di = PB__ADMIN_GROUP_INPUT__INIT;
    di.token = token;
    di.group_id = gid;
    out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE, &di.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    cr_assert_eq(out->data.len, 0);
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM chat_group WHERE group_id = %lld", (long long)gid), 0);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld", (long long)gid), 0);
    for (int64_t d = 11; d <= 21; d += 10) {
        gn = pushed_notice(gw, d, 5, gid);
        cr_assert_null(gn->group);
        pb__group_notice__free_unpacked(gn, NULL);
    }
    gn = synced_notice(&a, 0, 5, gid);
    pb__group_notice__free_unpacked(gn, NULL);
    /* 3 left before: nothing more for it. */
    cr_assert_null(await_push(gw, 31, 300));
    cr_assert_eq(last_seq(3), before3);

    /* The dissolved group is gone for every request, and its id never comes back. */
    out = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &di.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_NOT_FOUND);
    pb__output__free_unpacked(out, NULL);
    g = create_group("next", 1, NULL, 0, NULL);
    cr_assert_gt(g->group_id, gid);
    pb__group_info__free_unpacked(g, NULL);
}

Test(business_group, bad_input_gets_its_code_and_writes_nothing, .fini = teardown, .timeout = 60)
{
    start("limits: {max_group_members: 4}\n");
    int64_t two[] = {2};
    Pb__GroupInfo *g = create_group("g", 1, two, 1, NULL);
    int64_t gid = g->group_id;
    pb__group_info__free_unpacked(g, NULL);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';

    Pb__AdminGroupCreateInput cr = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
    cr.token = token;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "create without owner");
    cr.owner_id = 1;
    int64_t bad_ids[] = {2, -5};
    cr.member_ids = bad_ids;
    cr.n_member_ids = 2;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "create with a negative member");
    int64_t many[] = {2, 3, 4, 5};
    cr.member_ids = many;
    cr.n_member_ids = 4;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "create over max_group_members (owner + 4 > 4)");
    cr.n_member_ids = 0;
    big[300] = '\0';
    cr.name = big;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "create with a 300-byte name");
    big[300] = 'x';
    cr.name = "ok";
    cr.extra = big;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "create with a 5000-byte extra");
    cr.extra = "";
    char longkey[260];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    cr.idempotency_key = longkey;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "create with a 259-byte idempotency key");

    Pb__AdminGroupUpdateInput up = PB__ADMIN_GROUP_UPDATE_INPUT__INIT;
    up.token = token;
    up.group_id = gid;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "update naming no field");
    char *bad_field[] = {"owner_id"};
    up.fields = bad_field;
    up.n_fields = 1;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "update of an unknown field");
    char *name_field[] = {"name"};
    up.fields = name_field;
    up.group_id = gid + 100;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "update of no group");
    up.group_id = 0;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "update of group 0");

    Pb__AdminGroupInput gi = PB__ADMIN_GROUP_INPUT__INIT;
    gi.token = token;
    gi.group_id = gid + 100;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE, &gi.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "dissolve of no group");
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &gi.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "get of no group");
    gi.group_id = -1;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &gi.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "get of group -1");

    Pb__AdminGroupMembersInput mi = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    mi.token = token;
    mi.group_id = gid;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "add of no one");
    int64_t three_four_five[] = {3, 4, 5};
    mi.user_ids = three_four_five;
    mi.n_user_ids = 3;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "add past max_group_members (2 + 3 > 4): none of them joins");
    mi.n_user_ids = 1;
    mi.role = PB__GROUP_ROLE__GR_OWNER;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "add as owner");
    mi.role = 17;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "add with an unknown role");
    mi.role = 0;
    mi.group_id = gid + 100;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "add to no group");
    mi.group_id = gid;
    int64_t owner_and_two[] = {2, 1};
    mi.user_ids = owner_and_two;
    mi.n_user_ids = 2;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS, &mi.base,
             PB__ERROR_CODE__EC_FORBIDDEN, "remove of the owner (2 stays too)");

    Pb__AdminGroupRoleInput ri = PB__ADMIN_GROUP_ROLE_INPUT__INIT;
    ri.token = token;
    ri.group_id = gid;
    ri.user_id = 9;
    ri.role = PB__GROUP_ROLE__GR_ADMIN;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &ri.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "role of a non-member");
    ri.user_id = 1;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &ri.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "demoting the owner");
    ri.user_id = 2;
    ri.role = PB__GROUP_ROLE__GR_UNKNOWN;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &ri.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "role GR_UNKNOWN");

    Pb__AdminGroupMemberListInput li = PB__ADMIN_GROUP_MEMBER_LIST_INPUT__INIT;
    li.token = token;
    li.group_id = gid;
    li.limit = 5000;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &li.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "members with limit 5000");
    li.limit = 0;
    li.group_id = gid + 100;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &li.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "members of no group");

    /* Data that is not the type's message at all. */
    Pb__AdminKickInput wrong = PB__ADMIN_KICK_INPUT__INIT;
    wrong.token = "\xff\xfe not utf-8";
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &wrong.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "create whose token is not UTF-8");
}

/* Every business API request refuses a missing, foreign or user token before anything else. */
Test(business_api, operator_token_is_required, .fini = teardown, .timeout = 60)
{
    start("");
    char *foreign = NULL, *user = tl_token(1, 11, 600);
    cr_assert_eq(auth_mint_admin("another-secret", time(NULL) + 600, &foreign), GIM_OK);
    char *bad[] = {"", foreign, user};
    int64_t ids[] = {2};
    uint8_t content[32];
    size_t clen = text_content("hi", content);
    for (int t = 0; t < 3; t++) {
        Pb__AdminGroupCreateInput cr = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
        cr.token = bad[t];
        cr.owner_id = 1;
        cr.member_ids = ids;
        cr.n_member_ids = 1;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "create with a bad token");
        Pb__AdminGroupUpdateInput up = PB__ADMIN_GROUP_UPDATE_INPUT__INIT;
        char *f[] = {"name"};
        up.token = bad[t];
        up.group_id = 1;
        up.fields = f;
        up.n_fields = 1;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_UPDATE, &up.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "update with a bad token");
        Pb__AdminGroupInput gi = PB__ADMIN_GROUP_INPUT__INIT;
        gi.token = bad[t];
        gi.group_id = 1;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE, &gi.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "dissolve with a bad token");
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_GET, &gi.base, PB__ERROR_CODE__EC_UNAUTHENTICATED,
                 "get with a bad token");
        Pb__AdminGroupMembersInput mi = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
        mi.token = bad[t];
        mi.group_id = 1;
        mi.user_ids = ids;
        mi.n_user_ids = 1;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, &mi.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "add with a bad token");
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS, &mi.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "remove with a bad token");
        Pb__AdminGroupRoleInput ri = PB__ADMIN_GROUP_ROLE_INPUT__INIT;
        ri.token = bad[t];
        ri.group_id = 1;
        ri.user_id = 2;
        ri.role = PB__GROUP_ROLE__GR_ADMIN;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_SET_ROLE, &ri.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "set role with a bad token");
        Pb__AdminGroupMemberListInput li = PB__ADMIN_GROUP_MEMBER_LIST_INPUT__INIT;
        li.token = bad[t];
        li.group_id = 1;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_MEMBERS, &li.base,
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "members with a bad token");
        Pb__Sender snd = PB__SENDER__INIT;
        snd.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
        Pb__Message m = PB__MESSAGE__INIT;
        m.sender = &snd;
        m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
        m.receiver_id = 2;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = content;
        m.message_content.len = clen;
        Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
        si.token = bad[t];
        si.message = &m;
        op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, PB__ERROR_CODE__EC_UNAUTHENTICATED,
                 "send with a bad token");
    }
    cr_assert_eq(qi("SELECT count(*) FROM chat_group"), 0);
    /* The control: the same request with the operator's token is served. */
    Pb__GroupInfo *g = create_group("ok", 1, ids, 1, NULL);
    cr_assert_eq(g->member_count, 2);
    pb__group_info__free_unpacked(g, NULL);
    free(foreign);
    free(user);
}

Test(business_api, idempotent_retries, .fini = teardown, .timeout = 60)
{
    struct client_conn b;
    start("");
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwA"), 0);
    nng_socket gw = sub_open("gwA");
    usleep(200 * 1000);

    /* The same key twice: the same reply, one group, one notice. */
    int64_t two[] = {2};
    Pb__AdminGroupCreateInput cr = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
    cr.token = token;
    cr.name = "once";
    cr.owner_id = 1;
    cr.member_ids = two;
    cr.n_member_ids = 1;
    cr.idempotency_key = "create-once";
    Pb__Output *first = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base);
    cr_assert_eq(first->code, 0, "%s", first->message);
    pb__group_notice__free_unpacked(pushed_notice(gw, 21, 2, 1), NULL);
    int64_t seq2 = last_seq(2);
    /* A retry with a fresh token still matches: the token is not part of the request. */
    char *token2 = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 900, &token2), GIM_OK);
    cr.token = token2;
    Pb__Output *again = op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base);
    cr_assert_eq(again->code, 0, "%s", again->message);
    cr_assert_eq(again->data.len, first->data.len);
    cr_assert(memcmp(again->data.data, first->data.data, first->data.len) == 0,
              "a retry gets the first reply");
    pb__output__free_unpacked(first, NULL);
    pb__output__free_unpacked(again, NULL);
    free(token2);
    cr_assert_eq(qi("SELECT count(*) FROM chat_group"), 1);
    cr_assert_eq(last_seq(2), seq2, "no second notice");
    cr_assert_null(await_push(gw, 21, 300), "no second push");

    /* The same key with another body: refused, nothing written. */
    cr.token = token;
    cr.name = "twice";
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, &cr.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "the same key, another name");
    /* ... or another type. */
    Pb__AdminGroupInput gi = PB__ADMIN_GROUP_INPUT__INIT;
    gi.token = token;
    gi.group_id = 1;
    gi.idempotency_key = "create-once";
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_DISSOLVE, &gi.base, PB__ERROR_CODE__EC_BAD_REQUEST,
             "the same key, another request type");

    /* Without a key, Input.request_id is the key. */
    int64_t three[] = {3};
    Pb__AdminGroupMembersInput mi = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
    mi.token = token;
    mi.group_id = 1;
    mi.user_ids = three;
    mi.n_user_ids = 1;
    for (int i = 0; i < 2; i++) {
        Pb__Output *out =
            tl_call(cli, &ops, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, 777, &mi.base);
        cr_assert_eq(out->code, 0, "%s", out->message);
        Pb__AdminGroupMembersOutput *mo =
            pb__admin_group_members_output__unpack(NULL, out->data.len, out->data.data);
        /* The retry says what the first did: 3 was added (not "already a member"). */
        cr_assert(mo && mo->n_changed == 1 && mo->changed[0] == 3 && mo->member_count == 3);
        pb__admin_group_members_output__free_unpacked(mo, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE message_type = 7"), 2, "two notices");
    int64_t four[] = {4};
    mi.user_ids = four;
    struct counts before = counts();
    Pb__Output *out =
        tl_call(cli, &ops, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS, 777, &mi.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert(strstr(out->message, "idempotency key"), "%s", out->message);
    pb__output__free_unpacked(out, NULL);
    assert_unchanged(&before, "request_id reused for another request");

    /* A send: one message however often it is retried. */
    uint8_t content[32];
    Pb__Sender snd = PB__SENDER__INIT;
    snd.sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    snd.sender_id = 9000;
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &snd;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = text_content("order shipped", content);
    Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
    si.token = token;
    si.message = &m;
    si.idempotency_key = "order-42-shipped";
    Pb__AdminSendOutput *s1 = admin_send(&si, 0);
    Pb__AdminSendOutput *s2 = admin_send(&si, 0);
    cr_assert(s1->n_copies == 1 && s2->n_copies == 1 && s1->copies[0]->seq == s2->copies[0]->seq);
    cr_assert_eq(s1->send_time, s2->send_time);
    pb__admin_send_output__free_unpacked(s1, NULL);
    pb__admin_send_output__free_unpacked(s2, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE sender_id = 9000"), 1);
}

/* --- sends ----------------------------------------------------------------- */

Test(business_send, system_and_business_messages_to_users_lists_groups_and_rooms, .fini = teardown,
     .timeout = 60)
{
    struct client_conn a, b, r;
    start("");
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &r, 5, 51, "gwA"), 0);
    nng_socket gw = sub_open("gwA");
    usleep(200 * 1000);
    uint8_t content[64];
    Pb__Sender snd = PB__SENDER__INIT;
    snd.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
    snd.nickname = "not stored";
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &snd;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = text_content("welcome", content);
    Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
    si.token = token;
    si.message = &m;

    /* To one user, from the system. */
    Pb__AdminSendOutput *so = admin_send(&si, 0);
    cr_assert(so->n_copies == 1 && so->copies[0]->user_id == 2 && so->copies[0]->seq == 1);
    cr_assert(so->recipients == 1 && so->send_time > 0 && so->room_seq == 0);
    pb__admin_send_output__free_unpacked(so, NULL);
    Pb__MessageSend *ms = await_push(gw, 21, 3000);
    cr_assert_not_null(ms);
    cr_assert_eq(ms->message->sender->sender_type, PB__SENDER_TYPE__ST_SYSTEM);
    cr_assert_eq(ms->message->seq, 1);
    cr_assert_eq(ms->message->receiver_id, 2);
    pb__message_send__free_unpacked(ms, NULL);
    Pb__SyncOutput *sy = sync_from(&b, 0);
    cr_assert_eq(sy->n_messages, 1);
    cr_assert_eq(sy->messages[0]->sender->sender_type, PB__SENDER_TYPE__ST_SYSTEM);
    cr_assert_str_eq(sy->messages[0]->sender->nickname, "");
    pb__sync_output__free_unpacked(sy, NULL);

    /* To a list, from the business: each user one copy, a repeat once. */
    snd.sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    snd.sender_id = 7000;
    m.receiver_id = 0;
    int64_t list[] = {2, 3, 2, 1};
    si.user_ids = list;
    si.n_user_ids = 4;
    so = admin_send(&si, 0);
    cr_assert_eq(so->n_copies, 3);
    cr_assert_eq(so->recipients, 3);
    cr_assert(so->copies[0]->user_id == 2 && so->copies[0]->seq == 2);
    cr_assert(so->copies[1]->user_id == 3 && so->copies[1]->seq == 1);
    cr_assert(so->copies[2]->user_id == 1 && so->copies[2]->seq == 1);
    pb__admin_send_output__free_unpacked(so, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM inbox i JOIN message m ON m.id = i.message_id WHERE "
                    "m.sender_type = 3 AND m.sender_id = 7000"),
                 3);
    ms = await_push(gw, 11, 3000);
    cr_assert(ms && ms->message->sender->sender_type == PB__SENDER_TYPE__ST_BUSINESS &&
              ms->message->sender->sender_id == 7000 && ms->message->receiver_id == 1);
    pb__message_send__free_unpacked(ms, NULL);
    ms = await_push(gw, 21, 3000);
    cr_assert(ms && ms->message->seq == 2 && ms->message->receiver_id == 2);
    pb__message_send__free_unpacked(ms, NULL);
    si.user_ids = NULL;
    si.n_user_ids = 0;

    /* To a group the business is no member of: every member, none of them the sender. */
    int64_t members[] = {2};
    Pb__GroupInfo *g = create_group("g", 1, members, 1, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 11, 2, g->group_id), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 21, 2, g->group_id), NULL);
    m.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
    m.receiver_id = g->group_id;
    so = admin_send(&si, 0);
    cr_assert_eq(so->recipients, 2);
    cr_assert_eq(so->n_copies, 0);
    pb__admin_send_output__free_unpacked(so, NULL);
    for (int64_t d = 11; d <= 21; d += 10) {
        ms = await_push(gw, d, 3000);
        cr_assert(ms && ms->message->receiver_type == PB__RECEIVER_TYPE__RT_GROUP &&
                  ms->message->receiver_id == g->group_id &&
                  ms->message->sender->sender_id == 7000);
        pb__message_send__free_unpacked(ms, NULL);
    }
    pb__group_info__free_unpacked(g, NULL);

    /* To a room: an entry of the room's log, pushed to its subscribed devices. */
    Pb__SubscribeRoomInput sub = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    sub.room_id = 40;
    Pb__Output *out = tl_call(cli, &r, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, next_rid++, &sub.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    pb__output__free_unpacked(out, NULL);
    m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
    m.receiver_id = 40;
    so = admin_send(&si, 0);
    cr_assert_eq(so->room_seq, 1);
    cr_assert_eq(so->recipients, 0);
    pb__admin_send_output__free_unpacked(so, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM room_message WHERE room_id = 40 AND seq = 1 AND "
                    "sender_type = 3 AND sender_id = 7000"),
                 1);
    ms = await_push(gw, 51, 3000);
    cr_assert(ms && ms->message->receiver_type == PB__RECEIVER_TYPE__RT_ROOM &&
              ms->message->seq == 1);
    pb__message_send__free_unpacked(ms, NULL);

    /* Every content type goes, as a client's would (a business command code >= 1000). */
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 3;
    uint8_t buf[128];
    for (int t = PB__MESSAGE_TYPE__MT_TEXT; t <= PB__MESSAGE_TYPE__MT_CUSTOM; t++) {
        size_t len = 0;
        if (t == PB__MESSAGE_TYPE__MT_COMMAND) {
            Pb__Command cmd = PB__COMMAND__INIT;
            cmd.code = 1001;
            len = pb__command__pack(&cmd, buf);
        } else if (t == PB__MESSAGE_TYPE__MT_CUSTOM) {
            Pb__Custom cu = PB__CUSTOM__INIT;
            cu.data = "{\"order\":42}";
            len = pb__custom__pack(&cu, buf);
        } else {
            len = text_content("x", buf);
        }
        m.message_type = t;
        m.message_content.data = buf;
        m.message_content.len = len;
        so = admin_send(&si, 0);
        pb__admin_send_output__free_unpacked(so, NULL);
    }
    cr_assert_eq(qi("SELECT count(DISTINCT m.message_type) FROM inbox i JOIN message m ON "
                    "m.id = i.message_id WHERE i.user_id = 3"),
                 8);
}

Test(business_send, bad_input_gets_its_code_and_writes_nothing, .fini = teardown, .timeout = 60)
{
    start("limits: {max_content_bytes: 100}\n");
    uint8_t content[256];
    Pb__Sender snd = PB__SENDER__INIT;
    snd.sender_type = PB__SENDER_TYPE__ST_USER;
    snd.sender_id = 1;
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &snd;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = text_content("hi", content);
    Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
    si.token = token;
    int bad = PB__ERROR_CODE__EC_BAD_REQUEST;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "no message");
    si.message = &m;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "as a user (ST_USER)");
    snd.sender_type = PB__SENDER_TYPE__ST_UNKNOWN;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "as ST_UNKNOWN");
    m.sender = NULL;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "without a sender");
    m.sender = &snd;
    snd.sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    snd.sender_id = 0;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "as business 0");
    snd.sender_id = 7000;
    m.receiver_type = 9;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "to receiver type 9");
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 0;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "to user 0 without a list");
    int64_t list[1001];
    for (int i = 0; i < 1001; i++)
        list[i] = i + 1;
    si.user_ids = list;
    si.n_user_ids = 1001;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "to a list of 1001");
    list[1] = -3;
    si.n_user_ids = 2;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "to a list with user -3");
    list[1] = 2;
    m.receiver_id = 2;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "to a user and a list at once");
    m.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "to a group with a list");
    si.user_ids = NULL;
    si.n_user_ids = 0;
    m.receiver_id = 77;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, PB__ERROR_CODE__EC_NOT_FOUND,
             "to no group");
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.message_type = 0;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "of message type 0");
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.len = 200;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, PB__ERROR_CODE__EC_TOO_LARGE,
             "of 200 bytes (max_content_bytes 100)");
    Pb__Command cmd = PB__COMMAND__INIT;
    cmd.code = 2; /* a fake "members added" notice */
    m.message_type = PB__MESSAGE_TYPE__MT_COMMAND;
    m.message_content.len = pb__command__pack(&cmd, content);
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, PB__ERROR_CODE__EC_FORBIDDEN,
             "of an IM command code (2)");
    m.message_content.len = 3;
    memcpy(content, "\xff\xff\xff", 3);
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_SEND, &si.base, bad, "of a command that is no Command");
    cr_assert_eq(qi("SELECT count(*) FROM message"), 0);
}

/* --- a big group ----------------------------------------------------------- */

#define BIG 10000

/*
 * 10,000 members created and messaged through the API; a removed member gets
 * no more copies or pushes and can no longer send to the group.
 */
Test(business_group, ten_thousand_members_and_a_removed_member_is_out, .fini = teardown,
     .timeout = 120)
{
    struct client_conn in, out_member;
    start("");
    cr_assert_eq(tl_signin(cli, &in, 5000, 50001, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &out_member, 7000, 70001, "gwA"), 0);
    nng_socket gw = sub_open("gwA");
    usleep(200 * 1000);

    int64_t *ids = malloc((BIG - 1) * sizeof *ids);
    cr_assert_not_null(ids);
    for (int i = 0; i < BIG - 1; i++)
        ids[i] = i + 2; /* users 2..10000; user 1 owns it */
    Pb__GroupInfo *g = create_group("everyone", 1, ids, BIG - 1, "big-create");
    free(ids);
    cr_assert_eq(g->member_count, BIG);
    int64_t gid = g->group_id;
    pb__group_info__free_unpacked(g, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld", (long long)gid),
                 BIG);
    pb__group_notice__free_unpacked(pushed_notice(gw, 50001, 2, gid), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 70001, 2, gid), NULL);

    uint8_t content[32];
    Pb__Sender snd = PB__SENDER__INIT;
    snd.sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    snd.sender_id = 1;
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &snd;
    m.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
    m.receiver_id = gid;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = text_content("to all", content);
    Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
    si.token = token;
    si.message = &m;
    Pb__AdminSendOutput *so = admin_send(&si, 0);
    cr_assert_eq(so->recipients, BIG);
    pb__admin_send_output__free_unpacked(so, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM inbox i JOIN message m ON m.id = i.message_id WHERE "
                    "m.receiver_id = %lld AND m.message_type = 1",
                    (long long)gid),
                 BIG);
    Pb__MessageSend *ms = await_push(gw, 70001, 3000);
    cr_assert(ms && ms->message->message_type == PB__MESSAGE_TYPE__MT_TEXT);
    pb__message_send__free_unpacked(ms, NULL);
    pb__message_send__free_unpacked(await_push(gw, 50001, 3000), NULL);

    /* 7000 leaves: the removal notice reaches it, then nothing more does. */
    int64_t gone[] = {7000};
    Pb__AdminGroupMembersOutput *mo = members_op(PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS,
                                                 gid, gone, 1, PB__GROUP_ROLE__GR_UNKNOWN);
    cr_assert_eq(mo->member_count, BIG - 1);
    pb__admin_group_members_output__free_unpacked(mo, NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 70001, 3, gid), NULL);
    pb__group_notice__free_unpacked(pushed_notice(gw, 50001, 3, gid), NULL);
    int64_t seq7000 = last_seq(7000);

    m.message_content.len = text_content("after", content);
    so = admin_send(&si, 0);
    cr_assert_eq(so->recipients, BIG - 1);
    pb__admin_send_output__free_unpacked(so, NULL);
    ms = await_push(gw, 50001, 3000);
    cr_assert(ms && ms->message->message_type == PB__MESSAGE_TYPE__MT_TEXT);
    pb__message_send__free_unpacked(ms, NULL);
    cr_assert_null(await_push(gw, 70001, 500), "a removed member gets no push");
    cr_assert_eq(last_seq(7000), seq7000, "nor a copy");

    /* A member may still send to the group; the removed one may not. */
    Pb__MessageSend send = PB__MESSAGE_SEND__INIT;
    Pb__Message um = PB__MESSAGE__INIT;
    um.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
    um.receiver_id = gid;
    um.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    um.message_content.data = content;
    um.message_content.len = m.message_content.len;
    send.message = &um;
    cr_assert_eq(tl_code(cli, &out_member, PB__PACKAGE_TYPE__PT_MESSAGE, next_rid++, &send.base),
                 PB__ERROR_CODE__EC_FORBIDDEN);
    cr_assert_eq(last_seq(7000), seq7000);
    cr_assert_eq(tl_code(cli, &in, PB__PACKAGE_TYPE__PT_MESSAGE, next_rid++, &send.base), 0);
}

/* A group notice is the IM's own: neither an operator nor the group's owner can recall it. */
Test(business_group, notices_cannot_be_recalled, .fini = teardown, .timeout = 60)
{
    struct client_conn a;
    start("");
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gwA"), 0);
    int64_t two[] = {2};
    Pb__GroupInfo *g = create_group("g", 1, two, 1, NULL);
    pb__group_info__free_unpacked(g, NULL);
    cr_assert_eq(last_seq(1), 1, "the owner's inbox: the notice");

    Pb__RecallInput ri = PB__RECALL_INPUT__INIT;
    ri.seq = 1;
    Pb__Output *out = tl_call(cli, &a, PB__PACKAGE_TYPE__PT_RECALL, next_rid++, &ri.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_FORBIDDEN, "%d %s", out->code, out->message);
    cr_assert(strstr(out->message, "group notice"), "%s", out->message);
    pb__output__free_unpacked(out, NULL);

    Pb__AdminRecallInput ar = PB__ADMIN_RECALL_INPUT__INIT;
    ar.token = token;
    ar.user_id = 2;
    ar.seq = 1;
    op_fails(PB__PACKAGE_TYPE__PT_ADMIN_RECALL, &ar.base, PB__ERROR_CODE__EC_FORBIDDEN,
             "an operator's recall of a group notice");
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE status = 2"), 0);
}

/* The record is durable with the change: after a restart the retry still gets the first reply. */
Test(business_api, idempotency_survives_a_restart, .fini = teardown, .timeout = 60)
{
    start("");
    int64_t two[] = {2};
    Pb__GroupInfo *g = create_group("durable", 1, two, 1, "create-durable");
    int64_t gid = g->group_id;
    pb__group_info__free_unpacked(g, NULL);
    client_close(cli);
    cr_assert_eq(tl_stop(&srv), 0);
    tl_restart(&srv);
    cli = tl_client(&srv);
    g = create_group("durable", 1, two, 1, "create-durable");
    cr_assert_eq(g->group_id, gid);
    pb__group_info__free_unpacked(g, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM chat_group"), 1);
    cr_assert_eq(qi("SELECT count(*) FROM message"), 1, "one notice");
}
