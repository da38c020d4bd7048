/*
 * Retention on a temp database: messages are stored through write jobs run by
 * writer_run_batch (seqs from the seq module, send_time from a clock the test
 * moves), then retention_run / maint_run prune them. Checks that exactly the
 * old ones go (with inbox entries, group copies, idempotency records, room
 * log entries), that their bytes leave the file, that seqs and counters stay,
 * and that sync over the pruned range returns what remains.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "handlers.h"
#include "maint.h"
#include "message.h"
#include "retention.h"
#include "seq.h"
#include "storage.h"
#include "store.h"
#include "writer.h"

#define DAY (24LL * 60 * 60 * 1000)
#define NOW 1700000000000LL

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db;
static struct seq *seqs;
static struct wctx w;
static int64_t clock_ms = NOW;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return clock_ms;
}

static void setup(void)
{
    char err[256] = "", path[128];
    snprintf(dir, sizeof dir, "/tmp/gimret-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cfg.retention.days = 7;
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    w = (struct wctx){.db = db, .seq = seqs, .cfg = &cfg, .clock = {test_clock, NULL}};
    clock_ms = NOW;
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

TestSuite(retention, .init = setup, .fini = teardown, .timeout = 60);

/* --- storing messages the way the send handler does --------------------------------------- */

struct send_job {
    struct write_job job;
    int receiver_type; /* 1 user, 2 group */
    int64_t from, device, to, request_id;
    const int64_t *members; /* group sends */
    size_t n_members;
    const char *text;
    int64_t id; /* out */
    gim_err err;
};

static void bind_all(sqlite3_stmt *st, int n, const int64_t *v)
{
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(st, i + 1, v[i]);
}

/* Runs one statement with int64 parameters on c; asserts it succeeds. */
static void sql(sqlite3 *c, const char *q, int n, const int64_t *v)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c, q, -1, &st, NULL), SQLITE_OK, "%s: %s", q,
                 sqlite3_errmsg(c));
    bind_all(st, n, v);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    cr_assert(rc == SQLITE_DONE || rc == SQLITE_ROW, "%s: %s", q, sqlite3_errmsg(c));
}

static int64_t one(const char *q, int n, const int64_t *v)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db, q, -1, &st, NULL), SQLITE_OK, "%s", q);
    bind_all(st, n, v);
    int64_t r = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return r;
}

static gim_err send_exec(struct write_job *job, struct wctx *wc)
{
    struct send_job *s = (struct send_job *)job;
    struct message_new m = {.sender_type = 2,
                            .sender_id = s->from,
                            .sender_device_id = s->device,
                            .receiver_type = s->receiver_type,
                            .receiver_id = s->to,
                            .message_type = 1,
                            .content = (const uint8_t *)s->text,
                            .content_len = strlen(s->text),
                            .send_time = wc->now_ms};
    int64_t member_seq[8];
    gim_err e;
    if ((e = seq_next(wc->seq, wc->db, SEQ_USER, s->from, &m.sender_seq)) != GIM_OK)
        return e;
    if (s->receiver_type == 1) {
        m.receiver_seq = m.sender_seq;
        if (s->to != s->from &&
            (e = seq_next(wc->seq, wc->db, SEQ_USER, s->to, &m.receiver_seq)) != GIM_OK)
            return e;
    }
    for (size_t i = 0; i < s->n_members; i++) {
        member_seq[i] = m.sender_seq;
        if (s->members[i] != s->from &&
            (e = seq_next(wc->seq, wc->db, SEQ_USER, s->members[i], &member_seq[i])) != GIM_OK)
            return e;
    }
    if ((e = message_insert(wc->db, &m, &s->id)) != GIM_OK)
        return e;
    if ((e = message_inbox_add(wc->db, s->from, m.sender_seq, s->id)) != GIM_OK)
        return e;
    if (s->receiver_type == 1 && s->to != s->from &&
        (e = message_inbox_add(wc->db, s->to, m.receiver_seq, s->id)) != GIM_OK)
        return e;
    for (size_t i = 0; i < s->n_members; i++) {
        if (s->members[i] != s->from &&
            (e = message_inbox_add(wc->db, s->members[i], member_seq[i], s->id)) != GIM_OK)
            return e;
        sql(wc->db->db, "INSERT INTO group_copy (message_id, user_id, seq) VALUES (?1, ?2, ?3)", 3,
            (int64_t[]){s->id, s->members[i], member_seq[i]});
    }
    if (s->request_id)
        sql(wc->db->db,
            "INSERT INTO idempotency (device_id, request_id, message_id) VALUES (?1, ?2, ?3)", 3,
            (int64_t[]){s->device, s->request_id, s->id});
    return GIM_OK;
}

