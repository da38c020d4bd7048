/* Temporary: handlers whose issues are in progress answer EC_BAD_REQUEST. */
#include "handlers.h"

static gim_err not_yet(struct request *r)
{
    return request_fail(r, GIM_EBADREQ, "package type %d is not served yet", r->type);
}

const struct handler handle_room = {PB__PACKAGE_TYPE__PT_SUBSCRIBE_ROOM, "room", true, not_yet, NULL, NULL, NULL, NULL};
