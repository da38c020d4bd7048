/*
 * Rooms on PostgreSQL with several instances on one database (issue 17,
 * phase 2): room sends through two instances at once take gap-free room
 * seqs, in order, none visible before an earlier one; a device subscribed
 * through one instance gets the pushes of messages sent through the other
 * (and none once it left, wherever it left); an idempotent room send
 * retried on both instances at once stores one entry; a subscribe's page
 * and the pushes meet exactly while another instance sends. The single
 * instance behaviour is test_room_it's, which runs on both backends. The
 * maintenance pass prunes expired room send records there too. Runs
 * only on PostgreSQL (ctest sets GIM_TEST_BACKEND=postgres for it).
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "maint.h"
#include "seq.h"
#include "store.h"
#include "testlib.h"
#include "wctx.h"

static struct tl_server a, b;
static struct gim_client *ca, *cb;

/* Pages hold every message these tests send, so a page is the whole log. */
#define EXTRA "sync: {page_size: 2000, max_bytes: 1000000}"

static void setup(void)
{
    tl_start_pair(&a, &b, EXTRA);
    ca = tl_client(&a);
    cb = tl_client(&b);
}

static void teardown(void)
{
    if (cb)
        client_close(cb);
    if (ca)
        client_close(ca);
    cb = ca = NULL;
    tl_cleanup_pair(&a, &b);
}

TestSuite(pg_room_it, .init = setup, .fini = teardown, .timeout = 120);

static int64_t qi(const char *fmt, long long arg)
{
    char sql[256];
    snprintf(sql, sizeof sql, fmt, arg);
    return tl_query_int(a.db, sql);
}

/* PT_SUBSCRIBE_ROOM through c; the page (caller frees), failing the test unless EC_OK. */
static Pb__SyncOutput *subscribe(struct gim_client *c, const struct client_conn *conn, int64_t room,
                                 int64_t seq)
{
    Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    in.room_id = room;
    in.seq = seq;
    Pb__Output *out = NULL;
    cr_assert_eq(client_request(c, conn, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &in.base, &out),
                 GIM_OK);
    cr_assert_eq(out->code, 0, "subscribe: %d %s", out->code, out->message);
    Pb__SyncOutput *p = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(p);
    pb__output__free_unpacked(out, NULL);
    return p;
}

static void join(struct gim_client *c, const struct client_conn *conn, int64_t room)
{
    pb__sync_output__free_unpacked(subscribe(c, conn, room, 0), NULL);
}

/* A room send through c: the reply's room seq, or -code (*why says why). */
static int64_t room_send(struct gim_client *c, const struct client_conn *conn, int64_t room,
                         int64_t request_id, char *why, size_t why_len)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_ROOM;
    m.receiver_id = room;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = (uint8_t *)"r";
    m.message_content.len = 1;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = NULL;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base, &out) !=
        GIM_OK) {
        snprintf(why, why_len, "no reply");
        return -1000;
    }
    int64_t seq = -(int64_t)out->code;
    if (out->code == 0) {
        Pb__MessageSend *r = pb__message_send__unpack(NULL, out->data.len, out->data.data);
        seq = r && r->message && r->message->receiver_type == PB__RECEIVER_TYPE__RT_ROOM &&
                      r->message->receiver_id == room
                  ? r->message->seq
                  : -2000;
        if (r)
            pb__message_send__free_unpacked(r, NULL);
    } else {
        snprintf(why, why_len, "%d %s", out->code, out->message ? out->message : "");
    }
    pb__output__free_unpacked(out, NULL);
    return seq;
}

/* --- pushes --------------------------------------------------------------- */

