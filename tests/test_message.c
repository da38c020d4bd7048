/*
 * PT_MESSAGE in-process: requests go through dispatch_begin (decode,
 * authenticate, prepare) and their jobs run through writer_run_batch on a
 * temp database, exactly as on the writer thread, with a clock the tests move.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dispatch.h"
#include "handlers.h"
#include "migration.h"
#include "presence.h"
#include "seq.h"
#include "store.h"
#include "writer.h"

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db;
static struct seq *seqs;
static struct presence *pres;
static struct wctx w;
static struct dispatch disp;
static int64_t clock_ms = 1700000000000;
static int done_calls;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return clock_ms;
}

static void on_write_done(struct request *r)
{
    (void)r;
    done_calls++;
}

static void sign_in(int64_t user, int64_t device)
{
    struct session s = {.device_id = device, .user_id = user, .last_seen_ms = clock_ms};
    snprintf(s.gateway_id, sizeof s.gateway_id, "gw");
    cr_assert_eq(presence_put(pres, &s), GIM_OK);
}

static void setup(void)
{
    char err[256] = "", path[128];
    snprintf(dir, sizeof dir, "/tmp/gimmsg-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cfg.limits.max_content_bytes = 64;
    cfg.limits.max_mentions = 3;
    cfg.idempotency.window_seconds = 60;
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    cr_assert_eq(presence_open(&pres), GIM_OK);
    struct gim_clock clk = {.now_ms = test_clock};
    w = (struct wctx){.db = db, .seq = seqs, .cfg = &cfg, .presence = pres, .clock = clk};
    disp =
        (struct dispatch){.cfg = &cfg, .presence = pres, .clock = clk, .write_done = on_write_done};
    done_calls = 0;
    for (int64_t u = 1; u <= 4; u++)
        sign_in(u, 100 + u);
    /* Group 10: users 1, 2, 3; user 4 is not a member. */
    cr_assert_eq(store_exec(db, "INSERT INTO chat_group (group_id, name, owner_id, created_at) "
                                "VALUES (10, 'g', 1, 0);"
                                "INSERT INTO group_member (group_id, user_id, role, joined_at) "
                                "VALUES (10, 1, 'owner', 0), (10, 2, 'member', 0), "
                                "(10, 3, 'admin', 0)"),
                 GIM_OK);
}

