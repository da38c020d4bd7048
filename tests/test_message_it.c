/*
 * PT_MESSAGE end to end: the real binary, real nng sockets (REQ/REP for
 * sends, SUB on its PUB socket for pushes) and the real SQLite file, which
 * the tests read (and, for groups, write: WAL lets them while it runs).
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
/* User 1 on two devices and gateways, users 2 and 3 on one each. */
static struct client_conn a1, a2, b, c3;

static void setup(void)
{
    tl_start(&srv, "limits: {max_content_bytes: 100, max_mentions: 2}");
    cli = tl_client(&srv);
    cr_assert_eq(tl_signin(cli, &a1, 1, 11, "gwA1"), 0);
    cr_assert_eq(tl_signin(cli, &a2, 1, 12, "gwA2"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gwB"), 0);
    cr_assert_eq(tl_signin(cli, &c3, 3, 31, "gwC"), 0);
}

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

TestSuite(message_it, .init = setup, .fini = teardown, .timeout = 60);

static void sql(const char *stmt)
{
    tl_exec(&srv, stmt);
}

static int64_t qi(const char *fmt, int64_t arg)
{
    char buf[512];
    snprintf(buf, sizeof buf, fmt, (long long)arg);
    return tl_query_int(srv.db, buf);
}

struct msg {
    int receiver_type; /* 0 = RT_USER */
    int64_t receiver_id;
    int message_type; /* 0 = MT_TEXT */
    const char *content;
    const int64_t *mentions;
    size_t n_mentions;
    bool no_message;
};

static Pb__Output *send_msg(const struct client_conn *conn, int64_t request_id, const struct msg *s)
{
    Pb__Sender forged = PB__SENDER__INIT;
    forged.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
    forged.sender_id = 999;
    forged.device_id = 999;
    forged.nickname = "evil";
    forged.avatar_url = "http://evil";
    forged.extra = "x";
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &forged;
    m.receiver_type = s->receiver_type ? s->receiver_type : PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = s->receiver_id;
    m.message_type = s->message_type ? s->message_type : PB__MESSAGE_TYPE__MT_TEXT;
    const char *content = s->content ? s->content : "hello";
    m.message_content.data = (uint8_t *)content;
    m.message_content.len = strlen(content);
    m.to_user_ids = (int64_t *)s->mentions;
    m.n_to_user_ids = s->n_mentions;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = s->no_message ? NULL : &m;
    return tl_call(cli, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
}

/* Sends and expects EC_OK; returns the reply's message (caller frees). */
static Pb__MessageSend *send_ok(const struct client_conn *conn, int64_t request_id,
                                const struct msg *s)
{
    Pb__Output *out = send_msg(conn, request_id, s);
    cr_assert_eq(out->code, 0, "code %d: %s", out->code, out->message);
    cr_assert_eq(out->type, PB__PACKAGE_TYPE__PT_MESSAGE);
    cr_assert_eq(out->request_id, request_id);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    pb__output__free_unpacked(out, NULL);
    cr_assert_not_null(ms);
    cr_assert_not_null(ms->message);
    return ms;
}

static int64_t send_seq(const struct client_conn *conn, int64_t request_id, const struct msg *s)
{
    Pb__MessageSend *ms = send_ok(conn, request_id, s);
    int64_t seq = ms->message->seq;
    pb__message_send__free_unpacked(ms, NULL);
    return seq;
}

static int64_t inbox(int64_t user)
{
    return qi("SELECT count(*) FROM inbox WHERE user_id = %lld", user);
}

static int64_t messages(void)
{
    return tl_query_int(srv.db, "SELECT count(*) FROM message");
}

static void make_group(int64_t gid, const int64_t *members, size_t n)
{
    char buf[256];
    snprintf(buf, sizeof buf,
             "INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (%lld, 'g', "
             "%lld, 0)",
             (long long)gid, (long long)members[0]);
    sql(buf);
    for (size_t i = 0; i < n; i++) {
        snprintf(buf, sizeof buf,
                 "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
                 "(%lld, %lld, '%s', 0)",
                 (long long)gid, (long long)members[i], i == 0 ? "owner" : "member");
        sql(buf);
    }
}

Test(message_it, user_send_fills_the_sender_and_stores_both_copies)
{
    const int64_t mentions[] = {2};
    Pb__MessageSend *ms = send_ok(
        &a1, 1,
        &(struct msg){.receiver_id = 2, .content = "hi B", .mentions = mentions, .n_mentions = 1});
    const Pb__Message *m = ms->message;
    cr_assert_eq(m->sender->sender_type, PB__SENDER_TYPE__ST_USER);
    cr_assert_eq(m->sender->sender_id, 1, "forged sender_id 999 must be replaced");
    cr_assert_eq(m->sender->device_id, 11);
    cr_assert_str_empty(m->sender->nickname);
    cr_assert_str_empty(m->sender->avatar_url);
    cr_assert_str_empty(m->sender->extra);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_USER);
    cr_assert_eq(m->receiver_id, 2);
    cr_assert_eq(m->n_to_user_ids, 1);
    cr_assert_eq(m->to_user_ids[0], 2);
    cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_TEXT);
    cr_assert_eq(m->message_content.len, 4);
    cr_assert_eq(memcmp(m->message_content.data, "hi B", 4), 0);
    cr_assert_eq(m->seq, 1);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_gt(m->send_time, 1600000000000, "server time in ms");
    pb__message_send__free_unpacked(ms, NULL);

    cr_assert_eq(inbox(1), 1);
    cr_assert_eq(inbox(2), 1);
    cr_assert_eq(tl_query_int(srv.db, "SELECT sender_id FROM message"), 1);
    cr_assert_eq(tl_query_int(srv.db, "SELECT sender_device_id FROM message"), 11);

    /* B answers; A's other device sends too: seqs continue per user. */
    cr_assert_eq(send_seq(&b, 1, &(struct msg){.receiver_id = 1}), 2);
    cr_assert_eq(send_seq(&a2, 1, &(struct msg){.receiver_id = 2}), 3,
                 "request_id is per device: device 12's 1 is a new send");
    cr_assert_eq(inbox(1), 3);
    cr_assert_eq(inbox(2), 3);
    cr_assert_eq(tl_query_int(srv.db, "SELECT seq FROM user_last_seq WHERE user_id = 2"), 3);
    /* Self-send: one copy. */
    cr_assert_eq(send_seq(&a1, 2, &(struct msg){.receiver_id = 1}), 4);
    cr_assert_eq(inbox(1), 4);
    cr_assert_eq(messages(), 4);
}

Test(message_it, group_members_each_get_a_copy)
{
    const int64_t members[] = {1, 2, 3};
    make_group(50, members, 3);
    cr_assert_eq(send_seq(&b, 7, &(struct msg){.receiver_id = 3}), 1);
    Pb__MessageSend *ms = send_ok(
        &a1, 8, &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 50});
    cr_assert_eq(ms->message->seq, 1);
    cr_assert_eq(ms->message->receiver_type, PB__RECEIVER_TYPE__RT_GROUP);
    cr_assert_eq(ms->message->receiver_id, 50);
    pb__message_send__free_unpacked(ms, NULL);
    cr_assert_eq(inbox(1), 1);
    cr_assert_eq(inbox(2), 2);
    cr_assert_eq(inbox(3), 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM group_copy"), 3);
    cr_assert_eq(tl_query_int(srv.db, "SELECT seq FROM group_copy WHERE user_id = 3"), 2);
    /* A member added with plain SQL counts at once. */
    sql("INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (50, 4, 'member', "
        "0)");
    cr_assert_eq(
        send_seq(&c3, 9,
                 &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 50}),
        3);
    cr_assert_eq(inbox(4), 1);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM group_copy"), 7);
}

