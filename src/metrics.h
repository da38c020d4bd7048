/*
 * metrics: counters and histograms for /metrics, updated from every thread.
 *
 * All updates are relaxed atomics: cheap on the hot path, and a scrape that
 * races an update is off by at most that update. Every function accepts a
 * NULL metrics (tests and tools that do not export any).
 */
#ifndef GIM_METRICS_H
#define GIM_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct metrics;

/* On success *out is owned by the caller (metrics_free). NULL on out of memory. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/*
 * The counter slot of a PackageType value: one of its own for every value of
 * the enum but PT_UNKNOWN, which shares slot 0 ("other") with numbers that
 * are not in the enum. Exposed for the test that every type has a slot.
 */
int metrics_type_slot(int type);

/* One finished request of PackageType type with wire code code, taking dur_ns. */
void metrics_request(struct metrics *m, int type, int code, int64_t dur_ns);
/* Bytes that were not a GatewayRequest. (Oversized requests are dropped by nng,
 * which in 1.5.2 reports them nowhere: they show only as dropped connections.) */
void metrics_rejected(struct metrics *m);
/* A write transaction of n jobs committed or failed. */
void metrics_batch(struct metrics *m, int n);
/* A write transaction's COMMIT succeeded after dur_ns (a failed one is not counted). */
void metrics_commit(struct metrics *m, int64_t dur_ns);
/* A PostgreSQL write transaction rolled back to run again (deadlock, serialization failure). */
void metrics_batch_retry(struct metrics *m);
/* Stored rows: messages, inbox entries, recalls. */
void metrics_stored(struct metrics *m, uint64_t messages, uint64_t inbox_entries);
void metrics_recall(struct metrics *m);

/* Gauges that live in other modules, sampled by the caller at scrape time. */
struct metrics_gauges {
    uint64_t online_devices;     /* presence sessions */
    uint64_t room_subscriptions; /* of those, subscribed to a room */
    uint64_t pushes_published;   /* push_published() */
    uint64_t pushes_dropped;     /* push_dropped() */
    int64_t database_bytes;      /* size of the database file, -1 = unknown */
    int64_t wal_bytes;           /* size of its -wal file, 0 when absent */
    uint64_t writer_pending;     /* writer_pending() */
    uint64_t writer_checkpoints; /* writer_checkpoints() */
    uint64_t mmap_chosen_bytes;  /* mapvfs_stats(): the mapping's segments in use */
    uint64_t mmap_retires;       /* mapvfs_stats(): segments dropped since the start */
};

/*
 * Writes every counter, histogram and gauge in the Prometheus text format
 * (version 0.0.4), each family with its HELP and TYPE lines. m may be NULL
 * (all counters read 0); g may be NULL (gauges are left out).
 */
void metrics_write(struct metrics *m, const struct metrics_gauges *g, FILE *out);

#endif
