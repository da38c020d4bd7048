#include "kick.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "maint.h"
#include "pgstore.h"
#include "proto.h"
#include "push.h"

static const char SQL_DEVICE[] =
    "SELECT user_id, online, gateway_id FROM device WHERE device_id = ?1";
/*
 * PostgreSQL: the row is locked until the commit, so a sign-in of the same
 * device at another instance waits and then wins (it signs in after the
 * kick), and the gateway read here is the one the device is on now,
 * whichever instance signed it in.
 */
static const char PG_DEVICE[] =
    "SELECT user_id, online, gateway_id FROM device WHERE device_id = $1 FOR UPDATE";

static gim_err apply_pg(struct wctx *w, int64_t device_id, struct kick_target *t)
{
    PGresult *res = NULL;
    gim_err e = PG_RUN(w->db, PG_DEVICE, &res, NULL, STORE_INT(device_id));
    if (e != GIM_OK)
        return e;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return GIM_ENOTFOUND;
    }
    size_t len = 0;
    const uint8_t *gw = pgstore_blob(res, 0, 2, &len);
    t->user_id = pgstore_int(res, 0, 0);
    t->was_online = pgstore_int(res, 0, 1) != 0;
    len = len > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : len;
    if (gw)
        memcpy(t->gateway_id, gw, len);
    t->gateway_id[len] = 0;
    PQclear(res);
    return maint_signout(w, device_id);
}

gim_err kick_apply(struct wctx *w, int64_t device_id, struct kick_target *t)
{
    memset(t, 0, sizeof *t);
    t->device_id = device_id;
    if (store_is_pg(w->db))
        return apply_pg(w, device_id, t);
    sqlite3_stmt *st = store_stmt(w->db, SQL_DEVICE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(device_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *gw = sqlite3_column_text(st, 2);
        t->user_id = sqlite3_column_int64(st, 0);
        t->was_online = sqlite3_column_int(st, 1) != 0;
        snprintf(t->gateway_id, sizeof t->gateway_id, "%s", gw ? (const char *)gw : "");
    }
    store_done(st);
    if (rc == SQLITE_DONE)
        return GIM_ENOTFOUND;
    if (rc != SQLITE_ROW)
        return store_err(rc);
    return maint_signout(w, device_id);
}

void kick_committed(struct wctx *w, const struct kick_target *t)
{
    struct session s = {0};
    bool had = w->presence && presence_remove(w->presence, t->device_id, &s);
    /* PostgreSQL: this instance's session is a cache; the row read under lock is the truth
     * (the device may be on a gateway another instance signed it in at). Other instances
     * drop their cached copy within PRESENCE_RECHECK_MS (presence_check_shared). */
    if (!had || store_is_pg(w->db)) {
        /* No session (timed out, or offline): a gateway may still hold a stale
         * connection of it; the last one recorded is told to drop it too. */
        s.device_id = t->device_id;
        snprintf(s.gateway_id, sizeof s.gateway_id, "%s", t->gateway_id);
    }
    log_info("kicked", "device=%" PRId64 " user=%" PRId64 " session=%d gateway=%s", t->device_id,
             t->user_id, (int)had, s.gateway_id);
    if (!*s.gateway_id)
        return;
    Pb__Output o = PB__OUTPUT__INIT;
    o.type = PB__PACKAGE_TYPE__PT_SIGN_OUT;
    o.code = PB__ERROR_CODE__EC_UNAUTHENTICATED;
    o.message = (char *)KICK_MESSAGE;
    push_deliver(w->push, &s, 1, 0, &o);
}
