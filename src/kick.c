#include "kick.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "push.h"
#include "storage.h"

gim_err kick_apply(struct wctx *w, int64_t device_id, struct kick_target *t)
{
    struct session row;
    memset(t, 0, sizeof *t);
    t->device_id = device_id;
    gim_err e = storage(w->db)->device->kick(w, device_id, &row, &t->was_online);
    if (e == GIM_OK || e == GIM_ENOTFOUND) {
        t->user_id = row.user_id;
        snprintf(t->gateway_id, sizeof t->gateway_id, "%s", row.gateway_id);
    }
    if (e != GIM_OK && e != GIM_ENOTFOUND)
        log_warn("kick write failed", "device=%" PRId64 " code=%s error=\"%s\"", device_id,
                 gim_err_name(e), store_errmsg(w->db));
    return e;
}

void kick_committed(struct wctx *w, const struct kick_target *t)
{
    struct session s = {0};
    bool had = w->presence && presence_remove(w->presence, t->device_id, &s);
    /* Shared sessions (PostgreSQL): this instance's session is a cache; the row read under
     * lock is the truth (the device may be on a gateway another instance signed it in at).
     * Other instances drop their cached copy within PRESENCE_RECHECK_MS
     * (presence_check_shared). */
    if (!had || storage(w->db)->shared_sessions) {
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
