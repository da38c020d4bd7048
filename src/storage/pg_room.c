/* The room operations on postgres (storage.h). */
#include "storage.h"

const struct storage_room_ops storage_pg_room = {0};
