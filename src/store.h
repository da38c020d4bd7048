/*
 * store: SQLite connections, pragmas, migrations and the statement cache.
 *
 * gim-logic opens one read-write connection (owned by the writer thread) and
 * one read-only connection per worker thread, all on the same WAL database.
 * A connection is used by one thread at a time; nothing here locks.
 *
 * Statements: the storage layer (src/storage/sqlite_*.c) keeps its SQL as
 * `static const char SQL_X[]` next to the code that runs it and calls
 * store_stmt(conn, SQL_X), which prepares it once per connection (keyed by
 * the string's address) and hands back the reset statement. Call store_done() when finished so
 * readers release their snapshot (an unreset SELECT pins the WAL and blocks checkpoints).
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

/*
 * A connection knows its backend: SQLite (the embedded default; db is the
 * connection and everything in this header applies) or PostgreSQL
 * (database.backend: postgres; db is NULL and pg holds the libpq connection,
 * pgstore.h), and carries that backend's table of operations (ops,
 * storage.h). Everything the service asks of its database goes through
 * those operations; this header and pgstore.h are the tools their
 * implementations in src/storage/ use, and nothing else calls them
 * (test_storage_seam checks).
 */
enum store_backend { STORE_SQLITE = 0, STORE_PG = 1 };

struct pgstore;
struct storage_ops;

struct store_conn {
    sqlite3 *db;
    enum store_backend backend;
    const struct storage_ops *ops; /* the backend's operations (storage.h) */
    struct pgstore *pg;            /* STORE_PG only */
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

/* Whether c is a PostgreSQL connection (pgstore.h); NULL is not. */
static inline bool store_is_pg(const struct store_conn *c)
{
    return c && c->backend == STORE_PG;
}

/*
 * Opens the database at cfg->database.path (or, with database.backend
 * postgres, connects to database.url: pgstore_open). On success *out is a new
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

/*
 * Statement parameters, bound in one call whose result is checked: one
 * value for each of ?1, ?2, ... in order,
 *     int rc = STORE_BIND(st, STORE_INT(user_id), STORE_TEXT(gateway_id));
 *     if (rc == SQLITE_OK)
 *         rc = sqlite3_step(st);
 * so a failed bind (SQLITE_NOMEM, SQLITE_TOOBIG; SQLITE_RANGE is a bug)
 * takes the step's own exit path: store_err(rc) like any failed step, and
 * never a step on a half-bound statement. STORE_NULL leaves a parameter
 * NULL. Text and blobs are bound SQLITE_STATIC: they must stay alive and
 * unchanged until the statement is reset; a NULL pointer binds NULL.
 */
enum store_type { STORE_T_NULL, STORE_T_INT, STORE_T_TEXT, STORE_T_BLOB };
struct store_val {
    enum store_type type;
    int64_t i;
    const void *p;
    int len; /* blobs: bytes; text: -1 (up to the NUL) */
};
#define STORE_NULL       ((struct store_val){.type = STORE_T_NULL})
#define STORE_INT(v)     ((struct store_val){.type = STORE_T_INT, .i = (int64_t)(v)})
#define STORE_TEXT(s)    ((struct store_val){.type = STORE_T_TEXT, .p = (s), .len = -1})
#define STORE_BLOB(d, n) ((struct store_val){.type = STORE_T_BLOB, .p = (d), .len = (int)(n)})
#define STORE_VALS(...)                                                                            \
    (const struct store_val[]){__VA_ARGS__},                                                       \
        sizeof((const struct store_val[]){__VA_ARGS__}) / sizeof(struct store_val)
#define STORE_BIND(st, ...) store_bind((st), STORE_VALS(__VA_ARGS__))

/* Binds v[0..n) to ?1..?n of st; SQLITE_OK or the first failing bind's code. */
int store_bind(sqlite3_stmt *st, const struct store_val *v, size_t n);

/*
 * The whole life of a statement run for its effect or for whether it finds
 * a row: store_stmt, bind v[0..n) (as store_bind), one step, store_done.
 * GIM_OK, or GIM_EINTERNAL (cannot prepare) or store_err() of the failed
 * bind or step. *changes (may be NULL) gets the rows it changed, *row (may
 * be NULL) whether it returned one.
 *     e = STORE_RUN(db, SQL_INBOX_ADD, NULL, STORE_INT(user_id), STORE_INT(seq));
 *     e = STORE_EXISTS(db, SQL_GROUP_EXISTS, &exists, STORE_INT(group_id));
 */
gim_err store_run(struct store_conn *c, const char *sql, int *changes, bool *row,
                  const struct store_val *v, size_t n);
#define STORE_RUN(c, sql, changes, ...)                                                            \
    store_run((c), (sql), (changes), NULL, STORE_VALS(__VA_ARGS__))
#define STORE_EXISTS(c, sql, row, ...) store_run((c), (sql), NULL, (row), STORE_VALS(__VA_ARGS__))

/*
 * One operation, both backends: runs sql on SQLite (as store_run) or pg_sql
 * on PostgreSQL (pgstore_run: the same statement with $n parameters), with
 * the same parameters; for statements run for their effect.
 *     e = STORE_RUN2(db, SQL_SIGN_OUT, PG_SIGN_OUT, NULL, STORE_INT(now), ...);
 */
gim_err store_run2(struct store_conn *c, const char *sql, const char *pg_sql, int *changes,
                   const struct store_val *v, size_t n);
#define STORE_RUN2(c, sql, pg_sql, changes, ...)                                                   \
    store_run2((c), (sql), (pg_sql), (changes), STORE_VALS(__VA_ARGS__))

/* The connection's last error, for logs (SQLite's message, or PostgreSQL's SQLSTATE). */
const char *store_errmsg(const struct store_conn *c);

/* Resets st so it releases its locks. NULL is a no-op. */
void store_done(sqlite3_stmt *st);

/* Maps an SQLite result code to ours: busy/locked/full/io -> GIM_EUNAVAILABLE, else GIM_EINTERNAL.
 */
gim_err store_err(int rc);

/* Runs one statement without results (BEGIN, COMMIT, SAVEPOINT...). */
gim_err store_exec(struct store_conn *c, const char *sql);

/*
 * Runs sql with parameters v[0..nv) (as store_run) and collects its rows,
 * one elem_size element a row, each filled by row(st, elem). On success
 * *out is a malloc'ed array of *n elements (NULL when there is no row) that
 * the caller frees; on failure *out is NULL, *n is 0 and the result is
 * GIM_EINTERNAL (cannot prepare), GIM_ENOMEM or store_err() of the failed
 * bind or step.
 *     e = STORE_ROWS(db, SQL_MEMBERS, sizeof *ids, member_row, &rows, &n, STORE_INT(group_id));
 */
typedef void (*store_row_fn)(sqlite3_stmt *st, void *elem);
gim_err store_rows(struct store_conn *c, const char *sql, size_t elem_size, store_row_fn row,
                   void **out, size_t *n, const struct store_val *v, size_t nv);
#define STORE_ROWS(c, sql, elem_size, row, out, n, ...)                                            \
    store_rows((c), (sql), (elem_size), (row), (out), (n), STORE_VALS(__VA_ARGS__))

#endif
