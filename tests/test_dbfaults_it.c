/*
 * Database faults against the real binary and a real SQLite file:
 *
 * - another process (the sqlite3 CLI) holds the write lock for longer than
 *   database.busy_timeout_ms: writes answer EC_UNAVAILABLE and leave
 *   nothing, reads go on, and once the lock is gone the same requests
 *   (same request_ids) succeed, once;
 * - the database is full (database.max_pages): sends answer EC_UNAVAILABLE,
 *   the file stays consistent (integrity_check, every message with all its
 *   inbox copies), the service restarts while full, and with a larger limit
 *   the failed request succeeds;
 * - the database cannot be opened at all: start-up ends with exit status 1
 *   and one clear line on stderr naming the path.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define EC_OK          PB__ERROR_CODE__EC_OK
#define EC_UNAVAILABLE PB__ERROR_CODE__EC_UNAVAILABLE
#define BUSY_MS        300

static struct tl_server srv;
static struct gim_client *cli;

static void teardown(void)
{
    if (cli)
        client_close(cli);
    cli = NULL;
    tl_cleanup(&srv);
}

TestSuite(dbfaults, .fini = teardown, .timeout = 120);

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The first column of the first row as text ("" when none). */
static void query_text(const char *sql, char *out, size_t len)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_open_v2(srv.db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    cr_assert_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(h));
    out[0] = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
}

static int64_t qi(const char *fmt, long long arg)
{
    char sql[512];
    snprintf(sql, sizeof sql, fmt, arg);
    return tl_query_int(srv.db, sql);
}

/* A 1:1 text message of `size` bytes; returns the code and, on success, the sender's seq. */
static int send_text(const struct client_conn *from, int64_t to, int64_t rid, size_t size,
                     int64_t *seq)
{
    static uint8_t content[8192];
    memset(content, 'c', sizeof content);
    cr_assert_leq(size, sizeof content);
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = to;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = size;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    Pb__Output *out = tl_call(cli, from, PB__PACKAGE_TYPE__PT_MESSAGE, rid, &ms.base);
    int code = out->code;
    if (code != EC_OK)
        cr_assert(out->message && out->message[0], "an error carries a message");
    if (code == EC_OK && seq) {
        Pb__MessageSend *r = pb__message_send__unpack(NULL, out->data.len, out->data.data);
        cr_assert(r && r->message, "a send's reply holds the message");
        *seq = r->message->seq;
        pb__message_send__free_unpacked(r, NULL);
    }
    pb__output__free_unpacked(out, NULL);
    return code;
}

/* A sync from seq 0: the code and the number of messages on the page. */
static int sync_count(const struct client_conn *who, size_t *n)
{
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    Pb__Output *out = tl_call(cli, who, PB__PACKAGE_TYPE__PT_SYNC, 0, &in.base);
    int code = out->code;
    *n = 0;
    if (code == EC_OK) {
        Pb__SyncOutput *so = pb__sync_output__unpack(NULL, out->data.len, out->data.data);
        cr_assert_not_null(so);
        *n = so->n_messages;
        pb__sync_output__free_unpacked(so, NULL);
    }
    pb__output__free_unpacked(out, NULL);
    return code;
}

/*
 * Every copy a message should have is in the inbox, every inbox entry has
 * its message, every inbox is seqs 1..N with user_last_seq = N, and every
 * idempotency record names a message.
 */
static void expect_whole(void)
{
    char ok[64];
    query_text("PRAGMA integrity_check", ok, sizeof ok);
    cr_assert_str_eq(ok, "ok");
    cr_assert_eq(
        tl_query_int(srv.db, "SELECT count(*) FROM message m WHERE NOT EXISTS (SELECT 1 FROM inbox "
                             "i WHERE i.user_id = m.sender_id AND i.seq = m.sender_seq AND "
                             "i.message_id = m.id) OR (m.receiver_type = 1 AND NOT EXISTS "
                             "(SELECT 1 FROM inbox i WHERE i.user_id = m.receiver_id AND i.seq = "
                             "m.receiver_seq AND i.message_id = m.id))"),
        0, "a message lacks an inbox copy");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox i WHERE NOT EXISTS "
                                      "(SELECT 1 FROM message m WHERE m.id = i.message_id)"),
                 0, "an inbox entry has no message");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM user_last_seq u WHERE u.seq != (SELECT "
                                      "count(*) FROM inbox i WHERE i.user_id = u.user_id) OR u.seq "
                                      "!= (SELECT coalesce(max(seq), 0) FROM inbox i WHERE "
                                      "i.user_id = u.user_id)"),
                 0, "an inbox has a gap, or its counter is off");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM idempotency d WHERE NOT EXISTS "
                                      "(SELECT 1 FROM message m WHERE m.id = d.message_id)"),
                 0, "an idempotency record names no message");
}

