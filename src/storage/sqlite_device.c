/* The device operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_device_ops storage_sqlite_device = {0};
