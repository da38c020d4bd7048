/*
 * mapvfs: one mapping of the database file for the whole process, within a
 * budget (src/storage/mapvfs.h). Real SQLite connections on a real file in
 * WAL mode, as gim-logic opens them (a writer, readers, PRAGMA mmap_size);
 * what is mapped and resident is read from /proc/self/smaps, not from the
 * module's own counters.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/mapvfs.h"

#define SEG       (1ull << 20) /* 1 MiB segments: small files have many */
#define ROW_BYTES 1000

static char dir[64], path[96];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gim-mapvfs-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/t.db", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(mapvfs, .init = setup, .fini = teardown);

static void exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, err ? err : sqlite3_errstr(rc));
}

static sqlite3 *open_db(bool writer)
{
    sqlite3 *db = NULL;
    int flags = writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
    int rc = sqlite3_open_v2(path, &db, flags | SQLITE_OPEN_NOMUTEX, MAPVFS_NAME);
    cr_assert_eq(rc, SQLITE_OK, "open %s: %s", path, sqlite3_errstr(rc));
    /* A reader whose read of the WAL index races the writer's update takes the WAL's write lock
     * for a moment to read it again (SQLite's walIndexReadHdr); without a busy handler the
     * writer's next INSERT then fails with SQLITE_BUSY, as it did once under ctest -j6. The
     * service's connections wait too (busy.h). */
    sqlite3_busy_timeout(db, 10000);
    exec(db, "PRAGMA mmap_size = 268435456");
    exec(db, "PRAGMA cache_size = -256"); /* small caches: most reads reach the VFS */
    if (writer)
        exec(db, "PRAGMA journal_mode = WAL");
    return db;
}

/*
 * Rows [from, to) in one transaction, left in the WAL; SQLite's code of the first failure
 * (rolled back), or SQLITE_OK. Every row's blob is its id's low byte, ROW_BYTES times: a reader
 * can check what it got.
 */
static int insert_rows_rc(sqlite3 *db, int from, int to)
{
    sqlite3_stmt *st;
    exec(db, "BEGIN");
    cr_assert_eq(sqlite3_prepare_v2(db, "INSERT INTO t(id, b) VALUES (?, ?)", -1, &st, NULL),
                 SQLITE_OK);
    unsigned char b[ROW_BYTES];
    int rc = SQLITE_DONE;
    for (int id = from; id < to && rc == SQLITE_DONE; id++) {
        memset(b, id & 0xff, sizeof b);
        sqlite3_bind_int(st, 1, id);
        sqlite3_bind_blob(st, 2, b, sizeof b, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Rows [from, to), committed, then copied into the file, where the mapping reads. */
static void insert_rows(sqlite3 *db, int from, int to)
{
    int rc = insert_rows_rc(db, from, to);
    cr_assert_eq(rc, SQLITE_OK, "rows %d..%d: %s (%s)", from, to, sqlite3_errstr(rc),
                 sqlite3_errmsg(db));
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
}

/* Reads row id and checks its blob; returns false if it is missing or wrong. */
static bool row_ok(sqlite3 *db, sqlite3_stmt *st, int id)
{
    (void)db;
    sqlite3_bind_int(st, 1, id);
    bool ok = false;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == ROW_BYTES) {
        const unsigned char *b = sqlite3_column_blob(st, 0);
        ok = true;
        for (int i = 0; i < ROW_BYTES; i++)
            ok = ok && b[i] == (unsigned char)(id & 0xff);
    }
    sqlite3_reset(st);
    return ok;
}

/* Reads every row id in [from, to) `rounds` times; fails the test on a wrong row. */
static void read_all(sqlite3 *db, int from, int to, int rounds)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT b FROM t WHERE id = ?", -1, &st, NULL), SQLITE_OK);
    for (int r = 0; r < rounds; r++)
        for (int id = from; id < to; id++)
            cr_assert(row_ok(db, st, id), "row %d", id);
    sqlite3_finalize(st);
}

/* Registers the VFS with budget bytes (1 MiB segments); the writer of a new table t of rows rows.
 */
static sqlite3 *writer_with_rows(uint64_t budget, int rows)
{
    cr_assert_eq(mapvfs_register(budget, SEG), GIM_OK);
    sqlite3 *w = open_db(true);
    exec(w, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)");
    insert_rows(w, 0, rows);
    return w;
}

struct maps {
    unsigned long long mapped; /* bytes of address space mapping the file */
    unsigned long long rss;    /* of it, resident (KiB lines of smaps, in bytes) */
    int mappings;
};

/* Sums the mappings of `path` (the database file itself, not -wal or -shm) in /proc/self/smaps. */
static struct maps file_maps(void)
{
    struct maps out = {0};
    FILE *f = fopen("/proc/self/smaps", "r");
    cr_assert_not_null(f);
    char line[512];
    bool in = false;
    size_t plen = strlen(path);
    while (fgets(line, sizeof line, f)) {
        unsigned long long lo, hi, kb;
        if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            size_t n = strlen(line);
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
                line[--n] = 0;
            in = n >= plen && strcmp(line + n - plen, path) == 0;
            if (in) {
                out.mapped += hi - lo;
                out.mappings++;
            }
        } else if (in && sscanf(line, "Rss: %llu kB", &kb) == 1) {
            out.rss += kb * 1024;
        }
    }
    fclose(f);
    return out;
}

