/*
 * push: deliveries to online devices, published to gateways over nng PUB.
 *
 * Each published nng message is the topic "<gateway_id>\n" followed by an
 * encoded pb.Delivery{device_ids, output}. Gateways subscribe to their own
 * topic. Publishing never blocks: PUB drops for a slow subscriber, and sync
 * remains the source of truth. Called only after the commit of what it
 * announces.
 *
 * push_deliver() only copies the sessions and the Output into a queue; a
 * thread of push's own groups them by gateway (a hash table: linear in the
 * sessions) and publishes. So the writer, which calls it after each commit,
 * never waits for a fan-out: a room send to 20,000 devices on 20,000
 * gateways held it ~1 s when grouping was sessions x gateways on its own
 * thread (issue 11, scenario 6). One thread, one FIFO: pushes go out in
 * the order they were made, so each gateway sees them in commit order. The
 * queue is bounded (push.c): past it a push is dropped and counted.
 */
#ifndef GIM_PUSH_H
#define GIM_PUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
#include "proto.h"

struct gim_config;
struct push;

/* Binds every cfg->publish URL and starts the push thread. On success *out is owned by the
 * caller: push_close() publishes what is queued, stops the thread and frees it. */
gim_err push_open(struct push **out, const struct gim_config *cfg, char *errbuf, size_t errlen);
void push_close(struct push *p);

/*
 * Queues out for every session in sessions[0..n) except exclude_device, one
 * Delivery per gateway, published by push's thread after earlier calls'.
 * Copies what it needs: sessions and out stay the caller's. Never blocks
 * (a full queue drops the push). p may be NULL (nothing is published).
 */
void push_deliver(struct push *p, const struct session *sessions, size_t n, int64_t exclude_device,
                  const Pb__Output *out);

/*
 * The one after-commit push path for a pb.Message (a send's copies, a room
 * send, recall notices): look the recipient's sessions up, encode
 * Output{PT_MESSAGE, MessageSend{message}}, push_deliver(). A push_msg keeps
 * its lookup buffer (on the stack up to PUSH_MSG_SESSIONS, then on the heap)
 * and its encoding buffer across the copies of one fan-out, so a send to a
 * group allocates at most a few times, not once per member.
 *
 * Writer thread only (after the commit): only that thread changes presence,
 * so a lookup that did not fit fits on its one retry. Out of memory pushes
 * to the sessions that fit, or drops the push (logged); sync remains the
 * source of truth either way.
 */
#define PUSH_MSG_SESSIONS 32
struct push_msg {
    struct session stack[PUSH_MSG_SESSIONS];
    struct session *ss; /* stack or malloc'ed */
    size_t cap, n;
    uint8_t *buf; /* the encoded Output.data, malloc'ed */
    size_t buf_cap;
};

void push_msg_init(struct push_msg *m);

/* Frees what m holds (not m). */
void push_msg_free(struct push_msg *m);

/* Looks up the sessions of user_id (presence_user_sessions) into m. */
void push_msg_user(struct push_msg *m, struct presence *pr, int64_t user_id);

/*
 * The same from a list of sessions read elsewhere (PostgreSQL: the online
 * devices in the device table, whichever instance they signed in at): the
 * sessions of ss[0..n) whose user is user_id.
 */
void push_msg_user_of(struct push_msg *m, const struct session *ss, size_t n, int64_t user_id);

/* Looks up the sessions subscribed to room_id (presence_room_sessions) into m. */
void push_msg_room(struct push_msg *m, struct presence *pr, int64_t room_id);

/* The same from a list of sessions read elsewhere: those of ss[0..n) in room_id (PostgreSQL). */
void push_msg_room_of(struct push_msg *m, const struct session *ss, size_t n, int64_t room_id);

/*
 * Publishes msg to m's sessions except exclude_device; does nothing (not
 * even encode) when that leaves none. p may be NULL (nothing is published).
 */
void push_msg_send(struct push *p, struct push_msg *m, int64_t exclude_device,
                   const Pb__Message *msg);

/*
 * Tests: while held, push's thread takes no job off the queue (push_deliver() still queues
 * and returns; push_close() publishes everything anyway). Shows that the caller's thread
 * does none of the publishing, without timing it.
 */
void push_hold(struct push *p, bool hold);

/* Waits until everything queued so far is published (tests; push_close does it itself). */
void push_flush(struct push *p);

/* Number of Delivery messages published so far. */
uint64_t push_published(const struct push *p);

/* Number of push_deliver() calls dropped because the queue was full (or memory ran out). */
uint64_t push_dropped(const struct push *p);

#endif
