/*
 * Crash consistency: the real binary, a file database (synchronous: full),
 * several client threads sending, acking and recalling, and kill -9 at random
 * moments. Whatever a client was told succeeded must be in the database after
 * the crash, whole and once; whatever it was not told may or may not be there,
 * but never in part.
 *
 * Each thread is one device of its own user and sends 1:1 text messages to
 * the other threads' users with unique request_ids, so a send retried after a
 * kill (gimclient resends the same bytes) is answered from the idempotency
 * record rather than stored again. Clients never sign in again after a
 * restart: sessions must survive it (the device table is reloaded).
 *
 * After the last kill the database is opened directly (SQLite's own WAL
 * recovery, not gim-logic's start-up) and checked: every acknowledged send is
 * at the replied seq of the sender's inbox and in the receiver's, with its
 * content (or erased, if its recall was acknowledged); every inbox is seqs
 * 1..N with user_last_seq = N; no send is stored twice; every message has exactly
 * its inbox copies; every recall left exactly one notice per copy; acks are
 * durable; PRAGMA integrity_check is ok.
 *
 * On PostgreSQL (GIM_TEST_BACKEND=postgres, ctest's test_crash_it_pg) the same
 * run kills gim-logic, not the database server, and the same checks run on the
 * service's database over a connection of the test's own; what is about
 * SQLite's files (integrity_check, the recalled bytes in gim.db and its WAL)
 * is left out. The server must flush every commit (fsync and
 * synchronous_commit on, checked): then an acknowledged send is as durable as
 * on SQLite with synchronous: full. Recalls answer EC_UNAVAILABLE there until
 * the backend serves them, and the recall checks find none.
 *
 * GIM_CRASH_KILLS (default 5) sets the number of kill -9 cycles; the long mode
 * (GIM_CRASH_KILLS=100) is described in docs/reliability.md. GIM_CRASH_SEED
 * replays a run's random choices (the seed is printed).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define NTHREADS          4
#define USER_BASE         10  /* thread i is user USER_BASE + i ... */
#define DEVICE_BASE       100 /* ... on device DEVICE_BASE + i */
#define IDLE_DEVICE       199 /* signed in before the first kill, used only after the last */
#define GATEWAY           "gw-crash"
#define CLIENT_TIMEOUT_MS 1000 /* short: a request lost in a kill is resent soon */
#define CLIENT_ATTEMPTS   30   /* ... for up to 30 s, longer than any restart */
#define CONTENT_MAX       64
#define RECALL_RECENT     16 /* recalls pick among a thread's last sends: inside the window */

struct sent {
    int64_t request_id;
    int64_t to;  /* receiver user */
    int64_t seq; /* replied seq in the sender's inbox */
    uint8_t content[CONTENT_MAX];
    size_t content_len;
    bool recall_ok;    /* a recall of it was acknowledged */
    bool recall_tried; /* a recall was sent (maybe applied, maybe not) */
};

struct worker {
    int idx;
    int64_t user, device;
    const char *url;
    unsigned seed;
    pthread_t thread;
    struct sent *sends; /* acknowledged sends */
    size_t n_sends, cap;
    size_t n_unknown;   /* sends that got no reply or EC_UNAVAILABLE: may or may not be stored */
    int64_t max_ack_ok; /* highest device_ack acknowledged */
    int n_acks, n_recalls;
    int unauth;     /* EC_UNAUTHENTICATED replies: sessions did not survive */
    int unexpected; /* any other code that must not happen */
    char unexpected_msg[256];
};

static struct tl_server srv;
static atomic_bool stop_workers;

static void setup(void)
{
    /* The long mode runs for minutes: recalls of its recent sends must stay in the window. */
    tl_start(&srv, "recall: {window_seconds: 3600}");
}

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(crash, .init = setup, .fini = teardown);

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return def;
    long v = strtol(s, NULL, 10);
    return v < lo ? lo : v > hi ? hi : (int)v;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* testlib writes synchronous: normal; this test is about synchronous: full. */
