/* The recall operations on postgres (storage.h). */
#include "storage.h"

const struct storage_recall_ops storage_pg_recall = {0};
