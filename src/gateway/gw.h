/*
 * gw: what the gateway's modules share, created once by main.
 *
 * Borrowed pointers: main owns them and keeps them alive until every
 * connection has been freed (conn_wait_freed).
 */
#ifndef GIM_GW_H
#define GIM_GW_H

#include <stdatomic.h>

struct gw_config;
struct upstream;
struct registry;

struct gw {
    const struct gw_config *cfg;
    struct upstream *up;
    struct registry *reg;
};

#endif
