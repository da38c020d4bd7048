/*
 * gimctl online | devices | history | room log | export: the operator's
 * read-only views of the database (--db), for support and data-access
 * requests.
 *
 * None of them signs in or asks the service anything, so looking has no side
 * effects (`sync` signs a device in and moves its session; these do not).
 * The database is opened with SQLITE_OPEN_READONLY, which is safe while
 * gim-logic runs: in WAL mode a reader blocks no writer. Each command reads
 * one snapshot (one statement, or one read transaction for export's two).
 *
 * Output is streamed: each statement is stepped row by row and each row is
 * printed before the next is read, with at most one row's message in memory
 * (a per-row arena, freed at once), so a history or an export of a huge inbox
 * runs in constant memory. A long read holds its snapshot meanwhile, which
 * keeps the service's checkpoints from shrinking the WAL until it ends; it
 * never delays a write.
 *
 * Messages print as `sync` prints them (gimctl_print_message), so a history
 * line and a sync line of the same message are equal. export writes JSON
 * Lines or CSV: JSON strings escaped here (texts are checked to be valid
 * UTF-8 with iconv first; anything else is exported as hex), CSV fields
 * quoted as RFC 4180 says.
 */
#include <errno.h>
#include <iconv.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gimctl.h"
#include "message.h"
#include "storage/sqlite_int.h"

#define ST_USER 2 /* SenderType ST_USER */
#define RT_USER 1 /* ReceiverType RT_USER */

/* The inbox, a conversation in it, a group in it: seq, then MESSAGE_COLUMNS. */
#define INBOX_SELECT                                                                               \
    "SELECT i.seq, i.message_id, " MESSAGE_COLUMNS " FROM inbox i "                                \
    "JOIN message m ON m.id = i.message_id WHERE i.user_id = ?1 AND i.seq >= ?2 "
static const char SQL_HISTORY[] = INBOX_SELECT "ORDER BY i.seq LIMIT ?3";
static const char SQL_HISTORY_WITH[] =
    INBOX_SELECT "AND m.receiver_type = 1 AND m.sender_type = 2 AND "
                 "((m.sender_id = ?1 AND m.receiver_id = ?4) OR "
                 "(m.sender_id = ?4 AND m.receiver_id = ?1)) ORDER BY i.seq LIMIT ?3";
static const char SQL_HISTORY_GROUP[] =
    INBOX_SELECT "AND m.receiver_type = 2 AND m.receiver_id = ?4 ORDER BY i.seq LIMIT ?3";
/* room_message has no receiver columns: the select supplies RT_ROOM (3) and the room. */
#define ROOM_SELECT                                                                                \
    "SELECT r.seq, NULL, r.sender_type, r.sender_id, r.sender_device_id, 3, r.room_id, "           \
    "r.to_user_ids, r.message_type, r.content, r.send_time, r.status FROM room_message r "
static const char SQL_ROOM_LOG[] =
    ROOM_SELECT "WHERE r.room_id = ?1 AND r.seq >= ?2 ORDER BY r.seq LIMIT ?3";
/* export: the room messages the user sent (a scan of room_message: it has no sender index). */
static const char SQL_ROOM_SENT[] =
    ROOM_SELECT "WHERE r.sender_type = 2 AND r.sender_id = ?1 ORDER BY r.room_id, r.seq";
static const char SQL_EXPORT_INBOX[] = INBOX_SELECT "ORDER BY i.seq";

static const char SQL_USER_KNOWN[] = "SELECT EXISTS (SELECT 1 FROM device WHERE user_id = ?1) "
                                     "OR EXISTS (SELECT 1 FROM user_seq WHERE user_id = ?1) "
                                     "OR EXISTS (SELECT 1 FROM inbox WHERE user_id = ?1)";
static const char SQL_USER_SEQ[] = SQL_USER_LAST_SEQ; /* not the view: it scans */
static const char SQL_GROUP_KNOWN[] =
    "SELECT EXISTS (SELECT 1 FROM chat_group WHERE group_id = ?1)";
