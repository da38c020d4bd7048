#include "maint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "log.h"
#include "pgstore.h"
#include "presence.h"
#include "retention.h"

#define SWEEP_MAX          1024 /* sessions signed out per transaction */
#define SWEEP_BUDGET_MS    200  /* most time one pass spends on slices */
#define PRUNE_ROWS         2000
#define PRUNE_EVERY_MS     (10 * 60 * 1000)
#define RETENTION_ROWS     1000
#define RETENTION_EVERY_MS (60 * 1000)

/* When retention is due next. Only the writer thread runs maintenance, so no lock. */
static int64_t retention_due_ms;

/*
 * An idempotency record outlives its window; the tables have no time index
 * (it would cost every send), so pruning scans, rarely and in slices. A
 * user/group send's record is as old as its message; a key row whose
 * message or room details are gone has no time left and goes too. ?3 is a
 * message id below which messages are old (idem_old_ids): the scan compares
 * it with each record's message_id, as it compared created_at before
 * migration 0007, and looks up only the messages that may be old.
 */
static const char SQL_PRUNE_IDEM[] =
    "DELETE FROM idempotency WHERE (device_id, request_id) IN "
    "(SELECT i.device_id, i.request_id FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "LEFT JOIN room_idempotency r ON i.message_id IS NULL AND r.device_id = i.device_id "
    "AND r.request_id = i.request_id "
    "WHERE (i.message_id IS NULL OR i.message_id < ?3) "
    "AND coalesce(m.send_time, r.created_at, 0) < ?1 LIMIT ?2)";
static const char SQL_MESSAGE_IDS[] = "SELECT min(id), max(id) FROM message";
static const char SQL_MESSAGE_AT[] =
    "SELECT id, send_time FROM message WHERE id >= ?1 ORDER BY id LIMIT 1";
/* Room details go with their window; a key row left without them is pruned above. */
static const char SQL_PRUNE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE (device_id, request_id) IN "
    "(SELECT device_id, request_id FROM room_idempotency WHERE created_at < ?1 LIMIT ?2)";

/* The business API's records (operator.h) keep the same window; they have a time index. */
static const char SQL_PRUNE_OP_IDEM[] =
    "DELETE FROM operator_idempotency WHERE idem_key IN "
    "(SELECT idem_key FROM operator_idempotency WHERE created_at < ?1 LIMIT ?2)";

