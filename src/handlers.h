/*
 * handlers: one file per protocol action (handle_<action>.c), each defining
 * the struct handler that dispatch's table points at.
 */
#ifndef GIM_HANDLERS_H
#define GIM_HANDLERS_H

#include "request.h"

extern const struct handler handle_signin;    /* PT_SIGN_IN */
extern const struct handler handle_sync;      /* PT_SYNC */
extern const struct handler handle_heartbeat; /* PT_HEARTBEAT */
extern const struct handler handle_message;   /* PT_MESSAGE */
extern const struct handler handle_room;      /* PT_SUBSCRIBE_ROOM */
extern const struct handler handle_ack;       /* PT_MESSAGE_ACK; also gim's PT_MESSAGE ack form */
extern const struct handler handle_recall;    /* PT_RECALL */
extern const struct handler handle_signout;   /* PT_SIGN_OUT */
extern const struct handler handle_admin_recall; /* PT_ADMIN_RECALL */
extern const struct handler handle_lease;        /* PT_GATEWAY_LEASE */

#endif
