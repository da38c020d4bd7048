/*
 * gimctl stats | user U | backup FILE: the operator's look at the database
 * (--db), safe while gim-logic runs.
 *
 * stats and user only read, in one read transaction each (one consistent
 * snapshot; WAL lets the service write meanwhile). backup copies the live
 * database with SQLite's online backup API in a single step, so the copy is
 * one snapshot too and the service is never blocked; it writes FILE.partial
 * and renames it only after the copy passed a quick_check, so FILE is either
 * a good backup or absent.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gimctl.h"
#include "storage/sqlite_int.h"

#define BUSY_MS 5000

const char gimctl_usage_stats[] = "usage: gimctl [--db PATH] stats\n"
                                  "  counts and file sizes of the database (read-only)\n";
const char gimctl_usage_user[] =
    "usage: gimctl [--db PATH] user USER_ID\n"
    "  a user's devices, presence, last seq and acks (read-only); exit status 1\n"
    "  and `no user U` on stderr when no device, seq or message names the user\n";
const char gimctl_usage_backup[] =
    "usage: gimctl [--db PATH] backup FILE\n"
    "  online backup to FILE (must not exist), checked before it is renamed into place\n";

/* Bad arguments (!ok) are a usage error (2); -1 = go on. (main() answers --help.) */
static int check_args(int argc, char **argv, bool ok)
{
    if (ok)
        return -1;
    if (argc > 1)
        return gimctl_usage_error(argv[0], "unexpected or bad argument '%s'", argv[argc - 1]);
    return gimctl_usage_error(argv[0], "missing argument");
}

static const char SQL_SCHEMA[] = "SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name IN ('message', 'inbox', 'device', 'user_seq')";
static const char SQL_VERSION[] = "SELECT max(version) FROM schema_migrations";
static const char SQL_MESSAGES[] = "SELECT count(*) FROM message";
static const char SQL_INBOX[] = "SELECT count(*) FROM inbox";
/* Users with a counter or a device. The inbox's users are found by one seek each (a skip
 * scan), not by reading every entry. */
static const char SQL_USERS[] =
    "WITH RECURSIVE u(id) AS (SELECT min(user_id) FROM inbox UNION ALL SELECT (SELECT "
    "min(user_id) FROM inbox WHERE user_id > u.id) FROM u WHERE u.id IS NOT NULL) "
    "SELECT count(*) FROM (SELECT id FROM u WHERE id IS NOT NULL UNION SELECT user_id FROM "
    "user_seq UNION SELECT user_id FROM device)";
static const char SQL_DEVICES[] = "SELECT count(*), coalesce(sum(online <> 0), 0) FROM device";
static const char SQL_GROUPS[] =
    "SELECT count(*), (SELECT count(*) FROM group_member) FROM chat_group";
static const char SQL_ROOMS[] =
    "SELECT count(*), (SELECT count(*) FROM room_message) FROM room_seq";
static const char SQL_USER_SEQ[] = SQL_USER_LAST_SEQ; /* not the view: it scans */
static const char SQL_USER_INBOX[] =
    "SELECT count(*), min(seq), max(seq) FROM inbox WHERE user_id = ?1";
static const char SQL_USER_DEVICES[] =
    "SELECT device_id, online, gateway_id, client_addr, room_id, ack_seq, ack_time, signed_in_at, "
    "updated_at FROM device WHERE user_id = ?1 ORDER BY device_id";

