/*
 * conn: one client connection (TCP with be16/uvarint framing, or a
 * WebSocket in message mode), its per-connection state machine and its
 * bounded write queue.
 *
 * Reading: frames are cut from the stream as they arrive (a TCP read
 * buffer, or a small ring of WebSocket messages) and handled strictly one
 * at a time: a frame is forwarded to gim-logic only when the previous one
 * has been answered, so pipelined frames are answered in order. Reading
 * pauses while the buffer is full. A read that sees no byte for
 * conn.idle_seconds closes the connection.
 *
 * What the gateway answers itself: PT_HEARTBEAT (while gim-logic holds this
 * gateway's lease; see upstream.h), anything but PT_SIGN_IN/PT_HEARTBEAT
 * before sign-in (EC_UNAUTHENTICATED), PT_SIGN_OUT and types >= 100
 * (EC_FORBIDDEN: gateway/operator only), undecodable frames
 * (EC_BAD_REQUEST). A PT_MESSAGE whose data has no field 1 but a field 2 is
 * gim's seed-era ack (a MessageACK): forwarded, its reply not sent.
 *
 * Writing: one send in flight per connection (TCP sends may complete
 * partially: the rest is sent again). Replies are always queued; past
 * conn.queue_hard_frames/bytes the connection is closed. Pushes past the
 * soft limits are dropped. A send that makes no progress for
 * conn.write_timeout_ms closes the connection.
 *
 * Closing signs the device out of gim-logic (PT_SIGN_OUT) only if this is
 * still the device's current connection (registry.h) and the session was
 * not ended by gim-logic itself.
 *
 * Lifetime: reference counted; the last reference hands the connection to a
 * reaper thread that frees it (nng aios cannot be freed from their own
 * callbacks).
 */
#ifndef GIM_CONN_H
#define GIM_CONN_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "gw.h"
#include "gw_config.h"
#include "gw_metrics.h"

struct conn;

gim_err conn_module_init(struct gw *g);
/* Waits until every connection has been freed, then stops the reaper. */
void conn_module_fini(void);

/* Takes the accepted stream (closed and freed by the connection). */
void conn_accept(nng_stream *s, enum framing f, enum gwm_transport t);

/* Queues an encoded pb.Output pushed by gim-logic. session_end: gim-logic ended the
 * session (PT_SIGN_OUT delivery): the output is sent and then the connection closed
 * without signing out. */
void conn_push(struct conn *c, const uint8_t *output, size_t len, bool session_end);

void conn_ref(struct conn *c);
void conn_unref(struct conn *c);
uint64_t conn_id(const struct conn *c);

/* SIGTERM: stop reading on every connection; each closes (and signs out) once its
 * in-flight request is answered and its queue written. */
void conn_drain_all(void);
/* Closes every connection now (signing out), for the end of the drain period. */
void conn_close_all(void);
long conn_count(void);

#endif