Test(message_it, retries_get_the_same_seq_and_store_nothing)
{
    cr_assert_eq(send_seq(&a1, 100, &(struct msg){.receiver_id = 2}), 1);
    cr_assert_eq(send_seq(&a1, 101, &(struct msg){.receiver_id = 2}), 2);
    int64_t before = messages();
    for (int i = 0; i < 3; i++)
        cr_assert_eq(send_seq(&a1, 100, &(struct msg){.receiver_id = 2}), 1);
    cr_assert_eq(messages(), before);
    cr_assert_eq(inbox(2), 2);
    /* The records are in the database: a restart remembers them. */
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    tl_restart(&srv);
    cr_assert_eq(send_seq(&a1, 101, &(struct msg){.receiver_id = 2}), 2);
    cr_assert_eq(messages(), before);
    cr_assert_eq(send_seq(&a1, 102, &(struct msg){.receiver_id = 2}), 3);
}

/* Each failure: the code, a message, and not one row written. */
static void expect_code(const struct client_conn *conn, const struct msg *s, int code,
                        const char *what)
{
    int64_t before = messages(), copies = tl_query_int(srv.db, "SELECT count(*) FROM inbox");
    int64_t idem = tl_query_int(srv.db, "SELECT count(*) FROM idempotency");
    Pb__Output *out = send_msg(conn, 500, s);
    cr_assert_eq(out->code, code, "%s: got %d (%s)", what, out->code, out->message);
    cr_assert(out->message && *out->message, "%s: an error says why", what);
    cr_assert_eq(out->data.len, 0);
    pb__output__free_unpacked(out, NULL);
    cr_assert_eq(messages(), before, "%s wrote a message", what);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox"), copies);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM idempotency"), idem);
}

