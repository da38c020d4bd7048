/*
 * Rooms in-process: PT_SUBSCRIBE_ROOM and RT_ROOM sends go through
 * dispatch_begin (decode, authenticate, prepare) and their jobs run through
 * writer_run_batch on a temp database, exactly as on the writer thread, with
 * a clock the tests move. Devices sign in through the real sign-in handler,
 * so their device rows and sessions are what the service would have.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "dispatch.h"
#include "handlers.h"
#include "maint.h"
#include "presence.h"
#include "seq.h"
#include "store.h"
#include "writer.h"

#define SECRET "room-unit-secret"

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db;
static struct seq *sq;
static struct presence *pres;
static struct wctx w;
static struct dispatch disp;
static int64_t clock_ms = 1700000000000;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return clock_ms;
}

static void on_write_done(struct request *r)
{
    (void)r;
}

static void setup(void)
{
    char err[256] = "", path[128];
    snprintf(dir, sizeof dir, "/tmp/gimroom-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    free(cfg.auth.secret);
    cfg.auth.secret = strdup(SECRET);
    cfg.sync.page_size = 2;
    cfg.sync.max_bytes = 1024;
    cfg.limits.max_content_bytes = 4000;
    cfg.idempotency.window_seconds = 60;
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&sq), GIM_OK);
    cr_assert_eq(presence_open(&pres), GIM_OK);
    struct gim_clock clk = {.now_ms = test_clock};
    w = (struct wctx){.db = db, .seq = sq, .cfg = &cfg, .presence = pres, .clock = clk};
    disp =
        (struct dispatch){.cfg = &cfg, .presence = pres, .clock = clk, .write_done = on_write_done};
}

static void teardown(void)
{
    char cmd[128];
    presence_close(pres);
    seq_close(sq);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(room, .init = setup, .fini = teardown);

static int64_t q(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db->db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

/* A device as the tests name it: user, device, gateway. */
struct dev {
    int64_t user, device;
    const char *gw;
};

static const struct dev A = {1, 11, "gwA"}, B = {2, 21, "gwB"}, C = {3, 31, "gwC"};

/* One request as a gateway would send it; begins it in r and returns dispatch's decision. */
static enum dispatch_next begin(struct request *r, const struct dev *d, int type,
                                int64_t request_id, const ProtobufCMessage *data)
{
    uint8_t payload[8192], buf[8400];
    Pb__Input in = PB__INPUT__INIT;
    in.type = type;
    in.request_id = request_id;
    if (data) {
        cr_assert_lt(protobuf_c_message_get_packed_size(data), sizeof payload);
        in.data.data = payload;
        in.data.len = protobuf_c_message_pack(data, payload);
    }
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = d->user;
    env.device_id = d->device;
    env.gateway_id = (char *)d->gw;
    env.input = &in;
    size_t len = pb__gateway_request__pack(&env, buf);
    memset(r, 0, sizeof *r);
    return dispatch_begin(&disp, r, buf, len, NULL);
}

/* Runs r[0..n) (all begun, all writes) as one writer batch. */
static void batch(struct request *r, int n)
{
    struct write_job *jobs[8];
    cr_assert(n <= 8);
    for (int i = 0; i < n; i++)
        jobs[i] = &r[i].job;
    writer_run_batch(&w, jobs, n);
}

static void reset_all(struct request *r, int n)
{
    for (int i = 0; i < n; i++)
        request_reset(&r[i]);
}

static void sign_in(const struct dev *d)
{
    char *token = NULL;
    cr_assert_eq(auth_mint(SECRET, d->user, d->device, (int64_t)time(NULL) + 600, &token), GIM_OK);
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = d->user;
    in.device_id = d->device;
    in.token = token;
    struct request r;
    cr_assert_eq(begin(&r, d, PB__PACKAGE_TYPE__PT_SIGN_IN, 1, &in.base), DISPATCH_WRITE, "%s",
                 r.errmsg);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    request_reset(&r);
    free(token);
}

