/*
 * Operator kick and erase end to end (PT_ADMIN_KICK, PT_ADMIN_ERASE, and
 * gimctl kick/erase): the real binary over real nng sockets, SUB sockets on
 * its PUB socket as gateways subscribe, the real SQLite file read back with
 * SQL and searched byte by byte (with its WAL) for erased text.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
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

static void start(void)
{
    tl_start(&srv, "");
    cli = tl_client(&srv);
}

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

static int64_t qi(const char *fmt, long long arg)
{
    char buf[512];
    snprintf(buf, sizeof buf, fmt, arg);
    return tl_query_int(srv.db, buf);
}

static void sql(const char *stmt)
{
    tl_exec(&srv, stmt);
}

static char *op_token(void)
{
    char *token = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 60, &token), GIM_OK);
    return token;
}

/* A SUB socket for one gateway's topic, attached before anything is published. */
static nng_socket sub_open(const char *gateway)
{
    nng_socket s;
    char topic[80];
    int n = snprintf(topic, sizeof topic, "%s\n", gateway);
    cr_assert_eq(nng_sub0_open(&s), 0);
    cr_assert_eq(nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, topic, (size_t)n), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000), 0);
    cr_assert_eq(nng_dial(s, srv.pub_url, NULL, 0), 0);
    return s;
}

/*
 * Closes a SUB socket from sub_open(), after the service has stopped (tl_stop).
 *
 * Closing it while the service may still be publishing hangs nng_close() for
 * good in nng 1.5.2 (admin_erase/bad_requests_change_nothing timed out at
 * 60 s, a few runs in a hundred on a loaded machine). SUB filters topics on
 * the receiving side, so the "gwB" sign-out still crosses the "gwA" socket's
 * pipe; when the close came after the ipc transport had read that message's
 * 9-byte header and before its body, ipc_pipe_recv_cb (src/sp/transport/ipc/
 * ipc.c) resubmitted the body read on its rx aio, which ipc_pipe_close had
 * already stopped: nni_aio_begin refuses a stopped aio without completing it,
 * so the SUB pipe's receive stays pending forever and pipe_destroy waits for
 * it in nni_aio_stop (the reaper's stack; the pipe had p_closed set, one
 * message in recv_q, rx_head "\1" + length 40). nng fixed the same bug in
 * tcp for 1.6.0 (nanomsg/nng#1636); Debian ships 1.5.2. Once the service has
 * closed its end, the read fails and the pipe ends through its error path.
 */
static void sub_close(nng_socket s)
{
    cr_assert_eq(srv.pid, 0, "stop the service first (tl_stop): see sub_close");
    nng_close(s);
}

/*
 * Waits for the next PT_SIGN_OUT delivery on s (skipping message pushes) and
 * returns the device it names; -1 when none comes within the timeout.
 */
static int64_t await_sign_out(nng_socket s, int timeout_ms)
{
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms), 0);
    for (;;) {
        nng_msg *m = NULL;
        if (nng_recvmsg(s, &m, 0) != 0)
            return -1;
        const uint8_t *body = nng_msg_body(m);
        size_t len = nng_msg_len(m);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl);
        Pb__Delivery *d = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        nng_msg_free(m);
        cr_assert(d && d->output);
        if (d->output->type != PB__PACKAGE_TYPE__PT_SIGN_OUT) {
            pb__delivery__free_unpacked(d, NULL);
            continue;
        }
        cr_assert_eq(d->n_device_ids, 1);
        cr_assert_eq(d->output->code, PB__ERROR_CODE__EC_UNAUTHENTICATED);
        cr_assert_str_eq(d->output->message, "signed out by an operator");
        int64_t device = d->device_ids[0];
        pb__delivery__free_unpacked(d, NULL);
        return device;
    }
}

static Pb__Output *kick(const char *token, int64_t device)
{
    Pb__AdminKickInput in = PB__ADMIN_KICK_INPUT__INIT;
    in.token = (char *)token;
    in.device_id = device;
    return tl_call(cli, &ops, PB__PACKAGE_TYPE__PT_ADMIN_KICK, 1, &in.base);
}

static int kick_code(const char *token, int64_t device)
{
    Pb__Output *out = kick(token, device);
    int code = out->code;
    pb__output__free_unpacked(out, NULL);
    return code;
}

