/*
 * PT_SYNC and PT_MESSAGE_ACK end to end: the real binary over real nng
 * sockets on a real SQLite file. The inbox is filled with plain SQL on the
 * live database (WAL lets a second writer in between the service's
 * transactions), before any ack makes the service cache the user's seq.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static struct tl_server srv;

static void setup(void)
{
    tl_start(&srv, "sync: {page_size: 3}");
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(sync_it, .init = setup, .fini = teardown, .timeout = 60);

static void exec_sql(const char *sql)
{
    tl_exec(&srv, sql);
}

/* count messages for user, seq 1..count, content "u<user>#<seq>"; user_seq = count. One
 * transaction. */
static void fill(int64_t user, int count)
{
    char sql[16384];
    /* The same rows on either backend: SQLite's blob cast and rowid, PostgreSQL's. */
    bool pg = tl_pg();
    size_t at = (size_t)snprintf(sql, sizeof sql, pg ? "BEGIN;" : "BEGIN IMMEDIATE;");
    for (int s = 1; s <= count; s++)
        at += (size_t)snprintf(
            sql + at, sizeof sql - at,
            "INSERT INTO message (sender_type, sender_id, sender_device_id, receiver_type, "
            "receiver_id, message_type, content, send_time, sender_seq, receiver_seq) "
            "VALUES (2, 900, 9001, 1, %lld, 1, %s'u%lld#%d'%s, 1700000000000, 1, %d);"
            "INSERT INTO inbox (user_id, seq, message_id) VALUES (%lld, %d, %s);",
            (long long)user, pg ? "convert_to(" : "CAST(", (long long)user, s,
            pg ? ", 'UTF8')" : " AS BLOB)", s, (long long)user, s,
            pg ? "lastval()" : "last_insert_rowid()");
    at += (size_t)snprintf(sql + at, sizeof sql - at,
                           "INSERT INTO user_seq (user_id, seq) VALUES (%lld, %d); COMMIT;",
                           (long long)user, count);
    cr_assert_lt(at, sizeof sql);
    exec_sql(sql);
}

/* Sync over the protocol; returns the decoded SyncOutput (caller frees) or fails the test. */
static Pb__SyncOutput *sync_call(struct gim_client *c, const struct client_conn *conn, int64_t seq)
{
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    in.seq = seq;
    Pb__Output *out = tl_call(c, conn, PB__PACKAGE_TYPE__PT_SYNC, 10 + seq, &in.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_OK, "sync: %s", out->message);
    cr_assert_eq(out->type, PB__PACKAGE_TYPE__PT_SYNC);
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(so, "reply data is a SyncOutput");
    pb__output__free_unpacked(out, NULL);
    return so;
}

static int ack_call(struct gim_client *c, const struct client_conn *conn, int64_t ack)
{
    Pb__MessageACK in = PB__MESSAGE_ACK__INIT;
    in.device_ack = ack;
    in.receive_time = 1700000001234;
    Pb__Output *out = tl_call(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 500 + ack, &in.base);
    int code = out->code;
    cr_assert_eq(out->data.len, 0, "an ack reply carries no data");
    pb__output__free_unpacked(out, NULL);
    return code;
}

static void check_page(Pb__SyncOutput *so, int64_t first, size_t n, bool more)
{
    cr_assert_eq(so->n_messages, n, "page after %lld: %zu messages", (long long)first - 1,
                 so->n_messages);
    cr_assert_eq(so->has_more, more, "page after %lld: has_more", (long long)first - 1);
    for (size_t i = 0; i < n; i++) {
        const Pb__Message *m = so->messages[i];
        char want[32];
        int len = snprintf(want, sizeof want, "u1#%lld", (long long)first + (long long)i);
        cr_assert_eq(m->seq, first + (int64_t)i);
        cr_assert_eq(m->message_content.len, (size_t)len);
        cr_assert(memcmp(m->message_content.data, want, (size_t)len) == 0);
        cr_assert_eq(m->sender->sender_id, 900);
        cr_assert_eq(m->receiver_id, 1);
        cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
    }
}