static void begin_subscribe(struct request *r, const struct dev *d, int64_t room, int64_t seq)
{
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = room;
    in.seq = seq;
    cr_assert_eq(begin(r, d, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 7, &in.base), DISPATCH_WRITE,
                 "%s", r->errmsg);
}

static void begin_send(struct request *r, const struct dev *d, int64_t room, int64_t request_id,
                       const char *content)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
    m.receiver_id = room;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)content;
    m.message_content.len = strlen(content);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    cr_assert_eq(begin(r, d, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base), DISPATCH_WRITE,
                 "%s", r->errmsg);
}

/* Subscribes in a batch of its own; returns the page (caller frees) after checking EC_OK. */
static Pb__SyncOutput *subscribe(const struct dev *d, int64_t room, int64_t seq)
{
    struct request r;
    begin_subscribe(&r, d, room, seq);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    Pb__SyncOutput *page = pb__sync_output__unpack(NULL, r.out_len, r.out);
    cr_assert_not_null(page);
    request_reset(&r);
    return page;
}

/* Sends in a batch of its own; returns the room seq of the reply, or -code. */
static int64_t send1(const struct dev *d, int64_t room, int64_t request_id, const char *content)
{
    struct request r;
    begin_send(&r, d, room, request_id, content);
    batch(&r, 1);
    int64_t seq = -(int64_t)r.code;
    if (r.code == GIM_OK) {
        Pb__MessageSend *ms = pb__message_send__unpack(NULL, r.out_len, r.out);
        cr_assert_not_null(ms);
        cr_assert_not_null(ms->message);
        seq = ms->message->seq;
        pb__message_send__free_unpacked(ms, NULL);
    }
    request_reset(&r);
    return seq;
}

static int64_t device_room(int64_t device)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT room_id FROM device WHERE device_id = %lld",
             (long long)device);
    return q(sql);
}

static size_t in_room(int64_t room)
{
    return presence_room_sessions(pres, room, NULL, 0);
}

/* The seqs of a page, as "1,2,3" ("" when empty). */
static const char *seqs_of(const Pb__SyncOutput *p, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < p->n_messages; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", i ? "," : "",
                               (long long)p->messages[i]->seq);
    return buf;
}

Test(room, subscribe_records_the_row_and_presence_and_leave_clears_them)
{
    sign_in(&A);
    Pb__SyncOutput *p = subscribe(&A, 5, 0);
    cr_assert_eq(p->n_messages, 0, "an empty room");
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    cr_assert_eq(device_room(11), 5);
    cr_assert_eq(q("SELECT updated_at FROM device WHERE device_id = 11"), clock_ms);
    cr_assert_eq(in_room(5), 1);
    struct session s;
    cr_assert_eq(presence_check(pres, 1, 11, "gwA", clock_ms, &s), GIM_OK);
    cr_assert_eq(s.room_id, 5);

    /* One room at a time: joining 6 leaves 5. */
    pb__sync_output__free_unpacked(subscribe(&A, 6, 0), NULL);
    cr_assert_eq(device_room(11), 6);
    cr_assert_eq(in_room(5), 0);
    cr_assert_eq(in_room(6), 1);

    /* room_id 0 leaves; the reply carries no data. */
    struct request r;
    begin_subscribe(&r, &A, 0, 0);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    cr_assert_eq(r.out_len, 0);
    request_reset(&r);
    cr_assert_eq(device_room(11), 0);
    cr_assert_eq(in_room(6), 0);
    size_t sessions = 0, rooms = 9;
    presence_counts(pres, &sessions, &rooms);
    cr_assert_eq(sessions, 1, "leaving a room keeps the session");
    cr_assert_eq(rooms, 0);
}

