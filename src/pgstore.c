#include "pgstore.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "migration.h"
#include "storage.h"

#define PG_STMT_CACHE 512 /* ~70 statements after phase 2; open addressing stays sparse */

/* PostgreSQL type oids of the parameters we send (pg_type.h; stable since forever). */
#define OID_BYTEA 17
#define OID_INT8  20
#define OID_TEXT  25

struct pgstore {
    PGconn *conn;
    char *url;        /* owned copy, for reconnecting */
    uint32_t lock_ms; /* database.busy_timeout_ms: the longest a statement waits for a lock */
    /* pgstore_stop_waiting(), from another thread: the query to cancel, and the promise to wait
     * for no lock from now on (applied by the owning thread at its next begin). */
    pthread_mutex_t cancel_mu;
    PGcancel *cancel; /* of the current connection; under cancel_mu */
    atomic_bool no_wait;
    bool no_wait_applied;
    bool broken;
    bool retry; /* the last failure was 40001/40P01 */
    char sqlstate[6];
    struct {
        const char *sql;
        bool prepared; /* on the current connection */
    } cache[PG_STMT_CACHE];
};

static const char PG_MAX_VERSION[] = "SELECT coalesce(max(version), 0) FROM schema_migrations";
static const char PG_HAS_MIGRATIONS[] = "SELECT to_regclass('schema_migrations') IS NOT NULL";
static const char PG_RECORD[] = "INSERT INTO schema_migrations (version, name, applied_at) "
                                "VALUES ($1, $2, $3)";

int pgstore_schema_version(void)
{
    return pg_migrations_count ? pg_migrations[pg_migrations_count - 1].version : 0;
}

static size_t stmt_slot(const char *sql)
{
    uintptr_t h = (uintptr_t)sql;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 7) % PG_STMT_CACHE;
}

/* Notices (e.g. "relation already exists, skipping") go to the debug log, not stderr. */
static void notice(void *arg, const char *msg)
{
    (void)arg;
    log_debug("postgres notice", "message=\"%.*s\"", (int)strcspn(msg, "\n"), msg);
}

static void set_cancel(struct pgstore *p)
{
    PGcancel *fresh = p->conn ? PQgetCancel(p->conn) : NULL;
    pthread_mutex_lock(&p->cancel_mu);
    if (p->cancel)
        PQfreeCancel(p->cancel);
    p->cancel = fresh;
    pthread_mutex_unlock(&p->cancel_mu);
}

static gim_err connect_now(struct pgstore *p, char *errbuf, size_t errlen)
{
    if (p->conn)
        PQfinish(p->conn);
    p->conn = PQconnectdb(p->url);
    p->no_wait_applied = false;
    set_cancel(p);
    for (size_t i = 0; i < PG_STMT_CACHE; i++)
        p->cache[i].prepared = false;
    if (!p->conn || PQstatus(p->conn) != CONNECTION_OK) {
        const char *m = p->conn ? PQerrorMessage(p->conn) : "out of memory";
        snprintf(errbuf, errlen, "cannot connect to PostgreSQL (database.url): %.*s",
                 (int)strcspn(m, "\n"), m);
        p->broken = true;
        return GIM_EUNAVAILABLE;
    }
    PQsetNoticeProcessor(p->conn, notice, NULL);
    /*
     * A row lock held by another instance's transaction (the same user's
     * seq, the same device) is waited for at most database.busy_timeout_ms,
     * as SQLite's write lock is: then the statement fails with 55P03 and the
     * request gets EC_UNAVAILABLE. 0 = wait forever, as with SQLite.
     */
    char set[64];
    snprintf(set, sizeof set, "SET lock_timeout = %u",
             atomic_load(&p->no_wait) ? 1u : (unsigned)p->lock_ms);
    PGresult *res = PQexec(p->conn, set);
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) {
        snprintf(errbuf, errlen, "cannot set lock_timeout on the PostgreSQL connection");
        p->broken = true;
        return GIM_EUNAVAILABLE;
    }
    p->broken = false;
    return GIM_OK;
}

/* Records the failure of res (may be NULL) on p and maps it. */
static gim_err fail(struct pgstore *p, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(p->conn);
    snprintf(p->sqlstate, sizeof p->sqlstate, "%s", state ? state : "");
    p->retry = state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0);
    if (PQstatus(p->conn) != CONNECTION_OK)
        p->broken = true;
    bool gone = p->broken || (state && (strncmp(state, "08", 2) == 0 || /* connection */
                                        strncmp(state, "57P", 3) == 0 /* shutdown */));
    /* lock_timeout, or a wait cancelled by pgstore_stop_waiting: like SQLITE_BUSY */
    bool busy = state && (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0);
    if (gone)
        p->broken = true;
    if (p->retry)
        log_info("postgres: transaction must be retried", "sqlstate=%s sql=\"%.60s\"", p->sqlstate,
                 what);
    else
        log_warn("postgres statement failed", "sqlstate=%s sql=\"%.60s\" error=\"%.*s\"",
                 p->sqlstate[0] ? p->sqlstate : "-", what, (int)strcspn(msg, "\n"), msg);
    return p->retry || gone || busy ? GIM_EUNAVAILABLE : GIM_EINTERNAL;
}

