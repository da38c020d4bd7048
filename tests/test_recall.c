/*
 * Recall, unit level: the handler's write()/committed() run as jobs of
 * writer_run_batch on a real SQLite file, with a clock the tests control.
 * Messages are stored directly (message_insert, inbox, group_copy, seq_next)
 * so these tests depend on nothing but the storage layout.
 */
#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "group.h"
#include "handlers.h"
#include "message.h"
#include "presence.h"
#include "push.h"
#include "recall.h"
#include "request.h"
#include "seq.h"
#include "storage.h"
#include "storage/sqlite_int.h"
#include "store.h"
#include "writer.h"

#define T0      1700000000000LL /* send time of the test messages, ms */
#define DEVICE  7               /* every user U signs in as device U * 100 + DEVICE */
#define GROUP   50
#define OWNER   5
#define ADMIN   6
#define MEMBER  7
#define MEMBER2 8

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db;
static struct seq *seqs;
static struct wctx w;
static int64_t now_ms;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return now_ms;
}

static void setup(void)
{
    char err[256] = "", path[128];
    snprintf(dir, sizeof dir, "/tmp/gimrecall-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    now_ms = T0;
    w = (struct wctx){.db = db, .seq = seqs, .cfg = &cfg, .clock = {test_clock, NULL}};
}

static void teardown(void)
{
    char cmd[128];
    seq_close(seqs);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(recall, .init = setup, .fini = teardown);

/* ---- helpers --------------------------------------------------------------------------- */

static int64_t q(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db->db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

static int64_t qf(const char *fmt, long long a, long long b)
{
    char sql[512];
    snprintf(sql, sizeof sql, fmt, a, b);
    return q(sql);
}

static void exec(const char *sql)
{
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db->db, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
}

/* A job running fn(w, arg) in the writer's transaction. */
struct fn_job {
    struct write_job job;
    gim_err (*fn)(struct wctx *w, void *arg);
    void *arg;
    gim_err result;
};

static gim_err fn_exec(struct write_job *j, struct wctx *wc)
{
    struct fn_job *f = (struct fn_job *)j;
    return f->fn(wc, f->arg);
}

static void fn_done(struct write_job *j, struct wctx *wc, gim_err err)
{
    (void)wc;
    ((struct fn_job *)j)->result = err;
}

static gim_err run(gim_err (*fn)(struct wctx *, void *), void *arg)
{
    struct fn_job f = {.job = {.exec = fn_exec, .done = fn_done}, .fn = fn, .arg = arg};
    struct write_job *jobs[] = {&f.job};
    writer_run_batch(&w, jobs, 1);
    return f.result;
}

struct send {
    int64_t from, to; /* to: a user, or GROUP for a group message */
    bool group;
    const char *text;
    int64_t seq_of[16]; /* the copy's seq per user id (0 = no copy) */
};

static gim_err do_send(struct wctx *wc, void *arg)
{
    struct send *s = arg;
    gim_err e;
    int64_t id;
    uint8_t content[128];
    Pb__Text text = PB__TEXT__INIT;
    text.text = (char *)s->text;
    size_t clen = pb__text__pack(&text, content);
    struct message_new m = {.sender_type = PB__SENDER_TYPE__ST_USER,
                            .sender_id = s->from,
                            .sender_device_id = s->from * 100 + DEVICE,
                            .receiver_type =
                                s->group ? PB__RECEIVER_TYPE__RT_GROUP : PB__RECEIVER_TYPE__RT_USER,
                            .receiver_id = s->to,
                            .message_type = PB__MESSAGE_TYPE__MT_TEXT,
                            .content = content,
                            .content_len = clen,
                            .send_time = wc->now_ms};
    int64_t users[16];
    size_t n = 0;
    if (s->group) {
        int64_t *ids = NULL;
        if ((e = group_members(wc->db, s->to, &ids, &n)) != GIM_OK)
            return e;
        cr_assert(n <= 16);
        memcpy(users, ids, n * sizeof *ids);
        free(ids);
    } else {
        users[n++] = s->from;
        if (s->to != s->from)
            users[n++] = s->to;
    }
    for (size_t i = 0; i < n; i++)
        if ((e = seq_next(wc->seq, wc->db, SEQ_USER, users[i], &s->seq_of[users[i]])) != GIM_OK)
            return e;
    m.sender_seq = s->seq_of[s->from];
    m.receiver_seq = s->group ? 0 : s->seq_of[s->to];
    if ((e = message_insert(wc->db, &m, &id)) != GIM_OK)
        return e;
    for (size_t i = 0; i < n; i++) {
        if ((e = message_inbox_add(wc->db, users[i], s->seq_of[users[i]], id)) != GIM_OK)
            return e;
        if (s->group) {
            char sql[160];
            snprintf(sql, sizeof sql, "INSERT INTO group_copy VALUES (%lld, %lld, %lld)",
                     (long long)id, (long long)users[i], (long long)s->seq_of[users[i]]);
            if (store_exec(wc->db, sql) != GIM_OK)
                return GIM_EINTERNAL;
        }
    }
    return GIM_OK;
}

static struct send send_user(int64_t from, int64_t to, const char *text)
{
    struct send s = {.from = from, .to = to, .text = text};
    cr_assert_eq(run(do_send, &s), GIM_OK);
    return s;
}

static struct send send_group(int64_t from, const char *text)
{
    struct send s = {.from = from, .to = GROUP, .group = true, .text = text};
    cr_assert_eq(run(do_send, &s), GIM_OK);
    return s;
}

/* Group GROUP: OWNER owns it, ADMIN administers it, MEMBER and MEMBER2 are members. */
static void make_group(void)
{
    exec("INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (50, 'g', 5, 0)");
    exec("INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES "
         "(50, 5, 'owner', 0), (50, 6, 'admin', 0), (50, 7, 'member', 0), (50, 8, 'member', 0)");
}

/* A request as dispatch hands it to the handler: envelope decoded, session set. */
struct recall_job {
    struct write_job job;
    struct request r;
};

static gim_err recall_exec(struct write_job *j, struct wctx *wc)
{
    struct request *r = &((struct recall_job *)j)->r;
    return r->h->write(r, wc);
}

static void recall_done(struct write_job *j, struct wctx *wc, gim_err err)
{
    struct request *r = &((struct recall_job *)j)->r;
    if (err == GIM_OK && r->h->committed)
        r->h->committed(r, wc);
    else if (err != GIM_OK && r->code == GIM_OK)
        r->code = err;
}

static gim_err recall_as(int64_t user, int64_t seq, char *msg, size_t msglen)
{
    struct recall_job j = {.job = {.exec = recall_exec, .done = recall_done}};
    struct request *r = &j.r;
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    uint8_t data[16], buf[128];
    in.seq = seq;
    Pb__Input input = PB__INPUT__INIT;
    input.type = PB__PACKAGE_TYPE__PT_RECALL;
    input.request_id = 1;
    input.data.data = data;
    input.data.len = pb__recall_input__pack(&in, data);
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    env.user_id = user;
    env.device_id = user * 100 + DEVICE;
    env.gateway_id = "gw";
    env.input = &input;
    size_t len = pb__gateway_request__pack(&env, buf);
    r->env = pb__gateway_request__unpack(NULL, len, buf);
    cr_assert_not_null(r->env);
    r->type = PB__PACKAGE_TYPE__PT_RECALL;
    r->request_id = 1;
    r->sess.user_id = user;
    r->sess.device_id = user * 100 + DEVICE;
    snprintf(r->sess.gateway_id, sizeof r->sess.gateway_id, "gw");
    r->cfg = &cfg;
    r->h = &handle_recall;
    if (r->h->prepare(r) == GIM_OK) {
        struct write_job *jobs[] = {&j.job};
        writer_run_batch(&w, jobs, 1);
    }
    gim_err code = r->code;
    cr_assert(code == GIM_OK || r->errmsg[0], "an error carries a message");
    /* Data only for a repeated recall: RecallOutput{already_recalled = true}. */
    if (r->out) {
        Pb__RecallOutput *ro = pb__recall_output__unpack(NULL, r->out_len, r->out);
        cr_assert(ro && ro->already_recalled, "a recall reply's data is a RecallOutput");
        pb__recall_output__free_unpacked(ro, NULL);
    }
    if (msg)
        snprintf(msg, msglen, "%s", r->errmsg);
    request_reset(r);
    return code;
}

/* Everything a failed recall must leave untouched, as one comparable snapshot. */
struct snap {
    int64_t messages, inbox, copies, recalled, with_content, seq_total;
};

static struct snap snap(void)
{
    return (struct snap){
        .messages = q("SELECT count(*) FROM message"),
        .inbox = q("SELECT count(*) FROM inbox"),
        .copies = q("SELECT count(*) FROM group_copy"),
        .recalled = q("SELECT count(*) FROM message WHERE status = 2"),
        .with_content = q("SELECT count(*) FROM message WHERE content IS NOT NULL"),
        .seq_total = q("SELECT coalesce(sum(seq), 0) FROM user_last_seq"),
    };
}

static void assert_unchanged(struct snap before)
{
    struct snap after = snap();
    cr_assert_eq(memcmp(&before, &after, sizeof before), 0, "a failed recall wrote something");
}

static void assert_recalled(int64_t user, int64_t seq)
{
    cr_assert_eq(qf("SELECT m.status FROM inbox i JOIN message m ON m.id = i.message_id "
                    "WHERE i.user_id = %lld AND i.seq = %lld",
                    user, seq),
                 PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(qf("SELECT m.content IS NULL FROM inbox i JOIN message m ON m.id = i.message_id "
                    "WHERE i.user_id = %lld AND i.seq = %lld",
                    user, seq),
                 1, "the content is erased, not hidden");
}

static void assert_intact(int64_t user, int64_t seq)
{
    cr_assert_eq(qf("SELECT m.status FROM inbox i JOIN message m ON m.id = i.message_id "
                    "WHERE i.user_id = %lld AND i.seq = %lld",
                    user, seq),
                 PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_gt(qf("SELECT length(m.content) FROM inbox i JOIN message m ON m.id = i.message_id "
                    "WHERE i.user_id = %lld AND i.seq = %lld",
                    user, seq),
                 0);
}

/*
 * The notice at (user, notice_seq): a single-copy MT_COMMAND from actor whose
 * content is Command{1, RecallInput{recalled_seq}}.
 */
static void assert_notice(int64_t user, int64_t notice_seq, int64_t recalled_seq, int64_t actor,
                          int receiver_type, int64_t receiver_id)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db,
                                    "SELECT " MESSAGE_COLUMNS ", m.sender_seq, m.receiver_seq "
                                    "FROM inbox i JOIN message m ON m.id = i.message_id "
                                    "WHERE i.user_id = ?1 AND i.seq = ?2",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, user);
    sqlite3_bind_int64(st, 2, notice_seq);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "no notice at seq %lld of user %lld",
                 (long long)notice_seq, (long long)user);
    struct arena a;
    cr_assert_eq(arena_init(&a, 4096), GIM_OK);
    struct message_view *v = message_from_row(st, 0, notice_seq, &a);
    cr_assert_not_null(v);
    cr_assert_eq(v->msg.message_type, PB__MESSAGE_TYPE__MT_COMMAND);
    cr_assert_eq(v->msg.status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_eq(v->sender.sender_type, PB__SENDER_TYPE__ST_USER);
    cr_assert_eq(v->sender.sender_id, actor);
    cr_assert_eq(v->sender.device_id, actor * 100 + DEVICE);
    cr_assert_eq(v->msg.receiver_type, receiver_type);
    cr_assert_eq(v->msg.receiver_id, receiver_id);
    cr_assert_eq(v->msg.send_time, now_ms, "a notice is stamped with the batch's clock");
    cr_assert_eq(sqlite3_column_int64(st, MESSAGE_NCOLUMNS), notice_seq, "sender_seq");
    cr_assert_eq(sqlite3_column_int64(st, MESSAGE_NCOLUMNS + 1), notice_seq, "receiver_seq");
    Pb__Command *cmd =
        pb__command__unpack(NULL, v->msg.message_content.len, v->msg.message_content.data);
    cr_assert_not_null(cmd, "notice content is a Command");
    cr_assert_eq(cmd->code, RECALL_COMMAND_CODE);
    Pb__RecallInput *ri = pb__recall_input__unpack(NULL, cmd->data.len, cmd->data.data);
    cr_assert_not_null(ri, "Command.data is a RecallInput");
    cr_assert_eq(ri->seq, recalled_seq, "user %lld: notice names seq %lld, expected %lld",
                 (long long)user, (long long)ri->seq, (long long)recalled_seq);
    pb__recall_input__free_unpacked(ri, NULL);
    pb__command__free_unpacked(cmd, NULL);
    arena_free(&a);
    sqlite3_finalize(st);
}

static int64_t last_seq(int64_t user)
{
    return qf("SELECT coalesce(max(seq), 0) FROM inbox WHERE user_id = %lld AND %lld", user, 1);
}

/* ---- 1:1 -------------------------------------------------------------------------------- */

Test(recall, sender_within_window_erases_and_notifies_both_inboxes)
{
    /* User 2 already holds two messages, so the two copies have different seqs. */
    send_user(3, 2, "earlier one");
    send_user(3, 2, "earlier two");
    struct send s = send_user(1, 2, "take this back");
    cr_assert_eq(s.seq_of[1], 1);
    cr_assert_eq(s.seq_of[2], 3);
    int64_t before = q("SELECT count(*) FROM message");

    now_ms = T0 + 60 * 1000; /* inside the default 120 s */
    w.scrub_wal = false;
    char msg[200];
    cr_assert_eq(recall_as(1, s.seq_of[1], msg, sizeof msg), GIM_OK, "%s", msg);

    assert_recalled(1, 1);
    assert_recalled(2, 3);
    cr_assert_eq(q("SELECT count(*) FROM message WHERE status = 2"), 1, "only that message");
    cr_assert_eq(q("SELECT count(*) FROM message"), before + 2, "one notice per copy");
    assert_notice(1, 2, 1, 1, PB__RECEIVER_TYPE__RT_USER, 2);
    assert_notice(2, 4, 3, 1, PB__RECEIVER_TYPE__RT_USER, 2);
    cr_assert_eq(q("SELECT seq FROM user_last_seq WHERE user_id = 2"), 4, "counters flushed");
    cr_assert(w.scrub_wal, "the WAL must be truncated after an erase");
}

Test(recall, message_to_oneself_has_one_copy_and_one_notice)
{
    struct send s = send_user(1, 1, "note to self");
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    assert_recalled(1, 1);
    cr_assert_eq(q("SELECT count(*) FROM inbox WHERE user_id = 1"), 2);
    assert_notice(1, 2, 1, 1, PB__RECEIVER_TYPE__RT_USER, 1);
}

Test(recall, receiver_of_a_direct_message_is_forbidden)
{
    struct send s = send_user(1, 2, "mine");
    struct snap before = snap();
    char msg[200];
    cr_assert_eq(recall_as(2, s.seq_of[2], msg, sizeof msg), GIM_EFORBIDDEN);
    cr_assert(strstr(msg, "sender") != NULL, "message says who may: %s", msg);
    assert_unchanged(before);
    assert_intact(2, s.seq_of[2]);
}

Test(recall, sender_after_window_is_expired_and_nothing_changes)
{
    struct send s = send_user(1, 2, "too late");
    now_ms = T0 + 120 * 1000 + 1;
    struct snap before = snap();
    char msg[200];
    cr_assert_eq(recall_as(1, s.seq_of[1], msg, sizeof msg), GIM_ERECALLEXPIRED);
    cr_assert(strstr(msg, "120") != NULL, "message names the window: %s", msg);
    assert_unchanged(before);
    assert_intact(1, s.seq_of[1]);
    /* The edge itself is still inside. */
    now_ms = T0 + 120 * 1000;
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
}

Test(recall, configured_window_applies_and_zero_means_no_limit)
{
    struct send s = send_user(1, 2, "short window");
    cfg.recall.window_seconds = 5;
    now_ms = T0 + 6000;
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_ERECALLEXPIRED);
    cfg.recall.window_seconds = 0;
    now_ms = T0 + 365LL * 24 * 3600 * 1000;
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    assert_recalled(2, s.seq_of[2]);
}

Test(recall, twice_is_ok_and_adds_no_notices)
{
    struct send s = send_user(1, 2, "once is enough");
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    struct snap after_first = snap();
    cr_assert_eq(after_first.inbox, 4);
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    assert_unchanged(after_first);
    /* A late retry by the sender is still a success, not "expired". */
    now_ms = T0 + 3600 * 1000;
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    assert_unchanged(after_first);
    /* ...but it does not open the door to anyone else. */
    cr_assert_eq(recall_as(2, s.seq_of[2], NULL, 0), GIM_EFORBIDDEN);
}

Test(recall, unknown_seq_is_not_found)
{
    struct send s = send_user(1, 2, "exists");
    struct snap before = snap();
    char msg[200];
    cr_assert_eq(recall_as(1, 99, msg, sizeof msg), GIM_ENOTFOUND);
    cr_assert(strstr(msg, "99") != NULL, "message names the seq: %s", msg);
    /* seq names the caller's own inbox: user 3 has no entry at 1 even though user 1 does. */
    cr_assert_eq(recall_as(3, s.seq_of[1], NULL, 0), GIM_ENOTFOUND);
    assert_unchanged(before);
}

Test(recall, seq_must_be_positive)
{
    send_user(1, 2, "x");
    struct snap before = snap();
    char msg[200];
    cr_assert_eq(recall_as(1, 0, msg, sizeof msg), GIM_EBADREQ);
    cr_assert(strstr(msg, "seq") != NULL, "%s", msg);
    cr_assert_eq(recall_as(1, -5, NULL, 0), GIM_EBADREQ);
    assert_unchanged(before);
}

Test(recall, a_recall_notice_cannot_be_recalled)
{
    struct send s = send_user(1, 2, "x");
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    struct snap before = snap();
    char msg[200];
    cr_assert_eq(recall_as(1, 2, msg, sizeof msg), GIM_EFORBIDDEN, "the notice is at seq 2");
    cr_assert(strstr(msg, "notice") != NULL, "%s", msg);
    assert_unchanged(before);
}

/* A failure half-way (the second notice cannot be stored) undoes the erase and the first notice. */
Test(recall, a_failure_midway_rolls_everything_back)
{
    struct send s = send_user(1, 2, "atomic");
    exec("CREATE TRIGGER boom BEFORE INSERT ON inbox WHEN NEW.user_id = 2 "
         "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    struct snap before = snap();
    cr_assert_neq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    assert_unchanged(before);
    assert_intact(1, s.seq_of[1]);
    exec("DROP TRIGGER boom");
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    /* The failed attempt's seqs were given back: no gap in either inbox. */
    assert_notice(1, 2, 1, 1, PB__RECEIVER_TYPE__RT_USER, 2);
    assert_notice(2, 2, 1, 1, PB__RECEIVER_TYPE__RT_USER, 2);
}

/* ---- groups ----------------------------------------------------------------------------- */

Test(recall, group_admin_recalls_a_members_message_after_the_window)
{
    make_group();
    send_user(1, MEMBER2, "first, so the copies' seqs differ");
    struct send s = send_group(MEMBER, "off-topic");
    int64_t copies = q("SELECT count(*) FROM group_copy");
    now_ms = T0 + 24LL * 3600 * 1000;
    char msg[200];
    cr_assert_eq(recall_as(ADMIN, s.seq_of[ADMIN], msg, sizeof msg), GIM_OK, "%s", msg);
    int64_t users[] = {OWNER, ADMIN, MEMBER, MEMBER2};
    for (int i = 0; i < 4; i++) {
        assert_recalled(users[i], s.seq_of[users[i]]);
        cr_assert_eq(last_seq(users[i]), s.seq_of[users[i]] + 1);
        assert_notice(users[i], s.seq_of[users[i]] + 1, s.seq_of[users[i]], ADMIN,
                      PB__RECEIVER_TYPE__RT_GROUP, GROUP);
    }
    cr_assert_eq(q("SELECT count(*) FROM group_copy"), copies, "notices have no group_copy rows");
}

Test(recall, group_owner_recalls_any_message)
{
    make_group();
    struct send s = send_group(ADMIN, "even an admin's");
    now_ms = T0 + 7LL * 24 * 3600 * 1000;
    cr_assert_eq(recall_as(OWNER, s.seq_of[OWNER], NULL, 0), GIM_OK);
    assert_recalled(MEMBER, s.seq_of[MEMBER]);
    assert_notice(MEMBER, s.seq_of[MEMBER] + 1, s.seq_of[MEMBER], OWNER,
                  PB__RECEIVER_TYPE__RT_GROUP, GROUP);
}

Test(recall, group_member_cannot_recall_someone_elses_message)
{
    make_group();
    struct send s = send_group(MEMBER, "not yours");
    struct snap before = snap();
    cr_assert_eq(recall_as(MEMBER2, s.seq_of[MEMBER2], NULL, 0), GIM_EFORBIDDEN);
    assert_unchanged(before);
}

Test(recall, group_sender_has_the_window_like_anyone)
{
    make_group();
    struct send s = send_group(MEMBER, "mine");
    now_ms = T0 + 121 * 1000;
    struct snap before = snap();
    cr_assert_eq(recall_as(MEMBER, s.seq_of[MEMBER], NULL, 0), GIM_ERECALLEXPIRED);
    assert_unchanged(before);
    now_ms = T0 + 1000;
    cr_assert_eq(recall_as(MEMBER, s.seq_of[MEMBER], NULL, 0), GIM_OK);
    assert_recalled(OWNER, s.seq_of[OWNER]);
}

Test(recall, demoted_admin_loses_the_right)
{
    make_group();
    struct send s = send_group(MEMBER, "x");
    exec("UPDATE group_member SET role = 'member' WHERE user_id = 6");
    cr_assert_eq(recall_as(ADMIN, s.seq_of[ADMIN], NULL, 0), GIM_EFORBIDDEN,
                 "roles are read fresh");
}

/* ---- operator recall (gimctl recall --admin) -------------------------------------------- */

static gim_err admin_recall(struct wctx *wc, void *arg)
{
    struct send *s = arg;
    struct recall_result res;
    char why[160];
    gim_err e = recall_apply(wc, 0, 0, s->to, s->seq_of[s->to], true, &res, why, sizeof why);
    if (e == GIM_OK)
        cr_assert_eq(res.n_notices, 2);
    recall_result_free(&res);
    return e;
}

Test(recall, admin_skips_the_checks_and_signs_as_system)
{
    struct send s = send_user(1, 2, "operator removes this");
    now_ms = T0 + 3600 * 1000;
    cr_assert_eq(run(admin_recall, &s), GIM_OK);
    assert_recalled(1, 1);
    cr_assert_eq(q("SELECT count(*) FROM message WHERE message_type = 7 AND sender_type = 1 "
                   "AND sender_id = 0"),
                 2, "operator notices come from the system");
}

/* ---- pushes after the commit ------------------------------------------------------------ */

static void put_session(struct presence *p, int64_t user, int64_t device, const char *gw)
{
    struct session s = {.user_id = user, .device_id = device, .last_seen_ms = now_ms};
    snprintf(s.gateway_id, sizeof s.gateway_id, "%s", gw);
    cr_assert_eq(presence_put(p, &s), GIM_OK);
}

/* Receives one Delivery within 2 s; returns its topic in topic[]. */
static Pb__Delivery *receive(nng_socket sub, char *topic, size_t tlen)
{
    nng_msg *m = NULL;
    if (nng_recvmsg(sub, &m, 0) != 0)
        return NULL;
    uint8_t *body = nng_msg_body(m);
    size_t len = nng_msg_len(m);
    uint8_t *nl = memchr(body, '\n', len);
    cr_assert_not_null(nl, "topic ends with a newline");
    snprintf(topic, tlen, "%.*s", (int)(nl - body), (const char *)body);
    Pb__Delivery *d = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
    nng_msg_free(m);
    cr_assert_not_null(d);
    return d;
}

Test(recall, committed_pushes_each_notice_to_its_users_other_devices)
{
    char err[256], url[160];
    struct presence *p = NULL;
    struct push *pu = NULL;
    nng_socket sub;
    snprintf(url, sizeof url, "ipc://%s/pub.ipc", dir);
    for (unsigned i = 0; i < cfg.publish_count; i++)
        free(cfg.publish[i]);
    cfg.publish[0] = strdup(url);
    cfg.publish_count = 1;
    cr_assert_eq(push_open(&pu, &cfg, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(presence_open(&p), GIM_OK);
    cr_assert_eq(nng_sub0_open(&sub), 0);
    cr_assert_eq(nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0), 0);
    cr_assert_eq(nng_socket_set_ms(sub, NNG_OPT_RECVTIMEO, 2000), 0);
    cr_assert_eq(nng_dial(sub, url, NULL, 0), 0);
    usleep(200 * 1000); /* let PUB attach the pipe */
    w.presence = p;
    w.push = pu;

    send_user(3, 2, "shift user 2's seqs");
    struct send s = send_user(1, 2, "pushed away");
    put_session(p, 1, 1 * 100 + DEVICE, "gw1"); /* the recalling device: gets only its reply */
    put_session(p, 1, 199, "gw1");              /* the sender's other device */
    put_session(p, 2, 299, "gw2");
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);

    bool seen1 = false, seen2 = false;
    for (int i = 0; i < 2; i++) {
        char topic[80];
        Pb__Delivery *d = receive(sub, topic, sizeof topic);
        cr_assert_not_null(d, "expected two deliveries, got %d", i);
        cr_assert_eq(d->output->type, PB__PACKAGE_TYPE__PT_MESSAGE);
        Pb__MessageSend *ms =
            pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
        cr_assert_not_null(ms);
        cr_assert_not_null(ms->message);
        Pb__Command *cmd = pb__command__unpack(NULL, ms->message->message_content.len,
                                               ms->message->message_content.data);
        cr_assert_not_null(cmd);
        cr_assert_eq(cmd->code, RECALL_COMMAND_CODE);
        Pb__RecallInput *ri = pb__recall_input__unpack(NULL, cmd->data.len, cmd->data.data);
        cr_assert_not_null(ri);
        cr_assert_eq(d->n_device_ids, 1);
        if (strcmp(topic, "gw1") == 0) {
            seen1 = true;
            cr_assert_eq(d->device_ids[0], 199, "the recalling device is excluded");
            cr_assert_eq(ms->message->seq, 2);
            cr_assert_eq(ri->seq, 1);
        } else {
            cr_assert_str_eq(topic, "gw2");
            seen2 = true;
            cr_assert_eq(d->device_ids[0], 299);
            cr_assert_eq(ms->message->seq, 3);
            cr_assert_eq(ri->seq, 2);
        }
        cr_assert_eq(ms->message->message_type, PB__MESSAGE_TYPE__MT_COMMAND);
        cr_assert_eq(ms->message->sender->sender_id, 1);
        pb__recall_input__free_unpacked(ri, NULL);
        pb__command__free_unpacked(cmd, NULL);
        pb__message_send__free_unpacked(ms, NULL);
        pb__delivery__free_unpacked(d, NULL);
    }
    cr_assert(seen1 && seen2);
    push_flush(pu); /* the push thread counts after it sent */
    cr_assert_eq(push_published(pu), 2);

    /* A repeated recall pushes nothing. */
    cr_assert_eq(recall_as(1, s.seq_of[1], NULL, 0), GIM_OK);
    push_flush(pu);
    cr_assert_eq(push_published(pu), 2);

    w.presence = NULL;
    w.push = NULL;
    nng_close(sub);
    push_close(pu);
    presence_close(p);
}

/* The recall area of storage.h: both backends implement every operation (no NULL to call). */
static void assert_recall_ops(const struct storage_ops *b)
{
    const struct storage_recall_ops *o = b->recall;
    cr_assert_not_null(o, "%s", b->name);
#define HAS(op) cr_assert(o->op != NULL, "%s: recall operation " #op " missing", b->name)
    HAS(find);
    HAS(erase);
    HAS(targets);
    HAS(erased);
    HAS(erasure_state);
    HAS(erasure_start);
    HAS(erasure_cursor);
    HAS(erasure_finish);
    HAS(erasure_devices);
    HAS(erasure_device_room_idem);
    HAS(erasure_device_delete);
    HAS(erasure_memberships);
    HAS(erasure_inbox);
    HAS(erasure_entry);
    HAS(erasure_room_scan);
    HAS(erasure_room_erase);
#undef HAS
}

Test(recall, storage_ops_complete)
{
    assert_recall_ops(&storage_sqlite);
    assert_recall_ops(&storage_pg);
}

/* Erased content asks for the WAL scrub on SQLite only (PostgreSQL has no WAL file to scrub). */
Test(recall, erased_asks_scrub_on_sqlite_only)
{
    struct wctx a = {0}, b = {0};
    storage_sqlite.recall->erased(&a);
    cr_assert(a.scrub_wal);
    storage_pg.recall->erased(&b);
    cr_assert_not(b.scrub_wal);
}
