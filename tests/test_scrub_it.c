/*
 * Recall erasure against long-lived readers and crashes (issue 11,
 * scenarios 2 and 3), with the real binary over real sockets on a real
 * database. A "reader" is what an operator's sqlite3 shell, `.backup` or
 * `VACUUM INTO` is to the service: a connection of this process that holds
 * a read transaction on an older snapshot of the live file.
 *
 * Bytes are searched raw in gim.db and gim.db-wal, as in test_recall_it.c.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
static char wal[256];

static void teardown(void)
{
    client_close(cli);
    tl_cleanup(&srv);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start(void)
{
    /* The default busy timeout (5 s): the stall this file guards against was its length. */
    tl_start(&srv, NULL);
    /* One attempt and a long timeout: a slow reply shows as slow, not as a resend. */
    cr_assert_eq(client_open(&cli, srv.url, 20000, 1), GIM_OK);
    snprintf(wal, sizeof wal, "%s-wal", srv.db);
}

static bool on_disk(const char *secret)
{
    return tl_db_files_have(srv.db, secret);
}

/* Polls for up to ms: true once secret is in neither file. */
static bool gone_within(const char *secret, int ms)
{
    for (int waited = 0;; waited += 50) {
        if (!on_disk(secret))
            return true;
        if (waited >= ms)
            return false;
        usleep(50 * 1000);
    }
}

/* Sends a text to receiver; returns the sender's seq, and the reply's latency in *ms. */
static int64_t send_text(const struct client_conn *conn, int64_t receiver, const char *text,
                         int64_t request_id, int64_t *latency_ms)
{
    uint8_t content[256];
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = receiver;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = pb__text__pack(&t, content);
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    int64_t t0 = now_ms();
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
    if (latency_ms)
        *latency_ms = now_ms() - t0;
    cr_assert_eq(out->code, 0, "send failed: %s", out->message);
    Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
    cr_assert(reply && reply->message);
    int64_t seq = reply->message->seq;
    pb__message_send__free_unpacked(reply, NULL);
    pb__output__free_unpacked(out, NULL);
    return seq;
}

static void recall(const struct client_conn *conn, int64_t seq)
{
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    in.seq = seq;
    Pb__Output *out = tl_call(cli, conn, PB__PACKAGE_TYPE__PT_RECALL, 90000 + seq, &in.base);
    cr_assert_eq(out->code, 0, "recall failed: %s", out->message);
    pb__output__free_unpacked(out, NULL);
}

/*
 * A reader on the live file holding its snapshot, as the sqlite3 shell does
 * after BEGIN and one SELECT. It never checkpoints on close: only the
 * service may take the recalled bytes out of the files here.
 */
static sqlite3 *open_reader(void)
{
    sqlite3 *h = NULL;
    cr_assert_eq(sqlite3_open_v2(srv.db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_db_config(h, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "BEGIN; SELECT count(*) FROM message;", NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(h));
    return h;
}

static void close_reader(sqlite3 *h)
{
    cr_assert_eq(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_close(h), SQLITE_OK);
}

static void make_secret(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "SECRET-%s-%08x%08x", tag, (unsigned)rand(), (unsigned)getpid());
}

/*
 * Scenario 2: one recall plus any long-lived reader throttled every write.
 * The writer ran the WAL scrub (a TRUNCATE checkpoint) on its own
 * connection; the reader's old snapshot made it wait the whole busy timeout
 * (5 s), fail, and start over after the next batch: every send took ~5 s
 * until the reader closed. Now no send waits for the scrub, and the scrub
 * still completes within seconds once the reader lets go.
 */
Test(scrub_it, a_reader_never_stalls_sends_and_the_scrub_completes_after_it, .fini = teardown,
     .timeout = 90)
{
    struct client_conn a, b;
    char secret[64];
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    make_secret(secret, sizeof secret, "READER");
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 101, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 201, "gwB"), 0);
    int64_t seq = send_text(&a, 2, secret, 1, NULL);
    cr_assert(on_disk(secret), "the text must be on disk before the recall (else this proves "
                               "nothing)");

    sqlite3 *reader = open_reader();
    recall(&a, seq);

    /* Keep sending for 3 s (maintenance runs every second): no reply may wait for the scrub. */
    int64_t worst = 0, n = 0, t0 = now_ms();
    while (now_ms() - t0 < 3000 || n < 10) {
        int64_t ms = 0;
        char text[64];
        snprintf(text, sizeof text, "while the reader is open %lld", (long long)n);
        send_text(&a, 2, text, 100 + n, &ms);
        worst = ms > worst ? ms : worst;
        n++;
    }
    /* Coarse on purpose (a loaded CI machine): the stall was the whole 5 s busy timeout. */
    fprintf(stderr, "test_scrub_it: %lld sends with the reader open, the slowest %lld ms\n",
            (long long)n, (long long)worst);
    cr_assert_lt(worst, 2500, "a send took %lld ms with a reader open (%lld sends)",
                 (long long)worst, (long long)n);

    /*
     * While the reader holds its snapshot the erased bytes may still be on
     * disk: the reader may read them, so no checkpoint may overwrite or drop
     * them (see docs/reliability.md). Once it closes, they go within seconds.
     */
    bool still = on_disk(secret);
    close_reader(reader);
    cr_assert(gone_within(secret, 5000),
              "recalled text still on disk 5 s after the reader "
              "closed: db=%d wal=%d (on disk with the reader: %d)",
              tl_file_has(srv.db, secret), tl_file_has(wal, secret), still);
    cr_assert_eq(tl_stop(&srv), 0);
}