Test(message_it, bad_sends_get_clear_codes_and_write_nothing)
{
    const int64_t members[] = {2, 3};
    make_group(60, members, 2);
    char big[102];
    memset(big, 'x', 101);
    big[101] = 0;
    const int64_t three[] = {2, 3, 4};
    cr_assert_eq(send_seq(&a1, 1, &(struct msg){.receiver_id = 2}), 1);
    expect_code(&a1, &(struct msg){.receiver_id = 2, .message_type = 42},
                PB__ERROR_CODE__EC_BAD_REQUEST, "unknown message_type");
    expect_code(&a1, &(struct msg){.receiver_id = 2, .no_message = true},
                PB__ERROR_CODE__EC_BAD_REQUEST, "missing message");
    expect_code(&a1, &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_ROOM, .receiver_id = 5},
                PB__ERROR_CODE__EC_FORBIDDEN, "RT_ROOM without a subscription");
    expect_code(&a1, &(struct msg){.receiver_id = 0}, PB__ERROR_CODE__EC_BAD_REQUEST,
                "receiver_id 0");
    expect_code(&a1, &(struct msg){.receiver_type = 9, .receiver_id = 2},
                PB__ERROR_CODE__EC_BAD_REQUEST, "unknown receiver_type");
    expect_code(&a1, &(struct msg){.receiver_id = 2, .content = big}, PB__ERROR_CODE__EC_TOO_LARGE,
                "content over the limit");
    expect_code(&a1, &(struct msg){.receiver_id = 2, .mentions = three, .n_mentions = 3},
                PB__ERROR_CODE__EC_TOO_LARGE, "too many mentions");
    expect_code(&a1, &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 60},
                PB__ERROR_CODE__EC_FORBIDDEN, "non-member");
    expect_code(&a1, &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 61},
                PB__ERROR_CODE__EC_NOT_FOUND, "unknown group");
    struct client_conn stranger = {.user_id = 1, .device_id = 77, .gateway_id = "gwA1"};
    expect_code(&stranger, &(struct msg){.receiver_id = 2}, PB__ERROR_CODE__EC_UNAUTHENTICATED,
                "no session");
    struct client_conn spoof = {.user_id = 2, .device_id = 11, .gateway_id = "gwA1"};
    expect_code(&spoof, &(struct msg){.receiver_id = 3}, PB__ERROR_CODE__EC_UNAUTHENTICATED,
                "device 11 claiming user 2");
    /* Command codes below 1000 are the IM's (1 = recall notice): a client must not forge one. */
    expect_code(&a1,
                &(struct msg){.receiver_id = 2,
                              .message_type = PB__MESSAGE_TYPE__MT_COMMAND,
                              .content = "\x08\x01"},
                PB__ERROR_CODE__EC_FORBIDDEN, "forged recall notice");
    expect_code(&a1,
                &(struct msg){.receiver_id = 2,
                              .message_type = PB__MESSAGE_TYPE__MT_COMMAND,
                              .content = "\xff\xff"},
                PB__ERROR_CODE__EC_BAD_REQUEST, "MT_COMMAND content that is not a Command");
    /* Request 500 failed every time, so it was never remembered: now it is a fresh send. */
    cr_assert_eq(send_seq(&a1, 500, &(struct msg){.receiver_id = 2}), 2);
    /* A business command (code >= 1000) goes through. */
    cr_assert_eq(send_seq(&a1, 501,
                          &(struct msg){.receiver_id = 2,
                                        .message_type = PB__MESSAGE_TYPE__MT_COMMAND,
                                        .content = "\x08\xe8\x07"}),
                 3);
}

