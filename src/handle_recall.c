/*
 * PT_RECALL: the caller takes back a message named by its seq in the
 * caller's own inbox (RecallInput). The rules and the effect live in the
 * recall module, shared with `gimctl recall --admin`; this handler validates
 * the input, runs recall_apply() inside the writer's transaction, keeps the
 * notices in r->scratch, and pushes them after the commit from memory (no
 * database access after the commit). The reply data is a RecallOutput whose
 * already_recalled tells a repeated recall (nothing changed) from a new one.
 */
#include "handlers.h"
#include "recall.h"
#include "request.h"

static gim_err recall_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__recall_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__RecallInput *in = (const Pb__RecallInput *)r->in;
    if (in->seq <= 0)
        return request_fail(r, GIM_EBADREQ, "recall: seq must be > 0, got %lld",
                            (long long)in->seq);
    return GIM_OK;
}

static gim_err recall_write(struct request *r, struct wctx *w)
{
    const Pb__RecallInput *in = (const Pb__RecallInput *)r->in;
    return recall_request_write(r, w, r->sess.user_id, r->sess.device_id, r->sess.user_id, in->seq,
                                false, "recall");
}

static void recall_committed(struct request *r, struct wctx *w)
{
    recall_request_committed(r, w, r->sess.device_id);
}

const struct handler handle_recall = {
    .type = PB__PACKAGE_TYPE__PT_RECALL,
    .name = "recall",
    .needs_session = true,
    .prepare = recall_prepare,
    .write = recall_write,
    .committed = recall_committed,
    .cleanup = recall_request_cleanup,
};
