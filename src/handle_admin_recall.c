/*
 * PT_ADMIN_RECALL: an operator takes back any message (gimctl recall --admin).
 *
 * It goes through the writer like every write, so the recall notices take
 * seqs from the same in-memory counters as everything else; recalling by
 * writing to the database from outside would collide with them. There is no
 * session: the request carries an operator token (operator_auth), checked
 * in prepare() before anything is written. The effect is a user recall's
 * (recall_apply with admin = true: no permission or window check), signed by
 * the system; the reply is a RecallOutput as for PT_RECALL.
 */
#include "handlers.h"
#include "operator.h"
#include "recall.h"
#include "request.h"

static gim_err admin_prepare(struct request *r)
{
    gim_err e = operator_decode(r, &pb__admin_recall_input__descriptor, "admin recall");
    if (e != GIM_OK)
        return e;
    const Pb__AdminRecallInput *in = (const Pb__AdminRecallInput *)r->in;
    if (in->user_id <= 0 || in->seq <= 0)
        return request_fail(r, GIM_EBADREQ, "admin recall: user_id and seq must be > 0");
    return GIM_OK;
}

static gim_err admin_write(struct request *r, struct wctx *w)
{
    const Pb__AdminRecallInput *in = (const Pb__AdminRecallInput *)r->in;
    return recall_request_write(r, w, 0, 0, in->user_id, in->seq, true, "admin recall");
}

static void admin_committed(struct request *r, struct wctx *w)
{
    recall_request_committed(r, w, 0);
}

const struct handler handle_admin_recall = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_RECALL,
    .name = "admin_recall",
    .needs_session = false,
    .prepare = admin_prepare,
    .write = admin_write,
    .committed = admin_committed,
    .cleanup = recall_request_cleanup,
};
