/*
 * PT_GATEWAY_LEASE: a gateway says it is alive, for all of its sessions.
 *
 * gim's clients heartbeat every 4-5 minutes, far apart from
 * presence.timeout_seconds; their gateway leases instead, every interval
 * (well under the timeout), and the lease keeps every session signed in at
 * that gateway online (presence.h). Sent by a gateway, never a client: no
 * session, user_id and device_id 0, gateway_id naming the gateway.
 *
 * A lease for the boot_id presence already holds is one atomic store in
 * prepare(): no writer, no database. Any other (a gateway not heard from
 * since gim-logic started, or a new boot_id) goes to the writer, which
 * compares boot_id with the gateway table: a different stored boot means the
 * gateway restarted and its connections are gone, so the sessions it held
 * are signed out (device rows in write(), presence after the commit), then
 * the new boot is stored and leased.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "handlers.h"
#include "log.h"
#include "presence.h"
#include "request.h"
#include "storage.h"

struct lease_state {
    bool restarted; /* the stored boot differed: sign the gateway's sessions out */
};

static gim_err lease_prepare(struct request *r)
{
    const Pb__GatewayRequest *env = r->env;
    const char *gw = env->gateway_id ? env->gateway_id : "";
    size_t gwlen = strlen(gw);
    if (env->user_id != 0 || env->device_id != 0)
        return request_fail(r, GIM_EBADREQ,
                            "lease: sent by a gateway, never for a connection "
                            "(user_id and device_id must be 0)");
    if (gwlen == 0)
        return request_fail(r, GIM_EBADREQ, "lease: gateway_id is empty");
    if (gwlen > PRESENCE_GATEWAY_MAX)
        return request_fail(r, GIM_EBADREQ, "lease: gateway_id longer than %d bytes",
                            PRESENCE_GATEWAY_MAX);
    if (strchr(gw, '\n'))
        return request_fail(r, GIM_EBADREQ, "lease: gateway_id contains a newline");
    gim_err e = request_decode_input(r, &pb__gateway_lease_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__GatewayLeaseInput *in = (const Pb__GatewayLeaseInput *)r->in;
    const struct dispatch *d = r->disp;
    if (d && presence_lease_refresh(d->presence, gw, in->boot_id, gim_clock_now(&d->clock))) {
        r->answered = true;
        return GIM_OK;
    }
    if (!(r->scratch = calloc(1, sizeof(struct lease_state))))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    return GIM_OK;
}

static gim_err lease_write(struct request *r, struct wctx *w)
{
    const Pb__GatewayLeaseInput *in = (const Pb__GatewayLeaseInput *)r->in;
    struct lease_state *ls = r->scratch;
    gim_err e = storage(w->db)->device->lease(w, r->env->gateway_id, in->boot_id, &ls->restarted);
    if (e != GIM_OK)
        return request_fail(r, e, "lease: cannot record the gateway");
    return GIM_OK;
}

static void lease_committed(struct request *r, struct wctx *w)
{
    const Pb__GatewayLeaseInput *in = (const Pb__GatewayLeaseInput *)r->in;
    const struct lease_state *ls = r->scratch;
    const char *gw = r->env->gateway_id;
    if (ls->restarted) {
        size_t n = presence_gateway_remove(w->presence, gw);
        log_info("gateway restarted", "gateway=%s boot_id=%" PRId64 " signed_out=%zu", gw,
                 in->boot_id, n);
    }
    if (presence_lease_set(w->presence, gw, in->boot_id, w->now_ms) != GIM_OK)
        request_fail(r, GIM_EUNAVAILABLE, "lease: out of memory, retry");
}

static void lease_cleanup(struct request *r)
{
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_gateway_lease = {
    .type = PB__PACKAGE_TYPE__PT_GATEWAY_LEASE,
    .name = "gateway_lease",
    .needs_session = false,
    .prepare = lease_prepare,
    .write = lease_write,
    .committed = lease_committed,
    .cleanup = lease_cleanup,
};