static void teardown(void)
{
    char cmd[128];
    presence_close(pres);
    seq_close(seqs);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(message, .init = setup, .fini = teardown);

static int64_t q(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db->db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

/* A send as a client builds it. */
struct send {
    int64_t user, device, request_id;
    int receiver_type;
    int64_t receiver_id;
    int message_type;
    const char *content;
    const int64_t *mentions;
    size_t n_mentions;
    bool no_message;
};

/* Runs the request up to the writer; returns what dispatch decided. */
static enum dispatch_next begin(struct request *r, const struct send *s)
{
    Pb__Sender forged = PB__SENDER__INIT;
    forged.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
    forged.sender_id = 999;
    forged.device_id = 999;
    forged.nickname = "evil";
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
    m.seq = 12345;
    m.status = PB__MESSAGE_STATUS__MS_RECALL;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = s->no_message ? NULL : &m;
    uint8_t data[1024];
    Pb__Input in = PB__INPUT__INIT;
    in.type = PB__PACKAGE_TYPE__PT_MESSAGE;
    in.request_id = s->request_id;
    in.data.data = data;
    in.data.len = pb__message_send__pack(&ms, data);
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = s->user;
    env.device_id = s->device ? s->device : 100 + s->user;
    env.gateway_id = "gw";
    env.input = &in;
    uint8_t buf[2048];
    size_t len = pb__gateway_request__pack(&env, buf);
    memset(r, 0, sizeof *r);
    return dispatch_begin(&disp, r, buf, len, NULL);
}

/* Runs sends[0..n) as one writer batch; every one must reach the writer. */
static void run_batch(struct request *rs, const struct send *sends, int n)
{
    struct write_job *jobs[16];
    cr_assert(n <= 16);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(begin(&rs[i], &sends[i]), DISPATCH_WRITE, "send %d: %s", i, rs[i].errmsg);
        jobs[i] = &rs[i].job;
    }
    int before = done_calls;
    writer_run_batch(&w, jobs, n);
    cr_assert_eq(done_calls, before + n);
}

static Pb__MessageSend *reply(const struct request *r)
{
    cr_assert_eq(r->code, GIM_OK, "code %d: %s", r->code, r->errmsg);
    Pb__MessageSend *ms = pb__message_send__unpack(NULL, r->out_len, r->out);
    cr_assert_not_null(ms);
    cr_assert_not_null(ms->message);
    return ms;
}

/* One send in its own batch; returns the seq of the sender's copy (or -code on failure). */
static int64_t send1(const struct send *s)
{
    struct request r;
    run_batch(&r, s, 1);
    int64_t seq = -(int64_t)r.code;
    if (r.code == GIM_OK) {
        Pb__MessageSend *ms = reply(&r);
        seq = ms->message->seq;
        pb__message_send__free_unpacked(ms, NULL);
    }
    request_reset(&r);
    return seq;
}

static int64_t rows(void)
{
    return q("SELECT (SELECT count(*) FROM message) + (SELECT count(*) FROM inbox) + "
             "(SELECT count(*) FROM group_copy) + (SELECT count(*) FROM idempotency) + "
             "(SELECT coalesce(sum(seq), 0) FROM user_last_seq)");
}

Test(message, seqs_count_up_for_sender_and_receiver)
{
    for (int64_t i = 1; i <= 5; i++)
        cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2}), i);
    cr_assert_eq(send1(&(struct send){.user = 2, .receiver_id = 1}), 6);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 1"), 6);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 2"), 6);
    cr_assert_eq(q("SELECT max(seq) FROM inbox WHERE user_id = 2"), 6);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 1"), 6);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 2"), 6);
    /* The row records both copies' seqs, and each inbox entry points at it. */
    cr_assert_eq(q("SELECT count(*) FROM message m JOIN inbox a ON a.message_id = m.id AND "
                   "a.user_id = m.sender_id AND a.seq = m.sender_seq JOIN inbox b ON "
                   "b.message_id = m.id AND b.user_id = m.receiver_id AND b.seq = m.receiver_seq"),
                 6);
}

Test(message, reply_is_the_senders_copy_with_server_fields)
{
    const int64_t mentions[] = {2, 3};
    struct request r;
    clock_ms += 5;
    run_batch(&r,
              &(struct send){.user = 1,
                             .receiver_id = 2,
                             .content = "hi",
                             .mentions = mentions,
                             .n_mentions = 2,
                             .message_type = PB__MESSAGE_TYPE__MT_CUSTOM},
              1);
    Pb__MessageSend *ms = reply(&r);
    const Pb__Message *m = ms->message;
    cr_assert_eq(m->sender->sender_type, PB__SENDER_TYPE__ST_USER);
    cr_assert_eq(m->sender->sender_id, 1, "sender comes from the session, not the client");
    cr_assert_eq(m->sender->device_id, 101);
    cr_assert_str_empty(m->sender->nickname);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_USER);
    cr_assert_eq(m->receiver_id, 2);
    cr_assert_eq(m->n_to_user_ids, 2);
    cr_assert_eq(m->to_user_ids[1], 3);
    cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_CUSTOM);
    cr_assert_eq(m->message_content.len, 2);
    cr_assert_eq(memcmp(m->message_content.data, "hi", 2), 0);
    cr_assert_eq(m->seq, 1);
    cr_assert_eq(m->send_time, clock_ms);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_eq(q("SELECT sender_id * 1000 + sender_device_id FROM message"), 1101);
    cr_assert_eq(q("SELECT length(to_user_ids) FROM message"), 16);
    pb__message_send__free_unpacked(ms, NULL);
    request_reset(&r);
}

Test(message, self_send_stores_one_copy)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2}), 1);
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 1}), 2);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT count(*) FROM message WHERE receiver_id = 1 AND sender_seq = 2 AND "
                   "receiver_seq = 2"),
                 1);
}

