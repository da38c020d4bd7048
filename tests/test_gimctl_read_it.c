/*
 * gimctl's read-only operator commands end to end: online, devices, history,
 * room log and export, run as the real gimctl binary against the database a
 * real gim-logic wrote while it runs (messages sent, acknowledged and
 * recalled over its nng socket).
 *
 * The exports are parsed by parsers that are not gimctl's: JSON Lines by
 * SQLite's JSON functions, CSV by the sqlite3 shell's `.import --csv`, and
 * every awkward text (quotes, backslashes, controls, non-ASCII, invalid
 * UTF-8, a NUL byte) must come back byte for byte, or as the hex of the
 * stored content when it is not a valid UTF-8 text.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testlib.h"

static struct tl_server srv;
static struct gim_client *cli;
static struct client_conn u1, u2, u3;
static char *out;      /* the last command's stdout (malloc'ed) */
static char err[8192]; /* its stderr */

/* Texts that user 1 sends to user 2, each to come back exactly in an export. */
static const char *const texts[] = {
    "plain",
    "say \"hi\" and C:\\path\\",
    "line1\nline2\r\n\ttabbed",
    "ctl \x01\x02\x1f del \x7f end",
    "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 \xe2\x80\xa8 sep",
    "comma, \"quoted\", and ;semicolon",
    "",
    "=1+1",
};
/* Not valid UTF-8: exported as the hex of the stored content, never as text. */
static const char *const bad_texts[] = {
    "bad \xff\xfe byte",       "surrogate \xed\xa0\x80 here", "past U+10FFFF \xf4\x90\x80\x80",
    "overlong \xc0\xaf slash", "cut short \xe6\x97",
};
#define NTEXTS (sizeof texts / sizeof texts[0])
#define NBAD   (sizeof bad_texts / sizeof bad_texts[0])

/* --- running gimctl ----------------------------------------------------------------------- */