static void use_synchronous_full(struct tl_server *s)
{
    FILE *f = fopen(s->config, "r");
    cr_assert_not_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strstr(buf, "synchronous: normal");
    cr_assert_not_null(p, "testlib's config changed: no 'synchronous: normal' in %s", s->config);
    f = fopen(s->config, "w");
    cr_assert_not_null(f);
    fprintf(f, "%.*ssynchronous: full%s", (int)(p - buf), buf, p + strlen("synchronous: normal"));
    fclose(f);
}

static void note_unexpected(struct worker *w, const char *what, const Pb__Output *out)
{
    if (w->unexpected++ == 0)
        snprintf(w->unexpected_msg, sizeof w->unexpected_msg, "%s: code %d (%s)", what, out->code,
                 out->message ? out->message : "");
}

static void do_send(struct worker *w, struct gim_client *c, const struct client_conn *conn,
                    int64_t rid)
{
    int64_t to = USER_BASE + (w->idx + 1 + (int)(rand_r(&w->seed) % (NTHREADS - 1))) % NTHREADS;
    char text[48];
    snprintf(text, sizeof text, "crash t%d r%lld x%u", w->idx, (long long)rid,
             (unsigned)rand_r(&w->seed));
    Pb__Text t = PB__TEXT__INIT;
    t.text = text;
    uint8_t content[CONTENT_MAX];
    size_t clen = pb__text__pack(&t, content);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = clen;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;

    Pb__Output *out = NULL;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base, &out) != GIM_OK) {
        w->n_unknown++;
        return;
    }
    if (out->code == PB__ERROR_CODE__EC_OK) {
        Pb__MessageSend *reply = pb__message_send__unpack(NULL, out->data.len, out->data.data);
        if (!reply || !reply->message || reply->message->seq <= 0) {
            note_unexpected(w, "send reply without a seq", out);
        } else {
            if (w->n_sends == w->cap) {
                w->cap = w->cap ? 2 * w->cap : 256;
                w->sends = realloc(w->sends, w->cap * sizeof *w->sends);
                cr_assert_not_null(w->sends);
            }
            struct sent *s = &w->sends[w->n_sends++];
            *s = (struct sent){.request_id = rid, .to = to, .seq = reply->message->seq};
            memcpy(s->content, content, clen);
            s->content_len = clen;
        }
        if (reply)
            pb__message_send__free_unpacked(reply, NULL);
    } else if (out->code == PB__ERROR_CODE__EC_UNAVAILABLE) {
        w->n_unknown++;
    } else if (out->code == PB__ERROR_CODE__EC_UNAUTHENTICATED) {
        w->unauth++;
        w->n_unknown++;
    } else {
        w->n_unknown++;
        note_unexpected(w, "send", out);
    }
    pb__output__free_unpacked(out, NULL);
}

static void do_ack(struct worker *w, struct gim_client *c, const struct client_conn *conn,
                   int64_t rid)
{
    if (w->n_sends == 0)
        return;
    /* The newest acknowledged seq of our own inbox: never above the user's highest. */
    int64_t ack = w->sends[w->n_sends - 1].seq;
    Pb__MessageACK in = PB__MESSAGE_ACK__INIT;
    in.device_ack = ack;
    in.receive_time = (int64_t)time(NULL) * 1000;
    Pb__Output *out = NULL;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, rid, &in.base, &out) != GIM_OK)
        return;
    if (out->code == PB__ERROR_CODE__EC_OK) {
        w->n_acks++;
        if (ack > w->max_ack_ok)
            w->max_ack_ok = ack;
    } else if (out->code == PB__ERROR_CODE__EC_UNAUTHENTICATED) {
        w->unauth++;
    } else if (out->code != PB__ERROR_CODE__EC_UNAVAILABLE) {
        note_unexpected(w, "ack", out);
    }
    pb__output__free_unpacked(out, NULL);
}

