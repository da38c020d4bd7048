/*
 * PT_SYNC and PT_MESSAGE_ACK in-process: requests go through dispatch_begin
 * (authentication, prepare, read on a real read-only connection) and writes
 * through writer_run_batch, exactly as the server runs them, on a real
 * SQLite file. The inbox is filled by a write job using seq_next,
 * message_insert and message_inbox_add, so the counter (user_last_seq) is the highest seq.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "message.h"
#include "presence.h"
#include "request.h"
#include "seq.h"
#include "store.h"
#include "writer.h"

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db, *ro;
static struct seq *seqs;
static struct presence *pres;
static struct wctx w;
static struct dispatch disp;
static int64_t clock_ms = 1700000000000;
static int writes_done;

static int64_t test_clock(void *arg)
{
    (void)arg;
    return clock_ms;
}

static void write_done(struct request *r)
{
    (void)r;
    writes_done++;
}

static void setup(void)
{
    char err[256] = "", path[128];
    unsetenv("GIM_TOKEN_SECRET");
    snprintf(dir, sizeof dir, "/tmp/gimsync-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cfg.auth.insecure_dev = true;
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(store_open(&cfg, STORE_READER, &ro, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    cr_assert_eq(presence_open(&pres), GIM_OK);
    w = (struct wctx){
        .db = db, .seq = seqs, .cfg = &cfg, .presence = pres, .clock = {.now_ms = test_clock}};
    disp = (struct dispatch){
        .cfg = &cfg, .presence = pres, .clock = {.now_ms = test_clock}, .write_done = write_done};
}

static void teardown(void)
{
    char cmd[128];
    presence_close(pres);
    seq_close(seqs);
    store_close(ro);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(sync, .init = setup, .fini = teardown, .timeout = 60);

static int64_t one_int(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db->db, sql, -1, &st, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db->db));
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

/* Runs one request as the server would; the caller reads r and then calls request_reset(r). */
static void run_raw(struct request *r, int type, int64_t user, int64_t device, const uint8_t *data,
                    size_t len)
{
    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    Pb__Input in = PB__INPUT__INIT;
    in.type = type;
    in.request_id = 1;
    in.data.data = (uint8_t *)data;
    in.data.len = len;
    env.user_id = user;
    env.device_id = device;
    env.gateway_id = "gw";
    env.input = &in;
    size_t n = pb__gateway_request__get_packed_size(&env);
    uint8_t *buf = malloc(n);
    pb__gateway_request__pack(&env, buf);
    memset(r, 0, sizeof *r);
    if (dispatch_begin(&disp, r, buf, n, ro) == DISPATCH_WRITE) {
        struct write_job *j = &r->job;
        int before = writes_done;
        writer_run_batch(&w, &j, 1);
        cr_assert_eq(writes_done, before + 1, "the write completed");
    }
    free(buf);
}

static void run(struct request *r, int type, int64_t user, int64_t device,
                const ProtobufCMessage *data)
{
    uint8_t buf[512];
    size_t len = data ? protobuf_c_message_pack(data, buf) : 0;
    run_raw(r, type, user, device, buf, len);
}

static void signin(int64_t user, int64_t device)
{
    struct request r;
    Pb__SignInInput in = PB__SIGN_IN_INPUT__INIT;
    in.user_id = user;
    in.device_id = device;
    in.token = "dev";
    run(&r, PB__PACKAGE_TYPE__PT_SIGN_IN, user, device, &in.base);
    cr_assert_eq(r.code, GIM_OK, "sign-in: %s", r.errmsg);
    request_reset(&r);
}

/* Content of a message: `len` bytes, starting with "u<user>#<n>" to tell copies apart. */
static size_t fill_content(uint8_t *buf, size_t len, int64_t user, int n)
{
    memset(buf, 'x', len);
    char tag[32];
    int t = snprintf(tag, sizeof tag, "u%lld#%d", (long long)user, n);
    memcpy(buf, tag, (size_t)t < len ? (size_t)t : len);
    return len;
}

