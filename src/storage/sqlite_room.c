/* The room operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_room_ops storage_sqlite_room = {0};
