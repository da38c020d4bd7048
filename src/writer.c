#include "writer.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "maint.h"
#include "metrics.h"
#include "seq.h"

struct writer {
    struct wctx *w;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct write_job *head, *tail; /* FIFO of queued jobs */
    bool stopping;
};

int64_t gim_clock_real_ms(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t gim_clock_now(const struct gim_clock *c)
{
    return c->now_ms ? c->now_ms(c->arg) : gim_clock_real_ms(NULL);
}

/* Runs one job under its own savepoint so its failure undoes only its own work. */
static gim_err run_job(struct wctx *w, struct write_job *job)
{
    size_t mark = seq_mark(w->seq);
    gim_err e = store_exec(w->db, "SAVEPOINT job");
    if (e != GIM_OK)
        return e;
    e = job->exec(job, w);
    if (e == GIM_OK)
        return store_exec(w->db, "RELEASE job");
    seq_rollback(w->seq, mark);
    if (store_exec(w->db, "ROLLBACK TO job") != GIM_OK || store_exec(w->db, "RELEASE job") != GIM_OK)
        return GIM_EINTERNAL; /* the transaction is unusable: the batch will fail */
    return e;
}

void writer_run_batch(struct wctx *w, struct write_job **jobs, int n)
{
    gim_err res[n > 0 ? n : 1];
    gim_err batch = store_exec(w->db, "BEGIN IMMEDIATE");
    w->now_ms = gim_clock_now(&w->clock);
    for (int i = 0; i < n; i++) {
        res[i] = batch;
        if (batch != GIM_OK)
            continue;
        res[i] = run_job(w, jobs[i]);
        /* Only a lost transaction fails the neighbours: SQLite rolls the whole
         * transaction back by itself on some errors (full disk, I/O), and the
         * jobs after it must not run in autocommit mode. */
        if (sqlite3_get_autocommit(w->db->db))
            batch = GIM_EUNAVAILABLE;
    }
    if (batch == GIM_OK)
        batch = seq_flush(w->seq, w->db);
    if (batch == GIM_OK)
        batch = store_exec(w->db, "COMMIT");
    if (batch == GIM_OK) {
        seq_committed(w->seq);
    } else {
        log_warn("write batch failed", "jobs=%d code=%s", n, gim_err_name(batch));
        if (!sqlite3_get_autocommit(w->db->db))
            sqlite3_exec(w->db->db, "ROLLBACK", NULL, NULL, NULL);
        seq_reset(w->seq);
        w->scrub_wal = false;
    }
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

static void *writer_main(void *arg)
{
    struct writer *wr = arg;
    int max = (int)wr->w->cfg->writer.max_batch;
    struct write_job **jobs = calloc((size_t)max, sizeof *jobs);
    int64_t next_maint = 0;
    if (!jobs) {
        log_error("writer cannot allocate its batch", "%s", "");
        abort();
    }
    pthread_mutex_lock(&wr->mu);
    for (;;) {
        if (!wr->head && !wr->stopping) {
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
        if (n > 0)
            writer_run_batch(wr->w, jobs, n);
        int64_t now = gim_clock_real_ms(NULL);
        if (now >= next_maint || (n == 0 && wr->w->scrub_wal)) {
            writer_maintain(wr->w);
            next_maint = now + 1000;
        }
        pthread_mutex_lock(&wr->mu);
    }
    free(jobs);
    return NULL;
}

void writer_maintain(struct wctx *w)
{
    maint_run(w);
}

gim_err writer_start(struct writer **out, struct wctx *w)
{
    struct writer *wr = calloc(1, sizeof *wr);
    if (!wr)
        return GIM_ENOMEM;
    wr->w = w;
    pthread_mutex_init(&wr->mu, NULL);
    pthread_cond_init(&wr->cv, NULL);
    if (pthread_create(&wr->thread, NULL, writer_main, wr) != 0) {
        pthread_mutex_destroy(&wr->mu);
        pthread_cond_destroy(&wr->cv);
        free(wr);
        return GIM_EINTERNAL;
    }
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
    pthread_cond_signal(&wr->cv);
    pthread_mutex_unlock(&wr->mu);
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
    pthread_mutex_destroy(&wr->mu);
    pthread_cond_destroy(&wr->cv);
    free(wr);
}
