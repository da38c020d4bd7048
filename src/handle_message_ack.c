/*
 * PT_MESSAGE_ACK: a device reports the highest seq it has received.
 *
 * The ack is what a new device's sync with seq = 0 starts after, so it only
 * ever moves forward: acks arrive out of order (retries, several
 * connections), and a late low one must not make other devices download
 * again what was already shown. A lower or equal ack is therefore a success
 * that changes nothing. An ack above the user's highest seq cannot come from
 * a real client and would hide messages that do not exist yet from every
 * new device, so it is refused; the writer's in-memory counter answers that
 * without a query.
 */
#include <inttypes.h>

#include "handlers.h"
#include "log.h"
#include "request.h"
#include "seq.h"
#include "storage.h"

static gim_err ack_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__message_ack__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__MessageACK *in = (const Pb__MessageACK *)r->in;
    if (in->device_ack < 0)
        return request_fail(r, GIM_EBADREQ, "ack: device_ack must be >= 0, got %" PRId64,
                            in->device_ack);
    return GIM_OK;
}

static gim_err ack_write(struct request *r, struct wctx *w)
{
    const Pb__MessageACK *in = (const Pb__MessageACK *)r->in;
    int64_t last = 0;
    gim_err e = seq_last(w->seq, w->db, SEQ_USER, r->sess.user_id, &last);
    if (e != GIM_OK)
        return request_fail(r, e, "ack: cannot read the user's seq");
    if (in->device_ack > last)
        return request_fail(r, GIM_EBADREQ,
                            "ack: device_ack %" PRId64 " is above the highest seq %" PRId64,
                            in->device_ack, last);

    /* Guarded by the user: a device that signed in as someone else since keeps its new row. */
    e = storage(w->db)->device->ack(w, r->sess.device_id, r->sess.user_id, in->device_ack,
                                    in->receive_time);
    if (e != GIM_OK) {
        log_warn("ack write failed", "device=%" PRId64 " code=%s error=\"%s\"", r->sess.device_id,
                 gim_err_name(e), store_errmsg(w->db));
        return request_fail(r, e, "ack: cannot record the ack");
    }
    return GIM_OK;
}

const struct handler handle_message_ack = {
    .type = PB__PACKAGE_TYPE__PT_MESSAGE_ACK,
    .name = "ack",
    .needs_session = true,
    .prepare = ack_prepare,
    .write = ack_write,
};