struct fill_job {
    struct write_job job;
    int64_t user;
    int count;
    size_t content_len;
    int receiver_type;
    int64_t receiver_id;
};

static gim_err fill_exec(struct write_job *job, struct wctx *wc)
{
    struct fill_job *f = (struct fill_job *)job;
    uint8_t *content = malloc(f->content_len + 1);
    static const int64_t mentions[] = {7, 8};
    gim_err e = GIM_OK;
    for (int i = 0; i < f->count && e == GIM_OK; i++) {
        int64_t seq = 0, id = 0;
        if ((e = seq_next(wc->seq, wc->db, SEQ_USER, f->user, &seq)) != GIM_OK)
            break;
        struct message_new m = {.sender_type = PB__SENDER_TYPE__ST_USER,
                                .sender_id = 900,
                                .sender_device_id = 9001,
                                .receiver_type = f->receiver_type,
                                .receiver_id = f->receiver_id,
                                .to_user_ids = f->receiver_type == 2 ? mentions : NULL,
                                .n_to_user_ids = f->receiver_type == 2 ? 2 : 0,
                                .message_type = PB__MESSAGE_TYPE__MT_TEXT,
                                .content = content,
                                .content_len =
                                    fill_content(content, f->content_len, f->user, (int)seq),
                                .send_time = wc->now_ms,
                                .sender_seq = 1,
                                .receiver_seq = seq};
        if ((e = message_insert(wc->db, &m, &id)) == GIM_OK)
            e = message_inbox_add(wc->db, f->user, seq, id);
    }
    free(content);
    return e;
}

static void fill_done(struct write_job *job, struct wctx *wc, gim_err err)
{
    (void)job;
    (void)wc;
    cr_assert_eq(err, GIM_OK, "filling the inbox failed: %d", err);
}

/* Appends count messages of content_len bytes to user's inbox (receiver = the user). */
static void fill_to(int64_t user, int count, size_t content_len, int receiver_type,
                    int64_t receiver_id)
{
    struct fill_job f = {.job = {.exec = fill_exec, .done = fill_done},
                         .user = user,
                         .count = count,
                         .content_len = content_len,
                         .receiver_type = receiver_type,
                         .receiver_id = receiver_id};
    struct write_job *j = &f.job;
    writer_run_batch(&w, &j, 1);
}

static void fill(int64_t user, int count, size_t content_len)
{
    fill_to(user, count, content_len, PB__RECEIVER_TYPE__RT_USER, user);
}

/* Syncs; returns the reply code and, on success, the decoded SyncOutput in *out. */
static int sync_req(int64_t user, int64_t device, int64_t seq, Pb__SyncOutput **out)
{
    struct request r;
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    in.seq = seq;
    run(&r, PB__PACKAGE_TYPE__PT_SYNC, user, device, &in.base);
    int code = r.code;
    *out = NULL;
    if (code == GIM_OK) {
        *out = pb__sync_output__unpack(NULL, r.out_len, r.out);
        cr_assert_not_null(*out, "reply data is a SyncOutput");
        if ((*out)->n_messages > 1) {
            /* The budget bounds the whole reply a gateway forwards, not only its data. */
            uint8_t *whole = NULL;
            size_t whole_len = 0;
            cr_assert_eq(request_pack_output(&r, &whole, &whole_len), GIM_OK);
            free(whole);
            cr_assert_leq(whole_len, cfg.sync.max_bytes,
                          "only a lone message may exceed max_bytes: an Output of %zu", whole_len);
        }
    }
    request_reset(&r);
    return code;
}

static int ack_req(int64_t user, int64_t device, int64_t ack, int64_t receive_time, char *msg,
                   size_t msglen)
{
    struct request r;
    Pb__MessageACK in = PB__MESSAGE_ACK__INIT;
    in.device_ack = ack;
    in.receive_time = receive_time;
    run(&r, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, user, device, &in.base);
    int code = r.code;
    if (msg)
        snprintf(msg, msglen, "%s", r.errmsg);
    cr_assert_eq(r.out_len, 0, "an ack reply carries no data");
    request_reset(&r);
    return code;
}