/* A SUB socket on s's PUB socket, for gateway gw's topic, with room for every push. */
static nng_socket sub_open(const struct tl_server *s, const char *gw)
{
    nng_socket sk;
    char topic[64];
    int n = snprintf(topic, sizeof topic, "%s\n", gw);
    cr_assert_eq(nng_sub0_open(&sk), 0);
    cr_assert_eq(nng_socket_set(sk, NNG_OPT_SUB_SUBSCRIBE, topic, (size_t)n), 0);
    cr_assert_eq(nng_socket_set_int(sk, NNG_OPT_RECVBUF, 8192), 0);
    cr_assert_eq(nng_socket_set_ms(sk, NNG_OPT_RECVTIMEO, 500), 0);
    cr_assert_eq(nng_dial(sk, s->pub_url, NULL, 0), 0);
    return sk;
}

/* PUB drops what it sends before a pipe is attached. */
static void settle(void)
{
    usleep(300 * 1000);
}

/*
 * Reads pushes from sk until 500 ms pass in silence: for each room message
 * to device (room seq <= max), marks seen[seq] and counts repeats.
 */
static int collect(nng_socket sk, int64_t device, int64_t room, bool *seen, int64_t max,
                   int *repeats)
{
    int n = 0;
    nng_msg *msg;
    while (nng_recvmsg(sk, &msg, 0) == 0) {
        const uint8_t *body = nng_msg_body(msg);
        size_t len = nng_msg_len(msg);
        const uint8_t *nl = memchr(body, '\n', len);
        cr_assert_not_null(nl);
        Pb__Delivery *d = pb__delivery__unpack(NULL, len - (size_t)(nl + 1 - body), nl + 1);
        cr_assert_not_null(d);
        bool mine = false;
        for (size_t i = 0; i < d->n_device_ids; i++)
            mine = mine || d->device_ids[i] == device;
        Pb__MessageSend *ms =
            pb__message_send__unpack(NULL, d->output->data.len, d->output->data.data);
        cr_assert_not_null(ms);
        if (mine && ms->message->receiver_type == PB__RECEIVER_TYPE__RT_ROOM &&
            ms->message->receiver_id == room) {
            int64_t seq = ms->message->seq;
            cr_assert(seq >= 1 && seq <= max, "pushed room seq %lld", (long long)seq);
            if (seen[seq])
                (*repeats)++;
            seen[seq] = true;
            n++;
        }
        pb__message_send__free_unpacked(ms, NULL);
        pb__delivery__free_unpacked(d, NULL);
        nng_msg_free(msg);
    }
    return n;
}

/*
 * x subscribes through A; y sends through B, which never served x: the push
 * comes from B (the instance that committed it) to x's gateway. After x
 * moves to another room through A, a send through B no longer reaches it,
 * although B served x while it was in the room.
 */
Test(pg_room_it, a_device_subscribed_through_one_instance_gets_pushes_sent_through_another)
{
    struct client_conn x, y;
    char why[160] = "";
    bool seen[8] = {0};
    int repeats = 0;
    cr_assert_eq(tl_signin(ca, &x, 1, 11, "gwX"), 0);
    cr_assert_eq(tl_signin(cb, &y, 2, 21, "gwY"), 0);
    join(ca, &x, 40);
    join(cb, &y, 40);
    nng_socket from_a = sub_open(&a, "gwX"), from_b = sub_open(&b, "gwX");
    settle();
    cr_assert_eq(room_send(cb, &y, 40, 1, why, sizeof why), 1, "%s", why);
    cr_assert_eq(collect(from_b, 11, 40, seen, 7, &repeats), 1, "B pushed it to x at gwX");
    cr_assert(seen[1]);
    cr_assert_eq(collect(from_a, 11, 40, seen, 7, &repeats), 0, "A committed nothing");

    /* B serves x now (a heartbeat caches x's session there, in room 40). */
    cr_assert_eq(tl_code(cb, &x, PB__PACKAGE_TYPE__PT_HEARTBEAT, 2, NULL), 0);
    cr_assert_eq(room_send(cb, &y, 40, 3, why, sizeof why), 2, "%s", why);
    cr_assert_eq(collect(from_b, 11, 40, seen, 7, &repeats), 1);
    cr_assert(seen[2]);
    /* x moves to room 41 through A: B's copy of x's session still says 40. */
    join(ca, &x, 41);
    cr_assert_eq(room_send(cb, &y, 40, 4, why, sizeof why), 3, "%s", why);
    cr_assert_eq(collect(from_b, 11, 40, seen, 7, &repeats), 0, "x left room 40 (through A)");
    cr_assert_eq(collect(from_a, 11, 40, seen, 7, &repeats), 0);
    cr_assert_eq(repeats, 0);
    nng_close(from_a);
    nng_close(from_b);
}

