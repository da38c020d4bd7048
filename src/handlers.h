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
/* The business API (handle_admin_group.c, handle_admin_send.c). */
extern const struct handler handle_admin_group_create;   /* PT_ADMIN_GROUP_CREATE */
extern const struct handler handle_admin_group_update;   /* PT_ADMIN_GROUP_UPDATE */
extern const struct handler handle_admin_group_dissolve; /* PT_ADMIN_GROUP_DISSOLVE */
extern const struct handler handle_admin_group_add;      /* PT_ADMIN_GROUP_ADD_MEMBERS */
extern const struct handler handle_admin_group_remove;   /* PT_ADMIN_GROUP_REMOVE_MEMBERS */
extern const struct handler handle_admin_group_role;     /* PT_ADMIN_GROUP_SET_ROLE */
extern const struct handler handle_admin_group_get;      /* PT_ADMIN_GROUP_GET */
extern const struct handler handle_admin_group_members;  /* PT_ADMIN_GROUP_MEMBERS */
extern const struct handler handle_admin_send;           /* PT_ADMIN_SEND */

#endif