static unsigned long long file_size(void)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    unsigned long long n = (unsigned long long)ftell(f);
    fclose(f);
    return n;
}

/*
 * Four connections that read the whole file share one mapping: the address
 * space mapping the file is at most the file rounded up to segments. (With
 * SQLite's own mmap each connection maps the file: 4x.)
 */
Test(mapvfs, every_connection_reads_through_one_mapping)
{
    sqlite3 *w = writer_with_rows(64ull << 20, 6000); /* ~6.5 MB */
    sqlite3 *r[3];
    for (int i = 0; i < 3; i++)
        r[i] = open_db(false);
    for (int i = 0; i < 3; i++)
        read_all(r[i], 0, 6000, 4);
    read_all(w, 0, 6000, 1);
    struct maps m = file_maps();
    unsigned long long size = file_size(), cap = (size + SEG - 1) / SEG * SEG;
    cr_assert_gt(m.mapped, 0, "nothing mapped: reads did not use the mapping");
    cr_assert_leq(m.mapped, cap, "mapped %llu bytes of a %llu-byte file", m.mapped, size);
    cr_assert_gt(m.rss, size / 2, "resident %llu of %llu: reads went around the mapping", m.rss,
                 size);
    struct mapvfs_stats s;
    mapvfs_stats(&s);
    cr_assert_eq(s.files, 1);
    for (int i = 0; i < 3; i++)
        sqlite3_close(r[i]);
    sqlite3_close(w);
    /* The last connection closed: the mapping is gone. */
    cr_assert_eq(file_maps().mapped, 0);
}

/*
 * A 24 MB file read whole, again and again, with a 3 MiB budget: the file's
 * resident pages stay within the budget and one segment (plus the pages a
 * fault maps around it), and every row still reads right.
 */
Test(mapvfs, the_budget_bounds_the_resident_file_pages)
{
    sqlite3 *w = writer_with_rows(3ull << 20, 22000);
    sqlite3 *r[2] = {open_db(false), open_db(false)};
    unsigned long long peak = 0;
    for (int round = 0; round < 6; round++) {
        read_all(r[round % 2], 0, 22000, 1);
        struct maps m = file_maps();
        peak = m.rss > peak ? m.rss : peak;
    }
    cr_assert_gt(peak, 0, "nothing resident: reads did not use the mapping");
    cr_assert_leq(peak, (3ull << 20) + 2 * SEG, "resident %llu bytes, budget 3 MiB", peak);
    /* Every segment was in use at some point; each that left was counted. */
    struct mapvfs_stats s;
    mapvfs_stats(&s);
    cr_assert_leq(s.chosen_bytes, 3ull << 20);
    sqlite3_close(r[0]);
    sqlite3_close(r[1]);
    sqlite3_close(w);
}

/*
 * The file grows past what was mapped, then shrinks (VACUUM truncates it):
 * readers see the new rows, then the remaining ones, and the checks pass.
 */
