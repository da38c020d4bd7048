/*
 * PT_ADMIN_RECALL: an operator takes back any message (gimctl recall --admin).
 *
 * It goes through the writer like every write, so the recall notices take
 * seqs from the same in-memory counters as everything else; recalling by
 * writing to the database from outside would collide with them. There is no
 * session: the request carries an operator token (auth_verify_admin), checked
 * in prepare() before anything is written. The effect is a user recall's
 * (recall_apply with admin = true: no permission or window check), signed by
 * the system, and so is the reply (RecallOutput: already_recalled).
 */
#include <stdlib.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "handlers.h"
#include "metrics.h"
#include "recall.h"
#include "request.h"

static gim_err admin_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__admin_recall_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__AdminRecallInput *in = (const Pb__AdminRecallInput *)r->in;
    char why[100] = "";
    const char *secret = config_secret(r->cfg);
    /* Without a secret there is no operator: insecure_dev does not extend to admin. */
    if (!secret ||
        auth_verify_admin(secret, in->token, (int64_t)time(NULL), why, sizeof why) != GIM_OK)
        return request_fail(r, GIM_EUNAUTH, "admin recall: %s",
                            secret ? why : "no token secret configured");
    if (in->user_id <= 0 || in->seq <= 0)
        return request_fail(r, GIM_EBADREQ, "admin recall: user_id and seq must be > 0");
    return GIM_OK;
}

/* RecallOutput: whether the message had been recalled before (then nothing changed). */
static gim_err recall_reply(struct request *r, const struct recall_result *res)
{
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
