/*
 * Concurrent sends against the real binary: 8 clients (users 1..8, one
 * device each) send at once to random users and to a group of all 8. Every
 * acknowledged send must be in the database exactly where its reply said,
 * and every inbox must hold seqs 1..N without gap or repeat.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

#define USERS   8
#define SENDS   150
#define GROUP   500
#define CONTENT 32

static struct tl_server srv;

struct ack {
    int64_t seq;
    int receiver_type;
    int64_t receiver_id;
    char content[CONTENT];
};

struct worker {
    pthread_t thread;
    int64_t user;
    struct client_conn conn;
    struct gim_client *cli;
    struct ack acks[SENDS];
    int n_acks;
    int failures; /* no reply, or a code other than EC_OK */
    char first_error[200];
};

static void *run(void *arg)
{
    struct worker *w = arg;
    unsigned seed = (unsigned)w->user * 7919u;
    for (int k = 0; k < SENDS; k++) {
        struct ack a = {0};
        a.receiver_type =
            rand_r(&seed) % 10 == 0 ? PB__RECEIVER_TYPE__RT_GROUP : PB__RECEIVER_TYPE__RT_USER;
        a.receiver_id =
            a.receiver_type == PB__RECEIVER_TYPE__RT_GROUP ? GROUP : 1 + rand_r(&seed) % USERS;
        snprintf(a.content, sizeof a.content, "u%lld-k%d", (long long)w->user, k);
        Pb__Message m = PB__MESSAGE__INIT;
        m.receiver_type = a.receiver_type;
        m.receiver_id = a.receiver_id;
        m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
        m.message_content.data = (uint8_t *)a.content;
        m.message_content.len = strlen(a.content);
        Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
        ms.message = &m;
        Pb__Output *out = NULL;
        /* request_id k + 1: a client-side resend after a timeout is answered, not stored again. */
        if (client_request(w->cli, &w->conn, PB__PACKAGE_TYPE__PT_MESSAGE, k + 1, &ms.base, &out) !=
            GIM_OK) {
            if (!w->failures++)
                snprintf(w->first_error, sizeof w->first_error, "send %d: no reply", k);
            continue;
        }
        Pb__MessageSend *rep =
            out->code == 0 ? pb__message_send__unpack(NULL, out->data.len, out->data.data) : NULL;
        if (!rep || !rep->message) {
            if (!w->failures++)
                snprintf(w->first_error, sizeof w->first_error, "send %d: code %d %s", k, out->code,
                         out->message ? out->message : "");
        } else {
            a.seq = rep->message->seq;
            w->acks[w->n_acks++] = a;
        }
        if (rep)
            pb__message_send__free_unpacked(rep, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    return NULL;
}

static int64_t q1(sqlite3_stmt *st)
{
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return v;
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(message_concurrency, .fini = teardown);

Test(message_concurrency, every_acknowledged_send_is_stored_and_seqs_have_no_gaps, .timeout = 300)
{
    /* testlib's base config already runs 64 contexts and 4 workers. */
    tl_start(&srv, NULL);
    char buf[256];
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open(srv.db, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    snprintf(buf, sizeof buf,
             "INSERT INTO chat_group (group_id, name, owner_id, created_at) VALUES (%d, 'all', 1, "
             "0)",
             GROUP);
    cr_assert_eq(sqlite3_exec(h, buf, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    for (int u = 1; u <= USERS; u++) {
        snprintf(buf, sizeof buf,
                 "INSERT INTO group_member (group_id, user_id, role, joined_at) VALUES (%d, %d, "
                 "'member', 0)",
                 GROUP, u);
        cr_assert_eq(sqlite3_exec(h, buf, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(h));
    }

    static struct worker ws[USERS];
    for (int i = 0; i < USERS; i++) {
        struct worker *w = &ws[i];
        memset(w, 0, sizeof *w);
        w->user = i + 1;
        w->cli = tl_client(&srv);
        static const char *const gws[] = {"gw0", "gw1", "gw2"};
        cr_assert_eq(tl_signin(w->cli, &w->conn, w->user, 1000 + w->user, gws[i % 3]), 0);
    }
    for (int i = 0; i < USERS; i++)
        cr_assert_eq(pthread_create(&ws[i].thread, NULL, run, &ws[i]), 0);
    for (int i = 0; i < USERS; i++)
        pthread_join(ws[i].thread, NULL);

    int acked = 0;
    for (int i = 0; i < USERS; i++) {
        cr_expect_eq(ws[i].failures, 0, "user %lld: %d failed sends, first: %s",
                     (long long)ws[i].user, ws[i].failures, ws[i].first_error);
        acked += ws[i].n_acks;
        client_close(ws[i].cli);
    }
    cr_assert_eq(acked, USERS * SENDS);

    /* Inboxes: seqs 1..N, no gap, no repeat, and the counter (user_last_seq) says N. */
    int64_t total_copies = 0;
    for (int u = 1; u <= USERS; u++) {
        sqlite3_stmt *st;
        cr_assert_eq(sqlite3_prepare_v2(h,
                                        "SELECT count(*), coalesce(min(seq), 0), "
                                        "coalesce(max(seq), 0), count(DISTINCT seq), "
                                        "(SELECT seq FROM user_last_seq WHERE user_id = ?1) "
                                        "FROM inbox WHERE user_id = ?1",
                                        -1, &st, NULL),
                     SQLITE_OK);
        sqlite3_bind_int(st, 1, u);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        int64_t n = sqlite3_column_int64(st, 0), mn = sqlite3_column_int64(st, 1),
                mx = sqlite3_column_int64(st, 2), distinct = sqlite3_column_int64(st, 3),
                last = sqlite3_column_int64(st, 4);
        sqlite3_finalize(st);
        cr_assert_gt(n, 0, "user %d has an inbox", u);
        cr_assert_eq(mn, 1, "user %d", u);
        cr_assert_eq(mx, n, "user %d: %lld copies up to seq %lld", u, (long long)n, (long long)mx);
        cr_assert_eq(distinct, n, "user %d", u);
        cr_assert_eq(last, n, "user %d: user_last_seq", u);
        total_copies += n;
    }

    /* Every acknowledged send is where its reply said, once. */
    sqlite3_stmt *own, *recv, *copies;
    cr_assert_eq(sqlite3_prepare_v2(h,
                                    "SELECT m.id, m.sender_id, m.receiver_type, m.receiver_id, "
                                    "m.sender_seq, m.receiver_seq, CAST(m.content AS TEXT) "
                                    "FROM inbox i JOIN message m ON m.id = i.message_id "
                                    "WHERE i.user_id = ?1 AND i.seq = ?2",
                                    -1, &own, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h,
                                    "SELECT count(*) FROM inbox WHERE user_id = ?1 AND seq = ?2 "
                                    "AND message_id = ?3",
                                    -1, &recv, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h,
                                    "SELECT count(*) FROM group_copy g JOIN inbox i ON "
                                    "i.user_id = g.user_id AND i.seq = g.seq AND "
                                    "i.message_id = g.message_id WHERE g.message_id = ?1",
                                    -1, &copies, NULL),
                 SQLITE_OK);
    int64_t expected_copies = 0;
    for (int i = 0; i < USERS; i++) {
        for (int k = 0; k < ws[i].n_acks; k++) {
            const struct ack *a = &ws[i].acks[k];
            sqlite3_bind_int64(own, 1, ws[i].user);
            sqlite3_bind_int64(own, 2, a->seq);
            cr_assert_eq(sqlite3_step(own), SQLITE_ROW, "user %lld seq %lld is missing",
                         (long long)ws[i].user, (long long)a->seq);
            int64_t id = sqlite3_column_int64(own, 0);
            cr_assert_eq(sqlite3_column_int64(own, 1), ws[i].user);
            cr_assert_eq(sqlite3_column_int(own, 2), a->receiver_type);
            cr_assert_eq(sqlite3_column_int64(own, 3), a->receiver_id);
            cr_assert_eq(sqlite3_column_int64(own, 4), a->seq);
            int64_t receiver_seq = sqlite3_column_int64(own, 5);
            cr_assert_str_eq((const char *)sqlite3_column_text(own, 6), a->content);
            sqlite3_reset(own);
            if (a->receiver_type == PB__RECEIVER_TYPE__RT_USER) {
                sqlite3_bind_int64(recv, 1, a->receiver_id);
                sqlite3_bind_int64(recv, 2, receiver_seq);
                sqlite3_bind_int64(recv, 3, id);
                cr_assert_eq(q1(recv), 1, "receiver %lld lacks message %lld",
                             (long long)a->receiver_id, (long long)id);
                expected_copies += a->receiver_id == ws[i].user ? 1 : 2;
            } else {
                sqlite3_bind_int64(copies, 1, id);
                cr_assert_eq(q1(copies), USERS, "group message %lld", (long long)id);
                expected_copies += USERS;
            }
        }
    }
    sqlite3_finalize(own);
    sqlite3_finalize(recv);
    sqlite3_finalize(copies);
    sqlite3_close(h);
    /* Nothing stored twice, nothing stored that was not acknowledged. */
    cr_assert_eq(total_copies, expected_copies);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), acked);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}