Test(mapvfs, the_file_grows_and_shrinks_under_open_readers)
{
    sqlite3 *w = writer_with_rows(64ull << 20, 2000);
    sqlite3 *r = open_db(false);
    read_all(r, 0, 2000, 20);
    insert_rows(w, 2000, 9000); /* ~7 MB more: new segments */
    read_all(r, 0, 9000, 3);
    unsigned long long big = file_size();
    exec(w, "DELETE FROM t WHERE id >= 1000");
    exec(w, "VACUUM");
    exec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    cr_assert_lt(file_size(), big / 4, "VACUUM did not shrink the file");
    read_all(r, 0, 1000, 20);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(r, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(sqlite3_column_int(st, 0), 1000);
    sqlite3_finalize(st);
    cr_assert_eq(sqlite3_prepare_v2(r, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    /* The file is smaller than what was mapped; reading it caused no fault (we are here). */
    cr_assert_gt(file_maps().mapped, 0);
    sqlite3_close(r);
    sqlite3_close(w);
}

struct reader_arg {
    atomic_bool *stop;
    atomic_int *top;    /* rows [0, top) are committed */
    atomic_long *reads; /* all readers' */
    long bad;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    sqlite3 *db = open_db(false);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT b FROM t WHERE id = ?", -1, &st, NULL), SQLITE_OK);
    unsigned seed = (unsigned)(uintptr_t)p;
    while (!atomic_load(a->stop)) {
        /* Mostly the newest rows, as syncs read: the segments read most move as the file grows. */
        int top = atomic_load(a->top);
        int id = top - 1 - (int)(rand_r(&seed) % 2000u);
        atomic_fetch_add(a->reads, 1);
        if (!row_ok(db, st, id))
            a->bad++;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

/*
 * Four readers check random committed rows while the writer appends and
 * checkpoints (the file grows under them) with a budget smaller than the
 * file (segments are chosen and dropped while they read): no wrong row.
 */
Test(mapvfs, readers_see_right_rows_while_the_writer_grows_the_file)
{
    sqlite3 *w = writer_with_rows(2ull << 20, 3000);
    atomic_bool stop = false;
    atomic_int top = 3000;
    atomic_long reads = 0;
    struct reader_arg a[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct reader_arg){.stop = &stop, .top = &top, .reads = &reads};
        pthread_create(&t[i], NULL, reader, &a[i]);
    }
    for (int n = 3000; n < 15000; n += 500) {
        /* Let the readers read a while on each size: enough fetches for a few choices. */
        long until = atomic_load(&reads) + 20000;
        while (atomic_load(&reads) < until)
            usleep(1000);
        insert_rows(w, n, n + 500);
        atomic_store(&top, n + 500);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_expect_eq(a[i].bad, 0, "reader %d: %ld wrong rows", i, a[i].bad);
    }
    struct mapvfs_stats s;
    mapvfs_stats(&s);
    cr_assert_gt(s.retires, 0, "the budget never made a segment leave: the test tested nothing");
    sqlite3_close(w);
}

/* The journal and WAL are not mapped; SQLite names the VFS stack as its own shims do. */
Test(mapvfs, only_the_main_file_is_wrapped_for_fetches)
{
    sqlite3 *w = writer_with_rows(64ull << 20, 100);
    char *name = NULL;
    cr_assert_eq(sqlite3_file_control(w, "main", SQLITE_FCNTL_VFSNAME, &name), SQLITE_OK);
    cr_assert_not_null(name);
    cr_assert(strncmp(name, MAPVFS_NAME "/", strlen(MAPVFS_NAME) + 1) == 0, "vfs %s", name);
    sqlite3_free(name);
    char wal[128];
    snprintf(wal, sizeof wal, "%s-wal", path);
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (fgets(line, sizeof line, f))
        cr_assert_null(strstr(line, wal), "the WAL is mapped: %s", line);
    fclose(f);
    sqlite3_close(w);
}

/*
 * Opening and closing more connections must not drop the process's POSIX
 * locks on the file (closing any descriptor of it would: mapvfs.h). In WAL
 * mode every open connection holds a shared lock on the database file; it
 * is what keeps another process's last connection from taking the exclusive
 * lock on close, checkpointing and deleting the WAL under this one (the
 * service lost writes that way before the module kept its descriptors).
 */
Test(mapvfs, more_connections_keep_the_process_locks)
{
    sqlite3 *a = writer_with_rows(64ull << 20, 10);
    read_all(a, 0, 10, 1);
    for (int i = 0; i < 3; i++)
        sqlite3_close(open_db(false)); /* open and close: descriptors of the same file */
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* Another process asks whether it could lock SQLite's shared-lock bytes exclusively. */
        int fd = open(path, O_RDWR);
        struct flock fl = {
            .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0x40000002, .l_len = 510};
        int ok = fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "no lock of ours on the file: opening or closing a connection dropped them");
    sqlite3_close(a);
}

/* ---- combined WAL writes (mapvfs_combine_wal) ---- */

/* A writer as gim-logic's: WAL, synchronous FULL, its appends combined. */
static sqlite3 *combining_writer(void)
{
    cr_assert_eq(mapvfs_register(64ull << 20, SEG), GIM_OK);
    sqlite3 *w = open_db(true);
    exec(w, "PRAGMA synchronous = FULL");
    exec(w, "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)");
    cr_assert_eq(mapvfs_combine_wal(w), GIM_OK);
    return w;
}

static int64_t count_rows(sqlite3 *db)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/*
 * A commit of ~500 frames is ~1,000 writes from SQLite (header, page) and a
 * few from the module; every row reads back right in another connection.
 */
Test(mapvfs, a_writer_combines_its_wal_appends)
{
    sqlite3 *w = combining_writer();
    struct mapvfs_stats a, b;
    mapvfs_stats(&a);
    cr_assert_eq(insert_rows_rc(w, 0, 2000), SQLITE_OK);
    mapvfs_stats(&b);
    uint64_t writes = b.wal_writes - a.wal_writes, flushes = b.wal_flushes - a.wal_flushes;
    cr_assert_geq(writes, 900, "SQLite's WAL writes: %llu", (unsigned long long)writes);
    cr_assert_gt(flushes, 0);
    cr_assert_leq(flushes * 20, writes, "%llu writes became %llu", (unsigned long long)writes,
                  (unsigned long long)flushes);
    sqlite3 *r = open_db(false);
    read_all(r, 0, 2000, 1);
    sqlite3_close(r);
    sqlite3_close(w);
}

/*
 * sync_file_range as the module calls it, recorded on its way to libc's
 * (this definition takes the module's calls): what the kernel was asked,
 * seen at the call, not in the module's own counters.
 */
static struct {
    int calls, refused;
    dev_t dev; /* the file of the last call */
    ino_t ino;
    unsigned flags;
} kicks;

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    static int (*libc)(int, off64_t, off64_t, unsigned int);
    if (!libc)
        *(void **)&libc = dlsym(RTLD_NEXT, "sync_file_range");
    cr_assert_not_null(libc);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    kicks.dev = st.st_dev;
    kicks.ino = st.st_ino;
    kicks.flags = flags;
    kicks.calls++;
    int rc = libc(fd, off, n, flags);
    kicks.refused += rc != 0;
    return rc;
}

/*
 * A checkpoint's writes to the database file start their writeback every
 * 128 KiB (mapvfs.h), and the WAL's writes never do: 2,000 rows of 1 KB
 * committed (into the WAL: no call), then checkpointed (every page of the
 * file written once: one call per 32 pages, each for the database file).
 */
Test(mapvfs, a_checkpoint_starts_its_writeback_as_it_writes)
{
    sqlite3 *w = combining_writer();
    exec(w, "PRAGMA wal_autocheckpoint = 0");
    memset(&kicks, 0, sizeof kicks);
    cr_assert_eq(insert_rows_rc(w, 0, 2000), SQLITE_OK);
    cr_assert_eq(kicks.calls, 0, "commits into the WAL started a writeback %d times", kicks.calls);
    int log_frames = -1, copied = -1;
    cr_assert_eq(
        sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &copied),
        SQLITE_OK);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    long pages = (long)(st.st_size / 4096);
    cr_assert_geq(copied, 500, "frames copied back: %d", copied);
    cr_assert_geq(kicks.calls, (int)(pages / 32) - 1, "%d calls for %ld pages", kicks.calls, pages);
    cr_assert_leq(kicks.calls, (int)(pages / 32) + 1, "%d calls for %ld pages", kicks.calls, pages);
    cr_assert_eq(kicks.refused, 0);
    cr_assert(kicks.dev == st.st_dev && kicks.ino == st.st_ino, "not the database file");
    cr_assert_eq(kicks.flags, (unsigned)SYNC_FILE_RANGE_WRITE, "asked to wait: flags %u",
                 kicks.flags);
    sqlite3_close(w);
}

/* Connections that must not combine: another VFS's, and one without a WAL. */
Test(mapvfs, combining_needs_this_vfs_and_a_wal)
{
    cr_assert_eq(mapvfs_register(64ull << 20, SEG), GIM_OK);
    sqlite3 *plain = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &plain, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
                 SQLITE_OK);
    exec(plain, "PRAGMA journal_mode = WAL");
    cr_assert_eq(mapvfs_combine_wal(plain), GIM_EINTERNAL, "the default VFS's WAL");
    sqlite3_close(plain);
    char other[128];
    snprintf(other, sizeof other, "%s/rollback.db", dir);
    sqlite3 *rb = NULL;
    cr_assert_eq(
        sqlite3_open_v2(other, &rb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, MAPVFS_NAME),
        SQLITE_OK);
    exec(rb, "PRAGMA journal_mode = PERSIST"); /* the journal file stays open between writes */
    exec(rb, "CREATE TABLE x (a)");
    exec(rb, "BEGIN");
    exec(rb, "INSERT INTO x VALUES (1)"); /* the journal is open now */
    cr_assert_eq(mapvfs_combine_wal(rb), GIM_EINTERNAL, "a rollback journal");
    exec(rb, "COMMIT");
    sqlite3_close(rb);
}