static const char SQL_ROOM_KNOWN[] = "SELECT EXISTS (SELECT 1 FROM room_seq WHERE room_id = ?1)";
static const char SQL_ONLINE[] =
    "SELECT gateway_id, count(*) OVER (PARTITION BY gateway_id), device_id, user_id, client_addr, "
    "room_id, signed_in_at, updated_at FROM device WHERE online <> 0 "
    "ORDER BY gateway_id, user_id, device_id";
static const char SQL_DEVICES[] =
    "SELECT device_id, online, gateway_id, client_addr, room_id, ack_seq, ack_time, "
    "signed_in_at, updated_at FROM device WHERE user_id = ?1 ORDER BY device_id";

/* The first column of the result rows hold: seq, message id (NULL for rooms), MESSAGE_COLUMNS. */
#define COL_SEQ     0
#define COL_ID      1
#define COL_MESSAGE 2

const char gimctl_usage_online[] =
    "usage: gimctl [--db PATH] online\n"
    "  The devices online now, grouped by gateway, read from the database\n"
    "  (read-only; never signs in):\n"
    "    gateway=G devices=N\n"
    "      device=D user=U since=T last_seen=T room=R client_addr=A\n"
    "  since is the sign-in time. last_seen is the last change the database\n"
    "  recorded (sign-in, ack, room): heartbeats live in the service's memory, so\n"
    "  the device may have been seen later. A device that stops heartbeating is\n"
    "  marked offline within presence.timeout_seconds. Ends with `online=N gateways=M`.\n";

const char gimctl_usage_devices[] =
    "usage: gimctl [--db PATH] devices --user U\n"
    "  User U's devices, read from the database (read-only; never signs in):\n"
    "    user=U last_seq=S devices=N\n"
    "    device=D online|offline gateway=G ack_seq=A unacked=S-A room=R since=T\n"
    "      last_seen=T acked_at=T client_addr=A\n"
    "  (one line per device). Exit 1 when no device, seq or message names U.\n";

const char gimctl_usage_history[] =
    "usage: gimctl [--db PATH] history --user U [--with V | --group G] [--from SEQ] [--limit N]\n"
    "  User U's inbox read from the database, from seq SEQ (default 1: the start)\n"
    "  on, at most N messages, one line per message as `sync` prints them. It never\n"
    "  signs in (no side effects) and, unlike sync, is not limited by acks: it is\n"
    "  the way to see a recalled message (status=MS_RECALL, no text) before an ack.\n"
    "  --with V: only the one-to-one conversation of U and V (both directions,\n"
    "  recall notices included). --group G: only group G's messages. The seqs are\n"
    "  U's. With --limit, a note on stderr says where the next page starts.\n"
    "  Exit 1 when no device, seq or message names U, or group G does not exist.\n";

const char gimctl_usage_export[] =
    "usage: gimctl [--db PATH] export --user U [--format jsonl|csv]\n"
    "  Writes all of user U's messages to stdout, for support and data-access\n"
    "  requests: every entry of U's inbox (what U sent and received), then the\n"
    "  room messages U sent. Read-only, streamed row by row (constant memory).\n"
    "  jsonl (default): one JSON object per line; csv: RFC 4180 with a header row\n"
    "  and CRLF line ends. Fields: source (inbox|room), user_id, seq, message_id,\n"
    "  send_time (ms), sent_utc, sender_type, sender_id, sender_device_id,\n"
    "  receiver_type, receiver_id, to_user_ids, type, status, content_bytes, text,\n"
    "  content_hex. text is the decoded string of an MT_TEXT message (valid UTF-8);\n"
    "  content_hex the content of any other (or of a text that is not valid UTF-8).\n"
    "  A recalled message has status MS_RECALL and neither: its content is erased.\n";

/* Options of the read-only commands; each command says which it takes. */
struct ropts {
    int64_t user, with, group, from, limit;
    const char *format;
};

/* `accept` lists the options the command takes, e.g. "--user --from". 0, or 2 after a usage error.
 */
