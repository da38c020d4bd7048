/*
 * A slow read holds only its own worker (issue 15), against the real binary.
 *
 * The service runs testlib's 4 workers. The test holds every read-mark lock
 * of the database's WAL index, so a sync (which must read) waits on its
 * worker for as long as they are held. Meanwhile another device sends
 * HEARTBEATS heartbeats one after the other; a heartbeat never touches the
 * database. Only once every heartbeat is answered, or after GIVE_UP_S, does
 * the test release the locks.
 *
 * Before, each nng context belonged to one worker (context i to worker
 * i mod 4), so about every fourth heartbeat landed on a context of the
 * blocked worker and waited behind the sync until the locks went: the
 * heartbeats were not all answered before the release. Now any free worker
 * takes the next request, so all of them are answered while the sync still
 * waits. What is asserted is order and counts (every heartbeat answered
 * before the locks were released and before the sync's reply), not a latency;
 * GIVE_UP_S only ends the run when that order cannot happen.
 *
 * The threads' scheduling policy (`scheduling`, scheduling.h), read the way
 * `ps -L -o comm,policy` does: by default every thread but the two serial
 * stages is SCHED_BATCH (nng's included: they inherit it), the writer and
 * the replier (gim-reply, which sends the writes' replies) SCHED_OTHER; with
 * `scheduling: normal` every thread is SCHED_OTHER.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testlib.h"

#define HEARTBEATS 20
#define GIVE_UP_S  8 /* below SQLite's own ~10 s of retries: the sync still waits then */

static struct tl_server srv;

static void teardown(void)
{
    tl_cleanup(&srv);
}

TestSuite(workers, .fini = teardown, .timeout = 120);

/*
 * Readers locked out, the way a reader sees it: every read-mark lock of the
 * WAL index taken by another open file description. In WAL mode a read
 * transaction needs one of them (shared); the wal-index format
 * (sqlite.org/walformat.html) puts READ0..READ4 at bytes 123..127 of the
 * -shm file. SQLite's reader then retries with growing sleeps (about 10 s
 * in all) before it gives up, and goes on as soon as the locks go.
 * Returns the descriptor that holds them; closing it releases them.
 */
#define SHM_READ_LOCKS_AT 123
#define SHM_READ_LOCKS    5

static int hold_read_marks(const char *db)
{
    char shm[256];
    snprintf(shm, sizeof shm, "%s-shm", db);
    int fd = open(shm, O_RDWR);
    cr_assert(fd >= 0, "%s: %s", shm, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK,
                       .l_whence = SEEK_SET,
                       .l_start = SHM_READ_LOCKS_AT,
                       .l_len = SHM_READ_LOCKS};
    /* The service holds one only inside a read transaction: wait for a moment between them. */
    int rc = -1;
    for (int i = 0; i < 500 && (rc = fcntl(fd, F_OFD_SETLK, &fl)) != 0; i++)
        usleep(10 * 1000);
    cr_assert_eq(rc, 0, "cannot take the read-mark locks: %s", strerror(errno));
    return fd;
}

static _Atomic int heartbeats_done;
static _Atomic int done_at_release = -1, done_at_sync = -1;
static _Atomic int sync_code = -1;

struct sync_arg {
    struct gim_client *c;
    struct client_conn conn;
};

static void *sync_main(void *arg)
{
    struct sync_arg *a = arg;
    Pb__SyncInput in = PB__SYNC_INPUT__INIT;
    int code = tl_code(a->c, &a->conn, PB__PACKAGE_TYPE__PT_SYNC, 100, &in.base);
    atomic_store(&done_at_sync, atomic_load(&heartbeats_done));
    atomic_store(&sync_code, code);
    return NULL;
}

static int lock_fd = -1;

/* Releases the lock once every heartbeat is answered, or after GIVE_UP_S. */
static void *release_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < GIVE_UP_S * 100 && atomic_load(&heartbeats_done) < HEARTBEATS; i++)
        usleep(10 * 1000);
    atomic_store(&done_at_release, atomic_load(&heartbeats_done));
    close(lock_fd);
    return NULL;
}

