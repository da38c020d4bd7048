/*
 * gim-diskbound: the disk's own bound on durable sends, with no service at
 * all (docs/benchmarks.md, "What the disk alone allows (`gim-diskbound`)").
 *
 * gim-logic's writer commits a batch of sends by appending the batch's WAL
 * frames and calling fdatasync on the WAL; its checkpointer copies the pages
 * those commits changed back into the database file (random 4 KiB writes in
 * page order) and syncs that file too, once per commit under load. This
 * program does exactly that I/O and nothing else: a writer thread appends
 * BATCH x WAL_BYTES and syncs (the WAL starts over at 128 MiB, as the writer's
 * own checkpoint makes it), and a checkpointer thread, woken after each
 * commit, syncs the WAL, writes BATCH x PAGES random pages of a DB_MB file in
 * ascending order and syncs the file. WAL_BYTES and PAGES are what a send
 * costs in the service (tools/bench-threads.sh prints both: the writer's
 * written_B and the checkpointer's writes).
 *
 * With no CPU spent on requests, the commit cycle (append + fdatasync) is the
 * least a closed-loop send can wait at that batch and I/O per send, and
 * BATCH / cycle the most sends a second one writer can make durable with
 * them: a floor under the service's latency at its own operating point, not
 * a prediction of every shape (how the checkpoint hands its writes to the
 * disk changes it, as --kick-pages shows).
 *
 * --kick-pages K makes the checkpointer start the writeback of its writes
 * every K pages (sync_file_range, SYNC_FILE_RANGE_WRITE), as gim-logic's VFS
 * does every 32 (src/storage/mapvfs.h); 0, the default, leaves it all to the
 * pass's fdatasync, as SQLite alone does.
 *
 *   gim-diskbound [--dir DIR] [--secs S] [--batch N] [--wal-bytes B]
 *                 [--pages P] [--db-mb M] [--kick-pages K] [--no-checkpoint]
 *   defaults:     /tmp/gim-diskbound, 10 s, 64, 11743, 2.62, 200, 0
 *
 * Prints one RESULT line: commits, sends/s (commits x batch / s), the
 * cycle's p50/p90/p99/max in ms, the checkpointer's passes, pages and
 * writeback kicks, and where the WAL starts over (wal_reset_bytes). The checkpointer copies what is
 * still due before it stops, so pages_written is what the commits left it (rounded down). DIR keeps
 * its two files (db, wal) after the run; the next run writes both anew.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE       4096
#define WAL_RESET  (128L * 1024 * 1024) /* CKPT_WRITER_FRAMES x 4 KiB, writer.c */
#define MAX_CYCLES 2000000

struct opts {
    const char *dir;
    double secs, pages;
    long batch, wal_bytes, db_mb, kick_pages;
    bool checkpoint;
};

struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    double pending; /* pages the commits so far left for the checkpointer */
    bool stop;
    long passes, pages_written, kicks;
};

static struct opts o = {"/tmp/gim-diskbound", 10, 2.62, 64, 11743, 200, 0, true};
static struct shared sh = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, 0, 0, 0};
static int wal_fd = -1, db_fd = -1;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "gim-diskbound: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int cmp_long(const void *a, const void *b)
{
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/*
 * One pass per wake-up, as SQLite's PASSIVE checkpoint: sync the WAL, copy
 * what the commits so far left, in page order, sync the file. At the stop,
 * one last pass copies what is still due.
 */
static void *checkpointer(void *arg)
{
    (void)arg;
    long db_pages = o.db_mb * 1024 * 1024 / PAGE, cap = 0, *pgno = NULL;
    unsigned seed = 12345;
    static char page[PAGE];
    memset(page, 0x5a, sizeof page);
    pthread_mutex_lock(&sh.mu);
    for (;;) {
        while (sh.pending < 1 && !sh.stop)
            pthread_cond_wait(&sh.cv, &sh.mu);
        if (sh.pending < 1)
            break; /* stopped, nothing due */
        long n = (long)sh.pending, kicks = 0;
        sh.pending -= (double)n;
        pthread_mutex_unlock(&sh.mu);
        if (n > cap) {
            cap = n * 2;
            if (!(pgno = realloc(pgno, (size_t)cap * sizeof *pgno)))
                die("realloc");
        }
        for (long i = 0; i < n; i++)
            pgno[i] = (long)(rand_r(&seed) % (unsigned)db_pages);
        qsort(pgno, (size_t)n, sizeof *pgno, cmp_long);
        if (fdatasync(wal_fd) != 0)
            die("fdatasync wal (checkpointer)");
        for (long i = 0; i < n; i++) {
            if (pwrite(db_fd, page, PAGE, pgno[i] * PAGE) != PAGE)
                die("pwrite db");
            if (o.kick_pages > 0 && (i + 1) % o.kick_pages == 0) {
                if (sync_file_range(db_fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0)
                    die("sync_file_range db");
                kicks++;
            }
        }
        if (fdatasync(db_fd) != 0)
            die("fdatasync db");
        pthread_mutex_lock(&sh.mu);
        sh.passes++;
        sh.pages_written += n;
        sh.kicks += kicks;
    }
    pthread_mutex_unlock(&sh.mu);
    free(pgno);
    return NULL;
}

static void usage_error(const char *fmt, const char *a, const char *v)
{
    fprintf(stderr, "gim-diskbound: ");
    fprintf(stderr, fmt, a, v);
    fprintf(stderr, " (options: see the header of tools/gim-diskbound.c)\n");
    exit(1);
}

/* A number for option a: at least min, whole if whole; exits with a clear error otherwise. */
static double number(const char *a, const char *v, double min, bool whole)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || errno != 0 || x != x || x < min || x > 1e9 ||
        (whole && x != (double)(long)x))
        usage_error(whole && min >= 1 ? "%s: not a whole number of at least 1: %s"
                    : whole           ? "%s: not a whole number of at least 0: %s"
                                      : "%s: not a positive number: %s",
                    a, v);
    return x;
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-checkpoint")) {
            o.checkpoint = false;
            continue;
        }
        if (!v)
            usage_error("%s needs a value%s", a, "");
        if (!strcmp(a, "--dir"))
            o.dir = v;
        else if (!strcmp(a, "--secs"))
            o.secs = number(a, v, 0.001, false);
        else if (!strcmp(a, "--batch"))
            o.batch = (long)number(a, v, 1, true);
        else if (!strcmp(a, "--wal-bytes"))
            o.wal_bytes = (long)number(a, v, 1, true);
        else if (!strcmp(a, "--pages"))
            o.pages = number(a, v, 0.001, false);
        else if (!strcmp(a, "--db-mb"))
            o.db_mb = (long)number(a, v, 1, true);
        else if (!strcmp(a, "--kick-pages"))
            o.kick_pages = (long)number(a, v, 0, true);
        else
            usage_error("unknown option %s%s", a, "");
        i++;
    }
    if ((double)o.batch * (double)o.wal_bytes > WAL_RESET)
        usage_error("--batch x --wal-bytes is more than the WAL's 128 MiB%s%s", "", "");
}