/*
 * Scenario 3: recalled content survived a crash in the WAL. The "scrub
 * pending" state lived only in memory: recall, kill -9 before the scrub
 * ran, restart, and the recalled bytes stayed in gim.db-wal (30 s later,
 * and until the next recall). A reader held open across the recall makes
 * "before the scrub ran" certain instead of a race with a 200 ms timer.
 */
Test(scrub_it, a_recall_cut_short_by_kill9_is_scrubbed_after_the_restart, .fini = teardown,
     .timeout = 90)
{
    struct client_conn a, b;
    char secret[64];
    srand((unsigned)time(NULL) ^ (unsigned)getpid() ^ 0x5a5a);
    make_secret(secret, sizeof secret, "CRASH");
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 101, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 201, "gwB"), 0);
    int64_t seq = send_text(&a, 2, secret, 1, NULL);
    cr_assert(on_disk(secret), "the text must be on disk before the recall");

    sqlite3 *reader = open_reader();
    recall(&a, seq);
    tl_kill9(&srv);
    close_reader(reader); /* no checkpoint on close: the files stay as the crash left them */
    cr_assert(on_disk(secret), "the crash must leave the text on disk (else this proves nothing)");
    cr_assert(tl_file_has(wal, secret), "... in the WAL");

    tl_restart(&srv);
    cr_assert(gone_within(secret, 5000),
              "recalled text still on disk 5 s after the restart: db=%d wal=%d",
              tl_file_has(srv.db, secret), tl_file_has(wal, secret));
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message WHERE status = 2 AND "
                                      "content IS NULL"),
                 1, "the recall itself was durable");
    cr_assert_eq(tl_stop(&srv), 0);
}

/*
 * Scenario 3 as first seen: recall, kill -9 at once (no reader), restart.
 * Racy on the old code (its scrub ran within ~200 ms), kept because it is
 * the operator's case; the test above is the deterministic one.
 */
Test(scrub_it, a_recall_then_kill9_at_once_leaves_nothing_after_the_restart, .fini = teardown,
     .timeout = 90)
{
    struct client_conn a, b;
    char secret[64];
    srand((unsigned)time(NULL) ^ (unsigned)getpid() ^ 0xa5a5);
    make_secret(secret, sizeof secret, "KILL");
    start();
    cr_assert_eq(tl_signin(cli, &a, 1, 101, "gwA"), 0);
    cr_assert_eq(tl_signin(cli, &b, 2, 201, "gwB"), 0);
    int64_t seq = send_text(&a, 2, secret, 1, NULL);
    cr_assert(on_disk(secret));
    recall(&a, seq);
    tl_kill9(&srv);
    tl_restart(&srv);
    cr_assert(gone_within(secret, 5000),
              "recalled text still on disk 5 s after the restart: db=%d wal=%d",
              tl_file_has(srv.db, secret), tl_file_has(wal, secret));
    cr_assert_eq(tl_stop(&srv), 0);
}
