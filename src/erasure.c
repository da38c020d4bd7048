#include "erasure.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto.h"
#include "seq.h"
#include "storage.h"

/* Room rows are only read unless they are the user's: a step may scan this many per row it may
 * write. */
#define ROOM_SCAN_FACTOR 8

/*
 * Each step that touches the database is an operation of the recall area
 * (storage.h, "erasure steps"), one implementation per backend
 * (src/storage/sqlite_recall.c, pg_recall.c); the order of the parts and the budget are kept
 * here.
 */

/* Loads the erasure's position, starting (or restarting a finished) one. */
static gim_err load_state(struct wctx *w, int64_t user_id, struct storage_erasure_state *s)
{
    bool running = false;
    gim_err e = storage(w->db)->recall->erasure_state(w, user_id, s, &running);
    if (e != GIM_OK)
        return e;
    if (running)
        return GIM_OK;
    *s = (struct storage_erasure_state){0};
    e = seq_last(w->seq, w->db, SEQ_USER, user_id, &s->upto_seq);
    if (e != GIM_OK)
        return e;
    log_info("erasure started", "user=%" PRId64 " upto_seq=%" PRId64, user_id, s->upto_seq);
    return storage(w->db)->recall->erasure_start(w, user_id, s->upto_seq);
}

/* Part 1. *budget counts down; false in *complete when it ran out first. */
static gim_err erase_devices(struct wctx *w, int64_t user_id, int *budget, bool *complete,
                             struct erasure_result *res)
{
    const struct storage_recall_ops *ops = storage(w->db)->recall;
    gim_err e = GIM_OK;
    size_t n = 0;
    *complete = false;
    /* Collected first: no statement walks the table while it shrinks. */
    res->kicked = calloc((size_t)*budget + 1, sizeof *res->kicked);
    if (!res->kicked)
        return GIM_ENOMEM;
    if ((e = ops->erasure_devices(w, user_id, *budget + 1, res->kicked, &n)) != GIM_OK)
        return e;
    for (size_t i = 0; i<n && * budget> 0; i++) {
        /* Its send records are keyed by request id first (migrations/0009): the idempotency
         * sweep prunes them once the device row is gone (maint.h). Its room sends' go here. */
        int changed = 0;
        e = ops->erasure_device_room_idem(w, res->kicked[i].device_id, *budget, &changed);
        if (e != GIM_OK)
            return e;
        *budget -= changed;
        if (*budget <= 0)
            break; /* its room records may go on: the device stays for the next step */
        if ((e = ops->erasure_device_delete(w, user_id, res->kicked[i].device_id)) != GIM_OK)
            return e;
        (*budget)--;
        res->n_kicked++;
    }
    res->devices = (int64_t)res->n_kicked;
    *complete = res->n_kicked == n;
    return GIM_OK;
}

/* Part 2. */
static gim_err erase_memberships(struct wctx *w, int64_t user_id, int *budget, bool *complete,
                                 struct erasure_result *res)
{
    int changed = 0, asked = *budget;
    *complete = false;
    if (asked <= 0)
        return GIM_OK;
    gim_err e = storage(w->db)->recall->erasure_memberships(w, user_id, asked, &changed);
    if (e != GIM_OK)
        return e;
    res->memberships = changed;
    *budget -= changed;
    *complete = changed < asked; /* fewer than asked: none left */
    return GIM_OK;
}

/* Part 3. */
static gim_err erase_inbox(struct wctx *w, int64_t user_id, const struct storage_erasure_state *s,
                           int *budget, bool *complete, struct erasure_result *res)
{
    const struct storage_recall_ops *ops = storage(w->db)->recall;
    gim_err e = GIM_OK;
    int n = 0;
    *complete = false;
    if (*budget <= 0)
        return GIM_OK;
    struct storage_erasure_entry *list = malloc((size_t)*budget * sizeof *list);
    if (!list)
        return GIM_ENOMEM;
    e = ops->erasure_inbox(w, user_id, s->upto_seq, *budget, list, &n);
    for (int i = 0; e == GIM_OK && i < n; i++) {
        enum storage_erasure_outcome done = STORAGE_ERASURE_KEPT;
        e = ops->erasure_entry(w, user_id, &list[i], &done);
        if (done == STORAGE_ERASURE_DELETED)
            res->messages_deleted++;
        else if (done == STORAGE_ERASURE_ERASED)
            res->messages_erased++;
    }
    free(list);
    if (e != GIM_OK)
        return e;
    res->inbox_entries = n;
    *complete = n < *budget;
    *budget -= n;
    return GIM_OK;
}

