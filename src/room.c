/*
 * room: the room operations of storage.h, behind the functions the
 * handlers and fan-out call. A room send takes the room's seq here (the seq
 * module: on PostgreSQL that also locks the room until the commit) before
 * its backend stores the entry; everything else is the backend's.
 */
#include "room.h"

#include "config.h"
#include "seq.h"
#include "storage.h"

gim_err room_append(struct wctx *w, int64_t room_id, const struct message_new *m, int64_t *seq)
{
    gim_err e = seq_next(w->seq, w->db, SEQ_ROOM, room_id, seq);
    if (e != GIM_OK)
        return e;
    return storage(w->db)->room->append(w, room_id, *seq, m,
                                        (int64_t)w->cfg->rooms.retain_messages);
}

gim_err room_load(struct store_conn *db, int64_t room_id, int64_t seq, struct arena *a,
                  struct message_view **out)
{
    return storage(db)->room->load(db, room_id, seq, a, out);
}

gim_err room_page(struct store_conn *db, const struct gim_config *cfg, int64_t room_id,
                  int64_t after, size_t max_bytes, uint8_t **buf, size_t *len)
{
    return storage(db)->room->page(db, room_id, after, cfg->sync.page_size, max_bytes, buf, len);
}

gim_err room_subscribe(struct store_conn *db, const struct session *s, int64_t room_id,
                       int64_t now_ms)
{
    return storage(db)->room->subscribe(db, s, room_id, now_ms);
}

gim_err room_subscribed(struct store_conn *db, const struct session *s, int64_t *room_id)
{
    return storage(db)->room->subscribed(db, s, room_id);
}

gim_err room_subscribers(struct store_conn *db, int64_t room_id, struct session **out, size_t *n)
{
    return storage(db)->room->subscribers(db, room_id, out, n);
}