Test(room, bad_subscriptions_are_refused_before_any_write)
{
    sign_in(&A);
    struct request r;
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = -1;
    cr_assert_eq(begin(&r, &A, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &in.base), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert_str_eq(r.errmsg, "room: room_id must be >= 0, got -1");
    request_reset(&r);
    in.room_id = 5;
    in.seq = -3;
    cr_assert_eq(begin(&r, &A, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &in.base), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert_str_eq(r.errmsg, "room: seq must be >= 0, got -3");
    request_reset(&r);
    /* Bytes that are not a SubscribeRoomInput (a truncated varint). */
    Pb__Text junk = PB__TEXT__INIT;
    junk.text = "\xff";
    cr_assert_eq(begin(&r, &A, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &junk.base), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EBADREQ, "%s", r.errmsg);
    request_reset(&r);
    /* A stranger is not authenticated. */
    in.seq = 0;
    cr_assert_eq(begin(&r, &B, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &in.base), DISPATCH_REPLY);
    cr_assert_eq(r.code, GIM_EUNAUTH);
    request_reset(&r);
    cr_assert_eq(device_room(11), 0);
    cr_assert_eq(in_room(5), 0);
}

Test(room, send_needs_a_subscription_to_that_room)
{
    sign_in(&A);
    int64_t rows = q("SELECT count(*) FROM room_message");
    cr_assert_eq(send1(&A, 5, 1, "hi"), -GIM_EFORBIDDEN);
    pb__sync_output__free_unpacked(subscribe(&A, 6, 0), NULL);
    cr_assert_eq(send1(&A, 5, 2, "hi"), -GIM_EFORBIDDEN, "subscribed to another room");
    cr_assert_eq(q("SELECT count(*) FROM room_message"), rows);
    cr_assert_eq(q("SELECT count(*) FROM room_seq"), 0, "no room seq was taken");
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 0);
    cr_assert_eq(send1(&A, 6, 3, "hi"), 1);
}

Test(room, a_send_is_one_log_entry_with_the_room_seq)
{
    sign_in(&A);
    sign_in(&B);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    pb__sync_output__free_unpacked(subscribe(&B, 5, 0), NULL);
    struct request r;
    begin_send(&r, &A, 5, 1, "hello");
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, r.out_len, r.out);
    cr_assert_not_null(ms);
    const Pb__Message *m = ms->message;
    cr_assert_eq(m->seq, 1);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_ROOM);
    cr_assert_eq(m->receiver_id, 5);
    cr_assert_eq(m->sender->sender_id, 1);
    cr_assert_eq(m->sender->device_id, 11);
    cr_assert_eq(m->send_time, clock_ms);
    pb__message_send__free_unpacked(ms, NULL);
    request_reset(&r);

    cr_assert_eq(send1(&B, 5, 1, "hey"), 2, "the room's seq, whoever sends");
    cr_assert_eq(send1(&A, 5, 2, "again"), 3);
    cr_assert_eq(q("SELECT count(*) FROM room_message WHERE room_id = 5"), 3);
    cr_assert_eq(q("SELECT seq FROM room_seq WHERE room_id = 5"), 3);
    cr_assert_eq(q("SELECT count(*) FROM message") + q("SELECT count(*) FROM inbox"), 0,
                 "read diffusion: no inbox copies");
    cr_assert_eq(q("SELECT count(*) FROM user_last_seq"), 0);
    cr_assert_eq(q("SELECT sender_device_id FROM room_message WHERE room_id = 5 AND seq = 2"), 21);

    /* A room page shows them as the replies did. */
    Pb__SyncOutput *p = subscribe(&B, 5, 1);
    cr_assert_eq(p->n_messages, 2);
    cr_assert_eq(p->messages[0]->seq, 2);
    cr_assert_eq(p->messages[0]->receiver_type, PB__RECEIVER_TYPE__RT_ROOM);
    cr_assert_eq(p->messages[0]->receiver_id, 5);
    cr_assert_eq(p->messages[0]->sender->sender_id, 2);
    cr_assert_eq(p->messages[0]->status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_eq(p->messages[1]->message_content.len, 5);
    cr_assert_eq(memcmp(p->messages[1]->message_content.data, "again", 5), 0);
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
}

