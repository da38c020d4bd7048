/*
 * PT_SIGN_IN: a device proves who it is with a token and gets a session.
 *
 * The only handler without a session: the envelope's user_id/device_id are
 * ignored (the gateway has not learnt them yet); the ids come from
 * SignInInput and must match the token's claims. The device row is upserted
 * in the writer's transaction, and the session enters presence only after
 * the commit, so no request can be authenticated by a sign-in that was
 * rolled back. A device that was signed in at another gateway is told there
 * to drop its old connection.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "handlers.h"
#include "log.h"
#include "presence.h"
#include "push.h"
#include "request.h"
#include "storage.h"

#define CLIENT_ADDR_MAX 256 /* bytes; a host:port or a URL, never longer in practice */

static const char *client_addr(const struct request *r)
{
    if (r->client_addr)
        return r->client_addr;
    if (r->env && r->env->client_addr)
        return r->env->client_addr;
    return "";
}

static gim_err signin_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__sign_in_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__SignInInput *in = (const Pb__SignInInput *)r->in;
    const char *gw = r->env && r->env->gateway_id ? r->env->gateway_id : "";
    size_t gwlen = strlen(gw);

    if (in->user_id <= 0)
        return request_fail(r, GIM_EBADREQ, "sign-in: user_id must be > 0");
    if (in->device_id <= 0)
        return request_fail(r, GIM_EBADREQ, "sign-in: device_id must be > 0");
    if (!in->token || !*in->token)
        return request_fail(r, GIM_EBADREQ, "sign-in: token is empty");
    if (gwlen == 0)
        return request_fail(r, GIM_EBADREQ, "sign-in: gateway_id is empty");
    if (gwlen > PRESENCE_GATEWAY_MAX)
        return request_fail(r, GIM_EBADREQ, "sign-in: gateway_id longer than %d bytes",
                            PRESENCE_GATEWAY_MAX);
    /* The push topic is "<gateway_id>\n": a newline inside would misroute pushes. */
    if (strchr(gw, '\n'))
        return request_fail(r, GIM_EBADREQ, "sign-in: gateway_id contains a newline");
    if (strlen(client_addr(r)) > CLIENT_ADDR_MAX)
        return request_fail(r, GIM_EBADREQ, "sign-in: client_addr longer than %d bytes",
                            CLIENT_ADDR_MAX);

    const char *secret = config_secret(r->cfg);
    if (secret && *secret) {
        int64_t uid = 0, did = 0;
        char why[100];
        if (auth_verify(secret, in->token, (int64_t)time(NULL), &uid, &did, why, sizeof why) !=
            GIM_OK)
            return request_fail(r, GIM_EUNAUTH, "sign-in: %s", why);
        if (uid != in->user_id || did != in->device_id)
            return request_fail(r, GIM_EUNAUTH, "token is for another user/device");
    } else if (!r->cfg->auth.insecure_dev) {
        return request_fail(r, GIM_EUNAUTH, "no token secret configured");
    }

    memset(&r->sess, 0, sizeof r->sess);
    r->sess.device_id = in->device_id;
    r->sess.user_id = in->user_id;
    r->sess.room_id = 0;
    memcpy(r->sess.gateway_id, gw, gwlen + 1);
    return GIM_OK;
}

/*
 * The device row, in the writer's transaction (storage.h, sign_in). With
 * shared sessions r->scratch (a struct session) gets the device's session
 * before this sign-in, whichever instance made it.
 */
static gim_err signin_write(struct request *r, struct wctx *w)
{
    const struct storage_device_ops *dev = storage(w->db)->device;
    const struct session *s = &r->sess;
    struct session local, *old = &local;
    int dropped = 0;
    if (storage(w->db)->shared_sessions) {
        if (!r->scratch && !(r->scratch = calloc(1, sizeof(struct session))))
            return request_fail(r, GIM_ENOMEM, "out of memory");
        old = r->scratch;
    }
    gim_err e = dev->sign_in(w, s, client_addr(r), old, &dropped);
    if (e != GIM_OK) {
        log_warn("sign-in write failed", "device=%" PRId64 " code=%s error=\"%s\"", s->device_id,
                 gim_err_name(e), store_errmsg(w->db));
        return request_fail(r, e, "sign-in: cannot record the device");
    }
    if (dropped > 0)
        log_info("device changed user", "device=%" PRId64 " user=%" PRId64 " records_dropped=%d",
                 s->device_id, s->user_id, dropped);
    return GIM_OK;
}

/*
 * The device's old connection lives at another gateway, which must drop it
 * (docs/protocol.md, "Signed in elsewhere"): a Delivery to that gateway only,
 * listing the device, whose Output the gateway forwards before closing the
 * connection, without sending PT_SIGN_OUT for it.
 */
static void tell_old_gateway(struct wctx *w, const struct session *old)
{
    static const char why[] = "signed in elsewhere";
    Pb__Output out = PB__OUTPUT__INIT;
    out.type = PB__PACKAGE_TYPE__PT_SIGN_OUT;
    out.code = PB__ERROR_CODE__EC_UNAUTHENTICATED;
    out.message = (char *)why;
    push_deliver(w->push, old, 1, 0, &out);
}

static void signin_committed(struct request *r, struct wctx *w)
{
    struct session old = {0};
    /* Only this (the writer) thread changes presence: old is still current at the put.
     * Shared sessions: the device row as write() found it, whichever instance signed it in. */
    const struct session *row_old = r->scratch;
    bool moved =
        row_old ? row_old->device_id != 0 && strcmp(row_old->gateway_id, r->sess.gateway_id) != 0
                : presence_get(w->presence, r->sess.device_id, &old) &&
                      strcmp(old.gateway_id, r->sess.gateway_id) != 0;
    if (row_old && moved)
        old = *row_old;
    r->sess.last_seen_ms = w->now_ms;
    gim_err e = presence_put(w->presence, &r->sess);
    if (e != GIM_OK) {
        /* The row says online but no request could authenticate: make the client retry. */
        log_error("sign-in presence failed", "device=%" PRId64 " code=%s", r->sess.device_id,
                  gim_err_name(e));
        request_fail(r, GIM_EUNAVAILABLE, "sign-in: cannot register the session, retry");
        return;
    }
    if (moved)
        tell_old_gateway(w, &old);
    log_debug("signed in", "device=%" PRId64 " user=%" PRId64 " gateway=%s", r->sess.device_id,
              r->sess.user_id, r->sess.gateway_id);
}

static void signin_cleanup(struct request *r)
{
    free(r->scratch);
    r->scratch = NULL;
}

const struct handler handle_signin = {
    .type = PB__PACKAGE_TYPE__PT_SIGN_IN,
    .name = "sign_in",
    .needs_session = false,
    .prepare = signin_prepare,
    .write = signin_write,
    .committed = signin_committed,
    .cleanup = signin_cleanup,
};