/*
 * After pgstore_stop_waiting: lock_timeout 1 ms on the next statement. Set
 * inside a transaction it holds for the rest of it (and is undone by its
 * rollback, so it is set again until it was set outside one, for good).
 */
static void apply_no_wait(struct pgstore *p)
{
    if (p->no_wait_applied || !atomic_load(&p->no_wait) || p->broken)
        return;
    bool outside = PQtransactionStatus(p->conn) == PQTRANS_IDLE;
    if (PQtransactionStatus(p->conn) == PQTRANS_INERROR)
        return; /* nothing runs until the rollback anyway */
    PGresult *res = PQexec(p->conn, "SET lock_timeout = 1");
    p->no_wait_applied = outside && res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
}

gim_err pgstore_ready(struct store_conn *c)
{
    struct pgstore *p = c->pg;
    char err[256];
    if (!p->broken && PQstatus(p->conn) == CONNECTION_OK)
        return GIM_OK;
    gim_err e = connect_now(p, err, sizeof err);
    if (e != GIM_OK)
        log_warn("postgres connection lost", "reason=\"%s\" retry=next_request", err);
    else
        log_info("postgres connection re-established", "%s", "");
    return e;
}

gim_err pgstore_exec(struct store_conn *c, const char *sql)
{
    struct pgstore *p = c->pg;
    apply_no_wait(p);
    PGresult *res = PQexec(p->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    gim_err e = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? GIM_OK : fail(p, res, sql);
    PQclear(res);
    return e;
}

static bool prepare(struct pgstore *p, size_t slot, const char *sql, const struct store_val *v,
                    size_t n)
{
    char name[16];
    Oid types[n > 0 ? n : 1];
    for (size_t i = 0; i < n; i++)
        types[i] = v[i].type == STORE_T_INT    ? OID_INT8
                   : v[i].type == STORE_T_BLOB ? OID_BYTEA
                   : v[i].type == STORE_T_TEXT ? OID_TEXT
                                               : 0; /* NULL: the server infers it */
    snprintf(name, sizeof name, "g%zu", slot);
    PGresult *res = PQprepare(p->conn, name, sql, (int)n, types);
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fail(p, res, sql);
    PQclear(res);
    return ok;
}

gim_err pgstore_run(struct store_conn *c, const char *sql, PGresult **resp, int *changes,
                    const struct store_val *v, size_t n)
{
    struct pgstore *p = c->pg;
    if (resp)
        *resp = NULL;
    if (changes)
        *changes = 0;
    if (p->broken)
        return GIM_EUNAVAILABLE; /* pgstore_ready() reconnects before the next batch or read */
    apply_no_wait(p);
    size_t slot = stmt_slot(sql), k;
    for (k = 0; k < PG_STMT_CACHE; k++, slot = (slot + 1) % PG_STMT_CACHE)
        if (p->cache[slot].sql == sql || p->cache[slot].sql == NULL)
            break;
    if (k == PG_STMT_CACHE) {
        log_error("postgres statement cache full", "sql=\"%.80s\"", sql);
        return GIM_EINTERNAL;
    }
    if (!p->cache[slot].prepared || p->cache[slot].sql != sql) {
        if (!prepare(p, slot, sql, v, n))
            return p->broken || p->retry ? GIM_EUNAVAILABLE : GIM_EINTERNAL;
        p->cache[slot].sql = sql;
        p->cache[slot].prepared = true;
    }
    char name[16];
    snprintf(name, sizeof name, "g%zu", slot);
    const char *vals[n > 0 ? n : 1];
    int lens[n > 0 ? n : 1], fmts[n > 0 ? n : 1];
    uint64_t ints[n > 0 ? n : 1];
    for (size_t i = 0; i < n; i++) {
        fmts[i] = 1;
        switch (v[i].type) {
        case STORE_T_NULL:
            vals[i] = NULL;
            lens[i] = 0;
            break;
        case STORE_T_INT: {
            uint64_t x = (uint64_t)v[i].i;
            ints[i] = ((uint64_t)htonl((uint32_t)x) << 32) | htonl((uint32_t)(x >> 32));
            vals[i] = (const char *)&ints[i];
            lens[i] = 8;
            break;
        }
        case STORE_T_TEXT:
            vals[i] = v[i].p;
            lens[i] = v[i].p ? (int)strlen(v[i].p) : 0;
            break;
        case STORE_T_BLOB:
            /* A NULL pointer binds NULL, as with SQLite; an empty blob is "". */
            vals[i] = v[i].p;
            lens[i] = v[i].len;
            break;
        }
    }
    PGresult *res = PQexecPrepared(p->conn, name, (int)n, vals, lens, fmts, 1);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        gim_err e = fail(p, res, sql);
        PQclear(res);
        return e;
    }
    if (changes) {
        const char *t = PQcmdTuples(res);
        *changes = t && *t ? atoi(t) : 0;
    }
    if (resp)
        *resp = res;
    else
        PQclear(res);
    return GIM_OK;
}