Test(message, group_send_reaches_every_member)
{
    /* Give the members different seqs so a mix-up would show. */
    cr_assert_eq(send1(&(struct send){.user = 2, .receiver_id = 3}), 1);
    cr_assert_eq(send1(&(struct send){.user = 2, .receiver_id = 3}), 2);
    int64_t before4 = q("SELECT count(*) FROM inbox WHERE user_id = 4");
    cr_assert_eq(send1(&(struct send){
                     .user = 1, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 10}),
                 1, "the reply carries the sender's own seq");
    cr_assert_eq(q("SELECT count(*) FROM message WHERE receiver_type = 2"), 1);
    cr_assert_eq(q("SELECT sender_seq * 10 + receiver_seq FROM message WHERE receiver_type = 2"),
                 10);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 2"), 3);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 3"), 3);
    cr_assert_eq(q("SELECT count(*) FROM group_copy"), 3);
    /* Each group_copy row names exactly the inbox entry of that member. */
    cr_assert_eq(q("SELECT count(*) FROM group_copy g JOIN inbox i ON i.user_id = g.user_id AND "
                   "i.seq = g.seq AND i.message_id = g.message_id"),
                 3);
    cr_assert_eq(q("SELECT group_concat(user_id || ':' || seq) = '1:1,2:3,3:3' FROM "
                   "(SELECT user_id, seq FROM group_copy ORDER BY user_id)"),
                 1);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 4"), before4);
}

Test(message, group_send_by_non_member_or_to_unknown_group_writes_nothing)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2}), 1);
    int64_t before = rows();
    struct request r;
    run_batch(
        &r,
        &(struct send){.user = 4, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 10},
        1);
    cr_assert_eq(r.code, GIM_EFORBIDDEN);
    cr_assert_str_eq(r.errmsg, "not a member of group 10");
    cr_assert_null(r.out);
    request_reset(&r);
    run_batch(
        &r,
        &(struct send){.user = 1, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 99},
        1);
    cr_assert_eq(r.code, GIM_ENOTFOUND, "%s", r.errmsg);
    request_reset(&r);
    cr_assert_eq(rows(), before);
}

Test(message, membership_is_read_at_send_time)
{
    cr_assert_eq(send1(&(struct send){
                     .user = 4, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 10}),
                 -GIM_EFORBIDDEN);
    cr_assert_eq(store_exec(db, "INSERT INTO group_member VALUES (10, 4, 'member', 0)"), GIM_OK);
    cr_assert_eq(send1(&(struct send){
                     .user = 4, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 10}),
                 1);
    cr_assert_eq(q("SELECT count(*) FROM group_copy"), 4);
}

Test(message, retry_with_same_request_id_returns_same_seq_and_stores_nothing)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 7}), 1);
    int64_t before = rows();
    struct request r;
    clock_ms += 1000;
    run_batch(&r, &(struct send){.user = 1, .receiver_id = 3, .request_id = 7, .content = "other"},
              1);
    Pb__MessageSend *ms = reply(&r);
    cr_assert_eq(ms->message->seq, 1);
    cr_assert_eq(ms->message->receiver_id, 2, "the earlier message, not the retry's");
    cr_assert_eq(ms->message->message_content.len, 5);
    cr_assert_eq(memcmp(ms->message->message_content.data, "hello", 5), 0);
    cr_assert_eq(ms->message->send_time, clock_ms - 1000);
    cr_assert_eq(ms->message->sender->sender_id, 1);
    pb__message_send__free_unpacked(ms, NULL);
    request_reset(&r);
    cr_assert_eq(rows(), before);
    /* The key is (device, request_id): another device's request 7 is a new send. */
    sign_in(1, 201);
    cr_assert_eq(send1(&(struct send){.user = 1, .device = 201, .receiver_id = 2, .request_id = 7}),
                 2);
    /* request_id 0 means no idempotency. */
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2}), 3);
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2}), 4);
}

