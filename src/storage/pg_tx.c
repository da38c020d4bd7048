/* The tx operations on postgres (storage.h). */
#include "storage.h"

const struct storage_tx_ops storage_pg_tx = {0};
