/*
 * server: the nng REP socket, its contexts and the worker threads.
 *
 * Like nng's async demo, each of cfg->contexts contexts is a small state
 * machine driven by its aio: RECV -> WORK -> SEND -> RECV. The aio callback
 * only hands a received request to a worker thread: an idle one if any, else
 * the first to finish (no context belongs to a worker, so a slow read delays
 * only its own request); the worker decodes, authenticates and either answers a read on its own
 * read-only SQLite connection or queues a write to the writer; after the
 * commit the writer hands the write to the replier, a thread of the server's
 * that sends the writes' replies in commit order (so the writer never waits
 * for the REP socket's lock; server.c). So nng's own threads never
 * block on SQLite, and many requests are in flight, which is what lets the
 * writer commit them in groups.
 *
 * Admission: there are cfg->contexts + cfg->writer.max_queued contexts, and
 * at most writer.max_queued writes are admitted at once (a write beyond it is
 * answered EC_UNAVAILABLE at once). A write holds its context until its
 * commit, which can take busy_timeout_ms per batch when another process
 * holds the database; so whatever the writes do, cfg->contexts contexts stay
 * free to receive reads (sync, heartbeat) and to refuse further writes. A cap
 * within cfg->contexts would have refused writes of a healthy server under a
 * burst; extra contexts for the parked writes keep the writes' concurrency.
 * (server.c explains the alternatives.)
 */
#ifndef GIM_SERVER_H
#define GIM_SERVER_H

#include "clock.h"
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
 * Stops receiving, lets every request already received be answered (writes
 * included, so the writer must still be running; call writer_stop_waiting()
 * first so that none waits for a lock), then closes the socket and the
 * workers' connections and frees the server. Nothing is freed while a
 * context, a worker, the writer or an nng callback can still touch it: the
 * server moves RUNNING -> DRAINING -> CLOSED on a condition variable that the
 * last busy context signals. Worst case: the work of the requests already
 * admitted, none of them waiting for a lock, plus 5 s for a reply that its
 * gateway does not read (docs/reliability.md, "Stopping").
 */
void server_stop(struct server *s);

/* True when every listen URL is bound (for /healthz). */
int server_bound(const struct server *s);

#endif
