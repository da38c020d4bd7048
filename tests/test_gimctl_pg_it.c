/*
 * gimctl pg-import / pg-verify end to end: a database written through the
 * real gim-logic (1:1 and group sends, a recall, a room, acks, several
 * devices, texts with tabs, backslashes and newlines) is copied by the real
 * gimctl into a PostgreSQL database of the test's own (pgtestlib) that holds
 * migrations/postgres/, and the copy is checked here independently of
 * gimctl's own verification: per-table counts, every message's content
 * bytes, the seqs and the next message id as PostgreSQL hands them out. A
 * non-empty target, a database in use and a target without the schema are
 * refused and left unchanged; a damaged copy (a row deleted, a content byte
 * changed) is found by pg-verify.
 */
#include <criterion/criterion.h>
#include <glob.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "pgtestlib.h"
#include "testlib.h"

static struct tl_server srv;
static char pg_url[PGT_URL_MAX];
static char out[1 << 16], err[1 << 16];

/* Every table the import copies (schema_migrations aside: each backend has its own). */
static const char *const TABLES[] = {
    "message",    "inbox",         "group_copy",           "user_seq",         "device",
    "chat_group", "group_member",  "room_message",         "room_seq",         "erasure",
    "gateway",    "group_id_high", "operator_idempotency", "room_idempotency", "idempotency"};
#define NTABLES (sizeof TABLES / sizeof TABLES[0])

static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    if (f) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

/* Runs a shell command line in srv.dir's context; stdout in out, stderr in err; the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char errpath[256], *line = NULL, *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&line, fmt, ap) >= 0);
    va_end(ap);
    snprintf(errpath, sizeof errpath, "%s/cmd.err", srv.dir);
    cr_assert(asprintf(&cmd, "%s 2>'%s'", line, errpath) > 0);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    slurp(errpath, err, sizeof err);
    cr_assert(WIFEXITED(st), "died: %.200s", line);
    free(cmd);
    free(line);
    return WEXITSTATUS(st);
}

/* gimctl with the test server's URL, database and secret, then args (shell words). */
#define ctl(fmt, ...)                                                                              \
    sh("'%s' --url '%s' --db '%s' --secret '%s' " fmt, GIMCTL_BIN, srv.url, srv.db, TL_SECRET,     \
       ##__VA_ARGS__)

static PGconn *pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    return c;
}