static void do_recall(struct worker *w, struct gim_client *c, const struct client_conn *conn,
                      int64_t rid)
{
    if (w->n_sends == 0)
        return;
    size_t recent = w->n_sends < RECALL_RECENT ? w->n_sends : RECALL_RECENT;
    struct sent *s = &w->sends[w->n_sends - 1 - rand_r(&w->seed) % recent];
    Pb__RecallInput in = PB__RECALL_INPUT__INIT;
    in.seq = s->seq;
    s->recall_tried = true;
    Pb__Output *out = NULL;
    if (client_request(c, conn, PB__PACKAGE_TYPE__PT_RECALL, rid, &in.base, &out) != GIM_OK)
        return;
    if (out->code == PB__ERROR_CODE__EC_OK) {
        /* Also the answer to recalling it again: it stays recalled. */
        s->recall_ok = true;
        w->n_recalls++;
    } else if (out->code == PB__ERROR_CODE__EC_UNAUTHENTICATED) {
        w->unauth++;
    } else if (out->code != PB__ERROR_CODE__EC_UNAVAILABLE) {
        note_unexpected(w, "recall", out);
    }
    pb__output__free_unpacked(out, NULL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct gim_client *c = NULL;
    if (client_open(&c, w->url, CLIENT_TIMEOUT_MS, CLIENT_ATTEMPTS) != GIM_OK) {
        w->unexpected++;
        snprintf(w->unexpected_msg, sizeof w->unexpected_msg, "client_open failed");
        return NULL;
    }
    struct client_conn conn = {
        .user_id = w->user, .device_id = w->device, .gateway_id = GATEWAY, .client_addr = "t"};
    /* request_ids are unique per device for the whole run: 1, 2, 3... */
    for (int64_t rid = 1; !atomic_load(&stop_workers); rid++) {
        unsigned op = (unsigned)rand_r(&w->seed) % 10;
        if (op == 0)
            do_ack(w, c, &conn, rid);
        else if (op == 1)
            do_recall(w, c, &conn, rid);
        else
            do_send(w, c, &conn, rid);
    }
    client_close(c);
    return NULL;
}

/* --- verification, on the database itself ---------------------------------------------- */

/*
 * The database under check: the SQLite file itself (SQLite's own recovery,
 * not gim-logic's start-up), or, with GIM_TEST_BACKEND=postgres, the
 * service's PostgreSQL database on a connection of the test's own. The
 * statements are written once with SQLite's ?N parameters; on PostgreSQL
 * they run as $N.
 */
struct vdb {
    sqlite3 *lite;
    PGconn *pg;
};

/* One query's rows, either backend: vres_open, vres_next until false, vres_close. */
struct vres {
    sqlite3_stmt *st;
    PGresult *r;
    int row, rows;
    unsigned char *blob; /* PQunescapeBytea's copy of the current row's blob */
};

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    return st;
}

/* Runs sql with up to three int64 parameters (?1..?3). */
static void vres_open(const struct vdb *db, struct vres *q, const char *sql, int n, int64_t a,
                      int64_t b, int64_t c)
{
    int64_t args[3] = {a, b, c};
    memset(q, 0, sizeof *q);
    if (db->pg) {
        char text[3][24];
        const char *vals[3];
        for (int i = 0; i < n; i++) {
            snprintf(text[i], sizeof text[i], "%lld", (long long)args[i]);
            vals[i] = text[i];
        }
        char *pgsql = strdup(sql);
        cr_assert_not_null(pgsql);
        for (char *p = pgsql; *p; p++)
            if (*p == '?')
                *p = '$';
        q->r = PQexecParams(db->pg, pgsql, n, NULL, vals, NULL, NULL, 0);
        free(pgsql);
        cr_assert_eq(PQresultStatus(q->r), PGRES_TUPLES_OK, "%s: %s", sql,
                     PQresultErrorMessage(q->r));
        q->rows = PQntuples(q->r);
        q->row = -1;
        return;
    }
    q->st = prep(db->lite, sql);
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(q->st, i + 1, args[i]);
}

static bool vres_next(struct vres *q)
{
    if (q->blob)
        PQfreemem(q->blob);
    q->blob = NULL;
    if (q->r)
        return ++q->row < q->rows;
    return sqlite3_step(q->st) == SQLITE_ROW;
}

static bool vres_null(const struct vres *q, int col)
{
    if (q->r)
        return PQgetisnull(q->r, q->row, col);
    return sqlite3_column_type(q->st, col) == SQLITE_NULL;
}

