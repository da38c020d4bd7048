#include "maint.h"

#include <inttypes.h>
#include <stdlib.h>

#include "config.h"
#include "log.h"
#include "presence.h"
#include "retention.h"
#include "storage.h"

#define SWEEP_MAX       1024 /* sessions signed out per transaction */
#define SWEEP_BUDGET_MS 200  /* most time one pass spends on slices */
/*
 * Idempotency pruning. A sweep starts every PRUNE_EVERY_MS; each pass then prunes one slice
 * of each table it has not finished, and more slices of a table whose slice came full, within
 * PRUNE_BUDGET_MS. It used to be one statement of PRUNE_ROWS rows per table every 10 minutes:
 * above 3.3 sends/s the expired records piled up for good, and each statement looked at every
 * record of the table (0.3 s of the writer, all sends waiting, at 10M records; see
 * docs/benchmarks.md, "Idempotency pruning in slices").
 */
#define PRUNE_ROWS         2000
#define PRUNE_EVERY_MS     (10 * 60 * 1000)
#define PRUNE_BUDGET_MS    50
#define RETENTION_ROWS     1000
#define RETENTION_EVERY_MS (60 * 1000)

/* When retention is due next. Only the writer thread runs maintenance, so no lock. */
static int64_t retention_due_ms;