Test(room, pages_follow_count_and_bytes_with_has_more)
{
    char buf[64];
    sign_in(&A);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    for (int i = 1; i <= 5; i++)
        cr_assert_eq(send1(&A, 5, i, "x"), i);
    /* page_size 2 */
    Pb__SyncOutput *p = subscribe(&A, 5, 0);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "1,2");
    cr_assert(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&A, 5, 2);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "3,4");
    cr_assert(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&A, 5, 4);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "5");
    cr_assert_not(p->has_more, "exactly when more remain");
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&A, 5, 5);
    cr_assert_eq(p->n_messages, 0);
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);

    /* max_bytes 1024: two 600-byte messages do not fit one page; a 2000-byte one goes alone. */
    char big[2001];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char mid[601];
    memset(mid, 'm', sizeof mid - 1);
    mid[sizeof mid - 1] = 0;
    cr_assert_eq(send1(&A, 5, 6, mid), 6);
    cr_assert_eq(send1(&A, 5, 7, mid), 7);
    cr_assert_eq(send1(&A, 5, 8, big), 8);
    p = subscribe(&A, 5, 5);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "6");
    cr_assert(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    p = subscribe(&A, 5, 7);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "8", "over the budget, alone");
    cr_assert_eq(p->messages[0]->message_content.len, 2000);
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
}

Test(room, retention_prunes_exactly_the_oldest)
{
    char buf[64];
    cfg.rooms.retain_messages = 5;
    cfg.sync.page_size = 50;
    sign_in(&A);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    pb__sync_output__free_unpacked(subscribe(&A, 6, 0), NULL);
    cr_assert_eq(send1(&A, 6, 100, "other room"), 1);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    for (int i = 1; i <= 8; i++)
        cr_assert_eq(send1(&A, 5, i, "x"), i);
    Pb__SyncOutput *p = subscribe(&A, 5, 0);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "4,5,6,7,8");
    cr_assert_not(p->has_more);
    pb__sync_output__free_unpacked(p, NULL);
    cr_assert_eq(q("SELECT count(*) FROM room_message WHERE room_id = 5"), 5);
    cr_assert_eq(q("SELECT count(*) FROM room_message WHERE room_id = 6"), 1, "other rooms kept");
    cr_assert_eq(q("SELECT seq FROM room_seq WHERE room_id = 5"), 8, "seqs are never reused");
    cr_assert_eq(send1(&A, 5, 9, "x"), 9);
    p = subscribe(&A, 5, 3);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "5,6,7,8,9", "asking from before the log");
    pb__sync_output__free_unpacked(p, NULL);
}

Test(room, retries_replay_the_room_seq_and_store_nothing)
{
    cfg.rooms.retain_messages = 2;
    sign_in(&A);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    cr_assert_eq(send1(&A, 5, 77, "first"), 1);
    cr_assert_eq(send1(&A, 5, 78, "second"), 2);
    int64_t rows = q("SELECT count(*) FROM room_message");
    cr_assert_eq(send1(&A, 5, 77, "first"), 1, "the same request: the same seq");
    cr_assert_eq(q("SELECT count(*) FROM room_message"), rows);
    cr_assert_eq(q("SELECT seq FROM room_seq WHERE room_id = 5"), 2);
    cr_assert_eq(q("SELECT room_seq FROM room_idempotency WHERE request_id = 77"), 1);
    cr_assert_eq(q("SELECT message_id IS NULL FROM idempotency WHERE request_id = 77"), 1);

    /* A replay is answered even after the sender left the room. */
    pb__sync_output__free_unpacked(subscribe(&A, 0, 0), NULL);
    cr_assert_eq(send1(&A, 5, 78, "second"), 2);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);

    /* Pruned by retention (keep 2): the retry cannot be rebuilt, and says so. */
    cr_assert_eq(send1(&A, 5, 79, "third"), 3);
    cr_assert_eq(send1(&A, 5, 77, "first"), -GIM_ENOTFOUND);
    cr_assert_eq(q("SELECT seq FROM room_seq WHERE room_id = 5"), 3);
}

