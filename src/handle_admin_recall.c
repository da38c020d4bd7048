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
#include <stdlib.h>

#include "handlers.h"
#include "metrics.h"
#include "operator.h"
#include "recall.h"
#include "request.h"

static gim_err admin_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__admin_recall_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__AdminRecallInput *in = (const Pb__AdminRecallInput *)r->in;
    if (operator_auth(r, in->token, "admin recall") != GIM_OK)
        return GIM_EUNAUTH;
    if (in->user_id <= 0 || in->seq <= 0)
        return request_fail(r, GIM_EBADREQ, "admin recall: user_id and seq must be > 0");
    return GIM_OK;
}

/*
 * RecallOutput: whether the message had been recalled before (then nothing
 * changed). A first recall's RecallOutput is all defaults, which proto3
 * encodes as no bytes: the reply then has no data at all, as before.
 */
static gim_err recall_reply(struct request *r, const struct recall_result *res)
{
    if (!res->already)
        return GIM_OK;
    Pb__RecallOutput out = PB__RECALL_OUTPUT__INIT;
    out.already_recalled = res->already;
    return request_set_reply(r, &out.base);
}

static gim_err admin_write(struct request *r, struct wctx *w)
{
    const Pb__AdminRecallInput *in = (const Pb__AdminRecallInput *)r->in;
    char why[160] = "";
    struct recall_result *res = r->scratch;
    if (!res && !(res = r->scratch = calloc(1, sizeof *res)))
        return request_fail(r, GIM_EINTERNAL, "admin recall: out of memory");
    gim_err e = recall_apply(w, 0, 0, in->user_id, in->seq, true, res, why, sizeof why);
    if (e != GIM_OK)
        return request_fail(r, e, "admin recall: %s", why);
    return recall_reply(r, res);
}

static void admin_committed(struct request *r, struct wctx *w)
{
    const struct recall_result *res = r->scratch;
    if (!res || res->already)
        return;
    metrics_recall(w->metrics);
    recall_push(w, res, 0);
}

static void admin_cleanup(struct request *r)
{
    recall_result_free(r->scratch);
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_admin_recall = {
    .type = PB__PACKAGE_TYPE__PT_ADMIN_RECALL,
    .name = "admin_recall",
    .needs_session = false,
    .prepare = admin_prepare,
    .write = admin_write,
    .committed = admin_committed,
    .cleanup = admin_cleanup,
};
