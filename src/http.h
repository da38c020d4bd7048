/*
 * http: the operator's HTTP endpoint, on nng's built-in HTTP server.
 *
 * GET /metrics answers in the Prometheus text format; GET /healthz answers
 * 200 "ok" when the database is writable and the sockets are bound, 503 with
 * a one-line reason otherwise. Disabled when cfg->http is "".
 *
 * Handlers run on nng's threads and only read: the counters (atomics), the
 * presence counts (its lock), the writer's pending jobs (an atomic), file
 * sizes, and a write-lock probe on a connection of their own (the writer's is
 * not thread-safe), which waits at most 100 ms. The structures in http_opts are borrowed: they must
 * outlive http_stop(), which waits for running handlers.
 */
#ifndef GIM_HTTP_H
#define GIM_HTTP_H

#include <stddef.h>

#include "err.h"

struct gim_config;
struct metrics;
struct presence;
struct storage_ops;
struct server;
struct push;
struct writer;

struct http_opts {
    const struct gim_config *cfg;
    struct metrics *metrics;
    struct presence *presence;
    struct server *server;
    struct push *push;
    struct writer *writer; /* NULL: no writer gauge */
    /* The database's backend (storage(db), storage.h): its health probe. */
    const struct storage_ops *storage;
};

struct http;

/* On success *out is owned by the caller (http_stop); *out is NULL when disabled. */
gim_err http_start(struct http **out, const struct http_opts *o, char *errbuf, size_t errlen);
void http_stop(struct http *h);

#endif