/*
 * The database file exists in full before the run, as a database does: overwrites, not growth.
 * It is written page by page, as SQLite writes one: written in 1 MiB chunks it sat in the page
 * cache in folios of up to 256 pages (ext4, Linux 6.16+; tools/gim-folios), and each 4 KiB write
 * of a checkpoint then cost the kernel a walk of its folio's block buffers, which no database
 * SQLite wrote pays (docs/benchmarks.md, "Issue 15: the bench's copies and the page cache's
 * folios").
 */
static void prepare(void)
{
    char path[4096];
    if (mkdir(o.dir, 0755) != 0 && errno != EEXIST)
        die(o.dir);
    snprintf(path, sizeof path, "%s/db", o.dir);
    /* O_TRUNC: a file left by an earlier run may still be cached in large folios */
    if ((db_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0)
        die(path);
    static char page[PAGE];
    memset(page, 0x11, sizeof page);
    for (long p = 0; p < o.db_mb * (1024 * 1024 / PAGE); p++)
        if (pwrite(db_fd, page, PAGE, p * PAGE) != PAGE)
            die("pwrite db (prepare)");
    snprintf(path, sizeof path, "%s/wal", o.dir);
    if ((wal_fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0)
        die(path);
    if (fsync(db_fd) != 0)
        die("fsync db (prepare)");
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    prepare();
    pthread_t ckpt;
    if (o.checkpoint && pthread_create(&ckpt, NULL, checkpointer, NULL) != 0)
        die("pthread_create");
    long commit_bytes = o.batch * o.wal_bytes;
    char *buf = malloc((size_t)commit_bytes);
    double *cycles = malloc(MAX_CYCLES * sizeof *cycles);
    if (!buf || !cycles)
        die("malloc");
    memset(buf, 0x33, (size_t)commit_bytes);
    long off = 0, n = 0;
    double start = now_s(), end = start + o.secs;
    while (n < MAX_CYCLES) {
        double t0 = now_s();
        if (t0 >= end)
            break;
        if (off + commit_bytes > WAL_RESET)
            off = 0;
        if (pwrite(wal_fd, buf, (size_t)commit_bytes, off) != commit_bytes)
            die("pwrite wal");
        if (fdatasync(wal_fd) != 0)
            die("fdatasync wal");
        off += commit_bytes;
        if (o.checkpoint) {
            pthread_mutex_lock(&sh.mu);
            sh.pending += o.pages * o.batch;
            pthread_cond_signal(&sh.cv);
            pthread_mutex_unlock(&sh.mu);
        }
        cycles[n++] = (now_s() - t0) * 1e3;
    }
    double wall = now_s() - start;
    if (o.checkpoint) {
        pthread_mutex_lock(&sh.mu);
        sh.stop = true;
        pthread_cond_signal(&sh.cv);
        pthread_mutex_unlock(&sh.mu);
        pthread_join(ckpt, NULL);
    }
    if (n == 0) {
        fprintf(stderr, "gim-diskbound: no commit in %.1f s\n", o.secs);
        return 2;
    }
    qsort(cycles, (size_t)n, sizeof *cycles, cmp_double);
    printf("RESULT batch=%ld wal_bytes_per_send=%ld pages_per_send=%.2f db_mb=%ld checkpoint=%s "
           "kick_pages=%ld commits=%ld commits_per_s=%.1f sends_per_s=%.0f cycle_p50_ms=%.3f "
           "cycle_p90_ms=%.3f cycle_p99_ms=%.3f cycle_max_ms=%.3f passes=%ld pages_written=%ld "
           "kicks=%ld wal_reset_bytes=%ld\n",
           o.batch, o.wal_bytes, o.pages, o.db_mb, o.checkpoint ? "on" : "off", o.kick_pages, n,
           n / wall, n * o.batch / wall, cycles[n / 2], cycles[n * 9 / 10], cycles[n * 99 / 100],
           cycles[n - 1], sh.passes, sh.pages_written, sh.kicks, WAL_RESET);
    free(buf);
    free(cycles);
    close(wal_fd);
    close(db_fd);
    return 0;
}