/* Opens --db read-only; prints why and returns NULL when it is not a gim-logic database. */
static sqlite3 *open_db(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "gimctl: no database at %s: %s (use --db PATH)\n", path, strerror(errno));
        return NULL;
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "gimctl: cannot open %s: %s\n", path, sqlite3_errmsg(db));
        goto fail;
    }
    sqlite3_busy_timeout(db, BUSY_MS);
    if (sqlite3_prepare_v2(db, SQL_SCHEMA, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        fprintf(stderr, "gimctl: cannot read %s: %s\n", path, sqlite3_errmsg(db));
        goto fail;
    }
    if (sqlite3_column_int(st, 0) != 4) {
        fprintf(stderr, "gimctl: %s is not a gim-logic database\n", path);
        goto fail;
    }
    sqlite3_finalize(st);
    return db;
fail:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

/* Runs sql (one int64 parameter when param != 0) and copies the first row's n columns to v. */
static int row(sqlite3 *db, const char *sql, int64_t param, int64_t *v, int n)
{
    sqlite3_stmt *st = NULL;
    const struct store_val p = STORE_INT(param);
    int rc = gimctl_prepare(db, sql, &st, &p, param ? 1 : 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    for (int i = 0; i < n; i++)
        v[i] = rc == SQLITE_ROW ? sqlite3_column_int64(st, i) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fprintf(stderr, "gimctl: query failed: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static long long file_bytes(const char *path, const char *suffix)
{
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, &sb) == 0 ? (long long)sb.st_size : 0;
}

/* ms since the epoch as "2024-01-02T03:04:05.678Z", or "-" for 0. */
static const char *utc(int64_t ms, char *buf, size_t len)
{
    struct tm tm;
    time_t t = (time_t)(ms / 1000);
    if (ms <= 0 || !gmtime_r(&t, &tm))
        return "-";
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
    return buf;
}

int gimctl_stats(struct gimctl *g, int argc, char **argv)
{
    int64_t version = 0, messages = 0, inbox = 0, users = 0, dev[2] = {0}, grp[2] = {0},
            rooms[2] = {0};
    int rc = check_args(argc, argv, argc == 1);
    if (rc >= 0)
        return rc;
    rc = 1;
    sqlite3 *db = open_db(g->db);
    if (!db)
        return 1;
    /* One snapshot: the counts agree with each other. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        row(db, SQL_VERSION, 0, &version, 1) || row(db, SQL_MESSAGES, 0, &messages, 1) ||
        row(db, SQL_INBOX, 0, &inbox, 1) || row(db, SQL_USERS, 0, &users, 1) ||
        row(db, SQL_DEVICES, 0, dev, 2) || row(db, SQL_GROUPS, 0, grp, 2) ||
        row(db, SQL_ROOMS, 0, rooms, 2))
        goto out;
    printf("database          %s\n", g->db);
    printf("schema_version    %lld\n", (long long)version);
    printf("db_bytes          %lld\n", file_bytes(g->db, ""));
    printf("wal_bytes         %lld\n", file_bytes(g->db, "-wal"));
    printf("messages          %lld\n", (long long)messages);
    printf("inbox_entries     %lld\n", (long long)inbox);
    printf("users             %lld\n", (long long)users);
    printf("devices_online    %lld\n", (long long)dev[1]);
    printf("devices_total     %lld\n", (long long)dev[0]);
    printf("groups            %lld\n", (long long)grp[0]);
    printf("group_members     %lld\n", (long long)grp[1]);
    printf("rooms             %lld\n", (long long)rooms[0]);
    printf("room_messages     %lld\n", (long long)rooms[1]);
    rc = 0;
out:
    sqlite3_close(db); /* ends the read transaction */
    return rc;
}

int gimctl_user(struct gimctl *g, int argc, char **argv)
{
    int64_t user = 0, last_seq = 0, inbox[3] = {0};
    sqlite3_stmt *st = NULL;
    char t1[40], t2[40], t3[40];
    int step;
    int rc = check_args(argc, argv, argc == 2 && gimctl_parse_id(argv[1], &user) == 0);
    if (rc >= 0)
        return rc;
    rc = 1;
    sqlite3 *db = open_db(g->db);
    if (!db)
        return 1;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        row(db, SQL_USER_SEQ, user, &last_seq, 1) || row(db, SQL_USER_INBOX, user, inbox, 3))
        goto out;
    if (GIMCTL_PREPARE(db, SQL_USER_DEVICES, &st, STORE_INT(user)) != SQLITE_OK)
        goto out;
    /* A user that no seq, inbox entry or device names does not exist: most likely a typo, so
     * say so (exit 1) before printing anything, instead of a user with zero of everything. */
    if (last_seq == 0 && inbox[0] == 0 && (step = sqlite3_step(st)) != SQLITE_ROW) {
        if (step != SQLITE_DONE)
            fprintf(stderr, "gimctl: query failed: %s\n", sqlite3_errmsg(db));
        else
            fprintf(stderr, "gimctl user: no user %lld in %s (no devices, no messages)\n",
                    (long long)user, g->db);
        goto out;
    }
    sqlite3_reset(st);
    printf("user              %lld\n", (long long)user);
    printf("last_seq          %lld\n", (long long)last_seq);
    printf("inbox_entries     %lld (seq %lld..%lld)\n", (long long)inbox[0], (long long)inbox[1],
           (long long)inbox[2]);
    printf("%-20s %-8s %-16s %-16s %-8s %-8s %-24s %-24s %s\n", "device", "presence", "gateway",
           "client_addr", "room", "ack_seq", "ack_time", "signed_in", "updated");
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        printf("%-20lld %-8s %-16s %-16s %-8lld %-8lld %-24s %-24s %s\n",
               (long long)sqlite3_column_int64(st, 0),
               sqlite3_column_int(st, 1) ? "online" : "offline",
               *sqlite3_column_text(st, 2) ? (const char *)sqlite3_column_text(st, 2) : "-",
               *sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3) : "-",
               (long long)sqlite3_column_int64(st, 4), (long long)sqlite3_column_int64(st, 5),
               utc(sqlite3_column_int64(st, 6), t1, sizeof t1),
               utc(sqlite3_column_int64(st, 7), t2, sizeof t2),
               utc(sqlite3_column_int64(st, 8), t3, sizeof t3));
    }
    if (step != SQLITE_DONE) {
        fprintf(stderr, "gimctl: query failed: %s\n", sqlite3_errmsg(db));
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* The whole database in one backup step: one read transaction, one consistent snapshot. */
static int copy_db(sqlite3 *src, sqlite3 *dst)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc;
    if (!b) {
        fprintf(stderr, "gimctl: backup: %s\n", sqlite3_errmsg(dst));
        return -1;
    }
    for (int tries = 0;; tries++) {
        rc = sqlite3_backup_step(b, -1);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || tries * 100 >= BUSY_MS)
            break;
        sqlite3_sleep(100);
    }
    int pages = sqlite3_backup_pagecount(b);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "gimctl: backup failed: %s\n", sqlite3_errstr(rc));
        return -1;
    }
    return pages;
}

