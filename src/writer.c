#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "busy.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "scheduling.h"
#include "seq.h"
#include "storage.h"

struct writer {
    struct wctx *w;
    writer_maint_fn maintain; /* NULL: no maintenance */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct write_job *head, *tail; /* FIFO of queued jobs */
    bool stopping;
    _Atomic uint64_t pending; /* writer_pending(): +1 when queued, -n after a batch's done()s */
    _Atomic uint64_t own_checkpoints; /* writer_checkpoints() */
    /* How the writer's connection waits for a lock; cut short by writer_stop_waiting(). */
    struct busy_wait busy;
    /* The checkpointer (see ckpt_main); ckpt_due, scrub_due and ckpt_stop are under ckpt_mu. */
    struct store_conn *ckpt_db;
    pthread_t ckpt_thread;
    pthread_mutex_t ckpt_mu;
    pthread_cond_t ckpt_cv;
    bool ckpt_started, ckpt_hooked, ckpt_due, scrub_due, ckpt_stop;
    int64_t pinned_until_ms; /* writer thread only: see wal_hook */
};

/*
 * Checkpoints copy the WAL back into the database file and fsync it. SQLite
 * runs them inside COMMIT on the committing connection by default (every
 * 1000 WAL pages), so every few batches the writer stalled there while 64
 * requests waited. A thread of its own with its own connection now runs
 * them PASSIVE (never blocking the writer nor the readers) once the WAL
 * holds CKPT_FRAMES pages. A passive checkpoint cannot finish while commits
 * keep appending, and SQLite only rewinds a WAL that is fully copied back,
 * so at CKPT_WRITER_FRAMES the writer copies the (by then few) remaining
 * pages itself, which lets the next transaction start the WAL over.
 * Bought (same 1M database copy, C=64, shared 2-core VM): 7,008-7,388 ->
 * 8,312-8,590 sends/s and p99 22 -> 15 ms; see docs/benchmarks.md.
 */
#define CKPT_FRAMES 1000 /* SQLite's own wal_autocheckpoint default: 4 MiB */
/*
 * The WAL's bound in practice: 32,000 pages, 128 MiB. Under a steady stream
 * of commits the checkpointer is always a commit behind, so the WAL never
 * starts over by itself, and the writer's own checkpoint at this bound
 * (copy the rest, sync the database file) holds up the batch that crossed
 * it for a few ms. At 8,000 (32 MiB) that was 1.3-2 % of the commits at
 * 64 clients, 5-8 a second, and a send that spans two commits met one often
 * enough to make the p99: at 32,000 the sends' p99 fell in 20 of 21
 * alternated pairs (1M, C=64: 9.3-11.0 ms against 10.9-15.0; the rate
 * within the noise; docs/benchmarks.md, "Issue 15: the writer rewinds the
 * WAL a quarter as often"). The price is disk space, and the WAL a restart
 * after a crash reads back: up to 128 MiB instead of 32 (0.15-0.21 s from
 * a kill -9 to a healthy service, against 0.15-0.16).
 */
#define CKPT_WRITER_FRAMES   32000
#define CKPT_PINNED_RETRY_MS 100 /* a reader pins the WAL: see wal_hook */

/*
 * The WAL scrub: erased content (recall, retention) is gone from the b-tree
 * but its old versions sit in WAL frames until a TRUNCATE checkpoint copies
 * every frame back and cuts the WAL file to 0 bytes. That needs the write
 * lock and every reader off the WAL, so it cannot finish while a reader
 * holds an older snapshot (the SQLite shell in a transaction, `.backup`,
 * `VACUUM INTO`): the reader may still read those very frames, and the
 * erased version cannot even be copied into the database file before it
 * lets go. The writer once ran it on its own connection and so waited the
 * whole busy timeout after every batch while such a reader lived (issue
 * 11, scenario 2). The checkpointer thread runs it now, retrying with
 * backoff until it succeeds; its connection never waits for the writer's
 * lock longer than SCRUB_BUSY_TRIES x 1 ms, and it only tries TRUNCATE once
 * a PASSIVE pass has copied every frame (no reader holds an older snapshot),
 * so a long-lived reader costs the writer nothing at all.
 *
 * The pending scrub is in memory only, so every start-up scrubs once
 * (scenario 3): a kill -9 between a recall's commit and its scrub left the
 * bytes in the WAL, and SQLite's recovery at open does not rewrite frames.
 */