Test(sync_it, pages_ack_and_new_device_start)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn d1, d2, d3;
    cr_assert_eq(tl_signin(c, &d1, 1, 101, "gw1"), 0);
    cr_assert_eq(tl_signin(c, &d2, 1, 102, "gw2"), 0);
    fill(1, 7);
    fill(2, 4); /* another user's inbox never shows */

    Pb__SyncOutput *so = sync_call(c, &d1, 0);
    check_page(so, 1, 3, true);
    pb__sync_output__free_unpacked(so, NULL);
    so = sync_call(c, &d1, 3);
    check_page(so, 4, 3, true);
    pb__sync_output__free_unpacked(so, NULL);
    so = sync_call(c, &d1, 6);
    check_page(so, 7, 1, false);
    pb__sync_output__free_unpacked(so, NULL);

    cr_assert_eq(ack_call(c, &d1, 5), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_seq FROM device WHERE device_id = 101"), 5);
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_time FROM device WHERE device_id = 101"),
                 1700000001234);
    cr_assert_eq(ack_call(c, &d1, 2), PB__ERROR_CODE__EC_OK, "a lower ack is accepted");
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_seq FROM device WHERE device_id = 101"), 5);
    cr_assert_eq(ack_call(c, &d1, 8), PB__ERROR_CODE__EC_BAD_REQUEST, "above the highest seq");
    cr_assert_eq(ack_call(c, &d1, -1), PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_seq FROM device WHERE device_id = 101"), 5);

    /* Device 2 has no local state: it starts after device 1's ack. */
    so = sync_call(c, &d2, 0);
    check_page(so, 6, 2, false);
    pb__sync_output__free_unpacked(so, NULL);

    /* The ack is durable: after a restart a third device starts there too. */
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    tl_restart(&srv);
    client_close(c);
    c = tl_client(&srv);
    cr_assert_eq(tl_signin(c, &d3, 1, 103, "gw1"), 0);
    so = sync_call(c, &d3, 0);
    check_page(so, 6, 2, false);
    pb__sync_output__free_unpacked(so, NULL);
    client_close(c);
}

Test(sync_it, unauthenticated_sync_is_refused)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    fill(1, 2);
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    struct client_conn stranger = {.user_id = 1, .device_id = 999, .gateway_id = "gw1"};
    cr_assert_eq(tl_code(c, &stranger, PB__PACKAGE_TYPE__PT_SYNC, 1, &in.base),
                 PB__ERROR_CODE__EC_UNAUTHENTICATED);
    struct client_conn wrong_user = {.user_id = 2, .device_id = 101, .gateway_id = "gw1"};
    cr_assert_eq(tl_code(c, &wrong_user, PB__PACKAGE_TYPE__PT_SYNC, 2, &in.base),
                 PB__ERROR_CODE__EC_UNAUTHENTICATED, "a device reads only its own user's inbox");
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 1;
    cr_assert_eq(tl_code(c, &stranger, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 3, &ack.base),
                 PB__ERROR_CODE__EC_UNAUTHENTICATED);
    client_close(c);
}

