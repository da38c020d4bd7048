/*
 * recall: taking a sent message back, for PT_RECALL and for operators
 * (`gimctl recall --admin`).
 *
 * A recall erases the message's content in the database (content = NULL,
 * status = MS_RECALL; secure_delete zeroes the freed bytes and the writer's
 * checkpointer truncates the WAL soon after, so the text leaves both files:
 * see writer.c for readers that hold an older snapshot, and crashes) and drops a
 * recall notice into every inbox that held a copy. A notice is a message of
 * its own, one per copy because each carries that inbox's seq of the recalled
 * copy: MT_COMMAND with content Command{code: RECALL_COMMAND_CODE, data:
 * RecallInput{seq}}. It is a single-copy message (sender_seq = receiver_seq =
 * its seq, no group_copy rows).
 *
 * Command codes below 1000 belong to gim-logic itself (1 = recall notice,
 * 2-6 group notices: group.h); 1000 and above are the business's (see
 * Command in connect.ext.proto). Notices themselves cannot be recalled (EC_FORBIDDEN): they carry
 * no user content, and recalling one would only breed more notices.
 *
 * The database steps are operations of the recall area of storage.h
 * (find and lock the message, erase it and list its copies, the push
 * targets, the WAL scrub request), one implementation per backend in
 * src/storage/sqlite_recall.c and pg_recall.c. On PostgreSQL the message
 * row is locked first, the notices' seqs are taken in the database in
 * ascending user id, and the push targets come from the device table.
 * There is no WAL to scrub there: docs/scale-out.md says what "erased"
 * means on PostgreSQL.
 *
 * Everything here runs on the writer thread: recall_apply() inside the
 * writer's transaction (a job of writer_run_batch, whose savepoint undoes a
 * failure), recall_push() after the commit.
 *
 * Ownership: a recall_result owns its notices and their content; release it
 * with recall_result_free() (also after a failed recall_apply).
 */
#ifndef GIM_RECALL_H
#define GIM_RECALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
#include "wctx.h"

/* Command.code of a recall notice; data = encoded pb.RecallInput. */
#define RECALL_COMMAND_CODE 1

/* One notice written into one inbox. */
struct recall_notice {
    int64_t user_id;  /* whose inbox */
    int64_t seq;      /* the notice's seq in that inbox */
    int64_t recalled; /* the seq of the recalled copy in that inbox */
    uint8_t *content; /* encoded pb.Command (owned) */
    size_t content_len;
};

struct recall_result {
    bool already; /* the message was recalled before: nothing was written */
    int64_t message_id;
    /* What every notice shares (the fields of its pb.Message). */
    int sender_type;
    int64_t sender_id, sender_device_id;
    int receiver_type;
    int64_t receiver_id;
    int64_t send_time;
    struct recall_notice *notices; /* one per copy, ascending user id (owned) */
    size_t n_notices;
    /* PostgreSQL: the notices' users' online devices from the device table (owned). */
    struct session *targets;
    size_t n_targets;
    bool targets_known;
};

/*
 * Recalls the message at (user_id, seq) of user_id's inbox on behalf of
 * actor_user/actor_device. Must run inside the writer's transaction; res
 * (zeroed by the call) then lists the notices to push.
 *
 * Unless admin is set the actor must be the sender, within
 * cfg->recall.window_seconds of the send (measured with w->now_ms; 0 = no
 * limit), or an owner/admin of the message's group (any time). admin (an
 * operator) skips both checks; actor_user <= 0 then stands for the system
 * (the notices' sender is ST_SYSTEM).
 *
 * Returns GIM_OK (also when the message was already recalled: res->already),
 * GIM_EBADREQ (seq <= 0), GIM_ENOTFOUND (no such inbox entry), GIM_EFORBIDDEN
 * (not the sender nor a group admin/owner, or the entry is a recall notice),
 * GIM_ERECALLEXPIRED (the sender, after the window), GIM_ENOMEM, or a storage
 * error (GIM_EUNAVAILABLE: busy or locked, retry; else GIM_EINTERNAL). On
 * any error nothing is written and why holds one line for the reply.
 */
gim_err recall_apply(struct wctx *w, int64_t actor_user, int64_t actor_device, int64_t user_id,
                     int64_t seq, bool admin, struct recall_result *res, char *why, size_t whylen);

/*
 * Publishes each notice to its user's online devices except exclude_device
 * (the recalling device, which has its reply) as Output{PT_MESSAGE,
 * MessageSend}: from presence, or on PostgreSQL from res->targets. Call
 * after the commit; touches no database. Does nothing when
 * w->push or w->presence is NULL.
 */
void recall_push(struct wctx *w, const struct recall_result *res, int64_t exclude_device);

/* Frees what res owns and zeroes it. NULL is a no-op. */
void recall_result_free(struct recall_result *res);

/*
 * The handler side shared by PT_RECALL (handle_recall.c) and PT_ADMIN_RECALL
 * (handle_admin_recall.c), which differ only in their input and who acts.
 *
 * recall_request_write: recall_apply() inside the writer's transaction, its
 * result kept in r->scratch (allocated here); a failure is r's error "<what>:
 * <why>"; the reply is a RecallOutput. A first recall's RecallOutput is all
 * defaults, which proto3 encodes as no bytes: that reply has no data at all.
 * recall_request_committed: counts the recall and pushes its notices to every
 * device but exclude_device (nothing for a repeated recall).
 * recall_request_cleanup: the handler's cleanup(); frees r->scratch.
 */
struct request;
gim_err recall_request_write(struct request *r, struct wctx *w, int64_t actor_user,
                             int64_t actor_device, int64_t user_id, int64_t seq, bool admin,
                             const char *what);
void recall_request_committed(struct request *r, struct wctx *w, int64_t exclude_device);
void recall_request_cleanup(struct request *r);

#endif
