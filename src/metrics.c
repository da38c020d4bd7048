#include "metrics.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "proto.h"

#define TYPES 16 /* PackageType values we count individually; the rest go to slot 0 */
#define CODES 9  /* wire codes EC_OK..EC_INTERNAL */
#define LAT_BUCKETS 12
#define BATCH_BUCKETS 10

/* Upper bounds of the latency histogram, in microseconds. */
static const int64_t lat_bounds_us[LAT_BUCKETS] = {100,   250,   500,    1000,   2500,   5000,
                                                   10000, 25000, 50000, 100000, 250000, 1000000};
static const int batch_bounds[BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

struct metrics {
    _Atomic uint64_t requests[TYPES][CODES];
    _Atomic uint64_t lat[LAT_BUCKETS + 1];
    _Atomic uint64_t lat_sum_us;
    _Atomic uint64_t rejected;
    _Atomic uint64_t batches[BATCH_BUCKETS + 1];
    _Atomic uint64_t batch_jobs;
    _Atomic uint64_t messages, inbox_entries, recalls;
};

struct metrics *metrics_new(void)
{
    return calloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    free(m);
}

#define INC(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)

void metrics_request(struct metrics *m, int type, int code, int64_t dur_ns)
{
    if (!m)
        return;
    if (type < 0 || type >= TYPES)
        type = 0;
    if (code < 0 || code >= CODES)
        code = CODES - 1;
    INC(m->requests[type][code], 1);
    int64_t us = dur_ns / 1000;
    int b = 0;
    while (b < LAT_BUCKETS && us > lat_bounds_us[b])
        b++;
    INC(m->lat[b], 1);
    INC(m->lat_sum_us, (uint64_t)(us > 0 ? us : 0));
}

void metrics_rejected(struct metrics *m)
{
    if (m)
        INC(m->rejected, 1);
}

void metrics_batch(struct metrics *m, int n)
{
    if (!m)
        return;
    int b = 0;
    while (b < BATCH_BUCKETS && n > batch_bounds[b])
        b++;
    INC(m->batches[b], 1);
    INC(m->batch_jobs, (uint64_t)n);
}

void metrics_stored(struct metrics *m, uint64_t messages, uint64_t inbox_entries)
{
    if (!m)
        return;
    INC(m->messages, messages);
    INC(m->inbox_entries, inbox_entries);
}

void metrics_recall(struct metrics *m)
{
    if (m)
        INC(m->recalls, 1);
}
