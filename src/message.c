#include "message.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "storage.h"

gim_err arena_init(struct arena *a, size_t cap)
{
    a->len = 0;
    a->cap = cap;
    a->buf = malloc(cap);
    return a->buf ? GIM_OK : GIM_ENOMEM;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t at = (a->len + 15) & ~(size_t)15; /* keep structs aligned */
    if (at > a->cap || n > a->cap - at)
        return NULL;
    a->len = at + n;
    return a->buf + at;
}

void arena_free(struct arena *a)
{
    free(a->buf);
    a->buf = NULL;
    a->len = a->cap = 0;
}

gim_err message_ids_pack(struct message_ids *out, const int64_t *ids, size_t n)
{
    out->blob = NULL;
    out->len = 8 * n;
    if (n == 0)
        return GIM_OK;
    out->blob = n <= MESSAGE_IDS_STACK ? out->stack : malloc(out->len);
    if (!out->blob)
        return GIM_ENOMEM;
    for (size_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            out->blob[i * 8 + (size_t)b] = (uint8_t)((uint64_t)ids[i] >> (8 * b));
    return GIM_OK;
}

void message_ids_free(struct message_ids *ids)
{
    if (ids->blob != ids->stack)
        free(ids->blob);
    ids->blob = NULL;
}

int64_t *message_ids_unpack(const uint8_t *buf, size_t len, size_t *n, struct arena *a)
{
    *n = len / 8;
    if (*n == 0)
        return NULL;
    int64_t *ids = arena_alloc(a, *n * sizeof *ids);
    if (!ids) {
        *n = 0;
        return NULL;
    }
    for (size_t i = 0; i < *n; i++) {
        uint64_t v = 0;
        for (int b = 0; b < 8; b++)
            v |= (uint64_t)buf[i * 8 + (size_t)b] << (8 * b);
        ids[i] = (int64_t)v;
    }
    return ids;
}

struct message_new message_new_of(const Pb__Message *m)
{
    return (struct message_new){
        .sender_type = m->sender->sender_type,
        .sender_id = m->sender->sender_id,
        .sender_device_id = m->sender->device_id,
        .receiver_type = m->receiver_type,
        .receiver_id = m->receiver_id,
        .to_user_ids = m->to_user_ids,
        .n_to_user_ids = m->n_to_user_ids,
        .message_type = m->message_type,
        .content = m->message_content.data,
        .content_len = m->message_content.len,
        .send_time = m->send_time,
    };
}

/*
 * The operations other modules call by these names (fanout.c, recall.c): the message area's
 * storage operations (storage.h), for a connection alone.
 */
gim_err message_insert(struct store_conn *db, const struct message_new *m, int64_t *id)
{
    struct wctx w = {.db = db};
    return storage(db)->message->insert(&w, m, id);
}

gim_err message_inbox_add(struct store_conn *db, int64_t user_id, int64_t seq, int64_t message_id)
{
    struct wctx w = {.db = db};
    return storage(db)->message->inbox_add(&w, user_id, seq, message_id);
}

gim_err message_load(struct store_conn *db, int64_t message_id, int64_t seq, struct arena *a,
                     struct message_view **out)
{
    return storage(db)->message->load(db, message_id, seq, a, out);
}

/* SyncOutput.has_more = true on the wire: tag + one byte. */
#define HAS_MORE_BYTES 2

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Output fields 1..5 all have one-byte tags; a negative int64 is a 10-byte varint. */
#define TAG_BYTES     1
#define INT64_MAX_LEN 10

size_t message_page_budget(size_t max_bytes, int type, int64_t request_id)
{
    /* A successful reply has code 0 and no message: proto3 writes neither. */
    size_t over = 0;
    if (type != 0)
        over += TAG_BYTES + varint_size((uint64_t)(int64_t)type);
    if (request_id != 0)
        over += TAG_BYTES + varint_size((uint64_t)request_id);
    /* data: tag, length (no longer than the length of max_bytes), the SyncOutput. */
    over += TAG_BYTES + varint_size(max_bytes);
    return max_bytes > over ? max_bytes - over : 0;
}

/*
 * The arithmetic, field by field, with every integer at its longest varint
 * (10 bytes: ids and times are int64; enums take 1 byte, all values < 128):
 *
 *   Sender   sender_type 1+1, sender_id 1+10, device_id 1+10 (the strings
 *            are never stored)                                     = 24
 *   Message  sender 1+1+24, receiver_type 1+1, receiver_id 1+10,
 *            to_user_ids (packed) 1+len(10m)+10m, message_type 1+1,
 *            message_content 1+len(C)+C, seq 1+10, send_time 1+10,
 *            status 1+1                                            = M
 *   SyncOutput  messages 1+len(M)+M, has_more 1+1                  = S
 *   Output   budget overhead as in message_page_budget, with type and
 *            request_id at their longest: S fits when
 *            message_page_budget(max_bytes, 127, -1) >= S.
 *
 * With the defaults (C = 16384, m = 100): M = 17456, S = 17462 and the
 * whole Output 17479 bytes, far below a be16 frame. tests/test_sync.c
 * encodes such a worst-case message and checks it against this bound.
 */
size_t message_page_worst_single(uint32_t max_content_bytes, uint32_t max_mentions)
{
    const size_t sender = 2 + 2 * (TAG_BYTES + INT64_MAX_LEN);
    size_t ids = (size_t)max_mentions * INT64_MAX_LEN;
    size_t m = TAG_BYTES + varint_size(sender) + sender;                 /* sender */
    m += 2;                                                              /* receiver_type */
    m += TAG_BYTES + INT64_MAX_LEN;                                      /* receiver_id */
    m += ids ? TAG_BYTES + varint_size(ids) + ids : 0;                   /* to_user_ids */
    m += 2;                                                              /* message_type */
    m += TAG_BYTES + varint_size(max_content_bytes) + max_content_bytes; /* content */
    m += 2 * (TAG_BYTES + INT64_MAX_LEN);                                /* seq, send_time */
    m += 2;                                                              /* status */
    size_t sync = TAG_BYTES + varint_size(m) + m + HAS_MORE_BYTES;
    /* The inverse of message_page_budget at its worst: type 127 (2 bytes), request_id -1. */
    size_t over = (TAG_BYTES + 1) + (TAG_BYTES + INT64_MAX_LEN) + TAG_BYTES;
    size_t total = over + varint_size(sync) + sync;
    /* message_page_budget reserves the length of max_bytes, not of the data: one more
     * byte whenever the total crosses a varint boundary. */
    return total + (varint_size(total) > varint_size(sync) ? 1 : 0);
}

/* Appends v as a protobuf varint at p; returns the bytes written. */
static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* SyncOutput's wire tags: messages = 1 (length-delimited), has_more = 2 (varint). */
#define TAG_MESSAGES 0x0a
#define TAG_HAS_MORE 0x10

/*
 * The page is encoded as it is read: each row becomes a pb.Message in a
 * one-row arena, is sized once (for its length prefix and the byte budget)
 * and packed once, straight into the reply's bytes, in the order and form
 * protobuf-c's own SyncOutput packing produces. Before, every message was
 * sized three times (the budget here, then the size pass and the nested pack
 * of the whole SyncOutput) and the page went through a second buffer: this
 * saved 8-10 % of a sync's instructions (callgrind, docs/benchmarks.md).
 * The rows come from the backend (rows->next, rows->view): one loop for
 * both, SQLite's statement and PostgreSQL's result (storage/).
 */
gim_err message_page_rows(const struct message_rows *rows, size_t page_size, size_t max_bytes,
                          uint8_t **bufp, size_t *lenp)
{
    struct arena a = {0};
    size_t cap = max_bytes > HAS_MORE_BYTES ? max_bytes : HAS_MORE_BYTES;
    uint8_t *buf = malloc(cap);
    size_t used = 0, n = 0, need = 0;
    bool more = false, row = false;
    gim_err e = GIM_OK;

    *bufp = NULL;
    *lenp = 0;
    if (!buf || arena_init(&a, MESSAGE_VIEW_OVERHEAD + 1024) != GIM_OK) {
        e = GIM_ENOMEM;
        goto out;
    }
    while ((e = rows->next(rows->src, &row, &need)) == GIM_OK && row) {
        if (n == page_size) {
            more = true; /* the extra row: more remain */
            break;
        }
        if (need > a.cap) {
            arena_free(&a);
            if (arena_init(&a, need) != GIM_OK) {
                e = GIM_ENOMEM;
                goto out;
            }
        }
        a.len = 0; /* the previous row is packed: its view is no longer needed */
        struct message_view *v = rows->view(rows->src, &a);
        if (!v) {
            e = GIM_EINTERNAL; /* sized to fit: a miss is a bug */
            goto out;
        }
        size_t len = pb__message__get_packed_size(&v->msg);
        size_t framed = 1 + varint_size(len) + len;
        if (n > 0 && used + framed + HAS_MORE_BYTES > max_bytes) {
            more = true;
            break;
        }
        if (used + framed + HAS_MORE_BYTES > cap) {
            /* One message bigger than the whole budget: it still goes out, alone. */
            uint8_t *bigger = realloc(buf, used + framed + HAS_MORE_BYTES);
            if (!bigger) {
                e = GIM_ENOMEM;
                goto out;
            }
            buf = bigger;
            cap = used + framed + HAS_MORE_BYTES;
        }
        buf[used++] = TAG_MESSAGES;
        used += varint_put(buf + used, len);
        used += pb__message__pack(&v->msg, buf + used);
        n++;
    }
    if (e != GIM_OK)
        goto out;
    if (more) {
        buf[used++] = TAG_HAS_MORE;
        buf[used++] = 1;
    }
    *bufp = buf;
    *lenp = used;
    buf = NULL;
out:
    free(buf);
    arena_free(&a);
    return e;
}

gim_err message_check(const Pb__Message *m, const struct gim_config *cfg, char *why, size_t whylen)
{
    if (m->message_type < PB__MESSAGE_TYPE__MT_TEXT ||
        m->message_type > PB__MESSAGE_TYPE__MT_CUSTOM) {
        gim_err_why(why, whylen, "unknown message_type %d", (int)m->message_type);
        return GIM_EBADREQ;
    }
    if (m->message_content.len > cfg->limits.max_content_bytes) {
        gim_err_why(why, whylen, "content is %zu bytes, the limit is %" PRIu32,
                    m->message_content.len, cfg->limits.max_content_bytes);
        return GIM_ETOOLARGE;
    }
    if (m->n_to_user_ids > cfg->limits.max_mentions) {
        gim_err_why(why, whylen, "%zu mentions, the limit is %" PRIu32, m->n_to_user_ids,
                    cfg->limits.max_mentions);
        return GIM_ETOOLARGE;
    }
    for (size_t i = 0; i < m->n_to_user_ids; i++)
        if (m->to_user_ids[i] <= 0) {
            gim_err_why(why, whylen, "to_user_ids[%zu] must be > 0", i);
            return GIM_EBADREQ;
        }
    if (m->message_type != PB__MESSAGE_TYPE__MT_COMMAND)
        return GIM_OK;
    Pb__Command *cmd = pb__command__unpack(NULL, m->message_content.len, m->message_content.data);
    if (!cmd) {
        gim_err_why(why, whylen, "MT_COMMAND content is not a pb.Command");
        return GIM_EBADREQ;
    }
    int32_t code = cmd->code;
    pb__command__free_unpacked(cmd, NULL);
    if (code < 1000) {
        gim_err_why(why, whylen, "command codes below 1000 are reserved for the IM, got %d",
                    (int)code);
        return GIM_EFORBIDDEN;
    }
    return GIM_OK;
}
