#include "operator.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "pgstore.h"
#include "wctx.h"

gim_err operator_auth(struct request *r, const char *token, const char *what)
{
    char why[100] = "";
    const char *secret = config_secret(r->cfg);
    if (!secret)
        return request_fail(r, GIM_EUNAUTH, "%s: no token secret configured", what);
    if (auth_verify_admin(secret, token, (int64_t)time(NULL), why, sizeof why) != GIM_OK)
        return request_fail(r, GIM_EUNAUTH, "%s: %s", what, why);
    return GIM_OK;
}

gim_err operator_decode(struct request *r, const ProtobufCMessageDescriptor *d, const char *what)
{
    gim_err e = request_decode_input(r, d);
    if (e != GIM_OK)
        return e;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING || strcmp(f->name, "token") != 0)
        return request_fail(r, GIM_EINTERNAL, "%s: the input has no operator token", what);
    return operator_auth(r, *(const char *const *)((const char *)r->in + f->offset), what);
}

static const char SQL_IDEM_GET[] =
    "SELECT type, request, reply, created_at FROM operator_idempotency WHERE idem_key = ?1";
/* A record older than the window may still be there (pruning is lazy): it is replaced. */
static const char SQL_IDEM_PUT[] =
    "INSERT INTO operator_idempotency (idem_key, type, request, reply, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (idem_key) DO UPDATE SET type = excluded.type, "
    "request = excluded.request, reply = excluded.reply, created_at = excluded.created_at";

/*
 * PostgreSQL (several instances on one database): the key is claimed
 * first, with a row of this request and no reply. The same retry reaching
 * two instances at once inserts the same key twice: the second insert
 * waits on the first's uncommitted row until it commits, then finds it
 * (claimed 0) and reads it, so the retry applies once and answers from the
 * record; had the first rolled back, the second claims the key itself. A
 * failed request's savepoint takes its claim back with its change.
 */
static const char PG_IDEM_CLAIM[] =
    "INSERT INTO operator_idempotency (idem_key, type, request, reply, created_at) "
    "VALUES ($1, $2, $3, NULL, $4) ON CONFLICT (idem_key) DO NOTHING";
static const char PG_IDEM_GET[] = "SELECT type, request, reply, created_at FROM "
                                  "operator_idempotency WHERE idem_key = $1 FOR UPDATE";
/* An expired record is taken over by the request running again. */
static const char PG_IDEM_TAKE[] =
    "UPDATE operator_idempotency SET type = $2, request = $3, reply = NULL, created_at = $4 "
    "WHERE idem_key = $1";
static const char PG_IDEM_SET[] = "UPDATE operator_idempotency SET reply = $2 WHERE idem_key = $1";

/* The stored reply (NULL: none) becomes r's. */
static gim_err replay_reply(struct request *r, const void *reply, size_t len, bool has)
{
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
    if (!has)
        return GIM_OK;
    if (!(r->out = malloc(len ? len : 1)))
        return request_fail(r, GIM_ENOMEM, "out of memory");
    if (len)
        memcpy(r->out, reply, len);
    r->out_len = len;
    return GIM_OK;
}

static gim_err idem_replay_pg(struct request *r, struct wctx *w, struct operator_idem *idem,
                              const char *what)
{
    PGresult *res = NULL;
    int claimed = 0;
    const struct store_val body =
        STORE_BLOB(idem->body_len ? (const void *)idem->body : "", idem->body_len);
    gim_err e = PG_RUN(w->db, PG_IDEM_CLAIM, NULL, &claimed, STORE_TEXT(idem->key),
                       STORE_INT(r->type), body, STORE_INT(w->now_ms));
    if (e == GIM_OK && claimed)
        return GIM_OK; /* new: the request runs */
    if (e == GIM_OK)
        e = PG_RUN(w->db, PG_IDEM_GET, &res, NULL, STORE_TEXT(idem->key));
    if (e != GIM_OK || PQntuples(res) != 1) {
        PQclear(res);
        return request_fail(r, e != GIM_OK ? e : GIM_EINTERNAL,
                            "%s: cannot read the idempotency records", what);
    }
    size_t body_len = 0, reply_len = 0;
    const uint8_t *stored = pgstore_blob(res, 0, 1, &body_len);
    const uint8_t *reply = pgstore_blob(res, 0, 2, &reply_len);
    if (pgstore_int(res, 0, 3) < w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000) {
        PQclear(res); /* expired: the request runs again, its record replaces this one */
        e = PG_RUN(w->db, PG_IDEM_TAKE, NULL, NULL, STORE_TEXT(idem->key), STORE_INT(r->type), body,
                   STORE_INT(w->now_ms));
        return e == GIM_OK ? GIM_OK : request_fail(r, e, "%s: cannot record the request", what);
    }
    if (pgstore_int(res, 0, 0) != r->type || body_len != idem->body_len ||
        (body_len > 0 && memcmp(stored, idem->body, body_len) != 0)) {
        PQclear(res);
        return request_fail(r, GIM_EBADREQ,
                            "%s: idempotency key already used by a different request "
                            "(a retry must repeat the request exactly; use a new key)",
                            what);
    }
    idem->replayed = true;
    e = replay_reply(r, reply, reply_len, !pgstore_null(res, 0, 2));
    PQclear(res);
    return e;
}

