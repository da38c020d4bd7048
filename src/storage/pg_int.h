/*
 * pg_int: helpers the PostgreSQL backend's areas share (src/storage/pg_*.c).
 *
 * Not part of the storage interface: only the backend's own files include
 * it. Message rows are selected as MESSAGE_COLUMNS, the one column list of
 * both backends (sqlite_int.h), and decoded from binary results (pgstore.h)
 * by message_from_pgrow(); lists of ids travel as one bigint[] parameter
 * (pg_array_literal()). Implemented in pg_int.c (and the message row
 * helpers in pg_message.c).
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

/*
 * ids[0..n) as a PostgreSQL array literal, "{1,2,3}", for a bigint[]
 * parameter sent as text (one statement for any number of ids). *out is
 * malloc'ed; the caller frees it. GIM_ENOMEM.
 */
gim_err pg_array_literal(const int64_t *ids, size_t n, char **out);

/*
 * The gateway_id at (row, col) of a binary result into dst (PRESENCE_GATEWAY_MAX + 1 bytes,
 * presence.h), cut to PRESENCE_GATEWAY_MAX; "" when NULL.
 */
void pg_gateway(char *dst, const PGresult *res, int row, int col);

/*
 * A session read from a row of the device table: device_id, user_id, gateway_id, room_id at
 * columns col..col+3 of row `row` into *t (its other fields zeroed).
 */
struct session;
void pg_session(struct session *t, const PGresult *res, int row, int col);

#endif
