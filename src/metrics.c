#include "metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#include "err.h"
#include "proto.h"

/*
 * Slot i counts the i-th value of the PackageType descriptor (sorted by
 * number), so every type, PT_ADMIN_* included, has its own label however
 * far apart the numbers are. Slot 0 is PT_UNKNOWN (proto3 puts 0 first); it
 * also takes values that are not in the enum, hence its label "other". A
 * value appended beyond TYPES - 1 would fall into "other" too: test_metrics
 * checks that every one fits.
 */
#define TYPES         32
#define CODES         9 /* wire codes EC_OK..EC_INTERNAL */
#define LAT_BUCKETS   12
#define BATCH_BUCKETS 10

/* Upper bounds of the latency histogram, in microseconds. */
static const int64_t lat_bounds_us[LAT_BUCKETS] = {100,   250,   500,   1000,   2500,   5000,
                                                   10000, 25000, 50000, 100000, 250000, 1000000};
static const int batch_bounds[BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

struct metrics {
    _Atomic uint64_t requests[TYPES][CODES];
    _Atomic uint64_t lat[LAT_BUCKETS + 1];
    _Atomic uint64_t lat_sum_us;
    _Atomic uint64_t rejected;
    _Atomic uint64_t batches[BATCH_BUCKETS + 1];
    _Atomic uint64_t batch_jobs;
    _Atomic uint64_t batch_retries;
    _Atomic uint64_t commit_lat[LAT_BUCKETS + 1];
    _Atomic uint64_t commit_sum_us;
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

int metrics_type_slot(int type)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&pb__package_type__descriptor, type);
    ptrdiff_t i = v ? v - pb__package_type__descriptor.values : 0;
    return i > 0 && i < TYPES ? (int)i : 0;
}

/* One duration into a histogram of lat_bounds_us buckets and its sum. */
static void count_duration(_Atomic uint64_t *buckets, _Atomic uint64_t *sum_us, int64_t dur_ns)
{
    int64_t us = dur_ns / 1000;
    int b = 0;
    while (b < LAT_BUCKETS && us > lat_bounds_us[b])
        b++;
    INC(buckets[b], 1);
    INC(*sum_us, (uint64_t)(us > 0 ? us : 0));
}