static int64_t vres_int(const struct vres *q, int col)
{
    if (q->r) {
        const char *t = PQgetvalue(q->r, q->row, col);
        return strcmp(t, "t") == 0 ? 1 : strcmp(t, "f") == 0 ? 0 : strtoll(t, NULL, 10);
    }
    return sqlite3_column_int64(q->st, col);
}

/* The blob in col (valid until the next vres_next or vres_close). */
static const uint8_t *vres_blob(struct vres *q, int col, size_t *len)
{
    if (q->r) {
        q->blob = PQunescapeBytea((const unsigned char *)PQgetvalue(q->r, q->row, col), len);
        cr_assert_not_null(q->blob);
        return q->blob;
    }
    *len = (size_t)sqlite3_column_bytes(q->st, col);
    return sqlite3_column_blob(q->st, col);
}

static void vres_close(struct vres *q)
{
    if (q->blob)
        PQfreemem(q->blob);
    PQclear(q->r);
    sqlite3_finalize(q->st);
    memset(q, 0, sizeof *q);
}

/* The first column of the first row of sql with up to three int64 parameters; def if no row. */
static int64_t q_int(const struct vdb *db, const char *sql, int64_t def, int n, int64_t a,
                     int64_t b, int64_t c)
{
    struct vres q;
    vres_open(db, &q, sql, n, a, b, c);
    int64_t v = def;
    if (vres_next(&q) && !vres_null(&q, 0))
        v = vres_int(&q, 0);
    vres_close(&q);
    return v;
}

static const char SQL_IDEM_MESSAGE[] =
    "SELECT message_id FROM idempotency WHERE device_id = ?1 AND request_id = ?2";
static const char SQL_MESSAGE[] =
    "SELECT sender_id, sender_device_id, receiver_type, receiver_id, sender_seq, receiver_seq, "
    "content, status FROM message WHERE id = ?1";
static const char SQL_INBOX_AT[] = "SELECT message_id FROM inbox WHERE user_id = ?1 AND seq = ?2";

/* Every acknowledged send of w is stored once, where its reply said, with its content. */
static void check_sends(const struct vdb *db, const struct worker *w)
{
    for (size_t i = 0; i < w->n_sends; i++) {
        const struct sent *s = &w->sends[i];
        int64_t mid = q_int(db, SQL_IDEM_MESSAGE, -1, 2, w->device, s->request_id, 0);
        cr_assert_gt(mid, 0, "device %lld request %lld was acknowledged (seq %lld) but is lost",
                     (long long)w->device, (long long)s->request_id, (long long)s->seq);
        struct vres st;
        vres_open(db, &st, SQL_MESSAGE, 1, mid, 0, 0);
        cr_assert(vres_next(&st), "message %lld of an acknowledged send is gone", (long long)mid);
        cr_assert_eq(vres_int(&st, 0), w->user);
        cr_assert_eq(vres_int(&st, 1), w->device);
        cr_assert_eq(vres_int(&st, 2), PB__RECEIVER_TYPE__RT_USER);
        cr_assert_eq(vres_int(&st, 3), s->to);
        cr_assert_eq(vres_int(&st, 4), s->seq, "message %lld: sender_seq %lld, replied %lld",
                     (long long)mid, (long long)vres_int(&st, 4), (long long)s->seq);
        int64_t receiver_seq = vres_int(&st, 5);
        bool erased = vres_null(&st, 6);
        int64_t status = vres_int(&st, 7);
        if (s->recall_ok) {
            cr_assert(erased && status == PB__MESSAGE_STATUS__MS_RECALL,
                      "message %lld: recall acknowledged but content kept", (long long)mid);
        } else if (!erased) {
            cr_assert_eq(status, PB__MESSAGE_STATUS__MS_NORMAL);
            size_t len = 0;
            const uint8_t *content = vres_blob(&st, 6, &len);
            cr_assert_eq(len, s->content_len, "message %lld: content length differs",
                         (long long)mid);
            cr_assert_eq(memcmp(content, s->content, s->content_len), 0,
                         "message %lld: content differs", (long long)mid);
        } else {
            cr_assert(s->recall_tried, "message %lld erased though never recalled", (long long)mid);
        }
        vres_close(&st);
        cr_assert_eq(q_int(db, SQL_INBOX_AT, -1, 2, w->user, s->seq, 0), mid,
                     "user %lld seq %lld is not message %lld", (long long)w->user,
                     (long long)s->seq, (long long)mid);
        cr_assert_gt(receiver_seq, 0);
        cr_assert_eq(q_int(db, SQL_INBOX_AT, -1, 2, s->to, receiver_seq, 0), mid,
                     "receiver %lld seq %lld is not message %lld", (long long)s->to,
                     (long long)receiver_seq, (long long)mid);
    }
}

