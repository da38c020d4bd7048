/*
 * PT_SYNC: a device pulls its user's inbox after the seq it already holds.
 *
 * A read handler: it runs on the worker's read-only connection and never
 * waits for the writer. One page is one prepared statement (a single
 * statement reads one snapshot, so a page never mixes two states of the
 * inbox); it asks for page_size + 1 rows so the extra row answers has_more
 * without a second query. seq = 0 means "no local state": the device starts
 * after the highest seq any of the user's devices acknowledged (gim's rule),
 * so a new phone does not download years of history another device already
 * showed.
 *
 * The paging itself (count, byte budget, has_more, the encoding) is
 * message_page(), shared with the room logs: it hands back the encoded
 * SyncOutput, which becomes the reply's data as it is.
 */
#include <inttypes.h>

#include "config.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "pgstore.h"
#include "request.h"

static const char SQL_PAGE[] = "SELECT i.seq, " MESSAGE_COLUMNS " FROM inbox i "
                               "JOIN message m ON m.id = i.message_id "
                               "WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3";
static const char SQL_MAX_ACK[] = "SELECT max(ack_seq) FROM device WHERE user_id = ?1";
/*
 * PostgreSQL: the same page, in one statement (one snapshot). Seqs of a
 * user are taken under the row lock of user_seq (seq.c), so N+1 commits
 * after N and no snapshot holds N+1 without N.
 */
static const char PG_PAGE[] = "SELECT i.seq, " MESSAGE_COLUMNS " FROM inbox i "
                              "JOIN message m ON m.id = i.message_id "
                              "WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3";
static const char PG_MAX_ACK[] = "SELECT coalesce(max(ack_seq), 0) FROM device WHERE user_id = $1";

static gim_err sync_prepare(struct request *r)
{
    gim_err e = request_decode_input(r, &pb__sync_input__descriptor);
    if (e != GIM_OK)
        return e;
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    if (in->seq < 0)
        return request_fail(r, GIM_EBADREQ, "sync: seq must be >= 0, got %" PRId64, in->seq);
    return GIM_OK;
}

/* The highest seq any device of user acknowledged; 0 when none did. */
static gim_err max_ack(struct request *r, struct store_conn *ro, int64_t *out)
{
    sqlite3_stmt *st = store_stmt(ro, SQL_MAX_ACK);
    if (!st)
        return request_fail(r, GIM_EINTERNAL, "sync: cannot prepare statement");
    int rc = STORE_BIND(st, STORE_INT(r->sess.user_id));
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0; /* max() of nothing is NULL -> 0 */
    store_done(st);
    if (rc != SQLITE_ROW)
        return request_fail(r, store_err(rc), "sync: cannot read the devices' acks");
    return GIM_OK;
}

static gim_err sync_read_pg(struct request *r, struct store_conn *ro)
{
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    size_t page = r->cfg->sync.page_size;
    int64_t after = in->seq;
    uint8_t *page_buf = NULL;
    size_t page_len = 0;
    PGresult *res = NULL;
    gim_err e = pgstore_ready(ro);
    if (e != GIM_OK)
        return request_fail(r, e, "sync: database unavailable, retry later");
    if (after == 0) {
        if ((e = PG_RUN(ro, PG_MAX_ACK, &res, NULL, STORE_INT(r->sess.user_id))) != GIM_OK)
            return request_fail(r, e, "sync: cannot read the devices' acks");
        after = pgstore_int(res, 0, 0);
        PQclear(res);
        res = NULL;
    }
    if ((e = PG_RUN(ro, PG_PAGE, &res, NULL, STORE_INT(r->sess.user_id), STORE_INT(after),
                    STORE_INT((int64_t)page + 1))) != GIM_OK)
        return request_fail(r, e, "sync: cannot read the inbox");
    size_t budget = message_page_budget(r->cfg->sync.max_bytes, r->type, r->request_id);
    e = message_page_pg(res, page, budget, &page_buf, &page_len);
    PQclear(res);
    if (e != GIM_OK)
        return request_fail(r, e, "sync: %s",
                            e == GIM_ENOMEM ? "out of memory" : "cannot encode the page");
    request_take_reply(r, page_buf, page_len);
    return GIM_OK;
}

static gim_err sync_read(struct request *r, struct store_conn *ro)
{
    if (store_is_pg(ro))
        return sync_read_pg(r, ro);
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    size_t page = r->cfg->sync.page_size;
    uint8_t *page_buf = NULL;
    size_t page_len = 0;
    sqlite3_stmt *st = NULL;
    int64_t after = in->seq;
    gim_err e;

    if (after == 0 && (e = max_ack(r, ro, &after)) != GIM_OK)
        return e;
    if (!(st = store_stmt(ro, SQL_PAGE))) {
        e = request_fail(r, GIM_EINTERNAL, "sync: cannot prepare statement");
        goto out;
    }
    size_t budget = message_page_budget(r->cfg->sync.max_bytes, r->type, r->request_id);
    int rc =
        STORE_BIND(st, STORE_INT(r->sess.user_id), STORE_INT(after), STORE_INT((int64_t)page + 1));
    e = rc == SQLITE_OK ? message_page(st, page, budget, &page_buf, &page_len) : store_err(rc);
    if (e != GIM_OK) {
        if (e == GIM_ENOMEM) {
            request_fail(r, e, "sync: out of memory");
            goto out;
        }
        log_warn("sync read failed", "user=%" PRId64 " code=%s error=\"%s\"", r->sess.user_id,
                 gim_err_name(e), sqlite3_errmsg(ro->db));
        request_fail(r, e, "sync: cannot read the inbox");
        goto out;
    }
    request_take_reply(r, page_buf, page_len);
out:
    store_done(st);
    return e;
}

const struct handler handle_sync = {
    .type = PB__PACKAGE_TYPE__PT_SYNC,
    .name = "sync",
    .needs_session = true,
    .prepare = sync_prepare,
    .read = sync_read,
};
