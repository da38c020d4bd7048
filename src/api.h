/*
 * api: the business API, HTTP/JSON on nng's HTTP server at api.listen (off
 * by default; https:// with api.cert_file and api.key_file).
 *
 * It is a second front door to the same request path as the nng REP socket:
 * each HTTP request is matched against apiroute's table, its JSON becomes
 * the operator request's protobuf input (bearer token and Idempotency-Key
 * included), packed in a GatewayRequest and handed to dispatch_begin(),
 * exactly as server.c does with a gateway's bytes. So the operator check,
 * the idempotency, the durability before the reply and "a failure changes
 * nothing" are the handlers' own, the same over both transports. The
 * Output's code and data then become the HTTP status and the JSON answer;
 * errors are {"code": "EC_...", "message": "..."}.
 *
 * Threads: nng's HTTP callback never blocks. It matches the route, checks
 * the Content-Length against api.max_body_bytes (a larger body is refused
 * with 413 before a byte of it is read), reads the body with an aio of its
 * own and queues the call for one of api.workers threads, each with its own
 * read-only connection (reads such as GET /v1/groups/{id} run there). A
 * write goes to the writer; the writer's completion answers it. Until then
 * nng's handler aio stays open, so every keep-alive connection can have a
 * request in flight and the writer commits them in groups. Writes admitted
 * at once are capped at writer.max_queued, as on the nng socket; beyond
 * that, 503 EC_UNAVAILABLE.
 *
 * The structures in api_opts are borrowed and must outlive api_stop(),
 * which answers every request in flight (so the writer must still run),
 * then stops the server. A stop begins with api_close(): from then on a new
 * request is answered 503 EC_UNAVAILABLE, and every answer is written by
 * gim-logic itself, the connection closed after it, so that stopping nng's
 * server (which drops its connections at once) cuts none of them.
 */
#ifndef GIM_API_H
#define GIM_API_H

#include <stddef.h>

#include "err.h"
#include "writer.h"

struct gim_config;
struct metrics;
struct presence;

struct api_opts {
    const struct gim_config *cfg;
    struct presence *presence;
    struct writer *writer;
    struct metrics *metrics; /* may be NULL */
    struct gim_clock clock;
};

struct api;

/* On success *out is owned by the caller (api_stop); *out is NULL when api.listen is "". */
gim_err api_start(struct api **out, const struct api_opts *o, char *errbuf, size_t errlen);

/* Refuses new requests (503), answers those in flight, stops the server and frees it. */
void api_stop(struct api *a);

/*
 * The first step of api_stop(), for a stop that fails writes before it waits
 * for them (main.c): answers given from now on are each delivered before the
 * server stops. Idempotent; NULL is a no-op.
 */
void api_close(struct api *a);

#endif