/* Runs the service with these keys in its database mapping, on a database created without. */
static void start_with_database(const char *database_keys, const char *extra_yaml)
{
    tl_start(&srv, NULL);
    cr_assert_eq(tl_stop(&srv), 0);
    tl_reconfigure(&srv, database_keys, extra_yaml);
    tl_restart(&srv);
    cli = tl_client(&srv);
}

/* ---- another process holds the write lock ------------------------------------ */

Test(dbfaults, another_process_holds_the_write_lock)
{
    start_with_database("busy_timeout_ms: 300", NULL);
    struct client_conn a, b, c = {.user_id = 3, .device_id = 31, .gateway_id = "gw"};
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw"), EC_OK);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw"), EC_OK);
    for (int64_t rid = 1; rid <= 3; rid++)
        cr_assert_eq(send_text(&a, 2, rid, 10, NULL), EC_OK);
    int64_t messages = tl_query_int(srv.db, "SELECT count(*) FROM message");
    int64_t inbox = tl_query_int(srv.db, "SELECT count(*) FROM inbox");
    int64_t idem = tl_query_int(srv.db, "SELECT count(*) FROM idempotency");
    int64_t seqs = tl_query_int(srv.db, "SELECT sum(seq) FROM user_last_seq");
    int64_t devices = tl_query_int(srv.db, "SELECT count(*) FROM device");

    FILE *ext = tl_hold_write_lock(srv.db, "IMMEDIATE");
    /* Writes wait busy_timeout_ms, then give up whole. */
    for (int64_t rid = 10; rid < 15; rid++) {
        int64_t t = now_ms();
        cr_assert_eq(send_text(&a, 2, rid, 10, NULL), EC_UNAVAILABLE, "send %lld", (long long)rid);
        cr_assert_geq(now_ms() - t, BUSY_MS - 50, "the writer did not wait for the lock");
    }
    char *tok = tl_token(3, 31, 3600);
    Pb__SignInInput si = PB__SIGN_IN_INPUT__INIT;
    si.user_id = 3;
    si.device_id = 31;
    si.token = tok;
    cr_assert_eq(tl_code(cli, &c, PB__PACKAGE_TYPE__PT_SIGN_IN, 0, &si.base), EC_UNAVAILABLE);
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 3;
    cr_assert_eq(tl_code(cli, &b, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 0, &ack.base), EC_UNAVAILABLE);
    /* Reads do not need the lock. */
    size_t n = 0;
    cr_assert_eq(sync_count(&b, &n), EC_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(tl_code(cli, &a, PB__PACKAGE_TYPE__PT_HEARTBEAT, 0, NULL), EC_OK);
    /* Nothing of the failed requests is anywhere (the CLI's row is not committed yet). */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), messages);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM inbox"), inbox);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM idempotency"), idem);
    cr_assert_eq(tl_query_int(srv.db, "SELECT sum(seq) FROM user_last_seq"), seqs);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device"), devices);
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_seq FROM device WHERE device_id = 21"), 0);

    fprintf(ext, "COMMIT;\n");
    cr_assert_eq(pclose(ext), 0, "the sqlite3 CLI failed");
    cr_assert_not(tl_write_locked(srv.db));

    /* The same requests again: each succeeds, and the seqs continue without a gap. */
    int64_t seq[15];
    for (int64_t rid = 10; rid < 15; rid++) {
        cr_assert_eq(send_text(&a, 2, rid, 10, &seq[rid]), EC_OK);
        cr_assert_eq(seq[rid], 4 + (rid - 10), "send %lld got seq %lld", (long long)rid,
                     (long long)seq[rid]);
    }
    /* And once only: a further retry is answered from the first. */
    for (int64_t rid = 10; rid < 15; rid++) {
        int64_t again = 0;
        cr_assert_eq(send_text(&a, 2, rid, 10, &again), EC_OK);
        cr_assert_eq(again, seq[rid]);
    }
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), messages + 5);
    cr_assert_eq(qi("SELECT max(seq) FROM inbox WHERE user_id = %lld", 2), 8);
    cr_assert_eq(tl_code(cli, &c, PB__PACKAGE_TYPE__PT_SIGN_IN, 0, &si.base), EC_OK);
    cr_assert_eq(tl_code(cli, &b, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, 0, &ack.base), EC_OK);
    cr_assert_eq(tl_query_int(srv.db, "SELECT ack_seq FROM device WHERE device_id = 21"), 3);
    /* The other process's transaction is intact too. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM chat_group WHERE group_id = 900"), 1);
    expect_whole();
    free(tok);
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}

/* ---- a full database ----------------------------------------------------------- */

