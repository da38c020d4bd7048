#include "retention.h"

#include "config.h"
#include "log.h"
#include "storage.h"

#define DAY_MS (24LL * 60 * 60 * 1000)

/*
 * One flow for both backends: a short transaction of maintenance's own
 * (storage.h, the tx area's begin/commit), messages first, then room log entries with what is
 * left of max_rows. The statements are the backend's (src/storage/
 * sqlite_maint.c, pg_maint.c); on PostgreSQL this runs on the instance that
 * holds the maintenance lock (maint.c).
 */
gim_err retention_run(struct wctx *w, int64_t now_ms, int max_rows, int *deleted)
{
    const struct storage_maint_ops *m = storage(w->db)->maint;
    const struct storage_tx_ops *tx = storage(w->db)->tx;
    int messages = 0, rooms = 0;
    gim_err e;
    *deleted = 0;
    if (w->cfg->retention.days == 0 || max_rows <= 0)
        return GIM_OK;
    if (tx->in_transaction(w->db)) {
        log_error("retention called inside a transaction", "%s", "skipped");
        return GIM_EINTERNAL;
    }
    int64_t cutoff = now_ms - (int64_t)w->cfg->retention.days * DAY_MS;
    if ((e = tx->begin(w->db)) != GIM_OK)
        goto fail;
    if ((e = m->retention_messages(w, cutoff, max_rows, &messages)) != GIM_OK)
        goto fail;
    if (messages < max_rows &&
        (e = m->retention_rooms(w, cutoff, max_rows - messages, &rooms)) != GIM_OK)
        goto fail;
    if ((e = tx->commit(w->db, true)) != GIM_OK)
        goto fail;
    *deleted = messages + rooms;
    if (*deleted > 0)
        log_info("retention pruned", "messages=%d room_messages=%d cutoff_ms=%lld backend=%s",
                 messages, rooms, (long long)cutoff, storage(w->db)->name);
    return GIM_OK;
fail:
    log_warn("retention failed", "code=%s error=\"%s\"", gim_err_name(e), store_errmsg(w->db));
    tx->rollback(w->db);
    return e;
}
