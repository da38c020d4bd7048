/*
 * handlers: one file per protocol action, each defining the struct handler
 * that dispatch's table points at. File and handler carry the action's
 * PackageType name: handle_subscribe_room.c defines handle_subscribe_room,
 * which serves PT_SUBSCRIBE_ROOM.
 */
#ifndef GIM_HANDLERS_H
#define GIM_HANDLERS_H

#include "request.h"

extern const struct handler handle_signin;         /* PT_SIGN_IN */
extern const struct handler handle_sync;           /* PT_SYNC */
extern const struct handler handle_heartbeat;      /* PT_HEARTBEAT */
extern const struct handler handle_message;        /* PT_MESSAGE */
extern const struct handler handle_subscribe_room; /* PT_SUBSCRIBE_ROOM */
extern const struct handler handle_message_ack; /* PT_MESSAGE_ACK; also gim's PT_MESSAGE ack form */
extern const struct handler handle_recall;      /* PT_RECALL */
extern const struct handler handle_signout;     /* PT_SIGN_OUT */
extern const struct handler handle_admin_recall;  /* PT_ADMIN_RECALL */
extern const struct handler handle_gateway_lease; /* PT_GATEWAY_LEASE */
extern const struct handler handle_admin_kick;    /* PT_ADMIN_KICK */
extern const struct handler handle_admin_erase;   /* PT_ADMIN_ERASE */

#endif