static void pg_exec(const char *sql)
{
    PGconn *c = pg_connect(pg_url);
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    cr_assert(s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* The one value sql returns, as text ("NULL" for NULL), into a static buffer. */
static const char *pg_text(const char *sql)
{
    static char buf[1 << 16];
    PGconn *c = pg_connect(pg_url);
    PGresult *r = PQexec(c, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    cr_assert_eq(PQntuples(r), 1, "%s: %d rows", sql, PQntuples(r));
    snprintf(buf, sizeof buf, "%s", PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return buf;
}

static int64_t pg_int(const char *sql)
{
    return strtoll(pg_text(sql), NULL, 10);
}

/* The one value sql returns from the SQLite file, as text ("NULL" for NULL). */
static const char *sqlite_text(const char *sql)
{
    static char buf[1 << 16];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_open_v2(srv.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: no row", sql);
    const unsigned char *v = sqlite3_column_text(st, 0);
    snprintf(buf, sizeof buf, "%s", v ? (const char *)v : "NULL");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return buf;
}

/* migrations/postgres/ applied and recorded as gim-logic's PostgreSQL backend records them. */
static void apply_pg_schema(const char *url)
{
    glob_t gl;
    cr_assert_eq(
        glob(GIM_SOURCE_DIR "/migrations/postgres/[0-9][0-9][0-9][0-9]_*.sql", 0, NULL, &gl), 0,
        "no migrations/postgres/");
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        const char *path = gl.gl_pathv[i], *base = strrchr(path, '/') + 1;
        cr_assert_eq(sh("psql -X -q -v ON_ERROR_STOP=1 -1 '%s' -f '%s' -c \"INSERT INTO "
                        "schema_migrations (version, name, applied_at) VALUES (%d, '%.*s', 0)\"",
                        url, path, atoi(base), (int)(strlen(base) - 4), base),
                     0, "psql %s: %s", path, err);
    }
    globfree(&gl);
}

/* Writes a bit of everything through the real service, then stops it. */
static void fill_and_stop(void)
{
    const char *u1 = "--user 1 --device 11", *u2 = "--user 2 --device 21";
    cr_assert_eq(ctl("%s send --to 2 hello", u1), 0, "%s", err);
    cr_assert_eq(ctl("%s send --to 2 \"$(printf 'tab\\there back\\\\slash\\nnew line')\"", u1), 0,
                 "%s", err);
    cr_assert_eq(ctl("%s send --to 1 'h\xc3\xa9llo back'", u2), 0, "%s", err);
    cr_assert_eq(ctl("--user 2 --device 22 send --to 2 'note to self'"), 0, "%s", err);
    cr_assert_eq(ctl("group create --owner 1 --name team --members 2,3"), 0, "%s", err);
    int64_t g = strtoll(out, NULL, 10);
    cr_assert_gt(g, 0, "group id: %s", out);
    cr_assert_eq(ctl("%s send --group --to %lld 'to the team'", u1, (long long)g), 0, "%s", err);
    cr_assert_eq(ctl("%s send --to 2 'take this back'", u1), 0, "%s", err);
    int64_t seq = strtoll(strstr(out, "seq=") + 4, NULL, 10);
    cr_assert_eq(ctl("%s recall %lld", u1, (long long)seq), 0, "%s", err);
    cr_assert_eq(ctl("--user 3 --device 31 room send 7 'in the room'"), 0, "%s", err);
    cr_assert_eq(ctl("--user 3 --device 31 room send 7 'again'"), 0, "%s", err);
    cr_assert_eq(ctl("%s ack 2", u2), 0, "%s", err);
    cr_assert_eq(tl_stop(&srv), 0);
    /* What the checks below rely on being there. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM message WHERE content IS NULL"), 1);
    cr_assert_geq(tl_query_int(srv.db, "SELECT count(*) FROM room_message"), 2);
    cr_assert_geq(tl_query_int(srv.db, "SELECT count(*) FROM group_copy"), 2);
    cr_assert_geq(tl_query_int(srv.db, "SELECT count(*) FROM device"), 4);
}

static void setup(void)
{
    tl_start(&srv, NULL);
    pgt_create_db(pg_url, sizeof pg_url);
}

static void teardown(void)
{
    if (srv.pid > 0)
        tl_stop(&srv);
    pgt_drop_db(pg_url);
    tl_cleanup(&srv);
}

TestSuite(gimctl_pg, .init = setup, .fini = teardown, .timeout = 120);

static int import(void)
{
    return ctl("pg-import --pg '%s'", pg_url);
}

static int verify(void)
{
    return ctl("pg-verify --pg '%s'", pg_url);
}

/* Each table's row count in PostgreSQL equals SQLite's; returns the total. */
static int64_t counts_equal(void)
{
    char sql[128];
    int64_t total = 0;
    for (size_t i = 0; i < NTABLES; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", TABLES[i]);
        int64_t p = pg_int(sql);
        /* SQLite's user_seq is a floor: its counters are the view (migrations/0008). */
        if (strcmp(TABLES[i], "user_seq") == 0)
            snprintf(sql, sizeof sql, "SELECT count(*) FROM user_last_seq");
        int64_t s = tl_query_int(srv.db, sql);
        cr_expect_eq(p, s, "table %s: %lld rows in PostgreSQL, %lld in SQLite", TABLES[i],
                     (long long)p, (long long)s);
        total += s;
    }
    return total;
}

Test(gimctl_pg, copies_a_real_database_and_verifies_it)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    cr_assert_eq(import(), 0, "pg-import: %s\n%s", out, err);
    cr_expect(strstr(out, "verified"), "%s", out);
    cr_expect(strstr(out, "same   message"), "the import verifies before it commits: %s", out);
    /* Checked here, not by gimctl: counts, every content byte, the seqs, the ids. */
    cr_expect_gt(counts_equal(), 20);
    const char *s_content = sqlite_text("SELECT group_concat(id || ':' || CASE WHEN content IS "
                                        "NULL THEN '-' ELSE hex(content) END || ':' || status, "
                                        "',') FROM (SELECT * FROM message ORDER BY id)");
    char want[1 << 15];
    snprintf(want, sizeof want, "%s", s_content);
    cr_expect_str_eq(pg_text("SELECT string_agg(id || ':' || coalesce(upper(encode(content, "
                             "'hex')), '-') || ':' || status, ',' ORDER BY id) FROM message"),
                     want);
    snprintf(want, sizeof want, "%s",
             sqlite_text("SELECT group_concat(room_id || ':' || seq || ':' || hex(content), ',') "
                         "FROM (SELECT * FROM room_message ORDER BY room_id, seq)"));
    cr_expect_str_eq(pg_text("SELECT string_agg(room_id || ':' || seq || ':' || "
                             "upper(encode(content, 'hex')), ',' ORDER BY room_id, seq) "
                             "FROM room_message"),
                     want);
    cr_expect_str_eq(pg_text("SELECT text FROM v_message WHERE text LIKE 'tab%'"),
                     "tab\there back\\slash\nnew line");
    /* The next seq PostgreSQL takes for user 2 (as the backend takes it) follows SQLite's last. */
    int64_t last2 = tl_query_int(srv.db, "SELECT seq FROM user_last_seq WHERE user_id = 2");
    cr_assert_gt(last2, 3);
    cr_expect_eq(pg_int("INSERT INTO user_seq (user_id, seq) VALUES (2, 1) ON CONFLICT (user_id) "
                        "DO UPDATE SET seq = user_seq.seq + 1 RETURNING seq"),
                 last2 + 1);
    /* A message inserted without an id gets one above every copied id. */
    int64_t max_id = tl_query_int(srv.db, "SELECT max(id) FROM message");
    cr_expect_eq(pg_int("INSERT INTO message (sender_type, sender_id, sender_device_id, "
                        "receiver_type, receiver_id, message_type, content, send_time, sender_seq) "
                        "VALUES (2, 1, 11, 1, 2, 1, NULL, 0, 0) RETURNING id"),
                 max_id + 1);
    cr_expect_str_eq(pg_text("SELECT last_id FROM group_id_high"),
                     sqlite_text("SELECT last_id FROM group_id_high"));
}

Test(gimctl_pg, verify_alone_passes_on_a_good_copy_and_finds_damage)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    cr_assert_eq(import(), 0, "pg-import: %s", err);
    cr_assert_eq(verify(), 0, "pg-verify on the fresh copy: %s\n%s", out, err);
    cr_expect(strstr(out, "identical"), "%s", out);

    /* One inbox entry gone. */
    pg_exec("DELETE FROM inbox WHERE (user_id, seq) = (SELECT user_id, max(seq) FROM inbox "
            "WHERE user_id = 2 GROUP BY user_id)");
    cr_expect_eq(verify(), 1, "a deleted inbox row must be found: %s", out);
    cr_expect(strstr(err, "table inbox differs"), "%s", err);
    cr_expect(strstr(err, "differs from"), "%s", err);
}

Test(gimctl_pg, verify_finds_a_changed_content_byte)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    cr_assert_eq(import(), 0, "pg-import: %s", err);
    /* Same length, one byte changed: no count can see it. */
    pg_exec("UPDATE message SET content = set_byte(content, length(content) - 1, "
            "get_byte(content, length(content) - 1) # 1) WHERE id = (SELECT min(id) FROM message "
            "WHERE content IS NOT NULL AND length(content) > 0)");
    cr_expect_eq(verify(), 1, "a changed byte must be found: %s", out);
    cr_expect(strstr(err, "table message: row"), "%s", err);
    cr_expect(strstr(out, "same   inbox"), "the other tables still compare: %s", out);
}

Test(gimctl_pg, verify_finds_a_seq_counter_behind_its_inbox)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    cr_assert_eq(import(), 0, "pg-import: %s", err);
    pg_exec("UPDATE user_seq SET seq = seq - 1 WHERE user_id = 2");
    cr_expect_eq(verify(), 1, "%s", out);
    cr_expect(strstr(err, "table user_seq"), "%s", err);
    cr_expect(strstr(err, "users: 1 of"), "the seq check must name it too: %s", err);
}

Test(gimctl_pg, refuses_a_non_empty_target_and_leaves_it_unchanged)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    cr_assert_eq(import(), 0, "pg-import: %s", err);
    int64_t before = counts_equal();
    cr_expect_eq(import(), 1, "a second import into the same database: %s", out);
    cr_expect(strstr(err, "not empty"), "%s", err);
    cr_expect_eq(counts_equal(), before);

    /* A target with one row that no copied row collides with is refused too. */
    char other[PGT_URL_MAX];
    snprintf(other, sizeof other, "%s", pg_url);
    pgt_create_db(pg_url, sizeof pg_url);
    apply_pg_schema(pg_url);
    pg_exec(
        "INSERT INTO device (device_id, user_id, created_at, updated_at) VALUES (999, 9, 1, 1)");
    cr_expect_eq(import(), 1, "%s", out);
    cr_expect(strstr(err, "table device has 1 row(s)"), "%s", err);
    cr_expect_eq(pg_int("SELECT count(*) FROM message"), 0);
    cr_expect_eq(pg_int("SELECT count(*) FROM device"), 1);
    pgt_drop_db(pg_url);
    snprintf(pg_url, sizeof pg_url, "%s", other);
}

