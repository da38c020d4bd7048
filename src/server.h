/*
 * server: the nng REP socket, its contexts and the worker threads.
 *
 * Like nng's async demo, each of cfg->contexts contexts is a small state
 * machine driven by its aio: RECV -> WORK -> SEND -> RECV. The aio callback
 * only hands a received request to the worker thread that owns the context;
 * the worker decodes, authenticates and either answers a read on its own
 * read-only SQLite connection or queues a write to the writer, whose
 * completion sends the reply after the commit. So nng's own threads never
 * block on SQLite, and up to cfg->contexts requests are in flight, which is
 * what lets the writer commit them in groups.
 */
#ifndef GIM_SERVER_H
#define GIM_SERVER_H

#include "dispatch.h"
#include "err.h"

struct gim_config;
struct writer;
struct metrics;

struct server_opts {
    const struct gim_config *cfg;
    struct presence *presence;
    struct writer *writer;
    struct metrics *metrics; /* may be NULL */
    struct gim_clock clock;
};

struct server;

/*
 * Opens the REP socket, listens on every cfg->listen URL (logging each),
 * opens one read-only connection per worker and starts serving. On success
 * *out is owned by the caller (server_stop). On failure errbuf says which URL
 * or database failed.
 */
gim_err server_start(struct server **out, const struct server_opts *o, char *errbuf, size_t errlen);

/*
 * Stops receiving, lets in-flight requests finish (writes included, so the
 * writer must still be running), then closes the socket and the workers'
 * connections and frees the server.
 */
void server_stop(struct server *s);

/* True when every listen URL is bound (for /healthz). */
int server_bound(const struct server *s);

#endif
