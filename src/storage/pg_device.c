/* The device operations on postgres (storage.h). */
#include "storage.h"

const struct storage_device_ops storage_pg_device = {0};