static int ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int ctl(const char *fmt, ...)
{
    char *args = NULL, *cmd = NULL, errpath[256];
    va_list ap;
    va_start(ap, fmt);
    cr_assert(vasprintf(&args, fmt, ap) >= 0);
    va_end(ap);
    snprintf(errpath, sizeof errpath, "%s/gimctl.err", srv.dir);
    cr_assert(asprintf(&cmd, "'%s' --url '%s' --db '%s' --secret '%s' %s 2>'%s'", GIMCTL_BIN,
                       srv.url, srv.db, TL_SECRET, args, errpath) > 0);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t len = 0;
    free(out);
    out = NULL;
    FILE *m = open_memstream(&out, &len);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        fwrite(buf, 1, n, m);
    fclose(m);
    int st = pclose(p);
    FILE *e = fopen(errpath, "r");
    n = e ? fread(err, 1, sizeof err - 1, e) : 0;
    err[n] = '\0';
    if (e)
        fclose(e);
    cr_assert(WIFEXITED(st), "gimctl died: %s", args);
    free(args);
    free(cmd);
    return WEXITSTATUS(st);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* The n-th line of s (0-based), without its newline, in a static buffer. */
static const char *line(const char *s, int n)
{
    static char buf[4096];
    for (; n > 0 && s; n--)
        if ((s = strchr(s, '\n')))
            s++;
    cr_assert(s && *s, "no such line in:\n%s", out);
    size_t len = strcspn(s, "\n");
    cr_assert_lt(len, sizeof buf);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

/* --- data through the protocol ------------------------------------------------------------ */

static int send_raw(struct client_conn *from, int receiver_type, int64_t to, int type,
                    const uint8_t *content, size_t len, int64_t request_id)
{
    Pb__Message m = PB__MESSAGE__INIT;
    m.receiver_type = receiver_type;
    m.receiver_id = to;
    m.message_type = type;
    m.message_content.data = (uint8_t *)content;
    m.message_content.len = len;
    Pb__MessageSend ms = PB__MESSAGE_SEND__INIT;
    ms.message = &m;
    return tl_code(cli, from, PB__PACKAGE_TYPE__PT_MESSAGE, request_id, &ms.base);
}

/* A text message; its encoded pb.Text in enc/enclen when enc is given. */
static int send_text(struct client_conn *from, int receiver_type, int64_t to, const char *text,
                     int64_t request_id)
{
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    uint8_t content[512];
    cr_assert_lt(pb__text__get_packed_size(&t), sizeof content);
    size_t len = pb__text__pack(&t, content);
    return send_raw(from, receiver_type, to, PB__MESSAGE_TYPE__MT_TEXT, content, len, request_id);
}

static void hex_of_text(const char *text, char *hex, size_t cap)
{
    Pb__Text t = PB__TEXT__INIT;
    t.text = (char *)text;
    uint8_t content[512];
    size_t len = pb__text__pack(&t, content);
    cr_assert_lt(2 * len, cap);
    for (size_t i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", content[i]);
    hex[2 * len] = '\0';
}

static void admin_sql(const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;
    cr_assert_eq(sqlite3_open(srv.db, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql, msg);
    sqlite3_close(db);
}

static const uint8_t IMAGE[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
static const uint8_t TEXT_WITH_NUL[] = {0x0a, 0x03, 'a', 0x00, 'b'};

/*
 * User 1 (device 101, gw-a) sends "hello bob" to user 2 (201, gw-b), who
 * acknowledges it; user 1 recalls it (seq 1 in both inboxes, notices at 2).
 * Then user 1 sends texts[], bad_texts[], an image and a text with a NUL to
 * user 2; user 3 (301, gw-a, signed out at the end) writes to user 1; user 2
 * writes to group 7 (owner 1, member 2); user 1 says "room hi" in room 30.
 */
static void setup(void)
{
    tl_start(&srv, NULL);
    cli = tl_client(&srv);
    int64_t rid = 100;
    cr_assert_eq(tl_signin(cli, &u1, 1, 101, "gw-a"), 0);
    cr_assert_eq(tl_signin(cli, &u2, 2, 201, "gw-b"), 0);
    cr_assert_eq(tl_signin(cli, &u3, 3, 301, "gw-a"), 0);
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, "hello bob", rid++), 0);
    Pb__MessageACK ack = PB__MESSAGE_ACK__INIT;
    ack.device_ack = 1;
    ack.receive_time = 1700000000000;
    cr_assert_eq(tl_code(cli, &u2, PB__PACKAGE_TYPE__PT_MESSAGE_ACK, rid++, &ack.base), 0);
    Pb__RecallInput rc = PB__RECALL_INPUT__INIT;
    rc.seq = 1;
    cr_assert_eq(tl_code(cli, &u1, PB__PACKAGE_TYPE__PT_RECALL, rid++, &rc.base), 0);
    for (size_t i = 0; i < NTEXTS; i++)
        cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, texts[i], rid++), 0);
    for (size_t i = 0; i < NBAD; i++)
        cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_USER, 2, bad_texts[i], rid++), 0);
    cr_assert_eq(send_raw(&u1, PB__RECEIVER_TYPE__RT_USER, 2, PB__MESSAGE_TYPE__MT_IMAGE, IMAGE,
                          sizeof IMAGE, rid++),
                 0);
    cr_assert_eq(send_raw(&u1, PB__RECEIVER_TYPE__RT_USER, 2, PB__MESSAGE_TYPE__MT_TEXT,
                          TEXT_WITH_NUL, sizeof TEXT_WITH_NUL, rid++),
                 0);
    cr_assert_eq(send_text(&u3, PB__RECEIVER_TYPE__RT_USER, 1, "from three", rid++), 0);
    cr_assert_eq(tl_code(cli, &u3, PB__PACKAGE_TYPE__PT_SIGN_OUT, rid++, NULL), 0);
    admin_sql("INSERT INTO chat_group (group_id, name, owner_id, created_at) "
              "VALUES (7, 'ops', 1, 1700000000000);"
              "INSERT INTO group_member (group_id, user_id, role, joined_at) "
              "VALUES (7, 1, 'owner', 1700000000000), (7, 2, 'member', 1700000000000)");
    cr_assert_eq(send_text(&u2, PB__RECEIVER_TYPE__RT_GROUP, 7, "group hi", rid++), 0);
    Pb__SubscribeRoomInput sub = PB__SUBSCRIBE_ROOM_INPUT__INIT;
    sub.room_id = 30;
    cr_assert_eq(tl_code(cli, &u1, PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, rid++, &sub.base), 0);
    cr_assert_eq(send_text(&u1, PB__RECEIVER_TYPE__RT_ROOM, 30, "room hi", rid++), 0);
}