static int parse(const char *cmd, int argc, char **argv, const char *accept, int first,
                 struct ropts *o)
{
    *o = (struct ropts){.from = 1, .format = "jsonl"};
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        size_t n = strlen(a);
        const char *at = strstr(accept, a);
        if (strncmp(a, "--", 2) != 0 || n < 3 || !at || (at[n] != ' ' && at[n] != '\0'))
            return gimctl_usage_error(cmd, "%s '%s'",
                                      a[0] == '-' ? "unknown option" : "unexpected argument", a);
        if (i + 1 >= argc)
            return gimctl_usage_error(cmd, "%s needs a value", a);
        const char *v = argv[++i];
        if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "jsonl") != 0 && strcmp(v, "csv") != 0)
                return gimctl_usage_error(cmd, "--format: '%s' is not jsonl or csv", v);
            o->format = v;
            continue;
        }
        int64_t *dst = strcmp(a, "--user") == 0    ? &o->user
                       : strcmp(a, "--with") == 0  ? &o->with
                       : strcmp(a, "--group") == 0 ? &o->group
                       : strcmp(a, "--from") == 0  ? &o->from
                                                   : &o->limit;
        const char *what = dst == &o->user    ? "a user id"
                           : dst == &o->with  ? "a user id"
                           : dst == &o->group ? "a group id"
                           : dst == &o->from  ? "a seq"
                                              : "a count";
        if (gimctl_parse_id(v, dst) != 0)
            return gimctl_usage_error(cmd, "%s: '%s' is not %s (a positive integer)", a, v, what);
    }
    if (strstr(accept, "--user") && !o->user)
        return gimctl_usage_error(cmd, "needs --user U");
    if (o->with && o->group)
        return gimctl_usage_error(cmd, "--with and --group exclude each other");
    return 0;
}

static int sql_error(sqlite3 *db, const char *cmd)
{
    fprintf(stderr, "gimctl %s: cannot read the database: %s\n", cmd, sqlite3_errmsg(db));
    return 1;
}

/* Runs a one-integer query with parameter ?1 = v into *out; 0, or 1 after saying why. */
static int query_int(sqlite3 *db, const char *cmd, const char *sql, int64_t v, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = GIMCTL_PREPARE(db, sql, &st, STORE_INT(v));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : sql_error(db, cmd);
}

/*
 * Begins the read transaction the command reads in (one snapshot: its parts
 * agree) and checks that user is known (a device, a seq or an inbox entry);
 * 0, else 1 after saying why.
 */
static int begin_user(sqlite3 *db, const char *cmd, const char *path, int64_t user)
{
    int64_t known = 0;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return sql_error(db, cmd);
    if (query_int(db, cmd, SQL_USER_KNOWN, user, &known) != 0)
        return 1;
    if (known)
        return 0;
    fprintf(stderr, "gimctl %s: no user %lld in %s (no devices, no messages)\n", cmd,
            (long long)user, path);
    return 1;
}

/*
 * The message of the row st is on (seq, id, MESSAGE_COLUMNS), in an arena of
 * its own sized for this row: the caller frees it (arena_free) before the
 * next step, which is what keeps the memory constant.
 */
static struct message_view *row_message(sqlite3_stmt *st, struct arena *a)
{
    size_t need = sizeof(struct message_view) + 64 +
                  (size_t)sqlite3_column_bytes(st, COL_MESSAGE + 5) +
                  (size_t)sqlite3_column_bytes(st, COL_MESSAGE + 7);
    if (arena_init(a, need) != GIM_OK)
        return NULL;
    return message_from_row(st, COL_MESSAGE, sqlite3_column_int64(st, COL_SEQ), a);
}

/*
 * Prints the rows of st (bound, not stepped) as sync lines, at most limit
 * (0 = all) of a statement that asks for limit + 1. 0, or 1 after an error.
 */
