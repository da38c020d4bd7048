/*
 * Three gim-logic instances on one PostgreSQL database (issue 17, "Tests":
 * multi-instance). test_pg_it shows each mechanism with two instances; this
 * file puts them together under load with three, and kills one:
 *
 * - senders spread over all three instances, each device pinned to one of
 *   them, half of them signed in through another instance than the one they
 *   send through, while one device sends the same requests through all three
 *   at once (a gateway's retry reaching several instances): afterwards every
 *   user's inbox is exactly seqs 1..N with N = user_seq, every acknowledged
 *   send is stored once at the seqs its reply named, each retried request is
 *   one message with the same seq in all three replies, and every user syncs
 *   its history through a third instance;
 * - kill -9 of one instance while all three serve: no acknowledged send is
 *   lost, the two others answer every request throughout, and the senders of
 *   the killed one resend what got no reply through a surviving instance,
 *   where it succeeds exactly once (stored at most once, acknowledged once).
 *
 * Runs only on PostgreSQL (ctest sets GIM_TEST_BACKEND=postgres); every test
 * starts its own database. Progress, not time, decides when a phase ends, so
 * a slow machine makes the test slower, not flaky.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define NINST     3
#define NUSERS    12 /* users 1..12, device 100 + user; each one sender thread */
#define RACE_USER 50 /* the device whose requests go to all three instances at once */
#define RACE_N    40
#define MAX_SENDS 2048
#define GATEWAY   "gw-multi"

static struct tl_server inst[NINST];

static void setup(void)
{
    if (!tl_pg())
        cr_skip_test("runs on PostgreSQL only (GIM_TEST_BACKEND=postgres)");
    tl_start(&inst[0], NULL);
    for (int i = 1; i < NINST; i++)
        tl_start_shared(&inst[i], &inst[0], NULL);
}

static void teardown(void)
{
    /* The first one drops the database: the others go first. */
    for (int i = NINST - 1; i >= 0; i--)
        if (inst[i].dir[0])
            tl_cleanup(&inst[i]);
    memset(inst, 0, sizeof inst);
}

TestSuite(pg_multi, .init = setup, .fini = teardown, .timeout = 240);

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* One acknowledged send: the request, its receiver and the seq the reply named. */
struct ack {
    int64_t rid, to, seq;
};

struct sender {
    int64_t user, device;
    int home;     /* the instance it sends through */
    int fallback; /* where it resends when home does not answer (the kill test) */
    unsigned seed;
    int limit; /* stop after this many acknowledged sends (0: until told) */
    struct ack acks[MAX_SENDS];
    atomic_int n;   /* acknowledged sends so far */
    int failovers;  /* requests home did not answer, resent through fallback */
    int after_kill; /* acknowledged by home after the kill (must be 0 for the killed one) */
    int errors;     /* requests that failed where they must not */
    char error[256];
};

static atomic_bool stop_senders, killed;

static void note(struct sender *s, const char *what, int code, const char *msg)
{
    if (s->errors++ == 0)
        snprintf(s->error, sizeof s->error, "user %lld: %s: code %d (%s)", (long long)s->user, what,
                 code, msg ? msg : "");
}

/*
 * One send of request rid to `to` through c: its seq into *seq. Returns 1 on
 * EC_OK, 0 when no reply came or the reply was EC_UNAVAILABLE (the instance
 * is gone or lost its database connection: may or may not be stored), -1 on
 * any other code (noted).
 */
static int send_once(struct sender *s, struct gim_client *c, const struct client_conn *conn,
                     int64_t rid, int64_t to, int64_t *seq)
{
    char text[48];
    snprintf(text, sizeof text, "multi u%lld r%lld", (long long)s->user, (long long)rid);
    Pb__Text t = PB__TEXT__INIT;
    t.text = text;
    uint8_t content[64];
    size_t clen = pb__text__pack(&t, content);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = clen;
    Pb__MessageSend send = PB__MESSAGE_SEND__INIT;
    send.message = &m;
    Pb__Output *out = NULL;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &send.base, &out) != GIM_OK)
        return 0;
    int rc = 1;
    if (out->code == PB__ERROR_CODE__EC_OK) {
        Pb__MessageSend *ms = pb__message_send__unpack(NULL, out->data.len, out->data.data);
        *seq = ms && ms->message ? ms->message->seq : -1;
        if (*seq <= 0) {
            note(s, "a send reply without a seq", out->code, out->message);
            rc = -1;
        }
        if (ms)
            pb__message_send__free_unpacked(ms, NULL);
    } else if (out->code == PB__ERROR_CODE__EC_UNAVAILABLE) {
        rc = 0;
    } else {
        note(s, "send", out->code, out->message);
        rc = -1;
    }
    pb__output__free_unpacked(out, NULL);
    return rc;
}

