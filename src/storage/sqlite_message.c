/* The message operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_message_ops storage_sqlite_message = {0};