void metrics_request(struct metrics *m, int type, int code, int64_t dur_ns)
{
    if (!m)
        return;
    int slot = metrics_type_slot(type);
    if (code < 0 || code >= CODES)
        code = CODES - 1;
    INC(m->requests[slot][code], 1);
    count_duration(m->lat, &m->lat_sum_us, dur_ns);
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

void metrics_commit(struct metrics *m, int64_t dur_ns)
{
    if (m)
        count_duration(m->commit_lat, &m->commit_sum_us, dur_ns);
}

void metrics_batch_retry(struct metrics *m)
{
    if (m)
        INC(m->batch_retries, 1);
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

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *out, const char *name, const char *help, uint64_t v)
{
    family(out, name, "counter", help);
    fprintf(out, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(FILE *out, const char *name, const char *help, int64_t v)
{
    family(out, name, "gauge", help);
    fprintf(out, "%s %lld\n", name, (long long)v);
}

/* The label of slot t in buf: the PackageType's name, or "other" (slot 0). */
static void type_label(int t, char *buf, size_t len)
{
    const ProtobufCEnumDescriptor *d = &pb__package_type__descriptor;
    if (t > 0 && (unsigned)t < d->n_values)
        snprintf(buf, len, "%s", d->values[t].name);
    else
        snprintf(buf, len, "other");
}

static void write_requests(struct metrics *m, FILE *out)
{
    char label[64];
    family(out, "gim_requests_total", "counter",
           "Requests answered, by PackageType and wire code.");
    for (int t = 0; t < TYPES; t++) {
        type_label(t, label, sizeof label);
        /* Slots past the enum's values are never counted into: no label to show. */
        bool known = t > 0 && (unsigned)t < pb__package_type__descriptor.n_values;
        if (t > 0 && !known)
            continue;
        for (int c = 0; c < CODES; c++) {
            uint64_t v = m ? LOAD(m->requests[t][c]) : 0;
            /* Known types always show EC_OK so that rate() has a series from the start. */
            if (v == 0 && !(known && c == 0))
                continue;
            fprintf(out, "gim_requests_total{type=\"%s\",code=\"%s\"} %llu\n", label,
                    gim_err_name((gim_err)c), (unsigned long long)v);
        }
    }
}

/*
 * A histogram of durations in lat_bounds_us buckets (NULL: all zero). The
 * buckets are read once so that the cumulative counts and _count agree.
 */
static void write_durations(FILE *out, const char *name, const char *help,
                            _Atomic uint64_t *buckets, _Atomic uint64_t *sum_us)
{
    uint64_t cum = 0;
    family(out, name, "histogram", help);
    for (int b = 0; b <= LAT_BUCKETS; b++) {
        cum += buckets ? LOAD(buckets[b]) : 0;
        if (b < LAT_BUCKETS)
            fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, (double)lat_bounds_us[b] / 1e6,
                    (unsigned long long)cum);
        else
            fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    fprintf(out, "%s_sum %.6f\n", name, (double)(sum_us ? LOAD(*sum_us) : 0) / 1e6);
    fprintf(out, "%s_count %llu\n", name, (unsigned long long)cum);
}

static void write_batches(struct metrics *m, FILE *out)
{
    uint64_t cum = 0;
    family(out, "gim_write_batch_size", "histogram", "Requests per write transaction.");
    for (int b = 0; b <= BATCH_BUCKETS; b++) {
        cum += m ? LOAD(m->batches[b]) : 0;
        if (b < BATCH_BUCKETS)
            fprintf(out, "gim_write_batch_size_bucket{le=\"%d\"} %llu\n", batch_bounds[b],
                    (unsigned long long)cum);
        else
            fprintf(out, "gim_write_batch_size_bucket{le=\"+Inf\"} %llu\n",
                    (unsigned long long)cum);
    }
    fprintf(out, "gim_write_batch_size_sum %llu\n",
            (unsigned long long)(m ? LOAD(m->batch_jobs) : 0));
    fprintf(out, "gim_write_batch_size_count %llu\n", (unsigned long long)cum);
}

void metrics_write(struct metrics *m, const struct metrics_gauges *g, FILE *out)
{
    write_requests(m, out);
    write_durations(out, "gim_request_duration_seconds",
                    "Time from a request's arrival to its reply, writes included.",
                    m ? m->lat : NULL, m ? &m->lat_sum_us : NULL);
    counter(out, "gim_requests_rejected_total",
            "Requests that were not a decodable GatewayRequest (nng 1.5.2 drops oversized ones "
            "without telling).",
            m ? LOAD(m->rejected) : 0);
    write_batches(m, out);
    write_durations(out, "gim_write_commit_seconds",
                    "Time a write transaction's COMMIT took: on SQLite the WAL's write and sync "
                    "(the disk's flush) and any checkpoint the writer ran in it; on PostgreSQL "
                    "the round trip.",
                    m ? m->commit_lat : NULL, m ? &m->commit_sum_us : NULL);
    counter(out, "gim_write_batch_retries_total",
            "Write transactions run again after a deadlock or serialization failure "
            "(PostgreSQL only).",
            m ? LOAD(m->batch_retries) : 0);
    counter(out, "gim_messages_stored_total", "Messages stored (user and group sends).",
            m ? LOAD(m->messages) : 0);
    counter(out, "gim_inbox_entries_total", "Inbox entries written (one per copy of a message).",
            m ? LOAD(m->inbox_entries) : 0);
    counter(out, "gim_recalls_total", "Messages recalled.", m ? LOAD(m->recalls) : 0);
    if (!g)
        return;
    counter(out, "gim_pushes_published_total", "Delivery messages published to gateways.",
            g->pushes_published);
    counter(out, "gim_pushes_dropped_total",
            "Pushes dropped because the push queue was full (sync still has them).",
            g->pushes_dropped);
    gauge(out, "gim_online_devices", "Devices with a session.", (int64_t)g->online_devices);
    gauge(out, "gim_room_subscriptions", "Sessions subscribed to a room.",
          (int64_t)g->room_subscriptions);
    gauge(out, "gim_database_bytes", "Size of the SQLite database file.", g->database_bytes);
    gauge(out, "gim_wal_bytes", "Size of the SQLite write-ahead log file.", g->wal_bytes);
    gauge(out, "gim_writer_pending_jobs",
          "Write requests at the writer: queued, or in the transaction running now.",
          (int64_t)g->writer_pending);
    counter(out, "gim_writer_checkpoints_total",
            "Times the WAL reached its bound and the writer copied the rest of it back itself, "
            "holding up one batch.",
            g->writer_checkpoints);
    gauge(out, "gim_mmap_chosen_bytes",
          "Bytes of the database file SQLite reads through the process's one mapping "
          "(database.mmap_mb at most; about this much of it is in VmRSS).",
          (int64_t)g->mmap_chosen_bytes);
    counter(out, "gim_mmap_segments_dropped_total",
            "Segments of the mapping that stopped being read through it and left the page "
            "tables.",
            g->mmap_retires);
}