static void teardown(void)
{
    if (cli)
        client_close(cli);
    cli = NULL;
    free(out);
    out = NULL;
    tl_cleanup(&srv);
}

TestSuite(gimctl_read, .init = setup, .fini = teardown, .timeout = 90);

/* Every column of every device row: what a sign-in or an ack would change. */
static char *device_rows(void)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open_v2(srv.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT group_concat(device_id || '|' || user_id || '|' || "
                                    "gateway_id || '|' || online || '|' || room_id || '|' || "
                                    "ack_seq || '|' || signed_in_at || '|' || updated_at, ';') "
                                    "FROM (SELECT * FROM device ORDER BY device_id)",
                                    -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    char *s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return s;
}

/* --- history ------------------------------------------------------------------------------ */

Test(gimctl_read, history_shows_from_seq_1_what_sync_cannot)
{
    char *before = device_rows();
    int64_t n2 = tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 2");
    cr_assert_eq(ctl("history --user 2"), 0, "%s", err);
    cr_assert_eq(count_lines(out), n2, "%s", out);
    cr_assert_str_eq(line(out, 0), "seq=1 from=1 type=MT_TEXT status=MS_RECALL to=RT_USER:2");
    cr_assert_str_eq(line(out, 1), "seq=2 from=1 type=MT_COMMAND status=MS_NORMAL to=RT_USER:2 "
                                   "recall-notice seq=1");
    cr_assert_str_eq(line(out, 2), "seq=3 from=1 type=MT_TEXT status=MS_NORMAL to=RT_USER:2 "
                                   "text=\"plain\"");
    cr_assert_null(strstr(out, "hello bob"), "the recalled content is erased: %s", out);

    /* Read-only: nobody signed in, no session moved, nothing acknowledged. */
    char *after = device_rows();
    cr_assert_str_eq(after, before);
    free(before);
    free(after);

    /* A sync from no local state starts after the ack (1): it cannot show seq 1. */
    char *hist = strdup(out);
    cr_assert_eq(ctl("--user 2 --device 202 sync"), 0, "%s", err);
    cr_assert(strncmp(out, "seq=2 ", 6) == 0, "%s", out);
    /* Its lines are history's lines from seq 2 on: one format for both. */
    cr_assert_str_eq(out, strchr(hist, '\n') + 1);
    free(hist);
}

Test(gimctl_read, history_of_a_conversation_a_group_and_a_page)
{
    cr_assert_eq(ctl("history --user 1 --with 3"), 0, "%s", err);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, " from=3 type=MT_TEXT status=MS_NORMAL to=RT_USER:1 text=\"from three\""),
              "%s", out);

    /* User 1's side of the conversation with 2: the recalled message, its notice, the rest. */
    int64_t n = tl_query_int(srv.db, "SELECT count(*) FROM inbox i JOIN message m "
                                     "ON m.id = i.message_id WHERE i.user_id = 1 AND "
                                     "m.receiver_type = 1 AND m.receiver_id = 2");
    cr_assert_eq(ctl("history --user 1 --with 2"), 0, "%s", err);
    cr_assert_eq(count_lines(out), n, "%s", out);
    cr_assert_str_eq(line(out, 0), "seq=1 from=1 type=MT_TEXT status=MS_RECALL to=RT_USER:2");
    cr_assert_null(strstr(out, "from three"), "%s", out);
    cr_assert_null(strstr(out, "RT_GROUP"), "%s", out);

    cr_assert_eq(ctl("history --user 2 --group 7"), 0, "%s", err);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert(strstr(out, " from=2 type=MT_TEXT status=MS_NORMAL to=RT_GROUP:7 text=\"group hi\""),
              "%s", out);

    /* --from is inclusive; --limit says on stderr where the next page starts. */
    cr_assert_eq(ctl("history --user 2 --from 3 --limit 2"), 0, "%s", err);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    cr_assert(strncmp(line(out, 0), "seq=3 ", 6) == 0, "%s", out);
    cr_assert(strncmp(line(out, 1), "seq=4 ", 6) == 0, "%s", out);
    cr_assert(strstr(err, "more after seq 4 (--from 5)"), "%s", err);
    /* The last page has no such note. */
    int64_t last = tl_query_int(srv.db, "SELECT max(seq) FROM inbox WHERE user_id = 2");
    cr_assert_eq(ctl("history --user 2 --from %lld --limit 5", (long long)last), 0, "%s", err);
    cr_assert_eq(count_lines(out), 1, "%s", out);
    cr_assert_str_eq(err, "");
}

