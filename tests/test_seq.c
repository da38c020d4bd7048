/*
 * seq in-process on a real SQLite file: a counter starts from the database
 * (a user's from its inbox and the floor deletions leave), user and room
 * counters of one id are apart, a rollback gives back the seqs taken after
 * its mark, a flush writes what changed (rooms: a user's counter is not
 * written back), a reset reloads, and all of that holds across a growth of
 * the table in the middle of a transaction.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "seq.h"
#include "store.h"

static struct gim_config cfg;
static char dir[64];
static struct store_conn *db;
static struct seq *s;

static void setup(void)
{
    char err[256] = "", path[128];
    snprintf(dir, sizeof dir, "/tmp/gimseq-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&s), GIM_OK);
}

static void teardown(void)
{
    char cmd[128];
    seq_close(s);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(seq, .init = setup, .fini = teardown, .timeout = 60);

static int64_t next(enum seq_kind kind, int64_t id)
{
    int64_t v = -1;
    cr_assert_eq(seq_next(s, db, kind, id, &v), GIM_OK);
    return v;
}

static int64_t last(enum seq_kind kind, int64_t id)
{
    int64_t v = -1;
    cr_assert_eq(seq_last(s, db, kind, id, &v), GIM_OK);
    return v;
}

/* The stored counter of (kind, id), -1 when it has no row. */
static int64_t stored(enum seq_kind kind, int64_t id)
{
    sqlite3_stmt *st =
        store_stmt(db, kind == SEQ_USER ? "SELECT seq FROM user_last_seq WHERE user_id = ?1"
                                        : "SELECT seq FROM room_seq WHERE room_id = ?1");
    cr_assert_not_null(st);
    sqlite3_bind_int64(st, 1, id);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    store_done(st);
    return v;
}

/* What the writer does around a batch: flush inside the transaction, then committed. */
static void commit(void)
{
    cr_assert_eq(store_exec(db, "BEGIN"), GIM_OK);
    cr_assert_eq(seq_flush(s, db), GIM_OK);
    cr_assert_eq(store_exec(db, "COMMIT"), GIM_OK);
    seq_committed(s);
}

Test(seq, a_counter_continues_from_the_database)
{
    cr_assert_eq(store_exec(db, "INSERT INTO user_seq (user_id, seq) VALUES (7, 41)"), GIM_OK);
    cr_assert_eq(last(SEQ_USER, 7), 41);
    cr_assert_eq(next(SEQ_USER, 7), 42);
    cr_assert_eq(next(SEQ_USER, 7), 43);
    cr_assert_eq(last(SEQ_USER, 9), 0, "no row: nothing assigned yet");
    cr_assert_eq(next(SEQ_USER, 8), 1);
}

/*
 * A user's counter is not written back (migrations/0008_seq_floor.sql): it
 * loads as the larger of the user's last inbox seq and user_seq, the floor
 * that a trigger raises before any inbox row is deleted. So deleting a
 * user's newest entries (retention, erasure, an operator's DELETE) never
 * lets their seqs be handed out again after a restart.
 */
Test(seq, a_user_counter_is_its_inbox_and_deletions_leave_a_floor)
{
    cr_assert_eq(store_exec(db, "INSERT INTO inbox (user_id, seq, message_id) VALUES "
                                "(8, 1, 1), (8, 2, 2), (8, 3, 3), (7, 50, 4), (6, 1, 5);"
                                "INSERT INTO user_seq (user_id, seq) VALUES (7, 41), (6, 9)"),
                 GIM_OK);
    cr_assert_eq(last(SEQ_USER, 8), 3, "from the inbox alone");
    cr_assert_eq(last(SEQ_USER, 7), 50, "the inbox above the floor");
    cr_assert_eq(last(SEQ_USER, 6), 9, "the floor above the inbox");
    cr_assert_eq(next(SEQ_USER, 8), 4);
    commit();
    cr_assert_eq(stored(SEQ_USER, 8), 3, "nothing written back: its inbox holds no seq 4");
    /* What a restart sees after user 8's newest entries and user 7's only one went. */
    cr_assert_eq(
        store_exec(db, "DELETE FROM inbox WHERE (user_id = 8 AND seq >= 2) OR user_id = 7"),
        GIM_OK);
    seq_close(s);
    cr_assert_eq(seq_open(&s), GIM_OK);
    cr_assert_eq(last(SEQ_USER, 8), 3, "the deleted seqs 2 and 3 are not handed out again");
    cr_assert_eq(next(SEQ_USER, 8), 4);
    cr_assert_eq(last(SEQ_USER, 7), 50);
    cr_assert_eq(last(SEQ_USER, 6), 9);
}

