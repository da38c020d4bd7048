/*
 * The writer's batch semantics, with plain jobs on a real SQLite file:
 * a failing job fails alone and gives back its seqs; done() runs only after
 * the commit is visible to other connections; a failed commit fails every
 * job and the counters reload; the writer thread groups queued jobs.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "presence.h"
#include "seq.h"
#include "storage.h"
#include "store.h"
#include "writer.h"

static struct gim_config cfg;
static char dir[64], path[128];
static struct store_conn *db;
static struct seq *seqs;
static struct wctx w;

static void setup(void)
{
    char err[256] = "";
    snprintf(dir, sizeof dir, "/tmp/gimwriter-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
    cr_assert_eq(config_load(NULL, &cfg, err, sizeof err), GIM_OK, "%s", err);
    free(cfg.database.path);
    cfg.database.path = strdup(path);
    cr_assert_eq(store_open(&cfg, STORE_WRITER, &db, err, sizeof err), GIM_OK, "%s", err);
    cr_assert_eq(seq_open(&seqs), GIM_OK);
    w = (struct wctx){.db = db, .seq = seqs, .cfg = &cfg, .clock = {gim_clock_real_ms, NULL}};
}

static void teardown(void)
{
    char cmd[128];
    seq_close(seqs);
    store_close(db);
    config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(writer, .init = setup, .fini = teardown, .timeout = 60);

/* A job that takes the next seq of user 1 and stores an inbox row with it. */
struct tjob {
    struct write_job job;
    bool fail;       /* fail after taking the seq and writing */
    bool bad_fk;     /* write a row that breaks a deferred foreign key: COMMIT fails */
    int64_t seq;     /* the seq it took */
    gim_err result;  /* what done() was told */
    int64_t visible; /* rows of this seq another connection saw inside done() */
};

static const char SQL_ADD[] = "INSERT INTO inbox (user_id, seq, message_id) VALUES (1, ?1, 0)";

static gim_err tjob_exec(struct write_job *job, struct wctx *wc)
{
    struct tjob *t = (struct tjob *)job;
    gim_err e = seq_next(wc->seq, wc->db, SEQ_USER, 1, &t->seq);
    if (e != GIM_OK)
        return e;
    sqlite3_stmt *st = store_stmt(wc->db, SQL_ADD);
    sqlite3_bind_int64(st, 1, t->seq);
    int rc = sqlite3_step(st);
    store_done(st);
    if (rc != SQLITE_DONE)
        return store_err(rc);
    if (t->bad_fk &&
        (store_exec(wc->db, "PRAGMA defer_foreign_keys = ON") != GIM_OK ||
         store_exec(wc->db, "INSERT INTO group_member VALUES (999, 1, 'member', 0)") != GIM_OK))
        return GIM_EINTERNAL;
    return t->fail ? GIM_EFORBIDDEN : GIM_OK;
}