/*
 * Sends 1:1 messages to random other users through its home instance. A
 * request home does not answer (no reply within a second, or EC_UNAVAILABLE)
 * is sent again, the same request, through the fallback instance, which must
 * answer it (the gateway's failover); the sender then stays there. Without a
 * kill the home instance must answer everything: its client waits long and
 * resends the same bytes, and a failover counts as an error.
 */
static void *sender_main(void *arg)
{
    struct sender *s = arg;
    bool may_fail_over = s->fallback != s->home;
    struct gim_client *home = NULL, *fb = NULL;
    if (client_open(&home, inst[s->home].url, may_fail_over ? 1000 : 15000,
                    may_fail_over ? 1 : 3) != GIM_OK ||
        client_open(&fb, inst[s->fallback].url, 15000, 3) != GIM_OK) {
        note(s, "client_open", -1, NULL);
        goto out;
    }
    struct client_conn conn = {
        .user_id = s->user, .device_id = s->device, .gateway_id = GATEWAY, .client_addr = "t"};
    struct gim_client *c = home;
    for (int64_t rid = 1; !atomic_load(&stop_senders) && atomic_load(&s->n) < MAX_SENDS; rid++) {
        if (s->limit && atomic_load(&s->n) >= s->limit)
            break;
        int64_t to = 1 + (s->user + (int64_t)(rand_r(&s->seed) % (NUSERS - 1))) % NUSERS;
        int64_t seq = 0;
        bool was_killed = atomic_load(&killed);
        int rc = send_once(s, c, &conn, rid, to, &seq);
        if (rc == 0 && c == home && may_fail_over) {
            s->failovers++;
            c = fb;
            rc = send_once(s, c, &conn, rid, to, &seq);
        }
        if (rc == 0) {
            note(s, c == home ? "no answer from its instance" : "no answer from the fallback", 0,
                 NULL);
            rc = -1;
        }
        if (rc < 0)
            break;
        if (c == home && was_killed)
            s->after_kill++;
        int i = atomic_load(&s->n);
        s->acks[i] = (struct ack){rid, to, seq};
        atomic_store(&s->n, i + 1);
    }
out:
    if (home)
        client_close(home);
    if (fb)
        client_close(fb);
    return NULL;
}

/* The same requests (device RACE_USER's ids 1..RACE_N) through one instance. */
struct racer {
    int inst;
    int64_t seqs[RACE_N];
    int fails;
};

static atomic_int race_ready;

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct gim_client *c = NULL;
    struct sender s = {.user = RACE_USER};
    struct client_conn conn = {
        .user_id = RACE_USER, .device_id = 100 + RACE_USER, .gateway_id = GATEWAY};
    if (client_open(&c, inst[r->inst].url, 15000, 3) != GIM_OK) {
        r->fails = RACE_N;
        return NULL;
    }
    /* All three start together, so the same id is in flight at all three. */
    atomic_fetch_add(&race_ready, 1);
    while (atomic_load(&race_ready) < NINST)
        sleep_ms(1);
    for (int i = 0; i < RACE_N; i++)
        if (send_once(&s, c, &conn, 1 + i, 1 + i % NUSERS, &r->seqs[i]) != 1) {
            r->fails = RACE_N - i; /* this one and the ones not sent */
            break;
        }
    client_close(c);
    return NULL;
}

/* Signs (user, device 100 + user) in through instance i. */
static void sign_in(int i, int64_t user)
{
    struct gim_client *c = tl_client(&inst[i]);
    struct client_conn conn;
    cr_assert_eq(tl_signin(c, &conn, user, 100 + user, GATEWAY), 0, "sign-in of user %lld",
                 (long long)user);
    client_close(c);
}