/*
 * Issue 11, scenario 7: a stale idempotency record of another user blocks a
 * send. Device 11 sends a room message as user 1 with request_id R; the
 * room log prunes it; device 11 signs in as user 2 and sends a 1:1 message
 * with the same R. The record is user 1's: it must not answer user 2's
 * send (it did, with EC_NOT_FOUND, and nothing was stored).
 */
Test(room, a_pruned_record_of_another_user_of_the_device_does_not_count)
{
    const struct dev A2 = {2, 11, "gwA"}; /* device 11 again, signed in as user 2 */
    cfg.rooms.retain_messages = 1;
    sign_in(&A);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    cr_assert_eq(send1(&A, 5, 4242, "user 1 in the room"), 1);
    cr_assert_eq(send1(&A, 5, 4243, "pushes the first out"), 2);
    cr_assert_eq(q("SELECT count(*) FROM room_message WHERE seq = 1"), 0, "pruned");
    cr_assert_eq(q("SELECT count(*) FROM idempotency WHERE device_id = 11 AND request_id = 4242"),
                 1, "the record outlives the room entry");

    sign_in(&A2);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 3;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)"user 2 to user 3";
    m.message_content.len = strlen("user 2 to user 3");
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    struct request r;
    cr_assert_eq(begin(&r, &A2, PB__PACKAGE_TYPE__PT_MESSAGE, 4242, &ms.base), DISPATCH_WRITE, "%s",
                 r.errmsg);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "user 2's send answered by user 1's record: %s", r.errmsg);
    request_reset(&r);
    cr_assert_eq(q("SELECT count(*) FROM message WHERE sender_id = 2 AND receiver_id = 3"), 1);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 3"), 1);
    cr_assert_eq(q("SELECT message_id IS NOT NULL FROM idempotency "
                   "WHERE device_id = 11 AND request_id = 4242"),
                 1, "the new send's record replaced the stale one");

    /* And the new record answers user 2's retry, storing nothing more. */
    cr_assert_eq(begin(&r, &A2, PB__PACKAGE_TYPE__PT_MESSAGE, 4242, &ms.base), DISPATCH_WRITE, "%s",
                 r.errmsg);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    request_reset(&r);
    cr_assert_eq(q("SELECT count(*) FROM message WHERE sender_id = 2"), 1);
}

Test(room, a_failed_send_gives_its_room_seq_back)
{
    sign_in(&A);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    /* A stray row makes the second send's insert collide after it took seq 2. */
    cr_assert_eq(store_exec(db, "INSERT INTO room_message (room_id, seq, sender_type, sender_id, "
                                "sender_device_id, message_type, content, send_time) "
                                "VALUES (5, 2, 2, 9, 9, 1, x'00', 0)"),
                 GIM_OK);
    struct request r[2];
    begin_send(&r[0], &A, 5, 1, "ok");
    begin_send(&r[1], &A, 5, 2, "collides");
    batch(r, 2);
    cr_assert_eq(r[0].code, GIM_OK);
    cr_assert_neq(r[1].code, GIM_OK);
    cr_assert_null(r[1].out);
    reset_all(r, 2);
    cr_assert_eq(q("SELECT seq FROM room_seq WHERE room_id = 5"), 1);
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 1);
    cr_assert_eq(store_exec(db, "DELETE FROM room_message WHERE sender_id = 9"), GIM_OK);
    cr_assert_eq(send1(&A, 5, 3, "next"), 2, "no gap");
}

