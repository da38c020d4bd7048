/*
 * pagecache: SQLite's page cache without the walk at every commit
 * (src/storage/pagecache.h). Real SQLite connections on a real file in WAL
 * mode. Below the module sits a recording page cache over SQLite's default
 * one: it keeps the number of every page it holds and applies the default
 * cache's own rule for when a truncate must scan (its highest number since
 * its last truncate at or above the limit), so the tests see what reaches
 * SQLite's cache, not the module's own counters. Each test is its own
 * process (Criterion's default), so each configures SQLite afresh.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/pagecache.h"

static char dir[64], path[96];

/* ---- the recording cache: SQLite's default one underneath ---- */

#define HELD_MAX 65536 /* pages held at once; the tests' caches stay below (no eviction) */

static sqlite3_pcache_methods2 def;
static struct {
    sqlite3_pcache *cache; /* the one cache recorded (the writer's: created first) */
    sqlite3_pcache_page *page[HELD_MAX];
    unsigned key[HELD_MAX];
    unsigned n;
    unsigned seen_max;    /* highest number held since the last truncate, as pcache1 keeps it */
    unsigned high_rekeys; /* renames to a number past the database's end (the temporary one) */
    unsigned truncates;   /* truncates that reached this cache */
    unsigned scanning;    /* of those, ones the default cache scans for */
    unsigned lowered;     /* of those, with a limit below the one before */
    unsigned last_limit;
    unsigned stale_after; /* truncates after which a page at or above the limit was still held */
} rec;

static void held_set(sqlite3_pcache_page *page, unsigned key)
{
    for (unsigned i = 0; i < rec.n; i++)
        if (rec.page[i] == page) {
            rec.key[i] = key;
            return;
        }
    cr_assert_lt(rec.n, HELD_MAX);
    rec.page[rec.n] = page;
    rec.key[rec.n++] = key;
}

static void held_drop(sqlite3_pcache_page *page)
{
    for (unsigned i = 0; i < rec.n; i++)
        if (rec.page[i] == page) {
            rec.page[i] = rec.page[--rec.n];
            rec.key[i] = rec.key[rec.n];
            return;
        }
}

static int r_init(void *a)
{
    (void)a;
    return def.xInit(def.pArg);
}
static void r_shutdown(void *a)
{
    (void)a;
    def.xShutdown(def.pArg);
}
static sqlite3_pcache *r_create(int sz, int extra, int purgeable)
{
    sqlite3_pcache *c = def.xCreate(sz, extra, purgeable);
    /* The writer's main database cache is the first purgeable one of a file-backed db. */
    if (c && purgeable && !rec.cache)
        rec.cache = c;
    return c;
}
static void r_cachesize(sqlite3_pcache *c, int n)
{
    def.xCachesize(c, n);
}
static int r_pagecount(sqlite3_pcache *c)
{
    return def.xPagecount(c);
}
static sqlite3_pcache_page *r_fetch(sqlite3_pcache *c, unsigned key, int create)
{
    sqlite3_pcache_page *p = def.xFetch(c, key, create);
    if (p && c == rec.cache) {
        held_set(p, key);
        if (key > rec.seen_max)
            rec.seen_max = key;
    }
    return p;
}
static void r_unpin(sqlite3_pcache *c, sqlite3_pcache_page *p, int discard)
{
    if (discard && c == rec.cache)
        held_drop(p);
    def.xUnpin(c, p, discard);
}
static void r_rekey(sqlite3_pcache *c, sqlite3_pcache_page *p, unsigned o, unsigned n)
{
    if (c == rec.cache) {
        held_set(p, n);
        if (n > rec.seen_max)
            rec.seen_max = n;
        if (rec.last_limit && n >= rec.last_limit + 1000)
            rec.high_rekeys++;
    }
    def.xRekey(c, p, o, n);
}
static void r_truncate(sqlite3_pcache *c, unsigned limit)
{
    if (c == rec.cache) {
        rec.truncates++;
        if (rec.seen_max >= limit)
            rec.scanning++;
        if (limit < rec.last_limit)
            rec.lowered++;
        rec.last_limit = limit;
        rec.seen_max = limit ? limit - 1 : 0;
        for (unsigned i = 0; i < rec.n;)
            if (rec.key[i] >= limit) {
                rec.page[i] = rec.page[--rec.n];
                rec.key[i] = rec.key[rec.n];
            } else {
                i++;
            }
    }
    def.xTruncate(c, limit);
}
static void r_destroy(sqlite3_pcache *c)
{
    if (c == rec.cache) {
        rec.cache = NULL;
        rec.n = 0;
    }
    def.xDestroy(c);
}
static void r_shrink(sqlite3_pcache *c)
{
    def.xShrink(c);
}

