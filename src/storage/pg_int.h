/*
 * pg_int: helpers the PostgreSQL backend's areas share (src/storage/pg_*.c).
 *
 * Not part of the storage interface: only the backend's own files (and,
 * until they move behind operations, the modules that still read message
 * rows themselves: room.c, recall.c) include it. Message rows are selected
 * as MESSAGE_COLUMNS, the one column list of both backends (sqlite_int.h),
 * and decoded from binary results (pgstore.h) by message_from_pgrow().
 */
#ifndef GIM_STORAGE_PG_INT_H
#define GIM_STORAGE_PG_INT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "message.h"
#include "storage/sqlite_int.h" /* MESSAGE_COLUMNS */

/* message_from_row() of row `row` of a binary PostgreSQL result. */
struct message_view *message_from_pgrow(const PGresult *res, int row, int col, int64_t seq,
                                        struct arena *a);

/*
 * message_page_rows() (message.h) over res: a binary result of a seq and
 * MESSAGE_COLUMNS per row, page_size + 1 rows at most; same encoding, same
 * budget, same has_more as message_page().
 */
gim_err message_page_pg(const PGresult *res, size_t page_size, size_t max_bytes, uint8_t **buf,
                        size_t *len);

#endif