static void send_done(struct write_job *job, struct wctx *wc, gim_err err)
{
    (void)wc;
    ((struct send_job *)job)->err = err;
}

/* Stores a message at time `at` through writer_run_batch; returns its id. */
static int64_t store_at(int64_t at, struct send_job s)
{
    struct write_job *jobs[1] = {&s.job};
    s.job.exec = send_exec;
    s.job.done = send_done;
    clock_ms = at;
    writer_run_batch(&w, jobs, 1);
    clock_ms = NOW;
    cr_assert_eq(s.err, GIM_OK, "store failed: %s", gim_err_name(s.err));
    return s.id;
}

static int64_t user_msg(int64_t at, int64_t from, int64_t to, const char *text, int64_t req)
{
    return store_at(at, (struct send_job){.receiver_type = 1,
                                          .from = from,
                                          .device = from * 10 + 1,
                                          .to = to,
                                          .text = text,
                                          .request_id = req});
}

static int64_t count(const char *q)
{
    return one(q, 0, NULL);
}

static int64_t user_seq(int64_t user)
{
    return one("SELECT seq FROM user_last_seq WHERE user_id = ?1", 1, (int64_t[]){user});
}

/* The user's inbox seqs, ascending, as "1,2,3". */
static void inbox_seqs(int64_t user, char *out, size_t len)
{
    sqlite3_stmt *st;
    size_t n = 0;
    out[0] = 0;
    cr_assert_eq(sqlite3_prepare_v2(db->db, "SELECT seq FROM inbox WHERE user_id = ?1 ORDER BY seq",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, user);
    while (sqlite3_step(st) == SQLITE_ROW)
        n += (size_t)snprintf(out + n, len - n, "%s%lld", n ? "," : "",
                              (long long)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
}

/* True when needle occurs anywhere in the database file's bytes. */
static bool file_contains(const char *needle)
{
    FILE *f = fopen(cfg.database.path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    bool found = memmem(buf, (size_t)n, needle, strlen(needle)) != NULL;
    free(buf);
    return found;
}

static void checkpoint(void)
{
    cr_assert_eq(sqlite3_wal_checkpoint_v2(db->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                 SQLITE_OK);
}

/* handle_sync's prepare + read on a read-only connection, as a worker runs them. */
static Pb__SyncOutput *sync_after(int64_t user, int64_t after)
{
    char err[256];
    struct store_conn *ro = NULL;
    cr_assert_eq(store_open(&cfg, STORE_READER, &ro, err, sizeof err), GIM_OK, "%s", err);
    Pb__SyncInput si = PB__SYNC_INPUT__INIT;
    si.seq = after;
    uint8_t data[32], env[64];
    Pb__Input in = PB__INPUT__INIT;
    in.type = PB__PACKAGE_TYPE__PT_SYNC;
    in.data.data = data;
    in.data.len = pb__sync_input__pack(&si, data);
    Pb__GatewayRequest gr = PB__GATEWAY_REQUEST__INIT;
    gr.input = &in;
    gr.user_id = user;
    size_t len = pb__gateway_request__pack(&gr, env);
    struct request r = {0};
    r.env = pb__gateway_request__unpack(NULL, len, env);
    r.type = PB__PACKAGE_TYPE__PT_SYNC;
    r.h = &handle_sync;
    r.cfg = &cfg;
    r.sess.user_id = user;
    cr_assert_eq(handle_sync.prepare(&r), GIM_OK, "%s", r.errmsg);
    cr_assert_eq(handle_sync.read(&r, ro), GIM_OK, "%s", r.errmsg);
    Pb__SyncOutput *out = pb__sync_output__unpack(NULL, r.out_len, r.out);
    cr_assert_not_null(out);
    request_reset(&r);
    store_close(ro);
    return out;
}

/* --- tests --------------------------------------------------------------------------------- */

Test(retention, prunes_exactly_the_old_messages_and_keeps_seqs)
{
    static const int64_t members[] = {1, 2, 3};
    char seqs_buf[128];
    int deleted = -1;

    int64_t a = user_msg(NOW - 10 * DAY, 1, 2, "OLD-SECRET-A", 501); /* u1:1 u2:1 */
    int64_t b = store_at(NOW - 9 * DAY, (struct send_job){.receiver_type = 2,
                                                          .from = 1,
                                                          .device = 11,
                                                          .to = 100,
                                                          .members = members,
                                                          .n_members = 3,
                                                          .text = "OLD-SECRET-B",
                                                          .request_id = 502}); /* u1:2 u2:2 u3:1 */
    int64_t c = user_msg(NOW - 8 * DAY, 1, 1, "OLD-SECRET-C", 0);              /* u1:3 (self) */
    int64_t d = user_msg(NOW - 1 * DAY, 2, 1, "NEW-KEEP-D", 504);              /* u2:3 u1:4 */
    int64_t e = user_msg(NOW - 7 * DAY, 1, 3, "EDGE-KEEP-E", 0); /* exactly at the cutoff */
    /* Room log: one old and one new entry, and the old one's idempotency record. */
    sql(db->db,
        "INSERT INTO room_message (room_id, seq, sender_type, sender_id, sender_device_id, "
        "message_type, content, send_time) VALUES (500, 1, 2, 1, 11, 1, 'OLD-ROOM-SECRET', ?1), "
        "(500, 2, 2, 1, 11, 1, 'NEW-ROOM', ?2)",
        2, (int64_t[]){NOW - 30 * DAY, NOW - DAY});
    sql(db->db, "INSERT INTO room_seq (room_id, seq) VALUES (500, 2)", 0, NULL);
    sql(db->db,
        "INSERT INTO idempotency (device_id, request_id, message_id) "
        "VALUES (11, 601, NULL), (11, 602, NULL)",
        0, NULL);
    sql(db->db,
        "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
        "VALUES (11, 601, ?1, 500, 1), (11, 602, ?2, 500, 2)",
        2, (int64_t[]){NOW - 30 * DAY, NOW - DAY});

    cr_assert_eq(user_seq(1), 5);
    cr_assert_eq(user_seq(2), 3);
    cr_assert_eq(user_seq(3), 2);
    checkpoint();
    cr_assert(file_contains("OLD-SECRET-A"), "the check can see content in the file");
    cr_assert(file_contains("OLD-ROOM-SECRET"));

    cr_assert_eq(retention_run(&w, NOW, 100, &deleted), GIM_OK);
    cr_assert_eq(deleted, 4, "3 messages and 1 room entry, got %d", deleted);

    /* Exactly the old messages are gone; the one at the cutoff stays. */
    cr_assert_eq(
        one("SELECT count(*) FROM message WHERE id IN (?1, ?2, ?3)", 3, (int64_t[]){a, b, c}), 0);
    cr_assert_eq(one("SELECT count(*) FROM message WHERE id IN (?1, ?2)", 2, (int64_t[]){d, e}), 2);
    cr_assert_eq(count("SELECT count(*) FROM message"), 2);
    /* Their inbox entries went with them; the others keep their seqs. */
    inbox_seqs(1, seqs_buf, sizeof seqs_buf);
    cr_assert_str_eq(seqs_buf, "4,5");
    inbox_seqs(2, seqs_buf, sizeof seqs_buf);
    cr_assert_str_eq(seqs_buf, "3");
    inbox_seqs(3, seqs_buf, sizeof seqs_buf);
    cr_assert_str_eq(seqs_buf, "2");
    cr_assert_eq(count("SELECT count(*) FROM inbox WHERE message_id NOT IN (SELECT id FROM "
                       "message)"),
                 0, "no entry points at a pruned message");
    cr_assert_eq(count("SELECT count(*) FROM group_copy"), 0);
    /* Idempotency: the pruned room entry's record is gone; the pruned messages' records name
     * no message now (keyed by request id first, migrations/0009: the sweep prunes them, and
     * a retry of theirs is a new send); the kept ones stay. */
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE request_id = 601"), 0);
    cr_assert_eq(count("SELECT count(*) FROM idempotency i LEFT JOIN message m ON "
                       "m.id = i.message_id WHERE request_id IN (501, 502) AND m.id IS NULL"),
                 2);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE request_id IN (504, 602)"), 2);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency WHERE request_id = 601"), 0);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency WHERE request_id = 602"), 1);
    /* Room log: the old entry is gone, the counter is not lowered. */
    cr_assert_eq(count("SELECT count(*) FROM room_message"), 1);
    cr_assert_eq(count("SELECT seq FROM room_message WHERE room_id = 500"), 2);
    cr_assert_eq(count("SELECT seq FROM room_seq WHERE room_id = 500"), 2);
    /* Counters are never lowered: the next seq is never one a device has seen. */
    cr_assert_eq(user_seq(1), 5);
    cr_assert_eq(user_seq(2), 3);
    cr_assert_eq(user_seq(3), 2);
    cr_assert_eq(count("PRAGMA integrity_check") == -1, 0);

    /* The erased bytes are overwritten in the file, not just unlinked (secure_delete). */
    cr_assert(w.scrub_wal, "retention asks for the WAL to be truncated");
    checkpoint();
    cr_assert(!file_contains("OLD-SECRET-A"));
    cr_assert(!file_contains("OLD-SECRET-B"));
    cr_assert(!file_contains("OLD-SECRET-C"));
    cr_assert(!file_contains("OLD-ROOM-SECRET"));
    cr_assert(file_contains("NEW-KEEP-D"));

    /* Nothing more to do: a second pass deletes nothing. */
    cr_assert_eq(retention_run(&w, NOW, 100, &deleted), GIM_OK);
    cr_assert_eq(deleted, 0);

    /* A new message after pruning continues the counter. */
    user_msg(NOW, 1, 2, "AFTER", 0);
    inbox_seqs(1, seqs_buf, sizeof seqs_buf);
    cr_assert_str_eq(seqs_buf, "4,5,6");
    inbox_seqs(2, seqs_buf, sizeof seqs_buf);
    cr_assert_str_eq(seqs_buf, "3,4");

    /* The next sweep prunes the records of the pruned messages. */
    sql(db->db,
        "INSERT INTO device (device_id, user_id, created_at, updated_at) VALUES "
        "(11, 1, ?1, ?1), (21, 2, ?1, ?1)",
        1, (int64_t[]){NOW - 30 * DAY});
    clock_ms = NOW;
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE request_id IN (501, 502)"), 0,
                 "the sweep prunes the records of pruned messages");
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE request_id IN (504, 602)"), 2);
}

Test(retention, sync_over_a_pruned_range_returns_what_remains)
{
    user_msg(NOW - 20 * DAY, 1, 2, "old-1", 0); /* u1:1 */
    user_msg(NOW - 19 * DAY, 1, 2, "old-2", 0); /* u1:2 */
    user_msg(NOW - 2 * DAY, 1, 2, "new-3", 0);  /* u1:3 */
    user_msg(NOW - 1 * DAY, 2, 1, "new-4", 0);  /* u1:4 */
    int deleted = 0;
    cr_assert_eq(retention_run(&w, NOW, 100, &deleted), GIM_OK);
    cr_assert_eq(deleted, 2);

    /* A device that held seq 1 (inside the pruned range), and one with no local state. */
    int64_t afters[] = {1, 0};
    for (size_t k = 0; k < 2; k++) {
        Pb__SyncOutput *out = sync_after(1, afters[k]);
        cr_assert_eq(out->n_messages, 2, "after=%lld", (long long)afters[k]);
        cr_assert_eq(out->messages[0]->seq, 3);
        cr_assert_eq(out->messages[1]->seq, 4);
        cr_assert_eq(out->messages[0]->message_content.len, 5);
        cr_assert_eq(memcmp(out->messages[0]->message_content.data, "new-3", 5), 0);
        cr_assert(!out->has_more);
        pb__sync_output__free_unpacked(out, NULL);
    }
}

Test(retention, works_in_slices_of_max_rows)
{
    char want[256], got[256];
    size_t n = 0;
    for (int i = 0; i < 25; i++)
        user_msg(NOW - 30 * DAY + i, 1, 2, "old", 0);
    for (int i = 0; i < 3; i++) {
        user_msg(NOW - DAY + i, 1, 2, "new", 0);
        n += (size_t)snprintf(want + n, sizeof want - n, "%s%d", i ? "," : "", 26 + i);
    }
    int deleted = 0, rounds[4];
    for (int r = 0; r < 4; r++) {
        cr_assert_eq(retention_run(&w, NOW, 10, &deleted), GIM_OK);
        rounds[r] = deleted;
    }
    cr_assert_eq(rounds[0], 10);
    cr_assert_eq(rounds[1], 10);
    cr_assert_eq(rounds[2], 5);
    cr_assert_eq(rounds[3], 0);
    inbox_seqs(1, got, sizeof got);
    cr_assert_str_eq(got, want);
    inbox_seqs(2, got, sizeof got);
    cr_assert_str_eq(got, want);
    cr_assert_eq(user_seq(1), 28);
}

Test(retention, zero_days_keeps_everything)
{
    int deleted = -1;
    user_msg(NOW - 3000 * DAY, 1, 2, "ancient", 0);
    cfg.retention.days = 0;
    cr_assert_eq(retention_run(&w, NOW, 100, &deleted), GIM_OK);
    cr_assert_eq(deleted, 0);
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM message"), 1);
    cr_assert_eq(count("SELECT count(*) FROM inbox"), 2);
}

Test(retention, refuses_to_run_inside_a_transaction_and_changes_nothing)
{
    int deleted = -1;
    user_msg(NOW - 30 * DAY, 1, 2, "old", 0);
    cr_assert_eq(store_exec(db, "BEGIN IMMEDIATE"), GIM_OK);
    cr_assert_neq(retention_run(&w, NOW, 100, &deleted), GIM_OK);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(store_exec(db, "ROLLBACK"), GIM_OK);
    cr_assert_eq(count("SELECT count(*) FROM message"), 1);
}

Test(retention, the_writers_maintenance_pass_applies_it)
{
    user_msg(NOW - 8 * DAY, 1, 2, "old", 0);
    user_msg(NOW - 6 * DAY, 1, 2, "new", 0);
    clock_ms = NOW - 2 * DAY; /* neither is past the window yet */
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM message"), 2);
    clock_ms = NOW + 61 * 1000; /* a minute later by the writer's clock: the old one is due */
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM message"), 1);
    cr_assert_eq(count("SELECT count(*) FROM inbox WHERE seq = 1"), 0);
    cr_assert_eq(count("SELECT count(*) FROM inbox WHERE seq = 2"), 2);
}

/* Whether the file at path has a line containing what. */
static bool logged(const char *path, const char *what)
{
    char line[1024];
    bool found = false;
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

/*
 * A maintenance pass that cannot write (another connection holds the write
 * lock) says which step failed, instead of nothing, and the next pass does
 * the work.
 */
Test(retention, a_failed_maintenance_pass_is_logged_and_retried)
{
    char log[128];
    sqlite3 *other = NULL;
    user_msg(NOW - 8 * DAY, 1, 2, "old", 0);
    snprintf(log, sizeof log, "%s/stderr", dir);
    cr_assert_not_null(freopen(log, "w", stderr));
    cr_assert_eq(sqlite3_open(cfg.database.path, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db->db, 0); /* fail at once rather than after busy_timeout_ms */
    clock_ms = NOW;
    maint_run(&w);
    fflush(stderr);
    cr_assert(logged(log, "msg=\"retention failed\""), "see %s", log);
    cr_assert(logged(log, "msg=\"idempotency prune failed\""), "see %s", log);
    cr_assert_eq(count("SELECT count(*) FROM message"), 1);

    cr_assert_eq(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    clock_ms = NOW + 61 * 1000; /* retention's next turn */
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM message"), 0);
}

/* The business API's idempotency records (operator.h) go once idempotency.window_seconds passed. */
Test(retention, the_maintenance_pass_prunes_old_operator_idempotency_records)
{
    int64_t window_ms = (int64_t)cfg.idempotency.window_seconds * 1000;
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT INTO operator_idempotency (idem_key, type, request, created_at) VALUES "
             "('key:old', 104, x'', %lld), ('key:new', 104, x'', %lld)",
             (long long)(NOW - window_ms - 1000), (long long)(NOW - window_ms + 60000));
    cr_assert_eq(store_exec(db, sql), GIM_OK);
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM operator_idempotency WHERE idem_key = 'key:old'"), 0);
    cr_assert_eq(count("SELECT count(*) FROM operator_idempotency WHERE idem_key = 'key:new'"), 1);
}

/*
 * Idempotency records after migration 0007: a user send's record is as old
 * as its message (there is no created_at), a room send's as its details say;
 * the writer's maintenance pass prunes exactly the expired ones, and key rows
 * left without a message or details.
 */
Test(retention, the_maintenance_pass_prunes_expired_idempotency_records)
{
    cfg.retention.days = 0; /* the messages stay: only the records are due */
    cfg.idempotency.window_seconds = 3600;
    int64_t hour = 3600 * 1000;
    user_msg(NOW - 2 * hour, 1, 2, "old", 701);
    int64_t gone = user_msg(NOW - 2 * hour + 1, 1, 2, "deleted (a damaged row)", 705);
    user_msg(NOW - hour + 1000, 1, 2, "new", 702);
    /* Written after a clock step back: the id order is not the time order. */
    user_msg(NOW - 3 * hour, 2, 1, "older, no request id", 0);
    sql(db->db, "DELETE FROM message WHERE id = ?1", 1, (int64_t[]){gone});
    sql(db->db,
        "INSERT INTO idempotency (device_id, request_id, message_id) VALUES (11, 703, NULL), "
        "(11, 704, NULL), (11, 706, NULL)",
        0, NULL);
    /* Devices 11 and 21 are signed in; device 31 was deleted (its user 3 erased inside the
     * window, erasure.h): its record inside the window goes too. */
    int64_t kept = user_msg(NOW - hour + 2000, 3, 2, "from an erased device", 708);
    sql(db->db,
        "INSERT INTO device (device_id, user_id, created_at, updated_at) VALUES "
        "(11, 1, ?1, ?1), (21, 2, ?1, ?1)",
        1, (int64_t[]){NOW - 2 * hour});
    sql(db->db,
        "INSERT INTO erasure (user_id, upto_seq, started_at, finished_at) VALUES (3, 1, ?1, ?1)", 1,
        (int64_t[]){NOW - hour + 3000});
    sql(db->db,
        "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
        "VALUES (11, 703, ?1, 500, 1), (11, 704, ?2, 500, 2), (11, 707, ?1, 500, 3)",
        2, (int64_t[]){NOW - 2 * hour, NOW - hour + 1000});
    clock_ms = NOW;
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE request_id IN (702, 704)"), 2,
                 "inside the window");
    cr_assert_eq(count("SELECT count(*) FROM idempotency"), 2,
                 "701 expired, 703 expired, 705 names no message, 706 has no details, "
                 "708's device is gone");
    cr_assert_eq(count("SELECT group_concat(request_id) FROM room_idempotency"), 704);
    cr_assert_eq(one("SELECT count(*) FROM message WHERE id = ?1", 1, (int64_t[]){kept}), 1);
    cr_assert_eq(count("SELECT count(*) FROM message"), 4, "records go, messages stay");
}

/*
 * Send records for the sweep tests, in one transaction: message 1 is two days old, message 2
 * new (the window is a day); device dev gets records request_id first.. for n of them, each
 * naming message 1 (expired) or 2.
 */
static void idem_records(int64_t dev, int64_t first, int64_t n, bool expired)
{
    sql(db->db,
        "INSERT OR IGNORE INTO message (id, sender_type, sender_id, sender_device_id, "
        "receiver_type, receiver_id, message_type, content, send_time, status, sender_seq, "
        "receiver_seq) VALUES (1, 2, 1, 11, 1, 2, 1, x'00', ?1, 1, 1, 1), "
        "(2, 2, 1, 11, 1, 2, 1, x'00', ?2, 1, 2, 2)",
        2, (int64_t[]){NOW - 2 * DAY, NOW});
    /* Records come from signed-in devices: the sweep prunes those of a deleted device. */
    sql(db->db,
        "INSERT OR IGNORE INTO device (device_id, user_id, created_at, updated_at) "
        "VALUES (?1, 1, ?2, ?2)",
        2, (int64_t[]){dev, NOW - 2 * DAY});
    sql(db->db,
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?3) "
        "INSERT INTO idempotency (device_id, request_id, message_id) SELECT ?1, ?2 + i, ?4 FROM k",
        4, (int64_t[]){dev, first, n, expired ? 1 : 2});
}

/*
 * Expired records beyond one slice of PRUNE_ROWS (2,000) go within a few passes. Pruning was
 * one slice per 10 minutes: above 3.3 sends/s the expired records piled up for good.
 */
Test(retention, a_backlog_of_expired_records_goes_within_a_few_passes)
{
    cfg.retention.days = 0;
    cfg.idempotency.window_seconds = 24 * 3600;
    idem_records(11, 1, 7000, true);
    idem_records(12, 1, 300, false);
    clock_ms = NOW;
    for (int pass = 0; pass < 8; pass++) /* the same minute: no new sweep starts */
        maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE message_id = 1"), 0,
                 "every expired record goes");
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE message_id = 2"), 300,
                 "the records inside the window stay");
    cr_assert(!w.prune_sends, "the sweep is over");
}

