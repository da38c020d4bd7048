/*
 * PT_HEARTBEAT: keeps a session alive. Dispatch already did the work when it
 * authenticated the request (presence_check refreshes last_seen), so the
 * handler has no prepare(), read() or write(): dispatch replies at once, and
 * a heartbeat never touches the database (the device table mirrors sign-in
 * and sign-out, not every heartbeat). Input.data, if any, is ignored.
 */
#include "handlers.h"

const struct handler handle_heartbeat = {
    .type = PB__PACKAGE_TYPE__PT_HEARTBEAT,
    .name = "heartbeat",
    .needs_session = true,
};
