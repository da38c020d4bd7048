/*
 * The writer's batch-level lock order on PostgreSQL (issue 17): two
 * gim-logic instances on one database, clients on both sending at once to
 * overlapping users. Each job locks its own seq rows in ascending order, but
 * a batch runs many jobs; without the writer's lock of the whole batch's
 * rows first (writer.c, lock_batch) two instances' batches lock the same
 * users in opposite orders across their jobs and deadlock, each deadlock
 * costing a batch PostgreSQL's deadlock_timeout (1 s) and a retry. Checked:
 * no deadlock at all (no 40P01 in either instance's log, no batch retry in
 * /metrics), every send acknowledged, every inbox 1..N without gap or
 * repeat, one inbox entry per copy. Latency (wall time, p99) is logged for
 * docs/benchmarks.md. Runs only on PostgreSQL (GIM_TEST_BACKEND=postgres).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "httptestlib.h"
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

TestSuite(pg_lockorder_it, .init = setup, .fini = teardown, .timeout = 240);

/* gim_write_batch_retries_total of the instance on port. */
static int64_t batch_retries(int port)
{
    struct ht_resp hr;
    ht_call(port, "GET", "/metrics", NULL, NULL, NULL, &hr);
    cr_assert_eq(hr.status, 200);
    const char *key = "\ngim_write_batch_retries_total ";
    const char *p = strstr(hr.body, key);
    cr_assert(p, "no gim_write_batch_retries_total in /metrics");
    int64_t v = strtoll(p + strlen(key), NULL, 10);
    ht_resp_free(&hr);
    return v;
}

/* The lines of the instance's log that name a deadlock (pgstore.c logs each one it meets). */
static int deadlocks_in_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, "sqlstate=40P01") != NULL;
    if (f)
        fclose(f);
    return n;
}

#define USERS   16
#define SENDS   60
#define CONTENT 32

/* Overlapping groups for the group variant: each pair shares members. */
#define NGROUPS 4
static const struct {
    int64_t id;
    int64_t members[USERS];
    int n;
} groups[NGROUPS] = {
    {101, {1, 2, 3, 4, 5, 6, 9, 10, 11, 12}, 10},
    {102, {3, 4, 5, 6, 7, 8, 13, 14, 15, 16}, 10},
    {103, {1, 2, 4, 7, 8, 9, 12, 13, 16}, 9},
    {104, {1, 3, 5, 6, 8, 10, 11, 14, 15}, 9},
};

static bool member(int g, int64_t user)
{
    for (int i = 0; i < groups[g].n; i++)
        if (groups[g].members[i] == user)
            return true;
    return false;
}