/*
 * A pass looks at one slice of the send records in key order (20,000), not at all of them:
 * expired records behind 50,000 live ones are found by the third pass, not by the first, and
 * the sweep then ends and starts over after PRUNE_EVERY_MS (10 minutes).
 */
Test(retention, the_sweep_looks_at_one_slice_per_pass)
{
    cfg.retention.days = 0;
    cfg.idempotency.window_seconds = 24 * 3600;
    idem_records(11, 1, 50000, false);
    idem_records(900, 50001, 10, true); /* last in key order: (request_id, device_id) */
    clock_ms = NOW;
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE device_id = 900"), 10,
                 "the first pass looked past its slice");
    cr_assert(w.prune_sends);
    maint_run(&w);
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE device_id = 900"), 0);
    cr_assert(!w.prune_sends, "three slices cover 50,010 records");
    cr_assert_eq(count("SELECT count(*) FROM idempotency"), 50000);

    idem_records(901, 50011, 5, true);
    clock_ms = NOW + 60 * 1000;
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE device_id = 901"), 5,
                 "no sweep within 10 minutes of the last");
    clock_ms = NOW + 10 * 60 * 1000;
    for (int pass = 0; pass < 3; pass++)
        maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM idempotency WHERE device_id = 901"), 0,
                 "the next sweep, from the first record");
}