/*
 * Every acknowledged send of s is stored once where its reply said: its
 * idempotency record points at a message from this device to `to` whose
 * sender_seq is the replied seq, the sender's inbox holds it at that seq and
 * the receiver's at the message's receiver_seq. One query for all of them.
 */
static void check_acks_stored(const struct sender *s)
{
    int n = atomic_load(&s->n);
    if (n == 0)
        return;
    size_t cap = 1024 + (size_t)n * 72, at = 0;
    char *sql = malloc(cap);
    cr_assert_not_null(sql);
    at += (size_t)snprintf(sql + at, cap - at, "SELECT count(*) FROM (VALUES ");
    for (int j = 0; j < n; j++)
        at += (size_t)snprintf(sql + at, cap - at, "%s(%lld::bigint, %lld::bigint, %lld::bigint)",
                               j ? ", " : "", (long long)s->acks[j].rid, (long long)s->acks[j].to,
                               (long long)s->acks[j].seq);
    snprintf(sql + at, cap - at,
             ") v (rid, recv, seq) JOIN idempotency k ON k.device_id = %lld AND k.request_id = "
             "v.rid JOIN message m ON m.id = k.message_id AND m.sender_id = %lld AND "
             "m.sender_device_id = %lld AND m.receiver_id = v.recv AND m.sender_seq = v.seq "
             "JOIN inbox si ON si.user_id = %lld AND si.seq = v.seq AND si.message_id = m.id "
             "JOIN inbox ri ON ri.user_id = v.recv AND ri.seq = m.receiver_seq AND "
             "ri.message_id = m.id",
             (long long)s->device, (long long)s->user, (long long)s->device, (long long)s->user);
    cr_assert_eq(tl_query_int(inst[0].db, sql), n,
                 "user %lld: not every one of its %d acknowledged sends is stored at its seqs",
                 (long long)s->user, n);
    free(sql);
}

/* Every inbox is exactly 1..N with N = user_seq; every copy belongs to a message, twice. */
static void check_inboxes(int64_t messages)
{
    cr_assert_eq(tl_query_int(inst[0].db,
                              "SELECT count(*) FROM user_seq u LEFT JOIN (SELECT user_id, "
                              "count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) "
                              "AS hi FROM inbox GROUP BY user_id) i USING (user_id) WHERE "
                              "u.seq > 0 AND (i.n IS NULL OR i.n <> u.seq OR i.d <> u.seq OR "
                              "i.lo <> 1 OR i.hi <> u.seq)"),
                 0, "an inbox that is not exactly seqs 1..user_seq");
    cr_assert_eq(tl_query_int(inst[0].db, "SELECT count(*) FROM (SELECT DISTINCT user_id FROM "
                                          "inbox) i LEFT JOIN user_seq u USING (user_id) WHERE "
                                          "u.seq IS NULL"),
                 0, "an inbox without a seq counter");
    cr_assert_eq(tl_query_int(inst[0].db, "SELECT count(*) FROM message m WHERE (SELECT "
                                          "count(*) FROM inbox i WHERE i.message_id = m.id) <> 2"),
                 0, "a 1:1 message without exactly its two copies");
    cr_assert_eq(tl_query_int(inst[0].db, "SELECT count(*) FROM message"), messages,
                 "messages stored against requests acknowledged");
    cr_assert_eq(
        tl_query_int(inst[0].db, "SELECT count(*) FROM idempotency WHERE message_id IS NOT NULL"),
        messages, "one idempotency record a message");
    cr_assert_eq(tl_query_int(inst[0].db, "SELECT count(DISTINCT message_id) FROM idempotency"),
                 messages, "two requests share one message");
}

/* User u syncs from seq 0 through instance i: a full first page, seqs 1, 2, 3... */
static void check_sync(int i, int64_t user)
{
    struct gim_client *c = tl_client(&inst[i]);
    struct client_conn conn = {.user_id = user, .device_id = 100 + user, .gateway_id = GATEWAY};
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    Pb__Output *out = tl_call(c, &conn, PB__PACKAGE_TYPE__PT_SYNC, 1, &in.base);
    cr_assert_eq(out->code, 0, "user %lld's sync through instance %d: %s", (long long)user, i,
                 out->message);
    Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
    cr_assert_not_null(so);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT seq FROM user_seq WHERE user_id = %lld", (long long)user);
    int64_t n = tl_query_int(inst[0].db, sql);
    cr_assert_gt(so->n_messages, 0, "user %lld (user_seq %lld) synced nothing", (long long)user,
                 (long long)n);
    cr_assert_leq((int64_t)so->n_messages, n);
    for (size_t k = 0; k < so->n_messages; k++)
        cr_assert_eq(so->messages[k]->seq, (int64_t)k + 1, "user %lld: page position %zu",
                     (long long)user, k);
    pb__sync_output__free_unpacked(so, NULL);
    pb__output__free_unpacked(out, NULL);
    client_close(c);
}