/* Looks from another connection: what done() reports must already be committed. */
static int64_t count_from_outside(int64_t seq)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    int64_t n = -1;
    cr_assert_eq(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT count(*) FROM inbox WHERE user_id = 1 AND seq = ?1",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, seq);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static atomic_int done_count;

static void tjob_done(struct write_job *job, struct wctx *wc, gim_err err)
{
    (void)wc;
    struct tjob *t = (struct tjob *)job;
    t->result = err;
    t->visible = count_from_outside(t->seq);
    atomic_fetch_add(&done_count, 1);
}

static void init(struct tjob *t, int n)
{
    memset(t, 0, sizeof *t * (size_t)n);
    for (int i = 0; i < n; i++) {
        t[i].job.exec = tjob_exec;
        t[i].job.done = tjob_done;
    }
}

static void run(struct tjob *t, int n)
{
    struct write_job *jobs[16];
    for (int i = 0; i < n; i++)
        jobs[i] = &t[i].job;
    writer_run_batch(&w, jobs, n);
}

Test(writer, a_failing_job_fails_alone_and_gives_back_its_seq)
{
    struct tjob t[3];
    init(t, 3);
    t[1].fail = true;
    run(t, 3);
    cr_assert_eq(t[0].result, GIM_OK);
    cr_assert_eq(t[1].result, GIM_EFORBIDDEN);
    cr_assert_eq(t[2].result, GIM_OK);
    cr_assert_eq(t[0].seq, 1);
    cr_assert_eq(t[2].seq, 2, "the failed job's seq is reused: no gap");
    struct tjob next;
    init(&next, 1);
    run(&next, 1);
    cr_assert_eq(next.seq, 3);
    cr_assert_eq(count_from_outside(3), 1);
}

Test(writer, done_runs_after_the_commit_is_visible)
{
    struct tjob t[4];
    init(t, 4);
    run(t, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(t[i].result, GIM_OK);
        cr_assert_eq(t[i].visible, 1, "job %d was answered before its commit was visible", i);
    }
}

Test(writer, a_failed_commit_fails_every_job_and_counters_reload)
{
    struct tjob t[3];
    init(t, 3);
    t[2].bad_fk = true; /* each job succeeds alone; COMMIT itself fails */
    run(t, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_neq(t[i].result, GIM_OK, "job %d must fail with its batch", i);
        cr_assert_eq(t[i].visible, 0);
    }
    cr_assert_eq(store_exec(db, "PRAGMA defer_foreign_keys = OFF"), GIM_OK);
    struct tjob again;
    init(&again, 1);
    run(&again, 1);
    cr_assert_eq(again.result, GIM_OK);
    cr_assert_eq(again.seq, 1, "nothing was committed, so seq 1 is still free");
}

Test(writer, a_failed_batch_keeps_an_earlier_recall_s_wal_scrub)
{
    struct tjob t[1];
    init(t, 1);
    t[0].bad_fk = true;
    w.scrub_wal = true; /* a recall committed before this batch; its scrub is still due */
    run(t, 1);
    cr_assert_neq(t[0].result, GIM_OK);
    cr_assert(w.scrub_wal, "the erased content must still leave the WAL");
}

Test(writer, a_lone_failing_job_changes_nothing_and_gives_back_its_seq)
{
    struct tjob t[1];
    init(t, 1);
    t[0].fail = true; /* alone: PostgreSQL would skip its savepoint, SQLite keeps it */
    run(t, 1);
    cr_assert_eq(t[0].result, GIM_EFORBIDDEN);
    cr_assert_eq(count_from_outside(1), 0, "the failed job's row must not be committed");
    struct tjob next;
    init(&next, 1);
    run(&next, 1);
    cr_assert_eq(next.result, GIM_OK);
    cr_assert_eq(next.seq, 1, "the failed job's seq is reused: no gap");
}

/* Every tx operation the writer, http and dispatch call exists on both backends (storage.h); only
 * the two SQLite has no use for may be NULL there. */
Test(writer, both_backends_fill_every_tx_operation)
{
    const struct storage_ops *backends[] = {&storage_sqlite, &storage_pg};
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const struct storage_tx_ops *tx = backends[i]->tx;
        const char *name = backends[i]->name;
        cr_assert(tx->begin && tx->savepoint && tx->release && tx->rollback_to && tx->lost &&
                      tx->commit && tx->rollback && tx->in_transaction && tx->retryable,
                  "%s: a transaction operation is missing", name);
        cr_assert(tx->wait_locks && tx->stop_waiting && tx->checkpointer_open &&
                      tx->checkpoint_hook && tx->checkpoint && tx->scrub,
                  "%s: a lock wait or checkpoint operation is missing", name);
        cr_assert(tx->health_open && tx->health_writable && tx->schema_version && tx->location,
                  "%s: a health or start-up operation is missing", name);
    }
    /* PostgreSQL's instances deadlock unless batches lock in one order, and its failures say
     * why: both are needed there. */
    cr_assert_not_null(storage_pg.tx->lock_batch);
    cr_assert_not_null(storage_pg.tx->sqlstate);
    cr_assert_eq(storage_sqlite.tx->schema_version(), store_schema_version());
    cr_assert_str_eq(storage_sqlite.tx->location(&cfg), path);
    cr_assert_null(storage_pg.tx->location(&cfg), "never a URL in the log");
}

/* SQLite's writer never retries: a failure there is not a deadlock with another instance. */
Test(writer, sqlite_failures_are_never_retryable_and_a_rollback_ends_the_transaction)
{
    const struct storage_tx_ops *tx = storage(db)->tx;
    cr_assert_eq(tx->begin(db), GIM_OK);
    cr_assert_not(tx->lost(db));
    cr_assert_neq(store_exec(db, "INSERT INTO nosuchtable VALUES (1)"), GIM_OK);
    cr_assert_not(tx->retryable(db));
    tx->rollback(db);
    cr_assert(tx->lost(db), "no transaction is left open after rollback");
    tx->rollback(db); /* nothing open: a no-op */
    cr_assert_eq(tx->begin(db), GIM_OK);
    cr_assert_eq(tx->commit(db, true), GIM_OK);
}