static const sqlite3_pcache_methods2 recorder = {
    .iVersion = 1,
    .xInit = r_init,
    .xShutdown = r_shutdown,
    .xCreate = r_create,
    .xCachesize = r_cachesize,
    .xPagecount = r_pagecount,
    .xFetch = r_fetch,
    .xUnpin = r_unpin,
    .xRekey = r_rekey,
    .xTruncate = r_truncate,
    .xDestroy = r_destroy,
    .xShrink = r_shrink,
};

/* ---- on top of everything: checks what the truncates left ---- */

static sqlite3_pcache_methods2 top_base;

static sqlite3_pcache *top_cache; /* the writer's cache as SQLite sees it */

static sqlite3_pcache *c_create(int sz, int extra, int purgeable)
{
    sqlite3_pcache *c = top_base.xCreate(sz, extra, purgeable);
    if (c && purgeable && !top_cache) /* as r_create: the same cache, one level up */
        top_cache = c;
    return c;
}

static void c_truncate(sqlite3_pcache *c, unsigned limit)
{
    top_base.xTruncate(c, limit);
    /* Whatever was skipped: the default cache must not hold a page numbered >= limit now. */
    if (c == top_cache && rec.cache)
        for (unsigned i = 0; i < rec.n; i++)
            if (rec.key[i] >= limit) {
                rec.stale_after++;
                break;
            }
}

static void configure(bool wrap, bool check)
{
    cr_assert_eq(sqlite3_shutdown(), SQLITE_OK);
    cr_assert_eq(sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &def), SQLITE_OK);
    cr_assert_eq(sqlite3_config(SQLITE_CONFIG_PCACHE2, &recorder), SQLITE_OK);
    if (wrap)
        cr_assert_eq(pagecache_install(), GIM_OK);
    if (check) {
        static sqlite3_pcache_methods2 top;
        cr_assert_eq(sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &top_base), SQLITE_OK);
        top = top_base;
        top.xCreate = c_create;
        top.xTruncate = c_truncate;
        cr_assert_eq(sqlite3_config(SQLITE_CONFIG_PCACHE2, &top), SQLITE_OK);
    }
    cr_assert_eq(sqlite3_initialize(), SQLITE_OK);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gim-pagecache-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(pagecache, .init = setup, .fini = teardown);

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static sqlite3 *open_writer(const char *extra)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                 SQLITE_OK);
    exec(db, "PRAGMA cache_size = -65536"); /* 64 MiB: the tests' files fit, nothing evicted */
    if (extra)
        exec(db, extra);
    exec(db, "PRAGMA journal_mode = WAL");
    exec(db, "PRAGMA synchronous = OFF"); /* the tests count cache calls, not the disk */
    /* An inbox: rows by (user, seq), users chosen at random, as sends add them. */
    exec(db, "CREATE TABLE IF NOT EXISTS inbox (user_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
             " message_id INTEGER NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID");
    exec(db, "CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, body BLOB)");
    return db;
}

/* n sends in one transaction: a message row and an inbox row for each of two random users. */
static void send_batch(sqlite3 *db, sqlite3_stmt *msg, sqlite3_stmt *box, unsigned *seqs,
                       unsigned users, int n, int64_t *next_id)
{
    exec(db, "BEGIN");
    for (int i = 0; i < n; i++) {
        int64_t id = (*next_id)++;
        char body[100];
        memset(body, 'a' + (int)(id % 26), sizeof body);
        sqlite3_bind_int64(msg, 1, id);
        sqlite3_bind_blob(msg, 2, body, sizeof body, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(msg), SQLITE_DONE);
        sqlite3_reset(msg);
        for (int k = 0; k < 2; k++) {
            unsigned u = (unsigned)rand() % users;
            sqlite3_bind_int(box, 1, (int)u);
            sqlite3_bind_int(box, 2, (int)++seqs[u]);
            sqlite3_bind_int64(box, 3, id);
            cr_assert_eq(sqlite3_step(box), SQLITE_DONE);
            sqlite3_reset(box);
        }
    }
    exec(db, "COMMIT");
}

/* A send's two statements (send_batch), the caller's to finalize. */
static void prepare_sends(sqlite3 *db, sqlite3_stmt **msg, sqlite3_stmt **box)
{
    cr_assert_eq(
        sqlite3_prepare_v2(db, "INSERT INTO message (id, body) VALUES (?, ?)", -1, msg, NULL),
        SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "INSERT INTO inbox (user_id, seq, message_id) VALUES (?, ?, ?)",
                                    -1, box, NULL),
                 SQLITE_OK);
}