static int print_rows(sqlite3 *db, const char *cmd, sqlite3_stmt *st, int64_t limit)
{
    int64_t printed = 0, last = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (limit && printed == limit) {
            fflush(stdout); /* the page first, then where the next one starts */
            fprintf(stderr, "gimctl %s: more after seq %lld (--from %lld)\n", cmd, (long long)last,
                    (long long)last + 1);
            break;
        }
        struct arena a = {0};
        struct message_view *v = row_message(st, &a);
        if (!v) {
            arena_free(&a);
            fprintf(stderr, "gimctl %s: out of memory\n", cmd);
            return 1;
        }
        gimctl_print_message(&v->msg);
        putchar('\n');
        last = v->msg.seq;
        printed++;
        arena_free(&a);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_error(db, cmd);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "gimctl %s: cannot write the output: %s\n", cmd, strerror(errno));
        return 1;
    }
    return 0;
}

int gimctl_history(struct gimctl *g, int argc, char **argv)
{
    struct ropts o;
    sqlite3_stmt *st = NULL;
    int64_t known = 0;
    int rc = parse("history", argc, argv, "--user --with --group --from --limit", 1, &o);
    if (rc != 0)
        return rc;
    sqlite3 *db = gimctl_open_ro(g->db);
    if (!db)
        return 1;
    rc = 1;
    if (begin_user(db, "history", g->db, o.user) != 0)
        goto out;
    if (o.group && query_int(db, "history", SQL_GROUP_KNOWN, o.group, &known) != 0)
        goto out;
    if (o.group && !known) {
        fprintf(stderr, "gimctl history: no group %lld\n", (long long)o.group);
        goto out;
    }
    const char *sql = o.with ? SQL_HISTORY_WITH : o.group ? SQL_HISTORY_GROUP : SQL_HISTORY;
    const struct store_val v[] = {
        STORE_INT(o.user), STORE_INT(o.from),
        STORE_INT(o.limit && o.limit < INT64_MAX ? o.limit + 1 : -1), /* LIMIT -1: no limit */
        STORE_INT(o.with ? o.with : o.group)}; /* ?4 of the WITH and GROUP forms */
    if (gimctl_prepare(db, sql, &st, v, o.with || o.group ? 4 : 3) != SQLITE_OK) {
        rc = sql_error(db, "history");
        goto out;
    }
    rc = print_rows(db, "history", st, o.limit);
out:
    sqlite3_finalize(st);
    sqlite3_close(db); /* ends the read transaction */
    return rc;
}

