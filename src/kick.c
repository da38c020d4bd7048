#include "kick.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "push.h"
#include "maint.h"

static const char SQL_DEVICE[] =
    "SELECT user_id, online, gateway_id FROM device WHERE device_id = ?1";

gim_err kick_apply(struct wctx *w, int64_t device_id, struct kick_target *t)
{
    memset(t, 0, sizeof *t);
    t->device_id = device_id;
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
    if (!had) {
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
