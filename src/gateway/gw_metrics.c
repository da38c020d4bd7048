#include "gw_metrics.h"

struct gw_metrics gwm_global;

/* Upper bounds in milliseconds; the last bucket is +Inf. */
static const double bounds_ms[GWM_NBUCKETS - 1] = {0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 500, 2500};

static const char *const close_names[GWM_NCLOSE] = {
    "peer", "idle", "slow_consumer", "bad_frame", "replaced", "kicked", "shutdown"};

const char *gwm_transport_name(enum gwm_transport t)
{
    static const char *const names[GWM_NTRANSPORTS] = {"tcp", "tls", "ws", "wss"};
    return t < GWM_NTRANSPORTS ? names[t] : "?";
}

void gwm_latency(int64_t us)
{
    int b = 0;
    while (b < GWM_NBUCKETS - 1 && (double)us / 1000.0 > bounds_ms[b])
        b++;
    atomic_fetch_add_explicit(&gwm_global.latency_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&gwm_global.latency_sum_us, us, memory_order_relaxed);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void counter(FILE *out, const char *name, const char *help, long v)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s counter\n%s %ld\n", name, help, name, name, v);
}

void gwm_write(FILE *out)
{
    struct gw_metrics *m = &gwm_global;
    fputs("# HELP gim_gateway_connections Open client connections by transport.\n"
          "# TYPE gim_gateway_connections gauge\n",
          out);
    for (int t = 0; t < GWM_NTRANSPORTS; t++)
        fprintf(out, "gim_gateway_connections{transport=\"%s\"} %ld\n", gwm_transport_name(t),
                LOAD(m->connections[t]));
    fputs("# HELP gim_gateway_accepted_total Accepted client connections by transport.\n"
          "# TYPE gim_gateway_accepted_total counter\n",
          out);
    for (int t = 0; t < GWM_NTRANSPORTS; t++)
        fprintf(out, "gim_gateway_accepted_total{transport=\"%s\"} %ld\n", gwm_transport_name(t),
                LOAD(m->accepted[t]));
    fputs("# HELP gim_gateway_closes_total Closed connections by reason.\n"
          "# TYPE gim_gateway_closes_total counter\n",
          out);
    for (int r = 0; r < GWM_NCLOSE; r++)
        fprintf(out, "gim_gateway_closes_total{reason=\"%s\"} %ld\n", close_names[r],
                LOAD(m->closes[r]));
    fprintf(out,
            "# HELP gim_gateway_signed_in Connections holding a session.\n"
            "# TYPE gim_gateway_signed_in gauge\ngim_gateway_signed_in %ld\n",
            LOAD(m->signed_in));
    counter(out, "gim_gateway_slow_consumer_closes_total",
            "Connections closed for a full write queue or a stalled send.",
            LOAD(m->closes[GWM_CLOSE_SLOW]));
    counter(out, "gim_gateway_frames_in_total", "Client frames received.", LOAD(m->frames_in));
    counter(out, "gim_gateway_frames_out_total", "Frames written to clients.", LOAD(m->frames_out));
    counter(out, "gim_gateway_replies_suppressed_total",
            "Seed-form acks forwarded whose reply was not sent.", LOAD(m->replies_suppressed));
    counter(out, "gim_gateway_refused_total",
            "Frames answered by the gateway with an error (unauthenticated, forbidden, "
            "undecodable).",
            LOAD(m->refused_local));
    counter(out, "gim_gateway_heartbeats_local_total", "Heartbeats answered by the gateway.",
            LOAD(m->heartbeats_local));
    counter(out, "gim_gateway_pushes_received_total", "Deliveries received from gim-logic.",
            LOAD(m->pushes_received));
    counter(out, "gim_gateway_pushes_delivered_total", "Pushes queued to a connection.",
            LOAD(m->pushes_delivered));
    counter(out, "gim_gateway_pushes_dropped_total",
            "Pushes dropped: write queue over its soft limit (the client's sync recovers them).",
            LOAD(m->pushes_dropped));
    counter(out, "gim_gateway_pushes_no_connection_total",
            "Pushes for a device with no connection here.", LOAD(m->pushes_unknown_device));
    counter(out, "gim_gateway_frames_too_large_total",
            "Replies or pushes too large for the connection's framing.", LOAD(m->frames_too_large));
    counter(out, "gim_gateway_upstream_requests_total", "Requests sent to gim-logic.",
            LOAD(m->upstream_requests));
    counter(out, "gim_gateway_upstream_errors_total",
            "Requests to gim-logic that got no reply after every attempt.",
            LOAD(m->upstream_errors));
    counter(out, "gim_gateway_upstream_timeouts_total", "Attempts that timed out.",
            LOAD(m->upstream_timeouts));
    counter(out, "gim_gateway_upstream_redials_total", "Re-dials of the gim-logic links.",
            LOAD(m->upstream_redials));
    counter(out, "gim_gateway_leases_total", "Leases gim-logic accepted.", LOAD(m->leases_ok));
    counter(out, "gim_gateway_leases_failed_total", "Leases with no reply or an error.",
            LOAD(m->leases_failed));
    fputs("# HELP gim_gateway_upstream_latency_seconds Request latency to gim-logic.\n"
          "# TYPE gim_gateway_upstream_latency_seconds histogram\n",
          out);
    long cum = 0;
    for (int b = 0; b < GWM_NBUCKETS; b++) {
        cum += LOAD(m->latency_bucket[b]);
        if (b < GWM_NBUCKETS - 1)
            fprintf(out, "gim_gateway_upstream_latency_seconds_bucket{le=\"%g\"} %ld\n",
                    bounds_ms[b] / 1000.0, cum);
        else
            fprintf(out, "gim_gateway_upstream_latency_seconds_bucket{le=\"+Inf\"} %ld\n", cum);
    }
    fprintf(out,
            "gim_gateway_upstream_latency_seconds_sum %.6f\n"
            "gim_gateway_upstream_latency_seconds_count %ld\n",
            (double)LOAD(m->latency_sum_us) / 1e6, cum);
}