Test(writer, the_thread_commits_queued_jobs_in_groups)
{
    enum { N = 200 };
    static struct tjob t[N];
    struct writer *wr = NULL;
    init(t, N);
    atomic_store(&done_count, 0);
    cr_assert_eq(writer_start(&wr, &w, NULL), GIM_OK);
    for (int i = 0; i < N; i++)
        writer_submit(wr, &t[i].job);
    writer_stop(wr); /* finishes the queue */
    cr_assert_eq(atomic_load(&done_count), N);
    bool seen[N + 1] = {false};
    for (int i = 0; i < N; i++) {
        cr_assert_eq(t[i].result, GIM_OK);
        cr_assert(t[i].seq >= 1 && t[i].seq <= N && !seen[t[i].seq], "seq %lld",
                  (long long)t[i].seq);
        seen[t[i].seq] = true;
        cr_assert_eq(t[i].visible, 1);
    }
}

/* A job that stores 60,000 random bytes: about 16 new pages, so the WAL grows fast. */
static gim_err bigjob_exec(struct write_job *job, struct wctx *wc)
{
    (void)job;
    return store_exec(wc->db, "INSERT INTO t_big (x) VALUES (randomblob(60000))");
}

static void bigjob_done(struct write_job *job, struct wctx *wc, gim_err err)
{
    (void)job;
    (void)wc;
    cr_assert_eq(err, GIM_OK);
    atomic_fetch_add(&done_count, 1);
}

/* Submits n big jobs and waits until all are done. */
static void write_big(struct writer *wr, struct write_job *jobs, int n)
{
    int before = atomic_load(&done_count);
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct write_job){.exec = bigjob_exec, .done = bigjob_done};
        writer_submit(wr, &jobs[i]);
    }
    while (atomic_load(&done_count) < before + n)
        usleep(1000);
}

/* The WAL's length in frames (pages), from its file: 32 bytes of header, then 24 + 4096 each. */
static long wal_frames(void)
{
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    return stat(wal, &st) == 0 && st.st_size > 32 ? (long)((st.st_size - 32) / (24 + 4096)) : 0;
}

/*
 * The writer copies the WAL back itself only once it holds CKPT_WRITER_FRAMES
 * (32,000) pages: each such checkpoint holds up a batch, and at 8,000 pages
 * they made the sends' p99 (writer.c). A reader holding an old snapshot keeps
 * the WAL from being copied back or started over, so it only grows: past
 * 9,000 pages the writer must not have checkpointed yet, past 33,000 it must
 * have (the bound is still there).
 */
Test(writer, the_writer_checkpoints_itself_only_at_the_wal_s_bound)
{
    static struct write_job jobs[2600];
    struct writer *wr = NULL;
    cr_assert_eq(store_exec(db, "CREATE TABLE t_big (x BLOB)"), GIM_OK);
    sqlite3 *reader;
    cr_assert_eq(sqlite3_open_v2(path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(reader, "BEGIN; SELECT count(*) FROM t_big", NULL, NULL, NULL),
                 SQLITE_OK, "the reader takes its snapshot");
    atomic_store(&done_count, 0);
    cr_assert_eq(writer_start(&wr, &w, NULL), GIM_OK);

    int used = 0;
    while (wal_frames() < 9000 && used < 800) {
        write_big(wr, jobs + used, 50);
        used += 50;
    }
    cr_assert_geq(wal_frames(), 9000, "the WAL did not grow: %ld pages", wal_frames());
    cr_assert_eq(writer_checkpoints(wr), 0,
                 "the writer checkpointed at %ld pages, below its bound of 32,000", wal_frames());

    while (wal_frames() < 33000 && used + 100 <= (int)(sizeof jobs / sizeof jobs[0])) {
        write_big(wr, jobs + used, 100);
        used += 100;
    }
    cr_assert_geq(wal_frames(), 33000, "the WAL did not grow: %ld pages", wal_frames());
    cr_assert_geq(writer_checkpoints(wr), 1, "no checkpoint of the writer's at %ld pages",
                  wal_frames());

    sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(reader);
    writer_stop(wr);
}