Test(message, retry_in_the_same_batch_is_stored_once)
{
    struct request r[3];
    const struct send s[3] = {
        {.user = 1, .receiver_id = 2, .request_id = 9},
        {.user = 1, .receiver_id = 2, .request_id = 9},
        {.user = 1, .receiver_id = 2, .request_id = 10},
    };
    run_batch(r, s, 3);
    int64_t seqs_seen[3];
    for (int i = 0; i < 3; i++) {
        Pb__MessageSend *ms = reply(&r[i]);
        seqs_seen[i] = ms->message->seq;
        pb__message_send__free_unpacked(ms, NULL);
        request_reset(&r[i]);
    }
    cr_assert_eq(seqs_seen[0], 1);
    cr_assert_eq(seqs_seen[1], 1);
    cr_assert_eq(seqs_seen[2], 2);
    cr_assert_eq(q("SELECT count(*) FROM message"), 2);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 2"), 2);
}

Test(message, retry_after_the_window_is_a_new_send)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 5}), 1);
    clock_ms += 60 * 1000;
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 5}), 1,
                 "still inside the window");
    clock_ms += 1;
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 5}), 2);
    cr_assert_eq(q("SELECT count(*) FROM message"), 2);
    /* The record now points at the new message, with a fresh window. */
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 1);
    cr_assert_eq(q("SELECT m.sender_seq FROM idempotency i JOIN message m ON m.id = i.message_id"),
                 2);
    clock_ms += 1000;
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 5}), 2);
}

/*
 * Retention and erasure delete messages and leave their records to the sweep (keyed by
 * request id first, migrations/0009, a message's record cannot be found without a scan):
 * such a record answers nothing, and the send with its request id is a new one.
 */
Test(message, a_record_whose_message_is_gone_is_taken_over_by_the_next_send)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 40}), 1);
    cr_assert_eq(q("DELETE FROM message WHERE id = 1 RETURNING id"), 1);
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 40}), 2,
                 "a new send, not EC_NOT_FOUND");
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 1);
    cr_assert_eq(q("SELECT m.sender_seq FROM idempotency i JOIN message m ON m.id = i.message_id"),
                 2);
    /* Its retry is the new send's. */
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 40}), 2);
    cr_assert_eq(q("SELECT count(*) FROM message"), 1);
}

Test(message, retry_after_recall_shows_the_recall)
{
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 3}), 1);
    cr_assert_eq(store_exec(db, "UPDATE message SET status = 2, content = NULL"), GIM_OK);
    struct request r;
    run_batch(&r, &(struct send){.user = 1, .receiver_id = 2, .request_id = 3}, 1);
    Pb__MessageSend *ms = reply(&r);
    cr_assert_eq(ms->message->seq, 1);
    cr_assert_eq(ms->message->status, PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(ms->message->message_content.len, 0);
    pb__message_send__free_unpacked(ms, NULL);
    request_reset(&r);
    cr_assert_eq(q("SELECT count(*) FROM message"), 1);
}

Test(message, group_retry_returns_the_senders_seq)
{
    cr_assert_eq(send1(&(struct send){.user = 2, .receiver_id = 2}), 1);
    cr_assert_eq(send1(&(struct send){.user = 2,
                                      .receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                      .receiver_id = 10,
                                      .request_id = 4}),
                 2);
    int64_t before = rows();
    cr_assert_eq(send1(&(struct send){.user = 2,
                                      .receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
                                      .receiver_id = 10,
                                      .request_id = 4}),
                 2);
    cr_assert_eq(rows(), before);
}

Test(message, failing_send_in_a_batch_leaves_neighbours_and_seqs_intact)
{
    struct request r[4];
    const struct send s[4] = {
        {.user = 1, .receiver_id = 2, .request_id = 1},
        {.user = 4,
         .receiver_type = PB__RECEIVER_TYPE__RT_GROUP,
         .receiver_id = 10,
         .request_id = 2},
        {.user = 1, .receiver_id = 2, .request_id = 3},
        {.user = 1, .receiver_type = PB__RECEIVER_TYPE__RT_ROOM, .receiver_id = 5, .request_id = 4},
    };
    /* A room send checks the device row: user 1's device is signed in but in no room. */
    cr_assert_eq(store_exec(db, "INSERT INTO device (device_id, user_id, gateway_id, online, "
                                "created_at, updated_at) VALUES (101, 1, 'gw', 1, 0, 0)"),
                 GIM_OK);
    run_batch(r, s, 4);
    cr_assert_eq(r[0].code, GIM_OK);
    cr_assert_eq(r[1].code, GIM_EFORBIDDEN);
    cr_assert_eq(r[2].code, GIM_OK);
    cr_assert_eq(r[3].code, GIM_EFORBIDDEN, "not subscribed: %s", r[3].errmsg);
    for (int i = 0; i < 4; i++)
        request_reset(&r[i]);
    cr_assert_eq(q("SELECT count(*) FROM message"), 2);
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 2);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT max(seq) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 4"), 0);
    cr_assert_eq(q("SELECT count(*) FROM user_last_seq WHERE user_id = 4"), 0);
}