#define SCRUB_BUSY_TRIES     10  /* 1 ms sleeps: the longest the writer can wait for a scrub */
#define SCRUB_FIRST_RETRY_MS 20  /* then doubling ... */
#define SCRUB_MAX_RETRY_MS   500 /* ... to this: done within 0.5 s of the last reader leaving */

/*
 * Runs one job under its own savepoint so its failure undoes only its own
 * work. alone: the batch's only job (PostgreSQL skips its savepoint, see
 * storage.h). A deadlock or serialization failure fails it with
 * GIM_EUNAVAILABLE: the whole batch runs again.
 */
static gim_err run_job(struct wctx *w, const struct storage_tx_ops *tx, struct write_job *job,
                       bool alone)
{
    size_t mark = seq_mark(w->seq);
    gim_err e = tx->savepoint(w->db, alone);
    if (e != GIM_OK)
        return e;
    e = job->exec(job, w);
    if (tx->retryable(w->db))
        return GIM_EUNAVAILABLE; /* the whole batch runs again */
    if (e == GIM_OK)
        return tx->release(w->db, alone);
    seq_rollback(w->seq, mark);
    if (tx->rollback_to(w->db, alone) != GIM_OK)
        return GIM_EINTERNAL; /* the transaction is unusable: the batch will fail */
    return e;
}

/*
 * PostgreSQL: how often a batch runs again after a deadlock or serialization
 * failure before its jobs get EC_UNAVAILABLE, and the pause before each
 * retry (times the attempt, so that two instances that deadlocked do not
 * meet again in the same order at once). SQLite's failures are never
 * retryable.
 */
#define WRITER_PG_TRIES    5
#define WRITER_PG_PAUSE_US 2000

/* The ids of one kind a batch locks first: grown by writer_lock_*, then sorted. */
struct lock_ids {
    int64_t *ids;
    size_t n, cap;
};

/* In the order they are locked: a group's send or change locks its group before it takes seqs. */
enum { LOCK_GROUP, LOCK_USER, LOCK_ROOM, LOCK_KINDS };

struct writer_locks {
    struct lock_ids kinds[LOCK_KINDS];
};

static gim_err lock_add(struct lock_ids *l, int64_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int64_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (!ids)
            return GIM_ENOMEM;
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return GIM_OK;
}

gim_err writer_lock_user(struct writer_locks *l, int64_t user_id)
{
    return lock_add(&l->kinds[LOCK_USER], user_id);
}

gim_err writer_lock_room(struct writer_locks *l, int64_t room_id)
{
    return lock_add(&l->kinds[LOCK_ROOM], room_id);
}

