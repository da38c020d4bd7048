/*
 * message: stored messages, between database rows and pb.Message.
 *
 * The message table holds one row per message; inbox rows (user_id, seq)
 * point at it. Storing and reading them are the message area's storage
 * operations (storage.h); the row decoding both backends share
 * (MESSAGE_COLUMNS, message_from_row, message_from_pgrow) lives with them
 * (storage/sqlite_int.h, storage/pg_int.h). This module keeps what needs no
 * database: the pb.Message views, the checks of a send, the encoding of a
 * page, and the functions other modules call by name.
 *
 * to_user_ids is stored as a blob of little-endian int64s (NULL when empty):
 * compact, and never parsed as text.
 */
#ifndef GIM_MESSAGE_H
#define GIM_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

#include "err.h"
#include "proto.h"
#include "store.h"

/*
 * A bounded bump allocator for building replies: everything a reply points
 * at lives here and is freed at once. Allocation fails (NULL) past `cap`.
 */
struct arena {
    uint8_t *buf;
    size_t len, cap;
};
gim_err arena_init(struct arena *a, size_t cap);
void *arena_alloc(struct arena *a, size_t n);
void arena_free(struct arena *a);

/* A pb.Message with the storage its pointers need, in one arena allocation. */
struct message_view {
    Pb__Message msg;
    Pb__Sender sender;
};

/* Arena room for one loaded view besides its two blobs: the view and alignment padding. */
#define MESSAGE_VIEW_OVERHEAD (sizeof(struct message_view) + 3 * 16)

struct gim_config;

/*
 * The checks every send applies to a message before anything is stored
 * (PT_MESSAGE and the business API's PT_ADMIN_SEND): a known message_type,
 * content within limits.max_content_bytes, at most limits.max_mentions
 * to_user_ids, each > 0, and for MT_COMMAND content that is a pb.Command
 * with a code of 1000 or above (below is the IM's own: recall and group
 * notices, which no sender may fake). The receiver is the caller's to check.
 * GIM_EBADREQ, GIM_ETOOLARGE or GIM_EFORBIDDEN with why set; else GIM_OK.
 */
gim_err message_check(const Pb__Message *m, const struct gim_config *cfg, char *why, size_t whylen);

/* What the writer stores for one new message. */
struct message_new {
    int sender_type;
    int64_t sender_id, sender_device_id;
    int receiver_type;
    int64_t receiver_id;
    const int64_t *to_user_ids;
    size_t n_to_user_ids;
    int message_type;
    const uint8_t *content;
    size_t content_len;
    int64_t send_time;
    int64_t sender_seq, receiver_seq;
};

/*
 * The row to store for m as the server built it (m->sender set; seqs 0, for
 * the caller to fill): shared by client sends and the service's own (fanout).
 * Points into m.
 */
struct message_new message_new_of(const Pb__Message *m);

/* Inserts the message row; *id is its message id (storage(db)->message->insert). */
gim_err message_insert(struct store_conn *db, const struct message_new *m, int64_t *id);

/* Adds the inbox entry (user_id, seq) -> message_id. */
gim_err message_inbox_add(struct store_conn *db, int64_t user_id, int64_t seq, int64_t message_id);

/*
 * Loads message message_id as the copy with seq `seq` (for replies built after
 * the fact: idempotent retries, pushes). GIM_ENOTFOUND if it is gone.
 */
gim_err message_load(struct store_conn *db, int64_t message_id, int64_t seq, struct arena *a,
                     struct message_view **out);

/*
 * The to_user_ids blob as stored (8 bytes a mention, little-endian), shared
 * by the message and room_message inserts. Packed on the stack up to
 * MESSAGE_IDS_STACK mentions, in a malloc'ed buffer past that; blob is NULL
 * (the column stays NULL) when there are none.
 */
#define MESSAGE_IDS_STACK 16
struct message_ids {
    uint8_t stack[8 * MESSAGE_IDS_STACK];
    uint8_t *blob;
    size_t len;
};

/* Packs ids[0..n) into out; GIM_ENOMEM or GIM_OK. Release with message_ids_free(). */
gim_err message_ids_pack(struct message_ids *out, const int64_t *ids, size_t n);
void message_ids_free(struct message_ids *ids);

/*
 * The ids of a stored blob (buf, len bytes) in an array allocated in a, *n of
 * them; NULL when there are none, or (with *n = 0) when a is full.
 */
int64_t *message_ids_unpack(const uint8_t *buf, size_t len, size_t *n, struct arena *a);

/*
 * Where a page's rows come from (a backend's statement or result, storage/):
 * next() moves to the next row, *row says whether there is one and *need
 * how many arena bytes its view takes (MESSAGE_VIEW_OVERHEAD + its blobs);
 * it returns the failed step's error. view() builds the current row's view
 * (its seq the row's) in a, NULL when a is full.
 */
struct message_rows {
    void *src;
    gim_err (*next)(void *src, bool *row, size_t *need);
    struct message_view *(*view)(void *src, struct arena *a);
};

/*
 * One page of a log, shared by PT_SYNC (inboxes) and rooms: rows in ascending
 * seq, page_size + 1 of them at most: the extra row answers has_more without
 * a second query. On success *buf (malloc'ed, *len bytes; the caller frees it
 * or hands it to request_take_reply) is the encoded pb.SyncOutput of at most
 * page_size messages, at most max_bytes long (see message_page_budget), but
 * always one message when any row exists: a single message over the budget
 * goes out alone. Config makes that impossible for messages accepted under
 * the current limits (message_page_worst_single); only one stored under
 * larger limits can do it. has_more is set exactly when rows remain. Each
 * message is sized and packed once. A failed next() returns its error and
 * *buf stays NULL. The backends' message_page() and message_page_pg()
 * (storage/sqlite_int.h, storage/pg_int.h) run it on their rows.
 */
gim_err message_page_rows(const struct message_rows *rows, size_t page_size, size_t max_bytes,
                          uint8_t **buf, size_t *len);

/*
 * The byte budget to give message_page() so that the whole reply, the encoded
 * pb.Output{type, request_id, data = the page's SyncOutput}, is at most
 * max_bytes (sync.max_bytes): what a gateway writes to the client's framing
 * (a be16 frame holds at most 65,535 bytes). 0 when max_bytes cannot even
 * hold the Output's own fields.
 */
size_t message_page_budget(size_t max_bytes, int type, int64_t request_id);

/*
 * The smallest sync.max_bytes with which a page holding any one message
 * accepted under these limits (content bytes, mentions) fits, whatever the
 * reply's type and request_id. Config refuses a smaller sync.max_bytes, so
 * every such message fits a page on its own.
 */
size_t message_page_worst_single(uint32_t max_content_bytes, uint32_t max_mentions);

#endif
