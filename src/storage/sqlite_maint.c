/* The maint operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_maint_ops storage_sqlite_maint = {0};