int64_t pgstore_int(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    const uint8_t *b = (const uint8_t *)PQgetvalue(res, row, col);
    int len = PQgetlength(res, row, col);
    uint64_t x = 0;
    for (int i = 0; i < len; i++)
        x = (x << 8) | b[i];
    /* Sign-extend int2/int4. */
    if (len > 0 && len < 8 && (b[0] & 0x80))
        x |= ~(uint64_t)0 << (8 * len);
    return (int64_t)x;
}

bool pgstore_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) != 0;
}

const uint8_t *pgstore_blob(const PGresult *res, int row, int col, size_t *len)
{
    if (PQgetisnull(res, row, col)) {
        *len = 0;
        return NULL;
    }
    *len = (size_t)PQgetlength(res, row, col);
    return (const uint8_t *)PQgetvalue(res, row, col);
}

bool pgstore_retryable(const struct store_conn *c)
{
    return c->pg->retry;
}

const char *pgstore_sqlstate(const struct store_conn *c)
{
    return c->pg->sqlstate;
}

gim_err pgstore_begin(struct store_conn *c)
{
    struct pgstore *p = c->pg;
    gim_err e = pgstore_ready(c);
    p->retry = false;
    p->sqlstate[0] = 0;
    return e == GIM_OK ? pgstore_exec(c, "BEGIN") : e;
}

void pgstore_stop_waiting(struct store_conn *c)
{
    struct pgstore *p = c->pg;
    char err[256];
    atomic_store(&p->no_wait, true);
    pthread_mutex_lock(&p->cancel_mu);
    /* PQcancel is the one libpq call made for another thread: it opens its own connection. */
    if (p->cancel && !PQcancel(p->cancel, err, sizeof err))
        log_warn("postgres: cannot cancel the writer's statement", "error=\"%s\"", err);
    pthread_mutex_unlock(&p->cancel_mu);
}

gim_err pgstore_commit(struct store_conn *c)
{
    struct pgstore *p = c->pg;
    /* An aborted transaction "commits" as a rollback (the command tag says ROLLBACK): a failed
     * statement nobody rolled back to its savepoint must not pass for a commit. */
    if (PQtransactionStatus(p->conn) == PQTRANS_INERROR) {
        log_warn("postgres: commit refused", "reason=\"%s\"",
                 "the transaction is aborted (a failed statement)");
        return GIM_EINTERNAL;
    }
    PGresult *res = PQexec(p->conn, "COMMIT");
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    gim_err e = GIM_OK;
    if (st != PGRES_COMMAND_OK)
        e = fail(p, res, "COMMIT");
    else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        log_warn("postgres: commit rolled back", "tag=%s", PQcmdStatus(res));
        e = GIM_EINTERNAL;
    }
    PQclear(res);
    return e;
}