static const char SQL_INBOX_SHAPE[] =
    "SELECT u.user_id, u.seq, count(i.seq), coalesce(min(i.seq), 0), coalesce(max(i.seq), 0) "
    "FROM user_last_seq u LEFT JOIN inbox i ON i.user_id = u.user_id GROUP BY u.user_id, u.seq";

/* Every inbox is exactly seqs 1..N, N = its counter (user_last_seq): no gap, no repeat, no lost
 * counter. */
static void check_inboxes(const struct vdb *db)
{
    struct vres st;
    vres_open(db, &st, SQL_INBOX_SHAPE, 0, 0, 0, 0);
    int users = 0;
    while (vres_next(&st)) {
        int64_t user = vres_int(&st, 0), n = vres_int(&st, 1);
        users++;
        cr_assert_eq(vres_int(&st, 2), n, "user %lld: %lld entries, user_last_seq %lld",
                     (long long)user, (long long)vres_int(&st, 2), (long long)n);
        cr_assert_eq(vres_int(&st, 4), n, "user %lld: max seq %lld, user_last_seq %lld",
                     (long long)user, (long long)vres_int(&st, 4), (long long)n);
        if (n > 0)
            cr_assert_eq(vres_int(&st, 3), 1, "user %lld: seqs start at %lld", (long long)user,
                         (long long)vres_int(&st, 3));
    }
    vres_close(&st);
    cr_assert_eq(users, NTHREADS, "every test user has a seq counter");
    cr_assert_eq(q_int(db,
                       "SELECT count(*) FROM (SELECT DISTINCT user_id FROM inbox) d "
                       "WHERE user_id NOT IN (SELECT user_id FROM user_last_seq)",
                       -1, 0, 0, 0, 0),
                 0, "an inbox without a seq counter");
}

/* Each message is in exactly the inboxes it belongs to, once; nothing points nowhere. */
static void check_copies(const struct vdb *db)
{
    cr_assert_eq(
        q_int(db, "SELECT count(*) FROM inbox WHERE message_id NOT IN (SELECT id FROM message)", -1,
              0, 0, 0, 0),
        0, "inbox entries point at missing messages");
    /* 1:1 texts between different users: two copies; recall notices: one. */
    cr_assert_eq(q_int(db,
                       "SELECT count(*) FROM message m LEFT JOIN (SELECT message_id, count(*) AS n "
                       "FROM inbox GROUP BY message_id) c ON c.message_id = m.id "
                       "WHERE coalesce(c.n, 0) != CASE WHEN m.message_type = ?1 THEN 2 ELSE 1 END",
                       -1, 1, PB__MESSAGE_TYPE__MT_TEXT, 0, 0),
                 0, "a message without exactly its inbox copies");
    cr_assert_eq(q_int(db,
                       "SELECT count(*) FROM message m WHERE m.message_type = ?1 AND ("
                       "m.sender_id = m.receiver_id OR "
                       "NOT EXISTS (SELECT 1 FROM inbox WHERE user_id = m.sender_id AND "
                       "seq = m.sender_seq AND message_id = m.id) OR "
                       "NOT EXISTS (SELECT 1 FROM inbox WHERE user_id = m.receiver_id AND "
                       "seq = m.receiver_seq AND message_id = m.id))",
                       -1, 1, PB__MESSAGE_TYPE__MT_TEXT, 0, 0),
                 0, "a text whose copies are not at its sender_seq/receiver_seq");
    /* Erased content and the recalled status go together (one statement). */
    cr_assert_eq(q_int(db, "SELECT count(*) FROM message WHERE (status = ?1) != (content IS NULL)",
                       -1, 1, PB__MESSAGE_STATUS__MS_RECALL, 0, 0),
                 0, "a message half recalled");
}