Test(seq, user_and_room_counters_of_one_id_are_apart)
{
    cr_assert_eq(next(SEQ_USER, 5), 1);
    cr_assert_eq(next(SEQ_USER, 5), 2);
    cr_assert_eq(next(SEQ_ROOM, 5), 1);
    cr_assert_eq(next(SEQ_USER, 5), 3);
    commit();
    cr_assert_eq(stored(SEQ_USER, 5), -1, "a user's counter is its inbox (no rows here)");
    cr_assert_eq(stored(SEQ_ROOM, 5), 1);
}

Test(seq, a_rollback_gives_back_the_seqs_taken_after_its_mark)
{
    cr_assert_eq(next(SEQ_ROOM, 1), 1);
    size_t mark = seq_mark(s);
    cr_assert_eq(next(SEQ_ROOM, 1), 2);
    cr_assert_eq(next(SEQ_ROOM, 2), 1);
    seq_rollback(s, mark);
    cr_assert_eq(last(SEQ_ROOM, 1), 1);
    cr_assert_eq(last(SEQ_ROOM, 2), 0);
    cr_assert_eq(next(SEQ_ROOM, 1), 2, "the given-back seq is taken again: no gap");
    commit();
    cr_assert_eq(stored(SEQ_ROOM, 1), 2);
    cr_assert_eq(stored(SEQ_ROOM, 2), -1, "a counter rolled back to unchanged is not written");
}

Test(seq, a_reset_forgets_what_was_not_committed)
{
    cr_assert_eq(next(SEQ_ROOM, 3), 1);
    commit();
    cr_assert_eq(next(SEQ_ROOM, 3), 2);
    cr_assert_eq(next(SEQ_USER, 4), 1);
    seq_reset(s); /* the transaction failed: its counters are reloaded from the database */
    cr_assert_eq(last(SEQ_ROOM, 3), 1);
    cr_assert_eq(last(SEQ_USER, 4), 0);
    cr_assert_eq(next(SEQ_ROOM, 3), 2);
}

/*
 * 3,000 counters outgrow the first table (1,024 slots, grown at 3/4) twice
 * inside one transaction: the undo log and the dirty list must follow their
 * counters to the new slots, or the rollback restores and the flush writes
 * other counters than the ones that changed.
 */
Test(seq, growth_inside_a_transaction_keeps_rollback_and_flush_right)
{
    enum { N = 3000 };
    for (int64_t id = 1; id <= 100; id++)
        cr_assert_eq(next(SEQ_ROOM, id), 1);
    size_t mark = seq_mark(s);
    for (int64_t id = 1; id <= N; id++)
        cr_assert_eq(next(SEQ_ROOM, id), id <= 100 ? 2 : 1);
    cr_assert_eq(next(SEQ_USER, 1), 1);
    seq_rollback(s, mark);
    for (int64_t id = 1; id <= N; id++)
        cr_assert_eq(last(SEQ_ROOM, id), id <= 100 ? 1 : 0, "room %lld", (long long)id);
    cr_assert_eq(last(SEQ_USER, 1), 0);
    for (int64_t id = 2; id <= N; id += 2)
        next(SEQ_ROOM, id);
    commit();
    for (int64_t id = 1; id <= N; id++) {
        int64_t want = id <= 100 ? 1 + (id % 2 == 0) : (id % 2 == 0 ? 1 : -1);
        cr_assert_eq(stored(SEQ_ROOM, id), want, "room %lld", (long long)id);
    }
    cr_assert_eq(stored(SEQ_USER, 1), -1);
}