int gimctl_room_log(struct gimctl *g, int argc, char **argv)
{
    struct ropts o;
    sqlite3_stmt *st = NULL;
    int64_t room = 0, known = 0;
    if (argc < 2)
        return gimctl_usage_error("room", "log needs ROOM");
    if (gimctl_parse_id(argv[1], &room) != 0)
        return gimctl_usage_error("room", "ROOM: '%s' is not a room id (a positive integer)",
                                  argv[1]);
    int rc = parse("room", argc, argv, "--from --limit", 2, &o);
    if (rc != 0)
        return rc;
    sqlite3 *db = gimctl_open_ro(g->db);
    if (!db)
        return 1;
    rc = 1;
    if (query_int(db, "room log", SQL_ROOM_KNOWN, room, &known) != 0)
        goto out;
    if (!known) {
        fprintf(stderr, "gimctl room log: no room %lld (nothing was ever sent to it)\n",
                (long long)room);
        goto out;
    }
    if (GIMCTL_PREPARE(db, SQL_ROOM_LOG, &st, STORE_INT(room), STORE_INT(o.from),
                       STORE_INT(o.limit && o.limit < INT64_MAX ? o.limit + 1 : -1)) != SQLITE_OK) {
        rc = sql_error(db, "room log");
        goto out;
    }
    rc = print_rows(db, "room log", st, o.limit);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static const char *text_or_dash(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return s && *s ? (const char *)s : "-";
}

int gimctl_online(struct gimctl *g, int argc, char **argv)
{
    sqlite3_stmt *st = NULL;
    char t1[40], t2[40];
    char *gateway = NULL; /* the previous row's */
    int64_t devices = 0, gateways = 0;
    int step;
    if (argc > 1)
        return gimctl_usage_error("online", "unexpected argument '%s'", argv[1]);
    sqlite3 *db = gimctl_open_ro(g->db);
    if (!db)
        return 1;
    int rc = 1;
    if (sqlite3_prepare_v2(db, SQL_ONLINE, -1, &st, NULL) != SQLITE_OK) {
        rc = sql_error(db, "online");
        goto out;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *gw = (const char *)sqlite3_column_text(st, 0);
        if (!gw)
            gw = "";
        if (!gateway || strcmp(gw, gateway) != 0) {
            free(gateway);
            if (!(gateway = strdup(gw))) {
                fprintf(stderr, "gimctl online: out of memory\n");
                goto out;
            }
            printf("gateway=%s devices=%lld\n", *gw ? gw : "-",
                   (long long)sqlite3_column_int64(st, 1));
            gateways++;
        }
        printf("  device=%lld user=%lld since=%s last_seen=%s room=%lld client_addr=%s\n",
               (long long)sqlite3_column_int64(st, 2), (long long)sqlite3_column_int64(st, 3),
               gimctl_utc(sqlite3_column_int64(st, 6), t1, sizeof t1),
               gimctl_utc(sqlite3_column_int64(st, 7), t2, sizeof t2),
               (long long)sqlite3_column_int64(st, 5), text_or_dash(st, 4));
        devices++;
    }
    if (step != SQLITE_DONE) {
        rc = sql_error(db, "online");
        goto out;
    }
    printf("online=%lld gateways=%lld\n", (long long)devices, (long long)gateways);
    rc = 0;
out:
    free(gateway);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

int gimctl_devices(struct gimctl *g, int argc, char **argv)
{
    struct ropts o;
    sqlite3_stmt *st = NULL;
    char t1[40], t2[40], t3[40];
    int64_t last_seq = 0, n = 0;
    int step;
    int rc = parse("devices", argc, argv, "--user", 1, &o);
    if (rc != 0)
        return rc;
    sqlite3 *db = gimctl_open_ro(g->db);
    if (!db)
        return 1;
    rc = 1;
    if (begin_user(db, "devices", g->db, o.user) != 0 ||
        query_int(db, "devices", SQL_USER_SEQ, o.user, &last_seq) != 0)
        goto out;
    if (GIMCTL_PREPARE(db, SQL_DEVICES, &st, STORE_INT(o.user)) != SQLITE_OK) {
        rc = sql_error(db, "devices");
        goto out;
    }
    /* The count first, from the same snapshot (BEGIN above). */
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        n++;
    if (step != SQLITE_DONE) {
        rc = sql_error(db, "devices");
        goto out;
    }
    sqlite3_reset(st);
    printf("user=%lld last_seq=%lld devices=%lld\n", (long long)o.user, (long long)last_seq,
           (long long)n);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t ack = sqlite3_column_int64(st, 5);
        printf("device=%lld %s gateway=%s ack_seq=%lld unacked=%lld room=%lld since=%s "
               "last_seen=%s acked_at=%s client_addr=%s\n",
               (long long)sqlite3_column_int64(st, 0),
               sqlite3_column_int(st, 1) ? "online" : "offline", text_or_dash(st, 2),
               (long long)ack, (long long)(last_seq > ack ? last_seq - ack : 0),
               (long long)sqlite3_column_int64(st, 4),
               gimctl_utc(sqlite3_column_int64(st, 7), t1, sizeof t1),
               gimctl_utc(sqlite3_column_int64(st, 8), t2, sizeof t2),
               gimctl_utc(sqlite3_column_int64(st, 6), t3, sizeof t3), text_or_dash(st, 3));
    }
    if (step != SQLITE_DONE) {
        rc = sql_error(db, "devices");
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* --- export ------------------------------------------------------------------------------- */

/* True when s[0..n) is valid UTF-8 (RFC 3629: no overlongs, surrogates or code points past
 * U+10FFFF): glibc's iconv decodes it into UTF-16, which cannot hold anything else. */
static bool valid_utf8(iconv_t cd, const char *s, size_t n)
{
    char buf[1024];
    char *in = (char *)s;
    size_t left = n;
    iconv(cd, NULL, NULL, NULL, NULL); /* a fresh conversion state */
    while (left > 0) {
        char *out = buf;
        size_t room = sizeof buf;
        if (iconv(cd, &in, &left, &out, &room) == (size_t)-1 && errno != E2BIG)
            return false; /* EILSEQ: invalid; EINVAL: cut short at the end */
    }
    return true;
}

/* s (valid UTF-8, n bytes) as a JSON string: RFC 8259 escapes for ", \ and controls. */
static void json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            fputs("\\\"", stdout);
            break;
        case '\\':
            fputs("\\\\", stdout);
            break;
        case '\n':
            fputs("\\n", stdout);
            break;
        case '\r':
            fputs("\\r", stdout);
            break;
        case '\t':
            fputs("\\t", stdout);
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    putchar('"');
}

/* s as one CSV field: always quoted, quotes doubled (RFC 4180); bytes otherwise as they are. */
static void csv_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            putchar('"');
        putchar(s[i]);
    }
    putchar('"');
}

