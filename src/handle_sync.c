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
 * Every message of the page is built into one arena and SyncOutput is packed
 * once: no allocation per message. The arena is sized for the byte budget;
 * only a single stored message larger than the whole budget (it must still
 * be delivered, alone) gets an arena of its own size.
 */
#include <inttypes.h>

#include "config.h"
#include "handlers.h"
#include "log.h"
#include "message.h"
#include "request.h"

static const char SQL_PAGE[] = "SELECT i.seq, " MESSAGE_COLUMNS " FROM inbox i "
                               "JOIN message m ON m.id = i.message_id "
                               "WHERE i.user_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3";
static const char SQL_MAX_ACK[] = "SELECT max(ack_seq) FROM device WHERE user_id = ?1";

/* SyncOutput.has_more = true on the wire: tag + one byte. */
#define HAS_MORE_BYTES 2
/* Per-message arena overhead besides content and mentions: the view plus alignment. */
#define VIEW_BYTES (sizeof(struct message_view) + 3 * 16)

static size_t varint_size(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

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
    sqlite3_bind_int64(st, 1, r->sess.user_id);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0; /* max() of nothing is NULL -> 0 */
    store_done(st);
    if (rc != SQLITE_ROW)
        return request_fail(r, store_err(rc), "sync: cannot read the devices' acks");
    return GIM_OK;
}

/*
 * The arena (re)started with room for the pointer array and `bytes` of
 * messages; *ptrs points into it.
 */
static gim_err page_arena(struct arena *a, size_t page, size_t bytes, Pb__Message ***ptrs)
{
    arena_free(a);
    if (arena_init(a, page * sizeof **ptrs + 16 + bytes) != GIM_OK)
        return GIM_ENOMEM;
    *ptrs = arena_alloc(a, page * sizeof **ptrs);
    return *ptrs ? GIM_OK : GIM_ENOMEM;
}

static gim_err sync_read(struct request *r, struct store_conn *ro)
{
    const Pb__SyncInput *in = (const Pb__SyncInput *)r->in;
    size_t page = r->cfg->sync.page_size, budget = r->cfg->sync.max_bytes;
    Pb__SyncOutput out = PB__SYNC_OUTPUT__INIT;
    struct arena a = {0};
    Pb__Message **msgs = NULL;
    sqlite3_stmt *st = NULL;
    size_t used = HAS_MORE_BYTES;
    int64_t after = in->seq;
    gim_err e;

    if (after == 0 && (e = max_ack(r, ro, &after)) != GIM_OK)
        return e;
    /* A view in memory outweighs its encoding: room for a page of views plus the budget. */
    if ((e = page_arena(&a, page, page * VIEW_BYTES + budget, &msgs)) != GIM_OK) {
        request_fail(r, e, "sync: out of memory");
        goto out;
    }
    if (!(st = store_stmt(ro, SQL_PAGE))) {
        e = request_fail(r, GIM_EINTERNAL, "sync: cannot prepare statement");
        goto out;
    }
    sqlite3_bind_int64(st, 1, r->sess.user_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, (int64_t)page + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out.n_messages == page) {
            out.has_more = true; /* the extra row: more remain */
            break;
        }
        int64_t seq = sqlite3_column_int64(st, 0);
        struct message_view *v = message_from_row(st, 1, seq, &a);
        if (!v && out.n_messages == 0) {
            /* One message bigger than the whole arena: it still goes out, alone. */
            size_t need = VIEW_BYTES + (size_t)sqlite3_column_bytes(st, 1 + 5) +
                          (size_t)sqlite3_column_bytes(st, 1 + 7);
            if ((e = page_arena(&a, page, need, &msgs)) != GIM_OK) {
                request_fail(r, e, "sync: out of memory");
                goto out;
            }
            if (!(v = message_from_row(st, 1, seq, &a))) {
                e = request_fail(r, GIM_EINTERNAL, "sync: cannot build message %" PRId64, seq);
                goto out;
            }
        }
        if (!v) {
            /* Mentions take more room in memory than on the wire: end the page early. */
            out.has_more = true;
            break;
        }
        size_t len = pb__message__get_packed_size(&v->msg);
        size_t framed = 1 + varint_size(len) + len;
        if (out.n_messages > 0 && used + framed > budget) {
            out.has_more = true;
            break;
        }
        used += framed;
        msgs[out.n_messages++] = &v->msg;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        log_warn("sync read failed", "user=%" PRId64 " rc=%d error=\"%s\"", r->sess.user_id, rc,
                 sqlite3_errmsg(ro->db));
        e = request_fail(r, store_err(rc), "sync: cannot read the inbox");
        goto out;
    }
    /* Release the snapshot before packing: the messages live in the arena now. */
    store_done(st);
    st = NULL;
    out.messages = msgs;
    e = request_set_reply(r, &out.base);
out:
    store_done(st);
    arena_free(&a);
    return e;
}

const struct handler handle_sync = {
    .type = PB__PACKAGE_TYPE__PT_SYNC,
    .name = "sync",
    .needs_session = true,
    .prepare = sync_prepare,
    .read = sync_read,
};