/* Commits of sends into a small database; returns the number of commits. */
static int run_sends(sqlite3 *db, int commits)
{
    sqlite3_stmt *msg, *box;
    prepare_sends(db, &msg, &box);
    /* Across calls: a test that sends twice goes on where it stopped. */
    static unsigned seqs[2000];
    static int64_t next_id = 1;
    for (int c = 0; c < commits; c++)
        send_batch(db, msg, box, seqs, 2000, 25, &next_id);
    sqlite3_finalize(msg);
    sqlite3_finalize(box);
    return commits;
}

static int64_t count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* n rows through st, a one-parameter INSERT: parameter first, first + 1, ... when step is 1, or
 * a random size of 500..4499 bytes for every row when step is 0. */
static void insert_n(sqlite3_stmt *st, int n, int first, int step)
{
    for (int i = 0; i < n; i++) {
        sqlite3_bind_int(st, 1, step ? first + i : 500 + rand() % 4000);
        cr_assert_eq(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
}

static void expect_intact(sqlite3 *db, int64_t messages)
{
    struct pagecache_stats s;
    pagecache_stats(&s);
    cr_log_info("truncates reaching the default cache %u (scanning %u, lowered %u), high renames "
                "%u; the module's: %llu, skipped %llu",
                rec.truncates, rec.scanning, rec.lowered, rec.high_rekeys,
                (unsigned long long)s.truncates, (unsigned long long)s.skipped);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_expect_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    cr_expect_eq(count(db, "SELECT count(*) FROM message"), messages);
    cr_expect_eq(count(db, "SELECT count(*) FROM inbox"), 2 * messages);
    cr_expect_eq(count(db, "SELECT count(*) FROM inbox LEFT JOIN message ON id = message_id"
                           " WHERE id IS NULL"),
                 0);
}

/* After shapes that lower the limit: some truncates were skipped, some went through, and none
 * left a page at or above its limit. */
static void expect_dropped_where_needed(void)
{
    cr_expect_gt(rec.lowered, 0, "no truncate lowered the limit");
    cr_expect_eq(rec.stale_after, 0, "a truncate left a page past its limit");
    struct pagecache_stats s;
    pagecache_stats(&s);
    cr_expect_gt(s.skipped, 0);
    cr_expect_lt(s.skipped, s.truncates);
}

/* The control: without the module, the commits of a small database make the default cache
 * scan, because a b-tree split renames a page through a number far past the end. If this
 * fails, this SQLite no longer does that and the module saves nothing. */
Test(pagecache, without_it_the_commits_of_a_small_database_scan_the_cache)
{
    configure(false, false);
    sqlite3 *db = open_writer(NULL);
    int commits = run_sends(db, 400);
    cr_assert_gt(rec.high_rekeys, 0, "no page was renamed far past the end");
    cr_expect_gt(rec.scanning, (unsigned)commits / 4, "%u scanning truncates in %d commits",
                 rec.scanning, commits);
    expect_intact(db, 400 * 25);
    sqlite3_close(db);
}

Test(pagecache, a_commit_after_a_split_does_not_scan_the_cache)
{
    configure(true, true);
    sqlite3 *db = open_writer(NULL);
    int commits = run_sends(db, 400);
    struct pagecache_stats s;
    pagecache_stats(&s);
    cr_assert_gt(rec.high_rekeys, 0, "no page was renamed far past the end");
    /* The first truncate proves nothing yet and goes through; the commits after it do not
     * reach the default cache at all. */
    cr_expect_leq(rec.scanning, 1, "%u scanning truncates in %d commits", rec.scanning, commits);
    cr_expect_geq(s.skipped, (uint64_t)commits - 2, "%llu of %llu truncates skipped",
                  (unsigned long long)s.skipped, (unsigned long long)s.truncates);
    cr_expect_eq(rec.stale_after, 0, "a truncate left a page past its limit");
    expect_intact(db, 400 * 25);
    sqlite3_close(db);
}

/*
 * Rollbacks that leave pages past the end, a savepoint's among them, and a file that shrinks
 * (incremental vacuum): every truncate that has something to drop reaches the default cache,
 * and after each one no page at or above its limit is held.
 */
Test(pagecache, truncates_with_pages_to_drop_still_drop_them)
{
    configure(true, true);
    sqlite3 *db = open_writer("PRAGMA auto_vacuum = INCREMENTAL");
    run_sends(db, 40);
    int64_t before = count(db, "PRAGMA page_count");
    sqlite3_stmt *ins;
    cr_assert_eq(sqlite3_prepare_v2(db, "INSERT INTO message (id, body) VALUES (?, zeroblob(3000))",
                                    -1, &ins, NULL),
                 SQLITE_OK);
    /* A transaction that grows the file by hundreds of pages, rolled back. */
    exec(db, "BEGIN");
    insert_n(ins, 300, 100000, 1);
    exec(db, "ROLLBACK");
    cr_expect_eq(count(db, "PRAGMA page_count"), before);
    /* A savepoint's growth undone inside a transaction that commits something else. */
    exec(db, "BEGIN");
    exec(db, "SAVEPOINT s");
    insert_n(ins, 300, 200000, 1);
    exec(db, "ROLLBACK TO s");
    exec(db, "RELEASE s");
    exec(db, "DELETE FROM message WHERE id = 1");
    exec(db, "DELETE FROM inbox WHERE message_id = 1");
    exec(db, "COMMIT");
    /* Growth committed, then deleted and the file shrunk: a lower limit. */
    exec(db, "BEGIN");
    insert_n(ins, 300, 300000, 1);
    exec(db, "COMMIT");
    int64_t grown = count(db, "PRAGMA page_count");
    cr_assert_gt(grown, before + 200);
    exec(db, "DELETE FROM message WHERE id >= 300000");
    exec(db, "PRAGMA incremental_vacuum");
    cr_expect_lt(count(db, "PRAGMA page_count"), grown - 200);
    sqlite3_finalize(ins);
    /* And the sends go on over the pages just given back. */
    run_sends(db, 40);

    expect_dropped_where_needed();
    expect_intact(db, 2 * 40 * 25 - 1);
    sqlite3_close(db);
}

Test(pagecache, too_late_changes_nothing_and_says_so)
{
    cr_assert_eq(sqlite3_initialize(), SQLITE_OK);
    cr_expect_eq(pagecache_install(), GIM_EINTERNAL);
    cr_expect_eq(pagecache_install(), GIM_EINTERNAL, "a later call tried again");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(":memory:", &db), SQLITE_OK);
    exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    struct pagecache_stats s;
    pagecache_stats(&s);
    cr_expect_eq(s.truncates, 0);
    sqlite3_close(db);
}

/*
 * The same check over 300 transactions of random shapes, one seed: sends, growth rolled back
 * whole or to a savepoint, growth committed and deleted, incremental vacuums of random sizes.
 */
Test(pagecache, random_transactions_leave_nothing_past_any_limit)
{
    configure(true, true);
    sqlite3 *db = open_writer("PRAGMA auto_vacuum = INCREMENTAL");
    exec(db, "CREATE TABLE bulk (id INTEGER PRIMARY KEY, b BLOB)");
    sqlite3_stmt *msg, *box, *bulk;
    prepare_sends(db, &msg, &box);
    cr_assert_eq(
        sqlite3_prepare_v2(db, "INSERT INTO bulk (b) VALUES (zeroblob(?))", -1, &bulk, NULL),
        SQLITE_OK);
    static unsigned seqs[500];
    int64_t next_id = 1, messages = 0;
    srand(11);
    for (int t = 0; t < 300; t++) {
        int n = 1 + rand() % 300;
        switch (rand() % 8) {
        case 0:
        case 1:
        case 2: /* a batch of sends */
            send_batch(db, msg, box, seqs, 500, n % 40 + 1, &next_id);
            messages += n % 40 + 1;
            break;
        case 3: /* growth, then a rollback (whole, or to a savepoint inside a commit) */
        case 4: {
            bool savepoint = rand() % 2;
            exec(db, savepoint ? "BEGIN; SAVEPOINT s" : "BEGIN");
            insert_n(bulk, n, 0, 0);
            exec(db, savepoint ? "ROLLBACK TO s; RELEASE s; DELETE FROM bulk WHERE id IN "
                                 "(SELECT id FROM bulk LIMIT 3); COMMIT"
                               : "ROLLBACK");
            break;
        }
        case 5: /* growth committed */
            exec(db, "BEGIN");
            insert_n(bulk, n, 0, 0);
            exec(db, "COMMIT");
            break;
        case 6: /* part of it deleted */
            exec(db, rand() % 2 ? "DELETE FROM bulk WHERE id % 3 = 0"
                                : "DELETE FROM bulk WHERE id IN (SELECT id FROM bulk ORDER BY id "
                                  "DESC LIMIT 200)");
            break;
        case 7: { /* pages given back to the file system, some or all */
            char sql[64];
            snprintf(sql, sizeof sql, "PRAGMA incremental_vacuum(%d)", rand() % 2 ? n : 0);
            exec(db, sql);
            break;
        }
        }
    }
    sqlite3_finalize(msg);
    sqlite3_finalize(box);
    sqlite3_finalize(bulk);
    expect_dropped_where_needed();
    expect_intact(db, messages);
    sqlite3_close(db);
}
