/*
 * The tx operations on sqlite (storage.h): the writer's transaction and
 * savepoints, its lock waits, checkpoints and WAL scrub, the /healthz probe.
 * The code is writer.c's and http.c's as it was; why the checkpoints and the
 * scrub run where they do is told in writer.c.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "busy.h"
#include "config.h"
#include "log.h"
#include "storage.h"

/* How long /healthz waits for the write lock before it calls the database unwritable. */
#define HEALTH_BUSY_MS 100

static gim_err begin(struct store_conn *c)
{
    return store_exec(c, "BEGIN IMMEDIATE");
}

/*
 * Two of these run per job: cached statements instead of sqlite3_exec, which
 * parses the text every time. Not measured on its own: it is part of the
 * checkpointer's before/after in docs/benchmarks.md.
 */
static const char SQL_SAVEPOINT[] = "SAVEPOINT job";
static const char SQL_RELEASE[] = "RELEASE job";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO job";

static gim_err step_once(struct store_conn *db, const char *sql)
{
    sqlite3_stmt *st = store_stmt(db, sql);
    if (!st)
        return GIM_EINTERNAL;
    int rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE) {
        log_warn("sql failed", "sql=\"%s\" rc=%d error=\"%s\"", sql, rc, sqlite3_errmsg(db->db));
        return store_err(rc);
    }
    return GIM_OK;
}

/* A lone job keeps its savepoint on SQLite: a local statement, no round trip to save. */
static gim_err savepoint(struct store_conn *c, bool alone)
{
    (void)alone;
    return step_once(c, SQL_SAVEPOINT);
}

static gim_err release(struct store_conn *c, bool alone)
{
    (void)alone;
    return step_once(c, SQL_RELEASE);
}

static gim_err rollback_to(struct store_conn *c, bool alone)
{
    (void)alone;
    if (step_once(c, SQL_ROLLBACK_TO) != GIM_OK || step_once(c, SQL_RELEASE) != GIM_OK)
        return GIM_EINTERNAL;
    return GIM_OK;
}

/* SQLite rolls the whole transaction back by itself on some errors (full disk, I/O). */
static bool lost(const struct store_conn *c)
{
    return sqlite3_get_autocommit(c->db) != 0;
}

static gim_err commit(struct store_conn *c, bool keep)
{
    (void)keep; /* a failed lone job's savepoint is undone already: COMMIT keeps nothing */
    return store_exec(c, "COMMIT");
}

/* A failed COMMIT (busy) leaves the transaction open: it is rolled back here too. */
static void rollback(struct store_conn *c)
{
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static bool in_transaction(const struct store_conn *c)
{
    return !sqlite3_get_autocommit(c->db);
}

static bool retryable(const struct store_conn *c)
{
    (void)c; /* one writer: nothing to deadlock with */
    return false;
}

static void wait_locks(struct store_conn *c, struct busy_wait *b, uint32_t timeout_ms)
{
    if (b)
        sqlite3_busy_handler(c->db, busy_wait_handler, b);
    else
        sqlite3_busy_timeout(c->db, (int)timeout_ms);
}

static void stop_waiting(struct store_conn *c)
{
    (void)c; /* busy_wait_cancel() ends the busy handler's waits */
}

/* The checkpoint connection's busy handler: a few 1 ms naps, never the configured timeout. */
static int ckpt_busy(void *arg, int count)
{
    if (count >= (int)(intptr_t)arg)
        return 0;
    usleep(1000);
    return 1;
}

static gim_err checkpointer_open(const struct gim_config *cfg, struct store_conn *c, int tries,
                                 struct store_conn **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (sqlite3_db_filename(c->db, "main") == NULL || !*sqlite3_db_filename(c->db, "main"))
        return GIM_OK;
    gim_err e = store_open(cfg, STORE_WRITER, out, errbuf, errlen);
    if (e != GIM_OK)
        return e;
    sqlite3_busy_handler((*out)->db, ckpt_busy, (void *)(intptr_t)tries);
    return GIM_OK;
}

/* SQLite's wal_hook, handing the writer the WAL's size after each commit. */
struct wal_hook {
    storage_wal_fn fn;
    void *arg;
};

static int on_wal(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    struct wal_hook *h = arg;
    h->fn(h->arg, frames);
    return SQLITE_OK;
}

static gim_err checkpoint_hook(struct store_conn *c, storage_wal_fn fn, void *arg)
{
    if (!fn) {
        free(sqlite3_wal_hook(c->db, NULL, NULL)); /* ours: see below */
        sqlite3_wal_autocheckpoint(c->db, 1000);   /* SQLite's default */
        return GIM_OK;
    }
    struct wal_hook *h = malloc(sizeof *h);
    if (!h)
        return GIM_ENOMEM;
    h->fn = fn;
    h->arg = arg;
    sqlite3_wal_hook(c->db, on_wal, h); /* replaces wal_autocheckpoint */
    return GIM_OK;
}

static void checkpoint(struct store_conn *c, int *log_frames, int *copied)
{
    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, log_frames, copied);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        log_warn("checkpoint failed", "rc=%d error=\"%s\"", rc, sqlite3_errmsg(c->db));
}

static bool scrub(struct store_conn *db)
{
    int log_frames = -1, copied = -1;
    int rc =
        sqlite3_wal_checkpoint_v2(db->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied);
    /* Frames left behind: a reader holds an older snapshot. TRUNCATE would fail too, after
     * holding the write lock while it waited: do not even try. */
    if (rc != SQLITE_OK || copied < log_frames)
        return false;
    rc = sqlite3_wal_checkpoint_v2(db->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &copied);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        log_warn("wal scrub failed", "rc=%d error=\"%s\"", rc, sqlite3_errmsg(db->db));
    return rc == SQLITE_OK;
}

/* A read-write connection of its own: the writer's is not thread-safe. */
static gim_err health_open(const struct gim_config *cfg, struct store_conn **out, char *errbuf,
                           size_t errlen)
{
    const char *path = cfg->database.path;
    *out = NULL;
    struct store_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(errbuf, errlen, "http: out of memory");
        return GIM_ENOMEM;
    }
    c->backend = STORE_SQLITE;
    c->ops = &storage_sqlite;
    int rc = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(errbuf, errlen, "http: cannot open database %s for health checks: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        store_close(c);
        return GIM_EIO;
    }
    sqlite3_busy_timeout(c->db, HEALTH_BUSY_MS);
    *out = c;
    return GIM_OK;
}

/* Takes and drops the write lock: cheap, and it fails exactly when the writer could not write
 * (locked, read-only, I/O error). */
static bool health_writable(struct store_conn *c, char *reason, size_t len)
{
    if (sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK) {
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        return true;
    }
    snprintf(reason, len, "database not writable: %s", sqlite3_errmsg(c->db));
    return false;
}

static const char *location(const struct gim_config *cfg)
{
    return cfg->database.path;
}

const struct storage_tx_ops storage_sqlite_tx = {
    .begin = begin,
    .savepoint = savepoint,
    .release = release,
    .rollback_to = rollback_to,
    .lost = lost,
    .commit = commit,
    .rollback = rollback,
    .in_transaction = in_transaction,
    .retryable = retryable,
    .sqlstate = NULL,
    .lock_batch = NULL,
    .wait_locks = wait_locks,
    .stop_waiting = stop_waiting,
    .checkpointer_open = checkpointer_open,
    .checkpoint_hook = checkpoint_hook,
    .checkpoint = checkpoint,
    .scrub = scrub,
    .health_open = health_open,
    .health_writable = health_writable,
    .schema_version = store_schema_version,
    .location = location,
};