/* Whatever user or gateway the device is on: the sweeper and kicks end the device's session. */
static const char SQL_SIGN_OUT[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = ?1 WHERE device_id = ?2";

static const char PG_SIGN_OUT[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = $1 WHERE device_id = $2";

gim_err maint_signout(struct wctx *w, int64_t device_id)
{
    gim_err e = STORE_RUN2(w->db, SQL_SIGN_OUT, PG_SIGN_OUT, NULL, STORE_INT(w->now_ms),
                           STORE_INT(device_id));
    if (e != GIM_OK)
        log_warn("sign-out write failed", "device=%" PRId64 " error=\"%s\"", device_id,
                 store_errmsg(w->db));
    return e;
}

/*
 * Signs out one slice of expired sessions in one transaction; returns how
 * many, 0 on failure (logged: the sessions stay, and the next pass, a
 * second later, tries them again).
 */
static size_t sweep_slice(struct wctx *w, int64_t cutoff)
{
    int64_t ids[SWEEP_MAX];
    size_t n = presence_expired(w->presence, cutoff, ids, SWEEP_MAX);
    gim_err e;
    if (n == 0)
        return 0;
    if ((e = store_exec(w->db, "BEGIN IMMEDIATE")) != GIM_OK)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if ((e = maint_signout(w, ids[i])) != GIM_OK)
            goto rollback;
    if ((e = store_exec(w->db, "COMMIT")) != GIM_OK)
        goto rollback;
    for (size_t i = 0; i < n; i++) {
        presence_remove(w->presence, ids[i], NULL);
        log_info("presence timeout", "device=%lld", (long long)ids[i]);
    }
    return n;
rollback:
    store_exec(w->db, "ROLLBACK");
fail:
    log_warn("presence sweep failed", "devices=%zu code=%s retry=next_pass", n, gim_err_name(e));
    return 0;
}

/*
 * A gateway whose leases stop takes all of its sessions over the timeout at
 * once, so one pass keeps taking slices while they come full, within a time
 * budget: small transactions keep each hold of the write lock short, and the
 * budget bounds how long queued requests wait for the writer. Returns true
 * when it stopped at the budget with a full slice: more remain, and the
 * writer comes back right after its next batch.
 */
static bool sweep_presence(struct wctx *w, int64_t now)
{
    int64_t cutoff = now - (int64_t)w->cfg->presence.timeout_seconds * 1000;
    int64_t until = gim_clock_real_ms(NULL) + SWEEP_BUDGET_MS;
    while (sweep_slice(w, cutoff) == SWEEP_MAX) {
        if (gim_clock_real_ms(NULL) >= until)
            return true;
    }
    return false;
}

/* Recalled content must leave the WAL file too: truncate it once readers allow. */
static void scrub_wal(struct wctx *w)
{
    int log_frames = -1, ckpt = -1;
    int rc =
        sqlite3_wal_checkpoint_v2(w->db->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log_frames, &ckpt);
    if (rc == SQLITE_OK)
        w->scrub_wal = false;
    else
        log_debug("wal truncate postponed", "rc=%d", rc);
}

static int prune(struct wctx *w, const char *sql, const char *table, int64_t cutoff,
                 int64_t below_id)
{
    int n = 0;
    gim_err e = below_id ? STORE_RUN(w->db, sql, &n, STORE_INT(cutoff), STORE_INT(PRUNE_ROWS),
                                     STORE_INT(below_id))
                         : STORE_RUN(w->db, sql, &n, STORE_INT(cutoff), STORE_INT(PRUNE_ROWS));
    if (e != GIM_OK) {
        log_warn("idempotency prune failed", "table=%s code=%s error=\"%s\" retry_in_ms=%d", table,
                 gim_err_name(e), sqlite3_errmsg(w->db->db), PRUNE_EVERY_MS);
        return 0;
    }
    return n;
}

/*
 * The first message id whose send_time is not before cutoff, found by
 * bisecting the ids (send_time grows with the id: the writer stamps both in
 * order). If the clock ever stepped back the bound is only less complete;
 * the prune still checks each message's own send_time. 0 on failure (then
 * nothing is pruned by message).
 */
static int64_t idem_old_ids(struct wctx *w, int64_t cutoff)
{
    int64_t lo = INT64_MAX, hi = INT64_MAX; /* no messages: every record's is gone */
    sqlite3_stmt *st = store_stmt(w->db, SQL_MESSAGE_IDS);
    if (!st)
        return 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        lo = sqlite3_column_int64(st, 0);
        hi = sqlite3_column_int64(st, 1) + 1;
    }
    store_done(st);
    if (rc != SQLITE_ROW)
        return 0;
    if (!(st = store_stmt(w->db, SQL_MESSAGE_AT)))
        return 0;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (STORE_BIND(st, STORE_INT(mid)) != SQLITE_OK) {
            store_done(st);
            return 0;
        }
        if (sqlite3_step(st) != SQLITE_ROW) {
            hi = mid;
        } else if (sqlite3_column_int64(st, 1) < cutoff) {
            lo = sqlite3_column_int64(st, 0) + 1;
        } else {
            hi = mid;
        }
        store_done(st);
    }
    /* Ids between lo and the next message's are deleted messages': as old as their neighbours. */
    if (STORE_BIND(st, STORE_INT(lo)) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        lo = sqlite3_column_int64(st, 0);
    store_done(st);
    return lo;
}

static void prune_idempotency(struct wctx *w, int64_t now)
{
    int64_t cutoff = now - (int64_t)w->cfg->idempotency.window_seconds * 1000;
    int64_t below = idem_old_ids(w, cutoff);
    int n = below ? prune(w, SQL_PRUNE_IDEM, "idempotency", cutoff, below) : 0;
    int rooms = prune(w, SQL_PRUNE_ROOM_IDEM, "room_idempotency", cutoff, 0);
    int ops = prune(w, SQL_PRUNE_OP_IDEM, "operator_idempotency", cutoff, 0);
    if (n > 0 || rooms > 0 || ops > 0)
        log_debug("idempotency pruned", "rows=%d room_rows=%d operator_rows=%d", n, rooms, ops);
}

/*
 * PostgreSQL (several instances on one database). The sweep, idempotency
 * pruning and retention run on the instance whose writer connection holds
 * the maintenance advisory lock (taken once, kept for the connection's
 * life: a dead instance's passes to another); see docs/scale-out.md,
 * "Maintenance on PostgreSQL".
 *
 * Presence timeout: a session's last request is in the memory of the
 * instance that served it, and its gateway's lease in the memory of the
 * instance the lease reached, so every instance writes what it saw to the
 * device table, coarsely: at most every seen_every_ms(), device.updated_at
 * is raised to the last request of each session active since its last
 * write, and to the last lease for every online device of each gateway
 * that leased (a raise only: a row already newer is not written). The
 * lock holder signs out the online devices whose updated_at is older than
 * the timeout plus that write lag (seen_every_ms + one maintenance pass),
 * so a device is never signed out before presence.timeout_seconds of
 * silence, and is signed out at most about seen_every_ms + 2 passes later
 * (plus the instances' clock skew). Each instance also drops from its own
 * memory the sessions it has not seen for as long (nothing written: the
 * session is a cache; a request finds the row again).
 */
#define SEEN_SLICE 1000 /* devices per seen write */
#define GW_SLICE   256  /* gateways per pass */
#define PASS_MS    1000 /* the writer runs maintenance about once a second (writer.c) */

static const char PG_PRUNE_IDEM[] =
    "DELETE FROM idempotency WHERE ctid IN (SELECT i.ctid FROM idempotency i "
    "LEFT JOIN message m ON m.id = i.message_id "
    "LEFT JOIN room_idempotency r ON i.message_id IS NULL AND r.device_id = i.device_id "
    "AND r.request_id = i.request_id "
    "WHERE coalesce(m.send_time, r.created_at, 0) < $1 LIMIT $2)";
/* $1, $2: device ids and their last requests as array literals ("{1,2}"). */
static const char PG_SEEN[] = "UPDATE device d SET updated_at = v.seen "
                              "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, seen) "
                              "WHERE d.device_id = v.id AND d.online = 1 AND d.updated_at < v.seen";
static const char PG_SEEN_GATEWAY[] =
    "UPDATE device SET updated_at = $2 WHERE gateway_id = $1 AND online = 1 AND updated_at < $2";
/* The outer conditions are checked again on a row another instance changed meanwhile. */
static const char PG_SWEEP[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = $1 "
    "WHERE online = 1 AND updated_at < $2 AND device_id IN (SELECT device_id FROM device "
    "WHERE online = 1 AND updated_at < $2 ORDER BY device_id LIMIT $3) RETURNING device_id";

/* When this instance last wrote its sessions' seen times (writer thread only). */
static int64_t seen_written_ms;

/* How often an instance writes what it saw: a quarter of the timeout, within [250 ms, 15 s]. */
static int64_t seen_every_ms(const struct wctx *w)
{
    int64_t t = (int64_t)w->cfg->presence.timeout_seconds * 1000 / 4;
    return t < 250 ? 250 : t > 15000 ? 15000 : t;
}

/* The oldest updated_at an online device may have: older is silent for the timeout. */
static int64_t sweep_cutoff(const struct wctx *w, int64_t now)
{
    return now - (int64_t)w->cfg->presence.timeout_seconds * 1000 - seen_every_ms(w) - PASS_MS;
}

/* v[0..n) as a PostgreSQL array literal into a malloc'ed string; NULL when out of memory. */
static char *array_literal(const int64_t *v, size_t n)
{
    size_t cap = 3 + n * 21, len = 1;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = '{';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i ? "," : "", v[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

static gim_err write_seen_slice(struct wctx *w, const int64_t *ids, const int64_t *seen, size_t n)
{
    char *a = array_literal(ids, n), *b = array_literal(seen, n);
    gim_err e =
        a && b ? PG_RUN(w->db, PG_SEEN, NULL, NULL, STORE_TEXT(a), STORE_TEXT(b)) : GIM_ENOMEM;
    free(a);
    free(b);
    return e;
}

/* Every instance: what it saw since its last write, into device.updated_at. */
static void write_seen(struct wctx *w, int64_t now)
{
    if (now - seen_written_ms < seen_every_ms(w))
        return;
    /* A second of overlap: a request stamped just before the last write may have stored its
     * time just after that write read it. Rows already as new are not written again. */
    int64_t since = seen_written_ms ? seen_written_ms - PASS_MS : 0;
    size_t cap = 0, n = 0;
    int64_t *ids = NULL, *seen = NULL;
    gim_err e = GIM_OK;
    presence_counts(w->presence, &cap, NULL);
    for (int tries = 0; tries < 2; tries++) {
        cap += 64;
        free(ids);
        free(seen);
        ids = malloc(cap * sizeof *ids);
        seen = malloc(cap * sizeof *seen);
        if (!ids || !seen) {
            e = GIM_ENOMEM;
            goto out;
        }
        n = presence_active(w->presence, since, ids, seen, cap);
        if (n <= cap)
            break;
        cap = n; /* sessions came in meanwhile: once more with room for them */
    }
    n = n < cap ? n : cap;
    for (size_t i = 0; i < n && e == GIM_OK; i += SEEN_SLICE)
        e = write_seen_slice(w, ids + i, seen + i, n - i < SEEN_SLICE ? n - i : SEEN_SLICE);
    char gw[GW_SLICE][PRESENCE_GATEWAY_MAX + 1];
    int64_t at[GW_SLICE];
    size_t ngw = presence_leased(w->presence, since, gw, at, GW_SLICE);
    for (size_t i = 0; i < ngw && i < GW_SLICE && e == GIM_OK; i++)
        e = PG_RUN(w->db, PG_SEEN_GATEWAY, NULL, NULL, STORE_TEXT(gw[i]), STORE_INT(at[i]));
out:
    free(ids);
    free(seen);
    if (e == GIM_OK)
        seen_written_ms = now;
    else
        log_warn("presence seen write failed", "code=%s sqlstate=%s retry=next_pass",
                 gim_err_name(e), pgstore_sqlstate(w->db));
}

/* Every instance: forgets the cached sessions it has not seen for the sweep's cutoff. */
static void drop_stale(struct wctx *w, int64_t cutoff)
{
    int64_t ids[SWEEP_MAX];
    size_t n;
    do {
        n = presence_expired(w->presence, cutoff, ids, SWEEP_MAX);
        for (size_t i = 0; i < n; i++)
            presence_remove(w->presence, ids[i], NULL);
    } while (n == SWEEP_MAX);
}

/* The lock holder: signs out the devices no instance has seen for the timeout. */
static bool sweep_pg(struct wctx *w, int64_t now, int64_t cutoff)
{
    int64_t until = gim_clock_real_ms(NULL) + SWEEP_BUDGET_MS;
    for (;;) {
        PGresult *res = NULL;
        if (PG_RUN(w->db, PG_SWEEP, &res, NULL, STORE_INT(now), STORE_INT(cutoff),
                   STORE_INT(SWEEP_MAX)) != GIM_OK) {
            log_warn("presence sweep failed", "sqlstate=%s retry=next_pass",
                     pgstore_sqlstate(w->db));
            return false;
        }
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            int64_t id = pgstore_int(res, i, 0);
            presence_remove(w->presence, id, NULL);
            log_info("presence timeout", "device=%lld backend=postgres", (long long)id);
        }
        PQclear(res);
        if (n < SWEEP_MAX)
            return false;
        if (gim_clock_real_ms(NULL) >= until)
            return true;
    }
}
/* Room sends' details go with their window, after the key rows that needed them (above). */
static const char PG_PRUNE_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE ctid IN "
    "(SELECT ctid FROM room_idempotency WHERE created_at < $1 LIMIT $2)";

static bool maint_run_pg(struct wctx *w)
{
    int64_t now = gim_clock_now(&w->clock);
    bool backlog = false;
    w->now_ms = now;
    if (pgstore_ready(w->db) != GIM_OK)
        return false;
    int64_t cutoff = sweep_cutoff(w, now);
    if (w->presence) {
        write_seen(w, now);
        drop_stale(w, cutoff);
    }
    if (!pgstore_try_lock(w->db, PGSTORE_LOCK_MAINT))
        return false;
    if (w->presence)
        backlog = sweep_pg(w, now, cutoff);
    if (now - w->last_prune_ms >= PRUNE_EVERY_MS) {
        int n = 0;
        int64_t idem_cutoff = now - (int64_t)w->cfg->idempotency.window_seconds * 1000;
        w->last_prune_ms = now;
        if (PG_RUN(w->db, PG_PRUNE_IDEM, NULL, &n, STORE_INT(idem_cutoff), STORE_INT(PRUNE_ROWS)) !=
            GIM_OK)
            log_warn("idempotency prune failed", "sqlstate=%s retry_in_ms=%d",
                     pgstore_sqlstate(w->db), PRUNE_EVERY_MS);
        else if (n > 0)
            log_debug("idempotency pruned", "rows=%d backend=postgres", n);
        if (PG_RUN(w->db, PG_PRUNE_ROOM_IDEM, NULL, &n, STORE_INT(idem_cutoff),
                   STORE_INT(PRUNE_ROWS)) != GIM_OK)
            log_warn("room idempotency prune failed", "sqlstate=%s retry_in_ms=%d",
                     pgstore_sqlstate(w->db), PRUNE_EVERY_MS);
        else if (n > 0)
            log_debug("room idempotency pruned", "rows=%d backend=postgres", n);
    }
    if (w->cfg->retention.days > 0 && now >= retention_due_ms) {
        int n = 0;
        gim_err e = retention_run(w, now, RETENTION_ROWS, &n);
        retention_due_ms = e == GIM_OK && n == RETENTION_ROWS ? now : now + RETENTION_EVERY_MS;
    }
    return backlog;
}

bool maint_run(struct wctx *w)
{
    if (store_is_pg(w->db))
        return maint_run_pg(w);
    bool backlog = false;
    int64_t now = gim_clock_now(&w->clock);
    w->now_ms = now;
    if (w->presence)
        backlog = sweep_presence(w, now);
    if (w->scrub_wal)
        scrub_wal(w);
    if (now - w->last_prune_ms >= PRUNE_EVERY_MS) {
        w->last_prune_ms = now;
        prune_idempotency(w, now);
    }
    if (w->cfg->retention.days > 0 && now >= retention_due_ms) {
        int n = 0;
        gim_err e = retention_run(w, now, RETENTION_ROWS, &n);
        /* A full slice means a backlog: come back on the next pass, not in a minute. */
        retention_due_ms = e == GIM_OK && n == RETENTION_ROWS ? now : now + RETENTION_EVERY_MS;
    }
    return backlog;
}