struct counter_arg {
    atomic_bool *stop;
    atomic_int *committed; /* rows the writer has committed: a reader sees at least these */
    long bad, reads;
};

/* Another connection (its own WAL handle) checks, again and again, every committed row. */
static void *counter(void *p)
{
    struct counter_arg *a = p;
    sqlite3 *r = NULL;
    if (sqlite3_open_v2(path, &r, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, MAPVFS_NAME) !=
        SQLITE_OK) {
        a->bad++;
        return NULL;
    }
    sqlite3_exec(r, "PRAGMA cache_size = -256", NULL, NULL, NULL);
    sqlite3_stmt *st = NULL, *one = NULL;
    sqlite3_prepare_v2(r, "SELECT count(*), max(id) FROM t", -1, &st, NULL);
    sqlite3_prepare_v2(r, "SELECT b FROM t WHERE id = ?", -1, &one, NULL);
    while (!atomic_load(a->stop)) {
        int floor = atomic_load(a->committed);
        if (sqlite3_step(st) != SQLITE_ROW) {
            a->bad++;
        } else {
            int n = sqlite3_column_int(st, 0), top = sqlite3_column_int(st, 1);
            /* Rows are committed in order from id 0: n rows are ids 0..n-1, all of them whole. */
            if (n < floor || (n > 0 && top != n - 1))
                a->bad++;
            else if (n > 0 && !row_ok(r, one, top))
                a->bad++;
        }
        sqlite3_reset(st);
        a->reads++;
    }
    sqlite3_finalize(st);
    sqlite3_finalize(one);
    sqlite3_close(r);
    return NULL;
}

