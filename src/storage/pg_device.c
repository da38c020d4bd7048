/*
 * The device operations on postgres (storage.h): sessions shared by every
 * instance on the database, so the device table is the truth (a sign-in
 * and a kick lock the row and read the session it holds, whichever instance
 * made it) and each instance's presence a cache of it.
 */
#include <string.h>

#include "pgstore.h"
#include "presence.h"
#include "storage.h"
#include "storage/pg_int.h"

static const char PG_UPSERT_DEVICE[] =
    "INSERT INTO device (device_id, user_id, gateway_id, client_addr, online, room_id, "
    "created_at, signed_in_at, updated_at) VALUES ($1, $2, $3, $4, 1, 0, $5, $5, $5) "
    "ON CONFLICT (device_id) DO UPDATE SET user_id = excluded.user_id, "
    "gateway_id = excluded.gateway_id, client_addr = excluded.client_addr, online = 1, "
    "room_id = 0, signed_in_at = excluded.signed_in_at, updated_at = excluded.updated_at, "
    /* A device handed to another user must not carry the old user's acks (sync seq 0). */
    "ack_seq = CASE WHEN device.user_id = excluded.user_id THEN device.ack_seq ELSE 0 END, "
    "ack_time = CASE WHEN device.user_id = excluded.user_id THEN device.ack_time ELSE 0 END";
/* Nor its room sends' records (sqlite_device.c says why, and why only those); before the
 * upsert. */
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

static const char PG_SIGN_OUT[] = "UPDATE device SET online = 0, room_id = 0, updated_at = $1 "
                                  "WHERE device_id = $2 AND user_id = $3 AND gateway_id = $4";

static const char PG_ACK[] = "UPDATE device SET ack_seq = $1, ack_time = $2, updated_at = $3 "
                             "WHERE device_id = $4 AND user_id = $5 AND ack_seq < $1";

static const char PG_BOOT_GET[] = "SELECT boot_id FROM gateway WHERE gateway_id = $1";
static const char PG_BOOT_PUT[] =
    "INSERT INTO gateway (gateway_id, boot_id, booted_at) VALUES ($1, $2, $3) "
    "ON CONFLICT (gateway_id) DO UPDATE SET boot_id = excluded.boot_id, "
    "booted_at = excluded.booted_at WHERE gateway.boot_id <> excluded.boot_id";