/* --- concurrent senders on both instances ---------------------------------- */

enum { ROOM = 77, SENDERS = 4, PER_SENDER = 40, TOTAL = SENDERS * PER_SENDER };

struct sender {
    const char *url;
    struct client_conn conn;
    char gw[16];
    int64_t first_request_id;
    int64_t seqs[PER_SENDER];
    int fails;
    char why[160];
};

static void *send_many(void *arg)
{
    struct sender *s = arg;
    struct gim_client *c = NULL;
    if (client_open(&c, s->url, 10000, 3) != GIM_OK) {
        s->fails = PER_SENDER;
        return NULL;
    }
    for (int i = 0; i < PER_SENDER; i++) {
        s->seqs[i] = room_send(c, &s->conn, ROOM, s->first_request_id + i, s->why, sizeof s->why);
        if (s->seqs[i] <= 0)
            s->fails++;
    }
    client_close(c);
    return NULL;
}

/* Senders i on A (even i) and B (odd i), all subscribed to ROOM through their own instance. */
static void start_senders(struct sender *ss, pthread_t *th)
{
    for (int i = 0; i < SENDERS; i++) {
        struct sender *s = &ss[i];
        *s = (struct sender){.url = i % 2 ? b.url : a.url, .first_request_id = 1};
        snprintf(s->gw, sizeof s->gw, "gwS%d", i);
        struct gim_client *c = i % 2 ? cb : ca;
        cr_assert_eq(tl_signin(c, &s->conn, 100 + i, 1000 + i, s->gw), 0);
        s->conn.gateway_id = s->gw;
        join(c, &s->conn, ROOM);
    }
    for (int i = 0; i < SENDERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, send_many, &ss[i]), 0);
}

/* Every acknowledged seq once, each sender's rising, the log exactly 1..TOTAL, by the right
 * senders. */
static void check_log(const struct sender *ss)
{
    static bool acked[TOTAL + 1];
    memset(acked, 0, sizeof acked);
    for (int i = 0; i < SENDERS; i++) {
        cr_assert_eq(ss[i].fails, 0, "sender %d: %s", i, ss[i].why);
        int64_t prev = 0;
        for (int k = 0; k < PER_SENDER; k++) {
            int64_t seq = ss[i].seqs[k];
            cr_assert(seq >= 1 && seq <= TOTAL, "seq %lld", (long long)seq);
            cr_assert_not(acked[seq], "room seq %lld acknowledged twice", (long long)seq);
            cr_assert_gt(seq, prev, "one sender's room seqs rise");
            acked[seq] = true;
            prev = seq;
        }
    }
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) = %d AND min(seq) = 1 AND max(seq) = %d AND count(DISTINCT seq) = %d "
             "FROM room_message WHERE room_id = %d",
             TOTAL, TOTAL, TOTAL, ROOM);
    cr_assert_eq(tl_query_int(a.db, sql), 1, "the room log is exactly 1..%d", TOTAL);
    cr_assert_eq(qi("SELECT seq FROM room_seq WHERE room_id = %lld", ROOM), TOTAL);
    for (int i = 0; i < SENDERS; i++)
        for (int k = 0; k < PER_SENDER; k++) {
            snprintf(sql, sizeof sql,
                     "SELECT sender_device_id FROM room_message WHERE room_id = %d AND seq = %lld",
                     ROOM, (long long)ss[i].seqs[k]);
            cr_assert_eq(tl_query_int(a.db, sql), 1000 + i);
        }
}