/*
 * Twelve devices over three instances, each pinned to one: user u signs in
 * through instance u % 3, and every other user sends through the next
 * instance instead. Meanwhile device RACE_USER sends the same RACE_N requests
 * through all three instances at once.
 */
Test(pg_multi, senders_over_three_instances_keep_seqs_and_retries_exact)
{
    static struct sender ss[NUSERS];
    static struct racer rs[NINST];
    pthread_t th[NUSERS], rt[NINST];
    for (int64_t u = 1; u <= NUSERS; u++)
        sign_in((int)(u % NINST), u);
    sign_in(1, RACE_USER);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    cr_log_info("seed %u", seed);
    atomic_store(&stop_senders, false);
    atomic_store(&killed, false);
    atomic_store(&race_ready, 0);
    for (int k = 0; k < NUSERS; k++) {
        int64_t u = k + 1;
        int home = (int)((u + (u % 2)) % NINST); /* odd users: another instance than sign-in's */
        ss[k] = (struct sender){.user = u,
                                .device = 100 + u,
                                .home = home,
                                .fallback = home,
                                .seed = seed + 31u * k,
                                .limit = 25};
        cr_assert_eq(pthread_create(&th[k], NULL, sender_main, &ss[k]), 0);
    }
    for (int i = 0; i < NINST; i++) {
        rs[i] = (struct racer){.inst = i};
        cr_assert_eq(pthread_create(&rt[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int k = 0; k < NUSERS; k++)
        pthread_join(th[k], NULL);
    for (int i = 0; i < NINST; i++)
        pthread_join(rt[i], NULL);

    int64_t acked = 0;
    for (int k = 0; k < NUSERS; k++) {
        cr_assert_eq(ss[k].errors, 0, "%s", ss[k].error);
        cr_assert_eq(atomic_load(&ss[k].n), ss[k].limit);
        acked += atomic_load(&ss[k].n);
    }
    for (int i = 0; i < NINST; i++)
        cr_assert_eq(rs[i].fails, 0, "instance %d: %d of the raced sends failed", i, rs[i].fails);
    for (int j = 0; j < RACE_N; j++)
        cr_assert(rs[0].seqs[j] == rs[1].seqs[j] && rs[1].seqs[j] == rs[2].seqs[j],
                  "request %d: seqs %lld, %lld, %lld through the three instances", j + 1,
                  (long long)rs[0].seqs[j], (long long)rs[1].seqs[j], (long long)rs[2].seqs[j]);
    cr_assert_eq(rs[0].seqs[RACE_N - 1], RACE_N, "the raced device's seqs are 1..%d", RACE_N);
    for (int k = 0; k < NUSERS; k++)
        check_acks_stored(&ss[k]);
    check_inboxes(acked + RACE_N);
    /* Each user reads its history through a third instance: neither sign-in's nor send's. */
    for (int64_t u = 1; u <= NUSERS; u++) {
        int in = (int)(u % NINST), home = (int)((u + (u % 2)) % NINST);
        int third = (in + 1) % NINST == home ? (in + 2) % NINST : (in + 1) % NINST;
        check_sync(third, u);
    }
    cr_log_info("acknowledged sends: %lld (+%d raced)", (long long)acked, RACE_N);
}

/* Waits until every sender has at least want[k] acknowledged sends; fails after 90 s. */
static void wait_progress(struct sender *ss, const int *want, const char *phase)
{
    int64_t t0 = now_ms();
    for (;;) {
        int behind = -1;
        for (int k = 0; k < NUSERS && behind < 0; k++)
            if (atomic_load(&ss[k].n) < want[k] && ss[k].errors == 0)
                behind = k;
        for (int k = 0; k < NUSERS; k++)
            cr_assert_eq(ss[k].errors, 0, "%s: %s", phase, ss[k].error);
        if (behind < 0)
            return;
        cr_assert_lt(now_ms() - t0, 90000, "%s: user %lld stuck at %d acknowledged sends", phase,
                     (long long)ss[behind].user, atomic_load(&ss[behind].n));
        sleep_ms(20);
    }
}

/*
 * kill -9 of instance 1 while twelve senders load all three (four pinned to
 * each). The senders of instances 0 and 2 must get EC_OK for every request
 * throughout; those of instance 1 resend what got no answer through another
 * instance and carry on there. Afterwards: every acknowledged send is stored
 * once at its seqs, every inbox is 1..N, no request is stored twice, and
 * instance 1, restarted, serves again.
 */
Test(pg_multi, kill9_of_one_instance_under_load_loses_nothing)
{
    static struct sender ss[NUSERS];
    pthread_t th[NUSERS];
    enum { VICTIM = 1 };
    for (int64_t u = 1; u <= NUSERS; u++)
        sign_in((int)(u % NINST), u);
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    cr_log_info("seed %u", seed);
    atomic_store(&stop_senders, false);
    atomic_store(&killed, false);
    for (int k = 0; k < NUSERS; k++) {
        int64_t u = k + 1;
        int home = (int)((u + (u % 2)) % NINST);
        ss[k] = (struct sender){.user = u,
                                .device = 100 + u,
                                .home = home,
                                .fallback = home == VICTIM ? (int)(u % 2 ? 0 : 2) : home,
                                .seed = seed + 31u * k};
        cr_assert_eq(pthread_create(&th[k], NULL, sender_main, &ss[k]), 0);
    }
    /* Under load: everyone has sends acknowledged before the kill. */
    int want[NUSERS];
    for (int k = 0; k < NUSERS; k++)
        want[k] = 15;
    wait_progress(ss, want, "before the kill");
    atomic_store(&killed, true);
    tl_kill9(&inst[VICTIM]);
    /* After it: everyone goes on (the victim's senders elsewhere). */
    for (int k = 0; k < NUSERS; k++)
        want[k] = atomic_load(&ss[k].n) + 15;
    wait_progress(ss, want, "after the kill");
    atomic_store(&stop_senders, true);
    for (int k = 0; k < NUSERS; k++)
        pthread_join(th[k], NULL);

    int64_t acked = 0;
    int victims = 0;
    for (int k = 0; k < NUSERS; k++) {
        cr_assert_eq(ss[k].errors, 0, "%s", ss[k].error);
        acked += atomic_load(&ss[k].n);
        if (ss[k].home == VICTIM) {
            victims++;
            cr_assert_geq(ss[k].failovers, 1, "user %lld never failed over", (long long)ss[k].user);
            cr_assert_eq(ss[k].after_kill, 0, "the killed instance answered user %lld",
                         (long long)ss[k].user);
        } else {
            cr_assert_eq(ss[k].failovers, 0);
        }
        check_acks_stored(&ss[k]);
    }
    cr_assert_eq(victims, NUSERS / NINST);
    /* A request in flight at the kill may be stored without its reply having arrived; then
     * its resend elsewhere answered it from the record (the same message): so exactly one
     * message per acknowledged request, none more. */
    check_inboxes(acked);

    /* The killed instance comes back on the same database and serves its devices again. */
    tl_restart(&inst[VICTIM]);
    struct gim_client *c = tl_client(&inst[VICTIM]);
    struct client_conn conn = {.user_id = 2, .device_id = 102, .gateway_id = GATEWAY};
    struct sender s = {.user = 2};
    int64_t seq = 0;
    int64_t before = tl_query_int(inst[0].db, "SELECT seq FROM user_seq WHERE user_id = 2");
    cr_assert_eq(send_once(&s, c, &conn, 1000000, 3, &seq), 1, "%s", s.error);
    cr_assert_eq(seq, before + 1, "user 2's next seq after the restart");
    client_close(c);
    int failovers = 0;
    for (int k = 0; k < NUSERS; k++)
        failovers += ss[k].failovers;
    cr_log_info("acknowledged sends: %lld, failovers: %d", (long long)acked, failovers);
}