Test(message, send_failing_after_taking_seqs_gives_them_back)
{
    /* Member 3's inbox insert fails after seqs for 1, 2, 3 were taken. (A stray inbox row
     * no longer can: a user's counter starts above the inbox's last seq.) */
    cr_assert_eq(store_exec(db, "CREATE TEMP TRIGGER fail_member_3 BEFORE INSERT ON inbox "
                                "WHEN NEW.user_id = 3 BEGIN SELECT RAISE(ABORT, 'injected'); END"),
                 GIM_OK);
    struct request r[3];
    const struct send s[3] = {
        {.user = 1, .receiver_id = 2},
        {.user = 1, .receiver_type = PB__RECEIVER_TYPE__RT_GROUP, .receiver_id = 10},
        {.user = 2, .receiver_id = 1},
    };
    run_batch(r, s, 3);
    cr_assert_eq(r[0].code, GIM_OK);
    cr_assert_neq(r[1].code, GIM_OK);
    cr_assert_null(r[1].out);
    Pb__MessageSend *ms = reply(&r[2]);
    cr_assert_eq(ms->message->seq, 2, "user 2's seq 2 is not skipped");
    pb__message_send__free_unpacked(ms, NULL);
    for (int i = 0; i < 3; i++)
        request_reset(&r[i]);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT max(seq) FROM inbox WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 1"), 2);
    cr_assert_eq(q("SELECT count(*) FROM user_last_seq WHERE user_id = 3"), 0);
    cr_assert_eq(q("SELECT count(*) FROM group_copy"), 0);
    cr_assert_eq(q("SELECT count(*) FROM message"), 2);
}

/* Validation happens in prepare(): the request never reaches the writer. */
static void expect_refused(const struct send *s, gim_err code, const char *what)
{
    struct request r;
    int64_t before = rows();
    cr_assert_eq(begin(&r, s), DISPATCH_REPLY, "%s reached the writer", what);
    cr_assert_eq(r.code, code, "%s: code %d (%s)", what, r.code, r.errmsg);
    cr_assert(r.errmsg[0], "%s: an error says why", what);
    request_reset(&r);
    cr_assert_eq(rows(), before);
}

/*
 * A bind that fails (SQLITE_TOOBIG here: the connection's length limit is
 * below the content) fails the send and writes nothing. Unchecked, the
 * content parameter stayed NULL and the send was acknowledged with its
 * message stored as if recalled (NULL content means erased).
 */
#define TEXT64 "sixty-four bytes of text, the most this test's limits allow, ok."

Test(message, a_failed_bind_fails_the_send_and_writes_nothing)
{
    int64_t before = rows();
    /* Above the row without its content (about 30 bytes), below the content (64 bytes). */
    int old = sqlite3_limit(db->db, SQLITE_LIMIT_LENGTH, 48);
    int64_t got = send1(&(struct send){.user = 1, .receiver_id = 2, .content = TEXT64});
    sqlite3_limit(db->db, SQLITE_LIMIT_LENGTH, old);
    cr_assert_eq(got, -(int64_t)GIM_EINTERNAL, "the send must fail, got %lld", (long long)got);
    cr_assert_eq(rows(), before, "a failed send writes nothing");
    cr_assert_eq(q("SELECT count(*) FROM message WHERE content IS NULL"), 0);
    /* The connection is fine afterwards: the same send now goes through. */
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .content = TEXT64}), 1);
}