static int64_t device_int(const char *col, int64_t device)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT %s FROM device WHERE device_id = %lld", col,
             (long long)device);
    return one_int(sql);
}

Test(sync, pages_follow_has_more)
{
    cfg.sync.page_size = 3;
    signin(1, 11);
    fill(1, 7, 20);
    const size_t want_n[] = {3, 3, 1};
    const bool want_more[] = {true, true, false};
    int64_t at = 0, next_seq = 1;
    for (int p = 0; p < 3; p++) {
        Pb__SyncOutput *out;
        cr_assert_eq(sync_req(1, 11, at, &out), GIM_OK);
        cr_assert_eq(out->n_messages, want_n[p], "page %d size", p);
        cr_assert_eq(out->has_more, want_more[p], "page %d has_more", p);
        for (size_t i = 0; i < out->n_messages; i++)
            cr_assert_eq(out->messages[i]->seq, next_seq++, "ascending, no gaps");
        at = out->messages[out->n_messages - 1]->seq;
        pb__sync_output__free_unpacked(out, NULL);
    }
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, at, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 0, "nothing after the last seq");
    cr_assert(!out->has_more);
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, exactly_one_full_page_has_no_more)
{
    cfg.sync.page_size = 4;
    signin(1, 11);
    fill(1, 4, 20);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 4);
    cr_assert(!out->has_more, "has_more only when entries remain after the page");
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, message_fields_are_those_stored)
{
    signin(1, 11);
    fill(1, 1, 30);
    fill_to(1, 1, 40, PB__RECEIVER_TYPE__RT_GROUP, 555);
    /* A recall erases the content and flips the status; sync returns the row as stored. */
    fill(1, 1, 50);
    cr_assert_eq(store_exec(db, "UPDATE message SET status = 2, content = NULL WHERE id = 3"),
                 GIM_OK);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 3);

    const Pb__Message *m = out->messages[0];
    cr_assert_eq(m->seq, 1);
    cr_assert_not_null(m->sender);
    cr_assert_eq(m->sender->sender_type, PB__SENDER_TYPE__ST_USER);
    cr_assert_eq(m->sender->sender_id, 900);
    cr_assert_eq(m->sender->device_id, 9001);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_USER);
    cr_assert_eq(m->receiver_id, 1);
    cr_assert_eq(m->message_type, PB__MESSAGE_TYPE__MT_TEXT);
    cr_assert_eq(m->message_content.len, 30);
    cr_assert(memcmp(m->message_content.data, "u1#1", 4) == 0);
    cr_assert_eq(m->send_time, clock_ms);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_NORMAL);
    cr_assert_eq(m->n_to_user_ids, 0);

    m = out->messages[1];
    cr_assert_eq(m->seq, 2);
    cr_assert_eq(m->receiver_type, PB__RECEIVER_TYPE__RT_GROUP);
    cr_assert_eq(m->receiver_id, 555, "the group id for group messages");
    cr_assert_eq(m->n_to_user_ids, 2);
    cr_assert_eq(m->to_user_ids[0], 7);
    cr_assert_eq(m->to_user_ids[1], 8);
    cr_assert_eq(m->message_content.len, 40);

    m = out->messages[2];
    cr_assert_eq(m->seq, 3);
    cr_assert_eq(m->status, PB__MESSAGE_STATUS__MS_RECALL);
    cr_assert_eq(m->message_content.len, 0, "a recalled message has no content");
    pb__sync_output__free_unpacked(out, NULL);
}

/* The reply data of a sync, as the service sends it, and its code. */
static int sync_bytes(int64_t user, int64_t device, int64_t seq, uint8_t **buf, size_t *len)
{
    struct request r;
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    in.seq = seq;
    run(&r, PB__PACKAGE_TYPE__PT_SYNC, user, device, &in.base);
    int code = r.code;
    *buf = r.out; /* taken over from the request */
    *len = r.out_len;
    r.out = NULL;
    request_reset(&r);
    return code;
}