Test(gimctl_pg, a_row_postgresql_refuses_rolls_back_the_whole_copy)
{
    apply_pg_schema(pg_url);
    fill_and_stop();
    /* Bytes that are not UTF-8 in a TEXT column: SQLite stores them, PostgreSQL's text cannot.
     * device is copied after message and inbox, so those were already sent when it fails. */
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(srv.db, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db,
                              "UPDATE device SET client_addr = CAST(X'ff' AS TEXT) "
                              "WHERE device_id = 21",
                              NULL, NULL, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_changes(db), 1);
    sqlite3_close(db);
    cr_expect_eq(import(), 1, "%s", out);
    cr_expect(strstr(out, "copied message"), "message was copied before device: %s", out);
    cr_expect(strstr(err, "gimctl pg-import: device: ") && strstr(err, "UTF8"), "%s", err);
    cr_expect_eq(pg_int("SELECT count(*) FROM message"), 0, "the copied tables must roll back");
    cr_expect_eq(pg_int("SELECT count(*) FROM inbox"), 0);
    cr_expect_str_eq(pg_text("SELECT last_id FROM group_id_high"), "0");
}

Test(gimctl_pg, refuses_a_database_in_use)
{
    apply_pg_schema(pg_url);
    cr_assert_eq(ctl("--user 1 --device 11 send --to 2 hello"), 0, "%s", err);
    cr_expect_eq(import(), 1, "import while gim-logic runs: %s", out);
    cr_expect(strstr(err, "stop gim-logic first"), "%s", err);
    cr_expect_eq(verify(), 1);
    cr_expect(strstr(err, "stop gim-logic first"), "%s", err);
    cr_expect_eq(pg_int("SELECT count(*) FROM message"), 0);
}

Test(gimctl_pg, refuses_a_target_without_the_schema)
{
    fill_and_stop();
    cr_expect_eq(import(), 1, "%s", out);
    cr_expect(strstr(err, "has no gim-logic schema"), "%s", err);
    cr_expect_str_eq(pg_text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
}

Test(gimctl_pg, usage_errors)
{
    cr_expect_eq(ctl("pg-import"), 2);
    cr_expect(strstr(err, "needs --pg URL"), "%s", err);
    cr_expect_eq(ctl("pg-verify --pg"), 2);
    cr_expect_eq(ctl("pg-import --pg x --bogus"), 2);
    cr_expect(strstr(err, "'--bogus'"), "%s", err);
}