gim_err operator_idem_init(struct request *r, struct operator_idem *idem, ProtobufCMessage *m,
                           char **token, char **key_field, const char *what)
{
    char buf[OPERATOR_IDEM_KEY_MAX + 16];
    memset(idem, 0, sizeof *idem);
    size_t klen = strlen(*key_field);
    if (klen > OPERATOR_IDEM_KEY_MAX)
        return request_fail(r, GIM_EBADREQ, "%s: idempotency_key is %zu bytes, the limit is %d",
                            what, klen, OPERATOR_IDEM_KEY_MAX);
    if (klen > 0)
        snprintf(buf, sizeof buf, "key:%s", *key_field);
    else if (r->request_id != 0)
        snprintf(buf, sizeof buf, "request_id:%" PRId64, r->request_id);
    else
        return GIM_OK;
    if (!(idem->key = strdup(buf)))
        return request_fail(r, GIM_ENOMEM, "out of memory");

    char *saved_token = *token, *saved_key = *key_field;
    *token = (char *)protobuf_c_empty_string;
    *key_field = (char *)protobuf_c_empty_string;
    idem->body_len = protobuf_c_message_get_packed_size(m);
    idem->body = malloc(idem->body_len ? idem->body_len : 1);
    if (idem->body)
        protobuf_c_message_pack(m, idem->body);
    *token = saved_token;
    *key_field = saved_key;
    if (!idem->body)
        return request_fail(r, GIM_ENOMEM, "out of memory");
    return GIM_OK;
}

gim_err operator_idem_replay(struct request *r, struct wctx *w, struct operator_idem *idem,
                             const char *what)
{
    gim_err e = GIM_OK;
    idem->replayed = false;
    if (!idem->key)
        return GIM_OK;
    if (store_is_pg(w->db))
        return idem_replay_pg(r, w, idem, what);
    sqlite3_stmt *st = store_stmt(w->db, SQL_IDEM_GET);
    if (!st)
        return request_fail(r, GIM_EINTERNAL, "%s: cannot read the idempotency records", what);
    int rc = STORE_BIND(st, STORE_TEXT(idem->key));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        goto out;
    if (rc != SQLITE_ROW) {
        e = request_fail(r, store_err(rc), "%s: cannot read the idempotency records", what);
        goto out;
    }
    if (sqlite3_column_int64(st, 3) <
        w->now_ms - (int64_t)w->cfg->idempotency.window_seconds * 1000)
        goto out; /* expired: the request runs again, and its record replaces this one */
    const void *body = sqlite3_column_blob(st, 1);
    size_t body_len = (size_t)sqlite3_column_bytes(st, 1);
    if (sqlite3_column_int(st, 0) != r->type || body_len != idem->body_len ||
        (body_len > 0 && memcmp(body, idem->body, body_len) != 0)) {
        e = request_fail(r, GIM_EBADREQ,
                         "%s: idempotency key already used by a different request "
                         "(a retry must repeat the request exactly; use a new key)",
                         what);
        goto out;
    }
    idem->replayed = true;
    free(r->out);
    r->out = NULL;
    r->out_len = 0;
    if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        const void *reply = sqlite3_column_blob(st, 2);
        if (!(r->out = malloc(len ? len : 1))) {
            e = request_fail(r, GIM_ENOMEM, "out of memory");
            goto out;
        }
        if (len)
            memcpy(r->out, reply, len);
        r->out_len = len;
    }
out:
    store_done(st);
    return e;
}

gim_err operator_idem_remember(struct request *r, struct wctx *w, const struct operator_idem *idem,
                               const char *what)
{
    if (!idem->key)
        return GIM_OK;
    if (store_is_pg(w->db)) { /* the claim made the row: the reply completes it */
        gim_err e = PG_RUN(w->db, PG_IDEM_SET, NULL, NULL, STORE_TEXT(idem->key),
                           r->out ? STORE_BLOB(r->out_len ? (const void *)r->out : "", r->out_len)
                                  : STORE_NULL);
        return e == GIM_OK ? GIM_OK : request_fail(r, e, "%s: cannot record the request", what);
    }
    gim_err e = STORE_RUN(
        w->db, SQL_IDEM_PUT, NULL, STORE_TEXT(idem->key), STORE_INT(r->type),
        STORE_BLOB(idem->body_len ? (const void *)idem->body : "", idem->body_len),
        r->out ? STORE_BLOB(r->out_len ? (const void *)r->out : "", r->out_len) : STORE_NULL,
        STORE_INT(w->now_ms));
    if (e != GIM_OK)
        return request_fail(r, e, "%s: cannot record the request", what);
    return GIM_OK;
}

void operator_idem_free(struct operator_idem *idem)
{
    if (!idem)
        return;
    free(idem->key);
    free(idem->body);
    memset(idem, 0, sizeof *idem);
}
