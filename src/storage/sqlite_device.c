/*
 * The device operations on sqlite (storage.h): devices, sessions and
 * gateways of one instance, whose presence is the truth (the device table
 * is its copy for restarts). The statements and their order are those the
 * handlers ran before the seam (handle_signin.c, handle_signout.c,
 * handle_message_ack.c, handle_gateway_lease.c, kick.c, presence.c).
 */
#include <stdio.h>
#include <string.h>

#include "presence.h"
#include "storage.h"

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
 * A device handed to another user must not carry the old user's room send
 * records: a room send's details (room_idempotency, keyed by device) say
 * nothing of whose they were, and would answer the new user's send with the
 * same request_id. Runs before the upsert, while the row still names the
 * previous user; a range of the primary key. The key rows in idempotency
 * stay (keyed by request id first, a device's are not in one place,
 * migrations/0009): one left without details, or naming a message of
 * another user or one that is gone, is taken over by the next send with its
 * request id (handle_message.c), and the sweep prunes it with its window.
 */
static const char SQL_DROP_OTHER_ROOM_IDEM[] =
    "DELETE FROM room_idempotency WHERE device_id = ?1 AND EXISTS "
    "(SELECT 1 FROM device WHERE device_id = ?1 AND user_id <> ?2)";

/* Guarded by the caller's user and gateway (storage.h, sign_out). */
static const char SQL_SIGN_OUT[] = "UPDATE device SET online = 0, room_id = 0, updated_at = ?1 "
                                   "WHERE device_id = ?2 AND user_id = ?3 AND gateway_id = ?4";

/* The user guard: a device that signed in as someone else since must keep its new row. */
static const char SQL_ACK[] = "UPDATE device SET ack_seq = ?1, ack_time = ?2, updated_at = ?3 "
                              "WHERE device_id = ?4 AND user_id = ?5 AND ack_seq < ?1";

static const char SQL_BOOT_GET[] = "SELECT boot_id FROM gateway WHERE gateway_id = ?1";
static const char SQL_BOOT_PUT[] =
    "INSERT INTO gateway (gateway_id, boot_id, booted_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (gateway_id) DO UPDATE SET boot_id = excluded.boot_id, "
    "booted_at = excluded.booted_at WHERE gateway.boot_id <> excluded.boot_id";