/* No send stored twice: one message per idempotency record, one record per text. */
static void check_once(const struct vdb *db, const struct worker *ws)
{
    int64_t texts = q_int(db, "SELECT count(*) FROM message WHERE message_type = ?1", -1, 1,
                          PB__MESSAGE_TYPE__MT_TEXT, 0, 0);
    int64_t records = q_int(db, "SELECT count(*) FROM idempotency", -1, 0, 0, 0, 0);
    int64_t distinct =
        q_int(db, "SELECT count(DISTINCT message_id) FROM idempotency", -1, 0, 0, 0, 0);
    cr_assert_eq(texts, records, "%lld texts stored for %lld requests", (long long)texts,
                 (long long)records);
    cr_assert_eq(distinct, records, "two requests share one message");
    cr_assert_eq(
        q_int(db,
              "SELECT count(*) FROM (SELECT content FROM message WHERE content IS NOT NULL "
              "AND message_type = ?1 GROUP BY content HAVING count(*) > 1) d",
              -1, 1, PB__MESSAGE_TYPE__MT_TEXT, 0, 0),
        0, "the same content stored twice");
    for (int i = 0; i < NTHREADS; i++) {
        int64_t n = q_int(db, "SELECT count(*) FROM idempotency WHERE device_id = ?1", -1, 1,
                          ws[i].device, 0, 0);
        cr_assert(n >= (int64_t)ws[i].n_sends && n <= (int64_t)(ws[i].n_sends + ws[i].n_unknown),
                  "device %lld: %lld stored sends, %zu acknowledged, %zu unanswered",
                  (long long)ws[i].device, (long long)n, ws[i].n_sends, ws[i].n_unknown);
    }
}

static const char SQL_NOTICES[] = "SELECT i.user_id, m.content FROM inbox i JOIN message m ON "
                                  "m.id = i.message_id WHERE m.message_type = ?1";
static const char SQL_RECALLED_AT[] = "SELECT m.id FROM inbox i JOIN message m ON m.id = "
                                      "i.message_id WHERE i.user_id = ?1 AND i.seq = ?2 AND "
                                      "m.status = ?3";

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A recall is whole: each recalled message has one notice in each inbox holding a copy. */
static void check_recalls(const struct vdb *db)
{
    int64_t recalled = q_int(db, "SELECT count(*) FROM message WHERE status = ?1", -1, 1,
                             PB__MESSAGE_STATUS__MS_RECALL, 0, 0);
    int64_t *ids = calloc((size_t)recalled * 2 + 1, sizeof *ids);
    size_t n = 0;
    cr_assert_not_null(ids);
    struct vres st;
    vres_open(db, &st, SQL_NOTICES, 1, PB__MESSAGE_TYPE__MT_COMMAND, 0, 0);
    while (vres_next(&st)) {
        int64_t user = vres_int(&st, 0);
        size_t len = 0;
        const uint8_t *notice = vres_blob(&st, 1, &len);
        Pb__Command *cmd = pb__command__unpack(NULL, len, notice);
        cr_assert_not_null(cmd, "a notice that is not a pb.Command");
        cr_assert_eq(cmd->code, 1, "a command that is not a recall notice");
        Pb__RecallInput *ri = pb__recall_input__unpack(NULL, cmd->data.len, cmd->data.data);
        cr_assert_not_null(ri);
        int64_t mid =
            q_int(db, SQL_RECALLED_AT, -1, 3, user, ri->seq, PB__MESSAGE_STATUS__MS_RECALL);
        cr_assert_gt(mid, 0, "user %lld: a notice for seq %lld, which is not a recalled message",
                     (long long)user, (long long)ri->seq);
        cr_assert_lt(n, (size_t)recalled * 2, "more notices than copies of recalled messages");
        ids[n++] = mid;
        pb__recall_input__free_unpacked(ri, NULL);
        pb__command__free_unpacked(cmd, NULL);
    }
    vres_close(&st);
    cr_assert_eq(n, (size_t)recalled * 2, "%zu notices for %lld recalled messages", n,
                 (long long)recalled);
    qsort(ids, n, sizeof *ids, cmp_i64);
    for (size_t i = 0; i < n; i += 2)
        cr_assert(ids[i] == ids[i + 1] && (i + 2 >= n || ids[i + 2] != ids[i]),
                  "message %lld has not exactly two notices", (long long)ids[i]);
    free(ids);
}