Test(workers, a_slow_read_does_not_hold_requests_of_other_contexts)
{
    tl_start(&srv, NULL);

    struct gim_client *reader, *beater;
    cr_assert_eq(client_open(&reader, srv.url, 90000, 1), GIM_OK);
    cr_assert_eq(client_open(&beater, srv.url, 90000, 1), GIM_OK);
    struct sync_arg sa = {.c = reader};
    struct client_conn hb;
    cr_assert_eq(tl_signin(reader, &sa.conn, 1, 11, "gw-1"), PB__ERROR_CODE__EC_OK);
    cr_assert_eq(tl_signin(beater, &hb, 2, 21, "gw-1"), PB__ERROR_CODE__EC_OK);

    lock_fd = hold_read_marks(srv.db);
    pthread_t syncer, releaser;
    cr_assert_eq(pthread_create(&syncer, NULL, sync_main, &sa), 0);
    /* Time for the sync to reach its worker; were it later, the test could only pass more
     * easily, never fail. */
    usleep(300 * 1000);
    cr_assert_eq(pthread_create(&releaser, NULL, release_main, NULL), 0);
    for (int i = 0; i < HEARTBEATS; i++) {
        cr_assert_eq(tl_code(beater, &hb, PB__PACKAGE_TYPE__PT_HEARTBEAT, 200 + i, NULL),
                     PB__ERROR_CODE__EC_OK);
        atomic_fetch_add(&heartbeats_done, 1);
    }
    pthread_join(releaser, NULL);
    pthread_join(syncer, NULL);

    cr_assert_eq(atomic_load(&sync_code), PB__ERROR_CODE__EC_OK,
                 "the sync is answered once the lock is gone");
    cr_assert_eq(atomic_load(&done_at_release), HEARTBEATS,
                 "every heartbeat answered while the sync waited for the lock: %d of %d",
                 atomic_load(&done_at_release), HEARTBEATS);
    cr_assert_eq(atomic_load(&done_at_sync), HEARTBEATS,
                 "the sync was answered after the heartbeats: it really waited");
    client_close(reader);
    client_close(beater);
    cr_assert_eq(tl_stop(&srv), 0);
}

/* What the threads of a process run as: counts, and the first thread that broke the rule. */
struct policies {
    int threads, writers, writer_policy, repliers, replier_policy, batch, other;
    char not_batch[32]; /* a thread other than the serial stages that is not SCHED_BATCH */
};

static struct policies read_policies(pid_t pid)
{
    struct policies p = {.writer_policy = -1, .replier_policy = -1};
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    cr_assert(d, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[384], comm[32] = "";
        snprintf(path, sizeof path, "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
        int policy = sched_getscheduler((pid_t)atoi(e->d_name));
        if (policy < 0)
            continue;
        p.threads++;
        if (strcmp(comm, "gim-writer") == 0) {
            p.writers++;
            p.writer_policy = policy;
            continue;
        }
        if (strcmp(comm, "gim-reply") == 0) {
            p.repliers++;
            p.replier_policy = policy;
            continue;
        }
        if (policy == SCHED_BATCH)
            p.batch++;
        else if (!p.not_batch[0])
            snprintf(p.not_batch, sizeof p.not_batch, "%s", comm);
        if (policy == SCHED_OTHER)
            p.other++;
    }
    closedir(d);
    return p;
}

Test(workers, every_thread_but_the_writer_and_the_replier_runs_as_sched_batch_by_default)
{
    tl_start(&srv, NULL);
    struct policies p = read_policies(srv.pid);
    cr_assert_eq(p.writers, 1, "one writer thread, named gim-writer");
    cr_assert_eq(p.writer_policy, SCHED_OTHER, "the writer is SCHED_OTHER, got policy %d",
                 p.writer_policy);
    cr_assert_eq(p.repliers, 1, "one thread sends the writes' replies, named gim-reply");
    cr_assert_eq(p.replier_policy, SCHED_OTHER, "the replier is SCHED_OTHER, got policy %d",
                 p.replier_policy);
    /* testlib's 4 workers, nng's task, poller and timer threads, the checkpointer, main */
    cr_assert_geq(p.threads, 8, "only %d threads", p.threads);
    cr_assert_eq(p.batch, p.threads - 2, "thread %s is not SCHED_BATCH (%d of %d are)", p.not_batch,
                 p.batch, p.threads - 2);
    cr_assert_eq(tl_stop(&srv), 0);
}

Test(workers, scheduling_normal_leaves_every_thread_sched_other)
{
    tl_start(&srv, "scheduling: normal\n");
    struct policies p = read_policies(srv.pid);
    cr_assert_eq(p.writers, 1);
    cr_assert_eq(p.writer_policy, SCHED_OTHER);
    cr_assert_eq(p.repliers, 1);
    cr_assert_eq(p.replier_policy, SCHED_OTHER);
    cr_assert_geq(p.threads, 8, "only %d threads", p.threads);
    cr_assert_eq(p.other, p.threads - 2, "every thread is SCHED_OTHER: %d of %d", p.other,
                 p.threads - 2);
    cr_assert_eq(tl_stop(&srv), 0);
}
