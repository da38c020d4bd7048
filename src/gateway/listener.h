/*
 * listener: one configured client listener (tcp://, tls+tcp://, ws://,
 * wss://) on nng's stream API, accepting connections into conn.
 *
 * WebSocket listeners run in nng's message mode ("ws:msgmode": one receive
 * = one whole binary message), accept any Origin and no subprotocol, and
 * refuse text frames (nng closes such a connection with 1003). On their
 * HTTP server the listener also serves the web client: web.root at /demo/,
 * web.proto_dir at /proto/, and "/" redirects to /demo/. (nng 1.5.2: a
 * directory handler at "/" would claim the ws path too.)
 *
 * Ownership: listener_open's *out is the caller's (listener_close).
 */
#ifndef GIM_LISTENER_H
#define GIM_LISTENER_H

#include <stddef.h>

#include "err.h"
#include "gw_config.h"

struct listener;

gim_err listener_open(struct listener **out, const struct gw_config *cfg, unsigned index,
                      char *errbuf, size_t errlen);
/* Stops accepting (connections already accepted stay open) and frees. */
void listener_close(struct listener *l);

#endif