gim_err writer_lock_group(struct writer_locks *l, int64_t group_id)
{
    return lock_add(&l->kinds[LOCK_GROUP], group_id);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/*
 * The batch's rows, locked before its first job: every job's declared ids,
 * sorted and de-duplicated, groups then users then rooms (the one
 * global order every instance's batches follow; a lone job's own order is
 * that order too, so it needs none of this).
 */
static gim_err lock_batch(struct wctx *w, const struct storage_tx_ops *tx, struct write_job **jobs,
                          int n, struct writer_locks *l)
{
    gim_err e = GIM_OK;
    for (int k = 0; k < LOCK_KINDS; k++)
        l->kinds[k].n = 0;
    for (int i = 0; e == GIM_OK && i < n; i++)
        if (jobs[i]->locks)
            e = jobs[i]->locks(jobs[i], w, l);
    for (int k = 0; e == GIM_OK && k < LOCK_KINDS; k++) {
        struct lock_ids *li = &l->kinds[k];
        if (li->n == 0)
            continue;
        qsort(li->ids, li->n, sizeof *li->ids, cmp_id);
        size_t m = 1;
        for (size_t i = 1; i < li->n; i++)
            if (li->ids[i] != li->ids[m - 1])
                li->ids[m++] = li->ids[i];
        li->n = m;
    }
    if (e == GIM_OK)
        e = tx->lock_batch(w->db, l->kinds[LOCK_GROUP].ids, l->kinds[LOCK_GROUP].n,
                           l->kinds[LOCK_USER].ids, l->kinds[LOCK_USER].n, l->kinds[LOCK_ROOM].ids,
                           l->kinds[LOCK_ROOM].n);
    return tx->retryable(w->db) ? GIM_EUNAVAILABLE : e;
}

/*
 * One transaction for the batch, a savepoint per job, one commit (group
 * commit), then the done()s. On PostgreSQL the batch's rows are locked first
 * (lock_batch) and a deadlock or serialization failure runs the whole batch
 * again; SQLite's one writer needs neither.
 */
void writer_run_batch(struct wctx *w, struct write_job **jobs, int n)
{
    const struct storage_tx_ops *tx = storage(w->db)->tx;
    gim_err res[n > 0 ? n : 1];
    struct writer_locks locks = {0};
    bool scrub_before = w->scrub_wal; /* a recall committed earlier still needs its scrub */
    gim_err batch = GIM_OK;
    for (int attempt = 1;; attempt++) {
        batch = tx->begin(w->db);
        w->now_ms = gim_clock_now(&w->clock);
        if (batch == GIM_OK && n > 1 && tx->lock_batch)
            batch = lock_batch(w, tx, jobs, n, &locks);
        for (int i = 0; i < n; i++) {
            res[i] = batch;
            if (batch != GIM_OK)
                continue;
            if (attempt > 1 && jobs[i]->reset)
                jobs[i]->reset(jobs[i]);
            res[i] = run_job(w, tx, jobs[i], n == 1);
            /* Only a lost transaction fails the neighbours: SQLite rolls the whole
             * transaction back by itself on some errors (full disk, I/O), and the
             * jobs after it must not run in autocommit mode. */
            if (tx->lost(w->db))
                batch = GIM_EUNAVAILABLE;
        }
        if (batch == GIM_OK)
            batch = seq_flush(w->seq, w->db);
        if (batch == GIM_OK) {
            bool keep = n > 1 || res[0] == GIM_OK;
            int64_t t0 = gim_clock_mono_ns();
            batch = tx->commit(w->db, keep);
            if (batch == GIM_OK && keep) /* (not kept: PostgreSQL rolled back instead) */
                metrics_commit(w->metrics, gim_clock_mono_ns() - t0);
        }
        if (batch == GIM_OK) {
            seq_committed(w->seq);
            break;
        }
        bool retry = tx->retryable(w->db);
        tx->rollback(w->db);
        seq_reset(w->seq);
        w->scrub_wal = scrub_before;
        if (!retry || attempt == WRITER_PG_TRIES) {
            const char *state = tx->sqlstate ? tx->sqlstate(w->db) : NULL;
            if (state)
                log_warn("write batch failed", "jobs=%d code=%s sqlstate=%s attempts=%d", n,
                         gim_err_name(batch), state, attempt);
            else
                log_warn("write batch failed", "jobs=%d code=%s", n, gim_err_name(batch));
            break;
        }
        metrics_batch_retry(w->metrics);
        usleep((useconds_t)(WRITER_PG_PAUSE_US * attempt));
    }
    for (int k = 0; k < LOCK_KINDS; k++)
        free(locks.kinds[k].ids);
    metrics_batch(w->metrics, n);
    for (int i = 0; i < n; i++)
        jobs[i]->done(jobs[i], w, batch == GIM_OK ? res[i] : batch);
}

static int take_batch(struct writer *wr, struct write_job **jobs, int max)
{
    int n = 0;
    while (wr->head && n < max) {
        jobs[n++] = wr->head;
        wr->head = wr->head->next;
    }
    if (!wr->head)
        wr->tail = NULL;
    return n;
}

static void scrub_handoff(struct writer *wr);

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    int max = (int)wr->w->cfg->writer.max_batch;
    scheduling_apply_serial(wr->w->cfg); /* SCHED_OTHER: every send waits for this thread */
    struct write_job **jobs = calloc((size_t)max, sizeof *jobs);
    int64_t next_maint = 0;
    bool backlog = false; /* maintenance has more to do now: run it again without waiting */
    if (!jobs) {
        log_error("writer cannot allocate its batch", "%s", "");
        abort();
    }
    pthread_mutex_lock(&wr->mu);
    for (;;) {
        if (!wr->head && !wr->stopping && !backlog) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&wr->cv, &wr->mu, &ts);
        }
        int n = take_batch(wr, jobs, max);
        bool stop = wr->stopping && n == 0;
        pthread_mutex_unlock(&wr->mu);
        if (stop)
            break;
        if (n > 0) {
            writer_run_batch(wr->w, jobs, n);
            atomic_fetch_sub(&wr->pending, (uint64_t)n);
        }
        scrub_handoff(wr);
        int64_t now = gim_clock_real_ms(NULL);
        /* Without a checkpointer, a pending scrub runs here (maint.c) as soon as the queue is
         * empty. */
        if (now >= next_maint || (n == 0 && wr->w->scrub_wal)) {
            backlog = wr->maintain ? wr->maintain(wr->w) : false;
            scrub_handoff(wr);
            next_maint = backlog ? now : now + 1000;
        }
        pthread_mutex_lock(&wr->mu);
    }
    free(jobs);
    return NULL;
}