Test(sync_it, garbage_sync_input_is_bad_request)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, 1, 101, "gw1"), 0);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    Pb__GatewayRequest req = PB__GATEWAY_REQUEST__INIT;
    Pb__Input in = PB__INPUT__INIT;
    in.type = PB__PACKAGE_TYPE__PT_SYNC;
    in.request_id = 77;
    in.data.data = (uint8_t *)junk;
    in.data.len = sizeof junk;
    req.user_id = 1;
    req.device_id = 101;
    req.gateway_id = "gw1";
    req.input = &in;
    uint8_t buf[128];
    size_t len = pb__gateway_request__pack(&req, buf);
    Pb__Output *out = tl_call_raw(c, buf, len);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(out->request_id, 77);
    cr_assert(out->message && strstr(out->message, "SyncInput"), "message: %s", out->message);
    pb__output__free_unpacked(out, NULL);

    Pb__SyncInput neg = PB__SYNC_INPUT__INIT;
    neg.seq = -3;
    out = tl_call(c, &conn, PB__PACKAGE_TYPE__PT_SYNC, 78, &neg.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert(out->message && strstr(out->message, "seq"), "message: %s", out->message);
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

/* Sends a text message over the protocol; returns the sender's seq from the reply. */
static int64_t send_text(struct gim_client *c, const struct client_conn *conn, int64_t request_id,
                         int receiver_type, int64_t receiver_id, const char *text,
                         const int64_t *mentions, size_t n_mentions)
{
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    uint8_t content[256];
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = receiver_type;
    m.receiver_id = receiver_id;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = pb__text__pack(&t, content);
    m.to_user_ids = (int64_t *)mentions;
    m.n_to_user_ids = n_mentions;
    Pb__MessageSend send = PB__MESSAGE_SEND__INIT;
    send.message = &m;
    Pb__Output *out = tl_call(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &send.base);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_OK, "send: %s", out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    cr_assert(reply && reply->message, "a send reply carries the message");
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

/* The text of a synced message's content (an encoded pb.Text); caller frees. */
static char *text_of(const Pb__Message *m)
{
    Pb__Text *t = pb__text__unpack(NULL, m->message_content.len, m->message_content.data);
    cr_assert_not_null(t, "content is a pb.Text");
    char *s = strdup(t->text);
    pb__text__free_unpacked(t, NULL);
    return s;
}

/* Every message of user's inbox after seq, following has_more, into msgs (caller frees each). */
static size_t sync_all(struct gim_client *c, const struct client_conn *conn, int64_t seq,
                       Pb__SyncOutput **pages, size_t max_pages)
{
    size_t n = 0;
    for (;;) {
        cr_assert_lt(n, max_pages, "too many pages");
        Pb__SyncOutput *so = pages[n++] = sync_call(c, conn, seq);
        if (so->n_messages)
            seq = so->messages[so->n_messages - 1]->seq;
        if (!so->has_more)
            return n;
        cr_assert_gt(so->n_messages, 0, "has_more with an empty page");
    }
}

Test(sync_it, messages_sent_over_the_protocol_sync_in_order)
{
    struct gim_client *c = tl_client(&srv);
    struct client_conn a1, a2, b;
    cr_assert_eq(tl_signin(c, &a1, 1, 101, "gw1"), 0);
    cr_assert_eq(tl_signin(c, &a2, 1, 102, "gw2"), 0);
    cr_assert_eq(tl_signin(c, &b, 2, 201, "gw1"), 0);
    exec_sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (77, 'g', 1, 0);"
             "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
             "(77, 1, 'owner', 0), (77, 2, 'member', 0), (77, 3, 'member', 0);");

    char text[32];
    for (int i = 1; i <= 4; i++) {
        snprintf(text, sizeof text, "a->b %d", i);
        cr_assert_eq(send_text(c, &a1, 1000 + i, PB__RECEIVER_TYPE__RT_USER, 2, text, NULL, 0), i,
                     "the sender's copy takes the sender's next seq");
    }
    for (int i = 1; i <= 2; i++) {
        snprintf(text, sizeof text, "b->a %d", i);
        cr_assert_eq(send_text(c, &b, 2000 + i, PB__RECEIVER_TYPE__RT_USER, 1, text, NULL, 0),
                     4 + i);
    }
    static const int64_t mention[] = {2};
    int rt7 = PB__RECEIVER_TYPE__RT_GROUP;
    int64_t to7 = 77;
    cr_assert_eq(send_text(c, &a1, 1005, rt7, to7, "to the group", mention, 1), 7);

    /* User 2's inbox: 4 received, 2 own sends, 1 group message; pages of 3. */
    Pb__SyncOutput *pages[8];
    size_t np = sync_all(c, &b, 0, pages, 8);
    cr_assert_eq(np, 3);
    cr_assert_eq(pages[0]->n_messages, 3);
    cr_assert_eq(pages[1]->n_messages, 3);
    cr_assert_eq(pages[2]->n_messages, 1);
    int64_t want_seq = 1;
    for (size_t p = 0; p < np; p++) {
        for (size_t i = 0; i < pages[p]->n_messages; i++, want_seq++) {
            const Pb__Message *m = pages[p]->messages[i];
            char *got = text_of(m);
            cr_assert_eq(m->seq, want_seq, "user 2's own seqs, ascending");
            cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_TEXT);
            cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
            cr_assert_gt(m->send_time, 0);
            cr_assert_eq(m->sender->sender_type, PB__SENDER_TYPE__ST_USER);
            if (want_seq <= 4) {
                snprintf(text, sizeof text, "a->b %d", (int)want_seq);
                cr_assert_eq(m->sender->sender_id, 1);
                cr_assert_eq(m->sender->device_id, 101);
                cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_USER);
                cr_assert_eq(m->receiver_id, 2);
            } else if (want_seq <= 6) {
                snprintf(text, sizeof text, "b->a %d", (int)want_seq - 4);
                cr_assert_eq(m->sender->sender_id, 2);
                cr_assert_eq(m->receiver_id, 1);
            } else {
                snprintf(text, sizeof text, "to the group");
                cr_assert_eq(m->receiver_type, rt7);
                cr_assert_eq(m->receiver_id, to7, "the group id");
                cr_assert_eq(m->n_to_user_ids, 1);
                cr_assert_eq(m->to_user_ids[0], 2);
            }
            cr_assert_str_eq(got, text);
            free(got);
        }
        pb__sync_output__free_unpacked(pages[p], NULL);
    }
    cr_assert_eq(want_seq, 8);

    /* User 1 acks on device 101; device 102 then starts after it. */
    cr_assert_eq(ack_call(c, &a1, 5), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(ack_call(c, &a1, 8), PB__ERROR_CODE__EC_BAD_REQUEST, "user 1's highest is 7");
    Pb__SyncOutput *so = sync_call(c, &a2, 0);
    cr_assert_eq(so->n_messages, 2);
    cr_assert(!so->has_more);
    cr_assert_eq(so->messages[0]->seq, 6);
    char *got = text_of(so->messages[0]);
    cr_assert_str_eq(got, "b->a 2");
    free(got);
    cr_assert_eq(so->messages[1]->receiver_type, rt7);
    pb__sync_output__free_unpacked(so, NULL);
    /* User 3 never signed in before: the group copy is waiting at seq 1. */
    struct client_conn u3;
    cr_assert_eq(tl_signin(c, &u3, 3, 301, "gw1"), 0);
    so = sync_call(c, &u3, 0);
    cr_assert_eq(so->n_messages, 1);
    cr_assert_eq(so->messages[0]->seq, 1);
    cr_assert_eq(so->messages[0]->sender->sender_id, 1);
    pb__sync_output__free_unpacked(so, NULL);
    client_close(c);
}
