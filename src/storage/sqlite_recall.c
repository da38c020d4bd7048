/* The recall operations on sqlite (storage.h). */
#include "storage.h"

const struct storage_recall_ops storage_sqlite_recall = {0};