/*
 * message_page encodes the page itself, one message at a time: the bytes
 * must be exactly those protobuf-c packs for the same SyncOutput (mentions,
 * a recalled message without content, a large content, has_more on and
 * off), or a strict client could tell the difference.
 */
Test(sync, page_bytes_are_what_protobuf_c_packs)
{
    cfg.sync.max_bytes = 1024;
    cfg.sync.page_size = 4;
    signin(1, 11);
    fill(1, 2, 30);
    fill_to(1, 1, 40, PB__RECEIVER_TYPE__RT_GROUP, 555);
    fill(1, 1, 300);
    fill(1, 3, 400); /* past the byte budget: short pages */
    cr_assert_eq(store_exec(db, "UPDATE message SET status = 2, content = NULL WHERE id = 2"),
                 GIM_OK);
    int64_t at = 0;
    int pages = 0, more_pages = 0;
    for (;;) {
        uint8_t *buf;
        size_t len;
        cr_assert_eq(sync_bytes(1, 11, at, &buf, &len), GIM_OK);
        Pb__SyncOutput *out = pb__sync_output__unpack(NULL, len, buf);
        cr_assert_not_null(out);
        size_t want_len = pb__sync_output__get_packed_size(out);
        uint8_t *want = malloc(want_len);
        pb__sync_output__pack(out, want);
        cr_assert_eq(len, want_len, "page %d: %zu bytes, protobuf-c packs %zu", pages, len,
                     want_len);
        cr_assert(memcmp(buf, want, len) == 0, "page %d: the same bytes", pages);
        free(want);
        free(buf);
        pages++;
        more_pages += out->has_more;
        bool more = out->has_more;
        at = out->messages[out->n_messages - 1]->seq;
        pb__sync_output__free_unpacked(out, NULL);
        if (!more)
            break;
    }
    cr_assert_geq(pages, 3, "pages of 4 messages or 1024 bytes: %d", pages);
    cr_assert_eq(more_pages, pages - 1);
    cr_assert_eq(at, 7);
}

Test(sync, byte_cap_makes_short_pages)
{
    cfg.sync.max_bytes = 1024;
    signin(1, 11);
    fill(1, 5, 400);
    const size_t want_n[] = {2, 2, 1};
    const bool want_more[] = {true, true, false};
    int64_t at = 0;
    for (int p = 0; p < 3; p++) {
        Pb__SyncOutput *out;
        cr_assert_eq(sync_req(1, 11, at, &out), GIM_OK);
        cr_assert_eq(out->n_messages, want_n[p], "page %d: %zu messages", p, out->n_messages);
        cr_assert_eq(out->has_more, want_more[p], "page %d has_more", p);
        cr_assert_leq(pb__sync_output__get_packed_size(out), 1024);
        at = out->messages[out->n_messages - 1]->seq;
        pb__sync_output__free_unpacked(out, NULL);
    }
}