struct sender {
    pthread_t thread;
    const char *url;
    int64_t user;
    bool to_groups; /* group sends (among the user's groups) instead of 1:1 sends */
    int64_t seqs[SENDS];
    int64_t receivers[SENDS];
    int64_t latency_us[SENDS];
    int n_acks, failures;
    char first_error[200];
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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
        char content[CONTENT];
        Pb__Message m = PB__MESSAGE__INIT;
        if (s->to_groups) {
            int g;
            do
                g = (int)(rand_r(&seed) % NGROUPS);
            while (!member(g, s->user));
            m.receiver_type = PB__RECEIVER_TYPE__RT_GROUP;
            m.receiver_id = groups[g].id;
        } else {
            int64_t to;
            do
                to = 1 + rand_r(&seed) % USERS;
            while (to == s->user);
            m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
            m.receiver_id = to;
        }
        snprintf(content, sizeof content, "u%lld-k%d", (long long)s->user, k);
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = (uint8_t *)content;
        m.message_content.len = strlen(content);
        Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
        ms.message = &m;
        Pb__Output *out = NULL;
        int64_t t0 = now_us();
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
            s->latency_us[s->n_acks] = now_us() - t0;
            s->receivers[s->n_acks] = m.receiver_id;
            s->seqs[s->n_acks++] = rep->message->seq;
        }
        if (rep)
            pb__message_send__free_unpacked(rep, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

/*
 * Membership churn beside the group sends: user CHURN_USER (who sends
 * nothing) joins and leaves group `group` through instance `url` until
 * `stop`, each change a notice into every member's inbox (seqs) under the
 * group's row lock (FOR UPDATE, while sends share it): a batch that
 * share-locked a group and then had to upgrade, or locked seqs before the
 * group, would deadlock with the other instance's.
 */
#define CHURN_USER (USERS + 1)

struct churner {
    pthread_t thread;
    const char *url;
    const char *token;
    int64_t group;
    _Atomic bool *stop;
    int changes, failures;
    char first_error[200];
};

static void *churn_main(void *arg)
{
    struct churner *ch = arg;
    struct gim_client *c = NULL;
    const struct client_conn ops = {.gateway_id = "ops", .client_addr = "test"};
    if (client_open(&c, ch->url, 20000, 1) != GIM_OK) {
        ch->failures = 1;
        snprintf(ch->first_error, sizeof ch->first_error, "cannot connect");
        return NULL;
    }
    for (int i = 0; !*ch->stop; i++) {
        int64_t who = CHURN_USER;
        Pb__AdminGroupMembersInput in = PB__ADMIN_GROUP_MEMBERS_INPUT__INIT;
        in.token = (char *)ch->token;
        in.group_id = ch->group;
        in.user_ids = &who;
        in.n_user_ids = 1;
        Pb__Output *out = NULL;
        int type = i % 2 ? PB__PACKAGE_TYPE__PT_ADMIN_GROUP_REMOVE_MEMBERS
                         : PB__PACKAGE_TYPE__PT_ADMIN_GROUP_ADD_MEMBERS;
        if (client_request(c, &ops, type, 0, &in.base, &out) != GIM_OK || out->code != 0) {
            if (!ch->failures++)
                snprintf(ch->first_error, sizeof ch->first_error, "change %d: %s", i,
                         out && out->message ? out->message : "no reply");
        } else {
            ch->changes++;
        }
        if (out)
            pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t p = *(const int64_t *)x, q = *(const int64_t *)y;
    return (p > q) - (p < q);
}

/* Half the users send through A, half through B, all at once; then every check. */
static void run(bool to_groups, bool churn)
{
    char *token = NULL;
    _Atomic bool stop = false;
    struct churner chs[2] = {{.url = a.url, .group = 101, .stop = &stop},
                             {.url = b.url, .group = 102, .stop = &stop}};
    int port_a = tl_enable_http(&a), port_b = tl_enable_http(&b);
    for (int g = 0; to_groups && g < NGROUPS; g++)
        tl_make_group(&a, groups[g].id, groups[g].members, groups[g].n);

    struct gim_client *ca = tl_client(&a);
    static struct sender ss[USERS];
    for (int i = 0; i < USERS; i++) {
        struct client_conn conn;
        char gw[16];
        memset(&ss[i], 0, sizeof ss[i]);
        ss[i].user = i + 1;
        ss[i].url = i % 2 ? b.url : a.url;
        ss[i].to_groups = to_groups;
        snprintf(gw, sizeof gw, "gw%d", i + 1);
        cr_assert_eq(tl_signin(ca, &conn, ss[i].user, 100 + ss[i].user, gw), 0);
    }
    client_close(ca);
    int64_t retries_before = batch_retries(port_a) + batch_retries(port_b);
    if (churn) {
        cr_assert_eq(auth_mint_admin(TL_SECRET, time(NULL) + 600, &token), GIM_OK);
        for (int k = 0; k < 2; k++) {
            chs[k].token = token;
            cr_assert_eq(pthread_create(&chs[k].thread, NULL, churn_main, &chs[k]), 0);
        }
    }
    int64_t t0 = now_us();
    for (int i = 0; i < USERS; i++)
        cr_assert_eq(pthread_create(&ss[i].thread, NULL, send_main, &ss[i]), 0);
    for (int i = 0; i < USERS; i++)
        pthread_join(ss[i].thread, NULL);
    int64_t wall_ms = (now_us() - t0) / 1000;
    stop = true;
    for (int k = 0; churn && k < 2; k++) {
        pthread_join(chs[k].thread, NULL);
        cr_expect_eq(chs[k].failures, 0, "group %lld: %d failed changes, first: %s",
                     (long long)chs[k].group, chs[k].failures, chs[k].first_error);
        cr_expect_gt(chs[k].changes, 0, "group %lld changed", (long long)chs[k].group);
    }
    free(token);

    static int64_t lat[USERS * SENDS];
    int acked = 0;
    for (int i = 0; i < USERS; i++) {
        cr_expect_eq(ss[i].failures, 0, "user %lld: %d failed sends, first: %s",
                     (long long)ss[i].user, ss[i].failures, ss[i].first_error);
        for (int k = 0; k < ss[i].n_acks; k++)
            lat[acked++] = ss[i].latency_us[k];
    }
    cr_assert_eq(acked, USERS * SENDS, "every send acknowledged");
    qsort(lat, (size_t)acked, sizeof *lat, cmp_i64);
    int64_t retries = batch_retries(port_a) + batch_retries(port_b) - retries_before;
    int deadlocks = deadlocks_in_log(a.log) + deadlocks_in_log(b.log);
    double load[1] = {0};
    getloadavg(load, 1);
    /* One line for docs/benchmarks.md (issue 17, the batch lock order). */
    fprintf(stderr,
            "lockorder %s: %d sends on 2 instances in %lld ms, p50 %lld us, p99 %lld us, max "
            "%lld us; deadlocks %d, batch retries %lld; membership changes %d; load %.2f\n",
            churn       ? "group+churn"
            : to_groups ? "group"
                        : "1:1",
            acked, (long long)wall_ms, (long long)lat[acked / 2], (long long)lat[acked * 99 / 100],
            (long long)lat[acked - 1], deadlocks, (long long)retries,
            chs[0].changes + chs[1].changes, load[0]);

    /* Every inbox: seqs 1..N, no gap, no repeat; user_seq says N. */
    for (int u = 1; u <= (churn ? CHURN_USER : USERS); u++) {
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
    }
    /* Every acknowledged send is in its sender's inbox under the seq its reply said. */
    for (int i = 0; i < USERS; i++)
        for (int k = 0; k < ss[i].n_acks; k++)
            cr_assert_eq(tl_query_intf(a.db,
                                       "SELECT m.receiver_id FROM inbox i JOIN message m ON m.id = "
                                       "i.message_id WHERE i.user_id = %lld AND i.seq = %lld AND "
                                       "m.sender_id = %lld AND m.sender_seq = %lld",
                                       (long long)ss[i].user, (long long)ss[i].seqs[k],
                                       (long long)ss[i].user, (long long)ss[i].seqs[k]),
                         ss[i].receivers[k], "user %lld seq %lld", (long long)ss[i].user,
                         (long long)ss[i].seqs[k]);
    cr_assert_eq(tl_query_intf(a.db, "SELECT count(*) FROM message WHERE sender_type = %d",
                               PB__SENDER_TYPE__ST_USER),
                 USERS * SENDS);
    /* The point: the two instances' batches never locked seq rows in opposite orders. */
    cr_assert_eq(deadlocks, 0, "%d deadlocks between the instances' batches (see %s, %s)",
                 deadlocks, a.log, b.log);
    cr_assert_eq(retries, 0, "%lld batch retries", (long long)retries);
}

Test(pg_lockorder_it, one_to_one_sends_on_two_instances_never_deadlock)
{
    run(false, false);
}

Test(pg_lockorder_it, group_sends_on_two_instances_never_deadlock)
{
    run(true, false);
}

/* Group sends while members join and leave on both instances: no deadlock, every send, gap-free. */
Test(pg_lockorder_it, group_sends_beside_membership_changes_stay_gap_free)
{
    run(true, true);
}