#define FULL_CONTENT 3000 /* bytes per message: a page or so */
#define FULL_ROOM    24   /* pages the limit leaves above the fresh database */

Test(dbfaults, database_full)
{
    /* The limit leaves a little room above the size of the fresh schema. */
    tl_start(&srv, NULL);
    int64_t pages = tl_query_int(srv.db, "PRAGMA page_count");
    cr_assert_gt(pages, 0);
    cr_assert_eq(tl_stop(&srv), 0);
    char limit[64];
    snprintf(limit, sizeof limit, "max_pages: %lld", (long long)(pages + FULL_ROOM));
    tl_reconfigure(&srv, limit, NULL);
    tl_restart(&srv);
    cli = tl_client(&srv);
    struct client_conn a, b;
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw"), EC_OK);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw"), EC_OK);

    int64_t rid = 0, failed_rid = 0;
    int ok = 0;
    while (!failed_rid) {
        cr_assert_lt(rid, 10 * FULL_ROOM, "the database never filled up");
        int code = send_text(&a, 2, ++rid, FULL_CONTENT, NULL);
        if (code == EC_OK)
            ok++;
        else if (code == EC_UNAVAILABLE)
            failed_rid = rid;
        else
            cr_assert_fail("send %lld: code %d", (long long)rid, code);
    }
    cr_assert_gt(ok, 0, "not one send fitted");
    printf("database_full: %d sends fitted in %lld pages\n", ok, (long long)(pages + FULL_ROOM));
    /* Full: the failed send left nothing, and what is there is whole. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), ok);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM idempotency"), ok);
    cr_assert_eq(qi("SELECT count(*) FROM idempotency WHERE request_id = %lld", failed_rid), 0);
    cr_assert_leq(tl_query_int(srv.db, "PRAGMA page_count"), pages + FULL_ROOM);
    expect_whole();
    /* Reads go on. */
    size_t n = 0;
    cr_assert_eq(sync_count(&b, &n), EC_OK);
    cr_assert_gt(n, 0);
    cr_assert_eq(tl_code(cli, &a, PB__PACKAGE_TYPE__PT_HEARTBEAT, 0, NULL), EC_OK);

    /* A restart with the database still full: it starts, reads, and still refuses sends. */
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    tl_restart(&srv);
    cli = tl_client(&srv);
    cr_assert_eq(sync_count(&b, &n), EC_OK, "sessions and reads survive the restart");
    cr_assert_eq(send_text(&a, 2, failed_rid, FULL_CONTENT, NULL), EC_UNAVAILABLE);
    expect_whole();

    /* More room: the failed request succeeds, once, right after the others. */
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
    snprintf(limit, sizeof limit, "max_pages: %lld", (long long)(pages + 20 * FULL_ROOM));
    tl_reconfigure(&srv, limit, NULL);
    tl_restart(&srv);
    cli = tl_client(&srv);
    int64_t seq = 0, again = 0;
    cr_assert_eq(send_text(&a, 2, failed_rid, FULL_CONTENT, &seq), EC_OK);
    cr_assert_eq(seq, ok + 1);
    cr_assert_eq(send_text(&a, 2, failed_rid, FULL_CONTENT, &again), EC_OK);
    cr_assert_eq(again, seq);
    cr_assert_eq(send_text(&a, 2, failed_rid + 1, FULL_CONTENT, &seq), EC_OK);
    cr_assert_eq(seq, ok + 2);
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), ok + 2);
    expect_whole();
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}

/*
 * Several connections filling the database at once, so that write batches
 * hold several sends when one of them hits the limit: whatever was answered
 * EC_OK is stored, whole, and whatever was answered EC_UNAVAILABLE is not.
 */
#define FILLERS      4
#define FILL_MAX     100 /* sends per filler, at most */
#define FILL_REFUSED 5   /* a filler stops after this many refusals in a row */