/*
 * After each commit, on the writer thread, with the WAL's size in pages.
 * A reader on an older snapshot pins the WAL: no checkpoint can copy past
 * its snapshot, the WAL only grows, and a PASSIVE pass after every commit
 * then bought nothing and cost a third of the send rate (its walk of the
 * pinned WAL; 300 senders, one SQLite shell in a transaction: ~6,000 ->
 * ~10,000 sends/s once skipped). So after a pass that left frames behind,
 * the writer tries again only after CKPT_PINNED_RETRY_MS.
 */
static void wal_hook(void *arg, int frames)
{
    struct writer *wr = arg;
    if (frames >= CKPT_WRITER_FRAMES) {
        int64_t now = gim_clock_real_ms(NULL);
        if (now < wr->pinned_until_ms)
            return;
        int log_frames = 0, copied = 0;
        atomic_fetch_add(&wr->own_checkpoints, 1);
        storage(wr->w->db)->tx->checkpoint(wr->w->db, &log_frames, &copied);
        wr->pinned_until_ms = copied < log_frames ? now + CKPT_PINNED_RETRY_MS : 0;
        return;
    }
    if (frames >= CKPT_FRAMES) {
        pthread_mutex_lock(&wr->ckpt_mu);
        wr->ckpt_due = true;
        pthread_cond_signal(&wr->ckpt_cv);
        pthread_mutex_unlock(&wr->ckpt_mu);
    }
}

