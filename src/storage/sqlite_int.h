/*
 * sqlite_int: helpers the SQLite backend's areas share (src/storage/sqlite_*.c).
 *
 * Not part of the storage interface: only the backend's own files, and
 * the readers of the file that decode message rows or read seq counters
 * themselves (gimctl's read and admin commands, tools/gimctl_read.c and
 * gimctl_admin.c; tests/test_recall.c), include it.
 * Message rows are
 * read the same way everywhere: select MESSAGE_COLUMNS (from table alias m)
 * and decode them with message_from_row(), so the mapping lives here once.
 * The column list is the PostgreSQL backend's too (pg_int.h).
 */
#ifndef GIM_STORAGE_SQLITE_INT_H
#define GIM_STORAGE_SQLITE_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "message.h"

/* The columns message_from_row() expects, in order, from table alias m. */
#define MESSAGE_COLUMNS                                                                            \
    "m.sender_type, m.sender_id, m.sender_device_id, m.receiver_type, m.receiver_id, "             \
    "m.to_user_ids, m.message_type, m.content, m.send_time, m.status"
#define MESSAGE_NCOLUMNS 10

/*
 * User ?1's last seq, as the writer loads it: the larger of user_seq, the
 * floor that deleting inbox rows raises, and the user's last inbox entry
 * (migrations/0008_seq_floor.sql). Two seeks, where the view user_last_seq
 * would read every inbox.
 */
#define SQL_USER_LAST_SEQ                                                                          \
    "SELECT max(coalesce((SELECT seq FROM user_seq WHERE user_id = ?1), 0), "                      \
    "coalesce((SELECT max(seq) FROM inbox WHERE user_id = ?1), 0))"

/*
 * Fills a message_view from the row st is on, reading MESSAGE_COLUMNS from
 * column col; seq is the copy's seq. Blobs are copied into a (so the view
 * survives the next step). Returns NULL when a is full.
 */
struct message_view *message_from_row(sqlite3_stmt *st, int col, int64_t seq, struct arena *a);

/*
 * message_page_rows() (message.h) over a statement: st is bound and not yet
 * stepped; its rows are a seq followed by MESSAGE_COLUMNS, in ascending seq,
 * page_size + 1 of them at most. A failed step returns store_err() of it;
 * st is left for the caller to store_done().
 */
gim_err message_page(sqlite3_stmt *st, size_t page_size, size_t max_bytes, uint8_t **buf,
                     size_t *len);

#endif