Test(gimctl_read, history_errors)
{
    cr_assert_eq(ctl("history --user 99"), 1);
    cr_assert(strstr(err, "no user 99 in "), "%s", err);
    cr_assert_str_eq(out, "");
    cr_assert_eq(ctl("history --user 2 --group 999"), 1);
    cr_assert(strstr(err, "no group 999"), "%s", err);
    cr_assert_eq(ctl("history --user 2 --group 7 --with 1"), 2);
    cr_assert(strstr(err, "--with and --group exclude each other"), "%s", err);
    cr_assert_eq(ctl("history --user 2 --from 0"), 2);
    cr_assert(strstr(err, "--from: '0' is not a seq (a positive integer)"), "%s", err);
    /* The largest count is no limit, not an overflow. */
    cr_assert_eq(ctl("history --user 2 --limit 9223372036854775807"), 0, "%s", err);
    cr_assert_eq(count_lines(out),
                 tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 2"));
    cr_assert_str_eq(err, "");
    /* A full disk is an error, not a short export that looks complete. */
    cr_assert_eq(ctl("history --user 2 >/dev/full"), 1);
    cr_assert(strstr(err, "gimctl history: cannot write the output"), "%s", err);
    cr_assert_eq(ctl("export --user 2 >/dev/full"), 1);
    cr_assert(strstr(err, "gimctl export: cannot write the output"), "%s", err);
    cr_assert_eq(ctl("history --user 2 --limit x"), 2);
    cr_assert(strstr(err, "--limit: 'x' is not a count"), "%s", err);
    cr_assert_eq(ctl("history 2"), 2);
    cr_assert(strstr(err, "unexpected argument '2'"), "%s", err);
    /* The synopsis only, not the whole help. */
    cr_assert(strstr(err, "usage: gimctl [--db PATH] history --user U"), "%s", err);
    cr_assert_null(strstr(err, "recall notices included"), "%s", err);
    char *cmd = NULL;
    cr_assert(asprintf(&cmd, "--db '%s/nowhere.db' history --user 1", srv.dir) > 0);
    cr_assert_eq(ctl("%s", cmd), 1);
    free(cmd);
    cr_assert(strstr(err, "no database at"), "%s", err);
}

/* --- room log, online, devices ------------------------------------------------------------ */

Test(gimctl_read, room_log)
{
    cr_assert_eq(ctl("room log 30"), 0, "%s", err);
    cr_assert_str_eq(out, "seq=1 from=1 type=MT_TEXT status=MS_NORMAL to=RT_ROOM:30 "
                          "text=\"room hi\"\n");
    cr_assert_eq(ctl("room log 30 --from 2"), 0, "%s", err);
    cr_assert_str_eq(out, "");
    cr_assert_eq(ctl("room log 31"), 1);
    cr_assert(strstr(err, "no room 31"), "%s", err);
    cr_assert_eq(ctl("room log x"), 2);
    cr_assert(strstr(err, "ROOM: 'x' is not a room id"), "%s", err);
    cr_assert_eq(ctl("room log 30 --user 1"), 2);
    /* Reading the log subscribed nobody: device 101 is in room 30 from its own request only. */
    cr_assert_eq(tl_query_int(srv.db, "SELECT count(*) FROM device WHERE room_id = 30"), 1);
}

Test(gimctl_read, online_by_gateway)
{
    char *before = device_rows();
    cr_assert_eq(ctl("online"), 0, "%s", err);
    cr_assert_eq(count_lines(out), 5, "%s", out);
    cr_assert_str_eq(line(out, 0), "gateway=gw-a devices=1");
    cr_assert(strncmp(line(out, 1), "  device=101 user=1 since=20", 28) == 0, "%s", out);
    cr_assert(strstr(line(out, 1), " last_seen=20") && strstr(line(out, 1), " room=30 "), "%s",
              out);
    cr_assert_str_eq(line(out, 2), "gateway=gw-b devices=1");
    cr_assert(strncmp(line(out, 3), "  device=201 user=2 since=20", 28) == 0, "%s", out);
    cr_assert_str_eq(line(out, 4), "online=2 gateways=2");
    cr_assert_null(strstr(out, "device=301"), "signed out: %s", out);
    char *after = device_rows();
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
    cr_assert_eq(ctl("online now"), 2);
}

Test(gimctl_read, devices_of_a_user)
{
    int64_t last = tl_query_int(srv.db, "SELECT seq FROM user_last_seq WHERE user_id = 2");
    cr_assert_eq(ctl("devices --user 2"), 0, "%s", err);
    cr_assert_eq(count_lines(out), 2, "%s", out);
    char want[128];
    snprintf(want, sizeof want, "user=2 last_seq=%lld devices=1", (long long)last);
    cr_assert_str_eq(line(out, 0), want);
    snprintf(want, sizeof want, "device=201 online gateway=gw-b ack_seq=1 unacked=%lld room=0 ",
             (long long)last - 1);
    cr_assert(strncmp(line(out, 1), want, strlen(want)) == 0, "want %s in %s", want, out);
    cr_assert(strstr(line(out, 1), " acked_at=2023-11-14T22:13:20.000Z "), "%s", out);

    cr_assert_eq(ctl("devices --user 3"), 0, "%s", err);
    cr_assert(strncmp(line(out, 1), "device=301 offline gateway=gw-a ", 32) == 0, "%s", out);
    cr_assert_eq(ctl("devices --user 42"), 1);
    cr_assert(strstr(err, "no user 42"), "%s", err);
    cr_assert_eq(ctl("devices"), 2);
    cr_assert(strstr(err, "needs --user U"), "%s", err);
}

/* --- export ------------------------------------------------------------------------------- */

/* The value of JSON path in line, as SQLite's JSON parser reads it (NULL: JSON null). */
static char *json_get(sqlite3 *db, const char *json, const char *path, int *type)
{
    sqlite3_stmt *st;
    cr_assert_eq(
        sqlite3_prepare_v2(db, "SELECT json_valid(?1), json_extract(?1, ?2)", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 1, "not valid JSON: %s", json);
    *type = sqlite3_column_type(st, 1);
    const char *v = (const char *)sqlite3_column_text(st, 1);
    char *copy = v ? strndup(v, (size_t)sqlite3_column_bytes(st, 1)) : NULL;
    sqlite3_finalize(st);
    return copy;
}

/* The exported line whose seq is seq and source src (a static copy), or NULL. */
static const char *jsonl_line(sqlite3 *db, const char *src, int64_t seq)
{
    int n = count_lines(out);
    for (int i = 0; i < n; i++) {
        int t;
        const char *l = line(out, i);
        char *s = json_get(db, l, "$.seq", &t);
        char *source = json_get(db, l, "$.source", &t);
        bool hit = s && strtoll(s, NULL, 10) == seq && strcmp(source, src) == 0;
        free(s);
        free(source);
        if (hit)
            return l;
    }
    return NULL;
}

static void expect_json(sqlite3 *db, const char *l, const char *path, const char *want)
{
    int t;
    char *v = json_get(db, l, path, &t);
    if (!want)
        cr_assert_eq(t, SQLITE_NULL, "%s must be null in %s", path, l);
    else
        cr_assert(v && strcmp(v, want) == 0, "%s: want \"%s\", got \"%s\" in %s", path, want, v, l);
    free(v);
}

Test(gimctl_read, export_jsonl_round_trips_through_a_json_parser)
{
    char *before = device_rows();
    cr_assert_eq(ctl("export --user 2"), 0, "%s", err);
    int64_t inbox = tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 2");
    cr_assert_eq(count_lines(out), inbox, "user 2 sent no room message: %s", out);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);

    /* seq 1: recalled, so a status and no content at all. */
    const char *l = jsonl_line(db, "inbox", 1);
    cr_assert_not_null(l, "%s", out);
    expect_json(db, l, "$.status", "MS_RECALL");
    expect_json(db, l, "$.text", NULL);
    expect_json(db, l, "$.content_hex", NULL);
    expect_json(db, l, "$.content_bytes", "0");
    expect_json(db, l, "$.sender_id", "1");
    expect_json(db, l, "$.sender_device_id", "101");
    expect_json(db, l, "$.receiver_type", "RT_USER");
    expect_json(db, l, "$.receiver_id", "2");
    expect_json(db, l, "$.user_id", "2");
    cr_assert_null(strstr(out, "hello bob"));

    /* seq 2: the recall notice, a command: hex of its content. */
    l = jsonl_line(db, "inbox", 2);
    expect_json(db, l, "$.type", "MT_COMMAND");
    expect_json(db, l, "$.text", NULL);
    int t;
    char *hex = json_get(db, l, "$.content_hex", &t);
    cr_assert(hex && strlen(hex) > 0 && strspn(hex, "0123456789abcdef") == strlen(hex), "%s", l);
    free(hex);

    /* seqs 3..: every text exactly, then the invalid ones as hex. */
    int64_t seq = 3;
    for (size_t i = 0; i < NTEXTS; i++, seq++) {
        l = jsonl_line(db, "inbox", seq);
        cr_assert_not_null(l, "seq %lld", (long long)seq);
        expect_json(db, l, "$.type", "MT_TEXT");
        expect_json(db, l, "$.status", "MS_NORMAL");
        expect_json(db, l, "$.text", texts[i]);
        expect_json(db, l, "$.content_hex", NULL);
        char *s = json_get(db, l, "$.send_time", &t);
        cr_assert(s && strtoll(s, NULL, 10) > 1700000000000LL, "%s", l);
        free(s);
        s = json_get(db, l, "$.sent_utc", &t);
        cr_assert(s && strlen(s) == 24 && s[10] == 'T' && s[23] == 'Z', "%s", l);
        free(s);
    }
    for (size_t i = 0; i < NBAD; i++, seq++) {
        char want[1024];
        l = jsonl_line(db, "inbox", seq);
        cr_assert_not_null(l, "seq %lld", (long long)seq);
        expect_json(db, l, "$.text", NULL);
        hex_of_text(bad_texts[i], want, sizeof want);
        expect_json(db, l, "$.content_hex", want);
    }
    l = jsonl_line(db, "inbox", seq++);
    expect_json(db, l, "$.type", "MT_IMAGE");
    expect_json(db, l, "$.content_hex", "00017f80ff");
    expect_json(db, l, "$.content_bytes", "5");
    l = jsonl_line(db, "inbox", seq++);
    expect_json(db, l, "$.type", "MT_TEXT");
    expect_json(db, l, "$.text", NULL); /* never cut at the NUL */
    expect_json(db, l, "$.content_hex", "0a03610062");
    l = jsonl_line(db, "inbox", seq++);
    expect_json(db, l, "$.receiver_type", "RT_GROUP");
    expect_json(db, l, "$.text", "group hi");
    expect_json(db, l, "$.to_user_ids", "[]");
    cr_assert_eq(seq - 1, inbox);

    /* User 1's export ends with the room message it sent. */
    cr_assert_eq(ctl("export --user 1 --format jsonl"), 0, "%s", err);
    int n = count_lines(out);
    cr_assert_eq(n, tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 1") + 1);
    l = line(out, n - 1);
    expect_json(db, l, "$.source", "room");
    expect_json(db, l, "$.message_id", NULL);
    expect_json(db, l, "$.receiver_type", "RT_ROOM");
    expect_json(db, l, "$.receiver_id", "30");
    expect_json(db, l, "$.seq", "1");
    expect_json(db, l, "$.text", "room hi");
    sqlite3_close(db);

    char *after = device_rows();
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
}

/* Runs SQL on the test's import database with the sqlite3 shell; its stdout. */
static void import_csv(const char *csv_path, const char *db_path)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sqlite3 '%s' '.import --csv %s t' 2>&1", db_path, csv_path);
    FILE *p = popen(cmd, "r");
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    cr_assert_eq(pclose(p), 0, "import failed: %s", buf);
    cr_assert_str_eq(buf, "", "the shell complained: %s", buf);
}

Test(gimctl_read, export_csv_round_trips_through_the_sqlite3_shell)
{
    cr_assert_eq(ctl("export --user 2 --format csv"), 0, "%s", err);
    const char header[] = "source,user_id,seq,message_id,send_time,sent_utc,sender_type,"
                          "sender_id,sender_device_id,receiver_type,receiver_id,to_user_ids,type,"
                          "status,content_bytes,text,content_hex\r\n";
    cr_assert(strncmp(out, header, strlen(header)) == 0, "%s", out);
    char csv[256], dbp[256];
    snprintf(csv, sizeof csv, "%s/export.csv", srv.dir);
    snprintf(dbp, sizeof dbp, "%s/import.db", srv.dir);
    FILE *f = fopen(csv, "wb");
    fwrite(out, 1, strlen(out), f);
    fclose(f);
    import_csv(csv, dbp);

    sqlite3 *db;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open(dbp, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int64(st, 0),
                 tl_query_int(srv.db, "SELECT count(*) FROM inbox WHERE user_id = 2"));
    sqlite3_finalize(st);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT status, text, content_hex, type, sender_id, "
                                    "receiver_type FROM t WHERE CAST(seq AS INTEGER) = ?1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    /* Each row as text columns: status, text, content_hex. */
#define ROW(seq)                                                                                   \
    do {                                                                                           \
        sqlite3_reset(st);                                                                         \
        sqlite3_bind_int64(st, 1, (seq));                                                          \
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "no row for seq %d", (int)(seq));               \
    } while (0)
#define COL(i) ((const char *)sqlite3_column_text(st, (i)))
    ROW(1);
    cr_assert_str_eq(COL(0), "MS_RECALL");
    cr_assert_str_eq(COL(1), "");
    cr_assert_str_eq(COL(2), "");
    cr_assert_str_eq(COL(4), "1");
    cr_assert_str_eq(COL(5), "RT_USER");
    int64_t seq = 3;
    for (size_t i = 0; i < NTEXTS; i++, seq++) {
        ROW(seq);
        cr_assert_str_eq(COL(0), "MS_NORMAL");
        cr_assert_eq((size_t)sqlite3_column_bytes(st, 1), strlen(texts[i]), "seq %lld",
                     (long long)seq);
        cr_assert(!*texts[i] || memcmp(sqlite3_column_blob(st, 1), texts[i], strlen(texts[i])) == 0,
                  "seq %lld: %s", (long long)seq, COL(1));
        cr_assert_str_eq(COL(2), "");
    }
    for (size_t i = 0; i < NBAD; i++, seq++) {
        char want[1024];
        ROW(seq);
        cr_assert_str_eq(COL(1), "");
        hex_of_text(bad_texts[i], want, sizeof want);
        cr_assert_str_eq(COL(2), want);
    }
    ROW(seq);
    cr_assert_str_eq(COL(3), "MT_IMAGE");
    cr_assert_str_eq(COL(2), "00017f80ff");
#undef ROW
#undef COL
    sqlite3_finalize(st);
    sqlite3_close(db);

    cr_assert_eq(ctl("export --user 2 --format xml"), 2);
    cr_assert(strstr(err, "--format: 'xml' is not jsonl or csv"), "%s", err);
    cr_assert_eq(ctl("export --user 77"), 1);
    cr_assert(strstr(err, "no user 77"), "%s", err);
    cr_assert_str_eq(out, "", "nothing is written for an unknown user");
}