static const char PG_SIGN_OUT_GATEWAY[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = $2 "
    "WHERE gateway_id = $1 AND online = 1";

/*
 * The row is locked until the commit, so a sign-in of the same device at
 * another instance waits and then wins (it signs in after the kick), and
 * the gateway read here is the one the device is on now, whichever
 * instance signed it in.
 */
static const char PG_DEVICE[] =
    "SELECT user_id, online, gateway_id FROM device WHERE device_id = $1 FOR UPDATE";
static const char PG_SIGN_OUT_ANY[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = $1 WHERE device_id = $2";

static const char PG_LOAD[] =
    "SELECT device_id, user_id, gateway_id, room_id FROM device WHERE online = 1";

static const char PG_SESSION[] =
    "SELECT user_id, gateway_id, room_id FROM device WHERE device_id = $1 AND online = 1";

static gim_err sign_in(struct wctx *w, const struct session *s, const char *client_addr,
                       struct session *old, int *dropped)
{
    PGresult *res = NULL;
    memset(old, 0, sizeof *old);
    *dropped = 0;
    gim_err e = PG_RUN(w->db, PG_OLD_SESSION, &res, NULL, STORE_INT(s->device_id));
    if (e != GIM_OK)
        return e;
    if (PQntuples(res) == 1) {
        old->device_id = s->device_id;
        old->user_id = pgstore_int(res, 0, 0);
        pg_gateway(old->gateway_id, res, 0, 1);
    }
    PQclear(res);
    e = PG_RUN(w->db, PG_DROP_OTHER_ROOM_IDEM, NULL, dropped, STORE_INT(s->device_id),
               STORE_INT(s->user_id));
    if (e != GIM_OK)
        return e;
    return PG_RUN(w->db, PG_UPSERT_DEVICE, NULL, NULL, STORE_INT(s->device_id),
                  STORE_INT(s->user_id), STORE_TEXT(s->gateway_id), STORE_TEXT(client_addr),
                  STORE_INT(w->now_ms));
}

static gim_err sign_out(struct wctx *w, int64_t device_id, int64_t user_id, const char *gateway_id)
{
    return PG_RUN(w->db, PG_SIGN_OUT, NULL, NULL, STORE_INT(w->now_ms), STORE_INT(device_id),
                  STORE_INT(user_id), STORE_TEXT(gateway_id));
}

static gim_err ack(struct wctx *w, int64_t device_id, int64_t user_id, int64_t ack_seq,
                   int64_t ack_time)
{
    return PG_RUN(w->db, PG_ACK, NULL, NULL, STORE_INT(ack_seq), STORE_INT(ack_time),
                  STORE_INT(w->now_ms), STORE_INT(device_id), STORE_INT(user_id));
}

static gim_err lease(struct wctx *w, const char *gateway_id, int64_t boot_id, bool *restarted)
{
    PGresult *res = NULL;
    *restarted = false;
    gim_err e = PG_RUN(w->db, PG_BOOT_GET, &res, NULL, STORE_TEXT(gateway_id));
    if (e != GIM_OK)
        return e;
    *restarted = PQntuples(res) == 1 && pgstore_int(res, 0, 0) != boot_id;
    PQclear(res);
    if (*restarted && (e = PG_RUN(w->db, PG_SIGN_OUT_GATEWAY, NULL, NULL, STORE_TEXT(gateway_id),
                                  STORE_INT(w->now_ms))) != GIM_OK)
        return e;
    return PG_RUN(w->db, PG_BOOT_PUT, NULL, NULL, STORE_TEXT(gateway_id), STORE_INT(boot_id),
                  STORE_INT(w->now_ms));
}

static gim_err sign_out_any(struct wctx *w, int64_t device_id)
{
    return PG_RUN(w->db, PG_SIGN_OUT_ANY, NULL, NULL, STORE_INT(w->now_ms), STORE_INT(device_id));
}

static gim_err kick(struct wctx *w, int64_t device_id, struct session *row, bool *was_online)
{
    PGresult *res = NULL;
    memset(row, 0, sizeof *row);
    row->device_id = device_id;
    *was_online = false;
    gim_err e = PG_RUN(w->db, PG_DEVICE, &res, NULL, STORE_INT(device_id));
    if (e != GIM_OK)
        return e;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return GIM_ENOTFOUND;
    }
    row->user_id = pgstore_int(res, 0, 0);
    *was_online = pgstore_int(res, 0, 1) != 0;
    pg_gateway(row->gateway_id, res, 0, 2);
    PQclear(res);
    return sign_out_any(w, device_id);
}

static gim_err load_sessions(struct store_conn *c, int64_t now_ms,
                             gim_err (*put)(void *arg, const struct session *s), void *arg,
                             size_t *n)
{
    PGresult *res = NULL;
    *n = 0;
    gim_err e = PG_RUN0(c, PG_LOAD, &res, NULL);
    if (e != GIM_OK)
        return e;
    int rows = PQntuples(res);
    for (int i = 0; i < rows && e == GIM_OK; i++) {
        struct session s;
        pg_session(&s, res, i, 0);
        s.last_seen_ms = now_ms;
        if ((e = put(arg, &s)) == GIM_OK)
            (*n)++;
    }
    PQclear(res);
    return e;
}

static gim_err session(struct store_conn *c, int64_t device_id, struct session *out, bool *found)
{
    PGresult *res = NULL;
    *found = false;
    gim_err e = pgstore_ready(c);
    if (e == GIM_OK)
        e = PG_RUN(c, PG_SESSION, &res, NULL, STORE_INT(device_id));
    if (e != GIM_OK)
        return e;
    if (PQntuples(res) == 1) {
        *found = true;
        out->device_id = device_id;
        out->user_id = pgstore_int(res, 0, 0);
        out->room_id = pgstore_int(res, 0, 2);
        pg_gateway(out->gateway_id, res, 0, 1);
    }
    PQclear(res);
    return GIM_OK;
}

const struct storage_device_ops storage_pg_device = {
    .sign_in = sign_in,
    .sign_out = sign_out,
    .ack = ack,
    .lease = lease,
    .sign_out_any = sign_out_any,
    .kick = kick,
    .load_sessions = load_sessions,
    .session = session,
};