struct filler {
    int idx;
    pthread_t thread;
    int64_t rid[FILL_MAX];
    int code[FILL_MAX];
    int64_t seq[FILL_MAX];
    int n;
};

static void *filler_main(void *arg)
{
    struct filler *f = arg;
    struct gim_client *c = NULL;
    struct client_conn a = {.user_id = 1, .device_id = 11, .gateway_id = "gw"};
    static uint8_t content[FULL_CONTENT];
    memset(content, 'f', sizeof content);
    if (client_open(&c, srv.url, 10000, 1) != GIM_OK)
        return NULL;
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = PB__RECEIVER_TYPE__RT_USER;
    m.receiver_id = 2;
    m.message_type = PB__MESSAGE_TYPE__MT_TEXT;
    m.message_content.data = content;
    m.message_content.len = sizeof content;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    for (int refused = 0; f->n < FILL_MAX && refused < FILL_REFUSED; f->n++) {
        int i = f->n;
        Pb__Output *out = NULL;
        f->rid[i] = 1000 * (f->idx + 1) + i;
        f->code[i] = -1;
        if (client_request(c, &a, PB__PACKAGE_TYPE__PT_MESSAGE, f->rid[i], &ms.base, &out) !=
            GIM_OK)
            continue;
        f->code[i] = out->code;
        refused = out->code == EC_UNAVAILABLE ? refused + 1 : 0;
        Pb__MessageSend *r = out->code == EC_OK
                                 ? pb__message_send__unpack(NULL, out->data.len, out->data.data)
                                 : NULL;
        f->seq[i] = r && r->message ? r->message->seq : -1;
        if (r)
            pb__message_send__free_unpacked(r, NULL);
        pb__output__free_unpacked(out, NULL);
    }
    client_close(c);
    return NULL;
}

Test(dbfaults, database_full_under_concurrent_sends)
{
    tl_start(&srv, NULL);
    int64_t pages = tl_query_int(srv.db, "PRAGMA page_count");
    cr_assert_eq(tl_stop(&srv), 0);
    char limit[64];
    snprintf(limit, sizeof limit, "max_pages: %lld", (long long)(pages + 4 * FULL_ROOM));
    tl_reconfigure(&srv, limit, NULL);
    tl_restart(&srv);
    cli = tl_client(&srv);
    struct client_conn a, b;
    cr_assert_eq(tl_signin(cli, &a, 1, 11, "gw"), EC_OK);
    cr_assert_eq(tl_signin(cli, &b, 2, 21, "gw"), EC_OK);

    static struct filler f[FILLERS];
    memset(f, 0, sizeof f);
    for (int i = 0; i < FILLERS; i++) {
        f[i].idx = i;
        cr_assert_eq(pthread_create(&f[i].thread, NULL, filler_main, &f[i]), 0);
    }
    for (int i = 0; i < FILLERS; i++)
        pthread_join(f[i].thread, NULL);

    static int64_t seqs[FILLERS * FILL_MAX];
    int ok = 0, refused = 0;
    for (int i = 0; i < FILLERS; i++)
        for (int j = 0; j < f[i].n; j++) {
            long long rid = f[i].rid[j];
            int64_t stored = qi("SELECT count(*) FROM idempotency WHERE request_id = %lld", rid);
            if (f[i].code[j] == EC_OK) {
                cr_assert_eq(stored, 1, "send %lld was answered EC_OK but is not stored", rid);
                seqs[ok++] = f[i].seq[j];
            } else {
                cr_assert_eq(f[i].code[j], EC_UNAVAILABLE, "send %lld: code %d", rid, f[i].code[j]);
                cr_assert_eq(stored, 0, "send %lld was refused but is stored", rid);
                refused++;
            }
        }
    printf("database_full_under_concurrent_sends: %d stored, %d refused\n", ok, refused);
    cr_assert_gt(ok, 0);
    /* At least one filler ran into the full database (the others may have stopped earlier). */
    cr_assert_geq(refused, FILL_REFUSED, "the database never filled up");
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message"), ok);
    /* The replied seqs are the sender's inbox, 1..ok, each once. */
    for (int i = 0; i < ok; i++)
        for (int j = i + 1; j < ok; j++)
            cr_assert_neq(seqs[i], seqs[j], "seq %lld was replied twice", (long long)seqs[i]);
    for (int i = 0; i < ok; i++)
        cr_assert(seqs[i] >= 1 && seqs[i] <= ok, "seq %lld out of 1..%d", (long long)seqs[i], ok);
    expect_whole();
    client_close(cli);
    cli = NULL;
    cr_assert_eq(tl_stop(&srv), 0, "see %s", srv.log);
}

