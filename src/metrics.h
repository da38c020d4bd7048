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

/* One finished request of PackageType type with wire code code, taking dur_ns. */
void metrics_request(struct metrics *m, int type, int code, int64_t dur_ns);
/* A request nng refused for its size, or bytes that were not a GatewayRequest. */
void metrics_rejected(struct metrics *m);
/* A write transaction of n jobs committed or failed. */
void metrics_batch(struct metrics *m, int n);
/* Stored rows: messages, inbox entries, recalls. */
void metrics_stored(struct metrics *m, uint64_t messages, uint64_t inbox_entries);
void metrics_recall(struct metrics *m);

#endif
