/*
 * seq: per-user and per-room sequence counters, owned by the writer thread.
 *
 * The counter of an inbox (or room log) is loaded from the database on first
 * use and then lives in memory: assigning a seq costs no query. Changes are
 * written back by seq_flush() inside the same transaction as the rows that
 * use them, so a crash can lose only what was never acknowledged and seqs
 * never gap or repeat. On SQLite a user's counter needs no write-back: every
 * seq it hands out is in an inbox row of that transaction, and it loads as
 * the larger of the user's last inbox seq and the user_seq floor that
 * deleting inbox rows raises (migrations/0008_seq_floor.sql); room counters
 * are written back.
 *
 * Savepoints: seq_mark()/seq_rollback() undo the counters a failed request
 * took, so its neighbours in the batch keep their numbers. After a failed
 * commit, seq_reset() forgets everything and counters reload from the
 * database. Not thread-safe: only the writer thread touches it.
 *
 * PostgreSQL: seqs are taken in the database instead, one upsert per seq
 * that row-locks the user's (or room's) counter until the commit, since
 * several instances write at once. The rest is a no-op there.
 *
 * Taking, reading, locking and flushing seqs are the message area's storage
 * operations (storage.h; SQL in storage/sqlite_message.c and pg_message.c);
 * seq_next, seq_last, seq_next_users, seq_lock and seq_flush run them on the
 * connection's backend. This module keeps the in-memory counters, which the
 * SQLite backend reads and fills through seq_cache_*.
 */
#ifndef GIM_SEQ_H
#define GIM_SEQ_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

enum seq_kind { SEQ_USER = 0, SEQ_ROOM = 1 };

struct seq;

/* On success *out is owned by the caller; free with seq_close(). */
gim_err seq_open(struct seq **out);
void seq_close(struct seq *s);

/* Takes the next seq of (kind, id) into *out: last + 1. */
gim_err seq_next(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                 int64_t *out);

/* The highest seq assigned so far to (kind, id), 0 if none. */
gim_err seq_last(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                 int64_t *out);

/*
 * The next seq of each user ids[0..n) (ascending, distinct) into out[0..n):
 * seq_next() of each on SQLite; on PostgreSQL one statement that row-locks
 * the users' counters in ascending id order (a group's fan-out, fanout.c).
 */
gim_err seq_next_users(struct seq *s, struct store_conn *db, const int64_t *ids, size_t n,
                       int64_t *out);

/*
 * PostgreSQL: row-locks the seq rows of ids[0..n) (ascending, distinct) of
 * kind until the commit, in ascending id order, creating the missing ones
 * (seq 0, which reads as "none yet" like a missing row): the writer's lock
 * of a whole batch's rows before its jobs run (writer.c). No-op on SQLite,
 * whose one writer needs no row locks.
 */
gim_err seq_lock(struct store_conn *db, enum seq_kind kind, const int64_t *ids, size_t n);

/*
 * The in-memory counters, for the SQLite backend. A counter not yet cached is
 * read by read() (the stored last seq, 0 if none) on db; flushing hands each
 * changed counter to save(). Their errors are returned as they are.
 */
typedef gim_err (*seq_load_fn)(struct store_conn *db, enum seq_kind kind, int64_t id,
                               int64_t *last);
typedef gim_err (*seq_save_fn)(struct store_conn *db, enum seq_kind kind, int64_t id, int64_t last);
gim_err seq_cache_next(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                       seq_load_fn read, int64_t *out);
gim_err seq_cache_last(struct seq *s, struct store_conn *db, enum seq_kind kind, int64_t id,
                       seq_load_fn read, int64_t *out);
gim_err seq_cache_flush(struct seq *s, struct store_conn *db, seq_save_fn save);

/* A point to roll back to; valid until seq_committed() or seq_reset(). */
size_t seq_mark(struct seq *s);
void seq_rollback(struct seq *s, size_t mark);

/* Writes every counter changed since the last commit (call inside the transaction). */
gim_err seq_flush(struct seq *s, struct store_conn *db);

/* The transaction committed: the flushed values are now the truth. */
void seq_committed(struct seq *s);

/* The transaction failed: forget all cached counters. */
void seq_reset(struct seq *s);

#endif
