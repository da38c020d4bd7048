/* Migrations: fresh, already applied, newer-than-binary, and schema/schema.sql equality. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "storage/mapvfs.h"
#include "storage/pagecache.h"
#include "store.h"

static struct gim_config cfg;
static char dir[64];
static char path[128];

static void setup(void)
{
    char err[256];
    snprintf(dir, sizeof dir, "/tmp/gimstore-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
}

static void teardown(void)
{
    char cmd[128];
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(store, .init = setup, .fini = teardown);

static int64_t one_int(struct store_conn *c, const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(c->db, sql, -1, &st, NULL), SQLITE_OK);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return v;
}

Test(store, fresh_database_gets_every_migration)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(one_int(c, "SELECT max(version) FROM schema_migrations"), store_schema_version());
    cr_assert_eq(one_int(c, "SELECT count(*) FROM sqlite_master WHERE name = 'inbox'"), 1);
    cr_assert_eq(one_int(c, "PRAGMA foreign_keys"), 1);
    store_close(c);
}

Test(store, reopening_applies_nothing_twice)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    int64_t n = one_int(c, "SELECT count(*) FROM schema_migrations");
    store_close(c);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(one_int(c, "SELECT count(*) FROM schema_migrations"), n);
    store_close(c);
}

Test(store, newer_database_is_refused)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(store_exec(c, "INSERT INTO schema_migrations VALUES (9999, '9999_future', 0)"),
                 GIM_OK);
    store_close(c);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_ESCHEMA);
    cr_assert_null(c);
    cr_assert(strstr(err, "newer") != NULL, "error says why: %s", err);
}

Test(store, missing_directory_is_a_clear_error)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    free(cfg.database.path);
    cfg.database.path = strdup("/nonexistent-dir/x/gim.db");
    cr_assert_neq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK);
    cr_assert(strstr(err, "/nonexistent-dir/x") != NULL, "error names the directory: %s", err);
}

Test(store, reader_cannot_write)
{
    struct store_conn *w = NULL, *r = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &w, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(store_open(&cfg, STORE_READER, &r, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_neq(store_exec(r, "INSERT INTO user_seq VALUES (1, 1)"), GIM_OK);
    store_close(r);
    store_close(w);
}

/* Dumps sqlite_master (as `.schema` would) into a malloc'ed string. */
static char *dump(sqlite3 *db)
{
    sqlite3_stmt *st;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT type, name, tbl_name, sql FROM sqlite_master "
                                    "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
                                    -1, &st, NULL),
                 SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < 4; i++) {
            const char *t = (const char *)sqlite3_column_text(st, i);
            size_t n = t ? strlen(t) : 0;
            cr_assert(len + n + 2 < cap, "schema too large for the test buffer");
            memcpy(out + len, t ? t : "", n);
            len += n;
            out[len++] = i == 3 ? '\n' : '|';
        }
    }
    sqlite3_finalize(st);
    return out;
}

Test(store, schema_file_equals_all_migrations_applied)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    char *migrated = dump(c->db);
    store_close(c);

    FILE *f = fopen(GIM_SOURCE_DIR "/schema/schema.sql", "r");
    cr_assert_not_null(f, "schema/schema.sql is missing");
    static char text[1 << 17];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    char *msg = NULL;
    cr_assert_eq(sqlite3_exec(db, text, NULL, NULL, &msg), SQLITE_OK, "schema.sql: %s", msg);
    char *declared = dump(db);
    sqlite3_close(db);
    cr_assert_str_eq(declared, migrated,
                     "schema/schema.sql differs from the migrations: run tools/gen-schema.sh");
    free(migrated);
    free(declared);
}

/*
 * A writer with synchronous FULL or EXTRA combines its WAL appends (mapvfs.h),
 * with or without mmap; with NORMAL or OFF it never does: no sync per commit
 * would write the buffer before the commit is visible to other connections.
 */
Test(store, the_writer_combines_wal_writes_only_when_every_commit_syncs)
{
    static const char *const modes[] = {"full", "extra", "normal", "off"};
    for (int i = 0; i < 4; i++) {
        char err[256] = "";
        free(cfg.database.synchronous);
        cfg.database.synchronous = strdup(modes[i]);
        cfg.database.mmap_mb = i % 2 ? 0 : 128;
        struct store_conn *c = NULL;
        cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
        struct mapvfs_stats a, b;
        mapvfs_stats(&a);
        cr_assert_eq(store_exec(c, "CREATE TABLE IF NOT EXISTS big (b BLOB)"), GIM_OK);
        cr_assert_eq(store_exec(c, "BEGIN"), GIM_OK);
        cr_assert_eq(store_exec(c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                   "WHERE i < 500) INSERT INTO big SELECT randomblob(1000) FROM n"),
                     GIM_OK);
        cr_assert_eq(store_exec(c, "COMMIT"), GIM_OK);
        mapvfs_stats(&b);
        uint64_t writes = b.wal_writes - a.wal_writes, flushes = b.wal_flushes - a.wal_flushes;
        if (i < 2) {
            cr_assert_gt(writes, 200, "%s: %llu combined writes", modes[i],
                         (unsigned long long)writes);
            cr_assert_leq(flushes * 10, writes, "%s", modes[i]);
        } else {
            cr_assert_eq(writes, 0, "%s: the WAL's writes were combined", modes[i]);
        }
        store_close(c);
    }
}

/*
 * Every connection the service opens gets the page cache that skips a commit's empty truncate
 * (pagecache.h): installed by the first store_open, before SQLite initialises.
 */
Test(store, connections_use_the_page_cache_without_the_walk)
{
    struct store_conn *c = NULL;
    char err[256] = "";
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &c, err, sizeof err), GIM_OK, "%s", err);
    struct pagecache_stats a, b;
    pagecache_stats(&a);
    cr_assert_eq(store_exec(c, "CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY, b BLOB)"),
                 GIM_OK);
    for (int i = 0; i < 20; i++)
        cr_assert_eq(store_exec(c, "INSERT INTO t (b) VALUES (randomblob(500))"), GIM_OK);
    pagecache_stats(&b);
    cr_expect_geq(b.truncates - a.truncates, 20, "%llu truncates for 20 commits",
                  (unsigned long long)(b.truncates - a.truncates));
    cr_expect_geq(b.skipped - a.skipped, 19, "%llu skipped",
                  (unsigned long long)(b.skipped - a.skipped));
    store_close(c);
}
