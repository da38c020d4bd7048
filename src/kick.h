/*
 * kick: ending a device's session on an operator's order (PT_ADMIN_KICK),
 * and for every device of a user being erased (erasure.c).
 *
 * Two steps, like a sign-out: kick_apply() inside the writer's transaction
 * records the device offline (or the caller deletes its row), and after the
 * commit kick_committed() drops the in-memory session and tells the device's
 * gateway to close the connection. The gateway contract (docs/protocol.md,
 * Push): a Delivery{device_ids = [D], output = Output{type = PT_SIGN_OUT,
 * code = EC_UNAUTHENTICATED, message = KICK_MESSAGE}} on the gateway's topic;
 * the gateway forwards that Output to the client and closes the connection
 * without sending PT_SIGN_OUT back.
 *
 * PostgreSQL (several instances): the device row is locked and read in the
 * transaction, and the gateway told is the row's (whichever instance signed
 * the device in; gateways subscribe to every instance). Other instances
 * that cached the session stop serving it within PRESENCE_RECHECK_MS
 * (presence_check_shared re-reads the row and finds it offline).
 */
#ifndef GIM_KICK_H
#define GIM_KICK_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "presence.h"
#include "wctx.h"

#define KICK_MESSAGE "signed out by an operator"

/* A device being signed out, as its row had it before the kick. */
struct kick_target {
    int64_t device_id;
    int64_t user_id;
    bool was_online;
    char gateway_id[PRESENCE_GATEWAY_MAX + 1]; /* "" = it never signed in anywhere */
};

/*
 * Inside the writer's transaction: reads device_id's row into *t and marks it
 * offline (online = 0, room_id = 0). GIM_ENOTFOUND when the device has no row
 * (it never signed in), else GIM_OK or a storage error; nothing else is
 * written.
 */
gim_err kick_apply(struct wctx *w, int64_t device_id, struct kick_target *t);

/*
 * After the commit, on the writer thread: removes the device's session (if
 * it still has one) and publishes the sign-out Delivery to the gateway that
 * held it (its session's, else t->gateway_id; none when both are empty).
 * Touches no database.
 */
void kick_committed(struct wctx *w, const struct kick_target *t);

#endif
