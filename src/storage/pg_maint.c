/* The maint operations on postgres (storage.h). */
#include "storage.h"

const struct storage_maint_ops storage_pg_maint = {0};
