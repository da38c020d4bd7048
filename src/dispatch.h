/*
 * dispatch: from a raw request to the handler that serves it.
 *
 * dispatch_begin() decodes the GatewayRequest, authenticates the session
 * (before anything else: an unauthenticated request changes nothing),
 * looks the handler up in the PackageType table and runs prepare() and, for
 * reads, read(). It returns DISPATCH_REPLY when the reply is ready and
 * DISPATCH_WRITE when r->job must go to the writer, whose done() then calls
 * the completion given to dispatch_init.
 */
#ifndef GIM_DISPATCH_H
#define GIM_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "clock.h"
#include "request.h"

struct dispatch {
    const struct gim_config *cfg;
    struct presence *presence;
    struct gim_clock clock;
    struct metrics *metrics; /* may be NULL */
    /* Called on the writer thread after a write request committed (or failed). */
    void (*write_done)(struct request *r);
};

enum dispatch_next { DISPATCH_REPLY, DISPATCH_WRITE };

/* Handles bytes [buf, buf+len) into r (which must be zeroed or reset). */
enum dispatch_next dispatch_begin(const struct dispatch *d, struct request *r, const uint8_t *buf,
                                  size_t len, struct store_conn *ro);

/* The handler for a PackageType, or NULL. */
const struct handler *dispatch_handler(int type);

#endif