/*
 * A reader re-reads the room's whole log through A and B while the senders
 * run: every page must be 1..n without a hole (a hole is a room seq N+1
 * committed, and visible, before N).
 */
struct reader {
    const struct tl_server *srv;
    struct client_conn conn;
    atomic_bool stop;
    int pages, holes, errors;
};

static void *read_pages(void *arg)
{
    struct reader *r = arg;
    struct gim_client *c = NULL;
    if (client_open(&c, r->srv->url, 10000, 1) != GIM_OK) {
        r->errors++;
        return NULL;
    }
    while (!atomic_load(&r->stop)) {
        Pb__SubscribeRoomInput in = PB__SUBSCRIBE_ROOM_INPUT__INIT;
        in.room_id = ROOM;
        Pb__Output *out = NULL;
        if (client_request(c, &r->conn, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, 1, &in.base, &out) !=
                GIM_OK ||
            out->code != 0) {
            r->errors++;
        } else {
            Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
            for (size_t i = 0; so && i < so->n_messages; i++)
                if (so->messages[i]->seq != (int64_t)i + 1)
                    r->holes++;
            if (so)
                pb__sync_output__free_unpacked(so, NULL);
            r->pages++;
        }
        if (out)
            pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

Test(pg_room_it, room_sends_through_two_instances_are_gap_free_and_in_order)
{
    static struct sender ss[SENDERS];
    static struct reader rd[2];
    pthread_t th[SENDERS], rth[2];
    for (int i = 0; i < 2; i++) {
        rd[i] = (struct reader){.srv = i ? &b : &a};
        cr_assert_eq(tl_signin(i ? cb : ca, &rd[i].conn, 300 + i, 3000 + i, i ? "gwRB" : "gwRA"),
                     0);
        atomic_init(&rd[i].stop, false);
        cr_assert_eq(pthread_create(&rth[i], NULL, read_pages, &rd[i]), 0);
    }
    start_senders(ss, th);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        atomic_store(&rd[i].stop, true);
        pthread_join(rth[i], NULL);
        cr_assert_eq(rd[i].errors, 0, "reader %d", i);
        cr_assert_eq(rd[i].holes, 0, "reader %d saw a room seq before an earlier one", i);
        cr_assert_gt(rd[i].pages, 0);
    }
    cr_log_info("pages read while sending: %d through A, %d through B", rd[0].pages, rd[1].pages);
    check_log(ss);
}

/*
 * Devices join the room through A and B, one after another, while senders
 * on A and B fill it: each one's page and the pushes it gets (from either
 * instance) together hold every later room seq exactly once: nothing the
 * page holds is pushed to it, nothing sent after the page is missing.
 */
Test(pg_room_it, a_subscribes_page_and_the_pushes_meet_while_another_instance_sends)
{
    enum { JOINERS = 16 };
    static struct sender ss[SENDERS];
    pthread_t th[SENDERS];
    struct client_conn z[JOINERS];
    nng_socket sub_a[JOINERS], sub_b[JOINERS];
    static bool got[JOINERS][TOTAL + 1];
    int64_t page_last[JOINERS];
    char gw[JOINERS][16];
    for (int j = 0; j < JOINERS; j++) {
        snprintf(gw[j], sizeof gw[j], "gwZ%d", j);
        cr_assert_eq(tl_signin(ca, &z[j], 500 + j, 5000 + j, gw[j]), 0);
        z[j].gateway_id = gw[j];
        sub_a[j] = sub_open(&a, gw[j]);
        sub_b[j] = sub_open(&b, gw[j]);
        memset(got[j], 0, sizeof got[j]);
    }
    settle();
    start_senders(ss, th);
    for (int j = 0; j < JOINERS; j++) {
        usleep(20 * 1000);
        Pb__SyncOutput *p = subscribe(j % 2 ? cb : ca, &z[j], ROOM, 0);
        cr_assert_not(p->has_more);
        for (size_t i = 0; i < p->n_messages; i++)
            cr_assert_eq(p->messages[i]->seq, (int64_t)i + 1, "joiner %d: page without a hole", j);
        page_last[j] = (int64_t)p->n_messages;
        for (int64_t s = 1; s <= page_last[j]; s++)
            got[j][s] = true;
        pb__sync_output__free_unpacked(p, NULL);
    }
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    check_log(ss);
    int in_page_and_pushed = 0;
    for (int j = 0; j < JOINERS; j++) {
        int repeats = 0;
        collect(sub_a[j], 5000 + j, ROOM, got[j], TOTAL, &repeats);
        collect(sub_b[j], 5000 + j, ROOM, got[j], TOTAL, &repeats);
        in_page_and_pushed += repeats;
        for (int64_t s = 1; s <= TOTAL; s++)
            cr_assert(got[j][s],
                      "joiner %d (page up to %lld): room seq %lld neither in its page "
                      "nor pushed to it",
                      j, (long long)page_last[j], (long long)s);
        cr_log_info("joiner %d: page 1..%lld, pushes after", j, (long long)page_last[j]);
        nng_close(sub_a[j]);
        nng_close(sub_b[j]);
    }
    cr_assert_eq(in_page_and_pushed, 0, "room seqs both in a page and pushed to the same device");
}

/* Both instances keep only the last 10 entries of a room's log. */
static void setup_retain(void)
{
    if (!tl_pg())
        cr_skip_test("runs on PostgreSQL only (GIM_TEST_BACKEND=postgres)");
    tl_start(&a, "rooms: {retain_messages: 10}");
    ca = tl_client(&a);
    tl_start_shared(&b, &a, "rooms: {retain_messages: 10}");
    cb = tl_client(&b);
}

TestSuite(pg_room_retain_it, .init = setup_retain, .fini = teardown, .timeout = 120);

/* Pruning in the sending transaction, under the room's lock: the last 10, whoever sent them. */
Test(pg_room_retain_it, sends_through_two_instances_keep_exactly_the_last_entries)
{
    static struct sender ss[SENDERS];
    pthread_t th[SENDERS];
    start_senders(ss, th);
    for (int i = 0; i < SENDERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < SENDERS; i++)
        cr_assert_eq(ss[i].fails, 0, "sender %d: %s", i, ss[i].why);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) = 10 AND min(seq) = %d AND max(seq) = %d FROM room_message "
             "WHERE room_id = %d",
             TOTAL - 9, TOTAL, ROOM);
    cr_assert_eq(tl_query_int(a.db, sql), 1, "the room log is exactly %d..%d", TOTAL - 9, TOTAL);
    cr_assert_eq(qi("SELECT seq FROM room_seq WHERE room_id = %lld", ROOM), TOTAL);
}