/* --- pushes ------------------------------------------------------------- */

struct delivery {
    char gateway[32];
    int64_t devices[4];
    size_t n_devices;
    int64_t seq, sender_id;
};

static nng_socket subscribe(void)
{
    nng_socket s;
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 500), 0);
    cr_assert_eq(nng_dial(s, srv.pub_url, NULL, 0), 0);
    usleep(200 * 1000); /* PUB drops what it sends before the subscription arrives */
    return s;
}

/* Everything published until 500 ms pass in silence. */
static size_t collect(nng_socket s, struct delivery *out, size_t max)
{
    size_t n = 0;
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(s, &m, 0) != 0)
            return n;
        const uint8_t *body = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl, "topic ends with a newline");
        cr_assert(n < max, "too many deliveries");
        struct delivery *d = &out[n++];
        memset(d, 0, sizeof *d);
        snprintf(d->gateway, sizeof d->gateway, "%.*s", (int)(nl - body), (const char *)body);
        Pb__Delivery *pd = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        cr_assert_not_null(pd);
        cr_assert_not_null(pd->output);
        cr_assert_eq(pd->output->type, PB__PACKAGE_TYPE__PT_MESSAGE);
        cr_assert_eq(pd->output->request_id, 0);
        cr_assert_eq(pd->output->code, 0);
        Pb__MessageSend *ms =
            pb__message_send__unpack(NULL, pd->output->data.len, pd->output->data.data);
        cr_assert_not_null(ms);
        cr_assert_not_null(ms->message);
        d->seq = ms->message->seq;
        d->sender_id = ms->message->sender->sender_id;
        d->n_devices = pd->n_device_ids < 4 ? pd->n_device_ids : 4;
        memcpy(d->devices, pd->device_ids, d->n_devices * sizeof *d->devices);
        pb__message_send__free_unpacked(ms, NULL);
        pb__delivery__free_unpacked(pd, NULL);
        nng_msg_free(m);
    }
}

static const struct delivery *find(const struct delivery *ds, size_t n, const char *gw)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ds[i].gateway, gw) == 0)
            return &ds[i];
    return NULL;
}

Test(message_it, pushes_reach_every_copy_but_the_sending_device)
{
    nng_socket sub = subscribe();
    struct delivery ds[16];
    /* Give B a different seq from A so each push must carry its own copy's. */
    cr_assert_eq(send_seq(&b, 1, &(struct msg){.receiver_id = 3}), 1);
    size_t n = collect(sub, ds, 16);
    cr_assert_eq(n, 1, "B's send pushes to user 3 only");
    cr_assert_str_eq(ds[0].gateway, "gwC");

    cr_assert_eq(send_seq(&a1, 1, &(struct msg){.receiver_id = 2}), 1);
    n = collect(sub, ds, 16);
    cr_assert_eq(n, 2, "to B and to A's other device");
    const struct delivery *d = find(ds, n, "gwB");
    cr_assert_not_null(d);
    cr_assert_eq(d->n_devices, 1);
    cr_assert_eq(d->devices[0], 21);
    cr_assert_eq(d->seq, 2, "B's own seq");
    cr_assert_eq(d->sender_id, 1);
    d = find(ds, n, "gwA2");
    cr_assert_not_null(d);
    cr_assert_eq(d->devices[0], 12);
    cr_assert_eq(d->seq, 1);
    cr_assert_null(find(ds, n, "gwA1"), "the sending device gets no push");

    /* A retry is answered but publishes nothing. */
    cr_assert_eq(send_seq(&a1, 1, &(struct msg){.receiver_id = 2}), 1);
    cr_assert_eq(collect(sub, ds, 16), 0);

    /* Group: every member's own seq; user 4 is offline. */
    const int64_t members[] = {1, 2, 3, 4};
    make_group(70, members, 4);
    cr_assert_eq(
        send_seq(&c3, 2,
                 &(struct msg){.receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 70}),
        2);
    n = collect(sub, ds, 16);
    cr_assert_eq(n, 3, "gwA1, gwA2, gwB; not the sending device on gwC");
    cr_assert_eq(find(ds, n, "gwA1")->seq, 2);
    cr_assert_eq(find(ds, n, "gwA2")->seq, 2);
    cr_assert_eq(find(ds, n, "gwB")->seq, 3);
    cr_assert_null(find(ds, n, "gwC"));
    nng_close(sub);
}
