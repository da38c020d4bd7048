/* The tx operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_tx_ops storage_sqlite_tx = {0};