static int heartbeat(const struct client_conn *c)
{
    return tl_code(cli, c, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL);
}

/* Runs gimctl with args after the global --url/--db/--secret; stdout+stderr into out. */
static int gimctl(char *out, size_t len, const char *fmt, long long arg)
{
    char args[256], cmd[1024];
    snprintf(args, sizeof args, fmt, arg);
    snprintf(cmd, sizeof cmd, "%s --url '%s' --db '%s' --secret " TL_SECRET " %s 2>&1", GIMCTL_BIN,
             srv.url, srv.db, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- kick ---------------------------------------------------------------- */

Test(admin_kick, the_session_ends_and_the_gateway_is_told, .fini = teardown, .timeout = 60)
{
    struct client_conn a, b;
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw1"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw1"), 0);
    nng_socket gw1 = sub_open("gw1");
    usleep(200 * 1000); /* PUB drops what it sends to a pipe not attached yet */
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 1);

    char *token = op_token();
    Pb__Output *out = kick(token, 11);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__AdminKickOutput *ko = pb__admin_kick_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(ko);
    cr_assert_eq(ko->user_id, 1);
    cr_assert(ko->was_online);
    cr_assert_str_eq(ko->gateway_id, "gw1");
    pb__admin_kick_output__free_unpacked(ko, NULL);
    pb__output__free_unpacked(out, NULL);

    /* Its gateway is told to drop exactly that connection. */
    cr_assert_eq(await_sign_out(gw1, 3000), 11);
    /* Offline in the table and in presence: its next request has no session. */
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 0);
    cr_assert_eq(heartbeat(&a), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(&b), 0, "the other device on that gateway is untouched");
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 21), 1);

    /* Again: already offline is still a success (a retried kick), and says so. */
    out = kick(token, 11);
    cr_assert_eq(out->code, 0, "%s", out->message);
    ko = pb__admin_kick_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(ko && !ko->was_online && ko->user_id == 1);
    pb__admin_kick_output__free_unpacked(ko, NULL);
    pb__output__free_unpacked(out, NULL);

    /* A device that never signed in. */
    out = kick(token, 999);
    cr_assert_eq(out->code, PB__ERROR_CODE__EC_NOT_FOUND);
    cr_assert_str_eq(out->message, "kick: no device 999 (it never signed in)");
    pb__output__free_unpacked(out, NULL);
    free(token);

    /* The device signs in again as usual. */
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw1"), 0);
    cr_assert_eq(heartbeat(&a), 0);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    sub_close(gw1);
}

