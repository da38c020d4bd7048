#include "store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "migration.h"
#include "pgstore.h"
#include "storage.h"
#include "storage/mapvfs.h"
#include "storage/pagecache.h"

static const char SQL_MIGRATIONS_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_migrations (\n"
                                           "    version    INTEGER PRIMARY KEY,\n"
                                           "    name       TEXT    NOT NULL,\n"
                                           "    applied_at INTEGER NOT NULL -- ms since the epoch\n"
                                           ")";
static const char SQL_MAX_VERSION[] = "SELECT coalesce(max(version), 0) FROM schema_migrations";
static const char SQL_RECORD[] =
    "INSERT INTO schema_migrations (version, name, applied_at) "
    "VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))";

gim_err store_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return GIM_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        return GIM_EUNAVAILABLE;
    case SQLITE_NOMEM:
        return GIM_ENOMEM;
    default:
        return GIM_EINTERNAL;
    }
}

gim_err store_exec(struct store_conn *c, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        log_warn("sql failed", "sql=\"%.60s\" rc=%d error=\"%s\"", sql, rc, msg ? msg : "");
        sqlite3_free(msg);
        return store_err(rc);
    }
    return GIM_OK;
}

int store_schema_version(void)
{
    return migrations_count ? migrations[migrations_count - 1].version : 0;
}

/* Pointer hash: the SQL strings are static, so their addresses are stable keys. */
static size_t stmt_slot(const char *sql)
{
    uintptr_t h = (uintptr_t)sql;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 7) % STORE_STMT_CACHE;
}

sqlite3_stmt *store_stmt(struct store_conn *c, const char *sql)
{
    size_t i = stmt_slot(sql);
    for (size_t n = 0; n < STORE_STMT_CACHE; n++, i = (i + 1) % STORE_STMT_CACHE) {
        if (c->cache[i].sql == sql) {
            sqlite3_reset(c->cache[i].st);
            sqlite3_clear_bindings(c->cache[i].st);
            return c->cache[i].st;
        }
        if (c->cache[i].sql == NULL)
            break;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        log_error("prepare failed", "sql=\"%.80s\" error=\"%s\"", sql, sqlite3_errmsg(c->db));
        return NULL;
    }
    if (c->cache[i].sql == NULL) {
        c->cache[i].sql = sql;
        c->cache[i].st = st;
        return st;
    }
    /* Cache full: a programming error (more distinct statements than slots). */
    log_error("statement cache full", "sql=\"%.80s\"", sql);
    sqlite3_finalize(st);
    return NULL;
}

int store_bind(sqlite3_stmt *st, const struct store_val *v, size_t n)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        int at = (int)i + 1;
        switch (v[i].type) {
        case STORE_T_NULL:
            rc = sqlite3_bind_null(st, at);
            break;
        case STORE_T_INT:
            rc = sqlite3_bind_int64(st, at, v[i].i);
            break;
        case STORE_T_TEXT:
            rc = sqlite3_bind_text(st, at, v[i].p, v[i].len, SQLITE_STATIC);
            break;
        case STORE_T_BLOB:
            rc = sqlite3_bind_blob(st, at, v[i].p, v[i].len, SQLITE_STATIC);
            break;
        }
    }
    return rc;
}

gim_err store_run(struct store_conn *c, const char *sql, int *changes, bool *row,
                  const struct store_val *v, size_t n)
{
    if (changes)
        *changes = 0;
    if (row)
        *row = false;
    sqlite3_stmt *st = store_stmt(c, sql);
    if (!st)
        return GIM_EINTERNAL;
    int rc = store_bind(st, v, n);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return store_err(rc);
    if (changes)
        *changes = sqlite3_changes(c->db);
    if (row)
        *row = rc == SQLITE_ROW;
    return GIM_OK;
}

void store_done(sqlite3_stmt *st)
{
    if (st)
        sqlite3_reset(st);
}

static gim_err pragma(struct store_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static gim_err pragma(struct store_conn *c, const char *fmt, ...)
{
    char sql[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return store_exec(c, sql);
}

/* Only known words reach the PRAGMA text; config_load validated them too. */
static const char *sync_word(const char *s)
{
    static const char *ok[] = {"off", "normal", "full", "extra"};
    for (int i = 0; i < 4; i++)
        if (s && strcasecmp(s, ok[i]) == 0)
            return ok[i];
    return "full";
}

/* In WAL mode these sync the WAL in every COMMIT, before the commit is visible (mapvfs.h). */
static bool syncs_every_commit(const struct gim_config *cfg)
{
    const char *w = sync_word(cfg->database.synchronous);
    return strcmp(w, "full") == 0 || strcmp(w, "extra") == 0;
}

gim_err store_check_dir(const char *path, enum store_mode mode, char *errbuf, size_t errlen)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = 0;
    else
        *slash = 0;
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT)
            snprintf(errbuf, errlen, "database directory %s does not exist", dir);
        else
            snprintf(errbuf, errlen, "database directory %s: %s", dir, strerror(errno));
        return GIM_EIO;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen, "database directory %s is not a directory", dir);
        return GIM_EIO;
    }
    /* WAL needs to create -wal and -shm files beside the database. */
    if (mode == STORE_WRITER && access(dir, W_OK) != 0) {
        snprintf(errbuf, errlen, "database directory %s is not writable: %s", dir, strerror(errno));
        return GIM_EIO;
    }
    return GIM_OK;
}

