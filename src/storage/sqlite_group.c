/* The group operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_group_ops storage_sqlite_group = {0};