Test(message, bad_requests_are_refused_before_the_writer)
{
    const int64_t ok3[] = {1, 2, 3}, four[] = {1, 2, 3, 4}, zero[] = {2, 0};
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .no_message = true}, GIM_EBADREQ,
                   "missing message");
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .message_type = 9}, GIM_EBADREQ,
                   "message_type 9");
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .message_type = -1}, GIM_EBADREQ,
                   "message_type -1");
    expect_refused(&(struct send){.user = 1, .receiver_id = 0}, GIM_EBADREQ, "receiver_id 0");
    expect_refused(&(struct send){.user = 1, .receiver_id = -5}, GIM_EBADREQ, "receiver_id < 0");
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .receiver_type = 4}, GIM_EBADREQ,
                   "receiver_type 4");
    char big[66];
    memset(big, 'x', 65);
    big[65] = 0;
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .content = big}, GIM_ETOOLARGE,
                   "content over the limit");
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .mentions = four, .n_mentions = 4},
                   GIM_ETOOLARGE, "too many mentions");
    expect_refused(&(struct send){.user = 1, .receiver_id = 2, .mentions = zero, .n_mentions = 2},
                   GIM_EBADREQ, "mention 0");
    expect_refused(&(struct send){.user = 1, .device = 999, .receiver_id = 2}, GIM_EUNAUTH,
                   "no session");
    /* At the limits is fine. */
    big[64] = 0;
    cr_assert_eq(send1(&(struct send){.user = 1,
                                      .receiver_id = 2,
                                      .content = big,
                                      .mentions = ok3,
                                      .n_mentions = 3,
                                      .message_type = PB__MESSAGE_TYPE__MT_CUSTOM}),
                 1);
}

/*
 * Migration 0007 (the smaller idempotency record) carries a database written
 * under the old layout over: its messages, seqs and every kind of record go
 * on working. The database is made by the migrations before 0007 and filled
 * with the rows the old code wrote; then the service's store_open migrates it.
 */