static void hex(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

/*
 * The text of an MT_TEXT message when its content is exactly one pb.Text
 * whose string is valid UTF-8 (*out is the caller's: pb__text__free_unpacked);
 * NULL for anything else, which is exported as hex instead. Re-encoding must
 * give the stored size back: a string with a NUL byte or extra fields does
 * not survive protobuf-c's char * intact.
 */
static Pb__Text *exact_text(iconv_t cd, const Pb__Message *m)
{
    if (m->message_type != PB__MESSAGE_TYPE__MT_TEXT || m->status == PB__MESSAGE_STATUS__MS_RECALL)
        return NULL;
    const ProtobufCBinaryData *c = &m->message_content;
    Pb__Text *t = pb__text__unpack(NULL, c->len, c->data);
    if (t && pb__text__get_packed_size(t) == c->len && valid_utf8(cd, t->text, strlen(t->text)))
        return t;
    if (t)
        pb__text__free_unpacked(t, NULL);
    return NULL;
}

static const char EXPORT_COLUMNS[] =
    "source,user_id,seq,message_id,send_time,sent_utc,sender_type,sender_id,sender_device_id,"
    "receiver_type,receiver_id,to_user_ids,type,status,content_bytes,text,content_hex";

/* One exported message; column COL_ID is NULL for a room message. */
static void export_row(iconv_t cd, sqlite3_stmt *st, const Pb__Message *m, int64_t user, bool csv)
{
    char b1[16], b2[16], b3[16], b4[16], t[40];
    bool room = sqlite3_column_type(st, COL_ID) == SQLITE_NULL;
    Pb__Text *text = exact_text(cd, m);
    bool recalled = m->status == PB__MESSAGE_STATUS__MS_RECALL;
    const char *sep = csv ? "," : "";
    const char *sender = gimctl_enum_name(&pb__sender_type__descriptor,
                                          m->sender ? m->sender->sender_type : 0, b1, sizeof b1);
    const char *rtype =
        gimctl_enum_name(&pb__receiver_type__descriptor, m->receiver_type, b2, sizeof b2);
    const char *type =
        gimctl_enum_name(&pb__message_type__descriptor, m->message_type, b3, sizeof b3);
    const char *status =
        gimctl_enum_name(&pb__message_status__descriptor, m->status, b4, sizeof b4);
    gimctl_utc(m->send_time, t, sizeof t);
    if (csv) {
        printf("%s,%lld,%lld,", room ? "room" : "inbox", (long long)user, (long long)m->seq);
        if (!room)
            printf("%lld", (long long)sqlite3_column_int64(st, COL_ID));
        printf(",%lld,%s,%s,%lld,%lld,%s,%lld,", (long long)m->send_time, t, sender,
               (long long)(m->sender ? m->sender->sender_id : 0),
               (long long)(m->sender ? m->sender->device_id : 0), rtype, (long long)m->receiver_id);
    } else {
        printf("{\"source\":\"%s\",\"user_id\":%lld,\"seq\":%lld,\"message_id\":",
               room ? "room" : "inbox", (long long)user, (long long)m->seq);
        if (room)
            fputs("null", stdout);
        else
            printf("%lld", (long long)sqlite3_column_int64(st, COL_ID));
        printf(",\"send_time\":%lld,\"sent_utc\":\"%s\",\"sender_type\":\"%s\",\"sender_id\":%lld,"
               "\"sender_device_id\":%lld,\"receiver_type\":\"%s\",\"receiver_id\":%lld,"
               "\"to_user_ids\":[",
               (long long)m->send_time, t, sender,
               (long long)(m->sender ? m->sender->sender_id : 0),
               (long long)(m->sender ? m->sender->device_id : 0), rtype, (long long)m->receiver_id);
    }
    for (size_t i = 0; i < m->n_to_user_ids; i++)
        printf("%s%lld", i ? (csv ? " " : ",") : "", (long long)m->to_user_ids[i]);
    if (csv)
        printf(",%s,%s,%zu,", type, status, m->message_content.len);
    else
        printf("],\"type\":\"%s\",\"status\":\"%s\",\"content_bytes\":%zu,\"text\":", type, status,
               m->message_content.len);
    if (text)
        (csv ? csv_string : json_string)(text->text, strlen(text->text));
    else if (!csv)
        fputs("null", stdout);
    printf("%s%s", sep, csv ? "" : ",\"content_hex\":");
    if (!text && !recalled) {
        if (!csv)
            putchar('"');
        hex(m->message_content.data, m->message_content.len);
        if (!csv)
            putchar('"');
    } else if (!csv) {
        fputs("null", stdout);
    }
    fputs(csv ? "\r\n" : "}\n", stdout);
    if (text)
        pb__text__free_unpacked(text, NULL);
}

/* Exports the rows of st (bound, not stepped); 0, or 1 after saying why. */
static int export_rows(sqlite3 *db, iconv_t cd, sqlite3_stmt *st, int64_t user, bool csv)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct arena a = {0};
        struct message_view *v = row_message(st, &a);
        if (!v) {
            arena_free(&a);
            fprintf(stderr, "gimctl export: out of memory\n");
            return 1;
        }
        export_row(cd, st, &v->msg, user, csv);
        arena_free(&a);
        if (ferror(stdout))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_error(db, "export");
    return 0;
}

