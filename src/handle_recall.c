/*
 * PT_RECALL: the caller takes back a message named by its seq in the
 * caller's own inbox (RecallInput). The rules and the effect live in the
 * recall module, shared with `gimctl recall --admin`; this handler validates
 * the input, runs recall_apply() inside the writer's transaction, keeps the
 * notices in r->scratch, and pushes them after the commit from memory (no
 * database access after the commit). The reply data is a RecallOutput whose
 * already_recalled tells a repeated recall (nothing changed) from a new one.
 */
#include <stdlib.h>

#include "handlers.h"
#include "metrics.h"
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

static gim_err recall_write(struct request *r, struct wctx *w)
{
    const Pb__RecallInput *in = (const Pb__RecallInput *)r->in;
    char why[160] = "";
    struct recall_result *res = r->scratch;
    if (!res && !(res = r->scratch = calloc(1, sizeof *res)))
        return request_fail(r, GIM_EINTERNAL, "recall: out of memory");
    gim_err e = recall_apply(w, r->sess.user_id, r->sess.device_id, r->sess.user_id, in->seq, false,
                             res, why, sizeof why);
    if (e != GIM_OK)
        return request_fail(r, e, "recall: %s", why);
    return recall_reply(r, res);
}

static void recall_committed(struct request *r, struct wctx *w)
{
    const struct recall_result *res = r->scratch;
    if (!res || res->already)
        return;
    metrics_recall(w->metrics);
    recall_push(w, res, r->sess.device_id);
}

static void recall_cleanup(struct request *r)
{
    recall_result_free(r->scratch);
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_recall = {
    .type = PB__PACKAGE_TYPE__PT_RECALL,
    .name = "recall",
    .needs_session = true,
    .prepare = recall_prepare,
    .write = recall_write,
    .committed = recall_committed,
    .cleanup = recall_cleanup,
};