bool pgstore_in_transaction(const struct store_conn *c)
{
    PGTransactionStatusType t = PQtransactionStatus(c->pg->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static const char PG_TRY_LOCK[] = "SELECT pg_try_advisory_lock($1)";

bool pgstore_try_lock(struct store_conn *c, int64_t key)
{
    PGresult *res = NULL;
    bool held = false;
    if (PG_RUN(c, PG_TRY_LOCK, &res, NULL, STORE_INT(key)) == GIM_OK && PQntuples(res) == 1)
        held = *PQgetvalue(res, 0, 0) != 0; /* bool, binary: one byte */
    PQclear(res);
    return held;
}

/*
 * Every migration not yet recorded, each in its own transaction, while
 * holding the migration lock: an instance that starts at the same time
 * waits here, then finds them recorded.
 */
static gim_err migrate(struct store_conn *c, char *errbuf, size_t errlen)
{
    static const char lock[] = "SELECT pg_advisory_lock($1)";
    static const char unlock[] = "SELECT pg_advisory_unlock($1)";
    PGresult *res = NULL;
    gim_err e;
    int have = 0;
    if ((e = PG_RUN(c, lock, NULL, NULL, STORE_INT(PGSTORE_LOCK_MIGRATE))) != GIM_OK) {
        snprintf(errbuf, errlen, "cannot take the migration lock (sqlstate %s)", c->pg->sqlstate);
        return e;
    }
    if ((e = PG_RUN0(c, PG_HAS_MIGRATIONS, &res, NULL)) != GIM_OK)
        goto out;
    bool exists = *PQgetvalue(res, 0, 0) != 0;
    PQclear(res);
    res = NULL;
    if (exists) {
        if ((e = PG_RUN0(c, PG_MAX_VERSION, &res, NULL)) != GIM_OK)
            goto out;
        have = (int)pgstore_int(res, 0, 0);
        PQclear(res);
        res = NULL;
    }
    if (have > pgstore_schema_version()) {
        snprintf(errbuf, errlen,
                 "database schema version %d is newer than this binary's %d: upgrade gim-logic",
                 have, pgstore_schema_version());
        e = GIM_ESCHEMA;
        goto out;
    }
    for (int i = 0; i < pg_migrations_count; i++) {
        const struct migration *m = &pg_migrations[i];
        if (m->version <= have)
            continue;
        if ((e = pgstore_exec(c, "BEGIN")) != GIM_OK)
            goto out;
        /* A simple query may hold many statements: the file runs as it is written. */
        if ((e = pgstore_exec(c, m->sql)) != GIM_OK ||
            (e = PG_RUN(c, PG_RECORD, NULL, NULL, STORE_INT(m->version), STORE_TEXT(m->name),
                        STORE_INT(gim_clock_real_ms(NULL)))) != GIM_OK ||
            (e = pgstore_exec(c, "COMMIT")) != GIM_OK) {
            snprintf(errbuf, errlen, "migration postgres/%s failed (sqlstate %s): see the log",
                     m->name, c->pg->sqlstate);
            pgstore_exec(c, "ROLLBACK");
            e = GIM_ESCHEMA;
            goto out;
        }
        log_info("migration applied", "backend=postgres version=%d name=%s", m->version, m->name);
    }
out:
    if (e != GIM_OK && !errbuf[0])
        snprintf(errbuf, errlen, "cannot migrate the PostgreSQL database (sqlstate %s)",
                 c->pg->sqlstate);
    PQclear(res);
    PG_RUN(c, unlock, NULL, NULL, STORE_INT(PGSTORE_LOCK_MIGRATE));
    return e;
}

gim_err pgstore_open(const struct gim_config *cfg, enum store_mode mode, struct store_conn **out,
                     char *errbuf, size_t errlen)
{
    gim_err e = GIM_ENOMEM;
    struct store_conn *c = calloc(1, sizeof *c);
    struct pgstore *p = calloc(1, sizeof *p);
    char *why = NULL;
    *out = NULL;
    if (errlen)
        errbuf[0] = 0;
    if (!c || !p || !(p->url = strdup(cfg->database.url ? cfg->database.url : ""))) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    pthread_mutex_init(&p->cancel_mu, NULL);
    c->backend = STORE_PG;
    c->ops = &storage_pg;
    c->pg = p;
    p->lock_ms = cfg->database.busy_timeout_ms;
    c->readonly = mode == STORE_READER;
    /* libpq's own parser judges the URL; its message names the problem, not the value. */
    PQconninfoOption *opts = PQconninfoParse(p->url, &why);
    if (!opts) {
        snprintf(errbuf, errlen, "database.url: %.*s", (int)strcspn(why ? why : "", "\n"),
                 why ? why : "out of memory");
        PQfreemem(why);
        e = GIM_ECONFIG;
        goto fail;
    }
    PQconninfoFree(opts);
    if ((e = connect_now(p, errbuf, errlen)) != GIM_OK)
        goto fail;
    if (mode == STORE_WRITER && (e = migrate(c, errbuf, errlen)) != GIM_OK)
        goto fail;
    *out = c;
    return GIM_OK;
fail:
    if (c && c->pg) {
        store_close(c);
        return e;
    }
    if (p)
        free(p->url);
    free(p);
    free(c);
    return e;
}

void pgstore_close(struct store_conn *c)
{
    struct pgstore *p = c->pg;
    if (!p)
        return;
    if (p->conn)
        PQfinish(p->conn);
    if (p->cancel)
        PQfreeCancel(p->cancel);
    pthread_mutex_destroy(&p->cancel_mu);
    free(p->url);
    free(p);
    c->pg = NULL;
}
