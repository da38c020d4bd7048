/*
 * PT_SUBSCRIBE_ROOM: a device joins a room (one at a time) and reads the
 * room's log after the room seq it holds; room_id 0 leaves the room.
 *
 * A write handler: the subscription is the device row's room_id, written in
 * the writer's transaction and mirrored into presence by committed(), which
 * is what room pushes follow.
 *
 * The reply's page is read inside write(), on the writer connection, rather
 * than on a reader after the commit. That is what makes the page and the
 * pushes meet exactly: a room send earlier in the same batch (or in any
 * earlier one) is in the page and was pushed before this device joined;
 * a send later in the batch is not in the page and is pushed to it, since
 * committed() runs in batch order. A read after the commit could see sends
 * that were also pushed (duplicates), or, read before the write, miss the
 * sends in between (a gap). The cost is one primary-key range scan of at
 * most sync.page_size rows and sync.max_bytes inside the write transaction.
 * On PostgreSQL, where several instances write, room_subscribe() also takes
 * the room's row lock that every send to the room takes with its seq, so
 * the same holds across instances (room.h).
 *
 * Leaving (room_id 0) replies with no data (an empty SyncOutput once
 * decoded). Ownership: no scratch; r->in (the decoded input) is the
 * request's.
 */
#include <inttypes.h>

#include "config.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "presence.h"
#include "request.h"
#include "room.h"

static gim_err room_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__subscribe_room_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__SubscribeRoomInput *in = (const Pb__SubscribeRoomInput *)r->in;
    if (in->room_id < 0)
        return request_fail(r, GIM_EBADREQ, "room: room_id must be >= 0, got %" PRId64,
                            in->room_id);
    if (in->seq < 0)
        return request_fail(r, GIM_EBADREQ, "room: seq must be >= 0, got %" PRId64, in->seq);
    return GIM_OK;
}

static gim_err room_write(struct request *r, struct wctx *w)
{
    const Pb__SubscribeRoomInput *in = (const Pb__SubscribeRoomInput *)r->in;
    uint8_t *page_buf = NULL;
    size_t page_len = 0;
    gim_err e = room_subscribe(w->db, &r->sess, in->room_id, w->now_ms);

    if (e == GIM_EUNAUTH)
        return request_fail(r, e, "room: the session of device %" PRId64 " has ended",
                            r->sess.device_id);
    if (e != GIM_OK) {
        log_warn("room subscribe failed", "device=%" PRId64 " code=%s error=\"%s\"",
                 r->sess.device_id, gim_err_name(e), store_errmsg(w->db));
        return request_fail(r, e, "room: cannot record the subscription");
    }
    if (in->room_id == 0)
        return GIM_OK;
    size_t budget = message_page_budget(r->cfg->sync.max_bytes, r->type, r->request_id);
    if ((e = room_page(w->db, r->cfg, in->room_id, in->seq, budget, &page_buf, &page_len)) !=
        GIM_OK) {
        log_warn("room page failed", "room=%" PRId64 " code=%s error=\"%s\"", in->room_id,
                 gim_err_name(e), store_errmsg(w->db));
        return request_fail(r, e, "room: cannot read room %" PRId64, in->room_id);
    }
    request_take_reply(r, page_buf, page_len);
    return GIM_OK;
}

static void room_committed(struct request *r, struct wctx *w)
{
    const Pb__SubscribeRoomInput *in = (const Pb__SubscribeRoomInput *)r->in;
    /* The row was guarded by the session and only this thread changes presence: it is there. */
    if (w->presence && !presence_set_room(w->presence, r->sess.device_id, in->room_id))
        log_warn("room subscription without a session", "device=%" PRId64, r->sess.device_id);
    log_debug("room subscription", "device=%" PRId64 " room=%" PRId64, r->sess.device_id,
              in->room_id);
}

const struct handler handle_subscribe_room = {
    .type = PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM,
    .name = "room",
    .needs_session = true,
    .prepare = room_prepare,
    .write = room_write,
    .committed = room_committed,
};
