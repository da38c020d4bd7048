/*
 * registry: which connection is each device's current one, and the queue
 * that serializes a device's sign-ins and sign-outs.
 *
 * A device (device ids are globally unique) has at most one current
 * connection on this gateway. A successful sign-in makes its connection
 * current and hands back the one it replaced (closed by the caller without
 * a sign-out). Sign-ins and sign-outs of one device run one at a time: each
 * is a devop, started when the device is free and finished with
 * registry_done(); others wait in FIFO order. That keeps a closing
 * connection's PT_SIGN_OUT from overtaking a new PT_SIGN_IN of the same
 * device in gim-logic.
 *
 * Connections are opaque here: the registry holds one reference on each
 * current connection through the hooks given to registry_open (ref/unref),
 * and identifies them by their unique id (never by address, which can be
 * reused). Thread-safe; callbacks (devop start) run without the lock held.
 */
#ifndef GIM_REGISTRY_H
#define GIM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct conn;
struct registry;

struct devop {
    struct devop *next;
    void (*start)(struct devop *op); /* must end in registry_done() for the same device */
};

struct registry_hooks {
    void (*ref)(struct conn *c);
    void (*unref)(struct conn *c);
    uint64_t (*id)(const struct conn *c);
};

gim_err registry_open(struct registry **out, const struct registry_hooks *hooks);
void registry_close(struct registry *r);

/* Runs op now (synchronously, in this thread) if the device is free, else queues it. */
void registry_run(struct registry *r, int64_t device_id, struct devop *op);
/* Ends the running op of device_id and starts the next one, if any. */
void registry_done(struct registry *r, int64_t device_id);

/* Makes c the device's current connection; returns the one it replaced (or NULL), with a
 * reference the caller must drop. */
struct conn *registry_set_current(struct registry *r, int64_t device_id, struct conn *c);
/* Removes the device's current connection if its id is conn_id; returns it (caller drops
 * the reference) or NULL when another connection (or none) is current. */
struct conn *registry_take_if(struct registry *r, int64_t device_id, uint64_t conn_id);
/* The current connection with a reference for the caller, or NULL. */
struct conn *registry_get(struct registry *r, int64_t device_id);
size_t registry_count(struct registry *r);

#endif