/* Part 4: from the cursor on, at most budget * ROOM_SCAN_FACTOR rows read. */
static gim_err erase_rooms(struct wctx *w, int64_t user_id, struct storage_erasure_state *s,
                           int *budget, bool *complete, struct erasure_result *res)
{
    const struct storage_recall_ops *ops = storage(w->db)->recall;
    gim_err e = GIM_OK;
    int limit = *budget * ROOM_SCAN_FACTOR, n = 0, nhits = 0;
    bool stopped = false;
    *complete = false;
    if (*budget <= 0)
        return GIM_OK;
    int64_t(*hits)[2] = malloc((size_t)*budget * sizeof *hits);
    if (!hits)
        return GIM_ENOMEM;
    e = ops->erasure_room_scan(w, user_id, &s->room_id, &s->room_seq, limit, *budget, hits, &nhits,
                               &n, &stopped);
    for (int i = 0; e == GIM_OK && i < nhits; i++)
        e = ops->erasure_room_erase(w, hits[i][0], hits[i][1]);
    free(hits);
    if (e == GIM_OK)
        e = ops->erasure_cursor(w, user_id, s->room_id, s->room_seq);
    if (e != GIM_OK)
        return e;
    res->room_messages_erased = nhits;
    *budget -= nhits;
    /* The scan ran to the end of the logs, not merely to its LIMIT. */
    *complete = !stopped && n < limit;
    return GIM_OK;
}

gim_err erasure_step(struct wctx *w, int64_t user_id, int max_rows, struct erasure_result *res)
{
    struct storage_erasure_state s = {0};
    bool complete = false;
    int budget = max_rows < 1 ? 1 : max_rows > ERASURE_MAX_ROWS ? ERASURE_MAX_ROWS : max_rows;
    gim_err e;

    memset(res, 0, sizeof *res);
    if ((e = load_state(w, user_id, &s)) != GIM_OK)
        goto fail;
    if ((e = erase_devices(w, user_id, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_memberships(w, user_id, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_inbox(w, user_id, &s, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = erase_rooms(w, user_id, &s, &budget, &complete, res)) != GIM_OK || !complete)
        goto out;
    if ((e = storage(w->db)->recall->erasure_finish(w, user_id)) != GIM_OK)
        goto out;
    res->done = true;
out:
    if (e != GIM_OK)
        goto fail;
    /* Content left the tables: SQLite still has it in old WAL frames. */
    if (res->messages_erased || res->messages_deleted || res->room_messages_erased)
        storage(w->db)->recall->erased(w);
    log_info("erasure step",
             "user=%" PRId64 " done=%d devices=%" PRId64 " memberships=%" PRId64 " inbox=%" PRId64
             " erased=%" PRId64 " deleted=%" PRId64 " room=%" PRId64,
             user_id, (int)res->done, res->devices, res->memberships, res->inbox_entries,
             res->messages_erased, res->messages_deleted, res->room_messages_erased);
    return GIM_OK;
fail:
    log_warn("erasure step failed", "user=%" PRId64 " code=%s", user_id, gim_err_name(e));
    erasure_result_free(res);
    return e;
}

void erasure_committed(struct wctx *w, const struct erasure_result *res)
{
    for (size_t i = 0; res && i < res->n_kicked; i++)
        kick_committed(w, &res->kicked[i]);
}

void erasure_result_free(struct erasure_result *res)
{
    if (!res)
        return;
    free(res->kicked);
    memset(res, 0, sizeof *res);
}
