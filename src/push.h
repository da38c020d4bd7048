/*
 * push: deliveries to online devices, published to gateways over nng PUB.
 *
 * Each published nng message is the topic "<gateway_id>\n" followed by an
 * encoded pb.Delivery{device_ids, output}. Gateways subscribe to their own
 * topic. Publishing never blocks: PUB drops for a slow subscriber, and sync
 * remains the source of truth. Called only after the commit of what it
 * announces.
 */
#ifndef GIM_PUSH_H
#define GIM_PUSH_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
#include "proto.h"

struct gim_config;
struct push;

/* Binds every cfg->publish URL. On success *out is owned by the caller (push_close). */
gim_err push_open(struct push **out, const struct gim_config *cfg, char *errbuf, size_t errlen);
void push_close(struct push *p);

/*
 * Publishes out to every session in sessions[0..n) except exclude_device,
 * one Delivery per gateway. p may be NULL (nothing is published).
 */
void push_deliver(struct push *p, const struct session *sessions, size_t n, int64_t exclude_device,
                  const Pb__Output *out);

/* Number of Delivery messages published so far. */
uint64_t push_published(const struct push *p);

#endif