static const char SQL_SIGN_OUT_GATEWAY[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = ?2 "
    "WHERE gateway_id = ?1 AND online = 1";

static const char SQL_DEVICE[] =
    "SELECT user_id, online, gateway_id FROM device WHERE device_id = ?1";
/* The sweeper and a kick sign the device out whatever its session. */
static const char SQL_SIGN_OUT_ANY[] =
    "UPDATE device SET online = 0, room_id = 0, updated_at = ?1 WHERE device_id = ?2";

static const char SQL_LOAD[] =
    "SELECT device_id, user_id, gateway_id, room_id FROM device WHERE online = 1";

static const char SQL_SESSION[] =
    "SELECT user_id, gateway_id, room_id FROM device WHERE device_id = ?1 AND online = 1";

static void copy_gateway(char *dst, const unsigned char *src, int bytes)
{
    size_t len = src && bytes > 0 ? (size_t)bytes : 0;
    if (len > PRESENCE_GATEWAY_MAX)
        len = PRESENCE_GATEWAY_MAX;
    if (len)
        memcpy(dst, src, len);
    dst[len] = 0;
}

static gim_err sign_in(struct wctx *w, const struct session *s, const char *client_addr,
                       struct session *old, int *dropped)
{
    memset(old, 0, sizeof *old);
    *dropped = 0;
    gim_err e = STORE_RUN(w->db, SQL_DROP_OTHER_ROOM_IDEM, dropped, STORE_INT(s->device_id),
                          STORE_INT(s->user_id));
    if (e != GIM_OK)
        return e;
    return STORE_RUN(w->db, SQL_UPSERT_DEVICE, NULL, STORE_INT(s->device_id), STORE_INT(s->user_id),
                     STORE_TEXT(s->gateway_id), STORE_TEXT(client_addr), STORE_INT(w->now_ms));
}

static gim_err sign_out(struct wctx *w, int64_t device_id, int64_t user_id, const char *gateway_id)
{
    return STORE_RUN(w->db, SQL_SIGN_OUT, NULL, STORE_INT(w->now_ms), STORE_INT(device_id),
                     STORE_INT(user_id), STORE_TEXT(gateway_id));
}

static gim_err ack(struct wctx *w, int64_t device_id, int64_t user_id, int64_t ack_seq,
                   int64_t ack_time)
{
    return STORE_RUN(w->db, SQL_ACK, NULL, STORE_INT(ack_seq), STORE_INT(ack_time),
                     STORE_INT(w->now_ms), STORE_INT(device_id), STORE_INT(user_id));
}

static gim_err lease(struct wctx *w, const char *gateway_id, int64_t boot_id, bool *restarted)
{
    gim_err e;
    int rc;
    sqlite3_stmt *st = store_stmt(w->db, SQL_BOOT_GET);
    *restarted = false;
    if (!st)
        return GIM_EINTERNAL;
    if ((rc = STORE_BIND(st, STORE_TEXT(gateway_id))) == SQLITE_OK)
        rc = sqlite3_step(st);
    *restarted = rc == SQLITE_ROW && sqlite3_column_int64(st, 0) != boot_id;
    store_done(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_err(rc);
    if (*restarted && (e = STORE_RUN(w->db, SQL_SIGN_OUT_GATEWAY, NULL, STORE_TEXT(gateway_id),
                                     STORE_INT(w->now_ms))) != GIM_OK)
        return e;
    return STORE_RUN(w->db, SQL_BOOT_PUT, NULL, STORE_TEXT(gateway_id), STORE_INT(boot_id),
                     STORE_INT(w->now_ms));
}

static gim_err sign_out_any(struct wctx *w, int64_t device_id)
{
    return STORE_RUN(w->db, SQL_SIGN_OUT_ANY, NULL, STORE_INT(w->now_ms), STORE_INT(device_id));
}

static gim_err kick(struct wctx *w, int64_t device_id, struct session *row, bool *was_online)
{
    memset(row, 0, sizeof *row);
    row->device_id = device_id;
    *was_online = false;
    sqlite3_stmt *st = store_stmt(w->db, SQL_DEVICE);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(device_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *gw = sqlite3_column_text(st, 2);
        row->user_id = sqlite3_column_int64(st, 0);
        *was_online = sqlite3_column_int(st, 1) != 0;
        snprintf(row->gateway_id, sizeof row->gateway_id, "%s", gw ? (const char *)gw : "");
    }
    store_done(st);
    if (rc == SQLITE_DONE)
        return GIM_ENOTFOUND;
    if (rc != SQLITE_ROW)
        return store_err(rc);
    return sign_out_any(w, device_id);
}

static gim_err load_sessions(struct store_conn *c, int64_t now_ms,
                             gim_err (*put)(void *arg, const struct session *s), void *arg,
                             size_t *n)
{
    gim_err e = GIM_OK;
    int rc;
    *n = 0;
    sqlite3_stmt *st = store_stmt(c, SQL_LOAD);
    if (!st)
        return GIM_EINTERNAL;
    /* One row at a time through put(): no lock is held across disk reads. */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct session s = {
            .device_id = sqlite3_column_int64(st, 0),
            .user_id = sqlite3_column_int64(st, 1),
            .room_id = sqlite3_column_int64(st, 3),
            .last_seen_ms = now_ms,
        };
        const unsigned char *gw = sqlite3_column_text(st, 2);
        if (gw)
            copy_gateway(s.gateway_id, gw, sqlite3_column_bytes(st, 2));
        if ((e = put(arg, &s)) != GIM_OK)
            goto out;
        (*n)++;
    }
    if (rc != SQLITE_DONE) {
        e = store_err(rc);
        if (e == GIM_OK)
            e = GIM_EINTERNAL;
    }
out:
    store_done(st);
    return e;
}

static gim_err session(struct store_conn *c, int64_t device_id, struct session *out, bool *found)
{
    *found = false;
    sqlite3_stmt *st = store_stmt(c, SQL_SESSION);
    if (!st)
        return GIM_EINTERNAL;
    int rc = STORE_BIND(st, STORE_INT(device_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = true;
        out->device_id = device_id;
        out->user_id = sqlite3_column_int64(st, 0);
        out->room_id = sqlite3_column_int64(st, 2);
        copy_gateway(out->gateway_id, sqlite3_column_text(st, 1), sqlite3_column_bytes(st, 1));
    }
    store_done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? GIM_OK : store_err(rc);
}

const struct storage_device_ops storage_sqlite_device = {
    .sign_in = sign_in,
    .sign_out = sign_out,
    .ack = ack,
    .lease = lease,
    .sign_out_any = sign_out_any,
    .kick = kick,
    .load_sessions = load_sessions,
    .session = session,
};
