/*
 * PT_SYNC: a device pulls its user's inbox after the seq it already holds.
 *
 * A read handler: it runs on the worker's read-only connection and never
 * waits for the writer. One page is one prepared statement (a single
 * statement reads one snapshot, so a page never mixes two states of the
 * inbox); it asks for page_size + 1 rows so the extra row answers has_more
 * without a second query. seq = 0 means "no local state": the device starts
 * after the highest seq any of the user's devices acknowledged (gim's rule),
 * so a new phone does not download years of history another device already
 * showed.
 *
 * The page is the storage operation inbox_page (storage.h); the paging itself
 * (count, byte budget, has_more, the encoding) is message_page_rows(), shared
 * with the room logs: it hands back the encoded SyncOutput, which becomes the
 * reply's data as it is.
 */
#include <inttypes.h>

#include "config.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "request.h"
#include "storage.h"

static gim_err sync_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__sync_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    if (in->seq < 0)
        return request_fail(r, GIM_EBADREQ, "sync: seq must be >= 0, got %" PRId64, in->seq);
    return GIM_OK;
}

/* One page on the worker's read-only connection (storage(ro)->message: one statement each). */
static gim_err sync_read(struct request *r, struct store_conn *ro)
{
    const struct storage_message_ops *ops = storage(ro)->message;
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    size_t page = r->cfg->sync.page_size;
    uint8_t *page_buf = NULL;
    size_t page_len = 0;
    int64_t after = in->seq;
    gim_err e;

    if (after == 0 && (e = ops->max_ack(ro, r->sess.user_id, &after)) != GIM_OK)
        return request_fail(r, e, "sync: cannot read the devices' acks");
    size_t budget = message_page_budget(r->cfg->sync.max_bytes, r->type, r->request_id);
    e = ops->inbox_page(ro, r->sess.user_id, after, page, budget, &page_buf, &page_len);
    if (e == GIM_ENOMEM)
        return request_fail(r, e, "sync: out of memory");
    if (e != GIM_OK) {
        log_warn("sync read failed", "user=%" PRId64 " code=%s error=\"%s\"", r->sess.user_id,
                 gim_err_name(e), store_errmsg(ro));
        return request_fail(r, e, "sync: cannot read the inbox");
    }
    request_take_reply(r, page_buf, page_len);
    return GIM_OK;
}

const struct handler handle_sync = {
    .type = PB__PACKAGE_TYPE__PT_SYNC,
    .name = "sync",
    .needs_session = true,
    .prepare = sync_prepare,
    .read = sync_read,
};
