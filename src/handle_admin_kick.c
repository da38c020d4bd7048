/*
 * PT_ADMIN_KICK: an operator ends a device's session now (gimctl kick).
 *
 * Authenticated like every operator request (operator.h), no session. The
 * device row goes offline in the writer's transaction; after the commit its
 * session is dropped and its gateway is told to close the connection
 * (kick.h). A device that is already offline is still EC_OK (was_online =
 * false), so a retried kick succeeds; one that never signed in is
 * EC_NOT_FOUND. Reply data: AdminKickOutput.
 */
#include <stdlib.h>

#include "handlers.h"
#include "kick.h"
#include "operator.h"
#include "request.h"

static gim_err kick_prepare(struct request *r)
{
    gim_err e = operator_decode(r, &pb__admin_kick_input__descriptor, "kick");
    if (e != GIM_OK)
        return e;
    const Pb__AdminKickInput *in = (const Pb__AdminKickInput *)r->in;
    if (in->device_id <= 0)
        return request_fail(r, GIM_EBADREQ, "kick: device_id must be > 0");
    return GIM_OK;
}

static gim_err kick_write(struct request *r, struct wctx *w)
{
    const Pb__AdminKickInput *in = (const Pb__AdminKickInput *)r->in;
    struct kick_target *t = r->scratch;
    if (!t && !(t = r->scratch = calloc(1, sizeof *t)))
        return request_fail(r, GIM_ENOMEM, "kick: out of memory");
    gim_err e = kick_apply(w, in->device_id, t);
    if (e == GIM_ENOTFOUND)
        return request_fail(r, e, "kick: no device %lld (it never signed in)",
                            (long long)in->device_id);
    if (e != GIM_OK)
        return request_fail(r, e, "kick: cannot record the device offline");
    Pb__AdminKickOutput out = PB__ADMIN_KICK_OUTPUT__INIT;
    out.user_id = t->user_id;
    out.was_online = t->was_online;
    out.gateway_id = t->gateway_id;
    return request_set_reply(r, &out.base);
}

static void kick_done(struct request *r, struct wctx *w)
{
    if (r->scratch)
        kick_committed(w, r->scratch);
}

static void kick_cleanup(struct request *r)
{
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_admin_kick = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_KICK,
    .name = "admin_kick",
    .needs_session = false,
    .prepare = kick_prepare,
    .write = kick_write,
    .committed = kick_done,
    .cleanup = kick_cleanup,
};