Test(sync, message_bigger_than_max_bytes_comes_alone)
{
    cfg.sync.max_bytes = 1024;
    cfg.sync.page_size = 5;
    signin(1, 11);
    fill(1, 1, 3000);  /* over max_bytes */
    fill(1, 1, 40000); /* over the page arena too */
    fill(1, 1, 10);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 1);
    cr_assert(out->has_more);
    cr_assert_eq(out->messages[0]->seq, 1);
    cr_assert_eq(out->messages[0]->message_content.len, 3000);
    pb__sync_output__free_unpacked(out, NULL);

    cr_assert_eq(sync_req(1, 11, 1, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 1);
    cr_assert(out->has_more);
    cr_assert_eq(out->messages[0]->seq, 2);
    cr_assert_eq(out->messages[0]->message_content.len, 40000);
    cr_assert(memcmp(out->messages[0]->message_content.data, "u1#2", 4) == 0);
    cr_assert_eq(out->messages[0]->message_content.data[39999], 'x');
    pb__sync_output__free_unpacked(out, NULL);

    cr_assert_eq(sync_req(1, 11, 2, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 1);
    cr_assert(!out->has_more);
    cr_assert_eq(out->messages[0]->seq, 3);
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, seq_zero_starts_after_highest_ack_of_the_users_devices)
{
    signin(1, 11);
    signin(1, 12);
    signin(1, 13);
    signin(2, 21);
    fill(1, 10, 20);
    fill(2, 10, 20);
    cr_assert_eq(ack_req(1, 11, 4, 1, NULL, 0), GIM_OK);
    cr_assert_eq(ack_req(1, 12, 7, 1, NULL, 0), GIM_OK);
    cr_assert_eq(ack_req(2, 21, 9, 1, NULL, 0), GIM_OK, "another user's ack must not count");
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 13, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 3);
    cr_assert_eq(out->messages[0]->seq, 8, "starts after max ack 7, got %lld",
                 (long long)out->messages[0]->seq);
    cr_assert_eq(out->messages[2]->seq, 10);
    pb__sync_output__free_unpacked(out, NULL);

    /* An explicit seq is taken as given, below the acks too. */
    cr_assert_eq(sync_req(1, 13, 2, &out), GIM_OK);
    cr_assert_eq(out->messages[0]->seq, 3);
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, seq_zero_without_acks_starts_at_one)
{
    signin(1, 11);
    fill(1, 2, 20);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 2);
    cr_assert_eq(out->messages[0]->seq, 1);
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, other_users_entries_never_appear)
{
    signin(1, 11);
    signin(2, 21);
    for (int i = 0; i < 3; i++) {
        fill(1, 2, 20);
        fill(2, 3, 20);
    }
    fill(3, 4, 20);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 6);
    cr_assert(!out->has_more);
    for (size_t i = 0; i < out->n_messages; i++) {
        cr_assert_eq(out->messages[i]->seq, (int64_t)i + 1);
        cr_assert(memcmp(out->messages[i]->message_content.data, "u1#", 3) == 0,
                  "message %zu is user 1's", i);
    }
    pb__sync_output__free_unpacked(out, NULL);
    cr_assert_eq(sync_req(2, 21, 0, &out), GIM_OK);
    cr_assert_eq(out->n_messages, 9);
    for (size_t i = 0; i < out->n_messages; i++)
        cr_assert(memcmp(out->messages[i]->message_content.data, "u2#", 3) == 0);
    pb__sync_output__free_unpacked(out, NULL);
}

Test(sync, bad_input_is_bad_request)
{
    signin(1, 11);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, -1, &out), GIM_EBADREQ);
    struct request r;
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff};
    run_raw(&r, PB__PACKAGE_TYPE__PT_SYNC, 1, 11, junk, sizeof junk);
    cr_assert_eq(r.code, GIM_EBADREQ);
    cr_assert(strstr(r.errmsg, "SyncInput") != NULL, "message: %s", r.errmsg);
    request_reset(&r);
    cr_assert_eq(sync_req(1, 99, 0, &out), GIM_EUNAUTH, "no session for device 99");
}