Test(room, same_batch_order_decides_between_page_and_push)
{
    char buf[64];
    sign_in(&A);
    sign_in(&B);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    /* A send before B's subscribe is in B's page; one after it is not (it is pushed). */
    struct request r[3];
    begin_send(&r[0], &A, 5, 1, "before");
    begin_subscribe(&r[1], &B, 5, 0);
    begin_send(&r[2], &A, 5, 2, "after");
    batch(r, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(r[i].code, GIM_OK, "%d: %s", i, r[i].errmsg);
    Pb__SyncOutput *p = pb__sync_output__unpack(NULL, r[1].out_len, r[1].out);
    cr_assert_str_eq(seqs_of(p, buf, sizeof buf), "1");
    pb__sync_output__free_unpacked(p, NULL);
    reset_all(r, 3);

    /* A subscribe and a send of the same device in one batch: the send sees the subscription. */
    begin_subscribe(&r[0], &B, 6, 0);
    begin_send(&r[1], &B, 6, 3, "joined");
    batch(r, 2);
    cr_assert_eq(r[0].code, GIM_OK, "%s", r[0].errmsg);
    cr_assert_eq(r[1].code, GIM_OK, "%s", r[1].errmsg);
    reset_all(r, 2);

    /* A sign-out ahead of a send in one batch: the session is gone when the send runs. */
    begin(&r[0], &A, PB__PACKAGE_TYPE__PT_SIGN_OUT, 4, NULL);
    begin_send(&r[1], &A, 5, 5, "too late");
    begin_subscribe(&r[2], &A, 5, 0);
    batch(r, 3);
    cr_assert_eq(r[0].code, GIM_OK, "%s", r[0].errmsg);
    cr_assert_eq(r[1].code, GIM_EUNAUTH, "%s", r[1].errmsg);
    cr_assert_eq(r[2].code, GIM_EUNAUTH, "%s", r[2].errmsg);
    reset_all(r, 3);
    cr_assert_eq(q("SELECT count(*) FROM room_message WHERE room_id = 5"), 2);
    cr_assert_eq(device_room(11), 0);
    cr_assert_eq(in_room(5), 0);
}

Test(room, sign_in_sign_out_and_timeout_drop_the_subscription)
{
    sign_in(&A);
    sign_in(&B);
    sign_in(&C);
    pb__sync_output__free_unpacked(subscribe(&A, 5, 0), NULL);
    pb__sync_output__free_unpacked(subscribe(&B, 5, 0), NULL);
    pb__sync_output__free_unpacked(subscribe(&C, 5, 0), NULL);
    cr_assert_eq(in_room(5), 3);

    /* Signing in again (here: at another gateway) starts in no room. */
    struct dev a2 = {1, 11, "gwA2"};
    sign_in(&a2);
    cr_assert_eq(device_room(11), 0);
    cr_assert_eq(in_room(5), 2);
    cr_assert_eq(send1(&a2, 5, 1, "x"), -GIM_EFORBIDDEN);

    /* Sign-out. */
    struct request r;
    cr_assert_eq(begin(&r, &B, PB__PACKAGE_TYPE__PT_SIGN_OUT, 2, NULL), DISPATCH_WRITE);
    batch(&r, 1);
    cr_assert_eq(r.code, GIM_OK, "%s", r.errmsg);
    request_reset(&r);
    cr_assert_eq(device_room(21), 0);
    cr_assert_eq(in_room(5), 1);

    /* The sweeper: C stays silent past presence.timeout_seconds. */
    clock_ms += (int64_t)cfg.presence.timeout_seconds * 1000 + 1;
    maint_run(&w);
    cr_assert_eq(device_room(31), 0);
    cr_assert_eq(q("SELECT online FROM device WHERE device_id = 31"), 0);
    cr_assert_eq(in_room(5), 0);
    size_t sessions = 9, rooms = 9;
    presence_counts(pres, &sessions, &rooms);
    cr_assert_eq(rooms, 0);
}