/* Room send details, in one transaction: device dev, request_id first.., created at t. */
static void room_records(int64_t dev, int64_t first, int64_t n, int64_t t)
{
    sql(db->db,
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?3) "
        "INSERT INTO room_idempotency (device_id, request_id, created_at, room_id, room_seq) "
        "SELECT ?1, ?2 + i, ?4, 500, ?2 + i FROM k",
        4, (int64_t[]){dev, first, n, t});
}

/* Room send details are swept the same way, a slice per pass. */
Test(retention, room_details_are_swept_a_slice_per_pass)
{
    cfg.retention.days = 0;
    cfg.idempotency.window_seconds = 24 * 3600;
    room_records(11, 1, 50000, NOW - 60 * 1000);
    room_records(900, 1, 10, NOW - 2 * DAY); /* last in key order */
    room_records(5, 1, 3000, NOW - 2 * DAY); /* first: a full slice, then more */
    clock_ms = NOW;
    maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency WHERE device_id = 900"), 10,
                 "the first pass looked past its slice");
    cr_assert(w.prune_rooms);
    /* Three slices, and one more pass per full slice that the 50 ms budget left over. */
    for (int pass = 1; pass < 6 && w.prune_rooms; pass++)
        maint_run(&w);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency WHERE device_id = 5"), 0);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency WHERE device_id = 900"), 0);
    cr_assert_eq(count("SELECT count(*) FROM room_idempotency"), 50000);
    cr_assert(!w.prune_rooms, "the sweep is over");
}