static void old_database(const char *path)
{
    sqlite3 *c;
    char *msg = NULL;
    cr_assert_eq(sqlite3_open(path, &c), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(c,
                              "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                              "name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                              NULL, NULL, &msg),
                 SQLITE_OK, "%s", msg);
    for (int i = 0; i < migrations_count && migrations[i].version < 7; i++) {
        cr_assert_eq(sqlite3_exec(c, migrations[i].sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s",
                     migrations[i].name, msg);
        char ins[160];
        snprintf(ins, sizeof ins, "INSERT INTO schema_migrations VALUES (%d, '%s', 0)",
                 migrations[i].version, migrations[i].name);
        cr_assert_eq(sqlite3_exec(c, ins, NULL, NULL, &msg), SQLITE_OK, "%s", msg);
    }
    char sql[2048];
    int64_t t = clock_ms - 1000, stale = clock_ms - 61 * 1000;
    /* Message 1: user 1 (device 101) to user 2, request 7, inside the 60 s window.
     * Message 2: user 1 to user 3, request 9, outside it. A room send (request 8,
     * room 5, seq 1) and a record that names nothing (request 6). */
    snprintf(sql, sizeof sql,
             "INSERT INTO message (id, sender_type, sender_id, sender_device_id, receiver_type, "
             "receiver_id, message_type, content, send_time, sender_seq, receiver_seq) VALUES "
             "(1, 2, 1, 101, 1, 2, 1, 'hello', %lld, 1, 1), "
             "(2, 2, 1, 101, 1, 3, 1, 'older', %lld, 2, 1);"
             "INSERT INTO inbox VALUES (1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 1, 2);"
             "INSERT INTO user_seq VALUES (1, 2), (2, 1), (3, 1);"
             "INSERT INTO device (device_id, user_id, gateway_id, online, room_id, created_at, "
             "updated_at) VALUES (101, 1, 'gw', 1, 5, 0, 0);"
             "INSERT INTO room_message (room_id, seq, sender_type, sender_id, sender_device_id, "
             "message_type, content, send_time) VALUES (5, 1, 2, 1, 101, 1, 'room hi', %lld);"
             "INSERT INTO room_seq VALUES (5, 1);"
             "INSERT INTO idempotency (device_id, request_id, created_at, message_id, room_id, "
             "room_seq) VALUES (101, 7, %lld, 1, NULL, NULL), (101, 9, %lld, 2, NULL, NULL), "
             "(101, 8, %lld, NULL, 5, 1), (101, 6, %lld, NULL, NULL, NULL)",
             (long long)t, (long long)stale, (long long)t, (long long)t, (long long)stale,
             (long long)t, (long long)t);
    cr_assert_eq(sqlite3_exec(c, sql, NULL, NULL, &msg), SQLITE_OK, "%s", msg);
    sqlite3_close(c);
}

Test(message, migration_0007_carries_old_records_seqs_and_messages_over)
{
    char err[256] = "", path[128];
    snprintf(path, sizeof path, "%s/old.db", dir);
    old_database(path);
    store_close(db);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    w.db = db;

    cr_assert_eq(q("SELECT max(version) FROM schema_migrations"), store_schema_version());
    cr_assert_eq(q("SELECT count(*) FROM pragma_table_info('idempotency')"), 3,
                 "device_id, request_id, message_id");
    /* Migration 0009: keyed by request id first, so that clock-made ids append. */
    cr_assert_eq(q("SELECT group_concat(name) = 'request_id,device_id' FROM "
                   "(SELECT name FROM pragma_index_info('sqlite_autoindex_idempotency_1') "
                   "ORDER BY seqno)"),
                 1);
    cr_assert_eq(q("SELECT count(*) FROM idempotency"), 3, "the record naming nothing is gone");
    cr_assert_eq(q("SELECT message_id FROM idempotency WHERE request_id = 7"), 1);
    cr_assert_eq(q("SELECT message_id FROM idempotency WHERE request_id = 9"), 2);
    cr_assert_eq(q("SELECT message_id IS NULL FROM idempotency WHERE request_id = 8"), 1);
    cr_assert_eq(q("SELECT room_seq FROM room_idempotency WHERE device_id = 101 AND "
                   "request_id = 8 AND room_id = 5"),
                 1);
    cr_assert_eq(q("SELECT created_at FROM room_idempotency WHERE request_id = 8"),
                 clock_ms - 1000);
    cr_assert_eq(q("SELECT count(*) FROM message"), 2);
    cr_assert_eq(q("SELECT count(*) FROM inbox"), 4);

    /* The retry of request 7 gets the first reply: seq 1, the old message, nothing stored. */
    int64_t before = rows();
    struct request r;
    run_batch(&r, &(struct send){.user = 1, .receiver_id = 2, .request_id = 7, .content = "x"}, 1);
    Pb__MessageSend *ms = reply(&r);
    cr_assert_eq(ms->message->seq, 1);
    cr_assert_eq(ms->message->message_content.len, 5);
    cr_assert_eq(memcmp(ms->message->message_content.data, "hello", 5), 0);
    cr_assert_eq(ms->message->send_time, clock_ms - 1000);
    pb__message_send__free_unpacked(ms, NULL);
    request_reset(&r);
    cr_assert_eq(rows(), before);
    /* The room send's retry gets its room seq back, nothing stored. */
    cr_assert_eq(send1(&(struct send){.user = 1,
                                      .receiver_type = PB__RECEIVER_TYPE__RT_ROOM,
                                      .receiver_id = 5,
                                      .request_id = 8}),
                 1);
    cr_assert_eq(q("SELECT count(*) FROM room_message"), 1);
    cr_assert_eq(rows(), before);
    /* Request 9's window had ended (its message's send_time): a new send, seqs go on. */
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 3, .request_id = 9}), 3);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 3"), 2);
    cr_assert_eq(q("SELECT count(*) FROM message"), 3);
    cr_assert_eq(q("SELECT message_id FROM idempotency WHERE request_id = 9"), 3);
    /* The old record naming nothing no longer blocks its request id; a new id is new. */
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 6}), 4);
    cr_assert_eq(send1(&(struct send){.user = 1, .receiver_id = 2, .request_id = 10}), 5);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 2"), 3);
}
