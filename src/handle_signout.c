/*
 * PT_SIGN_OUT: the gateway closed a connection; the device goes offline.
 *
 * The sign-out is guarded by the caller's user and gateway: when a device has
 * already signed in again elsewhere (its sign-in queued ahead of this
 * sign-out), the late sign-out of the old connection must not take the new
 * session down. (The presence sweeper and kicks sign a device out whatever
 * its session: storage.h's sign_out_any and kick.)
 */
#include <inttypes.h>

#include "handlers.h"
#include "log.h"
#include "presence.h"
#include "request.h"
#include "storage.h"

static gim_err mark_offline(struct wctx *w, int64_t device_id, int64_t user_id,
                            const char *gateway_id)
{
    gim_err e = storage(w->db)->device->sign_out(w, device_id, user_id, gateway_id);
    if (e != GIM_OK)
        log_warn("sign-out write failed", "device=%" PRId64 " code=%s error=\"%s\"", device_id,
                 gim_err_name(e), store_errmsg(w->db));
    return e;
}

static gim_err signout_write(struct request *r, struct wctx *w)
{
    gim_err e = mark_offline(w, r->sess.device_id, r->sess.user_id, r->sess.gateway_id);
    if (e != GIM_OK)
        return request_fail(r, e, "sign-out: cannot record the device");
    return GIM_OK;
}

static void signout_committed(struct request *r, struct wctx *w)
{
    /*
     * Only the writer thread changes presence, so nothing can slip in between
     * this check and the removal: a session that moved to another gateway
     * (or user) in the meantime stays.
     */
    if (presence_check(w->presence, r->sess.user_id, r->sess.device_id, r->sess.gateway_id,
                       w->now_ms, NULL) != GIM_OK)
        return;
    presence_remove(w->presence, r->sess.device_id, NULL);
    log_debug("signed out", "device=%" PRId64 " user=%" PRId64 " gateway=%s", r->sess.device_id,
              r->sess.user_id, r->sess.gateway_id);
}

const struct handler handle_signout = {
    .type = PB__PACKAGE_TYPE__PT_SIGN_OUT,
    .name = "sign_out",
    .needs_session = true,
    .write = signout_write,
    .committed = signout_committed,
};