/*
 * Readers on their own connections, and checkpoints on another, see every
 * commit whole from the moment it returns: the buffer is in the file by then.
 */
Test(mapvfs, readers_and_checkpoints_see_every_combined_commit)
{
    sqlite3 *w = combining_writer();
    sqlite3 *ck = open_db(true);
    atomic_bool stop = false;
    atomic_int committed = 0;
    struct counter_arg a[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct counter_arg){.stop = &stop, .committed = &committed};
        pthread_create(&t[i], NULL, counter, &a[i]);
    }
    for (int n = 0; n < 6000; n += 150) {
        cr_assert_eq(insert_rows_rc(w, n, n + 150), SQLITE_OK);
        atomic_store(&committed, n + 150);
        if (n % 900 == 0) /* copies the WAL back through its own handle; a restart follows */
            exec(ck, "PRAGMA wal_checkpoint(PASSIVE)");
        usleep(2000);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_expect_gt(a[i].reads, 0);
        cr_expect_eq(a[i].bad, 0, "reader %d: %ld wrong reads of %ld", i, a[i].bad, a[i].reads);
    }
    exec(ck, "PRAGMA wal_checkpoint(TRUNCATE)");
    read_all(ck, 0, 6000, 1);
    sqlite3_close(ck);
    sqlite3_close(w);
}

/*
 * A combined write that the file system refuses fails the commit, and the
 * database is as before: the rows of the failed transaction are nowhere, the
 * next transaction commits. The fault: a file size limit (RLIMIT_FSIZE) the
 * WAL reaches halfway through the transaction's frames.
 */
Test(mapvfs, a_refused_combined_write_fails_the_commit_and_changes_nothing)
{
    sqlite3 *w = combining_writer();
    cr_assert_eq(insert_rows_rc(w, 0, 100), SQLITE_OK);
    exec(w, "PRAGMA wal_checkpoint(TRUNCATE)"); /* the WAL starts over from 0 bytes */
    signal(SIGXFSZ, SIG_IGN);                   /* a write past the limit fails with EFBIG */
    struct rlimit lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &lim), 0);
    struct rlimit tight = {.rlim_cur = 1u << 20, .rlim_max = lim.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &tight), 0);
    /* 2,000 rows of 1,000 bytes: ~2 MiB of frames, past the 1 MiB limit. */
    int rc = insert_rows_rc(w, 100, 2100);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    cr_assert_neq(rc, SQLITE_OK, "the commit succeeded past the file size limit");
    sqlite3 *r = open_db(false);
    cr_assert_eq(count_rows(r), 100, "rows of the failed transaction are visible");
    cr_assert_eq(count_rows(w), 100);
    cr_assert_eq(insert_rows_rc(w, 100, 300), SQLITE_OK);
    cr_assert_eq(count_rows(r), 300);
    read_all(r, 0, 300, 1);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(w, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(r);
    sqlite3_close(w);
}