static gim_err configure(struct store_conn *c, const struct gim_config *cfg, enum store_mode mode)
{
    gim_err e;
    sqlite3_busy_timeout(c->db, (int)cfg->database.busy_timeout_ms);
    uint32_t cache_mb =
        mode == STORE_WRITER ? cfg->database.cache_mb : cfg->database.reader_cache_mb;
    if ((e = pragma(c, "PRAGMA cache_size = -%u", cache_mb * 1024u)) != GIM_OK)
        return e;
    if ((e = pragma(c, "PRAGMA mmap_size = %llu",
                    (unsigned long long)cfg->database.mmap_mb * 1024ull * 1024ull)) != GIM_OK)
        return e;
    if ((e = store_exec(c, "PRAGMA foreign_keys = ON")) != GIM_OK)
        return e;
    /* Erased content must not survive in free space of the file (recall). */
    if ((e = store_exec(c, "PRAGMA secure_delete = ON")) != GIM_OK)
        return e;
    if (mode == STORE_READER)
        return store_exec(c, "PRAGMA query_only = ON");
    if ((e = store_exec(c, "PRAGMA journal_mode = WAL")) != GIM_OK)
        return e;
    if ((e = pragma(c, "PRAGMA synchronous = %s", sync_word(cfg->database.synchronous))) != GIM_OK)
        return e;
    /* Per connection, and only the writer grows the file. Full -> SQLITE_FULL -> EC_UNAVAILABLE. */
    if (cfg->database.max_pages > 0 &&
        (e = pragma(c, "PRAGMA max_page_count = %u", cfg->database.max_pages)) != GIM_OK)
        return e;
    return store_exec(c, "PRAGMA temp_store = MEMORY");
}