Test(admin_kick, a_bad_operator_token_changes_nothing, .fini = teardown, .timeout = 60)
{
    struct client_conn a;
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw1"), 0);
    nng_socket gw1 = sub_open("gw1");
    usleep(200 * 1000);

    char *user_token = tl_token(1, 11, 60);
    char *expired = NULL, *other_secret = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) - 10, &expired), GIM_OK);
    cr_assert_eq(auth_mint_admin("another-secret", time(NULL) + 60, &other_secret), GIM_OK);
    cr_assert_eq(kick_code(user_token, 11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(kick_code(expired, 11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(kick_code(other_secret, 11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(kick_code("", 11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(kick_code(NULL, 11), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    char *token = op_token();
    cr_assert_eq(kick_code(token, 0), PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(kick_code(token, -3), PB__ERROR_CODE__EC_BAD_REQUEST);
    free(token);
    free(user_token);
    free(expired);
    free(other_secret);

    /* A kick whose write fails (an injected storage error) changes nothing either. */
    if (tl_pg())
        sql("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'injected failure'; END$$;"
            "CREATE TRIGGER boom BEFORE UPDATE ON device FOR EACH ROW WHEN (NEW.online = 0) "
            "EXECUTE FUNCTION boom()");
    else
        sql("CREATE TRIGGER boom BEFORE UPDATE ON device WHEN NEW.online = 0 "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    token = op_token();
    cr_assert_eq(kick_code(token, 11), PB__ERROR_CODE__EC_INTERNAL);

    cr_assert_eq(await_sign_out(gw1, 500), -1, "nobody was told to drop anything");
    cr_assert_eq(qi("SELECT online FROM device WHERE device_id = %lld", 11), 1);
    cr_assert_eq(heartbeat(&a), 0, "the session is intact");
    sql(tl_pg() ? "DROP TRIGGER boom ON device" : "DROP TRIGGER boom");
    cr_assert_eq(kick_code(token, 11), 0);
    cr_assert_eq(await_sign_out(gw1, 3000), 11);
    free(token);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    sub_close(gw1);
}

Test(admin_kick, gimctl_kick, .fini = teardown, .timeout = 60)
{
    struct client_conn a;
    char out[4096];
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw7"), 0);
    cr_assert_eq(gimctl(out, sizeof out, "kick --device %lld", 11), 0, "%s", out);
    cr_assert_str_eq(out, "kicked device=11 user=1 gateway=gw7 online=yes\n");
    cr_assert_eq(heartbeat(&a), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(gimctl(out, sizeof out, "kick --device %lld", 11), 0, "%s", out);
    cr_assert_str_eq(out, "kicked device=11 user=1 gateway=gw7 online=no\n");
    cr_assert_eq(gimctl(out, sizeof out, "kick --device %lld", 404), 1, "%s", out);
    cr_assert(strstr(out, "EC_NOT_FOUND"), "%s", out);
    cr_assert_eq(gimctl(out, sizeof out, "kick", 0), 2, "%s", out);
    cr_assert(strstr(out, "needs --device D"), "%s", out);
    cr_assert_eq(gimctl(out, sizeof out, "kick --device %lld --help", 11), 0, "%s", out);
    cr_assert(strncmp(out, "usage: gimctl kick --device D\n", 30) == 0, "%s", out);
}

/* --- erase --------------------------------------------------------------- */

/* Sends Text{text} and returns the seq of the sender's copy. */
static int64_t send_text(const struct client_conn *conn, int receiver_type, int64_t receiver_id,
                         const char *text, int64_t request_id)
{
    uint8_t content[256];
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = receiver_type;
    m.receiver_id = receiver_id;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = pb__text__pack(&t, content);
    int64_t mention = 3;
    if (receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
        m.to_user_ids = &mention;
        m.n_to_user_ids = 1;
    }
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    cr_assert_eq(out->code, 0, "send failed: %s", out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    cr_assert(reply && reply->message);
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

/*
 * Whether needle can still be read. SQLite: in the database file or its WAL.
 * PostgreSQL: in a row of message or room_message, by SQL on the service's
 * database (what any query can read; what "erased" means there is
 * docs/scale-out.md's: the server's files are its own, not ours to search).
 */
static bool on_disk(const char *needle)
{
    if (tl_pg()) {
        char q[256];
        snprintf(q, sizeof q,
                 "SELECT (SELECT count(*) FROM message WHERE position(convert_to('%s', 'UTF8') IN "
                 "content) > 0) + (SELECT count(*) FROM room_message WHERE "
                 "position(convert_to('%s', 'UTF8') IN content) > 0)",
                 needle, needle);
        return tl_query_int(srv.db, q) > 0;
    }
    return tl_db_files_have(srv.db, needle);
}

/* One erase step; returns the reply code and fills *eo on success (caller frees). */
static int erase_step(const char *token, int64_t user, int max_rows, Pb__AdminEraseOutput **eo)
{
    Pb__AdminEraseInput in = PB__ADMIN_ERASE_INPUT__INIT;
    in.token = (char *)token;
    in.user_id = user;
    in.max_rows = max_rows;
    Pb__Output *out = tl_call(cli, &ops, PB__PACKAGE_TYPE__PT_ADMIN_ERASE, 3, &in.base);
    int code = out->code;
    if (eo)
        *eo =
            code == 0 ? pb__admin_erase_output__unpack(NULL, out->data.len, out->data.data) : NULL;
    if (eo && code == 0)
        cr_assert_not_null(*eo);
    pb__output__free_unpacked(out, NULL);
    return code;
}

/* The sync page of conn from seq 0 of its history (no acks are made in these tests). */
static Pb__SyncOutput *sync_all(const struct client_conn *conn)
{
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_SYNC, 4, &in.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(so);
    cr_assert_not(so->has_more);
    pb__output__free_unpacked(out, NULL);
    return so;
}

static const Pb__Message *at_seq(const Pb__SyncOutput *so, int64_t seq)
{
    for (size_t i = 0; i < so->n_messages; i++)
        if (so->messages[i]->seq == seq)
            return so->messages[i];
    cr_assert_fail("no message at seq %lld", (long long)seq);
    return NULL;
}

static bool has_text(const Pb__Message *m, const char *text)
{
    return m->message_content.len &&
           memmem(m->message_content.data, m->message_content.len, text, strlen(text));
}

/* Alice (user 1; devices 11 at gwA, 12 at gwB) talks to bob (2), carol (3), group 60, room 30. */
struct world {
    struct client_conn a1, a2, b, c;
    char secret[4][64]; /* alice's own texts: to bob, to the group, to herself, in the room */
    int64_t a_to_b_seq_b, b_to_a_seq_b, a_group_seq_b, c_group_seq_b, a_room_seq;
    int64_t alice_last_seq;
};

static void build_world(struct world *w)
{
    start();
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (int i = 0; i < 4; i++)
        snprintf(w->secret[i], sizeof w->secret[i], "ALICE-SECRET-%d-%08x%08x", i, (unsigned)rand(),
                 (unsigned)rand());
    cr_assert_eq(tl_signin(cli, &w->a1, 1, 11, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &w->a2, 1, 12, "gwB"), 0);
    cr_assert_eq(tl_signin(cli, &w->b, 2, 21, "gwC"), 0);
    cr_assert_eq(tl_signin(cli, &w->c, 3, 31, "gwC"), 0);
    sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (60, 'g', 2, 0);"
        "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
        "(60, 2, 'owner', 0), (60, 1, 'member', 0), (60, 3, 'member', 0);"
        "INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (61, 'h', 1, 0);"
        "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
        "(61, 1, 'owner', 0);");

    int64_t s = send_text(&w->a1, PB__RECEIVER_TYPE__RT_USER, 2, w->secret[0], 101);
    (void)s;
    send_text(&w->b, PB__RECEIVER_TYPE__RT_USER, 1, "bob to alice, bob's words", 201);
    send_text(&w->a2, PB__RECEIVER_TYPE__RT_GROUP, 60, w->secret[1], 102);
    send_text(&w->c, PB__RECEIVER_TYPE__RT_GROUP, 60, "carol to the group", 301);
    send_text(&w->a1, PB__RECEIVER_TYPE__RT_USER, 1, w->secret[2], 103);
    /* Bob takes one back: a recall notice in each inbox (alice 7, bob 6). */
    int64_t taken = send_text(&w->b, PB__RECEIVER_TYPE__RT_USER, 1, "bob takes this back", 204);
    Pb__RecallInput ri = PB__RECALL_INPUT__INIT;
    ri.seq = taken;
    cr_assert_eq(tl_code(cli, &w->b, PB__PACKAGE_TYPE__PT_RECALL, 205, &ri.base), 0);
    /* Bob's inbox: 1 alice's, 2 his own to alice, 3 alice's group text, 4 carol's, 5 his
     * recalled one, 6 its notice. */
    w->a_to_b_seq_b = 1;
    w->b_to_a_seq_b = 2;
    w->a_group_seq_b = 3;
    w->c_group_seq_b = 4;
    cr_assert_eq(taken, 5);

    Pb__SubscribeRoomInput sub = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    sub.room_id = 30;
    cr_assert_eq(tl_code(cli, &w->a1, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 5, &sub.base), 0);
    cr_assert_eq(tl_code(cli, &w->b, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 5, &sub.base), 0);
    w->a_room_seq = send_text(&w->a1, PB__RECEIVER_TYPE__RT_ROOM, 30, w->secret[3], 104);
    send_text(&w->b, PB__RECEIVER_TYPE__RT_ROOM, 30, "bob in the room", 202);
    w->alice_last_seq = qi("SELECT seq FROM user_last_seq WHERE user_id = %lld", 1);
    cr_assert_eq(w->alice_last_seq, 7, "5 messages, bob's recalled one and its notice");
    cr_assert_eq(qi("SELECT count(*) FROM idempotency WHERE device_id IN (11, %lld)", 12), 4);
    for (int i = 0; i < 4; i++)
        cr_assert(on_disk(w->secret[i]),
                  "text %d must be on disk first (else the erasure test proves nothing)", i);
}

/* What everyone else sees once alice is erased. */
static void check_erased(struct world *w)
{
    /* Alice's rows. */
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 0);
    /* Her send records are keyed by request id first (migrations/0009): the erasure leaves
     * them to the idempotency sweep, which prunes every record of a device without a row
     * (test_retention.c). None may be one the sweep keeps. */
    cr_assert_eq(qi("SELECT count(*) FROM idempotency i WHERE device_id IN (11, %lld) AND "
                    "EXISTS (SELECT 1 FROM device d WHERE d.device_id = i.device_id)",
                    12),
                 0);
    cr_assert_eq(qi("SELECT count(*) FROM room_idempotency WHERE device_id IN (11, %lld)", 12), 0);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE user_id = %lld", 1), 0);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 0);
    cr_assert_eq(qi("SELECT count(*) FROM group_copy WHERE user_id = %lld", 1), 0);
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE sender_type = 2 AND sender_id = %lld AND "
                    "(content IS NOT NULL OR to_user_ids IS NOT NULL OR status <> 2)",
                    1),
                 0);
    /* The seq counter stays: a returning id goes on from 5. */
    cr_assert_eq(qi("SELECT seq FROM user_last_seq WHERE user_id = %lld", 1), w->alice_last_seq);
    cr_assert_eq(qi("SELECT finished_at > 0 FROM erasure WHERE user_id = %lld", 1), 1);
    /* The groups stay, without her. */
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE group_id = %lld", 60), 2);
    cr_assert_eq(qi("SELECT count(*) FROM chat_group WHERE group_id = %lld", 61), 1);

    /* Bob's view: alice's messages erased in place, no notices, his own and carol's intact. */
    Pb__SyncOutput *so = sync_all(&w->b);
    cr_assert_eq(so->n_messages, 6, "no notices were added to bob's inbox");
    const Pb__Message *m = at_seq(so, 6);
    cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_COMMAND, "bob's own recall notice stays");
    cr_assert_gt(m->message_content.len, 0);
    cr_assert_eq(at_seq(so, 5)->status, PB__MESSAGE_STATUS__MS_RECALL);
    m = at_seq(so, w->a_to_b_seq_b);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(m->message_content.len, 0);
    cr_assert_eq(m->sender->sender_id, 1);
    m = at_seq(so, w->a_group_seq_b);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(m->message_content.len, 0);
    cr_assert_eq(m->n_to_user_ids, 0, "her @mentions went too");
    m = at_seq(so, w->b_to_a_seq_b);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert(has_text(m, "bob to alice, bob's words"), "bob's own words stay his");
    cr_assert(has_text(at_seq(so, w->c_group_seq_b), "carol to the group"));
    pb__sync_output__free_unpacked(so, NULL);

    /* The room log: her message keeps its seq, without content; bob's stays. */
    Pb__SubscribeRoomInput sub = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    sub.room_id = 30;
    Pb__Output *out = tl_call(cli, &w->b, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 6, &sub.base);
    cr_assert_eq(out->code, 0, "%s", out->message);
    so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert(so && so->n_messages == 2);
    m = at_seq(so, w->a_room_seq);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(m->message_content.len, 0);
    cr_assert(has_text(so->messages[1], "bob in the room"));
    pb__sync_output__free_unpacked(so, NULL);
    pb__output__free_unpacked(out, NULL);

    /* Alice's devices have no session any more. */
    cr_assert_eq(heartbeat(&w->a1), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(&w->a2), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(heartbeat(&w->b), 0);

    /* Erased, not hidden: gone from the database file and its WAL within 5 s. */
    bool gone = false;
    for (int i = 0; i < 50 && !gone; i++) {
        gone = true;
        for (int k = 0; k < 4; k++)
            gone = gone && !on_disk(w->secret[k]);
        if (!gone)
            usleep(100 * 1000);
    }
    for (int k = 0; k < 4; k++)
        cr_assert_not(on_disk(w->secret[k]), "alice's text %d is still on disk", k);
}

Test(admin_erase, in_bounded_steps_resumable_and_idempotent, .fini = teardown, .timeout = 90)
{
    struct world w;
    build_world(&w);
    nng_socket gwA = sub_open("gwA"), gwB = sub_open("gwB");
    usleep(200 * 1000);
    char *token = op_token();

    /* Two rows per step (idempotency records count too): many steps, each its own
     * transaction, each leaving a consistent state; run until half the inbox is gone. */
    Pb__AdminEraseOutput *eo = NULL;
    int64_t devices = 0, memberships = 0;
    int small_steps = 0;
    while (qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1) == 7) {
        cr_assert_lt(small_steps++, 20);
        cr_assert_eq(erase_step(token, 1, 2, &eo), 0);
        cr_assert_not(eo->done);
        cr_assert_leq(eo->devices + eo->memberships + eo->inbox_entries, 2);
        devices += eo->devices;
        memberships += eo->memberships;
        pb__admin_erase_output__free_unpacked(eo, NULL);
    }
    cr_assert_geq(small_steps, 2, "devices, their room record and 2 memberships came first");
    cr_assert_eq(devices, 2);
    cr_assert_eq(memberships, 2);
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 0);
    /* The step that took the second membership had one row of budget left: one entry. */
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE user_id = %lld", 1), 6, "part-way");
    cr_assert_eq(await_sign_out(gwA, 3000), 11);
    cr_assert_eq(await_sign_out(gwB, 3000), 12);

    /* Interrupted here; anyone asking again later finishes it (the default step size). */
    int64_t totals[6] = {0};
    int steps = 0;
    for (bool done = false; !done; steps++) {
        cr_assert_lt(steps, 10);
        cr_assert_eq(erase_step(token, 1, 0, &eo), 0);
        done = eo->done;
        totals[0] += eo->devices;
        totals[1] += eo->memberships;
        totals[2] += eo->inbox_entries;
        totals[3] += eo->messages_erased;
        totals[4] += eo->messages_deleted;
        totals[5] += eo->room_messages_erased;
        pb__admin_erase_output__free_unpacked(eo, NULL);
    }
    cr_assert_eq(steps, 1, "the default step finishes this small user at once");
    cr_assert_eq(totals[2], 6);
    cr_assert_eq(totals[4], 2, "her note to self and her copy of bob's recall notice");
    cr_assert_eq(totals[5], 1, "her one room message");
    check_erased(&w);

    /* A retry of a finished erasure changes nothing and is done at once. */
    int64_t messages = qi("SELECT count(*) FROM message WHERE %lld = 1", 1);
    int64_t inbox = qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1);
    cr_assert_eq(erase_step(token, 1, 0, &eo), 0);
    cr_assert(eo->done);
    cr_assert_eq(eo->devices + eo->memberships + eo->inbox_entries + eo->messages_erased +
                     eo->messages_deleted + eo->room_messages_erased,
                 0);
    pb__admin_erase_output__free_unpacked(eo, NULL);
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE %lld = 1", 1), messages);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1), inbox);
    free(token);

    /* The id may come back: its seqs go on, never reused. */
    struct client_conn again;
    cr_assert_eq(tl_signin(cli, &again, 1, 13, "gwA"), 0);
    cr_assert_eq(send_text(&w.b, PB__RECEIVER_TYPE__RT_USER, 1, "welcome back", 203),
                 qi("SELECT seq FROM user_last_seq WHERE user_id = %lld", 2));
    cr_assert_eq(qi("SELECT max(seq) FROM inbox WHERE user_id = %lld", 1), w.alice_last_seq + 1);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    sub_close(gwA);
    sub_close(gwB);
}

Test(admin_erase, bad_requests_change_nothing, .fini = teardown, .timeout = 60)
{
    struct world w;
    build_world(&w);
    int64_t inbox = qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1);
    int64_t erased = qi("SELECT count(*) FROM message WHERE content IS NULL AND %lld = 1", 1);
    cr_assert_eq(erased, 1);
    char *user_token = tl_token(1, 11, 60);
    cr_assert_eq(erase_step(user_token, 1, 0, NULL), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(erase_step("junk", 1, 0, NULL), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    cr_assert_eq(erase_step(NULL, 1, 0, NULL), PB__ERROR_CODE__EC_UNAUTHENTICATED);
    free(user_token);
    char *token = op_token();
    cr_assert_eq(erase_step(token, 0, 0, NULL), PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(erase_step(token, 1, -1, NULL), PB__ERROR_CODE__EC_BAD_REQUEST);
    cr_assert_eq(erase_step(token, 1, 10001, NULL), PB__ERROR_CODE__EC_BAD_REQUEST);
    free(token);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1), inbox);
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 2);
    cr_assert_eq(qi("SELECT count(*) FROM erasure WHERE %lld = 1", 1), 0);
    cr_assert_eq(heartbeat(&w.a1), 0);

    /* A step that fails half-way (alice's note to self cannot be deleted) is undone whole:
     * her devices, sessions and inbox are all still there. */
    nng_socket gwA = sub_open("gwA");
    usleep(200 * 1000);
    if (tl_pg())
        sql("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'injected failure'; END$$;"
            "CREATE TRIGGER boom BEFORE DELETE ON message FOR EACH ROW EXECUTE FUNCTION boom()");
    else
        sql("CREATE TRIGGER boom BEFORE DELETE ON message "
            "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    token = op_token();
    cr_assert_eq(erase_step(token, 1, 0, NULL), PB__ERROR_CODE__EC_INTERNAL);
    cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1), inbox);
    cr_assert_eq(qi("SELECT count(*) FROM device WHERE user_id = %lld", 1), 2);
    cr_assert_eq(qi("SELECT count(*) FROM group_member WHERE user_id = %lld", 1), 2);
    cr_assert_eq(qi("SELECT count(*) FROM message WHERE content IS NULL AND %lld = 1", 1), erased,
                 "only bob's recall had erased anything");
    cr_assert_eq(qi("SELECT count(*) FROM erasure WHERE %lld = 1", 1), 0);
    cr_assert_eq(heartbeat(&w.a1), 0);
    cr_assert_eq(await_sign_out(gwA, 500), -1, "no gateway was told anything");
    sql(tl_pg() ? "DROP TRIGGER boom ON message" : "DROP TRIGGER boom");
    Pb__AdminEraseOutput *eo = NULL;
    cr_assert_eq(erase_step(token, 1, 0, &eo), 0);
    cr_assert(eo->done);
    pb__admin_erase_output__free_unpacked(eo, NULL);
    cr_assert_eq(await_sign_out(gwA, 3000), 11);
    free(token);
    check_erased(&w);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    sub_close(gwA);
}

Test(admin_erase, gimctl_erase, .fini = teardown, .timeout = 90)
{
    struct world w;
    char out[4096];
    build_world(&w);
    int64_t inbox = qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1);

    /* Without --yes: what would go, and nothing goes. (The preview reads the --db file, a
     * SQLite file: not on PostgreSQL, docs/scale-out.md; --yes goes through the service.) */
    if (!tl_pg()) {
        cr_assert_eq(gimctl(out, sizeof out, "erase --user %lld", 1), 2, "%s", out);
        cr_assert(strstr(out, "would erase user 1:\n"), "%s", out);
        cr_assert(strstr(out, "devices (signed out)"), "%s", out);
        cr_assert(strstr(out, "add --yes"), "%s", out);
        const char *l = strstr(out, "inbox entries");
        cr_assert(l && strtol(l + strlen("inbox entries"), NULL, 10) == 7, "%s", out);
        cr_assert_eq(qi("SELECT count(*) FROM inbox WHERE %lld = 1", 1), inbox);
        cr_assert_eq(heartbeat(&w.a1), 0);
    }

    cr_assert_eq(gimctl(out, sizeof out, "erase --user %lld --yes --step 1", 1), 0, "%s", out);
    const char *want = "erased user=1 devices=2 memberships=2 inbox_entries=7 messages_erased=2 "
                       "messages_deleted=2 room_messages_erased=1 steps=";
    cr_assert(strncmp(out, want, strlen(want)) == 0, "%s", out);
    cr_assert(strstr(out, " room_messages_erased=1 "), "%s", out);
    cr_assert_eq(strtol(strstr(out, "steps=") + 6, NULL, 10) > 5, 1, "one row per step: %s", out);
    check_erased(&w);

    cr_assert_eq(gimctl(out, sizeof out, "erase --yes --user %lld", 1), 0, "%s", out);
    cr_assert(strstr(out, "inbox_entries=0 ") && strstr(out, " steps=1\n"), "%s", out);
    cr_assert_eq(gimctl(out, sizeof out, "erase --help", 0), 0, "%s", out);
    cr_assert(strncmp(out, "usage: gimctl erase --user U --yes", 34) == 0, "%s", out);
}