static void check_acks(const struct vdb *db, const struct worker *ws)
{
    for (int i = 0; i < NTHREADS; i++) {
        int64_t ack =
            q_int(db, "SELECT ack_seq FROM device WHERE device_id = ?1", -1, 1, ws[i].device, 0, 0);
        int64_t last =
            q_int(db, "SELECT seq FROM user_last_seq WHERE user_id = ?1", 0, 1, ws[i].user, 0, 0);
        cr_assert_geq(ack, ws[i].max_ack_ok, "device %lld: acknowledged ack %lld lost (%lld)",
                      (long long)ws[i].device, (long long)ws[i].max_ack_ok, (long long)ack);
        cr_assert_leq(ack, last);
    }
}

static void integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *st = prep(db, "PRAGMA integrity_check");
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* The whole file at path (malloc'ed, *len bytes); NULL when it does not exist. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    *len = 0;
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n;
    uint8_t *buf = malloc(cap);
    cr_assert_not_null(buf);
    while ((n = fread(buf + *len, 1, cap - *len, f)) > 0) {
        *len += n;
        if (*len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    fclose(f);
    return buf;
}

/* How many acknowledged recalls' contents (of ws[0..n)) are still in the database or its WAL. */
static size_t recalled_on_disk(const struct worker *ws, int n)
{
    char wal[256];
    size_t dlen = 0, wlen = 0, found = 0;
    snprintf(wal, sizeof wal, "%s-wal", srv.db);
    uint8_t *d = slurp(srv.db, &dlen), *w = slurp(wal, &wlen);
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < ws[i].n_sends; k++) {
            const struct sent *s = &ws[i].sends[k];
            if (s->recall_ok && ((d && memmem(d, dlen, s->content, s->content_len)) ||
                                 (w && memmem(w, wlen, s->content, s->content_len))))
                found++;
        }
    free(d);
    free(w);
    return found;
}

Test(crash, kill9_keeps_every_acknowledged_write, .timeout = 900)
{
    int kills = env_int("GIM_CRASH_KILLS", 5, 1, 100000);
    unsigned seed =
        (unsigned)env_int("GIM_CRASH_SEED", (int)(time(NULL) ^ getpid()), 0, 0x7fffffff);
    fprintf(stderr, "test_crash_it: %d kills, GIM_CRASH_SEED=%u\n", kills, seed);
    srand(seed);

    tl_stop(&srv);
    use_synchronous_full(&srv);
    tl_restart(&srv);
    /*
     * On PostgreSQL what synchronous: full is for SQLite is the server's: a commit is
     * acknowledged after its WAL is flushed. The tests' server (tools/pgtmp.sh) must run so,
     * else "acknowledged" would promise less here than on SQLite.
     */
    if (tl_pg())
        cr_assert_eq(tl_query_int(srv.db, "SELECT current_setting('fsync') = 'on' AND "
                                          "current_setting('synchronous_commit') = 'on'"),
                     1, "the test server must run with fsync and synchronous_commit on");

    /* Sign everyone in once, before any kill; no one signs in again. */
    struct gim_client *c = tl_client(&srv);
    struct client_conn idle;
    for (int i = 0; i < NTHREADS; i++) {
        struct client_conn conn;
        cr_assert_eq(tl_signin(c, &conn, USER_BASE + i, DEVICE_BASE + i, GATEWAY), 0);
    }
    cr_assert_eq(tl_signin(c, &idle, USER_BASE, IDLE_DEVICE, GATEWAY), 0);
    client_close(c);

    static struct worker ws[NTHREADS];
    atomic_store(&stop_workers, false);
    for (int i = 0; i < NTHREADS; i++) {
        ws[i] = (struct worker){.idx = i,
                                .user = USER_BASE + i,
                                .device = DEVICE_BASE + i,
                                .url = srv.url,
                                .seed = seed + 7919u * (unsigned)i};
        cr_assert_eq(pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]), 0);
    }
    for (int k = 0; k < kills; k++) {
        sleep_ms(100 + rand() % 501);
        tl_kill9(&srv);
        tl_restart(&srv);
    }
    /* Let the clients get through the last restart before they stop. */
    sleep_ms(300);
    atomic_store(&stop_workers, true);
    size_t ok = 0, unknown = 0;
    int acks = 0, recalls = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(ws[i].thread, NULL);
        cr_assert_eq(ws[i].unexpected, 0, "thread %d: %d unexpected replies, first: %s", i,
                     ws[i].unexpected, ws[i].unexpected_msg);
        cr_assert_eq(ws[i].unauth, 0, "thread %d: %d requests unauthenticated after a restart", i,
                     ws[i].unauth);
        cr_assert_gt(ws[i].n_sends, 0, "thread %d sent nothing successfully", i);
        ok += ws[i].n_sends;
        unknown += ws[i].n_unknown;
        acks += ws[i].n_acks;
        recalls += ws[i].n_recalls;
    }
    fprintf(stderr, "test_crash_it: %zu sends acknowledged, %zu unanswered, %d acks, %d recalls\n",
            ok, unknown, acks, recalls);

    /* A session from before the first kill still works, without signing in again. */
    c = tl_client(&srv);
    cr_assert_eq(tl_code(c, &idle, PB__PACKAGE_TYPE__PT_HEARTBEAT, 1, NULL), 0);
    client_close(c);

    /* The final state is the one right after a crash. */
    tl_kill9(&srv);
    struct vdb db = {0};
    if (tl_pg()) {
        db.pg = PQconnectdb(srv.pg_url);
        cr_assert_eq(PQstatus(db.pg), CONNECTION_OK, "%s", PQerrorMessage(db.pg));
    } else {
        cr_assert_eq(sqlite3_open_v2(srv.db, &db.lite, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        /* Closing must not checkpoint: gim-logic's own start-up must scrub the WAL (below). */
        cr_assert_eq(sqlite3_db_config(db.lite, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL),
                     SQLITE_OK);
        sqlite3_busy_timeout(db.lite, 5000);
        integrity_ok(db.lite);
    }
    for (int i = 0; i < NTHREADS; i++)
        check_sends(&db, &ws[i]);
    check_inboxes(&db);
    check_copies(&db);
    check_once(&db, ws);
    check_recalls(&db);
    check_acks(&db, ws);
    if (db.pg)
        PQfinish(db.pg);
    sqlite3_close(db.lite);
    if (tl_pg()) {
        /* The rest is about SQLite's files (gim.db, gim.db-wal); none on PostgreSQL. */
        for (int i = 0; i < NTHREADS; i++)
            free(ws[i].sends);
        return;
    }

    /*
     * Then gim-logic itself starts on it. Issue 11, scenario 3: a kill
     * between a recall's commit and its WAL scrub left the recalled bytes in
     * gim.db-wal across restarts. So the idle device sends, recalls at once,
     * and the service is killed right after the recall's reply; within a
     * few seconds of the next start, no acknowledged recall's content may be
     * left in the raw bytes of gim.db or gim.db-wal.
     */
    tl_restart(&srv);
    struct worker last = {.idx = 0, .user = USER_BASE, .device = IDLE_DEVICE, .seed = 11};
    c = tl_client(&srv);
    do_send(&last, c, &idle, 1000001);
    cr_assert_eq(last.n_sends, 1, "the last send: %s", last.unexpected_msg);
    do_recall(&last, c, &idle, 1000002);
    cr_assert(last.sends[0].recall_ok, "the last recall: %s", last.unexpected_msg);
    tl_kill9(&srv);
    client_close(c);
    tl_restart(&srv);
    size_t left = 0;
    for (int tries = 0; tries < 50; tries++) {
        left = recalled_on_disk(ws, NTHREADS) + recalled_on_disk(&last, 1);
        if (left == 0)
            break;
        sleep_ms(100);
    }
    cr_assert_eq(left, 0, "%zu recalled contents still in %s or its WAL 5 s after the restart",
                 left, srv.db);
    for (int i = 0; i < NTHREADS; i++)
        free(ws[i].sends);
    free(last.sends);
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}