int gimctl_export(struct gimctl *g, int argc, char **argv)
{
    struct ropts o;
    sqlite3_stmt *inbox = NULL, *rooms = NULL;
    iconv_t cd = (iconv_t)-1;
    int rc = parse("export", argc, argv, "--user --format", 1, &o);
    if (rc != 0)
        return rc;
    bool csv = strcmp(o.format, "csv") == 0;
    sqlite3 *db = gimctl_open_ro(g->db);
    if (!db)
        return 1;
    rc = 1;
    if ((cd = iconv_open("UTF-16LE", "UTF-8")) == (iconv_t)-1) {
        fprintf(stderr, "gimctl export: iconv: %s\n", strerror(errno));
        goto out;
    }
    /* One snapshot for both parts: a message sent meanwhile is in neither or in both. */
    if (begin_user(db, "export", g->db, o.user) != 0)
        goto out;
    if (GIMCTL_PREPARE(db, SQL_EXPORT_INBOX, &inbox, STORE_INT(o.user), STORE_INT(1)) !=
            SQLITE_OK ||
        GIMCTL_PREPARE(db, SQL_ROOM_SENT, &rooms, STORE_INT(o.user)) != SQLITE_OK) {
        rc = sql_error(db, "export");
        goto out;
    }
    if (csv)
        printf("%s\r\n", EXPORT_COLUMNS);
    if (export_rows(db, cd, inbox, o.user, csv) != 0 ||
        export_rows(db, cd, rooms, o.user, csv) != 0)
        goto out;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "gimctl export: cannot write the output: %s\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (cd != (iconv_t)-1)
        iconv_close(cd);
    sqlite3_finalize(inbox);
    sqlite3_finalize(rooms);
    sqlite3_close(db);
    return rc;
}
