/*
 * Groups and the business API on PostgreSQL with two gim-logic instances on
 * one database (issue 17, phase 2), where several instances matter:
 *   - clients on both instances send at once to overlapping groups (and to
 *     single users): every send is acknowledged (a deadlock between the two
 *     instances' batches is retried by the writer, never answered as an
 *     error), every member's inbox holds seqs 1..N without gap or repeat, and
 *     every acknowledged send is stored where its reply said, with one copy
 *     per member;
 *   - the same operator request (same idempotency key) reaching both
 *     instances at once is applied once and both get the same reply.
 * Runs only on PostgreSQL (ctest sets GIM_TEST_BACKEND=postgres for it).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "testlib.h"

static struct tl_server a, b;

static void setup(void)
{
    tl_start_pair(&a, &b, NULL);
}

static void teardown(void)
{
    tl_cleanup_pair(&a, &b);
}

TestSuite(pg_groups_it, .init = setup, .fini = teardown, .timeout = 240);

/* ---- concurrent group sends on two instances ---------------------------- */

#define USERS   8
#define NGROUPS 4
#define SENDS   50
#define CONTENT 32

/* Overlapping groups: every user is in two or three, each pair of groups shares members. */
static const struct {
    int64_t id;
    int64_t members[USERS];
    int n;
} groups[NGROUPS] = {
    {101, {1, 2, 3, 4, 5, 6}, 6},
    {102, {3, 4, 5, 6, 7, 8}, 6},
    {103, {1, 2, 4, 7, 8}, 5},
    {104, {1, 3, 5, 6, 8}, 5},
};

struct ack {
    int64_t seq;
    int receiver_type;
    int64_t receiver_id;
    char content[CONTENT];
};

struct sender {
    pthread_t thread;
    const char *url;
    int64_t user;
    struct ack acks[SENDS];
    int n_acks, failures;
    char first_error[200];
};

static bool member(int g, int64_t user)
{
    for (int i = 0; i < groups[g].n; i++)
        if (groups[g].members[i] == user)
            return true;
    return false;
}