/* ---- a database that cannot be opened ------------------------------------------- */

struct run {
    char dir[64];
    char config[128];
    char err[128];
};

static void run_init(struct run *r)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/gimtest-XXXXXX");
    cr_assert_not_null(mkdtemp(r->dir));
    snprintf(r->config, sizeof r->config, "%s/gim.yaml", r->dir);
    snprintf(r->err, sizeof r->err, "%s/stderr", r->dir);
}

static void run_cleanup(struct run *r)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'; rm -rf '%s'", r->dir, r->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", r->dir);
}

/*
 * Runs gim-logic with database.path = path and expects it to refuse to start:
 * exit status 1 and exactly one "gim-logic: " line on stderr, which names
 * `names` and says `says`.
 */
static void expect_refused(struct run *r, const char *path, const char *names, const char *says)
{
    FILE *f = fopen(r->config, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listen: [\"ipc://%s/rep.ipc\"]\n"
            "publish: [\"ipc://%s/pub.ipc\"]\n"
            "http: \"\"\n"
            "workers: 2\n"
            "database: {path: \"%s\"}\n"
            "auth: {secret: \"" TL_SECRET "\"}\n",
            r->dir, r->dir, path);
    fclose(f);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (!freopen(r->err, "w", stderr))
            _exit(126);
        execl(GIM_LOGIC_BIN, GIM_LOGIC_BIN, "--config", r->config, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "%s: gim-logic died of signal %d", path, WTERMSIG(st));
    cr_assert_eq(WEXITSTATUS(st), 1, "%s: exit status %d; see %s", path, WEXITSTATUS(st), r->err);

    f = fopen(r->err, "r");
    cr_assert_not_null(f);
    char line[1024], found[1024] = "";
    int lines = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "gim-logic: ", 11) == 0) {
            lines++;
            snprintf(found, sizeof found, "%s", line);
        }
    fclose(f);
    cr_assert_eq(lines, 1, "%s: %d 'gim-logic:' lines on stderr; see %s", path, lines, r->err);
    cr_assert(strstr(found, names), "%s: the message does not name %s: %s", path, names, found);
    cr_assert(strstr(found, says), "%s: the message does not say '%s': %s", path, says, found);
}

Test(dbfaults, missing_database_directory)
{
    struct run r;
    run_init(&r);
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/missing/data", r.dir);
    snprintf(path, sizeof path, "%s/gim.db", dir);
    expect_refused(&r, path, dir, "does not exist");
    run_cleanup(&r);
}

Test(dbfaults, database_directory_is_a_file)
{
    struct run r;
    run_init(&r);
    char file[128], path[160];
    snprintf(file, sizeof file, "%s/data", r.dir);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/gim.db", file);
    expect_refused(&r, path, file, "is not a directory");
    /* A regular file further up the path. */
    snprintf(path, sizeof path, "%s/sub/gim.db", file);
    expect_refused(&r, path, file, "Not a directory");
    run_cleanup(&r);
}

Test(dbfaults, database_where_no_file_can_be_created)
{
    struct run r;
    run_init(&r);
    /* procfs takes no new files, whoever asks (root included). */
    expect_refused(&r, "/proc/gim-logic-test.db", "/proc", "database");
    run_cleanup(&r);
}

Test(dbfaults, database_path_is_a_directory_or_not_a_database)
{
    struct run r;
    run_init(&r);
    expect_refused(&r, r.dir, r.dir, "cannot open database");
    char path[128];
    snprintf(path, sizeof path, "%s/junk.db", r.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 100; i++)
        fputs("this is not an SQLite database\n", f);
    fclose(f);
    expect_refused(&r, path, path, "file is not a database");
    run_cleanup(&r);
}

Test(dbfaults, read_only_database_directory)
{
    if (geteuid() == 0)
        cr_skip_test("running as root, whom chmod 0555 does not stop (the /proc test covers it)");
    struct run r;
    run_init(&r);
    char dir[128], path[160];
    snprintf(dir, sizeof dir, "%s/ro", r.dir);
    cr_assert_eq(mkdir(dir, 0555), 0);
    snprintf(path, sizeof path, "%s/gim.db", dir);
    expect_refused(&r, path, dir, "not writable");
    run_cleanup(&r);
}
