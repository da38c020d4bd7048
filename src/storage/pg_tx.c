/*
 * The tx operations on postgres (storage.h): the writer's transaction,
 * savepoints, retries and batch locks (writer.c tells why), lock waits that a
 * stop cuts short, the /healthz probe. PostgreSQL checkpoints by itself, so
 * the checkpoint operations have nothing to do.
 */
#include <stdio.h>

#include "group.h"
#include "pgstore.h"
#include "seq.h"
#include "storage.h"

static gim_err begin(struct store_conn *c)
{
    return pgstore_begin(c);
}

/* A job alone in its batch needs no savepoint (two round trips): its failure
 * rolls the whole transaction back (commit(c, false)), which holds nothing else. */
static gim_err savepoint(struct store_conn *c, bool alone)
{
    return alone ? GIM_OK : pgstore_exec(c, "SAVEPOINT job");
}

static gim_err release(struct store_conn *c, bool alone)
{
    return alone ? GIM_OK : pgstore_exec(c, "RELEASE job");
}

static gim_err rollback_to(struct store_conn *c, bool alone)
{
    if (alone)
        return GIM_OK;
    if (pgstore_exec(c, "ROLLBACK TO job") != GIM_OK || pgstore_exec(c, "RELEASE job") != GIM_OK)
        return GIM_EINTERNAL;
    return GIM_OK;
}

/* A lost connection or transaction fails the neighbours too. */
static bool lost(const struct store_conn *c)
{
    return pgstore_retryable(c) || !pgstore_in_transaction(c);
}

static gim_err commit(struct store_conn *c, bool keep)
{
    if (!keep) {
        pgstore_exec(c, "ROLLBACK"); /* the lone job failed: undo its work */
        return GIM_OK;
    }
    return pgstore_commit(c);
}

static void rollback(struct store_conn *c)
{
    if (pgstore_in_transaction(c))
        pgstore_exec(c, "ROLLBACK");
}

static bool in_transaction(const struct store_conn *c)
{
    return pgstore_in_transaction(c);
}

static bool retryable(const struct store_conn *c)
{
    return pgstore_retryable(c);
}

static const char *sqlstate(const struct store_conn *c)
{
    return pgstore_sqlstate(c);
}

/* Groups first, as a group's send or change locks its group before it takes seqs. */
static gim_err lock_batch(struct store_conn *c, const int64_t *groups, size_t ngroups,
                          const int64_t *users, size_t nusers, const int64_t *rooms, size_t nrooms)
{
    gim_err e = GIM_OK;
    if (ngroups > 0)
        e = group_lock_batch(c, groups, ngroups);
    if (e == GIM_OK && nusers > 0)
        e = seq_lock(c, SEQ_USER, users, nusers);
    if (e == GIM_OK && nrooms > 0)
        e = seq_lock(c, SEQ_ROOM, rooms, nrooms);
    return e;
}

static void wait_locks(struct store_conn *c, struct busy_wait *b, uint32_t timeout_ms)
{
    (void)c; /* lock waits are bounded by the server's lock_timeout; stop_waiting ends them */
    (void)b;
    (void)timeout_ms;
}

static void stop_waiting(struct store_conn *c)
{
    pgstore_stop_waiting(c);
}

static gim_err checkpointer_open(const struct gim_config *cfg, struct store_conn *c, int tries,
                                 struct store_conn **out, char *errbuf, size_t errlen)
{
    (void)cfg; /* PostgreSQL checkpoints by itself */
    (void)c;
    (void)tries;
    (void)errbuf;
    (void)errlen;
    *out = NULL;
    return GIM_OK;
}

static gim_err checkpoint_hook(struct store_conn *c, storage_wal_fn fn, void *arg)
{
    (void)c; /* never called: checkpointer_open opens none */
    (void)fn;
    (void)arg;
    return GIM_OK;
}

static void checkpoint(struct store_conn *c, int *log_frames, int *copied)
{
    (void)c;
    if (log_frames)
        *log_frames = 0;
    if (copied)
        *copied = 0;
}

static bool scrub(struct store_conn *c)
{
    (void)c; /* no WAL of ours to scrub: see docs on erasure on PostgreSQL */
    return true;
}

/* Ours: the writer's connection is not thread-safe. */
static gim_err health_open(const struct gim_config *cfg, struct store_conn **out, char *errbuf,
                           size_t errlen)
{
    return store_open(cfg, STORE_READER, out, errbuf, errlen);
}

/* Reachable, and a primary (a standby in recovery cannot take writes). */
static bool health_writable(struct store_conn *c, char *reason, size_t len)
{
    static const char PG_WRITABLE[] = "SELECT NOT pg_is_in_recovery()";
    PGresult *res = NULL;
    gim_err e = pgstore_ready(c);
    if (e == GIM_OK)
        e = PG_RUN0(c, PG_WRITABLE, &res, NULL);
    bool ok = e == GIM_OK && PQntuples(res) == 1 && pgstore_int(res, 0, 0) != 0;
    if (!ok)
        snprintf(reason, len, "database not writable: %s",
                 e != GIM_OK ? "postgres unreachable" : "postgres is in recovery (a standby)");
    PQclear(res);
    return ok;
}

static const char *location(const struct gim_config *cfg)
{
    (void)cfg; /* never the URL: it may hold a password */
    return NULL;
}

const struct storage_tx_ops storage_pg_tx = {
    .begin = begin,
    .savepoint = savepoint,
    .release = release,
    .rollback_to = rollback_to,
    .lost = lost,
    .commit = commit,
    .rollback = rollback,
    .in_transaction = in_transaction,
    .retryable = retryable,
    .sqlstate = sqlstate,
    .lock_batch = lock_batch,
    .wait_locks = wait_locks,
    .stop_waiting = stop_waiting,
    .checkpointer_open = checkpointer_open,
    .checkpoint_hook = checkpoint_hook,
    .checkpoint = checkpoint,
    .scrub = scrub,
    .health_open = health_open,
    .health_writable = health_writable,
    .schema_version = pgstore_schema_version,
    .location = location,
};
