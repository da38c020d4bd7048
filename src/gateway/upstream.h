/*
 * upstream: the gateway's link to gim-logic for requests, and its lease.
 *
 * One nng REQ socket dials every URL of logic.requests (nng spreads the
 * requests over the live links). Each request runs on its own REQ context
 * with a receive timeout (logic.timeout_ms). Debian's nng 1.5.2 can stop
 * redialing when a link drops during its handshake (docs/protocol.md), so a
 * timeout has every dialer re-created that has no pipe up or whose pipe
 * brought no answer for a while (at most once a second, by a thread of this
 * module's own: never on nng's task threads; a link that answers is never
 * cut under its replies: see upstream.c) and the request is sent again, up
 * to logic.attempts times in all; resending is safe because gim-logic makes
 * retried sends idempotent by (device, request_id).
 *
 * The lease: upstream_start() sends PT_GATEWAY_LEASE{boot_id} until
 * gim-logic answers, then a thread renews it every logic.lease_seconds. It
 * keeps every session of this gateway online (docs/protocol.md, Presence).
 *
 * Ownership: an upreq is the caller's (embedded in a connection or an op);
 * upstream_call takes the request message; the callback receives the reply
 * message (or NULL) and must free it. upstream_inflight() counts calls
 * whose callback has not yet returned, for the SIGTERM drain.
 */
#ifndef GIM_UPSTREAM_H
#define GIM_UPSTREAM_H

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "gw_config.h"

struct upstream;
struct upreq;

/* rv: 0 with reply set, or an nng error (NNG_ETIMEDOUT after every attempt). */
typedef void (*upreq_cb)(struct upreq *r, int rv, nng_msg *reply);

struct upreq {
    struct upstream *up;
    nng_aio *aio;
    nng_ctx ctx;
    bool ctx_open;
    nng_msg *req;  /* a copy kept for resending */
    int state;     /* internal */
    unsigned left; /* attempts left */
    nng_time started;
    upreq_cb cb;
    void *arg;
};

gim_err upstream_open(struct upstream **out, const struct gw_config *cfg, const char *gateway_id,
                      char *errbuf, size_t errlen);
/* Sends the first lease (retrying until gim-logic answers or *stop becomes true) and starts
 * the renewal thread. */
gim_err upstream_start(struct upstream *up, volatile int *stop);
void upstream_close(struct upstream *up);

gim_err upreq_init(struct upreq *r, struct upstream *up, upreq_cb cb, void *arg);
void upreq_fini(struct upreq *r); /* waits for a running callback; not from inside it */

/* Builds the GatewayRequest message: the client's input bytes go in verbatim. */
gim_err upstream_build(struct upstream *up, int64_t user_id, int64_t device_id,
                       const char *client_addr, const uint8_t *input, size_t input_len,
                       nng_msg **out);

/* Starts the request; the callback always runs exactly once (also on failure). */
void upstream_call(struct upreq *r, nng_msg *req);

long upstream_inflight(struct upstream *up);

/* True when gim-logic accepted the lease: then heartbeats need not reach it. */
bool upstream_lease_ok(struct upstream *up);
/* True when the latest lease (or lease attempt) got an answer within 3 intervals. */
bool upstream_healthy(struct upstream *up);

const char *upstream_gateway_id(struct upstream *up);

#endif