/*
 * The maint operations of both backends (storage.h): every operation is
 * there, and the three of shared sessions exactly where sessions are shared
 * (maint_run calls them only then; a missing one would crash a pass).
 */
static void check_maint_ops(const struct storage_ops *b)
{
    const struct storage_maint_ops *m = b->maint;
    cr_assert_not_null(m, "%s", b->name);
    cr_assert(m->ready && m->try_lock && m->scrub_wal && m->prune_idempotency &&
                  m->prune_room_idempotency && m->prune_operator_idempotency &&
                  m->retention_messages && m->retention_rooms,
              "%s: an operation is missing", b->name);
    cr_assert_eq(m->seen != NULL, b->shared_sessions, "%s", b->name);
    cr_assert_eq(m->seen_gateway != NULL, b->shared_sessions, "%s", b->name);
    cr_assert_eq(m->sweep != NULL, b->shared_sessions, "%s", b->name);
}

Test(retention, both_backends_implement_every_maint_operation)
{
    check_maint_ops(&storage_sqlite);
    check_maint_ops(&storage_pg);
    cr_assert(!storage_sqlite.shared_sessions, "one SQLite file, one writer");
    cr_assert(storage_pg.shared_sessions, "several instances on one PostgreSQL");
    cr_assert_eq(storage(db), &storage_sqlite, "store_open() sets the connection's backend");
}
