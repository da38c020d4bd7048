/*
 * gw_http: the gateway's operator endpoint on nng's HTTP server (config key
 * http; "" disables it).
 *
 * GET /metrics: Prometheus text (gw_metrics.h) plus gauges of open
 * connections and signed-in devices. GET /healthz: 200 "ok" when every
 * listener is bound and gim-logic answered the gateway within the last
 * three lease intervals, else 503 with the reason.
 *
 * Handlers only read atomics and the upstream's state under one mutex;
 * gwhttp_stop() waits for a running handler, after which none touches the
 * upstream again. The upstream is borrowed and must outlive gwhttp_stop().
 */
#ifndef GIM_GW_HTTP_H
#define GIM_GW_HTTP_H

#include <stddef.h>

#include "err.h"

struct gw_config;
struct upstream;

gim_err gwhttp_start(const struct gw_config *cfg, struct upstream *up, char *errbuf, size_t errlen);
void gwhttp_stop(void);

#endif
