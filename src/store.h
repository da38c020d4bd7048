/*
 * store: SQLite connections, pragmas, migrations and the statement cache.
 *
 * gim-logic opens one read-write connection (owned by the writer thread) and
 * one read-only connection per worker thread, all on the same WAL database.
 * A connection is used by one thread at a time; nothing here locks.
 *
 * Statements: modules keep their SQL as `static const char SQL_X[]` next to
 * the code that runs it and call store_stmt(conn, SQL_X), which prepares it
 * once per connection (keyed by the string's address) and hands back the
 * reset statement. Call store_done() when finished so readers release their
 * snapshot (an unreset SELECT pins the WAL and blocks checkpoints).
 */
#ifndef GIM_STORE_H
#define GIM_STORE_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct gim_config;

#define STORE_STMT_CACHE 128

struct store_conn {
    sqlite3 *db;
    bool readonly;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STORE_STMT_CACHE];
};

enum store_mode {
    STORE_WRITER, /* read-write; creates the file and applies migrations */
    STORE_READER, /* read-only; the database must exist and be migrated */
};

/*
 * Opens the database at cfg->database.path. On success *out is a new
 * connection the caller owns and frees with store_close(). On failure *out is
 * NULL and errbuf holds one line saying what went wrong (missing directory,
 * read-only file, database newer than this binary...).
 */
gim_err store_open(const struct gim_config *cfg, enum store_mode mode, struct store_conn **out,
                   char *errbuf, size_t errlen);

/*
 * The checks store_open() starts with: the database's directory exists, is
 * a directory, and (STORE_WRITER) is writable; else errbuf says which. For
 * callers that create files beside the database first (dblock.h).
 */
gim_err store_check_dir(const char *path, enum store_mode mode, char *errbuf, size_t errlen);

/* Finalizes cached statements and closes. NULL is a no-op. */
void store_close(struct store_conn *c);

/*
 * Applies every embedded migration not yet recorded in schema_migrations, each
 * in its own transaction. Refuses (GIM_ESCHEMA) a database whose recorded
 * version is above the highest this binary knows.
 */
gim_err store_migrate(struct store_conn *c, char *errbuf, size_t errlen);

/* Highest migration version compiled into this binary. */
int store_schema_version(void);

/* The cached, reset statement for sql (see above); NULL if it fails to prepare (logged). */
sqlite3_stmt *store_stmt(struct store_conn *c, const char *sql);

/* Resets st so it releases its locks. NULL is a no-op. */
void store_done(sqlite3_stmt *st);

/* Maps an SQLite result code to ours: busy/locked/full/io -> GIM_EUNAVAILABLE, else GIM_EINTERNAL.
 */
gim_err store_err(int rc);

/* Runs one statement without results (BEGIN, COMMIT, SAVEPOINT...). */
gim_err store_exec(struct store_conn *c, const char *sql);

#endif
