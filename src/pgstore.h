/*
 * pgstore: the PostgreSQL backend (database.backend: postgres), over libpq.
 *
 * A struct store_conn whose backend is STORE_PG holds a struct pgstore:
 * one libpq connection, used by one thread at a time like a SQLite
 * connection (the writer's, one per worker for reads). Several gim-logic
 * instances share one PostgreSQL database, so nothing here assumes it is
 * alone: migrations run under an advisory lock, seqs are taken in the
 * database (seq.c), and maintenance runs where pgstore_try_lock() holds.
 *
 * Statements: as with SQLite, modules keep their SQL as
 * `static const char PG_X[]` next to the code that runs it and call
 * pgstore_run(conn, PG_X, ...), which PQprepare()s it once per connection
 * (keyed by the string's address) and runs it with PQexecPrepared: the
 * parameters are struct store_val (store.h), sent in binary (int8, bytea,
 * text), results come back in binary (read with pgstore_int/pgstore_blob).
 * Never SQL built from data.
 *
 * Errors: every failure is logged once with its SQLSTATE and mapped to a
 * gim_err. A deadlock (40P01) or serialization failure (40001) sets
 * pgstore_retryable(): the writer then rolls the whole batch back and runs
 * it again (writer.c). A lost connection is GIM_EUNAVAILABLE and marks the
 * connection broken; pgstore_ready() re-establishes it before the next use
 * (its prepared statements are prepared again), so the service stays up
 * and the requests in between get EC_UNAVAILABLE.
 *
 * Ownership: pgstore_open() hands back a store_conn the caller frees with
 * store_close(); results from pgstore_run() are the caller's (PQclear).
 */
#ifndef GIM_PGSTORE_H
#define GIM_PGSTORE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

struct gim_config;

/*
 * Connects to cfg->database.url; mode STORE_WRITER also applies the
 * embedded migrations (migrations/postgres/) under an advisory lock, so
 * instances starting together apply each one once. On failure *out is NULL
 * and errbuf says why (never quoting the URL, which may hold a password).
 */
gim_err pgstore_open(const struct gim_config *cfg, enum store_mode mode, struct store_conn **out,
                     char *errbuf, size_t errlen);

/* Closes the libpq connection and frees what c->pg holds (store_close calls it). */
void pgstore_close(struct store_conn *c);

/* Highest PostgreSQL migration version compiled into this binary. */
int pgstore_schema_version(void);

/*
 * Makes sure c's connection is up: a connection found broken (by a failed
 * statement, or libpq's status) is reset here, and its statements are
 * prepared again on first use. GIM_EUNAVAILABLE while the server is away.
 */
gim_err pgstore_ready(struct store_conn *c);

/*
 * Runs sql (prepared once per connection) with parameters v[0..n). On
 * GIM_OK *res (may be NULL: then the result is dropped) holds the result
 * (the caller PQclears it); *changes (may be NULL) gets the rows it
 * changed. On failure *res is NULL: GIM_EUNAVAILABLE for a lost connection,
 * a deadlock, a serialization failure or a server shutting down,
 * GIM_EINTERNAL otherwise (logged).
 */
gim_err pgstore_run(struct store_conn *c, const char *sql, PGresult **res, int *changes,
                    const struct store_val *v, size_t n);
#define PG_RUN(c, sql, res, changes, ...)                                                          \
    pgstore_run((c), (sql), (res), (changes), STORE_VALS(__VA_ARGS__))
/* For a statement without parameters. */
#define PG_RUN0(c, sql, res, changes) pgstore_run((c), (sql), (res), (changes), NULL, 0)

/* A statement without parameters or results, sent as a simple query (BEGIN, COMMIT, SAVEPOINT). */
gim_err pgstore_exec(struct store_conn *c, const char *sql);

/* The int2/int4/int8 at (row, col) of a binary result; 0 when NULL. */
int64_t pgstore_int(const PGresult *res, int row, int col);

/* Whether (row, col) is NULL. */
bool pgstore_null(const PGresult *res, int row, int col);

/* The bytes at (row, col) (bytea or text in binary form) and their length; NULL when NULL. */
const uint8_t *pgstore_blob(const PGresult *res, int row, int col, size_t *len);

/*
 * The last failure was a deadlock or a serialization failure: the
 * transaction is lost and running it again may succeed. Cleared by
 * pgstore_begin().
 */
bool pgstore_retryable(const struct store_conn *c);

/* The last failure's SQLSTATE ("" when none), for logs and tests. */
const char *pgstore_sqlstate(const struct store_conn *c);

/*
 * The first step of a stop (writer_stop_waiting): from any thread, cancels
 * the statement c's owner is running (a wait for a row lock another
 * instance holds ends now, GIM_EUNAVAILABLE), and from its next batch on c
 * waits for no lock (lock_timeout 1 ms). What a stop waits for is then
 * bounded by the requests' own work, never database.busy_timeout_ms.
 */
void pgstore_stop_waiting(struct store_conn *c);

/* BEGIN (after pgstore_ready); clears pgstore_retryable(). */
gim_err pgstore_begin(struct store_conn *c);

/*
 * COMMIT, checked: GIM_OK only when the server says COMMIT. A transaction
 * left aborted by a failed statement would "commit" as a rollback; that is
 * GIM_EINTERNAL here (logged), never a silent loss.
 */
gim_err pgstore_commit(struct store_conn *c);

/* Whether the connection is inside a transaction block (open or failed). */
bool pgstore_in_transaction(const struct store_conn *c);

/*
 * pg_try_advisory_lock(key) on c's session: true once this connection holds
 * it (it keeps it until the connection ends, so a lost connection or a
 * dead instance hands it to another). Used so that maintenance runs on one
 * instance at a time.
 */
bool pgstore_try_lock(struct store_conn *c, int64_t key);

/* Advisory lock keys (any int8; these spell "gim" and a number). */
#define PGSTORE_LOCK_MIGRATE 0x67696d0001LL
#define PGSTORE_LOCK_MAINT   0x67696d0002LL

#endif
