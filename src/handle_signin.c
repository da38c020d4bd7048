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
#include "pgstore.h"
#include "presence.h"
#include "push.h"
#include "request.h"

#define CLIENT_ADDR_MAX 256 /* bytes; a host:port or a URL, never longer in practice */

static const char SQL_UPSERT_DEVICE[] =
    "INSERT INTO device (device_id, user_id, gateway_id, client_addr, online, room_id, "
    "created_at, signed_in_at, updated_at) VALUES (?1, ?2, ?3, ?4, 1, 0, ?5, ?5, ?5) "
    "ON CONFLICT (device_id) DO UPDATE SET user_id = excluded.user_id, "
    "gateway_id = excluded.gateway_id, client_addr = excluded.client_addr, online = 1, "
    "room_id = 0, signed_in_at = excluded.signed_in_at, updated_at = excluded.updated_at, "
    /* A device handed to another user must not carry the old user's acks (sync seq 0). */
    "ack_seq = CASE WHEN device.user_id = excluded.user_id THEN device.ack_seq ELSE 0 END, "
    "ack_time = CASE WHEN device.user_id = excluded.user_id THEN device.ack_time ELSE 0 END";

/*
 * A device handed to another user must not carry the old user's idempotency
 * records either: a record whose message or room entry has been pruned no
 * longer says whose it was, and would answer the new user's send with the
 * same request_id (EC_NOT_FOUND, nothing stored). Runs before the upsert,
 * while the row still names the previous user; a range of the primary key.
 */
static const char SQL_DROP_OTHER_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = ?1 AND EXISTS "
    "(SELECT 1 FROM device WHERE device_id = ?1 AND user_id <> ?2)";
static const char SQL_DROP_OTHER_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND EXISTS "
    "(SELECT 1 FROM device WHERE device_id = ?1 AND user_id <> ?2)";

/* PostgreSQL: the same statements ($n). */
static const char PG_UPSERT_DEVICE[] =
    "INSERT INTO device (device_id, user_id, gateway_id, client_addr, online, room_id, "
    "created_at, signed_in_at, updated_at) VALUES ($1, $2, $3, $4, 1, 0, $5, $5, $5) "
    "ON CONFLICT (device_id) DO UPDATE SET user_id = excluded.user_id, "
    "gateway_id = excluded.gateway_id, client_addr = excluded.client_addr, online = 1, "
    "room_id = 0, signed_in_at = excluded.signed_in_at, updated_at = excluded.updated_at, "
    "ack_seq = CASE WHEN device.user_id = excluded.user_id THEN device.ack_seq ELSE 0 END, "
    "ack_time = CASE WHEN device.user_id = excluded.user_id THEN device.ack_time ELSE 0 END";
static const char PG_DROP_OTHER_IDEM[] =
    "DELETE FROM idempotency WHERE device_id = $1 AND EXISTS "
    "(SELECT 1 FROM device WHERE device_id = $1 AND user_id <> $2)";
static const char PG_DROP_OTHER_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = $1 AND EXISTS "
    "(SELECT 1 FROM device WHERE device_id = $1 AND user_id <> $2)";
/*
 * The device's session before this sign-in, whichever instance it was made
 * at: the in-memory presence knows only this instance's. Locked, so that a
 * sign-in of the same device at another instance waits for this one.
 */
static const char PG_OLD_SESSION[] =
    "SELECT user_id, gateway_id FROM device WHERE device_id = $1 AND online = 1 FOR UPDATE";

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

static gim_err drop_other_users_records(struct request *r, struct wctx *w)
{
    static const char *const sql[] = {SQL_DROP_OTHER_IDEM, SQL_DROP_OTHER_ROOM_IDEM};
    static const char *const pg_sql[] = {PG_DROP_OTHER_IDEM, PG_DROP_OTHER_ROOM_IDEM};
    const struct session *s = &r->sess;
    int n = 0;
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++) {
        int changed = 0;
        gim_err e = STORE_RUN2(w->db, sql[i], pg_sql[i], &changed, STORE_INT(s->device_id),
                               STORE_INT(s->user_id));
        n += changed;
        if (e != GIM_OK) {
            log_warn("sign-in write failed", "device=%" PRId64 " code=%s error=\"%s\"",
                     s->device_id, gim_err_name(e), store_errmsg(w->db));
            return request_fail(r, e, "sign-in: cannot drop the previous user's records");
        }
    }
    if (n > 0)
        log_info("device changed user", "device=%" PRId64 " user=%" PRId64 " records_dropped=%d",
                 s->device_id, s->user_id, n);
    return GIM_OK;
}

/* PostgreSQL: r->scratch (a struct session) gets the device's session before this sign-in. */
static gim_err old_session_pg(struct request *r, struct wctx *w)
{
    struct session *old = r->scratch;
    PGresult *res = NULL;
    if (!old && !(old = r->scratch = calloc(1, sizeof *old)))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    memset(old, 0, sizeof *old);
    gim_err e = PG_RUN(w->db, PG_OLD_SESSION, &res, NULL, STORE_INT(r->sess.device_id));
    if (e != GIM_OK)
        return request_fail(r, e, "sign-in: cannot read the device");
    if (PQntuples(res) == 1) {
        size_t len = 0;
        const uint8_t *gw = pgstore_blob(res, 0, 1, &len);
        old->device_id = r->sess.device_id;
        old->user_id = pgstore_int(res, 0, 0);
        len = len > PRESENCE_GATEWAY_MAX ? PRESENCE_GATEWAY_MAX : len;
        memcpy(old->gateway_id, gw, len);
        old->gateway_id[len] = 0;
    }
    PQclear(res);
    return GIM_OK;
}

static gim_err signin_write(struct request *r, struct wctx *w)
{
    const struct session *s = &r->sess;
    gim_err e;
    if (store_is_pg(w->db) && (e = old_session_pg(r, w)) != GIM_OK)
        return e;
    if ((e = drop_other_users_records(r, w)) != GIM_OK)
        return e;
    e = STORE_RUN2(w->db, SQL_UPSERT_DEVICE, PG_UPSERT_DEVICE, NULL, STORE_INT(s->device_id),
                   STORE_INT(s->user_id), STORE_TEXT(s->gateway_id), STORE_TEXT(client_addr(r)),
                   STORE_INT(w->now_ms));
    if (e != GIM_OK) {
        log_warn("sign-in write failed", "device=%" PRId64 " code=%s error=\"%s\"", s->device_id,
                 gim_err_name(e), store_errmsg(w->db));
        return request_fail(r, e, "sign-in: cannot record the device");
    }
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
     * PostgreSQL: the device row as write() found it, whichever instance signed it in. */
    const struct session *pg_old = r->scratch;
    bool moved = pg_old
                     ? pg_old->device_id != 0 && strcmp(pg_old->gateway_id, r->sess.gateway_id) != 0
                     : presence_get(w->presence, r->sess.device_id, &old) &&
                           strcmp(old.gateway_id, r->sess.gateway_id) != 0;
    if (pg_old && moved)
        old = *pg_old;
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
