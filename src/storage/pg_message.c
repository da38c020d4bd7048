/* The message operations on postgres (storage.h). */
#include "storage.h"

const struct storage_message_ops storage_pg_message = {0};