static int quick_check(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW &&
             strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

int gimctl_backup(struct gimctl *g, int argc, char **argv)
{
    char partial[4096];
    struct stat sb;
    sqlite3 *dst = NULL;
    int pages;
    int rc = check_args(argc, argv, argc == 2 && *argv[1] && *argv[1] != '-');
    if (rc >= 0)
        return rc;
    rc = 1;
    const char *file = argv[1];
    if (stat(file, &sb) == 0) {
        fprintf(stderr, "gimctl: %s exists; not overwriting it\n", file);
        return 1;
    }
    if ((size_t)snprintf(partial, sizeof partial, "%s.partial", file) >= sizeof partial) {
        fprintf(stderr, "gimctl: path too long: %s\n", file);
        return 2;
    }
    sqlite3 *src = open_db(g->db);
    if (!src)
        return 1;
    unlink(partial); /* a leftover of an interrupted backup */
    if (sqlite3_open_v2(partial, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "gimctl: cannot create %s: %s\n", partial, sqlite3_errmsg(dst));
        goto out;
    }
    if ((pages = copy_db(src, dst)) < 0)
        goto out;
    if (quick_check(dst) != 0) {
        fprintf(stderr, "gimctl: the copy in %s failed quick_check\n", partial);
        goto out;
    }
    if (sqlite3_close(dst) != SQLITE_OK) {
        fprintf(stderr, "gimctl: cannot close %s\n", partial);
        goto out;
    }
    dst = NULL;
    if (rename(partial, file) != 0) {
        fprintf(stderr, "gimctl: cannot rename %s to %s: %s\n", partial, file, strerror(errno));
        goto out;
    }
    printf("backup %s: %d pages, %lld bytes\n", file, pages, file_bytes(file, ""));
    rc = 0;
out:
    if (dst)
        sqlite3_close(dst);
    if (rc != 0)
        unlink(partial);
    sqlite3_close(src);
    return rc;
}

/* For the read-only commands of gimctl_read.c. */
struct sqlite3 *gimctl_open_ro(const char *path)
{
    return open_db(path);
}

const char *gimctl_utc(int64_t ms, char *buf, size_t len)
{
    return utc(ms, buf, len);
}
