/* The group operations on postgres (storage.h). */
#include "storage.h"

const struct storage_group_ops storage_pg_group = {0};