static void deadline_in(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *ckpt_main(void *arg)
{
    struct writer *wr = arg;
    struct timespec retry_at;
    bool backing_off = false; /* a scrub failed: the next try waits for retry_at */
    int64_t retry_ms = 0, attempts = 0, since_ms = 0;
    pthread_mutex_lock(&wr->ckpt_mu);
    for (;;) {
        while (!wr->ckpt_due && !wr->ckpt_stop && !(wr->scrub_due && !backing_off)) {
            if (!wr->scrub_due)
                pthread_cond_wait(&wr->ckpt_cv, &wr->ckpt_mu);
            else if (pthread_cond_timedwait(&wr->ckpt_cv, &wr->ckpt_mu, &retry_at) == ETIMEDOUT)
                backing_off = false;
        }
        if (wr->ckpt_stop)
            break;
        bool scrub = wr->scrub_due && !backing_off;
        wr->ckpt_due = false;
        if (scrub)
            wr->scrub_due =
                false; /* before the try: an erasure committed during it sets it again */
        pthread_mutex_unlock(&wr->ckpt_mu);
        bool failed = false;
        if (scrub) {
            int64_t now = gim_clock_real_ms(NULL);
            if (attempts++ == 0)
                since_ms = now;
            if (storage(wr->ckpt_db)->tx->scrub(wr->ckpt_db)) {
                if (attempts > 1)
                    log_info("wal scrubbed", "attempts=%lld waited_ms=%lld", (long long)attempts,
                             (long long)(now - since_ms));
                attempts = retry_ms = 0;
            } else {
                if (attempts == 1)
                    log_info("wal scrub postponed", "reason=\"%s\"",
                             "a reader holds an older snapshot, or the WAL is busy; retrying");
                retry_ms = retry_ms == 0 ? SCRUB_FIRST_RETRY_MS : retry_ms * 2;
                retry_ms = retry_ms > SCRUB_MAX_RETRY_MS ? SCRUB_MAX_RETRY_MS : retry_ms;
                deadline_in(&retry_at, retry_ms);
                failed = true;
            }
        } else {
            storage(wr->ckpt_db)->tx->checkpoint(wr->ckpt_db, NULL, NULL);
        }
        pthread_mutex_lock(&wr->ckpt_mu);
        if (failed)
            wr->scrub_due = backing_off = true; /* still pending */
    }
    pthread_mutex_unlock(&wr->ckpt_mu);
    return NULL;
}

/* Hands a pending scrub (w->scrub_wal, set by a committed erasure) to the checkpointer. */
static void scrub_handoff(struct writer *wr)
{
    if (!wr->ckpt_started || !wr->w->scrub_wal)
        return;
    pthread_mutex_lock(&wr->ckpt_mu);
    wr->scrub_due = true;
    pthread_cond_signal(&wr->ckpt_cv);
    pthread_mutex_unlock(&wr->ckpt_mu);
    wr->w->scrub_wal = false;
}

/*
 * Without its own connection (a test's in-memory database, an open failure)
 * the writer keeps SQLite's checkpoints in COMMIT: slower, equally correct.
 */
static void ckpt_start(struct writer *wr)
{
    char err[256] = "";
    pthread_mutex_init(&wr->ckpt_mu, NULL);
    pthread_cond_init(&wr->ckpt_cv, NULL);
    const struct storage_tx_ops *tx = storage(wr->w->db)->tx;
    /* None on PostgreSQL (it checkpoints by itself) nor for an in-memory database. */
    if (tx->checkpointer_open(wr->w->cfg, wr->w->db, SCRUB_BUSY_TRIES, &wr->ckpt_db, err,
                              sizeof err) != GIM_OK) {
        log_warn("checkpoints stay in the writer", "reason=\"%s\"", err);
        return;
    }
    if (!wr->ckpt_db)
        return;
    /* A crash may have left erased content in the WAL (see SCRUB_BUSY_TRIES): scrub once. */
    wr->scrub_due = true;
    if (pthread_create(&wr->ckpt_thread, NULL, ckpt_main, wr) != 0) {
        store_close(wr->ckpt_db);
        wr->ckpt_db = NULL;
        return;
    }
    pthread_setname_np(wr->ckpt_thread, "gim-checkpoint");
    wr->ckpt_started = true;
    /* Without the hook (out of memory) SQLite keeps checkpointing in COMMIT: slower, correct. */
    wr->ckpt_hooked = tx->checkpoint_hook(wr->w->db, wal_hook, wr) == GIM_OK;
}

static void ckpt_stop(struct writer *wr)
{
    if (wr->ckpt_started) {
        if (wr->ckpt_hooked) /* SQLite's own checkpoints again */
            storage(wr->w->db)->tx->checkpoint_hook(wr->w->db, NULL, NULL);
        pthread_mutex_lock(&wr->ckpt_mu);
        wr->ckpt_stop = true;
        pthread_cond_signal(&wr->ckpt_cv);
        pthread_mutex_unlock(&wr->ckpt_mu);
        pthread_join(wr->ckpt_thread, NULL);
    }
    store_close(wr->ckpt_db);
    pthread_mutex_destroy(&wr->ckpt_mu);
    pthread_cond_destroy(&wr->ckpt_cv);
}

/* Gives the connection back its plain busy_timeout: wr->busy is about to go. */
static void busy_release(struct writer *wr)
{
    storage(wr->w->db)->tx->wait_locks(wr->w->db, NULL, wr->w->cfg->database.busy_timeout_ms);
    busy_wait_destroy(&wr->busy);
}

gim_err writer_start(struct writer **out, struct wctx *w, writer_maint_fn maintain)
{
    struct writer *wr = calloc(1, sizeof *wr);
    if (!wr)
        return GIM_ENOMEM;
    wr->w = w;
    wr->maintain = maintain;
    pthread_mutex_init(&wr->mu, NULL);
    pthread_cond_init(&wr->cv, NULL);
    busy_wait_init(&wr->busy, w->cfg->database.busy_timeout_ms);
    storage(w->db)->tx->wait_locks(w->db, &wr->busy, w->cfg->database.busy_timeout_ms);
    ckpt_start(wr);
    if (pthread_create(&wr->thread, NULL, writer_main, wr) != 0) {
        ckpt_stop(wr);
        busy_release(wr);
        pthread_mutex_destroy(&wr->mu);
        pthread_cond_destroy(&wr->cv);
        free(wr);
        return GIM_EINTERNAL;
    }
    pthread_setname_np(wr->thread, "gim-writer"); /* top -H, perf: CPU by thread */
    *out = wr;
    return GIM_OK;
}

void writer_submit(struct writer *wr, struct write_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&wr->mu);
    if (wr->stopping) {
        pthread_mutex_unlock(&wr->mu);
        job->done(job, wr->w, GIM_EUNAVAILABLE);
        return;
    }
    if (wr->tail)
        wr->tail->next = job;
    else
        wr->head = job;
    wr->tail = job;
    atomic_fetch_add(&wr->pending, 1);
    pthread_cond_signal(&wr->cv);
    pthread_mutex_unlock(&wr->mu);
}

uint64_t writer_checkpoints(struct writer *wr)
{
    return wr ? atomic_load(&wr->own_checkpoints) : 0;
}

uint64_t writer_pending(struct writer *wr)
{
    return wr ? atomic_load(&wr->pending) : 0;
}

void writer_stop_waiting(struct writer *wr)
{
    if (!wr)
        return;
    storage(wr->w->db)->tx->stop_waiting(wr->w->db);
    busy_wait_cancel(&wr->busy);
}

void writer_stop(struct writer *wr)
{
    if (!wr)
        return;
    pthread_mutex_lock(&wr->mu);
    wr->stopping = true;
    pthread_cond_signal(&wr->cv);
    pthread_mutex_unlock(&wr->mu);
    pthread_join(wr->thread, NULL);
    ckpt_stop(wr);
    busy_release(wr);
    pthread_mutex_destroy(&wr->mu);
    pthread_cond_destroy(&wr->cv);
    free(wr);
}