gim_err store_open(const struct gim_config *cfg, enum store_mode mode, struct store_conn **out,
                   char *errbuf, size_t errlen)
{
    gim_err e;
    struct store_conn *c = NULL;
    const char *path = cfg->database.path;
    *out = NULL;
    if (config_is_postgres(cfg))
        return pgstore_open(cfg, mode, out, errbuf, errlen);
    if ((e = store_check_dir(path, mode, errbuf, errlen)) != GIM_OK)
        goto fail;
    c = calloc(1, sizeof *c);
    if (!c) {
        e = GIM_ENOMEM;
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    c->readonly = mode == STORE_READER;
    c->ops = &storage_sqlite;
    int flags =
        mode == STORE_WRITER ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    flags |= SQLITE_OPEN_NOMUTEX; /* one thread per connection */
    /* Before anything initialises SQLite (the VFS below does): a page cache is chosen only
     * then. Too late (a program that used SQLite first) costs the walk it saves, nothing else. */
    if (pagecache_install() != GIM_OK)
        log_debug("page cache: SQLite's own (SQLite was initialised first)", "path=%s", path);
    /* mmap_mb > 0: every connection reads through the process's one mapping (mapvfs.h);
     * a writer that syncs every commit combines its WAL writes there too (budget 0 maps
     * nothing). */
    const char *vfs = NULL;
    bool combine = mode == STORE_WRITER && syncs_every_commit(cfg);
    if (cfg->database.mmap_mb > 0 || combine) {
        if ((e = mapvfs_register((uint64_t)cfg->database.mmap_mb << 20, MAPVFS_SEGMENT_BYTES)) !=
            GIM_OK) {
            snprintf(errbuf, errlen, "cannot register SQLite's VFS %s", MAPVFS_NAME);
            goto fail;
        }
        vfs = MAPVFS_NAME;
    }
    int rc = sqlite3_open_v2(path, &c->db, flags, vfs);
    if (rc != SQLITE_OK) {
        snprintf(errbuf, errlen, "cannot open database %s: %s", path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        e = GIM_EIO;
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    if ((e = configure(c, cfg, mode)) != GIM_OK) {
        snprintf(errbuf, errlen, "cannot configure database %s: %s", path, sqlite3_errmsg(c->db));
        goto fail;
    }
    if (mode == STORE_WRITER && (e = store_migrate(c, errbuf, errlen)) != GIM_OK)
        goto fail;
    /* After the migrations, which read the database and so open its WAL (a new, empty file
     * opens it only at its first write). Not an error when it cannot: an in-memory database
     * has no WAL; otherwise say so, as the writer then makes one pwrite per frame header and
     * page. */
    if (combine && mapvfs_combine_wal(c->db) != GIM_OK) {
        const char *file = sqlite3_db_filename(c->db, "main");
        if (file && *file)
            log_warn("WAL writes not combined", "path=%s", path);
    }
    *out = c;
    return GIM_OK;
fail:
    store_close(c);
    return e;
}

void store_close(struct store_conn *c)
{
    if (!c)
        return;
    if (store_is_pg(c)) {
        pgstore_close(c);
        free(c);
        return;
    }
    for (int i = 0; i < STORE_STMT_CACHE; i++)
        if (c->cache[i].st)
            sqlite3_finalize(c->cache[i].st);
    if (c->db)
        sqlite3_close(c->db);
    free(c);
}

static gim_err apply_one(struct store_conn *c, const struct migration *m, char *errbuf,
                         size_t errlen)
{
    char *msg = NULL;
    gim_err e = store_exec(c, "BEGIN IMMEDIATE");
    if (e != GIM_OK) {
        snprintf(errbuf, errlen, "migration %s: cannot begin: %s", m->name, sqlite3_errmsg(c->db));
        return e;
    }
    int rc = sqlite3_exec(c->db, m->sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(errbuf, errlen, "migration %s failed: %s", m->name, msg ? msg : "");
        e = GIM_ESCHEMA;
        goto fail;
    }
    sqlite3_stmt *st = store_stmt(c, SQL_RECORD);
    if (!st) {
        e = GIM_EINTERNAL;
        goto fail;
    }
    sqlite3_bind_int(st, 1, m->version);
    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE) {
        snprintf(errbuf, errlen, "migration %s: cannot record: %s", m->name, sqlite3_errmsg(c->db));
        e = store_err(rc);
        goto fail;
    }
    if ((e = store_exec(c, "COMMIT")) != GIM_OK) {
        snprintf(errbuf, errlen, "migration %s: commit failed: %s", m->name, sqlite3_errmsg(c->db));
        goto fail;
    }
    log_info("migration applied", "version=%d name=%s", m->version, m->name);
    return GIM_OK;
fail:
    sqlite3_free(msg);
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return e;
}

gim_err store_migrate(struct store_conn *c, char *errbuf, size_t errlen)
{
    gim_err e;
    int have = 0;
    if ((e = store_exec(c, SQL_MIGRATIONS_TABLE)) != GIM_OK) {
        snprintf(errbuf, errlen, "cannot create schema_migrations: %s", sqlite3_errmsg(c->db));
        return e;
    }
    sqlite3_stmt *st = store_stmt(c, SQL_MAX_VERSION);
    if (!st)
        return GIM_EINTERNAL;
    if (sqlite3_step(st) == SQLITE_ROW)
        have = sqlite3_column_int(st, 0);
    store_done(st);
    if (have > store_schema_version()) {
        snprintf(errbuf, errlen,
                 "database schema version %d is newer than this binary's %d: upgrade gim-logic",
                 have, store_schema_version());
        return GIM_ESCHEMA;
    }
    for (int i = 0; i < migrations_count; i++) {
        if (migrations[i].version <= have)
            continue;
        if ((e = apply_one(c, &migrations[i], errbuf, errlen)) != GIM_OK)
            return e;
    }
    return GIM_OK;
}

gim_err store_rows(struct store_conn *c, const char *sql, size_t elem_size, store_row_fn row,
                   void **out, size_t *n, const struct store_val *v, size_t nv)
{
    gim_err e = GIM_OK;
    uint8_t *rows = NULL;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = store_stmt(c, sql);
    if (!st)
        return GIM_EINTERNAL;
    int bind_rc = store_bind(st, v, nv), rc = bind_rc;
    while (bind_rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint8_t *grown = realloc(rows, cap * elem_size);
            if (!grown) {
                e = GIM_ENOMEM;
                goto fail;
            }
            rows = grown;
        }
        row(st, rows + *n * elem_size);
        (*n)++;
    }
    if (rc != SQLITE_DONE) {
        e = store_err(rc);
        goto fail;
    }
    store_done(st);
    *out = rows;
    return GIM_OK;
fail:
    store_done(st);
    free(rows);
    *out = NULL;
    *n = 0;
    return e;
}

gim_err store_run2(struct store_conn *c, const char *sql, const char *pg_sql, int *changes,
                   const struct store_val *v, size_t n)
{
    if (store_is_pg(c))
        return pgstore_run(c, pg_sql, NULL, changes, v, n);
    return store_run(c, sql, changes, NULL, v, n);
}

const char *store_errmsg(const struct store_conn *c)
{
    if (store_is_pg(c))
        return pgstore_sqlstate(c);
    return sqlite3_errmsg(c->db);
}
