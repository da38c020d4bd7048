/*
 * PT_ADMIN_ERASE: one bounded step of erasing a user (gimctl erase).
 *
 * Authenticated like every operator request (operator.h), no session. Each
 * request runs one erasure_step() in the writer's transaction and answers
 * what it did (AdminEraseOutput); the caller repeats until done. Since the
 * erasure's position is in the database, any step continues it: a resent
 * request (same request_id after a lost reply) is just the next step, and a
 * step after the end does nothing and says done. After the commit the
 * deleted devices' sessions end and their gateways are told (kick.h).
 */
#include <stdlib.h>

#include "erasure.h"
#include "handlers.h"
#include "operator.h"
#include "request.h"

static gim_err erase_prepare(struct request *r)
{
    gim_err e = operator_decode(r, &pb__admin_erase_input__descriptor, "erase");
    if (e != GIM_OK)
        return e;
    const Pb__AdminEraseInput *in = (const Pb__AdminEraseInput *)r->in;
    if (in->user_id <= 0)
        return request_fail(r, GIM_EBADREQ, "erase: user_id must be > 0");
    if (in->max_rows < 0 || in->max_rows > ERASURE_MAX_ROWS)
        return request_fail(r, GIM_EBADREQ, "erase: max_rows must be 0 (the default) to %d",
                            ERASURE_MAX_ROWS);
    return GIM_OK;
}

static gim_err erase_write(struct request *r, struct wctx *w)
{
    const Pb__AdminEraseInput *in = (const Pb__AdminEraseInput *)r->in;
    struct erasure_result *res = r->scratch;
    if (!res && !(res = r->scratch = calloc(1, sizeof *res)))
        return request_fail(r, GIM_ENOMEM, "erase: out of memory");
    erasure_result_free(res); /* a retried batch (PostgreSQL) runs this again */
    gim_err e =
        erasure_step(w, in->user_id, in->max_rows ? in->max_rows : ERASURE_DEFAULT_ROWS, res);
    if (e != GIM_OK)
        return request_fail(r, e, "erase: %s",
                            e == GIM_EUNAVAILABLE ? "database unavailable, retry later"
                                                  : "storage error");
    Pb__AdminEraseOutput out = PB__ADMIN_ERASE_OUTPUT__INIT;
    out.done = res->done;
    out.devices = res->devices;
    out.memberships = res->memberships;
    out.inbox_entries = res->inbox_entries;
    out.messages_erased = res->messages_erased;
    out.messages_deleted = res->messages_deleted;
    out.room_messages_erased = res->room_messages_erased;
    return request_set_reply(r, &out.base);
}

static void erase_committed(struct request *r, struct wctx *w)
{
    erasure_committed(w, r->scratch);
}

static void erase_cleanup(struct request *r)
{
    erasure_result_free(r->scratch);
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_admin_erase = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_ERASE,
    .name = "admin_erase",
    .needs_session = false,
    .prepare = erase_prepare,
    .write = erase_write,
    .committed = erase_committed,
    .cleanup = erase_cleanup,
};