/* --- idempotent retries ----------------------------------------------------- */

struct racer {
    const char *url;
    struct client_conn conn;
    int n;
    int64_t seqs[60];
    int fails;
    char why[160];
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct gim_client *c = NULL;
    if (client_open(&c, r->url, 10000, 3) != GIM_OK) {
        r->fails = r->n;
        return NULL;
    }
    for (int i = 0; i < r->n; i++)
        if ((r->seqs[i] = room_send(c, &r->conn, ROOM, 1000 + i, r->why, sizeof r->why)) <= 0)
            r->fails++;
    client_close(c);
    return NULL;
}

/*
 * The same room sends (one device, the same request ids) through A and B at
 * once: one entry a request, the same room seq in both replies.
 */
Test(pg_room_it, an_idempotent_room_send_on_two_instances_at_once_stores_one)
{
    enum { N = 60 };
    struct client_conn u;
    cr_assert_eq(tl_signin(ca, &u, 1, 11, "gw1"), 0);
    join(cb, &u, ROOM);
    struct racer ra = {.url = a.url, .conn = u, .n = N}, rb = {.url = b.url, .conn = u, .n = N};
    pthread_t ta, tb;
    cr_assert_eq(pthread_create(&ta, NULL, race, &ra), 0);
    cr_assert_eq(pthread_create(&tb, NULL, race, &rb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_assert_eq(ra.fails + rb.fails, 0, "A: %s; B: %s", ra.why, rb.why);
    cr_assert_eq(qi("SELECT count(*) FROM room_message WHERE room_id = %lld", ROOM), N,
                 "one room entry a request");
    cr_assert_eq(qi("SELECT max(seq) FROM room_message WHERE room_id = %lld", ROOM), N);
    cr_assert_eq(qi("SELECT count(*) FROM room_idempotency WHERE device_id = %lld", 11), N);
    cr_assert_eq(qi("SELECT count(*) FROM idempotency WHERE device_id = %lld AND message_id IS "
                    "NULL",
                    11),
                 N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(ra.seqs[i], rb.seqs[i], "request %d: room seq %lld at A, %lld at B", 1000 + i,
                     (long long)ra.seqs[i], (long long)rb.seqs[i]);
}

/* --- maintenance -------------------------------------------------------------- */

static int64_t maint_clock_ms;

static int64_t maint_clock(void *arg)
{
    (void)arg;
    return maint_clock_ms;
}

static int64_t pg_int(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    int64_t v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

/*
 * The maintenance pass on PostgreSQL prunes a room send's details with its
 * key row once the window is over, and keeps those inside it (the pass of a
 * writer of its own on a database of its own, with a clock the test sets).
 */
Test(pg_room_maint, expired_room_send_records_are_pruned)
{
    if (!tl_pg())
        cr_skip_test("runs on PostgreSQL only (GIM_TEST_BACKEND=postgres)");
    char url[PGT_URL_MAX], yaml[PGT_URL_MAX + 160], path[] = "/tmp/gimpgroom-XXXXXX", err[256];
    pgt_create_db(url, sizeof url);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    int n = snprintf(yaml, sizeof yaml,
                     "database: {backend: postgres, url: \"%s\"}\nidempotency: {window_seconds: "
                     "3600}\n",
                     url);
    cr_assert_eq(write(fd, yaml, (size_t)n), n);
    close(fd);
    struct gim_config cfg;
    cr_assert_eq(config_load(path, &cfg, err, sizeof err), GIM_OK, "%s", err);
    struct store_conn *db = NULL;
    struct seq *seqs = NULL;
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    const int64_t now = 1800000000000, hour = 3600 * 1000;
    maint_clock_ms = now;
    struct wctx w = {.db = db, .seq = seqs, .cfg = &cfg, .clock = {maint_clock, NULL}};

    PGconn *c = PQconnectdb(url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK);
    char sql[512];
    /* Device 11 has its row: the sweep prunes the records of a device without one. */
    snprintf(sql, sizeof sql,
             "INSERT INTO device (device_id, user_id, created_at, updated_at) VALUES "
             "(11, 1, %lld, %lld); "
             "INSERT INTO idempotency (device_id, request_id, message_id) VALUES (11, 1, NULL), "
             "(11, 2, NULL); INSERT INTO room_idempotency (device_id, request_id, created_at, "
             "room_id, room_seq) VALUES (11, 1, %lld, 5, 1), (11, 2, %lld, 5, 2)",
             (long long)(now - 2 * hour), (long long)(now - 2 * hour), (long long)(now - 2 * hour),
             (long long)(now - hour + 60000));
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    maint_run(&w);
    cr_assert_eq(pg_int(c, "SELECT string_agg(request_id::text, ',') FROM room_idempotency"), 2,
                 "the expired room record went, the recent one stays");
    cr_assert_eq(pg_int(c, "SELECT string_agg(request_id::text, ',') FROM idempotency"), 2);

    PQfinish(c);
    seq_close(seqs);
    store_close(db);
    config_free(&cfg);
    unlink(path);
    pgt_drop_db(url);
}