static void *send_main(void *arg)
{
    struct sender *s = arg;
    struct gim_client *c = NULL;
    char gw[16];
    snprintf(gw, sizeof gw, "gw%lld", (long long)s->user);
    struct client_conn conn = {
        .user_id = s->user, .device_id = 100 + s->user, .gateway_id = gw, .client_addr = "t"};
    unsigned seed = (unsigned)s->user * 7919u;
    if (client_open(&c, s->url, 20000, 1) != GIM_OK) {
        s->failures = SENDS;
        snprintf(s->first_error, sizeof s->first_error, "cannot connect");
        return NULL;
    }
    for (int k = 0; k < SENDS; k++) {
        struct ack ack = {0};
        if (rand_r(&seed) % 5 == 0) {
            ack.receiver_type = PB__RECEIVER_TYPE__RT_USER;
            ack.receiver_id = 1 + rand_r(&seed) % USERS;
        } else {
            int g;
            do
                g = (int)(rand_r(&seed) % NGROUPS);
            while (!member(g, s->user));
            ack.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
            ack.receiver_id = groups[g].id;
        }
        snprintf(ack.content, sizeof ack.content, "u%lld-k%d", (long long)s->user, k);
        Pb__Message m = PB__MESSAGE__INIT;
        m.receiver_type = ack.receiver_type;
        m.receiver_id = ack.receiver_id;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = (uint8_t *)ack.content;
        m.message_content.len = strlen(ack.content);
        Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
        ms.message = &m;
        Pb__Output *out = NULL;
        if (client_request(c, &conn, PB__PACKAGE_TYPE__PT_MESSAGE, k + 1, &ms.base, &out) !=
            GIM_OK) {
            if (!s->failures++)
                snprintf(s->first_error, sizeof s->first_error, "send %d: no reply", k);
            continue;
        }
        Pb__MessageSend *rep =
            out->code == 0 ? pb__message_send__unpack(NULL, out->data.len, out->data.data) : NULL;
        if (!rep || !rep->message) {
            if (!s->failures++)
                snprintf(s->first_error, sizeof s->first_error, "send %d: code %d %s", k, out->code,
                         out->message ? out->message : "");
        } else {
            ack.seq = rep->message->seq;
            s->acks[s->n_acks++] = ack;
        }
        if (rep)
            pb__message_send__free_unpacked(rep, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

/* The occurrences of needle in the file at path (the instances' logs). */
static int count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

Test(pg_groups_it, concurrent_group_sends_on_two_instances_are_gap_free)
{
    for (int g = 0; g < NGROUPS; g++)
        tl_make_group(&a, groups[g].id, groups[g].members, groups[g].n);

    /* Signed in at A; half of them then send through B (sessions are shared). */
    struct gim_client *ca = tl_client(&a);
    static struct sender ss[USERS];
    for (int i = 0; i < USERS; i++) {
        struct client_conn conn;
        char gw[16];
        memset(&ss[i], 0, sizeof ss[i]);
        ss[i].user = i + 1;
        ss[i].url = i % 2 ? b.url : a.url;
        snprintf(gw, sizeof gw, "gw%d", i + 1);
        cr_assert_eq(tl_signin(ca, &conn, ss[i].user, 100 + ss[i].user, gw), 0);
    }
    client_close(ca);
    for (int i = 0; i < USERS; i++)
        cr_assert_eq(pthread_create(&ss[i].thread, NULL, send_main, &ss[i]), 0);
    for (int i = 0; i < USERS; i++)
        pthread_join(ss[i].thread, NULL);

    int acked = 0;
    for (int i = 0; i < USERS; i++) {
        cr_expect_eq(ss[i].failures, 0, "user %lld: %d failed sends, first: %s",
                     (long long)ss[i].user, ss[i].failures, ss[i].first_error);
        acked += ss[i].n_acks;
    }
    cr_assert_eq(acked, USERS * SENDS, "every send acknowledged");
    cr_log_info("deadlocks retried by the writers: %d (A) + %d (B)", count_in_file(a.log, "40P01"),
                count_in_file(b.log, "40P01"));

    /* Every inbox: seqs 1..N, no gap, no repeat; user_seq says N. */
    int64_t copies = 0;
    for (int u = 1; u <= USERS; u++) {
        int64_t n = tl_query_intf(a.db, "SELECT count(*) FROM inbox WHERE user_id = %d", u);
        cr_assert_gt(n, 0, "user %d has an inbox", u);
        cr_assert_eq(tl_query_intf(a.db, "SELECT min(seq) FROM inbox WHERE user_id = %d", u), 1,
                     "user %d", u);
        cr_assert_eq(tl_query_intf(a.db, "SELECT max(seq) FROM inbox WHERE user_id = %d", u), n,
                     "user %d", u);
        cr_assert_eq(
            tl_query_intf(a.db, "SELECT count(DISTINCT seq) FROM inbox WHERE user_id = %d", u), n,
            "user %d", u);
        cr_assert_eq(tl_query_intf(a.db, "SELECT seq FROM user_seq WHERE user_id = %d", u), n,
                     "user %d", u);
        copies += n;
    }

    /* Every acknowledged send is where its reply said, once, with a copy for each member. */
    int64_t expected = 0;
    for (int i = 0; i < USERS; i++)
        for (int k = 0; k < ss[i].n_acks; k++) {
            const struct ack *ack = &ss[i].acks[k];
            int64_t id = tl_query_intf(
                a.db,
                "SELECT m.id FROM inbox i JOIN message m ON m.id = i.message_id "
                "WHERE i.user_id = %lld AND i.seq = %lld AND m.sender_id = %lld AND "
                "m.sender_seq = %lld AND m.receiver_type = %d AND m.receiver_id = "
                "%lld AND m.content = convert_to('%s', 'UTF8')",
                (long long)ss[i].user, (long long)ack->seq, (long long)ss[i].user,
                (long long)ack->seq, ack->receiver_type, (long long)ack->receiver_id, ack->content);
            cr_assert_gt(id, 0, "user %lld seq %lld (%s) is not stored as acknowledged",
                         (long long)ss[i].user, (long long)ack->seq, ack->content);
            if (ack->receiver_type == PB__RECEIVER_TYPE__RT_GROUP) {
                int size = 0;
                for (int g = 0; g < NGROUPS; g++)
                    if (groups[g].id == ack->receiver_id)
                        size = groups[g].n;
                cr_assert_eq(
                    tl_query_intf(a.db,
                                  "SELECT count(*) FROM group_copy c JOIN inbox i ON i.user_id = "
                                  "c.user_id AND i.seq = c.seq AND i.message_id = c.message_id "
                                  "WHERE c.message_id = %lld",
                                  (long long)id),
                    size, "group message %lld: one copy per member", (long long)id);
                expected += size;
            } else {
                expected += ack->receiver_id == ss[i].user ? 1 : 2;
            }
        }
    cr_assert_eq(copies, expected, "no copy beyond the acknowledged sends'");
    cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM message"), USERS * SENDS);
}

/* ---- an operator request retried on two instances at once ---------------- */

struct op_racer {
    pthread_t thread;
    const char *url;
    const char *token;
    int n;
    int fails;
    int64_t group_ids[64];
    int64_t recipients[64];
    char first_error[200];
};

static pthread_barrier_t start_line;

/* Creates group "race-<i>" (key create-<i>) and sends to it (key send-<i>), n times. */
static void *op_main(void *arg)
{
    struct op_racer *r = arg;
    struct gim_client *c = NULL;
    const struct client_conn ops = {.gateway_id = "ops", .client_addr = "test"};
    if (client_open(&c, r->url, 20000, 1) != GIM_OK) {
        r->fails = r->n;
        return NULL;
    }
    pthread_barrier_wait(&start_line);
    for (int i = 0; i < r->n; i++) {
        char name[32], key[32];
        int64_t members[] = {2, 3, 4};
        snprintf(name, sizeof name, "race-%d", i);
        snprintf(key, sizeof key, "create-%d", i);
        Pb__AdminGroupCreateInput in = PB__ADMIN_GROUP_CREATE_INPUT__INIT;
        in.token = (char *)r->token;
        in.idempotency_key = key;
        in.name = name;
        in.owner_id = 1;
        in.member_ids = members;
        in.n_member_ids = 3;
        Pb__Output *out = NULL;
        if (client_request(c, &ops, PB__PACKAGE_TYPE__PT_ADMIN_GROUP_CREATE, 0, &in.base, &out) !=
                GIM_OK ||
            out->code != 0) {
            if (!r->fails++)
                snprintf(r->first_error, sizeof r->first_error, "create %d: %s", i,
                         out && out->message ? out->message : "no reply");
        } else {
            Pb__GroupInfo *g = pb__group_info__unpack(NULL, out->data.len, out->data.data);
            r->group_ids[i] = g ? g->group_id : -1;
            if (g)
                pb__group_info__free_unpacked(g, NULL);
        }
        if (out)
            pb__output__free_unpacked(out, NULL);

        static const uint8_t text[] = {0x0a, 0x02, 'h', 'i'};
        Pb__Sender snd = PB__SENDER__INIT;
        snd.sender_type = PB__SENDER_TYPE__ST_SYSTEM;
        Pb__Message m = PB__MESSAGE__INIT;
        m.sender = &snd;
        m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
        m.receiver_id = 0;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = (uint8_t *)text;
        m.message_content.len = sizeof text;
        int64_t users[] = {9, 7, 8};
        Pb__AdminSendInput si = PB__ADMIN_SEND_INPUT__INIT;
        snprintf(key, sizeof key, "send-%d", i);
        si.token = (char *)r->token;
        si.idempotency_key = key;
        si.message = &m;
        si.user_ids = users;
        si.n_user_ids = 3;
        out = NULL;
        if (client_request(c, &ops, PB__PACKAGE_TYPE__PT_ADMIN_SEND, 0, &si.base, &out) != GIM_OK ||
            out->code != 0) {
            if (!r->fails++)
                snprintf(r->first_error, sizeof r->first_error, "send %d: %s", i,
                         out && out->message ? out->message : "no reply");
        } else {
            Pb__AdminSendOutput *so =
                pb__admin_send_output__unpack(NULL, out->data.len, out->data.data);
            /* The copies' seqs, as one number: user 9's, 7's and 8's, in the list's order. */
            r->recipients[i] =
                so && so->n_copies == 3 && so->copies[0]->user_id == 9 &&
                        so->copies[1]->user_id == 7 && so->copies[2]->user_id == 8
                    ? so->copies[0]->seq * 10000 + so->copies[1]->seq * 100 + so->copies[2]->seq
                    : -1;
            if (so)
                pb__admin_send_output__free_unpacked(so, NULL);
        }
        if (out)
            pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

Test(pg_groups_it, an_operator_request_retried_on_two_instances_applies_once)
{
    enum { N = 30 };
    char *token = NULL;
    cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &token), GIM_OK);
    struct op_racer ra = {.url = a.url, .token = token, .n = N},
                    rb = {.url = b.url, .token = token, .n = N};
    cr_assert_eq(pthread_barrier_init(&start_line, NULL, 2), 0);
    pthread_create(&ra.thread, NULL, op_main, &ra);
    pthread_create(&rb.thread, NULL, op_main, &rb);
    pthread_join(ra.thread, NULL);
    pthread_join(rb.thread, NULL);
    pthread_barrier_destroy(&start_line);
    free(token);
    cr_assert_eq(ra.fails + rb.fails, 0, "A: %s; B: %s", ra.first_error, rb.first_error);
    for (int i = 0; i < N; i++) {
        cr_assert_gt(ra.group_ids[i], 0);
        cr_assert_eq(ra.group_ids[i], rb.group_ids[i], "create-%d: group %lld at A, %lld at B", i,
                     (long long)ra.group_ids[i], (long long)rb.group_ids[i]);
        cr_assert_gt(ra.recipients[i], 0, "send-%d: the copies in the list's order", i);
        cr_assert_eq(ra.recipients[i], rb.recipients[i], "send-%d: the same reply at A and B", i);
    }
    cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM chat_group"), N,
                 "each create applied once");
    cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM group_member"), 4 * N);
    /* One added notice per group in each member's inbox, seqs 1..N. */
    for (int u = 1; u <= 4; u++) {
        cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM inbox WHERE user_id = %d", u), N,
                     "user %d", u);
        cr_assert_eq(tl_query_intf(a.db, "SELECT max(seq) FROM inbox WHERE user_id = %d", u), N,
                     "user %d", u);
    }
    /* Each list send applied once: one copy a user a key. */
    for (int u = 7; u <= 9; u++) {
        cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM inbox WHERE user_id = %d", u), N,
                     "user %d", u);
        cr_assert_eq(tl_query_intf(a.db, "SELECT max(seq) FROM inbox WHERE user_id = %d", u), N,
                     "user %d", u);
    }
    cr_assert_eq(
        tl_query_intf(a.db, "SELECT count(*) FROM operator_idempotency WHERE reply IS NOT NULL"),
        2 * N);
}