gim_err maint_signout(struct wctx *w, int64_t device_id)
{
    gim_err e = storage(w->db)->device->sign_out_any(w, device_id);
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
    const struct storage_tx_ops *tx = storage(w->db)->tx;
    int64_t ids[SWEEP_MAX];
    size_t n = presence_expired(w->presence, cutoff, ids, SWEEP_MAX);
    gim_err e;
    if (n == 0)
        return 0;
    if ((e = tx->begin(w->db)) != GIM_OK)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if ((e = maint_signout(w, ids[i])) != GIM_OK)
            goto rollback;
    if ((e = tx->commit(w->db, true)) != GIM_OK)
        goto rollback;
    for (size_t i = 0; i < n; i++) {
        presence_remove(w->presence, ids[i], NULL);
        log_info("presence timeout", "device=%lld", (long long)ids[i]);
    }
    return n;
rollback:
    tx->rollback(w->db);
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

/*
 * One slice of a table: *todo stays set while its sweep has more, *full if it came full. A
 * failure is logged and ends the table's sweep; the next sweep retries.
 */
static int prune_swept(struct wctx *w, gim_err (*op)(struct wctx *, int64_t, int, int *, bool *),
                       const char *table, int64_t cutoff, bool *todo, bool *full)
{
    int n = 0;
    bool more = false;
    gim_err e = op(w, cutoff, PRUNE_ROWS, &n, &more);
    if (e != GIM_OK) {
        log_warn("idempotency prune failed", "table=%s code=%s error=\"%s\" retry_in_ms=%d", table,
                 gim_err_name(e), store_errmsg(w->db), PRUNE_EVERY_MS);
        n = 0;
        more = false;
    }
    *todo = more;
    *full = *full || n == PRUNE_ROWS;
    return n;
}

/*
 * This pass's share of the sweep: a slice of each unfinished table, again while a slice comes
 * full (a backlog of expired records) and the budget lasts. Send key rows and room details may
 * go in either order: a key row whose details are gone is expired too (storage.h).
 */
static void prune_idempotency(struct wctx *w, int64_t now)
{
    const struct storage_maint_ops *m = storage(w->db)->maint;
    int64_t cutoff = now - (int64_t)w->cfg->idempotency.window_seconds * 1000;
    int64_t until = gim_clock_real_ms(NULL) + PRUNE_BUDGET_MS;
    int n = 0, rooms = 0, ops = 0;
    bool full;
    do {
        full = false;
        if (w->prune_sends)
            n +=
                prune_swept(w, m->prune_idempotency, "idempotency", cutoff, &w->prune_sends, &full);
        if (w->prune_rooms)
            rooms += prune_swept(w, m->prune_room_idempotency, "room_idempotency", cutoff,
                                 &w->prune_rooms, &full);
        if (w->prune_ops)
            ops += prune_swept(w, m->prune_operator_idempotency, "operator_idempotency", cutoff,
                               &w->prune_ops, &full);
    } while (full && gim_clock_real_ms(NULL) < until);
    if (n > 0 || rooms > 0 || ops > 0)
        log_debug("idempotency pruned", "rows=%d room_rows=%d operator_rows=%d backend=%s", n,
                  rooms, ops, storage(w->db)->name);
}

/*
 * Shared sessions (PostgreSQL: several instances on one database). The
 * sweep, idempotency pruning and retention run on the instance whose writer
 * connection holds the maintenance lock (taken once, kept for the
 * connection's life: a dead instance's passes to another); see
 * docs/scale-out.md, "Maintenance on PostgreSQL".
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

/* Every instance: what it saw since its last write, into device.updated_at. */
static void write_seen(struct wctx *w, int64_t now)
{
    const struct storage_maint_ops *m = storage(w->db)->maint;
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
        e = m->seen(w, ids + i, seen + i, n - i < SEEN_SLICE ? n - i : SEEN_SLICE);
    char gw[GW_SLICE][PRESENCE_GATEWAY_MAX + 1];
    int64_t at[GW_SLICE];
    size_t ngw = presence_leased(w->presence, since, gw, at, GW_SLICE);
    for (size_t i = 0; i < ngw && i < GW_SLICE && e == GIM_OK; i++)
        e = m->seen_gateway(w, gw[i], at[i]);
out:
    free(ids);
    free(seen);
    if (e == GIM_OK)
        seen_written_ms = now;
    else
        log_warn("presence seen write failed", "code=%s sqlstate=%s retry=next_pass",
                 gim_err_name(e), store_errmsg(w->db));
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
static bool sweep_shared(struct wctx *w, int64_t cutoff)
{
    const struct storage_maint_ops *m = storage(w->db)->maint;
    int64_t until = gim_clock_real_ms(NULL) + SWEEP_BUDGET_MS;
    for (;;) {
        int64_t ids[SWEEP_MAX];
        size_t n = 0;
        if (m->sweep(w, cutoff, ids, SWEEP_MAX, &n) != GIM_OK) {
            log_warn("presence sweep failed", "sqlstate=%s retry=next_pass", store_errmsg(w->db));
            return false;
        }
        for (size_t i = 0; i < n; i++) {
            presence_remove(w->presence, ids[i], NULL);
            log_info("presence timeout", "device=%lld backend=%s", (long long)ids[i],
                     storage(w->db)->name);
        }
        if (n < SWEEP_MAX)
            return false;
        if (gim_clock_real_ms(NULL) >= until)
            return true;
    }
}

/*
 * One pass. Shared sessions first write what this instance saw and forget
 * its stale cache; then, on the instance holding the maintenance lock (on
 * SQLite the one writer), the sweep, the WAL scrub a recall or retention
 * asked for, idempotency pruning and retention.
 */
bool maint_run(struct wctx *w)
{
    const struct storage_maint_ops *m = storage(w->db)->maint;
    bool backlog = false;
    int64_t now = gim_clock_now(&w->clock);
    int64_t cutoff = 0;
    w->now_ms = now;
    if (m->ready(w) != GIM_OK)
        return false;
    if (storage(w->db)->shared_sessions) {
        cutoff = sweep_cutoff(w, now);
        if (w->presence) {
            write_seen(w, now);
            drop_stale(w, cutoff);
        }
    }
    if (!m->try_lock(w))
        return false;
    if (w->presence)
        backlog =
            storage(w->db)->shared_sessions ? sweep_shared(w, cutoff) : sweep_presence(w, now);
    if (w->scrub_wal && m->scrub_wal(w) == GIM_OK)
        w->scrub_wal = false;
    if (now - w->last_prune_ms >= PRUNE_EVERY_MS) {
        w->last_prune_ms = now;
        w->prune_sends = w->prune_rooms = w->prune_ops = true; /* a sweep starts */
    }
    if (w->prune_sends || w->prune_rooms || w->prune_ops)
        prune_idempotency(w, now);
    if (w->cfg->retention.days > 0 && now >= retention_due_ms) {
        int n = 0;
        gim_err e = retention_run(w, now, RETENTION_ROWS, &n);
        /* A full slice means a backlog: come back on the next pass, not in a minute. */
        retention_due_ms = e == GIM_OK && n == RETENTION_ROWS ? now : now + RETENTION_EVERY_MS;
    }
    return backlog;
}