Test(sync, page_query_uses_primary_keys)
{
    signin(1, 11);
    fill(1, 3, 20);
    Pb__SyncOutput *out;
    cr_assert_eq(sync_req(1, 11, 1, &out), GIM_OK);
    pb__sync_output__free_unpacked(out, NULL);
    /* The statement the handler really ran, from the reader's cache. */
    const char *sql = NULL;
    for (int i = 0; i < STORE_STMT_CACHE && !sql; i++)
        if (ro->cache[i].st && strstr(sqlite3_sql(ro->cache[i].st), "FROM inbox i"))
            sql = sqlite3_sql(ro->cache[i].st);
    cr_assert_not_null(sql, "the sync statement is cached on the reader");
    char eqp[1024], plan[1024] = "";
    snprintf(eqp, sizeof eqp, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(ro->db, eqp, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        strncat(plan, (const char *)sqlite3_column_text(st, 3), sizeof plan - strlen(plan) - 2);
        strcat(plan, ";");
    }
    sqlite3_finalize(st);
    cr_assert(strstr(plan, "SEARCH i USING PRIMARY KEY (user_id=? AND seq>?)"), "plan: %s", plan);
    cr_assert(strstr(plan, "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)"), "plan: %s", plan);
    cr_assert(!strstr(plan, "TEMP B-TREE"), "no sort step: %s", plan);
    cr_assert(!strstr(plan, "SCAN"), "no scan: %s", plan);
}

Test(sync, ack_moves_forward_only)
{
    signin(1, 11);
    fill(1, 10, 20);
    clock_ms += 1000;
    cr_assert_eq(ack_req(1, 11, 5, 111, NULL, 0), GIM_OK);
    cr_assert_eq(device_int("ack_seq", 11), 5);
    cr_assert_eq(device_int("ack_time", 11), 111);
    cr_assert_eq(device_int("updated_at", 11), clock_ms);
    int64_t updated = clock_ms;

    clock_ms += 1000;
    cr_assert_eq(ack_req(1, 11, 3, 222, NULL, 0), GIM_OK, "a lower ack is accepted");
    cr_assert_eq(ack_req(1, 11, 5, 333, NULL, 0), GIM_OK, "an equal ack is accepted");
    cr_assert_eq(device_int("ack_seq", 11), 5, "and changes nothing");
    cr_assert_eq(device_int("ack_time", 11), 111);
    cr_assert_eq(device_int("updated_at", 11), updated);

    cr_assert_eq(ack_req(1, 11, 10, 444, NULL, 0), GIM_OK, "up to the highest seq");
    cr_assert_eq(device_int("ack_seq", 11), 10);
    cr_assert_eq(device_int("ack_time", 11), 444);
}

Test(sync, ack_above_highest_seq_is_refused_and_writes_nothing)
{
    signin(1, 11);
    signin(2, 21);
    fill(1, 4, 20);
    fill(2, 50, 20); /* another user's higher seq does not count */
    char msg[200];
    cr_assert_eq(ack_req(1, 11, 5, 1, msg, sizeof msg), GIM_EBADREQ);
    cr_assert(strstr(msg, "above the highest seq 4") != NULL, "message: %s", msg);
    cr_assert_eq(ack_req(1, 11, -1, 1, NULL, 0), GIM_EBADREQ, "negative ack");
    cr_assert_eq(device_int("ack_seq", 11), 0);
    cr_assert_eq(device_int("ack_time", 11), 0);
    cr_assert_eq(one_int("SELECT seq FROM user_last_seq WHERE user_id = 1"), 4, "no seq was taken");
    cr_assert_eq(ack_req(3, 31, 1, 1, NULL, 0), GIM_EUNAUTH, "no session");
}

Test(sync, ack_without_messages_allows_only_zero)
{
    signin(1, 11);
    cr_assert_eq(ack_req(1, 11, 1, 1, NULL, 0), GIM_EBADREQ);
    cr_assert_eq(ack_req(1, 11, 0, 1, NULL, 0), GIM_OK);
    cr_assert_eq(device_int("ack_seq", 11), 0);
}

Test(sync, ack_does_not_touch_a_device_that_moved_to_another_user)
{
    signin(1, 11);
    fill(1, 5, 20);
    /* The ack is authenticated as user 1, then a sign-in of device 11 as user 2 commits first. */
    struct request ack, sign;
    Pb__MessageACK a = PB__MESSAGE_ACK__INIT;
    a.device_ack = 3;
    uint8_t abuf[64], sbuf[64];
    size_t alen = pb__message_ack__pack(&a, abuf);
    Pb__SignInInput s = PB__SIGN_IN_INPUT__INIT;
    s.user_id = 2;
    s.device_id = 11;
    s.token = "dev";
    size_t slen = pb__sign_in_input__pack(&s, sbuf);

    Pb__GatewayRequest env = PB__GATEWAY_REQUEST__INIT;
    Pb__Input in = PB__INPUT__INIT;
    env.gateway_id = "gw";
    env.input = &in;
    uint8_t ebuf[256];
    env.user_id = 1;
    env.device_id = 11;
    in.type = PB__PACKAGE_TYPE__PT_MESSAGE_ACK;
    in.data = (ProtobufCBinaryData){alen, abuf};
    size_t elen = pb__gateway_request__pack(&env, ebuf);
    memset(&ack, 0, sizeof ack);
    cr_assert_eq(dispatch_begin(&disp, &ack, ebuf, elen, ro), DISPATCH_WRITE);
    in.type = PB__PACKAGE_TYPE__PT_SIGN_IN;
    in.data = (ProtobufCBinaryData){slen, sbuf};
    elen = pb__gateway_request__pack(&env, ebuf);
    memset(&sign, 0, sizeof sign);
    cr_assert_eq(dispatch_begin(&disp, &sign, ebuf, elen, ro), DISPATCH_WRITE);

    struct write_job *jobs[] = {&sign.job, &ack.job};
    writer_run_batch(&w, jobs, 2);
    cr_assert_eq(sign.code, GIM_OK, "%s", sign.errmsg);
    cr_assert_eq(ack.code, GIM_OK, "%s", ack.errmsg);
    cr_assert_eq(device_int("user_id", 11), 2);
    cr_assert_eq(device_int("ack_seq", 11), 0, "user 1's ack is not user 2's");
    request_reset(&ack);
    request_reset(&sign);
}

/*
 * message_page_worst_single's arithmetic (message.c), checked by encoding the
 * worst message it describes: every int64 negative (10-byte varints), the
 * content and mentions at the default limits, the reply's type at 127 and
 * request_id -1. The bound is exact for it, and one message that size fits
 * the budget the bound gives.
 */
Test(sync, worst_single_message_matches_its_bound)
{
    enum { CONTENT = 16384, MENTIONS = 100 };
    size_t bound = message_page_worst_single(CONTENT, MENTIONS);
    cr_assert_eq(bound, 17479, "the figure in message.c's comment and in docs");
    cr_assert_leq(bound, 65534, "the default limits fit gim's seed-era TCP clients");

    static uint8_t content[CONTENT];
    int64_t mentions[MENTIONS];
    for (int i = 0; i < MENTIONS; i++)
        mentions[i] = -1;
    Pb__Sender sender = PB__SENDER__INIT;
    sender.sender_type = PB__SENDER_TYPE__ST_BUSINESS;
    sender.sender_id = -1;
    sender.device_id = -1;
    Pb__Message m = PB__MESSAGE__INIT;
    m.sender = &sender;
    m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
    m.receiver_id = -1;
    m.to_user_ids = mentions;
    m.n_to_user_ids = MENTIONS;
    m.message_type = PB__MESSAGE_TYPE__MT_CUSTOM;
    m.message_content.data = content;
    m.message_content.len = CONTENT;
    m.seq = -1;
    m.send_time = -1;
    m.status = PB__MESSAGE_STATUS__MS_RECALL;
    Pb__Message *msgs[] = {&m};
    Pb__SyncOutput so = PB__SYNC_OUTPUT__INIT;
    so.messages = msgs;
    so.n_messages = 1;
    so.has_more = true;
    size_t sync_len = pb__sync_output__get_packed_size(&so);
    uint8_t *sync_buf = malloc(sync_len);
    pb__sync_output__pack(&so, sync_buf);
    Pb__Output out = PB__OUTPUT__INIT;
    out.type = (Pb__PackageType)127;
    out.request_id = -1;
    out.data.data = sync_buf;
    out.data.len = sync_len;
    size_t out_len = pb__output__get_packed_size(&out);
    free(sync_buf);
    cr_assert_eq(out_len, bound, "encoded %zu bytes, bound %zu", out_len, bound);
    cr_assert_geq(message_page_budget(bound, 127, -1), sync_len);
    cr_assert_lt(message_page_budget(bound - 1, 127, -1), sync_len, "the bound is the least");
}

Test(sync, page_budget_leaves_room_for_the_output_fields)
{
    /* type 2 (2 bytes), request_id 5 (2 bytes), data tag + 3-byte length */
    cr_assert_eq(message_page_budget(65534, PB__PACKAGE_TYPE__PT_SYNC, 5), 65534 - 8);
    /* request_id 0 is not on the wire; a negative one takes 11 bytes */
    cr_assert_eq(message_page_budget(65534, PB__PACKAGE_TYPE__PT_SYNC, 0), 65534 - 6);
    cr_assert_eq(message_page_budget(65534, PB__PACKAGE_TYPE__PT_SYNC, -1), 65534 - 17);
    cr_assert_eq(message_page_budget(10, PB__PACKAGE_TYPE__PT_SYNC, -1), 0);
}

/*
 * message_page_rows() takes its rows from any source (storage/: SQLite's
 * statement, PostgreSQL's result): rows made here, with no database, page
 * the same way, and a source that fails mid-page fails the page whole.
 */
struct made_rows {
    int at, n, fail_at; /* fail_at: the row whose next() fails, -1 for none */
    char content[8];
};

static gim_err made_next(void *src, bool *row, size_t *need)
{
    struct made_rows *m = src;
    if (++m->at == m->fail_at)
        return GIM_EUNAVAILABLE;
    *row = m->at < m->n;
    *need = MESSAGE_VIEW_OVERHEAD + sizeof m->content;
    return GIM_OK;
}

static struct message_view *made_view(void *src, struct arena *a)
{
    struct made_rows *m = src;
    struct message_view *v = arena_alloc(a, sizeof *v);
    uint8_t *c = arena_alloc(a, sizeof m->content);
    if (!v || !c)
        return NULL;
    pb__message__init(&v->msg);
    pb__sender__init(&v->sender);
    v->msg.sender = &v->sender;
    v->sender.sender_id = 7;
    v->msg.receiver_id = 9;
    snprintf(m->content, sizeof m->content, "row %d", m->at);
    memcpy(c, m->content, sizeof m->content);
    v->msg.message_content.data = c;
    v->msg.message_content.len = strlen(m->content);
    v->msg.seq = 100 + m->at;
    return v;
}

Test(sync, page_rows_from_any_source)
{
    struct made_rows m = {.at = -1, .n = 3, .fail_at = -1};
    const struct message_rows rows = {.src = &m, .next = made_next, .view = made_view};
    uint8_t *buf = NULL;
    size_t len = 0;
    cr_assert_eq(message_page_rows(&rows, 2, 1024, &buf, &len), GIM_OK);
    Pb__SyncOutput *out = pb__sync_output__unpack(NULL, len, buf);
    cr_assert_not_null(out);
    cr_assert_eq(out->n_messages, 2);
    cr_assert(out->has_more, "the third row is more");
    cr_assert_eq(out->messages[0]->seq, 100);
    cr_assert_eq(out->messages[1]->seq, 101);
    cr_assert_eq(out->messages[1]->message_content.len, 5);
    cr_assert(memcmp(out->messages[1]->message_content.data, "row 1", 5) == 0);
    pb__sync_output__free_unpacked(out, NULL);
    free(buf);

    m = (struct made_rows){.at = -1, .n = 3, .fail_at = 1};
    buf = NULL;
    len = 7;
    cr_assert_eq(message_page_rows(&rows, 5, 1024, &buf, &len), GIM_EUNAVAILABLE);
    cr_assert_null(buf, "a failed source gives no page");
    cr_assert_eq(len, 0);
}
