/*
 * gw_metrics: the gateway's counters, gauges and the latency histogram of
 * requests to gim-logic, written as Prometheus text by gw_http.
 *
 * Everything is a relaxed atomic: any thread may bump any counter, and a
 * scrape reads a near-consistent snapshot. The one instance lives for the
 * whole process (gwm_global).
 */
#ifndef GIM_GW_METRICS_H
#define GIM_GW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

enum gwm_transport { GWM_TCP = 0, GWM_TLS, GWM_WS, GWM_WSS, GWM_NTRANSPORTS };

/* Why a connection was closed (label of gim_gateway_closes_total). */
enum gwm_close {
    GWM_CLOSE_PEER = 0,  /* the client closed or the socket failed */
    GWM_CLOSE_IDLE,      /* no frame for conn.idle_seconds */
    GWM_CLOSE_SLOW,      /* write queue over its hard limit or a send stalled */
    GWM_CLOSE_BAD_FRAME, /* oversized or malformed framing */
    GWM_CLOSE_REPLACED,  /* the device signed in again on another connection */
    GWM_CLOSE_KICKED,    /* gim-logic ended the session (PT_SIGN_OUT delivery) */
    GWM_CLOSE_SHUTDOWN,  /* SIGTERM */
    GWM_NCLOSE
};

#define GWM_NBUCKETS 12

struct gw_metrics {
    atomic_long connections[GWM_NTRANSPORTS]; /* gauge */
    atomic_long accepted[GWM_NTRANSPORTS];
    atomic_long closes[GWM_NCLOSE];
    atomic_long signed_in; /* gauge: connections with a session */
    atomic_long frames_in, frames_out;
    atomic_long replies_suppressed; /* seed-form acks: forwarded, reply not sent */
    atomic_long refused_local;      /* answered by the gateway itself with an error */
    atomic_long heartbeats_local;
    atomic_long pushes_received, pushes_delivered, pushes_dropped, pushes_unknown_device;
    atomic_long frames_too_large; /* replies/pushes that did not fit the framing */
    atomic_long upstream_requests, upstream_errors, upstream_timeouts, upstream_redials;
    atomic_long latency_bucket[GWM_NBUCKETS]; /* cumulative at write time, not here */
    atomic_long latency_sum_us;
    atomic_long leases_ok, leases_failed;
    atomic_long last_lease_ok_ms; /* wall clock of the latest EC_OK lease, 0 = never */
    atomic_long lease_supported;  /* 1 when gim-logic accepted the lease */
};

extern struct gw_metrics gwm_global;

/* Records one request's latency to gim-logic. */
void gwm_latency(int64_t us);
void gwm_write(FILE *out);
const char *gwm_transport_name(enum gwm_transport t);

#endif
